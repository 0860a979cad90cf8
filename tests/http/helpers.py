"""Helpers for the HTTP tests: a real uvicorn on a loopback port, signing for our HMAC
scheme and for SendGrid's ECDSA, and a peek into the events queue."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from worker.actors import EVENTS_QUEUE
from worker.http.signatures import sign
from worker.runtime import Runtime


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


def signed_headers(
    runtime: Runtime,
    body: bytes,
    *,
    secrets: str | list[str] = "test-secret",
    skew: int = 0,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers for a body signed at the runtime's clock time (plus ``skew`` seconds)."""
    stamp = int(runtime.clock.now().timestamp()) + skew
    return {"Content-Type": content_type, "X-Nurture-Signature": sign(secrets, body, stamp)}


class SendgridSigner:
    """An ECDSA P-256 key pair standing in for SendGrid's signing key."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: str = "1700000000") -> dict[str, str]:
        signature = self.private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def queued_events(runtime: Runtime) -> int:
    """Events waiting in the events queue (dramatiq messages hold up to 100 each)."""
    ns = runtime.broker.namespace
    total = 0
    for message_id in runtime.redis.lrange(f"{ns}:{EVENTS_QUEUE}", 0, -1):
        raw: Any = runtime.redis.hget(f"{ns}:{EVENTS_QUEUE}.msgs", message_id)
        total += len(json.loads(raw)["args"][0])
    return total

"""Logging set-up: plain text for people, JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields (e.g. request_id)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Configure the root logger once, for the CLI and the HTTP service."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # dramatiq logs every worker thread's start and stop at INFO: keep that out of the way.
    logging.getLogger("dramatiq").setLevel(max(logging.WARNING, root.level))
    # pika (RabbitMQ) logs one failed connect as eight ERROR lines and a traceback; the
    # worker and dramatiq report broker failures themselves, naming NURTURE_BROKER_URL.
    # NURTURE_LOG_LEVEL=DEBUG shows pika's own account again.
    if root.level > logging.DEBUG:
        logging.getLogger("pika").setLevel(logging.CRITICAL)

"""Request bodies: the one reader and the one JSON decoder of the HTTP service.

Bodies are read by hand rather than through FastAPI's body parameters because
signatures cover the raw bytes and must be checked before anything is parsed. Every
way a body can be bad raises :class:`~worker.errors.BodyError` carrying its HTTP
status and code; ``worker/http/errors.py`` shapes the answer.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from worker.errors import BodyError
from worker.events import UndecodableLine

MAX_BODY = 1024 * 1024  # the contract: bodies over 1 MiB get 413
MAX_DEPTH = 32  # events are shallow; deeper JSON is an attack or a mistake
JSON_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)


def require_json(request: Request) -> None:
    """Refuse a body that is not declared as JSON or JSON Lines.

    Raises:
        BodyError: 415 ``unsupported_media_type``.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise BodyError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json (or application/x-ndjson for JSON "
            f"Lines); got {media or 'none'}",
        )


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading anything; a
    body without one (chunked) is counted while it streams, so nothing unbounded is
    ever held in memory.

    Raises:
        BodyError: 413 ``payload_too_large``; 400 ``bad_request`` for a Content-Length
            that is not a number.
    """
    declared = request.headers.get("content-length")
    too_large = BodyError(
        413, "payload_too_large", f"body over {limit} bytes; send smaller batches"
    )
    if declared is not None:
        if not declared.strip().isdigit():
            raise BodyError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes, *, json_lines: bool = False) -> Any:
    """Decode a body holding one JSON document or, with ``json_lines``, JSON Lines too.

    With ``json_lines``, a body that is not one document is read line by line, and
    each line that is not JSON becomes an :class:`~worker.events.UndecodableLine` in
    its place, so that every bad line is reported with its index, not only the first.

    Args:
        body: The raw body, UTF-8 (a leading byte order mark is skipped).
        json_lines: Accept JSON Lines (``POST /events``); the answer is then a list.

    Raises:
        BodyError: 400 ``invalid_utf8``, ``empty_body``, ``invalid_json`` or ``too_deep``.
    """
    try:
        text = body.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, "invalid_utf8", f"body is not valid UTF-8 (byte {exc.start})"
        ) from None
    if not text.strip():
        hint = "a JSON object, an array or JSON Lines" if json_lines else "JSON"
        raise BodyError(400, "empty_body", f"body is empty; send {hint}")
    if json_lines:
        text = text.strip()  # so that line numbers count from the first line with JSON
    try:
        decoded = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        whole = BodyError(
            400, "invalid_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
        if json_lines:
            return _decode_lines(text, whole)
        raise whole from None
    except ValueError as exc:  # e.g. a 5000-digit number, which json refuses to convert
        raise BodyError(400, "invalid_json", f"invalid JSON: {exc}") from None
    if _too_deep_json(decoded):
        raise _too_deep()
    if json_lines and not isinstance(decoded, list):
        return [decoded]
    return decoded


def _decode_lines(text: str, whole: BodyError) -> list[Any]:
    """JSON Lines; ``whole`` (the error of reading ``text`` as one document) is raised when
    the body is a single line, which is then not JSON Lines but bad JSON."""
    items: list[Any] = []
    for number, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as exc:
            if number == 0 and "\n" not in text:
                raise whole from None
            reason = f"line {number + 1} is not valid JSON: {str(exc)[:200]}"
            items.append(UndecodableLine(reason))
            continue
        if _too_deep_json(item):
            raise _too_deep()
        items.append(item)
    return items


def _too_deep() -> BodyError:
    return BodyError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels; flatten it")


def _too_deep_json(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True when decoded JSON nests arrays/objects deeper than ``limit``.

    Iterative and early-exiting. Nesting far deeper than any limit never gets this
    far: ``json`` raises RecursionError at about 1000 levels, which is caught too.
    (A regex pre-scan of the raw bytes was tried and dropped: unterminated strings
    made it quadratic.)
    """
    if not isinstance(obj, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False

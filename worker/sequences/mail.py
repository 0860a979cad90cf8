"""A sequence's mail keys: ``from``, ``reply_to`` and ``tracking``.

```yaml
from: {email: maria@example.com, name: Maria Holm, title: Partner,
       meeting_url: "https://cal.example/maria"}
reply_to: {email: sales@example.com, name: Sales}
tracking: {opens: false, clicks: false}      # the default: a one-to-one note
```

Each reader returns the value, or None after reporting its problems through
``problem(line, message, fix)``; see docs/sequences.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.addresses import sendable_address
from worker.errors import did_you_mean
from worker.senders import FROM_KEYS, REPLY_TO_KEYS, Address, SequenceSender
from worker.sequences.model import Tracking
from worker.yamlfile import describe_node, yaml_line

TRACKING_KEYS = ("opens", "clicks")
ProblemSink = Callable[[int, str, str], None]


def _unknown(
    node: Mapping[Any, Any], allowed: tuple[str, ...], where: str, line: int, problem: ProblemSink
) -> bool:
    bad = False
    for key in node:
        if key not in allowed:
            bad = True
            problem(
                yaml_line(node, key, line),
                f"unknown key {key!r} in `{where}`",
                f"{did_you_mean(str(key), allowed)}keys allowed here: {', '.join(allowed)}",
            )
    return bad


def _address(
    node: Any, where: str, allowed: tuple[str, ...], line: int, problem: ProblemSink
) -> tuple[Address, dict[str, str]] | None:
    example = f"`{where}: {{email: maria@example.com, name: Maria Holm}}`"
    if isinstance(node, str):
        node = {"email": node}
    if not isinstance(node, Mapping) or "email" not in node:
        problem(line, f"`{where}` needs an email, not {describe_node(node)}", f"write {example}")
        return None
    bad = _unknown(node, allowed, where, line, problem)
    values: dict[str, str] = {}
    for key in allowed:
        if key in node and not isinstance(node[key], str):
            problem(
                yaml_line(node, key, line),
                f"`{where}.{key}` must be text, not {describe_node(node[key])}",
                "put it in quotes",
            )
            bad = True
        elif key in node and node[key].strip():
            values[key] = node[key].strip()
    try:
        email = sendable_address(values.get("email", ""))
    except ValueError as exc:
        problem(yaml_line(node, "email", line), f"`{where}.email`: {exc}", f"write {example}")
        return None
    url = values.get("meeting_url")
    if url and not url.startswith("https://"):
        problem(
            yaml_line(node, "meeting_url", line),
            f"`{where}.meeting_url` {url!r} is not an https:// link",
            "write the whole booking link, starting with https://",
        )
        bad = True
    if bad:
        return None
    return Address(email, values.get("name")), values


def read_sender(doc: Mapping[Any, Any], top: int, problem: ProblemSink) -> SequenceSender | None:
    """The sequence's ``from`` and ``reply_to`` (None when it has neither, or on problems)."""
    if "from" not in doc and "reply_to" not in doc:
        return None
    from_ = reply_to = None
    values: dict[str, str] = {}
    ok = True
    if "from" in doc:
        found = _address(doc["from"], "from", FROM_KEYS, yaml_line(doc, "from", top), problem)
        ok = found is not None
        if found is not None:
            from_, values = found
    if "reply_to" in doc:
        line = yaml_line(doc, "reply_to", top)
        found = _address(doc["reply_to"], "reply_to", REPLY_TO_KEYS, line, problem)
        ok = ok and found is not None
        if found is not None:
            reply_to = found[0]
    if not ok:
        return None
    return SequenceSender(from_, reply_to, values.get("title"), values.get("meeting_url"))


def read_tracking(doc: Mapping[Any, Any], top: int, problem: ProblemSink) -> Tracking | None:
    """The sequence's ``tracking`` (off for both when the file does not say)."""
    if "tracking" not in doc:
        return Tracking()
    node, line = doc["tracking"], yaml_line(doc, "tracking", top)
    example = "`tracking: {opens: false, clicks: false}`"
    if not isinstance(node, Mapping):
        problem(
            line,
            f"`tracking` must give opens and clicks, not {describe_node(node)}",
            f"write {example}",
        )
        return None
    bad = _unknown(node, TRACKING_KEYS, "tracking", line, problem)
    for key in TRACKING_KEYS:
        if key in node and not isinstance(node[key], bool):
            problem(
                yaml_line(node, key, line),
                f"`tracking.{key}` must be true or false, not {node[key]!r}",
                f"write {example}",
            )
            bad = True
    if bad:
        return None
    return Tracking(opens=bool(node.get("opens", False)), clicks=bool(node.get("clicks", False)))

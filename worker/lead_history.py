"""What the timeline keeps lean, and how ``nurture lead`` gives it back whole.

Two kinds of timeline entry leave out what can be rebuilt when the timeline is read
(``worker/store/timeline.py`` stores them; :func:`explain` completes them):

- The lead's data as first stored: the ``fields`` entry of a lead's first event names
  nothing (``changed`` left off). Every later ``fields`` entry keeps each changed
  field's value before the change, so the values at creation are the lead's data now
  with the later changes undone, newest first. The cap drops the oldest entries first,
  so while that entry is kept every later one is too; an erasure deletes the timeline
  with the data. A later change that no entry recorded (a crash between the lead's
  write and its timeline's) shows up as a later entry whose "after" is not the value
  the walk back finds: the rebuilt values are then marked as uncertain.
- A sequence not entered because its ``when`` was false: the entry keeps the rule's
  fingerprint (:func:`rule_fingerprint`) and the values the rule read
  (:func:`when_refusal`), not the sentence. The reader renders the sentence with the
  rule as it is now when the fingerprint still matches (word for word what was said
  then), and otherwise says the rule has changed since, with the values it read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from worker.crm.mapping import LEAD_FIELDS
from worker.sequences import Catalog, Condition, condition_context
from worker.sequences.conditions import MISSING, lookup

#: Said of values rebuilt past a change the timeline did not record.
UNCERTAIN = "values rebuilt from the lead's data now: a later change was not recorded"


__all__ = [
    "LEAD_FIELDS",
    "UNCERTAIN",
    "explain",
    "field_changes",
    "rule_fingerprint",
    "when_refusal",
]


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Field -> [before, after] for the lead's changed fields (attributes as
    ``attributes.<name>``); empty when nothing changed."""
    out: dict[str, list[Any]] = {}
    for name in LEAD_FIELDS:
        if before.get(name) != after.get(name):
            out[name] = [before.get(name), after.get(name)]
    old_attrs, new_attrs = before.get("attributes") or {}, after.get("attributes") or {}
    for key in sorted(set(old_attrs) | set(new_attrs)):
        if old_attrs.get(key) != new_attrs.get(key):
            out[f"attributes.{key}"] = [old_attrs.get(key), new_attrs.get(key)]
    return out


def rule_fingerprint(condition: Condition) -> str:
    """Six hex digits that change when the rule's words change."""
    return hashlib.blake2b(condition.describe().encode(), digest_size=3).hexdigest()


def when_refusal(
    condition: Condition, context: Mapping[str, Any], every_path: bool = False
) -> dict[str, Any]:
    """The entry's fields for a false ``when``: the rule's fingerprint and the values it
    read (None: missing). Of a trigger's ``when`` (under the lead's lock, with the
    event's data) only the event data's: the lead's fields it read are the lead's data
    then, rebuilt by :func:`explain`; with ``every_path`` (a step's ``when``, read
    without the lock) every value."""
    values = {}
    for path in condition.read_paths(context):
        if every_path or path.startswith("data."):
            value = lookup(context, path)
            values[path] = None if value is MISSING else value
    return {"rule": rule_fingerprint(condition), "values": values or None}


def _set_path(ctx: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    current = ctx
    for part in parents:
        child = current.get(part)
        current[part] = child = dict(child) if isinstance(child, dict) else {}
        current = child
    current[last] = value


def _rule(item: Mapping[str, Any], catalog: Catalog) -> Condition | None:
    """The ``when`` an entry was about, as it is now: the trigger's of a
    ``not_enrolled`` entry, the step's of a ``skip``."""
    sequence = catalog.sequences.get(str(item.get("sequence")))
    if sequence is None:
        return None
    if item.get("kind") == "skip":
        step = sequence.step(str(item.get("step")))
        return step.when if step else None
    return sequence.trigger_when


def _why_when(item: Mapping[str, Any], catalog: Catalog, lead: Mapping[str, Any] | None) -> str:
    """The sentence a false ``when`` was recorded as, rebuilt from the rule now (when
    its fingerprint matches), the lead's data then and the values it read."""
    values = item.get("values") or {}
    read = ", ".join(f"{p}={'missing' if v is None else repr(v)}" for p, v in values.items())
    read = f"; values read: {read}" if read else ""
    condition = _rule(item, catalog)
    if condition is None:
        return f"when was false (that rule is no longer in the catalog{read})"
    if rule_fingerprint(condition) != item.get("rule"):
        return f"when was false under the rule as it was then, changed since{read}"
    base = {} if item.get("kind") == "skip" else lead  # a step's entry keeps every value
    if base is None:
        return f"when was false (the lead's data then is not known{read})"
    context = condition_context(base, {})
    for path, value in values.items():
        if value is not None:
            _set_path(context, path, value)
    failing = condition.failing(context)
    if failing:
        return f"when: {failing}"
    return f"when was false (the values rebuilt now make it hold{read})"


def _undo(data: dict[str, Any], changed: Mapping[str, Any]) -> bool:
    """Put back the values before ``changed`` in ``data``; False when the values after
    the change are not what ``data`` holds (a change went unrecorded)."""
    consistent = True
    attributes = dict(data.get("attributes") or {})
    for name, change in changed.items():
        old, new = change
        holder, key = (
            (attributes, name.removeprefix("attributes."))
            if name.startswith("attributes.")
            else (data, name)
        )
        consistent = consistent and holder.get(key) == new
        if old is None:
            holder.pop(key, None)
        else:
            holder[key] = old
    data["attributes"] = attributes
    return consistent


def explain(
    timeline: Iterable[dict[str, Any]], data: Mapping[str, Any] | None, catalog: Catalog
) -> list[dict[str, Any]]:
    """The timeline with what its lean entries left off filled in (see the module's
    docstring): ``changed`` of the first ``fields`` entry from ``data`` (the lead's data
    now; None when it is not stored) walked back, ``why`` of a false ``when``."""
    items = [dict(item) for item in timeline]
    state: dict[str, Any] | None = dict(data) if data is not None else None
    consistent = True
    for item in reversed(items):
        kind = item.get("kind")
        if kind == "not_enrolled" and item.get("why") is None and "rule" in item:
            item["why"] = _why_when(item, catalog, state)
            if state is not None and not consistent:
                item["why"] += f" ({UNCERTAIN})"
        if kind == "skip" and item.get("detail") is None and "rule" in item:
            item["detail"] = _why_when(item, catalog, None)
        if kind != "fields":
            continue
        if isinstance(item.get("changed"), dict):
            if state is not None:
                consistent = _undo(state, item["changed"]) and consistent
            continue
        if state is None:
            item["changed"] = None
            item["note"] = "values not known: the lead's data is not stored"
        else:
            item["changed"] = field_changes({}, state)
            if not consistent:
                item["note"] = UNCERTAIN
        state = None  # before the lead was first stored: nothing to walk back to
    return items

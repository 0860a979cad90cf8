"""Read ``sequences/*.yaml`` and ``sequences/fit.yaml`` into a :class:`Catalog`.

The people who write these files are marketers, not programmers, so the loader never
stops at the first mistake: it reports every problem with the file, the line and a
fix in plain words, and still returns every sequence that loaded cleanly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import time
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from worker.errors import CatalogError, Problem, did_you_mean
from worker.sequences.actions import internal_ref_problems, read_notify, read_webhook
from worker.sequences.conditions import Condition, compile_when
from worker.sequences.durations import parse_wait
from worker.sequences.engagement import STEP_KINDS, Engaged, step_ref_problems
from worker.sequences.mail import read_sender, read_tracking
from worker.sequences.model import (
    DECLINE_TRIGGER,
    KINDS,
    Catalog,
    FitRule,
    Kind,
    Notify,
    Reenroll,
    Sequence,
    Step,
    TemplateRef,
    Webhook,
    default_kind,
)
from worker.sequences.variants import Variant
from worker.sequences.windows import WINDOW_KEYS, SendWindow, parse_days, parse_hours
from worker.yamlfile import (
    describe_node,
    display_path,
    event_type_problem,
    node_line,
    read_yaml,
    yaml_line,
)

FIT_STEMS = ("fit",)
SEQUENCE_KEYS = (
    "id",
    "description",
    "kind",
    "paused",
    "trigger",
    "exit_on",
    "goal",
    "reenroll",
    "send_window",
    "steps",
    "from",
    "reply_to",
    "tracking",
)
TRIGGER_KEYS = ("event", "when", "match")
STEP_KEYS = (
    "id",
    "description",
    "wait",
    "template",
    "notify",
    "webhook",
    "when",
    "variants",
    "winner",
    "needs_content",
)
VARIANT_KEYS = ("id", "template", "subject", "weight")
FIT_KEYS = ("rules",)
RULE_KEYS = ("id", "description", "when", "reason")
ID = re.compile(r"^[a-z0-9-]+$")
REASON = re.compile(r"^[a-z0-9_-]+$")
TEMPLATE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
DOCS = "see docs/sequences.md"
# Keys that are right, just in the wrong place: where they belong.
_MOVED = {
    "sequence": {
        "when": "`when` belongs under `trigger:` (or inside a step)",
        "event": "`event` belongs under `trigger:`",
        "wait": "`wait` belongs inside a step under `steps:`",
        "template": "`template` belongs inside a step under `steps:`",
        "rules": "fit rules belong in sequences/fit.yaml",
    },
    "step": {
        "exit_on": "`exit_on` belongs at the top of the file, not inside a step",
        "send_window": "`send_window` belongs at the top of the file, not inside a step",
        "trigger": "`trigger` belongs at the top of the file, not inside a step",
    },
}


def load_catalog(sequences_dir: Path) -> tuple[Catalog, list[Problem]]:
    """Load every sequence file and the fit rules from ``sequences_dir``.

    Args:
        sequences_dir: The folder (``NURTURE_SEQUENCES_DIR``).

    Returns:
        The catalog of everything that loaded cleanly, and every problem found
        (sorted by file and line). A sequence with any problem is left out.
    """
    folder = display_path(sequences_dir)
    if not sequences_dir.is_dir():
        return Catalog(), [
            Problem(
                folder,
                0,
                "the sequences folder does not exist",
                "create it, or point NURTURE_SEQUENCES_DIR at the folder holding your sequences",
            )
        ]
    files = sorted(
        p
        for p in sequences_dir.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )
    digest = hashlib.sha256()
    problems: list[Problem] = []
    sequences: dict[str, Sequence] = {}
    fit_rules: tuple[FitRule, ...] = ()
    fit_files = [p for p in files if p.stem in FIT_STEMS]
    if len(fit_files) > 1:
        problems.append(
            Problem(
                display_path(fit_files[1]),
                0,
                "there are two fit rule files",
                f"keep only {fit_files[0].name}; move its rules into one file",
            )
        )
    claimed: dict[str, tuple[str, int]] = {}  # sequence id -> (file, line) first using it
    left_out: list[TemplateRef] = []
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        reader = _Reader(display_path(path))
        doc = reader.parse(raw)
        if path in fit_files:
            if path == fit_files[0] and not reader.problems:
                fit_rules = reader.fit_rules(doc)
        elif not reader.problems:
            unique = reader.claim_id(claimed, doc)
            sequence = reader.sequence(doc)
            if sequence is not None and unique:
                sequences[sequence.id] = sequence
            else:
                left_out += reader.template_refs
        problems.extend(reader.problems)
    if not any(p.stem not in FIT_STEMS for p in files):
        problems.append(
            Problem(
                folder,
                0,
                "no sequence files (*.yaml) found",
                f"add a sequence file, or point NURTURE_SEQUENCES_DIR elsewhere; {DOCS}",
            )
        )
    catalog = Catalog(
        sequences=sequences,
        fit_rules=fit_rules,
        version=digest.hexdigest()[:12],
        left_out_templates=tuple(left_out),
    )
    return catalog, sorted(problems)


def require_catalog(sequences_dir: Path) -> Catalog:
    """Like :func:`load_catalog`, but any problem is an error.

    Raises:
        CatalogError: Listing every problem.
    """
    catalog, problems = load_catalog(sequences_dir)
    if problems:
        raise CatalogError(problems)
    return catalog


def _slug(text: str, sep: str = "-") -> str:
    return re.sub(r"[^a-z0-9]+", sep, text.lower()).strip(sep)


class _Reader:
    """Reads one file, collecting problems against it."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.template_refs: list[TemplateRef] = []
        self.exit_conditions: list[Any] = []
        # Keys suggested for a misspelling: their "missing" problem would repeat it.
        self.suggested: set[tuple[int, str]] = set()

    def problem(self, line: int, message: str, fix: str) -> None:
        self.problems.append(Problem(self.file, line, message, fix))

    def parse(self, raw: bytes) -> Any:
        """The YAML document, or None with problems recorded."""
        doc, problems = read_yaml(raw, self.file, DOCS)
        self.problems.extend(problems)
        return doc

    # -- shared checks --------------------------------------------------------------

    def line(self, node: Any, key: Any, default: int = 1) -> int:
        return yaml_line(node, key, default)

    def start(self, node: Any, default: int = 1) -> int:
        return node_line(node, default)

    def unknown_keys(
        self, node: Mapping[Any, Any], allowed: tuple[str, ...], where: str, line: int
    ) -> None:
        for key in node:
            if key in allowed:
                continue
            key_line = self.line(node, key, line)
            text = str(key)
            normalized = re.sub(r"[\s-]+", "_", text.strip().lower())
            near = get_close_matches(normalized, allowed, n=1, cutoff=0.6)
            moved = _MOVED.get(where, {}).get(normalized)
            if moved:
                fix = f"{moved}; {DOCS}"
            elif near:
                self.suggested.add((line, near[0]))
                fix = f"{did_you_mean(normalized, near)}Keys allowed here: {', '.join(allowed)}"
            else:
                fix = f"remove it, or use one of: {', '.join(allowed)}"
            self.problem(key_line, f"unknown key {text!r} in this {where}", fix)

    def required(
        self, node: Mapping[Any, Any], key: str, line: int, where: str, example: str
    ) -> bool:
        if key in node:
            return True
        if (line, key) not in self.suggested:
            self.problem(line, f"this {where} has no `{key}`", f"add {example}")
        return False

    def check_id(self, value: Any, line: int, what: str) -> str | None:
        if isinstance(value, str) and ID.match(value):
            return value
        if value is None:
            self.problem(line, f"the {what} id is empty", f"write e.g. `id: my-{what}`")
            return None
        suggestion = _slug(str(value)) or f"my-{what}"
        if not isinstance(value, str) and suggestion == str(value):
            # A bare number such as 2026 reads as a number in YAML, not as text.
            fix = f'put it in quotes: `id: "{value}"`'
        else:
            fix = f"write e.g. `id: {suggestion}` (lowercase letters, digits and -)"
        self.problem(
            line, f"the {what} id {value!r} may only use lowercase letters, digits and -", fix
        )
        return None

    def check_event(self, value: Any, line: int, where: str) -> str | None:
        found = event_type_problem(value)
        if found is None:
            return str(value)
        message, fix = found
        self.problem(line, f"{where} event {message}", fix)
        return None

    def claim_id(self, claimed: dict[str, tuple[str, int]], doc: Any) -> bool:
        """Record this file's sequence id; False (with a problem) when another file has it."""
        raw = doc.get("id") if isinstance(doc, Mapping) else None
        if not isinstance(raw, str):
            return True
        id_line = self.line(doc, "id", 1)
        if raw in claimed:
            other, other_line = claimed[raw]
            self.problem(
                id_line,
                f"sequence id {raw!r} is already used by {other} (line {other_line})",
                "give each sequence its own id; ids must be unique across all files",
            )
            return False
        claimed[raw] = (self.file, id_line)
        return True

    def unique_id(self, seen: dict[str, int], node: Any, line: int, what: str) -> bool:
        """Record the id of a step or rule; False (with a problem) when it repeats."""
        raw = node.get("id") if isinstance(node, Mapping) else None
        if not isinstance(raw, str):
            return True
        id_line = self.line(node, "id", line)
        if raw in seen:
            self.problem(
                id_line,
                f"{what} id {raw!r} is used twice",
                f"rename one of them; the other is at line {seen[raw]}",
            )
            return False
        seen[raw] = id_line
        return True

    def condition(
        self, node: Mapping[Any, Any], key: str, line: int, what: str
    ) -> Condition | None:
        value = node[key]
        key_line = self.line(node, key, line)
        if value is None:
            self.problem(
                key_line,
                f"`when` of this {what} is empty",
                "add conditions under it, e.g. `when: {attributes.industry: saas}`, "
                "or remove the line",
            )
            return None
        condition, problems = compile_when(value, self.file, key_line)
        self.problems.extend(problems)
        return condition

    # -- sequences ------------------------------------------------------------------

    def sequence(self, doc: Any) -> Sequence | None:
        """Build the sequence of this file, or None with problems recorded."""
        if not isinstance(doc, Mapping):
            what = "empty" if doc is None else f"{describe_node(doc)}, not a sequence"
            self.problem(
                self.start(doc),
                f"the file is {what}",
                "a sequence file starts with `id: my-sequence` followed by trigger and "
                f"steps; {DOCS}",
            )
            return None
        before = len(self.problems)
        top = self.start(doc)
        self.unknown_keys(doc, SEQUENCE_KEYS, "sequence", top)
        seq_id = None
        if self.required(doc, "id", top, "sequence", "`id: my-sequence`"):
            seq_id = self.check_id(doc["id"], self.line(doc, "id", top), "sequence")
        description = doc.get("description") or ""
        if not isinstance(description, str):
            self.problem(
                self.line(doc, "description", top),
                "description must be text",
                "put the description in quotes",
            )
        paused = doc.get("paused", False)
        if not isinstance(paused, bool):
            self.problem(
                self.line(doc, "paused", top),
                f"paused must be true or false, not {paused!r}",
                "write `paused: true` to stop sending this sequence, or remove the line",
            )
        trigger = self.trigger(doc, top)
        exit_on = self.exit_on(doc, top, trigger[0] if trigger else None)
        goals = self.goals(doc, top, trigger[0] if trigger else None)
        match = trigger is not None and trigger[0] == ""
        reenroll = self.reenroll(doc, top, match)
        window = self.send_window(doc, top)
        steps = self.steps(doc, top)
        kind = self.kind(doc, top, trigger[0] if trigger else None)
        exit_when = self.exit_when(doc, top, steps or ())
        sender = read_sender(doc, top, self.problem)
        tracking = read_tracking(doc, top, self.problem)
        if (
            len(self.problems) > before
            or tracking is None
            or seq_id is None
            or trigger is None
            or steps is None
        ):
            return None
        return Sequence(
            id=seq_id,
            description=str(description),
            trigger_event=trigger[0],
            trigger_when=trigger[1],
            exit_on=exit_on,
            send_window=window,
            steps=steps,
            kind=kind or default_kind(trigger[0]),
            file=self.file,
            line=self.line(doc, "id", top),
            sender=sender,
            tracking=tracking,
            paused=paused is True,
            goals=goals,
            match=match,
            reenroll=reenroll,
            exit_when=exit_when,
        )

    def trigger(self, doc: Mapping[Any, Any], top: int) -> tuple[str, Condition | None] | None:
        if not self.required(doc, "trigger", top, "sequence", "`trigger: {event: lead.created}`"):
            return None
        node = doc["trigger"]
        line = self.line(doc, "trigger", top)
        if isinstance(node, str):  # shorthand: `trigger: lead.created`
            event = self.check_event(node, line, "trigger")
            return None if event is None else (event, None)
        if not isinstance(node, Mapping):
            self.problem(
                line,
                f"trigger must name an event, not {describe_node(node)}",
                "write `trigger: {event: lead.created}`",
            )
            return None
        self.unknown_keys(node, TRIGGER_KEYS, "trigger", line)
        if "match" in node:
            return self.match_trigger(node, line)
        if not self.required(node, "event", line, "trigger", "`event: lead.created`"):
            return None
        event = self.check_event(node["event"], self.line(node, "event", line), "trigger")
        when = self.condition(node, "when", line, "trigger") if "when" in node else None
        for test in when.engaged() if when else []:
            if test.kind in STEP_KINDS:
                self.problem(
                    test.line,
                    f"the trigger's when cannot use {test.kind}: a lead has no touches of "
                    "this sequence before it joins",
                    "move the condition to a step's `when`",
                )
        return None if event is None else (event, when)

    def exit_on(self, doc: Mapping[Any, Any], top: int, trigger: str | None) -> frozenset[str]:
        if "exit_on" not in doc:
            return frozenset()
        node = doc["exit_on"]
        line = self.line(doc, "exit_on", top)
        if not isinstance(node, list):
            example = node if isinstance(node, str) else "lead.replied, meeting.booked"
            self.problem(
                line,
                f"exit_on must be a list of events, not {describe_node(node)}",
                f"write `exit_on: [{example}]`",
            )
            return frozenset()
        events: set[str] = set()
        self.exit_conditions = []
        for index, item in enumerate(node):
            item_line = self.line(node, index, line)
            if isinstance(item, Mapping):
                # A condition (engagement or lead data), checked when each step is due.
                condition, problems = compile_when(item, self.file, item_line)
                self.problems.extend(problems)
                if condition is not None:
                    self.exit_conditions.append(item)
                continue
            event = self.check_event(item, item_line, "exit_on")
            if event is None:
                continue
            if event == trigger == DECLINE_TRIGGER:
                self.problem(
                    item_line,
                    "a decline sequence starts on lead.disqualified, so "
                    "listing it in exit_on would cancel the refusal before it is sent",
                    "remove lead.disqualified from exit_on",
                )
            elif event == trigger:
                self.problem(
                    item_line,
                    f"exit_on lists the trigger event {event}, so every lead "
                    "would leave the sequence as soon as it joins",
                    f"remove {event} from exit_on",
                )
            events.add(event)
        return frozenset(events)

    def exit_when(
        self, doc: Mapping[Any, Any], top: int, steps: tuple[Step, ...]
    ) -> Condition | None:
        """The conditions of ``exit_on`` as one condition (any of them), their step ids
        checked against the sequence's steps."""
        if not self.exit_conditions:
            return None
        line = self.line(doc, "exit_on", top)
        condition, problems = compile_when({"any": self.exit_conditions}, self.file, line)
        self.problems.extend(problems)
        ids = [step.id for step in steps]
        for test in condition.engaged() if condition else []:
            if test.kind in STEP_KINDS and test.value not in ids:
                self.problem(
                    test.line,
                    f"{test.kind}: {test.value!r} names no step of this sequence",
                    f"{did_you_mean(test.value, ids)}the steps are: {', '.join(ids)}",
                )
        return condition

    def match_trigger(self, node: Mapping[Any, Any], line: int) -> tuple[str, Condition] | None:
        """``trigger: {match: {...}}``: enroll the first time the lead matches."""
        for other in ("event", "when"):
            if other in node:
                self.problem(
                    self.line(node, other, line),
                    f"a trigger with match cannot also have {other}",
                    "use `match:` alone (the lead enrolls when it comes to match, whatever "
                    "the event), or `event:` with `when:`",
                )
        condition = self.condition(node, "match", line, "trigger")
        for test in condition.engaged() if condition else []:
            if test.kind in STEP_KINDS:
                self.problem(
                    test.line,
                    f"match cannot use {test.kind}: a lead has no touches of this "
                    "sequence before it joins",
                    "move the condition to a step's `when`",
                )
        return None if condition is None else ("", condition)

    def reenroll(self, doc: Mapping[Any, Any], top: int, match: bool) -> Reenroll:
        """``reenroll: never | {after: 90d} | {when_changes: attributes.lifecycle}``."""
        if "reenroll" not in doc:
            return Reenroll()
        node = doc["reenroll"]
        line = self.line(doc, "reenroll", top)
        example = "`reenroll: never`, `reenroll: {after: 90d}` or "
        example += "`reenroll: {when_changes: attributes.lifecycle}`"
        if not match:
            self.problem(
                line,
                "reenroll only applies to `trigger: {match: ...}`",
                "an event trigger enrolls again on each trigger event once the lead has "
                "left the sequence; remove reenroll, or use a match trigger",
            )
            return Reenroll()
        if node == "never":
            return Reenroll()
        if not isinstance(node, Mapping) or len(node) != 1:
            self.problem(line, f"reenroll cannot be {describe_node(node)}", f"write {example}")
            return Reenroll()
        key, value = next(iter(node.items()))
        key_line = self.line(node, key, line)
        if key == "after":
            try:
                wait = parse_wait(value)
            except ValueError as exc:
                self.problem(key_line, *_split(exc, "write e.g. `after: 90d`"))
                return Reenroll()
            if wait.unit not in ("d", "h") or wait.upper is not None:
                self.problem(
                    key_line,
                    f"reenroll after {value!r}: give days or hours, not a range",
                    "write e.g. `after: 90d`",
                )
                return Reenroll()
            return Reenroll(after=wait.amount * (86400 if wait.unit == "d" else 3600))
        if key == "when_changes":
            _, problems = compile_when({str(value): {"exists": True}}, self.file, key_line)
            if problems or not isinstance(value, str):
                self.problem(
                    key_line,
                    f"reenroll when_changes {value!r} is not a field",
                    "name one field, e.g. `when_changes: attributes.lifecycle`",
                )
                return Reenroll()
            return Reenroll(when_changes=value)
        hint = did_you_mean(str(key), ("after", "when_changes"))
        self.problem(key_line, f"unknown reenroll key {key!r}", f"{hint}write {example}")
        return Reenroll()

    def goals(self, doc: Mapping[Any, Any], top: int, trigger: str | None) -> frozenset[str]:
        """``goal:``: one event type or a list; the trigger itself cannot be a goal."""
        if "goal" not in doc:
            return frozenset()
        node = doc["goal"]
        line = self.line(doc, "goal", top)
        items = [node] if isinstance(node, str) else node
        if not isinstance(items, list) or not items:
            self.problem(
                line,
                f"goal must be a list of events, not {describe_node(node)}",
                "write `goal: [meeting.booked, deal.won]`",
            )
            return frozenset()
        goals: set[str] = set()
        for index, item in enumerate(items):
            item_line = self.line(items, index, line) if items is node else line
            event = self.check_event(item, item_line, "goal")
            if event is not None and event == trigger:
                self.problem(
                    item_line,
                    f"goal lists the trigger event {event}, so every lead would convert "
                    "(and leave) as soon as it joins",
                    f"remove {event} from goal, or start the sequence on another event",
                )
            elif event is not None:
                goals.add(event)
        return frozenset(goals)

    def send_window(self, doc: Mapping[Any, Any], top: int) -> SendWindow | None:
        if "send_window" not in doc:
            return None
        node = doc["send_window"]
        line = self.line(doc, "send_window", top)
        example = '`send_window: {days: mon-fri, hours: "09:00-17:00"}`'
        if not isinstance(node, Mapping) or not node:
            self.problem(
                line,
                f"send_window must give days and hours, not {describe_node(node)}",
                f"write {example}, or remove the line to send at any time",
            )
            return None
        self.unknown_keys(node, WINDOW_KEYS, "send_window", line)
        days = frozenset(range(7))
        start_end = None
        try:
            if "days" in node:
                days = parse_days(node["days"])
        except ValueError as exc:
            self.problem(self.line(node, "days", line), *_split(exc, example))
        try:
            if "hours" in node:
                start_end = parse_hours(node["hours"])
        except ValueError as exc:
            self.problem(self.line(node, "hours", line), *_split(exc, example))
        # Without hours the window is open all day (00:00-24:00).
        start, end = start_end or (time(0), time(0))
        return SendWindow(days=days, start=start, end=end)

    def kind(self, doc: Mapping[Any, Any], top: int, trigger: str | None) -> Kind | None:
        if "kind" not in doc:
            return None
        value = doc["kind"]
        line = self.line(doc, "kind", top)
        if value not in KINDS:
            hint = did_you_mean(str(value), KINDS, code=False)
            self.problem(
                line,
                f"kind {value!r} is not known",
                f"{hint}Use nurture, decline or transactional, or leave kind out",
            )
            return None
        kind: Kind = value
        if kind == "decline" and trigger is not None and trigger != DECLINE_TRIGGER:
            self.problem(
                line,
                f"a decline sequence must start on {DECLINE_TRIGGER}, not {trigger}",
                f"set `event: {DECLINE_TRIGGER}` under trigger, or remove `kind: decline`",
            )
        elif kind != "decline" and trigger == DECLINE_TRIGGER:
            self.problem(
                line,
                f"a sequence triggered by {DECLINE_TRIGGER} is always a decline",
                "remove the kind line (or write `kind: decline`)",
            )
        return kind

    def steps(self, doc: Mapping[Any, Any], top: int) -> tuple[Step, ...] | None:
        if not self.required(
            doc, "steps", top, "sequence", "`steps:` with at least one step below it"
        ):
            return None
        node = doc["steps"]
        line = self.line(doc, "steps", top)
        if isinstance(node, list) and not node:
            self.problem(line, "steps is empty", "add at least one step: `- id: ...` under steps:")
            return None
        if not isinstance(node, list):
            self.problem(
                line,
                f"steps must be a list of steps, not {describe_node(node)}",
                "start each step on its own line with `- id: ...`, indented under steps:",
            )
            return None
        steps: list[Step] = []
        seen: dict[str, int] = {}
        refs: list[tuple[str, list[Engaged]]] = []
        for index, item in enumerate(node):
            item_line = self.line(node, index, line)
            unique = self.unique_id(seen, item, item_line, "step")
            step = self.step(item, item_line)
            if step is not None and unique:
                steps.append(step)
            raw_id = item.get("id") if isinstance(item, Mapping) else None
            tests = step.when.engaged() if step is not None and step.when else []
            refs.append((str(raw_id), tests))
        # Checked even when a step has other problems, so one run shows every mistake.
        self.problems.extend(step_ref_problems(self.file, refs))
        self.problems.extend(internal_ref_problems(self.file, steps, refs))
        return tuple(steps) if len(steps) == len(node) else None

    def step(self, node: Any, line: int) -> Step | None:
        if not isinstance(node, Mapping):
            self.problem(
                line,
                f"a step must be a set of keys, not {describe_node(node)}",
                "write `- id: intro` and, indented below it, `wait:` and `template:`",
            )
            return None
        before = len(self.problems)
        self.unknown_keys(node, STEP_KEYS, "step", line)
        step_id = None
        if self.required(node, "id", line, "step", "`id: my-step`"):
            step_id = self.check_id(node["id"], self.line(node, "id", line), "step")
        wait = None
        if self.required(node, "wait", line, "step", "`wait: 0s` (or 10m, 3 business days, ...)"):
            try:
                wait = parse_wait(node["wait"])
            except ValueError as exc:
                self.problem(self.line(node, "wait", line), *_split(exc, "write e.g. 10m"))
        template, notify, webhook = self.action(node, line, str(step_id or "?"))
        when = self.condition(node, "when", line, "step") if "when" in node else None
        variants = self.variants(node, line, str(step_id or "?"))
        if variants and (notify or webhook):
            self.problem(
                self.line(node, "variants", line),
                "A/B variants are for emails to the lead, not for notify or webhook steps",
                "remove `variants:` from this step",
            )
        winner = node.get("winner")
        if "winner" in node and (winner != "auto" or not variants):
            self.problem(
                self.line(node, "winner", line),
                f"winner: {winner!r} needs `winner: auto` and variants on the step",
                "write `winner: auto` under a step with `variants:`, or remove it (the "
                "report then shows the numbers and people decide)",
            )
        needs_content = node.get("needs_content", False)
        if not isinstance(needs_content, bool):
            self.problem(
                self.line(node, "needs_content", line),
                f"needs_content must be true or false, not {describe_node(needs_content)}",
                "write `needs_content: true` (the lead leaves the sequence when no new "
                "content piece is left for it) or remove the line",
            )
        if len(self.problems) > before or step_id is None or wait is None or template is None:
            return None
        return Step(
            id=step_id,
            wait=wait,
            template=template,
            when=when,
            line=line,
            variants=variants,
            winner_auto=winner == "auto",
            notify=notify,
            webhook=webhook,
            needs_content=needs_content is True,
        )

    def action(
        self, node: Mapping[Any, Any], line: int, step_id: str
    ) -> tuple[str | None, Notify | None, Webhook | None]:
        """What the step does: its ``template`` (an email to the lead), ``notify:`` or
        ``webhook:`` (exactly one). Returns the template ("" for a webhook)."""
        given = [key for key in ("template", "notify", "webhook") if key in node]
        if len(given) > 1:
            self.problem(
                self.line(node, given[1], line),
                f"a step does one thing; this one has {' and '.join(given)}",
                "keep one: `template:` emails the lead, `notify:` emails a person inside, "
                "`webhook:` posts to a URL; put the others in steps of their own",
            )
            return None, None, None
        if given == ["webhook"]:
            webhook = read_webhook(node, line, self.problem)
            return ("" if webhook else None), None, webhook
        notify: Notify | None = None
        if given == ["notify"]:
            found = read_notify(node, line, self.problem)
            if found is None:
                return None, None, None
            notify, raw, template_line = found
        elif self.required(node, "template", line, "step", "`template: value/case_study`"):
            raw, template_line = node["template"], self.line(node, "template", line)
        else:
            return None, None, None
        template = self.template(raw, template_line)
        if template is not None:
            self.template_refs.append(TemplateRef(self.file, line, step_id, template))
        return template, notify, None

    def variants(self, node: Mapping[Any, Any], line: int, step_id: str) -> tuple[Variant, ...]:
        """``variants: [{id: a, template: ...}, {id: b, subject: ..., weight: 2}]``."""
        if "variants" not in node:
            return ()
        raw = node["variants"]
        key_line = self.line(node, "variants", line)
        if not isinstance(raw, list) or len(raw) < 2:
            self.problem(
                key_line,
                "variants needs a list of at least two variants",
                "write e.g. `variants: [{id: a}, {id: b, subject: A shorter subject}]`",
            )
            return ()
        out: list[Variant] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            item_line = self.line(raw, index, key_line)
            if not isinstance(item, Mapping):
                self.problem(item_line, "a variant must be a set of keys", "write `- {id: a}`")
                continue
            self.unknown_keys(item, VARIANT_KEYS, "variant", item_line)
            if not self.unique_id(seen, item, item_line, "variant"):
                continue
            if not self.required(item, "id", item_line, "variant", "`id: a`"):
                continue
            variant_id = self.check_id(item["id"], self.line(item, "id", item_line), "variant")
            template = None
            if "template" in item:
                template = self.template(item["template"], self.line(item, "template", item_line))
                if template is not None:
                    self.template_refs.append(TemplateRef(self.file, item_line, step_id, template))
            subject = item.get("subject")
            if subject is not None and (not isinstance(subject, str) or not subject.strip()):
                self.problem(
                    self.line(item, "subject", item_line),
                    "a variant's subject must be text",
                    "put the subject in quotes",
                )
            weight = item.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                self.problem(
                    self.line(item, "weight", item_line),
                    f"weight must be a positive number, not {weight!r}",
                    "write e.g. `weight: 2` (twice the share of a variant with weight 1)",
                )
                continue
            if variant_id is not None:
                out.append(Variant(variant_id, template, subject, float(weight), item_line))
        return tuple(out) if len(out) == len(raw) else ()

    def template(self, value: Any, line: int) -> str | None:
        if isinstance(value, str) and TEMPLATE.match(value):
            return value
        text = str(value).strip().replace("\\", "/")
        fixed = text.removeprefix("templates/").lstrip("/")
        for suffix in (".j2", ".jinja2", ".jinja", ".html", ".txt"):
            fixed = fixed.removesuffix(suffix)
        fixed = "/".join(
            re.sub(r"[^A-Za-z0-9_-]+", "_", part).strip("_")
            for part in fixed.split("/")
            if part not in ("", ".", "..")
        )
        if text.endswith(".j2"):
            reason = "template names leave out .j2"
        elif text.startswith("/"):
            reason = "template names are relative to the templates folder, without a leading /"
        elif ".." in text.split("/"):
            reason = "template names cannot leave the templates folder (..)"
        elif not isinstance(value, str):
            reason = "template must be a name"
        else:
            reason = "template names use letters, digits, _ and -, with / between folders"
        self.problem(
            line,
            f"template {value!r}: {reason}",
            f"write `template: {fixed or 'value/case_study'}`",
        )
        return None

    # -- fit rules ------------------------------------------------------------------

    def fit_rules(self, doc: Any) -> tuple[FitRule, ...]:
        """The rules of ``fit.yaml`` that loaded cleanly; problems recorded for the rest."""
        if doc is None:
            return ()
        if not isinstance(doc, Mapping):
            self.problem(
                self.start(doc),
                f"fit.yaml must start with `rules:`, not {describe_node(doc)}",
                "write `rules:` on the first line and indent the list of rules under it",
            )
            return ()
        top = self.start(doc)
        self.unknown_keys(doc, FIT_KEYS, "fit file", top)
        node = doc.get("rules")
        if node is None:
            return ()
        line = self.line(doc, "rules", top)
        if not isinstance(node, list):
            self.problem(
                line,
                f"rules must be a list, not {describe_node(node)}",
                "start each rule on its own line with `- id: ...`, indented under rules:",
            )
            return ()
        rules: list[FitRule] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(node):
            item_line = self.line(node, index, line)
            unique = self.unique_id(seen, item, item_line, "rule")
            rule = self.fit_rule(item, item_line)
            if rule is not None and unique:
                rules.append(rule)
        return tuple(rules)

    def fit_rule(self, node: Any, line: int) -> FitRule | None:
        if not isinstance(node, Mapping):
            self.problem(
                line,
                f"a rule must be a set of keys, not {describe_node(node)}",
                "write `- id: my-rule` with `when:` and `reason:` indented below it",
            )
            return None
        before = len(self.problems)
        self.unknown_keys(node, RULE_KEYS, "rule", line)
        rule_id = None
        if self.required(node, "id", line, "rule", "`id: my-rule`"):
            rule_id = self.check_id(node["id"], self.line(node, "id", line), "rule")
        when = None
        if self.required(node, "when", line, "rule", "`when: {attributes.budget: {lt: 500}}`"):
            when = self.condition(node, "when", line, "rule")
        reason = None
        if self.required(node, "reason", line, "rule", "`reason: budget`"):
            value = node["reason"]
            if isinstance(value, str) and REASON.match(value):
                reason = value
            else:
                suggestion = _slug(str(value), "_") if value is not None else ""
                self.problem(
                    self.line(node, "reason", line),
                    f"reason {value!r} must be a short id: lowercase letters, digits, _ and -",
                    f"write e.g. `reason: {suggestion or 'budget'}`; the decline template "
                    "can turn it into words",
                )
        if len(self.problems) > before or rule_id is None or when is None or reason is None:
            return None
        return FitRule(id=rule_id, when=when, reason=reason, file=self.file, line=line)


def _split(exc: ValueError, fallback: str) -> tuple[str, str]:
    """Split a parser message "what is wrong; what to do" into message and fix."""
    message, _, fix = str(exc).partition("; ")
    return message, fix or fallback

"""Steps that reach a person instead of the lead: ``notify:`` (an internal email to the
lead's owner or a configured address) and ``webhook:`` (a signed JSON POST, e.g. to
create a task in the CRM). Read from a step's YAML here; sent by the sender through the
same ledger as emails (:mod:`worker.sending`, :mod:`worker.webhooks`).

```yaml
- id: call-weak
  wait: 0s
  notify: {template: internal/referral_call}      # to: the lead's owner
- id: crm-task
  wait: 0s
  webhook: {target: crm-tasks}                   # or url: https://...
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from worker.addresses import sendable_address
from worker.content import language_tag
from worker.errors import Problem as FileProblem
from worker.sequences.engagement import STEP_KINDS, Engaged
from worker.sequences.model import Notify, Step, Webhook
from worker.yamlfile import describe_node, yaml_line

NOTIFY_KEYS = ("template", "to", "locale")
WEBHOOK_KEYS = ("url", "target")
#: A name of ``NURTURE_WEBHOOK_TARGETS``.
TARGET = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: ``to: owner`` says the default out loud.
OWNER = "owner"

Problem = Callable[[int, str, str], None]


def read_notify(
    node: Mapping[Any, Any], line: int, problem: Problem
) -> tuple[Notify, Any, int] | None:
    """A step's ``notify:``: the Notify, the raw template value and its line (None on
    problems; the caller checks the template name like any step's)."""
    raw, key_line = node["notify"], yaml_line(node, "notify", line)
    example = "`notify: {template: internal/referral_call}` (to the lead's owner)"
    if isinstance(raw, str):
        return Notify(), raw, key_line  # `notify: internal/referral_call`
    if not isinstance(raw, Mapping):
        problem(
            key_line,
            f"notify must be a template name or keys, not {describe_node(raw)}",
            f"write {example}",
        )
        return None
    ok = True
    for key in raw:
        if key not in NOTIFY_KEYS:
            ok = False
            problem(
                yaml_line(raw, key, key_line),
                f"unknown key {key!r} in notify",
                f"use {' and '.join(NOTIFY_KEYS)}: {example}",
            )
    if "template" not in raw:
        problem(
            key_line,
            "this notify has no `template` (the email the person gets)",
            f"add one, e.g. {example}; see docs/sequences.md#steps-that-reach-a-person",
        )
        return None
    to = raw.get("to")
    if to is not None and to != OWNER:
        try:
            to = sendable_address(str(to).strip())
        except ValueError as exc:
            ok = False
            problem(
                yaml_line(raw, "to", key_line),
                f"notify to {to!r}: {exc}",
                "write an address (`to: sales@example.com`), or `to: owner` / no `to` "
                "for the lead's owner",
            )
    locale = raw.get("locale")
    if locale is not None and language_tag(str(locale)) is None:
        ok = False
        problem(
            yaml_line(raw, "locale", key_line),
            f"notify locale {locale!r} is not a language code",
            "write an ISO 639-1 code, optionally with a region: `locale: da`, `locale: da-DK`",
        )
    if not ok:
        return None
    notify = Notify(
        None if to in (None, OWNER) else str(to),
        None if locale is None else language_tag(str(locale)),
    )
    return notify, raw["template"], yaml_line(raw, "template", key_line)


def read_webhook(node: Mapping[Any, Any], line: int, problem: Problem) -> Webhook | None:
    """A step's ``webhook:`` (None on problems). Whether a ``target`` is configured and
    a secret is set is checked against the settings (:func:`check_webhooks`)."""
    raw, key_line = node["webhook"], yaml_line(node, "webhook", line)
    example = "`webhook: {target: crm-tasks}` or `webhook: {url: https://crm.example.com/hook}`"
    if isinstance(raw, str):
        raw = {"url": raw} if "://" in raw else {"target": raw}
    if not isinstance(raw, Mapping):
        problem(
            key_line,
            f"webhook must be a target name, a URL or keys, not {describe_node(raw)}",
            f"write {example}",
        )
        return None
    bad = [key for key in raw if key not in WEBHOOK_KEYS]
    for key in bad:
        problem(
            yaml_line(raw, key, key_line),
            f"unknown key {key!r} in webhook",
            f"use url or target: {example}",
        )
    url, target = raw.get("url"), raw.get("target")
    if (url is None) == (target is None):
        problem(
            key_line,
            "a webhook needs exactly one of `url` and `target`",
            f"write {example}; targets are named in NURTURE_WEBHOOK_TARGETS",
        )
        return None
    if url is not None:
        found = url_problem(str(url))
        if found is not None:
            problem(
                yaml_line(raw, "url", key_line),
                f"webhook url {url!r}: {found}",
                "write the full address, e.g. `url: https://crm.example.com/hook`",
            )
            return None
        return None if bad else Webhook(url=str(url), line=key_line)
    if not isinstance(target, str) or not TARGET.match(target):
        problem(
            yaml_line(raw, "target", key_line),
            f"webhook target {target!r} is not a name",
            "write the name given in NURTURE_WEBHOOK_TARGETS, e.g. `target: crm-tasks`",
        )
        return None
    return None if bad else Webhook(target=target, line=key_line)


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable for a webhook (None: usable)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    return None


def internal_ref_problems(
    file: str, steps: list[Step], refs: list[tuple[str, list[Engaged]]]
) -> list[FileProblem]:
    """``opened``/``clicked`` naming a notify or webhook step: the lead never gets those,
    so the condition could never hold."""
    internal = {step.id: step.channel for step in steps if step.channel != "email"}
    return [
        FileProblem(
            file,
            test.line,
            f"{test.kind}: {test.value!r} is a {internal[test.value]} step, which the lead "
            "never receives, so it can never be opened or clicked",
            "name an earlier step that emails the lead",
        )
        for _step_id, tests in refs
        for test in tests
        if test.kind in STEP_KINDS and test.value in internal
    ]

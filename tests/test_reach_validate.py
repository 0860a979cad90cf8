"""``nurture validate`` and ``nurture preview`` for steps that reach a person (issue 14,
items 5 and 6): each mistake with its file, line and fix; what a notify would email and
a webhook would post, shown before anything runs."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from worker.catalog import LiveCatalog, load_and_check
from worker.errors import NurtureError
from worker.preview import preview
from worker.send_test import send_test
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def settings_for(dirs: dict[str, Path], **overrides: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        sequences_dir=dirs["sequences"],
        templates_dir=dirs["templates"],
        content_dir=dirs["content"],
        crm_dir=ROOT / "crm",
        from_email="hello@acme.example",
        **overrides,
    )


def problems_for(dirs: dict[str, Path], steps: str, **overrides: Any) -> list[str]:
    """The problems of a sequence `ops` with these steps (alone, so only its templates
    are rendered: seconds less per test)."""
    keep_only(dirs)
    (dirs["sequences"] / "ops.yaml").write_text(
        f"id: ops\ntrigger: lead.created\nsteps:\n{steps}", encoding="utf-8"
    )
    loaded, problems = load_and_check(settings_for(dirs, **overrides))
    assert (loaded is None) == bool(problems)
    return [str(p) for p in problems]


def keep_only(dirs: dict[str, Path], *names: str) -> None:
    for path in dirs["sequences"].glob("*.yaml"):
        if path.stem not in ("fit", *names):
            path.unlink()


def test_the_shipped_referral_sequence_validates_without_webhook_settings(
    shipped_catalog: LiveCatalog,
) -> None:
    steps = shipped_catalog.current.catalog.sequences["referral-intro"].steps
    assert [(s.id, s.channel) for s in steps[:2]] == [
        ("call-weak", "notify"),
        ("find-out", "notify"),
    ]


def test_a_notify_without_a_template_names_the_line_and_the_fix(
    catalog_dirs: dict[str, Path],
) -> None:
    found = problems_for(catalog_dirs, "  - id: ping\n    wait: 0s\n    notify: {to: owner}\n")
    assert len(found) == 1, found
    assert "ops.yaml:6: this notify has no `template`" in found[0]
    assert "notify: {template: internal/referral_call}" in found[0]


def test_a_notify_to_a_bad_address_and_a_step_doing_two_things(
    catalog_dirs: dict[str, Path],
) -> None:
    found = problems_for(
        catalog_dirs,
        "  - id: ping\n    wait: 0s\n    notify: {template: internal/referral_call, to: sales}\n"
        "  - id: both\n    wait: 0s\n    template: value/guide\n"
        "    notify: {template: internal/referral_call}\n",
    )
    assert any("ops.yaml:6: notify to 'sales'" in p for p in found), found
    assert any(
        "ops.yaml:10: a step does one thing; this one has template and notify" in p for p in found
    ), found


def test_a_notify_template_that_does_not_exist_is_found(catalog_dirs: dict[str, Path]) -> None:
    found = problems_for(
        catalog_dirs, "  - id: ping\n    wait: 0s\n    notify: internal/referal_call\n"
    )
    assert any("ops.yaml:4" in p and "internal/referral_call" in p for p in found), found


def test_a_notify_language_without_its_template_is_found(catalog_dirs: dict[str, Path]) -> None:
    """A notify in a language the templates lack would go out in the default language
    unnoticed: the step's `locale:` and NURTURE_NOTIFY_LOCALE are both checked."""
    ping = "  - id: ping\n    wait: 0s\n    notify: {template: internal/referral_call%s}\n"
    danish = catalog_dirs["templates"] / "da" / "internal" / "referral_call.j2"
    missing = f"{danish} does not exist, so it would go out in the default language (en)"
    found = problems_for(catalog_dirs, ping % ", locale: da")
    assert found == [
        f"{catalog_dirs['sequences'] / 'ops.yaml'}:4: notify step `ping` is in 'da' (its "
        f"`locale`) but {missing} — add {danish}, or choose a language the templates have"
    ]
    found = problems_for(catalog_dirs, ping % "", notify_locale="da")
    assert len(found) == 1 and "(NURTURE_NOTIFY_LOCALE)" in found[0], found
    found = problems_for(catalog_dirs, ping % ", locale: Danish")
    assert len(found) == 1 and "ops.yaml:6: notify locale 'Danish' is not a language" in found[0]
    # The default language needs no folder of its own; a Danish file makes `da` work.
    assert problems_for(catalog_dirs, ping % ", locale: en-GB") == []
    danish.parent.mkdir(parents=True)
    danish.write_text(
        (catalog_dirs["templates"] / "internal" / "referral_call.j2").read_text(), "utf-8"
    )
    assert problems_for(catalog_dirs, ping % ", locale: da-DK") == []
    assert problems_for(catalog_dirs, ping % "", notify_locale="da") == []


def test_a_webhook_without_url_or_target_and_with_a_bad_url(
    catalog_dirs: dict[str, Path],
) -> None:
    found = problems_for(
        catalog_dirs,
        "  - id: hook\n    wait: 0s\n    webhook: {}\n"
        "  - id: hook2\n    wait: 0s\n    webhook: {url: crm.example.com/hook}\n",
        webhook_secret="s",
    )
    assert any("ops.yaml:6: a webhook needs exactly one of `url` and `target`" in p for p in found)
    assert any(
        "ops.yaml:9: webhook url 'crm.example.com/hook': not an http(s) URL" in p for p in found
    ), found


def test_a_webhook_needs_its_secret_and_a_configured_target(
    catalog_dirs: dict[str, Path],
) -> None:
    steps = "  - id: hook\n    wait: 0s\n    webhook: {target: crm-taks}\n"
    found = problems_for(
        catalog_dirs, steps, webhook_targets="crm-tasks=https://crm.example.com/hook"
    )
    assert len(found) == 2, found
    assert any(
        "ops.yaml:6: webhook step `hook` cannot be signed: NURTURE_WEBHOOK_SECRET is not set" in p
        for p in found
    )
    (target,) = [p for p in found if "crm-taks" in p]
    assert "ops.yaml:6: webhook target 'crm-taks' is not in NURTURE_WEBHOOK_TARGETS" in target
    assert "did you mean `crm-tasks`?" in target
    # Configured: it validates.
    assert (
        problems_for(
            catalog_dirs,
            steps.replace("crm-taks", "crm-tasks"),
            webhook_secret="s",
            webhook_targets="crm-tasks=https://crm.example.com/hook",
        )
        == []
    )


LEAD = {
    "lead": {
        "id": "crm-7",
        "email": "ann@berg.example",
        "first_name": "Ann",
        "last_name": "Berg",
        "source": "referral",
        "owner_name": "Maria Holm",
        "owner_email": "maria@acme.example",
    },
    "data": {"referrer": {"name": "Ole Holm", "relationship": "weak"}},
}


def test_preview_shows_whom_a_notify_reaches_and_what_it_says(
    catalog_dirs: dict[str, Path],
) -> None:
    keep_only(catalog_dirs, "referral-intro")
    out = preview(settings_for(catalog_dirs), "referral-intro", LEAD, None, "call-weak")
    assert "call-weak            notify maria@acme.example (the lead's owner)" in out
    assert "find-out             skipped" in out
    assert "To: Maria Holm <maria@acme.example>" in out
    assert "Subject: Call Ann Berg today: weak referral via Ole Holm" in out
    # Without an owner it goes to NURTURE_NOTIFY_TO.
    lead = {**LEAD, "lead": {k: v for k, v in LEAD["lead"].items() if "owner" not in k}}
    out = preview(
        settings_for(catalog_dirs, notify_to="sales@acme.example"),
        "referral-intro",
        lead,
        None,
        None,
    )
    assert "notify sales@acme.example (NURTURE_NOTIFY_TO (the lead has no owner))" in out


def test_preview_shows_the_signed_post_of_a_webhook(catalog_dirs: dict[str, Path]) -> None:
    keep_only(catalog_dirs)
    (catalog_dirs["sequences"] / "ops.yaml").write_text(
        "id: ops\ntrigger: lead.created\nsteps:\n"
        "  - {id: hook, wait: 0s, webhook: {target: crm-tasks}}\n",
        encoding="utf-8",
    )
    settings = settings_for(
        catalog_dirs, webhook_secret="s3", webhook_targets="crm-tasks=https://crm.example.com/h"
    )
    out = preview(settings, "ops", LEAD, None, "hook")
    assert "hook                 webhook POST https://crm.example.com/h" in out
    assert "Idempotency-Key: ops.1.hook.crm-7" in out
    body = json.loads(out[out.index("{") :])
    assert body["lead"]["email"] == "ann@berg.example" and body["step"] == "hook"
    signature = next(line for line in out.splitlines() if line.startswith("X-Nurture-Signature"))
    assert signature.startswith("X-Nurture-Signature: sha256=")
    assert len(signature.split("=", 1)[1]) == 64
    # The same helper signs in the worker: HMAC-SHA256 of the raw body with the secret.
    raw = json.dumps(body, ensure_ascii=False, sort_keys=True).encode()
    assert signature.endswith(hmac.new(b"s3", raw, hashlib.sha256).hexdigest())


def test_send_test_of_a_notify_is_the_internal_email_and_a_webhook_is_refused(
    catalog_dirs: dict[str, Path], tmp_path: Path
) -> None:
    keep_only(catalog_dirs, "referral-intro")
    settings = settings_for(
        catalog_dirs, outbox_dir=tmp_path / "outbox", postal_address="Vesterbrogade 1"
    )
    message, _ = send_test(settings, "referral-intro", "call-weak", "me@acme.example", LEAD)
    assert message.internal and message.to_email == "me@acme.example"
    assert message.subject == "[TEST] Call Ann Berg today: weak referral via Ole Holm"
    (path,) = (tmp_path / "outbox").glob("*.eml")
    raw = path.read_bytes()
    assert b"List-Unsubscribe" not in raw and b"X-Nurture-Internal: notify" in raw
    (catalog_dirs["sequences"] / "ops.yaml").write_text(
        "id: ops\ntrigger: lead.created\nsteps:\n  - {id: hook, wait: 0s, webhook: {url: https://crm.example.com/h}}\n",
        encoding="utf-8",
    )
    with pytest.raises(NurtureError, match="is a webhook: it emails no one"):
        send_test(settings_for(catalog_dirs, webhook_secret="s"), "ops", "hook", "me@acme.example")


def test_a_condition_on_a_notify_step_can_never_hold(catalog_dirs: dict[str, Path]) -> None:
    found = problems_for(
        catalog_dirs,
        "  - {id: ping, wait: 0s, notify: internal/referral_call}\n"
        "  - id: after\n    wait: 1d\n    template: value/guide\n    when: {clicked: ping}\n",
    )
    assert len(found) == 1, found
    assert "ops.yaml:8: clicked: 'ping' is a notify step, which the lead never receives" in found[0]

"""The outbox backend: RFC 5322 files, idempotent per key, atomic, thread-safe."""

from __future__ import annotations

import errno
import os
import threading
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from worker.delivery.base import Message, SendResult
from worker.delivery.outbox import OutboxDelivery, message_id_for
from worker.errors import PermanentDeliveryError, TransientDeliveryError

UNSUBSCRIBE = "https://nurture.example/unsubscribe/eyJsIjoiY3JtLTEwNDIifQ.c2lnbmF0dXJl"


def make_message(**overrides: Any) -> Message:
    values: dict[str, Any] = {
        "key": "crm-1042.value-first.1.case-study",
        "to_email": "ann@example.com",
        "to_name": "Ann Berg",
        "from_email": "hello@nurture.example",
        "from_name": "Nurture Team",
        "subject": "Your case study",
        "text": "Hi Ann,\n\nHere is the case study.\n",
        "html": "<p>Hi Ann,</p><p>Here is the case study.</p>",
        "unsubscribe_url": UNSUBSCRIBE,
        "lead_id": "crm-1042",
        "sequence": "value-first",
        "step": "case-study",
    }
    values.update(overrides)
    return Message(**values)


def parse(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        parsed = BytesParser(policy=policy.default).parse(handle)
    assert isinstance(parsed, EmailMessage)
    return parsed


def eml_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def outbox(tmp_path: Path) -> OutboxDelivery:
    return OutboxDelivery(tmp_path / "outbox")


LOCALES = {
    "da": ("Søren Ærø", "Hej Søren – din guide til æøå", "Kære Søren,\nÆbler, øl og ål.\n"),
    "fi": ("Äiti Häkkinen", "Hyvää päivää, Äiti – yö ja sää", "Hei Äiti,\nTervetuloa!\n"),
    "zh": ("王小明", "你好，王先生：您的案例研究", "王先生您好，\n这是您的案例研究。\n"),
}


@pytest.mark.parametrize("locale", sorted(LOCALES))
def test_file_parses_back_with_every_header_and_both_parts(
    outbox: OutboxDelivery, locale: str
) -> None:
    name, subject, text = LOCALES[locale]
    html = f"<p>{text}</p>"
    message = make_message(
        to_name=name,
        from_name=f"Team {name}",
        subject=subject,
        text=text,
        html=html,
        categories=("value-first",),
    )

    result = outbox.send(message)

    path = outbox.path_for(message.key)
    assert path.name == "crm-1042.value-first.1.case-study.eml"
    assert result == SendResult(provider_id=message_id_for(message), duplicate=False)
    raw = path.read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")  # non-ASCII header text is RFC 2047 encoded
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line endings throughout

    parsed = parse(path)
    assert parsed["Subject"] == subject
    assert parsed["To"].addresses[0].display_name == name
    assert parsed["To"].addresses[0].addr_spec == "ann@example.com"
    assert parsed["From"].addresses[0].display_name == f"Team {name}"
    assert parsed["From"].addresses[0].addr_spec == "hello@nurture.example"
    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Nurture-Lead"] == "crm-1042"
    assert parsed["X-Nurture-Sequence"] == "value-first"
    assert parsed["X-Nurture-Step"] == "case-study"
    assert parsed["X-Nurture-Key"] == message.key
    assert parsed["X-Nurture-Categories"] == "value-first"
    assert parsed["Message-ID"] == message_id_for(message)
    assert parsed["Date"] is not None
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content_charset() == "utf-8"
    assert plain.get_content() == text
    assert rich.get_content_type() == "text/html"
    assert rich.get_content().rstrip("\n") == html


def test_text_only_message_is_a_single_text_part(outbox: OutboxDelivery) -> None:
    message = make_message(html=None, text="Just text, no newline at the end")
    outbox.send(message)
    parsed = parse(outbox.path_for(message.key))
    assert not parsed.is_multipart()
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().rstrip("\n") == "Just text, no newline at the end"


def test_long_lines_and_long_unsubscribe_url_survive(outbox: OutboxDelivery) -> None:
    url = "https://nurture.example/unsubscribe/" + "x" * 400
    text = "æ" * 3000 + "\n"  # one very long non-ASCII line: needs a transfer encoding
    message = make_message(unsubscribe_url=url, text=text)
    outbox.send(message)
    raw = outbox.path_for(message.key).read_bytes()
    assert f"List-Unsubscribe: <{url}>\r\n".encode() in raw  # one verbatim line, not folded
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = parse(outbox.path_for(message.key))
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    # Transfer-encoded text carries MIME's canonical CRLF line breaks.
    assert next(parsed.iter_parts()).get_content().replace("\r\n", "\n") == text


def test_message_id_is_deterministic_per_key() -> None:
    first = message_id_for(make_message())
    assert first == message_id_for(make_message(subject="other", text="other"))
    assert first != message_id_for(make_message(key="crm-1042.value-first.2.case-study"))
    assert first.startswith("<") and first.endswith("@nurture.example>")


def test_second_send_of_a_key_is_a_duplicate_and_leaves_the_file_alone(
    outbox: OutboxDelivery,
) -> None:
    message = make_message()
    first = outbox.send(message)
    path = outbox.path_for(message.key)
    before = path.read_bytes()
    stat = path.stat()

    second = outbox.send(make_message(subject="A different subject"))

    assert first.duplicate is False
    assert second.duplicate is True
    assert second.provider_id == first.provider_id
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert eml_files(outbox.directory) == [path.name]


def test_unsafe_keys_stay_inside_the_directory_and_never_collide(
    outbox: OutboxDelivery,
) -> None:
    keys = ["../../etc/passwd", "..", "a/b", "a_b", "a b", "lead\x1fseq", ".hidden"]
    for key in keys:
        assert outbox.send(make_message(key=key)).duplicate is False
    files = eml_files(outbox.directory)
    assert len(files) == len(keys)
    assert all(not name.startswith(".") and "/" not in name for name in files)
    assert "a_b.eml" in files  # a safe key keeps its readable name
    assert not (outbox.directory.parent / "etc").exists()


def test_no_temp_files_are_left_behind(outbox: OutboxDelivery) -> None:
    for i in range(20):
        outbox.send(make_message(key=f"lead-{i}.s.1.a"))
        outbox.send(make_message(key=f"lead-{i}.s.1.a"))
    assert eml_files(outbox.directory) == sorted(f"lead-{i}.s.1.a.eml" for i in range(20))


def test_failed_write_is_transient_and_leaves_nothing(
    outbox: OutboxDelivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    with pytest.raises(TransientDeliveryError, match="No space left"):
        outbox.send(make_message())
    assert eml_files(outbox.directory) == []


def test_file_systems_without_hard_links_fall_back_to_replace(
    outbox: OutboxDelivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert outbox.send(make_message()).duplicate is False
    assert outbox.send(make_message()).duplicate is True
    assert eml_files(outbox.directory) == ["crm-1042.value-first.1.case-study.eml"]
    assert parse(outbox.path_for(make_message().key))["X-Nurture-Lead"] == "crm-1042"


def test_readers_never_see_a_partial_file(outbox: OutboxDelivery) -> None:
    text = "Lorem ipsum dolor sit amet æøå\n" * 40_000  # about 1.3 MB per file
    count = 15
    done = threading.Event()
    seen: dict[str, set[int]] = {}

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(outbox.directory):
                if entry.name.endswith(".eml"):
                    size = len(Path(entry.path).read_bytes())
                    seen.setdefault(entry.name, set()).add(size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(count):
            outbox.send(make_message(key=f"big-{i}", text=text))
    finally:
        done.set()
        watcher.join()
    for name, sizes in seen.items():
        assert sizes == {(outbox.directory / name).stat().st_size}, name
    assert len(eml_files(outbox.directory)) == count


def test_concurrent_sends_of_one_key_write_exactly_one_file(outbox: OutboxDelivery) -> None:
    threads = 16
    barrier = threading.Barrier(threads)
    results: list[SendResult] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        result = outbox.send(make_message())
        with lock:
            results.append(result)

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(r.duplicate for r in results) == [False] + [True] * (threads - 1)
    assert eml_files(outbox.directory) == ["crm-1042.value-first.1.case-study.eml"]
    assert parse(outbox.path_for(make_message().key))["Subject"] == "Your case study"


def test_two_backends_on_one_directory_share_the_idempotency(tmp_path: Path) -> None:
    # Two worker processes share the outbox: each has its own backend instance.
    first, second = OutboxDelivery(tmp_path), OutboxDelivery(tmp_path)
    assert first.send(make_message()).duplicate is False
    assert second.send(make_message()).duplicate is True


def test_directory_is_created_and_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "outbox"
    outbox = OutboxDelivery(directory)
    assert directory.is_dir()
    directory.rmdir()
    assert outbox.send(make_message()).duplicate is False
    assert outbox.path_for(make_message().key).is_file()


@pytest.mark.parametrize(
    "overrides",
    [
        {"to_email": "not an address"},
        {"to_email": ""},
        {"from_email": "nobody"},
        {"to_email": "søren@example.com"},
    ],
)
def test_unrenderable_message_is_permanent_and_writes_nothing(
    outbox: OutboxDelivery, overrides: dict[str, str]
) -> None:
    with pytest.raises(PermanentDeliveryError):
        outbox.send(make_message(**overrides))
    assert eml_files(outbox.directory) == []


def test_international_domain_is_idna_encoded(outbox: OutboxDelivery) -> None:
    message = make_message(to_email="ann@æøå.dk")
    outbox.send(message)
    assert parse(outbox.path_for(message.key))["To"].addresses[0].domain == "xn--5cab8c.dk"


def test_control_characters_in_header_values_are_flattened(outbox: OutboxDelivery) -> None:
    message = make_message(subject="Line one\r\nBcc: evil@example.com", lead_id="crm\n1042")
    outbox.send(message)
    parsed = parse(outbox.path_for(message.key))
    assert parsed["Subject"] == "Line one Bcc: evil@example.com"
    assert parsed["Bcc"] is None
    assert parsed["X-Nurture-Lead"] == "crm 1042"


def test_send_many_reports_each_outcome_without_raising(outbox: OutboxDelivery) -> None:
    messages = [
        make_message(key="a"),
        make_message(key="b", to_email="broken"),
        make_message(key="a"),
        make_message(key="c"),
    ]
    results = outbox.send_many(messages)
    assert len(results) == 4
    assert isinstance(results[0], SendResult) and not results[0].duplicate
    assert isinstance(results[1], PermanentDeliveryError)
    assert isinstance(results[2], SendResult) and results[2].duplicate
    assert isinstance(results[3], SendResult) and not results[3].duplicate
    outbox.close()

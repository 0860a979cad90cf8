"""The ``nurture`` command: validate, preview, emit, forget, worker, serve, status.

Loads settings, wires a runtime and hands over; the work lives elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from worker.errors import CatalogError, NurtureError, SettingsError, StoreUnavailableError
from worker.settings import Settings, load_settings

if TYPE_CHECKING:  # imported when a command runs: `nurture validate` needs no Redis
    from worker.dead_letters import DeadLetter, DiscardReport, RetryReport
    from worker.runtime import Runtime

_T = TypeVar("_T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"nurture: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from worker.catalog import load_and_check

    settings = _settings()
    loaded, problems = load_and_check(settings)
    for problem in problems:
        print(problem)
    if loaded is None:
        print(f"\n{len(problems)} problem(s) found; nothing was changed.", file=sys.stderr)
        return 1
    from worker.lint import Folders, lint, rendered_subjects

    folders = Folders(
        settings.sequences_dir, settings.templates_dir, settings.content_dir, settings.crm_dir
    )
    subjects = rendered_subjects(loaded, settings.templates_dir)
    warnings = lint(folders, loaded.catalog, loaded.content, subjects)
    for warning in warnings:
        print(f"warning: {warning}")
    if warnings and args.strict:
        print(f"\n{len(warnings)} warning(s) found (--strict).", file=sys.stderr)
        return 1
    catalog = loaded.catalog
    steps = sum(len(s.steps) for s in catalog.sequences.values())
    print(
        f"OK: {len(catalog.sequences)} sequences, {steps} steps, {len(catalog.fit_rules)} fit "
        f"rules, {len(loaded.content.items)} content items, {len(loaded.mappings)} CRM "
        f"mappings; templates in {settings.templates_dir} check out."
    )
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    from worker.catalog import load_and_check
    from worker.examples import write_examples

    loaded, problems = load_and_check(_settings())
    if loaded is None:
        for problem in problems:
            print(problem)
        print("\nfix these first (nurture validate); nothing was written.", file=sys.stderr)
        return 1
    count = write_examples(loaded, Path(args.out))
    print(f"wrote {count} example emails and an index to {args.out}")
    return 0


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def cmd_emit(args: argparse.Namespace) -> int:
    from worker.events import parse_events
    from worker.ingest import ingest
    from worker.runtime import Runtime

    settings = _settings()
    try:
        raw = _read_input(args.file)
    except OSError as exc:
        print(f"nurture emit: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    events, errors = parse_events(raw)
    if errors:
        for error in errors:
            print(f"nurture emit: {args.file}: {error}", file=sys.stderr)
        print(f"nothing queued: {len(errors)} bad event(s)", file=sys.stderr)
        return 1
    runtime = Runtime(settings, load_catalog=False)
    try:
        result = ingest(runtime, events)
    finally:
        runtime.close()
    print(f"queued {result.accepted} event(s), {result.duplicates} duplicate(s) ignored")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from worker.addresses import sendable_address
    from worker.runtime import Runtime

    who = args.who.strip()
    if "@" in who:
        try:
            who = sendable_address(who)
        except ValueError as exc:
            print(f"nurture forget: {exc}", file=sys.stderr)
            return 1
    runtime = Runtime(_settings(), load_catalog=False)
    try:
        erased = runtime.processor.forget(who)
    finally:
        runtime.close()
    kept = " and its keyed hash suppressed" if "@" in who else ""
    print(f"erased {len(erased)} lead(s){': ' + ', '.join(erased) if erased else ''}{kept}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.runtime import Runtime
    from worker.worker_process import default_processes, run_worker, supervise, watch_supervisor

    settings = _settings()
    settings.require_sending()
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    processes = args.processes or default_processes()
    if processes > 1:
        return supervise(settings, processes, args.threads, stop)
    watch_supervisor(stop)
    runtime = Runtime(settings)
    run_worker(runtime, stop, threads=args.threads)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from worker.http.app import create_app
    from worker.runtime import Runtime
    from worker.worker_process import wait_for_redis

    settings = _settings()
    runtime = Runtime(settings, load_catalog=False)
    try:
        # Refuse a key layout this version does not know (a newer one, another number of
        # shards); an older one is served: intake keeps going while `nurture migrate
        # state` runs (docs/deployment.md).
        wait_for_redis(runtime, threading.Event())
        runtime.check_redis(older_layout=True)
        # Our own access log line (with request id, route template, never the raw path,
        # so unsubscribe tokens stay out of logs) replaces uvicorn's.
        uvicorn.run(
            create_app(runtime),
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
        )
    finally:
        runtime.close()
    return 0


def _fmt_ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_due(ts: float | None) -> str:
    """A due time in UTC and in this machine's local time (``TZ``), e.g.
    ``2026-11-30 08:00:00 UTC (Mon 09:00 CET here)``."""
    if ts is None:
        return "-"
    local = datetime.fromtimestamp(ts, UTC).astimezone()
    return f"{_fmt_ts(ts)} ({local:%a %H:%M %Z} here)"


def _delivery_line(delivery: dict[str, Any], now: float) -> str:
    """The status line saying whether delivery runs, or why and since when it waits."""
    if not delivery["paused"]:
        return "delivery: running"
    since = float(delivery["since"])
    minutes = max(0, int(now - since)) // 60
    return (
        f"delivery: PAUSED since {_fmt_ts(since)} ({minutes} min) by an account fault: "
        f"{delivery['reason']} -- touches keep their place; the worker checks the account "
        "and resumes by itself once it works"
    )


def _paused_line(paused: dict[str, Any]) -> str:
    """The status line naming the paused sequences, who paused them and what waits."""
    if not paused["sequences"]:
        return "paused sequences: none"
    parts = []
    for sequence, how in sorted(paused["sequences"].items()):
        name = "all sequences" if sequence == "*" else sequence
        since = f" since {_fmt_ts(how['since'])}" if how.get("since") else ""
        parts.append(f"{name} ({how['by']}{since})")
    return (
        f"paused sequences: {', '.join(parts)}; {paused['touches_waiting']} touch(es) wait "
        "in their place"
    )


def cmd_pause(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, pause=True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, pause=False)


def _pause_or_resume(args: argparse.Namespace, *, pause: bool) -> int:
    from worker.errors import did_you_mean
    from worker.runtime import Runtime
    from worker.store.pauses import ALL_SEQUENCES

    verb = "pause" if pause else "resume"
    if bool(args.sequences) == bool(args.all):
        print(f"nurture {verb}: name the sequence(s) or give --all", file=sys.stderr)
        return 2
    runtime = Runtime(_settings())
    try:
        runtime.check_redis()
        known = runtime.catalog.current.catalog.sequences
        for name in args.sequences:
            if name not in known:
                hint = did_you_mean(name, known)
                print(
                    f"nurture {verb}: no sequence {name!r}; {hint}sequences: "
                    f"{', '.join(sorted(known))}",
                    file=sys.stderr,
                )
                return 1
        pauses = runtime.store.pauses
        if pause:
            chosen = [ALL_SEQUENCES] if args.all else list(args.sequences)
            pauses.pause_sequences(chosen, runtime.clock.now().timestamp())
            what = "every sequence" if args.all else ", ".join(chosen)
            print(
                f"paused {what}: nothing of it is sent; its touches keep their place and go "
                f"out (spread out if long overdue) after `nurture resume "
                f"{'--all' if args.all else ' '.join(chosen)}`"
            )
            return 0
        chosen = list(pauses.paused_sequences()) if args.all else list(args.sequences)
        pauses.resume_sequences(chosen)
        print(f"resumed {', '.join(chosen) or 'nothing (none was paused)'}")
        for name in args.sequences or known:
            sequence = known.get(name)
            if sequence is not None and sequence.paused:
                print(
                    f"  {name} stays paused by `paused: true` in {sequence.file}; remove that "
                    "line to send it"
                )
        return 0
    finally:
        runtime.close()


def cmd_status(args: argparse.Namespace) -> int:
    from worker.runtime import Runtime
    from worker.status import collect_status

    settings = _settings()
    runtime = Runtime(settings, load_catalog=False)
    try:
        status = collect_status(runtime)
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"redis: {status['redis_url']}")
    print(f"queues: {status['broker']}")
    print(_delivery_line(status["delivery"], datetime.now(UTC).timestamp()))
    print(_paused_line(status["paused"]))
    for queue, depth in status["queues"].items():
        print(
            f"queue {queue}: {depth['ready']} ready, {depth['delayed']} delayed, "
            f"{depth['failed']} failed"
        )
    sched = status["schedule"]
    print(
        f"scheduled touches: {sched['scheduled']} (claimed: {sched['claimed']}), "
        f"next due: {_fmt_due(sched['next_due'])}"
    )
    print(f"dead letters: {status['dead_letters']['count']}")
    for letter in status["dead_letters"]["latest"]:
        print(f"  {_fmt_ts(float(letter['at']))} [{letter['kind']}] {letter['reason']}")
    unknown = status["unknown_count"]
    shown = (
        f" (the earliest {len(status['unknown'])} below)"
        if unknown > len(status["unknown"])
        else ""
    )
    print(f"outcome unknown (not resent): {unknown}{shown}")
    for member, ts in status["unknown"]:
        print(f"  {_fmt_ts(ts)} {member}")
    print(f"suppressed addresses: {status['suppressed']}")
    for sequence, steps in status["stats"].items():
        for step, counters in steps.items():
            counts = ", ".join(f"{k} {v}" for k, v in sorted(counters.items()))
            print(f"  {sequence}/{step}: {counts}")
    from worker.sequences.variants import variant_summary

    for sequence, steps in status["stats"].items():
        for line in variant_summary(sequence, steps):
            print(line)  # A/B tests: is the difference real? (two-proportion z-test)
    return 0


def _chosen_dead_letters(
    args: argparse.Namespace, act: Callable[[Runtime, list[DeadLetter]], _T]
) -> _T:
    """Load the dead letters, keep those the arguments choose (ids, --reason,
    --sequence), and hand them to ``act`` (dead-letters, retry, discard)."""
    from worker import dead_letters
    from worker.runtime import Runtime

    runtime = Runtime(_settings(), load_catalog=False)
    try:
        runtime.check_redis()
        letters = dead_letters.select(
            dead_letters.load(runtime),
            ids=getattr(args, "ids", None) or None,
            reason=args.reason,
            sequence=args.sequence,
        )
        return act(runtime, letters)
    finally:
        runtime.close()


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from worker import dead_letters

    letters = _chosen_dead_letters(args, lambda runtime, chosen: chosen)
    counts = dead_letters.counts_by_category(letters)
    if args.json:
        print(
            json.dumps(
                {
                    "count": len(letters),
                    "by_reason": dict(counts),
                    "letters": [d.as_dict() for d in letters],
                },
                indent=2,
            )
        )
        return 0
    print(f"dead letters: {len(letters)}")
    if not letters:
        return 0
    print("by reason:")
    for name, count in counts:
        print(f"  {count:>6}  {name}")
    shown = letters[-args.limit :] if args.limit else letters
    if len(shown) < len(letters):
        print(f"latest {len(shown)} (use --limit 0 for all):")
    for d in shown:
        where = f"{d.sequence}/{d.step}" if d.sequence else "-"
        print(f"{d.id}  {_fmt_ts(d.at)}  {d.kind:<6} lead={d.lead or '-'}  {where}  {d.reason}")
    print(
        "\nretry: nurture retry ID... | --reason TEXT | --sequence ID | --all; "
        "drop: nurture discard ..."
    )
    return 0


def _act_on_dead_letters(
    args: argparse.Namespace,
    command: str,
    act: Callable[[Runtime, list[DeadLetter]], RetryReport | DiscardReport],
) -> int:
    """``nurture retry`` and ``nurture discard``: refuse an empty choice (it would be
    every dead letter by mistake), act on the chosen letters, print the report."""
    if not (args.ids or args.reason or args.sequence or args.all):
        print(
            f"nurture {command}: say which dead letters: IDs, --reason TEXT, --sequence ID or "
            "--all (see `nurture dead-letters`)",
            file=sys.stderr,
        )
        return 2
    report = _chosen_dead_letters(args, act)
    print("\n".join(report.lines()))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from worker import dead_letters

    return _act_on_dead_letters(args, "retry", dead_letters.retry)


def cmd_discard(args: argparse.Namespace) -> int:
    from worker import dead_letters

    return _act_on_dead_letters(args, "discard", dead_letters.discard)


def cmd_send_test(args: argparse.Namespace) -> int:
    from worker.send_test import send_test

    if not args.to:
        print(
            "nurture send-test: --to ADDRESS is required: a test goes only to an address "
            "you name, never to a lead",
            file=sys.stderr,
        )
        return 2
    settings = _settings()
    lead_doc = None
    if args.lead:
        try:
            lead_doc = json.loads(Path(args.lead).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"nurture send-test: cannot read lead file {args.lead}: {exc}", file=sys.stderr)
            return 1
    message, result = send_test(settings, args.sequence, args.step, args.to, lead_doc)
    where = settings.outbox_dir if settings.delivery == "outbox" else "SendGrid"
    print(
        f"sent a test of {args.sequence}/{args.step} to {message.to_email} through {where}: "
        f"{message.subject!r} (id {result.provider_id or '-'}); not counted, not in the ledger"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from worker.migrate import migrate_queues, migrate_state
    from worker.runtime import Runtime

    runtime = Runtime(_settings(), load_catalog=False)
    if args.what == "state":
        try:
            if not runtime.store.ping():
                runtime.check_redis()  # raises, naming the URL
            counts = migrate_state(runtime, dry_run=args.dry_run)
        finally:
            runtime.close()
        verb = "would move" if args.dry_run else "moved"
        parts = [f"{count} {kind}" for kind, count in sorted(counts.items())] or ["nothing"]
        print(f"state: {verb} {', '.join(parts)}")
        return 0
    try:
        runtime.check_redis()
        runtime.broker_depths()  # the target answers, before anything is taken from Redis
        moved = migrate_queues(runtime)
    finally:
        runtime.close()
    for one in moved:
        print(f"queue {one.queue}: moved {one.ready} ready, {one.delayed} delayed")
    return 0


def cmd_lead(args: argparse.Namespace) -> int:
    from worker.leadview import find_leads, lead_view, render_text
    from worker.runtime import Runtime

    settings = _settings()
    runtime = Runtime(settings)
    try:
        runtime.check_redis()
        ids = find_leads(runtime.store, args.lead)
        catalog = runtime.catalog.current.catalog
        views = [lead_view(runtime.store, catalog, lead_id) for lead_id in ids]
    finally:
        runtime.close()
    if not views:
        print(f"nurture lead: no lead {args.lead!r} is stored", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(views if len(views) > 1 else views[0], indent=2, default=str))
    else:
        print("\n\n".join(render_text(view) for view in views))
    return 0


def _day(text: str | None, option: str) -> float | None:
    """An ISO date or time (UTC when no offset) as unix time."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(
            f"{option} {text!r} is not an ISO date or time, e.g. 2026-11-01 or 2026-11-01T09:00:00Z"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def cmd_report(args: argparse.Namespace) -> int:
    from worker import report
    from worker.runtime import Runtime

    filters = report.Filters(
        since=_day(args.since, "--since"),
        until=_day(args.until, "--until"),
        sequence=args.sequence,
        by=args.by,
    )
    settings = _settings()
    runtime = Runtime(settings)
    try:
        runtime.check_redis()
        sequences = runtime.catalog.current.catalog.sequences
        order = {name: [step.id for step in sequences[name].steps] for name in sorted(sequences)}
        build = report.build_exact if args.exact else report.build_report
        data = build(runtime.store, order, filters)
    finally:
        runtime.close()
    render = {"table": report.render_table, "csv": report.render_csv, "json": report.render_json}
    sys.stdout.write(render[args.format](data).rstrip("\n") + "\n")
    if args.html:
        Path(args.html).write_text(report.render_html(data), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from worker.preview import preview

    settings = _settings()
    try:
        lead_doc = json.loads(Path(args.lead).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"nurture preview: cannot read lead file {args.lead}: {exc}", file=sys.stderr)
        return 1
    start = None
    if args.start:
        try:
            start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        except ValueError:
            print(
                f"nurture preview: --start {args.start!r} is not an ISO time, e.g. "
                "2026-11-23T09:00:00Z",
                file=sys.stderr,
            )
            return 1
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    output = preview(settings, args.sequence, lead_doc, start, args.step)
    print(output)
    return 0


def _add_dead_letter_commands(sub: Any) -> None:
    """``dead-letters``, ``retry`` and ``discard``: one way of choosing dead letters."""
    p = sub.add_parser("dead-letters", help="what failed: reason, lead, sequence/step, time")
    p.add_argument("--reason", help="only those whose reason contains this text")
    p.add_argument("--sequence", help="only this sequence's touches")
    p.add_argument("--limit", type=int, default=50, help="show the latest N (0: all)")
    p.add_argument("--json", action="store_true")
    for name, text in (
        ("retry", "send failed touches again (never twice) and re-queue failed events"),
        ("discard", "forget dead letters you have dealt with"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("ids", nargs="*", help="dead letter ids (from `nurture dead-letters`)")
        p.add_argument("--reason", help="those whose reason contains this text")
        p.add_argument("--sequence", help="this sequence's touches")
        p.add_argument("--all", action="store_true", help="every dead letter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nurture", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "validate", help="check every sequence, fit rule, content item, template and CRM mapping"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also fail on warnings (what loads but silently changes what is sent)",
    )
    p = sub.add_parser(
        "examples", help="render every shipped email for every kind of lead into a folder"
    )
    p.add_argument("--out", default="docs/examples", help="the folder (emptied first)")
    p = sub.add_parser("preview", help="timeline of sends for a lead, and a step's email")
    p.add_argument("sequence")
    p.add_argument("--lead", required=True, help="JSON file with a lead (or an event)")
    p.add_argument("--start", help="when the trigger happens (ISO time; default now)")
    p.add_argument("--step", help="render this step's email")
    p = sub.add_parser("send-test", help="send one step's email to your own address, marked [TEST]")
    p.add_argument("sequence")
    p.add_argument("--step", required=True, help="the step id")
    p.add_argument("--to", help="the address to send the test to (required)")
    p.add_argument("--lead", help="JSON file with the lead to render for (default: a sample)")
    p = sub.add_parser("emit", help="validate events and queue them")
    p.add_argument("file", nargs="?", default="-", help="JSON / JSON Lines file, or - for stdin")
    p = sub.add_parser(
        "forget", help="stop all email to a person and erase their data (EMAIL or LEAD_ID)"
    )
    p.add_argument("who", help="an email address or a lead id")
    p = sub.add_parser("worker", help="run the queue workers and the scheduler")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default 8)")
    p.add_argument(
        "--processes",
        type=_positive,
        default=None,
        help="worker processes (default: one per CPU)",
    )
    p = sub.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p = sub.add_parser("status", help="queues, schedule, dead letters, suppressions")
    p.add_argument("--json", action="store_true")
    for name, text in (
        ("pause", "stop sending sequences now (touches keep their place)"),
        ("resume", "send paused sequences again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("sequences", nargs="*", help="sequence ids")
        p.add_argument("--all", action="store_true", help="every sequence")
    _add_dead_letter_commands(sub)
    p = sub.add_parser("migrate", help="move an install's data to a new home")
    p.add_argument(
        "what",
        choices=["queues", "state"],
        help="queues: move the messages queued in NURTURE_REDIS_URL to NURTURE_BROKER_URL; "
        "state: move the state to the bucketed key layout (workers stopped)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="state: count what would move, change nothing"
    )
    p = sub.add_parser("report", help="funnel per sequence and step, with rates")
    p.add_argument("--since", help="from this ISO date/time (UTC if no offset)")
    p.add_argument("--until", help="up to (not including) this ISO date/time")
    p.add_argument("--sequence", help="only this sequence")
    p.add_argument("--by", choices=["locale", "source"], help="one funnel per locale or source")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--html", help="also write a static HTML page with funnel charts here")
    p.add_argument(
        "--exact",
        action="store_true",
        help="count every lead's records instead of the per-day counters (any time range; "
        "slow for many leads)",
    )
    p = sub.add_parser("lead", help="a lead's record, timeline, and why it is not in a sequence")
    p.add_argument("lead", help="the lead's id or email address")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS: dict[str, Any] = {
    "validate": cmd_validate,
    "examples": cmd_examples,
    "preview": cmd_preview,
    "emit": cmd_emit,
    "forget": cmd_forget,
    "worker": cmd_worker,
    "serve": cmd_serve,
    "status": cmd_status,
    "dead-letters": cmd_dead_letters,
    "pause": cmd_pause,
    "send-test": cmd_send_test,
    "resume": cmd_resume,
    "retry": cmd_retry,
    "discard": cmd_discard,
    "migrate": cmd_migrate,
    "lead": cmd_lead,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from worker.logs import setup_logging

    try:
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
    except SettingsError as exc:
        print(f"nurture: {exc}", file=sys.stderr)
        return 2
    try:
        code = int(COMMANDS[args.command](args))
        sys.stdout.flush()  # here, so a reader that went away is caught below
        return code
    except BrokenPipeError:
        # The reader went away (`nurture status | head -4`): stop quietly, as Unix tools do.
        _silence_stdout()
        return 1
    except redis.RedisError as exc:
        url = os.environ.get("NURTURE_REDIS_URL") or "the embedded Redis"
        print(
            f"nurture {args.command}: Redis ({url}) failed: {exc}; check that it runs and "
            "that NURTURE_REDIS_URL points at it",
            file=sys.stderr,
        )
        return 1
    except StoreUnavailableError as exc:
        hint = "" if "NURTURE_REDIS_URL" in str(exc) else "; check NURTURE_REDIS_URL"
        print(f"nurture {args.command}: {exc}{hint}", file=sys.stderr)
        return 1
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        print(
            f"\n{len(exc.problems)} problem(s): fix them, then run `nurture validate`.",
            file=sys.stderr,
        )
        return 1
    except NurtureError as exc:
        print(f"nurture {args.command}: {exc}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

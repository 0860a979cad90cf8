"""The ``nurture`` command: validate, preview, emit, worker, serve, status.

Loads settings, wires a runtime and hands over; the work lives elsewhere.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.errors import CatalogError, NurtureError, SettingsError
from worker.settings import Settings, load_settings


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
    catalog = loaded.catalog
    steps = sum(len(s.steps) for s in catalog.sequences.values())
    print(
        f"OK: {len(catalog.sequences)} sequences, {steps} steps, {len(catalog.fit_rules)} fit "
        f"rules, {len(loaded.content.items)} content items, {len(loaded.mappings)} CRM "
        f"mappings; templates in {settings.templates_dir} check out."
    )
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

    settings = _settings()
    runtime = Runtime(settings, load_catalog=False)
    try:
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
    for queue, depth in status["queues"].items():
        print(
            f"queue {queue}: {depth['ready']} ready, {depth['delayed']} delayed, "
            f"{depth['failed']} failed"
        )
    sched = status["schedule"]
    print(
        f"scheduled touches: {sched['scheduled']} (claimed: {sched['claimed']}), "
        f"next due: {_fmt_ts(sched['next_due'])}"
    )
    print(f"dead letters: {status['dead_letters']['count']}")
    for letter in status["dead_letters"]["latest"]:
        print(f"  {_fmt_ts(float(letter['at']))} [{letter['kind']}] {letter['reason']}")
    print(f"outcome unknown (not resent): {len(status['unknown'])}")
    for member, ts in status["unknown"]:
        print(f"  {_fmt_ts(ts)} {member}")
    print(f"suppressed addresses: {status['suppressed']}")
    for sequence, steps in status["stats"].items():
        for step, counters in steps.items():
            counts = ", ".join(f"{k} {v}" for k, v in sorted(counters.items()))
            print(f"  {sequence}/{step}: {counts}")
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
        order = sorted(runtime.catalog.current.catalog.sequences)
        data = report.build_report(runtime.store, order, filters)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nurture", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "validate", help="check every sequence, fit rule, content item, template and CRM mapping"
    )
    p = sub.add_parser("preview", help="timeline of sends for a lead, and a step's email")
    p.add_argument("sequence")
    p.add_argument("--lead", required=True, help="JSON file with a lead (or an event)")
    p.add_argument("--start", help="when the trigger happens (ISO time; default now)")
    p.add_argument("--step", help="render this step's email")
    p = sub.add_parser("emit", help="validate events and queue them")
    p.add_argument("file", nargs="?", default="-", help="JSON / JSON Lines file, or - for stdin")
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
    p = sub.add_parser("report", help="funnel per sequence and step, with rates")
    p.add_argument("--since", help="from this ISO date/time (UTC if no offset)")
    p.add_argument("--until", help="up to (not including) this ISO date/time")
    p.add_argument("--sequence", help="only this sequence")
    p.add_argument("--by", choices=["locale", "source"], help="one funnel per locale or source")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--html", help="also write a static HTML page with funnel charts here")
    p = sub.add_parser("lead", help="a lead's record, timeline, and why it is not in a sequence")
    p.add_argument("lead", help="the lead's id or email address")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS: dict[str, Any] = {
    "validate": cmd_validate,
    "preview": cmd_preview,
    "emit": cmd_emit,
    "worker": cmd_worker,
    "serve": cmd_serve,
    "status": cmd_status,
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
        return int(COMMANDS[args.command](args))
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

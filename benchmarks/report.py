"""Turn the collected results into the Markdown report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks.common import median

RATIO_TARGET = 0.5
MEMORY_TARGET = 250
LATENESS_TARGET = 1.0


def num(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators; '-' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def mb(value: float) -> str:
    return f"{value / 1024 / 1024:,.1f} MB"


def yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def med(rows: Sequence[dict[str, Any]], key: str) -> float:
    return median([float(r[key]) for r in rows if key in r])


def spread_of(rows: Sequence[dict[str, Any]], key: str, digits: int = 0) -> str:
    values = [float(r[key]) for r in rows if key in r]
    if len(values) < 2:
        return "(1 run)"
    return f"{num(min(values), digits)}–{num(max(values), digits)}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def _foreign(results: dict[str, Any]) -> list[float]:
    values = []
    for key in ("http_single", "http_batch", "emit", "pipeline", "noop"):
        values += [float(r["foreign_cores"]) for r in results.get(key, [])]
    for level in results.get("levels", []):
        for kind in ("spread", "instant"):
            values += [float(r["foreign_cores"]) for r in level[kind]]
    return values


def _level_figures(level: dict[str, Any]) -> dict[str, float]:
    return {
        "schedule_seconds": med(level["schedule"], "schedule_seconds"),
        "touches_per_s": med(level["schedule"], "touches_per_s"),
        "schedule_bytes": med(level["schedule"], "schedule_bytes"),
        "p50": med(level["spread"], "p50_s"),
        "p99": med(level["spread"], "p99_s"),
        "max": med(level["spread"], "max_s"),
        "i_p50": med(level["instant"], "p50_s"),
        "i_p99": med(level["instant"], "p99_s"),
        "i_max": med(level["instant"], "max_s"),
        "drain": med(level["instant"], "drain_touches_per_s"),
        "duplicates": sum(r["duplicates"] for r in level["spread"] + level["instant"]),
    }


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    size = results["size"]
    runs = results["runs"]
    workers, threads = results["workers"], results["threads"]
    pipeline = results["pipeline"]
    noop = results["noop"]
    levels = results["levels"]
    top = levels[-1]
    first = levels[0]
    topf = _level_figures(top)
    touches_per_s = med(pipeline, "touches_per_s")
    noop_per_s = med(noop, "messages_per_s")
    ratios = [
        p["touches_per_s"] / n["messages_per_s"] for p, n in zip(pipeline, noop, strict=False)
    ]
    ratio = median(ratios)
    foreign = _foreign(results)

    add("# nurture-worker benchmark report")
    add("")
    add(f"- **Environment:** {results['environment']}")
    add(f"- **Command:** `{results['command']}`")
    add(
        f"- **Size:** `{size}`; each throughput figure is the median of {runs} run(s) "
        f"(min–max shown); {workers} `nurture worker` processes × {threads} threads; "
        f"whole suite took {num(results['elapsed'] / 60, 1)} min."
    )
    if foreign:
        add(
            f"- **Other load on the machine** during the timed windows (CPU used by processes "
            f"that are not part of the benchmark, in cores of {results['cpus']}): median "
            f"{num(median(foreign), 2)}, max {num(max(foreign), 2)}. Figures measured under "
            "such load are lower than this machine can do when idle."
        )
    add("")

    # -- targets ----------------------------------------------------------------------
    add("## Targets")
    add("")
    rss_flat = top["rss_idle"] <= first["rss_idle"] * 1.10 + 5 * 1024 * 1024
    bursts = [b for level in levels for b in level["spread"]]
    late = [b for b in bursts if b["p99_s"] > LATENESS_TARGET]
    if topf["p99"] > LATENESS_TARGET:
        lateness_met = "**NO**"
    elif late:
        lateness_met = "**partly** (median yes; not in every burst)"
    else:
        lateness_met = "yes"
    rows = [
        [
            f"pipeline / raw dramatiq ≥ {RATIO_TARGET} (> 1.0 if batching)",
            f"{num(ratio, 2)} ({num(touches_per_s)} touches/s vs {num(noop_per_s)} no-op "
            "messages/s)",
            yes(ratio >= RATIO_TARGET),
        ],
        [
            f"Redis memory per pending touch ≤ {MEMORY_TARGET} B",
            f"{num(topf['schedule_bytes'])} B in the schedule; {num(top['state_bytes'])} B "
            "for all state of an enrolled lead",
            yes(topf["schedule_bytes"] <= MEMORY_TARGET)
            + ("" if top["state_bytes"] <= MEMORY_TARGET else " (schedule); all state: **NO**"),
        ],
        [
            f"lateness p99 ≤ {num(LATENESS_TARGET, 0)} s, {num(results['burst'])} due in "
            f"{num(results['burst_window'])} s, {num(top['pending'])} pending",
            f"p50 {num(topf['p50'], 2)} s, p99 {num(topf['p99'], 2)} s, max "
            f"{num(topf['max'], 2)} s (median of {len(top['spread'])}); p99 over "
            f"{num(LATENESS_TARGET)} s in {len(late)} of {len(bursts)} such bursts at all "
            f"levels (worst {num(max(b['p99_s'] for b in bursts), 2)} s)",
            lateness_met,
        ],
        [
            "worker memory does not grow with pending touches",
            f"RSS {mb(first['rss_idle'])} at {num(first['pending'])} vs {mb(top['rss_idle'])} "
            f"at {num(top['pending'])} pending",
            yes(rss_flat),
        ],
    ]
    lines += table(["target", "measured", "met"], rows)
    add("")

    # -- 1. ingest --------------------------------------------------------------------
    add("## 1. Ingest")
    add("")
    single, batch, emit = results["http_single"], results["http_batch"], results["emit"]
    rows = []
    for label, data in (
        (
            f"`POST /events`, 1 event per request, {single[0]['concurrency']} clients",
            single,
        ),
        (
            f"`POST /events`, {batch[0]['per_request']} events per request, "
            f"{batch[0]['concurrency']} clients",
            batch,
        ),
    ):
        rows.append(
            [
                label,
                num(data[0]["events"]),
                f"**{num(med(data, 'events_per_s'))}**",
                spread_of(data, "events_per_s"),
                f"{num(med(data, 'p50_ms'), 1)} / {num(med(data, 'p99_ms'), 1)} ms",
                f"{num(med(data, 'server_cpu_ms'), 3)}",
                f"{num(med(data, 'client_cpu_ms'), 3)}",
                f"{num(med(data, 'redis_cpu_ms'), 3)}",
                num(sum(r["errors"] for r in data)),
                num(med(data, "foreign_cores"), 2),
            ]
        )
    rows.append(
        [
            "`nurture emit FILE.jsonl` (process start to exit)",
            num(emit[0]["events"]),
            f"**{num(med(emit, 'events_per_s'))}**",
            spread_of(emit, "events_per_s"),
            f"start-up alone {num(med(emit, 'startup_seconds'), 2)} s",
            f"{num(med(emit, 'emit_cpu_ms'), 3)}",
            "-",
            f"{num(med(emit, 'redis_cpu_ms'), 3)}",
            "0",
            num(med(emit, "foreign_cores"), 2),
        ]
    )
    lines += table(
        [
            "path",
            "events",
            "events/s",
            "min–max",
            "latency p50 / p99",
            "server CPU ms/event",
            "client CPU ms/event",
            "Redis CPU ms/event",
            "errors",
            "other load (cores)",
        ],
        rows,
    )
    add("")
    add(
        "An event counts when the answer was `202` (durably queued: the replay guard set and "
        "the event in the dramatiq `events` queue); every run checks the queue holds them. "
        "`nurture serve` is one process, as shipped; the clients are threads with a "
        "keep-alive `httpx.Client` each, on the same 2 cores, so their CPU is listed too. "
        "Server CPU is the `nurture serve` process (request parsing, signature, validation, "
        "Redis); `nurture emit` includes interpreter start-up and reading, validating and "
        "queueing the whole file."
    )
    add("")
    server_ms = med(single, "server_cpu_ms")
    add(
        f"What bounds it: one `nurture serve` process spends {num(server_ms, 2)} ms CPU per "
        f"single-event request (about {num(1000 / server_ms if server_ms else 0)} requests/s "
        "per core at best, before the clients' and Redis's share of the same 2 cores); "
        f"with {batch[0]['per_request']} events per request that falls to "
        f"{num(med(batch, 'server_cpu_ms'), 3)} ms per event: the cost is per request "
        "(HTTP, middleware, signature, Redis round trips), not per event."
    )
    add("")

    # -- 2. pipeline ------------------------------------------------------------------
    add("## 2. Pipeline: due touch to accepted by SendGrid")
    add("")
    worker_ms = med(pipeline, "worker_cpu_ms")
    redis_ms = med(pipeline, "redis_cpu_ms")
    standin_ms = med(pipeline, "standin_cpu_ms")
    total_ms = worker_ms + redis_ms + standin_ms
    rows = [
        [
            f"pipeline: touches/s ({num(pipeline[0]['touches'])} due touches, rendered, "
            "reserved, sent, advanced)",
            f"**{num(touches_per_s)}**",
            spread_of(pipeline, "touches_per_s"),
        ],
        [
            f"raw dramatiq: no-op messages/s ({num(noop[0]['messages'])} messages)",
            f"**{num(noop_per_s)}**",
            spread_of(noop, "messages_per_s"),
        ],
        [
            f"ratio pipeline / raw dramatiq (target ≥ {RATIO_TARGET})",
            f"**{num(ratio, 3)}**",
            f"{num(min(ratios), 3)}–{num(max(ratios), 3)}" if len(ratios) > 1 else "(1 run)",
        ],
        [
            "CPU per touch: worker processes / Redis / SendGrid stand-in",
            f"{num(worker_ms, 2)} / {num(redis_ms, 2)} / {num(standin_ms, 2)} ms",
            "",
        ],
        [
            "CPU per no-op message: worker processes / Redis",
            f"{num(med(noop, 'worker_cpu_ms'), 3)} / {num(med(noop, 'redis_cpu_ms'), 3)} ms",
            "",
        ],
        [
            "machine CPU busy during the pipeline run / of it other load",
            f"{num(med(pipeline, 'machine_busy_cores'), 2)} / "
            f"{num(med(pipeline, 'foreign_cores'), 2)} cores of {results['cpus']}",
            "",
        ],
        [
            "events processed by the real event actor while pre-loading (1 process, 8 threads)",
            f"{num(med(pipeline, 'preload_events_per_s'))} events/s",
            spread_of(pipeline, "preload_events_per_s"),
        ],
        ["dead letters during the runs", num(sum(p["dead_letters"] for p in pipeline)), ""],
    ]
    lines += table(["figure", "median", "min–max"], rows)
    add("")
    add(
        "Raw dramatiq here is the same `Runtime` (broker URL, namespace, heartbeat, "
        "middleware) and the same `dramatiq.Worker` settings as `nurture worker`, with an "
        "actor that does nothing; the ratio compares touches/s with messages/s, so "
        "batching (the scheduler puts up to 20 touches in one message) counts in the "
        "pipeline's favour."
    )
    add("")
    add("### What bounds it")
    add("")
    cpu_bound = results["cpus"] * 1000 / total_ms if total_ms else float("nan")
    add(
        f"Every touch costs **{num(total_ms, 2)} ms of CPU** in total (worker "
        f"{num(worker_ms, 2)}, Redis {num(redis_ms, 2)}, stand-in {num(standin_ms, 2)}); "
        f"{results['cpus']} cores can therefore do at most ~{num(cpu_bound)} touches/s, and "
        f"the machine was {num(med(pipeline, 'machine_busy_cores'), 2)} cores busy during "
        "the runs: the pipeline is **CPU-bound**, and most of that CPU is the worker's own "
        "Python per touch, against "
        f"{num(med(noop, 'worker_cpu_ms'), 3)} ms per no-op message for raw dramatiq."
    )
    add("")
    anatomy = results["anatomy"]
    add(
        f"**Anatomy of one touch** (the real `TouchSender` in one thread, "
        f"{num(anatomy['touches'])} touches, nothing else running in that process; every "
        "Redis round trip and every TCP connect counted and attributed): "
        f"{num(anatomy['wall_ms'], 2)} ms wall, {num(anatomy['cpu_ms'], 2)} ms CPU per touch, "
        f"**{num(anatomy['round_trips_total'], 1)} Redis round trips** and "
        f"**{num(anatomy['connects_total'], 2)} new TCP connections to SendGrid** per touch."
    )
    add("")
    trips = {k.rsplit(":", 1)[-1]: v for k, v in anatomy["round_trips"].items()}
    rows = []
    for row in anatomy["rows"]:
        name = row["call"]
        rt = trips.get(name, 0.0)
        rows.append(
            [
                f"`{name}`",
                num(row["calls"], 1),
                num(rt, 1) if rt else "-",
                num(row["wall_ms"], 3),
                num(row["cpu_ms"], 3),
            ]
        )
    others = {k: v for k, v in trips.items() if not any(r["call"] == k for r in anatomy["rows"])}
    for name, value in others.items():
        rows.append([f"`{name}` (direct Redis call)", "-", num(value, 1), "-", "-"])
    lines += table(
        ["call made by TouchSender", "calls/touch", "Redis round trips", "wall ms", "CPU ms"],
        rows,
    )
    add("")
    profile = results.get("profile_run") or {}
    if "profile_wall" in profile:
        wall = profile["profile_wall"]
        state = wall["worker_state"]
        busy = sum(state.values())
        add(
            f"**py-spy, wall clock** (worker 0, {num(wall['samples'])} samples over the "
            f"profiled run at {num(profile['touches_per_s'])} touches/s; profiling costs "
            "throughput, so this run is not in the medians). Dramatiq worker threads were: "
            + ", ".join(f"{k} {pct(v, busy)}" for k, v in state.items())
            + ". Where the time inside `send_touches` goes:"
        )
        add("")
        in_touch = sum(wall["touch_categories"].values())
        rows = [[k, pct(v, in_touch)] for k, v in wall["touch_categories"].items()]
        lines += table(["subsystem (wall, worker threads in send_touches)", "share"], rows)
        add("")
        rows = [[f"`{k}`", pct(v, in_touch)] for k, v in list(wall["touch_callees"].items())[:10]]
        lines += table(["function called by TouchSender (wall)", "share"], rows)
        add("")
    if "profile_cpu" in profile:
        cpu = profile["profile_cpu"]
        total = cpu["samples"]
        possible = profile.get("profile_seconds", 0.0) * profile.get("profile_rate", 0)
        held = (
            f", i.e. a thread held the GIL {pct(total, possible)} of the time" if possible else ""
        )
        add(
            f"**py-spy, holding the GIL** (worker 1, `--gil`: only samples where a thread "
            f"runs Python; {num(total)} samples{held}). Where the worker's Python CPU goes:"
        )
        add("")
        rows = [[k, pct(v, total)] for k, v in cpu["categories"].items()]
        lines += table(["subsystem (holding the GIL, all threads)", "share"], rows)
        add("")
        rows = [[k, pct(v, total)] for k, v in cpu.get("highlights", {}).items()]
        lines += table(["specific cost (holding the GIL)", "share"], rows)
        add("")
        rows = [[f"`{k}`", pct(v, total)] for k, v in cpu["top_self"].items()]
        lines += table(["top self-time frames (holding the GIL)", "share"], rows)
        add("")
    if profile.get("profile_error"):
        add(f"py-spy profile not available: {profile['profile_error']}")
        add("")
    add(
        "py-spy attributes a thread that waits to re-take the GIL after a Redis reply to the "
        "Redis frame it is in; with 8 threads per process on one core each, that is why "
        "Redis dominates the wall view although one round trip costs "
        f"{num(results['rt_cost']['wall_ms'], 3)} ms unloaded. Fewer round trips cut both the "
        "CPU and these waits."
    )
    add("")
    lines += _suggestions(results, total_ms, worker_ms, touches_per_s)

    # -- 3. scheduler at scale --------------------------------------------------------
    add(f"## 3. Scheduler at scale: {num(top['pending'])} pending touches")
    add("")
    fidelity = results["fidelity"]
    sizes = fidelity["sizes"]
    breakdown = ", ".join(
        f"{name.split(':')[1]} {num(value)} B"
        for name, value in sorted(sizes.items(), key=lambda kv: -kv[1])
    )
    repeats = len(top["spread"])
    rows = [
        [
            "Redis memory per pending touch, schedule zset only (`used_memory` growth / N)",
            f"**{num(topf['schedule_bytes'])} B**",
            f"≤ {MEMORY_TARGET} B",
            yes(topf["schedule_bytes"] <= MEMORY_TARGET),
        ],
        [
            "Redis memory per enrolled lead, all its state (lead, enrollment, email index, "
            "replay guard, schedule entry)",
            f"**{num(top['state_bytes'])} B**",
            f"≤ {MEMORY_TARGET} B",
            yes(top["state_bytes"] <= MEMORY_TARGET),
        ],
        ["Redis `used_memory` with all of it", mb(top["used_memory"]), "", ""],
        [
            f"time to schedule {num(top['pending'])} touches (one ZADD per touch, pipelined "
            "in batches of 10,000, redis-py)",
            f"{num(topf['schedule_seconds'], 1)} s ({num(topf['touches_per_s'])}/s)",
            "",
            "",
        ],
        [
            f"time to write all state for {num(top['pending'])} leads (hand-packed RESP, "
            "pipelined)",
            f"{num(top['state_seconds'], 1)} s",
            "",
            "",
        ],
        [
            f"worker RSS, idle next to {num(first['pending'])} vs {num(top['pending'])} pending",
            f"{mb(first['rss_idle'])} vs {mb(top['rss_idle'])}",
            "no growth",
            yes(rss_flat),
        ],
        ["worker RSS after the bursts", mb(top["rss_after"]), "", ""],
        [
            f"lateness, {num(results['burst'])} touches due spread over "
            f"{num(results['burst_window'])} s: p50 / p99 / max",
            f"{num(topf['p50'], 3)} / **{num(topf['p99'], 3)}** / {num(topf['max'], 3)} s",
            f"p99 ≤ {num(LATENESS_TARGET)} s",
            yes(topf["p99"] <= LATENESS_TARGET),
        ],
        [
            f"lateness, {num(results['burst'])} touches due at the same instant: p50 / p99 / max",
            f"{num(topf['i_p50'], 2)} / {num(topf['i_p99'], 2)} / {num(topf['i_max'], 2)} s",
            "(no target; bounded by throughput)",
            "",
        ],
        ["drain rate of that instant burst", f"{num(topf['drain'])} touches/s", "", ""],
        ["touches sent twice", num(topf["duplicates"]), "0", yes(topf["duplicates"] == 0)],
    ]
    lines += table(["figure", "value", "target", "met"], rows)
    add("")
    add(
        f"Lateness and schedule time are medians of {repeats} repeat(s) at this level; "
        "memory figures are deterministic to within a few bytes. The state is written "
        "directly (a million leads through the event pipeline would take hours here); "
        f"the direct writer is checked against the real pipeline on every run: "
        f"**{'identical' if fidelity['match'] else 'DIFFERENT'}** ({fidelity['detail']}; "
        f"`MEMORY USAGE` per lead {num(fidelity['real_bytes'])} B real vs "
        f"{num(fidelity['direct_bytes'])} B direct: {breakdown}). Cross-check through the "
        "real pipeline in benchmark 2: "
        f"{num(med(pipeline, 'real_state_bytes_per_lead'))} B per lead at "
        f"{num(pipeline[0]['touches'])} leads."
    )
    add("")
    needed = results["burst"] / results["burst_window"] if results["burst_window"] else 0.0
    drains = [b["drain_touches_per_s"] for level in levels for b in level["instant"]]
    add(
        f"Lateness is bounded by throughput: {num(results['burst'])} touches in "
        f"{num(results['burst_window'])} s need {num(needed)} touches/s sustained, and the "
        f"workers drain {num(min(drains))}–{num(max(drains))} touches/s here (the instant "
        "bursts)"
        + (
            ", so the margin is thin: when other load takes a core for a few seconds, "
            "due touches queue up and p99 goes past the target"
            if min(drains) < 3 * needed
            else f", {num(min(drains) / needed, 1)} times what is needed at the least"
        )
        + f" ({len(late)} of {len(bursts)} bursts over 1 s). Without a queue the path adds little "
        f"(p50 {num(topf['p50'], 2)} s: the scheduler ticks every 0.2 s, claims up to 50 due "
        "touches per tick and puts 20 in one message, sent one after another by one "
        "thread); a burst due at one instant drains at the pipeline's throughput (section 2)."
    )
    add("")
    if top["state_bytes"] > MEMORY_TARGET:
        add(
            f"The {MEMORY_TARGET} B target is met by what a *pending touch* costs (its "
            f"schedule entry, {num(topf['schedule_bytes'])} B). An enrolled lead costs "
            f"{num(top['state_bytes'])} B in all, most of it the lead's own data and its "
            "enrollment (JSON with full field names), which exist whether or not a touch is "
            "pending; the items are listed above. If it matters: the email index is a whole "
            "Redis set per address where a hash field would do for the usual one-lead "
            "address, and the enrollment could drop empty and default fields."
        )
        add("")

    # -- 4. scaling -------------------------------------------------------------------
    add("## 4. How the figures grow with the number of leads")
    add("")
    rows = []
    for level in levels:
        f = _level_figures(level)
        rows.append(
            [
                num(level["pending"]),
                f"{num(f['schedule_seconds'], 2)} s",
                num(f["schedule_bytes"]),
                num(level["state_bytes"]),
                mb(level["used_memory"]),
                mb(level["rss_idle"]),
                mb(level["rss_after"]),
                f"{num(f['p50'], 2)} / {num(f['p99'], 2)} / {num(f['max'], 2)}",
                f"{num(f['i_p99'], 2)}",
                num(f["drain"]),
                num(med(level["spread"] + level["instant"], "foreign_cores"), 2),
            ]
        )
    lines += table(
        [
            "leads pending",
            "schedule time",
            "B/touch (schedule)",
            "B/lead (all state)",
            "Redis used_memory",
            "worker RSS idle",
            "worker RSS after bursts",
            f"lateness p50 / p99 / max, {num(results['burst'])} in "
            f"{num(results['burst_window'])} s",
            "p99, all due at once",
            "touches/s draining",
            "other load (cores)",
        ],
        rows,
    )
    add("")
    add(
        "Each level starts from an empty Redis: N leads pending, then the same bursts "
        f"(repeated {len(top['spread'])} times at the largest level, once below it). "
        "Schedule time and memory grow linearly with N (constant per touch); the worker's "
        "memory and the pipeline's speed do not depend on N (claiming due touches is "
        "O(log N) per batch); the differences in lateness and drain rate between levels "
        "follow the other load on the machine, not N."
    )
    add("")
    _latency_sections(results, add)
    add("## Method")
    add("")
    for note in (
        "Redis: a `redis-server` started for the run on a free port (AOF `everysec`, as "
        "production), emptied between runs; an AOF rewrite is forced before timed windows "
        "so no rewrite fork runs inside them.",
        "SendGrid: `python -m tests.sendgrid_standin` in its own process (real HTTP on "
        "loopback, SendGrid's validation, 202 with `X-Message-Id`); its CPU is reported "
        "apart. Workers reach it through `NURTURE_SENDGRID_HOST` and the official library.",
        "Pipeline pre-load goes through the real pipeline: `ingest()` and the real "
        "`process_events` actor enroll each lead in a one-file test sequence (first step "
        "`wait: 0s`, no send window, frequency cap `0s`) that renders the shipped "
        "`value/outcome_story` template with its content library.",
        "The clock of a pipeline run starts when the parked schedule is renamed back (all "
        "N touches due at once, workers already idle) and stops at the stand-in's own "
        "receive time of the N-th message.",
        "CPU figures are from `/proc/<pid>/stat` (workers, serve, stand-in), `INFO cpu` "
        "(Redis) and rusage (emit); 'other load' is the machine's busy time from "
        "`/proc/stat` minus all of ours.",
        "Lateness: every message carries `custom_args` lead_id/sequence/step; the due time "
        "of each lead's touch is known from when it was written; lateness = stand-in "
        "receive time - due time.",
    ):
        add(f"- {note}")
    add("")
    return "\n".join(lines)


def _suggestions(
    results: dict[str, Any], total_ms: float, worker_ms: float, touches_per_s: float
) -> list[str]:
    """What the measurements say about the send path: what is done, what is left."""
    anatomy = results["anatomy"]
    rt = results["rt_cost"]
    keep = results["keepalive"]
    profile = (results.get("profile_run") or {}).get("profile_cpu") or {}
    highlights = profile.get("highlights", {})
    gil_samples = profile.get("samples", 0)
    total_trips = anatomy["round_trips_total"]
    connects = anatomy["connects_total"]
    cpus = results["cpus"]
    noop_per_s = med(results["noop"], "messages_per_s")
    needed_ms = cpus * 1000 / (RATIO_TARGET * noop_per_s) if noop_per_s else float("nan")

    def share(name: str) -> str:
        return pct(highlights.get(name, 0), gil_samples)

    def less(saved: float) -> str:
        return (
            f"−{100 * saved / worker_ms:.0f} % of the worker's CPU per touch" if worker_ms else ""
        )

    lines = ["### Suggestions", ""]
    saved_http = max(0.0, keep["fresh_cpu_ms"] - keep["kept_cpu_ms"])
    if connects <= 0.05:
        lines.append(
            "- **SendGrid connections are kept** (`KeepAliveTransport` in "
            f"`worker/delivery/sendgrid.py`, one per worker thread): {num(connects, 2)} new "
            "TCP connections per touch. The library's own transport (a new connection and "
            "a new `urllib` opener per request, still used behind a proxy) measured here "
            f"{num(keep['fresh_cpu_ms'], 3)} ms client CPU per request against "
            f"{num(keep['kept_cpu_ms'], 3)} ms kept-alive."
        )
    else:
        in_profile = (
            f" In the GIL profile: `build_opener()` {share('urllib build_opener() per request')}"
            " of the worker's Python time."
            if highlights and gil_samples
            else ""
        )
        lines.append(
            f"- **Keep SendGrid connections**: {num(connects, 2)} new TCP connections per "
            f"touch; kept-alive measured {num(keep['fresh_cpu_ms'], 3)} → "
            f"{num(keep['kept_cpu_ms'], 3)} ms client CPU per request, ~{num(saved_http, 2)} "
            f"ms per touch ({less(saved_http)})." + in_profile
        )
    trips = ", ".join(
        f"`{k.rsplit(':', 1)[-1]}` {num(v, 1)}" for k, v in anatomy["round_trips"].items()
    )
    floor = 1.0
    saved_rt = max(0.0, total_trips - floor) * rt["cpu_ms"]
    lines.append(
        f"- **Redis round trips: {num(total_trips, 1)} per sent touch** ({trips}). One round "
        f"trip costs {num(rt['cpu_ms'], 3)} ms client CPU and {num(rt['wall_ms'], 3)} ms wall "
        "unloaded. What is left to gain: read the state of all touches of one queue message "
        "in one pipeline, and send each touch's `advance` in the same pipeline as the next "
        "touch's reservation (order kept, so the ledger's guarantees hold), ~1 round trip "
        f"per touch: ~{num(saved_rt, 2)} ms less worker CPU per touch ({less(saved_rt)})."
    )
    rows = sorted(anatomy["rows"], key=lambda row: -row["cpu_ms"])[:5]
    lines.append(
        f"- **Where the worker's CPU goes now** (one thread, {num(anatomy['cpu_ms'], 2)} ms "
        "per touch): "
        + ", ".join(f"`{row['call']}` {num(row['cpu_ms'], 3)} ms" for row in rows)
        + f". With {results.get('threads', 8)} threads per process the GIL adds the rest of "
        f"the {num(worker_ms, 2)} ms measured under load."
    )
    verdict = (
        "met"
        if touches_per_s >= RATIO_TARGET * noop_per_s
        else (
            "**not met**: a touch is rendered, reserved, sent over HTTP and recorded, each "
            "step Python code and a Redis or HTTP exchange, while the no-op actor does none "
            "of it; the round-trip change above is the last sizeable saving in the worker's "
            "own code, and the stand-in and Redis take their share of the same cores"
        )
    )
    lines.append(
        f"- **The ratio target** needs {RATIO_TARGET} × {num(noop_per_s)} = "
        f"{num(RATIO_TARGET * noop_per_s)} touches/s, i.e. at most ~{num(needed_ms, 2)} ms of "
        f"CPU per touch on {cpus} cores for everything (worker, Redis, SendGrid's side); a "
        f"touch costs {num(total_ms, 2)} ms now ({num(touches_per_s)} touches/s): {verdict}. "
        "Putting more touches in one queue message does not change this: dramatiq's own "
        "cost is already small next to the per-touch work. In production the bound is "
        "elsewhere: SendGrid answers in tens to hundreds of milliseconds, so threads "
        "waiting on it, not CPU, set the pace (raise `NURTURE_WORKER_THREADS`)."
    )
    lines.append("")
    return lines


def _latency_sections(results: dict[str, Any], add: Any) -> None:
    """Sections 5-7: the delivery layer over stand-in latencies, the Monday burst and
    leads in to emails out (present when the run measured them)."""
    from benchmarks.burst import render_burst
    from benchmarks.delivery import render_table
    from benchmarks.e2e import render_e2e

    if "delivery" in results:
        d = results["delivery"]
        add("## 5. Delivery layer over SendGrid latency")
        add("")
        add(render_table(d))
        add("")
        add(
            f"Messages/s through the real `SendGridDelivery` alone (no Redis, no rendering), "
            f"medians of {d['runs']} window(s) of {num(d['duration'], 1)} s, the stand-in "
            f"answering after the latency shown; in brackets the share of the same mode's "
            f"0 ms figure. `send x threads`: {d['threads']} threads each calling `send` "
            f"(today's worker). `send_many (pool)`: the same threads handing batches of "
            f"{d['batch']} to `send_many`, at most {d['concurrency']} requests in flight "
            "on kept-alive connections. `httpx async (pool)`: the alternative prototype, "
            "one asyncio loop and one `httpx.AsyncClient` with a pool of the same size "
            "(transport only). Command: `python -m benchmarks.delivery`."
        )
        add("")
    if "monday_burst" in results:
        add("## 6. Monday 09:00 burst")
        add("")
        add(render_burst(results["monday_burst"]))
        add("")
        add(
            "Every lead's first touch due at Monday 09:00 local, all zones at the same "
            "instant (the worst case), sent by the default `nurture worker` to the stand-in "
            "at the latency shown. Drain: first due to last received. Overtaken: received "
            "before a touch due more than 1 s earlier. Events: one `lead.created` per "
            "second during the drain, ingest to enrollment. Command: "
            "`python -m benchmarks.burst`."
        )
        add("")
    if "e2e" in results:
        add("## 7. End to end: leads in, emails out")
        add("")
        add(render_e2e(results["e2e"]))
        add("")
        add(
            "`nurture emit` of N new leads into a running default `nurture worker` (one "
            "process per CPU, 8 threads); from the start of `nurture emit` to the N-th "
            "email out; beside a no-op dramatiq actor on the same Redis with as many "
            "processes and threads, in the same run. Command: `python -m benchmarks.e2e`."
        )
        add("")

"""docs/grafana-dashboard.json: every PromQL expression names metrics that /metrics
exports, and the dashboard covers what an operator watches."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOT
from tests.harness import Harness
from tests.http.helpers import LiveServer

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(nurture_[a-z_]+)\b")


def exported_names(text: str) -> set[str]:
    """Sample names /metrics produces, also for families without samples yet: from the
    ``# TYPE`` lines (Prometheus text format: a counter is sampled as ``<name>_total``,
    a histogram as ``_bucket``, ``_sum``, ``_count``) and from the sample lines."""
    names: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        base = name.removesuffix("_total") if kind == "counter" else name
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }.get(kind, ("",))
        names.update(base + suffix for suffix in suffixes)
    return names


def test_every_expression_names_an_exported_metric(live: LiveServer, harness: Harness) -> None:
    harness.rt.store.count("value-first", "outcome-story", "sent")
    text = live.client.get("/metrics").text
    exported = exported_names(text)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert expressions
    used: set[str] = set()
    for expr in expressions:
        names = set(METRIC.findall(expr))
        assert names, f"{expr!r} names no nurture metric"
        used |= names
        missing = names - exported
        assert not missing, f"{expr!r} names {sorted(missing)}, not in /metrics"
    # Sends, failures by kind, lateness, queue depth, paused state.
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("sends", "failures by kind", "lateness", "queue depth", "paused"):
        assert topic in titles
    assert {"nurture_touches_total", "nurture_queue_messages", "nurture_delivery_paused"} <= used
    assert {"nurture_scheduler_lag_seconds", "nurture_sendgrid_events_total"} <= used
    # Every panel reads the one datasource input, so the file imports anywhere.
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"

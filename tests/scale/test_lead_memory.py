"""The lead-memory measurement (benchmarks/lead_memory.py) runs end to end on a small
set: the shipped example leads through the real pipeline, every key measured, every
command of the sends counted, and the compact layout of docs/scale-notes.md measured
against today's."""

from __future__ import annotations

from benchmarks.lead_memory import report, run


def test_lead_memory_measures_todays_and_the_compact_layout() -> None:
    result = run(copies=2)
    assert result["leads"] == 8
    enrolled, done = result["enrolled"], result["done"]
    for kind in ("lead", "enr", "email", "evt"):
        assert enrolled["by_kind"][kind]["keys"] == 8
    assert enrolled["scheduled"] >= 8
    assert done["sent"] > 8
    today = sum(enrolled["by_kind"][k]["bytes"] for k in ("lead", "enr", "email")) / 8
    compact = enrolled["compact"]["listpack-value 1024"]
    assert compact["L per lead"] + compact["E per lead"] < today
    assert compact["L per lead"] <= enrolled["compact"]["listpack-value 64"]["L per lead"]
    commands = result["commands"]
    assert commands["per_sent_touch"] > 5
    assert commands["busiest_keys"][0]["share"] > 0
    assert "commands while sending" in report(result)

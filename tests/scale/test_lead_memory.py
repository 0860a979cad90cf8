"""The lead-memory measurement (benchmarks/lead_memory.py) runs end to end on a small
set: the shipped example leads through the real pipeline, every key measured, every
command of the sends counted, and the compact layout of docs/scale-notes.md measured
against today's; and the per-lead bound of the compact values holds."""

from __future__ import annotations

from benchmarks.lead_memory import report, run

#: Per enrolled lead, every per-lead key and its share of the schedule (MEMORY USAGE,
#: docs/scale-notes.md section 4): 7,020 B before the compact values (the timeline a
#: stream of ~4.7 KB whatever it held), ~2,500 B measured now on Redis 7.0 and 6.2.
ENROLLED_BOUND = 2_900
#: The same without the timeline (2,268 B before; ~1,480 B now).
WITHOUT_TIMELINE_BOUND = 1_700
#: The timeline alone, per lead, enrolled (4,752 B a stream; 1,146 B packed; ~600 B lean).
TIMELINE_BOUND = 750


def test_lead_memory_measures_the_state_and_holds_the_per_lead_bound() -> None:
    result = run(copies=2)
    assert result["leads"] == 8
    assert result["hash_max_listpack_value"] == 1024  # the embedded Redis's setting
    enrolled, done = result["enrolled"], result["done"]
    for kind in ("lead", "enr", "email", "evt", "tl"):
        assert enrolled["by_kind"][kind]["keys"] == 8
    assert enrolled["scheduled"] >= 8
    assert done["sent"] > 8
    assert enrolled["per_lead"]["all"] < ENROLLED_BOUND
    assert enrolled["per_lead"]["without timeline"] < WITHOUT_TIMELINE_BOUND
    assert enrolled["by_kind"]["tl"]["bytes"] / 8 < TIMELINE_BOUND
    # After every sequence ran, the timeline grew with the sends but stays bounded.
    assert done["by_kind"]["tl"]["bytes"] / 8 < 2 * TIMELINE_BOUND
    today = sum(enrolled["by_kind"][k]["bytes"] for k in ("lead", "enr", "email")) / 8
    compact = enrolled["compact"]["listpack-value 1024"]
    assert compact["L per lead"] + compact["E per lead"] < today
    assert compact["L per lead"] <= enrolled["compact"]["listpack-value 64"]["L per lead"]
    commands = result["commands"]
    assert commands["per_sent_touch"] > 5
    assert commands["busiest_keys"][0]["share"] > 0
    text = report(result)
    assert "commands while sending" in text and "without the timeline" in text

"""The demo that `make demo` runs: the main job end to end against the embedded fake Pipedrive."""

from __future__ import annotations

import pytest

from pipedrive_channels._demo import CHANNELS, run_demo, sample_history


async def test_the_demo_back_fills_everything_within_the_lite_plan(capsys: pytest.CaptureFixture[str]) -> None:
    reports = await run_demo(messages=100)
    report = reports["channels"]
    assert (report.delivered, report.failed, report.stopped) == (100, 0, False)
    assert report.requests_sent == 100 + len(CHANNELS)  # no 429, so no retry
    notes = reports["notes"]  # the same history again, as notes: one per conversation and day, on a new person
    assert (notes.delivered, notes.failed, notes.stopped) == (100, 0, False)
    assert notes.counts["persons_created"] == notes.counts["notes_created"] == len(CHANNELS) * 12
    out = capsys.readouterr().out
    assert "429 answers: 0" in out and "100 delivered" in out and "Only notes work on live accounts" in out


def test_the_sample_history_has_status_updates_of_earlier_messages() -> None:
    items = list(sample_history(20))
    ids = [m.id for m in items]
    assert len(items) == 20 and len(set(ids)) == 16
    updates = [m for m in items if m.status.value != "sent"]
    assert all(ids.index(m.id) < items.index(m) for m in updates)

"""Background work yields to foreground work (pacs.activity), across worker processes."""

from __future__ import annotations

import multiprocessing

import pytest

from pacs import activity


@pytest.fixture(autouse=True)
def _idle() -> None:
    activity._last.value = 0.0


def test_an_idle_node_does_not_hold_background_work_back() -> None:
    assert activity.idle_for() > activity.QUIET_S
    assert activity.yield_to_foreground() < 0.05


def test_background_work_waits_while_the_node_serves_but_never_for_ever() -> None:
    activity.touch()
    waited = activity.yield_to_foreground(quiet_s=0.3, max_wait_s=5.0)
    assert 0.2 < waited < 5.0
    assert activity.idle_for() >= 0.3
    activity.touch()
    # Busy for longer than anyone may wait: the wait ends at its bound.
    assert activity.yield_to_foreground(quiet_s=60.0, max_wait_s=0.2) >= 0.2


def test_a_worker_sees_when_another_worker_last_served() -> None:
    activity.share()
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=activity.touch)
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert activity.idle_for() < 30

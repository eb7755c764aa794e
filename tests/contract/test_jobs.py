"""The job queue's contract, on SQLite and PostgreSQL alike: every job is claimed once,
failures come back after a growing delay, and a dead claimer's jobs are taken over.

Each test gets a new database of each backend, migrated with the real migrations.
Concurrency is real: claimers are threads with their own engines (separate
connections, as separate nodes have), racing on the same rows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from pacs.jobs import JobFailed, JobRunner, WorkerServices
from pacs.storage.database import make_engine, upgrade
from pacs.storage.jobs import Job, JobQueue, utcnow

pytestmark = pytest.mark.contract

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def engines(database_url: str) -> Iterator[Callable[[], Engine]]:
    """A factory of engines on the test database (one per simulated node); all disposed."""
    made: list[Engine] = []

    def make() -> Engine:
        engine = make_engine(database_url, sqlite_synchronous="NORMAL", pool_size=4)
        made.append(engine)
        return engine

    upgrade(make())
    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def queue(engines: Callable[[], Engine]) -> JobQueue:
    return JobQueue(engines(), backoff_s=0.2, backoff_max_s=1.0, jitter=0.0, max_attempts=3)


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it returns something truthy (AssertionError after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ---------------------------------------------------------------- basics


def test_a_job_goes_from_queued_to_done_with_its_payload_and_result(queue: JobQueue) -> None:
    job_id = queue.enqueue("send.partner", {"study": "1.2.3", "to": "BV Hue", "n": 3})
    queued = queue.get(job_id)
    assert queued is not None and queued.state == "queued" and queued.attempts == 0

    [claimed] = queue.claim(["send.partner"], "node-a:1")
    assert claimed.id == job_id
    assert claimed.payload == {"study": "1.2.3", "to": "BV Hue", "n": 3}
    assert (claimed.state, claimed.attempts, claimed.locked_by) == ("running", 1, "node-a:1")
    assert claimed.lease_until is not None and claimed.lease_until > utcnow()
    assert queue.claim(["send.partner"], "node-b:1") == []

    assert queue.complete(claimed, {"sent": 3})
    done = queue.get(job_id)
    assert done is not None
    assert (done.state, done.result, done.lease_until) == ("done", {"sent": 3}, None)
    assert done.finished_at is not None


def test_claim_takes_only_due_jobs_of_the_asked_kinds_oldest_first(queue: JobQueue) -> None:
    now = utcnow()
    later = queue.enqueue("route", {"n": 0}, run_after=now + timedelta(hours=1))
    first = queue.enqueue("route", {"n": 1}, run_after=now - timedelta(seconds=30))
    second = queue.enqueue("route", {"n": 2}, run_after=now - timedelta(seconds=10))
    other = queue.enqueue("send", {"n": 3})

    claimed = queue.claim(["route"], "n:1", limit=10)
    assert [j.id for j in claimed] == [first, second]
    assert [j.id for j in queue.claim(["send", "route"], "n:1", limit=10)] == [other]
    assert queue.claim(["route", "send"], "n:1") == []
    assert queue.get(later).state == "queued"  # type: ignore[union-attr]


def test_a_dedupe_key_allows_one_active_job(queue: JobQueue) -> None:
    first = queue.enqueue("sweep", dedupe_key="sweep:intents")
    assert queue.enqueue("sweep", {"other": 1}, dedupe_key="sweep:intents") == first
    [job] = queue.claim(["sweep"], "n:1")
    assert queue.enqueue("sweep", dedupe_key="sweep:intents") == first  # running counts
    queue.complete(job)
    again = queue.enqueue("sweep", dedupe_key="sweep:intents")
    assert again != first
    assert queue.enqueue("sweep", dedupe_key="another") not in (first, again)


def test_bad_input_is_refused(queue: JobQueue) -> None:
    with pytest.raises(ValueError):
        queue.enqueue("", {})
    with pytest.raises(ValueError):
        queue.enqueue("k" * 65, {})
    with pytest.raises(ValueError):
        queue.enqueue("kind", {"when": object()})


# ---------------------------------------------------------------- concurrency


def test_concurrent_claimers_on_two_nodes_take_every_job_exactly_once(
    engines: Callable[[], Engine],
) -> None:
    producer = JobQueue(engines())
    ids = {producer.enqueue("probe", {"n": n}) for n in range(300)}
    # Two "nodes", each its own engine (connection pool), eight claimers each.
    node_queues = [JobQueue(engines()), JobQueue(engines())]
    taken: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def claimer(q: JobQueue, name: str, limit: int) -> None:
        try:
            start.wait()
            while True:
                jobs = q.claim(["probe"], name, limit=limit)
                if not jobs:
                    if not q.claim(["probe"], name):
                        return
                    continue
                for job in jobs:
                    with lock:
                        taken.append((job.id, name))
                    assert q.complete(job, {"by": name})
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [
        threading.Thread(target=claimer, args=(node_queues[i % 2], f"node-{i % 2}:{i}", 1 + i % 3))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    counts = Counter(job_id for job_id, _ in taken)
    assert set(counts) == ids
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
    assert len({name for _, name in taken}) > 1
    for job_id in ids:
        job = producer.get(job_id)
        assert job is not None and job.state == "done" and job.attempts == 1
        assert job.result == {"by": job.locked_by}


# ---------------------------------------------------------------- failures


def test_failures_come_back_after_a_doubling_delay_then_the_job_is_dead(queue: JobQueue) -> None:
    job_id = queue.enqueue("flaky", {})
    delays = []
    for attempt in (1, 2):
        [job] = wait_until(lambda: queue.claim(["flaky"], "n:1"))
        assert job.attempts == attempt
        failed_at = utcnow()
        assert queue.fail(job, f"timeout #{attempt}") == "queued"
        queued = queue.get(job_id)
        assert queued is not None and queued.last_error == f"timeout #{attempt}"
        delays.append((queued.run_after - failed_at).total_seconds())
        assert queue.claim(["flaky"], "n:1") == []  # not before its time
    # backoff_s=0.2, doubling, no jitter
    assert delays[0] == pytest.approx(0.2, abs=0.05)
    assert delays[1] == pytest.approx(0.4, abs=0.05)
    [job] = wait_until(lambda: queue.claim(["flaky"], "n:1"))
    assert job.attempts == 3
    assert queue.fail(job, "still broken") == "dead"
    dead = queue.get(job_id)
    assert dead is not None and dead.state == "dead" and dead.finished_at is not None
    assert queue.depth()[("flaky", "dead")] == 1

    assert queue.retry(job_id)
    [again] = queue.claim(["flaky"], "n:2")
    assert again.attempts == 1
    assert queue.complete(again)
    assert not queue.retry(job_id)  # only dead jobs


def test_a_failure_without_retry_is_dead_at_once(queue: JobQueue) -> None:
    queue.enqueue("send", {})
    [job] = queue.claim(["send"], "n:1")
    assert queue.fail(job, "partner refused the study: unknown AE", retry=False) == "dead"


def test_backoff_is_capped_and_jittered(engines: Callable[[], Engine]) -> None:
    q = JobQueue(engines(), backoff_s=10, backoff_max_s=60, jitter=0.1)
    for attempts, expected in ((1, 10), (2, 20), (3, 40), (4, 60), (9, 60)):
        for _ in range(20):
            assert expected * 0.9 <= q.backoff(attempts) <= expected * 1.1


# ---------------------------------------------------------------- leases


def test_a_dead_claimers_job_is_reclaimed_and_its_late_answer_ignored(
    engines: Callable[[], Engine],
) -> None:
    node_a = JobQueue(engines())
    node_b = JobQueue(engines())
    job_id = node_a.enqueue("send", {})
    [held] = node_a.claim(["send"], "node-a:7", lease_s=0.3)
    assert node_b.reclaim_expired() == 0  # lease still running
    assert node_b.claim(["send"], "node-b:9") == []

    wait_until(lambda: node_b.reclaim_expired() == 1)  # node a stopped heartbeating
    back = node_b.get(job_id)
    assert back is not None and back.state == "queued" and "node-a:7" in back.last_error
    [taken] = node_b.claim(["send"], "node-b:9")
    assert (taken.attempts, taken.locked_by) == (2, "node-b:9")

    # Node a wakes up: its claim is fenced off.
    assert not node_a.complete(held, {"late": True})
    assert node_a.fail(held, "late") == "lost"
    assert not node_a.heartbeat(held)
    assert node_b.complete(taken, {"by": "b"})
    done = node_b.get(job_id)
    assert done is not None and done.state == "done" and done.result == {"by": "b"}


def test_heartbeats_keep_a_lease(queue: JobQueue) -> None:
    queue.enqueue("long", {})
    [job] = queue.claim(["long"], "n:1", lease_s=0.3)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert queue.heartbeat(job, lease_s=0.3)
        assert queue.reclaim_expired() == 0
        time.sleep(0.05)
    assert queue.complete(job)


def test_an_expired_lease_on_the_last_attempt_makes_the_job_dead(queue: JobQueue) -> None:
    job_id = queue.enqueue("poison", {}, max_attempts=1)
    queue.claim(["poison"], "n:1", lease_s=0.1)
    wait_until(lambda: queue.reclaim_expired() == 1)
    job = queue.get(job_id)
    assert job is not None and job.state == "dead" and "stopped heartbeating" in job.last_error


# ---------------------------------------------------------------- operators


def test_depth_oldest_due_recent_and_purge(queue: JobQueue) -> None:
    due = queue.enqueue("a", {}, run_after=utcnow() - timedelta(seconds=60))
    queue.enqueue("a", {}, run_after=utcnow() + timedelta(hours=1))
    queue.enqueue("b", {})
    [job] = queue.claim(["b"], "n:1")
    queue.complete(job)
    assert queue.depth() == {("a", "queued"): 2, ("b", "done"): 1}
    lag = queue.oldest_due()
    assert set(lag) == {"a"} and lag["a"] >= 59
    assert [j.id for j in queue.recent(state="queued", kind="a")][-1] == due
    assert queue.purge(timedelta(hours=1)) == 0
    assert queue.purge(timedelta(seconds=-1)) == 1
    assert ("b", "done") not in queue.depth()


# ---------------------------------------------------------------- the runner


def test_the_runner_runs_registered_kinds_and_records_failures(queue: JobQueue) -> None:
    seen: list[dict[str, Any]] = []

    def ok(job: Job) -> dict[str, Any]:
        seen.append(job.payload)
        return {"n": job.payload["n"]}

    def refuse(job: Job) -> None:
        raise JobFailed("the partner does not know this study", retry=False)

    def crash(job: Job) -> None:
        raise RuntimeError("bug")

    runner = JobRunner(queue, "n:1", poll_s=0.05, lease_s=5)
    runner.register("ok", ok)
    runner.register("refuse", refuse)
    runner.register("crash", crash)
    ok_id = queue.enqueue("ok", {"n": 1})
    refused = queue.enqueue("refuse", {})
    crashed = queue.enqueue("crash", {})
    unknown = queue.enqueue("not-mine", {})
    assert runner.run_pending() == 3
    assert seen == [{"n": 1}]
    assert queue.get(ok_id).result == {"n": 1}  # type: ignore[union-attr]
    assert queue.get(refused).state == "dead"  # type: ignore[union-attr]
    crashed_job = queue.get(crashed)
    assert crashed_job is not None and crashed_job.state == "queued"
    assert "RuntimeError: bug" in crashed_job.last_error
    assert queue.get(unknown).state == "queued"  # type: ignore[union-attr]


def test_the_runner_thread_wakes_on_enqueue_and_heartbeats_long_jobs(queue: JobQueue) -> None:
    finished = threading.Event()

    def slow(job: Job) -> dict[str, Any]:
        time.sleep(0.5)  # longer than the lease: only heartbeats keep it
        finished.set()
        return {"ok": True}

    runner = JobRunner(queue, "n:1", poll_s=30, lease_s=0.2)
    runner.register("slow", slow)
    runner.start()
    try:
        job_id = queue.enqueue("slow", {})
        assert finished.wait(10)
        job = wait_until(lambda: (j := queue.get(job_id)) and j.state == "done" and j)
        assert job.attempts == 1
        assert queue.reclaim_expired() == 0
    finally:
        runner.stop(5)


def test_a_running_job_holds_its_own_kinds_lease_from_the_start(queue: JobQueue) -> None:
    """A claim leases for the longest lease of any kind; the job's own (shorter) lease
    must apply at once, or a node that dies early holds it for the longest."""
    leases: list[timedelta] = []

    def push(job: Job) -> dict[str, Any]:
        # Well before the first periodic beat (a third of 30 s), the lease is the kind's.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            lease = queue.get(job.id).lease_until - utcnow()  # type: ignore[union-attr,operator]
            if lease <= timedelta(seconds=30):
                break
            time.sleep(0.02)
        leases.append(lease)
        return {}

    runner = JobRunner(queue, "n:1", poll_s=30, lease_s=120)
    runner.register("push", push, lease_s=30)
    runner.register("route", lambda job: {})  # the runner's 120 s
    queue.enqueue("push", {})
    assert runner.run_pending() == 1
    assert timedelta(seconds=25) < leases[0] <= timedelta(seconds=30)


class _Periodic:
    def __init__(self) -> None:
        self.tasks: list[tuple[float, str, Callable[[], object]]] = []

    def every(self, interval_s: float, name: str, fn: Callable[[], object]) -> None:
        self.tasks.append((interval_s, name, fn))


def test_scheduled_jobs_are_offered_by_every_worker_but_queued_once(queue: JobQueue) -> None:
    offers = []
    for worker in range(3):
        periodic = _Periodic()
        runner = JobRunner(queue, f"n:{worker}")
        services = WorkerServices(None, None, queue, runner, periodic, f"n:{worker}")  # type: ignore[arg-type]
        services.schedule("sweep", 60.0)
        offers += [fn for _, _, fn in periodic.tasks]
    for offer in offers:
        offer()
    jobs = queue.recent(kind="sweep")
    assert len(jobs) == 1
    assert jobs[0].run_after > utcnow() + timedelta(seconds=50)

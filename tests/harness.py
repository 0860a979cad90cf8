"""Test harness: a runtime on the test Redis with a manual clock, and a helper that runs
the scheduler until all is quiet.

Two ways to run the queue:

- **workers** (end-to-end): the runtime's broker (a ``RedisBroker``, or RabbitMQ when
  the settings name ``broker_url``) and real dramatiq worker threads (started by
  :func:`running`);
- **inline** (domain tests): dramatiq's ``StubBroker``; :meth:`Harness.settle` takes
  each queued message and runs its actor's function in the test's thread, so no worker
  threads run and nothing waits on polling. Redis is still the real one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.broker import join_queue
from worker.clock import ManualClock
from worker.crm.hubspot_sync import FETCH_QUEUE
from worker.events import Event, validate_event
from worker.ingest import IngestResult, ingest
from worker.runtime import Runtime


def event(
    event_id: str,
    type_: str = "lead.created",
    lead_id: str = "lead-1",
    *,
    email: str | None = "ann@example.com",
    occurred_at: str | None = None,
    data: dict[str, Any] | None = None,
    **lead: Any,
) -> Event:
    """Build a valid event compactly."""
    doc: dict[str, Any] = {"id": event_id, "type": type_, "lead": {"id": lead_id, **lead}}
    if email:
        doc["lead"]["email"] = email
    if occurred_at:
        doc["occurred_at"] = occurred_at
    if data:
        doc["data"] = data
    return validate_event(doc)


class Harness:
    """Drives one runtime: ingest events, move the clock, run the queue to quiet."""

    def __init__(self, runtime: Runtime, clock: ManualClock, outbox: Path) -> None:
        self.rt = runtime
        self.clock = clock
        self.outbox = outbox
        self.scheduler = runtime.scheduler()
        self.inline = isinstance(runtime.broker, StubBroker)
        self._worker: dramatiq.Worker | None = None

    def start(self, threads: int = 4) -> None:
        if self.inline:
            return  # messages run in settle(), in this thread
        self._worker = dramatiq.Worker(self.rt.broker, worker_threads=threads, worker_timeout=50)
        self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=30_000)
            self._worker = None

    def emit(self, *events: Event) -> IngestResult:
        return ingest(self.rt, list(events))

    def settle(self, timeout: float = 20.0) -> None:
        """Run scheduler ticks and wait until both queues are empty and nothing is due."""
        deadline = time.monotonic() + timeout
        while True:
            queued = self.scheduler.tick()
            if self.inline:
                self.run_queued()
            else:
                for queue in (EVENTS_QUEUE, FETCH_QUEUE, TOUCHES_QUEUE):
                    join_queue(self.rt.broker, queue, int(timeout * 1000))
            if self._worker is not None:
                self._worker.join()
            # Claims still leased (e.g. a send another worker reserved) are not "due".
            if queued == 0:
                due = self.rt.store.schedule.due_count(self.clock.now().timestamp())
                if due == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("queue did not settle")

    def run_queued(self) -> int:
        """Inline mode: run every queued message (and those they queue) in this thread.

        No middleware runs (no retries): an actor that raises fails the test.
        """
        assert isinstance(self.rt.broker, StubBroker)
        ran = 0
        while True:
            pending = [
                queue
                for name in (EVENTS_QUEUE, FETCH_QUEUE, TOUCHES_QUEUE)
                if not (queue := self.rt.broker.queues[name]).empty()
            ]
            if not pending:
                return ran
            for queue in pending:
                while not queue.empty():
                    message = dramatiq.Message.decode(queue.get_nowait())
                    actor = self.rt.broker.get_actor(message.actor_name)
                    actor.fn(*message.args, **message.kwargs)
                    queue.task_done()
                    ran += 1

    def advance(self, delta: timedelta) -> None:
        """Move the clock and let everything now due happen."""
        self.clock.advance(delta)
        self.settle()

    def run_until(self, when_ts: float) -> None:
        """Jump the clock through every due time up to ``when_ts``, settling at each."""
        self.settle()
        while True:
            first = self.rt.store.schedule.first_due()
            if first is None or first > when_ts:
                break
            due = first
            if due > self.clock.now().timestamp():
                self.clock.set(
                    self.clock.now() + timedelta(seconds=due - self.clock.now().timestamp())
                )
            self.settle()

    def messages(self) -> list[EmailMessage]:
        """Every message in the outbox, oldest first."""
        files = sorted(self.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(p.read_bytes()) for p in files]  # type: ignore[misc]

    def sent(self) -> list[tuple[str, str, str]]:
        """(lead, sequence, step) of every message in the outbox."""
        return [
            (m["X-Nurture-Lead"], m["X-Nurture-Sequence"], m["X-Nurture-Step"])
            for m in self.messages()
        ]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [
            {**d, "payload": json.loads(d["payload"])} for d in self.rt.store.dead_letters(1000)
        ]


@contextlib.contextmanager
def running(harness: Harness, threads: int = 4) -> Iterator[Harness]:
    harness.start(threads)
    try:
        yield harness
    finally:
        harness.stop()

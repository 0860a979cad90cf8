"""Dead letters of messages that failed for good, recorded by the ``DeadLetters``
middleware, with the real runtime, a real dramatiq worker and the real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

from dramatiq.middleware import Retries

from tests.harness import Harness, running
from worker.actors import DeadLetters


def test_dead_letters_sits_before_retries_so_it_sees_the_final_failure(
    make_harness: Callable[..., Harness],
) -> None:
    """dramatiq runs after-hooks in reverse order: DeadLetters must come before Retries
    in the list to run after it, when the message is already marked failed."""
    h = make_harness()
    kinds = [type(middleware) for middleware in h.rt.broker.middleware]
    assert kinds.index(DeadLetters) < kinds.index(Retries)


def test_a_message_that_fails_for_good_is_kept_as_a_dead_letter(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h, threads=1):
        # Not a [touch id, due] pair: the actor itself raises (before any per-touch
        # handling), and with no retries left that is the final failure.
        h.rt.actors.send_touches.send_with_options(args=([["not-a-pair"]],), max_retries=0)
        deadline = time.monotonic() + 20
        while h.rt.store.dead_letter_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    [letter] = h.dead_letters()
    assert letter["kind"] == "send_touches"
    assert letter["reason"].startswith("gave up after retries: ValueError(")
    assert letter["payload"] == {"args": [[["not-a-pair"]]]}

"""One rate limiter for every worker process: an ESP's limits, shared through Redis.

SendGrid answers every request with ``X-RateLimit-Limit`` (requests per refresh
period), ``X-RateLimit-Remaining`` (left in this period) and ``X-RateLimit-Reset``
(unix seconds when the period ends), and a ``429`` once the limit is used up
(https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits).
Twenty processes that each learn this on their own each hit the 429 once per period and
keep hammering until then. Here what any of them learns goes into one Redis hash, so
they all slow down together:

* a ``429`` blocks every process until its ``X-RateLimit-Reset`` (else its
  ``Retry-After``, else one second);
* ``X-RateLimit-Remaining`` becomes a shared budget for the period, counted down by
  each request taken and never raised by a late answer from the same period; at zero
  every process waits for ``X-RateLimit-Reset``. When the period is over, the next one
  is assumed to allow ``X-RateLimit-Limit`` requests within :data:`ASSUMED_PERIOD`
  until an answer from it says better, so the processes do not all rush at once;
* an optional fixed rate (``max_rate`` requests per second, for accounts with an agreed
  rate) paces all processes together with a GCRA (the "leaky bucket as a meter").

Both steps are Lua scripts on Redis's own clock (``TIME``), so processes on hosts with
skewed clocks agree. Keys live under ``nurture:ratelimit:`` (e.g.
``nurture:ratelimit:sendgrid``) and expire an hour after their last use.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Protocol, cast

import redis

log = logging.getLogger(__name__)

#: Prefix of every limiter key.
KEY_PREFIX = "nurture:ratelimit:"
#: Wait after a 429 that named no reset time.
DEFAULT_BLOCK = 1.0
#: The limiter's state is dropped this long after its last use.
STATE_TTL_MS = 3_600_000
#: Longest wait a provider header may impose (a bogus reset time must not park sends).
MAX_BLOCK = 3600.0
#: Answers with more than this share of the limit left, in a period this process has
#: already reported, are not written to Redis (saves a round trip per send; the shared
#: budget is counted down by :meth:`RateLimiter.try_acquire` anyway).
LOW_WATER = 0.2
#: Length assumed for a new rate-limit period until one of its answers names its reset.
ASSUMED_PERIOD = 1.0

# KEYS[1] state hash. ARGV[1] max rate per second (0: none), ARGV[2] burst (requests),
# ARGV[3] ttl ms, ARGV[4] assumed period (s). Returns "0" when a request may go now
# (and takes it), else the seconds to wait, as a string (Redis would truncate a Lua
# number to an integer).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'blocked_until', 'remaining', 'reset', 'tat')
local blocked = tonumber(s[1]) or 0
if blocked > now then return tostring(blocked - now) end
local remaining = tonumber(s[2])
local reset = tonumber(s[3]) or 0
if remaining ~= nil and reset <= now then
  -- A new period began; until one of its answers arrives assume the known limit.
  local limit = tonumber(redis.call('HGET', KEYS[1], 'limit'))
  if limit then
    remaining, reset = limit, now + tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], 'remaining', remaining, 'reset', tostring(reset),
      'provisional', 1)
  end
end
local budget = remaining ~= nil and reset > now
if budget and remaining <= 0 then return tostring(reset - now) end
local rate = tonumber(ARGV[1])
if rate > 0 then
  local interval = 1 / rate
  local tolerance = interval * (tonumber(ARGV[2]) - 1)
  local tat = math.max(tonumber(s[4]) or 0, now)
  if tat - now > tolerance then return tostring(tat - tolerance - now) end
  redis.call('HSET', KEYS[1], 'tat', tostring(tat + interval))
end
if budget then redis.call('HSET', KEYS[1], 'remaining', remaining - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return '0'
"""

# KEYS[1] state hash. ARGV[1] status, ARGV[2] limit, ARGV[3] remaining, ARGV[4] reset
# (unix s), ARGV[5] retry-after (s), ARGV[6] ttl ms, ARGV[7] default block (s),
# ARGV[8] max block (s); empty strings for headers that were absent.
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, remaining, reset = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if reset and reset > now + tonumber(ARGV[8]) then reset = nil end
if remaining and reset then
  local s = redis.call('HMGET', KEYS[1], 'remaining', 'reset', 'provisional')
  local known_reset = tonumber(s[2]) or 0
  if s[3] or reset > known_reset then
    redis.call('HSET', KEYS[1], 'remaining', remaining, 'reset', reset)
    redis.call('HDEL', KEYS[1], 'provisional')
  elseif reset == known_reset then
    -- Answers of one period arrive out of order: the lowest count is the latest.
    redis.call('HSET', KEYS[1], 'remaining', math.min(tonumber(s[1]) or remaining, remaining))
  end
  if limit then redis.call('HSET', KEYS[1], 'limit', limit) end
end
if tonumber(ARGV[1]) == 429 then
  local retry = tonumber(ARGV[5])
  local until_ = reset or (retry and now + math.min(retry, tonumber(ARGV[8])))
    or now + tonumber(ARGV[7])
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until')) or 0
  if until_ > blocked then redis.call('HSET', KEYS[1], 'blocked_until', tostring(until_)) end
  redis.call('HINCRBY', KEYS[1], 'refused', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""


class Headers(Protocol):
    """Response headers with a case-insensitive ``get`` (``HTTPMessage``, a dict)."""

    def get(self, name: str, /) -> str | None: ...


def _number(value: str | None) -> str:
    """A header's value as a number string for the scripts, or "" when not a number."""
    if value is None:
        return ""
    try:
        number = float(value.strip())
    except ValueError:
        return ""
    return repr(number) if number == number else ""  # NaN is no number


class RateLimiter:
    """A request rate limit shared by every process that uses the same Redis and name.

    Thread-safe; each call is one Redis round trip.

    Attributes:
        key: The Redis hash holding the shared state.
        max_rate: Requests per second allowed at most (None: only the provider's limits).
        burst: Requests allowed back to back above ``max_rate`` pacing.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str = "sendgrid",
        *,
        max_rate: float | None = None,
        burst: int = 1,
        prefix: str = KEY_PREFIX,
    ) -> None:
        """Create a limiter.

        Args:
            client: Redis client; every process passing the same Redis and ``name``
                shares the limits.
            name: Which limit (one per ESP account).
            max_rate: Fixed cap in requests per second (``NURTURE_SENDGRID_MAX_RATE``);
                None or 0 for none.
            burst: How many requests may go back to back before ``max_rate`` paces them.

        Raises:
            ValueError: A negative ``max_rate`` or a ``burst`` below 1.
        """
        if max_rate is not None and max_rate < 0:
            raise ValueError("max_rate must be positive (or None for no fixed rate)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.key = prefix + name
        self.max_rate = max_rate or None
        self.burst = burst
        self._redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._observe = client.register_script(_OBSERVE)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._reported_reset = ""

    def try_acquire(self) -> float:
        """Take one request if the limits allow it now.

        Returns:
            0.0 when the request may go (it is counted), else the seconds to wait
            before asking again (nothing is counted).
        """
        wait = self._acquire(
            keys=[self.key], args=[self.max_rate or 0, self.burst, STATE_TTL_MS, ASSUMED_PERIOD]
        )
        return max(0.0, float(cast(bytes, wait)))

    def acquire(self, max_wait: float, stop: threading.Event | None = None) -> float | None:
        """Wait for a turn, at most ``max_wait`` seconds.

        Args:
            max_wait: Longest total wait; beyond it the caller should not hold a thread
                but give the message back to the queue with a delay.
            stop: Set to give up early (shutdown).

        Returns:
            None once the request may go (it is counted); else the seconds still to
            wait, when that would exceed ``max_wait`` (nothing is counted).

        Raises:
            redis.RedisError: Redis is unreachable.
        """
        deadline = time.monotonic() + max_wait
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return None
            left = deadline - time.monotonic()
            if wait > left or (stop is not None and stop.is_set()):
                return wait
            # A little jitter so the processes released by one reset do not all ask at
            # the same instant.
            with self._rng_lock:
                jitter = self._rng.uniform(0, min(0.05, wait / 4))
            pause = min(wait + jitter, left)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)

    def observe(self, status: int, headers: Headers | None) -> None:
        """Feed one answer's status and ``X-RateLimit-*``/``Retry-After`` into the limits.

        Args:
            status: The HTTP status (429 blocks everyone until the reset).
            headers: The answer's headers, if any.

        Raises:
            redis.RedisError: Redis is unreachable.
        """
        get = headers.get if headers is not None else (lambda _name: None)
        limit = _number(get("X-RateLimit-Limit"))
        remaining = _number(get("X-RateLimit-Remaining"))
        reset = _number(get("X-RateLimit-Reset"))
        if status != 429 and not reset:
            return
        plenty = bool(limit and remaining) and float(remaining) > float(limit) * LOW_WATER
        if status != 429 and reset == self._reported_reset and plenty:
            return
        self._reported_reset = reset
        self._observe(
            keys=[self.key],
            args=[
                status,
                limit,
                remaining,
                reset,
                _number(get("Retry-After")),
                STATE_TTL_MS,
                DEFAULT_BLOCK,
                MAX_BLOCK,
            ],
        )

    def state(self) -> dict[str, float]:
        """The shared state (for ``nurture status`` and tests): ``blocked_until``,
        ``remaining``, ``reset``, ``limit``, ``refused`` (429s seen), ``tat``."""
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self.key))
        return {k.decode(): float(v) for k, v in raw.items()}

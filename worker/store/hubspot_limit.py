"""HubSpot's shared request window: every worker process spaces its HubSpot API calls
through one rolling window in Redis (see :class:`worker.crm.hubspot_api.HubSpotRateLimiter`).

Keys: ``nurture:hubspot:window`` (sorted set of request stamps),
``nurture:hubspot:window:seq`` (a counter making stamps unique) and
``nurture:hubspot:pause`` (set for HubSpot's ``Retry-After`` after a 429).
"""

from __future__ import annotations

from typing import Any

KEY_PREFIX = "nurture:hubspot:"
PAUSE_KEY = f"{KEY_PREFIX}pause"

# A rolling window in one sorted set: drop stamps older than the window, take a place if
# there is one, else say how long until the oldest stamp leaves. Atomic in Redis, so every
# worker process shares the same window; Redis's clock, so workers' clocks do not matter.
_TAKE = """
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then
  return paused
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], now_ms, now_ms .. '-' .. seq)
  redis.call('PEXPIRE', KEYS[1], window)
  redis.call('PEXPIRE', KEYS[2], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now_ms)
"""


class HubSpotWindow:
    """The Redis side of the HubSpot limiter: take a place, or pause everyone."""

    def __init__(self, client: Any) -> None:
        self._redis = client
        self._script = client.register_script(_TAKE)

    def take(self, window: float, max_requests: int) -> float:
        """Take a place in the window; 0 when taken, else seconds until one frees up."""
        keys = [f"{KEY_PREFIX}window", f"{KEY_PREFIX}window:seq", PAUSE_KEY]
        wait_ms = int(self._script(keys=keys, args=[int(window * 1000), max_requests]))
        return wait_ms / 1000

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds``, unless a longer pause is already set."""
        if seconds <= 0:
            return
        millis = max(1, int(seconds * 1000))
        current = int(self._redis.pttl(PAUSE_KEY))
        if current < millis:
            self._redis.set(PAUSE_KEY, b"429", px=millis)

"""Delivery backends: where a rendered email goes (``NURTURE_DELIVERY``).

``outbox`` writes each message as an ``.eml`` file; ``sendgrid`` sends it through
SendGrid's v3 Mail Send API. Both take a :class:`Message`, return a :class:`SendResult`
and raise the classified errors of :mod:`worker.errors`; see ``docs/delivery.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from worker.delivery.base import Delivery, Message, SendResult, send_each
from worker.errors import SettingsError

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["Delivery", "Message", "SendResult", "build_delivery", "send_each"]


def build_delivery(settings: Settings, client: redis.Redis | None = None) -> Delivery:
    """Create the backend named by ``NURTURE_DELIVERY``.

    Args:
        settings: The worker's settings.
        client: The Redis holding SendGrid's rate limits shared by every worker
            process (:class:`~worker.store.ratelimit.RateLimiter`); None sends without it.

    Returns:
        An :class:`~worker.delivery.outbox.OutboxDelivery` or a
        :class:`~worker.delivery.sendgrid.SendGridDelivery`.

    Raises:
        SettingsError: ``sendgrid`` without ``NURTURE_SENDGRID_API_KEY``, or an outbox
            directory that cannot be created; the message names the variable.
    """
    if settings.delivery == "sendgrid":
        # Imported here so the outbox mode never loads the SendGrid library.
        from worker.delivery.sendgrid import SendGridDelivery
        from worker.store.ratelimit import RateLimiter

        # The request must end (answer or timeout) well before NURTURE_SEND_TIMEOUT, after
        # which a duplicate delivery of the touch declares its outcome unknown.
        timeout = max(1.0, min(10.0, settings.send_timeout / 2))
        # SendGridDelivery refuses an empty key, naming NURTURE_SENDGRID_API_KEY.
        key = settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else ""
        limiter = None
        if client is not None:
            limiter = RateLimiter(client, max_rate=settings.sendgrid_max_rate)
        return SendGridDelivery(
            key,
            settings.sendgrid_host,
            timeout=timeout,
            concurrency=settings.sendgrid_concurrency,
            limiter=limiter,
            sandbox=settings.sendgrid_sandbox,
        )
    if settings.delivery == "outbox":
        from worker.delivery.outbox import OutboxDelivery

        try:
            return OutboxDelivery(settings.outbox_dir)
        except OSError as exc:
            raise SettingsError(
                f"NURTURE_OUTBOX_DIR: cannot create {settings.outbox_dir}: {exc.strerror or exc}"
            ) from None
    raise SettingsError(
        f"NURTURE_DELIVERY: unknown backend {settings.delivery!r}; use outbox or sendgrid"
    )

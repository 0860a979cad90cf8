"""The routes of the HTTP service, one router per concern (see docs/http.md).

- :mod:`.events`: ``POST /events``, lead events in our own format.
- :mod:`.crm`: ``POST /events/hubspot`` and ``POST /events/pipedrive``, the CRMs' own
  webhooks mapped through ``crm/*.yaml``.
- :mod:`.sendgrid`: ``POST /webhooks/sendgrid``, SendGrid's signed Event Webhook.
- :mod:`.unsubscribe`: ``GET`` and ``POST /unsubscribe/{token}``.
- :mod:`.ops`: ``/healthz``, ``/readyz``, ``/metrics``.
"""

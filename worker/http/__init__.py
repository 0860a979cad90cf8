"""The HTTP service (``nurture serve``): CRM webhooks in, SendGrid feedback, one-click
unsubscribe, health and metrics. It validates and queues; it never sends email.

Build the ASGI app with :func:`worker.http.app.create_app`.
"""

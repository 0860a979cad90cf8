"""nurture-worker: event-driven email nurture automation."""

__version__ = "0.1.0"

"""Serving many requests at once: `BatchScheduler` decodes them in one batch (scheduler.py); `app.create_app`
puts an OpenAI-compatible HTTP API in front of it (needs the `serve` extra: pip install "openformers[serve]")."""

from .scheduler import BatchScheduler, Completion, Request, SamplingOptions, Update

__all__ = ["BatchScheduler", "Completion", "Request", "SamplingOptions", "Update"]

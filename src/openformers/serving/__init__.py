"""Serving many requests at once: `BatchScheduler` decodes them in one batch (scheduler.py); `app.create_app`
puts an OpenAI-compatible HTTP API in front of it (needs the `serve` extra: pip install "openformers[serve]").

The names are imported lazily, so that `serving.tokenizing`, whose fork server `openformers serve` starts before
the model loads, does not import torch: the smaller that process, the cheaper each of its forks."""

import importlib

__all__ = ["BatchScheduler", "Completion", "Request", "SamplingOptions", "Update"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".scheduler", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

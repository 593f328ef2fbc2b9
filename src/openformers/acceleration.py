"""Where from_pretrained finds the CPU accelerator, which sits in a layer above the models it speeds up.

Models are plain torch.nn and never import openformers.kernels. `models/base.py` asks `accelerator()` instead:
its `check_quantization(quantization)` before any weights are read, `quantize(model, quantization)` on the
loaded model, and `accelerate(model)` once the model is on its device; generation/decoding.py runs its loops
inside `threads_following_team(model)` (torch's threads held to the compiled step's team while the CPU is
crowded). The top-level package registers openformers.kernels here without importing it, so every way of loading
a model (the Auto classes, a family's own class, pipelines, the command line, the server) is accelerated alike,
and `import openformers` stays fast.
"""

from collections.abc import Callable
from types import ModuleType

_load: Callable[[], ModuleType] | None = None


def register(load: Callable[[], ModuleType]) -> None:
    """Make `load()` (called when the first model is loaded) the accelerator from_pretrained uses."""
    global _load
    _load = load


def accelerator() -> ModuleType:
    assert _load is not None, "the top-level package registers the accelerator when it is imported"
    return _load()

"""The reference's file names and `is_*_available` checks, for code that imports them from the top level.

The checks look for an installed module without importing it, so asking costs no import time. openformers
itself needs none of these packages; code that branches on them keeps running unchanged.
"""

import importlib.util

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# The reference's check name (is_<name>_available) -> the modules any one of which makes it true.
_MODULES_BEHIND = {
    "torch": ("torch",),
    "tokenizers": ("tokenizers",),
    "sentencepiece": ("sentencepiece",),
    "datasets": ("datasets",),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "comet": ("comet_ml",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "neptune": ("neptune",),
    "swanlab": ("swanlab",),
    "trackio": ("trackio",),
    "optuna": ("optuna",),
    "ray": ("ray",),
    "ray_tune": ("ray.tune",),
    "scipy": ("scipy",),
    "sklearn": ("sklearn",),
    "matplotlib": ("matplotlib",),
    "psutil": ("psutil",),
    "py3nvml": ("py3nvml",),
    "faiss": ("faiss",),
    "bitsandbytes": ("bitsandbytes",),
    "apex": ("apex",),
    "mlx": ("mlx",),
    "sacremoses": ("sacremoses",),
    "phonemizer": ("phonemizer",),
    "pyctcdecode": ("pyctcdecode",),
    "av": ("av",),
    "speech": ("torchaudio",),
    "vision": ("PIL",),
    "torchvision": ("torchvision",),
    "timm": ("timm",),
    "torch_xla": ("torch_xla",),
    "torch_npu": ("torch_npu",),
    "torch_hpu": ("habana_frameworks",),
    "torch_mlu": ("torch_mlu",),
    "torch_musa": ("torch_musa",),
    "torch_neuroncore": ("torch_neuronx",),
    "torch_supa": ("torch_supa",),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return False


def _availability_check(name: str, modules: tuple[str, ...]):
    def check() -> bool:
        return any(_installed(module) for module in modules)

    check.__name__ = check.__qualname__ = f"is_{name}_available"
    check.__doc__ = f"Whether {' or '.join(modules)} is installed (looked up, not imported)."
    return check


for _name, _modules in _MODULES_BEHIND.items():
    globals()[f"is_{_name}_available"] = _availability_check(_name, _modules)


def is_torch_xpu_available() -> bool:
    """Whether this torch build has an Intel GPU to use (XPU support is inside torch itself)."""
    import torch

    return hasattr(torch, "xpu") and torch.xpu.is_available()


AVAILABILITY_CHECKS = sorted([f"is_{name}_available" for name in _MODULES_BEHIND] + ["is_torch_xpu_available"])


_TOKENIZER_NAMES = {
    "TensorType": "openformers.tokenizers.encoding",
    "PaddingStrategy": "openformers.tokenizers.encoding",
    "get_json_schema": "openformers.tokenizers.tool_schema",
}


def __getattr__(name):
    if name == "logging":  # `from transformers.utils import logging`, imported only when asked for
        return importlib.import_module("openformers.logging")
    if name in _TOKENIZER_NAMES:  # `from transformers.utils import TensorType, get_json_schema`, also lazily
        return getattr(importlib.import_module(_TOKENIZER_NAMES[name]), name)
    raise AttributeError(f"module 'openformers.utils' has no attribute {name!r}")

"""The reference's file names and `is_*_available` checks, for code that imports them from the top level, and the
names its example scripts import from `transformers.utils` (check_min_version, versions.require_version).

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
    "accelerate": ("accelerate",),  # installed or not: openformers itself never uses it
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


def is_flash_attn_2_available() -> bool:
    """Whether the flash-attn package is installed with a CUDA device to run it. openformers never calls it: its
    attention goes through torch's scaled_dot_product_attention, which has FlashAttention-2 kernels of its own
    on CUDA, and a model loaded with attn_implementation="flash_attention_2" runs that."""
    import torch

    return _installed("flash_attn") and torch.cuda.is_available()


AVAILABILITY_CHECKS = sorted([f"is_{name}_available" for name in _MODULES_BEHIND]
                             + ["is_torch_xpu_available", "is_flash_attn_2_available"])


def check_min_version(min_version: str) -> None:
    """The check the reference's example scripts open with (`check_min_version("4.57.0.dev0")`), against the
    transformers version whose API openformers follows (API_VERSION): an ImportError naming both when it is older."""
    from packaging.version import Version

    if Version(API_VERSION) < Version(min_version):
        raise ImportError(f"This script needs the API of transformers {min_version} or later; openformers "
                          f"{_version()} follows transformers {API_VERSION}.")


def _version() -> str:
    from .. import __version__

    return __version__


# The transformers release whose public API openformers follows: the one its tests run against.
API_VERSION = "5.25.0"


# Names held elsewhere, imported only when asked for (`from transformers.utils import ModelOutput`).
_NAMES_ELSEWHERE = {
    "TensorType": "openformers.tokenizers.encoding",
    "PaddingStrategy": "openformers.tokenizers.encoding",
    "get_json_schema": "openformers.tokenizers.tool_schema",
    "ModelOutput": "openformers.generation.outputs",
    "cached_file": "openformers.hub",
}


def __getattr__(name):
    if name == "logging":  # `from transformers.utils import logging`, imported only when asked for
        return importlib.import_module("openformers.logging")
    if name in _NAMES_ELSEWHERE:
        return getattr(importlib.import_module(_NAMES_ELSEWHERE[name]), name)
    if name == "versions":  # `transformers.utils.versions.require_version` right after `import transformers`
        return importlib.import_module("openformers.utils.versions")
    raise AttributeError(f"module 'openformers.utils' has no attribute {name!r}")

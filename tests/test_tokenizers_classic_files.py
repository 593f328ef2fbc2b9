"""The classic vocabulary files: vocab.json + merges.txt (GPT-2, RoBERTa) trained here with `tokenizers`,
loaded by us and by the reference from the same folder; ids, offsets and decode must agree."""

import json

import pytest
import tokenizers
import transformers
from tokenizers import models, pre_tokenizers, trainers

from openformers import AutoTokenizer

TEXTS = [
    "Hello world! Don't panic, it's fine.",
    "  leading and trailing  ",
    "café 中文 🤗 <mask> masked <s> and </s>",
    "def f(x):\n\treturn x * 2\n",
    "",
    "a",
]
PAIR = "A second sentence."


@pytest.fixture(scope="module")
def byte_level_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byte_level")
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TEXTS * 20 + [json.__doc__] * 5, trainer)
    tokenizer.model.save(str(folder))
    return folder


@pytest.mark.parametrize("tokenizer_class", ["GPT2Tokenizer", "RobertaTokenizer"])
def test_vocab_json_and_merges_match_reference(byte_level_files, tokenizer_class, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((byte_level_files / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert ours.special_tokens_map == reference.special_tokens_map
    assert ours.get_vocab() == reference.get_vocab()
    for text in TEXTS:
        for pair in (None, PAIR):
            for add_special_tokens in (True, False):
                options = dict(add_special_tokens=add_special_tokens, return_offsets_mapping=True)
                expected, got = reference(text, pair, **options), ours(text, pair, **options)
                assert got.input_ids == expected.input_ids, (text, pair)
                assert got.offset_mapping == expected.offset_mapping, (text, pair)
                assert got.word_ids() == expected.word_ids()
        ids = reference.encode(text)
        assert ours.decode(ids) == reference.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_bad_merges_are_named(byte_level_files, tmp_path):
    (tmp_path / "vocab.json").write_bytes((byte_level_files / "vocab.json").read_bytes())
    (tmp_path / "merges.txt").write_text("#version: 0.2\nzzz qqq\n")
    with pytest.raises(ValueError, match=r"merges\.txt line 2.*'zzz'.*not in vocab\.json"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("one two three\n")
    with pytest.raises(ValueError, match=r"merges\.txt line 1: a merge is two tokens"):
        AutoTokenizer.from_pretrained(tmp_path)

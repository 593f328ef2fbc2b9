"""Stopping criteria, each compared with the reference's class on the same inputs."""

import time
import warnings

import pytest
import torch

from openformers import AutoTokenizer
from openformers.generation import (
    ConfidenceCriteria, EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StoppingCriteria,
    StoppingCriteriaList, StopStringCriteria, validate_stopping_criteria,
)
from openformers.generation.stopping_criteria import OneRowStops

transformers = pytest.importorskip("transformers")
from transformers.generation import stopping_criteria as reference  # noqa: E402

TEXTS = [
    "The biggest states are Alaska, Texas and California.\nstop here",
    "las topper stopped; st op; sto pper. Alaska!",
    "Ünïcödé 日本語 ✨ emoji 🤗 done. The end",
]
STOPS = [["stop"], ["Texas", "\n"], [" st", "Alaska"], ["日本", "🤗"], ["."], ["end", "op"]]


def _rows(tokenizer):
    """Every prefix of every text's ids, as (1, k) tensors."""
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        for k in range(1, len(ids) + 1):
            yield torch.tensor([ids[:k]])


@pytest.fixture(scope="module")
def smollm2_tokenizers(smollm2_gguf, reference_from_gguf):
    ours = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    theirs = reference_from_gguf("AutoTokenizer", smollm2_gguf)
    return ours, theirs


@pytest.fixture(scope="module")
def sentencepiece_tokenizers(tmp_path_factory):
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm_stop")
    corpus = [text for text in TEXTS for _ in range(20)] + ["the cat sat on the mat", "stopping at the station", "abcdef"] * 20
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "tokenizer"), model_type="bpe", vocab_size=400,
        byte_fallback=True, minloglevel=2, character_coverage=0.98,
    )
    return AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("stops", STOPS, ids=[repr(s) for s in STOPS])
@pytest.mark.parametrize("kind", ["smollm2_tokenizers", "sentencepiece_tokenizers"])
def test_stop_strings_match_the_reference_on_every_prefix(request, kind, stops):
    ours, theirs = request.getfixturevalue(kind)
    criterion = StopStringCriteria(ours, stops)
    expected = reference.StopStringCriteria(theirs, stops)
    results = []
    for ids in _rows(theirs):
        got = criterion(ids, None)
        assert got.dtype == torch.bool and got.shape == (1,)
        assert got.tolist() == expected(ids, None).tolist(), (stops, theirs.decode(ids[0]))
        results.append(bool(got))
    assert any(results), f"no prefix ends in {stops}: the test would not notice a criterion that never fires"


def test_stop_strings_check_each_row_of_a_batch(smollm2_tokenizers):
    ours, theirs = smollm2_tokenizers
    rows = [theirs.encode(text, add_special_tokens=False)[-3:] for text in ["I live in Texas", "Texas is very big"]]
    ids = torch.tensor(rows)
    assert StopStringCriteria(ours, "Texas")(ids, None).tolist() == [True, False]
    assert reference.StopStringCriteria(theirs, "Texas")(ids, None).tolist() == [True, False]
    assert StopStringCriteria(ours, "Texas").stop_strings == ("Texas",)
    with pytest.raises(ValueError, match="stop_strings"):
        StopStringCriteria(ours, [])


def test_max_length_and_eos_criteria_match_the_reference():
    ids = torch.tensor([[1, 2, 3, 5], [4, 5, 6, 7], [7, 7, 9, 9]])
    for length in (3, 4, 5):
        assert MaxLengthCriteria(length)(ids, None).tolist() == reference.MaxLengthCriteria(length)(ids, None).tolist()
    for eos in (5, [9, 7], torch.tensor([5, 7])):
        for new in (1, 2, 3):
            ours = EosTokenCriteria(eos)(ids, None, new_token_length=new)
            assert ours.tolist() == reference.EosTokenCriteria(eos)(ids, None, new_token_length=new).tolist()
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        MaxLengthCriteria(10, max_position_embeddings=3)(ids, None)


def test_max_time_and_confidence_criteria_match_the_reference():
    ids = torch.tensor([[1, 2], [3, 4]])
    old = time.time() - 1.0
    for max_time, start in ((0.1, old), (10.0, old), (0.5, None)):
        ours = MaxTimeCriteria(max_time, initial_timestamp=start)(ids, None)
        assert ours.tolist() == reference.MaxTimeCriteria(max_time, initial_timestamp=start)(ids, None).tolist()
    scores = (torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0], [0.0] * 5]),)
    for threshold in (0.1, 0.5, 0.9):
        for token in (1, 4):
            row = torch.tensor([[0, token]])
            assert ConfidenceCriteria(threshold)(row, scores) == reference.ConfidenceCriteria(threshold)(row, scores)


def test_criteria_list_and_validation_match_the_reference():
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    ours = StoppingCriteriaList([MaxLengthCriteria(5), EosTokenCriteria(9)])
    theirs = reference.StoppingCriteriaList([reference.MaxLengthCriteria(5), reference.EosTokenCriteria(9)])
    assert ours(ids, None).tolist() == theirs(ids, None).tolist() == [False, True]
    assert ours.max_length == theirs.max_length == 5
    assert StoppingCriteriaList().max_length is None
    assert StoppingCriteriaList()(ids, None).tolist() == [False, False]

    added = validate_stopping_criteria(StoppingCriteriaList([EosTokenCriteria(9)]), 7)
    assert added.max_length == 7 and len(added) == 2
    with pytest.warns(UserWarning, match="max_length"):
        kept = validate_stopping_criteria(ours, 8)
    assert kept.max_length == 5 and kept is not ours
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_stopping_criteria(ours, 5).max_length == 5


def test_one_row_stops_answer_as_the_list_does_for_generates_own_criteria():
    # generate's loop asks OneRowStops instead of the list when one row is decoded and every criterion is
    # max_length's or EOS's: the same answer for every length and newest token, the same warning.
    for eos in (5, [9, 7], torch.tensor([5, 7]), torch.tensor(3)):
        criteria = StoppingCriteriaList([MaxLengthCriteria(6), EosTokenCriteria(eos)])
        stops = OneRowStops.of(criteria)
        for length in (3, 5, 6, 7):
            for token in range(10):
                ids = torch.tensor([[1] * (length - 1) + [token]])
                assert stops(length, token) == bool(criteria(ids, None)[0]), (eos, length, token)
    replaced = EosTokenCriteria(5)
    stops = OneRowStops.of(StoppingCriteriaList([replaced]))
    assert stops(3, 5) and not stops(3, 4)
    replaced.eos_token_id = torch.tensor([4])
    assert stops(3, 4) and not stops(3, 5)
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        assert not OneRowStops.of(StoppingCriteriaList([MaxLengthCriteria(10, max_position_embeddings=3)]))(4, 0)

    class Subclass(MaxLengthCriteria):
        pass

    for other in (MaxTimeCriteria(10.0), Subclass(6), StopStringCriteria.__new__(StopStringCriteria)):
        assert OneRowStops.of(StoppingCriteriaList([MaxLengthCriteria(6), other])) is None
    assert OneRowStops.of([MaxLengthCriteria(6)]) is None  # a plain list: called as it is


def test_a_user_criterion_subclasses_the_base_class():
    class EndsWithSeven(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == 7

    ids = torch.tensor([[1, 7], [7, 1]])
    assert StoppingCriteriaList([EndsWithSeven()])(ids, None).tolist() == [True, False]
    with pytest.raises(TypeError, match="__call__"):
        StoppingCriteria()(ids, None)


def test_stop_strings_on_padded_rows_with_special_tokens(smollm2_tokenizers):
    ours, theirs = smollm2_tokenizers
    texts = [
        "<|im_start|><|im_end|>", "<|im_start|><|im_end|<|im_end|>", ">><|im_start|>>stop", "stop", "e nd",
        "<|im_start|><|im_end|", "<|im_end|><|im_start|>", "<|im_end|<>stop<|im_end|", "end", "en d", "eNd",
        "<|im_end|", "|im_end|>", "s", "a", "baa", "abbbbbbb",
    ]
    stops = ["<|im_end|>", "stop", "e nd", "a"]
    theirs.padding_side = "left"
    batch = theirs(texts, return_tensors="pt", padding="longest", add_special_tokens=False)["input_ids"]
    expected = reference.StopStringCriteria(theirs, stops)(batch, None).tolist()
    assert StopStringCriteria(ours, stops)(batch, None).tolist() == expected
    assert True in expected and False in expected
    # Ids past the vocabulary read as no text, as in the reference.
    beyond = torch.tensor([[len(theirs) + 1024, 1, 2]])
    assert StopStringCriteria(ours, ["test"])(beyond, None).tolist() == [False]

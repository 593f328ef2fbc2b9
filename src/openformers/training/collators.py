"""Collators: turn a list of dataset rows into one batch of tensors ("pt", torch) or arrays ("np", NumPy).

They build the reference's batches: the same keys, values and dtypes. Rows padded per `dataset.map`
batch can have different lengths across map batches, so the padding collators pad again to the longest
row of each training batch (dynamic padding), on the tokenizer's padding side; a row's `label` or
`label_ids` becomes the batch's `labels`, as the models expect. Rows may also be plain lists of token ids.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NewType

import numpy as np
import torch

DataCollator = NewType("DataCollator", Callable[[list[Any]], dict[str, Any]])

# Sequence fields the padding collators pad, with the value they pad with (input_ids: the pad token).
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "position_ids": 0}
TENSOR_TYPES = ("pt", "np")


def _check_tensor_type(return_tensors: str) -> str:
    if return_tensors not in TENSOR_TYPES:
        raise ValueError(f"return_tensors must be 'pt' (torch tensors) or 'np' (NumPy arrays); got {return_tensors!r}.")
    return return_tensors


def _as_row(feature) -> dict:
    """A dataset row as a dict: mappings as they are, a plain list of ids as {"input_ids": ids}, objects by vars()."""
    if isinstance(feature, Mapping):
        return dict(feature)
    if isinstance(feature, (list, tuple, np.ndarray, torch.Tensor)):
        return {"input_ids": feature}
    return vars(feature)


def _plain(value):
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else value


def _stack(values: list, name: str, return_tensors: str, dtype=None):
    """One column as a tensor or array; the errors say what to do about text and ragged rows."""
    first = values[0]
    if isinstance(first, str) and name in ("label", "labels", "label_ids"):
        raise TypeError(
            f"Column {name!r} holds text ({first!r}); a model's labels are numbers. Map each label to a class id first "
            "(dataset.class_encode_column(...), or a dict from label to id), and give the model as many labels "
            "(from_pretrained(..., num_labels=N, id2label=..., label2id=...))."
        )
    if isinstance(first, str):
        raise TypeError(
            f"Column {name!r} holds text, which cannot be batched into a tensor. Tokenize it first, or keep "
            "remove_unused_columns=True so the Trainer drops columns the model does not take."
        )
    try:
        if return_tensors == "np":
            if isinstance(first, np.ndarray):
                return np.stack(values)
            return np.array([_plain(v) for v in values], dtype=dtype)
        if isinstance(first, torch.Tensor):
            return torch.stack(values)
        if isinstance(first, np.ndarray):
            return torch.from_numpy(np.stack(values))
        return torch.tensor(values, dtype=dtype)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"Rows of column {name!r} have different lengths and cannot be stacked. Pad them with a collator: "
            "pass processing_class=tokenizer to the Trainer, or data_collator=DataCollatorWithPadding(tokenizer)."
        ) from error


def _int64(values: list, return_tensors: str):
    return np.array(values, dtype=np.int64) if return_tensors == "np" else torch.tensor(values, dtype=torch.int64)


def _label_dtype(value, return_tensors: str):
    """Integer labels stay integers (int64), anything else becomes float32, as the reference does."""
    value = value.item() if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 else value
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if return_tensors == "np":
        return np.int64 if integer else np.float32
    return torch.long if integer else torch.float


def default_data_collator(features: list, return_tensors: str = "pt") -> dict[str, Any]:
    """Stack rows whose fields already have equal shapes; `label`/`label_ids` become `labels`; text is left out."""
    _check_tensor_type(return_tensors)
    rows = [_as_row(feature) for feature in features]
    first, batch = rows[0], {}
    if first.get("label") is not None:
        batch["labels"] = _stack([row["label"] for row in rows], "label", return_tensors,
                                 _label_dtype(first["label"], return_tensors))
    elif first.get("label_ids") is not None:
        label_ids = first["label_ids"]
        stacked = isinstance(label_ids, (torch.Tensor, np.ndarray))
        dtype = None if stacked else _label_dtype(label_ids[0], return_tensors)
        batch["labels"] = _stack([row["label_ids"] for row in rows], "label_ids", return_tensors, dtype)
    for name, value in first.items():
        if name not in ("label", "label_ids") and value is not None and not isinstance(value, str):
            batch[name] = _stack([row[name] for row in rows], name, return_tensors)
    return batch


class DataCollatorMixin:
    """The base of collators that return torch tensors or NumPy arrays: `collator(features, return_tensors=None)`
    picks `torch_call` for "pt" and `numpy_call` for "np" (default: the collator's `return_tensors`). A collator
    defines those two, as the reference's subclasses do, or one `collate(features, return_tensors)`, as ours do."""

    return_tensors: str = "pt"

    def __call__(self, features: list, return_tensors: str | None = None):
        return_tensors = _check_tensor_type(return_tensors or self.return_tensors)
        return self.torch_call(features) if return_tensors == "pt" else self.numpy_call(features)

    def torch_call(self, features: list):
        return self.collate(features, "pt")

    def numpy_call(self, features: list):
        return self.collate(features, "np")

    def collate(self, features: list, return_tensors: str):
        raise TypeError(f"{type(self).__name__} derives from DataCollatorMixin but defines neither "
                        f"{'torch_call' if return_tensors == 'pt' else 'numpy_call'} nor collate(features, "
                        "return_tensors): define the one for the tensors it returns.")


@dataclass
class DefaultDataCollator(DataCollatorMixin):
    """default_data_collator as an object, with return_tensors chosen once."""

    return_tensors: str = "pt"

    def collate(self, features: list, return_tensors: str) -> dict[str, Any]:
        return default_data_collator(features, return_tensors)


# -- padding -------------------------------------------------------------------------------------------------------


def _pad_list(values: list, length: int, value, side: str) -> list:
    fill = [value] * (length - len(values))
    return fill + values if side == "left" else values + fill


def _target_length(lengths: list[int], padding, max_length, pad_to_multiple_of, tokenizer) -> int | None:
    """The padded length of a batch, or None when it is not padded."""
    if padding is False or padding == "do_not_pad":
        return None
    if padding == "max_length":
        length = max_length if max_length is not None else getattr(tokenizer, "model_max_length", None)
        if length is None:
            raise ValueError('padding="max_length" needs max_length=N.')
    elif padding is True or padding == "longest":
        length = max(lengths)
    else:
        raise ValueError(f"padding must be True, 'longest', 'max_length', False or 'do_not_pad'; got {padding!r}.")
    if pad_to_multiple_of and length % pad_to_multiple_of:
        length = (length // pad_to_multiple_of + 1) * pad_to_multiple_of
    return length


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "Asked to pad, but this tokenizer has no pad token. Set one first, for example "
            "`tokenizer.pad_token = tokenizer.eos_token`."
        )
    return tokenizer.pad_token_id


def pad_features(tokenizer, features: list, padding=True, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None, return_tensors: str | None = "pt") -> dict[str, Any]:
    """What the reference's tokenizer.pad does to a list of rows: pad input_ids with the pad token, and
    attention_mask, token_type_ids and special_tokens_mask to match (an attention_mask is added when the
    tokenizer's model inputs have one); every other field is stacked as it is."""
    rows = [{k: _plain(v) for k, v in _as_row(feature).items()} for feature in features]
    main = (getattr(tokenizer, "model_input_names", None) or ["input_ids"])[0]
    wants_mask = "attention_mask" in (getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    side = getattr(tokenizer, "padding_side", "right")
    length = _target_length([len(row[main]) for row in rows], padding, max_length, pad_to_multiple_of, tokenizer)
    if length is not None:
        pad_id = _pad_id(tokenizer)
    for row in rows:
        if wants_mask and "attention_mask" not in row:
            row["attention_mask"] = [1] * len(row[main])
        if length is None:
            continue
        row[main] = _pad_list(row[main], length, pad_id, side)
        for name, value in PAD_VALUES.items():
            if name in row and row[name] is not None:
                fill = getattr(tokenizer, "pad_token_type_id", 0) if name == "token_type_ids" else value
                row[name] = _pad_list(row[name], length, fill, side)
    if return_tensors is None:
        return {name: [row[name] for row in rows] for name in rows[0]}
    return {name: _stack([row[name] for row in rows], name, return_tensors)
            for name in rows[0] if rows[0][name] is not None}


def pad_batch(
    features: list[dict],
    pad_token_id: int,
    *,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    label_pad_token_id: int = -100,
) -> dict[str, torch.Tensor]:
    """Pad rows with a bare pad id (no tokenizer): per-token `labels` with label_pad_token_id, one label per row
    stacked; an attention_mask is always returned."""
    tokenizer = _PadOnly(pad_token_id, padding_side)
    rows = [_rename_label(_as_row(row)) for row in features]
    labels = [row.pop("labels") for row in rows] if "labels" in rows[0] else None
    padding = "max_length" if max_length is not None else True
    if max_length is not None:
        max_length = max(max_length, max(len(row["input_ids"]) for row in rows))
    batch = pad_features(tokenizer, rows, padding, max_length, pad_to_multiple_of)
    if labels is not None:
        if isinstance(labels[0], (list, tuple)) or (isinstance(labels[0], torch.Tensor) and labels[0].dim() > 0):
            length = batch["input_ids"].shape[1]
            labels = [_pad_list(list(_plain(label)), length, label_pad_token_id, padding_side) for label in labels]
        batch["labels"] = _stack(labels, "labels", "pt")
    return batch


@dataclass
class _PadOnly:
    """The three tokenizer attributes padding reads, for padding without a tokenizer."""

    pad_token_id: int
    padding_side: str = "right"
    model_input_names: tuple = ("input_ids", "attention_mask")


def _rename_label(row: dict) -> dict:
    if "label" in row:
        row["labels"] = row.pop("label")
    elif "label_ids" in row:
        row["labels"] = row.pop("label_ids")
    return row


@dataclass
class DataCollatorWithPadding:
    """Pad each batch to its longest row (or max_length) with the tokenizer's pad token, on its padding side."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self):
        _check_tensor_type(self.return_tensors)
        padding = getattr(self.padding, "value", self.padding)
        _target_length([1], padding, self.max_length or 1, None, self.tokenizer)  # names a bad padding= at once
        if padding is not False and padding != "do_not_pad":
            _pad_id(self.tokenizer)  # says how to set a pad token before the first batch fails
        self.padding = padding

    def __call__(self, features: list) -> dict[str, Any]:
        batch = pad_features(self.tokenizer, features, self.padding, self.max_length, self.pad_to_multiple_of,
                             self.return_tensors)
        return _rename_label(batch)


class PadWithId:
    """The Trainer's default collator when there is no tokenizer but the model config knows a pad id."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        if isinstance(features[0], Mapping) and "input_ids" not in features[0]:
            return default_data_collator(features)
        return pad_batch(features, self.pad_token_id)


def _split_labels(features: list, name: str | None = None):
    rows = [_as_row(feature) for feature in features]
    name = name or ("label" if "label" in rows[0] else "labels")
    labels = [row[name] for row in rows] if name in rows[0] else None
    return [{k: v for k, v in row.items() if k != name} for row in rows], labels, name


@dataclass
class DataCollatorForTokenClassification(DataCollatorMixin):
    """Pad inputs with the pad token and per-token labels with label_pad_token_id (-100: left out of the loss)."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __post_init__(self):
        _check_tensor_type(self.return_tensors)
        self.padding = getattr(self.padding, "value", self.padding)

    def collate(self, features: list, return_tensors: str) -> dict[str, Any]:
        rows, labels, name = _split_labels(features)
        batch = pad_features(self.tokenizer, rows, self.padding, self.max_length, self.pad_to_multiple_of,
                             return_tensors)
        if labels is None:
            return batch
        length = batch["input_ids"].shape[1]
        side = self.tokenizer.padding_side
        padded = [_pad_list(list(_plain(label)), length, self.label_pad_token_id, side) for label in labels]
        batch[name] = _int64(padded, return_tensors)
        return batch


@dataclass
class DataCollatorForSeq2Seq:
    """Pad the encoder inputs like DataCollatorWithPadding and the labels with label_pad_token_id; with a model
    that has prepare_decoder_input_ids_from_labels, add its decoder_input_ids."""

    tokenizer: Any
    model: Any = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __post_init__(self):
        _check_tensor_type(self.return_tensors)
        self.padding = getattr(self.padding, "value", self.padding)

    def __call__(self, features: list, return_tensors: str | None = None) -> dict[str, Any]:
        return_tensors = _check_tensor_type(return_tensors or self.return_tensors)
        rows, labels, _ = _split_labels(features)
        if labels is not None and all(label is None for label in labels):
            labels = None
        batch = pad_features(self.tokenizer, rows, self.padding, self.max_length, self.pad_to_multiple_of,
                             return_tensors)
        if labels is None:
            batch["labels"] = None
            return batch
        if self.padding is False or self.padding == "do_not_pad":
            padded = [list(_plain(label)) for label in labels]
        else:
            longest = self.max_length if self.padding == "max_length" and self.max_length is not None else \
                max(len(label) for label in labels)
            if self.pad_to_multiple_of:
                longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
            side = self.tokenizer.padding_side
            padded = [_pad_list(list(_plain(label)), longest, self.label_pad_token_id, side) for label in labels]
        batch["labels"] = _int64(padded, return_tensors)
        if self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch


@dataclass
class DataCollatorForMultipleChoice(DataCollatorMixin):
    """Rows hold one list per choice; every choice of every row is padded to one length: (batch, choices, length)."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self):
        _check_tensor_type(self.return_tensors)
        self.padding = getattr(self.padding, "value", self.padding)

    def collate(self, features: list, return_tensors: str) -> dict[str, Any]:
        rows, labels, _ = _split_labels(features)
        choices = len(rows[0]["input_ids"])
        flat = [{name: values[i] for name, values in row.items()} for row in rows for i in range(choices)]
        batch = pad_features(self.tokenizer, flat, self.padding, self.max_length, self.pad_to_multiple_of,
                             return_tensors)
        batch = {name: value.reshape(len(rows), choices, -1) for name, value in batch.items()}
        if labels is not None:
            labels = [_plain(label) for label in labels]
            batch["labels"] = _int64(labels, return_tensors)
        return batch


class DataCollatorWithFlattening(DefaultDataCollator):
    """Padding-free batches: every row concatenated into one sequence of shape (1, total tokens).

    `labels` restart with separator_id at each row's first token (so no row predicts the next one's start),
    `position_ids` restart at position_ids_start; optionally the sequence boundaries FlashAttention takes
    (cu_seq_lens_q/k, max_length_q/k) and `seq_idx`, the row of each token. The model must keep its
    attention within a row (by the position ids or the boundaries) for the result to match padded batches.
    """

    def __init__(self, *args, return_position_ids: bool = True, separator_id: int = -100,
                 return_flash_attn_kwargs: bool = False, return_seq_idx: bool = False, position_ids_start: int = 0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.return_position_ids, self.separator_id = return_position_ids, separator_id
        self.return_flash_attn_kwargs, self.return_seq_idx = return_flash_attn_kwargs, return_seq_idx
        self.position_ids_start = position_ids_start

    def __call__(self, features: list, return_tensors: str | None = None, separator_id: int | None = None):
        return_tensors = _check_tensor_type(return_tensors or self.return_tensors)
        separator_id = self.separator_id if separator_id is None else separator_id
        rows = [row for row in map(_as_row, features) if len(row["input_ids"]) > 0]
        if not rows:
            raise ValueError("DataCollatorWithFlattening got a batch in which every row is empty.")
        batch = {"input_ids": [], "labels": []}
        if self.return_position_ids:
            batch["position_ids"] = []
        if self.return_seq_idx:
            batch["seq_idx"] = []
        boundaries, longest = [0], 0
        for index, row in enumerate(rows):
            ids = list(_plain(row["input_ids"]))
            labels = list(_plain(row["labels"])) if "labels" in rows[0] else ids
            batch["input_ids"] += ids
            batch["labels"] += [separator_id] + labels[1:]
            if self.return_position_ids:
                batch["position_ids"] += [self.position_ids_start + i for i in range(len(ids))]
            if self.return_seq_idx:
                batch["seq_idx"] += [index] * len(ids)
            boundaries.append(boundaries[-1] + len(ids))
            longest = max(longest, len(ids))
        if self.return_flash_attn_kwargs:
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = boundaries
            batch["max_length_q"] = batch["max_length_k"] = longest
        make = np.array if return_tensors == "np" else torch.tensor
        wide, narrow = (np.int64, np.int32) if return_tensors == "np" else (torch.int64, torch.int32)
        for name, values in batch.items():
            if name in ("max_length_q", "max_length_k"):
                continue  # plain ints, as FlashAttention takes them
            values = [values] if name in ("input_ids", "labels", "position_ids", "seq_idx") else values
            batch[name] = make(values, dtype=wide if name in ("input_ids", "labels", "position_ids") else narrow)
        return batch


@dataclass
class DataCollatorForLanguageModeling(DataCollatorMixin):
    """Batches for language modeling: causal (mlm=False: labels are the inputs, -100 on pad tokens) or masked.

    Masked (mlm=True): each token that is not special is a target with probability mlm_probability; of the
    targets, mask_replace_prob become the mask token and random_replace_prob a random token, the rest stay.
    Labels are -100 everywhere else. The draws are the reference's, in the same order, from its generator
    (seeded with `seed`, plus the worker id in DataLoader workers) or else torch's global one.
    """

    tokenizer: Any
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: float | None = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int | None = None

    def __post_init__(self):
        _check_tensor_type(self.return_tensors)
        if self.mlm:
            if getattr(self.tokenizer, "mask_token_id", None) is None:
                raise ValueError(
                    "mlm=True needs a tokenizer with a mask token; this one has none. Use mlm=False for causal "
                    "language modeling."
                )
            if self.mlm_probability is None or not 0 <= self.mlm_probability <= 1:
                raise ValueError(f"mlm_probability must be between 0 and 1; got {self.mlm_probability}.")
            self.mlm_probability = float(self.mlm_probability)
        elif self.whole_word_mask:
            raise ValueError("whole_word_mask=True masks words for masked language modeling: it needs mlm=True.")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1; got {getattr(self, name)}.")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1.")
        if self.whole_word_mask:  # a whole word is masked or kept; random replacement would split it
            self.mask_replace_prob, self.random_replace_prob = 1.0, 0.0
        self.generator, self._generator_pid = None, None

    def _draws(self):
        """The generator of this process: seeded once per process (and worker), or None for torch's global one."""
        if self.seed is None:
            return None
        if self.generator is None or self._generator_pid != os.getpid():
            worker = torch.utils.data.get_worker_info()
            seed = self.seed + (worker.id if worker is not None else 0)
            self.generator = np.random.default_rng(seed) if self.return_tensors == "np" else \
                torch.Generator().manual_seed(seed)
            self._generator_pid = os.getpid()
        return self.generator

    def collate(self, features: list, return_tensors: str) -> dict[str, Any]:
        rows = [_as_row(feature) for feature in features]
        rows = [{k: v for k, v in row.items() if k not in ("label", "labels", "label_ids")} for row in rows]
        same_length = len({len(row["input_ids"]) for row in rows}) == 1
        multiple = self.pad_to_multiple_of
        needs_padding = not same_length or bool(multiple and len(rows[0]["input_ids"]) % multiple)
        if needs_padding:
            _pad_id(self.tokenizer)
        batch = pad_features(self.tokenizer, rows, True if needs_padding else False, None, self.pad_to_multiple_of,
                             return_tensors)
        if not isinstance(features[0], Mapping):  # plain lists of ids: the reference returns input_ids only
            batch = {"input_ids": batch["input_ids"]}
        special = batch.pop("special_tokens_mask", None)
        word_starts = batch.pop("offset_mapping", None)
        if not self.mlm:
            labels = batch["input_ids"].copy() if return_tensors == "np" else batch["input_ids"].clone()
            if self.tokenizer.pad_token_id is not None:
                labels[labels == self.tokenizer.pad_token_id] = -100
            batch["labels"] = labels
            return batch
        mask = self._mask_numpy if return_tensors == "np" else self._mask_torch
        batch["input_ids"], batch["labels"] = mask(batch["input_ids"], special, word_starts)
        return batch

    def _special(self, ids, special):
        if special is not None:
            return special
        special_ids = set(self.tokenizer.all_special_ids)
        return [[1 if token in special_ids else 0 for token in row] for row in ids.tolist()]

    def _mask_torch(self, inputs: torch.Tensor, special, offsets):
        generator = self._draws()
        labels = inputs.clone()
        probability = torch.full(labels.shape, self.mlm_probability)
        if self.whole_word_mask:
            word_ids, keep = _word_ids_and_keep_mask(_numpy(offsets), _numpy(self._special(inputs, special)))
            keep = torch.tensor(keep, dtype=torch.bool)
        else:
            keep = torch.as_tensor(self._special(inputs, special), dtype=torch.bool)
        probability.masked_fill_(keep, 0.0)
        chosen = torch.bernoulli(probability, generator=generator).bool()
        if self.whole_word_mask:
            chosen = torch.tensor(_spread_to_words(word_ids, chosen.numpy()), dtype=torch.bool)
        labels[~chosen] = -100
        replaced = torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=generator).bool()
        replaced &= chosen
        inputs[replaced] = self.tokenizer.mask_token_id
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        share = self.random_replace_prob / (1 - self.mask_replace_prob)  # of the targets not masked
        randomized = torch.bernoulli(torch.full(labels.shape, share), generator=generator).bool() & chosen & ~replaced
        words = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long, generator=generator)
        inputs[randomized] = words[randomized]
        return inputs, labels

    def _mask_numpy(self, inputs: np.ndarray, special, offsets):
        draws = self._draws() or np.random
        labels = np.copy(inputs)
        probability = np.full(labels.shape, self.mlm_probability)
        if self.whole_word_mask:
            word_ids, keep = _word_ids_and_keep_mask(_numpy(offsets), _numpy(self._special(inputs, special)))
        else:
            keep = np.asarray(self._special(inputs, special)).astype(bool)
        probability[keep] = 0
        chosen = draws.binomial(1, probability, size=probability.shape).astype(bool)
        if self.whole_word_mask:
            chosen = _spread_to_words(word_ids, chosen)
        labels[~chosen] = -100
        replaced = draws.binomial(1, self.mask_replace_prob, size=labels.shape).astype(bool) & chosen
        inputs[replaced] = self.tokenizer.mask_token_id
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        share = self.random_replace_prob / (1 - self.mask_replace_prob)
        randomized = draws.binomial(1, share, size=labels.shape).astype(bool) & chosen & ~replaced
        count = np.count_nonzero(randomized)
        if draws is np.random:
            words = np.random.randint(low=0, high=len(self.tokenizer), size=count, dtype=np.int64)
        else:
            words = draws.integers(low=0, high=len(self.tokenizer), size=count, dtype=np.int64)
        inputs[randomized] = words
        return inputs, labels


def _numpy(value) -> np.ndarray:
    if value is None:
        raise ValueError(
            "whole_word_mask=True needs the rows' offset_mapping: tokenize with return_offsets_mapping=True."
        )
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _word_ids_and_keep_mask(offsets: np.ndarray, special: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A word id per token (tokens that continue a word share it; -1 for special tokens) and the tokens
    never drawn (special ones, and every token but the first of its word)."""
    special = special.astype(bool)
    word_ids = np.full(special.shape, -1, dtype=np.int64)
    keep = special.copy()
    for row in range(special.shape[0]):
        word, previous_end = -1, None
        for position in range(special.shape[1]):
            if special[row, position]:
                previous_end = None
                continue
            start, end = offsets[row, position]
            continues_word = previous_end is not None and start == previous_end
            if continues_word:
                keep[row, position] = True
            else:
                word += 1
            word_ids[row, position] = word
            previous_end = end
    return word_ids, keep


def _spread_to_words(word_ids: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Every token of a word whose first token was drawn."""
    spread = np.zeros_like(chosen, dtype=bool)
    for row in range(word_ids.shape[0]):
        picked = set(word_ids[row][chosen[row] & (word_ids[row] >= 0)].tolist())
        spread[row] = np.isin(word_ids[row], list(picked)) & (word_ids[row] >= 0)
    return spread

"""Collators: turn a list of dataset rows (dicts) into one batch of tensors.

Rows padded per `dataset.map` batch can have different lengths across map batches, so the padding
collators pad again to the longest row of each training batch (dynamic padding). A row's `label` or
`label_ids` becomes the batch's `labels`, as the models expect.
"""

import torch

from ..tokenizers.base import PreTrainedTokenizer

# Sequence fields and the value that pads them; any other field must already have one shape per row.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "position_ids": 0}


def _rename_label(row: dict) -> dict:
    if "label" in row or "label_ids" in row:
        row = dict(row)
        row["labels"] = row.pop("label", None) if "label" in row else row.pop("label_ids")
    return row


def _as_tensor(values: list, name: str) -> torch.Tensor:
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    if isinstance(values[0], str):
        raise TypeError(
            f"Column {name!r} holds text, which cannot be batched into a tensor. Tokenize it first, or keep "
            "remove_unused_columns=True so the Trainer drops columns the model does not take."
        )
    dtype = torch.float32 if isinstance(values[0], float) else None
    try:
        return torch.tensor(values, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Rows of column {name!r} have different lengths and cannot be stacked. Pad them with a collator: "
            "pass processing_class=tokenizer to the Trainer, or data_collator=DataCollatorWithPadding(tokenizer)."
        ) from error


def default_data_collator(features: list[dict]) -> dict[str, torch.Tensor]:
    """Stack rows whose fields already have equal shapes; `label`/`label_ids` become `labels`."""
    rows = [_rename_label(row) for row in features]
    return {name: _as_tensor([row[name] for row in rows], name) for name in rows[0] if rows[0][name] is not None}


def _pad_rows(rows: list, length: int, value, side: str) -> torch.Tensor:
    padded = []
    for row in rows:
        row = row.tolist() if isinstance(row, torch.Tensor) else list(row)
        fill = [value] * (length - len(row))
        padded.append(fill + row if side == "left" else row + fill)
    return torch.tensor(padded)


def pad_batch(
    features: list[dict],
    pad_token_id: int,
    *,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    label_pad_token_id: int = -100,
) -> dict[str, torch.Tensor]:
    """Pad the sequence fields to the longest row (or max_length), stack the rest.

    `labels` are padded with label_pad_token_id (-100: left out of the loss) when they are per-token
    (token classification, language modeling) and stacked when they are one value per row.
    """
    rows = [_rename_label(row) for row in features]
    length = max(len(row["input_ids"]) for row in rows)
    if max_length is not None:
        length = max(length, max_length)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        if values[0] is None:
            continue
        if name == "input_ids":
            batch[name] = _pad_rows(values, length, pad_token_id, padding_side)
        elif name in PAD_VALUES:
            batch[name] = _pad_rows(values, length, PAD_VALUES[name], padding_side)
        elif name == "labels" and _is_sequence(values[0]):
            batch[name] = _pad_rows(values, length, label_pad_token_id, padding_side)
        else:
            batch[name] = _as_tensor(values, name)
    if "attention_mask" not in batch:
        batch["attention_mask"] = _pad_rows([[1] * len(row["input_ids"]) for row in rows], length, 0, padding_side)
    return batch


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, torch.Tensor) and value.dim() > 0)


def _pad_id(tokenizer: PreTrainedTokenizer) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "Asked to pad, but this tokenizer has no pad token. Set one first, for example "
            "`tokenizer.pad_token = tokenizer.eos_token`."
        )
    return tokenizer.pad_token_id


class DataCollatorWithPadding:
    """Pad each batch to its longest row with the tokenizer's pad token (and its padding side)."""

    def __init__(self, tokenizer, padding: bool | str = True, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None, return_tensors: str = "pt"):
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt' (torch tensors); got {return_tensors!r}.")
        if padding not in (True, "longest", "max_length"):
            raise ValueError(f"padding must be True, 'longest' or 'max_length'; got {padding!r}.")
        if padding == "max_length" and max_length is None:
            raise ValueError('padding="max_length" needs max_length=N.')
        self.tokenizer = tokenizer
        self.pad_token_id = _pad_id(tokenizer)
        self.max_length = max_length if padding == "max_length" else None
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(features, self.pad_token_id, padding_side=self.tokenizer.padding_side,
                         pad_to_multiple_of=self.pad_to_multiple_of, max_length=self.max_length)


class PadWithId:
    """The Trainer's default collator when there is no tokenizer but the model config knows a pad id."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if "input_ids" not in features[0]:
            return default_data_collator(features)
        return pad_batch(features, self.pad_token_id)


class DataCollatorForTokenClassification:
    """Pad inputs with the pad token and per-token labels with label_pad_token_id (-100: left out of the loss)."""

    def __init__(self, tokenizer, label_pad_token_id: int = -100, pad_to_multiple_of: int | None = None,
                 return_tensors: str = "pt"):
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt' (torch tensors); got {return_tensors!r}.")
        self.tokenizer = tokenizer
        self.pad_token_id = _pad_id(tokenizer)
        self.label_pad_token_id = label_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(features, self.pad_token_id, padding_side=self.tokenizer.padding_side,
                         pad_to_multiple_of=self.pad_to_multiple_of, label_pad_token_id=self.label_pad_token_id)


class DataCollatorForLanguageModeling:
    """Batches for language modeling: causal (mlm=False: labels are the inputs, -100 on padding) or masked.

    Masked (mlm=True): a fraction mlm_probability of the non-special, non-padding tokens become
    targets; of those 80% are replaced by the mask token, 10% by a random token and 10% kept. Labels
    are -100 everywhere else.
    """

    def __init__(self, tokenizer, mlm: bool = True, mlm_probability: float = 0.15,
                 pad_to_multiple_of: int | None = None, return_tensors: str = "pt", seed: int | None = None):
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt' (torch tensors); got {return_tensors!r}.")
        if mlm and tokenizer.mask_token_id is None:
            raise ValueError(
                "mlm=True needs a tokenizer with a mask token; this one has none. Use mlm=False for causal "
                "language modeling."
            )
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability must be between 0 and 1; got {mlm_probability}.")
        self.tokenizer = tokenizer
        self.mlm, self.mlm_probability = mlm, mlm_probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            if any(len(row["input_ids"]) != len(features[0]["input_ids"]) for row in features):
                _pad_id(self.tokenizer)  # raises the error that says how to set one
            pad_id = 0  # rows of equal length: nothing is padded
        rows = [{k: v for k, v in row.items() if k not in ("label", "labels", "label_ids")} for row in features]
        batch = pad_batch(rows, pad_id, padding_side=self.tokenizer.padding_side,
                          pad_to_multiple_of=self.pad_to_multiple_of)
        if not self.mlm:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            return batch
        batch["input_ids"], batch["labels"] = self._mask_tokens(batch["input_ids"], batch["attention_mask"])
        return batch

    def _mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        inputs, labels = input_ids.clone(), input_ids.clone()
        special = torch.isin(inputs, torch.tensor(self.tokenizer.all_special_ids, dtype=inputs.dtype))
        maskable = (attention_mask == 1) & ~special
        chosen = (torch.rand(inputs.shape, generator=self.generator) < self.mlm_probability) & maskable
        labels[~chosen] = -100
        draw = torch.rand(inputs.shape, generator=self.generator)
        inputs[chosen & (draw < 0.8)] = self.tokenizer.mask_token_id
        randomized = chosen & (draw >= 0.8) & (draw < 0.9)
        random_tokens = torch.randint(len(self.tokenizer), inputs.shape, generator=self.generator)
        inputs[randomized] = random_tokens[randomized]
        return inputs, labels

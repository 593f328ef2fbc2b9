"""The losses the task heads compute when they are given labels, as the reference computes them.

Labels of -100 are left out of every token-level loss (padding, or the prompt part of a causal LM sample).
"""

import torch
import torch.nn.functional as F

from ..configs import PretrainedConfig


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t + 1 at position t."""
    labels = F.pad(labels.to(logits.device), (0, 1), value=-100)[:, 1:]  # shifted left, the last one ignored
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's logits (B, T, n) against its label (B, T): masked LM, NER (or of
    (N, n) logits against N labels)."""
    return F.cross_entropy(logits.float().flatten(0, -2), labels.to(logits.device).flatten(), ignore_index=-100)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """The loss of (B, num_labels) logits, by `config.problem_type`, or when that is None:

    one label -> regression (mean squared error); integer labels -> one class per sample (cross-entropy);
    float labels (B, num_labels) -> independent yes/no per label (binary cross-entropy with logits).
    """
    labels = labels.to(logits.device)
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        outside = labels[(labels != -100) & ((labels < 0) | (labels >= config.num_labels))]
        if outside.numel():  # torch's own error says "Target 5 is out of bounds."
            raise IndexError(
                f"labels holds {int(outside[0])}, but this model sorts into num_labels={config.num_labels} classes "
                f"(labels 0 to {config.num_labels - 1}, or -100 to leave a sample out): for N classes load it with "
                "from_pretrained(..., num_labels=N)."
            )
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1), ignore_index=-100)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def question_answering_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor
) -> torch.Tensor:
    """The mean of the start and end cross-entropies; positions past the sequence (answer cut off) are left out."""
    T = start_logits.shape[1]
    start = start_positions.to(start_logits.device).reshape(-1).clamp(0, T)
    end = end_positions.to(end_logits.device).reshape(-1).clamp(0, T)
    start_loss = F.cross_entropy(start_logits, start, ignore_index=T)
    end_loss = F.cross_entropy(end_logits, end, ignore_index=T)
    return (start_loss + end_loss) / 2


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None) -> torch.Tensor:
    """An encoder-decoder's decoder inputs for `labels` (B, T): decoder_start_token_id, then the labels but the last,
    with -100 (ignored labels) replaced by pad_token_id. Position t then predicts labels[t] (teacher forcing)."""
    if decoder_start_token_id is None:
        raise ValueError("Making decoder_input_ids from labels needs config.decoder_start_token_id (T5 uses the pad "
                         "token id, BART the EOS id): set it, or pass decoder_input_ids.")
    if pad_token_id is None:
        raise ValueError("Making decoder_input_ids from labels needs config.pad_token_id, which replaces the ignored "
                         "labels (-100): set it, or pass decoder_input_ids.")
    shifted = input_ids.new_full(input_ids.shape, decoder_start_token_id)
    shifted[..., 1:] = input_ids[..., :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)

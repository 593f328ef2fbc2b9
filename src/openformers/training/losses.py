"""How the Trainer gets a loss the reference's way: which models normalize by num_items_in_batch themselves,
label smoothing, and NEFTune's noise on the input embeddings."""

import inspect
import math

import torch

# Causal LMs whose loss_type the reference leaves unset, so that its Trainer counts their first labels too when it
# normalizes their (shifted) losses by num_items_in_batch; ours are normalized the same way, to the same numbers.
COUNTED_UNSHIFTED = ("GPT2LMHeadModel", "BertLMHeadModel")


def is_openformers_model(model) -> bool:
    from ..models.base import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def accepts_loss_kwargs(model) -> bool:
    """Whether forward takes num_items_in_batch (the reference's test: the attribute, else **kwargs)."""
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    if is_openformers_model(model):
        return False  # our heads return means; the loop weighs them by their label tokens instead
    parameters = inspect.signature(model.forward).parameters
    return "num_items_in_batch" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def label_smoothed_loss(outputs, labels: torch.Tensor, epsilon: float, shift_labels: bool = False,
                        ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy against labels mixed with the uniform distribution: (1 - eps) * nll + eps * mean(-log p)."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if shift_labels:
        logits, labels = logits[..., :-1, :].contiguous(), labels[..., 1:].contiguous()
    log_probs = -torch.nn.functional.log_softmax(logits, dim=-1)
    if labels.dim() == log_probs.dim() - 1:
        labels = labels.unsqueeze(-1)
    padding = labels.eq(ignore_index)
    nll = log_probs.gather(dim=-1, index=torch.clamp(labels, min=0)).masked_fill(padding, 0.0)
    smoothed = log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32).masked_fill(padding, 0.0)
    active = padding.numel() - padding.long().sum()
    return (1 - epsilon) * nll.sum() / active + epsilon * smoothed.sum() / (active * log_probs.shape[-1])


def add_neftune_noise(model, alpha: float):
    """NEFTune: uniform noise of size alpha / sqrt(length * width) on the input embeddings while training."""
    if not hasattr(model, "get_input_embeddings"):
        raise ValueError(
            f"neftune_noise_alpha needs a model with get_input_embeddings(); {type(model).__name__} has none."
        )

    def add_noise(module, inputs, output):
        if not module.training:
            return output
        bound = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.zeros_like(output).uniform_(-bound, bound)

    return model.get_input_embeddings().register_forward_hook(add_noise)

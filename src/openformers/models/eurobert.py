"""EuroBERT (EuroBERT/EuroBERT-210m, 610m, 2.1B): Llama's decoder stack (models/llama.py) run as an encoder.

The one difference in the stack is the mask: every token attends to every real token of its row, before and after
it (the caller's padding mask, where Llama's is causal); positions count from 0 in every row, and no cache is kept.
The heads are the reference's: a masked LM (`lm_head`, with a bias where config.mlp_bias), token classification
(`classifier`), and sequence classification through `dense` and GELU into `classifier`, pooled by
`classifier_pooling`: the first token ("bos"), the mean of the real tokens ("mean"), or "late", the mean of every
real token's logits, computed here as the classifier of the mean of the tokens' activations (the classifier is
affine, so both are the same).
"""

import torch
from torch import nn

from ..configs import EuroBertConfig
from .bert import padding_mask
from .heads import MaskedLM, PooledSequenceClassification, TokenClassification
from .llama import LlamaModel, LlamaPreTrainedModel
from .outputs import BaseModelOutput, BaseModelOutputWithPooling, ModelOutput


class EuroBertPreTrainedModel(LlamaPreTrainedModel):
    config_class = EuroBertConfig
    projection_name = "classifier"

    def new_base_model(self, config: EuroBertConfig) -> "EuroBertModel":
        return EuroBertModel(config)

    def classifier_dropout(self) -> float:
        return 0.0  # the reference's heads have no dropout


class EuroBertModel(EuroBertPreTrainedModel, LlamaModel):
    """The encoder: `last_hidden_state` (B, T, C) after the final norm."""

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutput | tuple:
        """Llama's stack attending both ways; with output_hidden_states also the embeddings and every layer's
        output (the last one normed), and with output_attentions every layer's weights."""
        if past_key_values is not None or cache is not None:
            raise ValueError(f"{type(self).__name__} is an encoder and keeps no cache: pass past_key_values=None.")
        decoded = self.decode(input_ids, attention_mask, position_ids, None, None, False, labels, inputs_embeds,
                              output_attentions, output_hidden_states, None)
        output = BaseModelOutput(last_hidden_state=decoded.last_hidden_state, hidden_states=decoded.hidden_states,
                                 attentions=decoded.attentions)
        return self.returned(output, return_dict)

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        """Each layer's (cos, sin, mask): the mask every query reads is the padding's, all True without padding
        (a mask of None would be causal attention)."""
        if end > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {end} tokens, more than the {self.config.max_position_embeddings} positions this "
                "model has (max_position_embeddings); truncate the input (tokenizer(..., truncation=True))."
            )
        both_ways = padding_mask(attention_mask)
        if both_ways is None:
            both_ways = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=x.device)
        rotation = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        return lambda layer: (*rotation(layer)[:2], both_ways)


class EuroBertForMaskedLM(EuroBertPreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.mlp_bias)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


def masked_mean(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, C) -> (B, C): the mean over each row's real tokens (all of them without a mask)."""
    if attention_mask is None:
        return x.mean(dim=1)
    mask = attention_mask.to(x.device, x.dtype)[..., None]  # (B, T, 1)
    return (x * mask).sum(dim=1) / mask.sum(dim=1)


class EuroBertForSequenceClassification(EuroBertPreTrainedModel, PooledSequenceClassification):
    """One label (or score) per sequence: classifier(GELU(dense(...))), pooled by config.classifier_pooling."""

    add_pooling_layer = False

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()

    def run_base_model(self, input_ids, attention_mask, *rest) -> ModelOutput:
        """The encoder's output, with what the classifier reads as its pooled output."""
        base = super().run_base_model(input_ids, attention_mask, *rest)
        hidden = base.last_hidden_state  # (B, T, C)
        pooling = self.config.classifier_pooling
        if pooling == "late":  # each token's activations, averaged: the classifier then gives the mean logits
            pooled = masked_mean(self.activation(self.dense(hidden)), attention_mask)
        else:
            pooled = self.activation(self.dense(hidden[:, 0] if pooling == "bos" else masked_mean(hidden, attention_mask)))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled,
                                          hidden_states=base.hidden_states, attentions=base.attentions)


class EuroBertForTokenClassification(EuroBertPreTrainedModel, TokenClassification):
    """One label per token."""

"""What models return: the reference's output classes, with its names and field order.

Each is a dataclass over `ModelOutput` (generation/outputs.py): read by attribute, by name or by position
among the fields that are set, with `cache` also read and written as `past_key_values`.
"""

from dataclasses import dataclass

import torch

from ..generation.outputs import ModelOutput

Tensors = tuple[torch.Tensor, ...]

# Base models. hidden_states: the embeddings' output and every layer's (B, T, C); attentions: every layer's
# softmax weights (B, heads, T, S). Both only when asked for (output_hidden_states=, output_attentions=).


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    cross_attentions: Tensors | None = None


@dataclass
class BaseModelOutputWithCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    cross_attentions: Tensors | None = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None  # BERT: tanh(dense(hidden state of the first token))
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    cache: object | None = None
    attentions: Tensors | None = None
    cross_attentions: Tensors | None = None


# Heads.


@dataclass
class CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, vocab_size)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    cross_attentions: Tensors | None = None


# Sparse mixtures of experts (Mixtral, Qwen3-MoE). router_logits: every sparse layer's router scores
# (B * T, num_experts), when asked for (output_router_logits=); aux_loss: the load-balancing loss computed from them.


@dataclass
class MoeModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    router_logits: Tensors | None = None


@dataclass
class MoeCausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    router_logits: Tensors | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, vocab_size)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, num_labels)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # (B, T)
    end_logits: torch.Tensor | None = None  # (B, T)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_choices)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class NextSentencePredictorOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, 2)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class BertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None  # (B, T, vocab_size)
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class MobileBertForPreTrainingOutput(BertForPreTrainingOutput):
    """BERT's, under the reference's MobileBERT name."""


@dataclass
class ErnieForPreTrainingOutput(BertForPreTrainingOutput):
    """BERT's, under the reference's ERNIE name."""


@dataclass
class MegatronBertForPreTrainingOutput(BertForPreTrainingOutput):
    """BERT's, under the reference's Megatron-BERT name."""


@dataclass
class GPT2DoubleHeadsModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    mc_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mc_logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


# Encoder-decoders (T5, BART). The decoder's fields are prefixed decoder_; cross_attentions are its layers' weights
# over the encoder output (B, heads, T, S); encoder_* is what the encoder returned (computed, or passed in as
# encoder_outputs). cache: an EncoderDecoderCache.


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # the decoder's (B, T, C)
    cache: object | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, vocab_size) over the decoder positions
    cache: object | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None


@dataclass
class Seq2SeqSequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)
    cache: object | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None


@dataclass
class Seq2SeqQuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # (B, T) over the decoder positions
    end_logits: torch.Tensor | None = None
    cache: object | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None

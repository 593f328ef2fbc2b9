"""Pegasus (pegasus-large, pegasus-xsum, pegasus-cnn_dailymail: summarization) over BART's attention, caches, LM
head and generation path: mBART's layers (each normalizes before its branches) and final LayerNorm after each stack,
with Marian's positions (a fixed sinusoidal table read from row 0, no LayerNorm over the embeddings; the decoder
counts positions from its cache and scales given embeddings too).

One token table serves the encoder, the decoder and the LM head (with `final_logits_bias`). The position tables are
computed, not learned: the reference saves them with every head, so saving writes them and loading ignores them.
The decoder starts from the padding token (decoder_start_token_id) and is not fed input_ids shifted right when no
decoder inputs are given.
"""

import torch
from torch import nn

from ..configs import PegasusConfig
from .bart import BartForCausalLM, BartForConditionalGeneration, BartModel, BartPreTrainedModel
from .marian import MarianEncoder, SinusoidalDecoder, with_position_tables
from .mbart import MBartDecoderLayer, MBartEncoderLayer


class PegasusEncoder(MarianEncoder):
    """Marian's encoder with mBART's layers and a LayerNorm after them (which bart.final_norm applies)."""

    layer_class = MBartEncoderLayer

    def __init__(self, config: PegasusConfig):
        super().__init__(config)
        self.layer_norm = nn.LayerNorm(config.d_model)


class PegasusDecoder(SinusoidalDecoder):
    """The sinusoidal decoder Marian's is built on, with mBART's layers and a LayerNorm after them."""

    layer_class = MBartDecoderLayer

    def __init__(self, config: PegasusConfig):
        super().__init__(config)
        self.layer_norm = nn.LayerNorm(config.d_model)


class PegasusPreTrainedModel(BartPreTrainedModel):
    config_class = PegasusConfig
    encoder_class, decoder_class = PegasusEncoder, PegasusDecoder
    ignored_checkpoint_keys = (*BartPreTrainedModel.ignored_checkpoint_keys, r"(^|\.)embed_positions\.weight$")

    def new_base_model(self, config: PegasusConfig) -> "PegasusModel":
        return PegasusModel(config)

    def to_checkpoint_layout(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return with_position_tables(self, state_dict)


class PegasusModel(PegasusPreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    shifts_input_ids = False  # as Marian's: it asks for decoder inputs


class PegasusForConditionalGeneration(PegasusPreTrainedModel, BartForConditionalGeneration):
    """Summarization: vocabulary logits (plus final_logits_bias) for every decoder position, and their loss against
    `labels` (whose shift right, after the padding token, is the decoder's input when none is given)."""


class PegasusForCausalLM(PegasusPreTrainedModel, BartForCausalLM):
    """Pegasus's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given). Its
    positions count from the cache: `position_ids` (and a left-padded row's padding) do not move them, as in the
    reference. The loss compares logits[t] with labels[t]: labels are not shifted inside the model."""

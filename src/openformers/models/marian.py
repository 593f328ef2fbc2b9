"""Marian (Helsinki-NLP's opus-mt translation models) over BART's layers: the same post-LayerNorm encoder and decoder
with cross-attention, caches, LM head with `final_logits_bias` and generation path, and four differences:

- positions read a fixed sinusoidal table from row 0 (sines in the first half of each row, cosines in the second),
  which is computed, not learned: checkpoints of MarianMTModel leave it out, those of MarianModel and
  MarianForCausalLM hold it (loading ignores it, saving writes it as the reference does);
- no LayerNorm over the embeddings;
- with `share_encoder_decoder_embeddings=False` the encoder and the decoder have their own token tables (the
  decoder's of `decoder_vocab_size` rows, which the LM head scores), and no `shared` one;
- the decoder scales `decoder_inputs_embeds` by `embed_scale` as it scales looked-up tokens, counts positions from
  its cache whatever `position_ids` say, and is not fed input_ids shifted right when no decoder inputs are given.

Generation starts from the padding token (decoder_start_token_id), and the checkpoints' generation configs ban it
(`bad_words_ids`).
"""

import torch
from torch import nn

from ..configs import MarianConfig
from .bart import (
    BartDecoder,
    BartEncoder,
    BartForCausalLM,
    BartForConditionalGeneration,
    BartModel,
    BartPreTrainedModel,
    ScaledEmbedding,
)
from .layers import SinusoidalPositions


class SinusoidalStack:
    """A BART stack (encoder or decoder) with the fixed sinusoidal positions from row 0 and no LayerNorm over the
    embeddings: Marian's and Pegasus's."""

    position_offset = 0

    def __init__(self, config):
        super().__init__(config)
        self.embed_positions = SinusoidalPositions(config.max_position_embeddings, config.d_model)
        self.layernorm_embedding = nn.Identity()


class MarianEncoder(SinusoidalStack, BartEncoder):
    """BART's encoder with the fixed sinusoidal positions and no LayerNorm over the embeddings."""


class SinusoidalDecoder(SinusoidalStack, BartDecoder):
    """BART's decoder with the fixed sinusoidal positions counted from the cache, no LayerNorm over the embeddings,
    and given embeddings scaled too (Marian's and Pegasus's)."""

    takes_position_ids = False  # as the reference's: a left-padded row's positions count its padding

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        if inputs_embeds is None:
            return super().input_embeddings(input_ids, None)
        return inputs_embeds * self.embed_tokens.embed_scale


class MarianDecoder(SinusoidalDecoder):
    """The sinusoidal decoder, with a token table of decoder_vocab_size rows when it is not shared."""

    def __init__(self, config: MarianConfig):
        super().__init__(config)
        if not config.share_encoder_decoder_embeddings:
            self.embed_tokens = ScaledEmbedding(config, config.decoder_vocab_size)


class MarianPreTrainedModel(BartPreTrainedModel):
    config_class = MarianConfig
    encoder_class, decoder_class = MarianEncoder, MarianDecoder
    # Older checkpoints store the position tables, which are computed here.
    ignored_checkpoint_keys = (*BartPreTrainedModel.ignored_checkpoint_keys, r"(^|\.)embed_positions\.weight$")

    def new_base_model(self, config: MarianConfig) -> "MarianModel":
        return MarianModel(config)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        if not self.config.share_encoder_decoder_embeddings and (new_num_tokens or pad_to_multiple_of):
            raise ValueError(
                "resize_token_embeddings resizes the one token table of a model with "
                "share_encoder_decoder_embeddings=True; this model's encoder and decoder have tables of their own "
                f"({self.config.vocab_size} and {self.config.decoder_vocab_size} rows). Resize "
                "model.get_encoder().embed_tokens and model.get_decoder().embed_tokens (and the LM head) yourself."
            )
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.config.decoder_vocab_size = self.config.vocab_size  # the decoder reads the one table, as the reference
        return embeddings

    def with_position_tables(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return with_position_tables(self, state_dict)


def with_position_tables(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with the model's fixed position tables added under their checkpoint names, in the model's dtype
    (where the reference saves them)."""
    tables = {f"{name}.weight": module.weight.to(model.dtype) for name, module in model.named_modules()
              if isinstance(module, SinusoidalPositions)}
    return {**state_dict, **tables}


class MarianModel(MarianPreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    def __init__(self, config: MarianConfig):
        super().__init__(config)
        if not config.share_encoder_decoder_embeddings:  # each stack reads its own table, as in the reference
            self.input_embeddings_name, self.tied_weights = "encoder.embed_tokens", {}

    shifts_input_ids = False

    @staticmethod
    def shares_token_table(config: MarianConfig) -> bool:
        return config.share_encoder_decoder_embeddings

    def to_checkpoint_layout(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.with_position_tables(state_dict)


class MarianMTModel(MarianPreTrainedModel, BartForConditionalGeneration):
    """Translation: vocabulary logits (plus final_logits_bias) for every decoder position, and their loss against
    `labels` (whose shift right, after the padding token, is the decoder's input when none is given)."""

    def __init__(self, config: MarianConfig):
        super().__init__(config)
        if not config.share_encoder_decoder_embeddings:  # the LM head shares the decoder's own table
            self.input_embeddings_name = "model.encoder.embed_tokens"
            self.tied_weights = {"lm_head.weight": "model.decoder.embed_tokens.weight"}


class MarianForCausalLM(MarianPreTrainedModel, BartForCausalLM):
    """Marian's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given). Its
    positions count from the cache: `position_ids` (and a left-padded row's padding) do not move them, as in the
    reference. The loss compares logits[t] with labels[t]: labels are not shifted inside the model."""

    def to_checkpoint_layout(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.with_position_tables(state_dict)

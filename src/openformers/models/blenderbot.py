"""Blenderbot (blenderbot-400M-distill, blenderbot-1B-distill, blenderbot-3B: open-domain chat) over BART's
attention, caches, LM head and generation path, with mBART's layers (each normalizes before its branches) and the
LayerNorm after each stack, and three differences in the embeddings:

- the learned position tables have max_position_embeddings rows, read from row 0 (no BART offset of 2);
- no LayerNorm over the embeddings;
- the decoder counts positions from its cache whatever `position_ids` say, as the reference's.

One token table serves the encoder, the decoder and the LM head (with `final_logits_bias`). The base model asks for
decoder inputs (it does not shift input_ids into them); labels shifted right after <s> (decoder_start_token_id) are
the seq2seq LM's.
"""

from torch import nn

from ..configs import BlenderbotConfig
from .bart import BartForCausalLM, BartForConditionalGeneration, BartModel, BartPreTrainedModel
from .mbart import MBartDecoder, MBartEncoder


class LearnedFromRowZero:
    """A BART stack whose learned positions start at row 0 of a table of max_position_embeddings rows
    (Blenderbot's and Blenderbot-Small's); position ids given to the decoder are ignored, as in the reference."""

    position_offset = 0
    takes_position_ids = False


class BlenderbotEncoder(LearnedFromRowZero, MBartEncoder):
    """mBART's encoder with positions from row 0 and no LayerNorm over the embeddings."""

    def __init__(self, config: BlenderbotConfig):
        super().__init__(config)
        self.layernorm_embedding = nn.Identity()


class BlenderbotDecoder(LearnedFromRowZero, MBartDecoder):
    """mBART's decoder with positions from row 0, counted from the cache, and no LayerNorm over the embeddings."""

    def __init__(self, config: BlenderbotConfig):
        super().__init__(config)
        self.layernorm_embedding = nn.Identity()


class BlenderbotPreTrainedModel(BartPreTrainedModel):
    config_class = BlenderbotConfig
    encoder_class, decoder_class = BlenderbotEncoder, BlenderbotDecoder

    def new_base_model(self, config: BlenderbotConfig) -> "BlenderbotModel":
        return BlenderbotModel(config)


class BlenderbotModel(BlenderbotPreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    shifts_input_ids = False  # as the reference's: it asks for decoder inputs


class BlenderbotForConditionalGeneration(BlenderbotPreTrainedModel, BartForConditionalGeneration):
    """Chat replies: vocabulary logits (plus final_logits_bias) for every decoder position, and their loss against
    `labels` (whose shift right, after <s>, is the decoder's input when none is given)."""


class BlenderbotForCausalLM(BlenderbotPreTrainedModel, BartForCausalLM):
    """Blenderbot's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given). Its
    positions count from the cache: `position_ids` (and a left-padded row's padding) do not move them, as in the
    reference. The loss compares logits[t] with labels[t]: labels are not shifted inside the model."""

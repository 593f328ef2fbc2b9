"""Blenderbot-Small (blenderbot_small-90M: open-domain chat) over BART's layers, attention, caches, LM head and
generation path: the same post-LayerNorm encoder and decoder, with Blenderbot's learned positions from row 0
(counted from the cache in the decoder) and two differences in the decoder's embeddings, as in the reference:

- the decoder does not scale its token embeddings (only the encoder does, with scale_embedding);
- the decoder normalizes its token embeddings (layernorm_embedding) before adding the positions, where the
  encoder normalizes their sum.

One token table serves the encoder, the decoder and the LM head (with `final_logits_bias`). The base model asks for
decoder inputs; labels shifted right after __start__ (decoder_start_token_id) are the seq2seq LM's.
"""

import torch

from ..configs import BlenderbotSmallConfig
from .bart import BartDecoder, BartEncoder, BartForCausalLM, BartForConditionalGeneration, BartModel
from .bart import BartPreTrainedModel
from .blenderbot import LearnedFromRowZero


class BlenderbotSmallEncoder(LearnedFromRowZero, BartEncoder):
    """BART's encoder with positions from row 0."""


class BlenderbotSmallDecoder(LearnedFromRowZero, BartDecoder):
    """BART's decoder with positions from row 0 counted from the cache, unscaled token embeddings, and the
    LayerNorm over the token embeddings alone."""

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__(config)
        self.embed_tokens.embed_scale = 1.0

    def with_positions(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.layernorm_embedding(x) + positions


class BlenderbotSmallPreTrainedModel(BartPreTrainedModel):
    config_class = BlenderbotSmallConfig
    encoder_class, decoder_class = BlenderbotSmallEncoder, BlenderbotSmallDecoder

    def new_base_model(self, config: BlenderbotSmallConfig) -> "BlenderbotSmallModel":
        return BlenderbotSmallModel(config)


class BlenderbotSmallModel(BlenderbotSmallPreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    shifts_input_ids = False  # as the reference's: it asks for decoder inputs

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__(config)
        self.shared.embed_scale = 1.0  # the reference's `shared` is a plain table; its encoder scales what it reads


class BlenderbotSmallForConditionalGeneration(BlenderbotSmallPreTrainedModel, BartForConditionalGeneration):
    """Chat replies: vocabulary logits (plus final_logits_bias) for every decoder position, and their loss against
    `labels` (whose shift right, after __start__, is the decoder's input when none is given)."""


class BlenderbotSmallForCausalLM(BlenderbotSmallPreTrainedModel, BartForCausalLM):
    """Blenderbot-Small's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given).
    Its positions count from the cache, as in the reference. The loss compares logits[t] with labels[t]: labels are
    not shifted inside the model."""

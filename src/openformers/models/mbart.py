"""mBART (multilingual BART: mbart-large-cc25, mbart-large-50, their translation fine-tunes) over BART's attention,
caches, heads and generation path, with two differences in the layers and one in the decoder's default inputs:

- each layer normalizes before its branches: the LayerNorm of the input goes through the self-attention (then the
  cross-attention, then the feed-forward), and the branch's output is added to the input as it was;
- each stack ends with one more LayerNorm (`encoder.layer_norm`, `decoder.layer_norm`) after its last layer;
- the decoder's inputs made from labels (or, without decoder inputs, from input_ids) are the sequence shifted right
  with its last non-padding token, the language code that ends mBART's sequences, wrapped round to the front:
  `X </s> ro_RO` becomes `ro_RO X </s>`. There is no one decoder_start_token_id.

Positions are BART's learned ones (row p + 2 for position p), with the LayerNorm over the embeddings; one token table
serves the encoder, the decoder and the LM head. mBART-50 checkpoints generate from `</s>` with the target language
forced as the first token (`forced_bos_token_id`, which the translation pipeline sets from `tgt_lang`).
"""

import torch
from torch import nn

from ..configs import MBartConfig
from .bart import (
    BartDecoder,
    BartEncoder,
    BartForCausalLM,
    BartForConditionalGeneration,
    BartForQuestionAnswering,
    BartForSequenceClassification,
    BartModel,
    BartPreTrainedModel,
)
from .m2m_100 import M2M100DecoderLayer, M2M100EncoderLayer


def shift_language_code_right(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """mBART's decoder inputs for `input_ids` (B, T) (or labels, -100 read as padding): each row shifted right, its
    last non-padding token (the language code) wrapped round to the front. Rows are right-padded, as the tokenizers
    pad them."""
    if pad_token_id is None:
        raise ValueError("Making mBART's decoder inputs needs config.pad_token_id, which replaces the ignored labels "
                         "(-100) and marks the padding after each row's language code: set it, or pass "
                         "decoder_input_ids.")
    ids = input_ids.masked_fill(input_ids == -100, pad_token_id)
    last = ids.ne(pad_token_id).sum(dim=1, keepdim=True) - 1  # (B, 1): each row's last non-padding position
    shifted = ids.roll(1, dims=1)
    shifted[:, 0] = ids.gather(1, last).squeeze(1)
    return shifted


# M2M100's layers are mBART's: each normalizes before its branches (the encoder's clamping in float16).
MBartEncoderLayer, MBartDecoderLayer = M2M100EncoderLayer, M2M100DecoderLayer


class MBartEncoder(BartEncoder):
    """BART's encoder with pre-LayerNorm layers and a LayerNorm after them (which bart.final_norm applies)."""

    layer_class = MBartEncoderLayer

    def __init__(self, config: MBartConfig):
        super().__init__(config)
        self.layer_norm = nn.LayerNorm(config.d_model)


class MBartDecoder(BartDecoder):
    """BART's decoder with pre-LayerNorm layers and a LayerNorm after them."""

    layer_class = MBartDecoderLayer

    def __init__(self, config: MBartConfig):
        super().__init__(config)
        self.layer_norm = nn.LayerNorm(config.d_model)


class MBartPreTrainedModel(BartPreTrainedModel):
    config_class = MBartConfig
    encoder_class, decoder_class = MBartEncoder, MBartDecoder

    def new_base_model(self, config: MBartConfig) -> "MBartModel":
        return MBartModel(config)


class MBartModel(MBartPreTrainedModel, BartModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    def decoder_inputs_for(self, input_ids: torch.Tensor | None) -> torch.Tensor:
        """Without decoder inputs, the decoder reads input_ids with their language code wrapped to the front."""
        if input_ids is None:
            return super().decoder_inputs_for(input_ids)  # which says what is missing
        return shift_language_code_right(input_ids, self.config.pad_token_id)


class MBartForConditionalGeneration(MBartPreTrainedModel, BartForConditionalGeneration):
    """Translation (and denoising): vocabulary logits (plus final_logits_bias) for every decoder position, and their
    loss against `labels`, whose language code wrapped to the front makes the decoder's inputs when none are given."""

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's inputs for `labels` (DataCollatorForSeq2Seq calls it): the labels shifted right, each row's
        language code in front, -100 read as padding."""
        return shift_language_code_right(labels, self.config.pad_token_id)


class MBartForSequenceClassification(MBartPreTrainedModel, BartForSequenceClassification):
    """One label (or score) per sequence, from the decoder's hidden state at the last <eos> of the input."""


class MBartForQuestionAnswering(MBartPreTrainedModel, BartForQuestionAnswering):
    """Extractive QA: the logits of each decoder position being the start and the end of the answer span."""


class MBartForCausalLM(MBartPreTrainedModel, BartForCausalLM):
    """mBART's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given). The loss
    compares logits[t] with labels[t]: labels are not shifted inside the model."""

"""RoFormer: BERT's encoder (models/bert.py) with rotary positions in place of learned position embeddings.

Every layer turns each (2i, 2i + 1) pair of the queries and keys (and of the values with `rotary_value`) by its
position's angle, read from a sinusoidal table the checkpoint stores as `encoder.embed_positions.weight`
(max_position_embeddings x head size: each pair's sin in the first half, its cos in the second); positions count
from the first token, padding or not, as the reference's do. The embeddings are ELECTRA's layout (models/electra.py):
token and token-type embeddings of `embedding_size`, projected up to hidden_size by `embeddings_project` when
narrower, and no pooler; the masked LM head narrows back to embedding_size before the tied token embeddings.
"""

import torch
from torch import nn

from ..configs import RoFormerConfig
from .bert import (
    BertEncoder,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForTokenClassification,
    BertLMHeadModel,
    BertPreTrainedModel,
)
from .electra import (
    ElectraClassificationHead,
    ElectraForMultipleChoice,
    ElectraForSequenceClassification,
    ElectraModel,
)
from .heads import HeadModel
from .layers import ACTIVATIONS


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim): sin(p / 10000^(2i / dim)) for the pairs i in the first half, their cos in the second,
    computed in float64 as the reference's table."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    angles = torch.arange(positions, dtype=torch.float64)[:, None] / 10000**exponents  # (P, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


class RoFormerSinusoidalPositions(nn.Module):
    """The rotary table, a buffer saved under the reference's name: its checkpoints store it (one without it gets it
    computed), and it is never trained (the reference's frozen parameter, which only its from_pretrained thaws)."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        head_dim = config.hidden_size // config.num_attention_heads
        self.register_buffer("weight", torch.empty(config.max_position_embeddings, head_dim))


class RoFormerEncoder(BertEncoder):
    def __init__(self, config: RoFormerConfig):
        super().__init__(config)
        self.embed_positions = RoFormerSinusoidalPositions(config)

    def rotary_table(self, x: torch.Tensor, cache) -> torch.Tensor:
        """(1, 1, T, hs): each pair's cos then its sin at the T positions after the cached ones, as
        apply_interleaved_rope reads them."""
        past = cache.seq_len if cache is not None else 0
        sin, cos = self.embed_positions.weight[past:past + x.shape[1]].to(x.dtype).chunk(2, dim=-1)
        return torch.cat([cos, sin], dim=-1)[None, None]


class RoFormerPreTrainedModel(BertPreTrainedModel):
    config_class = RoFormerConfig
    base_model_prefix = "roformer"
    initialized_if_missing = (*BertPreTrainedModel.initialized_if_missing, r"(^|\.)encoder\.embed_positions\.weight$")

    def new_base_model(self, config: RoFormerConfig) -> "RoFormerModel":
        return BertPreTrainedModel.new_base_model(self, config)  # BERT's rules for the decoder bias, not ELECTRA's

    def base_model_class(self, config: RoFormerConfig) -> type:
        return RoFormerModel

    def classifier_dropout(self) -> float:
        return self.config.hidden_dropout_prob  # the reference's RoFormer heads ignore classifier_dropout

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RoFormerSinusoidalPositions):
            with torch.no_grad():
                module.weight.copy_(sinusoidal_table(*module.weight.shape))


class RoFormerModel(RoFormerPreTrainedModel, ElectraModel):
    """The encoder: `last_hidden_state` (B, T, C); no pooler. inputs_embeds are (B, T, embedding_size)."""

    learned_positions = False
    encoder_class = RoFormerEncoder

    def __init__(self, config: RoFormerConfig, add_pooling_layer: bool = False):
        ElectraModel.__init__(self, config)  # RoFormer has no pooler, whatever the head asks


# Heads --------------------------------------------------------------------------------------------------------


class RoFormerForMaskedLM(RoFormerPreTrainedModel, BertForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"cls.predictions.decoder.weight": "roformer.embeddings.word_embeddings.weight"}


class RoFormerForCausalLM(RoFormerPreTrainedModel, BertLMHeadModel):
    """RoFormer as a left-to-right language model (built with config.is_decoder=True): next-token logits, loss and
    generate."""

    tied_weights = {"cls.predictions.decoder.weight": "roformer.embeddings.word_embeddings.weight"}

    def keeps_cache(self, use_cache: bool | None, labels: torch.Tensor | None) -> bool:
        return self.config.use_cache if use_cache is None else use_cache  # labels or not, as the reference's


class RoFormerForSequenceClassification(RoFormerPreTrainedModel, ElectraForSequenceClassification):
    """One label (or score) per sequence, from the first token through dense, the config's activation, out_proj."""

    def __init__(self, config: RoFormerConfig):
        HeadModel.__init__(self, config)
        self.classifier = ElectraClassificationHead(config, self.classifier_dropout(), ACTIVATIONS[config.hidden_act])


class RoFormerForTokenClassification(RoFormerPreTrainedModel, BertForTokenClassification):
    """One label per token (named entities)."""


class RoFormerForQuestionAnswering(RoFormerPreTrainedModel, BertForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class RoFormerForMultipleChoice(RoFormerPreTrainedModel, ElectraForMultipleChoice):
    """One score per choice, from each choice's summary vector (its last token by default, padding or not, as the
    reference reads it)."""

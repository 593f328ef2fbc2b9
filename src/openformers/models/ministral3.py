"""Ministral 3 decoders (the text decoder of mistralai/Ministral-3-3B/8B/14B; model_type "ministral3") in plain
torch.nn: Mistral's network whose queries are scaled by position after the rotation.

Everything is Llama's (llama.py; Mistral's one window for every layer, or none), except Llama 4's attention scale: each
query at position p is multiplied by 1 + beta * ln(1 + floor(p / original_max_position_embeddings)), beta being the
rope scaling's llama_4_scaling_beta, so that queries past the pretraining context see sharper scores. The model
computes the factors with the rotary tables and hands each layer the (B or 1, 1, T, 1) column after its mask. The
heads are the reference's: causal LM, sequence and token classification, extractive QA.

The released folders (Ministral-3-*-2512) are Mistral 3's image-and-text wrappers (model_type "mistral3"), which the
reference's AutoModelForCausalLM does not load either; a "ministral3" folder of the text decoder alone loads here. The
CPU decoding step takes the positions before original_max_position_embeddings, where the factor is exactly 1, and
leaves those past it to these layers.

GGUF files of llama.cpp's "mistral3" architecture (its converter's Ministral 3 and Mistral 3 text decoders) load:
Llama's metadata and tensors (the query and key rows permuted, as for "llama" files), YaRN from
`mistral3.rope.scaling.*` with mscale_all_dim as rope.scaling.yarn_log_multiplier, and llama_4_scaling_beta as
attention.temperature_scale; a file without YaRN is a plain Mistral (MistralConfig), as llama.cpp runs it.
"""

import torch

from ..configs import GGUF_CONFIG_READERS, Ministral3Config, MistralConfig
from .llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)
from .layers import decoder_attention


def config_from_gguf(gguf, **overrides) -> MistralConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "mistral3" architecture. The converter writes the
    rope scaling's mscale_all_dim and llama_4_scaling_beta (rope.scaling.yarn_log_multiplier,
    attention.temperature_scale) but not its mscale, which reads as 1, Ministral 3's and llama.cpp's; without a
    temperature scale the queries are not scaled (beta 0), as llama.cpp runs the file."""
    values = gguf_config_values(gguf)
    scaling = values["rope_scaling"]
    if scaling is None or scaling["rope_type"] != "yarn":
        return MistralConfig.from_dict({"architectures": ["MistralForCausalLM"], **values}, **overrides)
    values["rope_scaling"] = {**scaling, "mscale": 1.0,
                              "mscale_all_dim": float(gguf.get("mistral3.rope.scaling.yarn_log_multiplier", 1.0)),
                              "llama_4_scaling_beta": float(gguf.get("mistral3.attention.temperature_scale", 0.0))}
    return Ministral3Config.from_dict({"architectures": ["Ministral3ForCausalLM"], **values}, **overrides)


GGUF_CONFIG_READERS["mistral3"] = config_from_gguf


def query_scale(config: Ministral3Config, position_ids: torch.Tensor) -> torch.Tensor:
    """Each position's factor on the queries (float32, the shape of `position_ids`)."""
    scaling = config.rope_scaling
    blocks = torch.floor(position_ids / scaling["original_max_position_embeddings"])
    return 1 + scaling["llama_4_scaling_beta"] * torch.log(1 + blocks)


class Ministral3Attention(LlamaAttention):
    def forward(self, x, cos, sin, mask, scale, cache, attention_path="sdpa"):
        """Llama's attention with the rotated queries multiplied by `scale` (B or 1, 1, T, 1)."""
        q, k, v = self.rotated(x, cos, sin)
        y, weights = decoder_attention(q * scale.to(q.dtype), k, v, mask, cache, self.layer_idx,
                                       self.dropout if self.training else 0.0, attention_path)
        return self.output(y), weights


class Ministral3DecoderLayer(LlamaDecoderLayer):
    """Llama's layer, its attention taking the queries' scale after the mask."""

    attention_class = Ministral3Attention

    def forward(self, x, cos, sin, mask, scale, cache, attention_path="sdpa"):
        x, weights = self.attention_block(x, cos, sin, mask, scale, cache, attention_path)
        return self.mlp_block(x), weights

    def attention_block(self, x, cos, sin, mask, scale, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, scale, cache, attention_path)
        return x + h, weights


class Ministral3PreTrainedModel(LlamaPreTrainedModel):
    config_class = Ministral3Config

    def new_base_model(self, config: Ministral3Config) -> "Ministral3Model":
        return Ministral3Model(config)


class Ministral3Model(Ministral3PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Ministral3DecoderLayer

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        rotation = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        scale = query_scale(self.config, position_ids)[:, None, :, None]  # (B or 1, 1, T, 1)
        return lambda layer: (*rotation(layer), scale)


class Ministral3ForCausalLM(Ministral3PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Ministral3ForSequenceClassification(Ministral3PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Ministral3ForTokenClassification(Ministral3PreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class Ministral3ForQuestionAnswering(Ministral3PreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    base_model_prefix = "model"

"""GLM-4 decoders in plain torch.nn: model_type "glm" (glm-4-9b-chat-hf, glm-edge) and "glm4" (GLM-4-0414: GLM-4-9B-0414,
GLM-4-32B-0414, GLM-Z1).

Llama's network with GLM's parts: biases on the query, key and value projections (`attention_bias`; o_proj has
none), Phi-3's MLP with one fused `gate_up_proj` (gate rows, then up rows), and rotary embeddings over the first
`partial_rotary_factor` of each head's dimensions (0.5 in every checkpoint), turned in interleaved pairs (2i, 2i + 1)
as GPT-J's are (`layers.apply_interleaved_rope`), the rotary tables as wide as the rotated part. GLM-4-0414 adds an
RMSNorm after each branch, on the attention's output (`post_self_attn_layernorm`) and on the MLP's
(`post_mlp_layernorm`), before its residual add. The heads are the reference's: causal LM, sequence and token
classification.

GGUF files of llama.cpp's "glm4" architecture (GLM-4-0414) load too (`config_from_gguf`, `convert_gguf_state_dict`):
llama.cpp rotates GLM-4's pairs as they are stored (its "normal" rope), so no rows are permuted, and keeps the fused
gate/up tensor as `ffn_up`. The CPU decoding kernel's step takes both model types (kernels/llama.py: its rotation
of interleaved pairs over the tables' width, the fused gate/up, GLM-4-0414's norms after each branch).
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Glm4Config, GlmConfig
from ..weights import rename
from .heads import CausalLM, SequenceClassification, TokenClassification
from .layers import RMSNorm, RotaryEmbedding, apply_interleaved_rope
from .llama import GGUF_RENAMES, LlamaAttention, LlamaDecoderLayer, LlamaModel, LlamaPreTrainedModel, gguf_config_values
from .phi3 import Phi3MLP, apply_partial_rope


def config_from_gguf(gguf, **overrides) -> Glm4Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "glm4" architecture (GLM-4-0414); the q/k/v biases
    are read from whether the file has them."""
    values = gguf_config_values(gguf, partial_rotary=True)
    values.update(architectures=["Glm4ForCausalLM"], attention_bias="blk.0.attn_q.bias" in gguf.tensor_names)
    return Glm4Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["glm4"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, the fused gate/up tensor and the norms after each branch.
GLM4_GGUF_RENAMES = {
    **GGUF_RENAMES,
    "ffn_up": "mlp.gate_up_proj",
    "post_attention_norm": "post_self_attn_layernorm",
    "post_ffw_norm": "post_mlp_layernorm",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Glm4Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, GLM4_GGUF_RENAMES)


def apply_interleaved_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn the interleaved pairs of the first cos.shape[-1] dimensions of each head of x (B, nh, T, hs)."""
    return apply_partial_rope(x, cos, sin, rotate=apply_interleaved_rope)


class GlmAttention(LlamaAttention):
    """Llama's attention with q/k/v biases only, turning interleaved pairs of the first rotary_dim dimensions."""

    rope = staticmethod(apply_interleaved_partial_rope)

    def __init__(self, config: GlmConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=False)  # attention_bias: q/k/v


class GlmDecoderLayer(LlamaDecoderLayer):
    attention_class = GlmAttention
    mlp_class = Phi3MLP


class Glm4DecoderLayer(GlmDecoderLayer):
    """GLM's layer with an RMSNorm on each branch's output too, before the residual add."""

    def __init__(self, config: Glm4Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.post_self_attn_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_mlp_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        return x + self.post_self_attn_layernorm(h), weights

    def mlp_block(self, x):
        return x + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(x)))


class GlmPreTrainedModel(LlamaPreTrainedModel):
    config_class = GlmConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)  # GLM-4-0414's ("glm4"); llama.cpp reads no "glm"

    def new_base_model(self, config: GlmConfig) -> "GlmModel":
        return GlmModel(config)


def partial_rotary_embedding(config: GlmConfig) -> RotaryEmbedding:
    """The rotary tables of a GLM decoder (GLM-4.5's too): as wide as the rotated part of each head."""
    return RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                           min(config.max_position_embeddings, 8192), config.max_position_embeddings)


class GlmModel(GlmPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = GlmDecoderLayer

    def __init__(self, config: GlmConfig):
        super().__init__(config)
        self.rotary_emb = partial_rotary_embedding(config)


class GlmForCausalLM(GlmPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class GlmForSequenceClassification(GlmPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GlmForTokenClassification(GlmPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


# GLM-4-0414 ------------------------------------------------------------------------------------------------------


class Glm4PreTrainedModel(GlmPreTrainedModel):
    config_class = Glm4Config

    def new_base_model(self, config: Glm4Config) -> "Glm4Model":
        return Glm4Model(config)


class Glm4Model(Glm4PreTrainedModel, GlmModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Glm4DecoderLayer


class Glm4ForCausalLM(Glm4PreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Glm4ForSequenceClassification(Glm4PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Glm4ForTokenClassification(Glm4PreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""

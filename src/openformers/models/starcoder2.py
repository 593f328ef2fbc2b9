"""StarCoder2 decoders in plain torch.nn (model_type "starcoder2").

Llama's layer loop, rotary positions, grouped-query attention (with the sliding window Mistral has) and heads, with
StarCoder2's own parts: LayerNorms with biases (`norm_epsilon`) before attention and the MLP and after the last
layer, a plain MLP (`c_fc`, the config's activation, `c_proj`) instead of SwiGLU, a bias on every projection when
`use_bias` is set, and dropout on the embeddings (`embedding_dropout`), the attention weights (`attention_dropout`)
and both residual branches (`residual_dropout`). The heads are the reference's: causal LM, sequence and token
classification.

GGUF files of llama.cpp's "starcoder2" architecture load too (`config_from_gguf`, `convert_gguf_state_dict`); their
rows need no un-permuting (llama.cpp rotates StarCoder2 the way Hugging Face does). The CPU decoding kernel's step
(kernels/llama.py) takes StarCoder2 with GELU's tanh form (its checkpoints' `gelu_pytorch_tanh`), in inference or
without dropout: its LayerNorms' biases, the projections' biases and the MLP without a gate are decode.cpp's too.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, Starcoder2Config
from ..weights import rename
from .layers import ACTIVATIONS
from .llama import (
    GGUF_RENAMES,
    LlamaAttention,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def config_from_gguf(gguf, **overrides) -> Starcoder2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "starcoder2" architecture: Llama's metadata
    reader, with the LayerNorm epsilon (attention.layer_norm_epsilon) and the biases the tensors show."""
    values = gguf_config_values(gguf)
    values["norm_epsilon"] = gguf.get("starcoder2.attention.layer_norm_epsilon", 1e-5)
    values["use_bias"] = "blk.0.attn_q.bias" in gguf.tensor_names
    head_dim = values.pop("head_dim")
    if head_dim != values["hidden_size"] // values["num_attention_heads"]:
        values["extra"] = {"head_dim": head_dim}
    values["sliding_window"] = gguf.get("starcoder2.attention.sliding_window") or None  # llama.cpp writes 0 for none
    del values["rms_norm_eps"]
    return Starcoder2Config.from_dict({"architectures": ["Starcoder2ForCausalLM"], **values}, **overrides)


GGUF_CONFIG_READERS["starcoder2"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, with StarCoder2's MLP (llama.cpp's up and down).
STARCODER2_GGUF_RENAMES = {**GGUF_RENAMES, "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Starcoder2Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, STARCODER2_GGUF_RENAMES)


class Starcoder2MLP(nn.Module):
    def __init__(self, config: Starcoder2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Starcoder2DecoderLayer(nn.Module):
    def __init__(self, config: Starcoder2Config, layer_idx: int):
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)  # every projection biased by use_bias (attention_bias)
        self.mlp = Starcoder2MLP(config)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + self.residual_dropout(h)
        return x + self.residual_dropout(self.mlp(self.post_attention_layernorm(x))), weights


class Starcoder2PreTrainedModel(LlamaPreTrainedModel):
    config_class = Starcoder2Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Starcoder2Config) -> "Starcoder2Model":
        return Starcoder2Model(config)


class Starcoder2Model(Starcoder2PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Starcoder2DecoderLayer

    def __init__(self, config: Starcoder2Config):
        super().__init__(config)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)

    def new_norm(self, config: Starcoder2Config) -> nn.Module:
        return nn.LayerNorm(config.hidden_size, eps=config.norm_epsilon)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return self.embedding_dropout(super().input_embeddings(input_ids, inputs_embeds))


class Starcoder2ForCausalLM(Starcoder2PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Starcoder2ForSequenceClassification(Starcoder2PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Starcoder2ForTokenClassification(Starcoder2PreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""

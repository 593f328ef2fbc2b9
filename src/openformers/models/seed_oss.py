"""ByteDance Seed-OSS decoders (Seed-OSS-36B-Base and -Instruct; model_type "seed_oss") in plain torch.nn.

Llama's network (grouped-query attention, SwiGLU, RMSNorm, rotary positions) with biases on the query, key and value
projections (`attention_bias`, on in the released checkpoints), a bias on the output projection only with
`attention_out_bias` (off in them), and while training dropout on the attention's and the MLP's output before each
residual add (`residual_dropout`), besides the attention weights' (`attention_dropout`). The heads are the
reference's: causal LM, sequence and token classification, extractive QA.

GGUF files of llama.cpp's "seed_oss" architecture keep the rows in the reference's order (no permutation) and name
the norm before the MLP `post_attention_norm`. The CPU decoding kernel's step runs these layers (kernels/llama.py), but
while training, where the dropouts draw.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, SeedOssConfig
from ..weights import rename
from .llama import (
    GGUF_RENAMES,
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


def config_from_gguf(gguf, **overrides) -> SeedOssConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "seed_oss" architecture: Llama's metadata, with the
    biases its first layer's tensors show (llama.cpp reads each where the file has it)."""
    values = gguf_config_values(gguf)
    values.update(
        architectures=["SeedOssForCausalLM"],
        attention_bias="blk.0.attn_q.bias" in gguf.tensor_names,
        attention_out_bias="blk.0.attn_output.bias" in gguf.tensor_names,
        mlp_bias="blk.0.ffn_up.bias" in gguf.tensor_names,
    )
    return SeedOssConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["seed_oss"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, the norm before the MLP named as an attention post-norm.
SEED_OSS_GGUF_RENAMES = {**GGUF_RENAMES, "post_attention_norm": "post_attention_layernorm"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: SeedOssConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already)."""
    return rename(state_dict, SEED_OSS_GGUF_RENAMES)


class SeedOssAttention(LlamaAttention):
    @staticmethod
    def output_bias(config: SeedOssConfig) -> bool:
        return config.attention_out_bias


class SeedOssDecoderLayer(LlamaDecoderLayer):
    """Llama's layer, each branch's output dropped out (residual_dropout, while training) before its residual add."""

    attention_class = SeedOssAttention

    def __init__(self, config: SeedOssConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        return x + self.residual_dropout(h), weights

    def mlp_block(self, x):
        return x + self.residual_dropout(self.mlp(self.post_attention_layernorm(x)))


class SeedOssPreTrainedModel(LlamaPreTrainedModel):
    config_class = SeedOssConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: SeedOssConfig) -> "SeedOssModel":
        return SeedOssModel(config)


class SeedOssModel(SeedOssPreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = SeedOssDecoderLayer


class SeedOssForCausalLM(SeedOssPreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class SeedOssForSequenceClassification(SeedOssPreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class SeedOssForTokenClassification(SeedOssPreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class SeedOssForQuestionAnswering(SeedOssPreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

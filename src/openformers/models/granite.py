"""IBM Granite decoders (Granite 3.0 to 3.3, 2B and 8B; model_type "granite") in plain torch.nn.

Llama's network (grouped-query attention, SwiGLU, RMSNorm, rotary positions, optional biases on the attention and
the MLP, tied or untied embeddings) with four scalars from the config, each applied where the reference applies it:
- `embedding_multiplier` scales the token embeddings (and inputs_embeds given instead of ids);
- `attention_multiplier` is the attention scores' factor, in place of 1 / sqrt(head_dim);
- `residual_multiplier` scales the attention's and the MLP's output before each residual add;
- `logits_scaling` divides the language-model head's logits.
The reference has a base model and a causal LM for Granite, and so does this file. Parameter names are those of
Hugging Face checkpoints. GGUF files of llama.cpp's "granite" architecture are Llama's files (names, metadata, the
query and key rows permuted for llama.cpp's rotation), with the scalars under `granite.embedding_scale`,
`granite.residual_scale`, `granite.attention.scale` and `granite.logit_scale`. The CPU decoding kernel runs
Granite's step as Llama's with the four scalars (kernels/llama.py), but not with attention biases.
"""

import torch

from ..configs import GGUF_CONFIG_READERS, GraniteConfig
from .llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)


def gguf_granite_values(gguf) -> dict:
    """Llama's config values of an opened `weights.GGUFFile` of llama.cpp's "granite" or "granitemoe" architecture,
    with Granite's four scalars from `<arch>.embedding_scale`, `residual_scale`, `attention.scale` and `logit_scale`.

    llama.cpp's converter writes each scalar only when it is not zero, and llama.cpp reads an absent one as no scaling
    (the attention's: 1 / sqrt(head_dim)), except the logits' scale, which it requires. Attention biases are there when
    the file holds their tensors (the first layer's attention output tells).
    """
    arch = gguf.get("general.architecture")
    values = gguf_config_values(gguf)
    logit_scale = gguf.get(f"{arch}.logit_scale")
    if logit_scale is None:
        raise ValueError(f"{gguf.path} lacks the GGUF metadata key {arch}.logit_scale, which a {arch} model needs.")
    values.update(
        embedding_multiplier=gguf.get(f"{arch}.embedding_scale") or 1.0,
        residual_multiplier=gguf.get(f"{arch}.residual_scale") or 1.0,
        attention_multiplier=gguf.get(f"{arch}.attention.scale") or values["head_dim"] ** -0.5,
        logits_scaling=logit_scale,
        attention_bias="blk.0.attn_output.bias" in gguf.tensor_names,
    )
    return values


def config_from_gguf(gguf, **overrides) -> GraniteConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "granite" architecture: an MLP bias when the first
    layer's up projection has one."""
    refuse_unrotated(gguf)
    values = gguf_granite_values(gguf)
    values.update(architectures=["GraniteForCausalLM"], mlp_bias="blk.0.ffn_up.bias" in gguf.tensor_names)
    return GraniteConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["granite"] = config_from_gguf


def refuse_unrotated(gguf) -> None:
    """Refuse a "granite" or "granitemoe" file whose attention does not rotate (`<arch>.rope.scaling.finetuned`
    false, as llama.cpp writes Granite 4's hybrids, whose own "granitehybrid" files granitemoehybrid.py reads)."""
    arch = gguf.get("general.architecture")
    if gguf.get(f"{arch}.rope.scaling.finetuned", True) is False:
        raise ValueError(
            f"{gguf.path} turns rotary positions off ({arch}.rope.scaling.finetuned is false), which llama.cpp does "
            "for Granite's hybrid models; openformers implements the Granite decoder, whose every layer rotates."
        )


class GraniteAttention(LlamaAttention):
    """Llama's attention, its scores scaled by attention_multiplier."""

    def __init__(self, config: GraniteConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.scale = config.attention_multiplier


class GraniteDecoderLayer(LlamaDecoderLayer):
    """Llama's layer, each branch's output scaled by residual_multiplier before it joins the residual stream."""

    attention_class = GraniteAttention

    def __init__(self, config: GraniteConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.residual_multiplier = config.residual_multiplier

    def attention_block(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        return x + h * self.residual_multiplier, weights

    def mlp_block(self, x):
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_multiplier


class GranitePreTrainedModel(LlamaPreTrainedModel):
    config_class = GraniteConfig

    def new_base_model(self, config: GraniteConfig) -> "GraniteModel":
        return GraniteModel(config)


class ScaledEmbeddings:
    """A decoder stack whose tokens' embeddings (or inputs_embeds) are multiplied by config.embedding_multiplier, as
    the reference scales both (Granite's, Granite MoE's)."""

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return super().input_embeddings(input_ids, inputs_embeds) * self.config.embedding_multiplier


class ScaledLogits:
    """A language-model head whose logits are divided by config.logits_scaling (Granite's, Granite MoE's)."""

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden) / self.config.logits_scaling


class GraniteModel(GranitePreTrainedModel, ScaledEmbeddings, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = GraniteDecoderLayer


class GraniteForCausalLM(GranitePreTrainedModel, ScaledLogits, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits divided by logits_scaling, and the loss when labels
    are given."""

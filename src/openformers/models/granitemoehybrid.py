"""IBM Granite 4.0 decoders (granite-4.0-micro, -h-micro, -h-tiny, -h-small; model_type "granitemoehybrid") in plain
torch.nn.

Granite MoE with a shared expert (granitemoe.py: the embeddings times embedding_multiplier, each branch's output times
residual_multiplier before its residual add, the logits divided by logits_scaling, the router, the stacked experts and
the shared SwiGLU MLP `shared_mlp`) whose layers each mix the tokens one of two ways, as `config.layer_types` says:
- "linear_attention" (Mamba-2's mixer, the reference's name for the files' "mamba"): `mamba`, mamba2.Mamba2Mixer
  built from the config's `mamba_*` fields (GraniteMoeHybridConfig.mixer_config), its gated norm's epsilon rms_norm_eps;
- "full_attention" (the files' "attention"): Granite's attention (`self_attn`, scores times attention_multiplier), which
  rotates queries and keys only when position_embedding_type is "rope" (the hybrids' "nope", and the default None, give
  the attention no positions at all; the Mamba layers carry the order).
After either, the post-attention norm and the routed experts plus the shared MLP (`block_sparse_moe`, `shared_mlp`),
or with num_local_experts 0 the shared MLP alone (the reference then has no `block_sparse_moe`).

Decoding keeps a `generation.HybridCache`: the attention layers' keys and values, the Mamba layers' convolution and
scan states; beams, sampling and batches reorder both, and since the states cannot go back, assisted decoding, static
caches and the server are refused, as for Mamba-2. Padding (a 0 in attention_mask) zeroes a Mamba layer's input and
its convolution's output at those positions, as the reference does. The reference has a base model and a causal LM
(router scores and the load-balancing loss with output_router_logits), and so does this file.

GGUF files of llama.cpp's "granitehybrid" architecture load here (those converted from Bamba, without Granite's
logit_scale, as bamba.py's model): Granite MoE's metadata and tensors (granitemoe.py;
the shared MLP's halves as `ffn_gate`, `ffn_up` and `ffn_down` when there are no experts) and Mamba-2's `ssm_*`
tensors and `granitehybrid.ssm.*` metadata (mamba2.py), with `attention.head_count_kv` per layer (0 for a Mamba
layer: which layers attend) and `rope.scaling.finetuned` false where the attention does not rotate. The CPU decoding
kernel refuses the model type.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, GraniteMoeHybridConfig
from ..weights import rename
from . import bamba, granitemoe, mamba2
from .granite import GraniteAttention, ScaledEmbeddings, ScaledLogits, gguf_granite_values
from .granitemoe import GraniteMoeMoE, GraniteMoeSharedDecoderLayer, GraniteMoeSharedMLP, GraniteMoeSharedPreTrainedModel
from .layers import RMSNorm
from .mamba2 import HybridMixerLayers, Mamba2Mixer, MixerOrAttentionLayer
from .mixtral import MixtralModel, MoeCausalLM


def config_from_gguf(gguf, **overrides) -> GraniteMoeHybridConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "granitehybrid" architecture: Granite MoE's values,
    the layers that attend from the per-layer key/value head counts, the mixer's sizes and biases (from the first
    Mamba layer's tensors), rotary positions only where `granitehybrid.rope.scaling.finetuned` is true. A file
    without Granite's logit_scale is a Bamba's, which llama.cpp converts to this architecture (bamba.py reads it)."""
    arch = "granitehybrid"
    if gguf.get(f"{arch}.logit_scale") is None:  # Granite's converter always writes it; Bamba's checkpoints have none
        return bamba.config_from_gguf(gguf, **overrides)
    values = gguf_granite_values(gguf)
    layers = values["num_hidden_layers"]
    kv_heads = mamba2.gguf_attending_layers(gguf, arch, layers, values["num_key_value_heads"])
    mixers = [i for i, n in enumerate(kv_heads) if n == 0]
    first = f"blk.{mixers[0] if mixers else 0}"
    names = GraniteMoeHybridConfig.mixer_fields
    values.update(
        {names[k]: v for k, v in mamba2.gguf_mixer_values(gguf, arch).items()},
        architectures=["GraniteMoeHybridForCausalLM"],
        layer_types=["full_attention" if n else "linear_attention" for n in kv_heads],
        num_key_value_heads=max(kv_heads) or values["num_attention_heads"],
        num_local_experts=gguf.get(f"{arch}.expert_count", 0),
        num_experts_per_tok=gguf.get(f"{arch}.expert_used_count", 2),
        shared_intermediate_size=gguf.get(f"{arch}.expert_shared_feed_forward_length")
        or gguf.get(f"{arch}.feed_forward_length"),
        position_embedding_type="rope" if gguf.get(f"{arch}.rope.scaling.finetuned", True) else "nope",
        mamba_conv_bias=f"{first}.ssm_conv1d.bias" in gguf.tensor_names,
        mamba_proj_bias=f"{first}.ssm_in.bias" in gguf.tensor_names,
        attention_bias=any(f"blk.{i}.attn_output.bias" in gguf.tensor_names for i in range(layers)),
    )
    return GraniteMoeHybridConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["granitehybrid"] = config_from_gguf

# Without routed experts llama.cpp stores the shared MLP as a dense one: back to the shared expert's names.
GGUF_DENSE_AS_SHARED = {"ffn_gate": "ffn_gate_shexp", "ffn_up": "ffn_up_shexp", "ffn_down": "ffn_down_shexp"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: GraniteMoeHybridConfig) -> dict:
    """The Mamba layers' `ssm_*` tensors as Mamba-2's reader converts them (mamba2.py), under this model's names
    (`model.layers.N.mamba.*`); everything else as Granite MoE's reader converts it (granitemoe.py), the shared MLP
    stored as a dense one renamed to its shared-expert names first."""
    mixers = {k: t for k, t in state_dict.items() if ".ssm_" in k}
    others = rename({k: t for k, t in state_dict.items() if k not in mixers}, GGUF_DENSE_AS_SHARED)
    return {**granitemoe.convert_gguf_state_dict(others, config), **mamba2.convert_gguf_mixers(mixers, config, "mamba")}


class GraniteMoeHybridDecoderLayer(MixerOrAttentionLayer, GraniteMoeSharedDecoderLayer):
    """The input norm and a Mamba-2 mixer (`mamba`) or Granite's attention (`self_attn`), the post-attention norm and
    the routed experts plus the shared MLP (or the shared MLP alone), each branch times residual_multiplier. A Mamba
    layer's `mask` is the (B, T) padding mask of its tokens, an attention layer's the attention mask."""

    def __init__(self, config: GraniteMoeHybridConfig, layer_idx: int):
        nn.Module.__init__(self)  # its own modules (the base layers' always attend); their feed_forward is kept
        self.residual_multiplier = config.residual_multiplier
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.mamba = None
        if config.attends(layer_idx):
            self.self_attn = GraniteAttention(config, layer_idx)
            self.self_attn.rotates = config.position_embedding_type == "rope"
        else:
            self.mamba = Mamba2Mixer(config.mixer_config(), layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.block_sparse_moe = GraniteMoeMoE(config) if config.num_local_experts else None
        self.shared_mlp = GraniteMoeSharedMLP(config.hidden_size, config.shared_intermediate_size)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa", router_logits=None):
        h, weights = self.mix_tokens(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h * self.residual_multiplier
        h = self.feed_forward(self.post_attention_layernorm(x), router_logits)
        return x + h * self.residual_multiplier, weights

    def feed_forward(self, x: torch.Tensor, router_logits: list | None) -> torch.Tensor:
        if self.block_sparse_moe is None:
            return self.shared_mlp(x)
        return super().feed_forward(x, router_logits)


class GraniteMoeHybridPreTrainedModel(HybridMixerLayers, GraniteMoeSharedPreTrainedModel):
    config_class = GraniteMoeHybridConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: GraniteMoeHybridConfig) -> "GraniteMoeHybridModel":
        return GraniteMoeHybridModel(config)


class GraniteMoeHybridModel(GraniteMoeHybridPreTrainedModel, ScaledEmbeddings, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router scores. An attention layer rotates its queries and keys only when position_embedding_type is "rope"."""

    layer_class = GraniteMoeHybridDecoderLayer

    @property
    def rotates(self) -> bool:
        return self.config.position_embedding_type == "rope"


class GraniteMoeHybridForCausalLM(GraniteMoeHybridPreTrainedModel, ScaledLogits, MoeCausalLM):
    """The decoder with its language-model head: next-token logits divided by logits_scaling, the loss when labels are
    given, and the load-balancing loss with output_router_logits."""

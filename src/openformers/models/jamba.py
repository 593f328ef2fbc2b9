"""AI21's Jamba (ai21labs/Jamba-v0.1, AI21-Jamba-Mini-1.5; model_type "jamba") in plain torch.nn.

Llama's decoder (token embeddings, pre-norm layers, the final norm `final_layernorm`, the untied head) without rotary
positions, whose layers mix their tokens one of two ways, as `config.attends(i)` says (attn_layer_period and
attn_layer_offset):
- Mamba's selective state-space mixer (`mamba`, mamba.MambaMixer built from the config's `mamba_*` fields,
  JambaConfig.mixer_config) with its time step, B and C RMS-normed by weights of their own (`dt_layernorm`,
  `b_layernorm`, `c_layernorm`) before the scan, given its tokens' padding mask, which zeroes padded inputs as the
  reference does;
- grouped-query attention (`self_attn`, Llama's) with no positions at all: the Mamba layers carry the order.
Each is followed by `pre_ff_layernorm` and the feed-forward part (`feed_forward`): a SwiGLU MLP, or in the layers
`config.is_sparse(i)` names (expert_layer_period and expert_layer_offset) a sparse mixture of experts whose router
(`router`) picks `num_experts_per_tok` experts per token, weighted by their softmax probabilities as chosen (not
renormalized) in the model's dtype (mixtral.MixtureOfExperts). Checkpoints hold each expert's `gate_proj`, `up_proj`
and `down_proj`, as the reference saves them (a file holding its in-memory fused experts loads too).

Decoding keeps a `generation.HybridCache` (mamba2.HybridMixers): the attention layers' keys and values, the Mamba
layers' convolution and scan states; greedy, beam and sampled generation work, and since the states cannot go back,
assisted decoding, static caches and the server are refused. The reference has a base model, a causal LM (router
scores and the load-balancing loss with output_router_logits) and a sequence classifier, and so does this file.

GGUF files of llama.cpp's "jamba" architecture load here: `jamba.attention.head_count_kv` per layer (0 for a Mamba
layer) and the layers holding a router (`ffn_gate_inp`) give the two periods and offsets, Mamba's `ssm.*` metadata
the mixer's sizes; the tensors are Mamba's (`ssm_a` as A = -exp(A_log), the squeezed convolution) with the norms
`ssm_dt_norm`, `ssm_b_norm` and `ssm_c_norm`, the experts stacked per projection (`ffn_gate_exps`...) and the
queries and keys unpermuted (the converter writes them as they are). The CPU decoding kernel refuses the model type.
"""

import torch
from torch import nn

from ..configs import GGUF_CONFIG_READERS, JambaConfig
from ..weights import rename
from . import mamba2
from .base import PreTrainedModel, token_embeddings
from .gpt_neox import gguf_required
from .heads import SequenceClassification
from .layers import RMSNorm
from .llama import LlamaAttention, LlamaMLP
from .mamba import MambaMixer, gguf_state_space_values, mixers_from_gguf, product_then_bias
from .mamba2 import HybridMixerLayers, MixerOrAttentionLayer
from .mixtral import (
    MixtralModel,
    MixtureOfExperts,
    MoeCausalLM,
    Router,
    mix_experts,
    routed,
    split_fused_experts,
    split_gguf_experts,
)
from .qwen3_moe import Qwen3MoeMLP


def config_from_gguf(gguf, **overrides) -> JambaConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "jamba" architecture: Mamba's values (mamba.py) under
    Jamba's names, the attention and the experts' periods and offsets from the layers that attend and those that
    route, the biases the first Mamba layer's tensors show."""
    arch = "jamba"
    values = gguf_state_space_values(gguf, arch)
    layers, hidden = values["num_hidden_layers"], values["hidden_size"]
    inner = gguf_required(gguf, f"{arch}.ssm.inner_size")
    if inner % hidden:
        raise ValueError(f"{gguf.path} has {arch}.ssm.inner_size={inner}, not a multiple of "
                         f"{arch}.embedding_length={hidden}, which Jamba's mamba_expand needs.")
    kv_heads = mamba2.gguf_attending_layers(gguf, arch, layers, gguf_required(gguf, f"{arch}.attention.head_count_kv"))
    names = set(gguf.tensor_names)
    attn_offset, attn_period = _offset_and_period(gguf, [i for i, n in enumerate(kv_heads) if n], layers,
                                                  f"{arch}.attention.head_count_kv")
    expert_offset, expert_period = _offset_and_period(
        gguf, [i for i in range(layers) if f"blk.{i}.ffn_gate_inp.weight" in names], layers, "ffn_gate_inp")
    first = f"blk.{next((i for i, n in enumerate(kv_heads) if not n), 0)}"
    heads = gguf_required(gguf, f"{arch}.attention.head_count")
    values.update(
        architectures=["JambaForCausalLM"],
        mamba_d_state=values.pop("state_size"),
        mamba_d_conv=values.pop("conv_kernel"),
        rms_norm_eps=values.pop("layer_norm_epsilon"),
        mamba_expand=inner // hidden,
        mamba_dt_rank=gguf_required(gguf, f"{arch}.ssm.time_step_rank"),
        mamba_conv_bias=f"{first}.ssm_conv1d.bias" in names,
        mamba_proj_bias=f"{first}.ssm_in.bias" in names,
        intermediate_size=gguf_required(gguf, f"{arch}.feed_forward_length"),
        max_position_embeddings=gguf.get(f"{arch}.context_length", JambaConfig.max_position_embeddings),
        num_attention_heads=heads,
        num_key_value_heads=max(kv_heads) or heads,
        attn_layer_offset=attn_offset, attn_layer_period=attn_period,
        expert_layer_offset=expert_offset, expert_layer_period=expert_period,
        num_experts=gguf.get(f"{arch}.expert_count", 1),
        num_experts_per_tok=gguf.get(f"{arch}.expert_used_count", 1),
    )
    del values["use_conv_bias"], values["use_bias"]
    return JambaConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["jamba"] = config_from_gguf


def _offset_and_period(gguf, indices: list[int], layers: int, source: str) -> tuple[int, int]:
    """The (offset, period) whose layers i % period == offset are `indices` of `layers` (none: a period past the
    last layer), or a ValueError naming the file and `source` when they do not repeat so."""
    if not indices:
        return layers, layers + 1
    offset, period = indices[0], indices[1] - indices[0] if len(indices) > 1 else layers
    if [i for i in range(layers) if i % period == offset] != indices:
        raise ValueError(f"{gguf.path} has layers {indices} by {source}, which do not repeat with one period from "
                         "the first, as Jamba's layer kinds do.")
    return offset, period


# llama.cpp name part -> Hugging Face name part.
GGUF_RENAMES = {
    "token_embd": "model.embed_tokens",
    "blk": "model.layers",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ssm_in": "mamba.in_proj",
    "ssm_conv1d": "mamba.conv1d",
    "ssm_x": "mamba.x_proj",
    "ssm_dt_norm": "mamba.dt_layernorm",
    "ssm_dt": "mamba.dt_proj",
    "ssm_b_norm": "mamba.b_layernorm",
    "ssm_c_norm": "mamba.c_layernorm",
    "ssm_a": "mamba.A_log",
    "ssm_d": "mamba.D",
    "ssm_out": "mamba.out_proj",
    "ffn_norm": "pre_ff_layernorm",
    "ffn_gate_inp": "feed_forward.router",
    "ffn_gate": "feed_forward.gate_proj",
    "ffn_up": "feed_forward.up_proj",
    "ffn_down": "feed_forward.down_proj",
    "output_norm": "model.final_layernorm",
    "output": "lm_head",
}
EXPERT_NAMES = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: JambaConfig) -> dict[str, torch.Tensor]:
    """The experts split out (mixtral.split_gguf_experts), the names renamed, the mixers' A_log and convolution
    back in the checkpoints' form (mamba.mixers_from_gguf)."""
    state_dict = split_gguf_experts(state_dict, "feed_forward", EXPERT_NAMES)
    return mixers_from_gguf(rename(state_dict, GGUF_RENAMES), "mamba")


class JambaMambaMixer(MambaMixer):
    """Mamba's mixer with its time step, B and C RMS-normed by learned weights before the scan."""

    def __init__(self, config: JambaConfig, layer_idx: int):
        super().__init__(config.mixer_config(), layer_idx)
        eps = config.rms_norm_eps
        self.dt_layernorm = RMSNorm(config.mamba_dt_rank, eps)
        self.b_layernorm = RMSNorm(config.mamba_d_state, eps)
        self.c_layernorm = RMSNorm(config.mamba_d_state, eps)

    def normalized(self, dt, b, c):
        return self.dt_layernorm(dt), self.b_layernorm(b), self.c_layernorm(c)

    def widened(self, dt: torch.Tensor) -> torch.Tensor:
        return product_then_bias(self.dt_proj, dt)  # the bias added as the reference adds it, after the product


class JambaSparseMoeBlock(MixtureOfExperts):
    """The router (`router`) and the experts, SwiGLU MLPs of intermediate_size: each token's num_experts_per_tok best
    experts, weighted by their softmax probabilities in the model's dtype, not renormalized."""

    def __init__(self, config: JambaConfig):
        super().__init__(config.num_experts_per_tok, normalize=False, weights_in_model_dtype=True)
        self.router = Router(config.hidden_size, config.num_experts)
        self.experts = nn.ModuleList(Qwen3MoeMLP(config.hidden_size, config.intermediate_size)
                                     for _ in range(config.num_experts))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.router(x)

    def mix(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        return mix_experts(x, weights, chosen, lambda e, rows: self.experts[e](rows), len(self.experts))


class JambaDecoderLayer(MixerOrAttentionLayer):
    """The input norm and a Mamba mixer (`mamba`) or unrotated attention (`self_attn`), then `pre_ff_layernorm` and
    the MLP or the experts (`feed_forward`), each added to the residual stream; a sparse layer's router scores are
    appended to `router_logits` when it is a list."""

    def __init__(self, config: JambaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.mamba = None
        if config.attends(layer_idx):
            self.self_attn = LlamaAttention(config, layer_idx)
            self.self_attn.rotates = False
        else:
            self.mamba = JambaMambaMixer(config, layer_idx)
        self.pre_ff_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = JambaSparseMoeBlock(config) if config.is_sparse(layer_idx) else LlamaMLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa", router_logits=None):
        h, weights = self.mix_tokens(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h
        return x + routed(self.feed_forward(self.pre_ff_layernorm(x)), router_logits), weights


class JambaPreTrainedModel(HybridMixerLayers, PreTrainedModel):
    config_class = JambaConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)
    rotates = False  # no rotary positions: an attention layer takes the mask alone

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return split_fused_experts(state_dict, "feed_forward", ("gate_proj", "up_proj", "down_proj"), "feed_forward")

    def new_base_model(self, config: JambaConfig) -> "JambaModel":
        return JambaModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Router):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)


class JambaModel(JambaPreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state after `final_layernorm`, and with output_router_logits
    every sparse layer's router scores."""

    def __init__(self, config: JambaConfig):
        PreTrainedModel.__init__(self, config)  # its own modules: no rotary tables, the final norm's own name
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(JambaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(x)


class JambaForCausalLM(JambaPreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""


class JambaForSequenceClassification(JambaPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""

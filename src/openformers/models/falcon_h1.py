"""TII's Falcon-H1 (tiiuae/Falcon-H1-0.5B, -1.5B, -1.5B-Deep, -3B, -7B, -34B, Base and Instruct; model_type
"falcon_h1") in plain torch.nn.

Every layer runs grouped-query attention (`self_attn`, Llama's, rotating whole heads) and a Mamba-2 mixer (`mamba`)
side by side on the same normed input and adds both outputs to the residual stream, then a SwiGLU MLP
(`feed_forward`, after `pre_ff_layernorm`); `final_layernorm` ends the stack. The muP multipliers of the config scale,
as the reference does:
- the token embeddings by embedding_multiplier (inputs_embeds as given), the logits by lm_head_multiplier;
- the attention's input by attention_in_multiplier, its keys (before rotation) by key_multiplier, its output by
  attention_out_multiplier;
- the mixer's input by ssm_in_multiplier (after padding is zeroed), its in_proj output part by part (z, x, B, C, dt:
  the five ssm_multipliers, a vector built once, `mup_vector`), its output by ssm_out_multiplier;
- the MLP's gate projection by mlp_multipliers[0] before SiLU, its output by mlp_multipliers[1].
The mixer is mamba2.Mamba2Mixer of width mamba_d_ssm (else mamba_expand * hidden_size) with out_proj biased by
projectors_bias; without mamba_rms_norm it has no norm (y * SiLU(z)), with it a gated RMSNorm over mamba_n_groups
groups that normalizes before the gate when mamba_norm_before_gate.

Decoding keeps a `generation.HybridCache` whose every layer holds both keys and values and a mixer's states; beams,
sampling and batches reorder both, and since the states cannot go back, assisted decoding, static caches and the
server are refused. The reference has a base model and a causal LM, and so does this file. GGUF files of llama.cpp's
"falcon-h1" architecture load, their multipliers folded into the weights by its converter (config_from_gguf). The CPU
decoding kernel refuses the model type.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, FalconH1Config
from ..weights import rename
from . import bamba, llama, mamba2
from .base import PreTrainedModel, embedded, token_embeddings
from .decoder import DecoderModel
from .heads import CausalLM
from .layers import RMSNorm
from .llama import LlamaAttention, LlamaMLP, LlamaModel, gguf_config_values
from .mamba2 import GatedRMSNorm, HybridMixers, Mamba2Mixer, padding_of


def config_from_gguf(gguf, **overrides) -> FalconH1Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "falcon-h1" architecture. Its converter folds every
    multiplier into the weights (the embeddings, in_proj's rows part by part, the attention's and the MLP's
    projections, out_proj, the head), so they are all 1 here; the gated norm is there when the file has ssm_norm, and
    normalizes after the gate, as llama.cpp computes it; the biases are there when the file has them."""
    arch = "falcon-h1"
    names = set(gguf.tensor_names)
    values = gguf_config_values(gguf)
    values.update(
        {FalconH1Config.mixer_fields[k]: v for k, v in mamba2.gguf_mixer_values(gguf, arch, own_width=True).items()},
        architectures=["FalconH1ForCausalLM"],
        mamba_rms_norm="blk.0.ssm_norm.weight" in names,
        mamba_norm_before_gate=False,
        mamba_conv_bias="blk.0.ssm_conv1d.bias" in names,
        mamba_proj_bias="blk.0.ssm_in.bias" in names,
        projectors_bias="blk.0.ssm_out.bias" in names,
        attention_bias="blk.0.attn_output.bias" in names,
        mlp_bias="blk.0.ffn_down.bias" in names,
    )
    return FalconH1Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["falcon-h1"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part (the mixers' ssm_* tensors: mamba2.convert_gguf_mixers).
GGUF_RENAMES = {**llama.GGUF_RENAMES, **bamba.GGUF_RENAMES}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: FalconH1Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (no row permutation: llama.cpp rotates Falcon-H1's halves as
    Hugging Face does), the mixers' through Mamba-2's reader."""
    mixers = {k: t for k, t in state_dict.items() if ".ssm_" in k}
    others = rename({k: t for k, t in state_dict.items() if k not in mixers}, GGUF_RENAMES)
    return {**others, **mamba2.convert_gguf_mixers(mixers, config, "mamba")}


class FalconH1Attention(LlamaAttention):
    """Llama's attention with its keys times key_multiplier."""

    def __init__(self, config: FalconH1Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.key_multiplier = config.key_multiplier

    def project(self, x):
        q, k, v = super().project(x)
        return q, k * self.key_multiplier, v


class FalconH1MLP(LlamaMLP):
    """SwiGLU with the gate projection times mlp_multipliers[0] before SiLU and the output times mlp_multipliers[1]."""

    def __init__(self, config: FalconH1Config):
        super().__init__(config)
        self.gate_multiplier, self.down_multiplier = config.mlp_multipliers

    def forward(self, x):
        return self.down_proj(self.up_proj(x) * F.silu(self.gate_proj(x) * self.gate_multiplier)) * self.down_multiplier


class FalconH1GatedRMSNorm(GatedRMSNorm):
    """Mamba-2's gated norm over groups, or with `norm_before_gate` the groups normalized and scaled first, then times
    SiLU(gate) (in float32, cast back to y's dtype)."""

    def __init__(self, dim: int, group_size: int, eps: float, norm_before_gate: bool):
        super().__init__(dim, group_size, eps)
        self.norm_before_gate = norm_before_gate

    def forward(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        if not self.norm_before_gate:
            return super().forward(y, gate)
        normed = F.rms_norm(y.float().unflatten(-1, (-1, self.group_size)), (self.group_size,), eps=self.eps)
        return (self.weight.float() * normed.flatten(-2) * F.silu(gate.float())).to(y.dtype)


class FalconH1Mixer(Mamba2Mixer):
    """Mamba-2's mixer with Falcon-H1's multipliers on its input and on each part of in_proj's output, out_proj's bias
    from projectors_bias, and its norm as mamba_rms_norm and mamba_norm_before_gate say (none: y * SiLU(z))."""

    def __init__(self, config: FalconH1Config, layer_idx: int):
        super().__init__(config.mixer_config(), layer_idx)
        I = config.mamba_intermediate_size
        self.out_proj = nn.Linear(I, config.hidden_size, bias=config.projectors_bias)
        self.norm = None
        if config.mamba_rms_norm:
            self.norm = FalconH1GatedRMSNorm(I, I // config.mamba_n_groups, config.rms_norm_eps,
                                             config.mamba_norm_before_gate)
        self.ssm_in_multiplier = config.ssm_in_multiplier
        self.part_multipliers = tuple(config.ssm_multipliers)  # z, x, B, C, dt
        self.register_buffer("mup_vector", torch.empty(0), persistent=False)
        self.reset_tables()

    def reset_tables(self, device: torch.device | None = None) -> None:
        """in_proj's output multipliers, one per channel (the reference's mup_vector); rebuilt after a meta build."""
        I, conv_dim, H = self.sizes
        GN = (conv_dim - I) // 2
        self.mup_vector = torch.cat([torch.full((n,), float(m), device=device)
                                     for n, m in zip((I, I, GN, GN, H), self.part_multipliers)])

    def projected(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = super().projected(x * self.ssm_in_multiplier, mask)  # masking first, then scaling: the same
        return x * self.mup_vector.to(x.dtype)

    def gated(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return y * F.silu(z) if self.norm is None else self.norm(y, z)


class FalconH1DecoderLayer(nn.Module):
    """The input norm, then the attention (input times attention_in_multiplier, output times
    attention_out_multiplier) and the mixer (output times ssm_out_multiplier) on it, both added to the residual
    stream; then `pre_ff_layernorm` and the MLP. `mask` is the pair (the attention's mask, the (B, T) padding mask of
    the new tokens, which the mixer zeroes)."""

    def __init__(self, config: FalconH1Config, layer_idx: int):
        super().__init__()
        self.feed_forward = FalconH1MLP(config)
        self.mamba = FalconH1Mixer(config, layer_idx)
        self.self_attn = FalconH1Attention(config, layer_idx)
        self.attention_in_multiplier = config.attention_in_multiplier
        self.attention_out_multiplier = config.attention_out_multiplier
        self.ssm_out_multiplier = config.ssm_out_multiplier
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.pre_ff_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        attention_mask, padding = mask
        h = self.input_layernorm(x)
        mixed = self.mamba(h, padding, cache) * self.ssm_out_multiplier
        attended, weights = self.self_attn(h * self.attention_in_multiplier, cos, sin, attention_mask, cache,
                                           attention_path)
        x = x + (mixed + attended * self.attention_out_multiplier)
        return x + self.feed_forward(self.pre_ff_layernorm(x)), weights


class FalconH1PreTrainedModel(HybridMixers, PreTrainedModel):
    config_class = FalconH1Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: FalconH1Config) -> "FalconH1Model":
        return FalconH1Model(config)


class FalconH1Model(FalconH1PreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state after `final_layernorm`."""

    new_rotary = LlamaModel.new_rotary

    def __init__(self, config: FalconH1Config):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(FalconH1DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = self.new_rotary(config)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        """The tokens' embeddings times embedding_multiplier; inputs_embeds as given (the reference scales only the
        ones it looks up)."""
        if inputs_embeds is not None:
            return inputs_embeds
        return embedded(self.embed_tokens, input_ids) * self.config.embedding_multiplier

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        """Every layer's rotary (cos, sin) and the pair (the attention mask, the new tokens' padding mask)."""
        attending = super().layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        padding = padding_of(x, attention_mask)
        return lambda layer: (*attending(layer)[:2], (mask, padding))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(x)


class FalconH1ForCausalLM(FalconH1PreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits times lm_head_multiplier, and the loss when labels
    are given."""

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden) * self.config.lm_head_multiplier

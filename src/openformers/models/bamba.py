"""IBM's Bamba (ibm-ai-platform/Bamba-9B; model_type "bamba") in plain torch.nn.

Llama's decoder (token embeddings, pre-norm layers, SwiGLU MLP, the final norm `final_layernorm`, the untied head)
whose layers mix their tokens one of two ways, as `config.attn_layer_indices` says:
- a Mamba-2 mixer (`mamba`, mamba2.Mamba2Mixer built from the config's `mamba_*` fields, BambaConfig.mixer_config;
  its gated norm's epsilon rms_norm_eps), given its tokens' padding mask, which zeroes padded inputs as the reference
  does;
- grouped-query attention (`self_attn`, Llama's) rotating the first `partial_rotary_factor` of each head (half, as
  the reference sets it) by tables as wide as the rotated part (phi3.apply_partial_rope).
Each is followed by `pre_ff_layernorm` and the MLP (`feed_forward`). With labels and a positive
`z_loss_coefficient`, the loss adds that times the mean squared log-sum-exp of the logits, as the reference's does.

Decoding keeps a `generation.HybridCache` (mamba2.HybridMixers): the attention layers' keys and values, the Mamba
layers' convolution and scan states; greedy, beam and sampled generation work, and since the states cannot go back,
assisted decoding, static caches and the server are refused. The reference has a base model and a causal LM, and so
does this file. llama.cpp converts Bamba checkpoints to its "granitehybrid" architecture, without Granite's scalars;
such files load here (config_from_gguf, which granitemoehybrid.config_from_gguf hands them to). The CPU decoding
kernel refuses the model type.
"""

import torch
from torch import nn

from ..configs import BambaConfig
from ..weights import rename
from . import llama, mamba2
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .heads import CausalLM
from .layers import RMSNorm, RotaryEmbedding
from .llama import LlamaAttention, LlamaMLP, gguf_config_values
from .mamba2 import HybridMixerLayers, Mamba2Mixer, MixerOrAttentionLayer
from .phi3 import apply_partial_rope


def config_from_gguf(gguf, **overrides) -> BambaConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "granitehybrid" architecture converted from a Bamba
    checkpoint (without Granite's scalars; granitemoehybrid.config_from_gguf sends it here): Llama's values, the
    rotated share of each head from `rope.dimension_count`, the layers that attend from the per-layer key/value head
    counts, the mixer's sizes (Mamba-2's `ssm.*`) and the biases the first layers' tensors show."""
    arch = "granitehybrid"
    values = gguf_config_values(gguf, partial_rotary=True)
    heads, hidden = values["num_attention_heads"], values["hidden_size"]
    if values.pop("head_dim") * heads != hidden:
        raise ValueError(f"{gguf.path} has {arch}.attention.key_length heads that do not fill "
                         f"{arch}.embedding_length={hidden} in {heads} heads, as Bamba's do.")
    layers = values["num_hidden_layers"]
    kv_heads = mamba2.gguf_attending_layers(gguf, arch, layers, values["num_key_value_heads"])
    attending = [i for i, n in enumerate(kv_heads) if n]
    first = f"blk.{next((i for i in range(layers) if i not in attending), 0)}"
    names = set(gguf.tensor_names)
    values.update(
        {BambaConfig.mixer_fields[k]: v for k, v in mamba2.gguf_mixer_values(gguf, arch).items()},
        architectures=["BambaForCausalLM"],
        attn_layer_indices=attending,
        num_key_value_heads=max(kv_heads) or heads,
        mamba_conv_bias=f"{first}.ssm_conv1d.bias" in names,
        mamba_proj_bias=f"{first}.ssm_in.bias" in names,
        attention_bias=any(f"blk.{i}.attn_output.bias" in names for i in attending),
        mlp_bias="blk.0.ffn_down.bias" in names,
    )
    return BambaConfig.from_dict(values, **overrides)


# llama.cpp name part -> Hugging Face name part, where Bamba's (and Falcon-H1's) names differ from Llama's.
GGUF_RENAMES = {
    "ffn_norm": "pre_ff_layernorm",
    "ffn_gate": "feed_forward.gate_proj",
    "ffn_up": "feed_forward.up_proj",
    "ffn_down": "feed_forward.down_proj",
    "output_norm": "model.final_layernorm",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: BambaConfig) -> dict[str, torch.Tensor]:
    """The mixers' `ssm_*` tensors through Mamba-2's reader (mamba2.convert_gguf_mixers); the others renamed, with
    Llama's query and key rows put back in their order (llama.cpp's converter permutes whole heads)."""
    mixers = {k: t for k, t in state_dict.items() if ".ssm_" in k}
    others = rename({k: t for k, t in state_dict.items() if k not in mixers}, GGUF_RENAMES)
    return {**llama.convert_gguf_state_dict(others, config), **mamba2.convert_gguf_mixers(mixers, config, "mamba")}


class BambaAttention(LlamaAttention):
    """Llama's attention turning the first rotary_dim dimensions of each head."""

    rope = staticmethod(apply_partial_rope)


class BambaDecoderLayer(MixerOrAttentionLayer):
    """The input norm and a Mamba-2 mixer (`mamba`) or the attention (`self_attn`), then `pre_ff_layernorm` and the
    SwiGLU MLP (`feed_forward`), each added to the residual stream."""

    def __init__(self, config: BambaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.mamba = None
        if config.attends(layer_idx):
            self.self_attn = BambaAttention(config, layer_idx)
        else:
            self.mamba = Mamba2Mixer(config.mixer_config(), layer_idx)
        self.pre_ff_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = LlamaMLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h, weights = self.mix_tokens(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h
        return x + self.feed_forward(self.pre_ff_layernorm(x)), weights


class BambaPreTrainedModel(HybridMixerLayers, PreTrainedModel):
    config_class = BambaConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: BambaConfig) -> "BambaModel":
        return BambaModel(config)


class BambaModel(BambaPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state after `final_layernorm`."""

    def __init__(self, config: BambaConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(BambaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(x)


class BambaForCausalLM(BambaPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss (with the z-loss when
    z_loss_coefficient is positive) when labels are given."""

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = super().lm_loss(logits, labels)
        if self.config.z_loss_coefficient > 0:
            z_loss = logits.logsumexp(dim=-1).to(loss.dtype).pow(2).mean()
            loss = loss + self.config.z_loss_coefficient * z_loss
        return loss

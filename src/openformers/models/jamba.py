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
scores and the load-balancing loss with output_router_logits) and a sequence classifier, and so does this file. The
CPU decoding kernel refuses the model type.
"""

import torch
from torch import nn

from ..configs import JambaConfig
from .base import PreTrainedModel, token_embeddings
from .heads import SequenceClassification
from .layers import RMSNorm
from .llama import LlamaAttention, LlamaMLP
from .mamba import MambaMixer, product_then_bias
from .mamba2 import HybridMixerLayers, MixerOrAttentionLayer
from .mixtral import MixtralModel, MixtureOfExperts, MoeCausalLM, Router, mix_experts, routed, split_fused_experts
from .qwen3_moe import Qwen3MoeMLP


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

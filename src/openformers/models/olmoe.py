"""OLMoE decoders in plain torch.nn (model_type "olmoe": OLMoE-1B-7B-0924 and its instruct versions): Llama's
pre-norm layers with OLMo 2's query and key norms and a sparse mixture of experts in place of the MLP.

The attention is olmo2.py's (an RMSNorm over the queries of all heads at once and one over the keys, right after the
projections), its norms Llama's RMSNorm (which casts before scaling by the weight, where OLMo 2's scales first), and
olmo.py's clamp of q, k and v to +-clip_qkv when that is set. The feed-forward part of every layer, `mlp`, is
mixtral.py's SparseMoeBlock over `num_experts` SwiGLU experts of `intermediate_size`
(`mlp.experts.{e}.gate_proj/up_proj/down_proj`, router `mlp.gate`), the chosen experts' weights renormalized only
with `norm_topk_prob` and rounded to the model's dtype before weighting, as Qwen3-MoE's. The router scores, the
load-balancing loss and the causal LM are Mixtral's; the reference has no other head for OLMoE.

GGUF files of llama.cpp's "olmoe" architecture load too: Llama's metadata, the expert count, each layer's experts
stacked into one tensor per projection, the rows in the reference's order (the converter does not permute them), as
qwen3_moe.py reads its files. llama.cpp never renormalizes the chosen weights of this architecture, so such a file
reads as norm_topk_prob=False. The CPU decoding kernel's step (kernels/llama.py) runs these layers: its mixture, OLMo
2's q/k norms over all heads and the clamp (StepWeights.set_clip_qkv).
"""

from torch import nn

from ..configs import GGUF_CONFIG_READERS, OlmoeConfig
from .layers import RMSNorm, apply_rope
from .mixtral import MixtralDecoderLayer, MixtralModel, MoeCausalLM, SparseMoeBlock
from .olmo import ClippedQKV
from .olmo2 import Olmo2Attention
from .qwen3_moe import Qwen3MoeMLP, Qwen3MoePreTrainedModel, convert_gguf_state_dict, mixture_config_values


def config_from_gguf(gguf, **overrides) -> OlmoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "olmoe" architecture."""
    values = {name: value for name, value in mixture_config_values(gguf, 8).items()
              if name not in ("moe_intermediate_size", "mlp_only_layers")}  # every layer sparse, experts of ffn size
    values.update(architectures=["OlmoeForCausalLM"], norm_topk_prob=False,
                  clip_qkv=gguf.get("olmoe.attention.clamp_kqv"))
    return OlmoeConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["olmoe"] = config_from_gguf


class OlmoeAttention(ClippedQKV, Olmo2Attention):
    norm_class = RMSNorm
    rope = staticmethod(apply_rope)  # OLMoE's reference rotates in the model's dtype, unlike OLMo 2's


class OlmoeDecoderLayer(MixtralDecoderLayer):
    attention_class = OlmoeAttention
    feed_forward_name = "mlp"

    def new_feed_forward(self, config: OlmoeConfig, layer_idx: int) -> nn.Module:
        experts = [Qwen3MoeMLP(config.hidden_size, config.intermediate_size) for _ in range(config.num_experts)]
        return SparseMoeBlock(config.hidden_size, experts, config.num_experts_per_tok,
                              normalize=config.norm_topk_prob, weights_in_model_dtype=True)


class OlmoePreTrainedModel(Qwen3MoePreTrainedModel):
    """Qwen3-MoE's checkpoint layout (experts named under `mlp`, or fused as the reference holds them in memory) and
    GGUF names."""

    config_class = OlmoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: OlmoeConfig) -> "OlmoeModel":
        return OlmoeModel(config)


class OlmoeModel(OlmoePreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every layer's router
    scores."""

    layer_class = OlmoeDecoderLayer


class OlmoeForCausalLM(OlmoePreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""

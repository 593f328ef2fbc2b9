"""GLM-4.5 and GLM-4.6 decoders (GLM-4.5, GLM-4.5-Air, GLM-4.6; model_type "glm4_moe") in plain torch.nn: GLM-4's
attention with DeepSeek-V3's mixture of routed and shared experts.

The attention is glm.py's (biases on the query, key and value projections with `attention_bias`, none on o_proj;
rotary embeddings over the first `partial_rotary_factor` of each head, the tables as wide as that part) with two
differences: the rotated part turns in halves as Llama's does (`phi3.apply_partial_rope`), not in interleaved pairs,
and with `use_qk_norm` each head's queries and keys go through an RMSNorm over its dimensions (one weight shared by
the heads, `self_attn.q_norm` and `k_norm`) before the rotation. The first `first_k_dense_replace` layers have a
SwiGLU MLP (`mlp.gate_proj/up_proj/down_proj`); the others deepseek_v3.py's DeepseekV3MoE, which this file reuses
as it is: the router `mlp.gate` with its `e_score_correction_bias`, sigmoid scores, the choice among the experts of
each token's `topk_group` best groups by the scores plus the biases, the weights the scores alone, renormalized with
norm_topk_prob and times routed_scaling_factor, plus `mlp.shared_experts`. With output_router_logits the causal LM
returns each sparse layer's router logits and, as the reference, no load-balancing loss. Heads: the base model and
the causal LM, the reference's two.

Checkpoints' multi-token prediction layers (`model.layers.{num_hidden_layers}...`, num_nextn_predict_layers of them:
GLM-4.5's layer 92, GLM-4.5-Air's 46) are dropped when read, as deepseek_v3.py drops them. GGUF files of llama.cpp's
"glm4moe" architecture load too (`config_from_gguf`, `convert_gguf_state_dict`): llama.cpp rotates these heads in
halves, so no rows are permuted; its block count includes the prediction layers (`glm4moe.nextn_predict_layers`),
whose tensors are dropped likewise; each layer's experts come stacked into one tensor per projection and the
correction biases as `exp_probs_b`. The CPU decoding kernel's step runs these layers (kernels/llama.py: the
grouped sigmoid routing is StepWeights.set_expert_groups).
"""

import torch

from ..configs import GGUF_CONFIG_READERS, Glm4MoeConfig
from ..weights import rename
from .deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3ForCausalLM, DeepseekV3PreTrainedModel
from .glm import GlmAttention, partial_rotary_embedding
from .layers import RMSNorm
from .llama import GGUF_RENAMES, gguf_config_values
from .mixtral import MixtralModel, split_gguf_experts
from .phi3 import apply_partial_rope


def config_from_gguf(gguf, **overrides) -> Glm4MoeConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "glm4moe" architecture: GLM-4's decoder values (the
    rotated share of each head from rope.dimension_count, the q/k/v biases and q/k norms from whether the file has
    them), the mixture's (`sigmoid_routed_experts`), and the layers less the `nextn_predict_layers` its block count
    includes."""
    values = gguf_config_values(gguf, partial_rotary=True)
    predict_layers = gguf.get("glm4moe.nextn_predict_layers", 0)
    tensors = gguf.tensor_names
    values.update(
        sigmoid_routed_experts(gguf, "glm4moe", values),
        architectures=["Glm4MoeForCausalLM"],
        num_hidden_layers=values["num_hidden_layers"] - predict_layers,
        num_nextn_predict_layers=predict_layers,
        attention_bias="blk.0.attn_q.bias" in tensors,
        use_qk_norm="blk.0.attn_q_norm.weight" in tensors,
    )
    return Glm4MoeConfig.from_dict(values, **overrides)


def sigmoid_routed_experts(gguf, arch: str, values: dict) -> dict:
    """The config values of DeepSeek-V3's mixture (DenseThenRoutedExperts) from an opened `weights.GGUFFile` of
    llama.cpp's architecture `arch` (GLM-4.5's, dots.llm1's): `<arch>.expert_*` and `leading_dense_block_count`, over
    Llama's `values` (the experts' size defaults to the MLP's). A file whose gating function is not the sigmoid is
    refused."""
    experts = gguf.get(f"{arch}.expert_count")
    if not experts:
        raise ValueError(f"{gguf.path} lacks {arch}.expert_count, the number of routed experts a {arch} model needs.")
    gating = gguf.get(f"{arch}.expert_gating_func", 2)
    if gating != 2:
        raise ValueError(f"{gguf.path} scores its experts with gating function {gating} ({arch}.expert_gating_func); "
                         f"the router scores them by a sigmoid (2), the only one openformers reads for {arch}.")
    return dict(
        n_routed_experts=experts,
        num_experts_per_tok=gguf.get(f"{arch}.expert_used_count", 8),
        moe_intermediate_size=gguf.get(f"{arch}.expert_feed_forward_length", values["intermediate_size"]),
        n_shared_experts=gguf.get(f"{arch}.expert_shared_count", 1),
        first_k_dense_replace=gguf.get(f"{arch}.leading_dense_block_count", 0),
        routed_scaling_factor=gguf.get(f"{arch}.expert_weights_scale", 1.0),
        norm_topk_prob=bool(gguf.get(f"{arch}.expert_weights_norm", False)),
        n_group=gguf.get(f"{arch}.expert_group_count", 1),
        topk_group=gguf.get(f"{arch}.expert_group_used_count", 1),
    )


GGUF_CONFIG_READERS["glm4moe"] = config_from_gguf

# llama.cpp name part -> Hugging Face name part: Llama's, the norm before the MLP, the q/k norms, the router and the
# shared experts (the stacked experts are split by convert_gguf_state_dict).
GLM4_MOE_GGUF_RENAMES = {
    **GGUF_RENAMES,
    "post_attention_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj",
    "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Glm4MoeConfig) -> dict[str, torch.Tensor]:
    """The experts split out, the correction biases (`blk.N.exp_probs_b.bias`) named as the router's buffer, then the
    renames (the rows are in the reference's order already)."""
    state_dict = split_gguf_experts(state_dict, "mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    state_dict = {name.replace(".exp_probs_b.bias", ".ffn_gate_inp.e_score_correction_bias"): t
                  for name, t in state_dict.items()}
    return rename(state_dict, GLM4_MOE_GGUF_RENAMES)


class Glm4MoeAttention(GlmAttention):
    """GLM's attention (q/k/v biases only) turning the halves of the first rotary_dim dimensions of each head, its
    queries and keys RMS-normed head by head before that with `use_qk_norm`."""

    rope = staticmethod(apply_partial_rope)

    def __init__(self, config: Glm4MoeConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.use_qk_norm = config.use_qk_norm
        if self.use_qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def project(self, x):
        q, k, v = super().project(x)  # (B, nh, T, hs), (B, n_kv, T, hs) twice
        if self.use_qk_norm:  # over each head's hs values
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v


class Glm4MoeDecoderLayer(DeepseekV3DecoderLayer):
    attention_class = Glm4MoeAttention


class Glm4MoePreTrainedModel(DeepseekV3PreTrainedModel):  # its checkpoints' experts and MTP layers are DeepSeek's
    config_class = Glm4MoeConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Glm4MoeConfig) -> "Glm4MoeModel":
        return Glm4MoeModel(config)


class Glm4MoeModel(Glm4MoePreTrainedModel, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = Glm4MoeDecoderLayer

    def __init__(self, config: Glm4MoeConfig):
        super().__init__(config)
        self.rotary_emb = partial_rotary_embedding(config)


class Glm4MoeForCausalLM(Glm4MoePreTrainedModel, DeepseekV3ForCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and with
    output_router_logits the router logits (no load-balancing loss, as in the reference)."""

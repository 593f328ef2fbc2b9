"""dots.llm1 decoders (rednote-hilab/dots.llm1.base and dots.llm1.inst; model_type "dots1") in plain torch.nn:
Qwen3's attention with DeepSeek-V3's mixture of routed and shared experts.

The attention is qwen3.py's (each head's queries and keys RMS-normed before the rotation, `self_attn.q_norm` and
`k_norm`). The first `first_k_dense_replace` layers have a SwiGLU MLP; the others deepseek_v3.py's DeepseekV3MoE as it
is (the router `mlp.gate` with its `e_score_correction_bias`, sigmoid scores, the choice by group, the weights
renormalized with norm_topk_prob and times routed_scaling_factor, plus `mlp.shared_experts`), as GLM-4.5
(glm4_moe.py) takes it. The layers `layer_types` marks "sliding_attention" see only the last `sliding_window`
positions (decoder.SlidingLayersDecoder; the released configs mark none). With output_router_logits the causal LM
returns each sparse layer's router logits and, as the reference, no load-balancing loss. Heads: the base model and
the causal LM, the reference's two.

GGUF files of llama.cpp's "dots1" architecture load too: GLM-4.5's metadata for the mixture and its tensor names
(`ffn_norm` for the norm before the MLP, Llama's), the rows in the reference's order. llama.cpp runs every layer of
such a file over the whole past, so its layers are read as full ones. The CPU decoding kernel's step runs these
layers (kernels/llama.py: GLM-4.5's routing, StepWeights.set_expert_groups).
"""

from ..configs import GGUF_CONFIG_READERS, Dots1Config
from .decoder import SlidingLayersDecoder
from .deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3ForCausalLM, DeepseekV3PreTrainedModel
from .glm4_moe import convert_gguf_state_dict, sigmoid_routed_experts
from .llama import gguf_config_values
from .mixtral import MixtralModel
from .qwen3 import Qwen3Attention


def config_from_gguf(gguf, **overrides) -> Dots1Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "dots1" architecture: Llama's decoder values, the
    mixture's (glm4_moe.sigmoid_routed_experts), attention biases where the first layer's tensors have them, no
    window."""
    values = gguf_config_values(gguf)
    values.update(sigmoid_routed_experts(gguf, "dots1", values), architectures=["Dots1ForCausalLM"],
                  attention_bias="blk.0.attn_q.bias" in gguf.tensor_names, sliding_window=None)
    return Dots1Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["dots1"] = config_from_gguf


class Dots1DecoderLayer(DeepseekV3DecoderLayer):
    attention_class = Qwen3Attention

    def __init__(self, config: Dots1Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"  # which mask layer_inputs gives it


class Dots1PreTrainedModel(DeepseekV3PreTrainedModel):  # its checkpoints' experts and router are DeepSeek-V3's
    config_class = Dots1Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)  # GLM-4.5's names (and Llama's ffn_norm)

    def new_base_model(self, config: Dots1Config) -> "Dots1Model":
        return Dots1Model(config)


class Dots1Model(Dots1PreTrainedModel, SlidingLayersDecoder, MixtralModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router logits."""

    layer_class = Dots1DecoderLayer

    def __init__(self, config: Dots1Config):
        super().__init__(config)
        self.sliding_window = None  # the full layers' mask; the sliding layers' comes from layer_inputs
        self.local_rotary_emb = self.rotary_emb  # one rotation for both kinds of layer


class Dots1ForCausalLM(Dots1PreTrainedModel, DeepseekV3ForCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and with
    output_router_logits the router logits (no load-balancing loss, as in the reference)."""

"""Google's VaultGemma (google/vaultgemma-1b; model_type "vaultgemma") in plain torch.nn: Gemma 2's network without
the norms after attention and after the MLP.

Each layer norms its input and its MLP's input only (`input_layernorm`, `pre_feedforward_layernorm`, both of 1 + w),
as the first Gemma's layer does; everything else is Gemma 2's (gemma.py): embeddings scaled by sqrt(hidden_size),
attention scores scaled by query_pre_attn_scalar and soft-capped, layers alternating between a sliding window and
full attention, the final logits soft-capped. The reference's heads are the base model and the causal LM. The CPU
decoding kernel's step runs these layers as the first Gemma's with Gemma 2's windows and soft-cap
(kernels/llama.py). llama.cpp has no VaultGemma architecture.
"""

from ..configs import VaultGemmaConfig
from .gemma import Gemma2DecoderLayer, Gemma2ForCausalLM, Gemma2Model, Gemma2PreTrainedModel


class VaultGemmaDecoderLayer(Gemma2DecoderLayer):
    """Gemma 2's layer without its norms after attention and after the MLP."""

    def __init__(self, config: VaultGemmaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        del self.post_attention_layernorm, self.post_feedforward_layernorm

    def forward(self, x, cos, sin, mask, cache, attention_path):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h
        return x + self.mlp(self.pre_feedforward_layernorm(x)), weights


class VaultGemmaPreTrainedModel(Gemma2PreTrainedModel):
    config_class = VaultGemmaConfig

    def new_base_model(self, config: VaultGemmaConfig) -> "VaultGemmaModel":
        return VaultGemmaModel(config)


class VaultGemmaModel(VaultGemmaPreTrainedModel, Gemma2Model):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = VaultGemmaDecoderLayer


class VaultGemmaForCausalLM(VaultGemmaPreTrainedModel, Gemma2ForCausalLM):
    """The decoder with its language-model head: next-token logits (soft-capped), and the loss when labels are given."""

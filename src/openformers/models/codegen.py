"""CodeGen decoders in plain torch.nn (model_type "codegen": Salesforce/codegen-350M-mono ... codegen-16B, mono,
multi and nl).

GPT-J's decoder (gptj.py): one LayerNorm per block read by attention and the MLP (`fc_in`, `fc_out`, with biases),
their outputs added to the residual together, rotary embeddings over each head's first `rotary_dim` dimensions in the
interleaved form, and a language-model head with a bias, untied by default. Where GPT-J has q_proj, k_proj and
v_proj, CodeGen has one fused `qkv_proj` (no bias) whose output is in `config.shards` (4) blocks, the model-parallel
shards it was trained on: each block holds its share of the queries, then of the values, then of the keys (C / 4
each), and the shares joined in order are the heads. The rotation is computed in float32 by float32 tables and
rounded once, as the reference's (GPT-J's rounds its tables to the model's dtype first).

GGUF: llama.cpp has no CodeGen architecture, so there is no file to read. The CPU decoding kernel runs CodeGen's
step (kernels/llama.py: GPT-J's, the fused projection read in place block by block) where each head lies in one block,
and leaves heads that straddle two blocks to the layers.
"""

import torch
from torch import nn

from ..configs import CodeGenConfig
from .base import PreTrainedModel
from .gptj import GPTJAttention, GPTJBlock, GPTJModel
from .heads import CausalLM
from .layers import apply_interleaved_rope_in_float32


class CodeGenAttention(GPTJAttention):
    rotate = staticmethod(apply_interleaved_rope_in_float32)  # by the float32 tables of CodeGenModel

    def add_projections(self, C: int) -> None:
        self.qkv_proj = nn.Linear(C, 3 * C, bias=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        shards = CodeGenConfig.shards
        q, v, k = self.qkv_proj(x).view(B, T, shards, 3, C // shards).unbind(3)  # each (B, T, shards, C / shards)
        return tuple(t.reshape(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))


class CodeGenBlock(GPTJBlock):
    attention_class = CodeGenAttention


class CodeGenPreTrainedModel(PreTrainedModel):
    config_class = CodeGenConfig
    base_model_prefix = "transformer"
    # The causal-mask buffers the released files store ("h.0.attn.causal_mask").
    ignored_checkpoint_keys = PreTrainedModel.ignored_checkpoint_keys + (r"(^|\.)attn\.causal_mask$",)

    def new_base_model(self, config: CodeGenConfig) -> "CodeGenModel":
        return CodeGenModel(config)


class CodeGenModel(CodeGenPreTrainedModel, GPTJModel):
    """The decoder stack without a head: returns the last hidden state."""

    block_class = CodeGenBlock
    float32_rotation_tables = True


class CodeGenForCausalLM(CodeGenPreTrainedModel, CausalLM):
    """The decoder with its language-model head (with a bias): next-token logits, and the loss when labels are
    given."""

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}
    lm_head_bias = True

"""GPT-J decoders in plain torch.nn (model_type "gptj": EleutherAI's GPT-J 6B, GPT4All-J, Dolly v1).

Each block normalizes its input once; attention and the GELU MLP both read that one LayerNorm's output, and their
outputs are added to the residual together. The query, key, value and output projections have no biases; the MLP
(`fc_in`, `fc_out`) and the language-model head have them, and the head is the model's own (`tie_word_embeddings` is
off in the released checkpoints). Rotary embeddings turn each head's first `rotary_dim` dimensions (all of them when
it is None) in mesh-transformer-jax's interleaved form, dimension 2i paired with 2i + 1
(`layers.apply_interleaved_rope`), where Llama pairs i with i + hs/2; the tables are the shared RotaryEmbedding's
(base 10000, no scaling). The eager attention path multiplies queries and keys in float32, as the reference's does.
token_type_ids, as in the reference, add their rows of the token table to the embeddings (before the dropout).

GGUF: llama.cpp names a "gptj" architecture in its constants, but its converter writes no GPT-J files and the library
lists no tensors for it beyond the token embedding (its GPT-J is not implemented), so there is no file to read. The
CPU decoding kernel runs GPT-J's decoding step (kernels/llama.py: parallel branches from the one LayerNorm, interleaved
partial rotary, the MLP's and the head's biases).
"""

import torch
from torch import nn

from ..configs import GPTJConfig
from .base import PreTrainedModel
from .decoder import GPT2NamedDecoder
from .heads import CausalLM, QuestionAnswering, SequenceClassification
from .layers import ACTIVATIONS, RotaryEmbedding, apply_interleaved_rope, decoder_attention
from .phi3 import apply_partial_rope


class GPTJAttention(nn.Module):
    rotate = staticmethod(apply_interleaved_rope)  # by the tables in the model's dtype, as the reference's

    def __init__(self, config: GPTJConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.dropout = config.attn_pdrop
        self.add_projections(config.n_embd)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def add_projections(self, C: int) -> None:
        """The query, key and value projections, without biases."""
        self.q_proj = nn.Linear(C, C, bias=False)
        self.k_proj = nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, C, bias=False)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the queries, keys and values, each (B, nh, T, hs)."""
        B, T, _ = x.shape
        return tuple(proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                     for proj in (self.q_proj, self.k_proj, self.v_proj))

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        q, k, v = self.project(x)  # (B, nh, T, hs)
        q = apply_partial_rope(q, cos, sin, rotate=self.rotate)
        k = apply_partial_rope(k, cos, sin, rotate=self.rotate)
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, self.dropout if self.training else 0.0,
                                       attention_path, float32_scores=True)
        return self.resid_dropout(self.out_proj(y)), weights


class GPTJMLP(nn.Module):
    def __init__(self, config: GPTJConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, config.intermediate_size)
        self.fc_out = nn.Linear(config.intermediate_size, config.n_embd)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.fc_out(self.act(self.fc_in(x))))


class GPTJBlock(nn.Module):
    attention_class = GPTJAttention  # CodeGen's block is GPT-J's with its fused projection

    def __init__(self, config: GPTJConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = self.attention_class(config, layer_idx)
        self.mlp = GPTJMLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        h = self.ln_1(x)  # one norm for both branches
        y, weights = self.attn(h, cos, sin, mask, cache, attention_path)
        return y + self.mlp(h) + x, weights  # summed in the reference's order


class GPTJPreTrainedModel(PreTrainedModel):
    config_class = GPTJConfig
    base_model_prefix = "transformer"
    # The causal-mask buffers older checkpoints store ("h.0.attn.bias", "h.0.attn.masked_bias"; GPT-J 6B's files).
    ignored_checkpoint_keys = PreTrainedModel.ignored_checkpoint_keys + (r"(^|\.)attn\.(masked_)?bias$",)

    def new_base_model(self, config: GPTJConfig) -> "GPTJModel":
        return GPTJModel(config)


class GPTJModel(GPTJPreTrainedModel, GPT2NamedDecoder):
    """The decoder stack without a head: returns the last hidden state."""

    block_class = GPTJBlock

    def __init__(self, config: GPTJConfig):
        super().__init__(config)
        # An explicit weight skips nn.Embedding's random init (see LlamaModel).
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(self.block_class(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.rotary_emb = RotaryEmbedding(config.rotated_dim, 10000.0, None, min(config.n_positions, 8192))

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        return self.drop(x)  # no learned positions (the layers rotate); the dropout after the token types' rows


class GPTJForCausalLM(GPTJPreTrainedModel, CausalLM):
    """The decoder with its language-model head (with a bias): next-token logits, and the loss when labels are
    given."""

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}
    lm_head_bias = True


class GPTJForSequenceClassification(GPTJPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class GPTJForQuestionAnswering(GPTJPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

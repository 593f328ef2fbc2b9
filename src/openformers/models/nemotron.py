"""Nemotron decoders in plain torch.nn (model_type "nemotron": Minitron 4B and 8B, Nemotron-Mini-4B-Instruct,
Mistral-NeMo-Minitron-8B).

Llama's layout (a norm before attention and one before the MLP, grouped-query attention) with NeMo's parts:
LayerNorms with biases whose weights are stored minus one (`NemotronLayerNorm1P` scales by 1 + weight), an MLP without
a gate (`up_proj`, a squared ReLU, `down_proj`), rotary embeddings over the first `partial_rotary_factor` of each head
(phi3.apply_partial_rope, as StableLM's), optional biases on the four attention projections (`attention_bias`) and on
the MLP (`mlp_bias`), and a head of its own. The heads are the reference's: causal LM, sequence and token
classification, and extractive QA (whose checkpoints name the decoder `transformer`, as Llama's QA head does).

GGUF files of llama.cpp's "nemotron" architecture load too: its converter adds one to every norm weight (llama.cpp
runs a plain LayerNorm), which `convert_gguf_state_dict` takes back, and writes the rows as they are (llama.cpp rotates
Nemotron the way Hugging Face does); the rotated width is `nemotron.rope.dimension_count`. The CPU decoding kernel's
step runs these layers: the norms as LayerNorms of 1 + w with biases, the MLP without a gate over its activation and the
rotation over the rotary tables' width.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, NemotronConfig
from ..weights import rename
from .base import PreTrainedModel, token_embeddings
from .decoder import DecoderModel
from .gpt_neox import gguf_layer_norm_decoder_values, gguf_required
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import ACTIVATIONS, RotaryEmbedding
from .llama import GGUF_RENAMES, LlamaAttention, LlamaDecoderLayer, gguf_rope_scaling
from .phi3 import apply_partial_rope


def config_from_gguf(gguf, **overrides) -> NemotronConfig:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "nemotron" architecture; the biases are read from
    which tensors the file has."""
    values = gguf_layer_norm_decoder_values(gguf, "nemotron", "norm_eps")
    heads = values["num_attention_heads"]
    head_dim = gguf.get("nemotron.attention.key_length") or values["hidden_size"] // heads
    tensors = gguf.tensor_names
    values.update(
        architectures=["NemotronForCausalLM"],
        intermediate_size=gguf_required(gguf, "nemotron.feed_forward_length"),
        num_key_value_heads=gguf.get("nemotron.attention.head_count_kv", heads),
        head_dim=head_dim,
        partial_rotary_factor=gguf.get("nemotron.rope.dimension_count", head_dim) / head_dim,
        rope_scaling=gguf_rope_scaling(gguf, "nemotron", head_dim),
        attention_bias="blk.0.attn_q.bias" in tensors,
        mlp_bias="blk.0.ffn_up.bias" in tensors,
    )
    return NemotronConfig.from_dict(values, **overrides)


GGUF_CONFIG_READERS["nemotron"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: NemotronConfig) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names and store the norm weights minus one again (the converter adds
    one to run them as plain LayerNorms); the rows are in the reference's order."""
    return {name: tensor - 1 if name.endswith("norm.weight") else tensor
            for name, tensor in rename(state_dict, GGUF_RENAMES).items()}


class NemotronLayerNorm1P(nn.LayerNorm):
    """A LayerNorm with a bias whose weight is stored as its offset from one: it scales by 1 + weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight + 1, self.bias, self.eps)


class NemotronMLP(nn.Module):
    """up_proj, the activation (a squared ReLU in every checkpoint), down_proj: no gate."""

    def __init__(self, config: NemotronConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.up_proj(x)))


class NemotronAttention(LlamaAttention):
    """Llama's attention turning the first rotary_dim dimensions of each head."""

    rope = staticmethod(apply_partial_rope)


class NemotronDecoderLayer(LlamaDecoderLayer):
    """Llama's layer (its two residual halves) with Nemotron's norms, attention and MLP."""

    def __init__(self, config: NemotronConfig, layer_idx: int):
        nn.Module.__init__(self)
        self.input_layernorm = NemotronLayerNorm1P(config.hidden_size, eps=config.norm_eps)
        self.self_attn = NemotronAttention(config, layer_idx)
        self.post_attention_layernorm = NemotronLayerNorm1P(config.hidden_size, eps=config.norm_eps)
        self.mlp = NemotronMLP(config)


class NemotronPreTrainedModel(PreTrainedModel):
    config_class = NemotronConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: NemotronConfig) -> "NemotronModel":
        return NemotronModel(config)


class NemotronModel(NemotronPreTrainedModel, DecoderModel):
    """The decoder stack without a head: returns the last hidden state."""

    def __init__(self, config: NemotronConfig):
        super().__init__(config)
        self.embed_tokens = token_embeddings(config)
        self.layers = nn.ModuleList(NemotronDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = NemotronLayerNorm1P(config.hidden_size, eps=config.norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                          min(config.max_position_embeddings, 8192), config.max_position_embeddings)


class NemotronForCausalLM(NemotronPreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class NemotronForSequenceClassification(NemotronPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class NemotronForTokenClassification(NemotronPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


class NemotronForQuestionAnswering(NemotronPreTrainedModel, QuestionAnswering):
    """Start and end logits of an answer span over the tokens."""

    base_model_prefix = "transformer"  # the reference's name in Nemotron QA checkpoints

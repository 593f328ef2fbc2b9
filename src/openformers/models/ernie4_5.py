"""Baidu's ERNIE 4.5 dense decoders (ERNIE-4.5-0.3B-PT and -Base-PT; model_type "ernie4_5") in plain torch.nn.

Llama's network with two differences: the queries and keys turn in interleaved pairs (2i, 2i + 1), GPT-J's form
(`layers.apply_interleaved_rope`), in float32 whatever the model's dtype, with float32 rotary tables (the
reference's Ernie4_5RotaryEmbedding keeps them so), then cast back; and one switch, `use_bias`, puts a bias on
every projection of the attention (q, k, v and o) and of the MLP (not on the language-model head). The head is tied
to the embeddings by default. The reference's heads: the base model and the causal LM.

GGUF files of llama.cpp's "ernie4_5" architecture load too (`config_from_gguf`, `convert_gguf_state_dict`): Llama's
metadata and tensor names, with the query and key rows as the checkpoint stores them, since llama.cpp's rotation of
this architecture turns adjacent pairs as the reference does. The CPU decoding kernel's step takes these layers
(kernels/llama.py: its rotation of interleaved pairs, in float32 as it always rotates). ERNIE 4.5's mixtures of
experts are ernie4_5_moe.py's.
"""

import torch

from ..configs import GGUF_CONFIG_READERS, Ernie4_5Config
from ..weights import rename
from .heads import CausalLM
from .layers import apply_interleaved_rope
from .llama import GGUF_RENAMES, LlamaAttention, LlamaDecoderLayer, LlamaModel, LlamaPreTrainedModel, gguf_config_values


def config_from_gguf(gguf, **overrides) -> Ernie4_5Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "ernie4_5" architecture."""
    values = {**gguf_config_values(gguf), "architectures": ["Ernie4_5ForCausalLM"]}
    return Ernie4_5Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["ernie4_5"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Ernie4_5Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the query and key rows are in the reference's order)."""
    return rename(state_dict, GGUF_RENAMES)


def apply_float32_interleaved_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """ERNIE 4.5's rotation: x's interleaved pairs turned in float32 (with float32 tables), cast back to x's dtype."""
    return apply_interleaved_rope(x.float(), cos, sin).to(x.dtype)


class Ernie4_5Attention(LlamaAttention):
    """Llama's attention (biases on q, k, v and o with use_bias) turning interleaved pairs in float32."""

    rope = staticmethod(apply_float32_interleaved_rope)


class Ernie4_5DecoderLayer(LlamaDecoderLayer):
    attention_class = Ernie4_5Attention


class Ernie4_5PreTrainedModel(LlamaPreTrainedModel):
    config_class = Ernie4_5Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Ernie4_5Config) -> "Ernie4_5Model":
        return Ernie4_5Model(config)


class Ernie4_5Model(Ernie4_5PreTrainedModel, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Ernie4_5DecoderLayer
    float32_rotation_tables = True


class Ernie4_5ForCausalLM(Ernie4_5PreTrainedModel, CausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""

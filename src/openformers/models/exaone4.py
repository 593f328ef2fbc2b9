"""LG AI Research's EXAONE 4.0 decoders (EXAONE-4.0-1.2B, EXAONE-4.0-32B; model_type "exaone4") in plain torch.nn.

Pieces of three families put together:
- Qwen3's attention (qwen3.py): an RMSNorm over each head's queries and keys before the rotation;
- OLMo 2's layer (olmo2.py): each branch normed after it runs, before its residual add, the layer's input not normed,
  here with Llama's RMSNorm;
- Cohere 2's layer kinds (decoder.SlidingLayersDecoder): with a `sliding_window`, the layers `layer_types` marks
  "sliding_attention" see only the last sliding_window positions and rotate their queries and keys, the
  "full_attention" ones see every position with no positional encoding at all; without a window every layer sees
  everything and rotates (`Exaone4Config.rotates`).
No projection has a bias. The heads are the reference's: causal LM, sequence and token classification, extractive
QA.

GGUF files of llama.cpp's "exaone4" architecture keep the rows in the reference's order and OLMo 2's tensor names
(post_attention_norm, post_ffw_norm, attn_q_norm, attn_k_norm), with the window and the per-layer pattern in
`exaone4.attention.sliding_window` and `exaone4.attention.sliding_window_pattern`, and llama3 rope scaling as a
rope_freqs tensor. The CPU decoding kernel's step runs these layers (kernels/llama.py).
"""

import torch

from ..configs import GGUF_CONFIG_READERS, Exaone4Config
from ..weights import rename
from .decoder import SlidingLayersDecoder
from .layers import RMSNorm
from .llama import (
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    gguf_config_values,
)
from .olmo2 import OLMO2_GGUF_RENAMES, Olmo2DecoderLayer
from .qwen3 import Qwen3Attention


def config_from_gguf(gguf, **overrides) -> Exaone4Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "exaone4" architecture: Llama's metadata, and the
    window with the layers that use it (the pattern's flags, or without them every fourth layer full, the reference's
    default); without a window every layer attends to everything."""
    values = gguf_config_values(gguf)
    window = gguf.get("exaone4.attention.sliding_window") or None
    pattern = gguf.get("exaone4.attention.sliding_window_pattern")
    layers = values["num_hidden_layers"]
    if window is None:
        sliding = [False] * layers
    elif pattern is None:
        sliding = [(i + 1) % 4 != 0 for i in range(layers)]
    else:
        sliding = [bool(pattern[i]) for i in range(layers)]
    values.update(
        architectures=["Exaone4ForCausalLM"],
        sliding_window=window,
        layer_types=["sliding_attention" if windowed else "full_attention" for windowed in sliding],
    )
    return Exaone4Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["exaone4"] = config_from_gguf


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: Exaone4Config) -> dict[str, torch.Tensor]:
    """Rename llama.cpp tensors to Hugging Face names (the rows are in the reference's order already); rope_freqs
    (llama3 scaling) is read into the config's rope_scaling."""
    return rename({name: t for name, t in state_dict.items() if name != "rope_freqs.weight"}, OLMO2_GGUF_RENAMES)


class Exaone4Attention(Qwen3Attention):
    """Qwen3's attention (per-head q/k norms), rotating only where the config says (`Exaone4Config.rotates`)."""

    def __init__(self, config: Exaone4Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.rotates = config.rotates(layer_idx)


class Exaone4DecoderLayer(Olmo2DecoderLayer):
    attention_class = Exaone4Attention
    norm_class = RMSNorm

    def __init__(self, config: Exaone4Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"  # which mask layer_inputs gives it


class Exaone4PreTrainedModel(LlamaPreTrainedModel):
    config_class = Exaone4Config
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    def new_base_model(self, config: Exaone4Config) -> "Exaone4Model":
        return Exaone4Model(config)


class Exaone4Model(Exaone4PreTrainedModel, SlidingLayersDecoder, LlamaModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Exaone4DecoderLayer

    def __init__(self, config: Exaone4Config):
        super().__init__(config)
        self.sliding_window = None  # the full layers' mask; the sliding layers' comes from layer_inputs
        self.local_rotary_emb = self.rotary_emb  # one rotation: the full layers, which rotate, use the same table


class Exaone4ForCausalLM(Exaone4PreTrainedModel, LlamaForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Exaone4ForSequenceClassification(Exaone4PreTrainedModel, LlamaForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class Exaone4ForTokenClassification(Exaone4PreTrainedModel, LlamaForTokenClassification):
    """One label per token (named entities, parts of speech)."""


class Exaone4ForQuestionAnswering(Exaone4PreTrainedModel, LlamaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

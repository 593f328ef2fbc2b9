"""OLMo 3 decoders in plain torch.nn (model_type "olmo3": Olmo-3-7B, Olmo-3-1025-7B, Olmo-3-32B, their Instruct and
Think versions): OLMo 2's layers, most of them attending through a sliding window.

The layers are olmo2.py's (norms after each branch, q/k norms over all heads at once). Those `layer_types` marks
"sliding_attention" (by default three in four) see only the last `sliding_window` positions and rotate by an
unscaled rotation of base `sliding_rope_theta`; the others see every position and rotate by rope_theta and
rope_scaling (decoder.SlidingLayersDecoder, Gemma 2's and 3's way). The heads are OLMo 2's (causal LM and sequence
classification).

llama.cpp has no architecture of its own for OLMo 3: its converter writes these models as "olmo2" files with
`olmo2.attention.sliding_window` and a per-layer `sliding_window_pattern`, which is how this file's reader tells
them from OLMo 2's (olmo2.py reads the others). On the CPU, kernels/llama.py runs the decoding step of these layers
as it runs OLMo 2's, with Gemma's per-layer windows and the sliding layers' own rotary tables.
"""

from ..configs import GGUF_CONFIG_READERS, Olmo3Config
from . import olmo2
from .decoder import SlidingLayersDecoder
from .layers import RotaryEmbedding
from .llama import gguf_config_values


def config_from_gguf(gguf, **overrides):
    """The config of an opened `weights.GGUFFile` of llama.cpp's "olmo2" architecture: OLMo 3 when the file has a
    sliding window, else OLMo 2 (olmo2.py)."""
    window = gguf.get("olmo2.attention.sliding_window")
    if not window:
        return olmo2.config_from_gguf(gguf, **overrides)
    values = gguf_config_values(gguf)
    layers = values["num_hidden_layers"]
    pattern = gguf.get("olmo2.attention.sliding_window_pattern")
    sliding = [bool(pattern[i]) for i in range(layers)] if pattern is not None else [(i + 1) % 4 != 0
                                                                                        for i in range(layers)]
    values.update(
        architectures=["Olmo3ForCausalLM"],
        sliding_window=window,
        layer_types=["sliding_attention" if windowed else "full_attention" for windowed in sliding],
        sliding_rope_theta=gguf.get("olmo2.rope.freq_base_swa", values["rope_theta"]),
    )
    return Olmo3Config.from_dict(values, **overrides)


# OLMo 3's files say "olmo2": the reader of that architecture tells the two apart (olmo2.py is imported first).
GGUF_CONFIG_READERS["olmo2"] = config_from_gguf


class Olmo3DecoderLayer(olmo2.Olmo2DecoderLayer):
    def __init__(self, config: Olmo3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"


class Olmo3PreTrainedModel(olmo2.Olmo2PreTrainedModel):
    config_class = Olmo3Config

    def new_base_model(self, config: Olmo3Config) -> "Olmo3Model":
        return Olmo3Model(config)


class Olmo3Model(Olmo3PreTrainedModel, SlidingLayersDecoder, olmo2.Olmo2Model):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Olmo3DecoderLayer

    def __init__(self, config: Olmo3Config):
        super().__init__(config)
        self.sliding_window = None  # the full layers' mask; the sliding layers' comes from layer_inputs
        self.local_rotary_emb = RotaryEmbedding(
            config.head_dim, config.sliding_rope_theta, None, min(config.max_position_embeddings, 8192)
        )


class Olmo3ForCausalLM(Olmo3PreTrainedModel, olmo2.Olmo2ForCausalLM):
    """The decoder with its language-model head: next-token logits, and the loss when labels are given."""


class Olmo3ForSequenceClassification(Olmo3PreTrainedModel, olmo2.Olmo2ForSequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


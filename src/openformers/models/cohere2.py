"""Cohere 2 decoders in plain torch.nn (model_type "cohere2": Command R7B, Command A, Aya Expanse's successors).

Cohere's layers (cohere.py: one bias-free LayerNorm read by attention and the SwiGLU MLP in parallel, interleaved
rotary pairs in float32, the tied head's logits multiplied by `logit_scale`), without the per-head q/k norms, in runs
set by `config.layer_types`: a "sliding_attention" layer sees the last `sliding_window` positions and rotates its
queries and keys, a "full_attention" layer (every fourth by default, `sliding_window_pattern`) sees every position and
has no positional encoding at all. The masks and tables per kind of layer are decoder.SlidingLayersDecoder's
(`layer_inputs`), as Gemma 2's and OLMo 3's. The reference has a base model and a causal LM for Cohere 2, and so does
this file.

GGUF files of llama.cpp's "cohere2" architecture keep Llama's tensor names with the rows as they are (llama.cpp
rotates consecutive pairs), drop the attention biases (all zero in the released checkpoints), and state the logit
scale, the LayerNorm epsilon and the window in `cohere2.*`; llama.cpp attends to everything in every fourth layer. The
CPU decoding kernel runs Cohere 2's step (kernels/llama.py: Cohere's, the sliding layers windowed, the full ones
unrotated).
"""

from ..configs import GGUF_CONFIG_READERS, Cohere2Config
from .cohere import (
    CohereAttention,
    CohereDecoderLayer,
    CohereForCausalLM,
    CohereModel,
    CoherePreTrainedModel,
    gguf_cohere_values,
)
from .decoder import SlidingLayersDecoder
from .gpt_neox import gguf_required


def config_from_gguf(gguf, **overrides) -> Cohere2Config:
    """The config of an opened `weights.GGUFFile` of llama.cpp's "cohere2" architecture: Cohere's values, the window,
    and which layers use it (`cohere2.attention.sliding_window_pattern` where a file has it, else llama.cpp's one full
    layer in four)."""
    values = gguf_cohere_values(gguf, "cohere2")
    pattern = gguf.get("cohere2.attention.sliding_window_pattern", 4)
    layers = values["num_hidden_layers"]
    sliding = ([bool(pattern[i]) for i in range(layers)] if isinstance(pattern, (list, tuple))
               else [(i + 1) % pattern != 0 for i in range(layers)])
    values.update(
        architectures=["Cohere2ForCausalLM"],
        sliding_window=gguf_required(gguf, "cohere2.attention.sliding_window"),
        layer_types=["sliding_attention" if windowed else "full_attention" for windowed in sliding],
    )
    return Cohere2Config.from_dict(values, **overrides)


GGUF_CONFIG_READERS["cohere2"] = config_from_gguf


class Cohere2Attention(CohereAttention):
    """Cohere's attention (no q/k norms in Cohere 2), rotating only in the sliding layers."""

    def __init__(self, config: Cohere2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.rotates = config.layer_types[layer_idx] == "sliding_attention"  # full attention: no positions at all


class Cohere2DecoderLayer(CohereDecoderLayer):
    attention_class = Cohere2Attention

    def __init__(self, config: Cohere2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.is_sliding = config.layer_types[layer_idx] == "sliding_attention"  # which mask layer_inputs gives it


class Cohere2PreTrainedModel(CoherePreTrainedModel):
    config_class = Cohere2Config

    def new_base_model(self, config: Cohere2Config) -> "Cohere2Model":
        return Cohere2Model(config)


class Cohere2Model(Cohere2PreTrainedModel, CohereModel):
    """The decoder stack without a head: returns the last hidden state."""

    layer_class = Cohere2DecoderLayer
    # The sliding layers' mask hides keys beyond the window, the others see the plain causal mask.
    layer_inputs, rotations = SlidingLayersDecoder.layer_inputs, SlidingLayersDecoder.rotations

    def __init__(self, config: Cohere2Config):
        super().__init__(config)
        self.local_rotary_emb = self.rotary_emb  # the sliding layers' table (the only one used: the others rotate none)


class Cohere2ForCausalLM(Cohere2PreTrainedModel, CohereForCausalLM):
    """The decoder with its language-model head (tied to the embeddings by default): next-token logits multiplied by
    logit_scale, and the loss when labels are given."""

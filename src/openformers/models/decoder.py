"""The forward pass every decoder-only base model shares: embeddings, then the layers, then a final norm.

`DecoderModel.forward` refuses labels, checks its inputs, resolves the output options and the cache, embeds the
tokens, builds their positions and the mask (over the family's `sliding_window`), gives each layer its rotary
cos/sin and mask, runs the layers (with gradient checkpointing while training, on the attention path the options
ask for), applies the final norm and returns a `BaseModelOutputWithPast`. A family builds its modules under its
checkpoints' names and overrides only the hooks where it differs:

- `input_embeddings`: which table embeds the tokens (`embed_tokens` here), and any dropout after it;
- `embeds_token_types`: whether token_type_ids add their rows of the token table to the embeddings (GPT-J's and
  GPT-BigCode's, as the reference's; every other decoder ignores them, as the reference's do);
- `add_position_embeddings`: a table of learned positions added to them (OPT's; rotary families leave x as it is),
  with `positions_from_mask` set where a caller's padding mask, not the cache, counts the positions (OPT's: a
  left-padded row's first real token is at position 0 without position_ids);
- `layer_inputs`: the (cos, sin, mask) each layer takes (Falcon's ALiBi; `SlidingLayersDecoder`'s per-layer rope and
  masks, Gemma 2's and OLMo 3's), the tables in `rotary_dtype` where a family rotates in float32 (ERNIE 4.5's);
- `final_norm`: the norm after the last layer (`norm` here);
- `layers`: the stack, when the checkpoints name it otherwise (Falcon's `h`);
- `cache_for_call`: the cache a forward call uses (a HybridCache for LFM2's convolution and attention layers).

`GPT2NamedDecoder` gives those hooks under GPT-2's names (`wte`, `h`, `ln_f`, token types embedded: GPT-J,
GPT-BigCode, GPT-Neo); `SlidingLayersDecoder` gives each layer its kind's mask and rotation.

Every layer is called as `layer(x, cos, sin, mask, cache, attention_path, *extra)` and returns its output and its
attention weights (None on the sdpa path); `extra` is what a family's forward hands `decode` for its layers
(Mixtral's list that collects router scores).
"""

from collections.abc import Callable

import torch
from torch import nn

from .base import PreTrainedModel, check_inputs, embedded, forward_cache, recorded
from .layers import positions_and_mask, run_layers
from .outputs import BaseModelOutputWithPast


class DecoderModel(PreTrainedModel):
    """The decoder stack without a head: returns the last hidden state."""

    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)
    # Keys further than this behind a query are masked (Mistral, Phi-3, Qwen3); Gemma masks per layer instead.
    sliding_window: int | None = None
    # A faster step that an accelerator installs at load (openformers.kernels, for one token of each of up to 32
    # sequences of a LlamaModel): called with (input_ids, attention_mask, position_ids, cache), it returns the last
    # hidden state, or None to leave the step to the layers. The layers stay the reference it must match.
    accelerated_step = None
    # Whether positions are counted over each row's real tokens (the attention mask) when the caller gives none; else
    # from the cache's length.
    positions_from_mask = False
    # Whether token_type_ids add their rows of the input embedding table, before the position embeddings.
    embeds_token_types = False
    # Whether the layers get their rotary cos and sin in float32 whatever the model's dtype: OLMo's, DeepSeek-V2's
    # and ERNIE 4.5's references rotate a bfloat16 model's queries and keys in float32 by unrounded tables and round
    # once after (their attention's rope casts back), where Llama's round the tables to the model's dtype first.
    float32_rotation_tables = False

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None,
    ) -> BaseModelOutputWithPast | tuple:
        """The last hidden state (B, T, C) after the final norm; with output_hidden_states, also the embeddings
        and every layer's output (the last one normed), and with output_attentions every layer's weights."""
        output = self.decode(input_ids, attention_mask, position_ids, past_key_values, cache, use_cache, labels,
                             inputs_embeds, output_attentions, output_hidden_states, cache_position,
                             token_type_ids=token_type_ids)
        return self.returned(output, return_dict)

    def decode(
        self, input_ids, attention_mask, position_ids, past_key_values, cache, use_cache, labels, inputs_embeds,
        output_attentions, output_hidden_states, cache_position, extra: tuple = (), token_type_ids=None,
    ) -> BaseModelOutputWithPast:
        """`forward`'s output object, whatever return_dict says; `extra` is appended to every layer's inputs (what
        the layers are asked to record, such as Mixtral's router scores: a decoding step, which records nothing, then
        leaves the step to them)."""
        if labels is not None:
            raise ValueError(f"{type(self).__name__} has no head to compute a loss with; use its ForCausalLM class.")
        check_inputs(input_ids, inputs_embeds)
        output_attentions, output_hidden_states, _ = self.output_options(output_attentions, output_hidden_states, None)
        cache = self.cache_for_call(past_key_values, cache, use_cache)
        if cache_position is not None and position_ids is None:
            position_ids = positions_of(cache_position, cache)
        if not self.embeds_token_types:
            token_type_ids = None
        if self.accelerated_step is not None and not (output_attentions or output_hidden_states or extra
                                                      or token_type_ids is not None):
            hidden = self.accelerated_step(input_ids, attention_mask, position_ids, cache)
            if hidden is not None:
                return BaseModelOutputWithPast(last_hidden_state=hidden, cache=cache)
        x = self.input_embeddings(input_ids, inputs_embeds)  # (B, T, C)
        if token_type_ids is not None:
            x = x + embedded(self.get_input_embeddings(), token_type_ids, "token_type_ids")
        if self.positions_from_mask and position_ids is None and attention_mask is not None:
            position_ids = positions_of_real_tokens(attention_mask, x.shape[1], cache)
        position_ids, mask, end = positions_and_mask(cache, attention_mask, position_ids, x.shape[1], x.device,
                                                     self.sliding_window, causal_as_none=True)
        x = self.add_position_embeddings(x, position_ids, end)
        inputs_of = self.layer_inputs(x, position_ids, mask, end, attention_mask, cache)
        # A layer run twice (checkpointing) would write its keys and values to the cache twice: not with a cache.
        # Its second run (in the backward pass) also appends to a list in `extra` again, after it was returned.
        checkpointing = self.gradient_checkpointing if self.training and cache is None else None
        attention_path = self.attention_path(output_attentions)
        x, hidden_states, attentions = run_layers(
            self.layers, x, checkpointing, lambda layer: (*inputs_of(layer), cache, attention_path, *extra),
            output_hidden_states, output_attentions,
        )
        x = self.final_norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x, cache=cache, hidden_states=recorded(hidden_states), attentions=recorded(attentions),
        )

    def cache_for_call(self, past_key_values, cache, use_cache):
        """The cache a forward call uses: the one given (under either name), else a DynamicCache when use_cache, else
        None (a decoder with state layers resolves its own kind: mamba.state_cache)."""
        return forward_cache(past_key_values, cache, use_cache)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        """What the first layer takes: the tokens' embeddings, or inputs_embeds as given."""
        return embedded(self.embed_tokens, input_ids) if inputs_embeds is None else inputs_embeds

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        """x with the embeddings of its (B or 1, T) positions added, `end` how many the keys span: here none (the
        layers rotate queries and keys by position instead)."""
        return x

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache) -> Callable:
        """A function of a layer giving its (cos, sin, mask): here every layer rotates by `rotary_emb` and sees
        `mask`. `end` is how many positions the keys span, `attention_mask` the caller's padding mask."""
        self.rotary_emb.ensure_length(end)
        cos, sin = self.rotary_emb(position_ids, self.rotation_dtype(x))  # (B, 1, T, rotated dimensions)
        return lambda layer: (cos, sin, mask)

    def rotation_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype of the rotary tables the layers get (see `float32_rotation_tables`)."""
        return torch.float32 if self.float32_rotation_tables else x.dtype

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class GPT2NamedDecoder(DecoderModel):
    """A decoder under GPT-2's checkpoint names (GPT-J, GPT-BigCode, GPT-Neo): the token table `wte`, whose rows
    token_type_ids add too (as the reference's do), the blocks `h` and the final LayerNorm `ln_f`."""

    embeds_token_types = True

    @property
    def layers(self) -> nn.ModuleList:
        """The blocks, under the checkpoints' name `h`."""
        return self.h

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        return embedded(self.wte, input_ids) if inputs_embeds is None else inputs_embeds

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(x)


class SlidingLayersDecoder(DecoderModel):
    """A decoder whose layers say whether they slide (`is_sliding`, from config.layer_types: Gemma 2 and 3, OLMo 3;
    GPT-Neo's "local" layers): the sliding layers see only the last config.sliding_window positions and rotate by
    `local_rotary_emb`, the others see every position and rotate by `rotary_emb` (the same module, or one of their
    own where the family gives the sliding layers their own base; `rotations` says otherwise). The model's
    `sliding_window` stays None: the mask before the layers is the full one."""

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        # The same positions for both kinds of layer; the sliding layers' mask also hides keys beyond the window.
        _, window_mask, _ = positions_and_mask(cache, attention_mask, position_ids, x.shape[1], x.device,
                                               self.config.sliding_window)
        rope = self.rotations(x, position_ids, end)
        return lambda layer: (*rope[layer.is_sliding], window_mask if layer.is_sliding else mask)

    def rotations(self, x, position_ids, end: int) -> dict[bool, tuple]:
        """is_sliding -> the (cos, sin) that kind of layer rotates by: `rotary_emb`'s tables for the full layers,
        `local_rotary_emb`'s for the sliding ones."""
        rope = {}
        for is_sliding, rotary in ((False, self.rotary_emb), (True, self.local_rotary_emb)):
            if is_sliding and rotary is self.rotary_emb:  # one table for both kinds (Gemma 2, Ministral, ...)
                rope[True] = rope[False]
                continue
            rotary.ensure_length(end)
            rope[is_sliding] = rotary(position_ids, self.rotation_dtype(x))
        return rope


def positions_of_real_tokens(attention_mask: torch.Tensor, T: int, cache) -> torch.Tensor:
    """The (B, T) positions of T new tokens, counting each row's real tokens only over the (B, S) mask of the cached
    and the new positions (left padding does not move them); padding is at -1, as the reference's OPT counts."""
    past = 0 if cache is None else None if getattr(cache, "is_compileable", False) else cache.seq_len
    S = attention_mask.shape[-1]
    if (S != past + T) if past is not None else S < T:  # a static cache's mask may stop short of its buffer
        raise ValueError(f"attention_mask covers {S} positions, but there are {past or 0} cached and {T} new ones: "
                         f"it must cover all {(past or 0) + T}.")
    mask = attention_mask.long()
    return (mask.cumsum(-1) * mask - 1)[:, -T:]


def positions_of(cache_position: torch.Tensor, cache) -> torch.Tensor:
    """position_ids from the reference's cache_position (the slots the new tokens take in the cache). The cache
    here always appends, so the slots must start where the cache ends: checked in eager calls, since reading
    either position back would break a compiled graph (a static cache's step, generation/static_cache.py)."""
    if torch.compiler.is_compiling():
        return cache_position[None]
    past = cache.seq_len if cache is not None else 0
    if int(cache_position[0]) != past:
        raise ValueError(
            f"cache_position starts at {int(cache_position[0])}, but the cache holds {past} positions: new tokens "
            "are appended to the cache, so cache_position must start at its length."
        )
    return cache_position[None]


def check_learned_positions(position_ids: torch.Tensor, end: int, limit: int, family: str, field: str) -> None:
    """Refuse positions past a table of `limit` learned ones (the config's `field`), with the family's name. Only
    when the keys span more than the table (`end`) are the positions read back: a left-padded batch may be longer
    than its positions."""
    if end > limit and int(position_ids.max()) >= limit:
        raise ValueError(
            f"The tokens reach position {int(position_ids.max())}, past the {limit} positions {family} has ({field}); "
            "truncate the input or generate fewer tokens."
        )

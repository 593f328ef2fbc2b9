"""The decoding loop, kept apart from the model, the cache and the logits processors.

`GenerationMixin.generate` turns the reference's keyword arguments into a `GenerationConfig`, checks them,
builds the processors once, and runs the loop: `Decoder` feeds the model (prefill, then one token per step)
through the forward contract (docs/architecture.md), the processors shape the scores, and
`sample_next_token` picks the next token.
"""

import copy
import warnings
from collections.abc import Mapping

import torch

from .cache import DynamicCache
from .config import GenerationConfig
from .processors import apply_processors, build_processors, sample_next_token


class GenerationMixin:
    """Adds `generate` to a model that follows the forward contract and has a `generation_config`."""

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer=None,
        **kwargs,
    ) -> torch.Tensor:
        if isinstance(input_ids, Mapping):
            # What tokenizer(...) and apply_chat_template(...) return: take its ids and mask.
            attention_mask = input_ids.get("attention_mask") if attention_mask is None else attention_mask
            input_ids = input_ids.get("input_ids")
        config = copy.deepcopy(generation_config or self.generation_config)
        unknown = config.update(**kwargs)
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments: {sorted(unknown)}.")
        if config.num_beams != 1:
            raise ValueError(f"This version of openformers has no beam search: pass num_beams=1 (got {config.num_beams}).")
        input_ids = _check_input_ids(input_ids, self)
        attention_mask = _check_attention_mask(attention_mask, input_ids)
        prompt_length = input_ids.shape[1]
        max_new_tokens = _max_new_tokens(config, prompt_length)
        processors = build_processors(config, prompt_length, attention_mask, device=input_ids.device)

        eos_ids = torch.tensor(config.eos_token_ids, dtype=torch.long, device=input_ids.device)
        pad_id = config.pad_token_id if config.pad_token_id is not None else (config.eos_token_ids or [0])[0]
        output = input_ids.new_full((input_ids.shape[0], prompt_length + max_new_tokens), pad_id)
        output[:, :prompt_length] = input_ids
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if streamer is not None:
            streamer.put(input_ids.cpu())

        decoder = Decoder(self, input_ids, attention_mask)
        logits = decoder.prefill()
        length = prompt_length
        while True:
            scores = apply_processors(processors, output[:, :length], logits.float()) if processors else logits
            token = sample_next_token(scores, config.do_sample)
            token = torch.where(unfinished, token, pad_id)
            output[:, length] = token
            length += 1
            if streamer is not None:
                streamer.put(token.cpu())
            if eos_ids.numel():
                unfinished &= ~torch.isin(token, eos_ids)
            if length == output.shape[1] or (eos_ids.numel() and not bool(unfinished.any())):
                break
            logits = decoder.step(token)
        if streamer is not None:
            streamer.end()
        return output[:, :length]


class Decoder:
    """Runs the model over a prompt, then one token at a time, keeping the KV cache, mask and positions."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        self.model = model
        self.input_ids = input_ids
        self.cache = DynamicCache()
        self.attention_mask = attention_mask
        # Left padding: real tokens count positions from 0, as when each prompt runs alone.
        self.position_ids = None if attention_mask is None else (attention_mask.cumsum(-1) - 1).clamp(min=0)

    def prefill(self) -> torch.Tensor:
        """The (B, V) logits of the last prompt position."""
        return self._forward(self.input_ids)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; the (B, V) logits for the position after it."""
        if self.attention_mask is not None:
            self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(token.shape[0], 1)], -1)
            self.position_ids = self.position_ids[:, -1:] + 1
        return self._forward(token[:, None])

    def _forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        output = self.model(
            input_ids,
            attention_mask=self.attention_mask,
            position_ids=self.position_ids,
            past_key_values=self.cache,
            logits_to_keep=1,
        )
        return output.logits[:, -1]


def _check_input_ids(input_ids, model) -> torch.Tensor:
    if input_ids is None:
        raise ValueError("generate() needs input_ids: encode the prompt with tokenizer.encode(text, return_tensors='pt').")
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}; "
            "use tokenizer.encode(text, return_tensors='pt')."
        )
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(
            f"input_ids must be integer ids shaped (batch, length), got dtype {input_ids.dtype} "
            f"and shape {tuple(input_ids.shape)}."
        )
    if input_ids.shape[1] == 0:
        raise ValueError("The prompt is empty (input_ids has length 0): give at least one token to continue from.")
    device = next(model.parameters()).device
    return input_ids.to(device=device, dtype=torch.long)


def _check_attention_mask(attention_mask, input_ids: torch.Tensor) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(
            f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}, got {shape}."
        )
    attention_mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
    if bool(attention_mask.all()):
        return None  # nothing is padded: decode as for a single prompt, without a mask
    if bool((attention_mask[:, -1] == 0).any()):
        warnings.warn(
            "A row of input_ids is right-padded (its last attention_mask entry is 0); decoder-only models must be "
            "left-padded for generation, or that row continues from its padding: set tokenizer.padding_side = 'left'.",
            stacklevel=3,
        )
    return attention_mask


def _max_new_tokens(config: GenerationConfig, prompt_length: int) -> int:
    if config.max_new_tokens is not None:
        if config.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {config.max_new_tokens}.")
        return config.max_new_tokens
    if config.max_length <= prompt_length:
        raise ValueError(
            f"max_length={config.max_length} leaves no room to generate: the prompt already has {prompt_length} "
            f"tokens and max_length counts them. Pass a larger max_length, or max_new_tokens=N instead."
        )
    return config.max_length - prompt_length

"""The decoding loop, kept apart from the model and the cache.

`GenerationMixin.generate` turns the reference's keyword arguments into a `GenerationConfig`, checks them,
and runs `greedy_tokens`, a generator of next-token ids that knows a model only through the forward
contract (../../shared/DESIGN.md): `model(input_ids, attention_mask, position_ids, past_key_values,
logits_to_keep=1).logits`.
"""

import copy
import warnings
from collections.abc import Iterator

import torch

from .cache import DynamicCache
from .config import GenerationConfig


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
        config = copy.deepcopy(generation_config or self.generation_config)
        unknown = config.update(**kwargs)
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments: {sorted(unknown)}.")
        input_ids = _check_input_ids(input_ids, self)
        if config.do_sample or config.num_beams != 1:
            raise ValueError(
                "This version of openformers decodes greedily only: pass do_sample=False and num_beams=1 "
                f"(got do_sample={config.do_sample}, num_beams={config.num_beams})."
            )
        prompt_length = input_ids.shape[1]
        max_new_tokens = _max_new_tokens(config, prompt_length)
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, but input_ids has "
                    f"{tuple(input_ids.shape)}; they must match."
                )
            attention_mask = attention_mask.to(input_ids.device)
            if bool((attention_mask[:, -1] == 0).any()):
                warnings.warn(
                    "A row of input_ids is right-padded (its last attention_mask entry is 0); decoder-only "
                    "models must be left-padded for generation: set tokenizer.padding_side = 'left'.",
                    stacklevel=3,
                )

        eos_ids = torch.tensor(config.eos_token_ids, dtype=torch.long, device=input_ids.device)
        pad_id = config.pad_token_id if config.pad_token_id is not None else (config.eos_token_ids or [0])[0]
        output = input_ids.new_full((input_ids.shape[0], prompt_length + max_new_tokens), pad_id)
        output[:, :prompt_length] = input_ids
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if streamer is not None:
            streamer.put(input_ids.cpu())

        length = prompt_length
        for token in greedy_tokens(self, input_ids, attention_mask, max_new_tokens):
            token = torch.where(unfinished, token, pad_id)
            output[:, length] = token
            length += 1
            if streamer is not None:
                streamer.put(token.cpu())
            if eos_ids.numel():
                unfinished &= ~torch.isin(token, eos_ids)
                if not bool(unfinished.any()):
                    break
        if streamer is not None:
            streamer.end()
        return output[:, :length]


def greedy_tokens(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int
) -> Iterator[torch.Tensor]:
    """Yield the argmax token of every row, one step at a time, reusing a KV cache."""
    cache = DynamicCache()
    position_ids = None
    if attention_mask is not None:
        # Left padding: real tokens count positions from 0, as when each prompt runs alone.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    step_input = input_ids
    for step in range(max_new_tokens):
        logits = model(
            step_input,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            logits_to_keep=1,
        ).logits
        token = logits[:, -1].argmax(dim=-1)
        yield token
        if step + 1 == max_new_tokens:
            return
        step_input = token[:, None]
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(token.shape[0], 1)], dim=-1)
            position_ids = position_ids[:, -1:] + 1


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

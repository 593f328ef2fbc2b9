"""The decoding loops, kept apart from the model, the cache and the logits processors.

`GenerationMixin.generate` resolves the options into a `GenerationConfig` (config.py), checks the inputs,
builds the processors once, and runs one of two loops over a `Decoder`, which feeds the model through the
forward contract (docs/architecture.md) and keeps the KV cache, mask and positions:
- `sample_loop`: greedy decoding or multinomial sampling, one token per row and step;
- `beam_search`: the reference's beam search, vectorized over (batch, beams), reordering the cache each step.
Both stop a row at an EOS id or a stop string (`StopChecker`) and at the length limit.
"""

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from .cache import DynamicCache
from .config import GenerationConfig, resolve_generation_config
from .processors import apply_processors, build_processors, sample_next_token

_BANNED = -1.0e9  # the reference's score for beams that may not be chosen; kept identical so ties break the same way


@dataclass
class GenerateOutput:
    """What `generate(..., return_dict_in_generate=True)` returns; read by attribute, name or position.

    sequences: (N, T) prompt and generated ids, N = batch * num_return_sequences.
    scores: one (N, V) tensor per step, the processed scores (log-probabilities for beam search) when
        output_scores=True; logits: the raw logits of each step when output_logits=True.
    sequences_scores, beam_indices: beam search only, as in the reference.
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    sequences_scores: torch.Tensor | None = None
    beam_indices: torch.Tensor | None = None
    past_key_values: object | None = None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"GenerateOutput has no field {key!r} set; it has {self.keys()}.")
            return getattr(self, key)
        return tuple(getattr(self, name) for name in self.keys())[key]


class GenerationMixin:
    """Adds `generate` to a model that follows the forward contract and has a `generation_config`."""

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer=None,
        tokenizer=None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.Tensor | GenerateOutput:
        """Continue `input_ids`; returns the (N, T) ids, or a `GenerateOutput` with return_dict_in_generate=True.

        Options (max_new_tokens, do_sample, num_beams, ...) come from the keyword arguments, then
        `generation_config`, then `self.generation_config`, then the library defaults. `tokenizer` is needed
        for stop_strings; `generator` makes sampling draw from that torch.Generator instead of the global one.
        """
        if isinstance(input_ids, Mapping):
            # What tokenizer(...) and apply_chat_template(...) return: take its ids and mask.
            attention_mask = input_ids.get("attention_mask") if attention_mask is None else attention_mask
            input_ids = input_ids.get("input_ids")
        config, unknown = resolve_generation_config(
            getattr(self, "generation_config", None), generation_config, kwargs, stacklevel=5
        )
        if unknown:
            raise TypeError(
                f"generate() got unexpected keyword arguments: {sorted(unknown)}. It takes input_ids, "
                "attention_mask, generation_config, streamer, tokenizer, generator and the options of "
                f"GenerationConfig: {', '.join(GenerationConfig.option_names())}."
            )
        input_ids = _check_input_ids(input_ids, self)
        attention_mask = _check_attention_mask(attention_mask, input_ids)
        prompt_length = input_ids.shape[1]
        max_new_tokens = _max_new_tokens(config, prompt_length)
        stop = StopChecker(config, tokenizer, input_ids.device)
        if streamer is not None and (config.num_beams > 1 or input_ids.shape[0] * config.num_return_sequences > 1):
            raise ValueError(
                "streamer streams one sequence: use it with one prompt, num_beams=1 and num_return_sequences=1."
            )
        decoder = Decoder(self, input_ids, attention_mask)
        if config.num_beams > 1:
            output = beam_search(decoder, config, stop, max_new_tokens, generator)
        else:
            output = sample_loop(decoder, config, stop, max_new_tokens, generator, streamer)
        if config.return_dict_in_generate:
            output.past_key_values = decoder.cache
            return output
        return output.sequences


def _pad_id(config: GenerationConfig) -> int:
    """The id that fills rows that stopped early: pad_token_id, else the first EOS id (as in the reference)."""
    if config.pad_token_id is not None:
        return config.pad_token_id
    return config.eos_token_ids[0] if config.eos_token_ids else 0


def sample_loop(decoder: "Decoder", config: GenerationConfig, stop: "StopChecker", max_new_tokens: int,
                generator: torch.Generator | None = None, streamer=None) -> GenerateOutput:
    """Greedy decoding or sampling: one token per row and step until every row stops or the limit is reached."""
    rows = config.num_return_sequences
    input_ids = decoder.input_ids.repeat_interleave(rows, dim=0)
    batch, prompt_length = input_ids.shape
    mask = decoder.attention_mask.repeat_interleave(rows, 0) if decoder.attention_mask is not None else None
    processors = build_processors(config, prompt_length, mask, device=input_ids.device)
    pad_id = _pad_id(config)
    output = input_ids.new_full((batch, prompt_length + max_new_tokens), pad_id)
    output[:, :prompt_length] = input_ids
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    scores_out = [] if config.output_scores else None
    logits_out = [] if config.output_logits else None
    if streamer is not None:
        streamer.put(input_ids.cpu())

    logits = decoder.prefill(expand=rows)
    length = prompt_length
    while True:
        logits = logits.float()
        scores = apply_processors(processors, output[:, :length], logits) if processors else logits
        if logits_out is not None:
            logits_out.append(logits.clone())
        if scores_out is not None:
            scores_out.append(scores.clone())
        token = sample_next_token(scores, config.do_sample, generator)
        token = torch.where(unfinished, token, pad_id)
        output[:, length] = token
        length += 1
        if streamer is not None:
            streamer.put(token.cpu())
        if stop.active:
            unfinished &= ~stop(output[:, :length])
        if length == output.shape[1] or (stop.active and not bool(unfinished.any())):
            break
        logits = decoder.step(token)
    if streamer is not None:
        streamer.end()
    return GenerateOutput(
        sequences=output[:, :length],
        scores=tuple(scores_out) if scores_out is not None else None,
        logits=tuple(logits_out) if logits_out is not None else None,
    )


def beam_search(decoder: "Decoder", config: GenerationConfig, stop: "StopChecker", max_new_tokens: int,
                generator: torch.Generator | None = None) -> GenerateOutput:
    """The reference's beam search (with sampling when do_sample), vectorized over (batch, beams).

    Each step, every running beam proposes its continuations; the best `keep` of the B x (K * V) candidates
    (enough that K of them do not end) are scored by their summed log-probabilities. Candidates that end (EOS,
    stop string, length limit) compete, with the length penalty, for the K finished slots of their prompt;
    the best K that do not end become the running beams, and the cache follows them with `reorder`.
    """
    K = config.num_beams
    input_ids = decoder.input_ids
    B, prompt_length = input_ids.shape
    total_length = prompt_length + max_new_tokens
    device = input_ids.device
    length_penalty, early_stopping = config.length_penalty, config.early_stopping
    mask = decoder.attention_mask.repeat_interleave(K, 0) if decoder.attention_mask is not None else None
    processors = build_processors(config, prompt_length, mask, device=device)
    keep = max(2, 1 + len(config.eos_token_ids)) * K
    in_top_k = torch.arange(keep, device=device) < K  # only the K best candidates may finish a sequence
    batch_offset = torch.arange(B, device=device)[:, None] * K

    fill = _pad_id(config) if config.eos_token_ids else -1
    running = input_ids.new_full((B, K, total_length), fill)
    running[:, :, :prompt_length] = input_ids[:, None]
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = _BANNED  # all beams start equal: only the first one may propose continuations
    running_origins = torch.full((B, K, max_new_tokens), -1, dtype=torch.long, device=device)
    finished, finished_origins = running.clone(), running_origins.clone()
    finished_scores = torch.full((B, K), _BANNED, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    scores_out = [] if config.output_scores else None
    logits_out = [] if config.output_logits else None

    logits = decoder.prefill(expand=K)
    length = prompt_length
    while True:
        logits = logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = apply_processors(processors, running[:, :, :length].flatten(0, 1), log_probs)
        if logits_out is not None:
            logits_out.append(logits.clone())
        if scores_out is not None:
            scores_out.append(log_probs.clone())
        vocab_size = log_probs.shape[-1]
        totals = (log_probs.view(B, K, vocab_size) + running_scores[:, :, None]).view(B, K * vocab_size)

        # The `keep` best continuations over all beams of each prompt (or `keep` draws without replacement).
        if config.do_sample:
            picked = torch.multinomial(totals.softmax(dim=-1), keep, generator=generator)
            picked_scores, order = totals.gather(1, picked).sort(dim=-1, descending=True)
            picked = picked.gather(1, order)
        else:
            picked_scores, picked = totals.topk(keep, dim=-1)
        source_beam, token = picked // vocab_size, picked % vocab_size  # (B, keep)
        candidates = _gather(running, source_beam)
        candidates[:, :, length] = token
        candidate_origins = _gather(running_origins, source_beam)
        candidate_origins[:, :, length - prompt_length] = source_beam + batch_offset
        ends = stop(candidates[:, :, : length + 1].flatten(0, 1)).view(B, keep) | (length + 1 >= total_length)

        # The K best candidates that do not end keep running.
        alive_scores = picked_scores + ends.float() * _BANNED
        best_alive = alive_scores.topk(K, dim=-1).indices
        running = _gather(candidates, best_alive)
        running_scores = _gather(alive_scores, best_alive)
        running_origins = _gather(candidate_origins, best_alive)

        # Candidates among the K best that end compete for the finished slots, scored with the length penalty.
        just_finished = ends & in_top_k[None]
        normalized = picked_scores / ((length + 1 - prompt_length) ** length_penalty)
        full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        normalized = normalized + full.float() * _BANNED
        normalized = normalized + (~improvable).float() * _BANNED
        normalized = normalized + (~just_finished).float() * _BANNED
        best = torch.cat([finished_scores, normalized], dim=1).topk(K, dim=-1).indices
        finished = _gather(torch.cat([finished, candidates], dim=1), best)
        finished_scores = _gather(torch.cat([finished_scores, normalized], dim=1), best)
        finished_origins = _gather(torch.cat([finished_origins, candidate_origins], dim=1), best)
        is_finished = _gather(torch.cat([is_finished, just_finished], dim=1), best)

        length += 1
        improvable = improvable & _can_improve(running_scores, finished_scores, is_finished, length,
                                               prompt_length, total_length, early_stopping, length_penalty)
        all_full = bool(is_finished.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or bool(ends.all()):
            break
        decoder.cache.reorder(running_origins[:, :, length - 1 - prompt_length].flatten())
        logits = decoder.step(running[:, :, length - 1].flatten())

    rows = config.num_return_sequences
    sequences = finished[:, :rows].flatten(0, 1)
    origins = finished_origins[:, :rows].flatten(0, 1)
    generated = int((origins >= 0).sum(dim=1).max())
    return GenerateOutput(
        sequences=sequences[:, : prompt_length + generated],
        scores=tuple(scores_out) if scores_out is not None else None,
        logits=tuple(logits_out) if logits_out is not None else None,
        sequences_scores=finished_scores[:, :rows].flatten() if config.output_scores else None,
        beam_indices=origins[:, :generated] if config.return_dict_in_generate else None,
    )


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick along dim 1 of a (B, beams, ...) tensor with a (B, n) index."""
    index = index.view(*index.shape, *([1] * (tensor.dim() - 2)))
    return tensor.take_along_dim(index, dim=1)


def _can_improve(running_scores, finished_scores, is_finished, length, prompt_length, total_length,
                 early_stopping, length_penalty) -> torch.Tensor:
    """(B, 1): whether the best running beam could still beat the worst finished one (the reference's heuristic).

    With early_stopping="never" and a positive length penalty the best case is reaching the length limit;
    otherwise it is stopping now.
    """
    if early_stopping == "never" and length_penalty > 0.0:
        best_length = total_length - prompt_length
    else:
        best_length = length - prompt_length
    best_possible = running_scores[:, :1] / (best_length**length_penalty)
    worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, _BANNED)
    return (best_possible > worst_finished).any(dim=-1, keepdim=True)


class StopChecker:
    """Says which sequences just ended: the last token is an EOS id, or a stop string ends within it."""

    def __init__(self, config: GenerationConfig, tokenizer, device: torch.device):
        self.eos_ids = torch.tensor(config.eos_token_ids, dtype=torch.long, device=device)
        strings = config.stop_strings
        self.stop_strings = [strings] if isinstance(strings, str) else list(strings or [])
        if self.stop_strings and tokenizer is None:
            raise ValueError(
                f"stop_strings={config.stop_strings!r} needs the tokenizer to read the text: pass "
                "generate(..., tokenizer=tokenizer)."
            )
        self.tokenizer = tokenizer
        # Enough tokens to hold the longest stop string, even when a few tokens carry parts of one character.
        self.window = max((len(s) for s in self.stop_strings), default=0) + 3
        self.active = bool(self.eos_ids.numel() or self.stop_strings)

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        """(N,) bool for (N, T) sequences whose last position holds the newest token."""
        ended = torch.isin(sequences[:, -1], self.eos_ids) if self.eos_ids.numel() else None
        if ended is None:
            ended = torch.zeros(sequences.shape[0], dtype=torch.bool, device=sequences.device)
        if self.stop_strings:
            tails = sequences[:, -self.window :].tolist()
            hits = [self._ends_with_stop_string(tail) for tail in tails]
            ended = ended | torch.tensor(hits, dtype=torch.bool, device=sequences.device)
        return ended

    def _ends_with_stop_string(self, tail: list[int]) -> bool:
        text = self.tokenizer.decode(tail)
        before = len(self.tokenizer.decode(tail[:-1]))  # the text up to the newest token
        for stop_string in self.stop_strings:
            # A stop string counts when it ends inside the newest token (it may continue past it).
            start = text.find(stop_string, max(0, before - len(stop_string) + 1))
            if start != -1 and start + len(stop_string) > before:
                return True
        return False


PREFILL_CHUNK = 2048  # prompt tokens per forward pass


class Decoder:
    """Runs the model over a prompt, then one token per row at a time, keeping the KV cache, mask and positions."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        self.model = model
        self.input_ids = input_ids
        self.cache = DynamicCache()
        self.attention_mask = attention_mask
        # Left padding: real tokens count positions from 0, as when each prompt runs alone.
        self.position_ids = None if attention_mask is None else (attention_mask.cumsum(-1) - 1).clamp(min=0)

    def prefill(self, expand: int = 1) -> torch.Tensor:
        """The (B * expand, V) logits of the last prompt position, each prompt's row repeated `expand` times.

        The prompt runs once, in chunks of PREFILL_CHUNK tokens so a long prompt never holds the activations of
        all its positions at once; its cache is copied for the beams or return sequences that share it.
        """
        length = self.input_ids.shape[1]
        for start in range(0, length, PREFILL_CHUNK):
            end = min(start + PREFILL_CHUNK, length)
            mask = None if self.attention_mask is None else self.attention_mask[:, :end]
            positions = None if self.position_ids is None else self.position_ids[:, start:end]
            logits = self._forward(self.input_ids[:, start:end], mask, positions)
        if expand > 1:
            rows = torch.arange(self.input_ids.shape[0], device=logits.device).repeat_interleave(expand)
            self.cache.reorder(rows)
            logits = logits[rows]
            if self.attention_mask is not None:
                self.attention_mask, self.position_ids = self.attention_mask[rows], self.position_ids[rows]
        return logits

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; the (B, V) logits for the position after it."""
        if self.attention_mask is not None:
            self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(token.shape[0], 1)], -1)
            self.position_ids = self.position_ids[:, -1:] + 1
        return self._forward(token[:, None], self.attention_mask, self.position_ids)

    def _forward(self, input_ids: torch.Tensor, attention_mask, position_ids) -> torch.Tensor:
        output = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
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
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 1:
        attention_mask = attention_mask[None]
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
            stacklevel=4,
        )
    return attention_mask


def _max_new_tokens(config: GenerationConfig, prompt_length: int) -> int:
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    if config.max_length <= prompt_length:
        raise ValueError(
            f"max_length={config.max_length} leaves no room to generate: the prompt already has {prompt_length} "
            f"tokens and max_length counts them. Pass a larger max_length, or max_new_tokens=N instead."
        )
    return config.max_length - prompt_length

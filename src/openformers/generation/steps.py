"""The decoding core: prefill, then one step per token for rows that join and leave a running batch.

Three pieces, which `generate` (decoding.py), its streamers and the server's continuous batching
(serving/scheduler.py) all use, so that one request gets the same tokens from each:
- `Decoder` feeds the model through the forward contract (docs/architecture.md) and keeps the KV cache, the
  attention mask and the positions: a prompt's prefill (in chunks), then one token per row and step. Rows of
  another decoder can be appended (left-padded to a common length) and rows dropped. `Seq2SeqDecoder` is the
  decoder side of an encoder-decoder: the same steps over the decoder's ids, each given the encoder's output.
- `Sequence` is a group of rows with one `Sampler` (sampling.py) and one stop check (the stopping criteria that
  `build_stopping_criteria` makes from the options): `choose` turns a step's logits into the next tokens.
- `Batch` runs sequences together: each `step` is one forward pass for all their rows, then each sequence
  chooses its tokens; sequences join once prefilled and leave when done. `decode` is the loop of one sequence
  alone, as a generator of each step's tokens (generate's greedy decoding and sampling).
"""

from collections.abc import Iterator

import torch

from ..acceleration import accelerator
from .cache import Cache, DynamicCache, EncoderDecoderCache, new_cache
from .config import GenerationConfig
from .processors import first_argmax, merged_with_user
from .sampling import Sampler
from .stopping_criteria import (
    ConfidenceCriteria, EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, OneRowStops, StoppingCriteriaList,
    StopStringCriteria,
)

PREFILL_CHUNK = 2048  # prompt tokens per forward pass


def build_stopping_criteria(
    config: GenerationConfig,
    tokenizer=None,
    max_time: float | None = None,
    stopping_criteria: list | None = None,
    max_position_embeddings: int | None = None,
    confidence_threshold: float | None = None,
) -> StoppingCriteriaList:
    """The criteria the options ask for, in the reference's order (length, time, stop strings, EOS, confidence),
    then the user's: one of the same type as a built criterion takes its place (with a warning), as in the
    reference; the others are appended."""
    built = StoppingCriteriaList()
    if config.max_length is not None:
        built.append(MaxLengthCriteria(config.max_length, max_position_embeddings=max_position_embeddings))
    if max_time is not None:
        built.append(MaxTimeCriteria(max_time))
    if config.stop_strings is not None:
        if tokenizer is None:
            raise ValueError(
                f"stop_strings={config.stop_strings!r} needs the tokenizer to read the text: pass "
                "generate(..., tokenizer=tokenizer)."
            )
        built.append(StopStringCriteria(tokenizer, config.stop_strings))
    if config.eos_token_ids:
        built.append(EosTokenCriteria(config.eos_token_ids))
    if confidence_threshold:
        built.append(ConfidenceCriteria(confidence_threshold))
    # stacklevel: build_stopping_criteria, generate, torch's inference_mode wrapper
    return merged_with_user(built, stopping_criteria, "stopping_criteria", stacklevel=4)


class Decoder:
    """Runs the model over a prompt, then one token per row at a time, keeping the KV cache, mask and positions.

    `cache` may come from an earlier call (generate's past_key_values=) and hold the first positions of the
    prompt already: only the rest is fed. `attention_mask` is None while no row is padded; `position_ids` then
    counts from the cache, else it holds each row's positions of the tokens fed last. `token_type_ids`, where
    given, are the prompt's; each token after it takes its row's last type, as the reference's generate extends them.
    `inputs_embeds` (B, T, C), where given, is the prompt fed instead of ids (a decoder-only generate's
    inputs_embeds=): `input_ids` then holds the ids the output starts with, (B, 0) when none were given.
    """

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache=None,
                 output_attentions: bool = False, output_hidden_states: bool = False, token_type_ids=None,
                 inputs_embeds: torch.Tensor | None = None):
        self.model = model
        self.input_ids = input_ids
        self.inputs_embeds = inputs_embeds
        prompt = input_ids if inputs_embeds is None else inputs_embeds[..., 0]
        if token_type_ids is not None and (not isinstance(token_type_ids, torch.Tensor)
                                           or token_type_ids.shape != prompt.shape):
            shape = tuple(token_type_ids.shape) if isinstance(token_type_ids, torch.Tensor) else type(token_type_ids)
            raise ValueError(f"token_type_ids must be a tensor shaped like the prompt {tuple(prompt.shape)}, "
                             f"got {shape}.")
        self.token_type_ids = token_type_ids
        self.cache = new_cache(model) if cache is None else cache
        if not isinstance(self.cache, Cache):
            raise TypeError(f"past_key_values must be a Cache (such as DynamicCache), got {type(cache).__name__}.")
        self.prompt_length = prompt.shape[1]  # the positions prefill feeds
        if self.cache.get_seq_length() >= self.prompt_length:
            raise ValueError(
                f"past_key_values already holds {self.cache.get_seq_length()} positions, but the prompt has only "
                f"{self.prompt_length}: pass the ids the cache was built from plus at least one new token."
            )
        self.attention_mask = attention_mask
        # Left padding: real tokens count positions from 0, as when each prompt runs alone.
        self.position_ids = None if attention_mask is None else (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.extra = {name: True for name, wanted in (("output_attentions", output_attentions),
                                                      ("output_hidden_states", output_hidden_states)) if wanted}
        # The latest forward pass's per-layer attentions and hidden states, when asked for.
        self.last_attentions, self.last_hidden_states = None, None
        self.argmax = None  # the latest step's argmax of its logits, where the model's shortcut gave it

    def prefill(self, expand: int = 1) -> torch.Tensor:
        """The (B * expand, V) logits of the last prompt position, each prompt's row repeated `expand` times.

        The prompt runs once, in chunks of PREFILL_CHUNK tokens so a long prompt never holds the activations of
        all its positions at once; its cache is copied for the beams or return sequences that share it.
        """
        logits = None
        while logits is None:
            logits = self.prefill_chunk(PREFILL_CHUNK)
        if expand > 1:
            rows = torch.arange(self.input_ids.shape[0], device=logits.device).repeat_interleave(expand)
            logits = logits[rows]
            self.repeat_rows(rows)
        return logits

    def repeat_rows(self, rows: torch.Tensor) -> None:
        """Make row i of everything kept (cache, mask, positions, the last pass's outputs) the old row rows[i]."""
        self.cache.reorder(rows)
        if self.extra:
            self.last_attentions = _rows(self.last_attentions, rows)
            self.last_hidden_states = _rows(self.last_hidden_states, rows)
        if self.attention_mask is not None:
            self.attention_mask, self.position_ids = self.attention_mask[rows], self.position_ids[rows]
        if self.token_type_ids is not None:
            self.token_type_ids = self.token_type_ids[rows]

    def reorder_beams(self, rows: torch.Tensor) -> None:
        """Make row i's cache the cache of row rows[i], a beam of the same prompt (beam search, each step)."""
        self.cache.reorder(rows)

    def prefill_chunk(self, limit: int) -> torch.Tensor | None:
        """Feed up to `limit` more prompt tokens; once the whole prompt is cached, the (B, V) logits of its last
        position, else None. The server prefills a long prompt this way, between the steps of the running rows."""
        length = self.prompt_length
        start = self.cache.get_seq_length()
        end = min(start + limit, length)
        mask = None if self.attention_mask is None else self.attention_mask[:, :end]
        positions = None if self.position_ids is None else self.position_ids[:, start:end]
        types = None if self.token_type_ids is None else self.token_type_ids[:, start:end]
        ids, embeds = self.input_ids[:, start:end], {}
        if self.inputs_embeds is not None:
            ids, embeds = None, {"inputs_embeds": self.inputs_embeds[:, start:end]}
        with accelerator().prompts_for_generation():  # (a bfloat16 prompt may take the compiled step too)
            logits = self._forward(ids, mask, positions, token_type_ids=types, **embeds)[:, -1]
        if end < length:
            return None
        self.inputs_embeds = None  # fed: the steps feed ids
        return logits

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; the (B, V) logits for the position after it."""
        self.argmax = None
        if self.attention_mask is None and not self.extra and self.token_type_ids is None:
            shortcut = getattr(self.model, "accelerated_logits", None)  # past the model's forward (CausalLM)
            taken = shortcut(self.model, token, self.cache) if shortcut is not None else None
            if taken is not None:
                logits, self.argmax = taken
                return logits
        if self.attention_mask is not None:
            self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(token.shape[0], 1)], -1)
            self.position_ids = self.position_ids[:, -1:] + 1
        return self._forward(token[:, None], self.attention_mask, self.position_ids,
                             token_type_ids=self._last_types(1))[:, -1]

    def run_greedy(self, token: torch.Tensor, count: int, eos: list[int], ids: torch.Tensor) -> int | None:
        """Feed one row's (1,) token, then the argmax of each step's logits, for up to `count` steps or until one
        makes a token in `eos`, in one call of the model's accelerated step (kernels/llama.py `greedy_tokens`); the
        tokens go into `ids` (1-D int64). How many it made, or None where the model takes no such run."""
        if self.attention_mask is not None or self.extra or self.token_type_ids is not None:
            return None
        run = getattr(self.model, "accelerated_greedy", None)
        return run(self.model, token, self.cache, count, eos, ids) if run is not None else None

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        """Feed several tokens per row (B, n) after what the cache holds; the (B, keep, V) logits of the last
        `keep` positions. For an unpadded batch (assisted decoding); the model counts positions from the cache."""
        if self.attention_mask is not None:
            raise ValueError("Feeding several tokens at once needs an unpadded batch (attention_mask of ones).")
        return self._forward(tokens, None, None, keep, self._last_types(tokens.shape[1]))

    def _last_types(self, count: int) -> torch.Tensor | None:
        """The token types of `count` tokens fed after the prompt: each row's last one, or None without types."""
        return None if self.token_type_ids is None else self.token_type_ids[:, -1:].expand(-1, count)

    def append_rows(self, other: "Decoder") -> None:
        """Add the rows of `other` after this decoder's; both have fed their whole prompts. The one holding
        fewer positions is left-padded, the mask hiding the padding; each row keeps its own positions."""
        length = max(self.cache.seq_len, other.cache.seq_len)
        self._left_pad(length - self.cache.seq_len)
        other._left_pad(length - other.cache.seq_len)
        self.cache.append_rows(other.cache)
        self.attention_mask = torch.cat([self.attention_mask, other.attention_mask])
        self.position_ids = torch.cat([self.position_ids, other.position_ids])
        self._forget_mask_if_unpadded()

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the rows at indices `rows`, and drop the padding in front that none of them needs."""
        self.cache.reorder(rows)
        if self.token_type_ids is not None:
            self.token_type_ids = self.token_type_ids[rows]
        if self.attention_mask is None:
            return
        mask, self.position_ids = self.attention_mask[rows], self.position_ids[rows]
        unused = int(mask.any(dim=0).int().argmax())  # leading columns that are padding in every kept row
        if unused:
            self.cache.drop_front(unused)
        self.attention_mask = mask[:, unused:]
        self._forget_mask_if_unpadded()

    def _left_pad(self, n: int) -> None:
        """Put n padded positions in front of every row, the mask and positions made explicit."""
        rows, length = self.cache.batch_size, self.cache.seq_len
        if self.attention_mask is None:
            self.attention_mask = torch.ones(rows, length, dtype=torch.long, device=self.input_ids.device)
            self.position_ids = torch.full((rows, 1), length - 1, device=self.input_ids.device)
        self.cache.left_pad(n)
        self.attention_mask = torch.cat([self.attention_mask.new_zeros(rows, n), self.attention_mask], dim=1)

    def _forget_mask_if_unpadded(self) -> None:
        # Every row then counts positions from 0 at the cache's first position: the model needs neither, and
        # the plain one-token step (or the CPU kernel's) runs without a mask.
        if bool(self.attention_mask.all()):
            self.attention_mask, self.position_ids = None, None

    def _forward(self, input_ids: torch.Tensor | None, attention_mask, position_ids, keep: int = 1,
                 token_type_ids=None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            # Positions count from 0 as in the reference's generate, also for models whose own default differs
            # (RoBERTa counts from its padding id when called without positions).
            past = self.cache.get_seq_length()
            fed = input_ids if input_ids is not None else inputs_embeds
            position_ids = torch.arange(past, past + fed.shape[1], device=fed.device)[None]
        output = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            logits_to_keep=keep,
            return_dict=True,  # whatever config.return_dict says: the loop reads outputs by name
            **self.extra,
            **({} if token_type_ids is None else {"token_type_ids": token_type_ids}),
            **({} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}),
        )
        if self.extra:
            self.last_attentions = output.attentions
            self.last_hidden_states = output.hidden_states
        return output.logits


def _rows(per_layer: tuple | None, rows: torch.Tensor) -> tuple | None:
    return None if per_layer is None else tuple(tensor[rows] for tensor in per_layer)


class Seq2SeqDecoder(Decoder):
    """The decoder side of an encoder-decoder (docs/architecture.md): the Decoder's prefill and steps over the
    decoder's ids (`input_ids` here, starting with decoder_start_token_id; `attention_mask` the decoder's), each
    forward pass given the encoder's output and mask, which the model's cross-attention reads (projecting them once
    into the cache's cross-attention half). Rows repeated or dropped take their encoder output along.
    """

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, encoder_hidden_states,
                 encoder_attention_mask: torch.Tensor | None, cache=None, output_attentions: bool = False,
                 output_hidden_states: bool = False):
        if cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if not isinstance(cache, EncoderDecoderCache):
            raise TypeError(
                "An encoder-decoder's past_key_values must be an EncoderDecoderCache (a self-attention and a "
                f"cross-attention cache), got {type(cache).__name__}."
            )
        super().__init__(model, input_ids, attention_mask, cache, output_attentions, output_hidden_states)
        self.encoder_hidden_states, self.encoder_attention_mask = encoder_hidden_states, encoder_attention_mask
        self.last_cross_attentions = None

    def repeat_rows(self, rows: torch.Tensor) -> None:
        super().repeat_rows(rows)
        self._take_encoder_rows(rows)

    def keep_rows(self, rows: torch.Tensor) -> None:
        super().keep_rows(rows)
        self._take_encoder_rows(rows)

    def reorder_beams(self, rows: torch.Tensor) -> None:
        # The beams of one prompt share its encoder output, so their cross-attention rows are equal already: only
        # the self-attention half moves (the reference copies both, each step).
        self.cache.self_attention_cache.reorder(rows)

    def append_rows(self, other: "Decoder") -> None:
        raise ValueError("Rows of encoder-decoders are not merged into a running batch: decode each call alone.")

    def _take_encoder_rows(self, rows: torch.Tensor) -> None:
        self.encoder_hidden_states = self.encoder_hidden_states[rows]
        if self.encoder_attention_mask is not None:
            self.encoder_attention_mask = self.encoder_attention_mask[rows]
        self.last_cross_attentions = _rows(self.last_cross_attentions, rows)

    def _forward(self, input_ids: torch.Tensor, attention_mask, position_ids, keep: int = 1,
                 token_type_ids=None) -> torch.Tensor:
        # Decoder positions count from the cache (T5's relative buckets, BART's learned table): no position ids.
        output = self.model(
            attention_mask=self.encoder_attention_mask,
            decoder_input_ids=input_ids,
            decoder_attention_mask=attention_mask,
            encoder_outputs=(self.encoder_hidden_states,),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=keep,
            return_dict=True,
            **self.extra,
        )
        if self.extra:
            self.last_attentions = output.decoder_attentions
            self.last_cross_attentions = output.cross_attentions
            self.last_hidden_states = output.decoder_hidden_states
        return output.logits


class Sequence:
    """Rows chosen by one sampler and stopped by one list of criteria: a `generate` call, or one server request.

    `ids` holds the prompts and the tokens chosen so far ((R, capacity), `length` columns used); `newest` is the
    (R,) tokens of the latest step. A row is done when a criterion says so; the sequence is done when all its rows
    are, when `ids` is full, or when choosing failed (`error`). With `pad_id`, rows that are done get it while
    the others go on (the reference does so when an EOS criterion is among the criteria). `record`, when given,
    sees each step's logits and scores (`record.step(logits, scores)`) and hands the criteria the scores so far
    (`record.scores_so_far()`): generate's output_scores and its relatives.
    """

    def __init__(self, input_ids: torch.Tensor, capacity: int, sampler: Sampler, criteria: StoppingCriteriaList,
                 pad_id: int | None = None, record=None):
        rows, prompt_length = input_ids.shape
        self.ids = input_ids.new_full((rows, max(capacity, prompt_length + 1)), 0 if pad_id is None else pad_id)
        self.ids[:, :prompt_length] = input_ids
        self.rows, self.capacity = self.ids.shape  # as numbers, where reading ids.shape cost a torch call a step
        self.prompt_length = self.length = prompt_length
        self.sampler, self.criteria, self.pad_id, self.record = sampler, criteria, pad_id, record
        self.one_row_stops = OneRowStops.of(criteria) if rows == 1 else None
        # One row on the CPU is written through a NumPy view of it: the tensor's indexed assignment cost 40-50 us a
        # token right after a decoding step had streamed the weights through the caches, the NumPy item's ~7.
        self._row = self.ids[0].numpy() if self.one_row_stops is not None and self.ids.device.type == "cpu" else None
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        self.stopped = False  # with one_row_stops: its answer, as a bool (`unfinished` holds it too)
        self.newest: torch.Tensor | None = None
        self.error: Exception | None = None

    @property
    def done(self) -> bool:
        if self.error is not None or self.length == self.capacity:
            return True
        if self.one_row_stops is not None:
            return self.stopped
        unfinished = self.unfinished  # one row: read as it is, where any() is one operation more a step
        return not bool(unfinished if self.rows == 1 else unfinished.any())

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Choose the rows' next tokens from their (R, V) logits, append them and check which rows stop."""
        logits = logits.float()
        scores = self.sampler.scores(self.ids[:, : self.length], logits)
        if self.record is not None:
            self.record.step(logits, scores)
        return self.append(self.sampler.choose(scores))

    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append the (R,) tokens chosen for the rows and check which rows stop; returns the tokens appended."""
        if self.one_row_stops is not None:  # generate's own criteria, one row: decided without tensors
            token = int(tokens)
            if self._row is not None:
                self._row[self.length] = token
            else:
                self.ids[:, self.length] = tokens
            self.length += 1
            self.newest = tokens
            if self.one_row_stops(self.length, token):
                self.stopped = True
                self.unfinished.fill_(False)
            return tokens
        if self.pad_id is not None and self.rows > 1:  # one row stopped ends the sequence: it takes no padding
            tokens = torch.where(self.unfinished, tokens, self.pad_id)
        self.ids[:, self.length] = tokens
        self.length += 1
        self.newest = tokens
        scores = self.record.scores_so_far() if self.record is not None else None
        self.unfinished.masked_fill_(self.criteria(self.ids[:, : self.length], scores), False)
        return tokens

    def run_greedy(self, decoder: Decoder) -> bool:
        """Let the decoder make this row's next tokens in one call (Decoder.run_greedy) where the choice is the
        argmax of the raw logits and only generate's own criteria stop the row, so that the tokens and the stop are
        those of single steps; True if it made any (appended, and the stops checked, as `append` does)."""
        stops = self.one_row_stops
        if stops is None or self._row is None or self.record is not None or not self.sampler.takes_argmax_of_logits:
            return False
        count = min([self.capacity - self.length] + [c.max_length - self.length for c in stops.lengths])
        if count < 2:  # one step costs what a run of one does
            return False
        eos = sorted(set().union(*(c.ids() for c in stops.eos)))
        made = decoder.run_greedy(self.newest, count, eos, self.ids[0, self.length : self.length + count])
        if not made:
            return False
        for token in self._row[self.length : self.length + made].tolist():
            self.length += 1
            self.stopped = stops(self.length, token) or self.stopped
        if self.stopped:
            self.unfinished.fill_(False)
        self.newest = self.ids[0, self.length - 1 : self.length]
        return True

    def finish_reason(self, row: int = 0) -> str:
        """Why a row stopped: "stop" when it met an end (an EOS id, a stop string, a criterion of the caller's),
        "length" when it ran out of room (its length or time limit). Read at the step the row stopped: with
        `pad_id`, later steps append padding that meets no end."""
        ids = self.ids[row : row + 1, : self.length]
        ends = [c for c in self.criteria if not isinstance(c, (MaxLengthCriteria, MaxTimeCriteria))]
        return "stop" if any(bool(torch.as_tensor(c(ids, None)).any()) for c in ends) else "length"


class Batch:
    """Sequences decoded together, one token per row and step; they join and leave between steps.

    A sequence joins once its prompt is prefilled, by a Decoder of its own, and its first token chosen from the
    prefill's logits; its rows are appended to the batch's (`Decoder.append_rows`). Each `step` feeds every row
    its newest token in one forward pass, then each sequence chooses its rows' next tokens; a sequence whose
    choice fails (its processors or draw raise) gets `error` set and the others go on. Finished sequences
    `leave`, and the padding no remaining row needs goes with them.
    """

    def __init__(self):
        self.decoder: Decoder | None = None
        self.sequences: list[Sequence] = []

    def join(self, sequence: Sequence, decoder: Decoder) -> None:
        """Add a prefilled sequence, `decoder` holding its rows' cache (it becomes the batch's, or is merged)."""
        if self.decoder is None:
            self.decoder = decoder
        else:
            self.decoder.append_rows(decoder)
        self.sequences.append(sequence)

    def step(self) -> None:
        """One forward pass for every row, then each sequence's choice of its next tokens (see `newest`)."""
        sequences = self.sequences
        tokens = sequences[0].newest if len(sequences) == 1 else torch.cat([s.newest for s in sequences])
        logits = self.decoder.step(tokens)
        argmax = self.decoder.argmax  # one argmax over the batch for every sequence that takes it of the raw logits
        start = 0
        for sequence in sequences:
            end = start + sequence.rows
            try:
                if sequence.sampler.takes_argmax_of_logits and sequence.record is None:
                    argmax = first_argmax(logits) if argmax is None else argmax
                    sequence.append(argmax if len(sequences) == 1 else argmax[start:end])
                else:
                    sequence.choose(logits[start:end])
            except Exception as error:  # one sequence's processors failed: it ends, the others go on
                sequence.error = error
            start = end

    def leave(self, leaving: list[Sequence]) -> None:
        """Take these sequences out of the batch."""
        gone = {id(sequence) for sequence in leaving}
        kept, rows, start = [], [], 0
        for sequence in self.sequences:
            if id(sequence) not in gone:
                kept.append(sequence)
                rows.extend(range(start, start + sequence.rows))
            start += sequence.rows
        if not kept:
            self.decoder = None
        elif len(kept) < len(self.sequences):
            self.decoder.keep_rows(torch.tensor(rows, device=kept[0].ids.device))
        self.sequences = kept


def decode(decoder: Decoder, sequence: Sequence, expand: int = 1, runs: bool = False) -> Iterator[torch.Tensor]:
    """Greedy decoding or sampling of one sequence: prefill (each prompt row repeated `expand` times), then one
    step per token; yields the (R,) tokens of each step until the sequence is done. With `runs` (a caller that
    takes the tokens only once the sequence is done: generate without a streamer), a greedy row may make several
    tokens in one call (Sequence.run_greedy), each still yielded."""
    yield sequence.choose(decoder.prefill(expand))
    batch = Batch()
    batch.join(sequence, decoder)
    while not sequence.done:
        start = sequence.length
        # A row that made no run (sampled, hooked, soft-capped, ...) would make none later: it is not asked again,
        # where asking repeated the model's shortcut checks before each of its single steps.
        runs = runs and sequence.run_greedy(decoder)
        if runs:
            yield from (sequence.ids[:, column] for column in range(start, sequence.length))
            continue
        batch.step()
        if sequence.error is not None:
            raise sequence.error
        yield sequence.newest

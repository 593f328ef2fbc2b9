"""The decoding loops, kept apart from the model, the cache and the logits processors.

`GenerationMixin.generate` resolves the options into a `GenerationConfig` (config.py), checks the inputs, builds
the logits processors (processors.py) and the stopping criteria (stopping_criteria.py) once, with the user's own
appended, and runs one of three loops over a `Decoder` (steps.py, the decoding core shared with the server),
which feeds the model through the forward contract (docs/architecture.md) and keeps the KV cache, mask and
positions:
- `sample_loop`: greedy decoding or multinomial sampling, one token per row and step, as a `Sequence` of the
  core with its `Sampler` (sampling.py), so that the server's continuous batching chooses tokens the same way;
- `beam_search`: the reference's beam search, vectorized over (batch, beams), reordering the cache each step;
- `assisted_loop`: greedy decoding or sampling that checks several proposed tokens per forward pass (a draft
  model or prompt lookup, candidates.py), giving the tokens plain decoding gives.
A row stops when a stopping criterion says so (length, time, EOS, stop strings, the user's).
"""

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from ..acceleration import accelerator
from .cache import Cache, cut_back
from .candidates import AssistedCandidateGenerator, CandidateGenerator, PromptLookupCandidateGenerator
from .config import GenerationConfig, resolve_generation_config
from .options import OPTIONS, OPTIONS_BY_NAME
from .outputs import ModelOutput
from .processors import apply_processors, build_processors
from .sampling import Sampler
from .static_cache import cache_for_generation, forward_for_decoding
from .steps import Decoder, Seq2SeqDecoder, Sequence, build_stopping_criteria, decode
from .stopping_criteria import StoppingCriteriaList

_BANNED = -1.0e9  # the reference's score for beams that may not be chosen; kept identical so ties break the same way
DEFAULT_NEW_TOKENS = 20  # what generate() makes when no length is set anywhere (the reference's max_length default)


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """What greedy decoding and sampling return with return_dict_in_generate=True.

    sequences: (N, T) prompt and generated ids, N = batch * num_return_sequences.
    scores: one (N, V) tensor per step, the processed scores (output_scores=True); logits: the raw logits of each
    step (output_logits=True); attentions, hidden_states: per step, the model's per-layer tuples
    (output_attentions / output_hidden_states); cache: the KV cache (also read as `past_key_values`).
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cache: Cache | None = None


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """What beam search returns with return_dict_in_generate=True: as GenerateDecoderOnlyOutput, plus

    sequences_scores: (N,) the length-penalized log-probability of each returned sequence (output_scores=True);
    beam_indices: (N, generated) the beam row each step's token was chosen from, -1 past the sequence's end.
    Scores are per beam row: (batch * num_beams, V) log-probabilities.
    """

    sequences: torch.Tensor
    sequences_scores: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    beam_indices: torch.Tensor | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cache: Cache | None = None


@dataclass
class GenerateEncoderDecoderOutput(ModelOutput):
    """What greedy decoding and sampling of an encoder-decoder return with return_dict_in_generate=True.

    sequences: (N, T) the decoder's ids, from decoder_start_token_id (or the decoder_input_ids given) on.
    encoder_attentions, encoder_hidden_states: the encoder's per-layer tuples, computed once
    (output_attentions / output_hidden_states); decoder_attentions, cross_attentions, decoder_hidden_states: per
    step, the decoder's per-layer tuples. scores, logits, cache: as in GenerateDecoderOnlyOutput (the cache is an
    EncoderDecoderCache).
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple | None = None
    encoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    decoder_hidden_states: tuple | None = None
    cache: Cache | None = None


@dataclass
class GenerateBeamEncoderDecoderOutput(ModelOutput):
    """What beam search of an encoder-decoder returns with return_dict_in_generate=True: the fields of
    GenerateEncoderDecoderOutput, plus sequences_scores and beam_indices as in GenerateBeamDecoderOnlyOutput."""

    sequences: torch.Tensor
    sequences_scores: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    beam_indices: torch.Tensor | None = None
    encoder_attentions: tuple | None = None
    encoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    decoder_hidden_states: tuple | None = None
    cache: Cache | None = None


# The reference's unions of those classes, for annotations and isinstance checks (`GenerateOutput`).
GenerateNonBeamOutput = GenerateDecoderOnlyOutput | GenerateEncoderDecoderOutput
GenerateBeamOutput = GenerateBeamDecoderOnlyOutput | GenerateBeamEncoderDecoderOutput
GenerateOutput = GenerateNonBeamOutput | GenerateBeamOutput

# Options the loops read beside the strategy's own; an explicit None (generate(max_time=None)) means the default.
_LOOP_OPTIONS = ("max_time", "output_attentions", "output_hidden_states", "prompt_lookup_num_tokens",
                 "max_matching_ngram_size", "num_assistant_tokens", "num_assistant_tokens_schedule",
                 "assistant_confidence_threshold", "is_assistant")


@dataclass
class _Run:
    """Everything a decoding loop needs besides the Decoder: resolved once by `generate`."""

    config: GenerationConfig
    processors: list
    criteria: StoppingCriteriaList
    max_length: int  # the output buffer's length, prompt included
    generator: torch.Generator | None = None
    streamer: object | None = None
    synced_gpus: bool = False
    output_attentions: bool = False
    output_hidden_states: bool = False

    @property
    def sampler(self) -> Sampler:
        """The processors and the choice of the next token, as every loop but beam search uses them."""
        return Sampler(self.processors, self.config.do_sample, self.generator)


class GenerationMixin:
    """Adds `generate` and `compute_transition_scores` to a model that follows the forward contract."""

    @torch.inference_mode()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: list | None = None,
        stopping_criteria: list | None = None,
        prefix_allowed_tokens_fn=None,
        synced_gpus: bool | None = None,
        assistant_model=None,
        streamer=None,
        negative_prompt_ids: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        custom_generate=None,
        **kwargs,
    ) -> torch.Tensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
        """Continue `inputs` (token ids); returns the (N, T) ids, or an output object with return_dict_in_generate.

        As the reference's generate. Options (max_new_tokens, do_sample, num_beams, ...) come from the keyword
        arguments, then `generation_config`, then `self.generation_config` (skipped when a generation_config is
        passed with use_model_defaults=False), then the library defaults; without any length, 20 new tokens.
        Keyword arguments besides the options: input_ids (the same as `inputs`), attention_mask, past_key_values
        (a cache from an earlier call, holding a prefix of the ids), tokenizer (needed for stop_strings),
        assistant_tokenizer, generator (a torch.Generator for sampling), use_model_defaults; for an encoder-decoder
        inputs_embeds (B, T, C) is the prompt fed as embeddings instead of ids (the output then holds only the new
        tokens, or starts with the input_ids given too); for an encoder-decoder
        (config.is_encoder_decoder), `inputs` and attention_mask are the encoder's, and encoder_outputs (the
        encoder's output, instead of running it), inputs_embeds (the encoder's input embeddings, instead of ids),
        decoder_input_ids and decoder_attention_mask (the decoder's
        start) are taken too: the encoder runs once, the decoder from decoder_start_token_id, lengths count decoder
        tokens, and the returned ids are the decoder's (docs/architecture.md).
        `logits_processor` and `stopping_criteria` run after the ones the options build (one of the same type
        replaces the built one). `assistant_model` (sharing the vocabulary) or prompt_lookup_num_tokens=N make
        assisted decoding: several tokens checked per forward pass, the same tokens as without. `synced_gpus`
        keeps every process of a torch.distributed group stepping until all of them are done.
        """
        if custom_generate is not None:
            raise ValueError(
                "custom_generate (decoding code loaded from a Hub repository or passed as a function) is not "
                "supported: use the built-in strategies (greedy, sampling, beam search, assisted decoding) and "
                "logits_processor= / stopping_criteria= for custom behaviour."
            )
        inputs, attention_mask, token_type_ids = _inputs_and_mask(inputs, kwargs)
        encoder_decoder = bool(getattr(getattr(self, "config", None), "is_encoder_decoder", False))
        if encoder_decoder and token_type_ids is not None:
            raise ValueError(f"token_type_ids are an input of decoder-only models; {type(self).__name__} is an "
                             "encoder-decoder, whose encoder takes none: leave them out.")
        seq2seq = {name: kwargs.pop(name, None) for name in _SEQ2SEQ_INPUTS} if encoder_decoder else {}
        embeds = None if encoder_decoder else kwargs.pop("inputs_embeds", None)
        tokenizer = kwargs.pop("tokenizer", None)
        generator = kwargs.pop("generator", None)
        past_key_values = kwargs.pop("past_key_values", kwargs.pop("cache", None))
        use_model_defaults = kwargs.pop("use_model_defaults", None)
        kwargs.pop("trust_remote_code", None)  # only read by custom_generate, refused above
        if kwargs.pop("assistant_tokenizer", None) is not None:
            raise ValueError(
                "assistant_tokenizer is for a draft model with a different vocabulary, which is not supported: "
                "pass an assistant_model that shares the main model's tokenizer, without assistant_tokenizer."
            )

        model_config = getattr(self, "generation_config", None)
        if generation_config is not None and use_model_defaults is False:
            model_config = None  # the reference: the passed config, then the library defaults only
        default_length = _no_length_set(kwargs, generation_config, model_config)
        config, unknown = resolve_generation_config(model_config, generation_config, kwargs, stacklevel=5)
        loop = {name: _loop_option(config, name) for name in _LOOP_OPTIONS}
        if unknown:
            raise TypeError(
                f"generate() got unexpected keyword arguments: {sorted(unknown)}. It takes inputs/input_ids, "
                "attention_mask, (decoder-only models) token_type_ids, generation_config, logits_processor, stopping_criteria, prefix_allowed_tokens_fn, "
                "synced_gpus, assistant_model, streamer, negative_prompt_ids, negative_prompt_attention_mask, "
                "past_key_values, tokenizer, generator, use_model_defaults, inputs_embeds, (encoder-decoders) "
                "encoder_outputs, decoder_input_ids, decoder_attention_mask and the options of GenerationConfig: "
                f"{', '.join(GenerationConfig.option_names())}."
            )

        encoder_input_ids = None
        if encoder_decoder:
            encoder_input_ids, encoder_mask, encoded = _encode(self, inputs, attention_mask, seq2seq, loop)
            input_ids, attention_mask = _decoder_start(self, config, encoded, seq2seq)
        elif embeds is not None:
            input_ids, embeds = _prompt_embeddings(self, inputs, embeds)
            encoder_input_ids = input_ids
            attention_mask = _check_attention_mask(attention_mask, embeds[..., 0])
            _lengths_after_embeddings(config, input_ids.shape[1], embeds.shape[1], default_length)
        else:
            input_ids = encoder_input_ids = _check_input_ids(inputs, self)
            attention_mask = _check_attention_mask(attention_mask, input_ids)
        prompt_length = input_ids.shape[1]
        config.max_length = _total_length(config, prompt_length, default_length, self)
        config.max_new_tokens = config.max_length - prompt_length  # the same limit, for processors that read it
        assisted = assistant_model is not None or loop["prompt_lookup_num_tokens"] is not None
        if assisted and embeds is not None:
            raise ValueError("Assisted decoding (assistant_model or prompt_lookup_num_tokens) drafts from the prompt's "
                             "ids, which inputs_embeds replace: pass input_ids, or generate without an assistant.")
        if encoder_decoder:
            _check_encoder_decoder_strategy(config, assistant_model)
            if assistant_model is not None and encoder_input_ids is None:
                raise ValueError("An encoder-decoder's assistant_model runs its own encoder on the prompt ids: pass "
                                 "input_ids along with encoder_outputs.")
        _check_strategy(config, input_ids, streamer, assisted)

        rows = config.num_beams if config.num_beams > 1 else config.num_return_sequences
        mask = attention_mask.repeat_interleave(rows, 0) if attention_mask is not None else None
        processors = build_processors(
            config, prompt_length, mask, device=input_ids.device, logits_processor=logits_processor,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, negative_prompt_ids=negative_prompt_ids,
            negative_prompt_attention_mask=negative_prompt_attention_mask, model=self,
            encoder_input_ids=encoder_input_ids,
        )
        criteria = build_stopping_criteria(
            config, tokenizer=tokenizer, max_time=loop["max_time"], stopping_criteria=stopping_criteria,
            max_position_embeddings=_max_positions(self),
            confidence_threshold=loop["assistant_confidence_threshold"] if loop["is_assistant"] else None,
        )
        run = _Run(
            config, processors, criteria, max_length=criteria.max_length or config.max_length, generator=generator,
            streamer=streamer, synced_gpus=_synced(synced_gpus),
            output_attentions=bool(loop["output_attentions"]), output_hidden_states=bool(loop["output_hidden_states"]),
        )
        # (the positions a cache holds: the embedded prompt's where it is not the output's ids)
        positions = run.max_length + (0 if embeds is None else embeds.shape[1] - prompt_length)
        cache = cache_for_generation(self, config, past_key_values, positions)
        if encoder_decoder:
            decoder = Seq2SeqDecoder(self, input_ids, attention_mask, encoded.last_hidden_state, encoder_mask, cache,
                                     run.output_attentions, run.output_hidden_states)
        else:
            decoder = Decoder(forward_for_decoding(self, config, cache), input_ids, attention_mask, cache=cache,
                              output_attentions=run.output_attentions, output_hidden_states=run.output_hidden_states,
                              token_type_ids=token_type_ids, inputs_embeds=embeds)
        if assisted:
            encoder_inputs = dict(inputs_tensor=encoder_input_ids, model_kwargs={"attention_mask": encoder_mask}) \
                if encoder_decoder else {}
            candidates = _candidate_generator(self, assistant_model, input_ids, config, loop, processors,
                                              **encoder_inputs)
        # Torch's threads follow the accelerator's team (fewer on a crowded CPU) until the loop ends.
        with accelerator().threads_following_team(self):
            if assisted:
                output = assisted_loop(decoder, run, candidates)
            elif config.num_beams > 1:
                output = beam_search(decoder, run)
            else:
                output = sample_loop(decoder, run)
        if config.return_dict_in_generate:
            output.cache = decoder.cache
            return _with_encoder(output, encoded) if encoder_decoder else output
        return output.sequences

    def compute_transition_scores(
        self,
        sequences: torch.Tensor,
        scores: tuple[torch.Tensor, ...],
        beam_indices: torch.Tensor | None = None,
        normalize_logits: bool = False,
    ) -> torch.Tensor:
        """The score of each generated token: (N, steps), from generate's `scores` (and `beam_indices` for beams).

        Entry [r, t] is the score that step t gave the token row r holds at that step, read in the beam row
        `beam_indices[r, t]` (row r itself without beams); 0 where beam_indices is -1 (after the sequence ended).
        normalize_logits=True applies log_softmax to each step's scores first (for raw logits).
        """
        steps = torch.stack(scores, dim=1)  # (rows, steps, V)
        if normalize_logits:
            steps = torch.log_softmax(steps.float(), dim=-1)
        if beam_indices is None:
            beam_indices = torch.arange(steps.shape[0], device=sequences.device)[:, None].expand(-1, len(scores))
        ended = beam_indices < 0
        length = int((~ended).sum(dim=-1).max())  # steps that any sequence took
        beam_indices, ended = beam_indices[:, :length], ended[:, :length]
        tokens = sequences[:, sequences.shape[-1] - length:]  # the generated ids
        step = torch.arange(length, device=steps.device)
        chosen = steps[beam_indices.clamp(min=0).to(steps.device), step, tokens.to(steps.device)]
        return chosen.masked_fill(ended.to(chosen.device), 0.0)


def _pad_id(config: GenerationConfig) -> int:
    """The id that fills rows that stopped early: pad_token_id, else the first EOS id (as in the reference)."""
    if config.pad_token_id is not None:
        return config.pad_token_id
    return config.eos_token_ids[0] if config.eos_token_ids else 0


def _fills_finished_rows(criteria: StoppingCriteriaList) -> bool:
    """The reference pads rows that stopped only when an EOS criterion is among the criteria."""
    return any(hasattr(criterion, "eos_token_id") for criterion in criteria)


def _peers_running(done: bool, synced_gpus: bool, device: torch.device) -> bool:
    """With synced_gpus, whether any process of the group has rows left; one all-reduce per step and process."""
    if not synced_gpus:
        return not done
    flag = torch.tensor(0.0 if done else 1.0, device=device)
    torch.distributed.all_reduce(flag)
    return flag.item() > 0.0


def _wait_for_peers(decoder: Decoder, run: _Run, tokens: torch.Tensor) -> None:
    """A process that is done keeps stepping the model, its output unchanged, while others still decode.

    With FSDP or DeepSpeed ZeRO-3 each forward pass needs every process of the group, so one that left the loop
    early would leave the others waiting forever. Without synced_gpus this returns at once.
    """
    if not run.synced_gpus:
        return
    while _peers_running(True, True, tokens.device):
        decoder.step(tokens)


def _synced(synced_gpus: bool | None) -> bool:
    if not synced_gpus:
        return False
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return distributed and torch.distributed.get_world_size() > 1


def sample_loop(decoder: Decoder, run: _Run) -> GenerateDecoderOnlyOutput:
    """Greedy decoding or sampling: one token per row and step until every row stops (steps.decode)."""
    config, streamer = run.config, run.streamer
    rows = config.num_return_sequences
    input_ids = decoder.input_ids.repeat_interleave(rows, dim=0)
    record = _Record(config, run, decoder)
    sequence = Sequence(
        input_ids, run.max_length, run.sampler, run.criteria,
        pad_id=_pad_id(config) if _fills_finished_rows(run.criteria) else None,
        record=record if record.keeps_anything else None,
    )
    if streamer is not None:
        streamer.put(input_ids.cpu())
    for token in decode(decoder, sequence, expand=rows, runs=streamer is None and not run.synced_gpus):
        if streamer is not None:
            streamer.put(token.cpu())
        if run.synced_gpus and not sequence.done:
            _peers_running(False, True, input_ids.device)  # this process's share of the step's all-reduce
    _wait_for_peers(decoder, run, sequence.newest)
    if streamer is not None:
        streamer.end()
    return record.output_class(beams=False)(sequences=sequence.ids[:, : sequence.length], **record.fields())


class _Record:
    """The per-step outputs generate returns when asked (scores, logits, attentions, hidden states)."""

    def __init__(self, config: GenerationConfig, run: _Run, decoder: Decoder):
        keep = config.return_dict_in_generate
        self.decoder = decoder
        self.scores = [] if keep and config.output_scores else None
        self.logits = [] if keep and config.output_logits else None
        self.attentions = [] if keep and run.output_attentions else None
        self.hidden_states = [] if keep and run.output_hidden_states else None
        self.seq2seq = isinstance(decoder, Seq2SeqDecoder)
        self.cross_attentions = [] if self.seq2seq and self.attentions is not None else None

    @property
    def keeps_anything(self) -> bool:
        return any(kept is not None for kept in (self.scores, self.logits, self.attentions, self.hidden_states))

    def step(self, logits: torch.Tensor, scores: torch.Tensor) -> None:
        if self.logits is not None:
            self.logits.append(logits.clone())
        if self.scores is not None:
            self.scores.append(scores.clone())
        if self.attentions is not None:
            self.attentions.append(self.decoder.last_attentions)
        if self.hidden_states is not None:
            self.hidden_states.append(self.decoder.last_hidden_states)
        if self.cross_attentions is not None:
            self.cross_attentions.append(self.decoder.last_cross_attentions)

    def scores_so_far(self) -> tuple[torch.Tensor, ...] | None:
        """What stopping criteria receive as `scores`, as in the reference: None unless scores are kept."""
        return tuple(self.scores) if self.scores is not None else None

    def fields(self) -> dict:
        """The kept outputs under the names of the output class (an encoder-decoder's decoder_* fields)."""
        names = ("scores", "logits", "attentions", "hidden_states", "cross_attentions")
        kept = {name: tuple(getattr(self, name)) for name in names if getattr(self, name) is not None}
        if self.seq2seq:
            kept = {("decoder_" + name if name in ("attentions", "hidden_states") else name): value
                    for name, value in kept.items()}
        return kept

    def output_class(self, beams: bool) -> type:
        if self.seq2seq:
            return GenerateBeamEncoderDecoderOutput if beams else GenerateEncoderDecoderOutput
        return GenerateBeamDecoderOnlyOutput if beams else GenerateDecoderOnlyOutput


def assisted_loop(decoder: Decoder, run: _Run, candidates: CandidateGenerator) -> GenerateDecoderOnlyOutput:
    """Greedy decoding or sampling of one prompt, checking the candidate tokens proposed for several positions
    with one forward pass.

    Each round the model scores the position after the last accepted token and the positions after each
    candidate. Greedy: the candidates are kept up to the first that differs from the model's own choice, and that
    choice follows, so the tokens are those of plain greedy decoding. Sampling: with a draft model's scores,
    speculative sampling (a candidate is kept with probability min(1, p/q), a rejected one resampled from the
    remainder), whose tokens follow the model's own distribution; with prompt lookup (no draft scores), each
    position is sampled from the model and the candidates kept while they agree. The tokens are checked one by
    one against the stopping criteria, and the cache is cut back to the kept tokens; a cache that keeps states
    (Mamba's, the hybrids') goes back to where the round began instead (cache.cut_back), and the next round feeds
    the kept tokens again before its candidates, in the same forward pass.
    """
    config, criteria, streamer = run.config, run.criteria, run.streamer
    ids = decoder.input_ids
    if streamer is not None:
        streamer.put(ids.cpu())
    record = _Record(config, run, decoder)
    next_logits = decoder.prefill()[:, None]  # (1, 1, V): the model's logits for the position after `ids`
    cached = ids.shape[1]  # positions in the model's cache
    done = False
    while not done:
        room = run.max_length - ids.shape[1] - 1  # candidates that leave room for the model's own token
        proposed, draft_scores = candidates.get_candidates(ids) if room > 0 else (ids, None)
        proposed = proposed[:, ids.shape[1]: ids.shape[1] + max(room, 0)]
        k = proposed.shape[1]
        # The accepted tokens the cache lacks: the last one, unless the prefill has just scored it (more where a
        # state cache went back to the start of the last round).
        pending = ids[:, cached:]
        fed = torch.cat([pending, proposed], dim=1)
        snapshot = None if decoder.cache.croppable else decoder.cache.snapshot()
        logits = decoder.feed(fed, keep=min(fed.shape[1], k + 1)) if fed.shape[1] else next_logits[:, :0]
        if pending.shape[1] == 0:
            logits = torch.cat([next_logits, logits], dim=1)  # (1, k + 1, V)
        logits = logits.float()
        extended = torch.cat([ids, proposed], dim=1)
        scores = torch.stack([run.sampler.scores(extended[:, : ids.shape[1] + i], logits[:, i])
                              for i in range(k + 1)], dim=1)
        kept = _accept(proposed, scores, draft_scores[:, :k] if draft_scores is not None else None, config, run)
        candidates.update_candidate_strategy(ids, scores, kept.shape[1] - 1)
        for i, token in enumerate(kept[0].tolist()):
            record.step(logits[:, i], scores[:, i])
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
            if streamer is not None:
                streamer.put(ids.new_tensor([token]).cpu())
            if bool(criteria(ids, record.scores_so_far()).any()) or ids.shape[1] >= run.max_length:
                done = True
                break
        # The cache keeps every accepted token but the last, which the next round feeds.
        cached = cut_back(decoder.cache, ids.shape[1] - 1, snapshot)
        if run.synced_gpus and not done:
            _peers_running(False, True, ids.device)
    if cached < ids.shape[1] - 1:  # a state cache that went back: it holds every token but the last, as a crop leaves
        decoder.feed(ids[:, cached:-1], keep=1)
    _wait_for_peers(decoder, run, ids[:, -1])
    if streamer is not None:
        streamer.end()
    return record.output_class(beams=False)(sequences=ids, **record.fields())


def _accept(proposed: torch.Tensor, scores: torch.Tensor, draft_scores: torch.Tensor | None,
            config: GenerationConfig, run: _Run) -> torch.Tensor:
    """(1, n + 1): the n leading candidates kept and the model's token after them."""
    k = proposed.shape[1]
    if config.do_sample and draft_scores is not None:
        return _speculative_sample(proposed, scores, draft_scores, run.generator)
    chosen = run.sampler.choose(scores[0])[None]  # (1, k + 1): the model's own token at each position
    agree = (chosen[:, :k] == proposed).int().cumprod(dim=-1)
    n = int(agree.sum())
    return chosen[:, : n + 1]


def _speculative_sample(proposed, scores, draft_scores, generator) -> torch.Tensor:
    """Speculative sampling (Leviathan et al., 2023): the tokens follow the model's distribution p exactly.

    Candidate i, drawn from the draft's q, is kept with probability min(1, p_i / q_i); the first rejected one is
    redrawn from max(p - q, 0) normalized; when all are kept, one more token is drawn from p.
    """
    k = proposed.shape[1]
    p = scores[0].softmax(dim=-1)  # (k + 1, V)
    q = draft_scores[0].float().softmax(dim=-1)  # (k, V)
    index = torch.arange(k, device=p.device)
    token = proposed[0]
    ratio = p[index, token] / q[index, token]
    draws = torch.rand(k, device=p.device, generator=generator)
    rejected = (draws > ratio).nonzero()
    n = int(rejected[0]) if rejected.numel() else k
    if n < k:
        remainder = (p[n] - q[n]).clamp(min=0)
        remainder = remainder / remainder.sum() if float(remainder.sum()) > 0 else p[n]
        last = torch.multinomial(remainder, 1, generator=generator)
    else:
        last = torch.multinomial(p[k], 1, generator=generator)
    return torch.cat([token[:n], last]).view(1, -1)


def _candidate_generator(model, assistant_model, input_ids, config, loop: dict, processors,
                         **encoder_inputs) -> CandidateGenerator:
    if loop["prompt_lookup_num_tokens"] is not None:
        return PromptLookupCandidateGenerator(
            eos_token_id=config.eos_token_ids or None, num_output_tokens=loop["prompt_lookup_num_tokens"],
            max_matching_ngram_size=loop["max_matching_ngram_size"] or 2, max_length=config.max_length,
            logits_processor=processors, vocab_size=getattr(model.config, "vocab_size", None),
        )
    options = {name: loop[name] for name in ("num_assistant_tokens", "num_assistant_tokens_schedule",
                                             "assistant_confidence_threshold")}
    return AssistedCandidateGenerator(input_ids, assistant_model, config, logits_processor=processors,
                                      **encoder_inputs, **options)


def beam_search(decoder: Decoder, run: _Run) -> GenerateBeamDecoderOnlyOutput:
    """The reference's beam search (with sampling when do_sample), vectorized over (batch, beams).

    Each step, every running beam proposes its continuations; the best `keep` of the B x (K * V) candidates
    (enough that K of them do not end) are scored by their summed log-probabilities. Candidates that end (EOS,
    stop string, length limit) compete, with the length penalty, for the K finished slots of their prompt;
    the best K that do not end become the running beams, and the cache follows them with `reorder`.
    """
    config, criteria, generator = run.config, run.criteria, run.generator
    K = config.num_beams
    input_ids = decoder.input_ids
    B, prompt_length = input_ids.shape
    total_length = max(run.max_length, prompt_length + 1)
    max_new_tokens = total_length - prompt_length
    device = input_ids.device
    length_penalty, early_stopping = config.length_penalty, config.early_stopping
    keep = max(2, 1 + len(config.eos_token_ids)) * K
    in_top_k = torch.arange(keep, device=device) < K  # only the K best candidates may finish a sequence
    batch_offset = torch.arange(B, device=device)[:, None] * K

    # The reference's fill reads `pad_token_id or eos`, so a pad id of 0 (T5's) gives way to the EOS id here.
    fill = (config.pad_token_id or config.eos_token_ids[0]) if config.eos_token_ids else -1
    running = input_ids.new_full((B, K, total_length), fill)
    running[:, :, :prompt_length] = input_ids[:, None]
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = _BANNED  # all beams start equal: only the first one may propose continuations
    running_origins = torch.full((B, K, max_new_tokens), -1, dtype=torch.long, device=device)
    finished, finished_origins = running.clone(), running_origins.clone()
    finished_scores = torch.full((B, K), _BANNED, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    record = _Record(config, run, decoder)

    logits = decoder.prefill(expand=K)
    length = prompt_length
    while True:
        logits = logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = apply_processors(run.processors, running[:, :, :length].flatten(0, 1), log_probs)
        record.step(logits, log_probs)
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
        ends = criteria(candidates[:, :, : length + 1].flatten(0, 1), record.scores_so_far()).view(B, keep)
        ends = ends | (length + 1 >= total_length)

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
            _wait_for_peers(decoder, run, running[:, :, length - 1].flatten())
            break
        decoder.reorder_beams(running_origins[:, :, length - 1 - prompt_length].flatten())
        logits = decoder.step(running[:, :, length - 1].flatten())

    rows = config.num_return_sequences
    sequences = finished[:, :rows].flatten(0, 1)
    origins = finished_origins[:, :rows].flatten(0, 1)
    generated = int((origins >= 0).sum(dim=1).max())
    return record.output_class(beams=True)(
        sequences=sequences[:, : prompt_length + generated],
        sequences_scores=finished_scores[:, :rows].flatten() if config.output_scores else None,
        beam_indices=origins[:, :generated] if config.return_dict_in_generate else None,
        **record.fields(),
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


def _inputs_and_mask(inputs, kwargs: dict):
    """The prompt ids, mask and token types from `inputs`, an `input_ids=` keyword, or what tokenizer(...) returns."""
    if "input_ids" in kwargs:
        if inputs is not None:
            raise ValueError("generate() got the prompt twice, as inputs and as input_ids=: pass only one of them.")
        inputs = kwargs.pop("input_ids")
    attention_mask = kwargs.pop("attention_mask", None)
    token_type_ids = kwargs.pop("token_type_ids", None)
    if isinstance(inputs, Mapping):
        # What tokenizer(...) and apply_chat_template(..., return_dict=True) return: take its ids, mask and types.
        attention_mask = inputs.get("attention_mask") if attention_mask is None else attention_mask
        token_type_ids = inputs.get("token_type_ids") if token_type_ids is None else token_type_ids
        inputs = inputs.get("input_ids")
    return inputs, attention_mask, token_type_ids


# generate's keyword arguments for an encoder-decoder besides the encoder's inputs.
_SEQ2SEQ_INPUTS = ("encoder_outputs", "inputs_embeds", "decoder_input_ids", "decoder_attention_mask")


def _encode(model, inputs, attention_mask, seq2seq: dict, loop: dict):
    """The encoder's ids (None when encoder_outputs or inputs_embeds are given instead), its mask, and its output,
    computed once here."""
    encoder_outputs, embeds = seq2seq["encoder_outputs"], seq2seq["inputs_embeds"]
    options = dict(output_attentions=bool(loop["output_attentions"]),
                   output_hidden_states=bool(loop["output_hidden_states"]), return_dict=True)
    if encoder_outputs is None and embeds is not None:
        if inputs is not None:
            raise ValueError("generate() got both input_ids and inputs_embeds for the encoder: pass one of them.")
        mask = None if attention_mask is None else _check_attention_mask(
            attention_mask, embeds.new_zeros(embeds.shape[:2], dtype=torch.long), right_padding_ok=True)
        return None, mask, model.get_encoder()(None, attention_mask=mask, inputs_embeds=embeds, **options)
    if encoder_outputs is not None:
        if not hasattr(encoder_outputs, "last_hidden_state"):
            raise TypeError("encoder_outputs must be what the model's encoder returns (an output with "
                            f"last_hidden_state), got {type(encoder_outputs).__name__}.")
        ids = None if inputs is None else _check_input_ids(inputs, model)
        hidden = encoder_outputs.last_hidden_state
        mask = None if attention_mask is None else _check_attention_mask(
            attention_mask, hidden.new_zeros(hidden.shape[:2], dtype=torch.long), right_padding_ok=True)
        return ids, mask, encoder_outputs
    ids = _check_input_ids(inputs, model)
    mask = _check_attention_mask(attention_mask, ids, right_padding_ok=True)  # encoders read both paddings alike
    return ids, mask, model.get_encoder()(ids, attention_mask=mask, **options)


def _decoder_start(model, config: GenerationConfig, encoded, seq2seq: dict):
    """The decoder's first ids and mask: decoder_input_ids=, led by decoder_start_token_id (prepended when no row
    starts with it, as the reference does), else that id alone per row. The id is the generation config's (which
    takes the model config's), else its bos_token_id."""
    hidden = encoded.last_hidden_state
    start_id = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start_id is None:
        raise ValueError(
            "An encoder-decoder starts decoding from decoder_start_token_id, which the generation config does not set "
            "(nor bos_token_id): pass generate(..., decoder_start_token_id=ID) (T5 uses its pad id, 0)."
        )
    start = torch.as_tensor(start_id, dtype=torch.long, device=hidden.device).view(-1, 1)
    start = start.expand(hidden.shape[0], 1) if start.shape[0] == 1 else start
    if start.shape[0] != hidden.shape[0]:
        raise ValueError(f"decoder_start_token_id has {start.shape[0]} ids, one per prompt is {hidden.shape[0]}.")
    ids, mask = seq2seq["decoder_input_ids"], seq2seq["decoder_attention_mask"]
    if ids is None:
        return start, None
    ids = _check_input_ids(ids, model)
    mask = _check_attention_mask(mask, ids) if mask is not None else None
    if bool((ids[:, 0] != start[:, 0]).all()):
        ids = torch.cat([start, ids], dim=1)
        mask = None if mask is None else torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
    return ids, mask


def _check_encoder_decoder_strategy(config: GenerationConfig, assistant_model) -> None:
    if assistant_model is not None and not getattr(getattr(assistant_model, "config", None), "is_encoder_decoder",
                                                   False):
        raise ValueError("The assistant_model of an encoder-decoder must be an encoder-decoder too (a smaller one "
                         "sharing the vocabulary, such as flan-t5-small for flan-t5-xl).")
    if config.guidance_scale is not None and config.guidance_scale != 1:
        raise ValueError(f"guidance_scale={config.guidance_scale} (classifier-free guidance) is for decoder-only "
                         "models; leave guidance_scale unset for an encoder-decoder.")
    if config.cache_implementation is not None:
        raise ValueError(f"cache_implementation={config.cache_implementation!r}: encoder-decoders decode with a "
                         "growing EncoderDecoderCache; leave cache_implementation unset.")


def _with_encoder(output, encoded):
    """The encoder-decoder output with the encoder's attentions and hidden states, one row per prompt (as the
    reference, which repeats only the encoder's last hidden state for the beams)."""
    values = {**output, **{"encoder_" + name: encoded.get(name) for name in ("attentions", "hidden_states")}}
    return type(output)(**{f.name: values[f.name] for f in fields(output) if values.get(f.name) is not None})


def _no_length_set(kwargs: dict, passed: GenerationConfig | None, model_config: GenerationConfig | None) -> bool:
    """True when no max_length or max_new_tokens is set anywhere: generate then makes DEFAULT_NEW_TOKENS tokens."""
    names = ("max_length", "max_new_tokens")
    values = [kwargs.get(n) for n in names] + [getattr(c, n, None) for c in (passed, model_config) for n in names]
    return all(value is None for value in values)


def _loop_option(config: GenerationConfig, name: str):
    value = getattr(config, name)
    return OPTIONS_BY_NAME[name].default if value is None else value


def _max_positions(model) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def _total_length(config: GenerationConfig, prompt_length: int, default_length: bool, model) -> int:
    """The length generation stops at, prompt included, as the reference computes it.

    max_new_tokens counts from the prompt; an explicit max_length counts the prompt; with neither, the prompt
    plus DEFAULT_NEW_TOKENS, capped at the model's max_position_embeddings.
    """
    if default_length:
        total = prompt_length + DEFAULT_NEW_TOKENS
        positions = _max_positions(model)
        total = min(total, positions) if positions is not None else total
        if total <= prompt_length:
            raise ValueError(
                f"The prompt has {prompt_length} tokens, as many as the model's max_position_embeddings "
                f"({positions}): there is no room to generate. Shorten the prompt, or pass max_new_tokens=N."
            )
        return total
    if config.max_new_tokens is not None:
        return prompt_length + config.max_new_tokens
    if config.max_length <= prompt_length:
        raise ValueError(
            f"max_length={config.max_length} leaves no room to generate: the prompt already has {prompt_length} "
            f"tokens and max_length counts them. Pass a larger max_length, or max_new_tokens=N instead."
        )
    return config.max_length


def _check_strategy(config: GenerationConfig, input_ids: torch.Tensor, streamer, assisted: bool) -> None:
    # Strategies the reference no longer ships: it runs them from Hub repositories with trust_remote_code=True.
    for option in OPTIONS:
        value = getattr(config, option.name)
        if option.refused_if is not None and value is not None and option.refused_if(value):
            raise ValueError(
                f"{option.name}={value!r} asks for {option.feeds}, which openformers does not run (the reference "
                "loads it as Hub code with trust_remote_code=True). Greedy decoding, sampling, beam search and "
                f"assisted decoding are available: leave {option.name} unset."
            )
    if streamer is not None and not all(callable(getattr(streamer, name, None)) for name in ("put", "end")):
        raise TypeError(
            f"streamer must be an object with put(token_ids) and end() methods, such as TextStreamer(tokenizer) or "
            f"TextIteratorStreamer(tokenizer); got {type(streamer).__name__}."
        )
    if streamer is not None and (config.num_beams > 1 or input_ids.shape[0] * config.num_return_sequences > 1):
        raise ValueError(
            "streamer streams one sequence: use it with one prompt, num_beams=1 and num_return_sequences=1."
        )
    if assisted and (config.num_beams > 1 or input_ids.shape[0] * config.num_return_sequences > 1):
        raise ValueError(
            "Assisted decoding (assistant_model= or prompt_lookup_num_tokens=) continues one prompt with one "
            f"sequence, greedy or sampled; got {input_ids.shape[0]} prompts, num_beams={config.num_beams} and "
            f"num_return_sequences={config.num_return_sequences}. Generate prompts one at a time, without beams."
        )


def _prompt_embeddings(model, inputs, embeds) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder-only generate's inputs_embeds (B, T, C), fed instead of the prompt's ids, and the ids the output
    starts with: the input_ids given alongside (as in the reference, which feeds the embeddings for them), else
    none, (B, 0), so that the output holds only the new tokens."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or not embeds.is_floating_point():
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"inputs_embeds must be a float tensor shaped (batch, length, hidden_size), got {shape}: "
                         "the model's get_input_embeddings()(input_ids), for instance.")
    weight = next(model.parameters())
    embeds = embeds.to(device=weight.device)
    if inputs is None:
        return torch.empty(embeds.shape[0], 0, dtype=torch.long, device=weight.device), embeds
    ids = _check_input_ids(inputs, model)
    if ids.shape[0] != embeds.shape[0]:
        raise ValueError(f"input_ids has {ids.shape[0]} rows but inputs_embeds {embeds.shape[0]}: one prompt each.")
    return ids, embeds


def _lengths_after_embeddings(config: GenerationConfig, ids: int, positions: int, default_length: bool) -> None:
    """As the reference: where the output's ids are not the embedded prompt (none were given), an explicit max_length
    and min_length count the embedded positions too, so take them off."""
    if ids == positions:
        return
    if config.max_new_tokens is None and not default_length:
        config.max_length -= positions
    if config.min_new_tokens is None and config.min_length:
        config.min_length = max(config.min_length - positions, 0)


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


def _check_attention_mask(attention_mask, input_ids: torch.Tensor,
                          right_padding_ok: bool = False) -> torch.Tensor | None:
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
    if not right_padding_ok and bool((attention_mask[:, -1] == 0).any()):
        warnings.warn(
            "A row of input_ids is right-padded (its last attention_mask entry is 0); decoder-only models must be "
            "left-padded for generation, or that row continues from its padding: set tokenizer.padding_side = 'left'.",
            stacklevel=4,
        )
    return attention_mask


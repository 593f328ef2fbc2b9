"""Candidate tokens for assisted decoding: guesses at the next few tokens, which the model checks in one pass.

`generate(..., assistant_model=draft)` or `generate(..., prompt_lookup_num_tokens=N)` runs decoding.assisted_loop,
which asks a candidate generator for guesses each round, keeps those the model agrees with, and reports back:
- `get_candidates(input_ids) -> (input_ids + candidates, candidate_scores or None)`, for one prompt (1, T);
- `update_candidate_strategy(input_ids, scores, num_matches)` after each round, to adapt how many to propose.
A good guess saves a forward pass of the large model per token; a bad one costs only the guessing.
"""

import torch

from .cache import DynamicCache, EncoderDecoderCache, cut_back, new_cache


class CandidateGenerator:
    """The base class: subclasses implement `get_candidates` and may adapt in `update_candidate_strategy`."""

    def get_candidates(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise TypeError(
            f"{type(self).__name__} must define get_candidates(input_ids) returning (input_ids followed by the "
            "candidate ids, their (1, n, V) scores or None); CandidateGenerator is only the base class."
        )

    def update_candidate_strategy(self, input_ids: torch.Tensor, scores: torch.Tensor, num_matches: int) -> None:
        """Called after each round with how many candidates the model kept; the base class does nothing."""


class AssistedCandidateGenerator(CandidateGenerator):
    """Candidates from a smaller draft model that shares the main model's vocabulary, decoded greedily (or
    sampled, when the main model samples) with the same logits processors.

    The draft keeps its own cache across rounds, cut back to the tokens the main model kept (a draft whose layers
    keep states goes back to its state after the last round's ids and feeds the kept tokens from there).
    `num_assistant_tokens` candidates are proposed per round; with num_assistant_tokens_schedule="heuristic"
    that number grows by 2 after a round where all were kept and shrinks by 1 otherwise (the reference's rule).
    The draft stops early at an EOS id, or when its probability for its own token falls below
    `assistant_confidence_threshold`. A decoder-only draft needs nothing from `model_kwargs` and `inputs_tensor`
    (the ids are passed to each `get_candidates`); an encoder-decoder's draft runs its own encoder once on
    `inputs_tensor` (the prompt ids, with model_kwargs["attention_mask"]) and decodes the main model's decoder ids.
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        assistant_model,
        generation_config,
        model_kwargs: dict | None = None,
        inputs_tensor: torch.Tensor | None = None,
        logits_processor: list | None = None,
        num_assistant_tokens: int | None = None,
        num_assistant_tokens_schedule: str | None = None,
        assistant_confidence_threshold: float | None = None,
    ):
        if assistant_model is None or not callable(assistant_model):
            raise TypeError(f"assistant_model must be a causal LM model, got {type(assistant_model).__name__}.")
        self.assistant_model = assistant_model
        self.generation_config = generation_config
        self.logits_processor = list(logits_processor or [])
        draft_config = getattr(assistant_model, "generation_config", None)

        def option(given, name, default):
            """The value passed, else the draft's generation_config's, else the reference's default."""
            if given is None and draft_config is not None:
                given = getattr(draft_config, name, None)
            return default if given is None else given

        self.num_assistant_tokens = option(num_assistant_tokens, "num_assistant_tokens", 20)
        self.schedule = option(num_assistant_tokens_schedule, "num_assistant_tokens_schedule", "constant")
        self.confidence_threshold = option(assistant_confidence_threshold, "assistant_confidence_threshold", 0.4)
        if self.schedule not in ("constant", "heuristic", "heuristic_transient"):
            raise ValueError(
                f"num_assistant_tokens_schedule must be 'constant', 'heuristic' or 'heuristic_transient', "
                f"got {self.schedule!r}."
            )
        self._initial_tokens = self.num_assistant_tokens
        self.eos_ids = torch.tensor(generation_config.eos_token_ids, dtype=torch.long, device=input_ids.device)
        self.do_sample = bool(generation_config.do_sample)
        self.cache = new_cache(assistant_model)
        self._cached: list[int] = []  # the ids whose keys and values the draft's cache holds
        self._snapshot = None  # a state cache's snapshot() after the ids of the last round
        self.encoder_inputs = None
        if getattr(getattr(assistant_model, "config", None), "is_encoder_decoder", False):
            mask = (model_kwargs or {}).get("attention_mask")
            with torch.inference_mode():
                encoded = assistant_model.get_encoder()(inputs_tensor, attention_mask=mask, return_dict=True)
            self.encoder_inputs = {"attention_mask": mask, "encoder_outputs": (encoded.last_hidden_state,)}
            self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    @torch.inference_mode()
    def get_candidates(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        max_length = self.generation_config.max_length
        count = min(int(self.num_assistant_tokens), max_length - input_ids.shape[1] - 1)
        if count <= 0:
            return input_ids, None
        logits = self._catch_up(input_ids)
        ids, all_scores = input_ids, []
        for i in range(count):
            scores = logits.float()
            for processor in self.logits_processor:
                scores = processor(ids, scores)
            if self.do_sample:
                token = torch.multinomial(scores.softmax(dim=-1), 1)
            else:
                token = scores.argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            all_scores.append(scores)
            if self._draft_stops(token, scores) or i == count - 1:
                break
            logits = self._forward(token)[:, -1]
            self._cached.append(int(token))
        return ids, torch.stack(all_scores, dim=1)

    def update_candidate_strategy(self, input_ids: torch.Tensor, scores: torch.Tensor, num_matches: int) -> None:
        if self.schedule == "constant":
            return
        proposed = scores.shape[1] - 1
        if num_matches == proposed:
            self.num_assistant_tokens += 2
        else:
            self.num_assistant_tokens = max(1, self.num_assistant_tokens - 1)

    def _catch_up(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Cut the draft's cache back to the prefix it shares with `input_ids`, feed the rest; the last logits."""
        ids = input_ids[0].tolist()
        shared = 0
        for cached, new in zip(self._cached, ids[:-1]):
            if cached != new:
                break
            shared += 1
        shared = cut_back(self.cache, shared, self._snapshot)
        self._cached = ids
        logits = self._forward(input_ids[:, shared:])[:, -1]
        if not self.cache.croppable:
            self._snapshot = self.cache.snapshot()
        return logits

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.encoder_inputs is not None:
            output = self.assistant_model(decoder_input_ids=ids, past_key_values=self.cache, logits_to_keep=1,
                                          return_dict=True, **self.encoder_inputs)
        else:
            output = self.assistant_model(ids, past_key_values=self.cache, logits_to_keep=1, return_dict=True)
        return output.logits

    def _draft_stops(self, token: torch.Tensor, scores: torch.Tensor) -> bool:
        if self.eos_ids.numel() and bool(torch.isin(token, self.eos_ids).any()):
            return True
        if self.confidence_threshold:
            probability = float(scores.softmax(dim=-1)[0, int(token)])
            return probability < self.confidence_threshold
        return False


class PromptLookupCandidateGenerator(CandidateGenerator):
    """Candidates copied from the text so far: where its last n tokens (n from `max_matching_ngram_size` down to
    1) appeared before, the tokens that followed them then are proposed (up to `num_output_tokens`).

    Fast for outputs that repeat their input (summaries, code edits, extraction). A candidate that a logits
    processor bans is dropped with those after it, and candidates stop before an EOS id, as in the reference.
    """

    def __init__(
        self,
        eos_token_id=None,
        num_output_tokens: int = 10,
        max_matching_ngram_size: int = 2,
        max_length: int = 20,
        logits_processor: list | None = None,
        vocab_size: int | None = None,
    ):
        if num_output_tokens <= 0 or max_matching_ngram_size <= 0:
            raise ValueError(
                f"prompt lookup needs num_output_tokens >= 1 and max_matching_ngram_size >= 1, got "
                f"{num_output_tokens} and {max_matching_ngram_size}."
            )
        self.num_output_tokens = num_output_tokens
        self.max_matching_ngram_size = max_matching_ngram_size
        self.max_length = max_length
        if eos_token_id is not None and not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.eos_token_id = eos_token_id
        self.logits_processor = list(logits_processor or [])
        self.vocab_size = vocab_size

    def get_candidates(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        length = input_ids.shape[1]
        if self.max_length == length + 1:
            return input_ids, None
        for n in range(min(self.max_matching_ngram_size, length - 1), 0, -1):
            chosen = self._continuation_of_last_ngram(input_ids, n)
            if chosen is not None:
                return torch.cat([input_ids, chosen[None]], dim=1), None
        return input_ids, None

    def _continuation_of_last_ngram(self, input_ids: torch.Tensor, n: int) -> torch.Tensor | None:
        """What followed the earliest earlier occurrence of the last n tokens that has a usable continuation."""
        length = input_ids.shape[1]
        windows = input_ids.unfold(1, n, 1)  # (1, length - n + 1, n)
        starts = (windows == input_ids[0, -n:]).all(dim=2).nonzero(as_tuple=True)[1]
        for start in starts.tolist():
            first = start + n
            last = min(first + self.num_output_tokens, length, self.max_length)
            if first >= last:
                continue
            chosen = self._drop_banned(input_ids, input_ids[0, first:last])
            if chosen.numel() == 0:
                continue
            if self.eos_token_id is not None:
                eos = torch.isin(chosen, self.eos_token_id.to(chosen.device)).nonzero()
                if eos.numel():
                    chosen = chosen[: int(eos[0])]
            return chosen if chosen.numel() else None
        return None

    def _drop_banned(self, input_ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Cut the candidates at the first one a processor sets to -inf (it could never be chosen)."""
        if not self.logits_processor or self.vocab_size is None:
            return chosen
        flat = torch.ones((1, self.vocab_size), dtype=torch.float32, device=input_ids.device)
        sequence = input_ids
        for i, token in enumerate(chosen.tolist()):
            scores = flat
            for processor in self.logits_processor:
                scores = processor(sequence, scores)
            if scores[0, token] in (-float("inf"), torch.finfo(scores.dtype).min):
                return chosen[:i]
            sequence = torch.cat([input_ids, chosen[None, : i + 1]], dim=1)
        return chosen

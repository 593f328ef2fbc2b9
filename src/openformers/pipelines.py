"""`pipeline(task, model=...)`: a model and its tokenizer behind one call, returning the reference's structures.

    generator = pipeline("text-generation", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    generator("Once upon a time", max_new_tokens=20)        # [{"generated_text": "Once upon a time..."}]
    generator([{"role": "user", "content": "Hi!"}])         # [{"generated_text": [user, {"role": "assistant", ...}]}]

Tasks: text-generation (strings or chats), text-classification (alias sentiment-analysis), feature-extraction,
fill-mask, token-classification (alias ner) and question-answering. A string gives that input's result, a
list of inputs a list of results, one per input.
"""

import itertools
import os
import warnings

import torch

from .generation.config import GenerationConfig

# task -> (the Auto class that loads its model, the pipeline class, defined below)
TASKS = {
    "text-generation": ("AutoModelForCausalLM", "TextGenerationPipeline"),
    "text-classification": ("AutoModelForSequenceClassification", "TextClassificationPipeline"),
    "sentiment-analysis": ("AutoModelForSequenceClassification", "TextClassificationPipeline"),
    "feature-extraction": ("AutoModel", "FeatureExtractionPipeline"),
    "fill-mask": ("AutoModelForMaskedLM", "FillMaskPipeline"),
    "token-classification": ("AutoModelForTokenClassification", "TokenClassificationPipeline"),
    "ner": ("AutoModelForTokenClassification", "TokenClassificationPipeline"),
    "question-answering": ("AutoModelForQuestionAnswering", "QuestionAnsweringPipeline"),
}


def pipeline(
    task: str,
    model=None,
    tokenizer=None,
    *,
    device: str | torch.device | int | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs,
):
    """Build the pipeline for `task`. `model` is a model object, or a folder, GGUF file or Hub id to load.

    `tokenizer` defaults to the one stored with the model. Other keyword arguments are defaults for every
    call (generation options such as max_new_tokens, and the pipeline's own options).
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; openformers' pipeline supports: {', '.join(TASKS)}.")
    from .models import auto
    from .tokenizers import AutoTokenizer

    auto_class, pipeline_class = TASKS[task]
    if model is None:
        if task != "text-generation":
            raise ValueError(f"pipeline({task!r}) needs model=: a folder, a Hub id or a model object.")
        from .hub import DEFAULT_MODEL

        model = DEFAULT_MODEL
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is None:
            tokenizer = model
        model = getattr(auto, auto_class).from_pretrained(model, dtype=dtype, device_map=device)
    elif device is not None:
        model = model.to(device)
    if tokenizer is None:
        raise ValueError("pipeline() was given a model object but no tokenizer: pass tokenizer=... too.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return globals()[pipeline_class](model, tokenizer, **kwargs)


# The pipeline's own options; every other keyword argument goes to generate().
_PIPELINE_OPTIONS = {
    "return_full_text", "return_tensors", "skip_special_tokens", "prefix", "add_special_tokens",
    "continue_final_message",
}
# What the reference's text-generation pipeline uses for options neither the caller nor the model sets.
_PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING_OPTIONS = {"temperature", "top_k", "top_p", "min_p", "typical_p"}


class TextGenerationPipeline:
    """Continue texts, or answer chats with the model's chat template, as the reference's pipeline does."""

    task = "text-generation"

    def __init__(self, model, tokenizer, **defaults):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.defaults = defaults
        _split_options(defaults)  # fail early on unknown pipeline options

    def __call__(self, inputs, **options):
        if _is_chat(inputs) or isinstance(inputs, str):
            return self._run_one(inputs, {**self.defaults, **options})
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) or _is_chat(x) for x in inputs):
            return [self._run_one(item, {**self.defaults, **options}) for item in inputs]
        raise TypeError(
            "text-generation inputs must be a string, a chat (a list of {'role': ..., 'content': ...} messages), "
            f"or a non-empty list of strings or chats; got {type(inputs).__name__} ({inputs!r:.80})."
        )

    def _run_one(self, prompt, options: dict) -> list[dict]:
        own, generate_options = _split_options(options)
        continue_final = own.get("continue_final_message")
        if _is_chat(prompt) and continue_final is None:
            continue_final = prompt[-1]["role"] == "assistant"
        input_ids = self._encode(prompt, own, continue_final)
        generate_options = self._with_defaults(generate_options)
        sequences = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **generate_options)
        if not isinstance(sequences, torch.Tensor):  # return_dict_in_generate=True
            sequences = sequences.sequences
        return [self._record(prompt, sequence, input_ids.shape[1], own, continue_final) for sequence in sequences]

    def _encode(self, prompt, own: dict, continue_final: bool) -> torch.Tensor:
        if not _is_chat(prompt):
            encode_options = {}
            if own.get("add_special_tokens") is not None:
                encode_options["add_special_tokens"] = own["add_special_tokens"]
            return self.tokenizer(own.get("prefix", "") + prompt, return_tensors="pt", **encode_options)["input_ids"]
        if not continue_final:
            return self.tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        # Continue the final message: render the chat, then cut the text right after that message's content.
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False)
        content = prompt[-1]["content"]
        start = text.rfind(content)
        if start == -1:
            raise ValueError("continue_final_message: the chat template does not write the final message's content.")
        return self.tokenizer(text[: start + len(content)], add_special_tokens=False, return_tensors="pt")["input_ids"]

    def _with_defaults(self, generate_options: dict) -> dict:
        """The reference's pipeline defaults, for options that neither the caller nor the model's config sets."""
        passed = generate_options.get("generation_config")
        chosen = self.model.generation_config.set_options() | set(generate_options)
        if isinstance(passed, GenerationConfig):
            chosen |= passed.set_options()
        if "max_length" in chosen:
            chosen.add("max_new_tokens")  # a set max_length must not be overridden by the default max_new_tokens
        added = {k: v for k, v in _PIPELINE_DEFAULTS.items() if k not in chosen}
        model_sampling = {"do_sample": self.model.generation_config.do_sample}
        passed_sampling = {"do_sample": passed.do_sample} if getattr(passed, "do_sample", None) is not None else {}
        options = {**model_sampling, **passed_sampling, **added, **generate_options}
        if not options.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in _SAMPLING_OPTIONS}
        if self.tokenizer.pad_token_id is not None and "pad_token_id" not in chosen:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        return {**generate_options, **added}

    def _record(self, prompt, sequence: torch.Tensor, prompt_length: int, own: dict, continue_final: bool) -> dict:
        if own.get("return_tensors"):
            return {"generated_token_ids": sequence.tolist()}
        text = self.tokenizer.decode(sequence[prompt_length:], skip_special_tokens=own.get("skip_special_tokens", True))
        if not own.get("return_full_text", True):
            return {"generated_text": text}
        if not _is_chat(prompt):
            return {"generated_text": prompt + text}
        messages = [dict(message) for message in prompt]
        if continue_final:
            messages[-1]["content"] += text
        else:
            messages.append({"role": "assistant", "content": text})
        return {"generated_text": messages}


def _is_chat(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(message, dict) and "role" in message and "content" in message for message in value)
    )


def _split_options(options: dict) -> tuple[dict, dict]:
    """(the pipeline's own options, the options for generate)."""
    own = {k: v for k, v in options.items() if k in _PIPELINE_OPTIONS}
    if own.get("return_tensors") and own.get("return_full_text") is not None:
        raise ValueError("return_full_text and return_tensors cannot go together: tensors hold the whole sequence.")
    return own, {k: v for k, v in options.items() if k not in _PIPELINE_OPTIONS}


class _EncoderPipeline:
    """One forward pass per text; a string gives one result, a list of strings a list of results."""

    def __init__(self, model, tokenizer, **defaults):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.defaults = defaults

    def __call__(self, inputs, **options):
        options = {**self.defaults, **options}
        if isinstance(inputs, str):
            return self._run_one(inputs, **options)
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
            return [self._run_one(text, **options) for text in inputs]
        raise TypeError(
            f"{self.task} inputs must be a string or a non-empty list of strings; got {type(inputs).__name__} "
            f"({inputs!r:.80})."
        )

    @torch.inference_mode()
    def _forward(self, text: str):
        encoded = self.tokenizer(text, return_tensors="pt")
        device = next(self.model.parameters()).device
        return encoded["input_ids"], self.model(
            encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device)
        )


class TextClassificationPipeline(_EncoderPipeline):
    """[{"label": ..., "score": ...}] per text: the best label, or every label sorted with top_k=None."""

    task = "text-classification"

    def __call__(self, inputs, **options):
        if "top_k" in {**self.defaults, **options}:
            return super().__call__(inputs, **options)  # a list of records per text
        # The reference's default: the best label as one record per text, a string's wrapped in a list.
        results = super().__call__(inputs, top_k=1, **options)
        return [results[0]] if isinstance(inputs, str) else [records[0] for records in results]

    def _run_one(self, text: str, top_k: int | None = 1, function_to_apply: str | None = None):
        _, output = self._forward(text)
        logits = output.logits[0].float()
        config = self.model.config
        if function_to_apply is None:
            single = config.problem_type != "multi_label_classification" and logits.shape[-1] > 1
            function_to_apply = "softmax" if single else "sigmoid"
        functions = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}
        if function_to_apply not in functions:
            raise ValueError(f"function_to_apply must be one of {sorted(functions)}, got {function_to_apply!r}.")
        scores = functions[function_to_apply](logits)
        names = config.id2label or {}
        records = [{"label": names.get(i, f"LABEL_{i}"), "score": float(score)} for i, score in enumerate(scores)]
        records.sort(key=lambda record: record["score"], reverse=True)
        return records if top_k is None else records[:top_k]


class FeatureExtractionPipeline(_EncoderPipeline):
    """The last hidden state of each text, as a (1, T, hidden) nested list (or a tensor with return_tensors)."""

    task = "feature-extraction"

    def _run_one(self, text: str, return_tensors: bool = False):
        _, output = self._forward(text)
        hidden = output.last_hidden_state
        return hidden if return_tensors else hidden.tolist()


class FillMaskPipeline(_EncoderPipeline):
    """The top_k fillers of the mask token: [{"score", "token", "token_str", "sequence"}] (a list per mask)."""

    task = "fill-mask"

    def __call__(self, inputs, **options):
        results = super().__call__(inputs, **options)
        # As in the reference, a list holding one text gives that text's result, not a list of one.
        return results[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else results

    def _run_one(self, text: str, top_k: int = 5):
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise ValueError("fill-mask needs a tokenizer with a mask token; this one has none.")
        input_ids, output = self._forward(text)
        positions = (input_ids[0] == mask_id).nonzero().flatten().tolist()
        if not positions:
            raise ValueError(f"No mask token ({self.tokenizer.mask_token}) in the input {text!r}; add one to fill.")
        per_mask = []
        for position in positions:
            probs = output.logits[0, position].float().softmax(-1)
            values, tokens = probs.topk(min(top_k, probs.shape[-1]))
            records = []
            for score, token in zip(values.tolist(), tokens.tolist()):
                filled = input_ids[0].clone()
                filled[position] = token
                # With several masks the others stay visible, so special tokens are kept (as in the reference).
                sequence = self.tokenizer.decode(filled, skip_special_tokens=len(positions) == 1)
                records.append(
                    {"score": score, "token": token, "token_str": self.tokenizer.decode([token]), "sequence": sequence}
                )
            per_mask.append(records)
        return per_mask[0] if len(per_mask) == 1 else per_mask


AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(_EncoderPipeline):
    """Entities in each text, as the reference's pipeline finds them.

    aggregation_strategy="none" (the default) gives a record per token whose label is not ignored:
    {"entity", "score", "index", "word", "start", "end"}. The other strategies join adjacent tokens of one
    entity (B-/I- tags of the same type) into {"entity_group", "score", "word", "start", "end"}: "simple"
    joins tokens as they are tagged; "first", "average" and "max" first give every word one label, that of
    its first token, of its tokens' averaged scores, or of its most confident token. `stride` reads a text
    longer than the model's limit in overlapping windows (with a strategy other than "none").
    With is_split_into_words=True the inputs are lists of words (one list, or a list of them; either way the
    result is a list per input), read as one text joined by `delimiter`, which the characters count in.
    """

    task = "token-classification"

    def __call__(self, inputs, **options):
        options = {**self.defaults, **options}
        if not options.pop("is_split_into_words", False):
            return super().__call__(inputs, **options)
        delimiter = options.pop("delimiter", " ")
        texts = inputs if inputs and all(isinstance(row, (list, tuple)) for row in inputs) else [inputs]
        for words in texts:
            if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) for w in words):
                raise TypeError(
                    f"With is_split_into_words=True, an input is a non-empty list of words; got {words!r:.80}."
                )
        return [self._run_one(list(words), delimiter=delimiter, **options) for words in texts]

    def _run_one(self, text: str | list[str], ignore_labels=("O",), aggregation_strategy="none",
                 stride: int | None = None, delimiter: str = " "):
        strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy) or "none").lower()
        if strategy not in AGGREGATION_STRATEGIES:
            raise ValueError(
                f"aggregation_strategy must be one of {AGGREGATION_STRATEGIES}; got {aggregation_strategy!r}."
            )
        encode_options = {}
        if stride is not None:
            if strategy == "none":
                raise ValueError(
                    'stride needs an aggregation_strategy other than "none", to join the entities of the windows.'
                )
            if stride >= self.tokenizer.model_max_length:
                raise ValueError(f"stride ({stride}) must be less than the tokenizer's model_max_length "
                                 f"({self.tokenizer.model_max_length}).")
            encode_options = dict(return_overflowing_tokens=True, padding=True, stride=stride)
        words, word_starts = None, None
        if isinstance(text, list):  # words: each token's characters count from the start of its word
            words, text = text, delimiter.join(text)
            word_starts = list(itertools.accumulate((len(w) + len(delimiter) for w in words[:-1]), initial=0))
            encode_options["is_split_into_words"] = True
        encoded = self.tokenizer([words or text], truncation=True, return_offsets_mapping=True,
                                 return_special_tokens_mask=True, **encode_options)  # a batch: one row per window
        entities = []
        for window in range(len(encoded["input_ids"])):
            tokens = self._tagged_tokens(text, encoded, window, strategy, word_starts)
            if strategy == "none":
                found = _per_token(tokens, self._label)
            else:
                found = _group_entities(self.tokenizer, _words(self.tokenizer, tokens, strategy, self._label))
            entities += [e for e in found if e.get("entity", e.get("entity_group")) not in ignore_labels]
        return _drop_overlapping(entities) if len(encoded["input_ids"]) > 1 else entities

    def _label(self, index: int) -> str:
        return (self.model.config.id2label or {}).get(index, f"LABEL_{index}")

    @torch.inference_mode()
    def _tagged_tokens(self, text: str, encoded, window: int, strategy: str, word_starts: list[int] | None):
        """The tokens of one window that come from the text, with their label probabilities and characters."""
        device = next(self.model.parameters()).device
        inputs = {k: torch.tensor([encoded[k][window]], device=device)
                  for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        scores = self.model(**inputs).logits[0].float().softmax(-1).cpu()
        subword_prefix = _continuing_subword_prefix(self.tokenizer)
        if not subword_prefix and strategy in ("first", "average", "max"):
            warnings.warn("The tokenizer does not mark word pieces, so words are guessed from spaces in the text.",
                          UserWarning, stacklevel=5)
        word_ids = encoded.word_ids(window) if word_starts is not None else None
        tokens = []
        for index, (token_id, special, (start, end)) in enumerate(zip(
            encoded["input_ids"][window], encoded["special_tokens_mask"][window], encoded["offset_mapping"][window]
        )):
            if special:
                continue
            if word_ids is not None and word_ids[index] is not None:
                start, end = start + word_starts[word_ids[index]], end + word_starts[word_ids[index]]
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            if token_id == self.tokenizer.unk_token_id:  # [UNK] is shown as the text it stands for, and starts a word
                word, is_subword = text[start:end], False
            elif subword_prefix:  # "##ing" is longer than "ing", the text it covers
                is_subword = len(word) != len(text[start:end])
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "is_subword": is_subword})
        return tokens


def _continuing_subword_prefix(tokenizer) -> str:
    """The mark of a word's later pieces ("##" for WordPiece), or "" when the tokenizer has none (BPE)."""
    model = getattr(getattr(tokenizer, "_pipeline", None), "model", None)
    return getattr(model, "prefix", "") or ""


def _per_token(tokens: list[dict], label) -> list[dict]:
    """Each token with its most likely label: {"entity", "score", "index", "word", "start", "end"}."""
    records = []
    for token in tokens:
        best = int(token["scores"].argmax())
        records.append({"entity": label(best), "score": float(token["scores"][best]), "index": token["index"],
                        "word": token["word"], "start": token["start"], "end": token["end"]})
    return records


def _words(tokenizer, tokens: list[dict], strategy: str, label) -> list[dict]:
    """For "first", "average" and "max": one record per word (a token and the pieces that follow it)."""
    if strategy in ("none", "simple"):
        return _per_token(tokens, label)
    words = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    records = []
    for pieces in words:
        if strategy == "first":
            scores = pieces[0]["scores"]
        elif strategy == "max":
            scores = max(pieces, key=lambda piece: piece["scores"].max())["scores"]
        else:
            scores = torch.stack([piece["scores"] for piece in pieces]).mean(0)
        best = int(scores.argmax())
        records.append({"entity": label(best), "score": float(scores[best]), "start": pieces[0]["start"],
                        "end": pieces[-1]["end"],
                        "word": tokenizer.convert_tokens_to_string([piece["word"] for piece in pieces])})
    return records


def _group_entities(tokenizer, records: list[dict]) -> list[dict]:
    """Join adjacent records of one entity type; a B- tag starts a new entity, an I- tag (or none) continues one."""
    groups = []
    for record in records:
        begins, kind = _tag(record["entity"])
        if groups and not begins and _tag(groups[-1][-1]["entity"])[1] == kind:
            groups[-1].append(record)
        else:
            groups.append([record])
    return [
        {"entity_group": _tag(group[0]["entity"])[1], "score": sum(r["score"] for r in group) / len(group),
         "word": tokenizer.convert_tokens_to_string([r["word"] for r in group]), "start": group[0]["start"],
         "end": group[-1]["end"]}
        for group in groups
    ]


def _tag(label: str) -> tuple[bool, str]:
    """("B-PER") -> (True, "PER"); "I-PER" and "PER" -> (False, "PER")."""
    if label.startswith(("B-", "I-")):
        return label.startswith("B-"), label[2:]
    return False, label


def _drop_overlapping(entities: list[dict]) -> list[dict]:
    """Of entities that overlap (found in two windows of one text), keep the longest (then the most confident)."""
    kept = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        if kept and kept[-1]["start"] <= entity["start"] < kept[-1]["end"]:
            previous = kept[-1]
            longer = entity["end"] - entity["start"] - (previous["end"] - previous["start"])
            if longer > 0 or (longer == 0 and entity["score"] > previous["score"]):
                kept[-1] = entity
        else:
            kept.append(entity)
    return kept


class QuestionAnsweringPipeline:
    """Extractive QA: the spans of the context most likely to answer the question, as the reference's pipeline
    (transformers 4.x; 5.x dropped it) finds them.

        qa = pipeline("question-answering", model="distilbert-base-cased-distilled-squad")
        qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin.")
        # {"score": 0.97, "start": 34, "end": 40, "answer": "Berlin"}

    Inputs: question= and context= (strings, or a list of questions for one context, or two lists of the
    same length), a {"question", "context"} dict, a list of them, or (question, context) as two strings.
    A context longer than `max_seq_len` tokens is read in windows that overlap by `doc_stride` tokens.
    Answers are spans of context tokens only (with a tokenizer that pads on the left, which puts the context
    first, the reference 4.x let the question's tokens be answers too).
    """

    task = "question-answering"

    def __init__(self, model, tokenizer, **defaults):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.defaults = defaults

    def __call__(self, *args, question=None, context=None, **options):
        examples = _question_context_pairs(args, question, context)
        options = {**self.defaults, **options}
        results = [self._answer(q, c, **options) for q, c in examples]
        return results[0] if len(results) == 1 else results

    def _answer(
        self, question: str, context: str, top_k: int = 1, doc_stride: int | None = None,
        max_seq_len: int | None = None, max_answer_len: int = 15, handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ):
        if top_k < 1 or max_answer_len < 1:
            raise ValueError(f"top_k and max_answer_len must be at least 1; got {top_k} and {max_answer_len}.")
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if doc_stride > max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len}).")
        # Tokenizers that pad on the left put the context first (as the reference does), so that it is cut last.
        question_first = self.tokenizer.padding_side == "right"
        context_index = 1 if question_first else 0
        encoded = self.tokenizer(
            question if question_first else context, context if question_first else question,
            truncation="only_second" if question_first else "only_first", max_length=max_seq_len, stride=doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        answers, null_score = [], 1.0
        for window in range(len(encoded["input_ids"])):  # one forward per window of the context
            start, end = self._span_probabilities(encoded, window, context_index)
            null_score = min(null_score, float(start[0] * end[0]))  # position 0 ([CLS]) stands for "no answer"
            start[0] = end[0] = 0.0
            # Answers merge by their lowercased text, summing their scores; a few spare candidates allow for that.
            spare = top_k * 2 + 10 if align_to_words else top_k
            for score, first, last in _best_spans(start, end, max_answer_len, spare):
                chars = _answer_characters(encoded, window, first, last, context_index, align_to_words)
                text = context[chars[0] : chars[1]]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": chars[0], "end": chars[1], "answer": text})
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    @torch.no_grad()  # not inference_mode: the caller edits the probabilities in place
    def _span_probabilities(self, encoded, window: int, context_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The probability of each token starting and ending the answer, over the context tokens and position 0."""
        device = next(self.model.parameters()).device
        inputs = {k: torch.tensor([encoded[k][window]], device=device)
                  for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        output = self.model(**inputs)
        in_context = torch.tensor([s == context_index for s in encoded.sequence_ids(window)], device=device)
        in_context[0] = True  # [CLS] keeps its share of the probability: it scores "no answer"
        start, end = (logits[0].float().masked_fill(~in_context, -10000.0).softmax(-1)
                      for logits in (output.start_logits, output.end_logits))
        return start.cpu(), end.cpu()


def _best_spans(start: torch.Tensor, end: torch.Tensor, max_answer_len: int, count: int) -> list[tuple]:
    """The `count` best (score, first token, last token) spans: score p(start) * p(end), at most max_answer_len long."""
    scores = (start[:, None] * end[None, :]).triu().tril(max_answer_len - 1)  # (T, T): first <= last < first + len
    values, flat = scores.flatten().topk(min(count, scores.numel()))
    T = scores.shape[1]
    return [(value, index // T, index % T) for value, index in zip(values.tolist(), flat.tolist()) if value > 0]


def _answer_characters(encoded, window: int, first: int, last: int, context_index: int, to_words: bool) -> tuple:
    """The characters of the context from token `first` to token `last`, widened to whole words when asked."""
    if to_words:
        first_word, last_word = encoded.token_to_word(window, first), encoded.token_to_word(window, last)
        if first_word is not None and last_word is not None:
            first_chars = encoded.word_to_chars(window, first_word, sequence_index=context_index)
            last_chars = encoded.word_to_chars(window, last_word, sequence_index=context_index)
            return first_chars[0], last_chars[1]
    offsets = encoded["offset_mapping"][window]
    return offsets[first][0], offsets[last][1]


def _question_context_pairs(args: tuple, question, context) -> list[tuple[str, str]]:
    """The (question, context) pairs of the reference's accepted call forms."""
    if args and (question is not None or context is not None):
        raise TypeError("Pass the inputs either positionally or as question= and context=, not both.")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        question, context = args
    elif len(args) == 1:
        items = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
        if not items or not all(isinstance(i, dict) and {"question", "context"} <= i.keys() for i in items):
            raise TypeError('question-answering takes {"question": ..., "context": ...} dicts (or a list of them), '
                            f"or question= and context=; got {args[0]!r:.80}.")
        pairs = [(item["question"], item["context"]) for item in items]
        return [_checked_pair(q, c) for q, c in pairs]
    elif args:
        raise TypeError(f"question-answering takes one dict, a list of dicts, or (question, context); got {len(args)} "
                        "positional arguments.")
    if isinstance(question, str) and isinstance(context, str):
        return [_checked_pair(question, context)]
    if isinstance(question, list) and isinstance(context, str):
        return [_checked_pair(q, context) for q in question]
    if isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise ValueError(f"Got {len(question)} questions and {len(context)} contexts: pass as many of each.")
        return [_checked_pair(q, c) for q, c in zip(question, context)]
    raise TypeError("question-answering needs question= (a string or a list) and context= (a string or a list); "
                    f"got question={question!r:.60} and context={context!r:.60}.")


def _checked_pair(question, context) -> tuple[str, str]:
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"The {name} must be a non-empty string; got {value!r:.60}.")
    return question, context

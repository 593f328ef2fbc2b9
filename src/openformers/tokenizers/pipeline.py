"""The pipeline engine: the added vocabulary and the five slots run in order.

    added tokens split off -> normalizer -> pre-tokenizer -> model -> post-processor   (encode)
    ids -> tokens -> decoder                                                            (decode)

Each slot is one method of a small part (a `Sequence` of parts is a part too):

    normalizer.normalize(text, spans=None) -> (text, spans)
    pre_tokenizer.pre_tokenize(text, spans=None) -> (pieces, the spans of each piece)
    model.tokenize(piece) -> (ids, each token's (start, end) in the piece)
    post_processor.template(is_pair) -> [(a sequence "A"/"B" or special token ids, type id)]
    decoder.decode(tokens) -> text

`spans` is the alignment: for each character, its (start, end) in the text the caller passed. `encode`
(ids alone, the fast path) passes None and no part works out any; `encode_aligned` (offsets, word ids)
passes them through every slot. A part that treats the start of the text apart (SentencePiece's dummy
prefix, Metaspace's "first") sets `takes_position` and takes `starts_text` as well.

`Pipeline` knows no files (the loaders build it) and no user-facing options (the facade in `base.py`
adds special tokens by name, batching, padding and tensors).
"""

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import regex

from . import processors
from .encoding import Encoding, apply_template
from .pre_tokenizers import BYTE_ALPHABET


@dataclass(frozen=True)
class AddedToken:
    """A token matched whole in the text, before the rest of the pipeline sees it.

    `special` tokens (like `<|im_end|>`) are dropped by decode(skip_special_tokens=True). `lstrip` and
    `rstrip` make the token swallow the whitespace beside it; `single_word` matches it only between
    non-word characters; `normalized` matches it in the normalized text rather than the raw text.
    """

    content: str
    _: KW_ONLY  # as the reference's, the options are keyword arguments
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool | None = None  # None means "not special", the reference's default
    special: bool = False

    def __post_init__(self):
        if self.normalized is None:
            object.__setattr__(self, "normalized", not self.special)

    def __str__(self) -> str:
        return self.content  # as the reference's, so str(token) is the token


def _added_token_pattern(tokens: list[AddedToken]) -> regex.Pattern | None:
    """One regex for all the tokens' contents, longest first so the longest token wins where several start.

    The whitespace lstrip/rstrip take is not part of it (`AddedVocabulary.split` widens a match over it): a
    pattern starting with `\\s*` tries again from every space of a run that no token ends, which costs the square
    of the run's length (a megabyte of spaces before a non-token character took hours)."""
    if not tokens:
        return None
    alternatives = []
    for token in sorted(tokens, key=lambda token: len(token.content), reverse=True):
        body = regex.escape(token.content)
        if token.single_word:
            body = rf"(?<!\w){body}(?!\w)"
        alternatives.append(body)
    return regex.compile("|".join(alternatives))


_WHITESPACE = regex.compile(r"\s")


class AddedVocabulary:
    """The added tokens by id, and the two patterns that find them: in the raw text and in the normalized text."""

    def __init__(self, tokens: dict[int, AddedToken]):
        # A token with empty content would match between every two characters; the reference leaves such a
        # token out (no id, not in the vocabulary), whether a tokenizer.json lists it or add_tokens gets it.
        self.tokens = {token_id: token for token_id, token in tokens.items() if token.content}
        self.ids = {token.content: token_id for token_id, token in self.tokens.items()}
        self.special_ids = frozenset(token_id for token_id, token in self.tokens.items() if token.special)
        raw = [token for token in self.tokens.values() if not token.normalized]
        normalized = [token for token in self.tokens.values() if token.normalized]
        self.patterns = {False: _added_token_pattern(raw), True: _added_token_pattern(normalized)}
        # Most text holds no added token: when none of their first characters occurs, there is nothing to find.
        self.first_chars = {
            False: frozenset(token.content[:1] for token in raw),
            True: frozenset(token.content[:1] for token in normalized),
        }

    def split(self, text: str, normalized: bool) -> list[tuple[str, int | None, int]]:
        """`(text, None, start)` for the plain stretches and `(text, id, start)` for each added token found (its
        content and the whitespace it strips): the tokens matched in the raw text, or with `normalized`, those
        matched after normalization."""
        pattern = self.patterns[normalized]
        if pattern is None or not any(char in text for char in self.first_chars[normalized]):
            return [(text, None, 0)] if text else []
        segments, position = [], 0
        while (match := pattern.search(text, position)) is not None:
            content = match.group()
            token = self.tokens[self.ids[content]]
            start, end = match.span()
            # The whitespace a token strips is taken up to the previous token, each character once.
            while token.lstrip and start > position and _WHITESPACE.match(text, start - 1):
                start -= 1
            while token.rstrip and end < len(text) and _WHITESPACE.match(text, end):
                end += 1
            if start > position:
                segments.append((text[position:start], None, position))
            segments.append((text[start:end], self.ids[content], start))  # its offsets cover what it strips
            position = end
        if position < len(text):
            segments.append((text[position:], None, position))
        return segments


class Pipeline:
    """The five slots (see the module docstring) plus the added vocabulary. Only `model` is required."""

    def __init__(
        self,
        model,
        *,
        normalizer=None,
        pre_tokenizer=None,
        post_processor=None,
        decoder=None,
        added_tokens: dict[int, AddedToken] | None = None,
    ):
        self.model = model
        self.normalizer = normalizer
        self.pre_tokenizer = pre_tokenizer
        self.post_processor = post_processor
        self.decoder = decoder
        self.added = AddedVocabulary(added_tokens or {})
        self.source: dict | None = None  # the tokenizer.json contents this was built from, for saving
        self.sentencepiece_file: Path | None = None  # or the tokenizer.model
        self.sentencepiece_model = None  # or the SentencePiece model read from a GGUF file, written out as one
        self.split_special_tokens = False
        self._plain_matcher = None

    @property
    def matcher(self) -> AddedVocabulary:
        """The added tokens to find in text: all of them, or with `split_special_tokens` the non-special
        ones only, so that special tokens written in the text are tokenized as text (as in the reference)."""
        if not self.split_special_tokens:
            return self.added
        if self._plain_matcher is None or self._plain_matcher[0] is not self.added:
            plain = {token_id: token for token_id, token in self.added.tokens.items() if not token.special}
            self._plain_matcher = (self.added, AddedVocabulary(plain))
        return self._plain_matcher[1]

    def add_tokens(self, tokens: list[AddedToken]) -> None:
        """Add tokens that are not added tokens yet, reusing their vocabulary id or taking the next free one."""
        added = dict(self.added.tokens)
        contents = {token.content for token in added.values()}
        next_id = max([*self.get_vocab().values(), -1]) + 1
        for token in tokens:
            if token.content in contents or not token.content:
                continue
            token_id = self.model.token_to_id(token.content)
            if token_id is None:
                token_id, next_id = next_id, next_id + 1
            added[token_id] = token
            contents.add(token.content)
        self.added = AddedVocabulary(added)

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """Just the ids: the fast path, with no offsets or word ids."""
        sequences = [self._walk(text)[0]] if pair is None else [self._walk(text)[0], self._walk(pair)[0]]
        if self.post_processor is None or (not add_special_tokens and pair is None):
            return [token_id for sequence in sequences for token_id in sequence]
        ids = []
        for item, _ in self.post_processor.template(pair is not None):
            if isinstance(item, str):
                ids.extend(sequences[0 if item == "A" else 1])
            elif add_special_tokens:
                ids.extend(item)
        return ids

    def encode_aligned(self, text: str, pair: str | None, add_special_tokens: bool) -> Encoding:
        """One text (and pair), with offsets and word ids, laid out by the post-processor."""
        texts = [text] if pair is None else [text, pair]
        return self.post_process([self.encode_sequence(item) for item in texts], add_special_tokens)

    def encode_layout(self, text: str, pair: str | None, add_special_tokens: bool) -> Encoding:
        """One text (and pair) laid out by the post-processor (token types, special tokens mask), made on the
        fast path: offsets and word ids are left empty ((0, 0) and None)."""
        sequences = [self._walk(item)[0] for item in ([text] if pair is None else [text, pair])]
        sequences = [Encoding(ids, [(0, 0)] * len(ids), [None] * len(ids)) for ids in sequences]
        return self.post_process(sequences, add_special_tokens)

    def encode_sequence(self, text: str) -> Encoding:
        """One sequence with offsets (in `text`) and word ids, before the post-processor."""
        encoding = Encoding(*self._walk(text, aligned=True))
        if self.post_processor is not None and self.post_processor.trims_offsets:
            self._trim_offsets(encoding)
        return encoding

    def encode_words(self, words: list[str]) -> Encoding:
        """A text already split into words (`is_split_into_words`): as in the reference, each word is
        encoded on its own, with offsets within the word and word id its index in `words`."""
        ids, offsets, word_ids = [], [], []
        for index, word in enumerate(words):
            encoding = self.encode_sequence(word)
            ids += encoding.ids
            offsets += encoding.offsets
            word_ids += [index] * len(encoding)
        return Encoding(ids, offsets, word_ids)

    def _walk(self, text: str, aligned: bool = False) -> tuple[list[int], list | None, list | None]:
        """`text` through the slots: its ids, and with `aligned` each token's offsets in `text` and word index
        (a word is an added token or a pre-tokenized piece). Without `aligned`, no slot works out spans.

        Added tokens are split off the raw text first; the stretches between them are normalized, and the
        added tokens matched in normalized text split off those; what is left is pre-tokenized and tokenized.
        `spans[i]` is the (start, end) in `text` of character i of the text at hand."""
        ids, offsets, word_ids = [], [] if aligned else None, [] if aligned else None
        tokenize, matcher, word_index = self.model.tokenize, self.matcher, 0
        for segment, token_id, segment_start in matcher.split(text, normalized=False):
            if token_id is not None:
                ids.append(token_id)
                if aligned:
                    offsets.append((segment_start, segment_start + len(segment)))
                    word_ids.append(word_index)
                    word_index += 1
                continue
            spans = None
            if aligned:  # each character stands for itself until the normalizer changes the text
                spans = [(index, index + 1) for index in range(segment_start, segment_start + len(segment))]
            segment, spans = self._normalize(segment, spans, segment_start == 0)
            for piece, token_id, piece_start in matcher.split(segment, normalized=True):
                if token_id is not None:
                    ids.append(token_id)
                    if aligned:
                        offsets.append((spans[piece_start][0], spans[piece_start + len(piece) - 1][1]))
                        word_ids.append(word_index)
                        word_index += 1
                    continue
                piece_spans = spans[piece_start : piece_start + len(piece)] if aligned else None
                words, word_spans = self._pre_tokenize(piece, piece_spans, segment_start == 0 and piece_start == 0)
                if not aligned:
                    for word in words:
                        ids.extend(tokenize(word)[0])
                    continue
                for word, char_spans in zip(words, word_spans):
                    token_ids, token_spans = tokenize(word)
                    ids.extend(token_ids)
                    offsets.extend((char_spans[start][0], char_spans[end - 1][1]) for start, end in token_spans)
                    word_ids.extend([word_index] * len(token_ids))
                    word_index += 1
        return ids, offsets, word_ids

    def _normalize(self, text: str, spans: list | None, starts_text: bool) -> tuple[str, list | None]:
        if self.normalizer is None:
            return text, spans
        if getattr(self.normalizer, "takes_position", False):  # a dummy prefix at the start only
            return self.normalizer.normalize(text, spans, starts_text)
        return self.normalizer.normalize(text, spans)

    def _pre_tokenize(self, piece: str, spans: list | None, starts_text: bool) -> tuple[list[str], list | None]:
        if self.pre_tokenizer is None:
            return [piece], None if spans is None else [spans]
        if getattr(self.pre_tokenizer, "takes_position", False):  # Metaspace's "first" scheme
            return self.pre_tokenizer.pre_tokenize(piece, spans, starts_text)
        return self.pre_tokenizer.pre_tokenize(piece, spans)

    def _trim_offsets(self, encoding: Encoding) -> None:
        """Leave the spaces (byte-level "Ġ" or whitespace: an added token of spaces) a token starts or ends with out
        of its offsets ("Ġworld" -> "world"). With the trimming post-processor's add_prefix_space, one space the
        first token starts with stays, as in the reference."""
        space = BYTE_ALPHABET[ord(" ")]
        trimming = [part for part in getattr(self.post_processor, "processors", [self.post_processor])
                    if part.trims_offsets]
        prefixed = getattr(trimming[0], "add_prefix_space", True)
        for index, token_id in enumerate(encoding.ids):
            token = self.id_to_token(token_id) or ""
            leading = next((i for i, c in enumerate(token) if c != space and not c.isspace()), len(token))
            trailing = next((i for i, c in enumerate(reversed(token)) if c != space and not c.isspace()), len(token))
            start, end = encoding.offsets[index]
            if leading == 1 and prefixed and (index == 0 or start == 0):
                leading = 0
            if leading:
                start = min(start + leading, end)
            if trailing and end >= trailing:
                end = max(end - trailing, start)
            encoding.offsets[index] = (start, end)

    def post_process(self, encodings: list[Encoding], add_special_tokens: bool) -> Encoding:
        """Join one sequence or a pair by the post-processor's template (plain concatenation without one)."""
        is_pair = len(encodings) == 2
        template = self.post_processor.template(is_pair) if self.post_processor is not None else None
        if template is None:
            template = processors.PLAIN_PAIR if is_pair else processors.PLAIN_SINGLE
        return apply_template(encodings, template, add_special_tokens)

    def num_special_tokens_to_add(self, is_pair: bool) -> int:
        if self.post_processor is None:
            return 0
        return sum(len(item) for item, _ in self.post_processor.template(is_pair) if not isinstance(item, str))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        tokens = []
        for token_id in ids:
            if skip_special_tokens and token_id in self.added.special_ids:
                continue
            token = self.id_to_token(token_id)
            if token is not None:  # an id past the vocabulary decodes to nothing, as in the reference
                tokens.append(token)
        return self.decoder.decode(tokens) if self.decoder is not None else " ".join(tokens)

    def token_to_id(self, token: str) -> int | None:
        token_id = self.added.ids.get(token)
        return token_id if token_id is not None else self.model.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        added = self.added.tokens.get(token_id)
        return added.content if added is not None else self.model.id_to_token(token_id)

    def get_vocab(self) -> dict[str, int]:
        return self.model.get_vocab() | self.added.ids


class LanguageCodePipeline(Pipeline):
    """Marian's pipeline: a stretch of text between added tokens that starts with a language code (`>>fr<<`: ">>",
    then up to the first "<<") has the code split off as one token, its id the model's (the unknown token's if the
    vocabulary lacks it), before the rest is normalized; a code anywhere else is plain text."""

    @property
    def matcher(self) -> "LeadingCodes":
        return LeadingCodes(super().matcher, self.model)


class LeadingCodes:
    """An added vocabulary's split (`AddedVocabulary.split`) with leading language codes split off too."""

    def __init__(self, added: AddedVocabulary, model):
        self.added, self.model = added, model

    def split(self, text: str, normalized: bool) -> list[tuple[str, int | None, int]]:
        segments = self.added.split(text, normalized)
        if normalized:
            return segments
        out = []
        for segment, token_id, start in segments:
            found = segment.find("<<") if token_id is None and segment.startswith(">>") else -1
            if found == -1:
                out.append((segment, token_id, start))
                continue
            end = found + 2
            code = segment[:end]
            code_id = self.model.token_to_id(code)
            out.append((code, self.model.unk_id if code_id is None else code_id, start))
            if segment[end:]:
                out.append((segment[end:], None, start + end))
        return out


def added_token_json(token_id: int, token: AddedToken) -> dict:
    """An added token as tokenizer.json lists it."""
    return {
        "id": token_id,
        "content": token.content,
        "single_word": token.single_word,
        "lstrip": token.lstrip,
        "rstrip": token.rstrip,
        "normalized": token.normalized,
        "special": token.special,
    }

"""Models: the third slot, turning one pre-tokenized piece into token ids.

Each has one method, `tokenize(piece) -> (ids, spans)`: the ids of the piece's tokens and each token's
(start, end) in the piece's characters, from which the pipeline works out offsets when they are asked for.
A model holds plain data, a vocabulary dict and (for BPE) a dict of merge ranks, as minbpe and
tiktoken do, and knows nothing of files.
"""

import heapq
import struct

# SentencePiece piece types, as numbered in its model file.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

Tokens = tuple[tuple[int, ...], tuple[tuple[int, int], ...]]  # ids, and each token's (start, end) in the piece


def _as_tokens(found: list[tuple[int, int, int]]) -> Tokens:
    """`(id, start, end)` per token as the ids and the spans, apart (the ids alone are what encoding reads)."""
    return tuple(token_id for token_id, _, _ in found), tuple((start, end) for _, start, end in found)


class WordCache(dict):
    """Results per word, so that a word seen before costs one dict lookup. When full it starts over,
    which keeps the words a long run currently sees (the frequent ones come back at once) without
    growing without bound.

    Full means `size` entries or `characters` characters of keys, and a key longer than `longest` is never
    kept: longer pieces (minified code, base64, runs of one character) rarely come back, and keeping them would
    make the cache's memory grow with the input rather than with the vocabulary of words. Every value kept is
    proportional to its key (a piece's tokens and spans, its respelling, a character's mapping: at most a few
    per character), so a cache holds at most some 100 bytes per character of its budget, about 100 MB for the
    default's 2**20 whatever a client sends, and usually a few MB."""

    def __init__(self, size: int = 100_000, characters: int = 2**20, longest: int = 256):
        super().__init__()
        self.size, self.characters, self.longest = size, characters, longest
        self.held = 0  # characters of the keys kept

    def remember(self, key: str, value):
        if len(key) > self.longest:
            return value
        if len(self) >= self.size or self.held + len(key) > self.characters:
            self.clear()
            self.held = 0
        if key not in self:
            self.held += len(key)
        self[key] = value
        return value


class _Vocabulary:
    """The vocabulary lookups every model below shares."""

    def __init__(self, vocab: dict[str, int], unk_token: str | None):
        if unk_token is not None and unk_token not in vocab:
            raise ValueError(f"{type(self).__name__} unk_token {unk_token!r} is not in the vocabulary.")
        self.vocab = vocab
        self.unk_token = unk_token
        self.tokens_by_id = {token_id: token for token, token_id in vocab.items()}

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokens_by_id.get(token_id)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


class BPE(_Vocabulary):
    """Byte-pair encoding: start from single characters and keep merging the adjacent pair that was
    learned first (lowest rank) until no learned pair is left.

    `ignore_merges` (Llama-3) takes a piece that is in the vocabulary whole, without merging.
    A character missing from the vocabulary becomes `unk_token` if there is one, and is dropped
    otherwise, as the reference does; complete byte-level vocabularies hold every byte, so neither happens there.
    Offsets after a dropped character are the reference's, on purpose, though they look shifted: it lays the
    tokens end to end from the piece's first byte, so each token after the drop starts as many bytes early as
    the dropped characters took ("qé" without "q" gives "Ã" the offsets (0, 2), not (1, 2)); see `_laid_end_to_end`.
    `continuing_subword_prefix` ("##") marks every character but a piece's first, and
    `end_of_word_suffix` ("</w>", CLIP) its last; a merge of "a" and "##b" makes "ab".
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        unk_token: str | None = None,
        ignore_merges: bool = False,
        byte_fallback: bool = False,
        fuse_unk: bool = False,
        continuing_subword_prefix: str | None = None,
        end_of_word_suffix: str | None = None,
    ):
        super().__init__(vocab, unk_token)
        self.prefix = continuing_subword_prefix or ""
        self.suffix = end_of_word_suffix or ""
        self.byte_fallback = byte_fallback
        self.fuse_unk = fuse_unk
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.ignore_merges = ignore_merges
        self._cache = WordCache()

    def tokenize(self, piece: str) -> Tokens:
        tokens = self._cache.get(piece)
        if tokens is None:
            tokens = self._cache.remember(piece, _as_tokens(self._merge_with_offsets(piece)))
        return tokens

    def _merge_with_offsets(self, piece: str) -> list[tuple[int, int, int]]:
        if self.ignore_merges and piece in self.vocab:
            return [(self.vocab[piece], 0, len(piece))]
        out = []
        unk_id = self.vocab.get(self.unk_token) if self.unk_token is not None else None
        symbols = self._symbols(piece)
        for part, start, end in self._merge(symbols):
            token_id = self.vocab.get(part)
            data = piece[start:end].encode("utf-8")
            if token_id is not None:
                out.append((token_id, start, end))
            elif self.byte_fallback and all(f"<0x{byte:02X}>" in self.vocab for byte in data):
                out.extend((self.vocab[f"<0x{byte:02X}>"], start, end) for byte in data)
            elif unk_id is not None:
                if self.fuse_unk and out and out[-1][0] == unk_id and out[-1][2] == start:
                    out[-1] = (unk_id, out[-1][1], end)  # unknowns in a row become one
                else:
                    out.append((unk_id, start, end))
            # else: a character with neither a token nor its bytes, and no unk_token: dropped, as in the reference
        if len(symbols) < len(piece):
            return _laid_end_to_end(piece, [start for _, start, _ in symbols], out)
        return out

    def _symbols(self, piece: str) -> list[tuple[str, int, int]]:
        """`(part, start, end)` per character, with the prefix and suffix. A character missing from the
        vocabulary stays (to become unk_token or bytes) only if there is an unk_token or byte fallback;
        otherwise it is dropped here, so that its neighbours can merge across it, as in the reference."""
        last = len(piece) - 1
        symbols = []
        for index, char in enumerate(piece):
            part = char
            if index and self.prefix:
                part = self.prefix + part
            if index == last and self.suffix:
                part += self.suffix
            if part in self.vocab or self.byte_fallback or self.unk_token is not None:
                symbols.append((part, index, index + 1))
        return symbols

    def _merge(self, symbols: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """`(part, start, end)` per token after merging the `symbols` of a piece, spans in its characters.

        The pairs wait in a heap ordered by (rank, position) and the symbols form a linked list, so a piece of n
        characters costs O(n log n) (a rescan for the best pair after every merge is quadratic: a megabyte of one
        repeated character never finishes). A heap entry whose pair has changed since it was pushed is skipped:
        ranks are unique per pair, so an entry is current exactly when its two symbols still have its rank.
        """
        parts = [part for part, _, _ in symbols]
        starts = [start for _, start, _ in symbols]
        ends = [end for _, _, end in symbols]
        count = len(parts)
        following = list(range(1, count)) + [-1]
        preceding = list(range(-1, count - 1))
        ranks, cut = self.ranks, len(self.prefix)  # the second part's prefix goes when two parts join
        waiting = [(rank, index) for index in range(count - 1)
                   if (rank := ranks.get((parts[index], parts[index + 1]))) is not None]
        heapq.heapify(waiting)
        while waiting:
            rank, index = heapq.heappop(waiting)
            second = following[index]
            if parts[index] is None or second < 0 or ranks.get((parts[index], parts[second])) != rank:
                continue
            parts[index] += parts[second][cut:]
            ends[index] = ends[second]
            parts[second] = None
            following[index] = after = following[second]
            if after >= 0:
                preceding[after] = index
                if (rank := ranks.get((parts[index], parts[after]))) is not None:
                    heapq.heappush(waiting, (rank, index))
            if (before := preceding[index]) >= 0 and (rank := ranks.get((parts[before], parts[index]))) is not None:
                heapq.heappush(waiting, (rank, before))
        return [(part, start, end) for part, start, end in zip(parts, starts, ends) if part is not None]


def _laid_end_to_end(piece: str, kept: list[int], found: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The reference's offsets for tokens of `piece` when only the characters at `kept` made symbols: it
    counts each token's UTF-8 bytes (those of its kept characters) from the start of the piece, as if nothing
    were dropped, and a token covers the characters those bytes fall in."""
    char_of_byte = [index for index, char in enumerate(piece) for _ in char.encode("utf-8")]
    kept_bytes = {index: len(piece[index].encode("utf-8")) for index in kept}
    out, position = [], 0
    for token_id, start, end in found:
        size = sum(kept_bytes.get(index, 0) for index in range(start, end))
        out.append((token_id, char_of_byte[position], char_of_byte[position + size - 1] + 1))
        position += size
    return out


class WordPiece(_Vocabulary):
    """BERT's model: greedy longest match from the left; pieces after the first carry the
    `continuing_subword_prefix` ("##"). A word with a part that matches nothing, or longer than
    `max_input_chars_per_word`, becomes one `unk_token`."""

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
    ):
        super().__init__(vocab, unk_token)
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self._cache = WordCache()

    def tokenize(self, piece: str) -> Tokens:
        tokens = self._cache.get(piece)
        if tokens is None:
            tokens = self._cache.remember(piece, _as_tokens(self._longest_matches(piece)))
        return tokens

    def _longest_matches(self, piece: str) -> list[tuple[int, int, int]]:
        unknown = [(self.vocab[self.unk_token], 0, len(piece))]
        if len(piece) > self.max_input_chars_per_word:
            return unknown
        tokens, start = [], 0
        while start < len(piece):
            for end in range(len(piece), start, -1):
                candidate = piece[start:end] if start == 0 else self.prefix + piece[start:end]
                token_id = self.vocab.get(candidate)
                if token_id is not None:
                    tokens.append((token_id, start, end))
                    start = end
                    break
            else:
                return unknown
        return tokens


class WordLevel(_Vocabulary):
    """One token per pre-tokenized piece, or `unk_token` for a piece not in the vocabulary."""

    def tokenize(self, piece: str) -> Tokens:
        token_id = self.vocab.get(piece)
        if token_id is None:
            if self.unk_token is None:
                raise ValueError(f"WordLevel has no token for {piece!r} and no unk_token to use instead.")
            token_id = self.vocab[self.unk_token]
        return (token_id,), ((0, len(piece)),)


class _SentencePieceVocabulary(_Vocabulary):
    """The vocabulary of a SentencePiece model: every piece with its score and type (see sentencepiece.py).

    Only normal, user-defined and unused pieces can come out of segmenting text; control, unknown
    and byte pieces are reached by id. A segment with no piece becomes `unk_id`, or, with
    `byte_fallback`, one `<0xXX>` piece per UTF-8 byte (`unk_id` still if one of its bytes has no piece).
    """

    def __init__(self, pieces: list[tuple[str, float, int]], *, unk_id: int, byte_fallback: bool = False):
        if not 0 <= unk_id < len(pieces):
            raise ValueError(f"SentencePiece unk_id {unk_id} is not a piece id (the model has {len(pieces)} pieces).")
        vocab = {}
        for token_id, (piece, _, _) in enumerate(pieces):
            vocab.setdefault(piece, token_id)
        super().__init__(vocab, pieces[unk_id][0])
        self.unk_id = unk_id
        self.scores = [score for _, score, _ in pieces]
        self.types = [kind for _, _, kind in pieces]
        segmentable = (NORMAL, USER_DEFINED, UNUSED)
        self.pieces = {piece: token_id for token_id, (piece, _, kind) in enumerate(pieces) if kind in segmentable}
        self.user_defined = {piece for piece, _, kind in pieces if kind == USER_DEFINED}
        self.max_user_defined = max((len(piece) for piece in self.user_defined), default=0)
        self.unused = {token_id for token_id, kind in enumerate(self.types) if kind == UNUSED}
        self.byte_fallback = byte_fallback
        if byte_fallback:
            # By name, not type: a tokenizer.json Unigram types no piece, its byte pieces are ordinary ones.
            self.byte_ids = [vocab.get(f"<0x{byte:02X}>") for byte in range(256)]

    def _user_defined_at(self, text: str, start: int) -> int:
        """The length of the longest user-defined piece at text[start:], or 0."""
        for length in range(min(self.max_user_defined, len(text) - start), 0, -1):
            if text[start : start + length] in self.user_defined:
                return length
        return 0

    def _output(self, text: str, segments: list[tuple[int, int, int | None]]) -> Tokens:
        """The tokens of the segments `(start, end, id)`, unknown ones spelled in bytes when byte fallback is on."""
        out = []
        for start, end, token_id in segments:
            if token_id is None or token_id == self.unk_id:
                byte_ids = [None]
                if self.byte_fallback:
                    byte_ids = [self.byte_ids[byte] for byte in text[start:end].encode("utf-8")]
                if None not in byte_ids:
                    out.extend((byte_id, start, end) for byte_id in byte_ids)
                    continue
                token_id = self.unk_id  # as the reference does when a byte's piece is missing
            out.append((token_id, start, end))
        return _as_tokens(out)


class SentencePieceBPE(_SentencePieceVocabulary):
    """SentencePiece's BPE: start from characters (user-defined pieces whole) and keep merging the
    adjacent pair whose joined piece scores highest (leftmost on ties) while the joined piece exists."""

    def tokenize(self, text: str) -> Tokens:
        # A doubly linked list of symbols: starts, ends, and neighbours; a frozen symbol never merges.
        starts, ends, frozen = [], [], []
        position = 0
        while position < len(text):
            length = self._user_defined_at(text, position)
            starts.append(position)
            ends.append(position + (length or 1))
            frozen.append(bool(length))
            position += length or 1
        count = len(starts)
        previous, following = list(range(-1, count - 1)), list(range(1, count + 1))
        alive = [True] * count
        agenda = []

        def push(left: int, right: int):
            if left < 0 or right >= count or frozen[left] or frozen[right]:
                return
            piece_id = self.pieces.get(text[starts[left] : ends[right]])
            if piece_id is not None:
                heapq.heappush(agenda, (-self.scores[piece_id], left, right, ends[right] - starts[left]))

        for index in range(count - 1):
            push(index, index + 1)
        while agenda:
            _, left, right, size = heapq.heappop(agenda)
            if not (alive[left] and alive[right]) or following[left] != right or ends[right] - starts[left] != size:
                continue  # one side has merged since this pair was queued
            ends[left] = ends[right]
            alive[right] = False
            following[left] = following[right]
            if following[right] < count:
                previous[following[right]] = left
            push(previous[left], left)
            push(left, following[left])

        segments = []
        for index in range(count):
            if alive[index]:
                segments.extend(self._resegment(text, starts[index], ends[index]))
        return self._output(text, segments)

    def _resegment(self, text: str, start: int, end: int) -> list[tuple[int, int, int | None]]:
        """An unused piece is split back into the two pieces it was merged from (the best-scoring split)."""
        token_id = self.pieces.get(text[start:end])
        if token_id is None or token_id not in self.unused:
            return [(start, end, token_id)]
        splits = [
            (self.pieces[text[start:cut]], self.pieces[text[cut:end]], cut)
            for cut in range(start + 1, end)
            if text[start:cut] in self.pieces and text[cut:end] in self.pieces
        ]
        if not splits:
            return [(start, end, token_id)]
        _, _, cut = max(splits, key=lambda split: self.scores[split[0]] + self.scores[split[1]])
        return self._resegment(text, start, cut) + self._resegment(text, cut, end)


def _float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


class Unigram(_SentencePieceVocabulary):
    """The unigram language model (T5, ALBERT, XLM-R): Viterbi picks the segmentation whose pieces'
    log-probabilities (scores) sum highest. A character no piece covers costs the lowest score minus
    10 and becomes the unknown piece (a run of them one piece); user-defined pieces score by length,
    so they always win.
    Scores add in float32, as in `sentencepiece` (float64 for tokenizer.json files, as in the reference),
    so near ties break the same way."""

    UNKNOWN_PENALTY = 10.0

    def __init__(self, pieces, *, unk_id: int, byte_fallback: bool = False, float32: bool = True):
        super().__init__(pieces, unk_id=unk_id, byte_fallback=byte_fallback)
        # `sentencepiece` adds scores in float32, the reference's tokenizer.json Unigram in float64.
        self._round = _float32 if float32 else float
        normal_scores = [score for score, kind in zip(self.scores, self.types) if kind == NORMAL] or [0.0]
        self.unknown_score = self._round(min(normal_scores) - self.UNKNOWN_PENALTY)
        self.max_score = max(normal_scores)
        self.max_piece_length = max((len(piece) for piece in self.pieces), default=1)
        self.candidates = {
            piece: (token_id, self._score(piece, token_id))
            for piece, token_id in self.pieces.items()
            if token_id not in self.unused
        }

    def _score(self, piece: str, token_id: int) -> float:
        if piece in self.user_defined:
            return _float32(len(piece.encode("utf-8")) * self.max_score - 0.1)
        return self.scores[token_id]

    def tokenize(self, text: str) -> Tokens:
        count = len(text)
        best_score = [0.0] + [None] * count  # best path score ending at each position
        best_from = [-1] * (count + 1)
        best_id: list[int | None] = [None] * (count + 1)
        for start in range(count):
            here = best_score[start]
            if here is None:
                continue
            has_single = False
            for end in range(start + 1, min(start + self.max_piece_length, count) + 1):
                candidate = self.candidates.get(text[start:end])
                if candidate is None:
                    continue
                score = self._round(here + candidate[1])
                if best_score[end] is None or score > best_score[end]:
                    best_score[end], best_from[end], best_id[end] = score, start, candidate[0]
                has_single = has_single or end == start + 1
            if not has_single:
                score = self._round(here + self.unknown_score)
                if best_score[start + 1] is None or score > best_score[start + 1]:
                    best_score[start + 1], best_from[start + 1], best_id[start + 1] = score, start, None
        segments, end = [], count
        while end > 0:
            start, token_id = best_from[end], best_id[end]
            if token_id == self.unk_id:  # the unknown piece itself (spelled out in the text) is an unknown too
                token_id = None
            if token_id is None and segments and segments[-1][2] is None:  # unknowns in a row become one
                end = segments.pop()[1]
            segments.append((start, end, token_id))
            end = start
        return self._output(text, segments[::-1])


class PieceVocabulary(_Vocabulary):
    """A SentencePiece model's segmentation with the ids of another vocabulary (Marian's vocab.json, which a source
    and a target model share): each piece, or the text of a segment the model does not know, is looked up there, and
    gets the unknown token's id when it is missing. An id the vocabulary lacks reads as the model's piece of that id."""

    def __init__(self, segmenter: _SentencePieceVocabulary, vocab: dict[str, int], unk_token: str):
        super().__init__(vocab, unk_token)
        self.segmenter = segmenter
        self.unk_id = vocab[unk_token]

    def tokenize(self, text: str) -> Tokens:
        segment_ids, spans = self.segmenter.tokenize(text)
        pieces = self.segmenter.tokens_by_id
        unknown = self.segmenter.unk_id
        ids = tuple(
            self.vocab.get(text[start:end] if token_id == unknown else pieces[token_id], self.unk_id)
            for token_id, (start, end) in zip(segment_ids, spans)
        )
        return ids, spans

    def id_to_token(self, token_id: int) -> str | None:
        token = self.tokens_by_id.get(token_id)
        return token if token is not None else self.segmenter.id_to_token(token_id)

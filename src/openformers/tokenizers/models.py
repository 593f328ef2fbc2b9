"""Models: the third slot, turning one pre-tokenized piece into token ids.

A model holds plain data, a vocabulary dict and (for BPE) a dict of merge ranks, as minbpe and
tiktoken do, and knows nothing of files.
"""


class BPE:
    """Byte-pair encoding: start from single characters and keep merging the adjacent pair that was
    learned first (lowest rank) until no learned pair is left.

    `ignore_merges` (Llama-3) takes a piece that is in the vocabulary whole, without merging.
    A character missing from the vocabulary becomes `unk_token` if there is one, and is dropped
    otherwise, as the reference does; byte-level vocabularies hold every byte, so neither happens there.
    """

    CACHE_SIZE = 10_000  # pieces remembered; past that, new pieces are merged without being stored

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        unk_token: str | None = None,
        ignore_merges: bool = False,
    ):
        if unk_token is not None and unk_token not in vocab:
            raise ValueError(f"BPE unk_token {unk_token!r} is not in the vocabulary.")
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.unk_token = unk_token
        self.ignore_merges = ignore_merges
        self.tokens_by_id = {token_id: token for token, token_id in vocab.items()}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._offsets_cache: dict[str, list[tuple[int, int, int]]] = {}

    def tokenize(self, piece: str) -> tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is None:
            if self.ignore_merges and piece in self.vocab:
                ids = (self.vocab[piece],)
            else:
                ids = self._to_ids(self._merge(piece))
            if len(self._cache) < self.CACHE_SIZE:
                self._cache[piece] = ids
        return ids

    def tokenize_with_offsets(self, piece: str) -> list[tuple[int, int, int]]:
        """`(id, start, end)` per token, start and end counted in characters of `piece`."""
        tokens = self._offsets_cache.get(piece)
        if tokens is None:
            tokens = self._merge_with_offsets(piece)
            if len(self._offsets_cache) < self.CACHE_SIZE:
                self._offsets_cache[piece] = tokens
        return tokens

    def _merge_with_offsets(self, piece: str) -> list[tuple[int, int, int]]:
        if self.ignore_merges and piece in self.vocab:
            return [(self.vocab[piece], 0, len(piece))]
        out, start = [], 0
        for part in self._merge(piece):
            end = start + len(part)
            token_id = self.vocab.get(part)
            if token_id is None and self.unk_token is not None:
                token_id = self.vocab[self.unk_token]
            if token_id is not None:
                out.append((token_id, start, end))
            start = end
        return out

    def _merge(self, piece: str) -> list[str]:
        parts = list(piece)
        ranks = self.ranks
        while len(parts) > 1:
            pairs = zip(parts, parts[1:])
            best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _to_ids(self, parts: list[str]) -> tuple[int, ...]:
        ids = []
        for part in parts:
            token_id = self.vocab.get(part)
            if token_id is None:
                if self.unk_token is None:
                    continue
                token_id = self.vocab[self.unk_token]
            ids.append(token_id)
        return tuple(ids)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokens_by_id.get(token_id)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


class _Vocabulary:
    """Lookups shared by the models below, which hold only a vocabulary."""

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

    def tokenize(self, piece: str) -> tuple[int, ...]:
        return tuple(token_id for token_id, _, _ in self.tokenize_with_offsets(piece))


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
        self._cache: dict[str, list[tuple[int, int, int]]] = {}

    def tokenize_with_offsets(self, piece: str) -> list[tuple[int, int, int]]:
        tokens = self._cache.get(piece)
        if tokens is None:
            tokens = self._longest_matches(piece)
            if len(self._cache) < BPE.CACHE_SIZE:
                self._cache[piece] = tokens
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

    def tokenize_with_offsets(self, piece: str) -> list[tuple[int, int, int]]:
        token_id = self.vocab.get(piece)
        if token_id is None:
            if self.unk_token is None:
                raise ValueError(f"WordLevel has no token for {piece!r} and no unk_token to use instead.")
            token_id = self.vocab[self.unk_token]
        return [(token_id, 0, len(piece))]

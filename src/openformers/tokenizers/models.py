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

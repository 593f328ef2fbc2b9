"""`tokenizer.backend_tokenizer`: the pipeline seen with the method names of the `tokenizers` library's
Tokenizer, for code (like the Hugging Face course) that looks inside a tokenizer:

    tokenizer.backend_tokenizer.normalizer.normalize_str("Héllò hôw are ü?")
    tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("Hello, how are  you?")
    tokenizer.backend_tokenizer.encode("Hello").tokens
"""

import json
from pathlib import Path

from .pipeline import added_token_json


class NormalizerView:
    """A normalizer with `normalize_str`."""

    def __init__(self, normalizer):
        self.part = normalizer

    def normalize_str(self, text: str) -> str:
        return self.part.normalize(text)[0]


class PreTokenizerView:
    """A pre-tokenizer with `pre_tokenize_str`: the pieces and their (start, end) in the text."""

    def __init__(self, pre_tokenizer):
        self.part = pre_tokenizer

    def pre_tokenize_str(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        pieces, spans = self.part.pre_tokenize(text, [(index, index + 1) for index in range(len(text))])
        return [(piece, (own[0][0], own[-1][1])) for piece, own in zip(pieces, spans)]


class EncodingView:
    """One encoded text as the `tokenizers` library returns it: ids, tokens, offsets, word ids..."""

    def __init__(self, encoding, pipeline):
        self.ids = list(encoding.ids)
        self.tokens = [pipeline.id_to_token(token_id) for token_id in encoding.ids]
        self.offsets = list(encoding.offsets)
        self.word_ids = list(encoding.word_ids)
        self.type_ids = list(encoding.type_ids)
        self.attention_mask = list(encoding.attention_mask)
        self.special_tokens_mask = list(encoding.special_tokens_mask)
        self.sequence_ids = list(encoding.sequence_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Encoding(num_tokens={len(self)}, tokens={self.tokens})"


class BackendTokenizer:
    """The tokenizer's pipeline under the `tokenizers` library's names; it shares the tokenizer's state."""

    def __init__(self, pipeline):
        self._pipeline = pipeline

    @property
    def normalizer(self) -> NormalizerView | None:
        part = self._pipeline.normalizer
        return None if part is None else NormalizerView(part)

    @property
    def pre_tokenizer(self) -> PreTokenizerView | None:
        part = self._pipeline.pre_tokenizer
        return None if part is None else PreTokenizerView(part)

    @property
    def model(self):
        return self._pipeline.model

    @property
    def post_processor(self):
        return self._pipeline.post_processor

    @property
    def decoder(self):
        return self._pipeline.decoder

    def encode(self, sequence: str, pair: str | None = None, add_special_tokens: bool = True) -> EncodingView:
        encoding = self._pipeline.encode_aligned(sequence, pair, add_special_tokens)
        return EncodingView(encoding, self._pipeline)

    def encode_batch(self, inputs: list, add_special_tokens: bool = True) -> list[EncodingView]:
        pairs = [item if isinstance(item, (list, tuple)) else (item, None) for item in inputs]
        return [self.encode(text, pair, add_special_tokens) for text, pair in pairs]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._pipeline.decode(list(ids), skip_special_tokens)

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        return self._pipeline.get_vocab() if with_added_tokens else self._pipeline.model.get_vocab()

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return len(self.get_vocab(with_added_tokens))

    def token_to_id(self, token: str) -> int | None:
        return self._pipeline.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._pipeline.id_to_token(token_id)

    def to_str(self, pretty: bool = False) -> str:
        """The tokenizer.json this pipeline was built from (with today's added tokens)."""
        if self._pipeline.source is None:
            raise ValueError("This tokenizer was read from a SentencePiece or GGUF file; it has no tokenizer.json form.")
        data = dict(self._pipeline.source)
        added = sorted(self._pipeline.added.tokens.items())
        data["added_tokens"] = [added_token_json(token_id, token) for token_id, token in added]
        return json.dumps(data, ensure_ascii=False, indent=2 if pretty else None)

    def save(self, path: str, pretty: bool = True) -> None:
        Path(path).write_text(self.to_str(pretty), encoding="utf-8")

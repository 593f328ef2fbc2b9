"""The user-facing tokenizer: text to ids and back, with the reference's API.

    added tokens split off -> normalizer -> pre-tokenizer -> model -> post-processor   (encode)
    ids -> tokens -> decoder                                                            (decode)

`Pipeline` runs those slots; `PreTrainedTokenizer` adds what users call: special tokens by name,
`__call__` with batching and padding, tensors, and chat templates.
"""

import numbers
import os
from dataclasses import dataclass

import numpy as np
import regex

from .. import hub

VERY_LARGE_INTEGER = int(1e30)  # the reference's "no limit" for model_max_length
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
PADDING_CHOICES = (False, True, "longest", "max_length", "do_not_pad")
TENSOR_TYPES = (None, "pt", "np")


@dataclass(frozen=True)
class AddedToken:
    """A token matched whole in the text, before the rest of the pipeline sees it.

    `special` tokens (like `<|im_end|>`) are dropped by decode(skip_special_tokens=True). `lstrip` and
    `rstrip` make the token swallow the whitespace beside it; `single_word` matches it only between
    non-word characters; `normalized` matches it in the normalized text rather than the raw text.
    """

    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool | None = None  # None means "not special", the reference's default

    def __post_init__(self):
        if self.normalized is None:
            object.__setattr__(self, "normalized", not self.special)


def _added_token_pattern(tokens: list[AddedToken]) -> regex.Pattern | None:
    """One regex for all the tokens, longest first so the longest token wins where several start."""
    if not tokens:
        return None
    alternatives = []
    for token in sorted(tokens, key=lambda token: len(token.content), reverse=True):
        body = f"(?P<token>{regex.escape(token.content)})"  # `regex` allows one group name in every branch
        if token.single_word:
            body = rf"(?<!\w){body}(?!\w)"
        if token.lstrip:
            body = r"\s*" + body
        if token.rstrip:
            body = body + r"\s*"
        alternatives.append(body)
    return regex.compile("|".join(alternatives))


class AddedVocabulary:
    """The added tokens by id, and the two patterns that find them: in the raw text and in the normalized text."""

    def __init__(self, tokens: dict[int, AddedToken]):
        self.tokens = dict(tokens)
        self.ids = {token.content: token_id for token_id, token in self.tokens.items()}
        self.special_ids = frozenset(token_id for token_id, token in self.tokens.items() if token.special)
        self.raw_pattern = _added_token_pattern([token for token in self.tokens.values() if not token.normalized])
        self.normalized_pattern = _added_token_pattern([token for token in self.tokens.values() if token.normalized])

    def split(self, text: str, pattern: regex.Pattern | None) -> list[tuple[str, int | None]]:
        """`(text, None)` for the plain stretches and `(content, id)` for each added token found."""
        if pattern is None:
            return [(text, None)] if text else []
        segments, position = [], 0
        for match in pattern.finditer(text):
            if match.start() > position:
                segments.append((text[position : match.start()], None))
            content = match.group("token")
            segments.append((content, self.ids[content]))
            position = match.end()
        if position < len(text):
            segments.append((text[position:], None))
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

    def add_tokens(self, tokens: list[AddedToken]) -> None:
        """Add tokens that are not added tokens yet, reusing their vocabulary id or taking the next free one."""
        added = dict(self.added.tokens)
        contents = {token.content for token in added.values()}
        next_id = max([*self.get_vocab().values(), -1]) + 1
        for token in tokens:
            if token.content in contents:
                continue
            token_id = self.model.token_to_id(token.content)
            if token_id is None:
                token_id, next_id = next_id, next_id + 1
            added[token_id] = token
            contents.add(token.content)
        self.added = AddedVocabulary(added)

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        sequences = [self._encode_one(text)] if pair is None else [self._encode_one(text), self._encode_one(pair)]
        if add_special_tokens and self.post_processor is not None:
            sequences = self.post_processor.process(sequences)
        return [token_id for sequence in sequences for token_id in sequence]

    def _encode_one(self, text: str) -> list[int]:
        ids = []
        for segment, token_id in self.added.split(text, self.added.raw_pattern):
            if token_id is not None:
                ids.append(token_id)
                continue
            if self.normalizer is not None:
                segment = self.normalizer.normalize(segment)
            for piece, token_id in self.added.split(segment, self.added.normalized_pattern):
                if token_id is not None:
                    ids.append(token_id)
                    continue
                words = self.pre_tokenizer.pre_tokenize(piece) if self.pre_tokenizer is not None else [(piece, None)]
                for word, _ in words:
                    ids.extend(self.model.tokenize(word))
        return ids

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


class BatchEncoding(dict):
    """What `tokenizer(...)` returns: a dict of `input_ids` and `attention_mask`, also readable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r}; it has {sorted(self)}.") from None

    def to(self, device) -> "BatchEncoding":
        """Move the tensors to `device` (needs return_tensors="pt")."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


def _special_token(name: str) -> property:
    def get(self) -> str | None:
        return self._special_tokens.get(name)

    def set(self, value: str | None):
        self._set_special_token(name, value)

    return property(get, set, doc=f"The {name.replace('_', ' ')} as a string, or None.")


def _special_token_id(name: str) -> property:
    def get(self) -> int | None:
        token = self._special_tokens.get(name)
        return None if token is None else self._pipeline.token_to_id(token)

    def set(self, token_id: int | None):
        token = None if token_id is None else self._pipeline.id_to_token(token_id)
        if token_id is not None and token is None:
            raise ValueError(f"{name}_id={token_id!r} is not an id in this tokenizer's vocabulary (size {len(self)}).")
        self._set_special_token(name, token)

    return property(get, set, doc=f"The id of the {name.replace('_', ' ')}, or None.")


class PreTrainedTokenizer:
    """A tokenizer loaded from a tokenizer.json or a GGUF file, with the reference's API.

        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
        ids = tokenizer.encode("Hello")
        batch = tokenizer(["Hi", "Hello there"], padding=True, return_tensors="pt")
        text = tokenizer.decode(ids, skip_special_tokens=True)
    """

    bos_token, bos_token_id = _special_token("bos_token"), _special_token_id("bos_token")
    eos_token, eos_token_id = _special_token("eos_token"), _special_token_id("eos_token")
    unk_token, unk_token_id = _special_token("unk_token"), _special_token_id("unk_token")
    sep_token, sep_token_id = _special_token("sep_token"), _special_token_id("sep_token")
    pad_token, pad_token_id = _special_token("pad_token"), _special_token_id("pad_token")
    cls_token, cls_token_id = _special_token("cls_token"), _special_token_id("cls_token")
    mask_token, mask_token_id = _special_token("mask_token"), _special_token_id("mask_token")

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        sep_token: str | None = None,
        pad_token: str | None = None,
        cls_token: str | None = None,
        mask_token: str | None = None,
        extra_special_tokens: list[str] | tuple[str, ...] = (),
        chat_template: str | dict[str, str] | None = None,
        padding_side: str = "right",
        model_max_length: int = VERY_LARGE_INTEGER,
        name_or_path: str = "",
    ):
        named = dict(
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            sep_token=sep_token,
            pad_token=pad_token,
            cls_token=cls_token,
            mask_token=mask_token,
        )
        self._pipeline = pipeline
        self._special_tokens = {name: token for name, token in named.items() if token is not None}
        self.extra_special_tokens = list(extra_special_tokens)
        # As in the reference, special tokens are always matched whole, so they become added tokens.
        pipeline.add_tokens([AddedToken(token, special=True) for token in self.all_special_tokens])
        self.chat_template = chat_template
        self.padding_side = padding_side
        self.model_max_length = model_max_length
        self.name_or_path = name_or_path

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **kwargs,
    ) -> "PreTrainedTokenizer":
        """Load from a folder, a .gguf file or a Hub id.

        A folder's tokenizer.json (with tokenizer_config.json and special_tokens_map.json) is used if
        there is one, else the tokenizer stored in the GGUF file's metadata; an explicit `gguf_file`
        always means the GGUF. Keyword arguments override the loaded settings, e.g.
        `padding_side="left"` or `pad_token="<|im_end|>"`.
        """
        from .loaders import load_tokenizer  # the loaders build on the classes of this module

        files = hub.resolve(
            name_or_path,
            gguf_file=gguf_file,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        settings = load_tokenizer(files, prefer_gguf=gguf_file is not None)
        settings["name_or_path"] = os.fspath(name_or_path)
        settings.update(_checked_overrides(kwargs))
        return cls(**settings)

    # --- settings and special tokens

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str):
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        self._padding_side = side

    def _set_special_token(self, name: str, token: str | None):
        if token is not None and not isinstance(token, str):
            raise TypeError(f"{name} must be a string or None, got {type(token).__name__}.")
        if token is not None and self._pipeline.token_to_id(token) is None:
            raise ValueError(
                f"Cannot set {name} to {token!r}: it is not in the vocabulary. Use a token the tokenizer has, "
                f"e.g. `tokenizer.{name} = tokenizer.eos_token`."
            )
        if token is None:
            self._special_tokens.pop(name, None)
        else:
            self._special_tokens[name] = token

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {name: self._special_tokens[name] for name in SPECIAL_TOKEN_NAMES if name in self._special_tokens}

    @property
    def all_special_tokens(self) -> list[str]:
        """The named special tokens, then the extra ones, each once."""
        named = [self._special_tokens[name] for name in SPECIAL_TOKEN_NAMES if name in self._special_tokens]
        return list(dict.fromkeys(named + self.extra_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    # --- vocabulary

    def get_vocab(self) -> dict[str, int]:
        return self._pipeline.get_vocab()

    def __len__(self) -> int:
        """The size of the whole vocabulary, added tokens included."""
        return len(self.get_vocab())

    @property
    def vocab_size(self) -> int:
        """The size of the model's vocabulary, without tokens added on top of it."""
        return self._pipeline.model.vocab_size

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        """The id of each token; a token not in the vocabulary gets the unknown token's id (None if there is none)."""
        if isinstance(tokens, str):
            token_id = self._pipeline.token_to_id(tokens)
            return token_id if token_id is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | None | list[str | None]:
        if hasattr(ids, "tolist"):  # a tensor, an array or a numpy integer
            ids = ids.tolist()
        if isinstance(ids, int):
            return self._pipeline.id_to_token(ids)
        ids = _id_list(ids, "ids")
        if skip_special_tokens:
            ids = [token_id for token_id in ids if token_id not in self._pipeline.added.special_ids]
        return [self._pipeline.id_to_token(token_id) for token_id in ids]

    # --- encoding

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        ids = self.encode(text, pair, add_special_tokens=add_special_tokens)
        return [self._pipeline.id_to_token(token_id) for token_id in ids]

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        return_tensors: str | None = None,
    ):
        """The ids of `text` (and `text_pair`): a list, or a (1, T) tensor with return_tensors="pt" or "np"."""
        _check_text(text, "text")
        if text_pair is not None:
            _check_text(text_pair, "text_pair")
        _check_tensor_type(return_tensors)
        ids = self._pipeline.encode(text, text_pair, add_special_tokens)
        return ids if return_tensors is None else _to_tensor([ids], return_tensors)

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Encode one text or a batch into a BatchEncoding of `input_ids` and `attention_mask`.

        padding=True (or "longest") pads to the longest text, "max_length" to `max_length`, on
        `padding_side` (default: the tokenizer's `padding_side`).
        """
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        for index, item in enumerate(texts):
            _check_text(item, f"text[{index}]" if batched else "text")
        pairs = self._pairs(text_pair, batched, len(texts))
        _check_tensor_type(return_tensors)
        rows = [self._pipeline.encode(item, pair, add_special_tokens) for item, pair in zip(texts, pairs)]
        masks = [[1] * len(row) for row in rows]
        if padding not in PADDING_CHOICES:
            raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}.")
        if padding not in (False, "do_not_pad"):
            rows, masks = self._pad(rows, masks, padding, max_length, padding_side or self.padding_side)
        if return_tensors is not None:
            return BatchEncoding(
                input_ids=_to_tensor(rows, return_tensors), attention_mask=_to_tensor(masks, return_tensors)
            )
        if not batched:
            rows, masks = rows[0], masks[0]
        return BatchEncoding(input_ids=rows, attention_mask=masks)

    @staticmethod
    def _pairs(text_pair, batched: bool, count: int) -> list[str | None]:
        if text_pair is None:
            return [None] * count
        pairs = list(text_pair) if batched else [text_pair]
        if len(pairs) != count:
            raise ValueError(f"Got {count} texts but {len(pairs)} text_pair entries; pass one pair per text.")
        for index, pair in enumerate(pairs):
            _check_text(pair, f"text_pair[{index}]" if batched else "text_pair")
        return pairs

    def _pad(self, rows, masks, padding, max_length, side):
        if self.pad_token_id is None:
            raise ValueError(
                "Asked to pad, but this tokenizer has no pad token. Set one first, for example "
                "`tokenizer.pad_token = tokenizer.eos_token`, or call it with padding=False."
            )
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        if padding == "max_length":
            if max_length is None:
                raise ValueError('padding="max_length" needs max_length=N.')
            target = max_length
        else:
            target = max((len(row) for row in rows), default=0)
        padded_rows, padded_masks = [], []
        for row, mask in zip(rows, masks):
            fill = max(target - len(row), 0)
            if side == "left":
                padded_rows.append([self.pad_token_id] * fill + row)
                padded_masks.append([0] * fill + mask)
            else:
                padded_rows.append(row + [self.pad_token_id] * fill)
                padded_masks.append(mask + [0] * fill)
        return padded_rows, padded_masks

    # --- decoding

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Text for a sequence of ids (a list, a 1-D tensor or array, or one int); a list of texts for a batch."""
        if hasattr(token_ids, "tolist"):  # a tensor or an array
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return self.batch_decode(token_ids, skip_special_tokens=skip_special_tokens)
        return self._pipeline.decode(_id_list(token_ids, "token_ids"), skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(
                f"batch_decode expects a list of id sequences or a 2-D tensor, got {type(sequences).__name__}."
            )
        return [self._pipeline.decode(_id_list(ids, "sequences[i]"), skip_special_tokens) for ids in sequences]

    # --- chat

    def apply_chat_template(
        self,
        messages,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        return_tensors: str | None = None,
        return_dict: bool = True,
        **template_kwargs,
    ):
        """Render a conversation with the model's chat template; see `openformers.tokenizers.chat`."""
        from .chat import apply_chat_template

        return apply_chat_template(
            self,
            messages,
            tokenize=tokenize,
            add_generation_prompt=add_generation_prompt,
            return_tensors=return_tensors,
            return_dict=return_dict,
            **template_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={len(self)}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )


def _check_text(text, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(
            f"{name} must be a string, got {type(text).__name__} ({text!r:.60}). "
            "To tokenize several texts at once, pass a list of strings to tokenizer(...)."
        )


def _check_tensor_type(return_tensors) -> None:
    if return_tensors not in TENSOR_TYPES:
        raise ValueError(f'return_tensors must be None, "pt" or "np", got {return_tensors!r}.')


def _to_tensor(rows: list[list[int]], return_tensors: str):
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"Cannot make one tensor from sequences of different lengths ({lengths[0]} to {lengths[-1]} tokens); "
            "pass padding=True."
        )
    if return_tensors == "np":
        return np.array(rows, dtype=np.int64).reshape(len(rows), lengths[0] if lengths else 0)
    import torch

    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), lengths[0] if lengths else 0)


def _id_list(ids, name: str) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints, a 1-D tensor or an array, got {type(ids).__name__}.")
    for token_id in ids:
        if not isinstance(token_id, numbers.Integral) or isinstance(token_id, bool):
            raise TypeError(f"{name} must hold ints, found {token_id!r} ({type(token_id).__name__}).")
        if token_id < 0:
            raise ValueError(f"{name} holds a negative id ({token_id}); token ids start at 0.")
    return [int(token_id) for token_id in ids]


_OVERRIDES = frozenset(SPECIAL_TOKEN_NAMES) | {
    "extra_special_tokens",
    "chat_template",
    "padding_side",
    "model_max_length",
}
_IGNORED = frozenset({"use_fast", "trust_remote_code"})  # there is one implementation and it runs no code from files


def _checked_overrides(kwargs: dict) -> dict:
    unknown = sorted(set(kwargs) - _OVERRIDES - _IGNORED)
    if unknown:
        raise TypeError(
            f"AutoTokenizer.from_pretrained got unexpected keyword arguments {unknown}; "
            f"it accepts {sorted(_OVERRIDES)} to override the loaded settings."
        )
    return {key: value for key, value in kwargs.items() if key in _OVERRIDES}

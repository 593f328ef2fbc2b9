"""The user-facing tokenizer (the facade): text to ids and back, with the reference's API.

`PreTrainedTokenizer` adds what users call to the `Pipeline` (pipeline.py) that runs the slots: special
tokens by name, `__call__` with batching, truncation and padding, tensors, saving, and chat templates.
"""

import itertools
import json
import numbers
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import hub
from . import parallel, processors
from .encoding import TRUNCATION_STRATEGIES, BatchEncoding, Encoding, pad, truncate_sequences
from .loaders import INIT_OPTIONS, build_part, load_tokenizer, read_tokenizer_config, template_spec
from .models import BPE, SentencePieceBPE
from .pipeline import AddedToken, Pipeline, added_token_json
from .sentencepiece import write_sentencepiece_model

VERY_LARGE_INTEGER = int(1e30)  # the reference's "no limit" for model_max_length
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
PADDING_CHOICES = (False, True, "longest", "max_length", "do_not_pad")
TENSOR_TYPES = (None, "pt", "np")


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


class PreTrainedTokenizerBase:
    """A tokenizer loaded from a tokenizer.json or a GGUF file, with the reference's API.

    Every tokenizer class is this one; the reference's names (`BertTokenizer`, `LlamaTokenizer`...)
    are thin subclasses in `classes.py` that set a family's defaults.

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
        truncation_side: str = "right",
        model_input_names: list[str] | tuple[str, ...] | None = None,
        name_or_path: str = "",
        **options,
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
        # The reference also takes AddedToken objects here; their content is the token.
        self._special_tokens = {name: _content(token) for name, token in named.items() if token is not None}
        self.extra_special_tokens = [_content(token) for token in extra_special_tokens]
        # As in the reference, special tokens are always matched whole, so they become added tokens.
        pipeline.add_tokens([AddedToken(token, special=True) for token in self.all_special_tokens])
        self.chat_template = chat_template
        self.padding_side = padding_side
        self.model_max_length = model_max_length
        self.truncation_side = truncation_side
        # The keys a model takes, so token_type_ids come back only for tokenizers of models that use them.
        self.model_input_names = list(model_input_names or type(self).model_input_names)
        self.name_or_path = name_or_path
        if options.get("additional_special_tokens"):  # the reference's older name for the extra ones
            additional = [str(getattr(token, "content", token)) for token in options["additional_special_tokens"]]
            self.extra_special_tokens = list(dict.fromkeys(self.extra_special_tokens + additional))
            pipeline.add_tokens([AddedToken(token, special=True) for token in additional])
        options.pop("additional_special_tokens", None)
        unknown = sorted(set(options) - set(INIT_OPTIONS) - _IGNORED)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}; it accepts the special tokens, "
                f"{sorted(_OVERRIDES - set(SPECIAL_TOKEN_NAMES))} and {sorted(INIT_OPTIONS)}."
            )
        self.init_kwargs = dict(options)
        self.clean_up_tokenization_spaces = bool(options.get("clean_up_tokenization_spaces", False))
        pipeline.split_special_tokens = bool(options.get("split_special_tokens", False))
        if "add_bos_token" in options or "add_eos_token" in options:  # the reference lays BOS/EOS out anew then
            self.update_post_processor(options.get("add_bos_token", False), options.get("add_eos_token", False))
        for name in ("do_lower_case", "add_prefix_space", "legacy"):
            if name in options:
                setattr(self, name, options[name])

    model_input_names = ["input_ids", "attention_mask"]  # the default; BERT-like families add token_type_ids
    family: str | None = None  # the reference's class name whose defaults a subclass sets

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
        subfolder: str = "",
        **kwargs,
    ) -> "PreTrainedTokenizerBase":
        """Load from a folder, a .gguf file or a Hub id.

        A folder's tokenizer.json (with tokenizer_config.json and special_tokens_map.json) is used if
        there is one, else the tokenizer stored in the GGUF file's metadata; an explicit `gguf_file`
        always means the GGUF. Keyword arguments override the loaded settings, e.g.
        `padding_side="left"` or `pad_token="<|im_end|>"`.
        """
        files = hub.resolve(
            name_or_path,
            gguf_file=gguf_file,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        files = in_subfolder(files, subfolder)
        return cls._from_files(files, os.fspath(name_or_path), gguf_file is not None, kwargs, chosen=False)

    @classmethod
    def _from_files(
        cls, files, name_or_path: str, prefer_gguf: bool, kwargs: dict, chosen: bool
    ) -> "PreTrainedTokenizerBase":
        """Load `files` as this class; `chosen` when AutoTokenizer picked it from the files' config."""
        own = cls._own_options(files, kwargs)
        options = _checked_overrides(kwargs, cls.__name__)
        settings = load_tokenizer(files, prefer_gguf=prefer_gguf, tokenizer_class=cls.family, options=options)
        if cls.family is None and not chosen and "model_input_names" not in options:
            # A generic class asked for by name takes the inputs of its own (as the reference's does),
            # not those of the class the config names.
            settings.pop("model_input_names", None)
        settings["name_or_path"] = name_or_path
        return cls(**settings, **own)

    OPTIONS: tuple[str, ...] = ()  # a class's own options (NLLB's src_lang...), kept in tokenizer_config.json

    @classmethod
    def _own_options(cls, files, kwargs: dict) -> dict:
        """The class's own OPTIONS: those in `kwargs` (taken out of it), else tokenizer_config.json's."""
        config = read_tokenizer_config(files) if cls.OPTIONS else {}
        return {name: kwargs.pop(name) if name in kwargs else config[name] for name in cls.OPTIONS
                if name in kwargs or name in config}

    # --- settings and special tokens

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str):
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        self._padding_side = side

    @property
    def truncation_side(self) -> str:
        return self._truncation_side

    @truncation_side.setter
    def truncation_side(self, side: str):
        if side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {side!r}.")
        self._truncation_side = side

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

    def add_tokens(self, new_tokens: str | AddedToken | list[str | AddedToken], special_tokens: bool = False) -> int:
        """Add tokens matched whole in text; returns how many were new to the vocabulary (resize the
        model's embeddings by that many)."""
        tokens = [new_tokens] if isinstance(new_tokens, (str, AddedToken)) else list(new_tokens)
        checked = []
        for token in tokens:
            if isinstance(token, str):
                token = AddedToken(token, special=special_tokens)
            elif not isinstance(token, AddedToken):
                raise TypeError(f"add_tokens takes strings or AddedToken objects, got {type(token).__name__}.")
            elif special_tokens and not token.special:
                token = replace(token, special=True)
            checked.append(token)
        size = len(self)
        self._pipeline.add_tokens(checked)
        return len(self) - size

    def add_special_tokens(self, special_tokens_dict: dict, replace_extra_special_tokens: bool = True) -> int:
        """Add and name special tokens, e.g. `{"pad_token": "<pad>", "extra_special_tokens": ["<tool>"]}`;
        returns how many were new to the vocabulary. The old name "additional_special_tokens" is read as
        "extra_special_tokens" and, as the reference reads it, after the other names (which decides the new ids)."""
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict and not special_tokens_dict.get("extra_special_tokens"):
            special_tokens_dict.pop("extra_special_tokens", None)
            special_tokens_dict["extra_special_tokens"] = special_tokens_dict.pop("additional_special_tokens")
        added = 0
        for name, value in special_tokens_dict.items():
            if name in ("extra_special_tokens", "additional_special_tokens"):
                values = list(value)
                added += self.add_tokens(values, special_tokens=True)
                contents = [str(getattr(token, "content", token)) for token in values]
                if not replace_extra_special_tokens:
                    contents = list(dict.fromkeys(self.extra_special_tokens + contents))
                self.extra_special_tokens = contents
            elif name in SPECIAL_TOKEN_NAMES:
                added += self.add_tokens([value], special_tokens=True)
                self._set_special_token(name, getattr(value, "content", value))
            else:
                raise ValueError(
                    f"add_special_tokens got {name!r}; the names it takes are {list(SPECIAL_TOKEN_NAMES)} "
                    "and 'extra_special_tokens'."
                )
        return added

    # --- saving

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> tuple[str, ...]:
        """Write tokenizer.json (or the tokenizer.model it came from), tokenizer_config.json and
        special_tokens_map.json, which this library and the reference both load back to the same ids.

        `filename_prefix` goes in front of the tokenizer file's name, as in the reference. There is one
        format, so `legacy_format` changes nothing. `push_to_hub=True` then uploads the folder to the Hub
        repository `repo_id` (default: the folder's name) with `huggingface_hub`, as the reference does."""
        if kwargs and not push_to_hub:
            raise TypeError(f"save_pretrained got {sorted(kwargs)}, which only go with push_to_hub=True.")
        written = self._save(Path(save_directory), f"{filename_prefix}-" if filename_prefix else "")
        if push_to_hub:
            _push_folder(Path(save_directory), **kwargs)
        return written

    def _save(self, folder: Path, prefix: str) -> tuple[str, ...]:
        if folder.is_file():
            raise ValueError(f"save_directory {folder} is a file; pass a folder to save the tokenizer in.")
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        config = self._saved_config()
        if self._pipeline.source is not None:
            data = dict(self._pipeline.source)
            added = sorted(self._pipeline.added.tokens.items())
            data["added_tokens"] = [added_token_json(token_id, token) for token_id, token in added]
            written.append(_write_json(folder / f"{prefix}tokenizer.json", data))
        elif self._pipeline.sentencepiece_file is not None or self._pipeline.sentencepiece_model is not None:
            if self._pipeline.sentencepiece_file is not None:
                shutil.copyfile(self._pipeline.sentencepiece_file, folder / f"{prefix}tokenizer.model")
            else:
                write_sentencepiece_model(self._pipeline.sentencepiece_model, folder / f"{prefix}tokenizer.model")
            written.append(str(folder / f"{prefix}tokenizer.model"))
            layout = self._pipeline.post_processor.template(False)
            first_special = [item for item, _ in layout[:1] if not isinstance(item, str)]
            config["tokenizer_class"] = self.family if self.family in _SENTENCEPIECE_FAMILIES else "LlamaTokenizer"
            config["legacy"] = not getattr(self._pipeline.normalizer, "prefix_only_at_start", False)
            if config["tokenizer_class"] not in _FIXED_LAYOUT_FAMILIES:  # their layout is the class's, not a setting
                config["add_bos_token"] = bool(first_special) and self.bos_token_id in first_special[0]
                config["add_eos_token"] = not isinstance(layout[-1][0], str) and self.eos_token_id in layout[-1][0]
        else:
            raise ValueError("This tokenizer was built in code, not loaded from files, so it cannot be saved.")
        return (*written, *self._write_configs(folder, config))

    def _saved_config(self) -> dict:
        """What tokenizer_config.json says of this tokenizer, whatever files hold its vocabulary."""
        config = {
            "tokenizer_class": self.family or "PreTrainedTokenizerFast",
            **self.special_tokens_map,
            "extra_special_tokens": list(self.extra_special_tokens),
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "model_input_names": list(self.model_input_names),
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        for name in _SAVED_OPTIONS:  # as the reference, the options the tokenizer was made with
            if name in self.init_kwargs:
                config[name] = getattr(self, name) if name in ("add_bos_token", "add_eos_token") else self.init_kwargs[name]
        config.update({name: getattr(self, name) for name in type(self).OPTIONS})
        if self.family == "T5Tokenizer":  # how many sentinels to make again on loading
            config["extra_ids"] = sum(token.startswith("<extra_id_") for token in self.extra_special_tokens)
        if isinstance(self.chat_template, dict):  # several named templates
            config["chat_template"] = [{"name": name, "template": text} for name, text in self.chat_template.items()]
        elif self.chat_template is not None:
            config["chat_template"] = self.chat_template
        return config

    def _write_configs(self, folder: Path, config: dict) -> tuple[str, str]:
        """Write tokenizer_config.json (`config`) and special_tokens_map.json; return their paths."""
        special_map = {**self.special_tokens_map, "additional_special_tokens": list(self.extra_special_tokens)}
        return (_write_json(folder / "tokenizer_config.json", config),
                _write_json(folder / "special_tokens_map.json", special_map))

    def __len__(self) -> int:
        """The size of the whole vocabulary, added tokens included."""
        return len(self.get_vocab())

    @property
    def vocab_size(self) -> int:
        """The size of the model's vocabulary, without tokens added on top of it."""
        return self._pipeline.model.vocab_size

    @property
    def split_special_tokens(self) -> bool:
        """Whether special tokens written in the text are tokenized as plain text rather than matched."""
        return self._pipeline.split_special_tokens

    @split_special_tokens.setter
    def split_special_tokens(self, value: bool):
        self._pipeline.split_special_tokens = bool(value)

    @property
    def is_fast(self) -> bool:
        """True, as for the reference's fast tokenizers: offsets, word ids and the BatchEncoding position
        lookups are available (scripts check this before asking for them)."""
        return True

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

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The text of token strings, joined as `decode` joins the tokens of ids ("##" pieces glued on...)."""
        decoder = self._pipeline.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    # --- encoding

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        """The token strings of `text` (and `pair`); keyword arguments are encode's."""
        # One text (or one list of words): a batch would come back as rows of ids, which have no token strings.
        (_check_words if kwargs.get("is_split_into_words") else _check_text)(text, "text")
        ids = self.encode(text, pair, add_special_tokens=add_special_tokens, **kwargs)
        return [self._pipeline.id_to_token(token_id) for token_id in ids]

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ):
        """The ids of `text` (and `text_pair`): a list, or a (1, T) tensor with return_tensors="pt" or "np".
        Padding, truncation and the other options of tokenizer(...) work as there."""
        if padding not in (False, "do_not_pad") or truncation not in (None, False, "do_not_truncate") or (
            max_length is not None or kwargs
        ):
            options = dict(padding=padding, truncation=truncation, max_length=max_length, stride=stride,
                           padding_side=padding_side, return_tensors=return_tensors)  # fmt: skip
            return self.encode_texts(text, text_pair, add_special_tokens=add_special_tokens, **options, **kwargs)[
                "input_ids"
            ]
        _check_text(text, "text")
        if text_pair is not None:
            _check_text(text_pair, "text_pair")
        text_pair = text_pair or None  # as in the reference, an empty pair means no pair
        _check_tensor_type(return_tensors)
        ids = self._pipeline.encode(text, text_pair, add_special_tokens)
        return ids if return_tensors is None else _to_tensor([ids], return_tensors)

    def __call__(
        self,
        text: str | list[str] | None = None,
        text_pair: str | list[str] | None = None,
        text_target: str | list[str] | None = None,
        text_pair_target: str | list[str] | None = None,
        *,
        verbose: bool = True,
        **options,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either into a BatchEncoding, as the reference does (see
        `encode_texts` for the options). `text_target` (and `text_pair_target`) are encoded the same way,
        as the labels of a sequence-to-sequence model: they come back as `labels`, or alone without `text`."""
        if text is None and text_target is None:
            raise ValueError("Pass the text to tokenize: tokenizer(text), or tokenizer(text_target=...) for labels.")
        inputs = self.encode_texts(text, text_pair, **options) if text is not None else None
        if text_target is None:
            return inputs
        targets = self._encode_targets(text_target, text_pair_target, options)
        if inputs is None:
            return targets
        inputs["labels"] = targets["input_ids"]
        return inputs

    def _encode_targets(self, text_target, text_pair_target, options: dict) -> BatchEncoding:
        """The labels of a sequence-to-sequence model, encoded as the texts are (Marian's target language has its
        own SentencePiece model)."""
        return self.encode_texts(text_target, text_pair_target, **options)

    def encode_texts(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        is_split_into_words: bool = False,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either into a BatchEncoding, as the reference does.

        padding: True or "longest" pads to the longest row, "max_length" to `max_length` (default
        `model_max_length`), rounded up to `pad_to_multiple_of`, on `padding_side`.
        truncation: True or "longest_first" cuts the longer sequence of a pair first, "only_first" and
        "only_second" cut one of them, to `max_length` tokens special tokens included. With
        `return_overflowing_tokens`, what was cut comes back as more rows (overlapping by `stride`),
        and `overflow_to_sample_mapping` says which input each row came from.
        is_split_into_words: each text is a list of words (a batch, a list of such lists), encoded word
        by word; word_ids() then gives each token's word index, and offsets count within each word.

        Offsets and word ids cost time: they are worked out here only when the options need them, and
        otherwise when the result is first asked for them (word_ids(), char_to_token() ...).
        """
        items, batched = self._checked_items(text, text_pair, is_split_into_words)
        _check_tensor_type(return_tensors)
        strategy, max_length, padding_to = self._checked_sizes(
            padding, truncation, max_length, pad_to_multiple_of, padding_side
        )
        keys = self._returned_keys(
            return_token_type_ids, return_attention_mask, return_special_tokens_mask, return_offsets_mapping
        )
        aligned = is_split_into_words or return_offsets_mapping or return_overflowing_tokens or strategy is not None
        if aligned:
            rows, samples = self._aligned_rows(items, add_special_tokens, strategy, max_length, stride,
                                               return_overflowing_tokens)  # fmt: skip
        elif keys in _IDS_AND_MASK:
            # The most common calls, tokenizer(text) and tokenizer(texts, padding=True): the ids alone.
            return self._ids_call(items, batched, add_special_tokens, keys, padding_to, return_length, return_tensors)
        else:  # token types or the special tokens mask: the layout, still without offsets
            rows, samples = [self._pipeline.encode_layout(*item, add_special_tokens) for item in items], None
        padded = self._padding(rows, padding_to)
        if padded is not None:
            rows = [pad(row, *padded) for row in rows]
        data = {key: [getattr(row, _ENCODING_FIELDS[key]) for row in rows] for key in keys}
        if return_length:
            data["length"] = [len(row) for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = samples
        source = None if aligned else (items, add_special_tokens, padded)
        one_row = not batched and not return_overflowing_tokens
        return self._batch_encoding(data, rows if aligned else None, source, one_row, return_tensors)

    def _checked_items(self, text, text_pair, is_split_into_words: bool) -> tuple[tuple[tuple, ...], bool]:
        """The `(text, pair)` of each row, checked, and whether the call was for a batch."""
        check = _check_words if is_split_into_words else _check_text
        if is_split_into_words:  # one text is a list of words, a batch a list of those
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        for index, item in enumerate(texts):
            check(item, f"text[{index}]" if batched else "text")
        if not batched and text_pair == "":
            text_pair = None  # as in the reference, an empty pair for a single text means no pair
        if text_pair is None:
            return tuple(zip(texts, [None] * len(texts))), batched
        pairs = list(text_pair) if batched else [text_pair]
        if len(pairs) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(pairs)} text_pair entries; pass one pair per text.")
        for index, pair in enumerate(pairs):
            check(pair, f"text_pair[{index}]" if batched else "text_pair")
        return tuple(zip(texts, pairs)), batched

    def _checked_sizes(self, padding, truncation, max_length, pad_to_multiple_of, padding_side):
        """The truncation strategy (None for none), the length to truncate to, and how to pad: None, or
        (padding, max_length, pad_to_multiple_of, side)."""
        if padding not in PADDING_CHOICES:
            raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}.")
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
                raise TypeError(f"{name} must be a whole number of tokens (or None), got {value!r}.")
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}.")
        strategy = _truncation_strategy(truncation, max_length, padding)
        if strategy is not None and max_length is None:
            max_length = self.model_max_length
        if padding in (False, "do_not_pad"):
            return strategy, max_length, None
        return strategy, max_length, (padding, max_length, pad_to_multiple_of, padding_side or self.padding_side)

    def _returned_keys(self, token_type_ids, attention_mask, special_tokens_mask, offsets_mapping) -> tuple:
        """The keys a call returns besides `length` and the overflow mapping; by default the model's inputs."""
        names = self.model_input_names
        return _RETURNED_KEYS[
            "token_type_ids" in names if token_type_ids is None else bool(token_type_ids),
            "attention_mask" in names if attention_mask is None else bool(attention_mask),
            bool(special_tokens_mask),
            bool(offsets_mapping),
        ]

    def _padding(self, rows, padding_to: tuple | None) -> tuple[int, int, str] | None:
        """(length, pad id, side) to pad `rows` with, from (padding, max_length, pad_to_multiple_of, side)."""
        if padding_to is None:
            return None
        return self._padded_length([len(row) for row in rows], *padding_to), self.pad_token_id, padding_to[-1]

    def _ids_call(self, items, batched, add_special_tokens, keys, padding_to, return_length, return_tensors):
        """The ids (padded if asked) and the mask, with nothing else to work out.

        It makes as few objects as it can: with millions of results kept (`dataset.map`), Python's
        garbage collector walks all of them again and again, which can cost more than tokenizing."""
        if batched:
            rows = parallel.encode_batch(self._pipeline, items, add_special_tokens)  # a large batch on all cores
        else:
            rows = [self._pipeline.encode(items[0][0], items[0][1], add_special_tokens)]
        masks = [[1] * len(row) for row in rows]
        padded = self._padding(rows, padding_to)
        if padded is not None:
            length, pad_id, side = padded
            masks = [_padded(mask, length, 0, side) for mask in masks]
            rows = [_padded(row, length, pad_id, side) for row in rows]
        data = {"input_ids": rows, "attention_mask": masks} if "attention_mask" in keys else {"input_ids": rows}
        if return_length:
            data["length"] = [len(row) for row in rows]
        return self._batch_encoding(data, None, (items, add_special_tokens, padded), not batched, return_tensors)

    def _aligned_rows(self, items, add_special_tokens, strategy, max_length, stride, overflowing: bool):
        """Each row with its offsets and word ids, truncated as asked; with `overflowing`, the windows cut
        off come as rows too. Also the index of the input each row came from."""
        rows, samples = [], []
        for index, (text, pair) in enumerate(items):
            encoding = self._truncated(text, pair, add_special_tokens, strategy, max_length, stride)
            produced = [encoding, *encoding.overflowing] if overflowing else [encoding]
            rows.extend(produced)
            samples.extend([index] * len(produced))
        return rows, samples

    def _batch_encoding(self, data, encodings, source, one_row: bool, return_tensors) -> BatchEncoding:
        """The result: `encodings` (the rows with offsets), or the `source` to make them from if asked."""
        if return_tensors is not None:
            data = {key: _to_tensor(value, return_tensors, key) for key, value in data.items()}
        elif one_row:  # one text: its row itself, not a list of one row (the reference leaves `length` a list)
            data = {key: value if key == "length" else value[0] for key, value in data.items()}
        return BatchEncoding(data, encodings=encodings, pipeline=self._pipeline, source=source)

    def _truncated(self, text, pair, add_special_tokens, strategy, max_length, stride) -> Encoding:
        encode = self._pipeline.encode_sequence if isinstance(text, str) else self._pipeline.encode_words
        sequences = [encode(text)] if pair is None else [encode(text), encode(pair)]
        if strategy is not None:
            specials = self._pipeline.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
            if max_length < specials:
                raise ValueError(
                    f"max_length={max_length} leaves no room for text: the special tokens alone take {specials}."
                )
            sequences = truncate_sequences(sequences, max_length - specials, strategy, stride, self.truncation_side)
        return self._pipeline.post_process(sequences, add_special_tokens)

    def _padded_length(self, lengths, padding, max_length, pad_to_multiple_of, side) -> int:
        """The length rows are padded to; checks that there is a pad token to do it with."""
        if self.pad_token_id is None:
            raise ValueError(
                "Asked to pad, but this tokenizer has no pad token. Set one first, for example "
                "`tokenizer.pad_token = tokenizer.eos_token`, or call it with padding=False."
            )
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        if padding == "max_length":
            target = self.model_max_length if max_length is None else max_length
            if target >= VERY_LARGE_INTEGER:
                raise ValueError(
                    'padding="max_length" needs max_length=N: this tokenizer has no model_max_length to use.'
                )
        else:
            target = max(lengths, default=0)
        if pad_to_multiple_of and target % pad_to_multiple_of:
            target += pad_to_multiple_of - target % pad_to_multiple_of
        return target

    # --- padding encoded rows

    def pad(
        self,
        encoded_inputs,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad encoded rows (a dict of lists, a list of dicts, or a BatchEncoding, of lists, arrays or
        tensors) to one length, as the reference does: input_ids with the pad token, attention_mask with 0,
        token_type_ids with 0 and special_tokens_mask with 1; other keys are left as they are."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in encoded_inputs[0]}
        if not isinstance(encoded_inputs, dict):
            raise TypeError(
                f"pad takes a dict of lists, a list of dicts or a BatchEncoding, got {type(encoded_inputs).__name__}."
            )
        main = self.model_input_names[0]
        if main not in encoded_inputs:
            raise ValueError(f"pad needs {main!r} among the inputs to pad; got {sorted(encoded_inputs)}.")
        _check_tensor_type(return_tensors)
        given = encoded_inputs[main]
        first = given[0] if isinstance(given, (list, tuple)) and given else given
        if return_tensors is None and hasattr(first, "tolist"):  # tensors in, tensors out (as the reference)
            return_tensors = "pt" if type(first).__module__.startswith("torch") else "np"
        data = {key: _plain_values(value) for key, value in encoded_inputs.items()}
        rows = data[main]
        single = bool(rows) and not isinstance(rows[0], list)
        if single:
            data = {key: [value] for key, value in data.items()}
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in data:
            data["attention_mask"] = [[1] * len(row) for row in data[main]]
        if padding not in (False, "do_not_pad") and data[main]:
            if padding not in PADDING_CHOICES:
                raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}.")
            side = padding_side or self.padding_side
            target = self._padded_length([len(row) for row in data[main]], padding, max_length, pad_to_multiple_of,
                                         side)  # fmt: skip
            fills = {main: self.pad_token_id, "attention_mask": 0, "token_type_ids": self.pad_token_type_id,
                     "special_tokens_mask": 1}  # fmt: skip
            for key, fill in fills.items():
                if key in data:
                    data[key] = [_padded(row, target, fill, side) for row in data[key]]
        if single:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data).convert_to_tensors(return_tensors)  # one row stays one row, as in the reference

    pad_token_type_id = 0

    # --- decoding

    def decode(
        self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None, **kwargs
    ) -> str | list[str]:
        """Text for a sequence of ids (a list, a 1-D tensor or array, or one int); a list of texts for a batch.
        `clean_up_tokenization_spaces` (default: the tokenizer's setting) glues " ." and " 's" back as the
        reference does."""
        if hasattr(token_ids, "tolist"):  # a tensor or an array
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return self.batch_decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)
        text = self._pipeline.decode(_id_list(token_ids, "token_ids"), skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces and isinstance(self._pipeline.model, (BPE, SentencePieceBPE)):
            # As the reference: the clean-up is for word-level vocabularies and would take spaces a BPE decoded
            # out of the text, unless asked for under its long name.
            clean_up_tokenization_spaces = self.init_kwargs.get(
                "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None, **kwargs
    ) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(
                f"batch_decode expects a list of id sequences or a 2-D tensor, got {type(sequences).__name__}."
            )
        return [self.decode(_id_list(ids, "sequences[i]"), skip_special_tokens, clean_up_tokenization_spaces)
                for ids in sequences]  # fmt: skip

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Take out the spaces a word-level tokenizer leaves before punctuation and English contractions."""
        for spaced, glued in _CLEAN_UPS:
            text = text.replace(spaced, glued)
        return text

    # --- the layout of special tokens

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._pipeline.num_special_tokens_to_add(pair)

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(True)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        """The ids with the special tokens put around them, as the post-processor lays them out."""
        return self._layout(token_ids_0, token_ids_1, special=lambda ids: list(ids), plain=lambda ids: list(ids))

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for each special token and 0 for the others: of the ids as they are (`already_has_special_tokens`),
        or of the ids with the special tokens that would be added around them."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("With already_has_special_tokens=True, pass the whole sequence as token_ids_0.")
            special = set(self.all_special_ids)
            return [int(token_id in special) for token_id in token_ids_0]
        ones, zeros = (lambda ids: [1] * len(ids)), (lambda ids: [0] * len(ids))
        return self._layout(token_ids_0, token_ids_1, special=ones, plain=zeros)

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        template = self._template(token_ids_1 is not None)
        sequences = {"A": token_ids_0, "B": token_ids_1}
        return [type_id for item, type_id in template for _ in (sequences[item] if isinstance(item, str) else item)]

    def _template(self, is_pair: bool):
        post_processor = self._pipeline.post_processor
        if post_processor is None:
            return processors.PLAIN_PAIR if is_pair else processors.PLAIN_SINGLE
        return post_processor.template(is_pair)

    def _layout(self, token_ids_0, token_ids_1, special, plain) -> list[int]:
        sequences = {"A": token_ids_0, "B": token_ids_1}
        out = []
        for item, _ in self._template(token_ids_1 is not None):
            out += plain(sequences[item]) if isinstance(item, str) else special(item)
        return out

    @property
    def add_bos_token(self) -> bool:
        """Whether a BOS token goes in front of each sequence; setting it changes the layout, as in the reference."""
        first = self._template(False)[0][0]
        return not isinstance(first, str) and self.bos_token_id in first

    @add_bos_token.setter
    def add_bos_token(self, value: bool):
        self.update_post_processor(add_bos=bool(value), add_eos=self.add_eos_token)

    @property
    def add_eos_token(self) -> bool:
        """Whether an EOS token goes after each sequence; setting it changes the layout, as in the reference."""
        last = self._template(False)[-1][0]
        return not isinstance(last, str) and self.eos_token_id in last

    @add_eos_token.setter
    def add_eos_token(self, value: bool):
        self.update_post_processor(add_bos=self.add_bos_token, add_eos=bool(value))

    def _rebuild_parts(self, parts: dict) -> None:
        """Put the pipeline slots `parts` gives (tokenizer.json specs by slot) in place of those the files gave, as a
        reference class that builds them itself does; save_pretrained writes them too."""
        for slot, spec in parts.items():
            setattr(self._pipeline, slot, build_part(slot, spec))
        if self._pipeline.source is not None:
            self._pipeline.source = {**self._pipeline.source, **parts}

    def update_post_processor(self, add_bos: bool | None = None, add_eos: bool | None = None) -> None:
        """Lay sequences out as `[BOS] A [EOS]` and `[BOS] A [EOS] [BOS] B [EOS]` (the reference's layout
        for add_bos_token and add_eos_token), the second sequence with token type 1."""
        add_bos = self.add_bos_token if add_bos is None else add_bos
        add_eos = self.add_eos_token if add_eos is None else add_eos
        before = [self.bos_token_id] if add_bos and self.bos_token_id is not None else []
        after = [self.eos_token_id] if add_eos and self.eos_token_id is not None else []
        tokens = {token_id: self._pipeline.id_to_token(token_id) for token_id in before + after}
        self._rebuild_parts({"post_processor": template_spec(before, after, tokens)})

    # --- the vocabulary's added tokens

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._pipeline.added.tokens.items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {token.content: token_id for token_id, token in self.added_tokens_decoder.items()}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def backend_tokenizer(self):
        """The pipeline under the `tokenizers` library's method names (see `backend.py`)."""
        from .backend import BackendTokenizer

        return BackendTokenizer(self._pipeline)

    def get_chat_template(self, chat_template: str | None = None, tools: list | None = None) -> str:
        """The template text apply_chat_template would use with these arguments."""
        from .chat import select_template

        return select_template(self, chat_template, tools)

    # --- chat

    def apply_chat_template(
        self,
        conversation,
        tools: list | None = None,
        documents: list[dict] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
        **options,
    ):
        """Render a conversation with the model's chat template; see `openformers.tokenizers.chat`."""
        from .chat import apply_chat_template

        return apply_chat_template(
            self,
            conversation,
            tools=tools,
            documents=documents,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=tokenize,
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={len(self)}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )


# The keys tokenizer(...) returns (besides `length` and the overflow mapping), by whether it returns token
# type ids, the attention mask, the special tokens mask and the offsets; and those of the ids-only path.
_KEYS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping")
_RETURNED_KEYS = {
    wanted: tuple(key for key, keep in zip(_KEYS, (True, *wanted)) if keep)
    for wanted in itertools.product((False, True), repeat=4)
}
_IDS_AND_MASK = (("input_ids",), ("input_ids", "attention_mask"))
# The Encoding field of each key tokenizer(...) returns.
_ENCODING_FIELDS = {
    "input_ids": "ids",
    "token_type_ids": "type_ids",
    "attention_mask": "attention_mask",
    "special_tokens_mask": "special_tokens_mask",
    "offset_mapping": "offsets",
}
_CLEAN_UPS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
    (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


def _plain_values(value):
    """Lists of python values from lists, arrays or tensors (of any depth)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain_values(item) for item in value]
    return value


def _padded(row: list, length: int, fill, side: str) -> list:
    missing = max(length - len(row), 0)
    return [fill] * missing + row if side == "left" else row + [fill] * missing


def in_subfolder(files: hub.ModelFiles, subfolder: str) -> hub.ModelFiles:
    """The files of `subfolder` inside the resolved model folder (the reference's `subfolder=`)."""
    if not subfolder:
        return files
    folder = files.folder / subfolder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"subfolder={subfolder!r}: {files.folder} has no such folder (Hub downloads fetch the top-level files; "
            "download the repository with its subfolders first, or pass the subfolder's path)."
        )
    return replace(files, folder=folder)


def _content(token) -> str:
    """A token given as a string or an AddedToken, as its string."""
    return token.content if isinstance(token, AddedToken) else token


def _push_folder(folder: Path, repo_id: str | None = None, token: str | bool | None = None,
                 commit_message: str | None = None, private: bool | None = None) -> None:
    """Upload a saved tokenizer folder to the Hub, creating the repository if needed."""
    if hub.is_offline():
        raise RuntimeError(
            "save_pretrained(push_to_hub=True) needs the network, but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is "
            "set. Unset it, or save without push_to_hub and upload the folder later."
        )
    from huggingface_hub import HfApi

    api = HfApi()
    repo = api.create_repo(repo_id or folder.absolute().name, token=token, private=private, exist_ok=True).repo_id
    api.upload_folder(repo_id=repo, folder_path=folder, token=token,
                      commit_message=commit_message or "Upload tokenizer")  # fmt: skip


def _write_json(path: Path, data: dict) -> str:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, ensure_ascii=False, indent=2)
        file.write("\n")
    return str(path)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(
            f"{name} must be a string, got {type(text).__name__} ({text!r:.60}). "
            "To tokenize several texts at once, pass a list of strings to tokenizer(...)."
        )
    # A lone surrogate (what errors="surrogateescape" leaves of undecodable bytes) has no UTF-8 form, which
    # byte-level models need; the reference refuses it as well.
    if not text.isascii() and (found := _LONE_SURROGATE.search(text)) is not None:
        raise ValueError(
            f"{name} holds a lone surrogate, {found.group()!r} at character {found.start()}, which is not text. "
            "Decode bytes with errors='replace' (not 'surrogateescape'), or clean the string with "
            "text.encode('utf-8', 'replace').decode('utf-8')."
        )


def _check_words(words, name: str) -> None:
    if not isinstance(words, (list, tuple)):
        raise TypeError(
            f"With is_split_into_words=True, {name} must be a list of words (strings), got {type(words).__name__} "
            f"({words!r:.60}). Pass a list of lists of words for a batch."
        )
    for index, word in enumerate(words):
        _check_text(word, f"{name}[{index}]")


def _check_tensor_type(return_tensors) -> None:
    if return_tensors not in TENSOR_TYPES:
        raise ValueError(f'return_tensors must be None, "pt" or "np", got {return_tensors!r}.')


def _to_tensor(rows: list[list], return_tensors: str, name: str = "input_ids"):
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"Cannot make one tensor of {name} from sequences of different lengths ({lengths[0]} to {lengths[-1]} "
            "tokens); pass padding=True."
        )
    shape = (len(rows), lengths[0] if lengths else 0) + ((2,) if name == "offset_mapping" else ())
    if return_tensors == "np":
        return np.array(rows, dtype=np.int64).reshape(shape)
    import torch

    return torch.tensor(rows, dtype=torch.long).reshape(shape)


def _truncation_strategy(truncation, max_length, padding) -> str | None:
    """The truncation strategy the arguments ask for, or None for none."""
    if truncation is None and max_length is not None and padding in (False, "do_not_pad"):
        return "longest_first"  # as the reference does, max_length alone means "truncate"
    if truncation in (None, False, "do_not_truncate"):
        return None
    if truncation is True:
        return "longest_first"
    if truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(
            f"truncation must be True, False or one of {TRUNCATION_STRATEGIES}, got {truncation!r}."
        )
    return truncation


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


# The options save_pretrained writes to tokenizer_config.json when the tokenizer was made with them, so that
# the reference, which builds some families from them, loads the same tokenizer back.
_SAVED_OPTIONS = (
    "do_lower_case", "strip_accents", "tokenize_chinese_chars", "add_prefix_space", "trim_offsets", "legacy",
    "add_bos_token", "add_eos_token", "split_special_tokens", "split_by_punct", "keep_accents",
)  # fmt: skip
# SentencePiece families whose layout is the class's (no add_bos_token/add_eos_token setting).
_FIXED_LAYOUT_FAMILIES = ("XLMRobertaTokenizer", "CamembertTokenizer", "MBartTokenizer", "MBart50Tokenizer",
                          "PegasusTokenizer")
_SENTENCEPIECE_FAMILIES = ("LlamaTokenizer", "T5Tokenizer", *_FIXED_LAYOUT_FAMILIES)
_OVERRIDES = frozenset(SPECIAL_TOKEN_NAMES) | {
    "extra_special_tokens",
    "chat_template",
    "padding_side",
    "model_max_length",
    "truncation_side",
    "model_input_names",
    "additional_special_tokens",
}
# There is one implementation (use_fast), it runs no code from files (trust_remote_code), and the rest
# only matter to the reference's loading machinery or the Hub.
_IGNORED = frozenset({
    "use_fast", "trust_remote_code", "force_download", "resume_download", "proxies",
    "_from_auto", "_commit_hash", "mistral_format",
})  # fmt: skip


def _checked_overrides(kwargs: dict, caller: str = "AutoTokenizer") -> dict:
    unknown = sorted(set(kwargs) - _OVERRIDES - set(INIT_OPTIONS) - _IGNORED)
    if unknown:
        raise TypeError(
            f"{caller}.from_pretrained got unexpected keyword arguments {unknown}; it accepts "
            f"{sorted(_OVERRIDES)} to override the loaded settings and the reference's options "
            f"{sorted(INIT_OPTIONS)}."
        )
    return {key: value for key, value in kwargs.items() if key not in _IGNORED}


PreTrainedTokenizer = PreTrainedTokenizerBase  # the reference's name for its Python tokenizers; one class here

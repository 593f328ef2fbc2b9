"""Build tokenizers from files: a tokenizer.json (with tokenizer_config.json, special_tokens_map.json
and chat_template.jinja beside it), or the tokenizer a GGUF file stores in its metadata.

`load_tokenizer(files)` returns the keyword arguments of `PreTrainedTokenizer`. tokenizer.json names
each part by a `type` tag; the tables below map the tags we support to the classes of each slot.
"""

import base64
import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

from gguf.constants import Keys, TokenType

from ..hub import ModelFiles
from ..gguf_reader import read_gguf_metadata
from . import decoders, models, normalizers, pre_tokenizers, processors, sentencepiece
from .pipeline import AddedToken, LanguageCodePipeline, Pipeline
from .tokenizer_json import check_tokenizer_json

# The reference's other settings, taken by the constructors and from_pretrained and kept in `init_kwargs`.
# The ones that change the pipeline (lowercasing, a prefix space, legacy, BOS/EOS) are applied here when
# it is built; `clean_up_tokenization_spaces` and `split_special_tokens` are applied by the facade.
INIT_OPTIONS = (
    "add_prefix_space", "do_lower_case", "legacy", "clean_up_tokenization_spaces", "split_special_tokens",
    "add_bos_token", "add_eos_token", "trim_offsets", "tokenize_chinese_chars", "strip_accents", "extra_ids",
    "do_basic_tokenize", "never_split", "errors", "use_default_system_prompt", "spaces_between_special_tokens",
    "sp_model_kwargs", "fix_mistral_regex", "vocab_file", "merges_file", "tokenizer_file", "split_by_punct",
    "keep_accents", "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
    "return_token_type_ids", "mask_token_sent", "offset",
)  # fmt: skip

# --- tokenizer.json: one builder per `type` tag, per slot


def _pattern(spec: dict) -> tuple[str, bool]:
    """A tokenizer.json pattern, {"String": ...} or {"Regex": ...}, as (pattern, is_regex)."""
    if "Regex" in spec:
        return spec["Regex"], True
    return spec["String"], False


def _replace(spec: dict, kind=normalizers.Replace):
    """A Replace normalizer (or, with `kind`, decoder)."""
    pattern, is_regex = _pattern(spec["pattern"])
    return kind(pattern, spec["content"], is_regex=is_regex)


NORMALIZERS = {
    "NFC": lambda spec: normalizers.UnicodeNormalizer("NFC"),
    "NFD": lambda spec: normalizers.UnicodeNormalizer("NFD"),
    "NFKC": lambda spec: normalizers.UnicodeNormalizer("NFKC"),
    "NFKD": lambda spec: normalizers.UnicodeNormalizer("NFKD"),
    "Lowercase": lambda spec: normalizers.Lowercase(),
    "Replace": _replace,
    "Prepend": lambda spec: normalizers.Prepend(spec["prepend"]),
    "StripAccents": lambda spec: normalizers.StripAccents(),
    "Strip": lambda spec: normalizers.Strip(spec.get("strip_left", True), spec.get("strip_right", True)),
    "Precompiled": lambda spec: normalizers.Precompiled(base64.b64decode(spec["precompiled_charsmap"] or "")),
    "BertNormalizer": lambda spec: normalizers.BertNormalizer(
        clean_text=spec.get("clean_text", True),
        handle_chinese_chars=spec.get("handle_chinese_chars", True),
        strip_accents=spec.get("strip_accents"),
        lowercase=spec.get("lowercase", True),
    ),
    "Sequence": lambda spec: normalizers.Sequence([_build("normalizer", part) for part in spec["normalizers"]]),
}

_BEHAVIORS = {
    "Removed": "removed",
    "Isolated": "isolated",
    "MergedWithPrevious": "merged_with_previous",
    "MergedWithNext": "merged_with_next",
    "Contiguous": "contiguous",
}


def _behavior(name: str) -> str:
    if name not in _BEHAVIORS:
        raise ValueError(f"Split behavior {name!r} is not one of {sorted(_BEHAVIORS)}.")
    return _BEHAVIORS[name]


def _split(spec: dict) -> pre_tokenizers.Split:
    pattern, is_regex = _pattern(spec["pattern"])
    return pre_tokenizers.Split(
        pattern, _behavior(spec["behavior"]), is_regex=is_regex, invert=spec.get("invert", False)
    )


PRE_TOKENIZERS = {
    "ByteLevel": lambda spec: pre_tokenizers.ByteLevel(
        add_prefix_space=spec.get("add_prefix_space", True), use_regex=spec.get("use_regex", True)
    ),
    "Split": _split,
    "Digits": lambda spec: pre_tokenizers.Digits(spec.get("individual_digits", False)),
    "BertPreTokenizer": lambda spec: pre_tokenizers.BertPreTokenizer(),
    "Metaspace": lambda spec: pre_tokenizers.Metaspace(
        spec.get("replacement", "▁"), _prepend_scheme(spec), split=spec.get("split", True)
    ),
    "Whitespace": lambda spec: pre_tokenizers.Whitespace(),
    "WhitespaceSplit": lambda spec: pre_tokenizers.WhitespaceSplit(),
    "Punctuation": lambda spec: pre_tokenizers.Punctuation(_behavior(spec.get("behavior", "Isolated"))),
    "Sequence": lambda spec: pre_tokenizers.Sequence(
        [_build("pre_tokenizer", part) for part in spec["pretokenizers"]]
    ),
}


def _bpe(spec: dict) -> models.BPE:
    if spec.get("dropout") not in (None, 0, 0.0):
        raise ValueError(
            f"BPE dropout={spec['dropout']} is not supported: it samples a different tokenization on each call, "
            "for training only. Set dropout to null in tokenizer.json for the deterministic tokenizer."
        )
    merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in spec["merges"]]
    vocab = spec["vocab"]
    prefix = spec.get("continuing_subword_prefix") or ""
    for first, second in merges:
        for token in (first, second, first + second[len(prefix) :]):
            if token not in vocab:
                raise ValueError(
                    f"the BPE merge {first!r} + {second!r} names {token!r}, which is not in the vocabulary"
                )
    return models.BPE(
        vocab,
        merges,
        unk_token=spec.get("unk_token"),
        ignore_merges=spec.get("ignore_merges", False),
        byte_fallback=bool(spec.get("byte_fallback")),
        fuse_unk=bool(spec.get("fuse_unk")),
        continuing_subword_prefix=prefix,
        end_of_word_suffix=spec.get("end_of_word_suffix"),
    )


def _unigram(spec: dict) -> models.Unigram:
    unk_id = spec.get("unk_id")
    vocab = spec["vocab"]
    if unk_id is None or not 0 <= unk_id < len(vocab):
        raise ValueError(f"Unigram unk_id {unk_id!r} is not a piece id (the vocabulary has {len(vocab)} pieces)")
    # Every piece, the unknown one too, can match text, as in the reference's lattice: "<unk>" spelled out (or
    # lowercased into it) is that piece, as "<s>" is its own.
    pieces = [(piece, float(score), models.NORMAL) for piece, score in vocab]
    return models.Unigram(pieces, unk_id=unk_id, byte_fallback=bool(spec.get("byte_fallback")), float32=False)


MODELS = {
    "BPE": _bpe,
    "WordPiece": lambda spec: models.WordPiece(
        spec["vocab"],
        unk_token=spec.get("unk_token", "[UNK]"),
        continuing_subword_prefix=spec.get("continuing_subword_prefix", "##"),
        max_input_chars_per_word=spec.get("max_input_chars_per_word", 100),
    ),
    "WordLevel": lambda spec: models.WordLevel(spec["vocab"], spec.get("unk_token")),
    "Unigram": _unigram,
}


def _template(items: list[dict], special_tokens: dict) -> processors.Template:
    template = []
    for item in items:
        if "Sequence" in item:
            template.append((item["Sequence"]["id"], item["Sequence"].get("type_id", 0)))
        else:
            name = item["SpecialToken"]["id"]
            if name not in special_tokens:
                raise ValueError(f"TemplateProcessing uses special token {name!r} but does not define its ids.")
            template.append((list(special_tokens[name]["ids"]), item["SpecialToken"].get("type_id", 0)))
    return template


def _template_processing(spec: dict) -> processors.TemplateProcessing:
    special_tokens = spec.get("special_tokens", {})
    pair = spec.get("pair")
    return processors.TemplateProcessing(
        _template(spec["single"], special_tokens), _template(pair, special_tokens) if pair else None
    )


POST_PROCESSORS = {
    "TemplateProcessing": _template_processing,
    "BertProcessing": lambda spec: processors.BertProcessing(spec["cls"][1], spec["sep"][1]),
    "RobertaProcessing": lambda spec: processors.RobertaProcessing(
        spec["cls"][1], spec["sep"][1], trim_offsets=spec.get("trim_offsets", True),
        add_prefix_space=spec.get("add_prefix_space", True),
    ),
    "ByteLevel": lambda spec: processors.ByteLevel(trim_offsets=spec.get("trim_offsets", True),
                                                   add_prefix_space=spec.get("add_prefix_space", True)),
    "Sequence": lambda spec: processors.Sequence([_build("post_processor", part) for part in spec["processors"]]),
}

DECODERS = {
    "ByteLevel": lambda spec: decoders.ByteLevel(),
    "WordPiece": lambda spec: decoders.WordPiece(spec.get("prefix", "##"), spec.get("cleanup", True)),
    "Metaspace": lambda spec: decoders.Metaspace(spec.get("replacement", "▁"), _prepend_scheme(spec)),
    "BPEDecoder": lambda spec: decoders.BPEDecoder(spec.get("suffix", "</w>")),
    "ByteFallback": lambda spec: decoders.ByteFallback(),
    "Fuse": lambda spec: decoders.Fuse(),
    "Strip": lambda spec: decoders.Strip(spec.get("content", " "), spec.get("start", 0), spec.get("stop", 0)),
    "Replace": lambda spec: _replace(spec, decoders.Replace),
    "Sequence": lambda spec: decoders.Sequence([_build("decoder", part) for part in spec["decoders"]]),
}


def _prepend_scheme(spec: dict) -> str:
    """Metaspace's scheme; files older than `prepend_scheme` say `add_prefix_space` instead."""
    if "prepend_scheme" in spec:
        return spec["prepend_scheme"]
    return "always" if spec.get("add_prefix_space", True) else "never"

_SLOTS = {
    "normalizer": NORMALIZERS,
    "pre_tokenizer": PRE_TOKENIZERS,
    "model": MODELS,
    "post_processor": POST_PROCESSORS,
    "decoder": DECODERS,
}


def _build(slot: str, spec: dict | None):
    if spec is None:
        return None
    kind = spec.get("type")
    if kind is None and slot == "model" and "merges" in spec:
        kind = "BPE"  # old files leave the model's type out
    builders = _SLOTS[slot]
    if kind not in builders:
        raise ValueError(f"{slot} type {kind!r} is not supported yet; supported: {sorted(builders)}.")
    return builders[kind](spec)


def pipeline_from_tokenizer_json(data: dict) -> Pipeline:
    """A pipeline from the parsed contents of a tokenizer.json."""
    added = {
        entry["id"]: AddedToken(
            entry["content"],
            special=entry.get("special", False),
            lstrip=entry.get("lstrip", False),
            rstrip=entry.get("rstrip", False),
            single_word=entry.get("single_word", False),
            normalized=entry.get("normalized"),
        )
        for entry in data.get("added_tokens") or []
    }
    pipeline = Pipeline(
        _build("model", data["model"]),
        normalizer=_build("normalizer", data.get("normalizer")),
        pre_tokenizer=_build("pre_tokenizer", data.get("pre_tokenizer")),
        post_processor=_build("post_processor", data.get("post_processor")),
        decoder=_build("decoder", data.get("decoder")),
        added_tokens=added,
    )
    pipeline.source = data  # what save_pretrained writes back, with the added tokens of the day
    return pipeline


# --- the settings around tokenizer.json

_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_content(value) -> str | None:
    """A special token as configs write it: a string, or a dict with its "content" (or an AddedToken)."""
    if isinstance(value, AddedToken):
        return value.content
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}); expected a JSON file.") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object, found {type(data).__name__}.")
    return data


def _is_token(value) -> bool:
    """A token as configs write it: its text, or an added token's fields."""
    if isinstance(value, str):
        return True
    return (isinstance(value, dict) and isinstance(value.get("content"), str)
            and all(isinstance(value[flag], bool) for flag in ("lstrip", "rstrip", "single_word", "normalized",
                                                               "special") if value.get(flag) is not None))


def _is_chat_template(value) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(
        isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("template"), str)
        for entry in value))


def _is_length(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value) and value >= 1


def _is_added_tokens_decoder(value) -> bool:
    return isinstance(value, dict) and all(
        key.isdigit() and int(key) < 2**31 and _is_token(token) and isinstance(token, dict)
        for key, token in value.items())


_IS_BOOL, _IS_TEXT = (lambda value: isinstance(value, bool), "true or false"), (
    lambda value: isinstance(value, str), "a string")
# What each tokenizer_config.json (or special_tokens_map.json) key the loader reads must hold when it is not null:
# a value of another type would otherwise fail later, deep inside, without the file's name.
_TOKENIZER_CONFIG_VALUES = {
    **{name: (_is_token, "a token (a string, or an object with a string 'content')") for name in _SPECIAL_TOKEN_NAMES},
    **{name: (lambda value: (isinstance(value, list) and all(map(_is_token, value)))
              or (isinstance(value, dict) and all(map(_is_token, value.values()))), "a list (or object) of tokens")
       for name in ("extra_special_tokens", "additional_special_tokens")},
    "added_tokens_decoder": (_is_added_tokens_decoder, "an object of token ids to added tokens' fields"),
    "chat_template": (_is_chat_template, "a string, or a list of objects with a string 'name' and 'template'"),
    "padding_side": (lambda value: value in ("left", "right"), "'left' or 'right'"),
    "truncation_side": (lambda value: value in ("left", "right"), "'left' or 'right'"),
    "model_max_length": (_is_length, "a positive number"),
    "model_input_names": (lambda value: isinstance(value, list) and all(isinstance(n, str) for n in value),
                          "a list of strings"),
    "never_split": (lambda value: isinstance(value, list) and all(isinstance(n, str) for n in value),
                    "a list of strings"),
    "extra_ids": (lambda value: type(value) is int and 0 <= value < 2**20, "a count of sentinel tokens"),
    "sp_model_kwargs": (lambda value: isinstance(value, dict), "an object"),
    **dict.fromkeys(("add_prefix_space", "do_lower_case", "legacy", "clean_up_tokenization_spaces",
                     "split_special_tokens", "add_bos_token", "add_eos_token", "trim_offsets", "tokenize_chinese_chars",
                     "strip_accents", "do_basic_tokenize", "use_default_system_prompt",
                     "spaces_between_special_tokens", "fix_mistral_regex", "split_by_punct", "keep_accents",
                     "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                     "return_token_type_ids"), _IS_BOOL),
    **dict.fromkeys(("tokenizer_class", "errors", "vocab_file", "merges_file", "tokenizer_file"), _IS_TEXT),
}


def _check_values(values: dict, table: dict, path: Path) -> None:
    """Refuse, naming the file and the key, a value that `table`'s (check, what is expected) for its key fails."""
    for key, (valid, expected) in table.items():
        value = values.get(key)
        if value is not None and not valid(value):
            shown = repr(value) if len(repr(value)) < 80 else repr(value)[:80] + "..."
            raise ValueError(f"{path}: {key} is {shown}; expected {expected}.")


def read_tokenizer_config(files: ModelFiles) -> dict:
    """tokenizer_config.json, with special_tokens_map.json over it unless the config lists its added
    tokens itself (as the reference reads them)."""
    config_path = files.file("tokenizer_config.json")
    config = _read_json(config_path) if config_path else {}
    if config_path:
        _check_values(config, _TOKENIZER_CONFIG_VALUES, config_path)
    map_path = files.file("special_tokens_map.json")
    if map_path and "added_tokens_decoder" not in config:
        special_tokens_map = _read_json(map_path)
        _check_values(special_tokens_map, _TOKENIZER_CONFIG_VALUES, map_path)
        config.update(special_tokens_map)
    config["_config_path"] = config_path
    return config


def family_of(config: dict) -> str:
    """The reference's tokenizer class the config names, without "Fast" ("" when it names none)."""
    return str(config.get("tokenizer_class") or "").removesuffix("Fast")


def _config_settings(config: dict) -> dict:
    """Special tokens, chat template, padding side, length limit and the reference's other settings
    from the tokenizer config (already merged with the caller's keyword arguments)."""
    config_path = config.get("_config_path") or "tokenizer_config.json"
    # An explicit null turns a class's default off (Command R's unk_token), as it does in the reference.
    settings = {name: _token_content(config[name]) for name in _SPECIAL_TOKEN_NAMES if name in config}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):  # model-specific names, like {"image_token": "<image>"}
        extra = list(extra.values())
    settings["extra_special_tokens"] = [_token_content(token) for token in extra]

    chat_template = config.get("chat_template")
    if isinstance(chat_template, list):  # several named templates
        chat_template = {entry["name"]: entry["template"] for entry in chat_template}
    if chat_template is not None:
        settings["chat_template"] = chat_template
    if config.get("padding_side") is not None:
        if config["padding_side"] not in ("left", "right"):
            raise ValueError(
                f"{config_path}: padding_side must be 'left' or 'right', found {config['padding_side']!r}."
            )
        settings["padding_side"] = config["padding_side"]
    if config.get("model_max_length") is not None:
        settings["model_max_length"] = int(config["model_max_length"])
    if config.get("truncation_side") in ("left", "right"):
        settings["truncation_side"] = config["truncation_side"]
    if config.get("model_input_names"):
        settings["model_input_names"] = list(config["model_input_names"])
    elif family_of(config) in _CLASSES_WITH_TOKEN_TYPES:
        settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    elif family_of(config) in ("DebertaTokenizer", "DebertaV2Tokenizer"):  # the reference lists the mask first
        settings["model_input_names"] = ["input_ids", "attention_mask", "token_type_ids"]
    for name in INIT_OPTIONS:
        if name in config:
            settings[name] = config[name]
    return settings


# The reference's tokenizer classes whose models take token_type_ids (the others return none by default).
_CLASSES_WITH_TOKEN_TYPES = frozenset(
    f"{name}Tokenizer"
    for name in (
        "Bert", "Electra", "XLNet", "Funnel", "LayoutLM", "MobileBert",
        "SqueezeBert", "ConvBert", "RemBert", "Lxmert", "Splinter", "Nezha", "RoFormer", "BertJapanese",
    )
)  # fmt: skip


def settings_from_tokenizer_json(path: Path | dict, config: dict) -> dict:
    """A tokenizer.json (or its parsed contents), with the options the caller passed
    (`add_prefix_space`, `do_lower_case`) applied."""
    if isinstance(path, dict):  # a copy, as the options are written into it
        data, path = json.loads(json.dumps(path)), "tokenizer_object"
    else:
        data = _read_json(path)
    check_tokenizer_json(data, path)
    if config.get("tokenizer_class") not in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        # the reference's generic class loads tokenizer.json as it is (add_prefix_space=True changes nothing there)
        _apply_options(data, config.get("_explicit", {}))
    try:
        pipeline = pipeline_from_tokenizer_json(data)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"Cannot build a tokenizer from {path}: {detail}") from None
    settings = {"pipeline": pipeline, **_config_settings(config)}
    padding = data.get("padding")
    if padding:  # padding saved in tokenizer.json gives defaults the config may override
        settings.setdefault("pad_token", padding.get("pad_token"))
        settings.setdefault("padding_side", padding.get("direction", "Right").lower())
    return settings


def _parts(spec: dict | None, key: str) -> list[dict]:
    """A slot's spec and, for a Sequence, each part of it."""
    if not spec:
        return []
    return [spec, *[part for child in spec.get(key, []) for part in _parts(child, key)]]


def _apply_options(data: dict, options: dict) -> None:
    """Set, in a tokenizer.json's contents, what the reference's keyword arguments change in the pipeline."""
    pre_tokenizers_and_processors = _parts(data.get("pre_tokenizer"), "pretokenizers")
    pre_tokenizers_and_processors += _parts(data.get("post_processor"), "processors")
    if "add_prefix_space" in options:
        add = bool(options["add_prefix_space"])
        for part in pre_tokenizers_and_processors:
            if part.get("type") in ("ByteLevel", "RobertaProcessing"):
                part["add_prefix_space"] = add
            elif part.get("type") == "Metaspace":
                part["prepend_scheme"] = ("first" if options.get("legacy") is False else "always") if add else "never"
    if "trim_offsets" in options:
        for part in pre_tokenizers_and_processors:
            if part.get("type") in ("ByteLevel", "RobertaProcessing"):
                part["trim_offsets"] = bool(options["trim_offsets"])
    if "do_lower_case" in options:
        for part in _parts(data.get("normalizer"), "normalizers"):
            if part.get("type") == "BertNormalizer":
                part["lowercase"] = bool(options["do_lower_case"])
                part["strip_accents"] = options.get("strip_accents")


# --- vocab.txt (BERT)


def _read_vocab_txt(path: Path) -> dict[str, int]:
    vocab = {}
    with open(path, encoding="utf-8") as file:
        for index, line in enumerate(file):
            vocab[line.rstrip("\n")] = index
    if not vocab:
        raise ValueError(f"{path} is empty; a WordPiece vocabulary has one token per line.")
    return vocab


def _added_token_spec(token_id: int, content: str, special: bool) -> dict:
    """An added token matched in the raw text, as GGUF vocabularies mark them."""
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}  # fmt: skip


def _tokenizer_json(model: dict, **parts) -> dict:
    """A tokenizer.json's contents from its parts, so that every loader builds (and saves) the same way."""
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], **parts, "model": model}


def _template_spec(before: list[int], after: list[int], tokens) -> dict:
    """A TemplateProcessing spec that puts the ids `before` and `after` each sequence (Llama's BOS)."""

    def specials(ids: list[int], type_id: int) -> list[dict]:
        return [{"SpecialToken": {"id": tokens[token_id], "type_id": type_id}} for token_id in ids]

    def layout(type_id: int, name: str) -> list[dict]:
        return specials(before, type_id) + [{"Sequence": {"id": name, "type_id": type_id}}] + specials(after, type_id)

    used = set(before) | set(after)
    return {
        "type": "TemplateProcessing",
        "single": layout(0, "A"),
        "pair": layout(0, "A") + layout(1, "B"),
        "special_tokens": {
            tokens[token_id]: {"id": tokens[token_id], "ids": [token_id], "tokens": [tokens[token_id]]}
            for token_id in sorted(used)
        },
    }


BERT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"
}  # fmt: skip
# MPNet's vocab.txt has fairseq's specials before BERT's, and its own mask at the end.
MPNET_SPECIAL_TOKENS = {
    "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "[UNK]",
    "pad_token": "<pad>", "mask_token": "<mask>",
}  # fmt: skip


def settings_from_vocab_txt(path: Path | dict, config: dict) -> dict:
    """BERT's WordPiece tokenizer from its vocabulary alone (a vocab.txt, or a dict from token to id),
    set up by the config as the reference does."""
    defaults = MPNET_SPECIAL_TOKENS if family_of(config) == "MPNetTokenizer" else BERT_SPECIAL_TOKENS
    settings = {**defaults, **_config_settings(config)}
    if family_of(config) not in ("DistilBertTokenizer", "MPNetTokenizer"):  # their models take no token types
        settings.setdefault("model_input_names", ["input_ids", "token_type_ids", "attention_mask"])
    vocab, path = (path, "vocab") if isinstance(path, dict) else (_read_vocab_txt(path), path)
    for name in ("unk_token", "sep_token", "cls_token"):
        if settings[name] not in vocab:
            raise ValueError(f"{path} has no {settings[name]!r} ({name}); BERT's tokenizer needs it.")
    cls_id, sep_id = vocab[settings["cls_token"]], vocab[settings["sep_token"]]
    data = _tokenizer_json(
        {"type": "WordPiece", "unk_token": settings["unk_token"], "continuing_subword_prefix": "##",
         "max_input_chars_per_word": 100, "vocab": vocab},
        normalizer={"type": "BertNormalizer", "clean_text": True,
                    "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
                    "strip_accents": config.get("strip_accents"), "lowercase": config.get("do_lower_case", True)},
        pre_tokenizer={"type": "BertPreTokenizer"},
        post_processor={"type": "BertProcessing", "sep": [settings["sep_token"], sep_id],
                        "cls": [settings["cls_token"], cls_id]},
        decoder={"type": "WordPiece", "prefix": "##", "cleanup": True},
    )  # fmt: skip
    return {"pipeline": pipeline_from_tokenizer_json(data), **settings}


# --- vocab.json + merges.txt (GPT-2, RoBERTa)


def _read_merges(path: Path, vocab: dict[str, int]) -> list[tuple[str, str]]:
    merges = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.rstrip("\r\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{path} line {number}: a merge is two tokens separated by one space, got {line!r}.")
            for part in (*parts, "".join(parts)):
                if part not in vocab:
                    raise ValueError(
                        f"{path} line {number}: the merge {line!r} names {part!r}, which is not in vocab.json."
                    )
            merges.append(tuple(parts))
    return merges


def settings_from_vocab_and_merges(vocab_path: Path | dict, merges_path: Path | list, config: dict) -> dict:
    """A byte-level BPE from vocab.json and merges.txt (or a dict from token to id and a list of pairs),
    laid out as the config's tokenizer class does: GPT-2 (no special tokens added), RoBERTa
    (`<s> A </s></s> B </s>`), DeBERTa (`[CLS] A [SEP][SEP] B [SEP]`, token type 0 throughout), Blenderbot (RoBERTa's special tokens, none added, a space in front of the text) or
    Qwen2 (NFC and its own split)."""
    vocab, vocab_path = (vocab_path, "vocab") if isinstance(vocab_path, dict) else (_read_json(vocab_path), vocab_path)
    if not all(isinstance(token_id, int) for token_id in vocab.values()):
        raise ValueError(f"{vocab_path} should map each token to an integer id.")
    if isinstance(merges_path, (list, tuple)):
        merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges_path]
    else:
        merges = _read_merges(merges_path, vocab)
    family = family_of(config)
    is_roberta = family in _ROBERTA_CLASSES
    if is_roberta or family == "BlenderbotTokenizer":  # RoBERTa's special tokens; Blenderbot adds none of them
        settings = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}  # fmt: skip
    elif family == "DebertaTokenizer":
        settings = {"bos_token": "[CLS]", "eos_token": "[SEP]", "sep_token": "[SEP]", "cls_token": "[CLS]",
                    "unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]"}  # fmt: skip
    elif family == "Qwen2Tokenizer":
        settings = {"eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    else:
        settings = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    settings.update(_config_settings(config))
    add_prefix_space = bool(config.get("add_prefix_space", family == "BlenderbotTokenizer"))
    trim_offsets = bool(config.get("trim_offsets", True))
    byte_level = {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
                  "use_regex": True}  # fmt: skip
    pre_tokenizer, normalizer = byte_level, None
    if family == "Qwen2Tokenizer":
        split = {"type": "Split", "pattern": {"Regex": _QWEN2_PATTERN}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}
        normalizer = {"type": "NFC"}
    if is_roberta or family == "DebertaTokenizer":
        cls, sep = settings["cls_token"], settings["sep_token"]
        if cls not in vocab or sep not in vocab:
            raise ValueError(f"{vocab_path} has no {cls!r} or {sep!r}; {family} needs both.")
    if family == "DebertaTokenizer":
        special = {"SpecialToken": {"id": cls, "type_id": 0}}, {"SpecialToken": {"id": sep, "type_id": 0}}
        post_processor = {
            "type": "TemplateProcessing",
            "single": [special[0], {"Sequence": {"id": "A", "type_id": 0}}, special[1]],
            "pair": [special[0], {"Sequence": {"id": "A", "type_id": 0}}, special[1], special[1],
                     {"Sequence": {"id": "B", "type_id": 0}}, special[1]],
            "special_tokens": {token: {"id": token, "ids": [vocab[token]], "tokens": [token]} for token in (cls, sep)},
        }
    elif is_roberta:
        post_processor = {"type": "RobertaProcessing", "sep": [sep, vocab[sep]], "cls": [cls, vocab[cls]],
                          "trim_offsets": trim_offsets, "add_prefix_space": add_prefix_space}  # fmt: skip
    else:
        post_processor = {
            "type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": False, "use_regex": True
        }  # fmt: skip
    data = _tokenizer_json(
        {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
         "vocab": vocab, "merges": [list(merge) for merge in merges]},
        normalizer=normalizer,
        pre_tokenizer=pre_tokenizer,
        post_processor=post_processor,
        decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    )  # fmt: skip
    return {"pipeline": pipeline_from_tokenizer_json(data), **settings}


_ROBERTA_CLASSES = frozenset({"RobertaTokenizer", "CamembertTokenizer", "LongformerTokenizer", "BartTokenizer"})


# --- tokenizer.model (SentencePiece)


# Classes the reference does not have, whose tokenizer.model it reads with its generic TokenizersBackend: no BOS in
# front unless add_bos_token says so. ERNIE 4.5's folders name their remote-code Ernie4_5_Tokenizer, which the
# reference replaces with TokenizersBackend for model_type ernie4_5 and ernie4_5_moe.
_GENERIC_BACKEND_CLASSES = frozenset({"Ernie4_5_Tokenizer"})


def settings_from_sentencepiece(path: Path, config: dict) -> dict:
    """A SentencePiece model that encodes as the `sentencepiece` library does, set up as the config's
    tokenizer class does: Llama (BOS in front; `legacy`), T5 (`</s>` after, and `extra_ids` sentinel
    tokens) or XLM-RoBERTa (fairseq's ids: `<s> <pad> </s> <unk>` first, `<s> A </s>`), and mBART (fairseq's ids, then
    its language codes; the tokenizer class lays out the codes and `</s>`)."""
    spm = sentencepiece.read_sentencepiece_model(path)
    family = family_of(config)
    if family in _FAIRSEQ_LAYOUTS:
        return _fairseq_settings(spm, path, config)
    if family == "DebertaV2Tokenizer":
        return _deberta_v2_settings(spm, path, config)
    if family == "PegasusTokenizer":
        return _pegasus_settings(spm, path, config)
    if family == "AlbertTokenizer":
        return _albert_settings(spm, path, config)
    settings = _sentencepiece_special_tokens(spm)
    if family == "T5Tokenizer":
        settings.pop("bos_token", None)  # T5 has none; the reference's T5 names eos, unk and pad only
        settings.setdefault("pad_token", "<pad>")
    settings.update(_config_settings(config))
    is_t5 = family == "T5Tokenizer"
    bos_by_default = not is_t5 and family not in _GENERIC_BACKEND_CLASSES
    add_bos = config.get("add_bos_token", bos_by_default) and settings.get("bos_token")
    add_eos = config.get("add_eos_token", is_t5) and settings.get("eos_token")
    # As the reference, decode writes `<s>` and `</s>` out unless they are skipped as special tokens.
    pipeline = _sentencepiece_pipeline(
        spm, path, settings if add_bos else {}, settings if add_eos else {}, keep_controls=True
    )
    # The reference's Llama tokenizers default to legacy=False: no dummy prefix after a special token.
    is_llama = family in ("LlamaTokenizer", "CodeLlamaTokenizer")
    pipeline.normalizer.prefix_only_at_start = config.get("legacy", not is_llama) is False
    pipeline.sentencepiece_file = path  # save_pretrained copies it
    if is_t5:
        _add_sentinels(pipeline, settings, int(config.get("extra_ids", 100)))
    return {"pipeline": pipeline, **settings}


def _add_sentinels(pipeline: Pipeline, settings: dict, count: int) -> None:
    """T5's `<extra_id_N>` tokens after the vocabulary, numbered down from its end (as T5 was trained)."""
    sentinels = [f"<extra_id_{index}>" for index in range(count)]
    pipeline.add_tokens([AddedToken(token, special=True) for token in reversed(sentinels)])
    extra = [token for token in settings.get("extra_special_tokens", []) if token not in sentinels]
    settings["extra_special_tokens"] = sentinels + extra


DEBERTA_V2_SPECIAL_TOKENS = {
    "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
    "cls_token": "[CLS]", "mask_token": "[MASK]",
}  # fmt: skip


def deberta_v2_parts(data: dict, do_lower_case: bool, split_by_punct: bool, add_prefix_space: bool) -> dict:
    """The normalizer, pre-tokenizer and decoder specs the reference's DebertaV2Tokenizer builds for the
    tokenizer.json contents `data`, whatever their own are: lowercasing; the SentencePiece rules the file's
    Precompiled normalizer holds (then no trailing space, runs of spaces as one), or without them runs of
    whitespace as one space, NFC, no trailing space; punctuation split off; "▁" before every word (or the first)."""
    found = [part for part in _parts(data.get("normalizer"), "normalizers") if part.get("type") == "Precompiled"]
    charsmap = found[0].get("precompiled_charsmap") if found else None
    strip = {"type": "Strip", "strip_left": False, "strip_right": True}
    if charsmap:
        rules = [{"type": "Precompiled", "precompiled_charsmap": charsmap}, strip,
                 {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]  # fmt: skip
    else:
        rules = [{"type": "Replace", "pattern": {"Regex": r"\s{2,}|[\n\r\t]"}, "content": " "}, {"type": "NFC"}, strip]
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always" if add_prefix_space else "first",
                 "split": True}  # fmt: skip
    punctuation = [{"type": "Punctuation", "behavior": "Isolated"}] if split_by_punct else []
    return {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}] * bool(do_lower_case) + rules},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": punctuation + [metaspace]},
        "decoder": metaspace,
    }


def _deberta_v2_settings(spm: sentencepiece.SentencePieceModel, path: Path, config: dict) -> dict:
    """DeBERTa-v2's spm.model as the reference reads it: the pieces and scores as a Unigram model over words
    (not SentencePiece's own encoding), the control pieces as extra special tokens, `[CLS] A [SEP] B [SEP]`."""
    if spm.model_type != sentencepiece.UNIGRAM:
        raise ValueError(f"{path} is not a SentencePiece unigram model, which DebertaV2Tokenizer needs.")
    settings = {**DEBERTA_V2_SPECIAL_TOKENS, **_config_settings(config)}
    if not settings["extra_special_tokens"]:
        settings["extra_special_tokens"] = [piece for piece, _, kind in spm.pieces if kind == models.CONTROL]
    vocab = [[piece, score] for piece, score, _ in spm.pieces]
    ids = {piece: index for index, (piece, _) in enumerate(vocab)}
    for name in ("cls_token", "sep_token"):
        if settings[name] not in ids:
            raise ValueError(f"{path} has no piece {settings[name]!r} ({name}), which DebertaV2Tokenizer puts around "
                             "each sequence; pass the one it uses, e.g. cls_token=... and sep_token=....")
    unk = [settings["unk_token"], 0.0]  # the reference looks for the unknown token with a score of 0
    unk_id = vocab.index(unk) if unk in vocab else spm.unk_id
    cls, sep = settings["cls_token"], settings["sep_token"]

    def layout(name: str, type_id: int) -> list[dict]:
        return [{"Sequence": {"id": name, "type_id": type_id}}, {"SpecialToken": {"id": sep, "type_id": type_id}}]

    post_processor = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": cls, "type_id": 0}}, *layout("A", 0)],
        "pair": [{"SpecialToken": {"id": cls, "type_id": 0}}, *layout("A", 0), *layout("B", 1)],
        "special_tokens": {token: {"id": token, "ids": [ids[token]], "tokens": [token]} for token in (cls, sep)},
    }
    charsmap = base64.b64encode(spm.precompiled_charsmap).decode() if spm.precompiled_charsmap else None
    normalizer = {"type": "Precompiled", "precompiled_charsmap": charsmap} if charsmap else None
    parts = deberta_v2_parts({"normalizer": normalizer}, bool(config.get("do_lower_case", False)),
                             bool(config.get("split_by_punct", False)), bool(config.get("add_prefix_space", True)))
    data = _tokenizer_json({"type": "Unigram", "unk_id": unk_id, "vocab": vocab, "byte_fallback": False},
                           post_processor=post_processor, **parts)
    return {"pipeline": pipeline_from_tokenizer_json(data), **settings}


# Fairseq's numbering of a SentencePiece model, by tokenizer class: the pieces put first, with their kinds, and the
# SentencePiece id from which the model's own pieces follow them (XLM-RoBERTa's <unk> <s> </s> are replaced by its
# specials; CamemBERT keeps <s> and </s> after its five, its <s>NOTUSED... never produced).
_CONTROL, _UNKNOWN = models.CONTROL, models.UNKNOWN
_FAIRSEQ_LAYOUTS = {
    "XLMRobertaTokenizer": ((("<s>", _CONTROL), ("<pad>", _CONTROL), ("</s>", _CONTROL), ("<unk>", _UNKNOWN)), 3),
    "CamembertTokenizer": ((("<s>NOTUSED", _CONTROL), ("<pad>", _CONTROL), ("</s>NOTUSED", _CONTROL),
                            ("<unk>", _UNKNOWN), ("<unk>NOTUSED", _CONTROL)), 1),
}

# mBART's language codes in fairseq's order (mbart-large-cc25's 25, mBART-50's 52): special tokens whose ids follow
# the SentencePiece pieces', before `<mask>`.
MBART_LANGUAGE_CODES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT", "ja_XX", "kk_KZ",
    "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
)
MBART50_LANGUAGE_CODES = MBART_LANGUAGE_CODES + (
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK", "ml_IN", "mn_MN", "mr_IN",
    "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN", "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES",
    "sl_SI",
)
FAIRSEQ_LANGUAGE_CODES = {"MBartTokenizer": MBART_LANGUAGE_CODES, "MBart50Tokenizer": MBART50_LANGUAGE_CODES}
_FAIRSEQ_LAYOUTS.update(dict.fromkeys(FAIRSEQ_LANGUAGE_CODES, _FAIRSEQ_LAYOUTS["XLMRobertaTokenizer"]))  # mBART's


def _fairseq_settings(spm: sentencepiece.SentencePieceModel, path: Path, config: dict) -> dict:
    """XLM-RoBERTa, CamemBERT and mBART number the pieces as fairseq did: XLM-RoBERTa's and mBART's `<s> <pad> </s>
    <unk>` are 0 to 3 and every other piece keeps its SentencePiece id plus one; CamemBERT's `<s>NOTUSED <pad>
    </s>NOTUSED <unk> <unk>NOTUSED` are 0 to 4 and every piece but `<unk>` keeps its id plus four. mBART's language
    codes follow (special tokens), and `<mask>` comes last."""
    family = family_of(config)
    if spm.pieces[:3] and [kind for _, _, kind in spm.pieces[:3]] != [models.UNKNOWN, models.CONTROL, models.CONTROL]:
        raise ValueError(
            f"{path}: {family} expects the SentencePiece layout <unk>, <s>, </s> for the first three "
            "pieces (fairseq's), found "
            f"{[piece for piece, _, _ in spm.pieces[:3]]}. Load it with LlamaTokenizer or T5Tokenizer instead."
        )
    first, kept_from = _FAIRSEQ_LAYOUTS[family]
    codes = FAIRSEQ_LANGUAGE_CODES.get(family, ())
    pieces = [(piece, 0.0, kind) for piece, kind in first] + list(spm.pieces[kept_from:])
    pieces += [(code, 0.0, models.USER_DEFINED) for code in codes] + [("<mask>", 0.0, models.USER_DEFINED)]
    ids = {piece: index for index, (piece, _, _) in enumerate(pieces)}
    shifted = replace(spm, pieces=pieces, unk_id=3, bos_id=ids["<s>"], eos_id=ids["</s>"], pad_id=1)
    settings = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}  # fmt: skip
    settings.update(_config_settings(config))
    settings["extra_special_tokens"] = list(dict.fromkeys([*codes, *settings.get("extra_special_tokens", [])]))
    pipeline = _sentencepiece_pipeline(shifted, path, {}, {}, keep_controls=True)
    cls, sep = pipeline.model.vocab[settings["cls_token"]], pipeline.model.vocab[settings["sep_token"]]
    pipeline.post_processor = processors.RobertaProcessing(cls, sep, trim_offsets=False)
    pipeline.sentencepiece_file = path
    return {"pipeline": pipeline, **settings}


def pegasus_reserved_tokens(mask_token_sent: str, offset: int) -> tuple[str, list[str]]:
    """Pegasus's sentence mask and its reserved `<unk_2>` to `<unk_{offset - 1}>`: special tokens the tokenizer class
    makes itself (with the token mask, `offset` ids after `<pad>` and `</s>`)."""
    return mask_token_sent, [f"<unk_{i}>" for i in range(2, offset)]


def _pegasus_settings(spm: sentencepiece.SentencePieceModel, path: Path, config: dict) -> dict:
    """Pegasus's spiece.model as the reference reads it: `<pad>` and `</s>` keep 0 and 1, the sentence mask
    `<mask_1>`, the token mask `<mask_2>` and the reserved `<unk_2>` to `<unk_102>` (config `offset`: 103 of them in
    all) follow, then every other piece with its SentencePiece id plus the offset; the pieces and scores as a Unigram
    model over words split at spaces (runs of spaces as one, a trailing one kept), `</s>` after each sequence."""
    if spm.model_type != sentencepiece.UNIGRAM:
        raise ValueError(f"{path} is not a SentencePiece unigram model, which PegasusTokenizer needs.")
    if [kind for _, _, kind in spm.pieces[:3]] != [models.CONTROL, models.CONTROL, models.UNKNOWN]:
        raise ValueError(
            f"{path}: PegasusTokenizer expects the SentencePiece layout <pad>, </s>, <unk> for the first three pieces, "
            f"found {[piece for piece, _, _ in spm.pieces[:3]]}. Load it with T5Tokenizer or LlamaTokenizer instead."
        )
    offset = int(config.get("offset", 103))
    settings = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask_2>",
                **_config_settings(config)}
    sentence_mask, reserved = pegasus_reserved_tokens(config.get("mask_token_sent", "<mask_1>"), offset)
    masks = [[sentence_mask, 0.0], [settings["mask_token"], 0.0]]
    vocab = [[piece, score] for piece, score, _ in spm.pieces[:2]] + masks + [[token, -100.0] for token in reserved]
    vocab += [[piece, score] for piece, score, _ in spm.pieces[2:]]
    charsmap = base64.b64encode(spm.precompiled_charsmap).decode() if spm.precompiled_charsmap else None
    spaces = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    first = {"type": "Precompiled", "precompiled_charsmap": charsmap} if charsmap else \
        {"type": "Replace", "pattern": {"Regex": "\n"}, "content": " "}
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    eos_id = next(index for index, (piece, _) in enumerate(vocab) if piece == settings["eos_token"])
    data = _tokenizer_json(
        {"type": "Unigram", "unk_id": spm.unk_id + offset, "vocab": vocab, "byte_fallback": False},
        normalizer={"type": "Sequence", "normalizers": [first, spaces]}, pre_tokenizer=metaspace, decoder=metaspace,
        post_processor=_template_spec([], [eos_id], {eos_id: settings["eos_token"]}),
    )
    return {"pipeline": pipeline_from_tokenizer_json(data), **settings}


def _sentencepiece_special_tokens(spm: sentencepiece.SentencePieceModel) -> dict:
    settings = {}
    ids = {"unk_token": spm.unk_id, "bos_token": spm.bos_id, "eos_token": spm.eos_id, "pad_token": spm.pad_id}
    for name, token_id in ids.items():
        if 0 <= token_id < len(spm.pieces):
            settings[name] = spm.pieces[token_id][0]
    return settings


def _sentencepiece_pipeline(
    spm: sentencepiece.SentencePieceModel, path: Path, bos: dict, eos: dict, keep_controls: bool = False
) -> Pipeline:
    """The pipeline of a SentencePiece model (from a tokenizer.model or a GGUF file), adding
    `bos["bos_token"]` before and `eos["eos_token"]` after each sequence when given. With
    `keep_controls`, decode writes control pieces like `</s>` out (unless skipped as special tokens),
    as the reference's T5 and XLM-RoBERTa tokenizers do; `sentencepiece` itself drops them."""
    if spm.model_type not in (sentencepiece.BPE, sentencepiece.UNIGRAM):
        kind = sentencepiece.MODEL_TYPE_NAMES.get(spm.model_type, spm.model_type)
        raise ValueError(f"{path} is a SentencePiece {kind!r} model; only 'bpe' and 'unigram' models are supported.")
    if spm.treat_whitespace_as_suffix:
        raise ValueError(f"{path} uses treat_whitespace_as_suffix, which is not supported.")
    model_class = models.SentencePieceBPE if spm.model_type == sentencepiece.BPE else models.Unigram
    try:
        model = model_class(spm.pieces, unk_id=spm.unk_id, byte_fallback=spm.byte_fallback)
        precompiled = normalizers.Precompiled(spm.precompiled_charsmap) if spm.precompiled_charsmap else None
    except ValueError as error:
        raise ValueError(f"Cannot build a tokenizer from {path}: {error}") from None
    before = [model.vocab[bos["bos_token"]]] if bos.get("bos_token") else []
    after = [model.vocab[eos["eos_token"]]] if eos.get("eos_token") else []
    single = [([token_id], 0) for token_id in before] + [("A", 0)] + [([token_id], 0) for token_id in after]
    pair = single + [("B" if item == "A" else item, 1) for item, _ in single]
    controls = set() if keep_controls else {piece for piece, _, kind in spm.pieces if kind == models.CONTROL}
    return Pipeline(
        model,
        normalizer=normalizers.SentencePieceNormalizer(
            precompiled,
            add_dummy_prefix=spm.add_dummy_prefix,
            remove_extra_whitespaces=spm.remove_extra_whitespaces,
            escape_whitespaces=spm.escape_whitespaces,
        ),
        post_processor=processors.TemplateProcessing(single, pair),
        decoder=decoders.SentencePiece(
            controls, model.unk_token, add_dummy_prefix=spm.add_dummy_prefix, byte_fallback=spm.byte_fallback
        ),
    )


# --- Marian (opus-mt): a SentencePiece model per language and one id table (vocab.json)


def read_marian_vocab(path: str | Path, name: str) -> dict[str, int]:
    """A Marian vocab.json (or target_vocab.json): piece -> id; `name` is the argument that gave the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}={str(path)!r} is not a file; a Marian tokenizer needs its vocab.json there.")
    vocab = _read_json(path)
    if not isinstance(vocab, dict) or not all(isinstance(token_id, int) for token_id in vocab.values()):
        raise ValueError(f"{path} is not a vocabulary: expected a JSON object of pieces to integer ids.")
    return vocab


def marian_pipeline(spm_path: str | Path, vocab: dict[str, int], unk_token: str,
                    pipeline_class: type[Pipeline] = LanguageCodePipeline) -> Pipeline:
    """One language's side of a Marian tokenizer: the SentencePiece model at `spm_path` (source.spm or target.spm)
    normalizes and segments the text, `vocab` gives the ids, a leading language code (`>>fra<<`) is one token. Its
    decoder is the SentencePiece model's (pieces it does not know are written as they are). M2M100's tokenizer is
    one such side, its language codes added tokens (a plain `pipeline_class`)."""
    spm_path = Path(spm_path)
    if not spm_path.is_file():
        raise FileNotFoundError(f"{spm_path} is not a file; the tokenizer needs this SentencePiece model.")
    spm = sentencepiece.read_sentencepiece_model(spm_path)
    if unk_token not in vocab:
        raise ValueError(f"The unknown token {unk_token!r} is not in the vocabulary (vocab.json); pass unk_token=.")
    pieces = _sentencepiece_pipeline(spm, spm_path, {}, {})
    pieces.decoder.pieces = frozenset(piece for piece, _, _ in spm.pieces)
    return pipeline_class(models.PieceVocabulary(pieces.model, vocab, unk_token), normalizer=pieces.normalizer,
                          decoder=pieces.decoder)


# --- ALBERT (spiece.model, a unigram) and MPNet (WordPiece): the parts their tokenizer classes build themselves

ALBERT_SPECIAL_TOKENS = {
    "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]", "pad_token": "<pad>",
    "cls_token": "[CLS]", "mask_token": "[MASK]",
}  # fmt: skip


def albert_parts(data: dict, do_lower_case: bool, keep_accents: bool, add_prefix_space: bool) -> dict:
    """The normalizer, pre-tokenizer and decoder specs the reference's AlbertTokenizer builds for the tokenizer.json
    contents `data`, whatever their own are: `` and '' as ", accents stripped (NFKD) unless keep_accents, lowercased
    with do_lower_case, then the SentencePiece rules of the file's Precompiled normalizer; split at whitespace,
    "▁" before every word (before none with add_prefix_space=False)."""
    found = [part for part in _parts(data.get("normalizer"), "normalizers") if part.get("type") == "Precompiled"]
    charsmap = found[0].get("precompiled_charsmap") if found else None
    rules = [{"type": "Replace", "pattern": {"String": quotes}, "content": '"'} for quotes in ("``", "''")]
    rules += [{"type": "NFKD"}, {"type": "StripAccents"}] * (not keep_accents)
    rules += [{"type": "Lowercase"}] * bool(do_lower_case)
    rules += [{"type": "Precompiled", "precompiled_charsmap": charsmap}] * bool(charsmap)
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always" if add_prefix_space else "never",
                 "split": True}  # fmt: skip
    return {
        "normalizer": {"type": "Sequence", "normalizers": rules},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "decoder": metaspace,
    }


def _albert_settings(spm: sentencepiece.SentencePieceModel, path: Path, config: dict) -> dict:
    """ALBERT's spiece.model as the reference reads it: the pieces and scores as a Unigram model over words (not
    SentencePiece's own encoding), unknown at id 1, laid out `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`."""
    if spm.model_type != sentencepiece.UNIGRAM:
        raise ValueError(f"{path} is not a SentencePiece unigram model, which AlbertTokenizer needs.")
    settings = {**ALBERT_SPECIAL_TOKENS, **_config_settings(config)}
    vocab = [[piece, score] for piece, score, _ in spm.pieces]
    ids = {piece: index for index, (piece, _) in enumerate(vocab)}
    cls, sep = settings["cls_token"], settings["sep_token"]
    for name, token in (("cls_token", cls), ("sep_token", sep)):
        if token not in ids:
            raise ValueError(f"{path} has no piece {token!r} ({name}), which AlbertTokenizer puts around each "
                             "sequence; pass the one it uses, e.g. cls_token=... and sep_token=....")

    def special(token: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    post_processor = {
        "type": "TemplateProcessing",
        "single": [special(cls, 0), sequence("A", 0), special(sep, 0)],
        "pair": [special(cls, 0), sequence("A", 0), special(sep, 0), sequence("B", 1), special(sep, 1)],
        "special_tokens": {token: {"id": token, "ids": [ids[token]], "tokens": [token]} for token in (cls, sep)},
    }
    charsmap = base64.b64encode(spm.precompiled_charsmap).decode() if spm.precompiled_charsmap else None
    normalizer = {"type": "Precompiled", "precompiled_charsmap": charsmap} if charsmap else None
    parts = albert_parts({"normalizer": normalizer}, config.get("do_lower_case", True),
                         config.get("keep_accents", False), config.get("add_prefix_space", True))
    data = _tokenizer_json({"type": "Unigram", "unk_id": 1, "vocab": vocab, "byte_fallback": False},
                           post_processor=post_processor, **parts)
    return {"pipeline": pipeline_from_tokenizer_json(data), **settings}


def mpnet_parts(
    cls: tuple[str, int], sep: tuple[str, int], do_lower_case: bool, tokenize_chinese_chars: bool, strip_accents
) -> dict:
    """The parts the reference's MPNetTokenizer builds around its WordPiece vocabulary, whatever a tokenizer.json
    says: BERT's normalizer and pre-tokenizer and WordPiece decoding, laid out as RoBERTa (`<s> A </s></s> B </s>`)."""
    return {
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": tokenize_chinese_chars,
                       "strip_accents": strip_accents, "lowercase": do_lower_case},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "RobertaProcessing", "sep": list(sep), "cls": list(cls), "trim_offsets": True,
                           "add_prefix_space": False},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    }  # fmt: skip


# --- GGUF metadata

# llama.cpp's `tokenizer.ggml.pre` names the split the vocabulary was trained with.
# The two differ only in how many digits go together: up to three, or one.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# BLOOM's: a space and what follows up to a space or punctuation (its tokenizer.json's, a nested character class).
_BLOOM_PATTERN = " ?[^(\\s|[.,!?…。，、।۔،])]+"
# DeepSeek's tokenizer.json files split in several passes, each splitting the pieces of the one before (llama.cpp's
# lists in llama-vocab.cpp). DeepSeek-V3's (V3, R1, V2.5-1210): up to three digits, runs of CJK ideographs and kana,
# then a GPT-4-like split in which ASCII punctuation starts a Latin word.
_DEEPSEEK_V3_PATTERNS = (
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)
# DeepSeek LLM's (and V2's): each line break alone, cased letters after an optional space (the class below, whose
# singletons are escaped so that no Unicode normalization of this file can fold them), ASCII and full-width
# punctuation, trailing spaces, CJK and Hangul runs, then runs of digits.
_DEEPSEEK_CASED_LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ"
    "Ὗ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳ"
    "Ꙁ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\U00010400-\U0001044f𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
_DEEPSEEK_PUNCTUATION = "!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002"
_DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_LLM_PATTERNS = (
    r"[\r\n]", rf"\s?[{_DEEPSEEK_CASED_LETTERS}]+", rf"\s?[{_DEEPSEEK_PUNCTUATION}]+", r"\s+$", _DEEPSEEK_CJK,
    r"\p{N}+",
)
# DeepSeek Coder's (and Coder-V2's): line breaks, letters and punctuation after an optional space, CJK, each digit.
_DEEPSEEK_CODER_PATTERNS = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _DEEPSEEK_CJK, r"\p{N}")
# Each name's regexes, applied in turn.
_PRE_PATTERNS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4"),
                    (_LLAMA3_PATTERN,)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), (_QWEN2_PATTERN,)),
    "bloom": (_BLOOM_PATTERN,),
    "deepseek-v3": _DEEPSEEK_V3_PATTERNS,
    "deepseek-llm": _DEEPSEEK_LLM_PATTERNS,
    "deepseek-coder": _DEEPSEEK_CODER_PATTERNS,
}
# llama.cpp splits these on every digit first, then with GPT-2's pattern (as SmolLM2's tokenizer.json does).
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")
# GPT-2's split; llama.cpp names GPT-NeoX's vocabulary (Pythia, OLMo 1, MPT) "olmo" or "mpt" and splits it so too.
_GPT2 = ("gpt2", "gpt-2", "default", "olmo", "mpt")
_DIGITS_THEN_GPT2_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""


def _gguf_pre_tokenizer(pre: str | None, path: Path) -> dict:
    """The tokenizer.json pre-tokenizer spec for llama.cpp's `tokenizer.ggml.pre` name."""
    no_regex = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    with_regex = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre in _PRE_PATTERNS:
        splits = [{"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
                  for pattern in _PRE_PATTERNS[pre]]
        return {"type": "Sequence", "pretokenizers": [*splits, no_regex]}
    if pre in _DIGITS_THEN_GPT2:
        # Every digit alone, then GPT-2's split, in one regex pass: a digit ends a stretch of text as
        # the end of the text would, hence the whitespace rule's lookahead.
        pattern = {"Regex": _DIGITS_THEN_GPT2_PATTERN}
        split = {"type": "Split", "pattern": pattern, "behavior": "Isolated", "invert": False}
        return {"type": "Sequence", "pretokenizers": [split, no_regex]}
    if pre is not None and pre not in _GPT2:
        known = sorted([*_PRE_PATTERNS, *_DIGITS_THEN_GPT2, *_GPT2])
        warnings.warn(
            f"{path.name}: tokenizer.ggml.pre={pre!r} is not one we know ({', '.join(known)}); splitting text "
            "with GPT-2's pattern instead (as the reference does), which may tokenize some text differently "
            "from llama.cpp.",
            stacklevel=5,
        )
    return with_regex


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(map(check, value))


# What each tokenizer key of a GGUF file must hold, as llama.cpp writes it: a file can store any type under any
# key, and a value of another type would otherwise fail deep inside the loader, without the file's name.
_GGUF_TOKENIZER_VALUES = {
    Keys.Tokenizer.MODEL: (lambda value: isinstance(value, str), "a string"),
    Keys.Tokenizer.PRE: (lambda value: isinstance(value, str), "a string"),
    Keys.Tokenizer.LIST: (lambda value: _list_of(lambda token: isinstance(token, str))(value) and value,
                          "a non-empty array of strings"),
    Keys.Tokenizer.TOKEN_TYPE: (_list_of(_is_int), "an array of integers, one per token"),
    Keys.Tokenizer.SCORES: (_list_of(_is_number), "an array of finite numbers, one per token"),
    Keys.Tokenizer.MERGES: (_list_of(lambda merge: isinstance(merge, str) and " " in merge),
                            "an array of strings of two tokens separated by a space"),
    Keys.Tokenizer.BOS_ID: (_is_int, "a token id"),
    Keys.Tokenizer.EOS_ID: (_is_int, "a token id"),
    Keys.Tokenizer.UNK_ID: (_is_int, "a token id"),
    Keys.Tokenizer.PAD_ID: (_is_int, "a token id"),
    Keys.Tokenizer.ADD_BOS: (lambda value: isinstance(value, bool), "a boolean"),
    Keys.Tokenizer.ADD_EOS: (lambda value: isinstance(value, bool), "a boolean"),
    Keys.Tokenizer.ADD_PREFIX: (lambda value: isinstance(value, bool), "a boolean"),
    Keys.Tokenizer.REMOVE_EXTRA_WS: (lambda value: isinstance(value, bool), "a boolean"),
    Keys.Tokenizer.PRECOMPILED_CHARSMAP: (_list_of(lambda byte: _is_int(byte) and 0 <= byte < 256),
                                          "an array of bytes"),
    Keys.Tokenizer.CHAT_TEMPLATE: (lambda value: isinstance(value, str), "a string"),
}


def _check_gguf_tokenizer(metadata: dict, path: Path) -> None:
    """Refuse, naming the file and the key, a tokenizer value of the wrong type or an array of the wrong length."""
    _check_values(metadata, _GGUF_TOKENIZER_VALUES, path)
    tokens = metadata.get(Keys.Tokenizer.LIST)
    for key in (Keys.Tokenizer.TOKEN_TYPE, Keys.Tokenizer.SCORES):
        if tokens is not None and metadata.get(key) is not None and len(metadata[key]) != len(tokens):
            raise ValueError(f"{path}: {key} has {len(metadata[key])} values for {len(tokens)} tokens; expected one "
                             "per token.")


def _from_gguf(path: Path) -> dict:
    metadata = read_gguf_metadata(path)
    _check_gguf_tokenizer(metadata, path)
    kind = metadata.get(Keys.Tokenizer.MODEL)
    if kind is None:
        raise FileNotFoundError(f"{path} holds no tokenizer: its metadata has no {Keys.Tokenizer.MODEL} key.")
    if kind in _GGUF_SENTENCEPIECE_TYPES:
        return _from_gguf_sentencepiece(metadata, path)
    if kind != "gpt2":
        raise ValueError(
            f"{path} stores a {kind!r} tokenizer; the GGUF tokenizers supported are byte-level BPE ('gpt2') and "
            f"SentencePiece ({', '.join(repr(name) for name in _GGUF_SENTENCEPIECE_TYPES)})."
        )
    for key in (Keys.Tokenizer.LIST, Keys.Tokenizer.MERGES):
        if key not in metadata:
            raise ValueError(f"{path} has a byte-level BPE tokenizer without {key}.")

    tokens = metadata[Keys.Tokenizer.LIST]
    token_types = metadata.get(Keys.Tokenizer.TOKEN_TYPE) or [TokenType.NORMAL] * len(tokens)
    alphabet = set(pre_tokenizers.BYTE_ALPHABET)
    # Tokens spelled outside the byte alphabet are respelled into it; a control token spelled so is a
    # mislabelled llama.cpp entry and is not made special (both as the reference does).
    vocab = {
        token if set(token) <= alphabet else pre_tokenizers.to_byte_alphabet(token): token_id
        for token_id, token in enumerate(tokens)
    }
    added = []
    for token_id, (token, token_type) in enumerate(zip(tokens, token_types)):
        if token_type == TokenType.CONTROL and set(token) <= alphabet:
            added.append(_added_token_spec(token_id, token, special=True))
        elif token_type == TokenType.USER_DEFINED and token in vocab:
            added.append(_added_token_spec(token_id, token, special=False))

    names = {
        "bos_token": Keys.Tokenizer.BOS_ID,
        "eos_token": Keys.Tokenizer.EOS_ID,
        "unk_token": Keys.Tokenizer.UNK_ID,
        "pad_token": Keys.Tokenizer.PAD_ID,
    }
    special = {}
    for name, key in names.items():
        if metadata.get(key) is not None:
            if not 0 <= metadata[key] < len(tokens):
                raise ValueError(f"{path}: {key}={metadata[key]} is not a token id (the vocabulary has {len(tokens)}).")
            special[name] = tokens[metadata[key]]
    add_bos = metadata.get(Keys.Tokenizer.ADD_BOS) and "bos_token" in special
    before = [metadata[Keys.Tokenizer.BOS_ID]] if add_bos else []
    after = [metadata[Keys.Tokenizer.EOS_ID]] if metadata.get(Keys.Tokenizer.ADD_EOS) and "eos_token" in special else []
    data = _tokenizer_json(
        {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
         "vocab": vocab, "merges": [merge.split(" ", 1) for merge in metadata[Keys.Tokenizer.MERGES]]},
        normalizer=None,
        pre_tokenizer=_gguf_pre_tokenizer(metadata.get(Keys.Tokenizer.PRE), path),
        post_processor=_template_spec(before, after, tokens),
        decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    )  # fmt: skip
    data["added_tokens"] = added
    try:
        pipeline = pipeline_from_tokenizer_json(data)
    except ValueError as error:  # a merge of tokens the vocabulary lacks
        raise ValueError(f"{path}: {error}") from None
    settings = {"pipeline": pipeline, **special}
    if metadata.get(Keys.Tokenizer.CHAT_TEMPLATE) is not None:
        settings["chat_template"] = metadata[Keys.Tokenizer.CHAT_TEMPLATE]
    return settings


# llama.cpp's names for SentencePiece models: "llama" (BPE by piece score: Llama-2, Mistral, Vicuna)
# and "t5" (Unigram with the precompiled normalization rules).
_GGUF_SENTENCEPIECE_TYPES = {"llama": sentencepiece.BPE, "t5": sentencepiece.UNIGRAM}


def _from_gguf_sentencepiece(metadata: dict, path: Path) -> dict:
    """A SentencePiece tokenizer from GGUF metadata, tokenizing as llama.cpp (and `sentencepiece`) do:
    pieces with scores and types, a "▁" in front of the text and after each special token, spaces
    spelled "▁", byte fallback when the vocabulary has byte pieces."""
    if Keys.Tokenizer.LIST not in metadata:
        raise ValueError(f"{path} has a SentencePiece tokenizer without {Keys.Tokenizer.LIST}.")
    tokens = metadata[Keys.Tokenizer.LIST]
    scores = metadata.get(Keys.Tokenizer.SCORES) or [0.0] * len(tokens)
    types = metadata.get(Keys.Tokenizer.TOKEN_TYPE) or [TokenType.NORMAL] * len(tokens)
    model_type = _GGUF_SENTENCEPIECE_TYPES[metadata[Keys.Tokenizer.MODEL]]
    ids = {
        "unk_id": metadata.get(Keys.Tokenizer.UNK_ID, 0),
        "bos_id": metadata.get(Keys.Tokenizer.BOS_ID, -1),
        "eos_id": metadata.get(Keys.Tokenizer.EOS_ID, -1),
        "pad_id": metadata.get(Keys.Tokenizer.PAD_ID, -1),
    }
    for key, token_id in ids.items():
        if not -1 <= token_id < len(tokens):  # -1: none
            raise ValueError(f"{path}: {key}={token_id} is not a token id (the vocabulary has {len(tokens)}).")
    # Gemma's files spell its user-defined runs of spaces with real spaces ("  "), which llama.cpp matches in the
    # raw text; the pipeline matches pieces after spaces become "▁", so they are spelled "▁▁" (as the reference).
    tokens = [
        "▁" * len(token) if kind == TokenType.USER_DEFINED and token and not token.strip(" ") else token
        for token, kind in zip(tokens, types)
    ]
    sentinels = _t5_sentinels(tokens) if model_type == sentencepiece.UNIGRAM else {}
    tokens = [sentinels.get(index, token) for index, token in enumerate(tokens)]
    # A type-less vocabulary written by hand may hold a byte piece as NORMAL; llama.cpp checks the type too.
    spm = sentencepiece.SentencePieceModel(
        pieces=[(token, float(score), int(kind)) for token, score, kind in zip(tokens, scores, types)],
        model_type=model_type,
        byte_fallback=TokenType.BYTE in types,
        precompiled_charsmap=bytes(metadata.get(Keys.Tokenizer.PRECOMPILED_CHARSMAP) or b""),
        add_dummy_prefix=bool(metadata.get(Keys.Tokenizer.ADD_PREFIX, True)),
        remove_extra_whitespaces=bool(metadata.get(Keys.Tokenizer.REMOVE_EXTRA_WS, False)),
        **ids,
    )
    settings = _sentencepiece_special_tokens(spm)
    # As llama.cpp and the reference, every control piece (Gemma's `<start_of_turn>`) is a special token matched
    # whole in the text.
    named = set(settings.values())
    settings["extra_special_tokens"] = [
        piece for piece, _, kind in spm.pieces if kind == models.CONTROL and piece not in named
    ] + [sentinels[index] for index in sorted(sentinels, reverse=True)]
    # llama.cpp adds BOS by default for "llama" and EOS by default for "t5", unless the file says otherwise.
    add_bos = metadata.get(Keys.Tokenizer.ADD_BOS, model_type == sentencepiece.BPE)
    add_eos = metadata.get(Keys.Tokenizer.ADD_EOS, model_type == sentencepiece.UNIGRAM)
    pipeline = _sentencepiece_pipeline(spm, path, settings if add_bos else {}, settings if add_eos else {})
    pipeline.sentencepiece_model = spm  # save_pretrained writes it as a tokenizer.model
    if metadata.get(Keys.Tokenizer.CHAT_TEMPLATE) is not None:
        settings["chat_template"] = metadata[Keys.Tokenizer.CHAT_TEMPLATE]
    return {"pipeline": pipeline, **settings}


_PLACEHOLDER = re.compile(r"\[PAD\d+\]")


def _t5_sentinels(tokens: list[str]) -> dict[int, str]:
    """T5's sentinels by id. llama.cpp's converter writes the ids past the SentencePiece pieces as placeholders
    "[PAD<id>]", T5's <extra_id_N> among them; as the reference, the first 100 placeholders are named back in T5's
    order (the first <extra_id_99>, the hundredth <extra_id_0>) and become special tokens, matched whole."""
    placeholders = [index for index, token in enumerate(tokens) if _PLACEHOLDER.fullmatch(token)][:100]
    return {index: f"<extra_id_{99 - n}>" for n, index in enumerate(placeholders)}


# --- choosing the source


def load_tokenizer(
    files: ModelFiles, *, prefer_gguf: bool = False, tokenizer_class: str | None = None, options: dict | None = None
) -> dict:
    """The `PreTrainedTokenizer` keyword arguments for the tokenizer in `files`.

    tokenizer.json wins over the GGUF metadata unless `prefer_gguf` (the caller named a GGUF file).
    `tokenizer_class` (the reference's class name) overrides the config's, and `options` (the
    caller's keyword arguments) override the config's values, as in the reference's from_pretrained.
    """
    config = read_tokenizer_config(files)
    if files.file("tokenizer.json") is not None and not (prefer_gguf and files.gguf_file is not None):
        # As the reference: a tokenizer.json's post-processor lays out BOS and EOS, and the config's add_bos_token and
        # add_eos_token give way to it (OPT's add_bos_token: true); only the caller's arguments lay them out anew.
        config.pop("add_bos_token", None)
        config.pop("add_eos_token", None)
    options = dict(options or {})
    config.update(options)
    config["_explicit"] = options
    if tokenizer_class:
        config["tokenizer_class"] = tokenizer_class
    settings = _load_settings(files, config, prefer_gguf)
    jinja_path = files.file("chat_template.jinja")
    if jinja_path and "chat_template" not in options:  # it overrides the config's chat_template
        settings["chat_template"] = jinja_path.read_text(encoding="utf-8")
    return settings


def _load_settings(files: ModelFiles, config: dict, prefer_gguf: bool) -> dict:
    tokenizer_json = files.file("tokenizer.json")
    if files.gguf_file is not None and (prefer_gguf or tokenizer_json is None):
        settings, explicit = _from_gguf(files.gguf_file), _config_settings(config["_explicit"])
        # The extra special tokens the caller names add to the file's.
        extra = settings.get("extra_special_tokens", []) + explicit["extra_special_tokens"]
        return {**settings, **explicit, "extra_special_tokens": list(dict.fromkeys(extra))}
    if tokenizer_json is not None:
        return settings_from_tokenizer_json(tokenizer_json, config)
    if files.file("tokenizer.model") is not None:
        return settings_from_sentencepiece(files.folder / "tokenizer.model", config)
    if files.file("spm.model") is not None:  # DeBERTa-v2's name for it
        return settings_from_sentencepiece(files.folder / "spm.model", config)
    if files.file("spiece.model") is not None:  # ALBERT's and T5's name for it
        return settings_from_sentencepiece(files.folder / "spiece.model", config)
    if files.file("sentencepiece.bpe.model") is not None:  # fairseq's (XLM-RoBERTa's, CamemBERT's, mBART's)
        return settings_from_sentencepiece(files.folder / "sentencepiece.bpe.model", config)
    if files.file("vocab.txt") is not None:
        return settings_from_vocab_txt(files.folder / "vocab.txt", config)
    if files.file("vocab.json") is not None and files.file("merges.txt") is not None:
        return settings_from_vocab_and_merges(files.folder / "vocab.json", files.folder / "merges.txt", config)
    found = sorted(path.name for path in files.folder.iterdir()) if files.folder.is_dir() else []
    lone = sorted({"vocab.json", "merges.txt"} & set(found))
    hint = f" ({lone[0]} was found, but byte-level BPE needs both vocab.json and merges.txt.)" if lone else ""
    raise FileNotFoundError(
        f"No tokenizer found in {files.folder}: looked for tokenizer.json and for a .gguf file with tokenizer "
        f"metadata. The folder holds: {found[:20] or 'nothing'}.{hint}"
    )


# What the tokenizer classes build on: the settings of a pipeline given with keyword arguments, reading
# a config, the parts of a slot, building a part, and the BOS/EOS layout.
settings_from_config = _config_settings
read_json_file = _read_json
parts_of = _parts
build_part = _build
template_spec = _template_spec

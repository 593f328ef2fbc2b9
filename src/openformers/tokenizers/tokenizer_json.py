"""The shape of a tokenizer.json, checked before a pipeline is built from it.

The reference reads tokenizer.json into typed Rust structures and refuses a file whose values do not fit:
a negative id, a string where a list belongs, NaN as a score. Read as plain JSON, such values would reach the
pipeline and fail deep inside it (a KeyError, an IndexError) or, worse, be used. `check_tokenizer_json` walks
the contents once and raises a ValueError naming the file, the JSON path of the value, what it should be and
what was found. It knows the fields of the part types the loaders build; a type it does not know is left to
the loaders, which refuse it by name.

Ids are checked against [0, 2**31): the reference takes any u32, but an id past 2**31 - 1 cannot index an
embedding table, and one that large in a file is a mistake or an attack.
"""

import math

MAX_ID = 2**31 - 1


class _Check:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, expected: str, value) -> None:
        shown = _short(value)
        raise ValueError(f"{self.source}: {where or 'the top level'} should be {expected}, found {shown}.")


def _short(value, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# --- kinds of values: each a function (check, value, where) that raises through check.fail


def _string(check: _Check, value, where: str) -> None:
    if not isinstance(value, str):
        check.fail(where, "a string", value)


def _flag(check: _Check, value, where: str) -> None:
    if not isinstance(value, bool):
        check.fail(where, "true or false", value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_id(check: _Check, value, where: str) -> None:
    if not _integer(value) or not 0 <= value <= MAX_ID:
        check.fail(where, f"a token id, an integer from 0 to {MAX_ID}", value)


def _count(check: _Check, value, where: str) -> None:
    if not _integer(value) or not 0 <= value <= MAX_ID:
        check.fail(where, f"an integer from 0 to {MAX_ID}", value)


def _finite(check: _Check, value, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        check.fail(where, "a finite number", value)


def _one_of(*choices: str):
    def check_choice(check: _Check, value, where: str) -> None:
        if value not in choices:
            check.fail(where, f"one of {', '.join(map(repr, choices))}", value)

    return check_choice


def _optional(kind):
    def check_optional(check: _Check, value, where: str) -> None:
        if value is not None:
            kind(check, value, where)

    return check_optional


def _list_of(kind):
    def check_list(check: _Check, value, where: str) -> None:
        if not isinstance(value, list):
            check.fail(where, "a list", value)
        for index, item in enumerate(value):
            kind(check, item, f"{where}[{index}]")

    return check_list


def _object(check: _Check, value, where: str) -> None:
    if not isinstance(value, dict):
        check.fail(where, "an object", value)


def _vocab(check: _Check, value, where: str) -> None:
    """{token: id}."""
    _object(check, value, where)
    for token, token_id in value.items():
        _token_id(check, token_id, f"{where}[{_short(token)}]")


def _scored_pieces(check: _Check, value, where: str) -> None:
    """Unigram's [[piece, score], ...]."""
    if not isinstance(value, list):
        check.fail(where, "a list of [piece, score] pairs", value)
    for index, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2:
            check.fail(f"{where}[{index}]", "a [piece, score] pair", item)
        _string(check, item[0], f"{where}[{index}][0]")
        _finite(check, item[1], f"{where}[{index}][1]")


def _merge(check: _Check, value, where: str) -> None:
    """A BPE merge: "first second", or ["first", "second"]."""
    if isinstance(value, str):
        if " " not in value:
            check.fail(where, 'a merge, two tokens separated by a space ("a b")', value)
    elif not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)):
        check.fail(where, 'a merge, "a b" or ["a", "b"]', value)


def _pattern(check: _Check, value, where: str) -> None:
    if not (isinstance(value, dict) and len(value) == 1 and ({"String", "Regex"} & value.keys())):
        check.fail(where, 'a pattern, {"String": ...} or {"Regex": ...}', value)
    for key, text in value.items():
        _string(check, text, f"{where}.{key}")


def _token_and_id(check: _Check, value, where: str) -> None:
    """BertProcessing's ["[SEP]", 102]."""
    if not isinstance(value, list) or len(value) != 2:
        check.fail(where, "a [token, id] pair", value)
    _string(check, value[0], f"{where}[0]")
    _token_id(check, value[1], f"{where}[1]")


def _template_item(check: _Check, value, where: str) -> None:
    if not (isinstance(value, dict) and len(value) == 1 and ({"Sequence", "SpecialToken"} & value.keys())):
        check.fail(where, '{"Sequence": {...}} or {"SpecialToken": {...}}', value)
    for key, item in value.items():
        name = _one_of("A", "B") if key == "Sequence" else _string
        _fields(check, item, f"{where}.{key}", {"id": (name, True), "type_id": (_count, False)})


def _special_tokens(check: _Check, value, where: str) -> None:
    _object(check, value, where)
    for name, entry in value.items():
        fields = {"id": (_string, True), "ids": (_list_of(_token_id), True), "tokens": (_list_of(_string), False)}
        _fields(check, entry, f"{where}[{_short(name)}]", fields)


def _fields(check: _Check, value, where: str, fields: dict) -> None:
    """An object whose `fields` ({name: (kind, required)}) have the right kinds."""
    _object(check, value, where)
    for name, (kind, required) in fields.items():
        if name in value:
            kind(check, value[name], f"{where}.{name}" if where else name)
        elif required:
            check.fail(where, f"an object with a {name!r} field", value)


def _part(slot: str):
    """A normalizer, pre-tokenizer, model, post-processor or decoder: an object with a "type" whose fields are
    checked when the type is one of PARTS[slot]."""

    def check_part(check: _Check, value, where: str) -> None:
        _object(check, value, where)
        kind = value.get("type")
        if kind is None and slot == "model" and "merges" in value:
            kind = "BPE"  # old files leave the model's type out
        if kind is not None and not isinstance(kind, str):
            check.fail(f"{where}.type", "a string", kind)
        fields = PARTS[slot].get(kind)
        if fields is not None:
            _fields(check, value, where, fields)

    return check_part


_BOOL, _STR, _OPTIONAL_STR = (_flag, False), (_string, False), (_optional(_string), False)
_BYTE_LEVEL = {"add_prefix_space": _BOOL, "trim_offsets": _BOOL, "use_regex": _BOOL}
_METASPACE = {"replacement": _STR, "prepend_scheme": _STR, "split": _BOOL, "add_prefix_space": _BOOL}
_REPLACE = {"pattern": (_pattern, True), "content": (_string, True)}

# The fields of each part type, per slot: {type: {field: (kind, required)}}.
PARTS = {
    "normalizer": {
        "BertNormalizer": {"clean_text": _BOOL, "handle_chinese_chars": _BOOL,
                           "strip_accents": (_optional(_flag), False), "lowercase": _BOOL},
        "Strip": {"strip_left": _BOOL, "strip_right": _BOOL},
        "Replace": _REPLACE,
        "Prepend": {"prepend": (_string, True)},
        "Precompiled": {"precompiled_charsmap": (_optional(_string), True)},
        "Sequence": {"normalizers": (_list_of(_part("normalizer")), True)},
    },
    "pre_tokenizer": {
        "ByteLevel": _BYTE_LEVEL,
        "Split": {"pattern": (_pattern, True), "behavior": (_string, True), "invert": _BOOL},
        "Digits": {"individual_digits": _BOOL},
        "Metaspace": _METASPACE,
        "Punctuation": {"behavior": _STR},
        "Sequence": {"pretokenizers": (_list_of(_part("pre_tokenizer")), True)},
    },
    "model": {
        "BPE": {"vocab": (_vocab, True), "merges": (_list_of(_merge), True), "unk_token": _OPTIONAL_STR,
                "continuing_subword_prefix": _OPTIONAL_STR, "end_of_word_suffix": _OPTIONAL_STR,
                "dropout": (_optional(_finite), False), "fuse_unk": _BOOL, "byte_fallback": _BOOL,
                "ignore_merges": _BOOL},
        "WordPiece": {"vocab": (_vocab, True), "unk_token": _STR, "continuing_subword_prefix": _STR,
                      "max_input_chars_per_word": (_count, False)},
        "WordLevel": {"vocab": (_vocab, True), "unk_token": _OPTIONAL_STR},
        "Unigram": {"vocab": (_scored_pieces, True), "unk_id": (_optional(_token_id), False),
                    "byte_fallback": _BOOL},
    },
    "post_processor": {
        "TemplateProcessing": {"single": (_list_of(_template_item), True),
                               "pair": (_optional(_list_of(_template_item)), False),
                               "special_tokens": (_special_tokens, False)},
        "BertProcessing": {"sep": (_token_and_id, True), "cls": (_token_and_id, True)},
        "RobertaProcessing": {"sep": (_token_and_id, True), "cls": (_token_and_id, True), **_BYTE_LEVEL},
        "ByteLevel": _BYTE_LEVEL,
        "Sequence": {"processors": (_list_of(_part("post_processor")), True)},
    },
    "decoder": {
        "ByteLevel": _BYTE_LEVEL,
        "WordPiece": {"prefix": _STR, "cleanup": _BOOL},
        "Metaspace": _METASPACE,
        "BPEDecoder": {"suffix": _STR},
        "Strip": {"content": _STR, "start": (_count, False), "stop": (_count, False)},
        "Replace": _REPLACE,
        "Sequence": {"decoders": (_list_of(_part("decoder")), True)},
    },
}  # fmt: skip

_ADDED_TOKEN = {
    "id": (_token_id, True), "content": (_string, True), "single_word": _BOOL, "lstrip": _BOOL, "rstrip": _BOOL,
    "normalized": (_optional(_flag), False), "special": _BOOL,
}  # fmt: skip

_DIRECTION = (_one_of("Left", "Right"), False)
_PADDING = {"direction": _DIRECTION, "pad_to_multiple_of": (_optional(_count), False), "pad_id": (_token_id, False),
            "pad_type_id": (_count, False), "pad_token": _STR}  # fmt: skip
_TRUNCATION = {"direction": _DIRECTION, "max_length": (_count, False),
               "strategy": (_one_of("LongestFirst", "OnlyFirst", "OnlySecond"), False), "stride": (_count, False)}

_TOP = {
    "model": (_part("model"), True),
    "added_tokens": (_optional(_list_of(lambda check, value, where: _fields(check, value, where, _ADDED_TOKEN))),
                     False),
    "normalizer": (_optional(_part("normalizer")), False),
    "pre_tokenizer": (_optional(_part("pre_tokenizer")), False),
    "post_processor": (_optional(_part("post_processor")), False),
    "decoder": (_optional(_part("decoder")), False),
    "padding": (_optional(lambda check, value, where: _fields(check, value, where, _PADDING)), False),
    "truncation": (_optional(lambda check, value, where: _fields(check, value, where, _TRUNCATION)), False),
}  # fmt: skip


def check_tokenizer_json(data, source) -> None:
    """Raise a ValueError naming `source` (the file) and the JSON path of the first value of the wrong kind."""
    check = _Check(str(source))
    if not isinstance(data, dict):
        check.fail("", "an object", data)
    _fields(check, data, "", _TOP)

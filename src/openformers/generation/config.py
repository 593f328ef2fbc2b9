"""GenerationConfig: the decoding options, with the reference's precedence.

An option left at None is "not set". `generate` resolves the options in the reference's order of precedence:
its keyword arguments, then the `generation_config` it is given, then the model's `generation_config` (read
from `generation_config.json` when the model has one, else built from the token ids of its `config.json`),
then the library defaults in `DEFAULTS`. Impossible values raise a ValueError naming the option; an option that
the chosen strategy ignores (a sampling option without `do_sample=True`) is only a warning, as in the reference.
"""

import copy
import json
import os
import warnings
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path

GENERATION_CONFIG_FILE = "generation_config.json"

# The reference's library defaults, used for every option that nothing else sets.
DEFAULTS = {
    "max_length": 20,
    "min_length": 0,
    "early_stopping": False,
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "use_cache": True,
}

# Options that only sampling reads, with the value that leaves sampling unchanged; and the same for beam search.
_SAMPLING_ONLY = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0}
_BEAM_ONLY = {"early_stopping": False, "length_penalty": 1.0}


@dataclass
class GenerationConfig:
    # how long
    max_length: int | None = None  # prompt included
    max_new_tokens: int | None = None  # takes precedence over max_length
    min_length: int | None = None
    min_new_tokens: int | None = None
    stop_strings: str | list[str] | None = None  # needs generate(..., tokenizer=tokenizer)
    # which strategy
    do_sample: bool | None = None
    num_beams: int | None = None
    early_stopping: bool | str | None = None  # True, False or "never"
    length_penalty: float | None = None
    num_return_sequences: int | None = None
    use_cache: bool | None = None  # accepted for compatibility: the cache changes the speed, never the tokens
    # how the scores are shaped
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    bad_words_ids: list[list[int]] | None = None
    suppress_tokens: list[int] | None = None
    # what generate returns
    output_scores: bool | None = None
    output_logits: bool | None = None
    return_dict_in_generate: bool | None = None
    # special tokens
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict, repr=False)  # keys we do not use, kept so the file round-trips

    def __post_init__(self):
        self.validate()
        _warn_about_ignored_options(self, self.set_options(), stacklevel=4)

    # -- reading and writing ----------------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationConfig":
        """A config from the keys of a generation_config.json; keys that are not options are kept in `extra`."""
        config = cls()
        known = set(cls.option_names())
        for key, value in values.items():
            if key in known:
                setattr(config, key, value)
        config.extra = {k: v for k, v in values.items() if k not in known}
        config.validate()
        return config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "GenerationConfig":
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of generation options, got {type(values).__name__}.")
        try:
            return cls.from_dict(values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, config_file_name: str = GENERATION_CONFIG_FILE, **kwargs
    ) -> "GenerationConfig":
        """Read `generation_config.json` (or `config_file_name`) from a model folder or Hub id.

        Keyword arguments that are options override the file; the rest (revision, cache_dir, local_files_only,
        token) say where to find it.
        """
        from ..hub import resolve

        options = {k: kwargs.pop(k) for k in list(kwargs) if k in cls.option_names()}
        files = resolve(name_or_path, **kwargs)
        path = files.file(config_file_name)
        if path is None:
            raise FileNotFoundError(
                f"No {config_file_name} in {files.folder}. A model without one generates with the options of its "
                "config.json; build a GenerationConfig(...) yourself to save one."
            )
        config = cls.from_json_file(path)
        config.update(**options)
        return config

    def to_dict(self) -> dict:
        """The options that are set, and the unknown keys read from a file."""
        values = {name: getattr(self, name) for name in self.option_names() if getattr(self, name) is not None}
        return {**self.extra, **values}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, folder: str | os.PathLike, config_file_name: str = GENERATION_CONFIG_FILE) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / config_file_name).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The options a model's config.json holds: its special token ids, and any generation option it sets."""
        values = dict(getattr(model_config, "extra", None) or {})
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            values[name] = getattr(model_config, name, None)
        known = set(cls.option_names())
        return cls.from_dict({k: v for k, v in values.items() if k in known and v is not None})

    # -- changing ---------------------------------------------------------------------------------------------

    def set_options(self) -> set[str]:
        return {name for name in self.option_names() if getattr(self, name) is not None}

    def update(self, **kwargs) -> dict:
        """Set the options among `kwargs` (None unsets one); return the keyword arguments that are not options."""
        known = set(self.option_names())
        for key in kwargs.keys() & known:
            setattr(self, key, kwargs[key])
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in known}

    def resolved(self, *fallbacks: "GenerationConfig") -> "GenerationConfig":
        """A copy with every unset option taken from the first fallback that sets it, else from `DEFAULTS`."""
        config = copy.deepcopy(self)
        for name in self.option_names():
            if getattr(config, name) is None:
                value = next((getattr(f, name) for f in fallbacks if getattr(f, name) is not None), None)
                setattr(config, name, copy.deepcopy(value) if value is not None else DEFAULTS.get(name))
        return config

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if _is_int(self.eos_token_id) else list(self.eos_token_id)

    # -- checking ---------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a ValueError naming the first option whose value is impossible (unset options are fine)."""
        for name, (check, expected) in _CHECKS.items():
            value = getattr(self, name)
            if value is not None and not check(value):
                raise ValueError(f"{name} must be {expected}, got {value!r}.")

    def check_combination(self) -> None:
        """Raise a ValueError for options that cannot go together (called on a resolved config)."""
        if self.num_return_sequences > 1 and self.num_beams == 1 and not self.do_sample:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs several different sequences, but greedy "
                "decoding gives only one: pass do_sample=True, or num_beams >= num_return_sequences."
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) cannot exceed num_beams ({self.num_beams}): "
                "beam search returns at most its beams."
            )
        if self.do_sample and self.temperature == 0:
            raise ValueError(
                "temperature=0 with do_sample=True is impossible; for greedy decoding pass do_sample=False."
            )


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_token_ids(value) -> bool:
    ids = [value] if _is_int(value) else value
    return isinstance(ids, (list, tuple)) and all(_is_int(i) and i >= 0 for i in ids)


def _is_stop_strings(value) -> bool:
    strings = [value] if isinstance(value, str) else value
    return isinstance(strings, (list, tuple)) and len(strings) > 0 and all(isinstance(s, str) and s for s in strings)


_CHECKS = {
    "max_length": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (the number of tokens to generate)"),
    "min_length": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "min_new_tokens": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "stop_strings": (_is_stop_strings, "a non-empty string or a list of non-empty strings"),
    "do_sample": (lambda v: isinstance(v, bool), "True or False"),
    "num_beams": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (1 means no beam search)"),
    "early_stopping": (lambda v: isinstance(v, bool) or v == "never", "True, False or 'never'"),
    "length_penalty": (_is_number, "a number (> 0 favours longer sequences, < 0 shorter ones)"),
    "num_return_sequences": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "use_cache": (lambda v: isinstance(v, bool), "True or False"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (0 means greedy decoding)"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 turns top-k filtering off)"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1] (1 turns nucleus filtering off)"),
    "min_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "typical_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1] (1 turns typical sampling off)"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0 (1.0 means no penalty)"),
    "no_repeat_ngram_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 turns the n-gram ban off)"),
    "bad_words_ids": (
        lambda v: isinstance(v, (list, tuple)) and len(v) > 0
        and all(isinstance(w, (list, tuple)) and len(w) > 0 and _is_token_ids(list(w)) for w in v),
        "a non-empty list of non-empty lists of token ids",
    ),
    "suppress_tokens": (_is_token_ids, "a token id or a list of token ids"),
    "output_scores": (lambda v: isinstance(v, bool), "True or False"),
    "output_logits": (lambda v: isinstance(v, bool), "True or False"),
    "return_dict_in_generate": (lambda v: isinstance(v, bool), "True or False"),
    "bos_token_id": (_is_int, "a token id"),
    "eos_token_id": (lambda v: _is_token_ids(v) and v != [], "a token id or a non-empty list of token ids"),
    "pad_token_id": (_is_int, "a token id"),
}


def _warn_about_ignored_options(config: GenerationConfig, chosen: set[str], stacklevel: int) -> None:
    """Warn, as the reference does, about options in `chosen` that the strategy of `config` will not read."""

    def ignored(neutral_values: dict) -> str:
        names = [name for name, neutral in neutral_values.items()
                 if name in chosen and getattr(config, name) not in (None, neutral)]
        return ", ".join(f"{name}={getattr(config, name)!r}" for name in names)

    if config.do_sample is not True:
        # temperature=0 is the usual way to ask for greedy decoding, so it is not reported as ignored.
        sampling_only = _SAMPLING_ONLY if config.temperature != 0 else {**_SAMPLING_ONLY, "temperature": 0}
        if names := ignored(sampling_only):
            warnings.warn(f"do_sample is not True, so greedy or beam search ignores {names}. Pass do_sample=True "
                          "to sample, or leave them out.", UserWarning, stacklevel=stacklevel)
    if config.num_beams in (None, 1) and (names := ignored(_BEAM_ONLY)):
        warnings.warn(f"num_beams is 1, so {names} has no effect: it only applies to beam search (num_beams > 1).",
                      UserWarning, stacklevel=stacklevel)


def resolve_generation_config(
    model_config: GenerationConfig | None, passed: GenerationConfig | None, kwargs: dict, stacklevel: int = 4
) -> tuple[GenerationConfig, dict]:
    """The options for one `generate` call: kwargs > `passed` > the model's config > DEFAULTS.

    Returns the resolved config and the keyword arguments that are not options.
    """
    if passed is not None and not isinstance(passed, GenerationConfig):
        raise TypeError(f"generation_config must be a GenerationConfig, got {type(passed).__name__}.")
    config = (passed or GenerationConfig()).resolved(*(c for c in (model_config,) if c is not None))
    # Keyword arguments come last, so that an explicit None turns a filter off (top_k=None), as in the reference.
    unknown = config.update(**kwargs)
    for name in _NEVER_UNSET:
        if getattr(config, name) is None:
            setattr(config, name, DEFAULTS[name])
    config.check_combination()
    _warn_about_ignored_options(config, set(kwargs) - set(unknown), stacklevel=stacklevel)
    return config, unknown


# Options that shape the loop itself: None from a keyword argument means the default, not "off".
_NEVER_UNSET = ("max_length", "min_length", "early_stopping", "do_sample", "num_beams", "length_penalty",
                "num_return_sequences", "output_scores", "output_logits", "return_dict_in_generate", "use_cache")

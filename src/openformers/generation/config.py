"""GenerationConfig: the decoding options, with the reference's precedence.

An option left at None is "not set". `generate` resolves the options in the reference's order of precedence:
its keyword arguments, then the `generation_config` it is given, then the model's `generation_config` (read
from `generation_config.json` when the model has one, else built from the token ids of its `config.json`),
then the library defaults (`DEFAULTS`, from the options table in options.py). Impossible values raise a
ValueError naming the option; an option that the chosen strategy ignores (a sampling option without
`do_sample=True`) is only a warning, as in the reference.
"""

import copy
import json
import os
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .options import DEFAULTS, OPTION_NAMES, OPTIONS, OPTIONS_BY_NAME, Kind, is_int, names_of_kind

GENERATION_CONFIG_FILE = "generation_config.json"

# Without a length from anyone, `resolve_generation_config` sets max_new_tokens to 20 (the reference generates 20
# NEW tokens by default); DEFAULTS' max_length=20 stays the value read when max_length is asked for explicitly.
DEFAULT_MAX_NEW_TOKENS = 20

# Options that only sampling reads, and those that only beam search reads, with their neutral values (the defaults).
_SAMPLING_ONLY = {name: OPTIONS_BY_NAME[name].default for name in names_of_kind(Kind.SAMPLING)}
_BEAM_ONLY = {name: OPTIONS_BY_NAME[name].default for name in names_of_kind(Kind.BEAM)}
_EXTRA_OUTPUTS = names_of_kind(Kind.EXTRA_OUTPUT)
# Options that shape the loop itself: None from a keyword argument means the default, not "off".
_NEVER_UNSET = tuple(option.name for option in OPTIONS if option.never_unset)
# Keys of a saved file that describe the file rather than generation (the reference's metadata fields).
_METADATA = ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash")


class GenerationMode(str, Enum):
    """The decoding strategy a GenerationConfig asks for, with the reference's names and values."""

    CONTRASTIVE_SEARCH = "contrastive_search"
    GREEDY_SEARCH = "greedy_search"
    SAMPLE = "sample"
    ASSISTED_GENERATION = "assisted_generation"
    DOLA_GENERATION = "dola_generation"
    BEAM_SEARCH = "beam_search"
    BEAM_SAMPLE = "beam_sample"
    CONSTRAINED_BEAM_SEARCH = "constrained_beam_search"
    GROUP_BEAM_SEARCH = "group_beam_search"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value!r} is not a GenerationMode; the modes are {[mode.value for mode in cls]}.")


@dataclass
class CompileConfig:
    """How `generate` should call torch.compile, as the reference's `GenerationConfig(compile_config=...)` takes it.

    Stored with the GenerationConfig (never saved to its file, as in the reference). generate compiles the decoding
    step of a static cache with these options on a GPU, and on the CPU when `_compile_all_devices` is set to True
    (generation/static_cache.py).
    """

    fullgraph: bool = False
    dynamic: bool | None = None
    backend: str | object = "inductor"
    mode: str = "reduce-overhead"
    options: dict | None = None

    def to_dict(self) -> dict:
        return copy.deepcopy(vars(self))


class GenerationConfig:
    """Every option of the reference's GenerationConfig, each None until set; unknown keys are kept too.

    The options, their checks and defaults are the rows of `options.OPTIONS`. `GenerationConfig(foo=1).foo == 1`
    and `foo` survives save_pretrained / from_pretrained, as in the reference. Options for strategies or
    architectures openformers does not run (contrastive search, DoLa, constrained beam search, encoder-decoder
    starts, static caches, compilation) are stored and saved, so a file round-trips.
    """

    def __init__(self, **kwargs):
        object.__setattr__(self, "extra", {})  # keys we do not know, kept so that the file round-trips
        for name in OPTION_NAMES:
            setattr(self, name, kwargs.pop(name, None))
        self.extra.update(_without_unset_metadata(kwargs))
        self.validate()
        _warn_about_ignored_options(self, self.set_options(), stacklevel=3)

    # Unknown keys read and written as attributes, as the reference's GenerationConfig allows.
    def __getattr__(self, name):
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"GenerationConfig has no option or extra key {name!r}.")

    def __setattr__(self, name, value):
        if name == "watermarking_config":
            value = _watermarking_config(value)  # a saved file's dict, as the config it describes
        if name in OPTION_NAMES or name in ("extra", "_original_object_hash"):
            object.__setattr__(self, name, value)
        else:
            self.extra[name] = value

    def __delattr__(self, name):
        if name in self.__dict__.get("extra", {}):
            del self.extra[name]
        else:
            object.__delattr__(self, name)

    def __eq__(self, other) -> bool:
        if not isinstance(other, GenerationConfig):
            return False
        return self.to_json_string(use_diff=False, ignore_metadata=True) == other.to_json_string(
            use_diff=False, ignore_metadata=True
        )

    def __hash__(self) -> int:
        return hash(self.to_json_string(ignore_metadata=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(ignore_metadata=True)}"

    # -- reading and writing ----------------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        return list(OPTION_NAMES)

    @classmethod
    def from_dict(cls, values: dict, **kwargs) -> "GenerationConfig":
        """A config from the keys of a generation_config.json (unknown keys kept); `kwargs` override them.

        With `return_unused_kwargs=True`, returns `(config, {})` as the reference does (every key is kept).
        """
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config = cls.__new__(cls)
        object.__setattr__(config, "extra", {})
        for name in OPTION_NAMES:
            object.__setattr__(config, name, None)
        for key, value in _without_unset_metadata({**values, **kwargs}).items():
            setattr(config, key, value)
        config.validate()
        return (config, {}) if return_unused_kwargs else config

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
        cls, name_or_path: str | os.PathLike, config_file_name: str | None = None, **kwargs
    ) -> "GenerationConfig":
        """Read `generation_config.json` (or `config_file_name`) from a model folder or Hub id.

        Keyword arguments that are options (or unknown keys) override the file; revision, cache_dir,
        local_files_only, token, force_download and subfolder say where to find it. With
        `return_unused_kwargs=True`, returns `(config, {})` as the reference does.
        """
        from ..hub import resolve

        config_file_name = config_file_name or GENERATION_CONFIG_FILE
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        where = {k: kwargs.pop(k) for k in list(kwargs) if k in _WHERE_TO_FIND}
        for ignored in ("_from_auto", "_from_pipeline", "proxies", "force_download", "subfolder"):
            where.pop(ignored, None)
            kwargs.pop(ignored, None)
        files = resolve(name_or_path, **where)
        path = files.file(config_file_name)
        if path is None:
            raise FileNotFoundError(
                f"No {config_file_name} in {files.folder}. A model without one generates with the options of its "
                "config.json; build a GenerationConfig(...) yourself to save one."
            )
        config = cls.from_json_file(path)
        for key, value in kwargs.items():
            setattr(config, key, value)
        config.validate()
        config._original_object_hash = hash(config)  # saving it back unchanged is then never refused
        return (config, {}) if return_unused_kwargs else config

    def to_dict(self) -> dict:
        """Every option (None when unset) and the unknown keys, as the reference's `to_dict`."""
        values = {name: _serializable(copy.deepcopy(getattr(self, name))) for name in OPTION_NAMES}
        return {"_from_model_config": None, **copy.deepcopy(self.extra), **values}

    def to_diff_dict(self) -> dict:
        """The options that are set, and the unknown keys: what a saved file holds."""
        return {key: value for key, value in self.to_dict().items() if value is not None or key in self.extra}

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False, keys_to_pop=None) -> str:
        values = self.to_diff_dict() if use_diff else self.to_dict()
        for key in list(keys_to_pop or []) + (list(_METADATA) if ignore_metadata else []):
            values.pop(key, None)
        return json.dumps(_string_keys(values), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike, use_diff: bool = True, keys_to_pop=None) -> None:
        Path(path).write_text(self.to_json_string(use_diff=use_diff, keys_to_pop=keys_to_pop), encoding="utf-8")

    def save_pretrained(
        self, folder: str | os.PathLike, config_file_name: str | None = None, push_to_hub: bool = False, **kwargs
    ) -> None:
        """Write the set options to `folder/generation_config.json`, in the reference's format."""
        if push_to_hub:
            raise ValueError(
                "GenerationConfig.save_pretrained(push_to_hub=True) is not supported: save to a folder, then upload "
                "it with huggingface_hub.upload_folder(folder_path=..., repo_id=...)."
            )
        # As in the reference, a config changed since it was loaded (or built here) is saved only when it is
        # consistent: options its strategy would ignore are errors, so a broken file is never published.
        try:
            self.validate(strict=self.__dict__.get("_original_object_hash") != hash(self))
        except ValueError as error:
            raise ValueError(f"{error}\n\nFix these issues to save the configuration.") from None
        folder = Path(folder)
        if folder.is_file():
            raise ValueError(f"save_pretrained needs a folder, but {folder} is a file.")
        folder.mkdir(parents=True, exist_ok=True)
        self.to_json_file(folder / (config_file_name or GENERATION_CONFIG_FILE), keys_to_pop=["compile_config"])

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The options a model's config.json holds: its special token ids, and any generation option it sets."""
        if isinstance(model_config, dict):
            values = dict(model_config)
        else:
            values = dict(getattr(model_config, "extra", None) or {})
            for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
                if getattr(model_config, name, None) is not None:
                    values[name] = getattr(model_config, name)
        options = {k: v for k, v in values.items() if k in OPTION_NAMES and v is not None}
        config = cls.from_dict(options, _from_model_config=True)  # marked as the reference marks it
        config._original_object_hash = hash(config)
        return config

    # -- changing ---------------------------------------------------------------------------------------------

    def set_options(self) -> set[str]:
        return {name for name in OPTION_NAMES if getattr(self, name) is not None}

    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs) -> dict:
        """Set the options among `kwargs` (None unsets one); return the keyword arguments that were not used.

        As in the reference: `defaults_only=True` only fills unset options, and `allow_custom_entries=True` also
        keeps unknown keys (an unknown key already present is always updated).
        """
        used = []
        for key, value in kwargs.items():
            known = key in OPTION_NAMES or key in self.extra
            if not known and not allow_custom_entries:
                continue
            if known and defaults_only and getattr(self, key) is not None:
                continue
            setattr(self, key, value)
            used.append(key)
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in used}

    def resolved(self, *fallbacks: "GenerationConfig") -> "GenerationConfig":
        """A copy with every unset option taken from the first fallback that sets it, else from `DEFAULTS`."""
        config = copy.deepcopy(self)
        for name in OPTION_NAMES:
            if getattr(config, name) is None:
                value = next((getattr(f, name) for f in fallbacks if getattr(f, name) is not None), None)
                setattr(config, name, copy.deepcopy(value) if value is not None else DEFAULTS.get(name))
        return config

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if is_int(self.eos_token_id) else list(self.eos_token_id)

    def get_generation_mode(self, assistant_model=None) -> GenerationMode:
        """The strategy these options ask for, decided as the reference decides it."""
        if self.constraints is not None or self.force_words_ids is not None:
            mode = GenerationMode.CONSTRAINED_BEAM_SEARCH
        elif self.num_beams is None or self.num_beams == 1:
            if self.do_sample is True:
                mode = GenerationMode.SAMPLE
            elif (self.top_k or 0) > 1 and (self.penalty_alpha or 0) > 0:
                mode = GenerationMode.CONTRASTIVE_SEARCH
            else:
                mode = GenerationMode.GREEDY_SEARCH
        elif self.num_beam_groups is not None and self.num_beam_groups > 1:
            mode = GenerationMode.GROUP_BEAM_SEARCH
        else:
            mode = GenerationMode.BEAM_SAMPLE if self.do_sample is True else GenerationMode.BEAM_SEARCH
        # A draft model, multi-token prediction, prompt lookup or early exit turn greedy and sampling into assisted
        # decoding; DoLa layers turn them into DoLa decoding. Other strategies ignore both, with a warning.
        assisted = (assistant_model is not None or self.use_mtp or self.prompt_lookup_num_tokens is not None
                    or self.assistant_early_exit is not None)
        for wanted, new_mode, what in ((assisted, GenerationMode.ASSISTED_GENERATION, "assisted decoding"),
                                       (self.dola_layers is not None, GenerationMode.DOLA_GENERATION, "DoLa")):
            if not wanted:
                continue
            if mode in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
                mode = new_mode
            else:
                warnings.warn(f"{what} works with greedy decoding and sampling only; {mode.value} ignores it.",
                              UserWarning, stacklevel=2)
        return mode

    # -- checking ---------------------------------------------------------------------------------------------

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None) -> None:
        """Raise a ValueError naming the first option whose value is impossible (unset options are fine).

        With `strict=True`, options that the chosen strategy would ignore raise too. With `user_set_attributes`,
        those among them that the strategy would ignore are warned about, as the reference does.
        """
        for option in OPTIONS:
            value = getattr(self, option.name)
            if not option.is_possible(value):
                raise ValueError(f"{option.name} must be {option.expected}, got {value!r}.")
        if self.watermarking_config is not None:
            self.watermarking_config.validate()
        for name in _GENERATE_ARGUMENTS:
            if name in self.extra:
                raise ValueError(f"{name} is an argument of generate(), not a GenerationConfig option: pass it to "
                                 "generate() (or the pipeline) directly.")
        _check_return_sequences(self)
        _check_forced_tokens_are_not_suppressed(self)
        if strict:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                try:
                    _warn_about_ignored_options(self, self.set_options(), stacklevel=2)
                except UserWarning as warning:
                    raise ValueError(f"GenerationConfig is invalid: {warning}") from None
        elif user_set_attributes:
            _warn_about_ignored_options(self, set(user_set_attributes), stacklevel=3)

    def check_combination(self) -> None:
        """Raise a ValueError for options that cannot go together (called on a resolved config)."""
        _check_return_sequences(self)
        if self.do_sample and self.temperature == 0:
            raise ValueError(
                "temperature=0 with do_sample=True is impossible; for greedy decoding pass do_sample=False."
            )


def _check_return_sequences(config: GenerationConfig) -> None:
    """Several return sequences need sampling or enough beams (unset options count as their defaults)."""
    sequences = config.num_return_sequences or 1
    beams = config.num_beams or 1
    if sequences > 1 and beams == 1 and not config.do_sample:
        raise ValueError(
            f"num_return_sequences={sequences} needs several different sequences, but greedy decoding gives only "
            "one: pass do_sample=True, or num_beams >= num_return_sequences."
        )
    if beams > 1 and sequences > beams:
        raise ValueError(
            f"num_return_sequences ({sequences}) cannot exceed num_beams ({beams}): beam search returns at most its "
            "beams."
        )


def _check_forced_tokens_are_not_suppressed(config: GenerationConfig) -> None:
    """Forcing only suppressed tokens leaves every score at -inf, and sampling then fails on NaN."""
    if config.suppress_tokens is None:
        return
    suppressed = {config.suppress_tokens} if is_int(config.suppress_tokens) else set(config.suppress_tokens)
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        forced = getattr(config, name)
        if forced is None:
            continue
        forced = {forced} if is_int(forced) else set(forced)
        if forced and forced <= suppressed:
            raise ValueError(
                f"Every token of {name} ({sorted(forced)}) is also in suppress_tokens, so nothing could be generated "
                f"where it is forced: remove them from one of the two (to delay an EOS, use min_new_tokens)."
            )
_WHERE_TO_FIND = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder", "proxies",
                  "_from_auto", "_from_pipeline")


def _without_unset_metadata(values: dict) -> dict:
    """Drop `_commit_hash` (the reference drops it too) and metadata left at None, which is no information."""
    return {key: value for key, value in values.items()
            if key != "_commit_hash" and not (key in _METADATA and value is None)}


def _watermarking_config(value):
    """A watermarking config from its dict (a saved file), as the reference tells the two kinds apart."""
    if isinstance(value, dict):
        from .watermarking import config_from_dict

        return config_from_dict(value)
    return value


def _serializable(value):
    """Objects with a `to_dict` (watermarking and compile configs) as their dicts, for JSON."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def _string_keys(value):
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_string_keys(v) for v in value]
    return value


# Arguments of generate() itself, which a GenerationConfig must not hold (the reference refuses them too).
_GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus",
                       "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask")

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
    if config.return_dict_in_generate is not True:
        flags = [name for name in _EXTRA_OUTPUTS if name in chosen and getattr(config, name) is True]
        if flags:
            warnings.warn(f"return_dict_in_generate is not True, so {', '.join(flags)} has no effect: pass "
                          "return_dict_in_generate=True to get them.", UserWarning, stacklevel=stacklevel)
    if config.use_cache is False:
        names = [name for name in ("cache_implementation", "cache_config") if name in chosen
                 and getattr(config, name) is not None]
        if names:
            warnings.warn(f"use_cache is False, so {', '.join(names)} has no effect.", UserWarning,
                          stacklevel=stacklevel)
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
    # Nobody asked for a length: the reference's 5.x default is 20 NEW tokens, not 20 tokens in total.
    sources = [kwargs] + [vars(c) for c in (passed, model_config) if c is not None]
    if config.max_new_tokens is None and all(source.get("max_length") is None for source in sources):
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    config.check_combination()
    _refuse_hub_only_strategies(config)
    _warn_about_ignored_options(config, set(kwargs) - set(unknown), stacklevel=stacklevel)
    return config, unknown


# Strategies the reference no longer ships: it runs them only from these Hub repositories, as remote code.
_HUB_ONLY_STRATEGIES = {
    GenerationMode.DOLA_GENERATION: "transformers-community/dola",
    GenerationMode.CONTRASTIVE_SEARCH: "transformers-community/contrastive-search",
    GenerationMode.GROUP_BEAM_SEARCH: "transformers-community/group-beam-search",
    GenerationMode.CONSTRAINED_BEAM_SEARCH: "transformers-community/constrained-beam-search",
}


def _refuse_hub_only_strategies(config: GenerationConfig) -> None:
    """Raise, as the reference does without trust_remote_code, for strategies it moved to the Hub."""
    mode = config.get_generation_mode()
    if mode in _HUB_ONLY_STRATEGIES:
        name = mode.name.replace("_", " ").title()
        raise ValueError(
            f"{name} (asked for by num_beam_groups, penalty_alpha, dola_layers, constraints or force_words_ids) "
            f"is no longer part of transformers: it lives in https://hf.co/{_HUB_ONLY_STRATEGIES[mode]} as remote "
            "code, which openformers does not run. Leave those options out to use greedy, sampling or beam search."
        )

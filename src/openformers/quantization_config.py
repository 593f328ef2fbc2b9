"""The reference's `BitsAndBytesConfig`, answered with openformers' own weight quantization.

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map="auto")

The class takes the reference's keywords, defaults, type checks and serialization (`to_dict`, `to_json_string`,
`from_dict`, `is_quantizable`, `quantization_method`); `from_pretrained(quantization_config=...)` takes it, or the
same as a dict, and loads through `quantization=` (`quantized_load`): load_in_4bit is "int4", load_in_8bit "int8".
No bitsandbytes is needed or used, so the weights are not bitsandbytes' either:

- 4-bit is openformers' int4: asymmetric groups of 32 weights, a float16 step and minimum each (llama.cpp's Q4_1),
  whatever bnb_4bit_quant_type says ("fp4" or "nf4"); bnb_4bit_use_double_quant and bnb_4bit_quant_storage only
  change how bitsandbytes stores its constants and steps, and are accepted without effect.
- 8-bit is openformers' int8: a scale per 32 weights (llama.cpp's Q8_0), which bounds an outlier's damage to its own
  block; LLM.int8()'s split of outlier features at llm_int8_threshold does not apply, so a threshold other than the
  default 6.0 is refused, as is llm_int8_has_fp16_weight=True (the packed weights are frozen: there are no 16-bit
  weights to train).
- bnb_4bit_compute_dtype: quantized products run in the model's dtype, so a compute dtype other than float32 (the
  default) becomes the model's dtype when from_pretrained is given no dtype; given both, dtype wins, with a warning.
- The language-model head is packed too (at int8 under int4), where bitsandbytes leaves it in floating point;
  llm_int8_skip_modules, when given, names the linear layers left in floating point (in 4-bit as in 8-bit), matched
  as the reference matches them: a pattern that matches a module's name from its start to a boundary between
  names (as a regular expression), or that ends it.
- llm_int8_enable_fp32_cpu_offload concerns models split between a GPU and the CPU; openformers places a model on
  one device, so it changes nothing.
"""

import copy
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch

QUANT_METHOD = "bitsandbytes"
_STORAGE_DTYPES = ("float16", "float32", "int8", "uint8", "float64", "bfloat16")
_QUANT_TYPES = ("fp4", "nf4")
# Keys of the reference's to_dict beyond the keyword arguments, which from_dict is given back.
_SERIALIZED_ONLY = {"quant_method", "_load_in_4bit", "_load_in_8bit"}


class BitsAndBytesConfig:
    """The reference's bitsandbytes options, with its defaults: load_in_8bit=False, load_in_4bit=False (at most one
    of them), llm_int8_threshold=6.0, llm_int8_skip_modules=None, llm_int8_enable_fp32_cpu_offload=False,
    llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=None (float32), bnb_4bit_quant_type="fp4" (or "nf4"),
    bnb_4bit_use_double_quant=False, bnb_4bit_quant_storage=None (uint8). Dtypes may be given by name.

    from_pretrained(quantization_config=...) loads with openformers' int4 or int8 in place of bitsandbytes' NF4/FP4
    or LLM.int8(): see this module's docstring for what differs, what is accepted without effect and what is
    refused."""

    quant_method = QUANT_METHOD

    def __init__(self, load_in_8bit: bool = False, load_in_4bit: bool = False, llm_int8_threshold: float = 6.0,
                 llm_int8_skip_modules: list[str] | None = None, llm_int8_enable_fp32_cpu_offload: bool = False,
                 llm_int8_has_fp16_weight: bool = False, bnb_4bit_compute_dtype: torch.dtype | str | None = None,
                 bnb_4bit_quant_type: str = "fp4", bnb_4bit_use_double_quant: bool = False,
                 bnb_4bit_quant_storage: torch.dtype | str | None = None, **kwargs):
        _check_flags(load_in_8bit, load_in_4bit)
        self._load_in_8bit, self._load_in_4bit = load_in_8bit, load_in_4bit
        self.llm_int8_threshold = llm_int8_threshold
        self.llm_int8_skip_modules = llm_int8_skip_modules
        self.llm_int8_enable_fp32_cpu_offload = llm_int8_enable_fp32_cpu_offload
        self.llm_int8_has_fp16_weight = llm_int8_has_fp16_weight
        self.bnb_4bit_quant_type = bnb_4bit_quant_type
        self.bnb_4bit_use_double_quant = bnb_4bit_use_double_quant
        self.bnb_4bit_compute_dtype = _dtype("bnb_4bit_compute_dtype", bnb_4bit_compute_dtype, torch.float32)
        self.bnb_4bit_quant_storage = _dtype("bnb_4bit_quant_storage", bnb_4bit_quant_storage, torch.uint8,
                                             _STORAGE_DTYPES)
        unknown = sorted(set(kwargs) - _SERIALIZED_ONLY)
        if unknown:  # the reference logs and drops them; a misspelt option should not pass unseen
            warnings.warn(f"BitsAndBytesConfig ignores {unknown}: they are none of its options.", stacklevel=2)
        self.post_init()

    @property
    def load_in_4bit(self) -> bool:
        return self._load_in_4bit

    @load_in_4bit.setter
    def load_in_4bit(self, value: bool) -> None:
        _check_flags(self._load_in_8bit, value)
        self._load_in_4bit = value

    @property
    def load_in_8bit(self) -> bool:
        return self._load_in_8bit

    @load_in_8bit.setter
    def load_in_8bit(self, value: bool) -> None:
        _check_flags(value, self._load_in_4bit)
        self._load_in_8bit = value

    def post_init(self) -> None:
        """Check every field's type (the reference's checks, with the value named), and the 4-bit type."""
        for name in ("load_in_4bit", "load_in_8bit", "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight",
                     "bnb_4bit_use_double_quant"):
            _require(name, getattr(self, name), isinstance(getattr(self, name), bool), "True or False")
        _require("llm_int8_threshold", self.llm_int8_threshold, isinstance(self.llm_int8_threshold, float),
                 "a float")
        skip = self.llm_int8_skip_modules
        _require("llm_int8_skip_modules", skip,
                 skip is None or isinstance(skip, list) and all(isinstance(s, str) for s in skip),
                 "None or a list of module names")
        for name in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            _require(name, getattr(self, name), isinstance(getattr(self, name), torch.dtype), "a torch.dtype")
        _require("bnb_4bit_quant_type", self.bnb_4bit_quant_type, isinstance(self.bnb_4bit_quant_type, str),
                 "a string")
        if self.bnb_4bit_quant_type not in _QUANT_TYPES:
            raise ValueError(f"BitsAndBytesConfig: bnb_4bit_quant_type must be 'fp4' or 'nf4', got "
                             f"{self.bnb_4bit_quant_type!r}.")

    def is_quantizable(self) -> bool:
        """Whether this config asks for quantized weights (load_in_8bit or load_in_4bit)."""
        return self.load_in_8bit or self.load_in_4bit

    def quantization_method(self) -> str | None:
        """The reference's name of the method asked for: "llm_int8", "fp4", "nf4", or None when neither flag is set."""
        if self.load_in_8bit:
            return "llm_int8"
        return self.bnb_4bit_quant_type if self.load_in_4bit else None

    def to_dict(self) -> dict[str, Any]:
        """The reference's dict: every field, both flags also under their stored names, dtypes by name."""
        return {
            "quant_method": self.quant_method, "_load_in_8bit": self._load_in_8bit,
            "_load_in_4bit": self._load_in_4bit, "llm_int8_threshold": self.llm_int8_threshold,
            "llm_int8_skip_modules": copy.deepcopy(self.llm_int8_skip_modules),
            "llm_int8_enable_fp32_cpu_offload": self.llm_int8_enable_fp32_cpu_offload,
            "llm_int8_has_fp16_weight": self.llm_int8_has_fp16_weight, "bnb_4bit_quant_type": self.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": self.bnb_4bit_use_double_quant,
            "bnb_4bit_compute_dtype": str(self.bnb_4bit_compute_dtype).removeprefix("torch."),
            "bnb_4bit_quant_storage": str(self.bnb_4bit_quant_storage).removeprefix("torch."),
            "load_in_4bit": self.load_in_4bit, "load_in_8bit": self.load_in_8bit,
        }

    def to_diff_dict(self) -> dict[str, Any]:
        """The entries of to_dict that differ from a default BitsAndBytesConfig's."""
        default = BitsAndBytesConfig().to_dict()
        return {key: value for key, value in self.to_dict().items() if value != default[key]}

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        with open(json_file_path, "w", encoding="utf-8") as file:
            file.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, config_dict: dict, return_unused_kwargs: bool = False, **kwargs):
        """The config that `config_dict` (a to_dict, or keyword arguments as a dict) describes; `kwargs` that name
        its attributes are set on it, and with return_unused_kwargs the others are returned beside it."""
        config = cls(**config_dict)
        unused = config.update(**kwargs)
        return (config, unused) if return_unused_kwargs else config

    def update(self, **kwargs) -> dict[str, Any]:
        """Set the attributes named in `kwargs` (checked again); return the entries that name none."""
        for key, value in kwargs.items():
            if hasattr(self, key):
                setattr(self, key, value)
        self.post_init()
        return {key: value for key, value in kwargs.items() if not hasattr(self, key)}

    def __iter__(self):
        """dict(config): the stored fields, as the reference's (the flags under their stored names, dtypes as such)."""
        fields = self.to_dict()
        del fields["load_in_4bit"], fields["load_in_8bit"]
        yield from (fields | {"bnb_4bit_compute_dtype": self.bnb_4bit_compute_dtype,
                              "bnb_4bit_quant_storage": self.bnb_4bit_quant_storage}).items()

    def __eq__(self, other) -> bool:
        return isinstance(other, BitsAndBytesConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, sort_keys=True)}\n"


def _check_flags(load_in_8bit, load_in_4bit) -> None:
    for name, value in (("load_in_8bit", load_in_8bit), ("load_in_4bit", load_in_4bit)):
        _require(name, value, isinstance(value, bool), "True or False")
    if load_in_8bit and load_in_4bit:
        raise ValueError("BitsAndBytesConfig: load_in_4bit and load_in_8bit are both True; set at most one of them.")


def _require(name: str, value, holds: bool, expected: str) -> None:
    if not holds:
        raise TypeError(f"BitsAndBytesConfig: {name} must be {expected}, got {value!r}.")


def _dtype(name: str, value, default: torch.dtype, names: tuple[str, ...] | None = None) -> torch.dtype:
    """A dtype argument: None (the default), a torch.dtype, or its name (one of `names` when given)."""
    if value is None:
        return default
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        found = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(found, torch.dtype) and (names is None or str(found).removeprefix("torch.") in names):
            return found
    expected = f"one of {', '.join(map(repr, names))}" if names else "the name of a torch dtype"
    raise ValueError(f"BitsAndBytesConfig: {name} must be None, a torch.dtype or {expected}; got {value!r}.")


@dataclass(frozen=True)
class QuantizedLoad:
    """What from_pretrained does for a quantization_config: quantization= (`quantization`), the patterns of the
    linear layers left in floating point (`keep`) and the dtype the compute dtype asks of the model (None: none)."""

    quantization: str
    keep: tuple[str, ...] = ()
    dtype: torch.dtype | None = None


def quantized_load(quantization_config) -> QuantizedLoad:
    """from_pretrained's `quantization_config` (a BitsAndBytesConfig, its dict, or another object with the
    reference's `to_dict`: transformers' own BitsAndBytesConfig) as openformers' quantization; refuses other
    methods, a config that asks for no quantization, and the options whose meaning int8 and int4 cannot keep."""
    config = _bitsandbytes_config(quantization_config)
    if not config.is_quantizable():
        raise ValueError("quantization_config sets neither load_in_4bit nor load_in_8bit: set one of them, or leave "
                         "quantization_config out to load the checkpoint's weights.")
    if config.load_in_8bit and config.llm_int8_threshold != 6.0:
        raise ValueError(
            f"quantization_config: llm_int8_threshold={config.llm_int8_threshold} is refused: openformers' int8 keeps "
            "a scale per 32 weights and splits no outlier features out of the product, so no threshold applies. "
            "Leave it at its default (6.0).")
    if config.load_in_8bit and config.llm_int8_has_fp16_weight:
        raise ValueError(
            "quantization_config: llm_int8_has_fp16_weight=True is refused: openformers' int8 weights are packed and "
            "frozen, with no 16-bit copy to train. Train adapters on them (QLoRA), or load without quantization.")
    dtype = config.bnb_4bit_compute_dtype if config.load_in_4bit else torch.float32
    return QuantizedLoad("int4" if config.load_in_4bit else "int8", tuple(config.llm_int8_skip_modules or ()),
                         None if dtype == torch.float32 else dtype)


def _bitsandbytes_config(value) -> BitsAndBytesConfig:
    if isinstance(value, BitsAndBytesConfig):
        return value
    if not isinstance(value, dict) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f"quantization_config must be a BitsAndBytesConfig or its dict, got {type(value).__name__}.")
    method = str(getattr(value.get("quant_method"), "value", value.get("quant_method") or QUANT_METHOD))
    if method != QUANT_METHOD:
        raise ValueError(
            f"quantization_config asks for quant_method {method!r}; openformers quantizes at load with "
            "BitsAndBytesConfig's options only (load_in_4bit, load_in_8bit), as its own int4 and int8.")
    return BitsAndBytesConfig.from_dict(value)


def is_kept(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether module `name` is one that llm_int8_skip_modules' `patterns` leave unquantized: a pattern matches it
    from its start up to a boundary between names, as a regular expression ("model.layers.1" matches
    "model.layers.1.mlp.up_proj", not "model.layers.11..."; "model.layers.*.mlp" matches the MLPs), or ends it
    ("lm_head", "down_proj")."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    return any(re.match(f"(?:{pattern}){boundary}", name) or name.endswith(pattern) for pattern in patterns)

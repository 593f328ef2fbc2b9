"""Model configs: read and write `config.json`, pick the class by `model_type`, build one from GGUF metadata.

A config is a typed dataclass per family, registered under its `model_type` in `CONFIG_CLASSES`; a family
that loads from GGUF files registers in `GGUF_CONFIG_READERS` the reader its model file holds (adding a
family: see models/auto.py). Keys a family does not use are kept in `extra`, so a config.json read and
written back keeps everything it had; `config.some_key` reads them too.
`PreTrainedConfig` (transformers 5's name; `PretrainedConfig` is the same class) is also the base of a
user's own config: a subclass with its own `__init__(self, ..., **kwargs)` that sets its attributes and
calls `super().__init__(**kwargs)` saves them to config.json and reads them back.
"""

import contextlib
import copy
import inspect
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

# Rope variants models/layers.py implements; a config asking for another one is refused when read.
ROPE_TYPES = ("default", "dynamic", "linear", "llama3", "longrope", "yarn")
# How a sequence-classification head turns labels into a loss (None: chosen from num_labels and the labels' dtype).
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# How attention is computed: "sdpa" (torch's fused kernel) or "eager" (explicit softmax, the weights can be returned).
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
# Fields that steer a forward call rather than describe the model: written to config.json only when changed.
_RUNTIME_DEFAULTS = {"output_hidden_states": False, "output_attentions": False, "return_dict": True}


class _ConfigType(type):
    """Lets every config class take the keyword arguments the reference's take.

    Keys that are not fields of a family's dataclass (`use_cache=False`, a future config.json key) go to
    `extra` instead of failing; `torch_dtype` is the older name of `dtype`; `attn_implementation` sets
    `config._attn_implementation`. A class whose own `__init__` takes `**kwargs` (a user's subclass)
    gets them all, as written.
    """

    def __call__(cls, *args, **kwargs):
        if "torch_dtype" in kwargs:
            torch_dtype = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", torch_dtype)
        attn_implementation = kwargs.pop("attn_implementation", None)
        parameters = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            unknown = {name: kwargs.pop(name) for name in list(kwargs) if name not in parameters}
            if unknown:
                kwargs["extra"] = {**(kwargs.get("extra") or {}), **unknown}
        config = super().__call__(*args, **kwargs)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return config


@dataclass
class PretrainedConfig(metaclass=_ConfigType):
    """What every family shares: special token ids, tied embeddings, the dtype, the labels of a classification
    head, what a forward call returns by default, and the keys it does not know.

    `num_labels` is derived: from `id2label` when that is given, else 2. Passing a different `num_labels`
    (`from_pretrained(..., num_labels=3)`, or setting `config.num_labels = 3`) replaces the label names with
    LABEL_0, LABEL_1... Like the reference, config.json stores `id2label` and `label2id` but not `num_labels`.
    """

    model_type: ClassVar[str] = ""

    architectures: list[str] | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    dtype: str | None = None  # "float32", "bfloat16"...; config.json says `torch_dtype` before transformers 5
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    # What forward() returns when its call does not say (output_hidden_states=..., return_dict=...).
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __init__(self, **kwargs):
        """Used by subclasses that are not dataclasses (a user's own config); the families have generated ones.

        Every field takes its default unless given. So do the attributes a subclass declares with a default
        (`hidden: int = 4`, transformers 5's way), unless its own __init__ has set them already. Other keys are
        kept like unknown config.json keys.
        """
        extra = dict(kwargs.pop("extra", None) or {})
        for f in fields(PretrainedConfig):
            if f.name == "extra":
                continue
            default = f.default_factory() if f.default is MISSING else f.default
            setattr(self, f.name, kwargs.pop(f.name, default))
        for name, default in _declared_attributes(type(self)).items():
            if name not in self.__dict__:
                setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        kwargs.pop("model_type", None)
        self.extra = {**extra, **kwargs}
        self.__post_init__()

    def __post_init__(self):
        if self.dtype is not None and not isinstance(self.dtype, str):
            self.dtype = str(self.dtype).removeprefix("torch.")  # a torch.dtype, stored by its name
        self._derive_labels()
        self.validate()
        self.__dict__["_initialized"] = True

    def __setattr__(self, name: str, value) -> None:
        initialized = self.__dict__.get("_initialized", False)
        if initialized and name == "id2label" and value is not None:
            value = {int(i): label for i, label in value.items()}
            object.__setattr__(self, "num_labels", len(value))
        object.__setattr__(self, name, value)
        if initialized and name == "num_labels" and value != len(self.id2label or {}):
            self._relabel(value)

    def _relabel(self, num_labels: int) -> None:
        if not _positive_int(num_labels):
            _invalid("num_labels", num_labels, "a positive integer")
        self.__dict__["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
        self.__dict__["label2id"] = {label: i for i, label in self.id2label.items()}

    def _derive_labels(self) -> None:
        if self.num_labels is not None and not _positive_int(self.num_labels):
            _invalid("num_labels", self.num_labels, "a positive integer")
        if self.id2label is not None:
            if not isinstance(self.id2label, dict) or not all(str(i).lstrip("-").isdigit() for i in self.id2label):
                _invalid("id2label", self.id2label, "an object mapping label ids to names")
            self.id2label = {int(i): label for i, label in self.id2label.items()}  # JSON keys are strings
        if self.label2id is not None and (not isinstance(self.label2id, dict)
                                          or not all(_positive_int(i) or i == 0 for i in self.label2id.values())):
            _invalid("label2id", self.label2id, "an object mapping label names to ids")
        if self.num_labels is None:
            self.num_labels = len(self.id2label) if self.id2label else 2
        if self.id2label is None or sorted(self.id2label) != list(range(self.num_labels)):
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.label2id is None or sorted(self.label2id.values()) != list(range(self.num_labels)):
            self.label2id = {label: i for i, label in self.id2label.items()}
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            _invalid("problem_type", self.problem_type, f"None or one of {', '.join(PROBLEM_TYPES)}")

    def validate(self) -> None:
        """Raise a ValueError naming the field and its value when a value makes no sense."""

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: answer from the keys kept as they were read.
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- the reference's attributes that are not config.json keys ----------------------------------------------

    @property
    def _attn_implementation(self) -> str | None:
        """"eager" or "sdpa" as chosen with from_pretrained(..., attn_implementation=...); None: the default (sdpa)."""
        return self.__dict__.get("_attn_implementation_internal")

    @_attn_implementation.setter
    def _attn_implementation(self, value: str | None) -> None:
        if value is not None and value not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation={value!r} is not available; openformers implements "
                f"{', '.join(repr(name) for name in ATTENTION_IMPLEMENTATIONS)} (sdpa is the default)."
            )
        self.__dict__["_attn_implementation_internal"] = value

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    @property
    def name_or_path(self) -> str:
        return self.__dict__.get("_name_or_path", "")

    @name_or_path.setter
    def name_or_path(self, value) -> None:
        self.__dict__["_name_or_path"] = str(value)

    def get_text_config(self, decoder: bool | None = None) -> "PretrainedConfig":
        """The config of the text model: the config itself (no family here has sub-configs)."""
        return self

    def update(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def update_from_string(self, update_str: str) -> None:
        """Set existing fields from "n_embd=10,resid_pdrop=0.2,scale_attn_weights=false" (run_clm.py's
        --config_overrides): each value is read as the type the field holds now (bool, int, float, else text)."""
        for item in update_str.split(","):
            name, equals, text = item.partition("=")
            if not equals or not hasattr(self, name):
                raise ValueError(f"update_from_string: {item!r} must be name=value for a field the config has "
                                 f"({type(self).__name__}).")
            old = getattr(self, name)
            if isinstance(old, bool):
                if text.lower() not in ("true", "1", "y", "yes", "false", "0", "n", "no"):
                    raise ValueError(f"update_from_string: {name}={text!r} is no boolean (true/false, yes/no, 1/0).")
                value = text.lower() in ("true", "1", "y", "yes")
            elif isinstance(old, (int, float)):
                try:
                    value = type(old)(text)
                except ValueError:
                    raise ValueError(f"update_from_string: {name}={text!r} is no {type(old).__name__}.") from None
            elif isinstance(old, str):
                value = text
            else:
                raise TypeError(f"update_from_string sets bool, int, float and str fields only; {name} holds "
                                f"{type(old).__name__} {old!r}.")
            setattr(self, name, value)

    # -- reading ---------------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides) -> "PretrainedConfig":
        values = {**values, **overrides}
        if "dtype" not in values and "torch_dtype" in values:
            values["dtype"] = values.pop("torch_dtype")
        values.pop("torch_dtype", None)
        values = cls._from_file_layout(values)
        values.pop("model_type", None)
        return cls(**values)

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn keys that config.json spells differently from our fields into our fields."""
        return values

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides) -> "PretrainedConfig":
        return cls.from_dict(_read_json(Path(path)), **overrides)

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
        **overrides,
    ) -> "PretrainedConfig":
        """The config of a model folder, GGUF file or Hub id: as this class, or (called on the base class) as the
        class its model_type names. Keyword arguments override its values."""
        from .hub import resolve

        files = resolve(name_or_path, gguf_file=gguf_file, revision=revision, cache_dir=cache_dir,
                        local_files_only=local_files_only, token=token)
        if files.gguf_file is not None:
            from .weights import GGUFFile

            config = config_from_gguf(GGUFFile(files.gguf_file), **overrides)
        else:
            config = read_config(files.folder, config_class=None if cls is PretrainedConfig else cls, **overrides)
        config.name_or_path = name_or_path
        return config

    # -- writing ---------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "num_labels")}
        for name, default in _RUNTIME_DEFAULTS.items():
            if values[name] == default:
                del values[name]
        # Attributes a user's subclass (or code after loading) set that are not fields: saved like the fields.
        attributes = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k not in values
                      and k not in ("extra", "num_labels") and k not in _RUNTIME_DEFAULTS}
        values = {**self.extra, **attributes, **values, "model_type": self.model_type}
        values["id2label"] = {str(i): label for i, label in self.id2label.items()}
        return copy.deepcopy(dict(sorted(values.items())))

    def to_diff_dict(self) -> dict[str, Any]:
        """The values that differ from this class's defaults (model_type always), as the reference writes them."""
        defaults = type(self)().to_dict()
        return {k: v for k, v in self.to_dict().items() if k == "model_type" or k not in defaults or defaults[k] != v}

    def to_json_string(self, use_diff: bool = False) -> str:
        values = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(_tagged_floats(values), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def to_json_file(self, path: str | os.PathLike, use_diff: bool = False) -> None:
        Path(path).write_text(self.to_json_string(use_diff), encoding="utf-8")

    def save_pretrained(
        self, folder: str | os.PathLike, push_to_hub: bool = False, *, repo_id: str | None = None,
        commit_message: str | None = None, private: bool | None = None, token: str | bool | None = None,
    ) -> None:
        """Write config.json to `folder`; push_to_hub=True then uploads the folder to the Hub repository `repo_id`
        (default: the folder's name) through huggingface_hub, as the reference does."""
        api = hub_api() if push_to_hub else None  # refused offline before anything is written
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(self.to_json_string(), encoding="utf-8")
        if push_to_hub:
            upload_folder(api, folder, repo_id or folder.absolute().name, commit_message or "Upload config", private,
                          token)

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload config", private: bool | None = None,
                    token: str | bool | None = None):
        """Upload config.json to the Hub repository `repo_id`, created if needed."""
        api = hub_api()
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return upload_folder(api, Path(folder), repo_id, commit_message, private, token)


def hub_api():
    """huggingface_hub's HfApi, for push_to_hub; refused with HF_HUB_OFFLINE set."""
    from .hub import is_offline

    if is_offline():
        raise RuntimeError(
            "push_to_hub needs the network, but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it to upload, "
            "or save_pretrained(folder) now and upload the folder later."
        )
    try:
        from huggingface_hub import HfApi
    except ImportError as error:
        raise ImportError("push_to_hub needs huggingface_hub: pip install huggingface_hub.") from error
    return HfApi()


def upload_folder(api, folder: Path, repo_id: str, commit_message: str, private: bool | None, token):
    """Create the Hub repository `repo_id` (or find it) and upload `folder` to it."""
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, token=token)


# transformers 5 spells it PreTrainedConfig; both names are in use.
PreTrainedConfig = PretrainedConfig


def _declared_attributes(cls: type) -> dict[str, Any]:
    """The attributes a user's config subclass declares with a type and a default (not ClassVars), by name."""
    declared = {}
    for klass in reversed(cls.__mro__[: cls.__mro__.index(PretrainedConfig)]):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if name in vars(klass) and "ClassVar" not in str(annotation) and not callable(vars(klass)[name]):
                declared[name] = vars(klass)[name]
    return declared


@dataclass
class LlamaConfig(PretrainedConfig):
    """Llama-style decoders: RMSNorm, rotary positions, grouped-query attention, SwiGLU."""

    model_type: ClassVar[str] = "llama"
    # Family facts that are not config.json keys: Qwen2 puts a bias on q/k/v (but not o) whatever attention_bias says.
    qkv_bias: ClassVar[bool] = False
    sliding_window: ClassVar[int | None] = None  # Mistral and Qwen2 make it a field
    activations: ClassVar[tuple[str, ...]] = ("silu",)  # the values of hidden_act that the family's models compute
    rope_types: ClassVar[tuple[str, ...]] = ROPE_TYPES  # the rope scalings the family's models compute
    rope_alpha: ClassVar[bool] = False  # whether "dynamic" with an `alpha` is a fixed stretch of the base (Hunyuan's)

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as the query heads (no grouping)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and _positive_int(self.num_attention_heads) and _positive_int(self.hidden_size):
            if self.hidden_size % self.num_attention_heads:
                _invalid("hidden_size", self.hidden_size,
                         f"a multiple of num_attention_heads={self.num_attention_heads}, or an explicit head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rope_scaling is not None and "type" in self.rope_scaling and "rope_type" not in self.rope_scaling:
            self.rope_scaling = {"rope_type": self.rope_scaling["type"], **self.rope_scaling}
        _default_original_context(self)
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        _check_key_value_heads(self)
        if self.head_dim % 2:
            _invalid("head_dim", self.head_dim, "an even number (rotary embeddings rotate pairs)")
        if self.hidden_act not in self.activations:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(map(repr, self.activations))} (the family's)")
        _require_positive_numbers(self, "rms_norm_eps", "rope_theta")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.model_rope_scaling(), self.rope_types, self.rope_alpha)

    def model_rope_scaling(self) -> dict[str, Any] | None:
        """rope_scaling as layers.RotaryEmbedding takes it: as the config gives it here (PhiMoE's is read otherwise,
        its model's new_rotary)."""
        return self.rope_scaling

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        # transformers 5 writes `rope_parameters` ({"rope_type", "rope_theta", ...}) instead of the older
        # top-level `rope_theta` and `rope_scaling`.
        parameters = values.pop("rope_parameters", None)
        if isinstance(parameters, dict):
            parameters = dict(parameters)
            if "rope_theta" in parameters:
                values["rope_theta"] = parameters.pop("rope_theta")
            kind = parameters.get("rope_type", parameters.get("type", "default"))
            values["rope_scaling"] = None if kind == "default" else parameters
        return values

    def to_dict(self) -> dict[str, Any]:
        # Written in both layouts, so transformers 4 (rope_theta, rope_scaling) and 5 (rope_parameters) read it.
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


@dataclass
class EuroBertConfig(LlamaConfig):
    """EuroBERT (EuroBERT/EuroBERT-210m): Llama's layers attending both ways, an encoder; its sequence classifier pools
    by `classifier_pooling` ("bos", "mean", or "late": classify every token, then average over the real ones)."""

    model_type: ClassVar[str] = "eurobert"

    vocab_size: int = 128256
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001
    pad_token_id: int | None = 128001
    mask_token_id: int = 128002
    classifier_pooling: str = "late"

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        if self.classifier_pooling not in ("bos", "mean", "late"):
            _invalid("classifier_pooling", self.classifier_pooling, "'bos', 'mean' or 'late'")


@dataclass
class GemmaConfig(LlamaConfig):
    """Gemma (the first generation, and CodeGemma): Llama's decoder with RMSNorms that scale by `1 + weight`,
    embeddings scaled by sqrt(hidden_size), a GELU-tanh gated MLP and the head tied to the embeddings."""

    model_type: ClassVar[str] = "gemma"
    activations: ClassVar[tuple[str, ...]] = ("gelu_pytorch_tanh", "gelu_new")  # GELU's tanh form

    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 16
    head_dim: int | None = 256
    hidden_act: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    attention_dropout: float = 0.0
    use_bidirectional_attention: bool | None = None
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    bos_token_id: int | None = 2
    tie_word_embeddings: bool = True

    def __post_init__(self):
        # The first checkpoints say "gelu" and mean the tanh form, which the reference computes for it.
        if self.hidden_act == "gelu":
            self.hidden_act = "gelu_pytorch_tanh"
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _refuse_bidirectional_attention(self)


@dataclass
class SmolLM3Config(LlamaConfig):
    """SmolLM3: a Llama decoder whose layers marked 0 in `no_rope_layers` (by default every
    `no_rope_layer_interval`-th) attend without rotating their queries and keys, and a head tied to the embeddings.

    The reference's sliding window applies only with `use_sliding_window`, and then to those unrotated layers;
    openformers implements the released checkpoints' full attention on every layer and refuses the window by name.
    """

    model_type: ClassVar[str] = "smollm3"

    vocab_size: int = 128256
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 4
    max_position_embeddings: int = 32768
    rope_theta: float = 2_000_000.0
    attention_dropout: float = 0.0
    use_sliding_window: bool = False
    sliding_window: int | None = None  # (a field here, where Llama's is a class fact)
    no_rope_layers: list[int] | None = None
    no_rope_layer_interval: int = 4
    layer_types: list[str] | None = None
    pad_token_id: int | None = 128004
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.no_rope_layers is None and _positive_int(self.num_hidden_layers) \
                and _positive_int(self.no_rope_layer_interval):
            self.no_rope_layers = [int((i + 1) % self.no_rope_layer_interval != 0)
                                   for i in range(self.num_hidden_layers)]
        if self.layer_types is None and isinstance(self.no_rope_layers, list):
            windowed = self.use_sliding_window and self.sliding_window is not None
            self.layer_types = ["sliding_attention" if windowed and not rotates else "full_attention"
                                for rotates in self.no_rope_layers]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if (not isinstance(self.no_rope_layers, list) or len(self.no_rope_layers) != self.num_hidden_layers
                or any(flag not in (0, 1) for flag in self.no_rope_layers)):
            _invalid("no_rope_layers", self.no_rope_layers,
                     f"a list of num_hidden_layers={self.num_hidden_layers} flags, 1 where a layer rotates, else 0")
        if self.use_sliding_window and self.sliding_window is not None:
            _invalid("use_sliding_window", self.use_sliding_window,
                     "False (openformers implements SmolLM3's full attention on every layer, as its checkpoints use)")


@dataclass
class GraniteConfig(LlamaConfig):
    """IBM Granite (3.0 to 3.3): a Llama decoder with four scalars: `embedding_multiplier` scales the token
    embeddings, `residual_multiplier` each branch's output before its residual add, `attention_multiplier` is the
    attention scores' factor (in place of 1 / sqrt(head_dim)) and the logits are divided by `logits_scaling`."""

    model_type: ClassVar[str] = "granite"

    attention_dropout: float = 0.0
    embedding_multiplier: float = 1.0
    logits_scaling: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float = 1.0

    def validate(self) -> None:
        super().validate()
        _require_positive_numbers(self, "embedding_multiplier", "logits_scaling", "residual_multiplier",
                                  "attention_multiplier")
        _require_probabilities(self, "attention_dropout")


@dataclass
class SeedOssConfig(LlamaConfig):
    """ByteDance's Seed-OSS (Seed-OSS-36B): a Llama decoder with biases on the query, key and value projections
    (`attention_bias`, on by default) and on the output projection only with `attention_out_bias`, and dropout on each
    branch's output before its residual add while training (`residual_dropout`)."""

    model_type: ClassVar[str] = "seed_oss"

    vocab_size: int = 155136
    hidden_size: int = 4096
    intermediate_size: int = 27648
    num_hidden_layers: int = 64
    num_attention_heads: int = 80
    num_key_value_heads: int | None = 8
    head_dim: int | None = 128
    max_position_embeddings: int = 524288
    attention_bias: bool = True
    attention_out_bias: bool = False
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2

    def validate(self) -> None:
        super().validate()
        _require_bools(self, "attention_bias", "attention_out_bias", "mlp_bias")
        _require_probabilities(self, "attention_dropout", "residual_dropout")


@dataclass
class ArceeConfig(LlamaConfig):
    """Arcee's AFM (AFM-4.5B): a Llama decoder whose MLP has no gate: up_proj, a squared ReLU (`relu2`), down_proj."""

    model_type: ClassVar[str] = "arcee"
    activations: ClassVar[tuple[str, ...]] = ("relu2", "relu", "silu", "gelu")

    hidden_size: int = 2560
    intermediate_size: int = 18432
    hidden_act: str = "relu2"
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")


@dataclass
class HeliumConfig(LlamaConfig):
    """Kyutai's Helium (helium-1-2b): a Llama decoder whose rotary embeddings turn interleaved pairs (2i, 2i + 1), whose
    RMSNorms scale by their weight before casting back (as OLMo 2's) and whose attention output projection has no
    bias whatever attention_bias says (that one is q/k/v's only). Its o_proj maps hidden_size to hidden_size, so the
    heads must fill it: num_attention_heads * head_dim == hidden_size."""

    model_type: ClassVar[str] = "helium"

    vocab_size: int = 48000
    hidden_size: int = 2560
    intermediate_size: int = 7040
    num_hidden_layers: int = 24
    num_attention_heads: int = 20
    num_key_value_heads: int | None = 20
    head_dim: int | None = 128
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-8
    rope_theta: float = 100000.0
    attention_dropout: float = 0.0
    pad_token_id: int | None = 3
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def validate(self) -> None:
        super().validate()
        _require_heads_filling_hidden(self, "Helium's o_proj maps hidden_size to hidden_size")
        _require_probabilities(self, "attention_dropout")


@dataclass
class BitNetConfig(LlamaConfig):
    """Microsoft's BitNet b1.58 (bitnet-b1.58-2B-4T, its -bf16 variant): a Llama decoder with an RMSNorm before each
    output projection (attn_sub_norm before o_proj, ffn_sub_norm before down_proj), a gated squared-ReLU MLP without
    biases, and, with `quantization_config` (the reference's BitNetQuantConfig as a dict, quant_method "bitnet"), the
    layers' linear maps ternary with 8-bit activations (models/bitnet.py). Without it the layers are float linear
    maps, as the reference builds them. The heads must fill the hidden size (attn_sub_norm normalizes the attention's
    output over hidden_size)."""

    model_type: ClassVar[str] = "bitnet"
    activations: ClassVar[tuple[str, ...]] = ("relu2", "relu", "silu", "gelu")

    vocab_size: int = 128256
    hidden_size: int = 2560
    intermediate_size: int = 6912
    num_hidden_layers: int = 30
    num_attention_heads: int = 20
    num_key_value_heads: int | None = 5
    hidden_act: str = "relu2"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    attention_dropout: float = 0.0
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001
    quantization_config: dict[str, Any] | None = None

    def bit_linear_settings(self) -> dict[str, Any] | None:
        """quantization_config with BitNetQuantConfig's defaults filled in, or None: float linear maps."""
        if self.quantization_config is None:
            return None
        return {**BITNET_QUANTIZATION_DEFAULTS, **self.quantization_config}

    def validate(self) -> None:
        super().validate()
        _require_heads_filling_hidden(self, "BitNet's attn_sub_norm normalizes the heads' output over hidden_size")
        _require_probabilities(self, "attention_dropout")
        if self.mlp_bias:
            _invalid("mlp_bias", self.mlp_bias, "False (BitNet's MLP has no biases)")
        q = self.quantization_config
        if q is None:
            return
        if not isinstance(q, dict) or q.get("quant_method") != "bitnet":
            _invalid("quantization_config", q, "None, or a dict with quant_method 'bitnet' (the released checkpoints')")
        settings = self.bit_linear_settings()
        for key, allowed in (("linear_class", ("bitlinear", "autobitlinear")), ("quantization_mode", ("offline", "online"))):
            if settings[key] not in allowed:
                _invalid(f"quantization_config.{key}", settings[key], f"one of {', '.join(map(repr, allowed))}")
        if not isinstance(settings["use_rms_norm"], bool):
            _invalid("quantization_config.use_rms_norm", settings["use_rms_norm"], "True or False")
        eps = settings["rms_norm_eps"]
        if settings["use_rms_norm"] and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0):
            _invalid("quantization_config.rms_norm_eps", eps, "a positive number (use_rms_norm is set)")
        if settings["modules_to_not_convert"] is not None:
            _invalid("quantization_config.modules_to_not_convert", settings["modules_to_not_convert"],
                     "None: every linear map of the layers is a BitNet one and the head stays float, the reference's "
                     "choice when it is None")


# The reference's BitNetQuantConfig defaults, for the keys a quantization_config may leave out.
BITNET_QUANTIZATION_DEFAULTS = {"linear_class": "bitlinear", "quantization_mode": "offline", "use_rms_norm": False,
                                "rms_norm_eps": 1e-6, "modules_to_not_convert": None}


@dataclass
class HunYuanDenseV1Config(LlamaConfig):
    """Tencent's Hunyuan dense decoders (Hunyuan-0.5B, 1.8B, 4B and 7B): a Llama decoder whose queries and keys are
    RMS-normed head by head after their rotation, with an MLP without biases. The released configs ask for rope
    scaling "dynamic" with an `alpha`, which the reference computes as a fixed NTK stretch of the base, rope_theta *
    alpha ** (head_dim / (head_dim - 2)), the same at every length; "dynamic" without an alpha (rescaled by the
    sequence's length) is refused by name."""

    model_type: ClassVar[str] = "hunyuan_v1_dense"
    rope_alpha: ClassVar[bool] = True
    mlp_bias: ClassVar[bool] = False  # the reference's MLP has no biases (and no such field)

    vocab_size: int = 290943
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    pad_token_id: int | None = 0
    eod_token_id: int | None = 3

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        scaling = self.rope_scaling or {}
        alpha = scaling.get("alpha")
        if scaling.get("rope_type") == "dynamic" and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                                        or alpha <= 0):
            _invalid("rope_scaling.alpha", alpha, "a positive number: openformers implements Hunyuan's 'dynamic' "
                     "rope scaling with a fixed alpha (its released configs'), not the one rescaled by the length")


@dataclass
class ApertusConfig(LlamaConfig):
    """The Swiss AI Initiative's Apertus (Apertus-8B, 70B, Base and Instruct): a Llama decoder whose queries and keys
    are RMS-normed head by head before their rotation (Qwen3's), whose MLP has no gate and no biases (up_proj, the
    xIELU activation with its learned per-layer parameters, down_proj), with llama3 rope scaling by default."""

    model_type: ClassVar[str] = "apertus"
    activations: ClassVar[tuple[str, ...]] = ("xielu",)
    mlp_bias: ClassVar[bool] = False  # the reference's MLP has no biases (and no such field)

    vocab_size: int = 131072
    intermediate_size: int = 14336
    hidden_act: str = "xielu"
    max_position_embeddings: int = 65536
    rms_norm_eps: float = 1e-5
    rope_theta: float = 12_000_000.0
    rope_scaling: dict[str, Any] | None = field(default_factory=lambda: {
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0})
    attention_dropout: float = 0.0
    pad_token_id: int | None = 3

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")


@dataclass
class GraniteMoeConfig(GraniteConfig):
    """IBM Granite MoE (Granite 3.0 and 3.1 1B-A400M and 3B-A800M, PowerMoE): Granite's decoder and four scalars
    with a sparse mixture of `num_local_experts` SwiGLU experts of `intermediate_size` in place of the MLP, of which
    the router's `num_experts_per_tok` best scores pick the experts per token, their weights the softmax of those
    scores. With `output_router_logits` the causal LM adds `router_aux_loss_coef` times the load-balancing loss."""

    model_type: ClassVar[str] = "granitemoe"
    mlp_bias: ClassVar[bool] = False  # the experts have no biases (the reference has no such field)

    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001

    num_experts = property(lambda self: self.num_local_experts)  # the name the mixtures' heads read

    def validate(self) -> None:
        super().validate()
        _check_experts(self, "num_local_experts")


@dataclass
class GraniteMoeSharedConfig(GraniteMoeConfig):
    """Granite MoE with a shared expert: a SwiGLU MLP of `shared_intermediate_size` that every token runs, its
    output added to the routed experts' (0: none, Granite MoE's layer)."""

    model_type: ClassVar[str] = "granitemoeshared"

    shared_intermediate_size: int = 0

    def validate(self) -> None:
        super().validate()
        size = self.shared_intermediate_size
        if size != 0 and not _positive_int(size):
            _invalid("shared_intermediate_size", size, "a non-negative integer (0: no shared expert)")


@dataclass
class MistralConfig(LlamaConfig):
    """Mistral: a Llama decoder whose attention sees only the last `sliding_window` positions (None: all)."""

    model_type: ClassVar[str] = "mistral"

    intermediate_size: int = 14336
    num_key_value_heads: int | None = 8
    max_position_embeddings: int = 4096 * 32
    sliding_window: int | None = 4096

    def validate(self) -> None:
        super().validate()
        if self.sliding_window is not None and not _positive_int(self.sliding_window):
            _invalid("sliding_window", self.sliding_window, "None or a positive integer")


@dataclass
class Qwen2Config(MistralConfig):
    """Qwen2: a Llama decoder with biases on the query, key and value projections (not the output one).

    Its sliding window applies only when `use_sliding_window` is set, and then to the layers from
    `max_window_layers` on; openformers supports it when it covers every layer or none.
    """

    model_type: ClassVar[str] = "qwen2"
    qkv_bias: ClassVar[bool] = True

    vocab_size: int = 151936
    intermediate_size: int = 22016
    num_key_value_heads: int | None = 32
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    max_window_layers: int = 28

    def __post_init__(self):
        if not self.use_sliding_window or self.max_window_layers >= self.num_hidden_layers:
            self.sliding_window = None  # the reference's rule: no layer is windowed
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.sliding_window is not None and 0 < self.max_window_layers < self.num_hidden_layers:
            raise ValueError(
                f"Unsupported config: use_sliding_window=True with max_window_layers={self.max_window_layers} "
                f"of {self.num_hidden_layers} layers (some layers windowed, others not); openformers supports a "
                "sliding window on every layer (max_window_layers=0) or on none."
            )


# Activations the encoder families implement, by their config.json names.
ENCODER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish")


@dataclass
class BertConfig(PretrainedConfig):
    """BERT-style encoders: learned absolute positions, token types, post-LayerNorm blocks, GELU."""

    model_type: ClassVar[str] = "bert"
    token_types_optional: ClassVar[bool] = False  # whether type_vocab_size may be 0, no token types (GTE's)

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: hidden_dropout_prob
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "absolute"
    is_decoder: bool = False
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "max_position_embeddings")
        if not (_positive_int(self.type_vocab_size) or self.type_vocab_size == 0 and self.token_types_optional):
            _invalid("type_vocab_size", self.type_vocab_size,
                     f"a {'non-negative' if self.token_types_optional else 'positive'} integer")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
                _invalid(name, value, "a probability in [0, 1)")
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"Unsupported config: position_embedding_type={self.position_embedding_type!r}; openformers "
                "implements 'absolute' position embeddings only."
            )
        if self.extra.get("add_cross_attention"):
            raise ValueError(
                "Unsupported config: add_cross_attention=True; openformers runs BERT-style models as encoders, or as "
                "decoders (is_decoder=True) without cross-attention to an encoder."
            )


@dataclass
class RobertaConfig(BertConfig):
    """RoBERTa: BERT's architecture, with positions counted from pad_token_id + 1 and a byte-level BPE vocabulary."""

    model_type: ClassVar[str] = "roberta"

    vocab_size: int = 50265
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2


@dataclass
class ErnieConfig(BertConfig):
    """ERNIE 1.0-3.0 (nghuyong/ernie-3.0-base-zh): BERT's architecture; with `use_task_id` (ERNIE 2.0 and 3.0) a
    table of `task_type_vocab_size` task embeddings is added to the embeddings, by each token's task_type_ids."""

    model_type: ClassVar[str] = "ernie"

    task_type_vocab_size: int = 3
    use_task_id: bool = False

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "task_type_vocab_size")


@dataclass
class GPT2Config(PretrainedConfig):
    """GPT-2: learned absolute positions, pre-LayerNorm blocks, fused q/k/v projection, GELU (tanh)."""

    model_type: ClassVar[str] = "gpt2"

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    add_cross_attention: bool = False
    # The multiple-choice head of GPT2DoubleHeadsModel: which vector sums up a choice, and what follows it.
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    tie_word_embeddings: bool = True

    # The reference's common names for GPT-2's own ones (read-only; config.json keeps the GPT-2 names).
    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    max_position_embeddings = property(lambda self: self.n_positions)

    def validate(self) -> None:
        _check_gpt2_sizes(self)
        _require_bools(self, "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn")
        if self.add_cross_attention:
            raise ValueError(
                "Unsupported config: add_cross_attention=True; openformers implements GPT-2 without cross-attention "
                "(add_cross_attention=False), as the released GPT-2 checkpoints use."
            )


class LayerTypedWindow:
    """The sliding window of a config whose `layer_types` mark each layer "sliding_attention" or "full_attention"
    (Qwen3, Qwen2-MoE): openformers supports a window on every layer or on none, so `attention_window` is the one
    window of every layer (None: the whole past) and validate() refuses a mix."""

    @property
    def attention_window(self) -> int | None:
        """The window every layer attends through (None: the whole past), from sliding_window and layer_types."""
        return self.sliding_window if "sliding_attention" in self.layer_types else None

    def validate(self) -> None:
        super().validate()
        _check_layer_types(self)
        if self.sliding_window is not None and len(set(self.layer_types)) > 1:
            raise ValueError(
                f"Unsupported config: use_sliding_window=True with layer_types={self.layer_types} (some layers "
                "windowed, others not); openformers supports a sliding window on every layer or on none."
            )


@dataclass
class Qwen3Config(LayerTypedWindow, MistralConfig):
    """Qwen3: a Llama decoder with an RMSNorm over each head's queries and keys (before the rotation), and a
    `head_dim` of its own rather than hidden_size // num_attention_heads.

    Its sliding window applies only when `use_sliding_window` is set, and then to the layers `layer_types` marks
    "sliding_attention" (by default those from `max_window_layers` on); openformers supports a window on every
    layer or on none.
    """

    model_type: ClassVar[str] = "qwen3"

    vocab_size: int = 151936
    intermediate_size: int = 22016
    num_key_value_heads: int | None = 32
    head_dim: int | None = 128
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    max_window_layers: int = 28
    layer_types: list[str] | None = None

    def __post_init__(self):
        if not self.use_sliding_window:
            self.sliding_window = None  # the reference's rule: the window is off, whatever layer_types say
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        super().__post_init__()


@dataclass
class MinistralConfig(MistralConfig):
    """Ministral (Ministral-8B-Instruct-2410): Mistral's decoder whose layers each attend through the sliding window
    or to the whole past, as `layer_types` marks them ("sliding_attention" or "full_attention"; by default every layer
    slides when there is a window, none when sliding_window is None). A sliding layer needs a window."""

    model_type: ClassVar[str] = "ministral"

    attention_dropout: float = 0.0
    layer_types: list[str] | None = None

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            kind = "full_attention" if self.sliding_window is None else "sliding_attention"
            self.layer_types = [kind] * self.num_hidden_layers
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        _check_windowed_layers(self)


def _ministral3_rope() -> dict[str, Any]:
    """Ministral 3's rope scaling where config.json gives none: the reference's YaRN default."""
    return {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 16384, "beta_fast": 32.0,
            "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}


@dataclass
class Ministral3Config(MistralConfig):
    """Ministral 3 (mistralai/Ministral-3-3B/8B/14B's text decoder): Mistral's decoder (one window for every layer,
    none by default) whose queries are scaled by position after the rotation, Llama 4's way: by
    1 + llama_4_scaling_beta * ln(1 + floor(position / original_max_position_embeddings)), both read from the YaRN
    rope scaling it always has (`rope_scaling`, transformers 5's rope_parameters)."""

    model_type: ClassVar[str] = "ministral3"

    vocab_size: int = 131072
    intermediate_size: int = 14336
    num_hidden_layers: int = 34
    num_key_value_heads: int | None = 8
    head_dim: int | None = 128
    max_position_embeddings: int = 262144
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1000000.0
    rope_scaling: dict[str, Any] | None = field(default_factory=_ministral3_rope)
    sliding_window: int | None = None
    attention_dropout: float = 0.0
    pad_token_id: int | None = 11

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        scaling = self.rope_scaling or {}
        if scaling.get("rope_type") != "yarn":
            _invalid("rope_scaling", self.rope_scaling, "YaRN rope scaling with llama_4_scaling_beta (Ministral 3 "
                     "scales its queries by position with it, as the reference reads it)")
        beta = scaling.get("llama_4_scaling_beta")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            _invalid("rope_scaling.llama_4_scaling_beta", beta, "a number (the queries' scale by position)")


@dataclass
class Gemma2Config(PretrainedConfig):
    """Gemma 2: `(1 + w)` RMSNorms around attention and MLP, embeddings scaled by sqrt(hidden_size), a GELU-tanh
    gated MLP, tanh soft-capping of attention scores and final logits, and layers alternating between a sliding
    window and full attention (`layer_types`)."""

    model_type: ClassVar[str] = "gemma2"
    qk_norm: ClassVar[bool] = False  # Gemma 3 norms each head's queries and keys
    caps_attention: ClassVar[bool] = True  # whether attn_logit_softcapping is applied (Gemma 3's reference never does)
    # The GELU variants `hidden_activation` may name (Gemma checkpoints say gelu_pytorch_tanh).
    activations: ClassVar[tuple[str, ...]] = ("gelu_pytorch_tanh", "gelu_new", "gelu")

    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    query_pre_attn_scalar: float = 256
    sliding_window: int | None = 4096
    layer_types: list[str] | None = None  # None: sliding, full, sliding, ... (the reference's default)
    final_logit_softcapping: float | None = 30.0
    attn_logit_softcapping: float | None = 50.0
    use_bidirectional_attention: bool | None = None
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    bos_token_id: int | None = 2
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            self.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                for i in range(self.num_hidden_layers)]
        _default_original_context(self)
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        _check_key_value_heads(self)
        if self.head_dim % 2:
            _invalid("head_dim", self.head_dim, "an even number (rotary embeddings rotate pairs)")
        if self.hidden_activation not in self.activations:
            _invalid("hidden_activation", self.hidden_activation, f"one of {', '.join(self.activations)}")
        _require_positive_numbers(self, "rms_norm_eps", "rope_theta", "query_pre_attn_scalar")
        for name in ("final_logit_softcapping", "attn_logit_softcapping"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                _invalid(name, value, "None or a positive number")
        _check_sliding_layers(self)
        _refuse_bidirectional_attention(self)
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        return LlamaConfig._from_file_layout(values)  # the same rope_parameters layout as Llama's

    def to_dict(self) -> dict[str, Any]:
        # Both layouts, as LlamaConfig writes them (transformers 4: rope_theta; 5: rope_parameters).
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


@dataclass
class VaultGemmaConfig(Gemma2Config):
    """Google's VaultGemma (vaultgemma-1b): Gemma 2's decoder without the norms after attention and after the MLP,
    with Gemma 2's defaults; the reference has no use_bidirectional_attention for it."""

    model_type: ClassVar[str] = "vaultgemma"
    use_bidirectional_attention: ClassVar[None] = None  # not a VaultGemma field: its layers are causal


def _check_sliding_layers(config: PretrainedConfig) -> None:
    """A `sliding_window` (None or a positive integer) and `layer_types` marking each layer "sliding_attention" or
    "full_attention" (Gemma 2 and 3, Cohere 2, OLMo 3, gpt-oss: the sliding layers see the window, the others everything)."""
    if config.sliding_window is not None and not _positive_int(config.sliding_window):
        _invalid("sliding_window", config.sliding_window, "None or a positive integer")
    _check_layer_types(config)


def _check_windowed_layers(config: PretrainedConfig) -> None:
    """`_check_sliding_layers`, and a window wherever a layer slides (Ministral, dots.llm1: the reference's sliding
    layers have no mask to build without one)."""
    _check_sliding_layers(config)
    if config.sliding_window is None and "sliding_attention" in config.layer_types:
        _invalid("layer_types", config.layer_types, "only 'full_attention' layers when sliding_window is None "
                 "(a sliding layer attends through the window)")


def _field_alias(name: str) -> property:
    """An attribute that reads and writes the field `name` (the reference's `attribute_map`)."""
    return property(lambda self: getattr(self, name), lambda self, value: setattr(self, name, value))


@dataclass
class DistilBertConfig(PretrainedConfig):
    """DistilBERT: BERT's post-LayerNorm blocks at half the depth, without token types or a pooler; positions
    learned, or fixed sinusoids when `sinusoidal_pos_embds` is set. Its fields keep DistilBERT's names
    (`dim`, `n_layers`, `n_heads`, `hidden_dim`); the common names read and set them, as in the reference."""

    model_type: ClassVar[str] = "distilbert"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
    }

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 4 * 768
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    hidden_size = _field_alias("dim")
    num_attention_heads = _field_alias("n_heads")
    num_hidden_layers = _field_alias("n_layers")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # DistilBertConfig(hidden_size=64) sets dim, as the reference
            if alias in self.extra:
                setattr(self, name, self.extra.pop(alias))
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim",
                               "hidden_dim")
        if self.dim % self.n_heads:
            _invalid("dim", self.dim, f"a multiple of n_heads={self.n_heads}")
        if self.activation not in ENCODER_ACTIVATIONS:
            _invalid("activation", self.activation, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        for name in ("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                _invalid(name, value, "a probability in [0, 1)")


class PartialRotary:
    """The derived sizes of a config whose rotary embeddings turn the first `partial_rotary_factor` of each head
    (GPT-NeoX, Phi, Phi-3; a family whose config.json may set head_dim defines its own)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """How many of each head's dimensions rotate (the first ones); the rest pass through."""
        return int(self.head_dim * self.partial_rotary_factor)


class PartialRotaryInBothLayouts(PartialRotary):
    """A PartialRotary config (Phi, StableLM) whose config.json has rope_theta, partial_rotary_factor and rope_scaling
    at the top (transformers 4) or in rope_parameters (5, whose dict wins): both read, both written. Its
    num_key_value_heads None means as many as the query heads."""

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _rope_fields_from_parameters(self, ("rope_theta", "partial_rotary_factor"))
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = _partial_rope_parameters(self)
        return values


@dataclass
class Phi3Config(PartialRotary, PretrainedConfig):
    """Phi-3 and Phi-4: a Llama-style decoder with fused q/k/v and gate/up projections, dropout on both residual
    branches, rotary embeddings over the first `partial_rotary_factor` of each head, and LongRoPE scaling
    (`rope_scaling` of type "longrope": short factors up to `original_max_position_embeddings`, long ones beyond).
    """

    model_type: ClassVar[str] = "phi3"

    vocab_size: int = 32064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as the query heads
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0  # kept for config.json: the reference's model applies no embedding dropout
    attention_dropout: float = 0.0
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    partial_rotary_factor: float = 1.0
    sliding_window: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 32000
    pad_token_id: int | None = 32000

    # head_dim is not a Phi-3 field; the reference reads one a config.json sets, as here.
    head_dim = property(lambda self: self.extra.get("head_dim") or self.hidden_size // self.num_attention_heads)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if isinstance(self.rope_scaling, dict):
            scaling = dict(self.rope_scaling)
            kind = scaling.pop("type", None)
            kind = scaling.get("rope_type", kind)
            # The reference reads the older names "su" and "yarn" of Phi-3 checkpoints as longrope.
            scaling["rope_type"] = "longrope" if kind in ("su", "yarn") else kind
            scaling.pop("original_max_position_embeddings", None)  # the top-level field wins, as in the reference
            self.rope_scaling = None if kind == "default" else scaling
        super().__post_init__()

    def model_rope_scaling(self) -> dict[str, Any] | None:
        """rope_scaling as layers.RotaryEmbedding takes it: with original_max_position_embeddings, and the stretch
        `factor` (max_position_embeddings / original_max_position_embeddings where the config gives none)."""
        if self.rope_scaling is None:
            return None
        factor = self.rope_scaling.get("factor") or self.max_position_embeddings / self.original_max_position_embeddings
        return {**self.rope_scaling, "factor": factor,
                "original_max_position_embeddings": self.original_max_position_embeddings}

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                               "original_max_position_embeddings", "head_dim")
        _check_key_value_heads(self)
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "rms_norm_eps", "rope_theta")
        for name in ("resid_pdrop", "embd_pdrop", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                _invalid(name, value, "a probability in [0, 1)")
        _check_partial_rotary_factor(self)
        if self.sliding_window is not None and not _positive_int(self.sliding_window):
            _invalid("sliding_window", self.sliding_window, "None or a positive integer")
        if self.rope_scaling is None:
            return
        if self.rope_scaling.get("rope_type") != "longrope":
            raise ValueError(f"Unsupported config: rope_scaling.rope_type={self.rope_scaling.get('rope_type')!r}; "
                             "Phi-3 models use 'longrope' scaling or none (as the reference accepts).")
        _check_rope_scaling(self.model_rope_scaling())
        for key in ("short_factor", "long_factor"):
            if len(self.rope_scaling[key]) != self.rotary_dim // 2:
                _invalid(f"rope_scaling.{key}", self.rope_scaling[key],
                         f"{self.rotary_dim // 2} factors, one per rotated pair of dimensions")

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        # transformers 5 writes `rope_parameters` (with rope_theta and partial_rotary_factor inside); transformers 4
        # `rope_scaling`, which the reference prefers when both are there. The dict's values win over top-level ones.
        parameters = values.pop("rope_parameters", None)
        scaling = values.pop("rope_scaling", None) or parameters
        if isinstance(scaling, dict):
            scaling = dict(scaling)
            for name in ("rope_theta", "partial_rotary_factor"):
                if name in scaling:
                    values[name] = scaling.pop(name)
            values["rope_scaling"] = scaling
        return values

    def to_dict(self) -> dict[str, Any]:
        # Written in both layouts, so transformers 4 (rope_theta, rope_scaling) and 5 (rope_parameters) read it.
        values = super().to_dict()
        values["rope_parameters"] = _partial_rope_parameters(self)
        if self.rope_scaling is not None:
            values["rope_parameters"]["original_max_position_embeddings"] = self.original_max_position_embeddings
        return values


class LayerTypedRope:
    """transformers 5's `rope_parameters` with one entry per layer type (Gemma 3, OLMo 3): the "full_attention" entry
    gives the config's rope_theta and rope_scaling, the "sliding_attention" one the sliding layers' base, the field
    `sliding_theta_field` names (their rotation is never scaled).

    The reference's YaRN reads `truncate` from the top of rope_parameters, where these configs have the layer types,
    so it rounds the band of blended pairs to whole pairs whatever the full layers' entry says: a truncate of False
    is dropped here, with a warning, and the full layers rotate as the reference's do."""

    sliding_theta_field: ClassVar[str]

    def __post_init__(self):
        scaling = self.rope_scaling
        if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "yarn" \
                and "truncate" in scaling and not scaling["truncate"]:
            warnings.warn(
                f"rope_scaling.truncate={scaling['truncate']!r} is ignored for a {self.model_type} model: the "
                "reference rounds YaRN's band of blended pairs to whole pairs on its full-attention layers whatever "
                "truncate says, and so does openformers.", stacklevel=2)
            self.rope_scaling = {key: value for key, value in scaling.items() if key != "truncate"}
        super().__post_init__()

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        parameters = values.get("rope_parameters")
        if not (isinstance(parameters, dict) and "full_attention" in parameters):
            return super()._from_file_layout(values)
        values = dict(values)
        parameters = values.pop("rope_parameters")
        local = dict(parameters.get("sliding_attention") or {})
        if local.get("rope_type", "default") != "default":
            raise ValueError(
                f"Unsupported config: rope_parameters['sliding_attention'] = {local}; openformers scales the rotary "
                "positions of the full-attention layers only (rope_type 'default' on the sliding ones)."
            )
        values[cls.sliding_theta_field] = local.get("rope_theta", getattr(cls, cls.sliding_theta_field))
        return super()._from_file_layout({**values, "rope_parameters": parameters.get("full_attention") or {}})


def _rope_parameters_by_layer_type(config: PretrainedConfig, sliding_theta: float) -> dict[str, Any]:
    """The rope_parameters a LayerTypedRope config writes: the full layers' (Llama's layout), the sliding layers'."""
    return {
        "full_attention": {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta},
        "sliding_attention": {"rope_type": "default", "rope_theta": sliding_theta},
    }


@dataclass
class Gemma3TextConfig(LayerTypedRope, Gemma2Config):
    """Gemma 3's text decoder: Gemma 2 with an RMSNorm over each head's queries and keys, rotary positions of their
    own base on the sliding layers (`rope_local_base_freq`), five sliding layers to one full by default, and no
    soft-capping of the logits unless asked for. The reference reads attn_logit_softcapping but never applies it,
    and applies `rope_scaling` to the full-attention layers only; so does openformers."""

    model_type: ClassVar[str] = "gemma3_text"
    sliding_theta_field: ClassVar[str] = "rope_local_base_freq"
    qk_norm: ClassVar[bool] = True
    caps_attention: ClassVar[bool] = False

    vocab_size: int = 262_208
    max_position_embeddings: int = 131_072
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    use_bidirectional_attention: bool | None = False

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            pattern = self.extra.get("sliding_window_pattern", 6)  # every pattern-th layer attends to everything
            self.layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                for i in range(self.num_hidden_layers)]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_positive_numbers(self, "rope_local_base_freq")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "rope_parameters": _rope_parameters_by_layer_type(self, self.rope_local_base_freq)}


@dataclass
class Gemma3Config(Gemma3TextConfig):
    """Gemma 3's image-and-text folders (gemma-3-4b-it, -12b-it, -27b-it; model_type "gemma3"), read as the config of
    their text decoder: `from_dict` gives the Gemma3TextConfig of config.json's text_config (the reference's defaults
    for what it leaves out; final_logit_softcapping none, as the reference's wrapper applies none) and warns that the
    vision tower (vision_config) is skipped, images not supported. Its models are Gemma 3's text classes, whose
    weights load from the language model's (models/gemma.py)."""

    model_type: ClassVar[str] = "gemma3"

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides) -> Gemma3TextConfig:
        text = values.get("text_config", {})
        if not isinstance(text, dict):
            _invalid("text_config", text, "an object with the text decoder's config")
        warnings.warn(
            "This Gemma 3 folder holds an image-and-text model: openformers loads its text decoder alone (as "
            "Gemma3ForCausalLM), skipping the vision tower; images are not supported, text generation is the "
            "reference's text-only generation.", stacklevel=2,
        )
        for name in ("dtype", "torch_dtype"):  # the folder's dtype, which text_config may leave to it
            if name in values and "dtype" not in text and "torch_dtype" not in text:
                text = {**text, name: values[name]}
        # The reference's image-and-text model projects the logits without the text decoder's soft-cap (the released
        # text configs have none): read as no cap, so that the text decoder gives the wrapper's logits.
        text = {**text, "final_logit_softcapping": None}
        return Gemma3TextConfig.from_dict({**text, "model_type": "gemma3_text"}, **overrides)


@dataclass
class XLMRobertaConfig(RobertaConfig):
    """XLM-RoBERTa: RoBERTa's architecture with a multilingual SentencePiece vocabulary."""

    model_type: ClassVar[str] = "xlm-roberta"

    vocab_size: int = 30522  # the reference's default; real checkpoints have 250002


@dataclass
class RobertaPreLayerNormConfig(RobertaConfig):
    """RoBERTa-PreLayerNorm (andreasmadsen/efficient_mlm_m0.40): RoBERTa with a LayerNorm before each sublayer and one
    over the last layer's output."""

    model_type: ClassVar[str] = "roberta-prelayernorm"


@dataclass
class XLMRobertaXLConfig(RobertaConfig):
    """XLM-RoBERTa-XL and -XXL: RoBERTa-PreLayerNorm's layers (without a norm in the embeddings) at 2560 wide, over
    XLM-R's multilingual vocabulary."""

    model_type: ClassVar[str] = "xlm-roberta-xl"

    vocab_size: int = 250880
    hidden_size: int = 2560
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    intermediate_size: int = 10240
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-05


@dataclass
class MegatronBertConfig(BertConfig):
    """Megatron-BERT (nvidia/megatron-bert-cased-345m): BERT with a LayerNorm before each sublayer and one over the
    last layer's output, none in the embeddings."""

    model_type: ClassVar[str] = "megatron-bert"

    vocab_size: int = 29056
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096


@dataclass
class RotaryBertConfig(BertConfig):
    """The rotary encoders' fields over BERT's (NomicBERT, GTE, Jina embeddings v3: models/nomic_bert.py): positions
    turn the queries and keys by `rope_theta` (rope_scaling as Llama's), there is no position table and the model
    is an encoder only. config.json gives the base in transformers 5's rope_parameters, or at the top."""

    head_dim: ClassVar[int | None] = None  # the heads' width apart from hidden_size: NomicBERT's field
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None

    def validate(self) -> None:
        super().validate()
        _require_positive_numbers(self, "rope_theta")
        if self.head_dim is not None:
            _require_positive_ints(self, "head_dim")
        if self.rotary_head_dim() % 2:
            _invalid("head_dim", self.rotary_head_dim(), "an even number (rotary embeddings rotate pairs)")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        if self.is_decoder:
            _invalid("is_decoder", self.is_decoder, f"False: {self.model_type} models are encoders only")

    def rotary_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        return LlamaConfig._from_file_layout(values)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


@dataclass
class NomicBertConfig(RotaryBertConfig):
    """NomicBERT (nomic-ai/nomic-embed-text-v1.5): BERT with rotary positions, a SwiGLU feed-forward and no biases in
    its layers; `head_dim` may set the heads' width apart from hidden_size."""

    model_type: ClassVar[str] = "nomic_bert"

    vocab_size: int = 30528
    hidden_act: str = "silu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 2048
    rope_theta: float = 1000.0
    head_dim: int | None = None  # None: hidden_size // num_attention_heads

    def __post_init__(self):
        if self.head_dim is None and _positive_int(self.num_attention_heads) and _positive_int(self.hidden_size):
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__()


@dataclass
class GteConfig(RotaryBertConfig):
    """GTE (Alibaba-NLP/gte-multilingual-base, gte-base-en-v1.5): rotary BERT with biases and a gated feed-forward;
    type_vocab_size 0 (the English model) leaves the token types out."""

    model_type: ClassVar[str] = "gte"
    token_types_optional: ClassVar[bool] = True

    vocab_size: int = 250048
    attention_probs_dropout_prob: float = 0.0
    type_vocab_size: int = 1
    pad_token_id: int | None = 1
    max_position_embeddings: int = 8192
    rope_theta: float = 160_000.0


@dataclass
class JinaEmbeddingsV3Config(RotaryBertConfig, RobertaConfig):
    """Jina embeddings v3 (jinaai/jina-embeddings-v3-hf): XLM-RoBERTa's vocabulary and heads over the rotary encoder,
    with biases and a GELU feed-forward."""

    model_type: ClassVar[str] = "jina_embeddings_v3"

    vocab_size: int = 250002
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 8194
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    rope_theta: float = 20_000.0
    # RoBERTa's ids, which BertConfig's defaults (over RotaryBertConfig) would hide
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2


@dataclass
class CamembertConfig(RobertaConfig):
    """CamemBERT: RoBERTa's architecture with a French SentencePiece vocabulary."""

    model_type: ClassVar[str] = "camembert"

    vocab_size: int = 30522  # the reference's default; camembert-base has 32005


def _rope_fields_from_parameters(config: PretrainedConfig, names: tuple[str, ...]) -> None:
    """Read a `rope_scaling` or transformers 5 `rope_parameters` dict the way GPT-NeoX and Falcon take it: rope_scaling
    wins over rope_parameters, the dict's `names` (rope_theta, partial_rotary_factor) go to the config's fields, and
    what is left is rope_scaling (None for the default rotation)."""
    parameters = config.rope_scaling or config.extra.get("rope_parameters")
    config.extra.pop("rope_parameters", None)
    if not isinstance(parameters, dict):
        config.rope_scaling = parameters  # None, or something validate() names
        return
    parameters = dict(parameters)
    for name in ("rope_theta", "partial_rotary_factor"):
        value = parameters.pop(name, None)
        if value is not None and name in names:
            setattr(config, name, value)
    kind = parameters.pop("type", None)
    kind = parameters.get("rope_type", kind) or "default"
    config.rope_scaling = None if kind == "default" else {**parameters, "rope_type": kind}


def _check_rope_scaling_of_family(config: PretrainedConfig) -> None:
    """The rope scalings GPT-NeoX and Falcon models may ask for here: those layers.py implements, except longrope
    (which needs Phi-3's original_max_position_embeddings) and YaRN (gpt-oss's, untested over partial rotation)."""
    if config.rope_scaling is None:
        return
    kind = config.rope_scaling.get("rope_type") if isinstance(config.rope_scaling, dict) else None
    if kind in ("longrope", "yarn"):
        raise ValueError(
            f"Unsupported config: rope_scaling.rope_type={kind!r} for a {config.model_type} model; openformers "
            "implements 'default', 'linear' and 'llama3' rope scaling for it."
        )
    _check_rope_scaling(config.rope_scaling)


def _check_partial_rotary_factor(config: PretrainedConfig) -> None:
    """Rotary embeddings over the first `partial_rotary_factor` of each head (GPT-NeoX, Phi, Phi-3): a fraction that
    rotates an even number of dimensions, at least two."""
    factor = config.partial_rotary_factor
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor <= 1
            and config.rotary_dim > 0 and config.rotary_dim % 2 == 0):
        _invalid("partial_rotary_factor", factor,
                 f"a number in (0, 1] that rotates an even number of the head's {config.head_dim} dimensions")


def _partial_rope_parameters(config: PretrainedConfig) -> dict[str, Any]:
    """The transformers 5 `rope_parameters` of a config with rope_theta, partial_rotary_factor and rope_scaling."""
    return {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta,
            "partial_rotary_factor": config.partial_rotary_factor}


def _check_probabilities(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            _invalid(name, value, "a probability in [0, 1)")


@dataclass
class GPTNeoXConfig(PartialRotary, PretrainedConfig):
    """GPT-NeoX and Pythia: LayerNorm blocks (with biases) whose attention and MLP read the same input and add to the
    residual together (`use_parallel_residual`; else one after the other), one fused query_key_value projection, rotary
    embeddings over the first `partial_rotary_factor` of each head (config.json's older `rotary_pct`, with
    `rotary_emb_base` for rope_theta), a GELU MLP and an output projection of its own."""

    model_type: ClassVar[str] = "gpt_neox"

    vocab_size: int = 50432
    hidden_size: int = 6144
    num_hidden_layers: int = 44
    num_attention_heads: int = 64
    intermediate_size: int = 24576
    hidden_act: str = "gelu"
    partial_rotary_factor: float = 0.25
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    classifier_dropout: float | None = 0.1
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    attention_bias: bool = True
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2

    # The names transformers 4 and Pythia's config.json files use.
    rotary_pct = property(lambda self: self.partial_rotary_factor,
                          lambda self, value: setattr(self, "partial_rotary_factor", value))
    rotary_emb_base = property(lambda self: self.rope_theta, lambda self, value: setattr(self, "rope_theta", value))

    def __post_init__(self):
        for old, name in (("rotary_pct", "partial_rotary_factor"), ("rotary_emb_base", "rope_theta")):
            if old in self.extra:
                setattr(self, name, self.extra.pop(old))
        _rope_fields_from_parameters(self, ("rope_theta", "partial_rotary_factor"))
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "max_position_embeddings")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "layer_norm_eps", "rope_theta")
        _check_probabilities(self, "attention_dropout", "hidden_dropout")
        if self.classifier_dropout is not None:
            _check_probabilities(self, "classifier_dropout")
        _check_partial_rotary_factor(self)
        _check_rope_scaling_of_family(self)

    def to_dict(self) -> dict[str, Any]:
        # transformers 5 reads rope_parameters; transformers 4 rotary_pct, rotary_emb_base and rope_scaling.
        values = super().to_dict()
        values["rope_parameters"] = _partial_rope_parameters(self)
        values.update(rotary_pct=self.partial_rotary_factor, rotary_emb_base=self.rope_theta)
        return values


def _check_gpt2_sizes(config: PretrainedConfig) -> None:
    """The sizes of a config with GPT-2's field names (GPT-2, GPT-J, GPT-BigCode): positive, n_embd a multiple of
    n_head, n_inner None (4 * n_embd) or positive, and an activation_function layers.py implements."""
    _require_positive_ints(config, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    if config.n_embd % config.n_head:
        _invalid("n_embd", config.n_embd, f"a multiple of n_head={config.n_head}")
    if config.n_inner is not None and not _positive_int(config.n_inner):
        _invalid("n_inner", config.n_inner, "None (4 * n_embd) or a positive integer")
    if config.activation_function not in ENCODER_ACTIVATIONS:
        _invalid("activation_function", config.activation_function, f"one of {', '.join(ENCODER_ACTIVATIONS)}")


class GPT2Names:
    """The common names of a config whose fields keep GPT-2's (`n_embd`, `n_layer`, `n_head`, `n_positions`, `n_inner`:
    GPT-J, GPT-BigCode), which read and set those fields as the reference's attribute_map does, also when given to
    the constructor or read from config.json; and the sizes derived from them."""

    attribute_map: ClassVar[dict[str, str]] = {
        "max_position_embeddings": "n_positions", "hidden_size": "n_embd", "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    max_position_embeddings = _field_alias("n_positions")
    hidden_size = _field_alias("n_embd")
    num_attention_heads = _field_alias("n_head")
    num_hidden_layers = _field_alias("n_layer")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def intermediate_size(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # GPTJConfig(hidden_size=64) sets n_embd, as the reference
            _pop_alias(self, alias, name)
        super().__post_init__()


@dataclass
class MambaConfig(PretrainedConfig):
    """Mamba (state-spaces/mamba-130m-hf ... mamba-2.8b-hf): no attention; each layer is an RMSNorm and a selective
    state-space mixer (in_proj to x and a gate z, a causal depthwise convolution of `conv_kernel` over x, x_proj to
    the time step and B and C, dt_proj, the scan over `state_size` states per channel, out_proj) added to the
    residual stream, which stays float32 with `residual_in_fp32`. The mixer is `intermediate_size` channels wide
    (config.json's, else expand * hidden_size, as the reference reads it) and its time step
    has `time_step_rank` dimensions ("auto": ceil(hidden_size / 16)). The time_step_* initialization fields, use_mambapy and
    use_associative_scan are kept for the files' sake; they change no forward pass here."""

    model_type: ClassVar[str] = "mamba"

    vocab_size: int = 50280
    hidden_size: int = 768
    state_size: int = 16
    num_hidden_layers: int = 32
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int | None = 0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    expand: int = 2
    conv_kernel: int = 4
    use_bias: bool = False
    use_conv_bias: bool = True
    hidden_act: str = "silu"
    initializer_range: float = 0.1
    residual_in_fp32: bool = True
    time_step_rank: int | str = "auto"
    time_step_scale: float = 1.0
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_init_scheme: str = "random"
    time_step_floor: float = 1e-4
    rescale_prenorm_residual: bool = False
    use_cache: bool = True
    use_mambapy: bool = False
    use_associative_scan: bool = True
    tie_word_embeddings: bool = True
    intermediate_size: int | None = None  # None: expand * hidden_size

    def __post_init__(self):
        if self.intermediate_size is None and _positive_int(self.expand) and _positive_int(self.hidden_size):
            self.intermediate_size = self.expand * self.hidden_size
        if self.time_step_rank == "auto" and _positive_int(self.hidden_size):
            self.time_step_rank = -(-self.hidden_size // 16)
        super().__post_init__()

    @property
    def layer_types(self) -> list[str]:
        """The reference's name for what every layer is: a state-space mixer, no attention."""
        return ["linear_attention"] * self.num_hidden_layers

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "expand",
                               "conv_kernel", "time_step_rank", "intermediate_size")
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "layer_norm_epsilon")


@dataclass
class FalconMambaConfig(MambaConfig):
    """Falcon-Mamba (tiiuae/falcon-mamba-7b): Mamba whose mixer RMS-normalizes its time step, B and C (over their
    own dimensions, without weights, with epsilon `mixer_rms_eps`) before the scan."""

    model_type: ClassVar[str] = "falcon_mamba"

    mixer_rms_eps: float = 1e-6

    def __post_init__(self):
        if "use_falcon_mambapy" in self.extra:  # the reference's older name
            self.use_mambapy = self.extra.pop("use_falcon_mambapy")
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_positive_numbers(self, "mixer_rms_eps")


@dataclass
class Mamba2Config(PretrainedConfig):
    """Mamba-2 (mistralai/Mamba-Codestral-7B-v0.1, state-spaces/mamba2-* ports): Mamba's layout (RMSNorm, mixer,
    float32 residual) with the state-space duality mixer: in_proj to a gate z, the convolution's input xBC (x, then
    `n_groups` groups of B and of C, `state_size` each) and a time step per head; `num_heads` heads of `head_dim`
    channels (their product is expand * hidden_size), one scalar A, D and dt_bias per head, dt clamped to
    `time_step_limit` in the scan (which runs in chunks of `chunk_size`), and a gated RMSNorm over `n_groups` groups
    before out_proj. As in the reference the gate multiplies before the norm, whatever a file's `norm_before_gate`
    says (kept as an unknown key). time_step_rank ("auto": ceil(hidden_size / 16)) and the time_step_* initialization
    fields are kept for the files' sake."""

    model_type: ClassVar[str] = "mamba2"

    num_heads: int = 128
    head_dim: int = 64
    vocab_size: int = 32768
    hidden_size: int = 4096
    state_size: int = 128
    num_hidden_layers: int = 64
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    expand: int = 2
    conv_kernel: int = 4
    n_groups: int = 8
    use_bias: bool = False
    use_conv_bias: bool = True
    hidden_act: str = "silu"
    initializer_range: float = 0.1
    residual_in_fp32: bool = True
    time_step_rank: int | str = "auto"
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    time_step_limit: tuple[float, float] | list[float] = (0.0, float("inf"))
    rescale_prenorm_residual: bool = False
    use_cache: bool = True
    chunk_size: int = 256
    tie_word_embeddings: bool = False

    def __post_init__(self):
        if self.time_step_rank == "auto" and _positive_int(self.hidden_size):
            self.time_step_rank = -(-self.hidden_size // 16)
        super().__post_init__()

    @property
    def intermediate_size(self) -> int:
        """The mixer's width: expand * hidden_size = num_heads * head_dim."""
        return self.expand * self.hidden_size

    @property
    def layer_types(self) -> list[str]:
        """The reference's name for what every layer is: a state-space mixer, no attention."""
        return ["linear_attention"] * self.num_hidden_layers

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers", "time_step_rank")
        _check_ssd_mixer(self, MAMBA2_MIXER_FIELDS)
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "layer_norm_epsilon")


# A Mamba-2 mixer's fields (models/mamba2.Mamba2Mixer reads a Mamba2Config's) -> their names in a config holding them.
MAMBA2_MIXER_FIELDS = {name: name for name in ("expand", "num_heads", "head_dim", "n_groups", "state_size",
                                               "conv_kernel", "chunk_size", "time_step_limit", "use_bias",
                                               "use_conv_bias")}


def _check_ssd_mixer(config: PretrainedConfig, names: dict[str, str]) -> None:
    """A Mamba-2 mixer's sizes and time-step limit, read from `config` under `names` (Mamba-2's field -> the
    config's: the hybrids' are `mamba_*`), each refused under the config's own name; the heads fill expand *
    hidden_size, or the field names["intermediate_size"] where it is set."""
    _require_positive_ints(config, *(names[k] for k in ("expand", "num_heads", "head_dim", "n_groups", "state_size",
                                                        "conv_kernel", "chunk_size")))
    heads, head_dim, groups = (getattr(config, names[k]) for k in ("num_heads", "head_dim", "n_groups"))
    inner, width = getattr(config, names["expand"]) * config.hidden_size, f"{names['expand']} * hidden_size"
    if getattr(config, names.get("intermediate_size", "?"), None) is not None:  # a width of its own (Falcon-H1's)
        _require_positive_ints(config, names["intermediate_size"])
        inner, width = getattr(config, names["intermediate_size"]), names["intermediate_size"]
    if heads * head_dim != inner:
        _invalid(names["num_heads"], heads, f"{names['num_heads']} * {names['head_dim']} ({head_dim}) equal to "
                 f"{width} ({inner})")
    if heads % groups:
        _invalid(names["n_groups"], groups, f"a divisor of {names['num_heads']} ({heads}): each group of B and C "
                 "serves as many heads")
    limit = getattr(config, names["time_step_limit"])
    if (not isinstance(limit, (list, tuple)) or len(limit) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in limit)
            or not 0 <= limit[0] <= limit[1]):
        _invalid(names["time_step_limit"], limit, "two numbers (low, high) with 0 <= low <= high")


@dataclass
class _WideMamba2Config(Mamba2Config):
    """The config of a Mamba-2 mixer whose width is its own, not expand * hidden_size (Falcon-H1's mamba_d_ssm); made
    by the hybrid's mixer_config(), whose own validate() has refused bad values by their names there."""

    width: int = 1024

    @property
    def intermediate_size(self) -> int:
        return self.width

    def validate(self) -> None:
        _check_ssd_mixer(self, {**MAMBA2_MIXER_FIELDS, "intermediate_size": "width"})


@dataclass
class _SsdMixerFields:
    """The fields of a Mamba-2 mixer under the hybrids' `mamba_` names (Granite 4, Bamba, Falcon-H1): `mamba_n_heads`
    heads of `mamba_d_head` ("auto": the mixer's width / mamba_n_heads), `mamba_n_groups` groups of B and C of
    `mamba_d_state`, `mamba_d_conv` taps, scans in chunks of `mamba_chunk_size`, biases on the convolution
    (`mamba_conv_bias`) and on in_proj and out_proj (`mamba_proj_bias`), dt clamped to `time_step_limit`. The width
    is mamba_expand * hidden_size; the gated norm's epsilon is rms_norm_eps."""

    mamba_n_heads: int = 128
    mamba_n_groups: int = 1
    mamba_d_state: int = 256
    mamba_d_head: int | str = "auto"
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_chunk_size: int = 256
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    time_step_limit: tuple[float, float] | list[float] = (0.0, float("inf"))

    # Mamba-2's mixer fields -> this config's names for them
    mixer_fields: ClassVar[dict[str, str]] = {
        "expand": "mamba_expand", "num_heads": "mamba_n_heads", "head_dim": "mamba_d_head", "n_groups": "mamba_n_groups",
        "state_size": "mamba_d_state", "conv_kernel": "mamba_d_conv", "chunk_size": "mamba_chunk_size",
        "time_step_limit": "time_step_limit", "use_bias": "mamba_proj_bias", "use_conv_bias": "mamba_conv_bias",
    }

    @property
    def mamba_intermediate_size(self):
        """The mixer's width: mamba_expand * hidden_size (Falcon-H1's mamba_d_ssm where it sets one)."""
        return self.mamba_expand * self.hidden_size

    def _derive_mamba_d_head(self) -> None:
        width = self.mamba_intermediate_size if _positive_int(self.hidden_size) else None
        if self.mamba_d_head == "auto" and _positive_int(self.mamba_n_heads) and _positive_int(width):
            self.mamba_d_head = width // self.mamba_n_heads

    def mixer_config(self) -> "Mamba2Config":
        """The Mamba-2 config of this model's mixers (models/mamba2.Mamba2Mixer builds from it)."""
        values = {mamba2: getattr(self, name) for mamba2, name in self.mixer_fields.items()}
        values.update(hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                      vocab_size=self.vocab_size, hidden_act=self.hidden_act, layer_norm_epsilon=self.rms_norm_eps)
        width = values.pop("intermediate_size", None)
        return Mamba2Config(**values) if width is None else _WideMamba2Config(width=width, **values)

    def check_layer_kinds(self, kinds: dict[str, str]) -> None:
        """Refuse a `layer_types` that is not one entry per layer, each a key or value of `kinds`."""
        names = (*kinds, *kinds.values())
        if (not isinstance(self.layer_types, (list, tuple)) or len(self.layer_types) != self.num_hidden_layers
                or any(kind not in names for kind in self.layer_types)):
            _invalid("layer_types", self.layer_types,
                     f"a list of num_hidden_layers={self.num_hidden_layers} entries, each one of {', '.join(names)}")

    def attends(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` is an attention layer (else a Mamba-2 mixer)."""
        return self.layer_types[layer_idx] == "full_attention"

    def has_mixer(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` holds a Mamba-2 mixer: each layer that does not attend."""
        return not self.attends(layer_idx)


@dataclass
class _HybridDecoderFields(_SsdMixerFields):
    """The decoder fields and defaults Bamba's and Falcon-H1's references share (their sizes are Llama 3 8B's), with
    the mixer's (_SsdMixerFields); each adds its own max_position_embeddings."""

    vocab_size: int = 128000
    tie_word_embeddings: bool = False
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    num_logits_to_keep: int | None = 1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    attention_dropout: float = 0.0


@dataclass
class GraniteMoeHybridConfig(_SsdMixerFields, GraniteMoeSharedConfig):
    """IBM Granite 4.0 (granite-4.0-micro, -h-micro, -h-tiny, -h-small): Granite MoE with a shared expert whose layers
    are each, by `layer_types`, a Mamba-2 mixer ("mamba"; the reference's newer name "linear_attention", which is what
    it writes) or Granite's attention ("attention"; "full_attention"), each followed by the routed experts and the
    shared MLP of `shared_intermediate_size`, or with `num_local_experts` 0 by the shared MLP alone. The attention
    rotates queries and keys only with `position_embedding_type` "rope" (None, the default, and "nope": no positions,
    as in the hybrids). The mixer's fields are Mamba-2's under `mamba_` names (_SsdMixerFields).
    `layers_block_type` is an older name of layer_types."""

    model_type: ClassVar[str] = "granitemoehybrid"
    attribute_map: ClassVar[dict[str, str]] = {"layers_block_type": "layer_types"}
    layer_kinds: ClassVar[dict[str, str]] = {"mamba": "linear_attention", "attention": "full_attention"}

    vocab_size: int = 32000
    intermediate_size: int = 11008
    rms_norm_eps: float = 1e-6
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    shared_intermediate_size: int = 1024
    position_embedding_type: str | None = None
    layer_types: list[str] | None = None
    use_cache: bool = True

    layers_block_type = _field_alias("layer_types")

    def __post_init__(self):
        _pop_alias(self, "layers_block_type", "layer_types")
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            self.layer_types = ["linear_attention"] * self.num_hidden_layers
        if isinstance(self.layer_types, (list, tuple)):
            self.layer_types = [self.layer_kinds.get(kind, kind) for kind in self.layer_types]
        self._derive_mamba_d_head()
        super().__post_init__()

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the routed experts: every layer, unless num_local_experts is 0."""
        return self.num_local_experts > 0

    def validate(self) -> None:
        GraniteConfig.validate(self)
        _check_experts(self, "num_local_experts", allow_none=True)  # 0: the shared MLP alone
        _require_positive_ints(self, "shared_intermediate_size")  # every layer runs it
        self.check_layer_kinds(self.layer_kinds)
        if self.position_embedding_type not in (None, "nope", "rope"):
            _invalid("position_embedding_type", self.position_embedding_type, 'None, "nope" or "rope"')
        _check_ssd_mixer(self, self.mixer_fields)


@dataclass
class BambaConfig(_HybridDecoderFields, PartialRotaryInBothLayouts, PretrainedConfig):
    """IBM's Bamba (ibm-ai-platform/Bamba-9B): Llama's decoder whose layers mix their tokens by a Mamba-2 mixer, or
    (the layers listed in `attn_layer_indices`) by grouped-query attention rotating the first `partial_rotary_factor`
    (0.5, as the reference sets it unless rope_parameters says otherwise) of each head, each followed by the
    pre-feed-forward norm and a SwiGLU MLP. The mixer's fields are Mamba-2's under `mamba_` names (_SsdMixerFields).
    With labels, `z_loss_coefficient` times the mean squared log-sum-exp of the logits joins the loss.
    `layer_types` (the reference's `layers_block_type`) is derived from attn_layer_indices."""

    model_type: ClassVar[str] = "bamba"
    qkv_bias: ClassVar[bool] = False  # the Llama attention's name: q/k/v biases only with attention_bias

    max_position_embeddings: int = 262144
    attn_layer_indices: list[int] | None = None
    z_loss_coefficient: float = 0.0
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self):
        self._derive_mamba_d_head()
        super().__post_init__()

    @property
    def layer_types(self) -> list[str]:
        """Each layer's kind, as the reference names them: "full_attention" for attn_layer_indices, else
        "linear_attention" (a Mamba-2 mixer)."""
        attending = set(self.attn_layer_indices or ())
        return ["full_attention" if i in attending else "linear_attention" for i in range(self.num_hidden_layers)]

    layers_block_type = layer_types

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        _check_key_value_heads(self)
        if self.hidden_act != "silu":
            _invalid("hidden_act", self.hidden_act, "'silu' (Bamba's SwiGLU MLP and mixer)")
        indices = self.attn_layer_indices
        if indices is not None and (not isinstance(indices, (list, tuple)) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_hidden_layers for i in indices)):
            _invalid("attn_layer_indices", indices, f"a list of layer indices below num_hidden_layers="
                     f"{self.num_hidden_layers}, or None")
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim < 2 or self.rotary_dim % 2:
            _invalid("partial_rotary_factor", self.partial_rotary_factor,
                     "a fraction in (0, 1] of each head turning an even number of dimensions")
        _require_positive_numbers(self, "rms_norm_eps", "rope_theta")
        _require_probabilities(self, "attention_dropout")
        if isinstance(self.z_loss_coefficient, bool) or not isinstance(self.z_loss_coefficient, (int, float)) \
                or self.z_loss_coefficient < 0:
            _invalid("z_loss_coefficient", self.z_loss_coefficient, "a number >= 0")
        _check_rope_scaling_of_family(self)
        _check_ssd_mixer(self, self.mixer_fields)


@dataclass
class JambaConfig(PretrainedConfig):
    """AI21's Jamba (ai21labs/Jamba-v0.1, AI21-Jamba-Mini-1.5): Llama's decoder without rotary positions whose layers
    mix their tokens by grouped-query attention (layer i where i % attn_layer_period == attn_layer_offset) or else by
    Mamba's selective state-space mixer (`mamba_d_state` states, `mamba_d_conv` taps, mamba_expand * hidden_size
    channels, a time step of `mamba_dt_rank` dimensions ("auto": ceil(hidden_size / 16)), the time step, B and C
    RMS-normed with weights of their own), each followed by the pre-feed-forward norm and a SwiGLU MLP, or (layer i
    where i % expert_layer_period == expert_layer_offset, with num_experts > 1) a sparse mixture of `num_experts`
    experts, `num_experts_per_tok` per token weighted by their softmax probabilities unrenormalized. With
    `output_router_logits` the causal LM adds `router_aux_loss_coef` times the load-balancing loss. use_mamba_kernels,
    use_mambapy and use_associative_scan are kept for the files' sake; they change no forward pass here."""

    model_type: ClassVar[str] = "jamba"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "num_experts"}
    attention_bias: ClassVar[bool] = False  # the Llama attention's and MLP's switches: no biases
    qkv_bias: ClassVar[bool] = False
    mlp_bias: ClassVar[bool] = False

    vocab_size: int = 65536
    tie_word_embeddings: bool = False
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    max_position_embeddings: int = 262144
    attention_dropout: float = 0.0
    num_experts_per_tok: int = 2
    num_experts: int = 16
    expert_layer_period: int = 2
    expert_layer_offset: int = 1
    attn_layer_period: int = 8
    attn_layer_offset: int = 4
    use_mamba_kernels: bool = True
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_dt_rank: int | str = "auto"
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    use_mambapy: bool = False
    use_associative_scan: bool = True

    num_local_experts = _field_alias("num_experts")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "num_experts")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.mamba_dt_rank == "auto" and _positive_int(self.hidden_size):
            self.mamba_dt_rank = -(-self.hidden_size // 16)
        super().__post_init__()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def attends(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` is an attention layer (else a Mamba mixer)."""
        return layer_idx % self.attn_layer_period == self.attn_layer_offset

    def has_mixer(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` holds a Mamba mixer: each layer that does not attend."""
        return not self.attends(layer_idx)

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts (the reference's layers_num_experts above 1)."""
        return self.num_experts > 1 and layer_idx % self.expert_layer_period == self.expert_layer_offset

    @property
    def layers_block_type(self) -> list[str]:
        """Each layer's kind under the reference's older names: "attention" or "mamba"."""
        return ["attention" if self.attends(i) else "mamba" for i in range(self.num_hidden_layers)]

    @property
    def layer_types(self) -> list[str]:
        """Each layer's kind, as the reference names them: "full_attention" or "linear_attention" (a Mamba mixer)."""
        return ["full_attention" if self.attends(i) else "linear_attention" for i in range(self.num_hidden_layers)]

    @property
    def layers_num_experts(self) -> list[int]:
        """Each layer's number of experts, 1 for a dense MLP, as the reference lists them."""
        return [self.num_experts if self.is_sparse(i) else 1 for i in range(self.num_hidden_layers)]

    def mixer_config(self) -> "MambaConfig":
        """The Mamba config of this model's mixers (models/jamba.JambaMambaMixer builds from it)."""
        return MambaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            state_size=self.mamba_d_state, conv_kernel=self.mamba_d_conv, expand=self.mamba_expand,
            time_step_rank=self.mamba_dt_rank, use_bias=self.mamba_proj_bias, use_conv_bias=self.mamba_conv_bias,
            hidden_act=self.hidden_act, layer_norm_epsilon=self.rms_norm_eps,
        )

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                               "attn_layer_period", "expert_layer_period", "mamba_d_state", "mamba_d_conv",
                               "mamba_expand", "mamba_dt_rank")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        _check_key_value_heads(self)
        for offset, period in (("attn_layer_offset", "attn_layer_period"),
                               ("expert_layer_offset", "expert_layer_period")):
            value = getattr(self, offset)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < getattr(self, period):
                _invalid(offset, value, f"an integer in [0, {period}={getattr(self, period)})")
        if self.hidden_act != "silu":
            _invalid("hidden_act", self.hidden_act, "'silu' (Jamba's SwiGLU MLP and mixer)")
        _check_experts(self, "num_experts")
        _require_positive_numbers(self, "rms_norm_eps")
        _require_probabilities(self, "attention_dropout")


@dataclass
class FalconH1Config(_HybridDecoderFields, LlamaConfig):
    """TII's Falcon-H1 (tiiuae/Falcon-H1-0.5B ... 34B, Base and Instruct): in every layer grouped-query attention and a
    Mamba-2 mixer read the same normed input side by side and their outputs are summed, then a SwiGLU MLP; with the
    muP multipliers of the reference: the token embeddings times `embedding_multiplier` (not inputs_embeds), the
    logits times `lm_head_multiplier`, the attention's input times `attention_in_multiplier`, its keys times
    `key_multiplier` and its output times `attention_out_multiplier`; the mixer's input times `ssm_in_multiplier`, the
    five parts of its in_proj (z, x, B, C, dt) times `ssm_multipliers` and its output times `ssm_out_multiplier`;
    the MLP's gate times mlp_multipliers[0] and its output times mlp_multipliers[1]. The mixer's fields are Mamba-2's
    under `mamba_` names (_SsdMixerFields), its width `mamba_d_ssm` (None: mamba_expand * hidden_size); its gated
    norm is there only with `mamba_rms_norm` (else y * SiLU(z)) and normalizes before the gate with
    `mamba_norm_before_gate`; out_proj has a bias with `projectors_bias` (in_proj with mamba_proj_bias)."""

    model_type: ClassVar[str] = "falcon_h1"
    mixer_fields: ClassVar[dict[str, str]] = {**_SsdMixerFields.mixer_fields, "intermediate_size": "mamba_d_ssm"}

    max_position_embeddings: int = 8192
    mamba_d_ssm: int | None = 1024
    mamba_norm_before_gate: bool = True
    mamba_rms_norm: bool = False
    projectors_bias: bool = False
    lm_head_multiplier: float = 1.0
    embedding_multiplier: float = 1.0
    mlp_multipliers: list[float] | None = None
    key_multiplier: float = 1.0
    attention_out_multiplier: float = 1.0
    attention_in_multiplier: float = 1.0
    ssm_multipliers: list[float] | None = None
    ssm_in_multiplier: float = 1.0
    ssm_out_multiplier: float = 1.0

    def __post_init__(self):
        self._derive_mamba_d_head()
        if self.mlp_multipliers is None:
            self.mlp_multipliers = [1.0, 1.0]
        if self.ssm_multipliers is None:
            self.ssm_multipliers = [1.0] * 5
        super().__post_init__()

    @property
    def mamba_intermediate_size(self):
        return self.mamba_expand * self.hidden_size if self.mamba_d_ssm is None else self.mamba_d_ssm

    @property
    def layer_types(self) -> list[str]:
        """The reference's kind of every layer: attention and a Mamba-2 mixer side by side."""
        return ["hybrid"] * self.num_hidden_layers

    layers_block_type = layer_types

    def attends(self, layer_idx: int) -> bool:
        return True

    def has_mixer(self, layer_idx: int) -> bool:
        return True

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        _require_bools(self, "mamba_norm_before_gate", "mamba_rms_norm", "projectors_bias", "mamba_conv_bias",
                       "mamba_proj_bias")
        for name, count in (("mlp_multipliers", 2), ("ssm_multipliers", 5)):
            value = getattr(self, name)
            if (not isinstance(value, (list, tuple)) or len(value) != count
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                _invalid(name, value, f"a list of {count} numbers")
        for name in ("lm_head_multiplier", "embedding_multiplier", "key_multiplier", "attention_out_multiplier",
                     "attention_in_multiplier", "ssm_in_multiplier", "ssm_out_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _invalid(name, value, "a number")
        _check_ssd_mixer(self, self.mixer_fields)


@dataclass
class _Lfm2Shared(PretrainedConfig):
    """What LFM2 and LFM2-MoE configs share: `layer_types` marking each layer "conv" (a gated short convolution of
    `conv_L_cache` taps, with biases when `conv_bias`) or "full_attention" (grouped-query attention with per-head
    RMSNorms on queries and keys), RMSNorms of `norm_eps`, rotary embeddings (rope_theta and rope_scaling, read from
    transformers 5's rope_parameters and written in both layouts) and the head tied to the embeddings by default.
    config.json's `tie_embedding` is read as tie_word_embeddings, as the reference reads it."""

    # The names the Llama-style attention reads: no biases on q/k/v/o.
    attention_bias: ClassVar[bool] = False
    qkv_bias: ClassVar[bool] = False

    vocab_size: int = 65536
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    max_position_embeddings: int = 128_000
    initializer_range: float = 0.02
    norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None
    conv_bias: bool = False
    conv_L_cache: int = 3
    layer_types: list[str] | None = None

    def __post_init__(self):
        _pop_alias(self, "tie_embedding", "tie_word_embeddings")
        _rope_fields_from_parameters(self, ("rope_theta",))
        super().__post_init__()

    @property
    def head_dim(self) -> int:
        """hidden_size // num_attention_heads, unless config.json says otherwise (the reference reads a head_dim)."""
        return self.extra.get("head_dim") or self.hidden_size // self.num_attention_heads

    @property
    def rms_norm_eps(self) -> float:
        return self.norm_eps

    def attends(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` attends (else it is a convolution layer)."""
        return self.layer_types[layer_idx] != "conv"

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings")
        if "head_dim" not in self.extra and self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        _require_positive_ints(self, "head_dim")
        _check_key_value_heads(self)
        if self.head_dim % 2:
            _invalid("head_dim", self.head_dim, "an even number (rotary embeddings rotate pairs)")
        _require_positive_ints(self, "conv_L_cache")
        _require_positive_numbers(self, "norm_eps", "rope_theta")
        _require_bools(self, "conv_bias")
        _check_layer_types(self, ("conv", "full_attention"))
        _check_rope_scaling_of_family(self)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


@dataclass
class Lfm2Config(_Lfm2Shared):
    """LFM2 (LiquidAI/LFM2-350M, 700M, 1.2B, 2.6B): a decoder whose layers are gated short convolutions or attention
    (`layer_types`; else the layers `full_attn_idxs` lists attend, by default all of them), each followed by a SwiGLU
    MLP. The MLP's width is `intermediate_size` as given, or with `block_auto_adjust_ff_dim` two thirds of it, times
    `block_ffn_dim_multiplier` and rounded up to a multiple of `block_multiple_of` (the reference's rule:
    `feed_forward_size`). config.json's `block_ff_dim` is read as intermediate_size."""

    model_type: ClassVar[str] = "lfm2"

    hidden_size: int = 2560
    intermediate_size: int = 12288
    block_multiple_of: int = 256
    block_ffn_dim_multiplier: float = 1.0
    block_auto_adjust_ff_dim: bool = True
    full_attn_idxs: list[int] | None = None

    def __post_init__(self):
        _pop_alias(self, "block_ff_dim", "intermediate_size")
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            if self.full_attn_idxs is None:
                self.full_attn_idxs = list(range(self.num_hidden_layers))
            attending = set(self.full_attn_idxs) if isinstance(self.full_attn_idxs, (list, tuple)) else set()
            self.layer_types = ["full_attention" if i in attending else "conv" for i in range(self.num_hidden_layers)]
        super().__post_init__()

    @property
    def feed_forward_size(self) -> int:
        """The SwiGLU MLP's width, by the reference's rule (see the class docstring)."""
        size = self.intermediate_size
        if self.block_auto_adjust_ff_dim:
            size = int(self.block_ffn_dim_multiplier * int(2 * size / 3))
            size = self.block_multiple_of * ((size + self.block_multiple_of - 1) // self.block_multiple_of)
        return size

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.full_attn_idxs, (list, tuple, type(None))):
            _invalid("full_attn_idxs", self.full_attn_idxs, "None or a list of layer indices")
        _require_positive_ints(self, "block_multiple_of")
        _require_bools(self, "block_auto_adjust_ff_dim")
        _require_positive_numbers(self, "block_ffn_dim_multiplier")
        if self.feed_forward_size <= 0:
            _invalid("intermediate_size", self.intermediate_size,
                     f"a size whose adjusted MLP width is positive (got {self.feed_forward_size})")


@dataclass
class Lfm2MoeConfig(_Lfm2Shared):
    """LFM2-MoE (LiquidAI/LFM2-8B-A1B): LFM2's layers, the first `num_dense_layers` with a SwiGLU MLP of
    `intermediate_size` (no adjustment), the others a mixture of `num_experts` SwiGLU experts of
    `moe_intermediate_size`, of which each token runs `num_experts_per_tok`: chosen by their sigmoid scores plus a
    per-expert bias (`use_expert_bias`), weighted by the scores alone, renormalized with `norm_topk_prob` and scaled
    by `routed_scaling_factor`. layer_types None (the reference's default, from which it builds no model) is read as
    every layer attending."""

    model_type: ClassVar[str] = "lfm2_moe"
    router_aux_loss_coef: ClassVar[float] = 0.0  # no load-balancing loss in the reference's head

    hidden_size: int = 2048
    intermediate_size: int = 7168
    moe_intermediate_size: int = 1792
    num_dense_layers: int = 2
    num_experts_per_tok: int = 4
    output_router_logits: bool = False
    num_experts: int = 32
    use_expert_bias: bool = True
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        super().__post_init__()

    @property
    def feed_forward_size(self) -> int:
        return self.intermediate_size

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts (else the dense MLP): every layer from num_dense_layers."""
        return layer_idx >= self.num_dense_layers

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "moe_intermediate_size")
        _check_experts(self, "num_experts")
        dense = self.num_dense_layers
        if isinstance(dense, bool) or not isinstance(dense, int) or dense < 0:
            _invalid("num_dense_layers", dense, "a non-negative integer")
        _require_positive_numbers(self, "routed_scaling_factor")
        _require_bools(self, "use_expert_bias", "norm_topk_prob")


@dataclass
class GPTJConfig(GPT2Names, PretrainedConfig):
    """GPT-J (and GPT4All-J, Dolly v1): one LayerNorm per block, whose output both attention and the GELU MLP read,
    their sums added to the residual together; q/k/v and output projections without biases, an MLP and an output
    projection with them; rotary embeddings over each head's first `rotary_dim` dimensions (None: all of them) in
    the interleaved form, pairs of neighbouring dimensions. Its fields keep GPT-2's names (`n_embd`, `n_layer`,
    `n_head`, `n_positions`); the common names read and set them, as in the reference."""

    model_type: ClassVar[str] = "gptj"

    vocab_size: int = 50400
    n_positions: int = 2048
    n_embd: int = 4096
    n_layer: int = 28
    n_head: int = 16
    rotary_dim: int | None = 64
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256

    @property
    def rotated_dim(self) -> int:
        """How many of each head's dimensions rotate (the first ones): rotary_dim, or the whole head for None."""
        return self.head_dim if self.rotary_dim is None else self.rotary_dim

    def validate(self) -> None:
        _check_gpt2_sizes(self)
        if self.rotary_dim is not None and not (_positive_int(self.rotary_dim) and self.rotary_dim % 2 == 0
                                                and self.rotary_dim <= self.head_dim):
            _invalid("rotary_dim", self.rotary_dim,
                     f"None (the whole head) or an even positive number up to the head's {self.head_dim} dimensions")
        _require_positive_numbers(self, "layer_norm_epsilon")
        _check_probabilities(self, "resid_pdrop", "embd_pdrop", "attn_pdrop")


@dataclass
class CodeGenConfig(GPTJConfig):
    """CodeGen (Salesforce/codegen-350M-mono ... 16B, multi and nl): GPT-J's decoder with one fused q/k/v
    projection, whose rows are in 4 blocks (the model-parallel shards it was trained on), each its share of the
    queries, the values and the keys; rotary_dim dimensions of each head rotate, in float32. `n_ctx` is kept for
    config.json (the reference reads it and uses n_positions)."""

    model_type: ClassVar[str] = "codegen"
    shards: ClassVar[int] = 4  # the blocks of the fused projection's rows (the reference's mp_num)

    n_ctx: int = 2048
    rotary_dim: int = 64

    def validate(self) -> None:
        super().validate()
        if self.rotary_dim is None:
            _invalid("rotary_dim", None, f"an even positive number up to the head's {self.head_dim} dimensions")
        if self.n_embd % self.shards:
            _invalid("n_embd", self.n_embd, f"a multiple of {self.shards} (the fused projection's blocks of rows)")
        _require_positive_ints(self, "n_ctx")


@dataclass
class GPTNeoConfig(PretrainedConfig):
    """GPT-Neo (EleutherAI/gpt-neo-125m, 1.3B, 2.7B): GPT-2's pre-LayerNorm blocks with learned positions, q/k/v
    projections without biases and an output projection with one, attention scores left unscaled, and a GELU MLP;
    each layer attends to every earlier position ("global") or to the last `window_size` ("local"), as
    `attention_layers` says, one kind per layer: derived from `attention_types`' runs ([[["global", "local"], 12]]
    for 24 alternating layers) unless given, as config.json gives it (the reference writes it, and reads it over
    attention_types). Its fields keep the reference's names (`num_layers`, `num_heads`); the common names read and
    set them."""

    model_type: ClassVar[str] = "gpt_neo"
    attribute_map: ClassVar[dict[str, str]] = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}
    attention_kinds: ClassVar[tuple[str, ...]] = ("global", "local")

    vocab_size: int = 50257
    max_position_embeddings: int = 2048
    hidden_size: int = 2048
    num_layers: int = 24
    attention_types: list | None = None  # None: [[["global", "local"], 12]]
    attention_layers: list[str] | None = None  # None: from attention_types
    num_heads: int = 16
    intermediate_size: int | None = None  # None: 4 * hidden_size
    window_size: int = 256
    activation_function: str = "gelu_new"
    resid_dropout: float = 0.0
    embed_dropout: float = 0.0
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    tie_word_embeddings: bool = True

    num_attention_heads = _field_alias("num_heads")
    num_hidden_layers = _field_alias("num_layers")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():
            _pop_alias(self, alias, name)
        if self.attention_types is None:
            self.attention_types = [[["global", "local"], 12]]
        if self.attention_layers is None and self._runs_are_valid():
            # Each layer's kind: every run of attention_types, its kinds repeated.
            self.attention_layers = [kind for kinds, repeats in self.attention_types for _ in range(repeats)
                                     for kind in kinds]
        super().__post_init__()

    def _runs_are_valid(self) -> bool:
        runs = self.attention_types
        return isinstance(runs, (list, tuple)) and all(
            isinstance(run, (list, tuple)) and len(run) == 2 and isinstance(run[0], (list, tuple))
            and all(kind in self.attention_kinds for kind in run[0]) and (_positive_int(run[1]) or run[1] == 0)
            for run in runs)

    @property
    def sliding_window(self) -> int:
        """How many positions a local layer sees, its own included (the name decoder.SlidingLayersDecoder reads)."""
        return self.window_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def inner_size(self) -> int:
        """The MLP's width: intermediate_size, or 4 * hidden_size for None."""
        return 4 * self.hidden_size if self.intermediate_size is None else self.intermediate_size

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "max_position_embeddings", "hidden_size", "num_layers", "num_heads",
                               "window_size")
        if self.hidden_size % self.num_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_heads={self.num_heads}")
        if self.intermediate_size is not None and not _positive_int(self.intermediate_size):
            _invalid("intermediate_size", self.intermediate_size, "None (4 * hidden_size) or a positive integer")
        if self.activation_function not in ENCODER_ACTIVATIONS:
            _invalid("activation_function", self.activation_function, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        kinds = " or ".join(map(repr, self.attention_kinds))
        if not self._runs_are_valid():
            _invalid("attention_types", self.attention_types, f"a list of [kinds, repeats] runs, each kind {kinds} "
                     "and repeats a count, such as [[['global', 'local'], 12]]")
        layers = self.attention_layers
        if not isinstance(layers, (list, tuple)) or not all(kind in self.attention_kinds for kind in layers):
            _invalid("attention_layers", layers, f"None (from attention_types) or a list of kinds, each {kinds}")
        if len(layers) != self.num_layers:
            _invalid("attention_layers", layers, f"one kind of attention per layer, num_layers={self.num_layers} of "
                     f"them (attention_types={self.attention_types} gives them, unless attention_layers is stated)")
        _require_positive_numbers(self, "layer_norm_epsilon")
        _require_probabilities(self, "resid_dropout", "embed_dropout", "attention_dropout", "classifier_dropout")


@dataclass
class FalconConfig(PretrainedConfig):
    """Falcon: LayerNorm blocks with one fused query_key_value projection and a GELU MLP, in two layouts.

    The new decoder architecture (Falcon-40B/180B, Falcon 2) groups the queries around `num_kv_heads` key/value heads
    and normalizes attention's and the MLP's input separately (`ln_attn`, `ln_mlp`; one norm when
    `num_ln_in_parallel_attn` is 1). The older one (Falcon-7B, Falcon-RW) has one key/value head (`multi_query`) or
    one per query head, attention and MLP in parallel (`parallel_attn`) or one after the other. Positions are
    rotary, or ALiBi biases (`alibi`). `bias` puts biases on every projection.
    """

    model_type: ClassVar[str] = "falcon"

    vocab_size: int = 65024
    hidden_size: int = 4544
    num_hidden_layers: int = 32
    num_attention_heads: int = 71
    num_ln_in_parallel_attn: int | None = None
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    num_kv_heads: int | None = None  # None: as many as the query heads
    alibi: bool = False
    new_decoder_architecture: bool = False
    multi_query: bool = True
    parallel_attn: bool = True
    bias: bool = False
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    ffn_hidden_size: int | None = None  # None: 4 * hidden_size
    activation: str = "gelu"
    bos_token_id: int | None = 11
    eos_token_id: int | list[int] | None = 11
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        """The key/value heads attention computes (and the cache stores): one in the multi-query layout."""
        return self.num_kv_heads if self.new_decoder_architecture or not self.multi_query else 1

    @property
    def rotary(self) -> bool:
        return not self.alibi

    def __post_init__(self):
        if "n_embed" in self.extra:  # the older name
            self.hidden_size = self.extra.pop("n_embed")
        self.extra.pop("num_key_value_heads", None)  # derived (the reference writes it to config.json)
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_attention_heads
        if self.ffn_hidden_size is None and _positive_int(self.hidden_size):
            self.ffn_hidden_size = 4 * self.hidden_size
        if self.num_ln_in_parallel_attn is None and self.new_decoder_architecture:
            self.num_ln_in_parallel_attn = 2  # the reference sets it so when it builds the layers
        _rope_fields_from_parameters(self, ("rope_theta",))
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "num_kv_heads", "ffn_hidden_size", "max_position_embeddings")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.activation not in ENCODER_ACTIVATIONS:
            _invalid("activation", self.activation, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "layer_norm_epsilon", "rope_theta")
        _check_probabilities(self, "hidden_dropout", "attention_dropout")
        if self.num_ln_in_parallel_attn not in (None, 1, 2):
            _invalid("num_ln_in_parallel_attn", self.num_ln_in_parallel_attn, "None, 1 or 2")
        if self.new_decoder_architecture:
            if self.num_attention_heads % self.num_kv_heads:
                _invalid("num_kv_heads", self.num_kv_heads, f"a divisor of num_attention_heads={self.num_attention_heads}")
            if not self.parallel_attn:
                raise ValueError(
                    "Unsupported config: parallel_attn=False with new_decoder_architecture=True; the new decoder "
                    "architecture runs attention and the MLP in parallel (the reference cannot run this config either)."
                )
        else:
            if not self.multi_query and self.num_kv_heads != self.num_attention_heads:
                _invalid("num_kv_heads", self.num_kv_heads,
                         f"num_attention_heads={self.num_attention_heads}: without multi_query or "
                         "new_decoder_architecture, each query head has its own key and value")
            if self.parallel_attn and self.num_ln_in_parallel_attn == 2:
                raise ValueError(
                    "Unsupported config: num_ln_in_parallel_attn=2 with new_decoder_architecture=False; two layer norms "
                    "(ln_attn, ln_mlp) belong to the new decoder architecture (the reference cannot run this config)."
                )
        if self.rotary and self.head_dim % 2:
            _invalid("hidden_size", self.hidden_size, "a size whose heads have an even dimension (rotary embeddings "
                     "rotate pairs), or alibi=True")
        _check_rope_scaling_of_family(self)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        values["num_key_value_heads"] = self.num_key_value_heads
        return values


@dataclass
class BloomConfig(PretrainedConfig):
    """BLOOM and BLOOMZ: LayerNorm blocks (a LayerNorm over the embeddings too) with one fused query_key_value
    projection, ALiBi position biases and a tanh-GELU MLP of 4 x hidden_size, every projection biased. With
    `apply_residual_connection_post_layernorm` each branch adds to its normalized input instead of to the residual.
    With `slow_but_exact` and `pretraining_tp` > 1 the output projections sum `pretraining_tp` slices, as the
    tensor-parallel training did. Its fields keep BLOOM's names (`n_layer`, `n_head`; `n_embed` is an older name of
    hidden_size); the common names read and set them, as in the reference."""

    model_type: ClassVar[str] = "bloom"
    attribute_map: ClassVar[dict[str, str]] = {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}

    vocab_size: int = 250880
    hidden_size: int = 64
    n_layer: int = 2
    n_head: int = 8
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    apply_residual_connection_post_layernorm: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pretraining_tp: int = 1
    slow_but_exact: bool = False
    tie_word_embeddings: bool = True

    num_hidden_layers = _field_alias("n_layer")
    num_attention_heads = _field_alias("n_head")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_head

    def __post_init__(self):
        _pop_alias(self, "n_embed", "hidden_size")
        for alias, name in self.attribute_map.items():  # BloomConfig(num_hidden_layers=2) sets n_layer
            _pop_alias(self, alias, name)
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "n_layer", "n_head", "pretraining_tp")
        if self.hidden_size % self.n_head:
            _invalid("hidden_size", self.hidden_size, f"a multiple of n_head={self.n_head}")
        _require_positive_numbers(self, "layer_norm_epsilon")
        _require_probabilities(self, "hidden_dropout", "attention_dropout")
        _require_bools(self, "apply_residual_connection_post_layernorm", "slow_but_exact")


@dataclass
class PhiConfig(PartialRotaryInBothLayouts, PretrainedConfig):
    """Phi-1, Phi-1.5 and Phi-2: each layer normalizes its input once (a LayerNorm with a bias) for attention and the
    MLP, which run in parallel and add to the residual together; q/k/v projections with biases (grouped-query with
    `num_key_value_heads`), an optional LayerNorm over each head's queries and keys (`qk_layernorm`), rotary
    embeddings over the first `partial_rotary_factor` of each head, a GELU MLP (`fc1`, `fc2`), dropout on the
    embeddings (`embd_pdrop`) and on both branches (`resid_pdrop`), and a language-model head with a bias."""

    model_type: ClassVar[str] = "phi"

    vocab_size: int = 51200
    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as the query heads
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    attention_dropout: float = 0.0
    hidden_act: str = "gelu_new"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    rope_scaling: dict[str, Any] | None = None
    qk_layernorm: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "head_dim")
        _check_key_value_heads(self)
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "layer_norm_eps", "rope_theta")
        _check_probabilities(self, "resid_pdrop", "embd_pdrop", "attention_dropout")
        _require_bools(self, "qk_layernorm")
        _check_partial_rotary_factor(self)
        _check_rope_scaling_of_family(self)


@dataclass
class StableLmConfig(PartialRotaryInBothLayouts, PretrainedConfig):
    """StableLM (StableLM-3B-4E1T, Stable Code 3B, StableLM 2): Llama's decoder with LayerNorms (with biases) in place
    of RMSNorm, rotary embeddings over the first `partial_rotary_factor` of each head, optional q/k/v biases
    (`use_qkv_bias`), an optional LayerNorm of its own for each head's queries and keys (`qk_layernorm`), and an
    optional parallel residual (`use_parallel_residual`: attention and the SwiGLU MLP read one normed input), with
    dropout on the MLP's output (`hidden_dropout`)."""

    model_type: ClassVar[str] = "stablelm"
    # The names the Llama-style attention and MLP read: a bias on q/k/v only (use_qkv_bias), none on o_proj or the MLP.
    attention_bias: ClassVar[bool] = False
    mlp_bias: ClassVar[bool] = False
    qkv_bias = property(lambda self: self.use_qkv_bias)

    vocab_size: int = 50304
    intermediate_size: int = 6912
    hidden_size: int = 2560
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32  # None: as many as the query heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.25
    rope_scaling: dict[str, Any] | None = None
    use_qkv_bias: bool = False
    qk_layernorm: bool = False
    use_parallel_residual: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        _check_key_value_heads(self)
        if self.hidden_act != "silu":
            _invalid("hidden_act", self.hidden_act, "'silu' (the SwiGLU MLP of every StableLM checkpoint)")
        _require_positive_numbers(self, "layer_norm_eps", "rope_theta")
        _check_probabilities(self, "hidden_dropout", "attention_dropout")
        _require_bools(self, "use_qkv_bias", "qk_layernorm", "use_parallel_residual")
        _check_partial_rotary_factor(self)
        _check_rope_scaling_of_family(self)


@dataclass
class GlmConfig(LlamaConfig):
    """GLM-4 (glm-4-9b-chat-hf, glm-edge): a Llama-style decoder with biases on the query, key and value projections
    (`attention_bias`; none on o_proj), one fused gate/up projection in the MLP, and rotary embeddings over the first
    `partial_rotary_factor` of each head's dimensions, turned in interleaved pairs (2i, 2i + 1).

    config.json holds rope_theta and partial_rotary_factor at the top (transformers 4) or in rope_parameters (5, whose
    dict wins): both are read, both written."""

    model_type: ClassVar[str] = "glm"
    mlp_bias: ClassVar[bool] = False  # the fused MLP has no bias
    chat_eos_token_ids: ClassVar[list[int] | None] = [151329, 151336, 151338]  # eos_token_id None: these

    vocab_size: int = 151552
    hidden_size: int = 4096
    intermediate_size: int = 13696
    num_hidden_layers: int = 40
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 2
    head_dim: int | None = 128
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1.5625e-07
    partial_rotary_factor: float = 0.5
    attention_bias: bool = True
    attention_dropout: float = 0.0
    pad_token_id: int | None = 151329
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None  # None: the chat model's three end tokens, as in the reference

    # How many of each head's dimensions rotate (the first ones); the rest pass through.
    rotary_dim = property(lambda self: int(self.head_dim * self.partial_rotary_factor))

    def __post_init__(self):
        if self.eos_token_id is None and self.chat_eos_token_ids is not None:
            self.eos_token_id = list(self.chat_eos_token_ids)
        _rope_fields_from_parameters(self, ("rope_theta", "partial_rotary_factor"))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self.check_rotary_width()
        _check_rope_scaling_of_family(self)
        _require_probabilities(self, "attention_dropout")
        _require_bools(self, "attention_bias")

    def check_rotary_width(self) -> None:
        _check_partial_rotary_factor(self)

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        return values  # rope_parameters is read by __post_init__, with its partial_rotary_factor

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = _partial_rope_parameters(self)
        return values


@dataclass
class Glm4Config(GlmConfig):
    """GLM-4-0414 (GLM-4-9B-0414, GLM-4-32B-0414, GLM-Z1): GLM-4's decoder with an RMSNorm after each branch too, on
    the attention's output (post_self_attn_layernorm) and the MLP's (post_mlp_layernorm), before the residual add."""

    model_type: ClassVar[str] = "glm4"


@dataclass
class CohereConfig(PretrainedConfig):
    """Cohere's Command R family (Command R, Command R+, Aya 23, Aya Expanse): a Llama-style decoder whose layers
    normalize their input once, with a LayerNorm without a bias (`layer_norm_eps`), for attention and the SwiGLU MLP
    in parallel; rotary embeddings over interleaved pairs of each head's dimensions; an optional LayerNorm of each
    head's queries and keys (`use_qk_norm`, Command R+); logits multiplied by `logit_scale`; a head tied to the
    embeddings."""

    model_type: ClassVar[str] = "cohere"
    # The names the Llama-style attention and MLP read: a bias on every attention projection or none, none in the MLP.
    qkv_bias: ClassVar[bool] = False
    mlp_bias: ClassVar[bool] = False

    vocab_size: int = 256000
    hidden_size: int = 8192
    intermediate_size: int = 22528
    logit_scale: float = 0.0625
    num_hidden_layers: int = 40
    num_attention_heads: int = 64
    num_key_value_heads: int | None = None  # None: as many as the query heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    rope_theta: float = 500000.0  # the reference's default; the released checkpoints set theirs
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    use_qk_norm: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = 5
    eos_token_id: int | list[int] | None = 255001
    tie_word_embeddings: bool = True

    # head_dim is not a Cohere field: the reference reads one a config.json sets, as here.
    head_dim = property(lambda self: self.extra.get("head_dim") or self.hidden_size // self.num_attention_heads)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "head_dim")
        if "head_dim" not in self.extra and self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size,
                     f"a multiple of num_attention_heads={self.num_attention_heads}, or an explicit head_dim")
        _check_key_value_heads(self)
        if self.head_dim % 2:
            _invalid("head_dim", self.head_dim, "an even number (rotary embeddings rotate pairs)")
        if self.hidden_act != "silu":
            _invalid("hidden_act", self.hidden_act, "'silu' (the SwiGLU MLP of every Cohere checkpoint)")
        _require_positive_numbers(self, "layer_norm_eps", "rope_theta", "logit_scale")
        _require_probabilities(self, "attention_dropout")
        _require_bools(self, "attention_bias", "use_qk_norm")
        _check_rope_scaling_of_family(self)

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        return LlamaConfig._from_file_layout(values)  # the same rope_parameters layout as Llama's

    def to_dict(self) -> dict[str, Any]:
        # Both layouts, as LlamaConfig writes them (transformers 4: rope_theta; 5: rope_parameters).
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


@dataclass
class Cohere2Config(CohereConfig):
    """Cohere 2 (Command R7B, Command A, Aya Expanse's successors): Cohere's layers without per-head q/k norms, in
    runs of `sliding_window_pattern` (4): the first layers of a run attend through a window of `sliding_window`
    positions and rotate their queries and keys, the last attends to everything with no positional encoding at all
    (`layer_types`, derived from the pattern when a config.json has none)."""

    model_type: ClassVar[str] = "cohere2"
    use_qk_norm: ClassVar[bool] = False  # not a Cohere 2 field

    rope_theta: float = 10000.0  # the reference's default
    sliding_window: int | None = 4096
    layer_types: list[str] | None = None

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            pattern = self.extra.get("sliding_window_pattern", 4)  # every pattern-th layer attends to everything
            if not _positive_int(pattern):
                _invalid("sliding_window_pattern", pattern, "a positive integer")
            self.layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                for i in range(self.num_hidden_layers)]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_sliding_layers(self)


@dataclass
class NemotronConfig(PartialRotaryInBothLayouts, PretrainedConfig):
    """Nemotron (Minitron, Nemotron-Mini, Mistral-NeMo-Minitron): Llama's decoder with LayerNorms whose weights are
    stored minus one (`norm_eps`), an MLP without a gate over a squared ReLU (`relu2`), rotary embeddings over the
    first `partial_rotary_factor` of each head (0.5), optional biases on the attention (`attention_bias`) and the MLP
    (`mlp_bias`), and an untied head."""

    model_type: ClassVar[str] = "nemotron"
    qkv_bias: ClassVar[bool] = False  # the name Llama's attention reads: attention_bias puts one on all four

    vocab_size: int = 256000
    hidden_size: int = 6144
    intermediate_size: int = 24576
    num_hidden_layers: int = 32
    num_attention_heads: int = 48
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    num_key_value_heads: int | None = None  # None: as many as the query heads
    hidden_act: str = "relu2"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.0134
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3
    tie_word_embeddings: bool = False

    def __post_init__(self):
        if self.head_dim is None and _positive_int(self.hidden_size) and _positive_int(self.num_attention_heads):
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        _check_key_value_heads(self)
        if self.hidden_act not in ("relu2", "relu", "silu", "gelu"):
            _invalid("hidden_act", self.hidden_act, "'relu2' (Nemotron's squared ReLU), 'relu', 'silu' or 'gelu'")
        _require_positive_numbers(self, "norm_eps", "rope_theta")
        _require_probabilities(self, "attention_dropout")
        _require_bools(self, "attention_bias", "mlp_bias")
        _check_partial_rotary_factor(self)
        _check_rope_scaling_of_family(self)


@dataclass
class _BartShapedConfig(PretrainedConfig):
    """The fields BART, Marian, M2M100, mBART and Pegasus share, with the defaults BART's, Marian's and mBART's
    references give them: an encoder and a decoder of their own depths, widths and heads. The common names
    (hidden_size, num_attention_heads, num_hidden_layers) read and set d_model and the encoder's fields, as in the
    reference."""

    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    scale_embedding: bool = False
    use_cache: bool = True
    is_encoder_decoder: bool = True
    is_decoder: bool = False
    tie_word_embeddings: bool = True

    hidden_size = _field_alias("d_model")
    num_attention_heads = _field_alias("encoder_attention_heads")
    num_hidden_layers = _field_alias("encoder_layers")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # BartConfig(hidden_size=64) sets d_model, as the reference
            _pop_alias(self, alias, name)
        super().__post_init__()

    def validate(self, *more_probabilities: str) -> None:
        """Positive sizes, heads that divide d_model, a known activation, dropouts and LayerDrop in [0, 1)."""
        _require_positive_ints(self, "vocab_size", "max_position_embeddings", "d_model", "encoder_layers",
                               "encoder_ffn_dim", "encoder_attention_heads", "decoder_layers", "decoder_ffn_dim",
                               "decoder_attention_heads")
        for heads in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, heads):
                _invalid("d_model", self.d_model, f"a multiple of {heads}={getattr(self, heads)}")
        if self.activation_function not in ENCODER_ACTIVATIONS:
            _invalid("activation_function", self.activation_function, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop",
                     *more_probabilities):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                _invalid(name, value, "a probability in [0, 1)")


@dataclass
class BartConfig(_BartShapedConfig):
    """BART: a post-LayerNorm encoder-decoder with learned positions (offset by 2), a LayerNorm over the embeddings
    of each stack, one token table shared by encoder, decoder and LM head."""

    model_type: ClassVar[str] = "bart"

    classifier_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 2

    def __post_init__(self):
        if self.num_labels is None and self.id2label is None:
            self.num_labels = 3  # the reference's BART default (MNLI's three classes)
        # A generation option, not a field: GenerationConfig.from_model_config takes options from the kept keys.
        self.extra.setdefault("forced_eos_token_id", 2)
        super().__post_init__()

    def validate(self) -> None:
        super().validate("classifier_dropout")


@dataclass
class MarianConfig(_BartShapedConfig):
    """Marian (Helsinki-NLP's opus-mt translation models): BART's encoder-decoder with fixed sinusoidal positions
    counted from 0, no LayerNorm over the embeddings, and no classification heads. One token table serves the
    encoder, the decoder and the LM head unless `share_encoder_decoder_embeddings` is False; then the decoder has its
    own of `decoder_vocab_size` rows (default: vocab_size), which the LM head scores. The padding token starts
    decoding."""

    model_type: ClassVar[str] = "marian"

    vocab_size: int = 58101
    decoder_vocab_size: int | None = None
    share_encoder_decoder_embeddings: bool = True
    decoder_start_token_id: int | None = 58100
    pad_token_id: int | None = 58100
    eos_token_id: int | list[int] | None = 0
    bos_token_id: int | None = None

    def __post_init__(self):
        self.decoder_vocab_size = self.decoder_vocab_size or self.vocab_size
        self.extra.setdefault("forced_eos_token_id", 0)  # a generation option, as BART's
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "decoder_vocab_size")


@dataclass
class M2M100Config(_BartShapedConfig):
    """M2M100 and NLLB (Facebook's many-to-many translation models): BART's encoder-decoder with pre-LayerNorm
    layers and a LayerNorm after each stack, fixed sinusoidal positions counted from padding_idx + 1 over the
    non-padding tokens, scaled token embeddings, one token table for encoder, decoder and LM head, and LayerDrop
    (5% by default, while training). Decoding starts from </s> (decoder_start_token_id 2); the target language's
    code is forced as the first generated token (generate's forced_bos_token_id)."""

    model_type: ClassVar[str] = "m2m_100"

    vocab_size: int = 128112
    encoder_layerdrop: float = 0.05
    decoder_layerdrop: float = 0.05
    activation_function: str = "relu"
    attention_dropout: float = 0.1
    scale_embedding: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 2

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool) or \
                not 0 <= self.pad_token_id < self.vocab_size:
            _invalid("pad_token_id", self.pad_token_id,
                     f"a token id below vocab_size={self.vocab_size} (positions count from it)")


@dataclass
class MBartConfig(_BartShapedConfig):
    """mBART (multilingual BART: mbart-large-cc25, mbart-large-50 and their translation fine-tunes): BART's
    encoder-decoder with each layer's LayerNorms before its attention and feed-forward, and one more LayerNorm after
    each stack's last layer. No decoder_start_token_id by default: the labels' language code, wrapped to the front,
    starts the decoder's inputs in training, and generation starts from the checkpoint's start id."""

    model_type: ClassVar[str] = "mbart"

    classifier_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = None

    def __post_init__(self):
        self.extra.setdefault("forced_eos_token_id", 2)  # a generation option, as BART's
        super().__post_init__()

    def validate(self) -> None:
        super().validate("classifier_dropout")


@dataclass
class PegasusConfig(_BartShapedConfig):
    """Pegasus (pegasus-large, pegasus-xsum, pegasus-cnn_dailymail...): mBART's pre-LayerNorm layers and final
    LayerNorms with Marian's fixed sinusoidal positions from row 0 and no LayerNorm over the embeddings; one token
    table serves the encoder, the decoder and the LM head. The padding token starts decoding."""

    model_type: ClassVar[str] = "pegasus"

    decoder_start_token_id: int | None = 0
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1

    def __post_init__(self):
        self.extra.setdefault("forced_eos_token_id", 1)  # a generation option, as BART's
        super().__post_init__()


@dataclass
class BlenderbotConfig(_BartShapedConfig):
    """Blenderbot (blenderbot-400M-distill, blenderbot-1B-distill, blenderbot-3B: open-domain chat): mBART's
    pre-LayerNorm layers and final LayerNorms, learned positions read from row 0 (BART's offset of 2 dropped), no
    LayerNorm over the embeddings; one token table serves the encoder, the decoder and the LM head. Decoding starts
    from <s> (decoder_start_token_id 1); </s> is forced at the end and the generation option
    encoder_no_repeat_ngram_size (3) bans repeating the prompt's trigrams, as the reference's config sets them."""

    model_type: ClassVar[str] = "blenderbot"

    vocab_size: int = 8008
    max_position_embeddings: int = 128
    encoder_layers: int = 2
    encoder_ffn_dim: int = 10240
    encoder_attention_heads: int = 32
    decoder_layers: int = 24
    decoder_ffn_dim: int = 10240
    decoder_attention_heads: int = 32
    d_model: int = 2560
    decoder_start_token_id: int | None = 1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self):
        self.extra.setdefault("forced_eos_token_id", 2)  # generation options, as BART's
        self.extra.setdefault("encoder_no_repeat_ngram_size", 3)
        super().__post_init__()


@dataclass
class BlenderbotSmallConfig(_BartShapedConfig):
    """Blenderbot-Small (blenderbot_small-90M): BART's post-LayerNorm layers with learned positions read from row 0
    (no offset). The decoder normalizes its token embeddings before adding the positions, where the encoder
    normalizes their sum, and only the encoder scales its token embeddings (scale_embedding), as in the reference.
    Decoding starts from __start__ (decoder_start_token_id 1); __end__ (2) is forced at the end."""

    model_type: ClassVar[str] = "blenderbot-small"

    max_position_embeddings: int = 512
    encoder_layers: int = 8
    encoder_ffn_dim: int = 2048
    decoder_layers: int = 8
    decoder_ffn_dim: int = 2048
    d_model: int = 512
    decoder_start_token_id: int | None = 1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self):
        self.extra.setdefault("forced_eos_token_id", 2)  # a generation option, as BART's
        super().__post_init__()


@dataclass
class ModernBertConfig(PretrainedConfig):
    """ModernBERT: a pre-LayerNorm encoder without position embeddings, rotary positions with one base for the
    full-attention layers and another for the sliding ones (`rope_parameters`, keyed by layer type), a sliding
    band of `local_attention` tokens (half on each side) on every layer but one in `global_attn_every_n_layers`,
    a GeGLU MLP, and LayerNorms and projections without biases unless `norm_bias`, `attention_bias` or `mlp_bias`
    say so. Older config.json files give the bases as `global_rope_theta` and `local_rope_theta`, and the
    layer pattern only as `global_attn_every_n_layers`; both are read."""

    model_type: ClassVar[str] = "modernbert"
    layer_kinds: ClassVar[tuple[str, ...]] = ("full_attention", "sliding_attention")
    rope_bases: ClassVar[dict[str, float]] = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int | None = 50283
    eos_token_id: int | list[int] | None = 50282
    bos_token_id: int | None = 50281
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None  # None: full attention on every global_attn_every_n_layers-th layer from 0
    rope_parameters: dict[str, dict] | None = None  # layer type -> {"rope_type", "rope_theta", ...}
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    deterministic_flash_attn: bool = False
    sparse_prediction: bool = False
    sparse_pred_ignore_index: int = -100
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            every = self.extra.get("global_attn_every_n_layers", 3)  # kept in extra, so it is saved as read
            if not _positive_int(every):
                _invalid("global_attn_every_n_layers", every, "a positive integer")
            self.layer_types = ["sliding_attention" if i % every else "full_attention"
                                for i in range(self.num_hidden_layers)]
        # The older keys become rope_parameters, as the reference reads them (and, like it, are not written back).
        old_bases = {"full_attention": self.extra.pop("global_rope_theta", None),
                     "sliding_attention": self.extra.pop("local_rope_theta", None)}
        scaling = self.extra.pop("rope_scaling", None)
        parameters = copy.deepcopy(self.rope_parameters) if isinstance(self.rope_parameters, dict) else {}
        for kind in self.layer_kinds:
            entry = parameters.get(kind)
            entry = {"rope_type": "default", **(entry or {}), **(scaling or {})}
            entry.setdefault("rope_theta", old_bases[kind] or self.rope_bases[kind])
            parameters[kind] = entry
        self.rope_parameters = parameters
        super().__post_init__()

    @property
    def sliding_window(self) -> int:
        """How far a sliding layer's query sees on each side: half of `local_attention`, as in the reference."""
        return self.local_attention // 2

    @sliding_window.setter
    def sliding_window(self, value: int) -> None:
        self.local_attention = 2 * value

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "max_position_embeddings", "local_attention")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads} "
                     "giving an even head size (rotary embeddings rotate pairs)")
        for name in ("hidden_activation", "classifier_activation"):
            if getattr(self, name) not in ENCODER_ACTIVATIONS:
                _invalid(name, getattr(self, name), f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "norm_eps")
        for name in ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                _invalid(name, value, "a probability in [0, 1)")
        if self.classifier_pooling not in ("cls", "mean"):
            _invalid("classifier_pooling", self.classifier_pooling, "'cls' or 'mean'")
        if (not isinstance(self.layer_types, list) or len(self.layer_types) != self.num_hidden_layers
                or any(kind not in self.layer_kinds for kind in self.layer_types)):
            _invalid("layer_types", self.layer_types, f"a list of num_hidden_layers={self.num_hidden_layers} "
                     f"entries, each one of {', '.join(self.layer_kinds)}")
        for kind, entry in self.rope_parameters.items():
            if kind not in self.layer_kinds:
                _invalid("rope_parameters", self.rope_parameters, f"a dict keyed by {', '.join(self.layer_kinds)}")
            if entry.get("rope_type") not in ("default", "linear"):
                raise ValueError(
                    f"Unsupported config: rope_parameters[{kind!r}].rope_type={entry.get('rope_type')!r}; openformers "
                    "implements 'default' and 'linear' rotary positions for ModernBERT."
                )
            _check_rope_scaling(entry)
            if isinstance(entry["rope_theta"], bool) or not isinstance(entry["rope_theta"], (int, float)) \
                    or entry["rope_theta"] <= 0:
                _invalid(f"rope_parameters[{kind!r}].rope_theta", entry["rope_theta"], "a positive number")

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values.pop("reference_compile", None)  # a torch.compile switch of the reference's, which it does not save
        return values


@dataclass
class AlbertConfig(PretrainedConfig):
    """ALBERT: BERT's post-LayerNorm blocks over embeddings of `embedding_size` projected up to `hidden_size`, with
    the layers' weights shared: `num_hidden_layers` steps run through `num_hidden_groups` groups of
    `inner_group_num` layers each (consecutive steps share a group)."""

    model_type: ClassVar[str] = "albert"

    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 4096
    num_hidden_layers: int = 12
    num_hidden_groups: int = 1
    num_attention_heads: int = 64
    intermediate_size: int = 16384
    inner_group_num: int = 1
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float | None = 0.1  # None: hidden_dropout_prob
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                               "num_hidden_groups", "num_attention_heads", "intermediate_size", "inner_group_num",
                               "max_position_embeddings", "type_vocab_size")
        _check_encoder_fields(self, "hidden_act", ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                                   "classifier_dropout_prob"))


@dataclass
class MobileBertConfig(BertConfig):
    """MobileBERT: BERT's post-norm encoder, narrowed inside each layer to `intra_bottleneck_size` (`use_bottleneck`)
    with `num_feedforward_networks` feed-forward blocks per layer, element-wise affine "no_norm" norms, and token
    embeddings of `embedding_size` read three at a time (`trigram_input`) and projected to `hidden_size`."""

    model_type: ClassVar[str] = "mobilebert"

    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    classifier_activation: bool = True

    @property
    def true_hidden_size(self) -> int:
        """The width inside each layer: the bottleneck's, or hidden_size without one."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "embedding_size", "intra_bottleneck_size", "num_feedforward_networks")
        if self.true_hidden_size % self.num_attention_heads:
            _invalid("intra_bottleneck_size", self.intra_bottleneck_size,
                     f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.normalization_type not in ("no_norm", "layer_norm"):
            _invalid("normalization_type", self.normalization_type, "'no_norm' or 'layer_norm'")
        if self.embedding_size > self.hidden_size:
            _invalid("embedding_size", self.embedding_size, f"at most hidden_size={self.hidden_size} (the masked LM "
                     "predicts with the embeddings and hidden_size - embedding_size more rows)")
        if self.is_decoder:
            _invalid("is_decoder", self.is_decoder, "False (MobileBERT is an encoder)")


@dataclass
class ElectraConfig(BertConfig):
    """ELECTRA: BERT's encoder over embeddings of `embedding_size`, projected up to `hidden_size` when they differ;
    no pooler. The discriminator and the generator are both this network, at different sizes. Multiple choice
    reads a `summary_type` vector of each choice (the first token by default) through the `summary_*` layers."""

    model_type: ClassVar[str] = "electra"

    embedding_size: int = 128
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_activation: str | None = "gelu"
    summary_last_dropout: float = 0.1

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "embedding_size")
        _validate_summary(self, "ELECTRA")


def _validate_summary(config, family: str) -> None:
    """The summary_* fields of a multiple-choice head that reads one vector per choice (ELECTRA's, RoFormer's)."""
    if config.summary_type not in ELECTRA_SUMMARY_TYPES:
        _invalid("summary_type", config.summary_type, f"one of {', '.join(ELECTRA_SUMMARY_TYPES)}")
    if config.summary_activation and config.summary_activation not in (*ENCODER_ACTIVATIONS, "tanh"):
        _invalid("summary_activation", config.summary_activation,
                 f"None or one of {', '.join((*ENCODER_ACTIVATIONS, 'tanh'))}")
    for name in ("summary_last_dropout", "summary_first_dropout"):
        value = getattr(config, name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            _invalid(name, value, "a probability in [0, 1)")
    if config.extra.get("summary_proj_to_labels"):
        raise ValueError(
            f"Unsupported config: summary_proj_to_labels=True; {family}'s multiple-choice head projects the summary "
            "to hidden_size before its one-score classifier (leave summary_proj_to_labels unset)."
        )


# How ELECTRA's multiple-choice head reads one vector per choice ("cls_index" without indices: the last token).
ELECTRA_SUMMARY_TYPES = ("first", "last", "mean", "cls_index")


@dataclass
class RoFormerConfig(BertConfig):
    """RoFormer: BERT's encoder with rotary positions (sinusoidal, pairs of adjacent dimensions) turning q and k in
    every layer (and v with `rotary_value`) in place of learned position embeddings; embeddings of `embedding_size`
    (hidden_size when None), projected up when narrower. Its multiple-choice head reads the summary_* fields as
    ELECTRA's does, with the reference's defaults for a config that has none: the last token, as it is."""

    model_type: ClassVar[str] = "roformer"

    vocab_size: int = 50000
    embedding_size: int | None = None  # None: hidden_size
    max_position_embeddings: int = 1536
    rotary_value: bool = False
    use_cache: bool = True  # the causal LM returns its cache unless told otherwise
    summary_type: str = "last"
    summary_use_proj: bool = False
    summary_activation: str | None = None
    summary_last_dropout: float = 0.0

    def __post_init__(self):
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "embedding_size")
        if (self.hidden_size // self.num_attention_heads) % 2:
            _invalid("hidden_size", self.hidden_size, f"an even head size (hidden_size / num_attention_heads="
                     f"{self.num_attention_heads}) for the rotary pairs")
        _validate_summary(self, "RoFormer")


@dataclass
class MPNetConfig(PretrainedConfig):
    """MPNet: BERT's post-LayerNorm blocks without token types, positions counted as RoBERTa's (from 2, padding at
    1), and a learned bias per head on each attention score from the bucketed relative position of query and key
    (32 buckets over distances up to 128, shared by every layer)."""

    model_type: ClassVar[str] = "mpnet"

    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    relative_attention_num_buckets: int = 32
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "max_position_embeddings")
        _check_encoder_fields(self, "hidden_act", ("hidden_dropout_prob", "attention_probs_dropout_prob"))
        # The reference buckets relative positions into 32 whatever this says; the table needs those 32 rows.
        if not _positive_int(self.relative_attention_num_buckets) or self.relative_attention_num_buckets < 32:
            _invalid("relative_attention_num_buckets", self.relative_attention_num_buckets,
                     "an integer of at least 32 (MPNet buckets relative positions into 32)")
        if self.max_position_embeddings < 3:
            _invalid("max_position_embeddings", self.max_position_embeddings,
                     "at least 3 (MPNet's positions start at 2)")


def _check_encoder_fields(config: PretrainedConfig, activation: str, dropouts: tuple[str, ...]) -> None:
    """hidden_size a multiple of the heads, a known activation, and dropouts that are probabilities (or None)."""
    if config.hidden_size % config.num_attention_heads:
        _invalid("hidden_size", config.hidden_size, f"a multiple of num_attention_heads={config.num_attention_heads}")
    if getattr(config, activation) not in ENCODER_ACTIVATIONS:
        _invalid(activation, getattr(config, activation), f"one of {', '.join(ENCODER_ACTIVATIONS)}")
    for name in dropouts:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1):
            _invalid(name, value, "a probability in [0, 1)")


@dataclass
class _OlmoFamilyConfig(LlamaConfig):
    """What every OLMo shares: Llama's fields with OLMo's vocabulary and special tokens, attention dropout, and MLPs
    without biases."""

    vocab_size: int = 50304
    attention_dropout: float = 0.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 50279

    def validate(self) -> None:
        super().validate()
        if self.mlp_bias:
            _invalid("mlp_bias", self.mlp_bias, f"False ({self.model_type} MLPs have no biases)")
        _require_probabilities(self, "attention_dropout")


@dataclass
class Olmo2Config(_OlmoFamilyConfig):
    """OLMo 2: a Llama decoder whose RMSNorms come after attention and after the MLP (on each branch, before the
    residual add) instead of before them, with an RMSNorm over the queries of all heads together and one over the
    keys (not per head)."""

    model_type: ClassVar[str] = "olmo2"

    rms_norm_eps: float = 1e-5


@dataclass
class OlmoConfig(_OlmoFamilyConfig):
    """OLMo (the first, OLMo-1B-hf, OLMo-7B-0424-hf): a Llama decoder whose norms are LayerNorms without any
    parameters (no weight, no bias; epsilon 1e-5), with the queries, keys and values clamped to +-`clip_qkv` after
    their projections when that is set."""

    model_type: ClassVar[str] = "olmo"

    clip_qkv: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.clip_qkv is not None:
            _require_positive_numbers(self, "clip_qkv")


@dataclass
class OlmoeConfig(OlmoConfig):
    """OLMoE (OLMoE-1B-7B-0924): OLMo's attention with RMSNorms (before attention and before the feed-forward part, as
    Llama's, and over the queries and the keys of all heads at once, as OLMo 2's), `clip_qkv`, and a sparse mixture of
    `num_experts` SwiGLU experts of `intermediate_size` in every layer, `num_experts_per_tok` of them per token, their
    weights renormalized only with `norm_topk_prob`; with `output_router_logits` the causal LM adds
    `router_aux_loss_coef` times the load-balancing loss to its loss."""

    model_type: ClassVar[str] = "olmoe"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "num_experts"}

    hidden_size: int = 2048
    intermediate_size: int = 2048
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    num_experts_per_tok: int = 8
    num_experts: int = 64
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False

    num_local_experts = _field_alias("num_experts")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "num_experts")
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_experts(self, "num_experts")


@dataclass
class Olmo3Config(LayerTypedRope, Olmo2Config):
    """OLMo 3 (Olmo-3-7B, Olmo-3-1025-7B, Olmo-3-32B...): OLMo 2's layers, those `layer_types` marks
    "sliding_attention" (by default three in four, every fourth attending to everything) seeing only the last
    `sliding_window` positions. The full layers rotate by rope_theta and rope_scaling (Olmo-3-1025-7B's: YaRN); the
    sliding layers by an unscaled rotation of base `sliding_rope_theta` (config.json's
    rope_parameters["sliding_attention"]). As the reference reads it, a config.json in the older layout (a top-level
    rope_theta and rope_scaling) sets the full layers' only, the sliding layers' base staying 500000."""

    model_type: ClassVar[str] = "olmo3"
    sliding_theta_field: ClassVar[str] = "sliding_rope_theta"

    rope_theta: float = 500000.0
    sliding_window: int | None = 4096
    layer_types: list[str] | None = None  # None: sliding, sliding, sliding, full, ... (the reference's default)
    sliding_rope_theta: float = 500000.0

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            self.layer_types = ["sliding_attention" if (i + 1) % 4 else "full_attention"
                                for i in range(self.num_hidden_layers)]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_sliding_layers(self)
        _require_positive_numbers(self, "sliding_rope_theta")

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["rope_parameters"] = _rope_parameters_by_layer_type(self, values.pop("sliding_rope_theta"))
        return values


@dataclass
class Exaone4Config(LlamaConfig):
    """LG's EXAONE 4.0 (EXAONE-4.0-1.2B, -32B): a Llama decoder with an RMSNorm over each head's queries and keys (as
    Qwen3's), its norms after attention and after the MLP only (as OLMo 2's), no biases, and with a `sliding_window`
    the layers `layer_types` marks "sliding_attention" (by default all but every `sliding_window_pattern`-th; a string
    such as "LLLG" spells the run, as llama.cpp's converter reads it) see only the last sliding_window positions and
    alone rotate their queries and keys; the "full_attention" layers have no positional encoding. Without a window
    every layer attends to everything and rotates."""

    model_type: ClassVar[str] = "exaone4"
    attention_bias: ClassVar[bool] = False  # not EXAONE 4.0 fields: its projections have no biases
    mlp_bias: ClassVar[bool] = False

    vocab_size: int = 102400
    hidden_size: int = 4096
    intermediate_size: int = 16384
    num_key_value_heads: int | None = 32
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    sliding_window: int | None = 4096
    sliding_window_pattern: int | str | None = 4
    layer_types: list[str] | None = None
    bos_token_id: int | None = 0

    def __post_init__(self):
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            pattern = self.sliding_window_pattern
            if self.sliding_window is None:
                sliding = [False] * self.num_hidden_layers
            elif _positive_int(pattern):
                sliding = [(i + 1) % pattern != 0 for i in range(self.num_hidden_layers)]
            elif isinstance(pattern, str) and pattern and set(pattern) <= {"L", "G"}:
                sliding = [pattern[i % len(pattern)] == "L" for i in range(self.num_hidden_layers)]
            else:
                _invalid("sliding_window_pattern", pattern, "a positive integer or a string of L (sliding) and G "
                         "(full) layers, when layer_types is not given")
            self.layer_types = ["sliding_attention" if windowed else "full_attention" for windowed in sliding]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_sliding_layers(self)
        _require_probabilities(self, "attention_dropout")

    def rotates(self, layer_idx: int) -> bool:
        """Whether the layer turns its queries and keys: every layer without a window, else the sliding ones only."""
        return self.sliding_window is None or self.layer_types[layer_idx] == "sliding_attention"


@dataclass
class ExaoneConfig(LlamaConfig):
    """LG's EXAONE 3.0 and 3.5 (EXAONE-3.5-2.4B-Instruct, -7.8B, -32B): Llama's decoder under other names. The
    reference runs Llama's classes for it; its checkpoints name the modules otherwise (llama.EXAONE_NAMES), and its
    config.json names three fields otherwise: num_layers, layer_norm_epsilon and activation_function."""

    model_type: ClassVar[str] = "exaone"
    attribute_map: ClassVar[dict[str, str]] = {
        "num_layers": "num_hidden_layers", "layer_norm_epsilon": "rms_norm_eps", "activation_function": "hidden_act",
    }

    vocab_size: int = 102400
    intermediate_size: int = 14336
    num_key_value_heads: int | None = 8
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    attention_dropout: float = 0.0
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 361

    num_layers = _field_alias("num_hidden_layers")
    layer_norm_epsilon = _field_alias("rms_norm_eps")
    activation_function = _field_alias("hidden_act")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # ExaoneConfig(num_layers=2) sets num_hidden_layers
            _pop_alias(self, alias, name)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")


@dataclass
class InternLM3Config(LlamaConfig):
    """Shanghai AI Laboratory's InternLM3 (internlm3-8b-instruct): Llama's decoder, which the reference runs with
    Llama's classes. The released config asks for dynamic NTK rope scaling (factor 6, past 32768 positions) and names
    attention_bias and mlp_bias `qkv_bias` and `bias`, which must agree: the reference's Llama layers take one bias
    setting for q/k/v/o and another for the MLP, and it refuses InternLM3 configs where they differ."""

    model_type: ClassVar[str] = "internlm3"
    attribute_map: ClassVar[dict[str, str]] = {"qkv_bias": "attention_bias", "bias": "mlp_bias"}

    vocab_size: int = 128512
    intermediate_size: int = 10240
    num_hidden_layers: int = 48
    num_key_value_heads: int | None = 2
    head_dim: int | None = 128
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    pad_token_id: int | None = 2

    qkv_bias = _field_alias("attention_bias")  # Llama's models read it for q/k/v: attention_bias's value, as theirs
    bias = _field_alias("mlp_bias")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # InternLM3Config(qkv_bias=True) sets attention_bias
            _pop_alias(self, alias, name)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads} "
                     "(the reference's InternLM3 config requires it, whatever head_dim says)")
        if self.mlp_bias != self.attention_bias:
            _invalid("mlp_bias", self.mlp_bias, f"attention_bias={self.attention_bias} (config.json's bias and "
                     "qkv_bias: the reference refuses InternLM3 configs where they differ)")


@dataclass
class Starcoder2Config(PretrainedConfig):
    """StarCoder2: a decoder with LayerNorms (with biases) before attention and the MLP, a plain two-layer MLP
    (`c_fc`, the activation, `c_proj`), biases on every projection when `use_bias` is set, rotary positions,
    grouped-query attention over an optional sliding window, and dropout on the embeddings and on both residual
    branches."""

    model_type: ClassVar[str] = "starcoder2"
    qkv_bias: ClassVar[bool] = False  # the biases are all or none (use_bias), read through attention_bias

    vocab_size: int = 49152
    hidden_size: int = 3072
    intermediate_size: int = 12288
    num_hidden_layers: int = 30
    num_attention_heads: int = 24
    num_key_value_heads: int = 2
    hidden_act: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.018042
    norm_epsilon: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    sliding_window: int | None = None
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    use_bias: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    tie_word_embeddings: bool = True

    # The names the Llama-style attention reads: every projection's bias follows use_bias, and head_dim is not a
    # StarCoder2 field (the reference reads one a config.json sets, as here).
    attention_bias = property(lambda self: self.use_bias)
    head_dim = property(lambda self: self.extra.get("head_dim") or self.hidden_size // self.num_attention_heads)

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "head_dim")
        _check_key_value_heads(self)
        if self.head_dim % 2:
            _invalid("head_dim", self.head_dim, "an even number (rotary embeddings rotate pairs)")
        if self.hidden_act not in ENCODER_ACTIVATIONS:
            _invalid("hidden_act", self.hidden_act, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_positive_numbers(self, "norm_epsilon", "rope_theta")
        _require_probabilities(self, "attention_dropout", "residual_dropout", "embedding_dropout")
        if self.sliding_window is not None and not _positive_int(self.sliding_window):
            _invalid("sliding_window", self.sliding_window, "None or a positive integer")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)

    @classmethod
    def _from_file_layout(cls, values: dict[str, Any]) -> dict[str, Any]:
        return LlamaConfig._from_file_layout(values)  # the same rope_parameters layout as Llama's

    def to_dict(self) -> dict[str, Any]:
        # Both layouts, as LlamaConfig writes them (transformers 4: rope_theta; 5: rope_parameters).
        values = super().to_dict()
        values["rope_parameters"] = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return values


def _check_experts(config: PretrainedConfig, count_name: str, allow_none: bool = False) -> None:
    """A sparse mixture of experts: `num_experts_per_tok` of the `count_name` experts run for each token."""
    count = getattr(config, count_name)
    if not (_positive_int(count) or (allow_none and count == 0 and not isinstance(count, bool))):
        _invalid(count_name, count, "a non-negative integer" if allow_none else "a positive integer")
    top_k = config.num_experts_per_tok
    if not _positive_int(top_k) or (count and top_k > count):
        _invalid("num_experts_per_tok", top_k, f"a positive integer of at most {count_name}={count}")
    value = config.router_aux_loss_coef
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        _invalid("router_aux_loss_coef", value, "a non-negative number")


def _pop_alias(config: PretrainedConfig, alias: str, name: str) -> None:
    """A value config.json gives under the reference's other name for a field (its `attribute_map`) sets the field."""
    if alias in config.extra:
        setattr(config, name, config.extra.pop(alias))


@dataclass
class HunYuanMoEV1Config(HunYuanDenseV1Config):
    """Tencent's Hunyuan mixture of experts (Hunyuan-A13B, Pretrain and Instruct): the Hunyuan dense decoder (queries
    and keys RMS-normed after their rotation, rope scaling "dynamic" with a fixed `alpha`) whose MLP is a mixture of
    `num_experts` SwiGLU experts of `intermediate_size`, of which each token runs its `moe_topk` best by the softmax
    of a float32 router's scores (renormalized over the chosen ones; one count for every layer, or a list of one per
    layer, as the released config gives them), plus a shared SwiGLU MLP of `intermediate_size` that every token runs.
    With `output_router_logits` the heads return the router logits; the reference computes no load-balancing loss."""

    model_type: ClassVar[str] = "hunyuan_v1_moe"
    attribute_map: ClassVar[dict[str, str]] = {"num_experts_per_tok": "moe_topk", "num_local_experts": "num_experts"}

    num_experts: int = 1
    moe_topk: int | list[int] = 1
    output_router_logits: bool = False

    num_local_experts = _field_alias("num_experts")
    num_experts_per_tok = _field_alias("moe_topk")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "num_experts")
        _pop_alias(self, "num_experts_per_tok", "moe_topk")
        super().__post_init__()

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts: every Hunyuan-MoE layer does."""
        return True

    def top_k(self, layer_idx: int) -> int:
        """How many experts each token runs in layer `layer_idx`."""
        return self.moe_topk[layer_idx] if isinstance(self.moe_topk, list) else self.moe_topk

    def validate(self) -> None:
        super().validate()
        if not _positive_int(self.num_experts):
            _invalid("num_experts", self.num_experts, "a positive integer (one count for every layer: the "
                     "reference's experts take no list)")
        counts = self.moe_topk if isinstance(self.moe_topk, list) else [self.moe_topk]
        if (isinstance(self.moe_topk, list) and len(counts) != self.num_hidden_layers) or not all(
                _positive_int(k) and k <= self.num_experts for k in counts):
            _invalid("moe_topk", self.moe_topk, f"a positive integer of at most num_experts={self.num_experts}, or a "
                     f"list of num_hidden_layers={self.num_hidden_layers} of them")


@dataclass
class MixtralConfig(MistralConfig):
    """Mixtral: Mistral's decoder whose MLP is a sparse mixture of `num_local_experts` SwiGLU experts, of which a
    router (a linear layer and a softmax) picks `num_experts_per_tok` per token, their weights renormalized to sum
    to 1. With `output_router_logits` the causal LM adds `router_aux_loss_coef` times the load-balancing loss to
    its loss; `router_jitter_noise` scales the experts' input by noise while training."""

    model_type: ClassVar[str] = "mixtral"
    attribute_map: ClassVar[dict[str, str]] = {"num_experts": "num_local_experts"}

    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    sliding_window: int | None = None
    num_experts_per_tok: int = 2
    num_local_experts: int = 8
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001
    router_jitter_noise: float = 0.0

    num_experts = _field_alias("num_local_experts")

    def __post_init__(self):
        _pop_alias(self, "num_experts", "num_local_experts")
        super().__post_init__()

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts: every Mixtral layer does (Qwen-MoE's configs name dense ones)."""
        return True

    def validate(self) -> None:
        super().validate()
        _check_experts(self, "num_local_experts")
        noise = self.router_jitter_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
            _invalid("router_jitter_noise", noise, "a number in [0, 1)")


@dataclass
class PhimoeConfig(MixtralConfig):
    """PhiMoE (Phi-3.5-MoE): Mixtral's decoder with LayerNorms (a weight and a bias, eps `rms_norm_eps`), biases on the
    attention's projections (`attention_bias`) and on the language-model head (`lm_head_bias`), longrope scaling
    whose cos and sin are scaled by its `short_mscale` or `long_mscale`, and the sparsemixer routing: two experts per
    token, each weighted by a softmax over the scores within `router_jitter_noise` (relative) of its own, and drawn
    rather than taken best while training; `input_jitter_noise` scales the experts' input by noise while training."""

    model_type: ClassVar[str] = "phimoe"
    rope_types: ClassVar[tuple[str, ...]] = ("default", "longrope")

    vocab_size: int = 32064
    intermediate_size: int = 6400
    rope_theta: float = 1e6
    sliding_window: int | None = None
    num_local_experts: int = 16
    router_jitter_noise: float = 0.01
    input_jitter_noise: float = 0.0
    lm_head_bias: bool = False

    def model_rope_scaling(self) -> dict[str, Any] | None:
        """Longrope as layers.RotaryEmbedding takes it, its cos and sin scaled by short_mscale, and past
        original_max_position_embeddings by long_mscale (`long_attention_factor`), the reference's PhiMoE rule."""
        if self.rope_scaling is None or self.rope_scaling.get("rope_type") != "longrope":
            return self.rope_scaling  # None, or a kind validate() refuses by name
        scaling = {key: value for key, value in self.rope_scaling.items() if key not in ("short_mscale", "long_mscale")}
        for key in ("short_mscale", "long_mscale"):
            value = self.rope_scaling.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _invalid(f"rope_scaling.{key}", value, "a number (PhiMoE's longrope scales cos and sin by it)")
        return {**scaling, "factor": 1.0, "attention_factor": self.rope_scaling["short_mscale"],
                "long_attention_factor": self.rope_scaling["long_mscale"]}

    def validate(self) -> None:
        super().validate()
        if self.num_experts_per_tok != 2:
            _invalid("num_experts_per_tok", self.num_experts_per_tok,
                     "2 (PhiMoE's sparsemixer routes each token to two experts, whatever the config says)")
        for name in ("router_jitter_noise", "input_jitter_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                _invalid(name, value, "a number in [0, 1)")
        if self.rope_scaling is not None:  # a longrope scaling (super().validate() refuses the other kinds)
            for key in ("short_factor", "long_factor"):
                if len(self.rope_scaling[key]) != self.head_dim // 2:
                    _invalid(f"rope_scaling.{key}", self.rope_scaling[key],
                             f"{self.head_dim // 2} factors, one per rotated pair of dimensions")


@dataclass
class GptOssConfig(LlamaConfig):
    """gpt-oss (gpt-oss-20b, gpt-oss-120b): a Llama-style decoder with biases on q, k, v and o, a learned attention
    sink per head (a score that joins each query's softmax and attends to nothing), layers alternating between a
    sliding window and full attention (`layer_types`), YaRN rope scaling, and in every layer a sparse mixture of
    `num_local_experts` experts: a router with a bias whose `num_experts_per_tok` best scores are softmaxed, experts
    with biases and a clamped SwiGLU (`swiglu_alpha`, `swiglu_limit`). With `output_router_logits` the causal LM adds
    `router_aux_loss_coef` times the load-balancing loss to its loss."""

    model_type: ClassVar[str] = "gpt_oss"
    attribute_map: ClassVar[dict[str, str]] = {"num_experts": "num_local_experts"}

    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    num_hidden_layers: int = 36
    num_attention_heads: int = 64
    num_key_value_heads: int | None = 8
    head_dim: int | None = 64
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_theta: float = 150000.0
    rope_scaling: dict[str, Any] | None = field(default_factory=lambda: {
        "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 4096,
    })
    attention_bias: bool = True
    attention_dropout: float = 0.0
    sliding_window: int | None = 128
    layer_types: list[str] | None = None  # None: sliding, full, sliding, ... (the reference's default)
    num_local_experts: int = 128
    num_experts_per_tok: int = 4
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    router_aux_loss_coef: float = 0.001
    output_router_logits: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    num_experts = _field_alias("num_local_experts")

    def __post_init__(self):
        _pop_alias(self, "num_experts", "num_local_experts")
        if self.layer_types is None and _positive_int(self.num_hidden_layers):
            self.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                for i in range(self.num_hidden_layers)]
        quantization = self.extra.get("quantization_config")
        # openformers' own packed weights (a quantized model's save_pretrained) stay marked: loading reads them.
        if quantization is not None and not (isinstance(quantization, dict)
                                             and quantization.get("quant_method") == "openformers"):
            # The released checkpoints store the experts' matrices in MXFP4, which loading dequantizes
            # (gpt_oss.from_checkpoint_layout): the model holds floats, and saves them so.
            if not isinstance(quantization, dict) or quantization.get("quant_method") != "mxfp4":
                _invalid("quantization_config", quantization, "none, the released checkpoints' {'quant_method': "
                         "'mxfp4'}, which loading dequantizes, or openformers' own packed weights")
            del self.extra["quantization_config"]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_experts(self, "num_local_experts")
        _check_sliding_layers(self)
        _require_positive_numbers(self, "swiglu_alpha", "swiglu_limit")
        _require_probabilities(self, "attention_dropout")


@dataclass
class QwenMixtureConfig(MistralConfig):
    """What Qwen2-MoE and Qwen3-MoE share: a sparse mixture of `num_experts` SwiGLU experts of
    `moe_intermediate_size` in the layers it makes sparse (`is_sparse`: every `decoder_sparse_step`-th layer, except
    those `mlp_only_layers` lists, which keep a dense MLP of `intermediate_size`), the router's top
    `num_experts_per_tok` weights renormalized only with `norm_topk_prob`, and with `output_router_logits` the causal
    LM's loss plus `router_aux_loss_coef` times the load-balancing loss. Each family sets its sizes' defaults."""

    vocab_size: int = 151936
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    decoder_sparse_step: int = 1
    moe_intermediate_size: int = 768
    num_experts_per_tok: int = 8
    num_experts: int = 128
    norm_topk_prob: bool = False
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001
    mlp_only_layers: list[int] | None = None

    def __post_init__(self):
        if not self.use_sliding_window:
            self.sliding_window = None  # the reference's rule
        if self.mlp_only_layers is None:
            self.mlp_only_layers = []
        super().__post_init__()

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts (else a dense MLP), by the reference's rule."""
        return (layer_idx not in self.mlp_only_layers and self.num_experts > 0
                and (layer_idx + 1) % self.decoder_sparse_step == 0)

    def validate(self) -> None:
        super().validate()
        _check_experts(self, "num_experts", allow_none=True)
        _require_positive_ints(self, "decoder_sparse_step", "moe_intermediate_size")
        layers = self.mlp_only_layers
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            _invalid("mlp_only_layers", layers, "a list of layer indices")


@dataclass
class Qwen3MoeConfig(QwenMixtureConfig):
    """Qwen3-MoE: Qwen3's attention (an RMSNorm over each head's queries and keys) with Qwen's sparse mixture of
    experts (QwenMixtureConfig). The sliding window applies to every layer when `use_sliding_window` is set, to none
    otherwise."""

    model_type: ClassVar[str] = "qwen3_moe"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "num_experts"}

    intermediate_size: int = 6144
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 4

    num_local_experts = _field_alias("num_experts")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "num_experts")
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        # transformers 5 writes the expert count as num_local_experts; transformers 4 and Qwen's files, num_experts.
        return {**super().to_dict(), "num_local_experts": self.num_experts}


@dataclass
class Qwen2MoeConfig(LayerTypedWindow, QwenMixtureConfig):
    """Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's attention (biases on the query, key and value projections
    with `qkv_bias`) with Qwen's sparse mixture of experts (QwenMixtureConfig), to which each sparse layer adds a
    shared expert: a SwiGLU MLP of `shared_expert_intermediate_size` that every token runs, its output scaled by the
    sigmoid of a one-output linear gate.

    The sliding window applies only when `use_sliding_window` is set, and then to the layers `layer_types` marks
    "sliding_attention" (by default the even-numbered ones below `max_window_layers`, the reference's rule);
    openformers supports a window on every layer or on none.
    """

    model_type: ClassVar[str] = "qwen2_moe"

    intermediate_size: int = 5632
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 16
    max_window_layers: int = 28
    layer_types: list[str] | None = None
    moe_intermediate_size: int = 1408
    shared_expert_intermediate_size: int = 5632
    num_experts_per_tok: int = 4
    num_experts: int = 60
    qkv_bias: bool = True  # a config field here, where Qwen2's is a family fact
    attention_dropout: float = 0.0

    def __post_init__(self):
        if not self.use_sliding_window:
            self.sliding_window = None  # the reference writes 0: no window
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i % 2 == 0 and i < self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "shared_expert_intermediate_size")
        _require_probabilities(self, "attention_dropout")


@dataclass
class Ernie4_5Config(LlamaConfig):
    """Baidu's ERNIE 4.5 (ERNIE-4.5-0.3B): a Llama decoder whose rotary embeddings turn interleaved pairs (2i, 2i + 1),
    computed in float32, with a bias on every projection of attention and MLP when `use_bias` is set (the
    reference's one switch, read here as attention_bias and mlp_bias), and the head tied to the embeddings."""

    model_type: ClassVar[str] = "ernie4_5"
    # Llama's two switches, both `use_bias` here (not config.json keys of this family).
    attention_bias: ClassVar[property] = property(lambda self: bool(self.use_bias))
    mlp_bias: ClassVar[property] = property(lambda self: bool(self.use_bias))

    vocab_size: int = 103424
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 18
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 2
    head_dim: int | None = 128
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_bias: bool | None = False
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        if self.use_bias not in (None, False, True):
            _invalid("use_bias", self.use_bias, "true or false")


@dataclass
class Ernie4_5_MoeConfig(Ernie4_5Config):
    """ERNIE 4.5's mixtures of experts (ERNIE-4.5-21B-A3B, ERNIE-4.5-300B-A47B): ERNIE 4.5's decoder whose layers
    from `moe_layer_start_index` to `moe_layer_end_index` (-1: the last), every `moe_layer_interval`-th, are sparse
    (`is_sparse`): a router's softmax over `moe_num_experts` SwiGLU experts of `moe_intermediate_size`, of which each
    token runs the `moe_k` best by probability plus a correction bias per expert (`moe_statics`), weighted by the
    probabilities alone, renormalized (their sum clamped below at `moe_norm_min`), plus `moe_num_shared_experts`
    experts every token runs (one MLP of moe_num_shared_experts * moe_intermediate_size). The other layers have a
    SwiGLU MLP of `intermediate_size`. With `output_router_logits` the causal LM adds `router_aux_loss_coef` times the
    load-balancing loss to its loss; `num_nextn_predict_layers` counts the multi-token prediction layers a checkpoint
    may hold (`mtp_*`), which the reference does not load either."""

    model_type: ClassVar[str] = "ernie4_5_moe"
    attribute_map: ClassVar[dict[str, str]] = {"num_experts": "moe_num_experts", "num_experts_per_tok": "moe_k",
                                                "num_mtp_layers": "num_nextn_predict_layers"}

    hidden_size: int = 2560
    intermediate_size: int = 12288
    num_hidden_layers: int = 28
    num_attention_heads: int = 20
    num_key_value_heads: int | None = 4
    head_dim: int | None = None  # hidden_size // num_attention_heads (the reference's config has no default)
    moe_intermediate_size: int = 1536
    moe_k: int = 6
    moe_num_experts: int = 64
    moe_num_shared_experts: int = 2
    moe_layer_start_index: int = 1
    moe_layer_end_index: int = -1
    moe_layer_interval: int = 1
    moe_norm_min: float = 1e-12
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001
    num_nextn_predict_layers: int | None = None

    num_experts = _field_alias("moe_num_experts")
    num_experts_per_tok = _field_alias("moe_k")
    num_mtp_layers = _field_alias("num_nextn_predict_layers")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():
            _pop_alias(self, alias, name)
        if self.moe_layer_end_index == -1 and _positive_int(self.num_hidden_layers):
            self.moe_layer_end_index = self.num_hidden_layers - 1  # the reference's rule
        super().__post_init__()

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts (else a dense MLP), by the reference's rule."""
        return ((layer_idx + 1) % self.moe_layer_interval == 0
                and self.moe_layer_start_index <= layer_idx <= self.moe_layer_end_index)

    def validate(self) -> None:
        super().validate()
        _require_positive_ints(self, "moe_num_experts", "moe_k", "moe_intermediate_size", "moe_layer_interval")
        if self.moe_k > self.moe_num_experts:
            _invalid("moe_k", self.moe_k, f"a positive integer of at most moe_num_experts={self.moe_num_experts}")
        for name in ("moe_num_shared_experts", "moe_layer_start_index", "moe_layer_end_index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _invalid(name, value, "a non-negative integer" + (" (or -1: the last layer)" if "end" in name else ""))
        _require_positive_numbers(self, "moe_norm_min")
        value = self.router_aux_loss_coef
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            _invalid("router_aux_loss_coef", value, "a non-negative number")
        mtp = self.num_nextn_predict_layers
        if mtp is not None and (isinstance(mtp, bool) or not isinstance(mtp, int) or not 0 <= mtp <= 1):
            _invalid("num_nextn_predict_layers", mtp, "None, 0 or 1 (the reference reads at most one MTP layer)")


def _check_expert_groups(config: PretrainedConfig, smallest_group: int) -> None:
    """Group-limited routing: the n_routed_experts split into n_group groups of at least `smallest_group` experts, the
    tokens choosing among the experts of their topk_group best groups."""
    _require_positive_ints(config, "n_group", "topk_group")
    experts = config.n_routed_experts
    if experts is not None and (experts % config.n_group or experts // config.n_group < smallest_group):
        _invalid("n_group", config.n_group, f"a divisor of n_routed_experts={config.n_routed_experts} leaving at "
                 f"least {smallest_group} experts in each group")
    if config.topk_group > config.n_group:
        _invalid("topk_group", config.topk_group, f"at most n_group={config.n_group}")


class DenseThenRoutedExperts:
    """The mixture of DeepSeek-V2, V3 and GLM-4.5 configs: the first `first_k_dense_replace` layers keep a SwiGLU MLP of
    `intermediate_size`; the others have `n_routed_experts` experts of `moe_intermediate_size`, of which each token
    runs `num_experts_per_tok` (their weights times `routed_scaling_factor`), plus `n_shared_experts` experts every
    token runs (one MLP of n_shared_experts * moe_intermediate_size)."""

    def is_sparse(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` runs the experts (else a dense MLP): every layer from first_k_dense_replace."""
        return layer_idx >= self.first_k_dense_replace

    def validate(self) -> None:
        # n_routed_experts and n_shared_experts may be None, as num_experts_per_tok (dots.llm1's reference defaults
        # set none of them): the model refuses them when built (deepseek_v3.DeepseekV3MoE).
        _require_positive_ints(self, "moe_intermediate_size", *(name for name in ("n_routed_experts", "n_shared_experts")
                                                                if getattr(self, name) is not None))
        super().validate()
        top_k = self.num_experts_per_tok
        if top_k is not None and (not _positive_int(top_k) or top_k > (self.n_routed_experts or top_k)):
            _invalid("num_experts_per_tok", top_k, f"a positive integer of at most n_routed_experts="
                     f"{self.n_routed_experts}")
        first = self.first_k_dense_replace
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            _invalid("first_k_dense_replace", first, "a non-negative integer")
        _require_positive_numbers(self, "routed_scaling_factor")


@dataclass
class _LatentAttentionConfig(DenseThenRoutedExperts, LlamaConfig):
    """What DeepSeek-V2 and V3 share: multi-head latent attention and a mixture of routed and shared experts.

    Queries come from the hidden state directly (q_lora_rank None) or through a rank-`q_lora_rank` bottleneck with an
    RMSNorm; keys and values from a compressed vector of `kv_lora_rank` (RMS-normed, then expanded per head into
    `qk_nope_head_dim` key and `v_head_dim` value dimensions) and one shared key of `qk_rope_head_dim` rotated
    dimensions. head_dim is that rotated width (the rotary tables'); each head's query and key have
    qk_head_dim = qk_nope_head_dim + qk_rope_head_dim dimensions. The layers' feed-forward parts are
    DenseThenRoutedExperts'. With YaRN rope scaling, its mscale_all_dim
    also scales the attention's softmax (the reference's rule). num_key_value_heads must equal the query heads: the
    keys and values are expanded for every head.
    """

    rms_norm_eps: float = 1e-6
    pad_token_id: int | None = None
    attention_dropout: float = 0.0
    pretraining_tp: int = 1
    kv_lora_rank: int = 512
    q_lora_rank: int | None = 1536
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int = 1407
    first_k_dense_replace: int = 0
    routed_scaling_factor: float = 1.0
    n_group: int | None = None
    topk_group: int | None = None
    norm_topk_prob: bool = False
    output_router_logits: bool = False

    num_local_experts = _field_alias("n_routed_experts")

    def __post_init__(self):
        self.head_dim = self.qk_rope_head_dim  # the rotated width: the rotary tables' (the reference's rule)
        if isinstance(self.qk_nope_head_dim, int) and isinstance(self.qk_rope_head_dim, int):
            self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        super().__post_init__()

    def validate(self) -> None:
        _require_positive_ints(self, "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "kv_lora_rank")
        if self.q_lora_rank is not None:
            _require_positive_ints(self, "q_lora_rank")
        super().validate()
        if self.num_key_value_heads != self.num_attention_heads:
            _invalid("num_key_value_heads", self.num_key_value_heads,
                     f"num_attention_heads={self.num_attention_heads} (latent attention expands keys and values "
                     "for every head)")
        _require_probabilities(self, "attention_dropout")


@dataclass
class DeepseekV3Config(_LatentAttentionConfig):
    """DeepSeek-V3 and R1, Kimi K2, Moonlight: latent attention (_LatentAttentionConfig) whose rotated dimensions
    come in interleaved pairs (`rope_interleave`, else in halves as Llama's), and routing by the sigmoid of the
    router's scores: a token picks among the experts of its `topk_group` best groups (of `n_group`; a group scores its
    two best experts' sum), choosing by the scores plus each expert's `e_score_correction_bias` but weighting by the
    scores alone, renormalized with `norm_topk_prob`. `num_nextn_predict_layers` counts the multi-token prediction
    layers a checkpoint may hold past the last layer, which the reference does not load either."""

    model_type: ClassVar[str] = "deepseek_v3"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "n_routed_experts",
                                                "num_mtp_layers": "num_nextn_predict_layers"}

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    num_key_value_heads: int | None = 128
    max_position_embeddings: int = 4096
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    moe_intermediate_size: int = 2048
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int | None = 8
    first_k_dense_replace: int = 3
    routed_scaling_factor: float = 2.5
    n_group: int | None = 8
    topk_group: int | None = 4
    norm_topk_prob: bool = True
    rope_interleave: bool = True
    num_nextn_predict_layers: int = 1

    num_mtp_layers = _field_alias("num_nextn_predict_layers")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "n_routed_experts")
        _pop_alias(self, "num_mtp_layers", "num_nextn_predict_layers")
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_expert_groups(self, smallest_group=2)  # a group scores its two best experts


DEEPSEEK_V2_TOPK_METHODS = ("greedy", "group_limited_greedy")


@dataclass
class DeepseekV2Config(_LatentAttentionConfig):
    """DeepSeek-V2, V2-Lite, DeepSeek-Coder-V2: latent attention (_LatentAttentionConfig) whose rotated dimensions come
    in interleaved pairs, and routing by the softmax of the router's scores: the `num_experts_per_tok` best of all
    experts (`topk_method` "greedy"), or of the experts in the `topk_group` groups (of `n_group`) with the best expert
    ("group_limited_greedy"); their weights are not renormalized (the reference keeps norm_topk_prob but never reads
    it). `mlp_bias` puts biases on the dense and shared MLPs."""

    model_type: ClassVar[str] = "deepseek_v2"
    attribute_map: ClassVar[dict[str, str]] = {"num_experts": "n_routed_experts"}

    vocab_size: int = 102400
    topk_method: str = "greedy"

    num_experts = _field_alias("n_routed_experts")

    def __post_init__(self):
        _pop_alias(self, "num_experts", "n_routed_experts")
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.topk_method not in DEEPSEEK_V2_TOPK_METHODS:
            _invalid("topk_method", self.topk_method, f"one of {', '.join(map(repr, DEEPSEEK_V2_TOPK_METHODS))}")
        if self.topk_method == "group_limited_greedy":
            _check_expert_groups(self, smallest_group=1)


@dataclass
class Glm4MoeConfig(DenseThenRoutedExperts, GlmConfig):
    """GLM-4.5 and GLM-4.6 (GLM-4.5-Air too): GLM-4's attention (q/k/v biases with `attention_bias`, none on o_proj;
    rotary embeddings over the first `partial_rotary_factor` of each head) turning halves as Llama's do, not
    interleaved pairs, with `use_qk_norm` an RMSNorm over each head's queries and keys; the gate and up projections
    apart; and DeepSeek-V3's mixture (DenseThenRoutedExperts): sigmoid scores, the choice among the experts of each
    token's `topk_group` best groups (of `n_group`; a group scores its two best experts' sum) by the scores plus
    `e_score_correction_bias`, the weights the scores alone, renormalized with `norm_topk_prob`.
    `num_nextn_predict_layers` counts the multi-token prediction layers a checkpoint may hold past the last layer,
    which the reference does not load either.

    head_dim None is hidden_size // num_attention_heads rounded down, the reference's rule (its default config has
    no head_dim: 4096 // 96 = 42 dimensions, of which it turns int(42 * 0.5) = 21, its tables rounding that up to the
    22 of 11 pairs, as here); every released checkpoint sets head_dim 128."""

    model_type: ClassVar[str] = "glm4_moe"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "n_routed_experts",
                                                "num_mtp_layers": "num_nextn_predict_layers"}
    chat_eos_token_ids: ClassVar[list[int] | None] = None  # eos_token_id None stays None, as in the reference

    vocab_size: int = 151552
    hidden_size: int = 4096
    intermediate_size: int = 10944
    num_hidden_layers: int = 46
    num_attention_heads: int = 96
    num_key_value_heads: int | None = 8
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    pad_token_id: int | None = None
    moe_intermediate_size: int = 1408
    num_experts_per_tok: int = 8
    n_shared_experts: int = 1
    n_routed_experts: int = 128
    routed_scaling_factor: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    first_k_dense_replace: int = 1
    norm_topk_prob: bool = True
    use_qk_norm: bool = False
    output_router_logits: bool = False
    num_nextn_predict_layers: int = 1

    num_local_experts = _field_alias("n_routed_experts")
    num_mtp_layers = _field_alias("num_nextn_predict_layers")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "n_routed_experts")
        _pop_alias(self, "num_mtp_layers", "num_nextn_predict_layers")
        if self.head_dim is None and _positive_int(self.num_attention_heads) and _positive_int(self.hidden_size):
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__()

    def check_rotary_width(self) -> None:
        """A share of each head that turns at least one dimension; an odd count turns one more (the reference's
        tables hold whole pairs), which must fit in the head."""
        factor = self.partial_rotary_factor
        if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor <= 1
                and 0 < self.rotary_dim and self.rotary_dim + self.rotary_dim % 2 <= self.head_dim):
            _invalid("partial_rotary_factor", factor,
                     f"a number in (0, 1] that turns whole pairs of the head's {self.head_dim} dimensions")

    def validate(self) -> None:
        super().validate()
        _check_expert_groups(self, smallest_group=2)  # a group scores its two best experts
        _require_bools(self, "use_qk_norm")
        if isinstance(self.num_nextn_predict_layers, bool) or not isinstance(self.num_nextn_predict_layers, int) \
                or self.num_nextn_predict_layers < 0:
            _invalid("num_nextn_predict_layers", self.num_nextn_predict_layers, "a non-negative integer")


@dataclass
class Dots1Config(DenseThenRoutedExperts, MistralConfig):
    """rednote-hilab's dots.llm1 (dots.llm1.base, dots.llm1.inst): Qwen3's attention (each head's queries and keys
    RMS-normed before the rotation, a head_dim of its own) with DeepSeek-V3's mixture (DenseThenRoutedExperts; sigmoid
    scores, the choice among the experts of each token's `topk_group` best groups of `n_group` by the scores plus
    `e_score_correction_bias`, the weights the scores alone, renormalized with `norm_topk_prob`). The layers
    `layer_types` marks "sliding_attention" (by default those from `max_window_layers` on, when there is a window) see
    only the last `sliding_window` positions. The reference's defaults leave the experts unset (None), which a model
    refuses when built."""

    model_type: ClassVar[str] = "dots1"
    attribute_map: ClassVar[dict[str, str]] = {"num_local_experts": "n_routed_experts"}

    vocab_size: int = 152064
    hidden_size: int = 4608
    intermediate_size: int = 10944
    num_hidden_layers: int = 62
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    attention_dropout: float = 0.0
    moe_intermediate_size: int = 1408
    n_shared_experts: int | None = None
    n_routed_experts: int | None = None
    num_experts_per_tok: int | None = None
    n_group: int = 1
    topk_group: int = 1
    first_k_dense_replace: int = 0
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    output_router_logits: bool = False
    max_window_layers: int = 62
    layer_types: list[str] | None = None

    num_local_experts = _field_alias("n_routed_experts")

    def __post_init__(self):
        _pop_alias(self, "num_local_experts", "n_routed_experts")
        if self.layer_types is None and _positive_int(self.num_hidden_layers):  # else validate() names it
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _require_probabilities(self, "attention_dropout")
        _check_windowed_layers(self)
        _check_expert_groups(self, smallest_group=2)  # a group scores its two best experts


@dataclass
class T5Config(PretrainedConfig):
    """T5 and Flan-T5: a pre-norm encoder-decoder with scale-only (RMS) norms, relative position buckets instead of
    position embeddings, unscaled attention, and a ReLU (`feed_forward_proj="relu"`) or gated (`"gated-gelu"`,
    T5 v1.1 and Flan-T5) feed-forward. The common names (hidden_size, num_attention_heads, num_hidden_layers,
    head_dim) read and set d_model, num_heads, num_layers and d_kv, as in the reference.

    Derived as the reference derives them, unless config.json holds them: `dense_act_fn` and `is_gated_act` from
    feed_forward_proj ("gated-gelu" means the tanh GELU), and `scale_decoder_outputs` (the decoder output scaled by
    d_model ** -0.5 before the LM head) from whether the file sets tie_word_embeddings to false. The token table
    and the LM head are then tied (tie_word_embeddings is always True); a checkpoint that stores its own LM head
    (Flan-T5) keeps it. `decoder_start_token_id` is not a field: it is read from config.json when there (0 in
    Google's files), as the reference does.
    """

    model_type: ClassVar[str] = "t5"
    relative_attention_in_every_layer: ClassVar[bool] = False  # True: each block owns its position table (UMT5)
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers",
        "head_dim": "d_kv",
    }

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"
    is_encoder_decoder: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    classifier_dropout: float = 0.0
    is_decoder: bool = False
    tie_word_embeddings: bool = True

    hidden_size = _field_alias("d_model")
    num_attention_heads = _field_alias("num_heads")
    num_hidden_layers = _field_alias("num_layers")
    head_dim = _field_alias("d_kv")

    def __post_init__(self):
        for alias, name in self.attribute_map.items():  # T5Config(hidden_size=64) sets d_model, as the reference
            if alias in self.extra:
                setattr(self, name, self.extra.pop(alias))
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        parts = self.feed_forward_proj.split("-") if isinstance(self.feed_forward_proj, str) else []
        if not parts or len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            _invalid("feed_forward_proj", self.feed_forward_proj, "'ACTIVATION' or 'gated-ACTIVATION', such as 'relu' "
                     "or 'gated-gelu'")
        activation = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]
        self.dense_act_fn = self.extra.pop("dense_act_fn", activation)
        self.is_gated_act = self.extra.pop("is_gated_act", parts[0] == "gated")
        self._tie_or_scale()
        super().__post_init__()

    def _tie_or_scale(self) -> None:
        # A file that says tie_word_embeddings=false is T5 v1.1 / Flan-T5: no output scaling; ties are kept anyway.
        self.scale_decoder_outputs = self.extra.pop("scale_decoder_outputs", self.tie_word_embeddings is not False)
        self.tie_word_embeddings = True

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                               "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance")
        if self.dense_act_fn not in ENCODER_ACTIVATIONS:
            _invalid("feed_forward_proj", self.feed_forward_proj,
                     f"an activation among {', '.join(ENCODER_ACTIVATIONS)}, optionally prefixed with 'gated-'")
        _require_probabilities(self, "dropout_rate", "classifier_dropout")
        _require_positive_numbers(self, "layer_norm_epsilon")


@dataclass
class MT5Config(T5Config):
    """mT5: T5 v1.1 (gated-GELU feed-forward, no output scaling, its own LM head in the checkpoints) over a
    250k-token multilingual vocabulary."""

    model_type: ClassVar[str] = "mt5"

    vocab_size: int = 250112
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    feed_forward_proj: str = "gated-gelu"
    decoder_start_token_id: int | None = 0

    def _tie_or_scale(self) -> None:
        self.tie_word_embeddings = True  # mT5 never scales its decoder output


@dataclass
class UMT5Config(MT5Config):
    """UMT5 (umt5-small, umt5-base, umt5-xl, umt5-xxl): mT5's architecture and defaults with a relative position
    table in every layer's self-attention, where T5 and mT5 have one in each stack's first layer, shared by the
    others. The decoder output is scaled before the LM head by T5's rule (unless config.json sets
    tie_word_embeddings to false, as UMT5's checkpoints do)."""

    model_type: ClassVar[str] = "umt5"
    relative_attention_in_every_layer: ClassVar[bool] = True

    _tie_or_scale = T5Config._tie_or_scale


@dataclass
class DebertaV2Config(PretrainedConfig):
    """DeBERTa-v2 and DeBERTa-v3: BERT's post-LayerNorm encoder whose attention adds disentangled relative-position
    terms (`pos_att_type`: content-to-position "c2p", position-to-content "p2c") over a table of relative distances
    (`max_relative_positions`, or `position_buckets` log-spaced buckets); v3 shares the content projections with the
    positions (`share_att_key`), normalizes the table (`norm_rel_ebd="layer_norm"`) and drops absolute positions
    (`position_biased_input=False`); v2-xlarge adds a convolution after the first layer (`conv_kernel_size`).

    The reference reads the fields from `share_att_key` on with getattr defaults; they are fields here with those
    defaults, and `embedding_size`, `attention_head_size` and `pooler_hidden_size` default to the hidden sizes.
    """

    model_type: ClassVar[str] = "deberta-v2"

    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False
    max_relative_positions: int = -1  # below 1: max_position_embeddings
    pad_token_id: int | None = 0
    position_biased_input: bool = True
    pos_att_type: list[str] | None = None  # config.json may say "c2p|p2c"
    pooler_dropout: float = 0.0
    pooler_hidden_act: str = "gelu"
    legacy: bool = True  # the masked LM's head: `cls.predictions` (legacy) or `lm_predictions.lm_head`
    tie_word_embeddings: bool = True
    share_att_key: bool = False
    position_buckets: int = -1  # above 0: relative distances in that many log-spaced buckets each way
    norm_rel_ebd: str = "none"  # "layer_norm": the relative-position table goes through encoder.LayerNorm
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"
    embedding_size: int | None = None
    attention_head_size: int | None = None
    pooler_hidden_size: int | None = None
    cls_dropout: float | None = None  # the classifiers' dropout; None: hidden_dropout_prob

    def __post_init__(self):
        if isinstance(self.pos_att_type, str):
            self.pos_att_type = [kind.strip() for kind in self.pos_att_type.lower().split("|")]
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if self.pooler_hidden_size is None:
            self.pooler_hidden_size = self.hidden_size
        if self.attention_head_size is None and _positive_int(self.num_attention_heads):
            self.attention_head_size = self.hidden_size // self.num_attention_heads
        super().__post_init__()

    @property
    def relative_distance_limit(self) -> int:
        """max_relative_positions, or max_position_embeddings where that is below 1 (the reference's default)."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def relative_span(self) -> int:
        """How many relative distances (or buckets) the position table holds each way: its rows are twice that."""
        return self.position_buckets if self.position_buckets > 0 else self.relative_distance_limit

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "max_position_embeddings", "embedding_size",
                               "attention_head_size", "conv_groups")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        activations = (*ENCODER_ACTIVATIONS, "tanh")
        for name in ("hidden_act", "pooler_hidden_act", "conv_act"):
            if getattr(self, name) not in activations:
                _invalid(name, getattr(self, name), f"one of {', '.join(activations)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "pooler_dropout", "cls_dropout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < 1):
                _invalid(name, value, "a probability in [0, 1)")
        kinds = self.pos_att_type or []
        if not isinstance(kinds, list) or any(kind not in ("c2p", "p2c") for kind in kinds):
            _invalid("pos_att_type", self.pos_att_type, "None or a list of 'c2p' and 'p2c' (or 'c2p|p2c')")
        norms = [part.strip() for part in str(self.norm_rel_ebd).lower().split("|")]
        if any(part not in ("none", "layer_norm") for part in norms):
            _invalid("norm_rel_ebd", self.norm_rel_ebd, "'none' or 'layer_norm'")
        if self.conv_kernel_size and (not _positive_int(self.conv_kernel_size) or self.conv_kernel_size % 2 == 0):
            _invalid("conv_kernel_size", self.conv_kernel_size, "0 (no convolution) or an odd positive integer")
        if self.conv_kernel_size and self.hidden_size % self.conv_groups:
            _invalid("conv_groups", self.conv_groups, f"a divisor of hidden_size={self.hidden_size}")
        if self.pooler_hidden_size != self.hidden_size:
            _invalid("pooler_hidden_size", self.pooler_hidden_size, f"hidden_size={self.hidden_size} (the classifiers "
                     "read the pooler's output with the hidden size)")
        if self.type_vocab_size < 0:
            _invalid("type_vocab_size", self.type_vocab_size, "0 (no token types) or a positive integer")

    @property
    def normalizes_rel_embeddings(self) -> bool:
        """Whether norm_rel_ebd asks for the relative-position table to go through a LayerNorm."""
        return "layer_norm" in [part.strip() for part in str(self.norm_rel_ebd).lower().split("|")]


@dataclass
class DebertaConfig(DebertaV2Config):
    """DeBERTa (v1: deberta-base, deberta-large): DeBERTa-v2's fields without v2's additions (shared keys, buckets, a
    normalized table, the convolution, a head size of its own), which it refuses; its attention's q, k, v come from
    one fused projection (models/deberta_v2.py)."""

    model_type: ClassVar[str] = "deberta"
    v2_only: ClassVar[dict[str, Any]] = dict(share_att_key=False, position_buckets=-1, norm_rel_ebd="none",
                                            conv_kernel_size=0, conv_groups=1, conv_act="tanh")

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072

    def validate(self) -> None:
        super().validate()
        for name, value in self.v2_only.items():
            if getattr(self, name) != value:
                _invalid(name, getattr(self, name), f"{value!r} (DeBERTa-v2's; model_type 'deberta-v2')")
        if self.attention_head_size != self.hidden_size // self.num_attention_heads:
            _invalid("attention_head_size", self.attention_head_size, "hidden_size // num_attention_heads")
        if self.extra.get("talking_head"):
            _invalid("talking_head", self.extra["talking_head"], "False (no DeBERTa checkpoint mixes its heads)")

    def to_dict(self) -> dict[str, Any]:
        # Without v2's fields, which the reference's DebertaConfig does not have.
        return {k: v for k, v in super().to_dict().items() if k not in (*self.v2_only, "attention_head_size")}


@dataclass
class OPTConfig(PretrainedConfig):
    """OPT (facebook/opt-125m to opt-66b): learned positions (offset by 2) added to the token embeddings, LayerNorm
    blocks before attention and the ReLU MLP (`do_layer_norm_before`) or after them (opt-350m), biases on every
    projection (`enable_bias`), and embeddings narrower than the layers where `word_embed_proj_dim` is set
    (opt-350m: projected in after the embedding, and out before the head, which is tied to the embeddings)."""

    model_type: ClassVar[str] = "opt"

    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    do_layer_norm_before: bool = True
    _remove_final_layer_norm: bool = False  # the reference's name: no LayerNorm after the last layer
    word_embed_proj_dim: int | None = None  # None: hidden_size
    dropout: float = 0.1
    attention_dropout: float = 0.0
    num_attention_heads: int = 12
    activation_function: str = "relu"
    layerdrop: float = 0.0
    init_std: float = 0.02
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 2
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            self.word_embed_proj_dim = self.hidden_size
        super().__post_init__()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        _require_positive_ints(self, "vocab_size", "hidden_size", "num_hidden_layers", "ffn_dim",
                               "max_position_embeddings", "num_attention_heads", "word_embed_proj_dim")
        if self.hidden_size % self.num_attention_heads:
            _invalid("hidden_size", self.hidden_size, f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.activation_function not in ENCODER_ACTIVATIONS:
            _invalid("activation_function", self.activation_function, f"one of {', '.join(ENCODER_ACTIVATIONS)}")
        _require_probabilities(self, "dropout", "attention_dropout", "layerdrop")
        if self.pad_token_id is not None and not (isinstance(self.pad_token_id, int)
                                                  and 0 <= self.pad_token_id < self.vocab_size):
            _invalid("pad_token_id", self.pad_token_id, f"None or an id below vocab_size={self.vocab_size} (the "
                     "embedding's padding row)")



@dataclass
class GPTBigCodeConfig(GPT2Names, PretrainedConfig):
    """GPT-BigCode (StarCoder, StarCoderBase, SantaCoder, WizardCoder, OctoCoder): GPT-2's pre-LayerNorm blocks with
    learned positions, a fused `c_attn` projection and a tanh-GELU MLP, whose attention has one key/value head shared
    by every query head (`multi_query`; else one per query head). Its fields keep GPT-2's names (`n_embd`, `n_layer`,
    `n_head`, `n_positions`, `n_inner`); the common names read and set them, as in the reference.
    `attention_softmax_in_fp32` and `scale_attention_softmax_in_fp32` are kept for config.json: the reference 5's
    attention takes every softmax in float32 whatever they say, and so does the eager path here."""

    model_type: ClassVar[str] = "gpt_bigcode"

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_pytorch_tanh"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    attention_softmax_in_fp32: bool = True
    scale_attention_softmax_in_fp32: bool = True
    multi_query: bool = True
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True

    @property
    def num_key_value_heads(self) -> int:
        """The key/value heads attention computes (and the cache stores): one with multi_query."""
        return 1 if self.multi_query else self.n_head

    def __post_init__(self):
        self.extra.pop("num_key_value_heads", None)  # derived from multi_query (the reference writes it too)
        super().__post_init__()

    def validate(self) -> None:
        _check_gpt2_sizes(self)
        _require_positive_numbers(self, "layer_norm_epsilon")
        _require_probabilities(self, "resid_pdrop", "embd_pdrop", "attn_pdrop")
        _require_bools(self, "multi_query", "scale_attn_weights", "attention_softmax_in_fp32",
                       "scale_attention_softmax_in_fp32")
        if self.add_cross_attention:
            raise ValueError(
                "Unsupported config: add_cross_attention=True; openformers runs GPT-BigCode as a decoder-only model "
                "(the reference's cross-attention layers serve its EncoderDecoderModel, which openformers lacks)."
            )

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["num_key_value_heads"] = self.num_key_value_heads
        return values


# model_type -> config class: the registry config.json is read by (AutoConfig.register adds a user's own).
CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "gpt2": GPT2Config,
    "ministral": MinistralConfig, "ministral3": Ministral3Config,
    "bert": BertConfig, "roberta": RobertaConfig, "roformer": RoFormerConfig, "ernie": ErnieConfig,
    "phi3": Phi3Config,
    "qwen3": Qwen3Config,
    "mixtral": MixtralConfig,
    "phimoe": PhimoeConfig,
    "qwen3_moe": Qwen3MoeConfig,
    "qwen2_moe": Qwen2MoeConfig,
    "deepseek_v3": DeepseekV3Config,
    "deepseek_v2": DeepseekV2Config,
    "gemma": GemmaConfig,
    "smollm3": SmolLM3Config,
    "granite": GraniteConfig,
    "seed_oss": SeedOssConfig,
    "arcee": ArceeConfig,
    "helium": HeliumConfig,
    "bitnet": BitNetConfig,
    "hunyuan_v1_dense": HunYuanDenseV1Config,
    "hunyuan_v1_moe": HunYuanMoEV1Config,
    "dots1": Dots1Config,
    "apertus": ApertusConfig,
    "exaone4": Exaone4Config,
    "exaone": ExaoneConfig,
    "internlm3": InternLM3Config,
    "granitemoe": GraniteMoeConfig,
    "granitemoeshared": GraniteMoeSharedConfig,
    "granitemoehybrid": GraniteMoeHybridConfig,
    "bamba": BambaConfig,
    "jamba": JambaConfig,
    "falcon_h1": FalconH1Config,
    "gemma2": Gemma2Config,
    "gemma3_text": Gemma3TextConfig,
    "gemma3": Gemma3Config,
    "vaultgemma": VaultGemmaConfig,
    "distilbert": DistilBertConfig,
    "xlm-roberta": XLMRobertaConfig,
    "roberta-prelayernorm": RobertaPreLayerNormConfig, "xlm-roberta-xl": XLMRobertaXLConfig,
    "megatron-bert": MegatronBertConfig,
    "nomic_bert": NomicBertConfig, "gte": GteConfig, "eurobert": EuroBertConfig,
    "jina_embeddings_v3": JinaEmbeddingsV3Config,
    "camembert": CamembertConfig,
    "gpt_neox": GPTNeoXConfig,
    "mamba": MambaConfig,
    "falcon_mamba": FalconMambaConfig,
    "mamba2": Mamba2Config,
    "lfm2": Lfm2Config,
    "lfm2_moe": Lfm2MoeConfig,
    "falcon": FalconConfig,
    "gptj": GPTJConfig,
    "gpt_neo": GPTNeoConfig,
    "codegen": CodeGenConfig,
    "opt": OPTConfig,
    "gpt_bigcode": GPTBigCodeConfig,
    "bloom": BloomConfig,
    "phi": PhiConfig,
    "stablelm": StableLmConfig,
    "cohere": CohereConfig,
    "cohere2": Cohere2Config,
    "nemotron": NemotronConfig,
    "glm": GlmConfig,
    "glm4": Glm4Config,
    "glm4_moe": Glm4MoeConfig,
    "olmo": OlmoConfig,
    "olmo2": Olmo2Config,
    "olmo3": Olmo3Config,
    "olmoe": OlmoeConfig,
    "starcoder2": Starcoder2Config,
    "albert": AlbertConfig,
    "electra": ElectraConfig,
    "mobilebert": MobileBertConfig,
    "mpnet": MPNetConfig,
    "modernbert": ModernBertConfig,
    "bart": BartConfig,
    "marian": MarianConfig,
    "m2m_100": M2M100Config,
    "mbart": MBartConfig,
    "pegasus": PegasusConfig,
    "t5": T5Config,
    "mt5": MT5Config,
    "umt5": UMT5Config,
    "blenderbot": BlenderbotConfig,
    "blenderbot-small": BlenderbotSmallConfig,
    "deberta-v2": DebertaV2Config,
    "deberta": DebertaConfig,
    "gpt_oss": GptOssConfig,
    "ernie4_5": Ernie4_5Config,
    "ernie4_5_moe": Ernie4_5_MoeConfig,
}


def config_class_for(model_type: str | None, source: str | os.PathLike) -> type[PretrainedConfig]:
    if not isinstance(model_type, str) or model_type not in CONFIG_CLASSES:
        raise ValueError(
            f"{source} has model_type={model_type!r}, which openformers does not support; supported model types: "
            f"{', '.join(sorted(CONFIG_CLASSES))}."
        )
    return CONFIG_CLASSES[model_type]


def read_config(folder: Path, config_class: type[PretrainedConfig] | None = None, **overrides) -> PretrainedConfig:
    """The config.json of `folder`, as the class its model_type names, or as `config_class` when given.

    Given a class, a model_type registered to one of its subclasses (MistralConfig for LlamaConfig) reads as
    that subclass; any other model_type reads as `config_class` itself, with a warning when they differ.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json and no .gguf file, so there is no model to read there. Looked for "
            f"config.json (a Hugging Face model folder) or a *.gguf file (pass gguf_file=NAME to choose one)."
        )
    values = _read_json(path)
    model_type = values.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ValueError(f"{path}: model_type is {model_type!r}; expected a string such as \"llama\".")
    if config_class is None:
        config_class = config_class_for(model_type, path)
    elif (registered := CONFIG_CLASSES.get(model_type)) is not None and issubclass(registered, config_class):
        config_class = registered
    elif model_type and config_class.model_type and model_type != config_class.model_type:
        warnings.warn(f"{path} holds a {model_type!r} config, read as {config_class.__name__} "
                      f"(model_type {config_class.model_type!r}); values may not fit.", stacklevel=3)
    with _naming(path):
        return config_class.from_dict(values, **overrides)


@contextlib.contextmanager
def _naming(path):
    """Put the file's name before an invalid value's message, which the config classes cannot know; a value of a
    type no check foresaw (a list where a number belongs) fails somewhere inside and is reported the same way."""
    try:
        yield
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: {error}") from None
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError, ZeroDivisionError) as error:
        raise ValueError(
            f"{path}: a value has a type openformers cannot use ({type(error).__name__}: {error}); compare the file "
            "with the config.json of the model it was made for."
        ) from None


# GGUF `general.architecture` -> reader(gguf, **overrides) -> config. The model file of a family that loads from
# GGUF registers its reader (it knows the file's names); AutoConfig and the Auto model classes import every family.
GGUF_CONFIG_READERS: dict[str, Callable[..., PretrainedConfig]] = {}
# configs sits below the models and cannot import them; the top-level package registers how to import every
# family, so that `LlamaConfig.from_pretrained("x.gguf")` works before any model class was touched.
_import_families: Callable[[], object] = lambda: None


def register_families(import_families: Callable[[], object]) -> None:
    """Make `import_families()` (which imports every model file) run before a GGUF architecture is looked up."""
    global _import_families
    _import_families = import_families


def config_from_gguf(gguf, **overrides) -> PretrainedConfig:
    """Build the config from the metadata of an opened `weights.GGUFFile`, with the reader its architecture names."""
    arch = gguf.get("general.architecture")
    if arch not in GGUF_CONFIG_READERS:
        _import_families()
    if arch not in GGUF_CONFIG_READERS:
        raise ValueError(
            f"{gguf.path} holds a {arch!r} model (general.architecture), which openformers cannot load from GGUF; "
            f"supported GGUF architectures: {', '.join(sorted(GGUF_CONFIG_READERS))}."
        )
    with _naming(gguf.path):
        return GGUF_CONFIG_READERS[arch](gguf, **overrides)


def _default_original_context(config: PretrainedConfig) -> None:
    """The reference's default for the rope scalings that stretch a pretraining context (llama3, longrope, YaRN): the
    original_max_position_embeddings they read is max_position_embeddings where rope_scaling gives none (as in the
    Qwen model cards' {"rope_type": "yarn", "factor": 4.0} written without it)."""
    scaling = config.rope_scaling
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) in ("llama3", "longrope", "yarn"):
        config.rope_scaling = {"original_max_position_embeddings": config.max_position_embeddings, **scaling}


def _check_rope_scaling(scaling, kinds: tuple[str, ...] = ROPE_TYPES, alpha: bool = False) -> None:
    """A rope scaling dict of one of `kinds` (the family's) with the numbers its kind needs; "dynamic" with an `alpha`
    only where the family reads it (`alpha`: Hunyuan's fixed stretch, where the others' references ignore it)."""
    if not isinstance(scaling, dict):
        _invalid("rope_scaling", scaling, "None or a dict with a 'rope_type' key")
    kind = scaling.get("rope_type")
    if kind not in kinds:
        raise ValueError(
            f"Unsupported config: rope_scaling.rope_type={kind!r}; openformers implements the rope types "
            f"{', '.join(kinds)}."
        )
    if kind == "dynamic" and scaling.get("alpha") is not None and not alpha:
        _invalid("rope_scaling.alpha", scaling["alpha"], "absent: a fixed alpha is Hunyuan's dynamic scaling; this "
                 "family's is dynamic NTK scaling by the sequence's length and `factor`")
    needed = {"linear": ["factor"], "dynamic": ["factor"] if scaling.get("alpha") is None else [],  # Hunyuan's alpha
              "llama3": ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
              "longrope": ["factor", "original_max_position_embeddings"],
              "yarn": ["factor", "original_max_position_embeddings"]}
    for key in needed.get(kind, []):
        if not isinstance(scaling.get(key), (int, float)) or scaling[key] <= 0:
            _invalid(f"rope_scaling.{key}", scaling.get(key), f"a positive number ({kind} rope scaling needs it)")
    for key in ("short_factor", "long_factor") if kind == "longrope" else ():
        factors = scaling.get(key)
        if not isinstance(factors, list) or not all(isinstance(f, (int, float)) and f > 0 for f in factors):
            _invalid(f"rope_scaling.{key}", factors, "a list of positive numbers, one per rotated pair of dimensions")


# Sizes and counts past this are damage, not models (the largest vocabularies and contexts are near 2**24), and
# lists built from them (layer_types) would exhaust memory before any weight is read.
_LARGEST_SIZE = 2**31 - 1


def _refuse_bidirectional_attention(config: PretrainedConfig) -> None:
    """Every Gemma config's use_bidirectional_attention (the reference's encoder mode): None or False only."""
    if config.use_bidirectional_attention:
        _invalid("use_bidirectional_attention", config.use_bidirectional_attention,
                 "None or False (openformers implements the causal Gemma decoders)")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _LARGEST_SIZE


def _require_positive_ints(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        if not _positive_int(getattr(config, name)):
            _invalid(name, getattr(config, name), f"a positive integer up to {_LARGEST_SIZE}")


def _require_positive_numbers(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            _invalid(name, value, "a positive number")


def _check_layer_types(config: PretrainedConfig, kinds: tuple[str, ...] = ("sliding_attention", "full_attention")
                       ) -> None:
    """`layer_types`: one entry per layer, each one of `kinds` (by default "sliding_attention" or "full_attention")."""
    if (not isinstance(config.layer_types, (list, tuple)) or len(config.layer_types) != config.num_hidden_layers
            or any(kind not in kinds for kind in config.layer_types)):
        _invalid("layer_types", config.layer_types,
                 f"a list of num_hidden_layers={config.num_hidden_layers} entries, each one of {', '.join(kinds)}")


def _check_key_value_heads(config: PretrainedConfig) -> None:
    """Grouped-query attention: each key/value head serves the same number of query heads."""
    if config.num_attention_heads % config.num_key_value_heads:
        _invalid("num_key_value_heads", config.num_key_value_heads,
                 f"a divisor of num_attention_heads={config.num_attention_heads}")


def _require_bools(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(config, name), bool):
            _invalid(name, getattr(config, name), "true or false")


def _require_probabilities(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            _invalid(name, value, "a probability in [0, 1)")


def _require_heads_filling_hidden(config: "LlamaConfig", why: str) -> None:
    """num_attention_heads * head_dim == hidden_size, where a family's layers need it (`why`)."""
    if config.num_attention_heads * config.head_dim != config.hidden_size:
        _invalid("head_dim", config.head_dim, f"hidden_size / num_attention_heads = {config.hidden_size} / "
                 f"{config.num_attention_heads} ({why})")


def _invalid(name: str, value, expected: str):
    raise ValueError(f"Invalid config: {name}={value!r}; expected {expected}.")


# Infinity and NaN, which JSON lacks, as the reference writes them in config.json: {"__float__": "Infinity"}
# (Mamba-2's time_step_limit). Read back from that form, and from the bare Infinity of older files.
_SPECIAL_FLOATS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def _tagged_floats(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, dict):
        return {k: _tagged_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tagged_floats(v) for v in value]
    return value


def _untagged_float(obj: dict):
    if obj.keys() == {"__float__"} and isinstance(obj["__float__"], str) and obj["__float__"] in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[obj["__float__"]]
    return obj


def _read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"), object_hook=_untagged_float)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}); expected a JSON file.") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} should hold a JSON object, got {type(values).__name__}.")
    return values

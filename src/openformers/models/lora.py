"""LoRA adapters in the layout, file format and defaults of the `peft` library, without depending on it.

A targeted linear layer W becomes a `LoraLinear`: the frozen layer as `base_layer`, and for each adapter a pair
`lora_A[name]` (r x in) and `lora_B[name]` (out x r), so that y = W x + scaling * B A dropout(x), with scaling
= lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). A layer named in `modules_to_save` (a classifier head)
becomes a `ModulesToSave`: the frozen `original_module` and a trainable copy per adapter. The submodule names
are peft's, so a model with an adapter has peft's parameter names (`...q_proj.lora_A.default.weight`,
`...q_proj.base_layer.weight`, `score.modules_to_save.default.weight`), and the files are peft's:
adapter_config.json and adapter_model.safetensors, whose keys drop the adapter's name and start with
`base_model.model.` (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, `base_model.model.score.weight`).

The functions here take the model; `PreTrainedModel` exposes them as the methods of the reference's PEFT
integration (add_adapter, load_adapter, set_adapter, disable_adapters, enable_adapters, active_adapters,
get_adapter_state_dict, delete_adapter) plus peft's merge_and_unload.
"""

import copy
import dataclasses
import functools
import json
import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..weights import load_weights

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
ALL_LINEAR = "all-linear"

# peft's default target_modules per model_type, for a config that names none (the attention's query and value).
DEFAULT_TARGETS = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"], "bart": ["q_proj", "v_proj"], "t5": ["q", "v"], "mt5": ["q", "v"],
    "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "falcon": ["query_key_value"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"],
}
# The names peft gives a sequence classifier's head, left out of "all-linear" for task_type="SEQ_CLS".
CLASSIFIER_HEADS = ("score", "classifier")
# adapter_config.json keys that describe the file, not the adapter: read and dropped.
_DESCRIPTIVE_KEYS = {"auto_mapping", "peft_version", "megatron_core", "qalora_group_size", "runtime_config"}


@dataclasses.dataclass
class LoraConfig:
    """peft's LoraConfig: its field names and defaults, for the options openformers implements.

    target_modules: module names (a name matches a module whose dotted path ends with it), a regular expression
    matched against the whole path, or "all-linear" (every linear layer but the output layer); None: peft's
    default for the model's family. modules_to_save: modules trained and saved whole beside the adapter (a new
    classification head). init_lora_weights: True (A kaiming-uniform as nn.Linear, B zero, so the adapter starts
    as a no-op), "gaussian" (A normal with std 1/r) or False (A and B both random: for tests). Options of peft that
    openformers does not implement (DoRA, LoftQ, layer replication...) are refused by name when a file sets them.
    """

    r: int = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | str = True
    rank_pattern: dict = dataclasses.field(default_factory=dict)
    alpha_pattern: dict = dataclasses.field(default_factory=dict)
    task_type: str | None = None
    inference_mode: bool = False
    base_model_name_or_path: str | None = None
    revision: str | None = None
    peft_type: str = "LORA"

    def __post_init__(self):
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.exclude_modules, (set, tuple)):
            self.exclude_modules = sorted(self.exclude_modules)
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
        if not (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r > 0):
            raise ValueError(f"LoraConfig r must be a positive integer (the adapter's rank), got {self.r!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"LoraConfig lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.bias != "none":
            raise ValueError(f"LoraConfig bias={self.bias!r} is not supported: openformers trains no biases with an "
                             "adapter; use bias='none' (peft's default).")
        if self.init_lora_weights not in (True, False, "gaussian"):
            raise ValueError(f"LoraConfig init_lora_weights={self.init_lora_weights!r} is not supported; use True "
                             "(peft's default), 'gaussian' or False.")
        if self.peft_type != "LORA":
            raise ValueError(f"peft_type={self.peft_type!r}: openformers implements LoRA adapters only ('LORA').")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the adapter config") -> "LoraConfig":
        """A config from peft's keys; a key of an option openformers does not implement is refused unless it holds
        that option's off value (None, False, {}, [])."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unsupported = sorted(k for k, v in values.items()
                             if k not in fields and k not in _DESCRIPTIVE_KEYS and v not in (None, False, {}, [], ""))
        if unsupported:
            raise ValueError(
                f"{source} sets {', '.join(f'{k}={values[k]!r}' for k in unsupported)}: peft options openformers does "
                f"not implement. It reads LoRA adapters with the options {', '.join(sorted(fields))}."
            )
        return cls(**{k: v for k, v in values.items() if k in fields})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "LoraConfig":
        path = Path(folder) / CONFIG_NAME
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder} is not a folder: adapters are read from a folder on disk (fetch one "
                                    "from the Hub first with huggingface_hub.snapshot_download).")
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: it is not an adapter folder written by "
                                    "save_pretrained on a model with an adapter, or by peft.")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}).") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds a {type(values).__name__}, not a JSON object of LoRA options.")
        return cls.from_dict(values, str(path))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        values = self.to_dict()
        if isinstance(values["target_modules"], list):
            values["target_modules"] = sorted(values["target_modules"])
        text = json.dumps(values, indent=2, sort_keys=True) + "\n"
        (Path(folder) / CONFIG_NAME).write_text(text, encoding="utf-8")


def as_lora_config(config) -> LoraConfig:
    """Our LoraConfig, or one made from a peft LoraConfig (any object with peft's `to_dict`)."""
    if isinstance(config, LoraConfig):
        return config
    if hasattr(config, "to_dict") and str(getattr(config, "peft_type", "")).upper().endswith("LORA"):
        values = {k: (v.value if hasattr(v, "value") else v) for k, v in config.to_dict().items()}
        return LoraConfig.from_dict(values, f"the {type(config).__name__} passed")
    raise TypeError(f"adapter_config must be a LoraConfig (openformers.LoraConfig or peft's), got "
                    f"{type(config).__name__}.")


class LoraDropout(nn.Dropout):
    """peft's lora_dropout, nn.Dropout, whose masks while training on the CPU come from the compiled library
    (kernels/decode.cpp `dropout`) when a model loaded in this process has loaded it: the masks F.dropout draws
    for the same generator state, and the generator left where F.dropout leaves it, in an eighth of the time
    (bernoulli_ draws its elements one by one). Anywhere else it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.inplace and 0 < self.p < 1 and _drawn_by_the_kernel(x):
            return _KernelDropout.apply(x, 1.0 - self.p, _dropout_scale(self.p, x.dtype))
        return super().forward(x)


class _KernelDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep: float, scale: float):
        out, kept = torch.ops.openformers.dropout(x, keep, scale)
        ctx.save_for_backward(kept)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        (kept,) = ctx.saved_tensors
        return torch.ops.openformers.dropout_backward(grad, kept, ctx.scale), None, None


def _drawn_by_the_kernel(x: torch.Tensor) -> bool:
    # Plain tensors in eager mode only: torch.compile draws its own masks, a DTensor shards its own.
    return (not torch.compiler.is_compiling() and type(x) is torch.Tensor and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16) and x.is_contiguous()
            and hasattr(torch.ops.openformers, "dropout") and _kernel_draws_bernoulli())


@functools.cache
def _dropout_scale(p: float, dtype: torch.dtype) -> float:
    """F.dropout's noise.div_(1 - p) on a kept element: 1 / (1 - p) rounded to the dtype, by the same division."""
    return torch.ones((), dtype=dtype).div_(1 - p).item()


@functools.cache
def _kernel_draws_bernoulli() -> bool:
    """Whether the compiled dropout draws bernoulli_'s masks in this process, tried once on 1000 elements. It does
    where PyTorch draws them from its CPU generator; builds with MKL hand bernoulli_ on Intel CPUs to MKL's own
    stream, and there every LoraDropout stays F.dropout. The generator's state is put back afterwards."""
    state = torch.get_rng_state()
    try:
        expected = torch.empty(1000).bernoulli_(0.75)
        expected_state = torch.get_rng_state()
        torch.set_rng_state(state)
        _, kept = torch.ops.openformers.dropout(torch.ones(1000), 0.75, 1.0)
        return torch.equal(kept, expected.bool()) and torch.equal(torch.get_rng_state(), expected_state)
    finally:
        torch.set_rng_state(state)


class LoraLinear(nn.Module):
    """A linear layer with LoRA adapters beside it; the base layer (float or quantized) stays frozen."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active_adapters: list[str] = []
        self.disabled = False

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def add(self, name: str, r: int, alpha: float, config: LoraConfig) -> None:
        """Add adapter `name`: A and B are built as nn.Linear (whose own init draws from the generator) and then
        initialized as peft does, so the same seed gives peft's weights."""
        weight = self.base_layer.weight
        # The base layer's float dtype (the reference's add_adapter); float32 beside quantized weights.
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        A, B = nn.Linear(self.in_features, r, bias=False), nn.Linear(r, self.out_features, bias=False)
        if config.init_lora_weights is True:
            nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))
        elif config.init_lora_weights == "gaussian":
            nn.init.normal_(A.weight, std=1 / r)
        if config.init_lora_weights is not False:
            nn.init.zeros_(B.weight)
        self.lora_A[name] = A.to(weight.device, dtype)
        self.lora_B[name] = B.to(weight.device, dtype)
        self.lora_dropout[name] = LoraDropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.scaling[name] = alpha / math.sqrt(r) if config.use_rslora else alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.disabled:
            return result
        dtype = result.dtype
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            A, B = self.lora_A[name], self.lora_B[name]
            x = x.to(A.weight.dtype)
            result = result + B(A(self.lora_dropout[name](x))) * self.scaling[name]
        return result.to(dtype)

    def delta_weight(self, name: str) -> torch.Tensor:
        """The adapter as a change of the base weight, (out, in)."""
        return (self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]

    def merged(self) -> nn.Linear:
        """The base layer with the active adapters added into its weight."""
        base = self.base_layer
        if not base.weight.is_floating_point():
            raise ValueError(
                "merge_and_unload cannot add an adapter into quantized (int8/int4) weights: load the base model "
                "without quantization=, load_adapter, merge, then quantize the merged model."
            )
        if not self.disabled:
            with torch.no_grad():
                for name in self.active_adapters:
                    if name in self.lora_A:
                        base.weight += self.delta_weight(name).to(base.weight.dtype)
        return base


class ModulesToSave(nn.Module):
    """A module trained whole with an adapter: the frozen original, and a trainable copy per adapter."""

    def __init__(self, original_module: nn.Module):
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.disabled = False

    def add(self, name: str, dtype: torch.dtype) -> None:
        self.modules_to_save[name] = _trainable(copy.deepcopy(self.original_module), dtype)

    def in_use(self) -> nn.Module:
        """The module the forward runs: the active adapter's copy, or the original when adapters are off."""
        active = [name for name in self.active_adapters if name in self.modules_to_save]
        return self.original_module if self.disabled or not active else self.modules_to_save[active[0]]

    def forward(self, *args, **kwargs):
        return self.in_use()(*args, **kwargs)

    def __getattr__(self, name: str):
        # Code that reads the wrapped module's attributes (a head's weight, out_features) sees the one in use.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("original_module", "modules_to_save", "active_adapters", "disabled"):
                raise
            return getattr(self.in_use(), name)


def _trainable(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The module with its quantized linear layers (weights packed in buffers: from_pretrained(quantization=...))
    made float nn.Linear layers of `dtype`, so that a module to save trains on a quantized base model."""
    if isinstance(module, nn.Linear) and getattr(module, "scale", None) is not None:
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.weight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(module.dequantized(dtype))
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        return linear
    for name, child in list(module.named_children()):
        setattr(module, name, _trainable(child, dtype))
    return module


def _adapter_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, (LoraLinear, ModulesToSave))]


def _ends_with(path: str, names) -> bool:
    return any(path == n or path.endswith("." + n) for n in names)


def _pattern_value(patterns: dict, path: str, default):
    """peft's rank_pattern/alpha_pattern: the first key that matches the end of the module's path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def _targets(model: nn.Module, config: LoraConfig) -> list[str]:
    """The paths of the linear layers the config targets, in the model's module order."""
    targets = config.target_modules
    if targets is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(f"LoraConfig has no target_modules and there is no default for model_type "
                             f"{model_type!r}; name the layers, e.g. target_modules=['q_proj', 'v_proj'], or "
                             f"target_modules='all-linear'.")
        targets = DEFAULT_TARGETS[model_type]
    saved = config.modules_to_save or []
    excluded = config.exclude_modules
    wrappers = tuple(p + "." for p, m in model.named_modules() if isinstance(m, (LoraLinear, ModulesToSave)))
    linears = [(path, m) for path, m in model.named_modules()
               if isinstance(m, (nn.Linear, LoraLinear)) and path and not path.startswith(wrappers)
               and not _ends_with(path, saved)]
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        skipped = set()
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None:
            skipped = {id(output)}
        elif config.task_type == "SEQ_CLS":
            head = next((getattr(model, n) for n in CLASSIFIER_HEADS if isinstance(getattr(model, n, None), nn.Module)),
                        None)
            skipped = {id(m) for m in head.modules()} if head is not None else set()
        found = [path for path, m in linears if id(m) not in skipped]
    elif isinstance(targets, str):
        found = [path for path, _ in linears if re.fullmatch(targets, path)]
    else:
        found = [path for path, _ in linears if _ends_with(path, targets)]
    if isinstance(excluded, str):
        found = [path for path in found if not re.fullmatch(excluded, path)]
    elif excluded:
        found = [path for path in found if not _ends_with(path, excluded)]
    if not found:
        raise ValueError(
            f"LoraConfig target_modules={targets!r} matches no linear layer of {type(model).__name__}; its linear "
            f"layers include {', '.join(sorted({p.rpartition('.')[2] for p, _ in linears})[:12])}."
        )
    return found


def add_adapter(model: nn.Module, config, adapter_name: str = "default") -> None:
    """Wrap the targeted linear layers with a new adapter, copy the modules to save, freeze everything else, and
    make the adapter the active one."""
    config = as_lora_config(config)
    if adapter_name in model.__dict__.get("peft_config", {}):
        raise ValueError(f"An adapter named {adapter_name!r} is already attached; pick another adapter_name or "
                         "delete_adapter it first.")
    config = dataclasses.replace(config)  # the model keeps its own copy: target_modules is resolved below
    found = _targets(model, config)
    saved = _paths_to_save(model, config.modules_to_save or [])
    if config.modules_to_save and not saved:  # checked before the model changes
        raise ValueError(f"LoraConfig modules_to_save={config.modules_to_save} names no module of "
                         f"{type(model).__name__}; name its head, e.g. 'score' or 'classifier'.")
    if isinstance(config.target_modules, str) and config.target_modules.lower() == ALL_LINEAR:
        config.target_modules = found  # as peft records it, so the file names the layers
    elif config.target_modules is None:
        config.target_modules = sorted({path.rpartition(".")[2] for path in found})
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = getattr(getattr(model, "config", None), "name_or_path", None) or None
    for path in found:
        layer = model.get_submodule(path)
        if not isinstance(layer, LoraLinear):
            layer = LoraLinear(layer)
            _replace(model, path, layer)
        rank = _pattern_value(config.rank_pattern, path, config.r)
        layer.add(adapter_name, rank, _pattern_value(config.alpha_pattern, path, config.lora_alpha), config)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for path in saved:
        module = model.get_submodule(path)
        if not isinstance(module, ModulesToSave):
            module = ModulesToSave(module)
            _replace(model, path, module)
        module.add(adapter_name, dtype)
    model.__dict__.setdefault("peft_config", {})[adapter_name] = config
    model._hf_peft_config_loaded = True
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    set_adapter(model, adapter_name)


def _paths_to_save(model: nn.Module, names: list[str]) -> list[str]:
    """The outermost modules named in modules_to_save (not inside a LoRA layer or another saved module)."""
    found = []
    for path, _ in model.named_modules():
        if path and _ends_with(path, names) and not path.startswith(tuple(p + "." for p in found)) \
                and ".modules_to_save." not in path and not path.endswith(".original_module"):
            found.append(path)
    return [p for p in found if not isinstance(model.get_submodule(p), LoraLinear)]


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _configs(model: nn.Module) -> dict[str, LoraConfig]:
    configs = model.__dict__.get("peft_config")
    if not configs:
        raise ValueError("No adapter loaded. Add one with add_adapter(LoraConfig(...)) or load_adapter(folder) first.")
    return configs


def set_adapter(model: nn.Module, adapter_name: str | list[str]) -> None:
    """Make these adapters the active ones (their weights trainable unless loaded for inference), the others idle."""
    configs = _configs(model)
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    missing = [name for name in names if name not in configs]
    if missing:
        raise ValueError(f"No adapter named {', '.join(map(repr, missing))}; the model has "
                         f"{', '.join(map(repr, configs))}.")
    layers = _adapter_layers(model)
    if any(isinstance(layer, ModulesToSave) and len([n for n in names if n in layer.modules_to_save]) > 1
           for layer in layers):
        raise ValueError(f"Adapters {names} each keep their own copy of a module to save; only one of them can be "
                         "active at a time.")
    for layer in layers:
        layer.active_adapters = list(names)
        layer.disabled = False
        for dictionary in _trainable_dicts(layer):
            for name, module in dictionary.items():
                module.requires_grad_(name in names and not configs[name].inference_mode)


def _trainable_dicts(layer) -> list[nn.ModuleDict]:
    return [layer.lora_A, layer.lora_B] if isinstance(layer, LoraLinear) else [layer.modules_to_save]


def enable_adapters(model: nn.Module, enabled: bool) -> None:
    """Run with the active adapters (enabled) or with the base model alone; disabled adapters do not train."""
    _configs(model)
    if enabled:
        set_adapter(model, active_adapters(model))
        return
    for layer in _adapter_layers(model):
        layer.disabled = True
        for dictionary in _trainable_dicts(layer):
            dictionary.requires_grad_(False)


def active_adapters(model: nn.Module) -> list[str]:
    _configs(model)
    layer = next(iter(_adapter_layers(model)))
    return list(layer.active_adapters)


def adapter_state_dict(model: nn.Module, adapter_name: str | None = None, state_dict: dict | None = None) -> dict:
    """The adapter's tensors under peft's names: the adapter's name dropped (`...q_proj.lora_A.weight`), a module
    to save under its own name (`score.weight`)."""
    configs = _configs(model)
    name = adapter_name or active_adapters(model)[0]
    if name not in configs:
        raise ValueError(f"No adapter named {name!r}; the model has {', '.join(map(repr, configs))}.")
    state_dict = model.state_dict() if state_dict is None else state_dict
    kept = {}
    for key, tensor in state_dict.items():
        for kind in (".lora_A.", ".lora_B."):
            if f"{kind}{name}." in key:
                kept[key.replace(f"{kind}{name}.", kind)] = tensor
        if f".modules_to_save.{name}." in key:
            kept[key.replace(f".modules_to_save.{name}.", ".")] = tensor
    return kept


def save_adapter(model: nn.Module, folder: Path, state_dict: dict | None = None, safe_serialization: bool = True):
    """adapter_config.json and adapter_model.safetensors (.bin without safe_serialization) of the active adapter."""
    names = active_adapters(model)
    if len(names) != 1:
        raise ValueError(f"save_pretrained saves one adapter, but {names} are active; set_adapter(name) to the one to "
                         "save, then save each in turn.")
    tensors = adapter_state_dict(model, names[0], state_dict)
    tensors = {PEFT_PREFIX + k: v.detach().contiguous() for k, v in tensors.items()}
    model.peft_config[names[0]].save_pretrained(folder)
    for stale in WEIGHTS_NAMES:
        (folder / stale).unlink(missing_ok=True)
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(tensors, str(folder / WEIGHTS_NAMES[0]), metadata={"format": "pt"})
    else:
        torch.save(tensors, folder / WEIGHTS_NAMES[1])


def is_adapter_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def load_adapter(
    model: nn.Module, folder: str | os.PathLike | None = None, adapter_name: str | None = None,
    peft_config: dict | LoraConfig | None = None, adapter_state_dict: dict | None = None, is_trainable: bool = False,
) -> None:
    """Attach an adapter saved by save_pretrained or by peft (a folder), or given as a config and state dict.

    Loaded for inference unless is_trainable=True (the reference's default): its weights do not require grad.
    The adapter becomes active when it is the model's first one, as in the reference; set_adapter picks another.
    """
    name = adapter_name or "default"
    if name in model.__dict__.get("peft_config", {}):
        raise ValueError(f"An adapter named {name!r} is already attached; pass another adapter_name.")
    if peft_config is None:
        if folder is None:
            raise ValueError("load_adapter needs an adapter folder, or peft_config and adapter_state_dict.")
        config = LoraConfig.from_pretrained(folder)
    else:
        config = peft_config if isinstance(peft_config, LoraConfig) else LoraConfig.from_dict(dict(peft_config))
    if adapter_state_dict is None:
        if folder is None:
            raise ValueError("load_adapter got peft_config without adapter_state_dict or a folder to read it from.")
        files = [Path(folder) / f for f in WEIGHTS_NAMES if (Path(folder) / f).is_file()]
        if not files:
            raise FileNotFoundError(f"{folder} has {CONFIG_NAME} but no {' or '.join(WEIGHTS_NAMES)}.")
        source, adapter_state_dict = str(files[0]), load_weights(files[0])
    else:
        source = "adapter_state_dict"
    config = dataclasses.replace(config, inference_mode=not is_trainable)
    first = not model.__dict__.get("peft_config")
    previous = None if first else active_adapters(model)
    add_adapter(model, config, name)
    _load_adapter_tensors(model, name, adapter_state_dict, source)
    if config.inference_mode:
        model.eval()  # as the reference does for an adapter loaded for inference
    if previous is not None:
        set_adapter(model, previous)


def load_adapter_weights(model: nn.Module, folder: str | os.PathLike) -> None:
    """Put the tensors of a saved adapter back into the model's active adapter, made with the same config (a
    Trainer's checkpoint, for resume or load_best_model_at_end)."""
    files = [Path(folder) / f for f in WEIGHTS_NAMES if (Path(folder) / f).is_file()]
    if not files:
        raise FileNotFoundError(f"{folder} holds no {' or '.join(WEIGHTS_NAMES)}, but the model has an adapter: "
                                "resume from a checkpoint saved while the adapter was attached.")
    _load_adapter_tensors(model, active_adapters(model)[0], load_weights(files[0]), str(files[0]))


def _load_adapter_tensors(model: nn.Module, name: str, tensors: dict, source: str) -> None:
    expected = adapter_state_dict(model, name)
    placed = {}
    for key, tensor in tensors.items():
        key = key.removeprefix(PEFT_PREFIX)
        placed[key] = tensor
    missing = sorted(set(expected) - set(placed))
    unexpected = sorted(set(placed) - set(expected))
    wrong = sorted(k for k in set(expected) & set(placed) if expected[k].shape != placed[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{label} ({len(keys)}): {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                    if keys]
        raise ValueError(f"{source} does not fit {type(model).__name__} with its adapter config: "
                         + "; ".join(problems) + ". Check that the adapter was trained on this base model.")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(placed[key])


def delete_adapter(model: nn.Module, adapter_name: str | list[str]) -> None:
    configs = _configs(model)
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    missing = [n for n in names if n not in configs]
    if missing:
        raise ValueError(f"No adapter named {', '.join(map(repr, missing))}; the model has "
                         f"{', '.join(map(repr, configs))}.")
    for name in names:
        del configs[name]
        for layer in _adapter_layers(model):
            dictionaries = _trainable_dicts(layer) + ([layer.lora_dropout] if isinstance(layer, LoraLinear) else [])
            for dictionary in dictionaries:
                if name in dictionary:
                    del dictionary[name]
            if isinstance(layer, LoraLinear):
                layer.scaling.pop(name, None)
            layer.active_adapters = [n for n in layer.active_adapters if n != name]
    if not configs:
        _unwrap(model, merge=False)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Add the active adapters into the base weights and remove every adapter: the plain model, giving the
    outputs the adapted one gave. A module to save becomes its active adapter's copy."""
    _configs(model)
    _unwrap(model, merge=True)
    return model


def _unwrap(model: nn.Module, merge: bool) -> None:
    for path, layer in [(p, m) for p, m in model.named_modules() if isinstance(m, (LoraLinear, ModulesToSave))]:
        if isinstance(layer, LoraLinear):
            plain = layer.merged() if merge else layer.base_layer
        else:
            active = [n for n in layer.active_adapters if n in layer.modules_to_save]
            plain = layer.modules_to_save[active[0]] if merge and active and not layer.disabled \
                else layer.original_module
        _replace(model, path, plain)
    model.__dict__.pop("peft_config", None)
    model._hf_peft_config_loaded = False

"""FSDP for the Trainer: `fsdp` and `fsdp_config` read as the reference reads them, the model sharded with torch's
FSDP2 (`fully_shard`, per layer and then the root), and the sharded state saved and restored with
torch.distributed.checkpoint.

Under torchrun every process holds 1/world of each parameter, of its gradient and of the optimizer state.
A layer's full weights exist only while it runs (gathered before its forward and backward, freed after);
gradients are averaged with a reduce-scatter, as DDP's all-reduce averages them, so the loop's arithmetic
is the same as DDP's. Checkpoints hold the full weights (gathered on the first process, written as
save_pretrained writes them) and the sharded model and optimizer state that a resume reads back.
"""

import json
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

# The values `fsdp` takes in the reference: a string of words, a list of them, or True.
_RESHARD = {"full_shard": True, "shard_grad_op": False}
_FSDP1_ONLY = ("no_shard", "hybrid_shard", "hybrid_shard_zero2")
_WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
_STATE_DICT_TYPES = ("FULL_STATE_DICT", "SHARDED_STATE_DICT")
# fsdp_config keys of FSDP1 (the reference's `version: 1`), which FSDP2 has no setting for.
_FSDP1_KEYS = ("backward_prefetch", "forward_prefetch", "use_orig_params", "sync_module_states", "limit_all_gathers")
_CONFIG_KEYS = ("version", "reshard_after_forward", "cpu_offload", "activation_checkpointing",
                "cpu_ram_efficient_loading", "state_dict_type", "auto_wrap_policy", "transformer_layer_cls_to_wrap",
                "min_num_params", "xla", "xla_fsdp_settings", "xla_fsdp_grad_ckpt", "xla_fsdp_v2") + _FSDP1_KEYS
# What accelerate wraps by size when min_num_params is not given.
_DEFAULT_MIN_NUM_PARAMS = 100_000_000
SHARDED_FOLDER = "fsdp_state"  # the distributed checkpoint inside checkpoint-N


@dataclass(frozen=True)
class FsdpSettings:
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    activation_checkpointing: bool = False
    full_state_dict: bool = True  # checkpoints also hold the full weights (FULL_STATE_DICT)
    wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    layer_classes: tuple[str, ...] = ()
    min_num_params: int = 0


def fsdp_settings(fsdp, fsdp_config) -> FsdpSettings | None:
    """The settings `fsdp` and `fsdp_config` ask for (None: no FSDP); a ValueError names any value that is not one
    of the reference's, or that FSDP2 cannot do."""
    if fsdp in (None, False, "", []):
        return None
    config = _read_config(fsdp_config)
    options = {}
    if fsdp is True:
        words = []
    elif isinstance(fsdp, str):
        words = fsdp.split()
    elif isinstance(fsdp, (list, tuple)):
        words = list(fsdp)
    else:
        raise ValueError(f"fsdp must be True, a string such as 'full_shard auto_wrap', or a list of such words; "
                         f"got {fsdp!r}.")
    for word in words:
        word = str(word).lower()
        if word in _RESHARD:
            if "reshard_after_forward" in options and options["reshard_after_forward"] != _RESHARD[word]:
                raise ValueError(f"fsdp={fsdp!r} names both full_shard and shard_grad_op; pick one.")
            options["reshard_after_forward"] = _RESHARD[word]
        elif word == "offload":
            options["cpu_offload"] = True
        elif word == "auto_wrap":
            pass  # wrapping each layer is the default
        elif word in _FSDP1_ONLY:
            raise ValueError(f"fsdp={fsdp!r}: {word} is a strategy of FSDP1, which openformers does not drive; "
                             "FSDP2 (fully_shard) does full_shard and shard_grad_op.")
        else:
            raise ValueError(f"fsdp={fsdp!r}: unknown option {word!r}; the options are full_shard, shard_grad_op, "
                             "offload and auto_wrap (or fsdp=True with fsdp_config).")
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"fsdp_config has unknown keys {unknown}; the keys are {', '.join(_CONFIG_KEYS)} "
                         "(each may also be written with an fsdp_ prefix).")
    if int(config.get("version", 2)) != 2:
        raise ValueError(f"fsdp_config version={config['version']!r}: openformers shards with FSDP2 only "
                         "(fully_shard); set version to 2 or leave it out.")
    for key in ("xla", "xla_fsdp_grad_ckpt", "xla_fsdp_v2"):
        if _flag(config, key, False):
            raise ValueError(f"fsdp_config {key}=True asks for PyTorch/XLA's FSDP, which openformers does not drive.")
    ignored = [key for key in _FSDP1_KEYS if key in config]
    if ignored:
        warnings.warn(f"fsdp_config {', '.join(ignored)} configure FSDP1; FSDP2 has no such settings, so they are "
                      "ignored.", stacklevel=4)
    if _flag(config, "cpu_ram_efficient_loading", False):
        warnings.warn("fsdp_config cpu_ram_efficient_loading=True: every process loads the whole model before it is "
                      "sharded (openformers does not broadcast the weights from the first process).", stacklevel=4)
    if "reshard_after_forward" in config:
        options["reshard_after_forward"] = _flag(config, "reshard_after_forward", True)
    if "cpu_offload" in config:
        options["cpu_offload"] = _flag(config, "cpu_offload", False)
    state_dict_type = str(config.get("state_dict_type", "FULL_STATE_DICT")).upper()
    policy = str(config.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")).upper()
    for name, value, choices in (("state_dict_type", state_dict_type, _STATE_DICT_TYPES),
                                 ("auto_wrap_policy", policy, _WRAP_POLICIES)):
        if value not in choices:
            raise ValueError(f"fsdp_config {name} must be one of {', '.join(choices)}; got {value!r}.")
    classes = config.get("transformer_layer_cls_to_wrap") or ()
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    min_num_params = config.get("min_num_params", 0)
    if not isinstance(min_num_params, int) or min_num_params < 0:
        raise ValueError(f"fsdp_config min_num_params must be a non-negative integer; got {min_num_params!r}.")
    return FsdpSettings(**options, activation_checkpointing=_flag(config, "activation_checkpointing", False),
                        full_state_dict=state_dict_type == "FULL_STATE_DICT", wrap_policy=policy,
                        layer_classes=classes, min_num_params=min_num_params)


def _read_config(fsdp_config) -> dict:
    if fsdp_config is None:
        return {}
    if isinstance(fsdp_config, (str, Path)):
        path = Path(fsdp_config)
        if not path.is_file():
            raise FileNotFoundError(f"fsdp_config={str(fsdp_config)!r} is neither a dict nor a JSON file that exists.")
        try:
            fsdp_config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"fsdp_config file {path} is not valid JSON: {error}") from None
    if not isinstance(fsdp_config, dict):
        raise ValueError(f"fsdp_config must be a dict or the path of a JSON file; got {type(fsdp_config).__name__}.")
    return {key.removeprefix("fsdp_"): value for key, value in fsdp_config.items()}


def _flag(config: dict, key: str, default: bool) -> bool:
    value = config.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"fsdp_config {key} must be true or false; got {value!r}.")
    return value


def shard_model(model: nn.Module, settings: FsdpSettings, device: torch.device) -> nn.Module:
    """Shard `model` in place across the processes of the default group: each layer the policy picks is its own
    unit (gathered only while it runs), then the root holds the rest (embeddings, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    offload = CPUOffloadPolicy() if settings.cpu_offload and device.type == "cuda" else OffloadPolicy()
    options = dict(mesh=mesh, reshard_after_forward=settings.reshard_after_forward, offload_policy=offload)
    for module in _units(model, settings):  # innermost first: a unit's parameters are those no inner unit took
        fully_shard(module, **options)
    fully_shard(model, **options)
    return model


def _units(model: nn.Module, settings: FsdpSettings) -> list[nn.Module]:
    if settings.wrap_policy == "NO_WRAP":
        return []
    if settings.wrap_policy == "SIZE_BASED_WRAP":
        return _units_by_size(model, settings.min_num_params or _DEFAULT_MIN_NUM_PARAMS)
    names = set(settings.layer_classes or getattr(model, "_no_split_modules", None) or ())
    if names:
        found = {type(m).__name__ for m in model.modules()}
        missing = sorted(names - found)
        if settings.layer_classes and missing:
            raise ValueError(f"fsdp_config transformer_layer_cls_to_wrap names {missing}, which {type(model).__name__} "
                             f"does not contain; its layer classes include {sorted(found)[:20]}.")
        return [m for m in model.modules() if type(m).__name__ in names and m is not model][::-1]
    # Without names, the units are the layers that quantized loading reads one at a time (none inside another).
    from ..models.base import named_layers  # here, so that TrainingArguments (fsdp_settings) loads no model code

    return [layer for _, layer in named_layers(model)]


def _units_by_size(model: nn.Module, min_num_params: int) -> list[nn.Module]:
    units = []

    def visit(module: nn.Module) -> int:
        """Parameters of `module` not yet in a unit; wraps it when they reach min_num_params."""
        count = sum(p.numel() for p in module.parameters(recurse=False))
        count += sum(visit(child) for child in module.children())
        if module is not model and count >= min_num_params:
            units.append(module)
            return 0
        return count

    visit(model)
    return units


def gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Reduce-scatter the gradients in this backward (True), or keep adding them up locally (False, the
    micro-batches of an accumulated step before the last: FSDP's form of DDP's no_sync)."""
    model.set_requires_gradient_sync(enabled)


def as_number(value) -> float:
    """A float from a tensor that may be a DTensor (clip_grad_norm_ of sharded gradients returns one)."""
    full_tensor = getattr(value, "full_tensor", None)
    return float(full_tensor() if full_tensor is not None else value)


def _trainable_names(model: nn.Module) -> set[str] | None:
    """With an adapter, the parameters the run changes (the rest come from the base model); None: all of them."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return None
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def full_state_dict(model: nn.Module) -> dict:
    """The model's whole state dict on the first process (an empty dict elsewhere); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _sharded_state(model: nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    keep = _trainable_names(model)
    weights = get_model_state_dict(model)
    state = {"model": {k: v for k, v in weights.items() if keep is None or k in keep}}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    return state


def save_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Each process writes its shards of the model (only the trainable part with an adapter) and of the optimizer
    state (optimizer=None: the model's alone) into folder; every process must call it."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_state(model, optimizer), checkpoint_id=folder)


def load_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Read back what save_sharded wrote, on the same number of processes or another; optimizer=None reads the
    model alone."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict,
    )

    if not (folder / ".metadata").is_file():
        raise FileNotFoundError(f"{folder} holds no distributed checkpoint (.metadata): the checkpoint was not saved "
                                "by an FSDP run, so an FSDP run cannot resume from it.")
    state = _sharded_state(model, optimizer)
    try:
        dcp.load(state, storage_reader=_metadata_checking_reader(folder), planner=_weights_only_planner())
    except dcp.CheckpointException as error:  # one per failing process, each with its traceback
        failure = next(iter(error.failures.values()))[0]
        raise ValueError(f"The distributed checkpoint in {folder} could not be read into "
                         f"{type(model).__name__}: {failure}") from None
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=_trainable_names(model) is None))
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])


_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem", "torch",
                     "torch.serialization", "collections", "pathlib")


class _MetadataUnpickler(pickle.Unpickler):
    """Reads a distributed checkpoint's .metadata, a pickle, allowing only the classes such a file is made of."""

    def find_class(self, module, name):
        if module not in _METADATA_MODULES:  # refused before anything is imported
            self._refuse(module, name)
        found = super().find_class(module, name)
        allowed = (
            (module == "torch.distributed.checkpoint.metadata" and getattr(found, "__module__", None) == module)
            or (module, name) in (("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                                  ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                                  ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"))
            or (module == "torch" and isinstance(found, torch.dtype))
        )
        if not allowed:
            self._refuse(module, name)
        return found

    @staticmethod
    def _refuse(module: str, name: str):
        raise ValueError(f"the distributed checkpoint's .metadata names {module}.{name}, which such a file never "
                         "holds; refused, since unpickling it could run code.")


def _metadata_checking_reader(folder: Path):
    """DCP's file reader, reading .metadata with _MetadataUnpickler: its own uses pickle.load, which runs any code a
    crafted file holds."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class MetadataCheckingReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(Path(self.path) / ".metadata", "rb") as file:
                metadata = _MetadataUnpickler(file).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return MetadataCheckingReader(folder)


def _weights_only_planner():
    """DCP's load planner, reading the checkpoint's non-tensor values (the optimizer's hyperparameters) with
    torch.load(weights_only=True): its own unpickles them with weights_only=False, which runs any code a crafted
    file holds."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value):
            try:
                torch.load(value, weights_only=True)  # before the planner reads it
            except pickle.UnpicklingError:
                raise ValueError(f"{read_item.dest_index.fqn} holds a pickled object other than plain values "
                                 "(numbers, strings, tuples, tensors); refused, as torch.load(weights_only=True) "
                                 "refuses it.") from None
            value.seek(0)
            super().load_bytes(read_item, value)

    return WeightsOnlyLoadPlanner()


def leave_process_group() -> None:
    """Destroy the default process group at exit, while the interpreter is whole (registered with atexit).

    gloo's worker threads drop a collective they ran only after its caller has seen it complete; dropping one
    whose tensors belong to Python takes the GIL, and a thread that asks for the GIL once the interpreter is
    finalizing ends itself inside a C++ destructor, which aborts the process ("terminate called without an
    active exception") after the script has finished. A wrapper that still holds the group (DDP's reducer,
    FSDP's device mesh) keeps those threads alive past destroy_process_group, so the GIL is given up for a
    moment here for them to finish dropping what they ran.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(0.05)

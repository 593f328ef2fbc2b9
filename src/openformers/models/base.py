"""PreTrainedModel: what every model class shares — loading, saving, `generate`, and a few properties.

Loading builds the model on the `meta` device (no memory, no random init), reads the checkpoint
memory-mapped, and hands its tensors to `load_state_dict(assign=True)`, so weights are never copied
into freshly initialized parameters. Only the keys of a head the checkpoint lacks are initialized.
"""

import collections
import copy
import dataclasses
import inspect
import json
import os
import re
import tempfile
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from ..acceleration import accelerator
from ..configs import CONFIG_CLASSES, PretrainedConfig, config_from_gguf, hub_api, read_config, upload_folder
from ..generation.cache import Cache, DynamicCache, EncoderDecoderCache
from ..generation.config import GenerationConfig
from ..generation.decoding import GenerationMixin
from ..generation.options import Kind, names_of_kind
from ..hub import ModelFiles, resolve
from ..quantization_config import BitsAndBytesConfig, is_kept, quantized_load
from ..weights import (
    GGUFFile, GGUFLayerReader, TensorReader, find_weights, load_weights, save_safetensors, tensor_reader,
)
from . import lora, packed_checkpoint
from .layers import RMSNorm
from .outputs import ModelOutput

# The keyword options of torch.utils.checkpoint.checkpoint.
_CHECKPOINT_OPTIONS = {"use_reentrant", "preserve_rng_state", "context_fn", "determinism_check", "debug", "early_stop"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _InitializedOnBuild(type(nn.Module)):
    """Models come out of their constructor with initialized weights, as the reference's do.

    A class that calls `self.post_init()` at the end of its `__init__` (the reference's convention, and
    a user's own model) is initialized there; any other is initialized right after its `__init__`. A
    model built on the meta device (from_pretrained) is not initialized: its weights come from the file.
    """

    def __call__(cls, *args, **kwargs):
        model = super().__call__(*args, **kwargs)
        if not model.__dict__.get("_weights_initialized", False):
            model.init_weights()
        return model


class PreTrainedModel(nn.Module, GenerationMixin, metaclass=_InitializedOnBuild):
    config_class: type[PretrainedConfig] = PretrainedConfig
    # Head classes keep the base model under this attribute ("model.layers.0..." in their checkpoints).
    base_model_prefix = "model"
    # The token embedding table, by attribute path; None: the model's one nn.Embedding of config.vocab_size rows.
    input_embeddings_name: str | None = None
    # The layer that turns hidden states into vocabulary logits; None: the parameter tied to the embeddings
    # (`tied_weights`), if any.
    output_embeddings_name: str | None = None
    # The argument that carries the inputs (the Trainer and pipelines read it).
    main_input_name = "input_ids"
    # Parameter -> the parameter it shares storage with when config.tie_word_embeddings is set.
    tied_weights: dict[str, str] = {}
    # Checkpoint keys that older files store but that are not parameters (recomputed buffers).
    ignored_checkpoint_keys = (r"(^|\.)rotary_emb\.inv_freq$",)
    # Base-model parameters a checkpoint may lack (a head saved without them): initialized, with a warning.
    initialized_if_missing: tuple[str, ...] = ()
    # Whether an adapter is attached (the reference's name; add_adapter and load_adapter set it).
    _hf_peft_config_loaded = False
    # Modules (by attribute name) whose weights stay float32 when loading in float16, as the reference's
    # _keep_in_fp32_modules (T5's feed-forward output overflows float16).
    kept_in_float32: tuple[str, ...] = ()
    # Parameters and buffers (by the end of their names, "gate.weight") that stay float32 when loading in float16
    # or bfloat16 alike, as the reference's _keep_in_fp32_modules_strict: DeepSeek's router, whose bfloat16 weights
    # would choose other experts.
    always_float32: tuple[str, ...] = ()

    def __init__(self, config: PretrainedConfig):
        if not isinstance(config, PretrainedConfig):
            raise TypeError(
                f"{type(self).__name__}(config) needs a PretrainedConfig (for example {self.config_class.__name__}), "
                f"got {type(config).__name__}; build one with {self.config_class.__name__}(...) or "
                f"AutoConfig.from_pretrained(...)."
            )
        super().__init__()
        self.config = config
        if config._attn_implementation is None:
            config._attn_implementation = "sdpa"  # the default, as the reference reports it
        # The token ids and any generation option config.json holds (older files keep max_length... there);
        # from_pretrained replaces it with generation_config.json when the folder has one.
        self.generation_config = GenerationConfig.from_model_config(config)

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A Hugging Face checkpoint's tensors as this model's parameters (GPT-2 transposes its Conv1D weights)."""
        return state_dict

    @staticmethod
    def expert_stacks_to_pack(state_dict: dict[str, torch.Tensor], read) -> tuple[dict, dict]:
        """For a quantized load: the checkpoint's stacks of experts' matrices that are stored in a form of their own
        (gpt-oss's MXFP4 blocks), to be packed expert by expert as they are read, never made floats all at once.
        Returns the state dict with each such stack as a placeholder of its parameter (meta device), and for each
        its parameter's name -> a function () -> (number of experts, e -> expert e's (out, in) float matrix) that
        reads what it needs with `read(checkpoint name)`. None here."""
        return state_dict, {}

    @staticmethod
    def to_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reverse of `from_checkpoint_layout`, for save_pretrained."""
        return state_dict

    @staticmethod
    def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
        raise ValueError(f"{type(config).__name__} models cannot be loaded from GGUF files.")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (tied ones too); only those that require grad, or without the embedding
        tables (nn.Embedding: tokens, positions, token types), if asked."""
        skipped = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)} if exclude_embeddings else set()
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skipped and (p.requires_grad or not only_trainable))

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and the buffers: rotary tables...)."""
        tensors = [*self.parameters(), *(self.buffers() if return_buffers else ())]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    @property
    def name_or_path(self) -> str:
        """The folder or Hub id the model was loaded from ("" for a model built from a config)."""
        return self.config.name_or_path

    @classmethod
    def can_generate(cls) -> bool:
        """Whether `generate` makes sense for this class: a left-to-right language-model head."""
        return getattr(cls, "loss_shifts_labels", False)

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' output require grad, so that gradient checkpointing works with frozen
        embeddings (adapters such as LoRA train with the base model frozen)."""
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(
            lambda module, inputs, output: output.requires_grad_(True)
        )

    def disable_input_require_grads(self) -> None:
        hook = self.__dict__.pop("_require_grads_hook", None)
        if hook is not None:
            hook.remove()

    # -- adapters (LoRA in peft's format; models/lora.py) ------------------------------------------------------

    def add_adapter(self, adapter_config, adapter_name: str | None = None) -> None:
        """Attach a new LoRA adapter (openformers' or peft's LoraConfig) and make it the active one: the targeted
        linear layers get trainable A and B matrices, modules_to_save a trainable copy, every other weight freezes."""
        lora.add_adapter(self, adapter_config, adapter_name or "default")

    def load_adapter(self, peft_model_id: str | os.PathLike | None = None, adapter_name: str | None = None,
                     peft_config: dict | None = None, adapter_state_dict: dict | None = None,
                     is_trainable: bool = False) -> None:
        """Attach an adapter folder (adapter_config.json + adapter_model.safetensors, ours or peft's), or a
        peft_config with its adapter_state_dict; frozen unless is_trainable=True."""
        lora.load_adapter(self, peft_model_id, adapter_name, peft_config, adapter_state_dict, is_trainable)

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        lora.set_adapter(self, adapter_name)

    def disable_adapters(self) -> None:
        """Run the base model alone (the adapters stay attached)."""
        lora.enable_adapters(self, False)

    def enable_adapters(self) -> None:
        lora.enable_adapters(self, True)

    def active_adapters(self) -> list[str]:
        return lora.active_adapters(self)

    def get_adapter_state_dict(self, adapter_name: str | None = None, state_dict: dict | None = None) -> dict:
        """The adapter's tensors (the active one's by default) under peft's names, as save_pretrained writes them."""
        return lora.adapter_state_dict(self, adapter_name, state_dict)

    def delete_adapter(self, adapter_names: str | list[str]) -> None:
        lora.delete_adapter(self, adapter_names)

    def merge_and_unload(self) -> "PreTrainedModel":
        """Add the active adapter into the base weights and drop the adapters (peft's name): a plain model again."""
        return lora.merge_and_unload(self)

    def output_options(self, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
        """A forward call's output_attentions, output_hidden_states and return_dict: the call's, else the config's."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )

    def returned(self, output: ModelOutput, return_dict: bool | None) -> ModelOutput | tuple:
        """What forward returns: the output, or its tuple of set fields when return_dict (else the config's) is False."""
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()

    def new_cache(self) -> Cache:
        """The empty cache generate decodes with: a DynamicCache of keys and values (a state-space model's
        MambaCache)."""
        return DynamicCache()

    def attention_path(self, output_attentions: bool) -> str:
        """How the attention layers compute: "eager" (step by step, layers.eager_attention, as the reference's eager
        path) when the weights are wanted or the config asks for it (attn_implementation="eager"), else "sdpa".

        The two differ only at a query that may see no key (left padding): "sdpa" gives it zeros, "eager" the
        mean of the values, as the reference's two paths do.
        """
        eager = output_attentions or self.config._attn_implementation == "eager"
        return "eager" if eager else "sdpa"

    # -- embeddings ---------------------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.get_submodule(self._input_embeddings_path())

    def set_input_embeddings(self, value: nn.Module) -> None:
        self._replace_submodule(self._input_embeddings_path(), value)

    def get_output_embeddings(self) -> nn.Module | None:
        """The layer that projects hidden states to vocabulary logits (lm_head), or None for a model without one."""
        path = self._output_embeddings_path()
        return None if path is None else self.get_submodule(path)

    def set_output_embeddings(self, value: nn.Module) -> None:
        path = self._output_embeddings_path()
        if path is None:
            raise ValueError(f"{type(self).__name__} has no output embeddings (no language-model head) to replace.")
        self._replace_submodule(path, value)

    def _input_embeddings_path(self) -> str:
        if self.input_embeddings_name is not None:
            return self.input_embeddings_name
        vocab_size = getattr(self.config, "vocab_size", None)
        found = [name for name, module in self.named_modules()
                 if isinstance(module, nn.Embedding) and (vocab_size is None or module.num_embeddings == vocab_size)]
        if len(found) != 1:
            raise ValueError(
                f"{type(self).__name__} has {len(found)} nn.Embedding modules of config.vocab_size={vocab_size} rows "
                f"({', '.join(found) or 'none'}), so its input embeddings are ambiguous; set the class attribute "
                "input_embeddings_name to the attribute path of the token embeddings."
            )
        return found[0]

    def _output_embeddings_path(self) -> str | None:
        if self.output_embeddings_name is not None:
            return self.output_embeddings_name
        return next((name.removesuffix(".weight") for name in self.tied_weights), None)

    def _replace_submodule(self, path: str, module: nn.Module) -> None:
        parent, _, name = path.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, name, module)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Give the vocabulary `new_num_tokens` rows (rounded up to a multiple of `pad_to_multiple_of`).

        The existing rows are kept. New rows are drawn around the old rows' mean with a tiny spread
        (mean_resizing=True, the reference's default: a new token starts where the model puts an average
        token, which leaves its predictions almost unchanged), or from the model's init (mean_resizing=False).
        An untied LM head (and its bias) is resized the same way; a tied one follows the embeddings.
        config.vocab_size is updated. Returns the input embeddings.
        """
        embeddings = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        new_num_tokens = _vocabulary_rows(new_num_tokens, pad_to_multiple_of, embeddings.weight.shape[0])
        output = self.get_output_embeddings()
        tied = output is not None and output.weight is embeddings.weight
        old_num_tokens = embeddings.weight.shape[0]
        with torch.no_grad():
            embeddings.weight = nn.Parameter(
                self._resized_rows(embeddings.weight, new_num_tokens, mean_resizing), embeddings.weight.requires_grad
            )
        embeddings.num_embeddings = new_num_tokens
        if embeddings.padding_idx is not None and embeddings.padding_idx >= new_num_tokens:
            embeddings.padding_idx = None
        if output is not None and not tied:
            self._resize_output_layer(output, new_num_tokens, mean_resizing)
        self._resize_output_bias(old_num_tokens, new_num_tokens, mean_resizing)
        self.config.vocab_size = new_num_tokens
        if tied:
            if getattr(output, "bias", None) is not None:  # a tied layer's own bias (DistilBERT's vocab_projector)
                with torch.no_grad():  # new tokens get a zero bias, as the reference pads it
                    output.bias = nn.Parameter(_resized_bias(output.bias, new_num_tokens, mean_resizing=False),
                                               output.bias.requires_grad)
            self.tie_weights()  # after the bias: a layer whose bias is the head's `bias` (ALBERT, MPNet) gets it again
            output.out_features = new_num_tokens
        return self.get_input_embeddings()

    def _resize_output_layer(self, output: nn.Module, new_num_tokens: int, mean_resizing: bool) -> None:
        with torch.no_grad():
            output.weight = nn.Parameter(
                self._resized_rows(output.weight, new_num_tokens, mean_resizing), output.weight.requires_grad
            )
            if getattr(output, "bias", None) is not None:
                output.bias = nn.Parameter(_resized_bias(output.bias, new_num_tokens, mean_resizing),
                                           output.bias.requires_grad)
        output.out_features = new_num_tokens

    def _resize_output_bias(self, old_num_tokens: int, new_num_tokens: int, mean_resizing: bool) -> None:
        """A per-token bias kept beside the output layer rather than in it (BERT's and RoBERTa's MLM heads)."""
        path = self._output_embeddings_path()
        if path is None or "." not in path:
            return
        holder = self.get_submodule(path.rpartition(".")[0])
        bias = getattr(holder, "bias", None)
        if isinstance(bias, nn.Parameter) and bias.shape == (old_num_tokens,) and old_num_tokens != new_num_tokens:
            with torch.no_grad():
                holder.bias = nn.Parameter(_resized_bias(bias, new_num_tokens, mean_resizing), bias.requires_grad)

    def _resized_rows(self, weight: torch.Tensor, rows: int, mean_resizing: bool) -> torch.Tensor:
        """`weight` with `rows` rows: the old ones first, new ones initialized as resize_token_embeddings says."""
        old_rows = weight.shape[0]
        if rows <= old_rows:
            return weight[:rows].clone()
        if mean_resizing:
            added = _rows_around_the_mean(weight, rows - old_rows)
        else:
            added = torch.empty(rows - old_rows, weight.shape[1], device=weight.device, dtype=weight.dtype)
            nn.init.normal_(added, mean=0.0, std=getattr(self.config, "initializer_range", 0.02))
        return torch.cat([weight.detach(), added.to(weight.dtype)])

    # -- initialization -----------------------------------------------------------------------------------------

    def post_init(self) -> None:
        """Called at the end of a model's __init__: initializes the weights (not on the meta device) and ties them."""
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize every module not initialized yet with `_init_weights`, then tie the weights.

        A submodule that is itself a model (a head's base model) was initialized when it was built, so
        only the head's own modules are initialized here. Nothing is done on the meta device.
        """
        self.__dict__["_weights_initialized"] = True
        if not any(p.is_meta for p in self.parameters()):
            with torch.no_grad():
                self._initialize(self)
        self.tie_weights()

    def _initialize(self, module: nn.Module) -> None:
        for child in module.children():
            if not isinstance(child, PreTrainedModel):
                self._initialize(child)
            elif not child.__dict__.get("_weights_initialized", False):
                child.init_weights()
        self._init_weights(module)

    def architecture_name(self) -> str:
        """The class name config.json records (the reference's name for this family and head)."""
        # FSDP's fully_shard gives a sharded model a subclass (FSDPLlamaForCausalLM) that records where the model's
        # own class is in its MRO.
        cls = type(self)
        return cls.__mro__[getattr(cls, "_orig_cls_mro_index", 0)].__name__

    # -- gradient checkpointing -------------------------------------------------------------------------------

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Keep no activations inside the layers while training; recompute them in the backward pass.

        Memory for activations drops to one layer's worth at a time, for about one more forward pass of
        compute. The gradients are those of the plain model (dropout masks are replayed). Options for
        `torch.utils.checkpoint.checkpoint` may be passed; `use_reentrant` defaults to False.
        """
        options = dict(gradient_checkpointing_kwargs or {})
        unknown = sorted(set(options) - _CHECKPOINT_OPTIONS)
        if unknown:
            raise ValueError(
                f"gradient_checkpointing_kwargs got {unknown}; torch.utils.checkpoint takes "
                f"{', '.join(sorted(_CHECKPOINT_OPTIONS))}."
            )
        stacks = self._layer_stacks()
        if not stacks:
            raise ValueError(f"{type(self).__name__} has no layer stack to checkpoint: gradient checkpointing is "
                             "supported by the Llama, GPT-2 and BERT/RoBERTa families.")
        for stack in stacks:
            stack.gradient_checkpointing = {"use_reentrant": False, **options}
        if options.get("use_reentrant") and "_require_grads_hook" not in self.__dict__:
            # Reentrant checkpointing differentiates a layer only if its input requires grad, which frozen
            # embeddings (an adapter's base model) do not give: the reference turns the hook on for this too.
            self.enable_input_require_grads()
            self.__dict__["_checkpointing_hooked_inputs"] = True

    def gradient_checkpointing_disable(self) -> None:
        for stack in self._layer_stacks():
            stack.gradient_checkpointing = None
        if self.__dict__.pop("_checkpointing_hooked_inputs", False):
            self.disable_input_require_grads()

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(self._layer_stacks())

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(stack.gradient_checkpointing is not None for stack in self._layer_stacks())

    def _layer_stacks(self) -> list[nn.Module]:
        """The modules that run the layers one after another (they hold a `gradient_checkpointing` setting)."""
        return [module for module in self.modules() if hasattr(module, "gradient_checkpointing")]

    def tie_weights(self) -> None:
        if not self.config.tie_word_embeddings:
            return
        for target, source in self.tied_weights.items():
            module_name, _, attribute = target.rpartition(".")
            if target in self.__dict__.get("stored_apart", ()) or self._packed(module_name):
                continue
            setattr(self.get_submodule(module_name), attribute, self.get_parameter(source))

    def _packed(self, module_name: str) -> bool:
        """Whether module `module_name` holds packed weights (a quantized head keeps its own, tied to nothing)."""
        return getattr(self.get_submodule(module_name), "scale", None) is not None

    # -- creating -------------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: PretrainedConfig, *, dtype: torch.dtype | str | None = None,
        torch_dtype: torch.dtype | str | None = None, attn_implementation: str | None = None,
    ) -> "PreTrainedModel":
        """A model with freshly initialized weights (building the class initializes them)."""
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return cls(config).to(_resolve_dtype(dtype, torch_dtype) or torch.float32)

    def _init_weights(self, module: nn.Module) -> None:
        """The reference's default init: normal(0, initializer_range) weights (init_std in configs that name it so,
        as BART's), zero biases, unit norms."""
        std = getattr(self.config, "initializer_range", None)
        std = getattr(self.config, "init_std", 0.02) if std is None else std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, RMSNorm)) and module.weight is not None:  # OPT's may have none
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> "PreTrainedModel":
        """Load a model folder, a Hub id or a GGUF file (see `load_pretrained` for the options)."""
        # A user's own config class (not one of the families') reads config.json itself.
        own_config = cls.config_class not in (PretrainedConfig, *CONFIG_CLASSES.values())
        kwargs.setdefault("config_class", cls.config_class if own_config else None)
        return load_pretrained(cls._check_config_class, name_or_path, **kwargs)

    @classmethod
    def _check_config_class(cls, config: PretrainedConfig, source: Path) -> type["PreTrainedModel"]:
        if not isinstance(config, cls.config_class):
            raise ValueError(
                f"{source} holds a {config.model_type!r} model, which {cls.__name__} cannot load; use "
                f"AutoModelForCausalLM.from_pretrained (or AutoModel) to pick the class from the config."
            )
        return cls

    # -- saving ---------------------------------------------------------------------------------------------

    def save_pretrained(
        self, folder: str | os.PathLike, is_main_process: bool = True, state_dict: dict | None = None,
        push_to_hub: bool = False, max_shard_size: int | str = "5GB", safe_serialization: bool = True, *,
        repo_id: str | None = None, commit_message: str | None = None, private: bool | None = None,
        token: str | bool | None = None,
    ) -> None:
        """Write config.json, the weights and generation_config.json, in the layout transformers reads.

        The weights go to model.safetensors, or to numbered shards with model.safetensors.index.json when
        they outgrow `max_shard_size` (bytes, or a size such as "500MB" or "2GiB"); to pytorch_model.bin
        with safe_serialization=False. `state_dict` saves those tensors instead of the model's (a trainer's
        gathered copy); a process that is not the main one (is_main_process=False) writes nothing.
        push_to_hub=True then uploads the folder to the Hub repository `repo_id` (default: the folder's name),
        through huggingface_hub, as the reference does.
        """
        max_shard_bytes = _size_in_bytes(max_shard_size)
        if push_to_hub:
            api = hub_api()  # refused offline before anything is written
        if not is_main_process:
            return
        folder = Path(folder)
        if folder.is_file():
            raise ValueError(f"save_directory {folder} is a file; pass a folder to save the model in.")
        folder.mkdir(parents=True, exist_ok=True)
        if self._hf_peft_config_loaded:  # only the adapter, in peft's format, as the reference saves such a model
            lora.save_adapter(self, folder, state_dict, safe_serialization)
        else:
            self._save_config_and_weights(folder, state_dict, max_shard_bytes, safe_serialization)
        generation = self.generation_config.to_diff_dict()
        sampling = {k: generation[k] for k in names_of_kind(Kind.SAMPLING) if k in generation}
        if sampling and generation.get("do_sample") is not True:
            warnings.warn(
                f"generation_config sets {', '.join(f'{k}={v}' for k, v in sampling.items())} without do_sample=True, "
                "so generate() decodes greedily and ignores them; saved as they are. Set "
                "model.generation_config.do_sample = True before saving to sample by default.",
                stacklevel=2,
            )
        text = json.dumps(generation, indent=2, sort_keys=True) + "\n"
        (folder / "generation_config.json").write_text(text, encoding="utf-8")
        if push_to_hub:
            upload_folder(api, folder, repo_id or folder.absolute().name, commit_message or "Upload model", private,
                          token)

    def _save_config_and_weights(self, folder: Path, state_dict: dict | None, max_shard_bytes: int,
                                 safe_serialization: bool) -> None:
        dtype = str(self.dtype).removeprefix("torch.")
        config = copy.copy(self.config)  # a copy keeps what a user's config subclass set beyond the fields
        config.architectures, config.dtype = [self.architecture_name()], dtype
        packed = packed_checkpoint.marker(self)
        if packed is not None:  # the packed weights are saved as they are: config.json says how
            config.extra = {**config.extra, "quantization_config": packed}
        config.save_pretrained(folder)
        state_dict = self.to_checkpoint_layout(self.state_dict() if state_dict is None else dict(state_dict))
        if self.config.tie_word_embeddings:
            for target in set(self.tied_weights) - self.__dict__.get("stored_apart", set()):
                if not self._packed(target.rpartition(".")[0]):
                    state_dict.pop(target, None)  # stored once, under the name of the parameter it is tied to
        if safe_serialization:
            save_safetensors(state_dict, folder, max_shard_bytes)
        else:  # the older format; read back (here and by the reference) with weights_only=True
            torch.save({k: v.contiguous() for k, v in state_dict.items()}, folder / "pytorch_model.bin")

    def push_to_hub(
        self, repo_id: str, *, commit_message: str = "Upload model", private: bool | None = None,
        token: str | bool | None = None, max_shard_size: int | str = "5GB", safe_serialization: bool = True,
    ):
        """Upload the model (as save_pretrained writes it) to the Hub repository `repo_id`, created if needed."""
        api = hub_api()
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size, safe_serialization=safe_serialization)
            return upload_folder(api, Path(folder), repo_id, commit_message, private, token)


def forward_cache(past_key_values, cache, use_cache: bool | None):
    """The KV cache a forward call uses: `past_key_values` or `cache` (transformers 5's name for it), else a new
    DynamicCache when use_cache=True, else None."""
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("Got both past_key_values= and cache=, two names for the same argument; pass one.")
    cache = past_key_values if past_key_values is not None else cache
    if cache is None and use_cache:
        cache = DynamicCache()
    return cache


def seq2seq_cache(past_key_values, cache, use_cache: bool | None) -> EncoderDecoderCache | None:
    """forward_cache for an encoder-decoder, whose decoder keeps a self-attention and a cross-attention cache."""
    cache = forward_cache(past_key_values, cache, use_cache=False)
    if cache is not None and not isinstance(cache, EncoderDecoderCache):
        raise TypeError(
            "An encoder-decoder keeps a self-attention and a cross-attention cache: pass past_key_values as an "
            f"EncoderDecoderCache(DynamicCache(), DynamicCache()), got {type(cache).__name__}."
        )
    if cache is None and use_cache:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    return cache


def recorded(values: list | None) -> tuple | None:
    """The hidden states or attention weights a forward call collected (a list when asked for) as a tuple."""
    return None if values is None else tuple(values)


def check_inputs(input_ids, inputs_embeds) -> None:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids (B, T) and inputs_embeds (B, T, C); got "
                         f"{'both' if input_ids is not None else 'neither'}.")
    if input_ids is not None and not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids shaped (batch, length), got "
                        f"{type(input_ids).__name__}; use tokenizer(text, return_tensors=\"pt\").")


# What ids outside the vocabulary usually are.
_FOREIGN_IDS = (": ids made by another model's tokenizer, or by a tokenizer given new tokens after the model was made "
                "(then call model.resize_token_embeddings(len(tokenizer))).")


def token_embeddings(config) -> nn.Embedding:
    """The (vocab_size, hidden_size) table of a decoder's token embeddings, its pad_token_id's row getting no gradient,
    as in the reference (an id outside the table cannot occur in inputs). The explicit weight skips nn.Embedding's
    random init: on the meta device (from_pretrained) that init imports torch._dynamo, 1.8 s; off the meta device,
    init_weights initializes every weight after the build."""
    pad = config.pad_token_id
    padding_idx = pad if isinstance(pad, int) and -config.vocab_size <= pad < config.vocab_size else None
    return nn.Embedding(config.vocab_size, config.hidden_size, padding_idx,
                        _weight=torch.empty(config.vocab_size, config.hidden_size))


def embedded(table: nn.Embedding, ids: torch.Tensor, argument: str = "input_ids",
             hint: str | None = None) -> torch.Tensor:
    """table(ids); for ids outside the table, an IndexError (the reference's type) that names the argument, the
    table's range and `hint` (by default, for token ids, what such ids usually are), where torch's own ("index out
    of range in self") names nothing."""
    try:
        return table(ids)
    except IndexError:
        outside = ids[(ids < 0) | (ids >= table.num_embeddings)]
        if not outside.numel():
            raise
    rows = table.num_embeddings
    hint = hint if hint is not None else _FOREIGN_IDS if argument.endswith("input_ids") else "."
    raise IndexError(f"{argument} holds {int(outside[0])}, outside the {rows} ids of this model's embedding table "
                     f"(0 to {rows - 1}){hint}")


def check_encoder_inputs(model: nn.Module, input_ids, inputs_embeds, past_key_values, cache, labels) -> None:
    """An encoder's base model takes one of input_ids and inputs_embeds, and neither a cache (it keeps none) nor
    labels (it has no head to compute a loss with)."""
    check_inputs(input_ids, inputs_embeds)
    if past_key_values is not None or cache is not None:
        raise ValueError(f"{type(model).__name__} is an encoder and keeps no cache: pass past_key_values=None.")
    if labels is not None:
        raise ValueError(f"{type(model).__name__} has no head to compute a loss with; use a For... class.")


def _vocabulary_rows(new_num_tokens: int | None, pad_to_multiple_of: int | None, current: int) -> int:
    rows = current if new_num_tokens is None else new_num_tokens
    if not (isinstance(rows, int) and not isinstance(rows, bool) and rows > 0):
        raise ValueError(f"new_num_tokens must be a positive integer, got {new_num_tokens!r}.")
    if pad_to_multiple_of is None:
        return rows
    if not (isinstance(pad_to_multiple_of, int) and not isinstance(pad_to_multiple_of, bool) and pad_to_multiple_of > 0):
        raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}.")
    return -(-rows // pad_to_multiple_of) * pad_to_multiple_of  # rounded up


def _rows_around_the_mean(weight: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows drawn from a normal with the rows' mean and 1e-9 times their covariance (the reference's
    mean resizing); just the mean when that covariance is not positive definite (fewer rows than columns)."""
    rows = weight.detach().float()
    mean = rows.mean(dim=0)
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered) / rows.shape[0]
    factor, info = torch.linalg.cholesky_ex(covariance)
    if info.item() != 0:
        return mean.expand(count, -1).clone()
    return mean + torch.randn(count, mean.shape[0], device=weight.device) @ factor.T


def _resized_bias(bias: torch.Tensor, size: int, mean_resizing: bool) -> torch.Tensor:
    """A per-token bias with `size` entries: the old ones first; new ones at their mean (mean_resizing) or zero."""
    if size <= bias.shape[0]:
        return bias.detach()[:size].clone()
    added = torch.zeros(size - bias.shape[0], device=bias.device, dtype=bias.dtype)
    if mean_resizing:
        old = bias.detach().float()
        added = torch.normal(old.mean().expand(len(added)), 1e-9 * old.std()).to(bias.dtype)
    return torch.cat([bias.detach(), added])


_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def _size_in_bytes(size: int | str) -> int:
    """5_000_000, "5MB" (10**6 bytes each) or "5MiB" (2**20 each) -> bytes."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)\s*", size.upper()) if isinstance(size, str) else None
    if match is None:
        raise ValueError(
            f"max_shard_size must be a positive number of bytes or a size such as '500MB' or '2GiB'; got {size!r}."
        )
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def load_pretrained(
    choose_class,
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    dtype: torch.dtype | str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    device_map: str | torch.device | int | None = None,
    trust_remote_code: bool = False,
    ignore_mismatched_sizes: bool = False,
    quantization: str | None = None,
    quantization_config: BitsAndBytesConfig | dict | None = None,
    config: PretrainedConfig | None = None,
    config_class: type[PretrainedConfig] | None = None,
    attn_implementation: str | None = None,
    generation_config: GenerationConfig | None = None,
    low_cpu_mem_usage: bool | None = None,
    output_loading_info: bool = False,
    adapter_name: str = "default",
    **config_overrides,
) -> PreTrainedModel | tuple[PreTrainedModel, dict]:
    """Resolve the files, read the config, let `choose_class(config, source)` pick the class, and load.

    dtype: None loads float32 (as the reference does), "auto" keeps the checkpoint's dtype (float32 for
    GGUF, whose blocks are dequantized), or a torch dtype / its name. device_map: None or a device
    ("cpu", "cuda", "cuda:1", 0), or "auto" for the GPU when there is one. Other keyword arguments
    override config fields (num_labels=2...). ignore_mismatched_sizes=True initializes the weights whose shape
    differs from the checkpoint's (a head with another number of labels) instead of refusing the checkpoint.
    trust_remote_code=True is refused: openformers never runs code from a model folder.
    quantization="int8" or "int4" stores the linear layers' weights packed for faster inference (openformers.kernels,
    which also speeds up every model it knows on the CPU, quantized or not: see acceleration.py).
    quantization_config: the reference's BitsAndBytesConfig (or its dict), loaded as quantization="int4"
    (load_in_4bit) or "int8" (load_in_8bit), with llm_int8_skip_modules left in floating point and a 4-bit compute
    dtype other than float32 as the model's dtype when `dtype` is not given (quantization_config.py says what
    differs from bitsandbytes). A folder that save_pretrained wrote from a quantized model (quant_method
    "openformers": models/packed_checkpoint.py) loads packed as saved, the same weights bit for bit; quantization
    may then name its own packing only. A checkpoint whose config.json holds another quantization_config (GPTQ,
    AWQ, bitsandbytes...) is refused by name, except the formats a family reads (gpt-oss's MXFP4, BitNet's).
    config: a config to use instead of the checkpoint's (the overrides apply to a copy of it). config_class: the
    class to read config.json as (a user's own config); None: the class its model_type names.
    attn_implementation: "sdpa" (the default) or "eager" (attention computed explicitly, as the reference's
    eager path; forward(output_attentions=True) uses it whatever this says); stored as
    config._attn_implementation. generation_config: used instead of the checkpoint's generation_config.json.
    low_cpu_mem_usage is accepted for compatibility: loading always builds the model on the meta device and
    reads the weights memory-mapped, so it uses little memory whatever it says. output_loading_info=True
    returns (model, {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}) as the reference does:
    the weights newly initialized, the checkpoint's unused ones, and (name, checkpoint shape, model shape) of
    those initialized for their shape (ignore_mismatched_sizes=True).
    A folder holding adapter_config.json (a LoRA adapter saved by save_pretrained or peft) loads the base model
    its base_model_name_or_path names (or the folder's own, when it also holds config.json) and attaches the
    adapter as `adapter_name`, as the reference does.
    """
    adapter_folder = Path(name_or_path) if lora.is_adapter_folder(name_or_path) else None
    if adapter_folder is not None and not (adapter_folder / "config.json").is_file():
        name_or_path = lora.LoraConfig.from_pretrained(adapter_folder).base_model_name_or_path
        if not name_or_path:
            raise ValueError(f"{adapter_folder / lora.CONFIG_NAME} names no base_model_name_or_path: load the base "
                             "model with from_pretrained, then model.load_adapter(adapter folder).")
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code=True is refused: openformers never runs code that comes with a model. It builds "
            "models from its own classes, picked by the config's model_type; leave trust_remote_code unset."
        )
    keep = ()  # the linear layers a quantization_config leaves unquantized
    if quantization_config is not None:
        quantization, keep, dtype = _bitsandbytes_options(quantization_config, quantization, dtype, torch_dtype)
    dtype = _resolve_dtype(dtype, torch_dtype)
    device = _resolve_device(device_map)
    if quantization is not None:
        accelerator().check_quantization(quantization)
    files = resolve(name_or_path, gguf_file=gguf_file, revision=revision, cache_dir=cache_dir,
                    local_files_only=local_files_only, token=token)
    config, source, read_state_dict, leftover, mixed_widths = _open_checkpoint(files, config_overrides, config,
                                                                                config_class)
    packed = packed_checkpoint.stored_marker(config) if files.gguf_file is None else None
    if packed is not None:  # saved quantized by openformers: loaded packed as stored, nothing quantized again
        packed_checkpoint.check_asked(packed, quantization, source)
        quantization, keep = None, ()
    else:
        _check_not_prequantized(config, files)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    config.name_or_path = name_or_path
    model_class = choose_class(config, source)
    model_arguments = _model_arguments(model_class, leftover, config, source)

    state_dict, dtype, reader = read_state_dict(dtype, quantization)
    stacks_to_pack = {}  # parameter name -> its experts' matrices, for stacks packed as read (expert_stacks_to_pack)

    def as_loaded(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return _as_loaded(name, tensor, dtype, model_class.kept_in_float32, model_class.always_float32)

    if quantization is None:
        as_stored = packed_checkpoint.packed_names(packed) if packed is not None else ()
        state_dict = {name: tensor if name in as_stored else as_loaded(name, tensor)
                      for name, tensor in state_dict.items()}
    # Quantizing keeps the checkpoint's tensors as stored (mapped, not yet read) and casts each only when its layer
    # is quantized: cast all at once here, a bf16 7B checkpoint loaded as float32 would take 27 GB first.
    checkpoint_names = {id(tensor): name for name, tensor in state_dict.items()}
    _check_layer_count(config, state_dict, source)
    if files.gguf_file is not None:
        state_dict = model_class.convert_gguf_state_dict(state_dict, config)
        if isinstance(reader, GGUFFile):  # quantizing: the matrices are placeholders, read as their layers are
            reader = GGUFLayerReader(reader, lambda tensors: model_class.convert_gguf_state_dict(tensors, config))
            checkpoint_names = {id(tensor): name for name, tensor in state_dict.items() if name in reader}
    else:
        if quantization is not None:
            stored = state_dict

            def read(name: str) -> torch.Tensor:  # into memory of its own: see _quantize_layer_by_layer
                return reader.read(name) if reader is not None and name in reader else stored[name]

            state_dict, stacks_to_pack = model_class.expert_stacks_to_pack(state_dict, read)
        state_dict = model_class.from_checkpoint_layout(state_dict)
    _check_layer_count(config, state_dict, source)  # again: GGUF's stacked experts are numbered only now
    with torch.device("meta"):
        model = model_class(config, **model_arguments)
    if packed is not None:
        packed_checkpoint.install(model, packed, state_dict, source)
    report = {}
    state_dict = _match_checkpoint_to_model(model, state_dict, source, ignore_mismatched_sizes, report)
    # The model's names of the tensors that are still the file's own (not renamed into new tensors by a layout
    # change), which the reader can read again by their checkpoint names.
    stored_as = {name: checkpoint_names[id(t)] for name, t in state_dict.items() if id(t) in checkpoint_names}
    model.load_state_dict(state_dict, strict=True, assign=True)
    del state_dict, checkpoint_names
    model.tie_weights()
    if quantization is not None:
        _quantize_layer_by_layer(model, quantization, reader, stored_as, as_loaded, dtype, mixed_widths,
                                 stacks_to_pack, keep)
    _rebuild_buffers(model)  # on the weights' device: a quantized GGUF's are placeholders until quantized
    if device is not None:
        model.to(device)
    accelerator().accelerate(model)
    if generation_config is not None:
        model.generation_config = generation_config
    elif files.gguf_file is None and files.file("generation_config.json"):
        model.generation_config = GenerationConfig.from_json_file(files.folder / "generation_config.json")
    if adapter_folder is not None:
        model.load_adapter(adapter_folder, adapter_name=adapter_name)
    return (model.eval(), report) if output_loading_info else model.eval()


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """A model's layers, with their names: the entries of each outermost ModuleList, found the same way in every
    family (a decoder's or encoder's blocks, T5's and BART's encoder and decoder blocks, ALBERT's layer groups).

    Lists inside a layer (Mixtral's experts, a T5 block's sublayers) are parts of that layer, not layers: loading
    quantizes a layer as one unit, and FSDP gathers its weights as one.
    """
    layers, lists = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(outer + ".") for outer in lists):
            lists.append(name)
            layers += [(f"{name}.{index}", layer) for index, layer in module.named_children()]
    return layers


# The module lists whose numbered entries are a model's layers, in every family's checkpoint names and GGUF's,
# and those whose entries are a mixture's experts (stored one by one; fused expert tensors have no index).
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|block|blk)\.(\d+)\.")
_EXPERT_INDEX = re.compile(r"(?:^|\.)experts\.(\d+)\.")
# Config fields that count the entries of such lists: layers (of the one stack, or of an encoder's or decoder's)
# and experts.
_LAYER_COUNTS = ("num_hidden_layers", "num_layers", "num_decoder_layers", "encoder_layers", "decoder_layers")
_EXPERT_COUNTS = ("num_local_experts", "num_experts")


def _check_layer_count(config: PretrainedConfig, state_dict: dict, source: Path) -> None:
    """Refuse a config that asks for more layers (of any stack) or experts than the checkpoint holds before
    building anything: a num_hidden_layers, num_decoder_layers or num_local_experts of a million would otherwise
    build a million modules before the weights are found missing."""
    for fields, pattern, what in ((_LAYER_COUNTS, _LAYER_INDEX, "layers"), (_EXPERT_COUNTS, _EXPERT_INDEX, "experts")):
        found = {int(match.group(1)) for name in state_dict if (match := pattern.search(name))}
        for field in fields:
            wanted = getattr(config, field, None)
            if isinstance(wanted, int) and found and wanted > max(found) + 1:
                raise ValueError(
                    f"{source}: the config asks for {field}={wanted}, but the checkpoint holds weights for only "
                    f"{max(found) + 1} {what} in any one list. Use the config that came with these weights."
                )


def _open_checkpoint(files: ModelFiles, overrides: dict, given: PretrainedConfig | None, config_class):
    """The config, the file it came from, a function (dtype, quantization) -> (state dict read on demand, dtype,
    reader), the overrides that are not the config's (arguments for the model class), and whether the checkpoint
    is a GGUF file that stores its layers' matrices at mixed widths (GGUFFile.mixes_widths)."""
    if files.gguf_file is not None:
        gguf = GGUFFile(files.gguf_file)
        if given is None:
            config, leftover = _with_overrides(lambda **o: config_from_gguf(gguf, **o), overrides)
        else:
            config, leftover = _overridden_copy(given, overrides)
        def read_gguf(dtype, quantization):
            # Quantized blocks have no dtype of their own: "auto" means the float32 they dequantize to.
            dtype = dtype or torch.float32
            if quantization is None:
                return gguf.state_dict(dtype), dtype, None
            return gguf.state_dict_to_quantize(dtype), dtype, gguf  # load_pretrained makes it a GGUFLayerReader

        return config, files.gguf_file, read_gguf, leftover, gguf.mixes_widths()
    if given is None:
        config, leftover = _with_overrides(lambda **o: read_config(files.folder, config_class, **o), overrides)
    else:
        config, leftover = _overridden_copy(given, overrides)
    weights = find_weights(files.folder)

    def read_state_dict(dtype, quantization):
        """The checkpoint's tensors as stored (mapped, read when first used), the dtype to load them as, and a
        TensorReader that reads them one at a time (None for .bin files)."""
        state_dict = load_weights(weights)
        if dtype is None:  # "auto": the config's dtype, else the one the file stores
            stored = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
            dtype = _DTYPES.get(config.dtype, stored)
        return state_dict, dtype, tensor_reader(weights)

    return config, weights, read_state_dict, leftover, False


def _as_loaded(name: str, tensor: torch.Tensor, dtype: torch.dtype, kept_in_float32: tuple[str, ...],
               always_float32: tuple[str, ...] = ()) -> torch.Tensor:
    """A checkpoint tensor in the dtype the model loads it as: `dtype`, or float32 for the modules a float16
    model keeps in float32 and for the tensors any half-precision model keeps in float32; integer tensors as
    stored."""
    if not tensor.is_floating_point():
        return tensor
    if dtype == torch.float16 and set(name.split(".")[:-1]) & set(kept_in_float32):
        return tensor.float()
    if dtype in (torch.float16, torch.bfloat16) and any(f".{name}".endswith(f".{end}") for end in always_float32):
        return tensor.float()
    return tensor.to(dtype)


def _quantize_layer_by_layer(model: PreTrainedModel, quantization: str, reader, stored_as: dict, as_loaded,
                             dtype: torch.dtype, widths_mixed: bool, stacks_to_pack: dict,
                             keep: tuple[str, ...] = ()) -> None:
    """Quantize a model whose parameters are still the checkpoint's mapped tensors, one layer at a time.

    Each layer (`named_layers`), then the rest of the model, gets its float weights in memory of their own (read
    again by `reader` where it can: reading through the mapping would leave the file's pages resident), cast to
    the model's dtype, and is quantized (kernels.quantize) before the next one is read; so loading holds the
    quantized model and one layer's float weights, never the float model. A GGUF file's matrix (`reader` a
    GGUFLayerReader) takes the layout its block type asks for (kernels.layout: under int4, int8 for a file of
    `widths_mixed` that stores it in 5-8 bits), packed straight from its blocks where the layout holds them (it is
    then never made floats), else from its dequantized weights. A linear layer's own weight (tied to no other
    module) that the cast would only widen, bfloat16 or float16 to float32, is quantized as read instead: the same
    packed weights without a float32 copy of each matrix first (which took longer than quantizing a 7B-shaped
    layer). Those weights are read into the memory of the previous layer's, which quantizing has done with: new
    memory costs faulting its pages in, 5x the time of the read itself (two 7B-shaped layers' 14 matrices, one
    thread: 0.41-0.49 against 0.08-0.16 CPU s).
    A stack of experts' matrices in `stacks_to_pack` (PreTrainedModel.expert_stacks_to_pack: gpt-oss's MXFP4
    blocks) is packed expert by expert (kernels.PackedExperts), each expert's matrix cast to the model's dtype and
    quantized before the next is made: the stack is never floats, and loading holds the quantized model and one
    stack's stored tensors. Modules that `keep`'s patterns match (quantization_config.is_kept) are loaded in
    floating point and left so.
    """
    holders = collections.Counter(id(p) for m in model.modules() for p in m._parameters.values() if p is not None)
    # id of a checkpoint tensor -> (that tensor, a weak reference to the parameter loaded from it), so that a tied
    # weight is loaded once, while a float weight lives only until its layer is quantized. The checkpoint's
    # tensors are kept (mapped, unread: they cost nothing) so that no id is reused while loading.
    loaded = {}
    loaded_ids = set()
    spare = []  # float weights of the layer quantized last, to read the next layer's into
    for prefix, unit in [*named_layers(model), ("", model)]:
        if not prefix:
            spare.clear()  # the rest of the model (embeddings, heads) is read beside no layer's float weights
        read_into = []
        gguf_layouts = {}  # a GGUF matrix's linear layer -> its layout, and its packed layer when made from blocks
        for module_name, module in unit.named_modules(prefix=prefix):
            for attribute, parameter in list(module._parameters.items()):
                if parameter is None or id(parameter) in loaded_ids:
                    continue
                name = f"{module_name}.{attribute}" if module_name else attribute
                if name in stacks_to_pack:
                    if keep and is_kept(module_name, keep):
                        raise ValueError(
                            f"llm_int8_skip_modules {list(keep)} names {module_name}, whose experts' matrices a "
                            "quantized load packs as it reads them (never holding them in floating point); "
                            "openformers cannot leave them unquantized. Name other modules, or load without "
                            "quantization.")
                    count, matrix = stacks_to_pack[name]()
                    packed = accelerator().PackedExperts.from_matrices(
                        count, lambda e: as_loaded(name, matrix(e)), quantization)
                    accelerator().install_packed_experts(module, attribute, packed)
                    continue
                own = loaded[id(parameter)][1]() if id(parameter) in loaded else None
                if own is None:
                    readable = reader is not None and stored_as.get(name) in reader
                    # Quantized here, and then held by nothing: a linear layer's own weight.
                    quantized = (isinstance(module, nn.Linear) and attribute == "weight" and holders[id(parameter)] == 1
                                 and not (keep and is_kept(module_name, keep)))
                    if readable and quantized and isinstance(reader, GGUFLayerReader):
                        kind, rows = reader.stored_rows(stored_as[name])
                        layout = accelerator().layout(model, module, quantization, kind, widths_mixed)
                        packed = accelerator().Linear.from_gguf_rows(module, kind, rows, layout)
                        if packed is not None or layout != accelerator().layout(model, module, quantization):
                            gguf_layouts[module_name] = (layout, packed)  # else quantize below does the same
                        if packed is not None:
                            continue
                    if readable and quantized:
                        tensor = _read_into_spare(reader, stored_as[name], spare)
                        read_into.append(tensor)
                    else:
                        tensor = reader.read(stored_as[name]) if readable else parameter.detach()
                    packed_as_read = quantized and dtype == torch.float32 and tensor.dtype in (torch.bfloat16,
                                                                                               torch.float16)
                    tensor = tensor if packed_as_read else as_loaded(name, tensor)
                    own = nn.Parameter(tensor, requires_grad=parameter.requires_grad)
                    loaded[id(parameter)] = (parameter, weakref.ref(own))
                    loaded_ids.add(id(own))
                setattr(module, attribute, own)
        for module_name, (layout, packed) in gguf_layouts.items():
            module = model.get_submodule(module_name)
            if packed is None:
                packed = accelerator().Linear.from_linear(module, layout)
            elif module.bias is not None:  # as loaded now, after its weight
                packed.bias = module.bias.detach().clone()
            parent, _, attribute = module_name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, packed)
        accelerator().quantize(unit, quantization, keep, prefix)
        spare = read_into


def _read_into_spare(reader, name: str, spare: list[torch.Tensor]) -> torch.Tensor:
    """Checkpoint tensor `name`, read into a tensor of `spare` of its dtype and shape (taken from it) if one is
    (a GGUF matrix is dequantized into memory of its own)."""
    if not isinstance(reader, TensorReader):
        return reader.read(name)
    _, dtype, shape, _, _ = reader.locations[name]
    for index, tensor in enumerate(spare):
        if tensor.dtype == dtype and list(tensor.shape) == list(shape):
            return reader.read(name, out=spare.pop(index))
    return reader.read(name)


def _with_overrides(read, overrides: dict) -> tuple[PretrainedConfig, dict]:
    """The config read with the overrides that are its values, and the other overrides."""
    config = read()
    if not overrides:
        return config, {}
    leftover = {name: value for name, value in overrides.items() if not _is_config_value(config, name)}
    return read(**{name: value for name, value in overrides.items() if name not in leftover}), leftover


# The bitsandbytes flags that transformers 4 took as from_pretrained's own arguments, and 5 (like openformers) refuses.
_BITSANDBYTES_HINT = (" load_in_8bit and load_in_4bit are bitsandbytes options, which from_pretrained takes (as "
                      "transformers 5 does) only inside quantization_config=BitsAndBytesConfig(load_in_4bit=True); "
                      "or pass openformers' own quantization=\"int8\" or quantization=\"int4\" (4-bit groups of 32, "
                      "also for QLoRA).")


def _bitsandbytes_options(quantization_config, quantization: str | None, dtype, torch_dtype):
    """from_pretrained's quantization_config as (quantization, the module patterns to keep in floating point,
    dtype): a 4-bit compute dtype (other than float32) becomes the model's dtype where none is given, as quantized
    products run in the model's dtype; where one is given and differs, it wins, with a warning."""
    if quantization is not None:
        raise ValueError(f"Got quantization={quantization!r} and quantization_config; pass one of them.")
    load = quantized_load(quantization_config)
    asked = dtype if dtype is not None else torch_dtype
    if load.dtype is not None and asked is None:
        dtype = load.dtype
    elif load.dtype is not None and asked != "auto" and _resolve_dtype(asked, None) != load.dtype:
        warnings.warn(f"quantization_config's bnb_4bit_compute_dtype={load.dtype} is not the dtype asked for "
                      f"({asked}): openformers' quantized products run in the model's dtype, {asked}.", stacklevel=3)
    return load.quantization, load.keep, dtype


def _check_not_prequantized(config: PretrainedConfig, files: ModelFiles) -> None:
    """Refuse a checkpoint whose weights are stored quantized by a method openformers cannot read (GPTQ, AWQ,
    bitsandbytes, FP8, compressed-tensors...), naming the method and the file, before its tensors are matched.
    The formats a family reads (gpt-oss's MXFP4, BitNet's ternary weights) are taken by its config, which leaves
    no quantization_config among the keys it keeps."""
    stored = config.extra.get("quantization_config")
    if stored is None or files.gguf_file is not None:
        return
    method = stored.get("quant_method") if isinstance(stored, dict) else None
    if isinstance(stored, dict) and method is None and (stored.get("load_in_4bit") or stored.get("load_in_8bit")):
        method = "bitsandbytes"
    raise ValueError(
        f"{files.folder / 'config.json'} holds a quantization_config with quant_method {method!r}: its weights are "
        "stored quantized in a format openformers cannot read. Load the checkpoint it was quantized from (with "
        "quantization=\"int4\" or \"int8\", or quantization_config=BitsAndBytesConfig(...), to quantize it at "
        "load), or a GGUF file of the model.")


def _model_arguments(model_class, leftover: dict, config: PretrainedConfig, source: Path) -> dict:
    """from_pretrained's keyword arguments that are neither loading options nor config values go to the model
    class (BertModel's add_pooling_layer=False), as in the reference; any it does not take is an error."""
    parameters = inspect.signature(model_class.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(name for name in leftover if not takes_any and (name not in parameters or name == "config"))
    if unknown:
        hint = _BITSANDBYTES_HINT if set(unknown) & {"load_in_8bit", "load_in_4bit", "quantization_config"} else ""
        raise TypeError(
            f"from_pretrained() got unexpected keyword arguments {unknown}: they are neither loading options, "
            f"values of {type(config).__name__} (read from {source}), nor arguments of {model_class.__name__}.{hint}"
        )
    return leftover


# Keys the reference's configs know whatever the family; a config.json may lack them.
_COMMON_CONFIG_KEYS = {"use_cache"}


def _is_config_value(config: PretrainedConfig, name: str) -> bool:
    """Whether from_pretrained(..., name=value) sets something the config has (a field, a kept key, an attribute)."""
    parameters = inspect.signature(type(config).__init__).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    field_names = {f.name for f in dataclasses.fields(config)} - {"extra"}
    return (takes_any and type(config).__init__ is not PretrainedConfig.__init__) or name in field_names \
        or name in config.extra or name in _COMMON_CONFIG_KEYS or (not name.startswith("_") and name in vars(config))


def _overridden_copy(config: PretrainedConfig, overrides: dict) -> tuple[PretrainedConfig, dict]:
    """A copy of the config passed as config=, with the overrides that are its values; and the other overrides."""
    config = copy.deepcopy(config)
    leftover = {name: value for name, value in overrides.items() if not _is_config_value(config, name)}
    config.update({name: value for name, value in overrides.items() if name not in leftover})
    return config, leftover


def _match_checkpoint_to_model(
    model: PreTrainedModel, state_dict: dict, source: Path, ignore_mismatched_sizes: bool = False,
    report: dict | None = None,
) -> dict:
    """Fit the checkpoint's names to the model's; raise one error listing every key that does not fit.

    The base model's weights may sit under any prefix in the file ("model.", "transformer.", "bert." or
    none): they are moved under this model's prefix. Weights outside the base model belong to a head:
    this model's head is loaded from them when they are there and initialized when not; another head's
    (a causal LM checkpoint read for classification) are left out. With `ignore_mismatched_sizes`, weights
    whose shapes differ are initialized too. All of these are reported in one warning, and in `report` when given.
    """
    ignored = re.compile("|".join(model.ignored_checkpoint_keys))
    state_dict = {k: v for k, v in state_dict.items() if not ignored.search(k)}
    expected = model.state_dict()
    prefix = model.base_model_prefix + "."
    has_base = hasattr(model, model.base_model_prefix)
    base_keys = [k.removeprefix(prefix) for k in expected if k.startswith(prefix)] if has_base else list(expected)
    stored = _stored_base_prefix(state_dict, base_keys)
    base = {k[len(stored):]: v for k, v in state_dict.items() if k.startswith(stored)}
    heads = {k: v for k, v in state_dict.items() if not k.startswith(stored)}
    state_dict = ({prefix + k: v for k, v in base.items()} | heads) if has_base else base
    if model.config.tie_word_embeddings:
        for target, source_name in model.tied_weights.items():
            if target in state_dict and source_name in state_dict \
                    and not torch.equal(state_dict[target], state_dict[source_name]):
                # Both stored, with different values: kept apart, as the reference does (Flan-T5's LM head).
                model.__dict__.setdefault("stored_apart", set()).add(target)
            elif source_name in state_dict:
                state_dict[target] = state_dict[source_name]

    in_base = (lambda k: k.startswith(prefix)) if has_base else (lambda k: True)
    optional = re.compile("|".join(model.initialized_if_missing) or r"(?!)")  # (?!) matches nothing
    missing = [k for k in expected if k not in state_dict]
    new_head = [k for k in missing if not in_base(k) or optional.search(k)]
    missing = [k for k in missing if k not in new_head]
    other_head = [k for k in state_dict if k not in expected and not in_base(k)]
    unexpected = [k for k in state_dict if k not in expected and in_base(k)]
    mismatched = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    shapes = {k: f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}" for k in mismatched}
    resized = mismatched if ignore_mismatched_sizes else []
    mismatched = [shapes[k] for k in mismatched if k not in resized]
    if missing or unexpected or mismatched:
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        ]
        advice = " Check that the checkpoint and its config.json belong together."
        if mismatched and not missing and not unexpected:
            advice += (" To load it with these sizes anyway (a head with another num_labels), pass "
                       "ignore_mismatched_sizes=True: the mismatched weights are then newly initialized.")
        raise ValueError(
            f"{source} does not fit {type(model).__name__} ({model.config.model_type}): " + "; ".join(problems)
            + "." + advice
        )
    if report is not None:
        report.update(missing_keys=set(new_head), unexpected_keys=set(other_head), error_msgs=[], mismatched_keys={
            (k, tuple(state_dict[k].shape), tuple(expected[k].shape)) for k in resized})
    for k in other_head:
        del state_dict[k]
    # An integer tensor stored for a floating-point weight (an I32 norm in a converted file) is cast, as the
    # reference casts it, to the floating type the checkpoint's other weights have.
    floating = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.get_default_dtype())
    for k in [k for k in state_dict if k in expected and expected[k].is_floating_point()]:
        if not state_dict[k].is_floating_point():
            state_dict[k] = state_dict[k].to(floating)
    if new_head or resized:
        dtype = next(iter(state_dict.values())).dtype
        state_dict.update(_initialized_parameters(model, new_head + resized, dtype))
    notes = []
    if new_head:
        notes.append(f"has no weights for {', '.join(new_head)}: they are newly initialized; train the model "
                     "before using its predictions")
    if resized:
        notes.append(f"has weights of other shapes for {'; '.join(shapes[k] for k in resized)}: they are newly "
                     "initialized (ignore_mismatched_sizes=True); train the model before using its predictions")
    if other_head:
        notes.append(f"holds weights {type(model).__name__} does not use (another head's): {', '.join(other_head)}")
    if notes:
        warnings.warn(f"{source} " + "; it ".join(notes) + ".", stacklevel=4)
    return state_dict


def _stored_base_prefix(state_dict: dict, base_keys: list[str]) -> str:
    """The prefix the checkpoint stores the base model's weights under ("" for a bare base checkpoint)."""
    for probe in base_keys:
        if probe in state_dict:
            return ""
        for key in state_dict:
            if key.endswith("." + probe):
                return key[: -len(probe)]
    return ""


def _initialized_parameters(model: PreTrainedModel, names: list[str], dtype: torch.dtype) -> dict:
    """Fresh values for the parameters `names` of a model built on the meta device, by the model's own init (and for
    saved buffers, as RoFormer's rotary table)."""
    values = {}
    for module_name in sorted({name.rpartition(".")[0] for name in names}):
        module = model.get_submodule(module_name)
        module.to_empty(device="cpu", recurse=False)
        with torch.no_grad():
            for parameter in module.parameters(recurse=False):
                parameter.zero_()
            model._init_weights(module)
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            values[f"{module_name}.{name}"] = tensor.detach().to(dtype)
    return {name: values[name] for name in names}


def _rebuild_buffers(model: nn.Module) -> None:
    """Compute the non-persistent buffers (rotary tables) that the meta-device build left empty."""
    device = model.device
    for module in model.modules():
        if hasattr(module, "reset_tables"):
            module.reset_tables(device)


def _resolve_dtype(dtype, torch_dtype) -> torch.dtype | None:
    """None -> float32; "auto" -> None (keep the checkpoint's); a name or a torch.dtype -> that dtype."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"Got dtype={dtype!r} and torch_dtype={torch_dtype!r}; pass only dtype.")
    dtype = dtype if dtype is not None else torch_dtype
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}.")
        return dtype
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name == "auto":
            return None
        if name in _DTYPES:
            return _DTYPES[name]
    raise ValueError(f"dtype must be 'auto', one of {', '.join(_DTYPES)}, or a torch dtype; got {dtype!r}.")


def _resolve_device(device_map) -> torch.device | None:
    if device_map is None:
        return None
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device_map)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device_map must be None, 'auto' or one device such as 'cpu', 'cuda' or 0; got {device_map!r} "
            "(openformers places the whole model on one device)."
        ) from error


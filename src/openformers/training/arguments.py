"""TrainingArguments: every argument of the reference's, with its defaults and checks, as one dataclass.

Each field of the reference's TrainingArguments is accepted with the same default, so scripts written for
it run unchanged; the options that only matter to setups openformers does not drive (DeepSpeed, TPUs, other
trackers) are kept as given. `fsdp` and `fsdp_config` are checked here (training/distributed.py reads them). Unknown keyword arguments raise a TypeError (the dataclass does
that); values that contradict each other raise a ValueError naming both fields. `evaluation_strategy`,
removed from the reference, is accepted as an alias of `eval_strategy` with a deprecation warning, so
older scripts run unchanged.
"""

import contextlib
import dataclasses
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from .distributed import fsdp_settings
from .schedules import SchedulerType


class _StrEnum(str, Enum):
    def __str__(self):
        return self.value


class IntervalStrategy(_StrEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SaveStrategy(_StrEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"
    BEST = "best"


class HubStrategy(_StrEnum):
    END = "end"
    EVERY_SAVE = "every_save"
    CHECKPOINT = "checkpoint"
    ALL_CHECKPOINTS = "all_checkpoints"


class OptimizerNames(_StrEnum):
    """The reference's optimizer names for `optim`. The Trainer builds those in IMPLEMENTED_OPTIMIZERS; the others
    come from packages outside torch (bitsandbytes, galore-torch, torchao, ...) and are refused by name."""

    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAMW_TORCH_XLA = "adamw_torch_xla"
    ADAMW_TORCH_NPU_FUSED = "adamw_torch_npu_fused"
    ADAFACTOR = "adafactor"
    ADAMW_ANYPRECISION = "adamw_anyprecision"
    ADAMW_TORCH_4BIT = "adamw_torch_4bit"
    ADAMW_TORCH_8BIT = "adamw_torch_8bit"
    ADEMAMIX = "ademamix"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    ADAMW_BNB = "adamw_bnb_8bit"
    ADAMW_8BIT = "adamw_8bit"
    ADEMAMIX_8BIT = "ademamix_8bit"
    LION_8BIT = "lion_8bit"
    LION = "lion_32bit"
    PAGED_ADAMW = "paged_adamw_32bit"
    PAGED_ADAMW_8BIT = "paged_adamw_8bit"
    PAGED_ADEMAMIX = "paged_ademamix_32bit"
    PAGED_ADEMAMIX_8BIT = "paged_ademamix_8bit"
    PAGED_LION = "paged_lion_32bit"
    PAGED_LION_8BIT = "paged_lion_8bit"
    RMSPROP = "rmsprop"
    RMSPROP_BNB = "rmsprop_bnb"
    RMSPROP_8BIT = "rmsprop_bnb_8bit"
    RMSPROP_32BIT = "rmsprop_bnb_32bit"
    GALORE_ADAMW = "galore_adamw"
    GALORE_ADAMW_8BIT = "galore_adamw_8bit"
    GALORE_ADAFACTOR = "galore_adafactor"
    GALORE_ADAMW_LAYERWISE = "galore_adamw_layerwise"
    GALORE_ADAMW_8BIT_LAYERWISE = "galore_adamw_8bit_layerwise"
    GALORE_ADAFACTOR_LAYERWISE = "galore_adafactor_layerwise"
    LOMO = "lomo"
    ADALOMO = "adalomo"
    GROKADAMW = "grokadamw"
    SCHEDULE_FREE_RADAM = "schedule_free_radam"
    SCHEDULE_FREE_ADAMW = "schedule_free_adamw"
    SCHEDULE_FREE_SGD = "schedule_free_sgd"
    APOLLO_ADAMW = "apollo_adamw"
    APOLLO_ADAMW_LAYERWISE = "apollo_adamw_layerwise"
    STABLE_ADAMW = "stable_adamw"


# The optimizers the Trainer builds itself (torch's, and Adafactor from training/optimizers.py).
IMPLEMENTED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")


class ParallelMode(Enum):
    """How the Trainer spreads its work: one process on the CPU or one GPU, or one process per device (torchrun).
    One process driving several GPUs (NOT_DISTRIBUTED), SageMaker and TPUs are the reference's modes only."""

    NOT_PARALLEL = "not_parallel"
    NOT_DISTRIBUTED = "not_distributed"
    DISTRIBUTED = "distributed"
    SAGEMAKER_MODEL_PARALLEL = "sagemaker_model_parallel"
    SAGEMAKER_DATA_PARALLEL = "sagemaker_data_parallel"
    TPU = "tpu"


def check_optimizer_name(name) -> str:
    """`optim` as its text: one the Trainer builds, or a ValueError naming it and listing those."""
    value = getattr(name, "value", name)
    if value in IMPLEMENTED_OPTIMIZERS:
        return value
    known = value in tuple(OptimizerNames)
    raise ValueError(
        f"optim must be one of {', '.join(map(repr, IMPLEMENTED_OPTIMIZERS))}; got {value!r}"
        + (", an optimizer of the reference's from a package outside torch (bitsandbytes, galore-torch, torchao, ...)"
           " that openformers does not drive: build it yourself and pass Trainer(optimizer_cls_and_kwargs=(cls, "
           "kwargs))." if known else ".")
    )


# The reference's report_to integrations; openformers writes TensorBoard itself (the Trainer names the rest).
REPORT_INTEGRATIONS = (
    "azure_ml", "comet_ml", "mlflow", "neptune", "tensorboard", "trackio", "wandb", "codecarbon", "clearml",
    "dagshub", "flyte", "dvclive", "swanlab", "kubeflow",
)
# Fields of these types take real numbers only (NumPy's too; bool counts, as in Python).
_NUMBER_TYPES = (int, float, int | None, float | None)
LOG_LEVELS = ("detail", "debug", "info", "warning", "error", "critical", "passive")
_DICT_FIELDS = ("accelerator_config", "fsdp_config", "deepspeed", "gradient_checkpointing_kwargs",
                "activation_checkpointing_kwargs", "lr_scheduler_kwargs", "liger_kernel_config")


@dataclass
class TrainingArguments:
    output_dir: str | None = None
    per_device_train_batch_size: int = 8
    num_train_epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    lr_scheduler_type: str | SchedulerType = "linear"
    lr_scheduler_kwargs: dict | str | None = None
    warmup_steps: float = 0
    # The reference's default: one fused kernel for the whole update (5x faster on a CPU) where torch has it.
    optim: OptimizerNames | str = field(
        default_factory=lambda: "adamw_torch_fused" if _torch_at_least(2, 8) else "adamw_torch")
    optim_args: str | None = None  # "momentum=0.9,nesterov=True" for sgd, adagrad and rmsprop
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim_target_modules: str | list[str] | None = None
    gradient_accumulation_steps: int = 1
    average_tokens_across_devices: bool = True
    max_grad_norm: float = 1.0
    label_smoothing_factor: float = 0.0
    bf16: bool = False
    fp16: bool = False
    bf16_full_eval: bool = False
    fp16_full_eval: bool = False
    tf32: bool | None = None
    activation_checkpointing: bool | None = None
    activation_checkpointing_kwargs: dict | str | None = None
    # Older names of the two above; once resolved both pairs hold the same values.
    gradient_checkpointing: bool | None = None
    gradient_checkpointing_kwargs: dict | str | None = None  # options for torch.utils.checkpoint (use_reentrant...)
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    use_liger_kernel: bool = False
    liger_kernel_config: dict | None = None
    use_cache: bool = False
    neftune_noise_alpha: float | None = None
    torch_empty_cache_steps: int | None = None
    auto_find_batch_size: bool = False
    logging_strategy: str | IntervalStrategy = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    log_on_each_node: bool = True
    logging_nan_inf_filter: bool = True
    include_num_input_tokens_seen: str | bool = "no"
    log_level: str = "passive"
    log_level_replica: str = "warning"
    disable_tqdm: bool | None = None
    report_to: str | list[str] | None = "none"
    run_name: str | None = None
    project: str = "huggingface"
    trackio_space_id: str | None = None
    trackio_bucket_id: str | None = None
    trackio_static_space_id: str | bool | None = None
    eval_strategy: str | IntervalStrategy = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    per_device_eval_batch_size: int = 8
    prediction_loss_only: bool = False
    eval_on_start: bool = False
    eval_do_concat_batches: bool = True
    eval_use_gather_object: bool = False
    eval_accumulation_steps: int | None = None
    include_for_metrics: list[str] = field(default_factory=list)
    batch_eval_metrics: bool = False
    save_only_model: bool = False
    save_strategy: str | SaveStrategy = "steps"
    save_steps: float = 500
    save_on_each_node: bool = False
    save_total_limit: int | None = None
    enable_jit_checkpoint: bool = False
    push_to_hub: bool = False
    hub_token: str | None = None
    hub_private_repo: bool | None = None
    hub_model_id: str | None = None
    hub_strategy: str | HubStrategy = "every_save"
    hub_always_push: bool = False
    hub_revision: str | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    ignore_data_skip: bool = False
    restore_callback_states_from_checkpoint: bool = False
    full_determinism: bool = False
    seed: int = 42
    data_seed: int | None = None
    use_cpu: bool = False
    accelerator_config: dict | str | None = None
    parallelism_config: Any = None
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = None
    dataloader_multiprocessing_context: str | None = None
    dataloader_in_order: bool = True
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    train_sampling_strategy: str = "random"
    length_column_name: str = "length"
    ddp_find_unused_parameters: bool | None = None
    ddp_bucket_cap_mb: int | None = None
    ddp_broadcast_buffers: bool | None = None
    ddp_static_graph: bool | None = None
    ddp_backend: str | None = None
    ddp_timeout: int = 1800
    fsdp: str | list | None = None
    fsdp_config: dict | str | None = None
    deepspeed: dict | str | None = None
    debug: str | list[str] = ""
    skip_memory_metrics: bool = True
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    resume_from_checkpoint: str | None = None
    local_rank: int = -1
    # Names the reference has dropped, still accepted so older scripts run: TensorBoard's folder (default
    # output_dir/runs), the warmup as a fraction, and the old name of eval_strategy (read once in __post_init__).
    logging_dir: str | None = None
    warmup_ratio: float | None = None
    evaluation_strategy: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(str(self.output_dir))
        for name in _DICT_FIELDS:  # JSON text from a command line becomes a dict
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("{"):
                setattr(self, name, json.loads(value))
        self._resolve_aliases()
        if self.disable_tqdm is None:  # progress bars go when the library logs only errors, as the reference's
            from .. import logging as library_logging

            self.disable_tqdm = library_logging.get_verbosity() > library_logging.WARNING
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"
        if isinstance(self.debug, str):
            self.debug = self.debug.split()
        elif self.debug is None:
            self.debug = []
        if (self.torch_compile_mode is not None or self.torch_compile_backend is not None) and not self.torch_compile:
            self.torch_compile = True
        if self.torch_compile and self.torch_compile_backend is None:
            self.torch_compile_backend = "inductor"
        if self.use_cpu:
            self.dataloader_pin_memory = False
        self._check_choices()
        self._check_number_types()
        self._check_numbers()
        self._derive_defaults()
        self._check_best_model()
        fsdp_settings(self.fsdp, self.fsdp_config)  # a value FSDP2 cannot honour is refused here, naming it
        if self.bf16 and self.fp16:
            raise ValueError("bf16=True and fp16=True contradict each other: pick one mixed-precision type.")
        if self.bf16_full_eval and self.fp16_full_eval:
            raise ValueError("bf16_full_eval=True and fp16_full_eval=True contradict each other: pick one.")

    def _resolve_aliases(self):
        if self.evaluation_strategy is not None:
            if self.eval_strategy != "no" and self.eval_strategy != self.evaluation_strategy:
                raise ValueError(
                    f"Got eval_strategy={self.eval_strategy!r} and evaluation_strategy={self.evaluation_strategy!r}; "
                    "pass only eval_strategy."
                )
            warnings.warn(
                "`evaluation_strategy` is deprecated (the reference removed it); use `eval_strategy` instead.",
                FutureWarning,
                stacklevel=4,
            )
            self.eval_strategy = self.evaluation_strategy
        self.evaluation_strategy = None
        # activation_checkpointing is the new name; gradient_checkpointing fills it when it is unset.
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
            setattr(self, old, getattr(self, new))
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing = False

    def _check_choices(self):
        for name, choices in (
            ("eval_strategy", tuple(IntervalStrategy)),
            ("logging_strategy", tuple(IntervalStrategy)),
            ("save_strategy", tuple(SaveStrategy)),
            ("hub_strategy", tuple(HubStrategy)),
            ("lr_scheduler_type", tuple(SchedulerType)),
        ):
            value = getattr(self, name)
            value = getattr(value, "value", value)  # enum members from scripts written for the reference
            choices = [getattr(c, "value", c) for c in choices]
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
            setattr(self, name, value)
        self.optim = check_optimizer_name(self.optim)
        for name in ("log_level", "log_level_replica"):
            if getattr(self, name) not in LOG_LEVELS:
                choices = ", ".join(map(repr, LOG_LEVELS))
                raise ValueError(f"{name} must be one of {choices}; got {getattr(self, name)!r}.")
        if self.include_num_input_tokens_seen not in ("no", "all", "non_padding"):
            raise ValueError(
                "include_num_input_tokens_seen must be True, False, 'no', 'all' or 'non_padding'; got "
                f"{self.include_num_input_tokens_seen!r}."
            )
        self.report_to = _report_targets(self.report_to)
        if self.lr_scheduler_type in ("reduce_lr_on_plateau", "greedy") and self.eval_strategy == "no":
            raise ValueError(
                f"lr_scheduler_type={self.lr_scheduler_type!r} follows an evaluation metric: set eval_strategy to "
                "'steps' or 'epoch'."
            )

    def _check_number_types(self):
        # A YAML file's 2e-5 (no dot) loads as a string, which the reference keeps until its optimizer fails on it.
        for each in dataclasses.fields(self):
            value = getattr(self, each.name)
            if each.type in _NUMBER_TYPES and not (value is None or isinstance(value, numbers.Real)):
                raise TypeError(
                    f"{each.name} must be a number, got {type(value).__name__} {value!r}. Values read from a YAML file "
                    "come back as strings where YAML 1.1 sees no number (2e-5 without a dot): write 2.0e-5 there, "
                    "or convert the value with float() or int()."
                )

    def _check_numbers(self):
        positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if self.learning_rate < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                "learning_rate, weight_decay and max_grad_norm must not be negative; got "
                f"{self.learning_rate}, {self.weight_decay}, {self.max_grad_norm}."
            )
        if not 0 <= self.label_smoothing_factor < 1:
            raise ValueError(f"label_smoothing_factor must be in [0, 1); got {self.label_smoothing_factor}.")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(
                f"Nothing to train: num_train_epochs={self.num_train_epochs} and max_steps={self.max_steps}. "
                "Set num_train_epochs > 0 or max_steps > 0."
            )
        if self.warmup_ratio is not None:
            if self.warmup_steps:
                raise ValueError("Pass warmup_steps or warmup_ratio, not both.")
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}.")
            warnings.warn(
                "`warmup_ratio` is deprecated in the reference; pass the fraction as warmup_steps (a value below 1).",
                FutureWarning,
                stacklevel=4,
            )
            self.warmup_steps, self.warmup_ratio = self.warmup_ratio, None
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must not be negative; got {self.warmup_steps}.")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"dataloader_num_workers must not be negative; got {self.dataloader_num_workers}.")
        if self.dataloader_prefetch_factor is not None and self.dataloader_num_workers == 0:
            raise ValueError("dataloader_prefetch_factor only applies with dataloader_num_workers > 0.")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be None or at least 1; got {self.save_total_limit}.")

    def _derive_defaults(self):
        if self.eval_strategy == "steps" and not self.eval_steps:
            if not self.logging_steps:
                raise ValueError('eval_strategy="steps" needs eval_steps > 0 (or logging_steps > 0 to copy).')
            self.eval_steps = self.logging_steps
        for name, strategy in (("logging_steps", self.logging_strategy), ("save_steps", self.save_strategy),
                               ("eval_steps", self.eval_strategy)):
            if strategy == "steps" and not getattr(self, name) > 0:
                raise ValueError(f'{name.split("_")[0]}_strategy="steps" needs {name} > 0; got {getattr(self, name)}.')
        if self.eval_strategy != "no":
            self.do_eval = True
        follows_metric = self.lr_scheduler_type in ("reduce_lr_on_plateau", "greedy")
        if (self.load_best_model_at_end or self.save_strategy == "best" or follows_metric) and \
                self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

    def _check_best_model(self):
        if not self.load_best_model_at_end or self.save_strategy == "best":
            return
        if self.eval_strategy != self.save_strategy:
            raise ValueError(
                "load_best_model_at_end=True needs the save and eval strategies to match (or save_strategy='best'); "
                f"got eval_strategy={self.eval_strategy!r} and save_strategy={self.save_strategy!r}."
            )
        if self.eval_strategy == "no":
            raise ValueError("load_best_model_at_end=True needs evaluation: set eval_strategy to 'steps' or 'epoch'.")
        if self.eval_strategy == "steps" and not _is_multiple(self.save_steps, self.eval_steps):
            raise ValueError(
                "load_best_model_at_end=True needs save_steps to be a multiple of eval_steps, so every checkpoint "
                f"has an evaluation; got save_steps={self.save_steps} and eval_steps={self.eval_steps}."
            )

    # -- the reference's setters: several related fields at once, returning the arguments ------------------

    def set_training(self, learning_rate: float = 5e-5, batch_size: int = 8, weight_decay: float = 0,
                     num_epochs: float = 3, max_steps: int = -1, gradient_accumulation_steps: int = 1, seed: int = 42,
                     activation_checkpointing: bool = False, gradient_checkpointing: bool | None = None):
        if gradient_checkpointing is not None:
            activation_checkpointing = gradient_checkpointing
        return self._set(do_train=True, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                         weight_decay=weight_decay, num_train_epochs=num_epochs, max_steps=max_steps,
                         gradient_accumulation_steps=gradient_accumulation_steps, seed=seed,
                         activation_checkpointing=activation_checkpointing,
                         gradient_checkpointing=activation_checkpointing)

    def set_evaluate(self, strategy: str = "no", steps: int = 500, batch_size: int = 8,
                     accumulation_steps: int | None = None, delay: float | None = None, loss_only: bool = False):
        strategy = _strategy("strategy", strategy, IntervalStrategy, steps)
        return self._set(eval_strategy=strategy, do_eval=strategy != "no", eval_steps=steps,
                         per_device_eval_batch_size=batch_size, eval_accumulation_steps=accumulation_steps,
                         eval_delay=delay, prediction_loss_only=loss_only)

    def set_testing(self, batch_size: int = 8, loss_only: bool = False):
        return self._set(do_predict=True, per_device_eval_batch_size=batch_size, prediction_loss_only=loss_only)

    def set_save(self, strategy: str = "steps", steps: int = 500, total_limit: int | None = None,
                 on_each_node: bool = False):
        return self._set(save_strategy=_strategy("strategy", strategy, SaveStrategy, steps), save_steps=steps,
                         save_total_limit=total_limit, save_on_each_node=on_each_node)

    def set_logging(self, strategy: str = "steps", steps: int = 500, report_to: str | list[str] = "none",
                    level: str = "passive", first_step: bool = False, nan_inf_filter: bool = False,
                    on_each_node: bool = False, replica_level: str = "passive"):
        return self._set(logging_strategy=_strategy("strategy", strategy, IntervalStrategy, steps),
                         logging_steps=steps, report_to=report_to, log_level=level, logging_first_step=first_step,
                         logging_nan_inf_filter=nan_inf_filter, log_on_each_node=on_each_node,
                         log_level_replica=replica_level)

    def set_push_to_hub(self, model_id: str, strategy: str = "every_save", token: str | None = None,
                        private_repo: bool | None = None, always_push: bool = False, revision: str | None = None):
        return self._set(push_to_hub=True, hub_model_id=model_id, hub_strategy=HubStrategy(strategy).value,
                         hub_token=token, hub_private_repo=private_repo, hub_always_push=always_push,
                         hub_revision=revision)

    def set_optimizer(self, name: str = "adamw_torch", learning_rate: float = 5e-5, weight_decay: float = 0,
                      beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, args: str | None = None):
        return self._set(optim=check_optimizer_name(name), learning_rate=learning_rate, weight_decay=weight_decay, adam_beta1=beta1,
                         adam_beta2=beta2, adam_epsilon=epsilon, optim_args=args)

    def set_lr_scheduler(self, name: str = "linear", num_epochs: float = 3.0, max_steps: int = -1,
                         warmup_steps: float = 0):
        return self._set(lr_scheduler_type=SchedulerType(name).value, num_train_epochs=num_epochs,
                         max_steps=max_steps, warmup_steps=warmup_steps)

    def set_dataloader(self, train_batch_size: int = 8, eval_batch_size: int = 8, drop_last: bool = False,
                       num_workers: int = 0, pin_memory: bool = True, persistent_workers: bool = False,
                       prefetch_factor: int | None = None, multiprocessing_context: str | None = None,
                       in_order: bool = True, auto_find_batch_size: bool = False, ignore_data_skip: bool = False,
                       sampler_seed: int | None = None):
        return self._set(per_device_train_batch_size=train_batch_size, per_device_eval_batch_size=eval_batch_size,
                         dataloader_drop_last=drop_last, dataloader_num_workers=num_workers,
                         dataloader_pin_memory=pin_memory, dataloader_persistent_workers=persistent_workers,
                         dataloader_prefetch_factor=prefetch_factor,
                         dataloader_multiprocessing_context=multiprocessing_context, dataloader_in_order=in_order,
                         auto_find_batch_size=auto_find_batch_size, ignore_data_skip=ignore_data_skip,
                         data_seed=sampler_seed)

    def _set(self, **values):
        for name, value in values.items():
            setattr(self, name, value)
        return self

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work"):
        """Run the block on the main process first (say, dataset.map that writes a cache), then on the others."""
        distributed = self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
        is_main = (self.local_process_index if local else self.process_index) == 0
        if distributed and not is_main:
            torch.distributed.barrier()  # wait for the main process to finish `desc`
        try:
            yield
        finally:
            if distributed and is_main:
                torch.distributed.barrier()  # let the others start theirs

    # -- derived values the Trainer reads ------------------------------------------------------------------

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))

    @property
    def process_index(self) -> int:
        return int(os.environ.get("RANK", "0"))

    @property
    def should_save(self) -> bool:
        return self.process_index == 0 or self.save_on_each_node

    @property
    def local_process_index(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def should_log(self) -> bool:
        return self.local_process_index == 0 if self.log_on_each_node else self.process_index == 0

    def get_process_log_level(self) -> int:
        """The openformers log level of this process: log_level on the main one, log_level_replica elsewhere
        ("passive" keeps the level already set)."""
        from .. import logging as library_logging

        levels = {**library_logging.get_log_levels_dict(), "passive": -1}
        level = levels[self.log_level if self.should_log else self.log_level_replica]
        return library_logging.get_verbosity() if level == -1 else level

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() and not self.use_cpu else "cpu")

    @property
    def n_gpu(self) -> int:
        return 1 if self.device.type == "cuda" else 0

    @property
    def parallel_mode(self) -> ParallelMode:
        """DISTRIBUTED under torchrun (several processes), else NOT_PARALLEL: a process drives one device."""
        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """warmup_steps of 1 or more are steps; below 1 they are a fraction of the training steps."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def interval(self, name: str, max_steps: int) -> int:
        """logging/eval/save steps as a step count: below 1 they are a fraction of max_steps (rounded up)."""
        value = getattr(self, name)
        return int(value) if value >= 1 else max(math.ceil(max_steps * value), 1)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "evaluation_strategy"}
        # Secrets never reach training_args.json: the reference writes a placeholder in their place.
        return {k: f"<{k.upper()}>" if k.endswith("_token") and v is not None else getattr(v, "value", v)
                for k, v in values.items()}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_sanitized_dict(self) -> dict:
        """Plain numbers, strings and booleans (what trackers accept); anything else as its text."""
        return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.to_dict().items()}


def _strategy(name: str, value, choices, steps) -> str:
    value = choices(getattr(value, "value", value)).value
    if value == "steps" and steps == 0:
        raise ValueError(f'{name}="steps" needs a positive number of steps; got steps={steps}.')
    return value


def _report_targets(targets) -> list[str]:
    if targets is None or targets == "none" or targets == ["none"]:
        return []
    if targets == "all" or targets == ["all"]:
        return ["tensorboard"] if _tensorboard_available() else []
    targets = [targets] if isinstance(targets, str) else list(targets)
    unknown = [t for t in targets if t not in REPORT_INTEGRATIONS]
    if unknown:
        raise ValueError(
            f"report_to got {unknown}; the integrations are {', '.join(REPORT_INTEGRATIONS)}, 'all' or 'none'."
        )
    return targets


def _is_multiple(save_steps: float, eval_steps: float) -> bool:
    if save_steps >= 1 and eval_steps >= 1:
        return save_steps % eval_steps == 0
    return round(save_steps / eval_steps, 6).is_integer()


def _torch_at_least(major: int, minor: int) -> bool:
    return tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (major, minor)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True

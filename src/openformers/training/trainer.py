"""Trainer: the training loop, evaluation and prediction for any model that follows the forward contract.

    trainer = Trainer(model=model, args=TrainingArguments(output_dir="out"), train_dataset=train,
                      eval_dataset=validation, processing_class=tokenizer, compute_metrics=accuracy)
    trainer.train()

The loop knows a model only through its loss (`outputs.loss`, `outputs["loss"]` or `outputs[0]`) and
its logits for metrics. Every number follows the reference's Trainer: one optimizer step gathers
`gradient_accumulation_steps` micro-batches; our models' mean losses are weighed by their share of the
step's label tokens (what the reference's models do with num_items_in_batch), a model that takes
num_items_in_batch normalizes itself, and any other model's mean is divided by the micro-batches. The
seed is set when the Trainer is built, the data order of each epoch comes from a generator seeded with
(data_seed or seed) + epoch, and the random states of a checkpoint are restored where the reference
restores them, so runs with dropout draw the reference's masks and a resumed run continues the same run.
"""

import atexit
import collections
import copy
import dataclasses
import datetime
import functools
import inspect
import itertools
import json
import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .. import logging as library_logging
from . import checkpoint as ckpt
from . import distributed, hpsearch
from .arguments import TrainingArguments, check_optimizer_name
from .callbacks import (
    CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback, TensorBoardCallback, TrainerControl,
    TrainerState,
)
from . import push
from .callbacks import ExportableState, _states_by_name
from .batching import (
    LazyBatches, has_length, with_last_flag, arrays_per_batch, concat_batches, dataset_length, length_grouped_order, plain_number,
    predictions_of, rows_in, to_device,
)
from .collators import DataCollatorWithPadding, PadWithId, default_data_collator
from .losses import COUNTED_UNSHIFTED, accepts_loss_kwargs, add_neftune_noise, is_openformers_model, label_smoothed_loss
from .optimizers import Adafactor
from .schedules import METRIC_SCHEDULERS, get_scheduler

LABEL_COLUMNS = ("label", "label_ids", "labels")
_LOOP_STATE = "loop_state.pth"


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device) at once; deterministic=True also asks torch for
    deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def seed_worker(worker_id: int, num_workers: int, rank: int) -> None:
    """A DataLoader worker's `worker_init_fn`: seed Python, NumPy and torch in the worker from its torch seed, apart
    for each process (`rank`), so random augmentations differ between workers and processes and repeat between runs."""
    set_seed(num_workers * rank + torch.initial_seed() % 2**32)


def is_main_process(local_rank: int) -> bool:
    """Whether this is the main process of its machine: local rank 0, or -1 (not distributed)."""
    return local_rank in (-1, 0)


def speed_metrics(split: str, start_time: float, num_samples: int | None = None, num_steps: int | None = None,
                  num_tokens: int | None = None) -> dict[str, float]:
    """`{split}_runtime` since `start_time` (a time.time() reading), and the samples, steps and tokens per second
    of the counts given."""
    runtime = time.time() - start_time
    metrics = {f"{split}_runtime": round(runtime, 4)}
    if runtime > 0:
        for name, count in (("samples", num_samples), ("steps", num_steps), ("tokens", num_tokens)):
            if count is not None:
                metrics[f"{split}_{name}_per_second"] = round(count / runtime, 3)
    return metrics


def denumpify_detensorize(metrics):
    """Metrics as plain Python numbers, through lists, tuples and dicts: NumPy scalars and one-element tensors by
    `.item()` (NumPy arrays are left as they are, as the reference leaves them)."""
    if isinstance(metrics, (list, tuple)):
        return type(metrics)(denumpify_detensorize(m) for m in metrics)
    if isinstance(metrics, dict):
        return type(metrics)({k: denumpify_detensorize(v) for k, v in metrics.items()})
    if isinstance(metrics, np.generic) or (isinstance(metrics, torch.Tensor) and metrics.numel() == 1):
        return metrics.item()
    return metrics


def enable_full_determinism(seed: int, warn_only: bool = False) -> None:
    """set_seed, plus deterministic kernels everywhere (slower): CUDA, cuBLAS and cuDNN included."""
    set_seed(seed)
    # cuBLAS needs a fixed workspace and synchronous launches to give the same sums every run.
    os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    os.environ["FLASH_ATTENTION_DETERMINISTIC"] = "1"
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class EvalPrediction:
    """What compute_metrics receives: `predictions, label_ids = eval_pred` unpacks it; with include_for_metrics
    the inputs and the per-row losses come after them."""

    def __init__(self, predictions, label_ids, inputs=None, losses=None):
        self.predictions, self.label_ids, self.inputs, self.losses = predictions, label_ids, inputs, losses
        self.elements = (predictions, label_ids) + tuple(x for x in (inputs, losses) if x is not None)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, index):
        if index >= len(self.elements):
            raise IndexError("EvalPrediction index out of range")
        return self.elements[index]


class TrainOutput(NamedTuple):
    """What train() returns: unpacks, indexes and reads by name, as the reference's named tuple."""

    global_step: int
    training_loss: float
    metrics: dict


class EvalLoopOutput(NamedTuple):
    """What an evaluation loop returns: the predictions, the labels, the metrics and how many rows it saw."""

    predictions: np.ndarray | tuple
    label_ids: np.ndarray | tuple | None
    metrics: dict | None
    num_samples: int | None


class PredictionOutput(NamedTuple):
    predictions: np.ndarray | tuple | None
    label_ids: np.ndarray | None
    metrics: dict | None


class Trainer:
    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_loss_func=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        tokenizer=None,
    ):
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("Got both tokenizer= and processing_class=; pass only processing_class (tokenizer is its old name).")
        self.args = args if args is not None else TrainingArguments()
        if not isinstance(self.args, TrainingArguments):
            raise TypeError(f"args must be a TrainingArguments; got {type(self.args).__name__}.")
        # Seeded here, before model_init and before anything draws a random number, as the reference does: a run
        # with dropout then draws the same masks as the reference's.
        self._seed()
        self.model_init = model_init
        if model is None and model_init is not None:
            model = model_init()
        if model is None:
            raise ValueError("Trainer needs a model: pass model=AutoModelFor....from_pretrained(...) or model_init=.")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if optimizer_cls_and_kwargs is not None and optimizers[0] is not None:
            raise ValueError("Pass optimizers=(optimizer, scheduler) or optimizer_cls_and_kwargs=, not both.")
        library_logging.set_verbosity(self.args.get_process_log_level())
        _warn_about_unused_arguments(self.args)
        if self.args.tf32 is not None and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.args.tf32
        self.rank, self.world_size, self.device = _setup_distributed(self.args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its warnings came when the arguments were made
            self._fsdp = distributed.fsdp_settings(self.args.fsdp, self.args.fsdp_config)
        if self._fsdp is not None and self.world_size == 1:
            warnings.warn("fsdp is set, but this is a single process: the model trains whole, unsharded. Shard it "
                          "across processes with torchrun --nproc_per_node=N.", stacklevel=2)
        self._sharded = self._fsdp is not None and self.world_size > 1
        self._prepare_model(model)
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.data_collator = data_collator or _default_collator(self.processing_class, model)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        if self.args.eval_strategy != "no" and eval_dataset is None:  # found here, not after an epoch of training
            raise ValueError(
                f"eval_strategy={str(self.args.eval_strategy)!r} evaluates during training, but no eval_dataset was "
                "given: pass Trainer(..., eval_dataset=...), or set eval_strategy=\"no\"."
            )
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._created_scheduler = False
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.scaler = torch.amp.GradScaler(self.device.type) if self.args.fp16 else None
        self.label_names = self.args.label_names or _default_label_names(model)
        self._keep_columns = _forward_columns(model, self.label_names) if self.args.remove_unused_columns else None
        self.control = TrainerControl()
        reporters = [_reporter(name) for name in self.args.report_to]
        progress = PrinterCallback if self.args.disable_tqdm else ProgressCallback
        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, *reporters, *(callbacks or []), progress], self.model, self.processing_class,
            self.optimizer, self.lr_scheduler,
        )
        # The reference reports how long preparing the model took when evaluate() comes before any train().
        self._model_preparation_time = None
        self._trained = False
        self.is_in_train = False  # True while train() runs
        self.hub_model_id = None
        # Set by hyperparameter_search() while it runs: the trials' space, names and objective.
        self.hp_search_backend = self.hp_space = self.hp_name = self.compute_objective = self.objective = None
        self._trial = None
        if self.args.push_to_hub:
            self.init_hf_repo()
        self.state = TrainerState(is_world_process_zero=self.rank == 0, is_local_process_zero=self.rank == 0,
                                  stateful_callbacks=self._stateful_callbacks())
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None:
            self.model.config.use_cache = self.args.use_cache  # saved so in the checkpoints, as the reference does

    @property
    def tokenizer(self):
        """The older name of processing_class (transformers 4 scripts read trainer.tokenizer)."""
        return self.processing_class

    def _seed(self) -> None:
        if self.args.full_determinism:
            enable_full_determinism(self.args.seed)
        else:
            set_seed(self.args.seed)

    def _prepare_model(self, model) -> None:
        """Put the model on the device and read what the loop needs to know about it."""
        self.model = model.to(self.device)
        self._wrapped = None
        if self.args.gradient_checkpointing or (self._fsdp is not None and self._fsdp.activation_checkpointing):
            if not hasattr(model, "gradient_checkpointing_enable"):
                raise ValueError(
                    f"gradient_checkpointing=True, but {type(model).__name__} has no gradient_checkpointing_enable(); "
                    "train without it or use a model that supports it."
                )
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
        # A causal LM's loss at position t is against label t + 1: the first label of each row counts for nothing.
        self._shifts_labels = getattr(model, "loss_shifts_labels", False)
        # How the reference counts the tokens it divides a step's loss by: shifted too, except for the causal LMs
        # whose loss_type it leaves unset (GPT-2, BERT's LM head), whose first labels it counts as well.
        self._counts_shifted = self._shifts_labels and type(model).__name__ not in COUNTED_UNSHIFTED
        self.model_accepts_loss_kwargs = accepts_loss_kwargs(model)
        self._label_smoothing = self.args.label_smoothing_factor
        if self._label_smoothing and getattr(getattr(model, "config", None), "problem_type", None) == \
                "multi_label_classification":
            warnings.warn("label_smoothing_factor does not apply to multi-label classification; training without it.",
                          stacklevel=3)
            self._label_smoothing = 0.0
        # The reference's estimate: 6 floating-point operations per token and non-embedding parameter.
        counted = model.num_parameters(exclude_embeddings=True) if hasattr(model, "num_parameters") else 0
        self._flos_per_token = 6 * counted

    def _stateful_callbacks(self) -> list:
        return [cb for cb in [*self.callback_handler.callbacks, self.control] if isinstance(cb, ExportableState)]

    def is_world_process_zero(self) -> bool:
        return self.rank == 0

    def is_local_process_zero(self) -> bool:
        return int(os.environ.get("LOCAL_RANK", "0")) == 0 if self.world_size > 1 else True

    # -- callbacks -------------------------------------------------------------------------------------------

    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback) -> None:
        self.callback_handler.remove_callback(callback)

    # -- data ------------------------------------------------------------------------------------------------

    def _collate(self, features: list[dict]) -> dict:
        if self._keep_columns is not None:
            columns = list(features[0])
            features = [{k: v for k, v in row.items() if k in self._keep_columns} for row in features]
            if not set(features[0]) - set(LABEL_COLUMNS) - set(self.label_names):
                raise ValueError(
                    f"No column of the dataset ({columns}) is an input of {type(self.model).__name__}.forward (which "
                    f"takes {sorted(self._keep_columns)}). Tokenize the dataset first (dataset.map(preprocess, "
                    "batched=True)), or set remove_unused_columns=False."
                )
        return self.data_collator(features)

    def _batches(self, dataset, batch_size: int, epoch: int | None, drop_last: bool):
        """The rows of each batch: shuffled by (data_seed or seed) + epoch when epoch is given, then sharded.

        group_by_length training orders are drawn from the global stream when the loader first asks for a
        batch (as the reference's sampler does), so they come as a LazyBatches of the same length.
        """
        if self.args.train_sampling_strategy == "group_by_length" and epoch is not None:
            count = self._sharded_count(dataset_length(dataset))
            number = count // batch_size if drop_last else -(-count // batch_size)
            return LazyBatches(lambda: self._order_to_batches(dataset, batch_size, epoch, drop_last), number)
        return self._order_to_batches(dataset, batch_size, epoch, drop_last)

    def _sharded_count(self, count: int) -> int:
        return -(-count // self.world_size) if self.world_size > 1 else count

    def _order_to_batches(self, dataset, batch_size: int, epoch: int | None, drop_last: bool) -> list[list[int]]:
        count = dataset_length(dataset)
        strategy = self.args.train_sampling_strategy
        data_seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if strategy == "group_by_length":
            # Training shuffles with the global stream (the reference's sampler has no generator of its own),
            # evaluation with one seeded by data_seed; groups span the whole accumulated step.
            generator = None if epoch is not None else torch.Generator().manual_seed(data_seed)
            group = batch_size * (self.args.gradient_accumulation_steps if epoch is not None else 1)
            order = length_grouped_order(self._row_lengths(dataset), group, generator)
        elif strategy == "batch_rebalance":
            raise ValueError(
                "train_sampling_strategy='batch_rebalance' balances sequence lengths across data-parallel ranks, "
                "which the openformers Trainer does not do; use 'group_by_length', 'random' or 'sequential'."
            )
        elif epoch is None or strategy == "sequential":
            order = list(range(count))
        else:
            generator = torch.Generator().manual_seed(data_seed + epoch)
            order = torch.randperm(count, generator=generator).tolist()
        if self.world_size > 1 and epoch is not None:
            order += order[: (-len(order)) % self.world_size]  # every rank gets the same number of rows
            order = order[self.rank :: self.world_size]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        return batches

    def _stream_loader(self, epoch: int, batch_size: int) -> DataLoader:
        """Batches read in order from a dataset without a length (an IterableDataset, a streamed dataset)."""
        if hasattr(self.train_dataset, "set_epoch"):  # a streamed dataset reshuffles its buffer per pass
            self.train_dataset.set_epoch(epoch)
        args = self.args
        options = {}
        if args.dataloader_num_workers > 0:
            options.update(persistent_workers=args.dataloader_persistent_workers,
                           prefetch_factor=args.dataloader_prefetch_factor)
        return DataLoader(self.train_dataset, batch_size=batch_size, collate_fn=self._collate,
                          num_workers=args.dataloader_num_workers, drop_last=args.dataloader_drop_last,
                          pin_memory=args.dataloader_pin_memory and self.device.type == "cuda", **options)

    def _row_lengths(self, dataset) -> list[int]:
        """Row lengths for group_by_length: the length column when the dataset has one, else the main input's."""
        column = self.args.length_column_name
        if column in getattr(dataset, "column_names", ()):
            return list(dataset[column])
        names = getattr(self.processing_class, "model_input_names", None) or ["input_ids"]
        rows = [dataset[i] for i in range(dataset_length(dataset))]
        if not rows or not isinstance(rows[0], dict) or names[0] not in rows[0]:
            raise ValueError(
                f"train_sampling_strategy='group_by_length' needs a {column!r} column or rows with {names[0]!r}."
            )
        return [len(row[names[0]]) for row in rows]

    def _loader(self, dataset, batches: list[list[int]]) -> DataLoader:
        args = self.args
        # No generator of its own: each pass over a loader then draws its base seed from the global stream, as
        # the reference's (accelerate's) loaders do, so dropout and MLM masking see the reference's random numbers.
        options = {}
        if args.dataloader_num_workers > 0:
            options.update(persistent_workers=args.dataloader_persistent_workers,
                           prefetch_factor=args.dataloader_prefetch_factor,
                           multiprocessing_context=args.dataloader_multiprocessing_context,
                           worker_init_fn=functools.partial(seed_worker, num_workers=args.dataloader_num_workers,
                                                            rank=args.process_index))
        return DataLoader(
            dataset, batch_sampler=batches, collate_fn=self._collate, num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory and self.device.type == "cuda", **options,
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset.")
        batch_size = getattr(self, "_train_batch_size", self.args.per_device_train_batch_size)
        batches = self._batches(self.train_dataset, batch_size, 0, self.args.dataloader_drop_last)
        return self._loader(self.train_dataset, batches)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer.evaluate() needs an eval_dataset (given to the Trainer or to evaluate()).")
        if not has_length(dataset):  # a stream: read in order, to its end
            return DataLoader(dataset, batch_size=self.args.per_device_eval_batch_size, collate_fn=self._collate,
                              num_workers=self.args.dataloader_num_workers)
        return self._loader(dataset, self._batches(dataset, self.args.per_device_eval_batch_size, None, False))

    # -- optimizer and schedule ------------------------------------------------------------------------------

    def get_decay_parameter_names(self, model) -> list[str]:
        """Parameters that get weight decay: all but biases and normalization weights (as the reference does)."""
        norm_types = (torch.nn.LayerNorm, torch.nn.RMSNorm)
        names = []
        for module_name, module in model.named_modules():
            for name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{name}" if module_name else name
                if not isinstance(module, norm_types) and not _looks_like_norm_or_bias(full):
                    names.append(full)
        return names

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = model if model is not None else self.model
            decay = set(self.get_decay_parameter_names(model))
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            chosen = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_class, options = chosen
            self.optimizer = optimizer_class([g for g in groups if g["params"]], **options)
        return self.optimizer

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: TrainingArguments, model=None) -> tuple[type, dict]:
        """The optimizer class that `args.optim` names and its arguments (learning rate, betas, optim_args)."""
        optim = check_optimizer_name(args.optim)  # again: args may have been changed since they were checked
        options = {"lr": args.learning_rate}
        extra = _parse_optim_args(args.optim_args)
        if optim in ("adamw_torch", "adamw_torch_fused"):
            options.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
            if optim == "adamw_torch_fused":
                options["fused"] = True
            return torch.optim.AdamW, options
        if optim == "adafactor":
            return Adafactor, {**options, "scale_parameter": False, "relative_step": False}
        numbers = {"sgd": ("momentum", "dampening", "weight_decay"), "adagrad": ("lr_decay", "weight_decay", "eps"),
                   "rmsprop": ("momentum", "alpha", "eps", "weight_decay")}
        flags = {"sgd": ("nesterov",), "rmsprop": ("centered",), "adagrad": ()}
        classes = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}
        options.update({k: float(extra[k]) for k in numbers[optim] if k in extra})
        options.update({k: extra[k].lower() in ("true", "1", "yes") for k in flags[optim] if k in extra})
        return classes[optim], options

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self._created_scheduler = True
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return self.lr_scheduler

    # -- training --------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None,
              **kwargs) -> TrainOutput:
        """Run the training loop. In a hyperparameter search, `trial` is the search's trial: the run trains on a copy
        of the arguments with its hyperparameters set; outside one it is only recorded in the state."""
        if kwargs:
            raise TypeError(
                f"train() got unexpected keyword arguments {sorted(kwargs)}; it takes resume_from_checkpoint, trial "
                "and ignore_keys_for_eval."
            )
        self._trial = trial
        if trial is not None and self.hp_search_backend is not None:
            self.args = self._trial_arguments(trial)
        args = self.args
        if resume_from_checkpoint is None and args.resume_from_checkpoint is not None:
            resume_from_checkpoint = args.resume_from_checkpoint
        self._ignore_keys_for_eval = ignore_keys_for_eval
        if self.model_init is not None:  # a fresh model for this run, built under the run's seed
            self._seed()
            self._prepare_model(self.model_init(trial) if _takes_an_argument(self.model_init) else self.model_init())
            self.optimizer = self.lr_scheduler = None
            self.callback_handler.model = self.model
        batch_size = self.args.per_device_train_batch_size
        while True:
            try:
                self.is_in_train = True
                return self._training_loop(batch_size, resume_from_checkpoint, trial)
            except RuntimeError as error:  # torch.OutOfMemoryError included
                if not self.args.auto_find_batch_size or not _is_out_of_memory(error):
                    raise
                batch_size = int(batch_size * 0.9)  # accelerate's step down, as the reference's search uses
                if batch_size == 0:
                    raise RuntimeError("auto_find_batch_size: out of memory even with a batch of one row.") from error
                if self._created_scheduler:  # its length depends on the batch size
                    self.lr_scheduler = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            finally:
                self.is_in_train = False

    def _training_loop(self, batch_size: int, resume_from_checkpoint, trial) -> TrainOutput:
        args = self.args
        self._train_batch_size = batch_size
        sized = has_length(self.train_dataset)
        if sized:
            micro_batches_per_epoch = len(self.get_train_dataloader())
            if micro_batches_per_epoch == 0:
                raise ValueError("The train_dataset is empty (or smaller than one batch with dataloader_drop_last=True).")
            steps_per_epoch = math.ceil(micro_batches_per_epoch / args.gradient_accumulation_steps)
            if args.max_steps > 0:
                max_steps, num_epochs = args.max_steps, math.ceil(args.max_steps / steps_per_epoch)
            else:
                max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
                num_epochs = math.ceil(args.num_train_epochs)
        elif self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset.")
        elif args.max_steps <= 0:
            raise ValueError(
                f"The train_dataset ({type(self.train_dataset).__name__}) has no length, so the number of steps cannot "
                "be worked out from num_train_epochs: set max_steps > 0."
            )
        else:  # a stream: passes over it ("epochs") go on until max_steps, as the reference's do
            max_steps, num_epochs, steps_per_epoch = args.max_steps, sys.maxsize, args.max_steps

        if self._sharded:
            if self.optimizer is not None and self._wrapped is None:
                raise ValueError(
                    "With fsdp the optimizer must be built on the sharded parameters, which exist only once train() "
                    "has sharded the model: pass optimizer_cls_and_kwargs=(cls, kwargs) instead of optimizers=."
                )
            self._training_model()
        self.create_optimizer()
        self.create_scheduler(max_steps)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.state = TrainerState(
            max_steps=max_steps, num_train_epochs=num_epochs, train_batch_size=batch_size,
            is_world_process_zero=self.rank == 0, is_local_process_zero=self.is_local_process_zero(),
            stateful_callbacks=self._stateful_callbacks(), trial_params=hpsearch.trial_params(trial),
            trial_name=self.hp_name(trial) if trial is not None and self.hp_name is not None else None,
        )
        self.state.compute_steps(args, max_steps)
        loop = {"loss_since_log": 0.0, "last_logged_step": 0, "total_loss": 0.0}
        self._pending_rng = None
        if resume_from_checkpoint:
            loop = self._resume(resume_from_checkpoint, loop)
        start_step = self.state.global_step
        # train_loss is the mean over every step of the run, those before a resume included (their total is in the
        # checkpoint's loop state); a checkpoint without it gives the mean over this run's steps.
        first_counted_step = 0 if loop.get("total_loss_restored") else start_step
        loop.pop("total_loss_restored", None)
        model = self._training_model()
        model.train()
        self._trained = True
        # NEFTune's noise is on for this run only, as the reference's hook is.
        noise = add_neftune_noise(self.model, args.neftune_noise_alpha) if args.neftune_noise_alpha else None
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start:
            self._evaluate_during_training()
        start = time.time()
        grad_norm = None
        first_epoch, carried = self.state.global_step // steps_per_epoch, 0.0
        for epoch in range(first_epoch, num_epochs):
            if self.state.global_step >= max_steps:  # resumed from the run's last checkpoint: nothing left to do
                break
            done = (self.state.global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            if not sized and epoch > first_epoch:  # a stream's later passes start from its beginning
                done = 0
            if args.ignore_data_skip:  # resume with the epoch's first batches instead of those not yet seen
                done = 0
            if sized:
                batches = self._batches(self.train_dataset, batch_size, epoch, args.dataloader_drop_last)
                loader, total = self._loader(self.train_dataset, batches[done:]), len(batches)
            else:
                loader, total = self._stream_loader(epoch, batch_size), max_steps * args.gradient_accumulation_steps
            self.callback_handler.train_dataloader = loader
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            resumed_mid_epoch = self._pending_rng is not None and done > 0
            if self._pending_rng is not None and not resumed_mid_epoch:
                self._restore_rng()  # at an epoch boundary: before the loader draws its seed, as the reference
            # Read one batch ahead, as the reference's (accelerate's) loaders do: a collator that draws random numbers
            # (masking for MLM) then draws them at the same point of the stream, relative to the dropout masks.
            micro_batches = (batch for batch, _ in with_last_flag(loader))
            if not sized and done:  # a stream cannot be indexed: the batches already trained on are read and dropped
                collections.deque(itertools.islice(micro_batches, done), maxlen=0)
            while done < total:
                group = list(itertools.islice(micro_batches, min(args.gradient_accumulation_steps, total - done)))
                if not group:  # the stream ran out: the next pass starts over
                    break
                if not sized and len(group) < args.gradient_accumulation_steps:
                    # the stream ran out mid-step: these gradients and this loss go into the next pass's first step
                    carried += self._accumulate(model, group, final=False)
                    break
                if resumed_mid_epoch:  # mid-epoch: after the first batches are drawn, as the reference
                    self._restore_rng()
                    resumed_mid_epoch = False
                done += len(group)
                self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
                step_loss, grad_norm = self._optimizer_step(model, group, carried)
                carried = 0.0
                if args.logging_nan_inf_filter and not math.isfinite(step_loss):
                    # counted as the mean of the steps since the last log, as the reference's filter does
                    step_loss = loop["loss_since_log"] / (1 + self.state.global_step - loop["last_logged_step"])
                loop["loss_since_log"] += step_loss
                loop["total_loss"] += step_loss
                self.state.global_step += 1
                self.state.epoch = epoch + done / total
                if args.torch_empty_cache_steps and self.state.global_step % args.torch_empty_cache_steps == 0 \
                        and self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.control = self.callback_handler.on_step_end(args, self.state, self.control)
                self._maybe_log_save_evaluate(loop, grad_norm)
                if self.control.should_training_stop or self.control.should_epoch_stop:
                    break
            self.control.should_epoch_stop = False
            self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
            self._maybe_log_save_evaluate(loop, grad_norm)
            if self.control.should_training_stop:
                break

        if args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            best = Path(self.state.best_model_checkpoint)
            if self._sharded:
                distributed.load_sharded(self.model, None, best / distributed.SHARDED_FOLDER)
            else:
                ckpt.load_model_weights(self.model, best)
        steps_counted = max(self.state.global_step - first_counted_step, 1)
        train_loss = loop["total_loss"] / steps_counted
        rows = max_steps * batch_size * args.gradient_accumulation_steps * self.world_size
        metrics = {**speed_metrics("train", start, num_samples=rows, num_steps=max_steps),
                   "total_flos": self.state.total_flos, "train_loss": train_loss}
        if noise is not None:
            noise.remove()
        self.log(metrics)  # adds "epoch" to the metrics returned, as the reference's do
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _training_model(self):
        if self._wrapped is None:
            model = self.model
            if self._sharded:
                model = distributed.shard_model(model, self._fsdp, self.device)
            elif self.world_size > 1:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                options = {name: getattr(self.args, f"ddp_{name}") for name in
                           ("find_unused_parameters", "bucket_cap_mb", "broadcast_buffers", "static_graph")}
                options = {name: value for name, value in options.items() if value is not None}
                model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **options)
            if self.args.torch_compile:
                model = torch.compile(model, backend=self.args.torch_compile_backend, mode=self.args.torch_compile_mode)
            self._wrapped = model
        return self._wrapped

    def _label_count(self, batch: dict, shifted: bool | None = None) -> int | None:
        """The label tokens of a batch as the reference counts them (shifted=None), or as the model averages over."""
        labels = batch.get("labels")
        if not isinstance(labels, torch.Tensor):
            return None
        if (self._counts_shifted if shifted is None else shifted) and labels.dim() > 1:
            labels = labels[..., 1:]
        return int(labels.ne(-100).sum()) if not labels.is_floating_point() else labels.numel()

    def _model_share(self, batch: dict, total: float) -> float:
        """The weight that turns our model's mean loss into its share of the reference's sum over `total` tokens."""
        return self._label_count(batch, shifted=self._shifts_labels) / max(total, 1.0)

    def _num_items_in_batch(self, group: list[dict], across_processes: bool = True) -> torch.Tensor | None:
        """The label tokens of one optimizer step over every process (None without labels); across_processes=False
        counts this process's alone (evaluation, where every process reads every batch)."""
        counts = [self._label_count(batch) for batch in group]
        if None in counts:
            return None
        total = torch.tensor(sum(counts), device=self.device)
        if self.world_size > 1 and self.args.average_tokens_across_devices and across_processes:
            dist.all_reduce(total)
        return total

    def _loss_weights(self, group: list[dict], num_items) -> list[tuple[float, float]]:
        """(gradient weight, logged weight) per micro-batch, as the reference scales the losses it adds up.

        A model or compute_loss_func that normalizes by num_items_in_batch itself is left alone; our own
        models return means, so each gets its share of the label tokens (the same sum over the tokens); any
        other model's mean is divided by the micro-batches of the step.
        """
        steps = len(group)
        world = self.world_size
        if num_items is not None and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return [(1.0, 1.0 / world)] * len(group)
        if num_items is not None and is_openformers_model(self.model):
            shares = [self._model_share(batch, float(num_items)) for batch in group]
            return [(share * world, share) for share in shares]
        return [(1.0 / steps, 1.0 / (steps * world))] * len(group)

    def _count_input_tokens(self, group: list[dict]) -> None:
        mode = self.args.include_num_input_tokens_seen
        if mode == "no":
            return
        seen = 0
        for batch in group:
            main = batch.get(getattr(self.model, "main_input_name", "input_ids"), batch.get("input_ids"))
            if mode == "non_padding" and isinstance(batch.get("attention_mask"), torch.Tensor):
                seen += int(batch["attention_mask"].sum())
            elif isinstance(main, torch.Tensor):
                seen += main.numel()
        if self.world_size > 1:
            seen_tensor = torch.tensor(seen, device=self.device)
            dist.all_reduce(seen_tensor)
            seen = int(seen_tensor)
        self.state.num_input_tokens_seen += seen

    def _optimizer_step(self, model, group: list[dict], carried: float = 0.0) -> tuple[float, float | None]:
        """Forward and backward over the micro-batches of one step, then clip, step and schedule.

        `carried` is the loss of micro-batches whose gradients were added before (see _accumulate)."""
        step_loss = self._accumulate(model, group) + carried
        if self.world_size > 1:
            total = torch.tensor(step_loss, device=self.device)
            dist.all_reduce(total)  # the step's loss over the whole global batch
            step_loss = float(total)
        return step_loss, self._apply_gradients()

    def _accumulate(self, model, group: list[dict], final: bool = True) -> float:
        """Forward and backward over micro-batches, adding to the gradients; returns their share of the loss.

        A stream's last micro-batches that do not fill a step go through here with final=False: their
        gradients wait for the next pass's first step, as the reference's do."""
        self.state.total_flos += self._flos_per_token * float(sum(b["input_ids"].numel() for b in group if "input_ids" in b))
        self._count_input_tokens(group)
        num_items = self._num_items_in_batch(group)
        weights = self._loss_weights(group, num_items)
        step_loss = torch.zeros((), device=self.device)
        for index, (batch, (grad_weight, log_weight)) in enumerate(zip(group, weights)):
            batch = to_device(batch, self.device)
            last = final and index == len(group) - 1
            sync = nullcontext() if last or self.world_size == 1 or self._sharded else model.no_sync()
            if self._sharded:
                distributed.gradient_sync(self.model, last)
            with sync:
                with self._autocast():
                    loss = self._call_compute_loss(model, batch, num_items)
                scaled = loss * grad_weight
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            step_loss += loss.detach().float() * log_weight
            if not last:
                self.control = self.callback_handler.on_substep_end(self.args, self.state, self.control)
        return float(step_loss)

    def _apply_gradients(self) -> float | None:
        """Unscale, clip, step the optimizer and the schedule, and clear the gradients; returns the grad norm."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.args.max_grad_norm > 0:
            grad_norm = distributed.as_number(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                             self.args.max_grad_norm))
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        if isinstance(self.lr_scheduler, METRIC_SCHEDULERS):  # stepped with a metric after each evaluation
            self._last_lr = self.optimizer.param_groups[0]["lr"]
        else:
            self._last_lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step used, which is what gets logged
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _call_compute_loss(self, model, inputs: dict, num_items, return_outputs: bool = False):
        """compute_loss, also when a subclass overrides it with the older signature (no num_items_in_batch)."""
        if self._compute_loss_takes_num_items():
            return self.compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items)
        return self.compute_loss(model, inputs, return_outputs=return_outputs)

    def _compute_loss_takes_num_items(self) -> bool:
        parameters = inspect.signature(self.compute_loss).parameters
        return "num_items_in_batch" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """The loss of one batch (override to train with another loss).

        Models may return an output object or dict with a `loss`, or a tuple whose first element is the
        loss. With label_smoothing_factor or compute_loss_func the labels are taken out of the inputs and
        the loss is computed from the outputs here.
        """
        labels = None
        if (self._label_smoothing != 0 or self.compute_loss_func is not None) and "labels" in inputs:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None:
            loss = label_smoothed_loss(outputs, labels, self._label_smoothing, self._shifts_labels)
        else:
            loss = self._loss_of(outputs, inputs)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None and \
                (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            loss = loss * self.world_size  # the model divided by every process's tokens; DDP averages over them
        return (loss, outputs) if return_outputs else loss

    def _loss_of(self, outputs, inputs: dict) -> torch.Tensor:
        if isinstance(outputs, dict):
            loss = outputs.get("loss")
        elif isinstance(outputs, (tuple, list)):
            loss = outputs[0] if outputs else None
        else:
            loss = getattr(outputs, "loss", None)
        if loss is None:
            raise ValueError(
                f"{type(self.model).__name__} returned no loss for a batch with keys {sorted(inputs)}. The batches "
                "need labels: a `label`/`labels` column, or a collator that makes them (DataCollatorForLanguageModeling)."
            )
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(
                f"{type(self.model).__name__} returned {shape} where the Trainer reads the loss (the 'loss' entry, or "
                "the first element of a tuple); return a scalar loss first, or override compute_loss."
            )
        return loss.reshape(())

    def _autocast(self):
        if self.args.bf16 or self.args.fp16:
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16
            return torch.autocast(device_type=self.device.type, dtype=dtype)
        return nullcontext()

    def _maybe_log_save_evaluate(self, loop: dict, grad_norm) -> None:
        state, control = self.state, self.control
        if control.should_log and state.global_step > loop["last_logged_step"]:
            logs = {"loss": loop["loss_since_log"] / (state.global_step - loop["last_logged_step"])}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm
            logs["learning_rate"] = self._last_lr
            loop["loss_since_log"], loop["last_logged_step"] = 0.0, state.global_step
            self.log(logs)
        control.should_log = False
        if control.should_evaluate:
            metrics = self._evaluate_during_training()
            is_best = self._update_best_metric(metrics)
            if self.args.save_strategy == "best":
                control.should_save = is_best
            control.should_evaluate = False
        if control.should_save:
            self._save_checkpoint(loop)
            self.control = self.callback_handler.on_save(self.args, state, self.control)
            self.control.should_save = False

    def _evaluate_during_training(self) -> dict:
        """evaluate(), then step a schedule that follows metric_for_best_model (plateau, greedy) with it."""
        metrics = self.evaluate(ignore_keys=getattr(self, "_ignore_keys_for_eval", None))
        self._report_to_hp_search(metrics)
        if isinstance(self.lr_scheduler, METRIC_SCHEDULERS):
            name = self.args.metric_for_best_model
            key = name if name.startswith("eval_") else f"eval_{name}"
            if key not in metrics:
                raise KeyError(
                    f"lr_scheduler_type={self.args.lr_scheduler_type!r} follows metric_for_best_model={name!r}, but "
                    f"{key!r} is not among the evaluation metrics {sorted(metrics)}."
                )
            self.lr_scheduler.step(metrics[key])
        return metrics

    def _update_best_metric(self, metrics: dict) -> bool:
        name = self.args.metric_for_best_model
        if name is None:
            return False
        if isinstance(self.eval_dataset, dict):
            found = [k for k in metrics if k.endswith(f"_{name.removeprefix('eval_')}")]
            key = found[0] if found else name
        else:
            key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise KeyError(
                f"metric_for_best_model={name!r}: no {key!r} among the evaluation metrics {sorted(metrics)}. Pick one "
                "of them, or return it from compute_metrics."
            )
        value, best = metrics[key], self.state.best_metric
        if best is None or (value > best if self.args.greater_is_better else value < best):
            self.state.best_metric, self.state.best_global_step = value, self.state.global_step
            return True
        return False

    def _save_checkpoint(self, loop: dict) -> None:
        folder = Path(self.args.output_dir) / f"{ckpt.PREFIX}-{self.state.global_step}"
        if self.state.best_global_step == self.state.global_step:
            self.state.best_model_checkpoint = str(folder)
        # The callbacks' counters (early stopping's patience...) and the control flags, as of this step.
        self.state.stateful_callbacks = _states_by_name(self._stateful_callbacks())
        files = dict(model=self.model, optimizer=self.optimizer, scheduler=self.lr_scheduler, args=self.args,
                     scaler=self.scaler, extra={_LOOP_STATE: loop}, processing_class=self.processing_class)
        if self.world_size == 1:
            folder = ckpt.save_checkpoint(self.args.output_dir, self.state.global_step, state=self.state, **files)
        else:
            # Every process writes its part into the folder the first one made; the first completes it when all
            # are done.
            made = [ckpt.begin_checkpoint(self.args.output_dir, self.state.global_step) if self.rank == 0 else None]
            dist.broadcast_object_list(made, src=0)
            temporary = made[0]
            if not self.args.save_only_model:
                torch.save(ckpt.rng_states(), temporary / ckpt.rng_file(self.rank, self.world_size))
            full = None
            if self._sharded:
                distributed.save_sharded(self.model, None if self.args.save_only_model else self.optimizer,
                                         temporary / distributed.SHARDED_FOLDER)
                files["optimizer"] = None  # it is in the sharded state
                full = distributed.full_state_dict(self.model) if self._fsdp.full_state_dict else None
            dist.barrier()
            if self.rank == 0:
                ckpt.write_checkpoint(temporary, state_dict=full,
                                      write_model=not self._sharded or self._fsdp.full_state_dict, **files)
                folder = ckpt.finish_checkpoint(temporary, self.args.output_dir, self.state.global_step, self.state)
        if self.rank == 0:
            if self.args.push_to_hub and self.args.hub_strategy != "end":
                self.callback_handler.on_push_begin(self.args, self.state, self.control)
                push.push_checkpoint(self.hub_model_id, folder, self.args, self.processing_class,
                                     self._push_message())
            ckpt.rotate_checkpoints(self.args.output_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        if self.world_size > 1:
            dist.barrier()

    def _resume(self, resume_from_checkpoint, loop: dict) -> dict:
        folder = resume_from_checkpoint
        if self.rank == 0:
            ckpt.remove_leftovers(self.args.output_dir)
        if self.world_size > 1:
            dist.barrier()  # every process then sees the same checkpoints
        if folder is True:
            folder = ckpt.latest_checkpoint(self.args.output_dir)
            if folder is None:
                raise FileNotFoundError(
                    f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete checkpoint-N folder."
                )
        folder = Path(folder)
        saved_state = ckpt.load_checkpoint(folder, self.model, self.optimizer, self.lr_scheduler, self.scaler,
                                           sharded=self._sharded)
        for name in ("max_steps", "logging_steps", "eval_steps", "save_steps", "num_train_epochs", "train_batch_size"):
            setattr(saved_state, name, getattr(self.state, name))  # the arguments of this run decide these
        saved_state.is_world_process_zero = saved_state.is_local_process_zero = self.rank == 0
        self.state = saved_state
        if self.args.restore_callback_states_from_checkpoint:
            self._restore_callback_states()
        extra = ckpt.load_extra(folder, _LOOP_STATE)
        # Set in the loop, at the point of the epoch where the reference sets them.
        self._pending_rng = ckpt.load_rng_states(folder, self.rank, self.world_size)
        if extra is None:
            return dict(loop, last_logged_step=self.state.global_step)
        return dict(extra, total_loss_restored=True)

    def _restore_rng(self) -> None:
        ckpt.set_rng_states(self._pending_rng)
        self._pending_rng = None

    def _restore_callback_states(self) -> None:
        """Rebuild each ExportableState callback (and the control flags) from the checkpoint's saved states."""
        current = [*self.callback_handler.callbacks, self.control]
        for name, saved in self.state.stateful_callbacks.items():
            saved = saved if isinstance(saved, list) else [saved]
            same_class = [callback for callback in current if type(callback).__name__ == name]
            if not same_class:
                warnings.warn(f"The checkpoint holds the state of a {name}, which this Trainer does not have; "
                              "it is ignored.", stacklevel=3)
            for callback, state in zip(same_class, saved):
                restored = type(callback).from_state({"args": state.get("args", {}),
                                                      "attributes": state.get("attributes", {})})
                if isinstance(callback, TrainerControl):
                    self.control = restored
                else:
                    index = self.callback_handler.callbacks.index(callback)
                    self.callback_handler.callbacks[index] = restored

    def _push_message(self) -> str:
        if self.args.save_strategy == "steps":
            return f"Training in progress, step {self.state.global_step}"
        return f"Training in progress, epoch {int(self.state.epoch)}"

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create (or find) the Hub repository named by hub_model_id (default: output_dir's name)."""
        if self.rank != 0:
            return
        self.hub_model_id = push.create_repo(
            self.args.output_dir, self.args.hub_model_id, token if token is not None else self.args.hub_token,
            private if private is not None else self.args.hub_private_repo,
        )

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Save the model and tokenizer to output_dir and upload the folder (checkpoints left out)."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if self.rank != 0:
            return None
        return push.upload_output(self.hub_model_id, self.args.output_dir, commit_message, token,
                                  revision if revision is not None else self.args.hub_revision, blocking=blocking)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Record `logs` (the step, epoch and tokens seen added) in log_history and hand them to the callbacks."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs=logs)

    # -- hyperparameter search ------------------------------------------------------------------------------

    def hyperparameter_search(self, hp_space=None, compute_objective=None, n_trials: int = 20,
                              direction: str | list[str] = "minimize", backend=None, hp_name=None, **kwargs):
        """Search hyperparameters with optuna: n_trials runs of train(), each on a fresh model from model_init.

        hp_space(trial) returns the trial's TrainingArguments values (default: default_hp_space_optuna);
        compute_objective(metrics) turns evaluate()'s metrics into the objective (default: default_compute_objective);
        direction is "minimize", "maximize" or a list of them for several objectives; hp_name(trial) names the
        trial's folder under output_dir (default run-{trial number}); **kwargs go to optuna.create_study (sampler,
        pruner, storage, study_name...) and timeout, gc_after_trial and catch to study.optimize. Returns the best
        trial's BestRun, or a list of them, the best trade-offs, for several objectives.
        """
        hpsearch.check_search(backend, direction)
        hpsearch.import_optuna()
        if self.model_init is None:
            raise RuntimeError(
                "To use hyperparameter search, you need to pass your model through a model_init function."
            )
        if self.world_size > 1:
            raise ValueError(f"hyperparameter_search runs in one process; this is one of {self.world_size} "
                             "(torchrun): run the search without torchrun.")
        self.hp_search_backend = hpsearch.HPSearchBackend.OPTUNA
        self.hp_space = hp_space or hpsearch.default_hp_space_optuna
        self.hp_name = hp_name
        self.compute_objective = compute_objective or hpsearch.default_compute_objective
        self._searched_args = self.args
        try:
            return hpsearch.run_optuna(self, n_trials, direction, **kwargs)
        finally:  # the Trainer's own arguments again, the last trial's model kept (as the reference's)
            self.args, self.hp_search_backend = self._searched_args, None

    def _trial_arguments(self, trial) -> TrainingArguments:
        """A copy of the searched arguments with the trial's hyperparameters set, saving under output_dir/run-N."""
        args = copy.copy(self._searched_args)
        for name, value in self.hp_space(trial).items():
            if not hasattr(args, name):
                warnings.warn(f"hp_space returned {name!r}, which is not a TrainingArguments field, so the trials do "
                              "not set it (model_init(trial) can read it from trial.params).", stacklevel=4)
                continue
            old = getattr(args, name)
            setattr(args, name, value if old is None else type(old)(value))  # num_train_epochs=3 stays a float
        run_name = self.hp_name(trial) if self.hp_name is not None else f"run-{trial.number}"
        args.output_dir = os.path.join(self._searched_args.output_dir, run_name)
        return args

    def _report_to_hp_search(self, metrics: dict) -> None:
        """In a search's trial, the evaluation's objective goes to optuna, whose pruner may end the trial here."""
        if self.hp_search_backend is None or self._trial is None:
            return
        self.objective = self.compute_objective(dict(metrics))
        if hpsearch.should_prune(self._trial, self.objective, self.state.global_step):
            self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
            raise hpsearch.import_optuna().TrialPruned(f"pruned at step {self.state.global_step}")

    # -- evaluation and prediction ---------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, str):  # the reference's way to name one of several eval datasets
            dataset = self.eval_dataset[dataset]
        if isinstance(dataset, dict):
            metrics = {}
            for name, part in dataset.items():
                metrics.update(self.evaluate(part, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        output = self._prediction_loop(dataset, metric_key_prefix, ignore_keys)
        self.log(output.metrics)  # adds "epoch" to the metrics returned, as the reference's do
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        output = self._prediction_loop(test_dataset, metric_key_prefix, ignore_keys, predicting=True)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics=output.metrics)
        return output

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self.get_eval_dataloader(test_dataset)

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        """(loss, predictions, labels) of one batch; the loss as compute_loss gives it when the batch has labels."""
        inputs = to_device(inputs, self.device)
        has_labels = bool(self.label_names) and all(inputs.get(name) is not None for name in self.label_names)
        labels = [inputs[name] for name in self.label_names] if has_labels else []
        labels = None if not labels else labels[0] if len(labels) == 1 else tuple(labels)
        with torch.no_grad(), self._autocast():
            if has_labels:
                num_items = self._num_items_in_batch([inputs], across_processes=False)
                # a copy: a user's compute_loss may pop the labels (the Trainer guide's does), which are counted below
                loss, outputs = self._call_compute_loss(model, dict(inputs), num_items, return_outputs=True)
                loss = loss.detach().mean()
                if num_items is not None and is_openformers_model(model) and not self.model_accepts_loss_kwargs \
                        and self.compute_loss_func is None and not self._label_smoothing \
                        and type(self).compute_loss is Trainer.compute_loss:  # a user's own loss is theirs
                    loss = loss * self._model_share(inputs, float(num_items))  # the reference's normalization
            else:
                outputs = model(**inputs)
                loss = outputs.get("loss") if isinstance(outputs, dict) else getattr(outputs, "loss", None)
                loss = loss.detach().mean() if isinstance(loss, torch.Tensor) else None
        if prediction_loss_only:
            return loss, None, None
        return loss, predictions_of(outputs, ignore_keys, has_labels), labels

    def _loss_repeats(self, rows: int) -> int:
        """How many entries a batch's mean loss makes in eval_loss's mean: one per row, as the reference's."""
        return rows

    def _prediction_loop(self, dataset, prefix: str, ignore_keys=None, predicting: bool = False) -> PredictionOutput:
        loader = self.get_eval_dataloader(dataset)
        self.callback_handler.eval_dataloader = loader
        if not self._trained and self._model_preparation_time is None:
            self._model_preparation_time = 0.0  # nothing to prepare: the model is already on its device
        if not self.is_in_train and (self.args.fp16_full_eval or self.args.bf16_full_eval):
            # Evaluation outside train() in half precision: the model itself is cast, as the reference does.
            self.model = self.model.to(torch.float16 if self.args.fp16_full_eval else torch.bfloat16)
        model = self.model
        was_training = model.training
        model.eval()
        losses, rows, predictions, labels, inputs = [], 0, [], [], []
        extras = self.args.include_for_metrics
        per_batch = self.args.batch_eval_metrics and self.compute_metrics is not None
        keep = not per_batch or predicting  # predict() returns every prediction even when metrics go batch by batch
        metrics = {}
        start = time.time()
        steps = 0
        for batch, last in with_last_flag(loader):
            steps += 1
            loss, logits, batch_labels = self.prediction_step(model, batch, self.args.prediction_loss_only, ignore_keys)
            size = rows_in(batch)
            rows += size
            if loss is not None:
                losses.extend([float(loss)] * self._loss_repeats(size))
            if logits is not None and self.preprocess_logits_for_metrics is not None:
                logits = self.preprocess_logits_for_metrics(logits, batch_labels)
            main = batch.get(getattr(model, "main_input_name", "input_ids")) if "inputs" in extras else None
            if per_batch:  # metrics that accumulate batch by batch; the last call returns them
                if logits is not None and batch_labels is not None:
                    extra = {"losses": loss.repeat(size) if "loss" in extras and loss is not None else None,
                             "inputs": main}
                    metrics = self.compute_metrics(EvalPrediction(logits, batch_labels, **extra),
                                                   compute_result=last)
            if keep:
                if logits is not None:
                    predictions.append(logits)
                if batch_labels is not None and not self.args.prediction_loss_only:
                    labels.append(batch_labels)
                if main is not None:
                    inputs.append(main)
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        if was_training:
            model.train()
        join = concat_batches if self.args.eval_do_concat_batches else arrays_per_batch
        predictions = join(predictions) if predictions else None
        label_ids = join(labels) if labels else None
        if self.compute_metrics is not None and predictions is not None and label_ids is not None and not per_batch:
            extra = {"inputs": concat_batches(inputs) if "inputs" in extras and inputs else None,
                     "losses": np.asarray(losses, dtype=np.float32) if "loss" in extras and losses else None}
            metrics = self.compute_metrics(EvalPrediction(predictions, label_ids, **extra))
        metrics = {k: plain_number(v) for k, v in dict(metrics or {}).items()}
        losses = np.asarray(losses, dtype=np.float32)
        if self.args.logging_nan_inf_filter and np.isfinite(losses).any():
            losses = losses[np.isfinite(losses)]  # a batch whose loss overflowed does not poison the mean
        if losses.size:
            metrics[f"{prefix}_loss"] = losses.mean().item()
        if self._model_preparation_time is not None:
            metrics[f"{prefix}_model_preparation_time"] = self._model_preparation_time
        for key in list(metrics):  # as the reference: a metric named without the prefix moves after eval_loss
            if not key.startswith(f"{prefix}_"):
                metrics[f"{prefix}_{key}"] = metrics.pop(key)
        metrics.update(speed_metrics(prefix, start, num_samples=rows, num_steps=steps))
        return PredictionOutput(predictions, label_ids, metrics)

    # -- saving and reporting --------------------------------------------------------------------------------

    def save_model(self, output_dir: str | os.PathLike | None = None, _internal_call: bool = False) -> None:
        """Write the model (and the tokenizer, when the Trainer has one) so from_pretrained reads them back;
        with push_to_hub=True, upload them too."""
        # A sharded model's full weights are gathered on the first process, which every process takes part in.
        full = distributed.full_state_dict(self.model) if self._sharded and self._wrapped is not None else None
        if self.rank == 0:
            folder = Path(output_dir or self.args.output_dir)
            ckpt.save_model(self.model, folder, full)
            if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
                self.processing_class.save_pretrained(folder)
            (folder / "training_args.json").write_text(self.args.to_json_string() + "\n")
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save")

    def create_model_card(self, language: str | None = None, license: str | None = None, tags=None,
                          model_name: str | None = None, finetuned_from: str | None = None, tasks=None,
                          dataset_tags=None, dataset=None, dataset_args=None) -> None:
        """README.md in output_dir: the model card the Hub shows (push.model_card), as run_*.py scripts end with.
        dataset_args (the dataset's configuration) is accepted as the reference's and not written."""
        if self.rank != 0:
            return
        folder = Path(self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        card = push.model_card(self.args, self.state.log_history, model_name or folder.name, language=language,
                               license=license, tags=tags, finetuned_from=finetuned_from, tasks=tasks,
                               dataset_tags=dataset_tags, dataset=dataset)
        (folder / "README.md").write_text(card, encoding="utf-8")

    def save_state(self) -> None:
        """trainer_state.json in output_dir."""
        if self.rank == 0:
            Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
            self.state.save_to_json(Path(self.args.output_dir) / "trainer_state.json")

    @staticmethod
    def metrics_format(metrics: dict) -> dict:
        """Metrics for people: runtimes as h:mm:ss.ss, total_flos in gigaflos, other floats to 4 digits."""
        formatted = {}
        for name, value in metrics.items():
            if name.endswith("_runtime"):
                formatted[name] = _hours_minutes_seconds(value)
            elif name == "total_flos":
                formatted[name] = f"{int(value) >> 30}GF"
            elif isinstance(value, float):
                formatted[name] = round(value, 4)
            else:
                formatted[name] = value
        return formatted

    def log_metrics(self, split: str, metrics: dict) -> None:
        if self.rank != 0:
            return
        print(f"***** {split} metrics *****")
        formatted = self.metrics_format(metrics)
        width = max(map(len, formatted), default=0)
        for name in sorted(formatted):
            print(f"  {name: <{width}} = {formatted[name]:>8}")

    def save_metrics(self, split: str, metrics: dict, combined: bool = True) -> None:
        """{split}_results.json in output_dir, and all_results.json gathering every split (combined=True)."""
        if self.rank != 0:
            return
        folder = Path(self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True))
        if combined:
            path = folder / "all_results.json"
            everything = json.loads(path.read_text()) if path.is_file() else {}
            everything.update(metrics)
            path.write_text(json.dumps(everything, indent=4, sort_keys=True))


# -- helpers -------------------------------------------------------------------------------------------------


# Arguments for setups the openformers Trainer does not drive (DeepSpeed, accelerate, Liger kernels, other
# trackers' options): accepted so that scripts run, and named in one warning when they are set.
UNUSED_ARGUMENTS = ("deepspeed", "accelerator_config", "parallelism_config", "use_liger_kernel",
                    "liger_kernel_config", "optim_target_modules", "enable_jit_checkpoint", "trackio_space_id",
                    "trackio_bucket_id", "trackio_static_space_id", "eval_use_gather_object")


def _warn_about_unused_arguments(args: TrainingArguments) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    unused = [name for name in UNUSED_ARGUMENTS if getattr(args, name) not in (defaults[name], None, False, "", [])]
    if unused:
        warnings.warn(
            f"TrainingArguments {', '.join(unused)} configure setups the openformers Trainer does not drive "
            "(DeepSpeed, accelerate, Liger kernels, trackers); training runs without them.", stacklevel=3,
        )


def _setup_distributed(args: TrainingArguments) -> tuple[int, int, torch.device]:
    """Rank, world size and device; joins the process group that torchrun describes in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and not args.use_cpu
    if world_size == 1:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=args.ddp_backend or ("nccl" if use_cuda else "gloo"),
                                timeout=datetime.timedelta(seconds=args.ddp_timeout))
        # Left at exit while the interpreter is whole: a group still alive during interpreter teardown can abort
        # the process ("terminate called without an active exception") after the script has finished.
        atexit.register(distributed.leave_process_group)
    return dist.get_rank(), dist.get_world_size(), device


def _default_collator(processing_class, model):
    """Pad with the tokenizer when there is one; else with the config's pad id; else stack equal-length rows."""
    if processing_class is not None and getattr(processing_class, "pad_token_id", None) is not None:
        return DataCollatorWithPadding(processing_class)
    pad_token_id = getattr(getattr(model, "config", None), "pad_token_id", None)
    return PadWithId(pad_token_id) if pad_token_id is not None else default_data_collator


def _forward_parameters(model) -> list[str] | None:
    """The argument names of model.forward, or None when it takes **kwargs (anything goes)."""
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters]


def _forward_columns(model, label_names: list[str]) -> set[str] | None:
    parameters = _forward_parameters(model)
    return None if parameters is None else set(parameters) | set(LABEL_COLUMNS) | set(label_names)


def _default_label_names(model) -> list[str]:
    parameters = _forward_parameters(model) or []
    if "start_positions" in parameters:
        return ["start_positions", "end_positions"]
    return ["labels"]


def _looks_like_norm_or_bias(name: str) -> bool:
    name = name.lower()
    return (
        "bias" in name or "layernorm" in name or "rmsnorm" in name
        or any(part == "norm" or part.endswith("_norm") for part in name.split(".")[:-1])
    )


def _is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure on any device (the messages accelerate's batch-size search looks for)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    messages = (" out of memory.", "MPS backend out of memory", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
                "DefaultCPUAllocator: can't allocate memory")
    return len(error.args) == 1 and isinstance(error.args[0], str) and any(m in error.args[0] for m in messages)


def _hours_minutes_seconds(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{seconds:05.2f}"


def _parse_optim_args(text: str | None) -> dict[str, str]:
    """optim_args "momentum=0.9, nesterov=True" as {"momentum": "0.9", "nesterov": "True"}."""
    if not text:
        return {}
    options = {}
    for pair in text.replace(" ", "").split(","):
        if "=" not in pair:
            raise ValueError(f"optim_args must be comma-separated key=value pairs; got {text!r}.")
        key, value = pair.split("=", 1)
        options[key] = value
    return options


def _takes_an_argument(function) -> bool:
    try:
        return len(inspect.signature(function).parameters) >= 1
    except (TypeError, ValueError):
        return False


def _reporter(name: str):
    if name == "tensorboard":
        return TensorBoardCallback
    raise ValueError(
        f"report_to={name!r}: openformers writes TensorBoard logs itself (report_to='tensorboard') and has no "
        f"{name} integration. Use report_to='none' and pass a TrainerCallback whose on_log sends the logs to {name}."
    )

"""Trainer: the training loop, evaluation and prediction for any model that follows the forward contract.

    trainer = Trainer(model=model, args=TrainingArguments(output_dir="out"), train_dataset=train,
                      eval_dataset=validation, processing_class=tokenizer, compute_metrics=accuracy)
    trainer.train()

The loop knows a model only through `model(**batch).loss` (and `.logits` for metrics). One optimizer
step gathers `gradient_accumulation_steps` micro-batches and weighs each micro-batch's mean loss by its
share of the label tokens, so accumulated steps update the weights as one large batch would. The data
order of each epoch comes from its own seeded generator, so a resumed run sees the same batches.
"""

import inspect
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .arguments import TrainingArguments
from .callbacks import (
    CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback, TensorBoardCallback, TrainerControl,
    TrainerState,
)
from .collators import DataCollatorWithPadding, PadWithId, default_data_collator
from .schedules import get_scheduler

LABEL_COLUMNS = ("label", "label_ids", "labels")
_LOOP_STATE = "loop_state.pth"


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) at once."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EvalPrediction:
    """What compute_metrics receives: `predictions, label_ids = eval_pred` unpacks it."""

    def __init__(self, predictions, label_ids):
        self.predictions, self.label_ids = predictions, label_ids

    def __iter__(self):
        return iter((self.predictions, self.label_ids))

    def __getitem__(self, index):
        return (self.predictions, self.label_ids)[index]


@dataclass
class TrainOutput:
    global_step: int
    training_loss: float
    metrics: dict

    def __iter__(self):
        return iter((self.global_step, self.training_loss, self.metrics))


@dataclass
class PredictionOutput:
    predictions: np.ndarray | tuple | None
    label_ids: np.ndarray | None
    metrics: dict

    def __iter__(self):
        return iter((self.predictions, self.label_ids, self.metrics))


class Trainer:
    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        preprocess_logits_for_metrics=None,
        tokenizer=None,
    ):
        if model is None:
            raise ValueError("Trainer needs a model: pass model=AutoModelFor....from_pretrained(...).")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("Got both tokenizer= and processing_class=; pass only processing_class (tokenizer is its old name).")
        self.args = args if args is not None else TrainingArguments()
        if not isinstance(self.args, TrainingArguments):
            raise TypeError(f"args must be a TrainingArguments; got {type(self.args).__name__}.")
        set_seed(self.args.seed)
        self.rank, self.world_size, self.device = _setup_distributed(self.args)
        self.model = model.to(self.device)
        if self.args.gradient_checkpointing:
            if not hasattr(model, "gradient_checkpointing_enable"):
                raise ValueError(
                    f"gradient_checkpointing=True, but {type(model).__name__} has no gradient_checkpointing_enable(); "
                    "train without it or use a model that supports it."
                )
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.data_collator = data_collator or _default_collator(self.processing_class, model)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.scaler = torch.amp.GradScaler(self.device.type) if self.args.fp16 else None
        self.label_names = self.args.label_names or _default_label_names(model)
        self._keep_columns = _forward_columns(model, self.label_names) if self.args.remove_unused_columns else None
        # A causal LM's loss at position t is against label t + 1: the first label of each row counts for nothing.
        self._shifts_labels = getattr(model, "loss_shifts_labels", False)
        self._wrapped = None
        # The reference's estimate: 6 floating-point operations per token and non-embedding parameter.
        counted = model.num_parameters(exclude_embeddings=True) if hasattr(model, "num_parameters") else 0
        self._flos_per_token = 6 * counted
        self.state = TrainerState(is_world_process_zero=self.rank == 0, is_local_process_zero=self.rank == 0)
        self.control = TrainerControl()
        reporters = [TensorBoardCallback] if "tensorboard" in self.args.report_to else []
        progress = PrinterCallback if self.args.disable_tqdm else ProgressCallback
        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, progress, *reporters, *(callbacks or [])], model, self.processing_class,
            self.optimizer, self.lr_scheduler,
        )
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)

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

    def _batches(self, dataset, batch_size: int, epoch: int | None, drop_last: bool) -> list[list[int]]:
        """The rows of each batch: shuffled by (data_seed or seed) + epoch when epoch is given, then sharded."""
        count = _length(dataset)
        if epoch is None:
            order = list(range(count))
        else:
            generator = torch.Generator().manual_seed((self.args.data_seed or self.args.seed) + epoch)
            order = torch.randperm(count, generator=generator).tolist()
        if self.world_size > 1 and epoch is not None:
            order += order[: (-len(order)) % self.world_size]  # every rank gets the same number of rows
            order = order[self.rank :: self.world_size]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        return batches

    def _loader(self, dataset, batches: list[list[int]]) -> DataLoader:
        return DataLoader(
            dataset, batch_sampler=batches, collate_fn=self._collate, num_workers=self.args.dataloader_num_workers,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(self.args.seed),
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset.")
        batches = self._batches(self.train_dataset, self.args.per_device_train_batch_size, 0, self.args.dataloader_drop_last)
        return self._loader(self.train_dataset, batches)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer.evaluate() needs an eval_dataset (given to the Trainer or to evaluate()).")
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

    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(self.model))
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            self.optimizer = torch.optim.AdamW(
                [g for g in groups if g["params"]], lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon,
                fused=self.args.optim == "adamw_torch_fused",
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return self.lr_scheduler

    # -- training --------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> TrainOutput:
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments {sorted(kwargs)}; it takes resume_from_checkpoint.")
        args = self.args
        set_seed(args.seed)
        micro_batches_per_epoch = len(self.get_train_dataloader())
        if micro_batches_per_epoch == 0:
            raise ValueError("The train_dataset is empty (or smaller than one batch with dataloader_drop_last=True).")
        steps_per_epoch = math.ceil(micro_batches_per_epoch / args.gradient_accumulation_steps)
        if args.max_steps > 0:
            max_steps, num_epochs = args.max_steps, math.ceil(args.max_steps / steps_per_epoch)
        else:
            max_steps, num_epochs = math.ceil(args.num_train_epochs * steps_per_epoch), math.ceil(args.num_train_epochs)

        self.create_optimizer()
        self.create_scheduler(max_steps)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.state = TrainerState(
            max_steps=max_steps, num_train_epochs=num_epochs, train_batch_size=args.per_device_train_batch_size,
            logging_steps=args.interval("logging_steps", max_steps), eval_steps=args.interval("eval_steps", max_steps)
            if args.eval_steps else 500, save_steps=args.interval("save_steps", max_steps),
            is_world_process_zero=self.rank == 0, is_local_process_zero=self.rank == 0,
        )
        loop = {"loss_since_log": 0.0, "last_logged_step": 0, "total_loss": 0.0}
        if resume_from_checkpoint:
            loop = self._resume(resume_from_checkpoint, loop)
        start_step = self.state.global_step
        model = self._training_model()
        model.train()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        start = time.perf_counter()
        grad_norm = None
        for epoch in range(self.state.global_step // steps_per_epoch, num_epochs):
            if self.state.global_step >= max_steps:  # resumed from the run's last checkpoint: nothing left to do
                break
            batches = self._batches(self.train_dataset, args.per_device_train_batch_size, epoch, args.dataloader_drop_last)
            done = (self.state.global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            loader = self._loader(self.train_dataset, batches[done:])
            self.callback_handler.train_dataloader = loader
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            micro_batches = iter(loader)
            while done < len(batches):
                group = [next(micro_batches) for _ in range(min(args.gradient_accumulation_steps, len(batches) - done))]
                done += len(group)
                self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
                step_loss, grad_norm = self._optimizer_step(model, group)
                loop["loss_since_log"] += step_loss
                loop["total_loss"] += step_loss
                self.state.global_step += 1
                self.state.epoch = epoch + done / len(batches)
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
            ckpt.load_model_weights(self.model, Path(self.state.best_model_checkpoint))
        runtime = time.perf_counter() - start
        steps_run = max(self.state.global_step - start_step, 1)
        train_loss = loop["total_loss"] / steps_run
        rows = max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * self.world_size
        metrics = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(rows / runtime, 3),
            "train_steps_per_second": round(max_steps / runtime, 3),
            "total_flos": self.state.total_flos,
            "train_loss": train_loss,
        }
        self.log(dict(metrics))
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _training_model(self):
        if self._wrapped is None:
            model = self.model
            if self.world_size > 1:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
            if self.args.torch_compile:
                model = torch.compile(model)
            self._wrapped = model
        return self._wrapped

    def _label_count(self, batch: dict) -> int | None:
        labels = batch.get("labels")
        if not isinstance(labels, torch.Tensor):
            return None
        if self._shifts_labels and labels.dim() > 1:
            labels = labels[..., 1:]
        return int(labels.ne(-100).sum()) if not labels.is_floating_point() else labels.numel()

    def _optimizer_step(self, model, group: list[dict]) -> tuple[float, float | None]:
        """Forward and backward over the micro-batches of one step, then clip, step and schedule."""
        counts = [self._label_count(batch) for batch in group]
        self.state.total_flos += self._flos_per_token * float(sum(b["input_ids"].numel() for b in group if "input_ids" in b))
        if None in counts:
            weights = [1 / (len(group) * self.world_size)] * len(group)
        else:
            total = torch.tensor(float(sum(counts)))
            if self.world_size > 1:
                dist.all_reduce(total)
            weights = [count / max(total.item(), 1.0) for count in counts]
        step_loss = torch.zeros((), device=self.device)
        for index, (batch, weight) in enumerate(zip(group, weights)):
            batch = _to_device(batch, self.device)
            last = index == len(group) - 1
            sync = nullcontext() if last or self.world_size == 1 else model.no_sync()
            with sync:
                with self._autocast():
                    loss = self.compute_loss(model, batch)
                scaled = loss * (weight * self.world_size)  # DDP averages gradients over ranks
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            step_loss += loss.detach().float() * weight
            if not last:
                self.control = self.callback_handler.on_substep_end(self.args, self.state, self.control)
        if self.world_size > 1:
            dist.all_reduce(step_loss)  # the step's loss over the whole global batch
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.args.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm))
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        self._last_lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step used, which is what gets logged
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(step_loss), grad_norm

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """The model's mean loss over the batch (override to train with another loss)."""
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, dict) else getattr(outputs, "loss", None)
        if loss is None:
            raise ValueError(
                f"{type(self.model).__name__} returned no loss for a batch with keys {sorted(inputs)}. The batches "
                "need labels: a `label`/`labels` column, or a collator that makes them (DataCollatorForLanguageModeling)."
            )
        return (loss, outputs) if return_outputs else loss

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
            metrics = self.evaluate()
            is_best = self._update_best_metric(metrics)
            if self.args.save_strategy == "best":
                control.should_save = is_best
            control.should_evaluate = False
        if control.should_save:
            self._save_checkpoint(loop)
            self.control = self.callback_handler.on_save(self.args, state, self.control)
            self.control.should_save = False

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
        if self.rank == 0:
            folder = Path(self.args.output_dir) / f"{ckpt.PREFIX}-{self.state.global_step}"
            if self.state.best_global_step == self.state.global_step:
                self.state.best_model_checkpoint = str(folder)
            ckpt.save_checkpoint(
                self.args.output_dir, self.state.global_step, self.model, self.optimizer, self.lr_scheduler,
                self.state, self.args, self.scaler, extra={_LOOP_STATE: loop},
            )
            ckpt.rotate_checkpoints(self.args.output_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        if self.world_size > 1:
            dist.barrier()

    def _resume(self, resume_from_checkpoint, loop: dict) -> dict:
        folder = resume_from_checkpoint
        if folder is True:
            folder = ckpt.latest_checkpoint(self.args.output_dir)
            if folder is None:
                raise FileNotFoundError(
                    f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete checkpoint-N folder."
                )
        folder = Path(folder)
        saved_state = ckpt.load_checkpoint(folder, self.model, self.optimizer, self.lr_scheduler, self.scaler)
        for name in ("max_steps", "logging_steps", "eval_steps", "save_steps", "num_train_epochs", "train_batch_size"):
            setattr(saved_state, name, getattr(self.state, name))  # the arguments of this run decide these
        saved_state.is_world_process_zero = saved_state.is_local_process_zero = self.rank == 0
        self.state = saved_state
        extra = ckpt.load_extra(folder, _LOOP_STATE)
        rng = ckpt.load_rng_states(folder)
        if rng is not None:
            ckpt.set_rng_states(rng)
        return extra if extra is not None else dict(loop, last_logged_step=self.state.global_step)

    def log(self, logs: dict) -> None:
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs=logs)

    # -- evaluation and prediction ---------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            metrics = {}
            for name, part in dataset.items():
                metrics.update(self.evaluate(part, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        output = self._prediction_loop(dataset, metric_key_prefix, "evaluation")
        self.log(dict(output.metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        output = self._prediction_loop(test_dataset, metric_key_prefix, "prediction")
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics=output.metrics)
        return output

    def _prediction_loop(self, dataset, prefix: str, description: str) -> PredictionOutput:
        loader = self.get_eval_dataloader(dataset)
        self.callback_handler.eval_dataloader = loader
        model = self.model
        was_training = model.training
        model.eval()
        keep_outputs = not self.args.prediction_loss_only
        losses, rows, predictions, labels = [], 0, [], []
        start = time.perf_counter()
        with torch.no_grad():
            for batch in loader:
                batch = _to_device(batch, self.device)
                with self._autocast():
                    outputs = model(**batch)
                size = next(iter(batch.values())).shape[0]
                rows += size
                if getattr(outputs, "loss", None) is not None:
                    losses.append(float(outputs.loss) * size)
                if keep_outputs:
                    logits = _predictions_of(outputs)
                    if self.preprocess_logits_for_metrics is not None:
                        logits = self.preprocess_logits_for_metrics(logits, batch.get("labels"))
                    predictions.append(logits)
                    found = [batch[name] for name in self.label_names if name in batch]
                    if found:
                        labels.append(found[0] if len(found) == 1 else tuple(found))
                self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        if was_training:
            model.train()
        runtime = time.perf_counter() - start
        predictions = _concat(predictions) if predictions else None
        label_ids = _concat(labels) if labels else None
        metrics = {}
        if self.compute_metrics is not None and predictions is not None and label_ids is not None:
            metrics = dict(self.compute_metrics(EvalPrediction(predictions, label_ids)))
        if losses:
            metrics["loss"] = sum(losses) / rows
        metrics = {k if k.startswith(f"{prefix}_") else f"{prefix}_{k}": v for k, v in metrics.items()}
        metrics[f"{prefix}_runtime"] = round(runtime, 4)
        metrics[f"{prefix}_samples_per_second"] = round(rows / runtime, 3)
        metrics[f"{prefix}_steps_per_second"] = round(len(loader) / runtime, 3)
        return PredictionOutput(predictions, label_ids, metrics)

    # -- saving ----------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | os.PathLike | None = None) -> None:
        """Write the model (and the tokenizer, when the Trainer has one) so from_pretrained reads them back."""
        if self.rank != 0:
            return
        folder = Path(output_dir or self.args.output_dir)
        ckpt.save_model(self.model, folder)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(folder)


# -- helpers -------------------------------------------------------------------------------------------------


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
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
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


def _length(dataset) -> int:
    try:
        return len(dataset)
    except TypeError as error:
        raise TypeError(
            f"The Trainer needs a dataset with a length (a datasets.Dataset, a list of dicts or a map-style "
            f"torch Dataset); got {type(dataset).__name__}."
        ) from error


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _predictions_of(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    for names in (("logits",), ("start_logits", "end_logits")):
        values = [getattr(outputs, n, None) for n in names]
        if all(v is not None for v in values):
            return values[0].detach() if len(values) == 1 else tuple(v.detach() for v in values)
    raise ValueError(f"{type(outputs).__name__} has no logits to predict with; set prediction_loss_only=True.")


def _concat(parts: list):
    """Join per-batch tensors into one NumPy array, padding the second axis with -100 where lengths differ."""
    if isinstance(parts[0], tuple):
        return tuple(_concat([part[i] for part in parts]) for i in range(len(parts[0])))
    parts = [p.float() if p.is_floating_point() else p for p in parts]
    if parts[0].dim() > 1 and len({p.shape[1] for p in parts}) > 1:
        width = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1]), value=-100) for p in parts]
    return torch.cat([p.cpu() for p in parts]).numpy()

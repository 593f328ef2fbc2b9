"""Fine-tuning: TrainingArguments, the Trainer, collators, schedules, optimizers, callbacks and checkpoints."""

from .arguments import IntervalStrategy, OptimizerNames, ParallelMode, TrainingArguments
from .callbacks import (
    CallbackHandler, DefaultFlowCallback, EarlyStoppingCallback, ExportableState, PrinterCallback, ProgressCallback,
    TensorBoardCallback, TrainerCallback, TrainerControl, TrainerState,
)
from .checkpoint import get_last_checkpoint
from .collators import (
    DataCollator, DataCollatorForLanguageModeling, DataCollatorForMultipleChoice, DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification, DataCollatorWithFlattening, DataCollatorWithPadding, DefaultDataCollator,
    default_data_collator,
)
from .hpsearch import BestRun, HPSearchBackend, default_compute_objective, default_hp_space_optuna
from .optimizers import Adafactor, AdafactorSchedule, get_adafactor_schedule
from .seq2seq import Seq2SeqTrainer, Seq2SeqTrainingArguments
from .schedules import (
    GreedyLR, SchedulerType, get_constant_schedule, get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup, get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_greedy_schedule, get_inverse_sqrt_schedule, get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup, get_reduce_on_plateau_schedule, get_scheduler, get_wsd_schedule,
)
from .trainer import (
    EvalLoopOutput, EvalPrediction, PredictionOutput, Trainer, TrainOutput, denumpify_detensorize,
    enable_full_determinism, is_main_process, seed_worker, set_seed, speed_metrics,
)

__all__ = [
    "Adafactor", "AdafactorSchedule", "BestRun", "CallbackHandler", "DataCollator", "DataCollatorForLanguageModeling",
    "DataCollatorForMultipleChoice", "DataCollatorForSeq2Seq", "DataCollatorForTokenClassification",
    "DataCollatorWithFlattening", "DataCollatorWithPadding", "DefaultDataCollator", "DefaultFlowCallback",
    "EarlyStoppingCallback", "EvalLoopOutput", "EvalPrediction", "ExportableState", "GreedyLR", "HPSearchBackend",
    "IntervalStrategy",
    "OptimizerNames", "ParallelMode", "PredictionOutput",
    "PrinterCallback", "ProgressCallback", "SchedulerType", "Seq2SeqTrainer", "Seq2SeqTrainingArguments",
    "TensorBoardCallback", "Trainer", "TrainerCallback",
    "TrainerControl", "TrainerState", "TrainOutput", "TrainingArguments", "default_compute_objective",
    "default_data_collator", "default_hp_space_optuna",
    "denumpify_detensorize", "enable_full_determinism", "get_adafactor_schedule", "get_last_checkpoint",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup", "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup", "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_greedy_schedule", "get_inverse_sqrt_schedule", "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule", "get_scheduler", "get_wsd_schedule", "is_main_process", "seed_worker",
    "set_seed", "speed_metrics",
]

"""Fine-tuning: TrainingArguments, the Trainer, collators, schedules, callbacks and checkpoints."""

from .arguments import TrainingArguments
from .callbacks import (
    DefaultFlowCallback, EarlyStoppingCallback, PrinterCallback, ProgressCallback, TensorBoardCallback,
    TrainerCallback, TrainerControl, TrainerState,
)
from .collators import (
    DataCollatorForLanguageModeling, DataCollatorForTokenClassification, DataCollatorWithPadding,
    default_data_collator,
)
from .schedules import get_scheduler
from .trainer import EvalPrediction, PredictionOutput, Trainer, TrainOutput, set_seed

__all__ = [
    "DataCollatorForLanguageModeling", "DataCollatorForTokenClassification", "DataCollatorWithPadding",
    "DefaultFlowCallback", "EarlyStoppingCallback", "EvalPrediction", "PredictionOutput", "PrinterCallback",
    "ProgressCallback", "TensorBoardCallback", "Trainer", "TrainerCallback", "TrainerControl", "TrainerState",
    "TrainOutput", "TrainingArguments", "default_data_collator", "get_scheduler", "set_seed",
]

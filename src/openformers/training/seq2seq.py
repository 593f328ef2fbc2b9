"""Seq2SeqTrainer and Seq2SeqTrainingArguments: the Trainer for encoder-decoders (BART, T5), which can evaluate and
predict with `generate` (`predict_with_generate=True`) so that metrics such as ROUGE or BLEU see generated text.

    args = Seq2SeqTrainingArguments("out", predict_with_generate=True, generation_max_length=64)
    trainer = Seq2SeqTrainer(model, args, train_dataset=..., eval_dataset=..., data_collator=DataCollatorForSeq2Seq(
        tokenizer, model=model), compute_metrics=...)
    trainer.evaluate(num_beams=4)                 # generate's options for this call; the arguments' otherwise

With predict_with_generate, each evaluation batch's predictions are the generated ids padded to the generation
config's length with the tokenizer's pad id (its EOS id when it has none), and so are its labels, as the reference
pads them, so every batch has the same width; the loss is still the teacher-forced loss on the labels.
"""

import copy
import dataclasses
import os
import warnings
from pathlib import Path

import torch

from ..generation.config import GenerationConfig
from .arguments import TrainingArguments
from .batching import to_device
from .losses import label_smoothed_loss
from .trainer import Trainer


@dataclasses.dataclass
class Seq2SeqTrainingArguments(TrainingArguments):
    """TrainingArguments, plus how evaluation generates when `predict_with_generate` is set.

    generation_max_length and generation_num_beams are the `max_length` and `num_beams` of evaluate() and
    predict() when the call does not give them; generation_config (a GenerationConfig, a folder or file holding
    one, or a Hub id) replaces the model's. sortish_sampler is accepted as in the reference, whose
    Seq2SeqTrainer does not use it either.
    """

    sortish_sampler: bool = False
    predict_with_generate: bool = False
    generation_max_length: int | None = None
    generation_num_beams: int | None = None
    generation_config: str | os.PathLike | GenerationConfig | None = None

    def to_dict(self) -> dict:
        """As TrainingArguments.to_dict, with a GenerationConfig as its dict (training_args.json stays JSON)."""
        return {k: v.to_dict() if isinstance(v, GenerationConfig) else v for k, v in super().to_dict().items()}


class Seq2SeqTrainer(Trainer):
    """The Trainer, whose evaluate() and predict() generate when `args.predict_with_generate` is set (see the
    module's docstring); they take generate's options as keyword arguments (max_length, num_beams, ...)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "sortish_sampler", False):
            warnings.warn("sortish_sampler=True is not used (nor is it by the reference's Seq2SeqTrainer); batches are "
                          "drawn as the other arguments say (group_by_length=True groups rows of similar length).",
                          stacklevel=2)
        if getattr(self.args, "generation_config", None) is not None:
            self.model.generation_config = self.load_generation_config(self.args.generation_config)
        self._gen_kwargs = {}

    @staticmethod
    def load_generation_config(gen_config_arg: str | os.PathLike | GenerationConfig) -> GenerationConfig:
        """A copy of the GenerationConfig given, or the one read from a generation_config.json file, a folder
        holding one, or a Hub id; refused when the strategy it names would ignore some of its options."""
        if isinstance(gen_config_arg, GenerationConfig):
            config = copy.deepcopy(gen_config_arg)
        else:
            path = Path(gen_config_arg)
            if path.is_file():
                config = GenerationConfig.from_pretrained(path.parent, path.name)
            else:
                config = GenerationConfig.from_pretrained(path if path.is_dir() else gen_config_arg)
        try:
            config.validate(strict=True)
        except ValueError as error:
            raise ValueError(f"{error}\n\nFix these issues in Seq2SeqTrainingArguments.generation_config to train "
                             "your model.") from None
        return config

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs) -> dict:
        """Trainer.evaluate; with predict_with_generate, the predictions are generated with these options (by
        default the arguments' generation_max_length and generation_num_beams)."""
        self._gen_kwargs = self._generation_options(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test", **gen_kwargs):
        """Trainer.predict; with predict_with_generate, `predictions` are the generated ids (see evaluate)."""
        self._gen_kwargs = self._generation_options(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _loss_repeats(self, rows: int) -> int:
        """Every batch's loss counts eval_batch_size times, a short last batch too: the reference's Seq2SeqTrainer
        gathers without dropping the rows its loop adds, so eval_loss is the mean of the batches' losses."""
        return self.args.eval_batch_size

    def _generation_options(self, gen_kwargs: dict) -> dict:
        """The call's generate options, with the arguments' length and beams where the call sets neither."""
        options = dict(gen_kwargs)
        max_length, num_beams = (getattr(self.args, name, None) for name in ("generation_max_length",
                                                                              "generation_num_beams"))
        if options.get("max_length") is None and options.get("max_new_tokens") is None and max_length is not None:
            options["max_length"] = max_length
        if options.get("num_beams") is None and num_beams is not None:
            options["num_beams"] = num_beams
        return options

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None, **gen_kwargs):
        """(loss, generated ids, labels) of one batch with predict_with_generate, both padded to the generation
        length; Trainer.prediction_step's (loss, logits, labels) without it."""
        if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = to_device(inputs, self.device)
        options = dict(gen_kwargs or self._gen_kwargs)
        for name in ("num_beams", "max_length"):
            if name in options and options[name] is None:
                del options[name]
        generation_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        decoder_inputs = inputs.get("decoder_input_ids")
        if "labels" in inputs and decoder_inputs is not None and decoder_inputs.shape == inputs["labels"].shape:
            # decoder inputs the collator made from the labels: generation starts afresh, not from them
            generation_inputs.pop("decoder_input_ids")
            generation_inputs.pop("decoder_attention_mask", None)
        with torch.no_grad():
            generated = model.generate(**generation_inputs, **options)
        generated = self._padded_to_generation_length(generated, model)
        loss = None
        if "labels" in inputs:  # the model's own loss on this batch, as the reference takes it here
            with torch.no_grad(), self._autocast():
                outputs = model(**inputs)
                if self._label_smoothing:
                    loss = label_smoothed_loss(outputs, inputs["labels"], self._label_smoothing)
                else:
                    loss = self._loss_of(outputs, inputs)
            loss = loss.detach().mean()
        if self.args.prediction_loss_only:
            return loss, None, None
        labels = inputs.get("labels")
        return loss, generated, None if labels is None else self._padded_to_generation_length(labels, model)

    def _padded_to_generation_length(self, tensor: torch.Tensor, model) -> torch.Tensor:
        """Ids narrower than the model's generation max_length (its default when unset) padded to it, else to
        max_new_tokens + 1 when that is set and they are narrower, as the reference pads them."""
        config = model.generation_config.resolved()
        width = tensor.shape[-1]
        if width < config.max_length:
            return self._pad_tensors_to_max_len(tensor, config.max_length)
        if config.max_new_tokens is not None and width < config.max_new_tokens + 1:
            return self._pad_tensors_to_max_len(tensor, config.max_new_tokens + 1)
        return tensor

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int) -> torch.Tensor:
        """`tensor` (B, T) padded on the right to max_length with the tokenizer's pad id (else its EOS id), else the
        model config's pad id."""
        tokenizer = self.processing_class
        if tokenizer is not None and hasattr(tokenizer, "pad_token_id"):
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        else:
            pad_id = getattr(getattr(self.model, "config", None), "pad_token_id", None)
            if pad_id is None:
                raise ValueError("Padding generated ids needs a pad id: pass processing_class=tokenizer to the "
                                 "Seq2SeqTrainer, or set model.config.pad_token_id.")
        padded = tensor.new_full((tensor.shape[0], max_length), pad_id)
        padded[:, : tensor.shape[-1]] = tensor
        return padded

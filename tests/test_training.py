"""The Trainer on tiny models: parity with the reference's Trainer, accumulation, checkpoints and exact resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

from openformers import (
    EarlyStoppingCallback, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments,
)
from openformers.training import checkpoint as ckpt
from openformers.training.collators import pad_batch

TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)

# A classifier small enough to train in milliseconds, with dropout so the random number states matter on resume.
TINY_CLASSIFIER = textwrap.dedent('''
    from types import SimpleNamespace

    import torch
    from torch import nn
    from openformers.models.outputs import CausalLMOutput

    class TinyClassifier(nn.Module):
        def __init__(self, vocab=40, width=16, labels=2):
            super().__init__()
            self.config = SimpleNamespace(pad_token_id=0)  # what the Trainer's default collator pads with
            self.embed = nn.Embedding(vocab, width)
            self.norm = nn.LayerNorm(width)
            self.dropout = nn.Dropout(0.2)
            self.score = nn.Linear(width, labels)

        def forward(self, input_ids, attention_mask=None, labels=None):
            mask = attention_mask.unsqueeze(-1).float() if attention_mask is not None else 1.0
            pooled = (self.embed(input_ids) * mask).sum(1) / (mask.sum(1) if attention_mask is not None else input_ids.shape[1])
            logits = self.score(self.dropout(self.norm(pooled)))
            loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
            return CausalLMOutput(loss=loss, logits=logits)

    def make_model(seed=0):
        torch.manual_seed(seed)
        return TinyClassifier()

    def make_rows(count=24, seed=1):
        generator = torch.Generator().manual_seed(seed)
        rows = []
        for _ in range(count):
            length = int(torch.randint(2, 9, (1,), generator=generator))
            ids = torch.randint(1, 40, (length,), generator=generator).tolist()
            rows.append({"input_ids": ids, "label": int(sum(ids) % 2), "text": "unused"})
        return rows
''')
exec(TINY_CLASSIFIER)  # defines TinyClassifier, make_model, make_rows here as in the resume subprocess


def _pad_collator(features):
    return pad_batch(features, 0)


def _tiny_reference_llama(folder: Path):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    model.save_pretrained(folder)
    return model


def _lm_rows(count, seed=1, lengths=(8, 8)):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=generator))
        ids = torch.randint(1, 64, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def _losses(history):
    return [entry["loss"] for entry in history if "loss" in entry]


def test_loss_curve_and_weights_match_the_reference_trainer(tmp_path):
    reference_model = _tiny_reference_llama(tmp_path / "model")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "model")
    rows = _lm_rows(16)
    # One batch holds every row, so the reference's own shuffling cannot change what a step sees.
    common = dict(learning_rate=1e-2, warmup_steps=2, weight_decay=0.1, max_grad_norm=0.5, max_steps=6,
                  per_device_train_batch_size=16, logging_steps=1, save_strategy="no", lr_scheduler_type="cosine",
                  use_cpu=True, disable_tqdm=True)
    reference = transformers.Trainer(
        model=reference_model, args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **common),
        train_dataset=rows,
    )
    reference.train()
    ours = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "ours"), **common), train_dataset=rows)
    result = ours.train()

    expected = [e for e in reference.state.log_history if "loss" in e]
    got = [e for e in ours.state.log_history if "loss" in e]
    for key in ("loss", "grad_norm", "learning_rate", "epoch", "step"):
        assert [e[key] for e in got] == pytest.approx([e[key] for e in expected], rel=1e-4), key
    assert result.training_loss == pytest.approx(reference.state.log_history[-1]["train_loss"], rel=1e-5)
    assert ours.state.total_flos == reference.state.total_flos
    reference_weights = reference_model.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference_weights[name], rtol=1e-4, atol=1e-5)


def _tiny_causal_lm(family):
    from openformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if family == "gpt2":  # no dropout, so that both runs compute the same numbers
        config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, pad_token_id=0,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel.from_config(config)
    return LlamaForCausalLM.from_config(transformers_free_config())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_accumulated_micro_batches_update_like_one_large_batch(tmp_path, family):
    rows = _lm_rows(8, lengths=(3, 12))  # unequal label counts: each micro-batch weighs by its share of tokens
    weights = []
    for batch_size, steps in ((8, 1), (2, 4)):
        model = _tiny_causal_lm(family)
        args = TrainingArguments(output_dir=str(tmp_path / f"b{batch_size}"), per_device_train_batch_size=batch_size,
                                 gradient_accumulation_steps=steps, max_steps=1, learning_rate=1e-1,
                                 logging_steps=1, save_strategy="no", disable_tqdm=True, optim="sgd")
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=_pad_collator)
        trainer.train()
        weights.append((model.state_dict(), _losses(trainer.state.log_history)))
    (large, large_loss), (small, small_loss) = weights
    assert small_loss == pytest.approx(large_loss, rel=1e-5)
    # SGD moves each weight by its gradient, so the weights compare the gradients themselves (Adam would blow
    # the rounding of a gradient near 0 up to a full step).
    for name, value in large.items():
        torch.testing.assert_close(small[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path, family):
    rows = _lm_rows(8, lengths=(3, 12))
    results = []
    for checkpointing in (False, True):
        model = _tiny_causal_lm(family)
        args = TrainingArguments(output_dir=str(tmp_path / str(checkpointing)), per_device_train_batch_size=4,
                                 max_steps=2, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                                 disable_tqdm=True, gradient_checkpointing=checkpointing)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=_pad_collator)
        assert model.is_gradient_checkpointing == checkpointing
        trainer.train()
        results.append((model.state_dict(), _losses(trainer.state.log_history)))
    (plain, plain_losses), (checkpointed, checkpointed_losses) = results
    assert checkpointed_losses == pytest.approx(plain_losses, rel=1e-6)
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, rtol=1e-5, atol=1e-6)


def transformers_free_config():
    from openformers import LlamaConfig

    return LlamaConfig(**TINY_LLAMA)


def _classifier_args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=4, per_device_eval_batch_size=8,
                  num_train_epochs=3, learning_rate=5e-2, logging_steps=1, save_steps=4, seed=7,
                  disable_tqdm=True)
    return TrainingArguments(**{**values, **overrides})


RESUME_SCRIPT = TINY_CLASSIFIER + textwrap.dedent('''
    import os, signal, sys
    from openformers import Trainer, TrainerCallback, TrainingArguments

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:  # two steps past checkpoint-4, mid-epoch
                os.kill(os.getpid(), signal.SIGKILL)

    args = TrainingArguments(output_dir=sys.argv[1], per_device_train_batch_size=4, per_device_eval_batch_size=8,
                             num_train_epochs=3, learning_rate=5e-2, logging_steps=1, save_steps=4, seed=7,
                             disable_tqdm=True)
    Trainer(model=make_model(), args=args, train_dataset=make_rows(), callbacks=[Crash]).train()
''')


def test_resume_after_sigkill_continues_the_same_run(tmp_path):
    full_model = make_model()
    full = Trainer(model=full_model, args=_classifier_args(tmp_path / "full"), train_dataset=make_rows())
    full_output = full.train()

    script = tmp_path / "crash.py"
    script.write_text(RESUME_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "crashed")], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert [p.name for p in ckpt.checkpoint_folders(tmp_path / "crashed")] == ["checkpoint-4"]

    resumed_model = make_model(seed=123)  # different initial weights: the checkpoint must replace them
    resumed = Trainer(model=resumed_model, args=_classifier_args(tmp_path / "crashed"), train_dataset=make_rows())
    resumed_output = resumed.train(resume_from_checkpoint=True)

    assert _losses(resumed.state.log_history) == _losses(full.state.log_history)
    # train_loss is the mean over all 18 steps, those before the crash included (read from the checkpoint)
    assert resumed_output.training_loss == pytest.approx(full_output.training_loss, abs=1e-6)
    assert resumed_output.metrics["train_loss"] == pytest.approx(full_output.metrics["train_loss"], abs=1e-6)
    assert resumed.state.global_step == full.state.global_step == 18
    for name, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], value), name


def test_checkpoints_are_rotated_and_never_half_written(tmp_path, monkeypatch):
    args = _classifier_args(tmp_path, save_steps=2, save_total_limit=2, num_train_epochs=1)
    trainer = Trainer(model=make_model(), args=args, train_dataset=make_rows(), data_collator=_pad_collator)
    trainer.train()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-4", "checkpoint-6"]
    files = {p.name for p in (tmp_path / "checkpoint-6").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= files
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and len(_losses(state["log_history"])) == 6

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.TrainerState, "save_to_json", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 8, trainer.model, trainer.optimizer, trainer.lr_scheduler, trainer.state, args)
    assert not (tmp_path / "checkpoint-8").exists()
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-6"


def test_a_crash_while_a_checkpoint_is_replaced_or_rotated_never_leaves_a_broken_one(tmp_path, monkeypatch):
    args = _classifier_args(tmp_path, save_steps=2, save_total_limit=2, num_train_epochs=1)
    trainer = Trainer(model=make_model(), args=args, train_dataset=make_rows(), data_collator=_pad_collator)
    trainer.train()
    saved = (tmp_path / "checkpoint-6" / "model.safetensors").read_bytes()
    renames = []

    def crash_after_the_first_rename(source, target):
        renames.append((source, target))
        if len(renames) == 2:  # checkpoint-6 is aside, its successor not yet in place
            raise KeyboardInterrupt
        os.rename(source, target)

    monkeypatch.setattr(ckpt.os, "replace", crash_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):  # checkpoint-6 saved again, as after a rewind
        ckpt.save_checkpoint(tmp_path, 6, trainer.model, trainer.optimizer, trainer.lr_scheduler, trainer.state, args)
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint-6").exists()
    (tmp_path / ".tmp-deleted-checkpoint-2").mkdir()  # as a crash in the middle of a rotation leaves it
    (tmp_path / ".tmp-deleted-checkpoint-2" / "optimizer.pt").write_bytes(b"half")

    resumed = Trainer(model=make_model(seed=3), args=args, train_dataset=make_rows(), data_collator=_pad_collator)
    resumed.train(resume_from_checkpoint=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert (tmp_path / "checkpoint-6" / "model.safetensors").read_bytes() == saved
    assert resumed.state.global_step == 6


def test_resume_skips_a_checkpoint_folder_without_its_completeness_marker(tmp_path):
    """trainer_state.json is written last, inside the temporary folder: a checkpoint-N without it (copied in part,
    or left by another tool) is not complete, and resuming takes the newest complete one."""
    args = _classifier_args(tmp_path, save_steps=2, num_train_epochs=1)
    trainer = Trainer(model=make_model(), args=args, train_dataset=make_rows(), data_collator=_pad_collator)
    trainer.train()
    incomplete = tmp_path / "checkpoint-8"
    shutil.copytree(tmp_path / "checkpoint-6", incomplete)
    (incomplete / "trainer_state.json").unlink()
    (incomplete / "model.safetensors").write_bytes(b"cut")
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-6"
    resumed = Trainer(model=make_model(seed=3), args=args, train_dataset=make_rows(), data_collator=_pad_collator)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    with pytest.raises(FileNotFoundError, match=r"checkpoint-8 is not a complete checkpoint \(no trainer_state"):
        Trainer(model=make_model(), args=args, train_dataset=make_rows(),
                data_collator=_pad_collator).train(resume_from_checkpoint=str(incomplete))


def test_best_model_is_loaded_at_the_end_and_metrics_are_computed(tmp_path):
    def accuracy(eval_pred):
        logits, labels = eval_pred
        return {"accuracy": float((logits.argmax(-1) == labels).mean())}

    args = _classifier_args(tmp_path, eval_strategy="steps", eval_steps=2, save_steps=2, save_total_limit=1,
                            load_best_model_at_end=True, metric_for_best_model="accuracy")
    model = make_model()
    trainer = Trainer(model=model, args=args, train_dataset=make_rows(), eval_dataset=make_rows(16, seed=2),
                      data_collator=_pad_collator, compute_metrics=accuracy)
    trainer.train()
    evaluations = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert len(evaluations) == 9 and all("eval_loss" in e for e in evaluations)
    best = max(evaluations, key=lambda e: e["eval_accuracy"])
    assert trainer.state.best_metric == best["eval_accuracy"]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    assert Path(trainer.state.best_model_checkpoint).is_dir()  # rotation keeps the best one
    kept = Trainer(model=make_model(seed=5), args=_classifier_args(tmp_path / "x"), data_collator=_pad_collator)
    ckpt.load_model_weights(kept.model, Path(trainer.state.best_model_checkpoint))
    for name, value in kept.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)
    assert trainer.evaluate()["eval_accuracy"] == best["eval_accuracy"]


def test_early_stopping_stops_when_the_metric_stalls(tmp_path):
    args = _classifier_args(tmp_path, learning_rate=0.0, eval_strategy="steps", eval_steps=1, save_strategy="no",
                            metric_for_best_model="loss")
    trainer = Trainer(model=make_model(), args=args, train_dataset=make_rows(), eval_dataset=make_rows(8, seed=2),
                      data_collator=_pad_collator, callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    assert trainer.state.global_step == 3


def test_evaluate_on_several_datasets_and_predict(tmp_path):
    trainer = Trainer(model=make_model(), args=_classifier_args(tmp_path), data_collator=_pad_collator,
                      eval_dataset={"a": make_rows(5, seed=3), "b": make_rows(7, seed=4)})
    metrics = trainer.evaluate()
    assert {"eval_a_loss", "eval_b_loss", "eval_a_runtime"} <= set(metrics)
    prediction = trainer.predict(make_rows(10, seed=5))
    assert prediction.predictions.shape == (10, 2) and prediction.label_ids.shape == (10,)
    assert "test_loss" in prediction.metrics


def test_callbacks_see_the_reference_events_in_order(tmp_path):
    seen = []

    class Recorder(TrainerCallback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                seen.append(name)
            return object.__getattribute__(self, name)

    args = _classifier_args(tmp_path, max_steps=2, gradient_accumulation_steps=2, save_strategy="no")
    Trainer(model=make_model(), args=args, train_dataset=make_rows(), data_collator=_pad_collator,
            callbacks=[Recorder()]).train()
    assert seen[:2] == ["on_init_end", "on_train_begin"]
    assert seen[2:9] == ["on_epoch_begin", "on_step_begin", "on_substep_end", "on_pre_optimizer_step",
                         "on_optimizer_step", "on_step_end", "on_log"]
    assert seen[-1] == "on_train_end"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_defaults_without_a_collator(tmp_path, precision):
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_config(transformers_free_config())  # its config has pad_token_id=0
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-2, logging_steps=1, save_strategy="no", disable_tqdm=True,
                             **{precision: True})  # float16 on the CPU too, with a gradient scaler
    rows = _lm_rows(12, lengths=(4, 8))
    trainer = Trainer(model=model, args=args, train_dataset=rows)  # pads with the config's pad id, labels with -100
    losses = _losses(trainer.train() and trainer.state.log_history)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert model.dtype == torch.float32


def test_loader_workers_give_the_same_run(tmp_path):
    histories = []
    for workers in (0, 2):
        args = _classifier_args(tmp_path / str(workers), max_steps=4, save_strategy="no",
                                dataloader_num_workers=workers)
        trainer = Trainer(model=make_model(), args=args, train_dataset=make_rows(), eval_dataset=make_rows(6, seed=2))
        trainer.train()
        histories.append((_losses(trainer.state.log_history), trainer.evaluate()["eval_loss"]))
    assert histories[1] == histories[0]


def test_tensorboard_receives_the_logged_scalars(tmp_path, monkeypatch):
    import types

    written = []

    class SummaryWriter:  # stands in for torch.utils.tensorboard's, which needs the tensorboard package
        def __init__(self, log_dir):
            written.append(("log_dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    args = _classifier_args(tmp_path, max_steps=2, save_strategy="no", report_to="tensorboard", eval_strategy="steps",
                            eval_steps=2)
    Trainer(model=make_model(), args=args, train_dataset=make_rows(), eval_dataset=make_rows(6, seed=2)).train()
    assert written[0] == ("log_dir", f"{tmp_path}/runs") and written[-1] == ("closed",)
    assert {("train/loss", 1), ("train/learning_rate", 2), ("eval/loss", 2)} <= set(written)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        Trainer(model=make_model(), args=args, train_dataset=make_rows(), eval_dataset=make_rows(6, seed=2))


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = _classifier_args(tmp_path, max_steps=2, save_strategy="no", report_to="tensorboard", eval_strategy="steps",
                            eval_steps=2, logging_steps=1)
    Trainer(model=make_model(), args=args, train_dataset=make_rows(), eval_dataset=make_rows(6, seed=2)).train()
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2]
    assert [event.step for event in events.Scalars("eval/loss")] == [2]


def test_errors_name_the_problem(tmp_path):
    rows = [{"text": "no ids here", "label": 0}] * 4
    trainer = Trainer(model=make_model(), args=_classifier_args(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="No column of the dataset"):
        trainer.train()
    trainer = Trainer(model=make_model(), args=_classifier_args(tmp_path), train_dataset=make_rows())
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        trainer.train(trail=None)  # a misspelt trial=
    unlabeled = [{"input_ids": [1, 2, 3]}] * 4
    trainer = Trainer(model=make_model(), args=_classifier_args(tmp_path), train_dataset=unlabeled,
                      data_collator=_pad_collator)
    with pytest.raises(ValueError, match="returned no loss"):
        trainer.train()
    with pytest.raises(ValueError, match="gradient_checkpointing_enable"):
        Trainer(model=make_model(), args=_classifier_args(tmp_path, gradient_checkpointing=True))
    with pytest.raises(TypeError, match="model must be"):
        Trainer(model="gpt2", args=_classifier_args(tmp_path))
    # found when the Trainer is made, as the reference finds it, not after an epoch of training
    with pytest.raises(ValueError, match="eval_strategy='epoch' evaluates during training, but no eval_dataset"):
        Trainer(model=make_model(), args=_classifier_args(tmp_path, eval_strategy="epoch"), train_dataset=make_rows())
    named = [{**row, "label": "positive"} for row in make_rows()]  # class names where class ids belong
    trainer = Trainer(model=make_model(), args=_classifier_args(tmp_path), train_dataset=named)
    with pytest.raises(TypeError, match=r"Column 'labels?' holds text \('positive'\).*class_encode_column"):
        trainer.train()


DDP_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from openformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    config = LlamaConfig(**{config!r})
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(16):
        length = int(torch.randint(3, 12, (1,), generator=generator))
        ids = torch.randint(1, 64, (length,), generator=generator).tolist()
        rows.append({{"input_ids": ids, "labels": ids}})
    batch = int(sys.argv[2])
    args = TrainingArguments(output_dir=sys.argv[1], per_device_train_batch_size=batch, num_train_epochs=2,
                             learning_rate=1e-2, logging_steps=1, save_strategy="epoch", disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    if trainer.state.is_world_process_zero:
        torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
''').format(config=TINY_LLAMA)


def test_two_processes_reach_the_weights_of_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "4"], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    environment = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "two"), "2"],
        capture_output=True, text=True, env={**environment, "OMP_NUM_THREADS": "1"},
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("'loss'") == single.stdout.count("'loss'") == 8  # rank 0 alone prints
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint-4", "checkpoint-8", "final.pt"]


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    model = make_model()
    args = _classifier_args(tmp_path, num_train_epochs=1)
    Trainer(model=model, args=args, train_dataset=make_rows()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = Trainer(model=model, args=args, train_dataset=make_rows())
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 6
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])

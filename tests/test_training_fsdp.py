"""FSDP in the Trainer, on two CPU processes (torchrun, gloo): the weights of one process with the same global batch,
checkpoints the reference and peft load, and a resume after SIGKILL that ends where the uninterrupted run ends."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file

from openformers import TrainingArguments
from openformers.training import checkpoint as ckpt

TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)

# argv: output folder, mode. "single" trains in one process with a batch of 4; the others run under torchrun on two
# processes with a batch of 1 and two accumulated micro-batches each, the same 4 rows a step. "crash" kills the
# first process at step 5 (checkpoint-3 is the last one saved); "resume" continues from it. Each trains the whole
# model, then (single, fsdp, resume) a LoRA adapter on a fresh copy of the same model; "resume" continues the
# adapter from the fsdp run's checkpoint-3.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import torch
    from openformers import LlamaConfig, LlamaForCausalLM, LoraConfig, Trainer, TrainerCallback, TrainingArguments

    folder, mode = sys.argv[1], sys.argv[2]
    config = LlamaConfig(**{config!r})

    def rows():
        generator = torch.Generator().manual_seed(1)
        made = []
        for _ in range(16):
            length = int(torch.randint(3, 12, (1,), generator=generator))
            ids = torch.randint(1, 64, (length,), generator=generator).tolist()
            made.append({{"input_ids": ids, "labels": ids}})
        return made

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5 and state.is_world_process_zero:
                os.kill(os.getpid(), signal.SIGKILL)

    def train(output, lora=False, **options):
        # A resume takes every trained weight from the checkpoint; an adapter's base model is the same one.
        torch.manual_seed(123 if mode == "resume" and not lora else 0)
        model = LlamaForCausalLM.from_config(config)
        if lora:
            torch.manual_seed(123 if mode == "resume" else 0)
            model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        single = mode == "single"
        args = TrainingArguments(
            output_dir=output, per_device_train_batch_size=4 if single else 1,
            gradient_accumulation_steps=1 if single else 2, num_train_epochs=2, learning_rate=1e-2, logging_steps=1,
            save_steps=3, disable_tqdm=True, use_cpu=True, report_to="none", **options)
        trainer = Trainer(model=model, args=args, train_dataset=rows(), callbacks=[Crash] if mode == "crash" else [])
        result = trainer.train(resume_from_checkpoint=mode == "resume")
        trainer.save_model(output + "/final")
        evaluation = trainer.evaluate(rows()[:5])  # every process reads every row
        if trainer.is_world_process_zero():
            with open(output + "/metrics.json", "w") as file:
                json.dump({{**result.metrics, **evaluation}}, file)

    sharded = {{}} if mode == "single" else dict(fsdp="full_shard auto_wrap")
    train(folder + "/full", **sharded)
    if mode in ("single", "fsdp", "resume"):
        train(folder + "/lora", lora=True, **({{}} if mode == "single" else dict(fsdp=True)))
''').format(config=TINY_LLAMA)


def _run(script, folder, mode):
    if mode == "single":
        command = [sys.executable, str(script), str(folder), mode]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                   str(folder), mode]
    environment = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run(command, capture_output=True, text=True, env={**environment, "OMP_NUM_THREADS": "1"},
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    script = folder / "train.py"
    script.write_text(SCRIPT)
    results = {}
    for mode in ("single", "fsdp", "crash"):
        results[mode] = _run(script, folder / mode, mode)
    results["after crash"] = [p.name for p in ckpt.checkpoint_folders(folder / "crash/full")]
    (folder / "crash").rename(folder / "resume")
    shutil.copytree(folder / "fsdp/lora/checkpoint-3", folder / "resume/lora/checkpoint-3")
    results["resume"] = _run(script, folder / "resume", "resume")
    return folder, results


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_two_sharded_processes_reach_the_weights_of_one_with_the_same_global_batch(runs):
    folder, results = runs
    for mode in ("single", "fsdp"):
        assert results[mode].returncode == 0, results[mode].stderr[-3000:]
    one, two = _weights(folder / "single/full/final"), _weights(folder / "fsdp/full/final")
    assert sorted(one) == sorted(two)
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5)
    metrics = [json.loads((folder / m / "full/metrics.json").read_text()) for m in ("single", "fsdp")]
    assert metrics[1]["train_loss"] == pytest.approx(metrics[0]["train_loss"], rel=1e-5)
    assert metrics[1]["eval_loss"] == pytest.approx(metrics[0]["eval_loss"], rel=1e-5)
    # Each checkpoint holds the full weights the reference loads, and each process's shards for a resume.
    checkpoint = folder / "fsdp/full/checkpoint-6"
    assert {"model.safetensors", "config.json", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth",
            "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= {p.name for p in (checkpoint / "fsdp_state").iterdir()}
    reference = transformers.LlamaForCausalLM.from_pretrained(folder / "fsdp/full/final")
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(value, two[name], rtol=0, atol=0)


def test_lora_with_fsdp_trains_only_the_adapter_and_saves_what_peft_loads(runs):
    peft = pytest.importorskip("peft")
    folder, results = runs
    saved = folder / "fsdp/lora/final"
    files = {p.name for p in saved.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    one = load_file(str(folder / "single/lora/final/adapter_model.safetensors"))
    two = load_file(str(saved / "adapter_model.safetensors"))
    assert sorted(one) == sorted(two) and len(two) == 8  # A and B of q_proj and v_proj in two layers
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5)
    assert all(value.abs().sum() > 0 for name, value in two.items() if "lora_B" in name)  # B starts at zero
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    loaded = peft.PeftModel.from_pretrained(base, saved)
    state = loaded.state_dict()
    for name, value in two.items():
        key = name.replace(".weight", ".default.weight")
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert (folder / "fsdp/lora/checkpoint-6/adapter_model.safetensors").is_file()


def test_a_sharded_run_resumed_after_sigkill_ends_as_the_uninterrupted_run(runs):
    folder, results = runs
    assert results["crash"].returncode != 0 and "SIGKILL" in results["crash"].stderr, results["crash"].stderr[-3000:]
    assert results["after crash"] == ["checkpoint-3"]
    assert results["resume"].returncode == 0, results["resume"].stderr[-3000:]
    # steps 4 to 8 of the whole model, then of the adapter: the first process alone prints
    assert results["resume"].stdout.count("'loss'") == 5 + 5
    assert [p.name for p in ckpt.checkpoint_folders(folder / "resume/full")] == ["checkpoint-3", "checkpoint-6",
                                                                               "checkpoint-8"]
    uninterrupted, resumed = _weights(folder / "fsdp/full/final"), _weights(folder / "resume/full/final")
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)
    losses = [json.loads((folder / m / "full/metrics.json").read_text())["train_loss"] for m in ("fsdp", "resume")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)
    # The adapter resumed from its sharded state (adapter-only) ends as the uninterrupted one.
    adapter = "lora/final/adapter_model.safetensors"
    uninterrupted, resumed = load_file(str(folder / "fsdp" / adapter)), load_file(str(folder / "resume" / adapter))
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)
    losses = [json.loads((folder / m / "lora/metrics.json").read_text())["train_loss"] for m in ("fsdp", "resume")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_fsdp_arguments_take_the_reference_spellings_and_refuse_the_rest(tmp_path):
    from openformers.training.distributed import fsdp_settings

    assert fsdp_settings("full_shard auto_wrap", None).reshard_after_forward is True
    assert fsdp_settings(["shard_grad_op"], None).reshard_after_forward is False
    assert fsdp_settings(True, {"fsdp_reshard_after_forward": "false"}).reshard_after_forward is False
    config = tmp_path / "fsdp.json"
    config.write_text(json.dumps({"transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                  "state_dict_type": "SHARDED_STATE_DICT"}))
    settings = fsdp_settings(True, str(config))
    assert settings.layer_classes == ("LlamaDecoderLayer",) and settings.full_state_dict is False
    assert fsdp_settings(None, None) is None and fsdp_settings(False, {"version": 1}) is None
    for fsdp, config, message in (
        ("full_shard everything", None, "unknown option 'everything'"),
        ("hybrid_shard", None, "FSDP1"),
        ("full_shard shard_grad_op", None, "pick one"),
        (True, {"version": 1}, "FSDP2 only"),
        (True, {"auto_wrap_policy": "EVERY_LAYER"}, "auto_wrap_policy must be one of"),
        (True, {"shard_everything": True}, "unknown keys"),
        (True, {"xla": True}, "XLA"),
        (True, str(tmp_path / "missing.json"), "missing.json"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            TrainingArguments(output_dir=str(tmp_path), fsdp=fsdp, fsdp_config=config)
    with pytest.warns(UserWarning, match="FSDP1"):
        TrainingArguments(output_dir=str(tmp_path), fsdp=True, fsdp_config={"backward_prefetch": "BACKWARD_PRE"})


def test_the_units_sharded_apart_are_the_layers_or_what_the_policy_names():
    from openformers import LlamaConfig, LlamaForCausalLM
    from openformers.training.distributed import _units, fsdp_settings

    model = LlamaForCausalLM.from_config(LlamaConfig(**TINY_LLAMA))
    layers = list(model.model.layers)
    assert _units(model, fsdp_settings(True, None)) == layers  # then the root
    named = fsdp_settings(True, {"transformer_layer_cls_to_wrap": ["LlamaMLP"]})
    assert _units(model, named) == [layer.mlp for layer in layers][::-1]
    assert _units(model, fsdp_settings(True, {"auto_wrap_policy": "NO_WRAP"})) == []
    by_size = _units(model, fsdp_settings(True, {"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 6000}))
    assert by_size and all(sum(p.numel() for p in unit.parameters()) >= 6000 for unit in by_size)
    for index, unit in enumerate(by_size):  # innermost first: no unit contains one that comes after it
        assert not any(module is later for later in by_size[index + 1:] for module in unit.modules())
    with pytest.raises(ValueError, match="MistralDecoderLayer"):
        _units(model, fsdp_settings(True, {"transformer_layer_cls_to_wrap": "MistralDecoderLayer"}))


class Payload:
    """What a crafted checkpoint could pickle: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo unpickled",))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # DCP in one process, without a group
def test_a_pickle_payload_in_the_sharded_state_is_refused(tmp_path, capfd):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from openformers.training.distributed import load_sharded

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    optimizer_state["param_groups"][0]["lr"] = Payload()  # a non-tensor value, stored pickled
    dcp.save({"model": get_model_state_dict(model), "optimizer": optimizer_state}, checkpoint_id=tmp_path)
    with pytest.raises(ValueError, match=r"optimizer.param_groups.0.lr holds a pickled object .* refused"):
        load_sharded(model, optimizer, tmp_path)
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert "unpickled" not in capfd.readouterr().out


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # DCP in one process, without a group
def test_a_pickle_payload_in_the_sharded_metadata_is_refused(tmp_path, capfd):
    from openformers.training.distributed import load_sharded

    model = torch.nn.Linear(3, 2)
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match=r"\.metadata names .*system, which .* refused"):
        load_sharded(model, None, tmp_path)
    assert "unpickled" not in capfd.readouterr().out

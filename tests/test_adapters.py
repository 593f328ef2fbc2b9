"""LoRA adapters (models/lora.py) against the `peft` library on the reference's models: the same initial weights
from the same seed, the same logits, adapter files that each side loads from the other, merging, switching
adapters, and the Trainer's loss curve and checkpoints."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from openformers import (  # noqa: E402
    AutoModelForCausalLM, AutoModelForSequenceClassification, LoraConfig, Trainer, TrainingArguments,
)
from openformers.models.lora import LoraLinear, ModulesToSave  # noqa: E402

TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)

# family -> (reference class, its config, the Auto class of ours, LoRA options)
FAMILIES = {
    "llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**TINY_LLAMA), AutoModelForCausalLM,
              dict(target_modules=["q_proj", "v_proj", "down_proj"])),
    "bert": (transformers.BertForSequenceClassification,
             transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
             AutoModelForSequenceClassification,
             dict(target_modules=["query", "value"], modules_to_save=["classifier"])),
    "gpt2": (transformers.GPT2LMHeadModel,
             transformers.GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0),
             AutoModelForCausalLM, dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)),
}


def _pair(family, tmp_path):
    """The reference's tiny model (saved to tmp_path/base) and ours loaded from its folder."""
    reference_class, config, auto, options = FAMILIES[family]
    torch.manual_seed(0)
    reference = reference_class(config).eval()
    reference.save_pretrained(tmp_path / "base")
    return reference, auto.from_pretrained(tmp_path / "base"), options


def _adapted(family, tmp_path, **extra):
    """Both models with the same adapter drawn from the same seed (init_lora_weights=False: B random too, so
    the adapter changes the outputs)."""
    reference, ours, options = _pair(family, tmp_path)
    options = {**options, "r": 4, "lora_alpha": 8, "init_lora_weights": False, **extra}
    torch.manual_seed(7)
    ours.add_adapter(LoraConfig(**options))
    torch.manual_seed(7)
    wrapped = peft.get_peft_model(reference, peft.LoraConfig(**options))
    return wrapped.eval(), ours.eval()


def _ids(count=2, length=7, seed=3):
    return torch.randint(1, 64, (count, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_config_has_peft_defaults():
    reference = peft.LoraConfig()
    for field, value in LoraConfig().to_dict().items():
        expected = getattr(reference, field)
        assert (expected.value if hasattr(expected, "value") else expected) == value, field


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_same_seed_gives_peft_weights_names_and_logits(family, tmp_path):
    wrapped, ours = _adapted(family, tmp_path)
    theirs = {k.removeprefix("base_model.model."): v for k, v in wrapped.state_dict().items()}
    mine = ours.state_dict()
    adapter_keys = [k for k in theirs if "lora_" in k or "modules_to_save" in k]
    assert adapter_keys and all(k in mine for k in adapter_keys)
    for key in adapter_keys:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0)
    trainable = sorted(n for n, p in ours.named_parameters() if p.requires_grad)
    assert trainable == sorted(n.removeprefix("base_model.model.") for n, p in wrapped.named_parameters()
                               if p.requires_grad)
    torch.testing.assert_close(_logits(ours, _ids()), _logits(wrapped, _ids()), rtol=1e-5, atol=1e-5)


def test_default_init_is_peft_s_and_starts_as_the_base_model(tmp_path):
    reference, ours, _ = _pair("llama", tmp_path)
    before = _logits(ours, _ids())
    torch.manual_seed(11)
    ours.add_adapter(LoraConfig(target_modules=["q_proj", "k_proj"], lora_dropout=0.1))
    torch.manual_seed(11)
    wrapped = peft.get_peft_model(reference, peft.LoraConfig(target_modules=["q_proj", "k_proj"], lora_dropout=0.1))
    theirs = {k.removeprefix("base_model.model."): v for k, v in wrapped.state_dict().items()}
    for key, value in ours.state_dict().items():
        if "lora_" in key:
            torch.testing.assert_close(value, theirs[key], rtol=0, atol=0)
            assert ("lora_B" in key) == (not value.any())  # B starts at zero, A does not
    # The base model's prompts ran through the compiled step, the adapted model's through its layers (a LoRA layer
    # is not the step's), which add in another order: the same logits up to float32 rounding.
    torch.testing.assert_close(_logits(ours.eval(), _ids()), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_adapters_saved_by_either_side_load_in_the_other(family, tmp_path):
    wrapped, ours = _adapted(family, tmp_path)
    ids = _ids()
    expected = _logits(wrapped, ids)
    reference_class, _, auto, _ = FAMILIES[family]

    ours.save_pretrained(tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if p.name.startswith("adapter")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert not (tmp_path / "ours" / "config.json").exists()  # the reference writes only the adapter
    wrapped.save_pretrained(tmp_path / "peft")
    assert sorted(load_file(tmp_path / "ours" / "adapter_model.safetensors")) == sorted(
        load_file(tmp_path / "peft" / "adapter_model.safetensors"))

    base = reference_class.from_pretrained(tmp_path / "base")
    loaded_by_peft = peft.PeftModel.from_pretrained(base, tmp_path / "ours")
    torch.testing.assert_close(_logits(loaded_by_peft.eval(), ids), expected, rtol=1e-5, atol=1e-5)

    # peft's folder names the base model it was made from; from_pretrained on the adapter folder loads both.
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "base")
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps(config))
    loaded = auto.from_pretrained(tmp_path / "peft")
    assert loaded.active_adapters() == ["default"]
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded for inference, as the reference does
    torch.testing.assert_close(_logits(loaded, ids), expected, rtol=1e-5, atol=1e-5)
    base = auto.from_pretrained(tmp_path / "base")
    base.load_adapter(tmp_path / "peft", adapter_name="theirs", is_trainable=True)
    assert base.active_adapters() == ["theirs"] and any(p.requires_grad for p in base.parameters())
    torch.testing.assert_close(_logits(base.eval(), ids), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_merge_and_unload_gives_the_unmerged_outputs(family, tmp_path):
    _, ours = _adapted(family, tmp_path)
    ids = _ids()
    unmerged = _logits(ours, ids)
    merged = ours.merge_and_unload()
    assert merged is ours and not ours._hf_peft_config_loaded
    assert not any(isinstance(m, (LoraLinear, ModulesToSave)) for m in ours.modules())
    torch.testing.assert_close(_logits(ours, ids), unmerged, rtol=1e-5, atol=1e-5)
    ours.save_pretrained(tmp_path / "merged")  # a whole model again, which the reference loads
    reference_class = FAMILIES[family][0]
    torch.testing.assert_close(_logits(reference_class.from_pretrained(tmp_path / "merged").eval(), ids), unmerged,
                               rtol=1e-5, atol=1e-5)


def test_switching_disabling_and_deleting_adapters(tmp_path):
    _, ours = _adapted("bert", tmp_path)
    ids = _ids()
    base = FAMILIES["bert"][2].from_pretrained(tmp_path / "base")
    first = _logits(ours, ids)
    torch.manual_seed(1)
    ours.add_adapter(LoraConfig(target_modules=["query"], modules_to_save=["classifier"], init_lora_weights=False),
                     adapter_name="second")
    assert ours.active_adapters() == ["second"]
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(".second." in n for n in trainable)
    second = _logits(ours, ids)
    assert not torch.allclose(first, second)
    ours.set_adapter("default")
    torch.testing.assert_close(_logits(ours, ids), first, rtol=0, atol=0)
    ours.disable_adapters()
    assert not any(p.requires_grad for p in ours.parameters())
    torch.testing.assert_close(_logits(ours, ids), _logits(base, ids), rtol=1e-6, atol=1e-6)
    ours.enable_adapters()
    torch.testing.assert_close(_logits(ours, ids), first, rtol=0, atol=0)
    assert sorted(ours.get_adapter_state_dict("second")) == sorted(
        [f"bert.encoder.layer.{i}.attention.self.query.lora_{m}.weight" for i in range(2) for m in "AB"]
        + ["classifier.weight", "classifier.bias"])
    with pytest.raises(ValueError, match="'third'"):
        ours.set_adapter("third")
    with pytest.raises(ValueError, match="only one of them"):
        ours.set_adapter(["default", "second"])
    with pytest.raises(ValueError, match="already attached"):
        ours.add_adapter(LoraConfig(target_modules=["query"]), adapter_name="second")
    ours.delete_adapter(["default", "second"])
    assert not ours._hf_peft_config_loaded and not any(isinstance(m, LoraLinear) for m in ours.modules())
    torch.testing.assert_close(_logits(ours, ids), _logits(base, ids), rtol=0, atol=0)
    with pytest.raises(ValueError, match="No adapter loaded"):
        ours.active_adapters()


@pytest.mark.filterwarnings("ignore:.*newly initialized")  # a classifier's folder read as a causal LM
def test_all_linear_targets_what_peft_targets(tmp_path):
    torch.manual_seed(0)
    reference = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**TINY_LLAMA, num_labels=2))
    reference.save_pretrained(tmp_path / "base")
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    options = dict(target_modules="all-linear", task_type="SEQ_CLS")
    ours.add_adapter(LoraConfig(**options))
    wrapped = peft.get_peft_model(reference, peft.LoraConfig(**options))
    assert sorted(ours.peft_config["default"].target_modules) == sorted(wrapped.peft_config["default"].target_modules)
    causal = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    causal.add_adapter(LoraConfig(target_modules="all-linear"))
    assert not isinstance(causal.lm_head, LoraLinear) and isinstance(causal.model.layers[0].mlp.up_proj, LoraLinear)
    regex = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    regex.add_adapter(LoraConfig(target_modules=r".*\.1\.self_attn\.(q|v)_proj"))
    assert sorted(p for p, m in regex.named_modules() if isinstance(m, LoraLinear)) == [
        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


def test_refusals_name_the_option(tmp_path):
    _, ours, _ = _pair("llama", tmp_path)
    with pytest.raises(ValueError, match="matches no linear layer"):
        ours.add_adapter(LoraConfig(target_modules=["nothing_here"]))
    with pytest.raises(ValueError, match="modules_to_save"):
        ours.add_adapter(LoraConfig(target_modules=["q_proj"], modules_to_save=["classifier"]))
    assert not any(isinstance(m, LoraLinear) for m in ours.modules())  # a refused adapter leaves the model as it was
    with pytest.raises(ValueError, match="bias='all'"):
        LoraConfig(bias="all")
    with pytest.raises(TypeError, match="LoraConfig"):
        ours.add_adapter({"r": 8})
    folder = tmp_path / "dora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True,
                                                             "target_modules": ["q_proj"]}))
    with pytest.raises(ValueError, match="use_dora=True"):
        ours.load_adapter(folder)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        ours.load_adapter(tmp_path / "base")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ours.load_adapter("some-user/some-adapter")


def test_generation_with_an_adapter_gives_peft_s_tokens(tmp_path):
    wrapped, ours = _adapted("llama", tmp_path)
    ids = _ids(count=1)
    expected = wrapped.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    torch.testing.assert_close(ours.generate(ids, max_new_tokens=8, do_sample=False), expected, rtol=0, atol=0)
    # Merged weights are changed in place: the CPU decode step, back on the plain layers, must see them.
    ours.merge_and_unload()
    torch.testing.assert_close(ours.generate(ids, max_new_tokens=8, do_sample=False), expected, rtol=0, atol=0)


def _classification_rows(count=12, length=6, seed=5):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (count, length), generator=generator)
    return [{"input_ids": row.tolist(), "labels": int(row.sum() % 2)} for row in ids]


def test_trainer_with_lora_matches_the_reference_trainer_and_saves_only_the_adapter(tmp_path):
    torch.manual_seed(0)
    reference = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**TINY_LLAMA, num_labels=2))
    reference.save_pretrained(tmp_path / "base")
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    options = dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], modules_to_save=["score"],
                   task_type="SEQ_CLS")
    torch.manual_seed(21)
    wrapped = peft.get_peft_model(reference, peft.LoraConfig(**options))
    torch.manual_seed(21)
    ours.add_adapter(LoraConfig(**options))
    rows = _classification_rows()
    # One batch holds every row, so the reference's own shuffling cannot change what a step sees.
    common = dict(learning_rate=5e-3, max_steps=5, per_device_train_batch_size=len(rows), logging_steps=1,
                  save_strategy="steps", save_steps=5, use_cpu=True, disable_tqdm=True, report_to=[])
    theirs = transformers.Trainer(model=wrapped, train_dataset=rows,
                                  args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **common))
    theirs.train()
    mine = Trainer(model=ours, train_dataset=rows, args=TrainingArguments(output_dir=str(tmp_path / "ours"), **common))
    mine.train()

    expected = [e["loss"] for e in theirs.state.log_history if "loss" in e]
    got = [e["loss"] for e in mine.state.log_history if "loss" in e]
    assert len(got) == 5 and got == pytest.approx(expected, abs=1e-5)
    assert got[-1] < got[0]

    reference_checkpoint, checkpoint = tmp_path / "hf" / "checkpoint-5", tmp_path / "ours" / "checkpoint-5"
    reference_tensors = load_file(reference_checkpoint / "adapter_model.safetensors")
    tensors = load_file(checkpoint / "adapter_model.safetensors")
    assert sorted(tensors) == sorted(reference_tensors)  # the adapter and the trained head, nothing of the base
    assert "base_model.model.score.weight" in tensors
    for key, value in tensors.items():
        torch.testing.assert_close(value, reference_tensors[key], rtol=1e-4, atol=1e-5)
    assert not (checkpoint / "model.safetensors").exists()

    # The checkpoint is an adapter folder: the reference's model and peft load it.
    reloaded = peft.PeftModel.from_pretrained(
        transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "base"), checkpoint)
    ids = _ids()
    torch.testing.assert_close(_logits(reloaded.eval(), ids), _logits(ours.eval(), ids), rtol=1e-5, atol=1e-5)


def test_a_lora_run_resumes_from_its_adapter_checkpoint_exactly(tmp_path):
    torch.manual_seed(0)
    transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**TINY_LLAMA, num_labels=2)).save_pretrained(
        tmp_path / "base")
    rows = _classification_rows(count=8)

    def run(output, **extra):
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
        torch.manual_seed(21)
        model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"],
                                     lora_dropout=0.1))
        args = TrainingArguments(output_dir=str(tmp_path / output), learning_rate=5e-3, max_steps=6,
                                 per_device_train_batch_size=2, logging_steps=1, save_steps=3, use_cpu=True,
                                 disable_tqdm=True, report_to=[])
        trainer = Trainer(model=model, args=args, train_dataset=rows)
        trainer.train(**extra)
        return trainer, model

    whole, whole_model = run("whole")
    resumed, resumed_model = run("whole", resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-3"))
    assert [e["loss"] for e in resumed.state.log_history if "loss" in e] == pytest.approx(
        [e["loss"] for e in whole.state.log_history if "loss" in e], abs=1e-6)
    for key, value in whole_model.get_adapter_state_dict().items():
        torch.testing.assert_close(resumed_model.get_adapter_state_dict()[key], value, rtol=0, atol=1e-7)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_quantized_linear_passes_gradients_without_keeping_its_float_weights(quantization):
    from openformers.kernels import Linear

    torch.manual_seed(0)
    layer = Linear.from_linear(torch.nn.Linear(64, 48), quantization)
    x = torch.randn(3, 5, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = layer(x)
    assert (48, 64) not in saved  # the backward unpacks the weights again instead of keeping them
    y.square().sum().backward()
    expected = x.detach().requires_grad_()
    torch.nn.functional.linear(expected, layer.dequantized(torch.float32), layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, expected.grad, rtol=1e-5, atol=1e-5)


def test_qlora_follows_the_float_lora_loss_curve(tmp_path):
    """LoRA on an int8 / int4 base (from_pretrained(quantization=...)), the classifier head trained as a float copy
    of the quantized one: the loss stays within 1e-3 (int8) and 1e-2 (int4) of LoRA on the float model."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**TINY_LLAMA, "hidden_size": 64, "intermediate_size": 128}, num_labels=2)
    transformers.LlamaForSequenceClassification(config).save_pretrained(tmp_path / "base")
    rows = _classification_rows(count=16)
    curves = {}
    for quantization in (None, "int8", "int4"):
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", quantization=quantization)
        torch.manual_seed(1)
        model.add_adapter(LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", modules_to_save=["score"],
                                     task_type="SEQ_CLS"))
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
        args = TrainingArguments(output_dir=str(tmp_path / str(quantization)), learning_rate=2e-3, max_steps=6,
                                 per_device_train_batch_size=len(rows), logging_steps=1, save_strategy="no",
                                 use_cpu=True, disable_tqdm=True, report_to=[])
        trainer = Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        curves[quantization] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert curves[None][-1] < curves[None][0] - 0.1
    assert curves["int8"] == pytest.approx(curves[None], abs=1e-3)
    assert curves["int4"] == pytest.approx(curves[None], abs=1e-2)


def test_gradient_checkpointing_trains_the_adapter_as_without_it(tmp_path):
    torch.manual_seed(0)
    transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**TINY_LLAMA, num_labels=2)).save_pretrained(
        tmp_path / "base")
    rows = _classification_rows(count=8)
    curves = {}
    # Reentrant checkpointing needs the frozen embeddings' output to require grad, as the reference arranges.
    for run, (checkpointing, options) in enumerate([(False, None), (True, None), (True, {"use_reentrant": True})]):
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
        torch.manual_seed(21)
        model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"]))
        args = TrainingArguments(output_dir=str(tmp_path / str(run)), learning_rate=5e-3, max_steps=4,
                                 per_device_train_batch_size=len(rows), logging_steps=1, save_strategy="no",
                                 gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=options,
                                 use_cpu=True, disable_tqdm=True, report_to=[])
        trainer = Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        assert model.is_gradient_checkpointing == checkpointing
        curves[run] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert curves[1] == pytest.approx(curves[0], abs=1e-6) and curves[2] == pytest.approx(curves[0], abs=1e-6)


def test_the_command_line_runs_a_model_with_an_adapter(smollm2_gguf, tmp_path, capsys):
    from openformers import AutoTokenizer
    from openformers.cli import main

    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf)
    torch.manual_seed(0)
    model.add_adapter(LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf)
    prompt = "The capital of France is"
    output = model.eval().generate(tokenizer.encode(prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    expected = prompt + tokenizer.decode(output[0, -6:], skip_special_tokens=True)
    argv = ["generate", "--model", str(smollm2_gguf), "--adapter", str(tmp_path / "adapter"), "--max-new-tokens", "6"]
    assert main(argv + [prompt]) == 0
    assert capsys.readouterr().out.strip() == expected.strip()
    model.disable_adapters()
    plain = model.generate(tokenizer.encode(prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert not torch.equal(plain, output)  # the adapter changes what the command printed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("quantization", [None, "int4"])
def test_lora_trains_on_a_gpu_as_on_the_cpu(quantization, tmp_path):
    """Adapters are made on the base layer's device; the loss curve on cuda is the CPU's (1.2e-7 on an H200)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**TINY_LLAMA, "hidden_size": 64, "intermediate_size": 128}, num_labels=2)
    transformers.LlamaForSequenceClassification(config).save_pretrained(tmp_path / "base")
    rows = _classification_rows(count=16)
    curves = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for device in ("cpu", "cuda"):
            model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", quantization=quantization,
                                                                       device_map=device)
            torch.manual_seed(1)
            model.add_adapter(LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", modules_to_save=["score"],
                                         task_type="SEQ_CLS"))
            assert {p.device.type for p in model.parameters() if p.requires_grad} == {device}
            args = TrainingArguments(output_dir=str(tmp_path / device), learning_rate=2e-3, max_steps=4,
                                     per_device_train_batch_size=len(rows), logging_steps=1, save_strategy="no",
                                     use_cpu=device == "cpu", disable_tqdm=True, report_to=[])
            trainer = Trainer(model=model, args=args, train_dataset=rows)
            trainer.train()
            curves[device] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert curves["cuda"] == pytest.approx(curves["cpu"], abs=1e-5)

"""A quantized model's save_pretrained loads back: the packed weights as saved, bit for bit, with config.json's
quant_method "openformers" marker (models/packed_checkpoint.py); the reference refuses such a folder."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from encoder_parity import load_quietly
from openformers import AutoModelForCausalLM, BitsAndBytesConfig
from openformers.kernels import Linear, PackedExperts

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)


def _llama_folder(folder, **overrides):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **overrides})).save_pretrained(folder)
    return folder


def _gpt_oss_folder(folder):
    torch.manual_seed(0)
    config = transformers.GptOssConfig(
        vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256)
    transformers.GptOssForCausalLM(config).save_pretrained(folder)
    return folder


def _packed(model) -> dict:
    return {name: tensor for name, tensor in model.state_dict().items()}


def _assert_same_model(loaded, model):
    state, expected = loaded.state_dict(), model.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    ids = torch.arange(3, 40).reshape(1, -1) % 128
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
        assert torch.equal(loaded(ids[:, :3]).logits, model(ids[:, :3]).logits)  # few rows: the kernel's products
    assert loaded.generate(ids[:, :4], max_new_tokens=5, do_sample=False).tolist() == \
        model.generate(ids[:, :4], max_new_tokens=5, do_sample=False).tolist()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_quantized_llama_saves_and_loads_back_packed(tmp_path, quantization, tied):
    model = AutoModelForCausalLM.from_pretrained(_llama_folder(tmp_path / "hf", tie_word_embeddings=tied),
                                                 quantization=quantization)
    model.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    marker = config["quantization_config"]
    assert marker["quant_method"] == "openformers" and marker["quantization"] == quantization
    assert marker["packed_modules"]["lm_head"] == "int8"  # the head stays int8 under int4
    assert marker["packed_modules"]["model.layers.1.mlp.down_proj"] == quantization
    assert len(marker["packed_modules"]) == 15 and marker["packed_experts"] == {}
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert saved["lm_head.weight"].dtype == torch.int8  # the tied head's own int8 copy is saved too
    assert saved["model.layers.0.self_attn.q_proj.weight"].dtype == (torch.int8 if quantization == "int8"
                                                                      else torch.uint8)
    loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "saved")
    assert loaded.quantization == quantization and isinstance(loaded.lm_head, Linear)
    assert loaded.lm_head.scale is not None and loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    _assert_same_model(loaded, model)
    # Saved again, the same folder.
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["quantization_config"] == marker
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)


def test_shards_and_kept_modules_load_back(tmp_path):
    bnb = BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=["model.layers.1.mlp"])
    model = AutoModelForCausalLM.from_pretrained(_llama_folder(tmp_path / "hf"), quantization_config=bnb)
    model.save_pretrained(tmp_path / "saved", max_shard_size="20KB")
    assert len(list((tmp_path / "saved").glob("model-*.safetensors"))) > 1
    marker = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert "model.layers.1.mlp.up_proj" not in marker["packed_modules"]
    assert "model.layers.1.self_attn.q_proj" in marker["packed_modules"]
    loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "saved")
    kept = loaded.model.layers[1].mlp.up_proj
    assert getattr(kept, "scale", None) is None and kept.weight.dtype == torch.float32
    _assert_same_model(loaded, model)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_quantized_gpt_oss_saves_and_loads_its_packed_experts(tmp_path, quantization):
    model = AutoModelForCausalLM.from_pretrained(_gpt_oss_folder(tmp_path / "hf"), quantization=quantization)
    model.save_pretrained(tmp_path / "saved")
    marker = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert marker["packed_experts"] == {f"model.layers.{i}.mlp.experts.{name}": quantization
                                        for i in range(2) for name in ("gate_up_proj", "down_proj")}
    loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "saved")
    assert isinstance(loaded.model.layers[0].mlp.experts.down_proj, PackedExperts)
    _assert_same_model(loaded, model)


def test_a_gguf_loaded_int4_model_keeps_its_layouts(tmp_path):
    import gguf

    from test_models_llama import _save_tiny, _write_gguf

    reference = _save_tiny(tmp_path / "hf", intermediate_size=256)  # down's rows: a Q6_K block of 256 weights
    Q4_0, Q6_K, Q8_0 = (gguf.GGMLQuantizationType[kind] for kind in ("Q4_0", "Q6_K", "Q8_0"))
    kinds = {"attn_v.weight": Q8_0, "ffn_down.weight": Q6_K}
    _write_gguf(tmp_path / "mixed.gguf", reference, quantize_to=lambda name: kinds.get(name.split(".", 2)[-1], Q4_0))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed.gguf", quantization="int4")
    assert model.model.layers[0].mlp.down_proj.scale.shape == (64, 256 // 16)  # Q6_K's scales per 16
    model.save_pretrained(tmp_path / "saved")
    marker = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert marker["packed_modules"]["model.layers.0.self_attn.v_proj"] == "int8"
    assert marker["packed_modules"]["model.layers.0.self_attn.q_proj"] == "int4"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert loaded.model.layers[0].mlp.down_proj.scale.shape == (64, 256 // 16)
    _assert_same_model(loaded, model)


def test_quantization_asked_again_must_be_the_folders_own(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(_llama_folder(tmp_path / "hf"), quantization="int4")
    model.save_pretrained(tmp_path / "saved")
    for same in (dict(quantization="int4"), dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True))):
        _assert_same_model(AutoModelForCausalLM.from_pretrained(tmp_path / "saved", **same), model)
    for other in (dict(quantization="int8"), dict(quantization_config=BitsAndBytesConfig(load_in_8bit=True))):
        with pytest.raises(ValueError, match="packed as 'int4'.*quantization='int8' cannot be applied"):
            AutoModelForCausalLM.from_pretrained(tmp_path / "saved", **other)


def test_a_scale_of_the_wrong_shape_is_refused_by_name(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(_llama_folder(tmp_path / "hf"), quantization="int4")
    model.save_pretrained(tmp_path / "saved")
    path = tmp_path / "saved" / "model.safetensors"
    tensors = load_file(path)
    name = "model.layers.1.mlp.down_proj.scale"
    tensors[name] = tensors[name][:, :2].contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"tensor {name} is \(64, 2, 2\) float16, but a int4 packing of "
                                         r"model.layers.1.mlp.down_proj \(96 inputs x 64 outputs\) stores "
                                         r"\(64, 3, 2\) float16"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    del tensors[name]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"has no tensor {name}"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "saved")


def test_the_reference_skips_the_unknown_method_and_refuses_int4_weights(tmp_path, caplog):
    """The reference warns that it knows no quant_method "openformers" and loads the tensors as floats: int4's
    packed rows (half the columns) do not fit, and it refuses them. (An int8 folder's steps have the float matrix's
    shape, which it loads as floats, wrong: docs/compatibility.md says such a folder is openformers' only.)"""
    model = AutoModelForCausalLM.from_pretrained(_llama_folder(tmp_path / "hf"), quantization="int4")
    model.save_pretrained(tmp_path / "saved")
    with caplog.at_level(logging.WARNING), pytest.raises(Exception, match="ignore_mismatched_sizes"):
        transformers.LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    assert "Unknown quantization type, got openformers" in caplog.text

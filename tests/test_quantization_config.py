"""BitsAndBytesConfig and from_pretrained(quantization_config=...): the reference's class, fields and serialization,
loaded as openformers' own int4 and int8 (quantization_config.py says what differs from bitsandbytes)."""

import inspect
import json

import pytest
import torch

from openformers import AutoModelForCausalLM, BitsAndBytesConfig, LoraConfig
from openformers.kernels import Linear
from openformers.quantization_config import is_kept

transformers = pytest.importorskip("transformers")

CONFIG = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
IDS = torch.tensor([[1, 5, 7, 9, 3, 40, 2], [8, 6, 4, 2, 90, 11, 12]])
QLORA = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
             bnb_4bit_compute_dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bnb") / "tiny"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).save_pretrained(folder)
    return folder


@torch.inference_mode()
def logits(model) -> torch.Tensor:
    return model(IDS).logits


def packed(model) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, Linear) and m.scale is not None}


def test_the_qlora_snippet_loads_as_int4_with_its_compute_dtype(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny, quantization_config=BitsAndBytesConfig(**QLORA),
                                                 device_map="auto")
    int4 = AutoModelForCausalLM.from_pretrained(tiny, quantization="int4", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.quantization == "int4"
    assert packed(model).keys() == packed(int4).keys() and len(packed(model)) == 15  # 7 a layer, and the head
    assert all(torch.equal(w, packed(int4)[name]) for name, w in packed(model).items())
    assert torch.equal(logits(model), logits(int4))


@pytest.mark.parametrize("form", ["ours", "dict", "reference"])
def test_8_bit_loads_as_int8_from_the_config_its_dict_or_the_references(tiny, form):
    options = dict(load_in_8bit=True)
    config = {"ours": lambda: BitsAndBytesConfig(**options), "dict": lambda: options,
              "reference": lambda: transformers.BitsAndBytesConfig(**options)}[form]()
    model = AutoModelForCausalLM.from_pretrained(tiny, quantization_config=config)
    int8 = AutoModelForCausalLM.from_pretrained(tiny, quantization="int8")
    assert model.dtype == torch.float32 and model.quantization == "int8"
    assert all(w.dtype == torch.int8 and torch.equal(w, packed(int8)[name]) for name, w in packed(model).items())
    assert torch.equal(logits(model), logits(int8))


def test_a_given_dtype_wins_over_the_compute_dtype_with_a_warning(tiny):
    with pytest.warns(UserWarning, match="bnb_4bit_compute_dtype=torch.bfloat16.*run in the model's dtype"):
        model = AutoModelForCausalLM.from_pretrained(tiny, quantization_config=BitsAndBytesConfig(**QLORA),
                                                     dtype=torch.float32)
    assert model.dtype == torch.float32
    float32 = AutoModelForCausalLM.from_pretrained(tiny, quantization="int4")
    assert torch.equal(logits(model), logits(float32))


def test_skipped_modules_stay_float_and_the_rest_is_packed(tiny):
    skip = ["lm_head", "model.layers.1.mlp"]
    model = AutoModelForCausalLM.from_pretrained(
        tiny, quantization_config=BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=skip))
    plain = AutoModelForCausalLM.from_pretrained(tiny)
    int4 = AutoModelForCausalLM.from_pretrained(tiny, quantization="int4")
    names = set(packed(int4))
    kept = {name for name in names if name == "lm_head" or name.startswith("model.layers.1.mlp.")}
    assert len(kept) == 4
    assert set(packed(model)) == names - kept
    for name in kept:
        assert torch.equal(model.get_submodule(name).weight, plain.get_submodule(name).weight), name
    for name, weight in packed(model).items():
        assert torch.equal(weight, packed(int4)[name]), name
    ours = logits(model)
    assert not torch.equal(ours, logits(int4)) and torch.isfinite(ours).all()


def test_skip_patterns_match_as_the_references():
    assert is_kept("model.layers.1.mlp.up_proj", ("model.layers.1",))
    assert not is_kept("model.layers.11.mlp.up_proj", ("model.layers.1",))
    assert is_kept("model.layers.11.mlp.up_proj", ("model.layers.*.mlp",))
    assert not is_kept("model.layers.1.mlp.gate_proj", ("mlp.gate",))
    assert is_kept("model.layers.0.mlp.down_proj", ("down_proj",)) and is_kept("lm_head", ("lm_head",))
    assert not is_kept("model.layers.0.self_attn.q_proj", ("lm_head", "down_proj"))


def test_qlora_trains_on_a_base_loaded_with_quantization_config(tiny):
    def gradients(**loading):
        model = AutoModelForCausalLM.from_pretrained(tiny, **loading)
        torch.manual_seed(1)
        model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.train()
        model(input_ids=IDS, labels=IDS).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    ours = gradients(quantization_config=BitsAndBytesConfig(**QLORA))
    int4 = gradients(quantization="int4", dtype=torch.bfloat16)
    assert len(ours) == 8 and ours.keys() == int4.keys()  # A and B of q and v in 2 layers
    for name, gradient in ours.items():
        assert gradient.abs().sum() > 0 and torch.equal(gradient, int4[name]), name


# The reference's keywords, and values for each that differ from its default.
NON_DEFAULTS = dict(load_in_8bit=True, llm_int8_threshold=4.5, llm_int8_skip_modules=["lm_head", "score"],
                    llm_int8_enable_fp32_cpu_offload=True, llm_int8_has_fp16_weight=True,
                    bnb_4bit_compute_dtype="float16", bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                    bnb_4bit_quant_storage=torch.bfloat16)


def test_the_keywords_and_defaults_are_the_references():
    ours = inspect.signature(BitsAndBytesConfig).parameters
    theirs = inspect.signature(transformers.BitsAndBytesConfig).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]
    assert set(NON_DEFAULTS) | {"load_in_4bit", "kwargs"} == set(ours)


@pytest.mark.parametrize("options", [
    {}, QLORA, NON_DEFAULTS, dict(load_in_4bit=True, bnb_4bit_compute_dtype="bfloat16"),
    *({name: value} for name, value in NON_DEFAULTS.items()),
])
def test_the_fields_and_serialization_are_the_references(options, tmp_path):
    ours, theirs = BitsAndBytesConfig(**options), transformers.BitsAndBytesConfig(**options)
    assert ours.to_dict() == theirs.to_dict()
    assert list(ours.to_dict()) == list(theirs.to_dict())
    assert ours.to_diff_dict() == theirs.to_diff_dict()
    assert repr(ours) == repr(theirs)
    assert ours.to_json_string() == theirs.to_json_string()
    assert ours.to_json_string(use_diff=False) == theirs.to_json_string(use_diff=False)
    assert dict(ours) == dict(theirs)
    assert (ours.is_quantizable(), ours.quantization_method()) == (theirs.is_quantizable(),
                                                                    theirs.quantization_method())
    for name in ("load_in_4bit", "load_in_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage",
                 "llm_int8_skip_modules", "llm_int8_threshold", "quant_method"):
        assert getattr(ours, name) == getattr(theirs, name), name
    ours.to_json_file(tmp_path / "ours.json")
    theirs.to_json_file(tmp_path / "theirs.json")
    assert (tmp_path / "ours.json").read_text() == (tmp_path / "theirs.json").read_text()
    # Each reads the other's dict (as a checkpoint's config.json stores it) back to the same config.
    assert BitsAndBytesConfig.from_dict(theirs.to_dict()) == ours
    assert transformers.BitsAndBytesConfig.from_dict(ours.to_dict()).to_dict() == theirs.to_dict()
    assert json.loads(ours.to_json_string(use_diff=False)) == json.loads(theirs.to_json_string(use_diff=False))


def test_the_flags_update_and_from_dict_behave_as_the_references():
    for config in (BitsAndBytesConfig(load_in_8bit=True), transformers.BitsAndBytesConfig(load_in_8bit=True)):
        config.load_in_8bit = False
        config.load_in_4bit = True
        assert config.quantization_method() == "fp4"
        assert config.update(bnb_4bit_quant_type="nf4", not_an_option=1) == {"not_an_option": 1}
        assert config.quantization_method() == "nf4"
    config, unused = BitsAndBytesConfig.from_dict({"load_in_4bit": True}, return_unused_kwargs=True,
                                                  llm_int8_threshold=5.0, other=3)
    assert config.llm_int8_threshold == 5.0 and unused == {"other": 3}


@pytest.mark.parametrize("options, error, message", [
    (dict(load_in_4bit=True, load_in_8bit=True), ValueError, "load_in_4bit and load_in_8bit are both True"),
    (dict(load_in_4bit=1), TypeError, "load_in_4bit must be True or False, got 1"),
    (dict(llm_int8_threshold=6), TypeError, "llm_int8_threshold must be a float, got 6"),
    (dict(llm_int8_skip_modules="lm_head"), TypeError, "llm_int8_skip_modules must be None or a list"),
    (dict(bnb_4bit_use_double_quant="yes"), TypeError, "bnb_4bit_use_double_quant must be True or False"),
    (dict(bnb_4bit_compute_dtype=16), ValueError, "bnb_4bit_compute_dtype must be None, a torch.dtype"),
    (dict(bnb_4bit_compute_dtype="float17"), ValueError, "bnb_4bit_compute_dtype must be None.*'float17'"),
    (dict(bnb_4bit_quant_storage="int4"), ValueError, "bnb_4bit_quant_storage must be.*'uint8'.*got 'int4'"),
    (dict(bnb_4bit_quant_type="int4"), ValueError, "bnb_4bit_quant_type must be 'fp4' or 'nf4', got 'int4'"),
])
def test_bad_values_are_refused_by_name(options, error, message):
    with pytest.raises(error, match=message):
        BitsAndBytesConfig(**options)


def test_setting_both_flags_is_refused():
    config = BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(ValueError, match="both True"):
        config.load_in_8bit = True
    with pytest.raises(TypeError, match="load_in_8bit must be True or False"):
        config.load_in_8bit = "no"
    assert config.load_in_4bit and not config.load_in_8bit


def test_unknown_keywords_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"ignores \['bnb_4bit_quant_typ'\]"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_typ="nf4")


@pytest.mark.parametrize("config, error, message", [
    (BitsAndBytesConfig(), ValueError, "sets neither load_in_4bit nor load_in_8bit"),
    (BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=4.0), ValueError,
     "llm_int8_threshold=4.0 is refused.*no threshold applies"),
    (BitsAndBytesConfig(load_in_8bit=True, llm_int8_has_fp16_weight=True), ValueError,
     "llm_int8_has_fp16_weight=True is refused"),
    ({"quant_method": "gptq", "bits": 4}, ValueError, "quant_method 'gptq'.*BitsAndBytesConfig's options only"),
    ("int4", TypeError, "quantization_config must be a BitsAndBytesConfig or its dict, got str"),
])
def test_from_pretrained_refuses_what_it_cannot_honour(tiny, config, error, message):
    with pytest.raises(error, match=message):
        AutoModelForCausalLM.from_pretrained(tiny, quantization_config=config)


def test_what_only_bitsandbytes_reads_is_accepted_without_effect(tiny):
    # The 4-bit type, double quantization, the storage dtype, the CPU-offload flag, and 8-bit options under 4-bit.
    options = dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True,
                   bnb_4bit_quant_storage="bfloat16", llm_int8_enable_fp32_cpu_offload=True, llm_int8_threshold=3.0,
                   llm_int8_has_fp16_weight=True)
    model = AutoModelForCausalLM.from_pretrained(tiny, quantization_config=BitsAndBytesConfig(**options))
    assert torch.equal(logits(model), logits(AutoModelForCausalLM.from_pretrained(tiny, quantization="int4")))


def test_both_quantization_arguments_are_refused(tiny):
    with pytest.raises(ValueError, match="quantization='int8' and quantization_config; pass one"):
        AutoModelForCausalLM.from_pretrained(tiny, quantization="int8",
                                             quantization_config=BitsAndBytesConfig(load_in_8bit=True))


@pytest.mark.parametrize("option", ["load_in_4bit", "load_in_8bit"])
def test_bare_bitsandbytes_flags_are_refused_as_the_reference_refuses_them(tiny, option):
    with pytest.raises(TypeError, match=option):
        transformers.AutoModelForCausalLM.from_pretrained(tiny, **{option: True})
    with pytest.raises(TypeError, match=rf"\['{option}'\].*quantization_config=BitsAndBytesConfig"):
        AutoModelForCausalLM.from_pretrained(tiny, **{option: True})


@pytest.mark.parametrize("stored, method", [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq"),
    ({"quant_method": "awq", "bits": 4, "version": "gemm"}, "awq"),
    (BitsAndBytesConfig(**QLORA).to_dict(), "bitsandbytes"),
    ({"load_in_8bit": True}, "bitsandbytes"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, "compressed-tensors"),
])
def test_a_checkpoint_stored_quantized_is_refused_naming_the_method_and_file(tiny, tmp_path, stored, method):
    folder = tmp_path / "quantized"
    folder.mkdir()
    config = json.loads((tiny / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": stored}))
    (folder / "model.safetensors").symlink_to(tiny / "model.safetensors")
    for loading in ({}, {"quantization": "int4"}, {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}):
        with pytest.raises(ValueError, match=rf"{folder / 'config.json'} holds a quantization_config with "
                                             rf"quant_method '{method}'.*cannot read"):
            AutoModelForCausalLM.from_pretrained(folder, **loading)


def test_a_saved_quantized_model_marks_its_packing_and_loads_back_in_its_dtype(tiny, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny, quantization_config=BitsAndBytesConfig(**QLORA))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == "openformers" and saved["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert loaded.dtype == torch.bfloat16 and loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], t) for k, t in model.state_dict().items())


def test_skipped_experts_stay_float_and_experts_packed_as_read_are_refused(tmp_path):
    from test_models_oss import TestGptOss, _write_mxfp4_folder

    from openformers.kernels import PackedExperts

    reference = TestGptOss.reference(**TestGptOss.VARIANTS["yarn-clamped"])
    reference.save_pretrained(tmp_path / "float")
    skip = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["model.layers.0.mlp.experts"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "float", quantization_config=skip)
    kept, packed_experts = model.model.layers[0].mlp.experts, model.model.layers[1].mlp.experts
    assert isinstance(kept.gate_up_proj, torch.nn.Parameter) and isinstance(kept.down_proj, torch.nn.Parameter)
    assert torch.equal(kept.gate_up_proj, reference.model.layers[0].mlp.experts.gate_up_proj)
    assert all(isinstance(getattr(packed_experts, name), PackedExperts) for name in ("gate_up_proj", "down_proj"))
    # Released MXFP4 experts are packed as they are read, never floats: they cannot be kept.
    _write_mxfp4_folder(tmp_path / "mxfp4", reference)
    with pytest.raises(ValueError, match=r"names model.layers.0.mlp.experts, whose experts' matrices .* packs as it"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "mxfp4", quantization_config=skip)

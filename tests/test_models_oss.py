"""gpt-oss (model_type "gpt_oss") against the reference, on tiny random models it makes and saves.

The variants: YaRN rope scaling whose ramp and attention factor both show (an original context of 64 positions, base
100) with the SwiGLU's clamps tight enough to cut; and the plain rope with tied embeddings, no grouping of the heads
and a window of 3. Every head the reference has, on a right- and a left-padded row with the head's labels, and the
load-balancing loss; cached decoding, left padding, greedy and beam generation, a static cache, hidden states and
attention weights (the sinks' share left out), a training step; saving both ways; MXFP4 checkpoints (the reference's
own dequantizing on random blocks, and a folder of the released layout loaded); YaRN's frequencies; GGUF files written
as llama.cpp's converter writes a "gpt-oss" checkpoint (MXFP4 experts, gate and up apart); the CPU kernel's step;
and the tokenizer class the reference picks for a gpt-oss folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_experts_packed_alone,
    assert_quantized_generation_is_its_greedy_chain,
    assert_quantized_products_are_the_unpacked_weights,
    assert_bfloat16_matches_the_reference,
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GptOssConfig, GptOssForCausalLM

transformers = pytest.importorskip("transformers")

YARN = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 64, "rope_theta": 100.0}


class TestGptOss(DecoderFamilyTests):
    REFERENCE_CONFIG = "GptOssConfig"
    TINY = dict(
        vocab_size=128, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
        max_position_embeddings=256, initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        rope_parameters=YARN,
    )
    VARIANTS = {
        "yarn-clamped": dict(swiglu_limit=0.3, swiglu_alpha=1.2),
        "rope-tied-window-3": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                   tie_word_embeddings=True, num_key_value_heads=4, sliding_window=3),
    }
    HEADS = {
        "GptOssModel": "AutoModel",
        "GptOssForCausalLM": "AutoModelForCausalLM",
        "GptOssForSequenceClassification": "AutoModelForSequenceClassification",
        "GptOssForTokenClassification": "AutoModelForTokenClassification",
    }
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    TRAINING_OVERRIDES = dict(output_router_logits=True)  # the load-balancing loss in the gradients too
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "rope_parameters", "layer_types", "sliding_window",
                               "swiglu_limit", "swiglu_alpha", "num_local_experts", "num_experts_per_tok")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        inputs = {**self.inputs(), "output_router_logits": True}
        ours, theirs = model(**inputs), reference(**inputs)
        for name in ("loss", "aux_loss", "logits"):  # the loss with router_aux_loss_coef times the aux loss
            torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), atol=1e-4, rtol=1e-4, msg=name)
        for got, expected in zip(ours.router_logits, theirs.router_logits, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """The same experts chosen as by the reference's bfloat16 model, and the logits within bfloat16's rounding:
        not the same bits, as the reference's attention on the CPU (step by step, its softmax rounded to bfloat16)
        and its grouped expert products round otherwise than the fused attention and per-expert products here."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 16, seed=7)), tolerance=0.08)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @torch.inference_mode()
    def test_half_precision_norms_round_as_the_references(self, tiny, dtype):
        """Each norm scales by its weight in float32 and rounds once, as the reference's (Llama's rounds, then
        scales: in bfloat16 that moves the routers' choices on real checkpoints); in float16 its weights stay
        float32, as the reference's _keep_in_fp32_modules keeps them."""
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRMSNorm

        theirs = transformers.AutoModelForCausalLM.from_pretrained(tiny[0], dtype=dtype)
        ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), tiny[0])
        x = (torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
        for name in ("model.norm", "model.layers.0.input_layernorm", "model.layers.1.post_attention_layernorm"):
            norm, their_norm = ours.get_submodule(name), theirs.get_submodule(name)
            assert isinstance(their_norm, GptOssRMSNorm)
            assert norm.weight.dtype == their_norm.weight.dtype == (torch.float32 if dtype == torch.float16 else dtype)
            assert torch.equal(norm(x), their_norm(x)), name

    # The step takes gpt-oss (below): the suite's refusal does not apply.
    test_the_cpu_kernel_refuses_the_family_and_generate_runs_the_layers = None

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_and_tokens(self, tiny):
        """from_pretrained gives the model the kernel's decoding step (sinks, windows on every other layer, YaRN, the
        routers' and experts' biases, the clamped SwiGLU), whose steps give the reference's logits and greedy tokens."""
        folder, reference, _ = tiny
        assert_kernel_steps_unless_refused(folder, reference, self.ids(1, 12, seed=9), "gpt_oss", None)

    def test_auto_classes_pick_the_gpt_oss_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is GptOssConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "GptOssModel"
        with pytest.raises(ValueError, match="no question-answering class for 'gpt_oss'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(folder)


_reference, _ids, _inputs = TestGptOss.reference, TestGptOss.ids, TestGptOss.inputs


def test_config_defaults_match_the_reference():
    ours, theirs = GptOssConfig(), transformers.GptOssConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "sliding_window", "layer_types",
        "num_local_experts", "num_experts_per_tok", "swiglu_alpha", "swiglu_limit", "router_aux_loss_coef",
        "output_router_logits", "attention_bias", "attention_dropout", "tie_word_embeddings", "initializer_range",
        "bos_token_id", "eos_token_id", "pad_token_id",
    ))
    assert ours.to_dict()["rope_parameters"] == dict(theirs.rope_parameters)
    assert ours.num_experts == 128 and GptOssConfig(num_experts=8).num_local_experts == 8


@pytest.mark.parametrize("values, field", [
    (dict(num_experts_per_tok=5, num_local_experts=4), "num_experts_per_tok"),
    (dict(swiglu_limit=-1.0), "swiglu_limit"),
    (dict(num_hidden_layers=2, layer_types=["sliding_attention"]), "layer_types"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 0}),
     "rope_scaling.original_max_position_embeddings"),
])
def test_config_refuses_bad_values_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field}="):
        GptOssConfig(**values)


@pytest.mark.parametrize("scaling", [
    dict(YARN),
    {**YARN, "truncate": True},
    {**YARN, "beta_fast": 8.0, "beta_slow": 2.0, "attention_factor": 1.5},
    {**YARN, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": True},
])
def test_yarn_frequencies_and_attention_factor_match_the_reference(scaling):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from openformers.models.layers import rope_attention_factor, rope_inverse_frequencies

    config = transformers.GptOssConfig(head_dim=16, max_position_embeddings=256, rope_parameters=scaling)
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    ours = {k: v for k, v in scaling.items() if k != "rope_theta"}
    torch.testing.assert_close(rope_inverse_frequencies(16, 100.0, ours), inv_freq, atol=0, rtol=1e-6)
    assert rope_attention_factor(ours) == pytest.approx(factor, rel=1e-12)


def _random_mxfp4(*shape, seed=0, exponents=(122, 130)):
    """Random MXFP4 blocks (..., G, 16) and scales (..., G) with exponents in the range `exponents` (127 is 2 ** 0),
    as a checkpoint stores them."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (*shape, 16), generator=generator, dtype=torch.uint8)
    scales = torch.randint(*exponents, shape, generator=generator, dtype=torch.uint8)
    return blocks, scales


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mxfp4_dequantizes_as_the_reference(dtype):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    from openformers.models.gpt_oss import dequantize_mxfp4

    blocks, scales = _random_mxfp4(3, 10, 2)
    expected = convert_moe_packed_tensors(blocks, scales, dtype=dtype)  # (3, 64, 10)
    got = dequantize_mxfp4(blocks, scales, dtype)
    assert got.dtype == dtype and got.shape == expected.shape == (3, 64, 10)
    assert torch.equal(got, expected)


def _write_mxfp4_folder(folder, reference):
    """`reference` saved to `folder` in the released layout: the experts' matrices as random MXFP4 `*_blocks` and
    `*_scales` (magnitudes up to 6 * 2 ** -5, as the reference's drawn weights) with quantization_config mxfp4, the
    reference's experts set to the values they hold (the reference's own dequantizing)."""
    from safetensors.torch import load_file, save_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    reference.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    config = reference.config
    E, C, I = config.num_local_experts, config.hidden_size, config.intermediate_size
    for i in range(config.num_hidden_layers):
        experts = reference.model.layers[i].mlp.experts
        for seed, (name, rows, columns) in enumerate((("gate_up_proj", 2 * I, C), ("down_proj", C, I))):
            blocks, scales = _random_mxfp4(E, rows, columns // 32, seed=10 * i + seed, exponents=(118, 123))
            key = f"model.layers.{i}.mlp.experts.{name}"
            del tensors[key]
            tensors[key + "_blocks"], tensors[key + "_scales"] = blocks, scales
            with torch.no_grad():
                getattr(experts, name).copy_(convert_moe_packed_tensors(blocks, scales, dtype=torch.float32))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    values = json.loads((folder / "config.json").read_text())
    values["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}
    (folder / "config.json").write_text(json.dumps(values))


@torch.inference_mode()
def test_a_folder_of_the_released_mxfp4_layout_loads(tmp_path):
    """The experts' matrices stored as `*_blocks` and `*_scales` with quantization_config mxfp4: dequantized at load
    to the reference's values (its weights set to the dequantized matrices), and saved back as floats without the
    quantization_config, which the reference loads."""
    reference = _reference(**TestGptOss.VARIANTS["yarn-clamped"])
    _write_mxfp4_folder(tmp_path, reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert "quantization_config" not in model.config.to_dict()
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "MXFP4 folder")
    model.save_pretrained(tmp_path / "saved")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert_outputs_close(outputs_of(reloaded.eval(), _inputs()), outputs_of(reference, _inputs()), "saved back")


def _quantized(folder, quantization):
    return load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, quantization=quantization), folder)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantization_packs_each_experts_matrices_alone(tiny_folder, quantization, monkeypatch):
    """int8 and int4 pack the experts' stacks too (kernels.PackedExperts): each expert's matrix as quantizing it
    alone gives, its biases and the clamped SwiGLU as they were; the logits are those of the unpacked weights (on
    the plain path, and through the kernel's products with their rounded inputs) and near the float model's;
    greedy generation runs, cached, and gives the full forward's picks."""
    float_model = load_quietly(AutoModelForCausalLM.from_pretrained, tiny_folder)
    model = _quantized(tiny_folder, quantization)
    assert_experts_packed_alone(model, float_model, quantization)
    ids = _ids(2, 20, seed=5)
    assert_quantized_products_are_the_unpacked_weights(model, float_model, quantization, ids, "model.layers.1.mlp", monkeypatch)
    with torch.inference_mode():
        error = (model(ids).logits - float_model(ids).logits).abs().max() / float_model(ids).logits.abs().max()
    assert error < {"int8": 0.1, "int4": 0.5}[quantization]  # the tiny model amplifies: see benchmarks/quantized_moe.py
    assert_quantized_generation_is_its_greedy_chain(model, ids[:1, :6])


def test_a_quantized_model_saves_its_packed_experts(tiny_folder, tmp_path):
    """save_pretrained writes a quantized model's packed tensors as they are, as for its linear layers (weight and
    scale under the stack's name); a cast keeps the scales' dtype."""
    from safetensors.torch import load_file

    model = _quantized(tiny_folder, "int8")
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    packed = model.model.layers[1].mlp.experts.down_proj
    for name in ("weight", "scale"):
        assert torch.equal(saved[f"model.layers.1.mlp.experts.down_proj.{name}"], getattr(packed, name))
    model.to(torch.bfloat16)
    assert packed.scale.dtype == torch.float32 and packed.weight.dtype == torch.int8
    assert model.model.layers[1].mlp.experts.down_proj_bias.dtype == torch.bfloat16


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_an_mxfp4_folder_loads_quantized_an_expert_at_a_time(tmp_path, quantization, monkeypatch):
    """With quantization set, the MXFP4 stacks are packed as they are read, an expert's matrix dequantized at a
    time (never a whole stack: dequantize_mxfp4 is not called), into what quantizing the dequantized model gives;
    int8 holds the MXFP4 values exactly, int4 (groups of 32 of scale and minimum, not the e2m1 grid) does not."""
    import copy

    from openformers import kernels
    from openformers.models import gpt_oss

    _write_mxfp4_folder(tmp_path, _reference(**TestGptOss.VARIANTS["yarn-clamped"]))
    dequantized = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    expected = kernels.quantize(copy.deepcopy(dequantized), quantization)
    assert not any(m.training for m in expected.modules())  # packed in the model's mode (eval)
    matrices = []
    monkeypatch.setattr(gpt_oss, "dequantize_mxfp4", None)  # the whole-stack path: not taken
    monkeypatch.setattr(gpt_oss, "mxfp4_matrix", lambda b, s, matrix=gpt_oss.mxfp4_matrix: matrices.append(
        b.shape) or matrix(b, s))
    model = _quantized(tmp_path, quantization)
    config = model.config
    assert len(matrices) == 2 * config.num_hidden_layers * config.num_local_experts
    assert model.state_dict().keys() == expected.state_dict().keys()
    for name, tensor in expected.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    ids = _ids(2, 20, seed=5)
    with torch.inference_mode():
        error = (model(ids).logits - dequantized(ids).logits).abs().max() / dequantized(ids).logits.abs().max()
    assert error < {"int8": 0.1, "int4": 0.5}[quantization]  # the tiny model amplifies: see benchmarks/quantized_moe.py
    experts = model.model.layers[0].mlp.experts
    exact = torch.equal(experts.gate_up_proj.dequantized(torch.float32).transpose(1, 2),
                        dequantized.model.layers[0].mlp.experts.gate_up_proj)
    assert exact == (quantization == "int8")


@torch.inference_mode()
def test_only_the_chosen_experts_run(tiny_model):
    from openformers.models.gpt_oss import GptOssExperts

    ran = []
    run = GptOssExperts.run
    GptOssExperts.run = lambda self, e, x: ran.append(e) or run(self, e, x)
    try:
        tiny_model(_ids(1, 1))
    finally:
        GptOssExperts.run = run
    top_k = tiny_model.config.num_experts_per_tok
    assert len(ran) == top_k * tiny_model.config.num_hidden_layers  # one token: its top-k experts in each layer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    _reference(**TestGptOss.VARIANTS["yarn-clamped"]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    reference = _reference(**TestGptOss.VARIANTS["yarn-clamped"])
    folder = tmp_path_factory.mktemp("chosen")
    reference.save_pretrained(folder)
    return load_quietly(AutoModelForCausalLM.from_pretrained, folder)


# GGUF: llama.cpp's converter writes gpt-oss's experts with gate and up apart, (E, out, in) in MXFP4, their biases
# (E, out) in floats, the sinks as `attn_sinks.weight`, the router as ffn_gate_inp and the q/k rows as they are.
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.layers": "blk", "model.norm": "output_norm", "lm_head": "output",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
    "mlp.router": "ffn_gate_inp", "self_attn.sinks": "attn_sinks.weight",
}


def _write_gpt_oss_gguf(path, reference):
    """The reference's weights as llama.cpp writes them, the experts' matrices in MXFP4; the reference's experts are
    set to the values those blocks hold first, so that both models compute with the same weights."""
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "gpt-oss")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(config.rope_parameters["factor"])
    writer.add_rope_scaling_orig_ctx_len(config.rope_parameters["original_max_position_embeddings"])
    kind = gguf.GGMLQuantizationType.MXFP4

    def add_mxfp4(name, w):  # w (E, out, in); the reference's value becomes what the blocks hold
        blocks = gguf.quants.quantize(w.numpy(), kind)
        writer.add_tensor(name, blocks, raw_dtype=kind)
        return torch.from_numpy(gguf.quants.dequantize(blocks, kind)).reshape(w.shape)

    for i, layer in enumerate(reference.model.layers):
        experts = layer.mlp.experts
        gate, up = experts.gate_up_proj[..., 0::2], experts.gate_up_proj[..., 1::2]  # (E, C, I) each
        gate = add_mxfp4(f"blk.{i}.ffn_gate_exps.weight", gate.transpose(1, 2).contiguous())
        up = add_mxfp4(f"blk.{i}.ffn_up_exps.weight", up.transpose(1, 2).contiguous())
        down = add_mxfp4(f"blk.{i}.ffn_down_exps.weight", experts.down_proj.transpose(1, 2).contiguous())
        experts.gate_up_proj.copy_(torch.stack([gate, up], dim=2).flatten(1, 2).transpose(1, 2))  # (E, C, 2I)
        experts.down_proj.copy_(down.transpose(1, 2))
        writer.add_tensor(f"blk.{i}.ffn_gate_exps.bias", experts.gate_up_proj_bias[:, 0::2].contiguous().numpy())
        writer.add_tensor(f"blk.{i}.ffn_up_exps.bias", experts.gate_up_proj_bias[:, 1::2].contiguous().numpy())
        writer.add_tensor(f"blk.{i}.ffn_down_exps.bias", experts.down_proj_bias.numpy())
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if ".experts." not in name:
            writer.add_tensor(gguf_name, tensor.numpy())
    finish_gguf(writer)


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _reference()  # llama.cpp's SwiGLU is gpt-oss's own (alpha 1.702, limit 7), which GGUF files do not hold
    _write_gpt_oss_gguf(tmp_path / "gpt-oss.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "gpt-oss.gguf")
    assert isinstance(model, GptOssForCausalLM)
    assert model.config.layer_types == reference.config.layer_types
    assert model.config.rope_scaling == {k: v for k, v in YARN.items() if k != "rope_theta"}
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_a_gpt_oss_folder_gets_the_tokenizer_class_the_reference_picks(tmp_path):
    """gpt-oss folders name PreTrainedTokenizerFast over a tokenizer.json (o200k harmony) with a chat template: the
    reference registers no class for gpt_oss, so both read it with the generic TokenizersBackend."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|endoftext|>", "<|start|>", "<|message|>", "<|end|>", "<|return|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    texts = ["<|start|>user<|message|>Hi there, how are you?<|end|>", "café  déjà vu\n", "12345 + 678"]
    tokenizer.train_from_iterator(texts * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_oss"}))
    template = "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|return|>", "pad_token": "<|endoftext|>",
        "chat_template": template,
    }))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "café 12345"}]
    assert ours.apply_chat_template(messages) == reference.apply_chat_template(messages)
    for text in texts:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text

"""Granite MoE (model_type "granitemoe") and Granite MoE with a shared expert ("granitemoeshared") against the
reference, on tiny random models it makes and saves.

Granite's four scalars set away from 1 and the weights drawn at std 0.15, so that a scalar, the router's choice, the
softmax over the best scores alone or the shared expert applied wrong moves the logits far past the tolerance. Through
DecoderFamilyTests: both heads the reference has, with the loss; cached decoding, left padding, greedy and beam
generation, a static cache; hidden states and attention weights; inputs_embeds; a training step's gradients (the
reference's fused experts are ours, under the checkpoints' names); saving both ways. Here: the router logits and the
load-balancing loss, each scalar and the shared expert shown to count, only the chosen experts run, the files saved
hold the reference's tensors and its in-memory layout loads, bfloat16 as the reference's, the CPU kernel's refusal,
the configs' defaults and refusals, GGUF files of llama.cpp's "granitemoe" architecture (with and without the shared
expert), and AutoTokenizer's class for both model types and Granite 4's (granitemoehybrid).
"""

import json

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_bfloat16_matches_the_reference,
    assert_experts_packed_alone,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_quantized_generation_is_its_greedy_chain,
    assert_quantized_products_are_the_unpacked_weights,
    assert_same_attributes,
    assert_training_step_matches,
    finish_gguf,
    lm_inputs,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GraniteMoeConfig, GraniteMoeSharedConfig
from openformers.models.granitemoe import GraniteMoeMoE, convert_gguf_state_dict, from_checkpoint_layout
from test_models_granite import SCALARS, assert_the_scalar_changes_the_logits

transformers = pytest.importorskip("transformers")


class TestGraniteMoe(DecoderFamilyTests):
    REFERENCE_CONFIG = "GraniteMoeConfig"
    TINY = dict(
        vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}, pad_token_id=0, initializer_range=0.15,
        **SCALARS,
    )
    VARIANTS = {
        "untied": {},  # the reference's default
        "tied-biased-top3": dict(tie_word_embeddings=True, attention_bias=True, num_experts_per_tok=3),
    }
    HEADS = {"GraniteMoeModel": "AutoModel", "GraniteMoeForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}

    def test_training_loss_and_gradients_match_the_reference(self, training_variant, tmp_path):
        """The loss and every gradient of a training step, with gradient checkpointing too: the reference's fused
        experts' and router's gradients under the checkpoints' names (input_linear, output_linear, router.layer)."""
        reference = self.reference(**self.VARIANTS[training_variant])
        model = load_saved(reference, tmp_path)
        assert_training_step_matches(
            model, reference, lm_inputs(self.ids(2, 9, seed=7)), checkpointing=(False, True),
            reference_grads=lambda r: from_checkpoint_layout({n: p.grad for n, p in r.named_parameters()}),
        )

    @torch.inference_mode()
    def test_router_logits_and_load_balancing_loss_match_the_reference(self, tiny):
        _, reference, model = tiny
        inputs = {**self.inputs(), "output_router_logits": True}
        ours, theirs = outputs_of(model, inputs), outputs_of(reference, inputs)
        assert len(ours["router_logits"]) == self.TINY["num_hidden_layers"] and "aux_loss" in ours
        assert all(scores.dtype == torch.float32 for scores in ours["router_logits"])
        assert_outputs_close(ours, theirs, "router logits")
        plain = outputs_of(model, self.inputs())
        assert (ours["loss"] - plain["loss"]).abs() > 1e-4  # the load-balancing loss counts, times its coefficient

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """The router's scores in float32 from bfloat16 products, the chosen experts' weights rounded to bfloat16: the
        reference's bits, and the same experts chosen."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    @torch.inference_mode()
    def test_saved_files_hold_the_references_tensors_and_its_in_memory_layout_loads(self, tiny, tmp_path):
        from safetensors import safe_open
        from safetensors.torch import save_file

        folder, reference, model = tiny
        model.save_pretrained(tmp_path / "ours")
        with safe_open(folder / "model.safetensors", "pt") as theirs, \
                safe_open(tmp_path / "ours" / "model.safetensors", "pt") as ours:
            assert sorted(ours.keys()) == sorted(theirs.keys())
            assert "model.layers.0.block_sparse_moe.input_linear.weight" in ours.keys()
        # the reference's state_dict() as it is in memory (experts.gate_up_proj, experts.down_proj, router.weight)
        reference.config.save_pretrained(tmp_path / "memory")
        state = reference.state_dict()
        assert "model.layers.0.block_sparse_moe.experts.gate_up_proj" in state
        save_file({name: t.contiguous() for name, t in state.items() if name != "lm_head.weight"
                   or not reference.config.tie_word_embeddings}, str(tmp_path / "memory" / "model.safetensors"))
        loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "memory")
        assert_outputs_close(outputs_of(loaded, self.inputs()), outputs_of(reference, self.inputs()), "in memory")

    @torch.inference_mode()
    def test_only_the_chosen_experts_run(self, tiny):
        model = tiny[2]
        blocks = [m for m in model.modules() if isinstance(m, GraniteMoeMoE)]
        ran = []
        for block in blocks:
            block.run_expert = lambda e, rows, block=block: ran.append(e) or type(block).run_expert(block, e, rows)
        try:
            model(self.ids(1, 1))
        finally:
            for block in blocks:
                del block.run_expert
        assert len(ran) == len(blocks) * model.config.num_experts_per_tok

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_or_refuses_attention_biases(self, tiny):
        """The kernel's step runs Granite's scalars, the experts read as views of their banks (and the shared MLP);
        the attention biases of the other variant it refuses, and generation runs the layers."""
        _, reference, model = tiny
        if model.config.attention_bias:
            assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3),
                                                               model.config.model_type, refused="attention_bias=True")
        else:
            assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))


class TestGraniteMoeShared(TestGraniteMoe):
    REFERENCE_CONFIG = "GraniteMoeSharedConfig"
    TINY = dict(TestGraniteMoe.TINY, shared_intermediate_size=40)
    VARIANTS = {"untied": {}}
    HEADS = {"GraniteMoeSharedModel": "AutoModel", "GraniteMoeSharedForCausalLM": "AutoModelForCausalLM"}

    @torch.inference_mode()
    def test_the_shared_expert_counts(self, tiny):
        _, reference, model = tiny
        inputs = self.inputs()
        expected = reference(**inputs).logits
        mlps = [layer.shared_mlp for layer in model.model.layers]
        saved = [mlp.output_linear.weight.clone() for mlp in mlps]
        try:
            for mlp in mlps:
                mlp.output_linear.weight.zero_()
            assert (model(**inputs).logits - expected).abs().max() > 1e-2
        finally:
            for mlp, weight in zip(mlps, saved):
                mlp.output_linear.weight.copy_(weight)
        torch.testing.assert_close(model(**inputs).logits, expected, atol=1e-4, rtol=1e-4)


_reference, _ids, _inputs = TestGraniteMoe.reference, TestGraniteMoe.ids, TestGraniteMoe.inputs


def _shared_reference(**overrides):
    return TestGraniteMoeShared.reference(**overrides)


@pytest.mark.parametrize("scalar", list(SCALARS))
@torch.inference_mode()
def test_each_scalar_changes_the_logits(scalar, tmp_path):
    assert_the_scalar_changes_the_logits(_reference(), _ids(1, 9), scalar, tmp_path)


@torch.inference_mode()
def test_a_shared_size_of_zero_is_granite_moes_layer(tmp_path):
    reference = _shared_reference(shared_intermediate_size=0)
    model = load_saved(reference, tmp_path)
    assert all(layer.shared_mlp is None for layer in model.model.layers)
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "no shared expert")


@pytest.mark.parametrize("ours, theirs", [(GraniteMoeConfig, "GraniteMoeConfig"),
                                          (GraniteMoeSharedConfig, "GraniteMoeSharedConfig")])
def test_config_defaults_match_the_reference(ours, theirs):
    ours, theirs = ours(), getattr(transformers, theirs)()
    assert_same_attributes(ours, theirs, [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
        "embedding_multiplier", "logits_scaling", "residual_multiplier", "attention_multiplier", "num_local_experts",
        "num_experts_per_tok", "output_router_logits", "router_aux_loss_coef",
        *(["shared_intermediate_size"] if hasattr(theirs, "shared_intermediate_size") else []),
    ])
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert "mlp_bias" not in ours.to_dict()


# A config.json with the sizes and scalars of ibm-granite/granite-3.0-1b-a400m (written here from its published config).
GRANITE_1B_A400M = {
    "architectures": ["GraniteMoeForCausalLM"], "model_type": "granitemoe", "vocab_size": 49155, "hidden_size": 1024,
    "intermediate_size": 512, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 8,
    "num_local_experts": 32, "num_experts_per_tok": 8, "max_position_embeddings": 4096, "rope_theta": 10000.0,
    "rope_scaling": None, "rms_norm_eps": 1e-6, "attention_dropout": 0.1, "attention_bias": False,
    "embedding_multiplier": 12.0, "attention_multiplier": 0.015625, "residual_multiplier": 0.22,
    "logits_scaling": 6.0, "router_aux_loss_coef": 0.0, "tie_word_embeddings": True, "bos_token_id": 0,
    "eos_token_id": 0, "pad_token_id": 0, "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize("values", [GRANITE_1B_A400M, dict(GRANITE_1B_A400M, model_type="granitemoeshared",
                                                           shared_intermediate_size=1024)], ids=["moe", "shared"])
def test_a_released_config_reads_as_the_reference_reads_it(values, tmp_path):
    from test_models_mixtral import assert_reads_a_real_config_as_the_reference

    assert_reads_a_real_config_as_the_reference(tmp_path, values, (
        "hidden_size", "intermediate_size", "num_key_value_heads", "num_local_experts", "num_experts_per_tok",
        "embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling",
        "router_aux_loss_coef", "tie_word_embeddings", "attention_dropout",
    ))


@pytest.mark.parametrize("values, message", [
    (dict(num_local_experts=0), "num_local_experts=0"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok=5"),
    (dict(router_aux_loss_coef=-0.1), "router_aux_loss_coef=-0.1"),
    (dict(logits_scaling=0), "logits_scaling=0"),
    (dict(residual_multiplier="0.22"), "residual_multiplier='0.22'"),
    (dict(shared_intermediate_size=-8), "shared_intermediate_size=-8"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        GraniteMoeSharedConfig(**{**TestGraniteMoeShared.TINY, **values})
    values = {"model_type": "granitemoeshared", **TestGraniteMoeShared.TINY, **values}
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "granitemoe" checkpoint (GraniteMoeModel in convert_hf_to_gguf.py, for
# both families): Granite's metadata, names and permuted q/k rows; the experts' count and use; input_linear split into
# ffn_gate_exps and ffn_up_exps, output_linear as ffn_down_exps, the router as ffn_gate_inp; a shared expert's size
# and its input_linear split into ffn_gate_shexp and ffn_up_shexp, its output_linear as ffn_down_shexp.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "block_sparse_moe.router": "ffn_gate_inp", "block_sparse_moe.experts.down_proj": "ffn_down_exps.weight",
    "shared_mlp.output_linear": "ffn_down_shexp",
}
GGUF_HALVES = {"block_sparse_moe.experts.gate_up_proj": ("ffn_gate_exps", "ffn_up_exps"),
               "shared_mlp.input_linear.weight": ("ffn_gate_shexp", "ffn_up_shexp")}


@pytest.mark.parametrize("quantization, overrides", [
    ("int8", {}), ("int4", dict(intermediate_size=32)), ("int8", dict(shared_intermediate_size=40))])
def test_quantization_packs_each_experts_matrices_alone(quantization, overrides, tmp_path, monkeypatch):
    """int8 and int4 pack the stacked experts (`input_linear`, `output_linear`) too, each expert's matrix as
    quantizing it alone gives (kernels.PackedExperts); the logits are those of the unpacked weights on the plain
    path, the sparse block's through the kernel's products those of the plain path with their rounded inputs, and
    near the float model's; greedy generation runs, cached, and gives the full forward's picks. With a shared
    expert, as Granite MoE's."""
    shared = "shared_intermediate_size" in overrides
    reference = _shared_reference(**overrides) if shared else _reference(**overrides)
    float_model = load_saved(reference, tmp_path)
    model = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, quantization=quantization), tmp_path)
    assert_experts_packed_alone(model, float_model, quantization)
    ids = _ids(2, 20, seed=5)
    block = "model.layers.1.block_sparse_moe"
    assert_quantized_products_are_the_unpacked_weights(model, float_model, quantization, ids, block, monkeypatch)
    with torch.inference_mode():
        error = (model(ids).logits - float_model(ids).logits).abs().max() / float_model(ids).logits.abs().max()
    assert error < {"int8": 0.1, "int4": 0.5}[quantization]
    assert_quantized_generation_is_its_greedy_chain(model, ids[:1, :6])


def test_int4_refuses_experts_whose_inputs_are_not_groups_of_32(tmp_path):
    load_saved(_reference(), tmp_path)  # intermediate_size 24: output_linear's experts take 24 inputs
    with pytest.raises(ValueError, match="these experts' matrices have 24 inputs; use quantization='int8'"):
        AutoModelForCausalLM.from_pretrained(tmp_path, quantization="int4")


def _write_gguf(path, reference, expert_count=True):
    import gguf

    from decoder_parity import llama_cpp_tensors

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "granitemoe")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if expert_count:
        writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    if getattr(config, "shared_intermediate_size", 0):
        writer.add_expert_shared_feed_forward_length(config.shared_intermediate_size)
    writer.add_embedding_scale(config.embedding_multiplier)
    writer.add_residual_scale(config.residual_multiplier)
    writer.add_attention_scale(config.attention_multiplier)
    writer.add_logit_scale(config.logits_scaling)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES, permute_heads=True):
        halves = next((pair for end, pair in GGUF_HALVES.items() if name.endswith(end)), None)
        if halves is None:
            writer.add_tensor(gguf_name, tensor.numpy())
            continue
        layer = name.split(".")[2]
        for half, w in zip(halves, np.split(tensor.numpy(), 2, axis=-2)):
            writer.add_tensor(f"blk.{layer}.{half}.weight", np.ascontiguousarray(w))
    finish_gguf(writer)


@pytest.mark.parametrize("shared", [False, True], ids=["granitemoe", "granitemoeshared"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(shared, tmp_path):
    reference = _shared_reference(tie_word_embeddings=True) if shared else _reference(attention_bias=True)
    _write_gguf(tmp_path / "granitemoe.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "granitemoe.gguf")
    assert type(model).__name__ == type(reference).__name__
    config = model.config
    assert (config.num_local_experts, config.num_experts_per_tok) == (4, 2)
    assert config.tie_word_embeddings == shared and config.attention_bias == (not shared)
    assert getattr(config, "shared_intermediate_size", 0) == (40 if shared else 0)
    for name, value in SCALARS.items():  # float32 in the file
        assert getattr(config, name) == pytest.approx(value, rel=1e-6), name
    inputs = {**_inputs(), "output_router_logits": True}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    model.save_pretrained(tmp_path / "saved")  # the fused halves, saved as the reference reads them
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert_outputs_close(outputs_of(theirs, inputs), outputs_of(reference, inputs), "GGUF saved")


def test_gguf_without_an_expert_count_is_refused(tmp_path):
    _write_gguf(tmp_path / "broken.gguf", _reference(), expert_count=False)
    with pytest.raises(ValueError, match="lacks granitemoe.expert_count"):
        openformers.AutoConfig.from_pretrained(tmp_path / "broken.gguf")


def test_a_gguf_half_read_alone_is_refused_by_name():
    # A quantized GGUF load converts each matrix alone (weights.GGUFLayerReader): half of a fused matrix cannot be.
    config = GraniteMoeSharedConfig(**TestGraniteMoeShared.TINY)
    with pytest.raises(ValueError, match="blk.0.ffn_gate_shexp.weight is half of .*shared_mlp.input_linear"):
        convert_gguf_state_dict({"blk.0.ffn_gate_shexp.weight": torch.zeros(40, 32)}, config)


@pytest.mark.parametrize("model_type", ["granitemoe", "granitemoeshared", "granitemoehybrid"])
def test_auto_tokenizer_gives_the_references_class(model_type, tmp_path):
    # The reference registers its generic TokenizersBackend for the three (Granite 4's hybrids too), over the
    # GPT2Tokenizer their folders name.
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={"<|end_of_text|>": 0, "a": 1, "b": 2}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "eos_token": "<|end_of_text|>", "add_bos_token": False}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    assert ours("abba")["input_ids"] == reference("abba")["input_ids"]

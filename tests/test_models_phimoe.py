"""PhiMoE against the reference: tiny random models made by transformers, saved and loaded both ways.

TestPhimoe runs the common decoder and routed-experts tests (tests/decoder_suite.py) and Mixtral's experts' tests
(test_models_mixtral.MixtralExpertsTests) in variants that change the computation: biases on the attention and the
head, longrope with its mscales, the sparsemixer's softmax over several near scores (router_jitter_noise 0.5), and
tied embeddings with a sliding window and no biases. Then what is PhiMoE's own: the training forward's random draws
(Gumbel picks, the midpoint factors, the input jitter drawn twice) and the router's estimated gradient, against the
reference with the same seed; positions past original_max_position_embeddings turned with the long factors; the config's defaults and
refusals; GGUF files as llama.cpp's converter writes them (its "phimoe" architecture), and the refusal of one without
its expert count.
"""

import json
import math

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    assert_training_step_matches,
    finish_gguf,
    lm_inputs,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import reference_grads_as_checkpoint
from openformers import PhimoeConfig
from test_models_mixtral import MixtralExpertsTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2, pad_token_id=0,
    initializer_range=0.15, attention_bias=True, lm_head_bias=True, router_jitter_noise=0.5,
)


def longrope(original: int) -> dict:
    return {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": original,
            "short_factor": [1.0, 1.3, 2.0, 3.5], "long_factor": [2.0, 4.0, 5.5, 9.0],
            "short_mscale": 1.2, "long_mscale": 1.45}


class TestPhimoe(MixtralExpertsTests):
    REFERENCE_CONFIG = "PhimoeConfig"
    TINY = TINY
    VARIANTS = {
        "biases-near-scores": {},
        "longrope": dict(rope_parameters=longrope(original=64)),
        "tied-no-biases-best-only-windowed": dict(tie_word_embeddings=True, attention_bias=False, lm_head_bias=False,
                                                  router_jitter_noise=0.01, sliding_window=4),
    }
    HEADS = {
        "PhimoeModel": "AutoModel",
        "PhimoeForCausalLM": "AutoModelForCausalLM",
        "PhimoeForSequenceClassification": "AutoModelForSequenceClassification",
    }
    TRAINING_OVERRIDES = dict(router_aux_loss_coef=0.5, output_router_logits=True)
    EXPERT_BLOCK = "block_sparse_moe"
    EXPERT_NAMES = ("w1", "w3", "w2")

    @classmethod
    def reference_grads(cls, reference) -> dict:
        grads = reference_grads_as_checkpoint(reference, cls.EXPERT_BLOCK, cls.EXPERT_NAMES)
        return {name.replace(".mlp.router.", ".block_sparse_moe.gate."): g for name, g in grads.items()}

    def test_training_loss_and_gradients_match_the_reference(self, training_variant, tmp_path):
        """The training forward draws its experts (and their midpoint factors, and the input's jitter), so each
        forward starts from one seed: the reference's loss and every gradient, the router's the sparsemixer's
        estimate, with gradient checkpointing too (which replays the draws)."""
        overrides = {**self.VARIANTS[training_variant], **self.TRAINING_OVERRIDES, "input_jitter_noise": 0.2}
        reference = self.reference(**overrides)
        model = load_saved(reference, tmp_path)
        inputs = lm_inputs(self.ids(2, 9, seed=7))
        assert_training_step_matches(model, reference, inputs, checkpointing=(False, True),
                                     reference_grads=self.reference_grads, seed=11)
        with torch.no_grad():  # the draws count: the eval forward's loss is another
            torch.manual_seed(11)
            drawn = model(**inputs).loss
            assert (model.eval()(**inputs).loss - drawn).abs() > 1e-3

    @torch.inference_mode()
    def test_int8_quantization_keeps_the_router_in_float(self, variant, tmp_path):
        """Mixtral's check on weights at the reference's initializer_range (0.02): at 0.15 int8's errors in the
        router's inputs change which experts are picked, which moves the logits far whatever the routing."""
        from test_models_mixtral import assert_int8_keeps_the_router_in_float

        load_saved(self.reference(**{**self.VARIANTS[variant], "initializer_range": 0.02}), tmp_path)
        assert_int8_keeps_the_router_in_float(tmp_path)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_and_tokens(self, tiny):
        """from_pretrained gives the model the kernel's decoding step (LayerNorms with biases, the attention's and the
        head's biases, longrope, the sparsemixer's two masked softmaxes), whose steps give the reference's logits and
        greedy tokens."""
        folder, reference, _ = tiny
        assert_kernel_steps_unless_refused(folder, reference, self.ids(1, 12, seed=9), "phimoe", None)

    @torch.inference_mode()
    def test_the_router_weights_are_the_softmax_of_the_near_scores(self, tiny):
        """With router_jitter_noise 0.5 the weights are softmaxes over several scores, not ones: a routing that
        weighted each pick by 1 (or by the softmax of all the scores) would move the logits."""
        from openformers.models import phimoe

        _, reference, model = tiny
        if model.config.router_jitter_noise != 0.5:
            pytest.skip("the variant with near scores")
        scores = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
        weights, chosen = phimoe.sparsemixer(scores, 0.5, training=False)
        assert (weights < 0.99).any() and (chosen[:, 0] == scores.argmax(-1)).all()
        assert (chosen[:, 0] != chosen[:, 1]).all()
        inputs = self.inputs()
        expected = outputs_of(reference, inputs)["logits"]
        original = phimoe.sparsemixer
        # the layers' routing, which the patch changes (the CPU kernel's prompt step routes in decode.cpp)
        step, model.model.accelerated_step = model.model.accelerated_step, None
        try:
            phimoe.sparsemixer = lambda s, eps, training: (original(s, eps, training)[0].clamp(min=1),
                                                           original(s, eps, training)[1])
            assert (outputs_of(model, inputs)["logits"] - expected).abs().max() > 1e-2
        finally:
            phimoe.sparsemixer = original
            model.model.accelerated_step = step


@torch.inference_mode()
def test_positions_past_the_original_context_turn_with_the_long_factors(tmp_path):
    """Past original_max_position_embeddings, positions turn with the long factors scaled by long_mscale (Phi-3's
    rule, Microsoft's PhiMoE code's and llama.cpp's): what the reference computes when its short factors are the long
    ones (its PhiMoE keeps the short factors at every length and switches only the mscale). Within it, the short
    factors and short_mscale, as the reference."""
    rope = longrope(original=8)
    reference = TestPhimoe.reference(rope_parameters=rope)
    model = load_saved(reference, tmp_path / "ours")
    as_long = TestPhimoe.reference(rope_parameters={**rope, "short_factor": rope["long_factor"]})
    short, long = TestPhimoe.ids(1, 8, seed=4), TestPhimoe.ids(2, 12, seed=4)
    torch.testing.assert_close(model(short).logits, reference(short).logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(long).logits, as_long(long).logits, atol=1e-4, rtol=1e-4)
    assert (model(long).logits - reference(long).logits).abs().max() > 1e-2


def test_config_defaults_match_the_reference():
    ours, theirs = PhimoeConfig(), transformers.PhimoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "sliding_window", "num_experts_per_tok",
        "num_local_experts", "output_router_logits", "router_aux_loss_coef", "router_jitter_noise",
        "input_jitter_noise", "attention_bias", "lm_head_bias",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


# A config.json in the form of microsoft/Phi-3.5-MoE-instruct's (its sizes and fields, its longrope scaling's form
# with 64 made-up factors each, one layer).
PHI35_MOE = {
    "architectures": ["PhiMoEForCausalLM"], "model_type": "phimoe", "vocab_size": 32064, "hidden_size": 4096,
    "intermediate_size": 6400, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_local_experts": 16, "num_experts_per_tok": 2, "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "attention_bias": True,
    "lm_head_bias": True, "router_jitter_noise": 0.01, "input_jitter_noise": 0.01, "router_aux_loss_coef": 0.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 32000,
    "hidden_act": "silu", "attention_dropout": 0.0, "torch_dtype": "bfloat16",
    "rope_scaling": {"type": "longrope", "short_factor": [1.0 + i / 64 for i in range(64)],
                     "long_factor": [1.0 + i / 8 for i in range(64)], "short_mscale": 1.243163121016122,
                     "long_mscale": 1.243163121016122, "original_max_position_embeddings": 4096},
}


def test_a_released_config_reads_as_the_reference_reads_it(tmp_path):
    from test_models_mixtral import assert_reads_a_real_config_as_the_reference

    assert_reads_a_real_config_as_the_reference(tmp_path, PHI35_MOE, (
        "hidden_size", "intermediate_size", "num_key_value_heads", "num_local_experts", "num_experts_per_tok",
        "router_jitter_noise", "input_jitter_noise", "attention_bias", "lm_head_bias", "sliding_window",
    ))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    scaling = ours.model_rope_scaling()
    assert scaling["original_max_position_embeddings"] == 4096 and scaling["attention_factor"] == 1.243163121016122


@pytest.mark.parametrize("values, message", [
    (dict(num_experts_per_tok=1), "num_experts_per_tok=1"),
    (dict(num_local_experts=0), "num_local_experts=0"),
    (dict(router_jitter_noise=-0.1), "router_jitter_noise=-0.1"),
    (dict(input_jitter_noise=1.5), "input_jitter_noise=1.5"),
    (dict(rope_scaling={**longrope(8), "short_mscale": None}), "rope_scaling.short_mscale=None"),
    (dict(rope_scaling={**longrope(8), "long_factor": [1.0]}), r"rope_scaling.long_factor=\[1.0\]"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_type='linear'"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        PhimoeConfig(**{**TINY, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phimoe", **TINY, **values}))
    with pytest.raises(ValueError, match=message):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a PhiMoE checkpoint (its "phimoe" architecture, Phi-3's metadata): the
# saved file's tensors under Llama's llama.cpp names, each layer's experts stacked per projection, the rows as they
# are, and longrope as two factor tensors with one attention factor, which the converter computes from the context
# lengths (sqrt(1 + ln(context / original) / ln(original))): the variant's mscales are that factor. No key holds the
# sparsemixer's router_jitter_noise (llama.cpp routes by the softmax's top two): the variants have Phi-3.5-MoE's 0.01.
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "block_sparse_moe.gate": "ffn_gate_inp",
}
GGUF_EXPERTS = {"w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}
CONVERTERS_FACTOR = (1 + math.log(256 / 64) / math.log(64)) ** 0.5
GGUF_VARIANTS = {
    "biases": dict(router_jitter_noise=0.01),
    "longrope": dict(router_jitter_noise=0.01, rope_parameters={
        **longrope(original=64), "short_mscale": CONVERTERS_FACTOR, "long_mscale": CONVERTERS_FACTOR}),
    "tied-no-biases-best-only-windowed": TestPhimoe.VARIANTS["tied-no-biases-best-only-windowed"],
}


def _write_gguf(path, reference, folder, expert_count=True):
    import gguf
    from safetensors.torch import load_file

    config = reference.config
    reference.save_pretrained(folder)
    saved = load_file(folder / "model.safetensors")  # Mixtral's names, as the Hub's files hold them
    writer = gguf.GGUFWriter(str(path), "phimoe")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_sliding_window(config.sliding_window or 0)
    writer.add_expert_used_count(config.num_experts_per_tok)
    if expert_count:
        writer.add_expert_count(config.num_local_experts)
    rope = config.rope_parameters
    if rope["rope_type"] == "longrope":
        original = rope["original_max_position_embeddings"]
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_rope_scaling_attn_factors(
            (1 + math.log(config.max_position_embeddings / original) / math.log(original)) ** 0.5)
        writer.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    experts = {}
    for name, tensor in saved.items():
        if ".experts." in name:  # model.layers.N.block_sparse_moe.experts.E.wK.weight
            layer, kind = int(name.split(".")[2]), name.split(".")[-2]
            experts.setdefault((layer, kind), []).append((int(name.split(".")[5]), tensor))
            continue
        for hf, cpp in GGUF_NAMES.items():
            name = name.replace(hf, cpp)
        writer.add_tensor(name, tensor.numpy())
    for (layer, kind), tensors in experts.items():
        stacked = torch.stack([tensor for _, tensor in sorted(tensors, key=lambda item: item[0])])
        writer.add_tensor(f"blk.{layer}.{GGUF_EXPERTS[kind]}.weight", stacked.numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(GGUF_VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = TestPhimoe.reference(**GGUF_VARIANTS[variant])
    _write_gguf(tmp_path / "phimoe.gguf", reference, tmp_path / "saved")
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "phimoe.gguf")
    assert type(model).__name__ == "PhimoeForCausalLM"
    assert_same_attributes(model.config, reference.config, ("attention_bias", "lm_head_bias", "tie_word_embeddings",
                                                            "sliding_window", "num_local_experts"))
    inputs = TestPhimoe.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


def test_gguf_without_the_expert_count_is_refused(tmp_path):
    _write_gguf(tmp_path / "phimoe.gguf", TestPhimoe.reference(), tmp_path / "saved", expert_count=False)
    with pytest.raises(ValueError, match="lacks the GGUF metadata key phimoe.expert_count"):
        openformers.AutoConfig.from_pretrained(tmp_path / "phimoe.gguf")

"""Qwen3-MoE against the reference: tiny random models made by transformers, saved and loaded both ways.

TestQwen3Moe runs the common decoder, routed-experts and Mixtral-block tests (tests/decoder_suite.py,
tests/test_models_mixtral.MixtralExpertsTests: each head's outputs and losses, the router scores, the load-balancing
loss in a training step's gradients, generation, caches, left padding, saving both ways, bfloat16, int8 routers, the
CPU kernel's step) on variants with dense layers among the sparse ones (decoder_sparse_step, mlp_only_layers),
norm_topk_prob both ways, tied embeddings and the sliding window; then the family's config, its rule for sparse
layers and its GGUF files.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    load_saved,
)
from openformers import AutoModelForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
from test_models_mixtral import (
    MixtralExpertsTests,
    assert_reads_a_real_config_as_the_reference,
    batch,
    head_outputs,
    write_moe_gguf,
)

transformers = pytest.importorskip("transformers")

# head_dim 12 is not hidden_size // num_attention_heads (8): Qwen3 sizes its heads on their own.
TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=256, num_experts=4,
    num_experts_per_tok=2, rms_norm_eps=1e-5, pad_token_id=0,
)


class DenseLayersAmongSparseTests(MixtralExpertsTests):
    """What Qwen3-MoE and Qwen2-MoE (whose configs make dense layers among the sparse ones) check beyond the
    Mixtral block's tests: every head made with a dense layer, and a training step with every other layer sparse."""

    HEAD_OVERRIDES = dict(num_labels=3, mlp_only_layers=[1])
    # every other layer sparse, the routing weights renormalized, and the load-balancing loss weighed enough that a
    # wrong one moves the loss and gradients
    TRAINING_OVERRIDES = dict(router_aux_loss_coef=0.5, decoder_sparse_step=2, norm_topk_prob=True,
                              output_router_logits=True)

    @torch.inference_mode()
    def test_a_model_without_sparse_layers_has_no_aux_loss(self, tmp_path):
        reference = self.reference(mlp_only_layers=list(range(self.TINY["num_hidden_layers"])))
        model = load_saved(reference, tmp_path)
        out = model(*batch(), output_router_logits=True)
        assert out.router_logits == () and out.aux_loss is None
        torch.testing.assert_close(out.logits, reference(*batch()).logits, atol=1e-4, rtol=1e-4)


class TestQwen3Moe(DenseLayersAmongSparseTests):
    REFERENCE_CONFIG = "Qwen3MoeConfig"
    TINY = TINY
    VARIANTS = {
        "all-sparse": {},
        "mixed-normed-tied": dict(decoder_sparse_step=2, mlp_only_layers=[2], norm_topk_prob=True,
                                  tie_word_embeddings=True),
        "windowed": dict(use_sliding_window=True, sliding_window=4, mlp_only_layers=[0]),
    }
    HEADS = {
        "Qwen3MoeModel": "AutoModel",
        "Qwen3MoeForCausalLM": "AutoModelForCausalLM",
        "Qwen3MoeForSequenceClassification": "AutoModelForSequenceClassification",
        "Qwen3MoeForTokenClassification": "AutoModelForTokenClassification",
        "Qwen3MoeForQuestionAnswering": "AutoModelForQuestionAnswering",
    }

    @torch.inference_mode()
    def test_every_head_saves_what_the_reference_loads_and_back(self, tiny_head, tmp_path):
        super().test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["num_experts"] == config["num_local_experts"] == TINY["num_experts"]  # both names, as both read


def test_config_defaults_match_the_reference():
    ours, theirs = Qwen3MoeConfig(), transformers.Qwen3MoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "attention_bias", "use_sliding_window",
        "sliding_window", "tie_word_embeddings", "bos_token_id", "eos_token_id", "decoder_sparse_step",
        "moe_intermediate_size", "num_experts_per_tok", "num_experts", "num_local_experts", "norm_topk_prob",
        "output_router_logits", "router_aux_loss_coef", "mlp_only_layers",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.head_dim == theirs.hidden_size // theirs.num_attention_heads


# Qwen3-30B-A3B's config.json.
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960,
    "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768,
    "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}


def test_qwen3_30b_a3b_config_reads_as_the_reference_reads_it(tmp_path):
    assert_reads_a_real_config_as_the_reference(tmp_path, QWEN3_30B_A3B, (
        "hidden_size", "intermediate_size", "moe_intermediate_size", "num_key_value_heads", "head_dim", "num_experts",
        "num_local_experts", "num_experts_per_tok", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers",
        "sliding_window", "rms_norm_eps", "max_position_embeddings",
    ))


def test_sparse_layers_follow_the_reference_rule():
    config = Qwen3MoeConfig(**{**TINY, "num_hidden_layers": 6}, decoder_sparse_step=2, mlp_only_layers=[3])
    reference = transformers.Qwen3MoeModel(transformers.Qwen3MoeConfig(**{**TINY, "num_hidden_layers": 6},
                                                                       decoder_sparse_step=2, mlp_only_layers=[3]))
    ours = openformers.Qwen3MoeModel(config)
    expected = [type(layer.mlp).__name__ == "Qwen3MoeSparseMoeBlock" for layer in reference.layers]
    assert [type(layer.mlp).__name__ == "Qwen3MoeSparseMoeBlock" for layer in ours.layers] == expected
    assert expected == [False, True, False, False, False, True]
    dense = Qwen3MoeConfig(**{**TINY, "num_experts": 0, "num_experts_per_tok": 1})
    assert not any(dense.is_sparse(i) for i in range(dense.num_hidden_layers))
    with pytest.raises(ValueError, match="mlp_only_layers"):
        Qwen3MoeConfig(mlp_only_layers="all")


# A GGUF written the way llama.cpp's converter writes a "qwen3moe" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}


@pytest.mark.parametrize("variant", [dict(), dict(tie_word_embeddings=True, mlp_only_layers=[1])],
                         ids=["untied", "tied-with-a-dense-layer"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, variant):
    import gguf

    # llama.cpp renormalizes qwen3moe's routing weights
    reference = TestQwen3Moe.reference(norm_topk_prob=True, **variant)
    config = reference.config
    writer = gguf.GGUFWriter(str(tmp_path / "qwen3moe.gguf"), "qwen3moe")
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_expert_count(config.num_experts)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    write_moe_gguf(writer, reference, GGUF_NAMES, permute_heads=False)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "qwen3moe.gguf")
    assert isinstance(model, Qwen3MoeForCausalLM) and model.config.head_dim == TINY["head_dim"]
    assert model.config.norm_topk_prob and model.config.mlp_only_layers == variant.get("mlp_only_layers", [])
    assert model.config.moe_intermediate_size == TINY["moe_intermediate_size"]
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "qwen3moe.gguf").model_type == "qwen3_moe"


def test_gguf_without_an_expert_count_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "broken.gguf"), "qwen3moe")
    write_moe_gguf(writer, TestQwen3Moe.reference(), GGUF_NAMES, permute_heads=False)
    with pytest.raises(ValueError, match="expert_count"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "broken.gguf")

"""Qwen2-MoE against the reference: tiny random models made by transformers, saved and loaded both ways.

TestQwen2Moe runs the common decoder, routed-experts and Mixtral-block tests (tests/decoder_suite.py,
tests/test_models_mixtral.MixtralExpertsTests, tests/test_models_qwen3_moe.DenseLayersAmongSparseTests: each head's
outputs and losses, the router scores, the load-balancing loss in a training step's gradients, generation, caches,
left padding, saving both ways, bfloat16, the CPU kernel's step) and adds the shared expert and its gate. The weights
are drawn at std 0.15, so that the shared expert and its gate move the logits far past the tolerance. The variants
cover dense layers among the sparse ones (decoder_sparse_step, mlp_only_layers), norm_topk_prob both ways, q/k/v
biases both ways, tied embeddings and the sliding window; then the family's config, its rules for sparse layers and
the window, and its GGUF files.
"""

import json

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
)
from openformers import AutoModelForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM
from test_models_mixtral import (
    assert_int8_keeps_the_router_in_float,
    assert_reads_a_real_config_as_the_reference,
    batch,
    head_outputs,
    write_moe_gguf,
)
from test_models_qwen3_moe import DenseLayersAmongSparseTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=24,
    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_experts=4,
    num_experts_per_tok=2, rms_norm_eps=1e-5, pad_token_id=0, initializer_range=0.15,
)


class TestQwen2Moe(DenseLayersAmongSparseTests):
    REFERENCE_CONFIG = "Qwen2MoeConfig"
    TINY = TINY
    VARIANTS = {
        "all-sparse": {},
        "mixed-normed-tied-unbiased": dict(decoder_sparse_step=2, mlp_only_layers=[2], norm_topk_prob=True,
                                           tie_word_embeddings=True, qkv_bias=False),
        "windowed": dict(use_sliding_window=True, sliding_window=4, layer_types=["sliding_attention"] * 3,
                         mlp_only_layers=[0]),
    }
    HEADS = {
        "Qwen2MoeModel": "AutoModel",
        "Qwen2MoeForCausalLM": "AutoModelForCausalLM",
        "Qwen2MoeForSequenceClassification": "AutoModelForSequenceClassification",
        "Qwen2MoeForTokenClassification": "AutoModelForTokenClassification",
        "Qwen2MoeForQuestionAnswering": "AutoModelForQuestionAnswering",
    }

    @torch.inference_mode()
    def test_the_shared_expert_and_its_gate_count(self, tiny):
        """Each sparse layer's shared expert, scaled by its sigmoid gate, moves the logits well past the tolerance: a
        model without it, or without its gate, is far from the reference."""
        _, reference, model = tiny
        ids, mask = batch()
        expected = reference(ids, attention_mask=mask).logits
        blocks = [layer.mlp for layer in model.model.layers if hasattr(layer.mlp, "shared_expert")]
        assert blocks
        for part in ("shared_expert", "shared_expert_gate"):
            weights = [{k: v.clone() for k, v in getattr(block, part).state_dict().items()} for block in blocks]
            for block, state in zip(blocks, weights):
                getattr(block, part).load_state_dict({k: torch.zeros_like(v) for k, v in state.items()})
            try:
                assert (model(ids, attention_mask=mask).logits - expected).abs().max() > 1e-2, part
            finally:
                for block, state in zip(blocks, weights):
                    getattr(block, part).load_state_dict(state)
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_every_head_saves_what_the_reference_loads_and_back(self, tiny_head, tmp_path):
        super().test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["num_experts"] == TINY["num_experts"] and "num_local_experts" not in config
        assert config["shared_expert_intermediate_size"] == TINY["shared_expert_intermediate_size"]
        assert config["qkv_bias"] is True

    def test_auto_classes_pick_the_qwen2_moe_classes(self, tiny_head):
        name, folder, _, _ = tiny_head
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Qwen2MoeConfig
        model = load_quietly(getattr(openformers, self.HEADS[name]).from_pretrained, folder)
        assert type(model) is getattr(openformers, name)

    @torch.inference_mode()
    def test_int8_quantization_keeps_the_router_in_float(self, tmp_path):
        """The routers and the shared experts' gates, at the reference's own init (std 0.02), where int8's rounding
        stays within the Mixtral test's tolerance."""
        from openformers.models.mixtral import Router

        self.reference(initializer_range=0.02).save_pretrained(tmp_path)
        assert_int8_keeps_the_router_in_float(tmp_path)
        packed = AutoModelForCausalLM.from_pretrained(tmp_path, quantization="int8")
        gates = [layer.mlp.shared_expert_gate for layer in packed.model.layers]
        assert all(type(g) is Router and g.weight.dtype == torch.float32 for g in gates)


def test_config_defaults_match_the_reference():
    ours, theirs = Qwen2MoeConfig(), transformers.Qwen2MoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "use_sliding_window", "max_window_layers", "layer_types", "tie_word_embeddings", "bos_token_id",
        "eos_token_id", "decoder_sparse_step", "moe_intermediate_size", "shared_expert_intermediate_size",
        "num_experts_per_tok", "num_experts", "norm_topk_prob", "output_router_logits", "router_aux_loss_coef",
        "mlp_only_layers", "qkv_bias", "attention_dropout",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.head_dim == theirs.hidden_size // theirs.num_attention_heads
    assert ours.sliding_window is None and theirs.sliding_window == 0  # the reference's 0: no window


# Qwen1.5-MoE-A2.7B's config.json.
QWEN15_MOE_A27B = {
    "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21,
    "model_type": "qwen2_moe", "moe_intermediate_size": 1408, "norm_topk_prob": False, "num_attention_heads": 16,
    "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
    "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "shared_expert_intermediate_size": 5632, "sliding_window": 32768, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}


def test_qwen15_moe_a27b_config_reads_as_the_reference_reads_it(tmp_path):
    assert_reads_a_real_config_as_the_reference(tmp_path, QWEN15_MOE_A27B, (
        "hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
        "num_key_value_heads", "num_experts", "num_experts_per_tok", "norm_topk_prob", "decoder_sparse_step",
        "mlp_only_layers", "rms_norm_eps", "max_position_embeddings", "layer_types",
    ))
    config = openformers.AutoConfig.from_pretrained(tmp_path)
    assert config.rope_theta == 1e6 and config.attention_window is None


def test_sparse_layers_follow_the_reference_rule():
    values = {**TINY, "num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    reference = transformers.Qwen2MoeModel(transformers.Qwen2MoeConfig(**values))
    ours = openformers.Qwen2MoeModel(Qwen2MoeConfig(**values))
    expected = [type(layer.mlp).__name__ == "Qwen2MoeSparseMoeBlock" for layer in reference.layers]
    assert [type(layer.mlp).__name__ == "Qwen2MoeSparseMoeBlock" for layer in ours.layers] == expected
    assert expected == [False, True, False, False, False, True]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    dense = Qwen2MoeConfig(**{**TINY, "num_experts": 0, "num_experts_per_tok": 1})
    assert not any(dense.is_sparse(i) for i in range(dense.num_hidden_layers))


def test_the_sliding_window_follows_the_reference_rule_or_is_refused():
    # The reference windows the even-numbered layers below max_window_layers: one layer is all of them.
    one = dict(TINY, num_hidden_layers=1, use_sliding_window=True, sliding_window=4)
    assert Qwen2MoeConfig(**one).layer_types == transformers.Qwen2MoeConfig(**one).layer_types == ["sliding_attention"]
    assert Qwen2MoeConfig(**one).attention_window == 4
    with pytest.raises(ValueError, match="use_sliding_window=True with layer_types"):
        Qwen2MoeConfig(**dict(one, num_hidden_layers=2))  # windowed, then not: a mix openformers refuses
    off = Qwen2MoeConfig(**dict(one, use_sliding_window=False))
    assert off.sliding_window is None and off.attention_window is None


@pytest.mark.parametrize("values, field", [
    (dict(mlp_only_layers="all"), "mlp_only_layers"),
    (dict(shared_expert_intermediate_size=0), "shared_expert_intermediate_size"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok"),
    (dict(moe_intermediate_size=-1), "moe_intermediate_size"),
    (dict(decoder_sparse_step=0), "decoder_sparse_step"),
    (dict(layer_types=["full_attention"]), "layer_types"),
    (dict(router_aux_loss_coef=-1.0), "router_aux_loss_coef"),
    (dict(attention_dropout=1.5), "attention_dropout"),
])
def test_bad_config_values_name_the_field(values, field):
    with pytest.raises(ValueError, match=f"{field}="):
        Qwen2MoeConfig(**{**TINY, **values})


# A GGUF written the way llama.cpp's converter writes a "qwen2moe" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.shared_expert_gate": "ffn_gate_inp_shexp", "mlp.shared_expert.gate_proj": "ffn_gate_shexp",
    "mlp.shared_expert.up_proj": "ffn_up_shexp", "mlp.shared_expert.down_proj": "ffn_down_shexp",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}


def _write_gguf(path, reference, shared_gate_as_vector=False, expert_count=True):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "qwen2moe")
    if expert_count:
        writer.add_expert_count(config.num_experts)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_shared_feed_forward_length(config.shared_expert_intermediate_size)

    class SharedGateAsVector:  # the writer, with each shared expert's gate written as one vector (llama.cpp's shape)
        def __getattr__(self, name):
            return getattr(writer, name)

        def add_tensor(self, name, w):
            writer.add_tensor(name, np.ascontiguousarray(w.reshape(-1)) if "ffn_gate_inp_shexp" in name else w)

    write_moe_gguf(SharedGateAsVector() if shared_gate_as_vector else writer, reference, GGUF_NAMES,
                   permute_heads=False)


@pytest.mark.parametrize("variant", [dict(), dict(tie_word_embeddings=True, mlp_only_layers=[1], vector=True)],
                         ids=["untied", "tied-with-a-dense-layer-and-a-vector-gate"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, variant):
    variant = dict(variant)
    vector = variant.pop("vector", False)
    reference = TestQwen2Moe.reference(**variant)  # llama.cpp does not renormalize qwen2moe's routing weights
    _write_gguf(tmp_path / "qwen2moe.gguf", reference, shared_gate_as_vector=vector)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "qwen2moe.gguf")
    assert isinstance(model, Qwen2MoeForCausalLM) and not model.config.norm_topk_prob
    assert model.config.mlp_only_layers == variant.get("mlp_only_layers", [])
    assert model.config.moe_intermediate_size == TINY["moe_intermediate_size"]
    assert model.config.shared_expert_intermediate_size == TINY["shared_expert_intermediate_size"]
    assert model.config.num_experts_per_tok == TINY["num_experts_per_tok"]
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "qwen2moe.gguf").model_type == "qwen2_moe"
    model.save_pretrained(tmp_path / "saved")  # the split experts are tensors of their own, the gate a row
    assert_outputs_close(head_outputs(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved"),
                                      "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF saved")


def test_gguf_without_an_expert_count_is_refused(tmp_path):
    _write_gguf(tmp_path / "broken.gguf", TestQwen2Moe.reference(), expert_count=False)
    with pytest.raises(ValueError, match="expert_count"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "broken.gguf")

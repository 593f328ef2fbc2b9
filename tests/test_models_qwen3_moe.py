"""Qwen3-MoE against the reference: tiny random models made by transformers, saved and loaded both ways.

As for Mixtral (tests/test_models_mixtral.py, whose helpers these tests use): each head's outputs and losses, the
router scores, the load-balancing loss and the training gradients are the reference's; generation gives its tokens;
a left-padded batch gives each row alone; saving works both ways. The variants cover dense layers among the sparse
ones (decoder_sparse_step, mlp_only_layers), norm_topk_prob both ways, tied embeddings and the sliding window.
"""

import json

import pytest
import torch

import openformers
from openformers import AutoModelForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from decoder_parity import (
    GENERATE_OPTIONS,
    assert_bfloat16_matches_the_reference,
    assert_cached_decoding_equals_the_full_forward,
    assert_decoding_step_gives_the_references_logits,
    assert_generate_matches,
    assert_hidden_states_and_attentions_match,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_same_attributes,
    assert_static_cache_gives_the_dynamic_cache_tokens,
    generation_inputs,
    load_quietly,
    load_saved,
    make_reference,
)
from test_models_mixtral import (
    HEADS,
    assert_base_model_router_logits_match,
    assert_int8_keeps_the_router_in_float,
    assert_loads_the_reference_in_memory_layout,
    assert_reads_a_real_config_as_the_reference,
    assert_saved_both_ways_as_the_reference_saves,
    assert_training_matches,
    batch,
    experts_run_per_step,
    head_outputs,
    ids_of,
    write_moe_gguf,
)

transformers = pytest.importorskip("transformers")

# head_dim 12 is not hidden_size // num_attention_heads (8): Qwen3 sizes its heads on their own.
TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=256, num_experts=4,
    num_experts_per_tok=2, rms_norm_eps=1e-5, pad_token_id=0,
)
VARIANTS = {
    "all-sparse": {},
    "mixed-normed-tied": dict(decoder_sparse_step=2, mlp_only_layers=[2], norm_topk_prob=True,
                              tie_word_embeddings=True),
    "windowed": dict(use_sliding_window=True, sliding_window=4, mlp_only_layers=[0]),
}
EXPERT_NAMES = ("gate_proj", "up_proj", "down_proj")


def _reference(name="Qwen3MoeForCausalLM", **overrides):
    return make_reference(name, transformers.Qwen3MoeConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    return folder, reference, load_saved(reference, folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny_head(request, tmp_path_factory):
    head = request.param
    folder = tmp_path_factory.mktemp(head)
    reference = _reference(f"Qwen3Moe{head}", num_labels=3, mlp_only_layers=[1])
    return head, folder, reference, load_saved(reference, folder, HEADS[head])


@torch.inference_mode()
def test_causal_lm_logits_losses_and_router_logits_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, Qwen3MoeForCausalLM) and not model.training
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "causal LM")
    ours = head_outputs(model, "ForCausalLM", output_router_logits=True)
    sparse = sum(model.config.is_sparse(i) for i in range(model.config.num_hidden_layers))
    assert len(ours["router_logits"]) == sparse
    assert_outputs_close(ours, head_outputs(reference, "ForCausalLM", output_router_logits=True), "router logits")


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny_head):
    head, _, reference, model = tiny_head
    assert type(model).__name__ == f"Qwen3Moe{head}" and not model.training
    assert_outputs_close(head_outputs(model, head), head_outputs(reference, head), head)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path):
    head, folder, reference, model = tiny_head
    assert_saved_both_ways_as_the_reference_saves(model, reference, head, folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_experts"] == config["num_local_experts"] == TINY["num_experts"]  # both names, as both read


@torch.inference_mode()
def test_the_base_model_returns_the_router_logits_as_the_reference(tiny):
    assert_base_model_router_logits_match(tiny[0])


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_loss_and_gradients_match_the_reference(tmp_path, checkpointing):
    reference = _reference(router_aux_loss_coef=0.5, decoder_sparse_step=2, norm_topk_prob=True)
    model = load_saved(reference, tmp_path)
    assert_training_matches(model, reference, "mlp", EXPERT_NAMES, checkpointing)


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    assert_cached_decoding_equals_the_full_forward(tiny[2], ids_of(2, 12))


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    assert_left_padded_batch_equals_single_rows(model, ids_of, reference)


@GENERATE_OPTIONS
@torch.inference_mode()
def test_generate_matches_reference(tiny, options):
    _, reference, model = tiny
    assert_generate_matches(model, reference, *generation_inputs(ids_of), **options)


@torch.inference_mode()
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny):
    assert_static_cache_gives_the_dynamic_cache_tokens(tiny[2], *generation_inputs(ids_of), [dict(num_beams=3)])


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_the_reference(tiny):
    folder, _, model = tiny
    assert_hidden_states_and_attentions_match(model, folder, *batch())


@torch.inference_mode()
def test_only_the_chosen_experts_run_in_the_sparse_layers(tiny):
    model = tiny[2]
    config = model.config
    sparse = sum(config.is_sparse(i) for i in range(config.num_hidden_layers))
    assert experts_run_per_step(model, ids_of(1, 1)) == [config.num_experts_per_tok] * sparse


@torch.inference_mode()
def test_a_checkpoint_in_the_reference_in_memory_layout_loads(tmp_path):
    assert_loads_the_reference_in_memory_layout(_reference(mlp_only_layers=[0]), tmp_path)


@torch.inference_mode()
def test_int8_quantization_keeps_the_router_in_float(tiny):
    assert_int8_keeps_the_router_in_float(tiny[0])


@torch.inference_mode()
def test_the_cpu_kernels_decoding_step_routes_as_the_reference(tiny):
    _, reference, model = tiny
    assert_decoding_step_gives_the_references_logits(model, reference, ids_of(1, 12, seed=9), prefill=3)


@torch.inference_mode()
def test_bfloat16_matches_the_reference_in_bfloat16(tiny):
    """The router in bfloat16, its softmax in float32, the chosen experts' weights rounded to bfloat16: the
    reference's bits, and the same experts chosen."""
    assert_bfloat16_matches_the_reference(tiny[0], *batch())


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


@torch.inference_mode()
def test_a_model_without_sparse_layers_has_no_aux_loss(tmp_path):
    reference = _reference(mlp_only_layers=[0, 1, 2])
    model = load_saved(reference, tmp_path)
    out = model(*batch(), output_router_logits=True)
    assert out.router_logits == () and out.aux_loss is None
    torch.testing.assert_close(out.logits, reference(*batch()).logits, atol=1e-4, rtol=1e-4)


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

    reference = _reference(norm_topk_prob=True, **variant)  # llama.cpp renormalizes qwen3moe's routing weights
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
    write_moe_gguf(writer, _reference(), GGUF_NAMES, permute_heads=False)
    with pytest.raises(ValueError, match="expert_count"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "broken.gguf")

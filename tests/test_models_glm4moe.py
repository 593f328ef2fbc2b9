"""GLM-4.5 / GLM-4.6 (model_type "glm4_moe") against the reference, on tiny random models it makes and saves.

The variants: GLM-4.5's layout (q/k/v biases, q/k norms, half of each head turned in halves, a dense first layer, then
experts chosen by group with drawn correction biases, renormalized) and GLM-4.5-Air-like one without biases or q/k
norms, a quarter of each head turned with linear rope scaling, every layer sparse, one group, weights not renormalized
and tied embeddings. The tests DeepSeek's mixtures run (test_models_deepseek.SteppedDeepseekExpertsTests: every head on
a padded batch, router logits, cached decoding, left padding, greedy and beam generation, a static cache, hidden states
and attention weights, a training step's gradients, saving both ways, the checkpoints' multi-token prediction layers;
here the CPU kernel's step with the reference's logits and tokens), the correction biases, the reference's default
config with its odd rotated width, GLM-4.5's config.json, the config's refusals, GGUF files written as llama.cpp's
converter writes "glm4moe" (with a prediction layer in the block count), and the tokenizer class the reference picks for
a GLM-4.5 folder. The weights are drawn at std 0.15 and the correction biases at 0.3, so a routing, rotation or norm
detail applied wrong moves the logits far past the tolerance.
"""

import copy
import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    load_saved,
    outputs_of,
)
from openformers import AutoModelForCausalLM, Glm4MoeConfig, Glm4MoeForCausalLM
from test_models_deepseek import SteppedDeepseekExpertsTests, assert_correction_biases_steer_the_choice
from test_models_glm import TEXTS, _glm_tokenizer_folder
from test_models_mixtral import add_gguf_tensors

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256, n_routed_experts=8,
    n_group=4, topk_group=2, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
    routed_scaling_factor=1.75, attention_bias=True, use_qk_norm=True, rms_norm_eps=1e-5, initializer_range=0.15,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
    rope_parameters={"rope_theta": 1000.0, "partial_rotary_factor": 0.5},
)


class TestGlm4Moe(SteppedDeepseekExpertsTests):
    REFERENCE_CONFIG = "Glm4MoeConfig"
    MODEL_TYPE = "glm4_moe"
    TINY = TINY
    VARIANTS = {
        "glm-4.5": {},
        "air-like-linear-tied": dict(
            attention_bias=False, use_qk_norm=False, n_group=1, topk_group=1, norm_topk_prob=False,
            first_k_dense_replace=0, tie_word_embeddings=True,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.25},
        ),
    }
    HEADS = {"Glm4MoeForCausalLM": "AutoModelForCausalLM", "Glm4MoeModel": "AutoModel"}
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "attention_bias", "use_qk_norm", "rope_parameters", "head_dim",
                               "n_group", "first_k_dense_replace")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        attention = model.model.layers[0].self_attn
        assert attention.o_proj.bias is None and hasattr(attention, "q_norm") == reference.config.use_qk_norm
        assert model.model.rotary_emb.cos.shape[-1] == model.config.rotary_dim < model.config.head_dim

    def test_auto_classes_pick_the_glm4_moe_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Glm4MoeConfig
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Glm4MoeForCausalLM
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Glm4MoeModel"
        with pytest.raises(ValueError, match="no sequence-classification class for 'glm4_moe'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)

    @torch.inference_mode()
    def test_the_correction_biases_steer_the_choice_only(self, tiny):
        _, reference, model = tiny
        assert_correction_biases_steer_the_choice(model, reference, self.ids(2, 9, seed=7))


def test_config_defaults_match_the_reference():
    ours, theirs = Glm4MoeConfig(), transformers.Glm4MoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "tie_word_embeddings", "attention_bias", "attention_dropout", "moe_intermediate_size", "num_experts_per_tok",
        "output_router_logits", "n_shared_experts", "n_routed_experts", "routed_scaling_factor", "n_group",
        "topk_group", "first_k_dense_replace", "norm_topk_prob", "use_qk_norm", "bos_token_id", "eos_token_id",
        "pad_token_id", "num_nextn_predict_layers", "num_mtp_layers", "num_local_experts",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert ours.head_dim == theirs.hidden_size // theirs.num_attention_heads == 42  # the reference's getattr default


@torch.inference_mode()
def test_an_odd_rotated_width_turns_one_more_dimension_as_the_reference(tmp_path):
    """The reference's default shape (42 dimensions a head, half turned) in small: int(10 * 0.5) = 5 rotated
    dimensions, which the reference's tables round up to the 6 of 3 pairs at 1 / theta^(2i / 5)."""
    reference = TestGlm4Moe.reference(head_dim=10)
    model = load_saved(reference, tmp_path)
    assert model.config.rotary_dim == 5 and model.model.rotary_emb.cos.shape[-1] == 6
    inputs = TestGlm4Moe.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "odd rotated width")


@pytest.mark.parametrize("values, message", [
    (dict(n_group=3), "n_group=3"),
    (dict(n_group=8), "n_group=8"),  # groups of one expert: a group scores its two best
    (dict(topk_group=5), "topk_group=5"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9"),
    (dict(first_k_dense_replace=-1), "first_k_dense_replace=-1"),
    (dict(routed_scaling_factor=0), "routed_scaling_factor=0"),
    (dict(n_shared_experts=0), "n_shared_experts=0"),
    (dict(use_qk_norm="yes"), "use_qk_norm='yes'"),
    (dict(num_nextn_predict_layers=-1), "num_nextn_predict_layers=-1"),
    (dict(partial_rotary_factor=0.01), "partial_rotary_factor=0.01"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type='proportional'"),
])
def test_bad_config_values_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        Glm4MoeConfig(**{**TINY, "rope_parameters": None, **values})


# GGUF files as llama.cpp's converter writes a "glm4moe" checkpoint: the rows as they are (llama.cpp turns these heads
# in halves), the norm before the MLP as post_attention_norm, the experts stacked, the shared experts as *_shexp, the
# correction biases as exp_probs_b.bias, and the multi-token prediction layer counted in the block count.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias", "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp", "mlp.shared_experts.down_proj": "ffn_down_shexp",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}


@pytest.mark.parametrize("variant", list(TestGlm4Moe.VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    import gguf

    reference = TestGlm4Moe.reference(**TestGlm4Moe.VARIANTS[variant])
    config = reference.config
    n = config.num_hidden_layers
    writer = gguf.GGUFWriter(str(tmp_path / "glm4moe.gguf"), "glm4moe")
    counted = copy.deepcopy(config)
    counted.num_hidden_layers = n + 1  # the prediction layer is a block of the file
    add_decoder_metadata(writer, counted)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(int(config.head_dim * config.rope_parameters["partial_rotary_factor"]))
    writer.add_expert_count(config.n_routed_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_shared_count(config.n_shared_experts)
    writer.add_leading_dense_block_count(config.first_k_dense_replace)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    writer.add_expert_weights_scale(config.routed_scaling_factor)
    writer.add_expert_weights_norm(config.norm_topk_prob)
    writer.add_expert_group_count(config.n_group)  # llama.cpp's converter writes none for GLM-4.5 (one group)
    writer.add_expert_group_used_count(config.topk_group)
    writer.add_nextn_predict_layers(1)
    if config.rope_parameters["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_parameters["factor"])
    add_gguf_tensors(writer, reference, GGUF_NAMES, permute_heads=False)
    C = config.hidden_size
    for name, shape in (("nextn.eh_proj.weight", (C, 2 * C)), ("nextn.enorm.weight", (C,)),
                        ("nextn.hnorm.weight", (C,)), ("attn_q.weight", (C, C)), ("ffn_gate_exps.weight", (8, 16, C))):
        writer.add_tensor(f"blk.{n}.{name}", torch.ones(shape).numpy())
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "glm4moe.gguf")
    assert isinstance(model, Glm4MoeForCausalLM) and model.config.num_hidden_layers == n
    assert_same_attributes(model.config, config, (
        "attention_bias", "use_qk_norm", "tie_word_embeddings", "head_dim", "n_routed_experts", "n_shared_experts",
        "first_k_dense_replace", "norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group",
        "num_nextn_predict_layers",
    ))
    inputs = TestGlm4Moe.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


def test_tokenizer_of_a_glm4_moe_folder_is_the_references_class(tmp_path):
    """GLM-4.5's folders hold GLM-4's kind of tokenizer.json, named PreTrainedTokenizerFast, with a chat template."""
    folder = _glm_tokenizer_folder(tmp_path / "glm", "glm4_moe")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__
    assert [ours(text)["input_ids"] for text in TEXTS] == [reference(text)["input_ids"] for text in TEXTS]


# GLM-4.5's config.json (transformers 4: rope_theta and partial_rotary_factor at the top level).
GLM_4_5 = {
    "architectures": ["Glm4MoeForCausalLM"], "attention_bias": True, "attention_dropout": 0.0, "pad_token_id": 151329,
    "eos_token_id": [151329, 151336, 151338], "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
    "partial_rotary_factor": 0.5, "initializer_range": 0.02, "intermediate_size": 12288,
    "max_position_embeddings": 131072, "model_type": "glm4_moe", "moe_intermediate_size": 1536,
    "norm_topk_prob": True, "num_attention_heads": 96, "n_group": 1, "topk_group": 1, "n_routed_experts": 160,
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "num_hidden_layers": 92, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000,
    "num_nextn_predict_layers": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "use_qk_norm": True, "vocab_size": 151552,
}


def test_glm_4_5_config_reads_as_the_reference_reads_it(tmp_path):
    """Its fields at four layers, and as many parameters in our model as in the reference's (built on meta)."""
    (tmp_path / "config.json").write_text(json.dumps({**GLM_4_5, "num_hidden_layers": 4}))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert_same_attributes(ours, theirs, ("head_dim", "use_qk_norm", "attention_bias", "eos_token_id", "pad_token_id",
                                          "n_routed_experts", "num_nextn_predict_layers", "first_k_dense_replace"))
    assert ours.rotary_dim == 64 and ours.rope_theta == theirs.rope_parameters["rope_theta"]
    with torch.device("meta"):
        ours_model = AutoModelForCausalLM.from_config(ours)
        theirs_model = transformers.AutoModelForCausalLM.from_config(theirs)
    assert sum(p.numel() for p in ours_model.parameters()) == sum(p.numel() for p in theirs_model.parameters())

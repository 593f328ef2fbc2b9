"""OLMo, OLMoE and OLMo 3 against the reference: tiny random models made by transformers, saved and loaded both ways.

The common decoder tests (decoder_suite.DecoderFamilyTests) run for each family: each head's outputs and losses within
1e-4 on a padded batch, greedy and beam generation giving the reference's tokens, a left-padded batch giving each row
alone, cached decoding equal to the full forward, saving both ways. Weights are drawn with initializer_range 0.1, so a
norm, clamp, window or rotation base left out moves the logits far past the tolerance. Here besides: the variants that
change the computation (clip_qkv, norm_topk_prob, tied embeddings, OLMo 3's layer types and its two rotations), the
router scores and load-balancing loss of OLMoE, the config defaults and refusals, GGUF files written the way llama.cpp's
converter writes "olmo", "olmoe" and (OLMo 3) "olmo2" files, the CPU kernel's decoding step (OLMo, OLMoE, OLMo 3),
and the tokenizer class the reference's AutoTokenizer picks for these folders.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_bfloat16_matches_the_reference,
    assert_decoding_step_gives_the_references_logits,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests, SteppedDecoderTests
from openformers import (
    AutoModelForCausalLM,
    Olmo3Config,
    Olmo3ForCausalLM,
    OlmoConfig,
    OlmoeConfig,
    OlmoeForCausalLM,
    OlmoForCausalLM,
)
from test_models_mixtral import add_gguf_tensors, assert_training_matches, head_outputs

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=128, max_position_embeddings=256, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
             initializer_range=0.1)
LLAMA_GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}


# -- OLMo ----------------------------------------------------------------------------------------------------------


class TestOlmo(SteppedDecoderTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "OlmoConfig"
    TINY = dict(**SIZES, hidden_size=64, intermediate_size=96, num_hidden_layers=2)
    VARIANTS = {
        "untied": {},
        "clipped-tied": dict(clip_qkv=0.5, tie_word_embeddings=True),
    }
    HEADS = {
        "OlmoModel": "AutoModel",
        "OlmoForCausalLM": "AutoModelForCausalLM",
        "OlmoForSequenceClassification": "AutoModelForSequenceClassification",
    }

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """The norms in float32 and the rotation in float32 by unrounded tables, rounded once, as the reference's: the
        same bits (Llama's rotation, by tables rounded to bfloat16, differs in many)."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))


    @torch.inference_mode()
    def test_the_clamp_changes_the_logits(self, tiny):
        # The clamp bites at these sizes: with it off, the clipped variant's logits are not the reference's.
        _, reference, model = tiny
        if reference.config.clip_qkv is None:
            return
        ids = self.ids(1, 9)
        expected = reference(ids).logits
        for layer in model.model.layers:
            layer.self_attn.clip_qkv = None
        try:
            assert not torch.allclose(model(ids).logits, expected, atol=1e-2)
        finally:
            for layer in model.model.layers:
                layer.self_attn.clip_qkv = reference.config.clip_qkv


def test_olmo_has_no_norm_parameters_and_config_defaults_match_the_reference():
    model = OlmoForCausalLM(OlmoConfig(**TestOlmo.TINY))
    assert not any("norm" in name for name, _ in model.named_parameters())
    ours, theirs = OlmoConfig(), transformers.OlmoConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "attention_bias",
        "attention_dropout", "clip_qkv", "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


@pytest.mark.parametrize("config_class, field, value", [
    (OlmoConfig, "clip_qkv", -1.0), (OlmoConfig, "mlp_bias", True), (OlmoConfig, "attention_dropout", 1.5),
    (OlmoeConfig, "num_experts_per_tok", 9), (OlmoeConfig, "clip_qkv", "big"), (OlmoeConfig, "router_aux_loss_coef", -1),
    (Olmo3Config, "layer_types", ["sliding_attention"]), (Olmo3Config, "sliding_window", 0),
    (Olmo3Config, "sliding_rope_theta", 0), (Olmo3Config, "rope_scaling", {"rope_type": "yarn", "factor": 0.0}),
], ids=lambda value: value.__name__ if isinstance(value, type) else None)
def test_bad_config_values_are_refused_by_name(config_class, field, value):
    sizes = dict(TestOlmoe.TINY) if config_class is OlmoeConfig else dict(TestOlmo.TINY)
    if config_class is Olmo3Config:
        sizes.update(layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(ValueError, match=field.split(".")[0]):
        config_class(**{**sizes, field: value})


def test_olmo_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    # llama.cpp's converter permutes OLMo's query and key rows as Llama's and writes clip_qkv as clamp_kqv.
    reference = TestOlmo.reference(clip_qkv=0.5)
    write_gguf(tmp_path / "olmo.gguf", "olmo", reference, LLAMA_GGUF_NAMES, permute_heads=True, layer_norm_eps=1e-5,
               clamp_kqv=0.5)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "olmo.gguf")
    assert isinstance(model, OlmoForCausalLM) and model.config.clip_qkv == 0.5
    inputs = TestOlmo.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# -- OLMoE ---------------------------------------------------------------------------------------------------------

EXPERT_NAMES = ("gate_proj", "up_proj", "down_proj")


class TestOlmoe(SteppedDecoderTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "OlmoeConfig"
    TINY = dict(**SIZES, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_experts=4,
                num_experts_per_tok=2, rms_norm_eps=1e-5)
    VARIANTS = {
        "plain": {},
        "renormalized-clipped-tied": dict(norm_topk_prob=True, clip_qkv=0.3, tie_word_embeddings=True),
    }
    HEADS = {"OlmoeModel": "AutoModel", "OlmoeForCausalLM": "AutoModelForCausalLM"}
    # The reference holds the experts fused (gate_up_proj, down_proj); its gradients are compared split per expert.
    test_training_loss_and_gradients_match_the_reference = None

    @pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
    def test_training_loss_aux_loss_and_gradients_match_the_reference(self, tmp_path, checkpointing):
        reference = self.reference(router_aux_loss_coef=0.5, norm_topk_prob=True, clip_qkv=0.3)
        reference.save_pretrained(tmp_path)
        model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
        assert_training_matches(model, reference, "mlp", EXPERT_NAMES, checkpointing)

    @torch.inference_mode()
    def test_router_logits_and_load_balancing_loss_match_the_reference(self, tiny):
        _, reference, model = tiny
        ours = head_outputs(model, "ForCausalLM", output_router_logits=True)
        assert len(ours["router_logits"]) == 2 and ours["aux_loss"] is not None
        assert_outputs_close(ours, head_outputs(reference, "ForCausalLM", output_router_logits=True), "router logits")

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """OLMoE rotates in bfloat16 (unlike OLMo 2) and rounds the experts' weights to bfloat16, as the reference:
        the same bits and the same experts."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))


    @torch.inference_mode()
    def test_saved_config_names_the_experts_as_the_reference(self, tiny, tmp_path):
        _, _, model = tiny
        model.save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["num_experts"] == 4 and transformers.AutoConfig.from_pretrained(tmp_path).num_experts == 4
        assert OlmoeConfig.from_dict({**config, "num_local_experts": 3, "num_experts": None}).num_experts == 3


def test_olmoe_config_defaults_match_the_reference():
    ours, theirs = OlmoeConfig(), transformers.OlmoeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "clip_qkv", "num_experts_per_tok", "num_experts", "output_router_logits",
        "router_aux_loss_coef", "norm_topk_prob", "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.num_local_experts == 64


@torch.inference_mode()
def test_olmoe_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    # llama.cpp's "olmoe": the rows as the reference holds them, the experts stacked, routing never renormalized.
    import gguf

    reference = TestOlmoe.reference()
    writer = gguf.GGUFWriter(str(tmp_path / "olmoe.gguf"), "olmoe")
    add_decoder_metadata(writer, reference.config)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(4)
    writer.add_expert_used_count(2)
    add_gguf_tensors(writer, reference, LLAMA_GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "olmoe.gguf")
    assert isinstance(model, OlmoeForCausalLM) and not model.config.norm_topk_prob
    assert model.config.num_experts == 4 and model.config.intermediate_size == TestOlmoe.TINY["intermediate_size"]
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF")


# -- OLMo 3 --------------------------------------------------------------------------------------------------------

SLIDING_THEN_FULL = ["sliding_attention", "full_attention"]


class TestOlmo3(DecoderFamilyTests):
    REFERENCE_CONFIG = "Olmo3Config"
    TINY = dict(**SIZES, hidden_size=64, intermediate_size=96, num_hidden_layers=2, sliding_window=4,
                rms_norm_eps=1e-5)
    VARIANTS = {
        "sliding-then-full": dict(layer_types=SLIDING_THEN_FULL),
        # The full layer first, its rotation scaled and of another base than the sliding layer's.
        "full-then-sliding-two-rotations": dict(
            layer_types=["full_attention", "sliding_attention"], tie_word_embeddings=True,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    }
    HEADS = {
        "Olmo3Model": "AutoModel",
        "Olmo3ForCausalLM": "AutoModelForCausalLM",
        "Olmo3ForSequenceClassification": "AutoModelForSequenceClassification",
    }
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "layer_types", "sliding_window", "rope_parameters")

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """Both kinds of layer rotate in float32 by unrounded tables and round once, as OLMo 2's and the
        reference's: the same bits."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_olmo3_with_the_references_logits(self, tiny):
        # Windowed layers (12 tokens past a window of 4) and each kind of layer's rotation, one step call a token.
        _, reference, model = tiny
        assert_decoding_step_gives_the_references_logits(model, reference, self.ids(1, 12, seed=9))


def test_olmo3_config_defaults_and_old_layout_match_the_reference(tmp_path):
    ours, theirs = Olmo3Config(), transformers.Olmo3Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "sliding_window", "layer_types", "tie_word_embeddings", "pad_token_id",
        "bos_token_id", "eos_token_id",
    ))
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters
    # A config.json in the older layout: its rope_theta and rope_scaling are the full layers' only, as the reference
    # reads them (the sliding layers keep 500000).
    values = {"model_type": "olmo3", **TestOlmo3.TINY, "layer_types": SLIDING_THEN_FULL, "rope_theta": 1000.0,
              "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters


def test_olmo3_refuses_a_scaled_rotation_on_the_sliding_layers():
    with pytest.raises(ValueError, match="sliding_attention"):
        Olmo3Config.from_dict({**TestOlmo3.TINY, "rope_parameters": {
            "full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "linear", "factor": 2.0}}})


@torch.inference_mode()
def test_olmo3_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    # llama.cpp's converter writes OLMo 3 as "olmo2" with a sliding window and its per-layer pattern; OLMo 2's own
    # files (no window) still read as OLMo 2 (tests/test_models_olmo2.py).
    reference = TestOlmo3.reference(layer_types=SLIDING_THEN_FULL)
    names = {**LLAMA_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm",
             "post_feedforward_layernorm": "post_ffw_norm"}
    write_gguf(tmp_path / "olmo3.gguf", "olmo2", reference, names, layer_norm_rms_eps=1e-5, sliding_window=4,
               sliding_window_pattern=[True, False])
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "olmo3.gguf")
    assert isinstance(model, Olmo3ForCausalLM) and model.config.layer_types == SLIDING_THEN_FULL
    assert model.config.sliding_window == 4
    inputs = TestOlmo3.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# -- Tokenizers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["olmo", "olmoe", "olmo3"])
def test_auto_tokenizer_picks_the_references_class(model_type, tmp_path):
    # OLMo's and OLMoE's folders name GPTNeoXTokenizer, OLMo 3's a tokenizer.json alone: a byte-level BPE each.
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}, merges=[("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    settings = {"eos_token": "<|endoftext|>"}
    if model_type != "olmo3":
        settings["tokenizer_class"] = "GPTNeoXTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours("ab a").input_ids == theirs("ab a").input_ids

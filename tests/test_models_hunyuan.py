"""Hunyuan dense (hunyuan_v1_dense) and Apertus against the reference, on tiny random models it makes and saves.

Each family is a class over test_models_llama_variants.LlamaVariantTests (decoder_suite's common tests: every head the
reference has, cached decoding, left padding, greedy and beam generation, a static cache, hidden states, a training
step, saving both ways; and the config's defaults and refusals, bfloat16 to the last bit, the CPU kernel's decoding
step giving the reference's logits and tokens, the Auto classes) with what is its own: the variants that change its
computation, the released configs' layout, GGUF files as llama.cpp's converter writes them, and the tokenizer class
the reference picks for a folder of the family.
"""

import json

import pytest
import torch

import openformers
import test_models_llama_variants as variants
from decoder_parity import (
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
    write_gguf,
)
from openformers import AutoModelForCausalLM
from test_models_llama_variants import LLAMA_GGUF_NAMES, SIZES, LlamaVariantTests, SteppedLlamaVariantTests

transformers = pytest.importorskip("transformers")


# Hunyuan dense -----------------------------------------------------------------------------------------------------

# The released configs' rope: "dynamic" with an alpha (1000 over a base of 10000 there; small numbers here, so that the
# rotation still turns over 12 positions and a base stretched otherwise moves the logits).
ALPHA_ROPE = {"rope_type": "dynamic", "alpha": 4.0, "factor": 1.0, "rope_theta": 500.0}


class TestHunYuanDense(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "HunYuanDenseV1Config"
    MODEL_TYPE = "hunyuan_v1_dense"
    TINY = dict(SIZES, head_dim=16, rope_parameters=ALPHA_ROPE)
    VARIANTS = {
        "alpha-rope": {},  # the released layout: no biases, untied head, the stretched base
        "biases-tied-gqa-1": dict(attention_bias=True, tie_word_embeddings=True, num_key_value_heads=1,
                                  rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    }
    HEADS = {"HunYuanDenseV1Model": "AutoModel", "HunYuanDenseV1ForCausalLM": "AutoModelForCausalLM",
             "HunYuanDenseV1ForSequenceClassification": "AutoModelForSequenceClassification"}
    HEAD_VARIANTS = ["biases-tied-gqa-1"]
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "tie_word_embeddings", "rope_parameters", "eod_token_id")
    # head_dim left out: the reference's default is None, which its attention cannot run; ours is hidden / heads
    DEFAULT_FIELDS = ("attention_bias", "eod_token_id")
    REFUSALS = [
        # (the older layout's rope_scaling, which the constructor and config.json both read)
        (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling.alpha=None"),
        (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "alpha": -1.0}), "rope_scaling.alpha=-1.0"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(attention_dropout=1.0), "attention_dropout=1.0"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ]

    def test_auto_classes_pick_the_familys_classes(self, tiny):
        super().test_auto_classes_pick_the_familys_classes(tiny)
        with pytest.raises(ValueError, match="no token-classification class for 'hunyuan_v1_dense'"):
            openformers.AutoModelForTokenClassification.from_pretrained(tiny[0])


@torch.inference_mode()
def test_hunyuan_released_config_layout_and_its_alpha_count(tmp_path):
    """A config.json as the released ones hold it (top-level rope_theta, rope_scaling of "type" dynamic with alpha
    and the YaRN-like keys it ignores) gives the reference's logits; read as plain rope, the same weights give others."""
    reference = TestHunYuanDense.reference()
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["rope_parameters"]
    released = {**config, "rope_theta": 500.0, "rope_scaling": {
        "alpha": 4.0, "beta_fast": 32, "beta_slow": 1, "factor": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
        "type": "dynamic"}, "use_qk_norm": True, "use_rotary_pos_emb": True}
    (tmp_path / "config.json").write_text(json.dumps(released))
    ids = TestHunYuanDense.ids(1, 12)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ours = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert ours.config.rope_scaling["alpha"] == 4.0
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)
    (tmp_path / "config.json").write_text(json.dumps({**released, "rope_scaling": None}))
    plain = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert (plain(ids).logits - ours(ids).logits).abs().max() > 1e-2


# llama.cpp's "hunyuan-dense" files: Llama's names with the q/k norms, the rows as they are, and the stretched base
# written as rope.freq_base with no scaling.
HUNYUAN_GGUF_NAMES = {**LLAMA_GGUF_NAMES, "self_attn.query_layernorm": "attn_q_norm",
                      "self_attn.key_layernorm": "attn_k_norm"}


@pytest.mark.parametrize("variant", list(TestHunYuanDense.VARIANTS))
@torch.inference_mode()
def test_hunyuan_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = TestHunYuanDense.reference(**TestHunYuanDense.VARIANTS[variant])
    config = reference.config
    rope, dim = config.rope_parameters, config.head_dim
    base = rope["rope_theta"] * rope.get("alpha", 1.0) ** (dim / (dim - 2))
    write_gguf(tmp_path / "hy.gguf", "hunyuan-dense", reference, HUNYUAN_GGUF_NAMES,
               layer_norm_rms_eps=config.rms_norm_eps, key_length=dim, value_length=dim, rope_freq_base=base)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "hy.gguf")
    assert type(model).__name__ == "HunYuanDenseV1ForCausalLM"
    assert_same_attributes(model.config, config, ("attention_bias", "tie_word_embeddings", "head_dim"))
    inputs = TestHunYuanDense.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# Tokenizers: the reference registers no tokenizer class for these model types, so a folder is read as the class its
# tokenizer_config.json names (a tokenizer.json named as a fast tokenizer, as the converted folders hold).

@pytest.mark.parametrize("model_type", ["hunyuan_v1_dense"])
def test_autotokenizer_picks_the_references_class_and_ids(model_type, tmp_path):
    variants.test_autotokenizer_picks_the_references_class_and_ids(model_type, "PreTrainedTokenizerFast", tmp_path)


# Apertus -----------------------------------------------------------------------------------------------------------


class TestApertus(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "ApertusConfig"
    MODEL_TYPE = "apertus"
    # llama3 scaling over a band of the rotated pairs (wavelengths between 16 and 64 positions) that shows in 12 tokens
    TINY = dict(SIZES, hidden_act="xielu", rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 500.0})
    VARIANTS = {
        "xielu-llama3": {},  # the released layout: no biases, untied, llama3 rope
        "biases-tied-gqa-1": dict(attention_bias=True, tie_word_embeddings=True, num_key_value_heads=1,
                                  rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    }
    HEADS = {"ApertusModel": "AutoModel", "ApertusForCausalLM": "AutoModelForCausalLM",
             "ApertusForTokenClassification": "AutoModelForTokenClassification"}
    HEAD_VARIANTS = ["biases-tied-gqa-1"]
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "tie_word_embeddings", "rope_parameters", "hidden_act")
    DEFAULT_FIELDS = ("attention_bias",)
    REFUSALS = [
        (dict(hidden_act="silu"), "hidden_act='silu'"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    ]

    @classmethod
    def reference(cls, name=None, **overrides):
        """The reference's model with xIELU's four values drawn per layer (it starts every layer at the same ones, and
        at eps -1e-6, whose clamp would not show): alpha_p and alpha_n around 0, beta in [0.3, 0.7), eps in
        [-0.5, -0.1)."""
        model = super().reference(name, **overrides)
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for module in model.modules():
                if type(module).__name__ == "XIELUActivation":
                    module.alpha_p.normal_(std=0.5, generator=generator)
                    module.alpha_n.normal_(std=0.5, generator=generator)
                    module.beta.fill_(0.3 + 0.4 * torch.rand((), generator=generator).item())
                    module.eps.fill_(-0.1 - 0.4 * torch.rand((), generator=generator).item())
        return model

    def test_xielu_values_are_the_checkpoints(self, tiny):
        _, reference, model = tiny
        for ours, theirs in zip(model.model.layers, reference.model.layers):
            for name in ("alpha_p", "alpha_n", "beta", "eps"):
                assert torch.equal(getattr(ours.mlp.act_fn, name), getattr(theirs.mlp.act_fn, name)), name


def test_apertus_config_from_scratch_starts_xielu_as_the_reference():
    config = openformers.ApertusConfig(**{k: v for k, v in TestApertus.TINY.items() if k != "rope_parameters"})
    ours = openformers.ApertusForCausalLM(config).model.layers[0].mlp.act_fn
    theirs = transformers.ApertusForCausalLM(transformers.ApertusConfig(**TestApertus.TINY)).model.layers[0].mlp.act_fn
    for name in ("alpha_p", "alpha_n", "beta", "eps"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), msg=name)


@pytest.mark.parametrize("model_type", ["apertus"])
def test_apertus_autotokenizer_picks_the_references_class_and_ids(model_type, tmp_path):
    variants.test_autotokenizer_picks_the_references_class_and_ids(model_type, "PreTrainedTokenizerFast", tmp_path)

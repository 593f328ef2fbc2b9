"""InternLM3 (model_type "internlm3") against the reference, on tiny random models it makes and saves.

The reference runs InternLM3 as Llama's classes (LlamaModel, LlamaForCausalLM, its only heads for it) over an
InternLM3Config. A class over test_models_llama_variants.SteppedLlamaVariantTests (decoder_suite's common tests: both
heads on a padded batch with labels, cached decoding, left padding, greedy and beam generation, a static cache, hidden
states, a training step, saving both ways; the config's defaults and refusals, bfloat16, the Auto classes, the CPU
kernel's steps with the reference's logits and tokens) in two variants: the released one (dynamic NTK rope scaling,
factor 6, without biases) and one with biases on every projection and the plain rotation. Then what is InternLM3's
own: config.json's names for the biases (qkv_bias and bias, as the released folder writes them), its dynamic scaling
past a small context, in logits and in generation crossing it, and the tokenizer class: the reference takes the
TokenizersBackend for an "internlm3" folder whatever class it names (the released one names its remote
InternLM3Tokenizer). llama.cpp has no InternLM3 architecture (its converter refuses the folder).
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_generate_matches,
    assert_outputs_close,
    generation_inputs,
    lm_inputs,
    load_saved,
    make_reference,
    outputs_of,
)
import test_models_llama_variants as llama_variants
from test_models_llama_variants import SIZES, SteppedLlamaVariantTests

transformers = pytest.importorskip("transformers")

RELEASED_ROPE = {"rope_type": "dynamic", "factor": 6.0, "rope_theta": 500.0}


def ids_of(*shape, seed=1):
    return torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(seed))


class TestInternLM3(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "InternLM3Config"
    MODEL_TYPE = "internlm3"
    TINY = dict(SIZES, head_dim=16, rope_parameters=RELEASED_ROPE)
    VARIANTS = {
        "released": {},  # max_position_embeddings 256: the common tests' sequences stay within it
        "biases-plain-rope": dict(attention_bias=True, mlp_bias=True, rms_norm_eps=0.1,
                                  rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    }
    HEADS = {"LlamaModel": "AutoModel", "LlamaForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = ["released", "biases-plain-rope"]
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "mlp_bias", "rope_parameters", "rms_norm_eps")
    DEFAULT_FIELDS = ("head_dim", "attention_bias", "mlp_bias")
    REFUSALS = [
        (dict(attention_bias=True), "mlp_bias=False"),
        (dict(hidden_size=62, head_dim=16), "hidden_size=62"),
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
        (dict(rope_parameters=None, rope_scaling={"rope_type": "dynamic"}), "rope_scaling.factor=None"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    ]

    @torch.inference_mode()
    def test_config_json_with_internlm3s_bias_names_loads(self, tiny, tmp_path):
        """The released config.json names attention_bias and mlp_bias qkv_bias and bias: read as the fields (here
        both True over a model without biases, which the reference then loads with the biases it draws at random:
        compared after both load the same folder)."""
        folder, reference, _ = tiny
        values = json.loads((folder / "config.json").read_text())
        values = {key: value for key, value in values.items() if key not in ("attention_bias", "mlp_bias")}
        (tmp_path / "config.json").write_text(json.dumps({**values, "qkv_bias": True, "bias": True}))
        config = openformers.AutoConfig.from_pretrained(tmp_path)
        theirs = transformers.AutoConfig.from_pretrained(tmp_path)
        assert (config.attention_bias, config.mlp_bias, config.qkv_bias, config.bias) == (True, True, True, True)
        assert (theirs.attention_bias, theirs.mlp_bias) == (True, True)
        assert "qkv_bias" not in config.to_dict() and config.to_dict()["attention_bias"] is True
        layer = openformers.LlamaForCausalLM(config).model.layers[0]
        assert layer.self_attn.q_proj.bias is not None and layer.mlp.up_proj.bias is not None
        # which name is which: q/k/v/o's biases without the MLP's are refused, naming the MLP's
        (tmp_path / "config.json").write_text(json.dumps({**values, "qkv_bias": True, "bias": False}))
        with pytest.raises(ValueError, match="mlp_bias=False.*attention_bias=True"):
            openformers.AutoConfig.from_pretrained(tmp_path)
        with pytest.raises(Exception, match="`qkv_bias` different from `bias`"):  # the reference's strict check
            transformers.AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("ids_length", [20, 6], ids=["past-the-context", "within-it"])
@torch.inference_mode()
def test_dynamic_scaling_past_a_small_context_matches_the_reference(ids_length, tmp_path):
    # The released scaling with a context of 8: the logits of a call past it and within it, in that order in both
    # libraries, then greedy generation crossing it (prompts of 6, 10 new tokens).
    config = transformers.InternLM3Config(**{**TestInternLM3.TINY, "max_position_embeddings": 8})
    reference = make_reference("LlamaForCausalLM", config)
    model = load_saved(reference, tmp_path)
    assert type(model.config) is openformers.InternLM3Config and model.config.rope_scaling["factor"] == 6.0
    ids = ids_of(2, ids_length, seed=7)
    for inputs in (lm_inputs(ids), lm_inputs(ids[:, :4].repeat(1, 2))):
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "InternLM3 dynamic scaling")
    assert_generate_matches(model, reference, *generation_inputs(ids_of))


def test_autotokenizer_takes_the_tokenizers_backend_as_the_reference(tmp_path):
    llama_variants.test_autotokenizer_picks_the_references_class_and_ids("internlm3", "InternLM3Tokenizer", tmp_path)

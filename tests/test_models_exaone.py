"""EXAONE 3.0/3.5 (model_type "exaone") against the reference, on tiny random models it makes and saves.

The reference runs EXAONE 3 as Llama's classes (LlamaModel, LlamaForCausalLM, its only heads for it) over an
ExaoneConfig, and its checkpoints keep the original code's module names (transformer.wte, transformer.h.N.attn.attention
.q_proj, mlp.c_fc_0...), which it renames at load and writes back at save. A class over
test_models_llama_variants.SteppedLlamaVariantTests (decoder_suite's common tests: both heads on a padded batch with
labels, cached decoding, left padding, greedy and beam generation, a static cache, hidden states, a training step,
saving both ways; the config's defaults and refusals, bfloat16, the Auto classes, the CPU kernel's decoding step) with
what is EXAONE's own: the saved file's names, and config.json's other names for three fields (num_layers,
layer_norm_epsilon, activation_function), as the released folders write them; GGUF files as llama.cpp's converter writes
EXAONE 3 (its "exaone" architecture, as LG publishes EXAONE-3.5's GGUFs): Llama's tensor names with the query and key
rows in the reference's order, the norms' epsilon required, llama3 scaling as a rope_freqs tensor.
"""

import json

import pytest
import torch
from safetensors import safe_open

import openformers
from decoder_parity import (
    add_decoder_metadata,
    add_llama3_rope_freqs,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    outputs_of,
)
from test_models_llama_variants import LLAMA_GGUF_NAMES, SIZES, SteppedLlamaVariantTests

transformers = pytest.importorskip("transformers")


class TestExaone(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "ExaoneConfig"
    MODEL_TYPE = "exaone"
    TINY = dict(SIZES, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    VARIANTS = {
        "exaone-3": {},
        # EXAONE-3.5-2.4B's: tied embeddings, llama3 scaling (its long context), a large epsilon that shows
        "llama3-tied": dict(tie_word_embeddings=True, rms_norm_eps=0.1, rope_parameters={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16, "rope_theta": 500.0}),
    }
    HEADS = {"LlamaModel": "AutoModel", "LlamaForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = ["exaone-3", "llama3-tied"]
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "rope_parameters", "rms_norm_eps")
    DEFAULT_FIELDS = ("head_dim", "attention_bias", "mlp_bias")
    REFUSALS = [
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(rms_norm_eps=0), "rms_norm_eps=0"),
    ]

    @torch.inference_mode()
    def test_saved_files_keep_exaones_names(self, tiny, tmp_path):
        """What ours saves holds the tensors the reference's own file holds, under EXAONE's names."""
        folder, _, model = tiny
        model.save_pretrained(tmp_path)
        with safe_open(folder / "model.safetensors", "pt") as theirs, \
                safe_open(tmp_path / "model.safetensors", "pt") as ours:
            assert sorted(ours.keys()) == sorted(theirs.keys())
            assert "transformer.h.1.attn.attention.out_proj.weight" in ours.keys()

    @torch.inference_mode()
    def test_config_json_with_exaones_field_names_loads(self, tiny, tmp_path):
        """The released config.json names num_hidden_layers, rms_norm_eps and hidden_act num_layers,
        layer_norm_epsilon and activation_function: read as the fields (the epsilon changes the logits)."""
        folder, reference, _ = tiny
        values = json.loads((folder / "config.json").read_text())
        renamed = {"num_hidden_layers": "num_layers", "rms_norm_eps": "layer_norm_epsilon",
                   "hidden_act": "activation_function"}
        values = {renamed.get(key, key): value for key, value in values.items()}
        values["layer_norm_epsilon"] = 0.5
        (tmp_path / "config.json").write_text(json.dumps(values))
        (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
        config = openformers.AutoConfig.from_pretrained(tmp_path)
        theirs_config = transformers.AutoConfig.from_pretrained(tmp_path)
        assert (config.num_hidden_layers, config.rms_norm_eps, config.hidden_act) == (2, 0.5, "silu")
        assert config.num_layers == 2 and "num_layers" not in config.to_dict()
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, config=theirs_config).eval()
        model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path)
        inputs = self.inputs()
        expected = outputs_of(theirs, inputs)
        assert_outputs_close(outputs_of(model, inputs), expected, "EXAONE's field names")
        assert (expected["logits"] - outputs_of(reference, inputs)["logits"]).abs().max() > 1e-3


def test_config_aliases_set_the_fields_as_the_reference():
    values = dict(num_layers=3, layer_norm_epsilon=0.25, activation_function="silu")
    ours, theirs = openformers.ExaoneConfig(**values), transformers.ExaoneConfig(**values)
    assert (ours.num_hidden_layers, ours.rms_norm_eps) == (theirs.num_hidden_layers, theirs.rms_norm_eps) == (3, 0.25)


def _write_gguf(path, reference, epsilon=True):
    """`reference` as llama.cpp's converter writes an EXAONE 3 checkpoint: its "exaone" metadata (the epsilon, unless
    left out, and the rotated dimensions), Llama's tensor names, the rows as they are, llama3 scaling as rope_freqs."""
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "exaone")
    add_decoder_metadata(writer, config)
    if epsilon:
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    add_llama3_rope_freqs(writer, config)
    for _, name, tensor in llama_cpp_tensors(reference, LLAMA_GGUF_NAMES):
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(TestExaone.VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = TestExaone.reference(**TestExaone.VARIANTS[variant])
    _write_gguf(tmp_path / "exaone.gguf", reference)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "exaone.gguf")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.model_type == "exaone"
    assert_same_attributes(model.config, reference.config, ("tie_word_embeddings", "head_dim"))
    assert model.config.rms_norm_eps == pytest.approx(reference.config.rms_norm_eps, rel=1e-6)  # a float32 there
    inputs = TestExaone.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


def test_gguf_without_the_norms_epsilon_is_refused(tmp_path):
    _write_gguf(tmp_path / "exaone.gguf", TestExaone.reference(), epsilon=False)
    with pytest.raises(ValueError, match="lacks the GGUF metadata key exaone.attention.layer_norm_rms_epsilon"):
        openformers.AutoConfig.from_pretrained(tmp_path / "exaone.gguf")

"""Ministral 3 (model_type "ministral3") against the reference, on tiny random models it makes and saves.

A class over test_models_llama_variants.SteppedLlamaVariantTests (decoder_suite's common tests: every head the
reference has on a padded batch with labels, cached decoding, left padding, greedy and beam generation, a static cache,
hidden states, a training step, saving both ways; the config's defaults and refusals, bfloat16, the Auto classes, the
CPU kernel's steps before the queries' scale departs from 1, the layers' past it) with what is Ministral 3's own: the
queries' scale by position, made to show by a YaRN context of 4 positions (the 9-12 token rows cross three of its steps) and a large llama_4_scaling_beta, with and without a sliding
window shorter than the rows. The released folders are Mistral 3's image-and-text wrappers ("mistral3"), which the
reference's AutoModelForCausalLM refuses too. GGUF files as llama.cpp's converter writes the text decoder (its
"mistral3" architecture: Llama's names with permuted query and key rows, YaRN with yarn_log_multiplier and the
queries' temperature_scale), which the reference does not read: their logits and greedy tokens are those of the model
they were written from, also with a Q8_0 matrix; without YaRN the file is a plain Mistral.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from openformers.generation.cache import DynamicCache
from test_models_llama_variants import DEFAULT_FIELDS, LLAMA_GGUF_NAMES, SIZES, SteppedLlamaVariantTests, _decoder_heads

transformers = pytest.importorskip("transformers")

YARN = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.6, "rope_theta": 500.0}


class TestMinistral3(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "Ministral3Config"
    MODEL_TYPE = "ministral3"
    TINY = dict(SIZES, head_dim=16, rope_parameters=YARN)
    VARIANTS = {
        "yarn-query-scale": {},
        "window-tied-gqa-1": dict(sliding_window=3, tie_word_embeddings=True, num_key_value_heads=1,
                                  rope_parameters={**YARN, "llama_4_scaling_beta": 0.3, "factor": 4.0}),
    }
    HEADS = _decoder_heads("Ministral3")
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "sliding_window", "rope_parameters")
    DEFAULT_FIELDS = ("head_dim", "sliding_window")
    REFUSALS = [
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 500.0}), "rope_scaling=None"),
        (dict(rope_parameters={**YARN, "llama_4_scaling_beta": None}), "rope_scaling.llama_4_scaling_beta=None"),
        (dict(sliding_window=0), "sliding_window=0"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
    ]

    def test_config_defaults_match_the_reference(self):
        """The reference's defaults, its YaRN rope scaling with llama_4_scaling_beta among them (the reference also
        writes max_position_embeddings and the older "type" key into it, which no computation reads)."""
        ours, theirs = openformers.Ministral3Config(), transformers.Ministral3Config()
        assert_same_attributes(ours, theirs, DEFAULT_FIELDS + self.DEFAULT_FIELDS)
        unread = ("type", "max_position_embeddings")
        expected = {key: value for key, value in theirs.rope_parameters.items() if key not in unread}
        assert ours.to_dict()["rope_parameters"] == expected

    def test_config_refuses_bad_values_by_name(self, refusal, tmp_path):
        """The refusals as config.json gives them (rope_parameters is read from files)."""
        values, message = refusal
        (tmp_path / "config.json").write_text(json.dumps({"model_type": self.MODEL_TYPE, **self.TINY, **values}))
        with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
            openformers.AutoConfig.from_pretrained(tmp_path)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_and_tokens(self, tiny, variant, tmp_path, monkeypatch):
        """The step runs the positions before original_max_position_embeddings, where the queries' factor is exactly 1,
        and leaves those past it to the layers: with the tiny context of 4, one token at a time from a prompt of 2,
        positions 2 and 3 are steps of the kernel, 4-11 the layers', all with the reference's logits, and generation
        (runs of greedy steps stopping at the context) gives its tokens; with a context of 64, a prompt of 4 and 8 new
        tokens all take the step."""
        _, reference, model = tiny
        calls, decode_step = [], torch.ops.openformers.decode_step
        monkeypatch.setattr(torch.ops.openformers, "decode_step", lambda *args: calls.append(1) or decode_step(*args))
        ids, cache = self.ids(1, 12, seed=9), DynamicCache()
        steps = [model(ids[:, :2], past_key_values=cache).logits]
        steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(2, ids.shape[1])]
        assert len(calls) == 2
        torch.testing.assert_close(torch.cat(steps, dim=1), reference(ids).logits, atol=1e-4, rtol=1e-4)
        settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert model.generate(ids[:, :3], **settings).tolist() == reference.generate(ids[:, :3], **settings).tolist()
        scaling = {**self.VARIANTS[variant].get("rope_parameters", YARN), "original_max_position_embeddings": 64}
        wide = self.reference(**{**self.VARIANTS[variant], "rope_parameters": scaling})
        monkeypatch.undo()
        assert_kernel_steps_and_generates_as_the_reference(load_saved(wide, tmp_path), wide, ids)



@torch.inference_mode()
def test_the_query_scale_moves_the_logits(tmp_path):
    """Scaled (beta 0.6) and unscaled (beta 0), ours gives the reference's logits, which differ: the factor is
    computed, not ignored."""
    inputs = {"input_ids": TestMinistral3.ids(1, 12, seed=4)}
    logits = []
    for beta in (0.6, 0.0):
        reference = TestMinistral3.reference(rope_parameters={**YARN, "llama_4_scaling_beta": beta})
        ours = outputs_of(load_saved(reference, tmp_path / str(beta)), inputs)
        assert_outputs_close(ours, outputs_of(reference, inputs), f"beta {beta}")
        logits.append(ours["logits"])
    assert (logits[0] - logits[1]).abs().max() > 1e-2


def _write_gguf(path, reference, yarn=True, quantized=()):
    """`reference` as llama.cpp's converter writes a Ministral 3 text decoder: "mistral3" metadata (Llama's, the head
    size, YaRN with mscale_all_dim as yarn_log_multiplier and llama_4_scaling_beta as temperature_scale, or no
    scaling with `yarn` false), the query and key rows permuted, the tensors named in `quantized` as Q8_0 blocks.
    Returns those tensors as the file's blocks give them back, by Hugging Face name."""
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "mistral3")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    rope = config.rope_parameters
    if yarn:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
        writer.add_rope_scaling_yarn_log_mul(rope["mscale_all_dim"])
        writer.add_attn_temperature_scale(rope["llama_4_scaling_beta"])
    read_back = {}
    for hf_name, name, tensor in llama_cpp_tensors(reference, LLAMA_GGUF_NAMES, permute_heads=True):
        if name in quantized:
            kind = gguf.GGMLQuantizationType.Q8_0
            blocks = gguf.quants.quantize(tensor.float().numpy(), kind)
            writer.add_tensor(name, blocks, raw_dtype=kind)
            read_back[hf_name] = torch.from_numpy(gguf.quants.dequantize(blocks, kind))
        else:
            writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)
    return read_back


# llama.cpp runs "mistral3" files without a window (Ministral 3 has none), so the variants are windowless.
GGUF_VARIANTS = {
    "yarn-query-scale": {},
    "tied-gqa-1": dict(tie_word_embeddings=True, num_key_value_heads=1,
                       rope_parameters={**YARN, "llama_4_scaling_beta": 0.3, "factor": 4.0, "mscale_all_dim": 0.5}),
}


@pytest.mark.parametrize("variant", list(GGUF_VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    """Logits over rows that cross three steps of the queries' scale, and greedy tokens, are the original model's."""
    reference = TestMinistral3.reference(**GGUF_VARIANTS[variant])
    _write_gguf(tmp_path / "ministral3.gguf", reference)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "ministral3.gguf")
    assert type(model).__name__ == "Ministral3ForCausalLM"
    assert_same_attributes(model.config, reference.config, ("tie_word_embeddings", "head_dim", "num_key_value_heads"))
    theirs = {key: value for key, value in reference.config.rope_parameters.items() if key != "rope_theta"}
    assert model.config.rope_scaling == pytest.approx(theirs)
    inputs = {"input_ids": TestMinistral3.ids(2, 12, seed=5)}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), variant)
    prompt = TestMinistral3.ids(1, 5, seed=6)
    expected = reference.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=False), expected)


@torch.inference_mode()
def test_gguf_q8_0_matrix_reads_as_its_blocks(tmp_path):
    """A Q8_0 matrix (one layer's value projection) reads as the blocks dequantize: the logits are those of the
    original with that matrix replaced."""
    reference = TestMinistral3.reference()
    read_back = _write_gguf(tmp_path / "q8.gguf", reference, quantized=("blk.1.attn_v.weight",))
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "q8.gguf")
    name = "model.layers.1.self_attn.v_proj.weight"
    assert not torch.equal(read_back[name], reference.state_dict()[name])  # the blocks round
    reference.load_state_dict(read_back, strict=False)
    inputs = {"input_ids": TestMinistral3.ids(2, 12, seed=5)}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "q8_0")


@torch.inference_mode()
def test_gguf_without_yarn_is_a_plain_mistral(tmp_path):
    """A "mistral3" file without rope scaling (what the converter writes for a Mistral text decoder) is Mistral's."""
    reference = TestMinistral3.reference()
    _write_gguf(tmp_path / "mistral.gguf", reference, yarn=False)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "mistral.gguf")
    assert model.config.model_type == "mistral" and model.config.rope_scaling is None
    plain = transformers.MistralForCausalLM(transformers.MistralConfig(**{
        **SIZES, "head_dim": 16, "rope_theta": reference.config.rope_parameters["rope_theta"],
        "rms_norm_eps": reference.config.rms_norm_eps, "tie_word_embeddings": reference.config.tie_word_embeddings,
    })).eval()
    plain.load_state_dict(reference.state_dict())
    inputs = {"input_ids": TestMinistral3.ids(2, 12, seed=5)}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(plain, inputs), "mistral")

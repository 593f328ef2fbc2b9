"""Llama 3.x against the reference: llama3 rope scaling (Llama 3.1 and 3.2) and tied embeddings (Llama 3.2 1B/3B).

Tiny random models made by transformers give the reference's logits before and past
original_max_position_embeddings, generate the same tokens across it, and save both ways. A GGUF written as
llama.cpp's converter writes a Llama 3.x file, the scaling kept only as per-pair factors in a `rope_freqs` tensor,
gives the same logits as the Hugging Face folder and reads back the folder's rope_scaling. The CPU kernel takes
these models and gives the plain path's logits. TestLlama3 runs the common decoder tests (tests/decoder_suite.py)
on both kinds with a padded batch of 100 positions, past the original context.
"""

import json
import warnings

import numpy as np
import pytest
import torch

from decoder_parity import (
    add_decoder_metadata,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, kernels
from openformers.generation.cache import DynamicCache
from openformers.kernels.llama import refusal

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

# head_dim 32 (16 pairs) with theta 10000: four pairs rotate inside the band between 64 / 4 and 64 positions, so
# the llama3 blend matters, and sequences of 100 tokens run well past original_max_position_embeddings=64.
TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)
LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 64}
LLAMA32 = {**LLAMA31, "factor": 32.0}
KINDS = {  # Llama 3.1 (untied) and Llama 3.2 (tied, factor 32)
    "3.1": dict(rope_parameters={**LLAMA31, "rope_theta": 10000.0}),
    "3.2": dict(rope_parameters={**LLAMA32, "rope_theta": 10000.0}, tie_word_embeddings=True),
}
LONG = 100


class TestLlama3(DecoderFamilyTests):
    REFERENCE_CONFIG = "LlamaConfig"
    TINY = TINY
    VARIANTS = KINDS
    HEADS = {"LlamaForCausalLM": "AutoModelForCausalLM"}  # Llama's other heads: tests/test_models_llama.py
    LOWEST_ID = 3
    BATCH_LENGTH = LONG  # past original_max_position_embeddings=64, where the llama3 scaling turns the slow pairs

    @torch.inference_mode()
    def test_config_reads_the_reference_file(self, tiny):
        folder, reference, model = tiny
        written = json.loads((folder / "config.json").read_text())
        assert written["rope_parameters"]["rope_type"] == "llama3"
        expected = {key: value for key, value in reference.config.rope_parameters.items() if key != "rope_theta"}
        assert model.config.rope_scaling == expected and model.config.rope_theta == 10000.0
        assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings

    @pytest.mark.parametrize("length", [40, LONG], ids=["within", "past"])
    @torch.inference_mode()
    def test_logits_and_loss_match_reference_before_and_past_the_original_context(self, tiny, length):
        _, reference, model = tiny
        ids = self.ids(2, length)
        mask = torch.ones_like(ids)
        ids[1, :5], mask[1, :5] = 0, 0  # left padding
        ours = model(ids, attention_mask=mask, labels=ids)
        theirs = reference(ids, attention_mask=mask, labels=ids)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("options", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
    @torch.inference_mode()
    def test_generation_across_the_original_context_matches_reference(self, tiny, options):
        _, reference, model = tiny
        ids = self.ids(1, 58, seed=4)  # 58 + 14 new tokens: the cache crosses original_max_position_embeddings=64
        settings = dict(max_new_tokens=14, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()

    @torch.inference_mode()
    def test_a_static_cache_gives_the_dynamic_cache_tokens_across_the_original_context(self, tiny):
        model = tiny[2]
        ids = self.ids(1, 58, seed=4)
        for options in (dict(), dict(num_beams=3)):
            settings = dict(max_new_tokens=14, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
            static = model.generate(ids, cache_implementation="static", **settings)
            assert static.tolist() == model.generate(ids, **settings).tolist(), options

    @torch.inference_mode()
    def test_the_cpu_kernel_takes_llama3_models_with_the_plain_paths_logits(self, tiny, monkeypatch):
        _, reference, model = tiny
        assert refusal(model.config) is None
        if not kernels.build():
            pytest.skip("the CPU kernels cannot be built here (no compiler or ninja)")
        assert model.model.accelerated_step is not None  # from_pretrained installed the step
        calls, step = [], torch.ops.openformers.decode_step
        monkeypatch.setattr(torch.ops.openformers, "decode_step", lambda *args: calls.append(1) or step(*args))
        ids = self.ids(1, 80, seed=6)
        cache = DynamicCache()
        logits = [model(ids[:, :50], past_key_values=cache).logits]
        logits += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(50, 80)]
        assert len(calls) == 30  # every one-token step, across original_max_position_embeddings=64, took the kernel
        torch.testing.assert_close(torch.cat(logits, dim=1), reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_a_published_llama_3_2_config_reads_and_saves_as_the_reference_reads_it(tmp_path):
    # Llama 3.2 1B's config.json as published (transformers 4's layout: rope_scaling and rope_theta at the top).
    values = {**TINY, "model_type": "llama", "architectures": ["LlamaForCausalLM"], "rope_theta": 500000.0,
              "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "max_position_embeddings": 131072, "tie_word_embeddings": True, "head_dim": 32}
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = LlamaConfig.from_pretrained(tmp_path)
    assert config.rope_scaling == values["rope_scaling"] and config.rope_theta == 500000.0
    config.save_pretrained(tmp_path / "saved")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "saved")
    assert theirs.rope_parameters == {**values["rope_scaling"], "rope_theta": 500000.0}
    assert theirs.tie_word_embeddings and theirs.max_position_embeddings == 131072


@torch.inference_mode()
def test_tied_embeddings_are_one_tensor_and_save_as_the_reference_saves(tmp_path_factory):
    reference = TestLlama3.reference(**KINDS["3.2"])
    theirs_folder, ours_folder = tmp_path_factory.mktemp("theirs"), tmp_path_factory.mktemp("ours")
    model = load_saved(reference, theirs_folder)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(ours_folder)
    from safetensors import safe_open

    keys = [set(safe_open(folder / "model.safetensors", "pt").keys()) for folder in (theirs_folder, ours_folder)]
    assert keys[0] == keys[1] and "lm_head.weight" not in keys[1]
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(ours_folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    reloaded.eval()
    assert reloaded.config.rope_parameters == reference.config.rope_parameters
    assert reloaded.config.tie_word_embeddings
    ids = TestLlama3.ids(1, LONG)
    torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits)


# GGUF files as llama.cpp's converter writes Llama 3.x: the query and key rows permuted for its rotary kernel, no
# output tensor for tied embeddings, and the llama3 scaling as one factor per pair in rope_freqs.weight.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _rope_freqs(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """What llama.cpp's converter stores for llama3 scaling: the number each pair's frequency is divided by."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    wavelength = 2 * np.pi / inv_freq
    context, factor = scaling["original_max_position_embeddings"], scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    smooth = (context / wavelength - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelength > context / low, factor, blended)
    return np.where(wavelength < context / high, 1.0, factors).astype(np.float32)


def _write_gguf(path, reference, factors: np.ndarray | None, with_vocabulary=False):
    config = reference.config
    writer = gguf.GGUFWriter(str(path), "llama")
    if with_vocabulary:  # the reference's GGUF loader builds a tokenizer from it
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([chr(0x100 + i) for i in range(config.vocab_size)])
        writer.add_token_merges([])
    add_decoder_metadata(writer, config)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
    for _, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES, permute_heads=True):
        writer.add_tensor(gguf_name, tensor.numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("kind", list(KINDS))
@torch.inference_mode()
def test_gguf_with_rope_freqs_gives_the_hugging_face_folders_logits(kind, tmp_path):
    reference = TestLlama3.reference(**KINDS[kind])
    scaling = {key: value for key, value in reference.config.rope_parameters.items() if key != "rope_theta"}
    _write_gguf(tmp_path / "llama3.gguf", reference, _rope_freqs(32, 10000.0, scaling))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "llama3.gguf")
    assert isinstance(model, LlamaForCausalLM) and model.config.rope_scaling == scaling
    assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings
    ids = TestLlama3.ids(2, LONG, seed=3)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)
    settings = dict(max_new_tokens=14, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model.generate(ids[:1, :58], **settings).tolist() == reference.generate(ids[:1, :58], **settings).tolist()


@torch.inference_mode()
def test_gguf_band_written_with_other_factors_reads_as_the_same_frequencies(tmp_path):
    # low_freq_factor 2 with twice the context puts the band at the same wavelengths: the same model, which reads
    # back in Llama 3's own terms (low_freq_factor 1).
    same_band = {**LLAMA31, "low_freq_factor": 2.0, "high_freq_factor": 8.0, "original_max_position_embeddings": 128}
    reference = TestLlama3.reference(rope_parameters={**same_band, "rope_theta": 10000.0})
    _write_gguf(tmp_path / "llama3.gguf", reference, _rope_freqs(32, 10000.0, same_band))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "llama3.gguf")
    assert model.config.rope_scaling == LLAMA31
    ids = TestLlama3.ids(1, LONG, seed=5)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_gguf_weights_are_those_the_reference_reads(tmp_path):
    # The reference reads the same weights from such a file (it leaves rope_freqs aside, and with it the scaling).
    reference = TestLlama3.reference(**KINDS["3.2"])
    scaling = {key: value for key, value in reference.config.rope_parameters.items() if key != "rope_theta"}
    _write_gguf(tmp_path / "llama3.gguf", reference, _rope_freqs(32, 10000.0, scaling), with_vocabulary=True)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="llama3.gguf").state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="llama3.gguf").state_dict()
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)


def test_gguf_rope_freqs_that_are_not_llama3_scaling_are_refused(tmp_path):
    reference = TestLlama3.reference()
    factors = np.linspace(1.0, 6.0, 16, dtype=np.float32) ** 2  # smooth everywhere: no band, no flat ends
    _write_gguf(tmp_path / "odd.gguf", reference, factors)
    with pytest.raises(ValueError, match="rope_freqs"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "odd.gguf")
    _write_gguf(tmp_path / "short.gguf", reference, np.ones(8, dtype=np.float32))
    with pytest.raises(ValueError, match="rope_freqs.weight has 8 factors"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "short.gguf")


@torch.inference_mode()
def test_gguf_rope_freqs_of_ones_is_no_scaling(tmp_path):
    reference = TestLlama3.reference()
    _write_gguf(tmp_path / "plain.gguf", reference, np.ones(16, dtype=np.float32))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "plain.gguf")
    assert model.config.rope_scaling is None
    ids = TestLlama3.ids(1, 30)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_llama3_scaling_is_checked_when_the_config_is_read():
    with pytest.raises(ValueError, match="rope_scaling.high_freq_factor"):
        LlamaConfig(**TINY, rope_scaling={**LLAMA31, "high_freq_factor": None})
    assert LlamaConfig(**TINY, rope_scaling={**LLAMA31, "type": "llama3"}).rope_scaling["rope_type"] == "llama3"

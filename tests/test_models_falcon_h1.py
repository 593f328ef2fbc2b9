"""Falcon-H1 (model_type "falcon_h1") against the reference, on tiny random models it makes and saves.

Two layers, each with attention and a Mamba-2 mixer side by side, over prompts that span several scan chunks (chunk
size 4), A_log, D and dt_bias drawn per head, the weights at std 0.15 and every muP multiplier away from 1. Variants:
no gated norm (the default), the mixer as wide as mamba_d_ssm (not mamba_expand * hidden_size) and a
head_dim other than hidden_size / heads, two groups; the gated norm before the gate, every bias, tied embeddings, one
group; the gated norm after the gate. Through HybridCacheTests and DecoderFamilyTests: both heads the reference has,
with the loss, in each variant; greedy and beam generation; hidden states and attention weights; inputs_embeds (not
scaled, as the reference's); a training step's gradients with and without checkpointing; saving both ways; and in
their HybridCache forms (every layer holding keys and values and a state) cached decoding, a left-padded batch
against its rows alone (and the reference's batch), sampled sequences, assisted decoding giving the reference's
greedy tokens, and the refusals (a DynamicCache, a static cache, the CPU kernel). Also each multiplier's effect, config defaults, a config.json
in the released layout, refusals, GGUF files written as llama.cpp writes them, and the tokenizer class.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_byte_level_bpe_folder_tokenizes_as_the_reference,
    assert_config_defaults_equal_the_references,
    assert_config_refuses_by_name,
    assert_outputs_close,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests, HybridCacheTests
from openformers import FalconH1Config
from test_models_bamba import GGUF_NAMES
from test_models_mamba2 import add_hybrid_mixer_metadata, llama_cpp_mixer_tensor

transformers = pytest.importorskip("transformers")

MULTIPLIERS = dict(
    embedding_multiplier=1.7, lm_head_multiplier=0.6, key_multiplier=0.5, attention_in_multiplier=1.3,
    attention_out_multiplier=0.8, ssm_in_multiplier=1.2, ssm_out_multiplier=0.7,
    ssm_multipliers=[0.5, 1.5, 0.7, 1.3, 0.9], mlp_multipliers=[0.6, 1.4],
)
TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, mamba_d_ssm=48, mamba_n_heads=6, mamba_d_head=8,
    mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4,
    rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.15, **MULTIPLIERS,
)
VARIANTS = {
    "no-norm-own-width": {},
    "norm-before-gate-biased-tied": dict(
        mamba_rms_norm=True, mamba_norm_before_gate=True, mamba_d_ssm=None, mamba_n_heads=8, mamba_n_groups=1,
        head_dim=8, projectors_bias=True, attention_bias=True, mlp_bias=True, mamba_proj_bias=True,
        mamba_conv_bias=False, tie_word_embeddings=True),
    "norm-after-gate": dict(mamba_rms_norm=True, mamba_norm_before_gate=False),
}


class TestFalconH1(HybridCacheTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "FalconH1Config"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {"FalconH1Model": "AutoModel", "FalconH1ForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}
    HEAD_VARIANTS = list(VARIANTS)
    TRAINING_VARIANTS = ["no-norm-own-width", "norm-before-gate-biased-tied"]


_reference, _ids = TestFalconH1.reference, TestFalconH1.ids


@pytest.mark.parametrize("name, value", [(name, 1.0) for name in MULTIPLIERS if not name.endswith("s")]
                         + [("ssm_multipliers", [0.5, 1.5, 0.7, 1.3, 1.0]), ("mlp_multipliers", [1.0, 1.4])])
@torch.inference_mode()
def test_each_multiplier_moves_the_logits_and_ours_follow(name, value, tmp_path):
    """One multiplier (one part of the vectors: dt's, the gate's) set back to 1: the reference's logits move, and
    ours match them still."""
    reference = _reference(**{name: value})
    model = load_saved(reference, tmp_path)
    ids = _ids(2, 9, seed=7)
    theirs = reference(ids).logits
    torch.testing.assert_close(model(ids).logits, theirs, atol=1e-4, rtol=1e-4)
    assert (_reference()(ids).logits - theirs).abs().max() > 1e-3


def test_config_defaults_equal_the_references():
    ours, theirs = FalconH1Config(), transformers.FalconH1Config()
    assert_config_defaults_equal_the_references(ours, theirs)
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert ours.mamba_d_head == theirs.mamba_d_head == 8 and ours.layer_types == ["hybrid"] * 32


def test_a_config_in_the_released_layout_reads_and_saves_as_the_references(tmp_path):
    """The layout of the released configs (Falcon-H1-0.5B's fields: a head_dim of its own, the mixer's width
    mamba_d_ssm, rope_theta at the top, every multiplier; sizes cut here): the same values, and what ours saves the
    reference reads alike."""
    values = {
        "architectures": ["FalconH1ForCausalLM"], "model_type": "falcon_h1", "vocab_size": 32784, "hidden_size": 256,
        "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
        "head_dim": 64, "mamba_d_ssm": 384, "mamba_n_heads": 6, "mamba_d_head": 64, "mamba_n_groups": 1,
        "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_chunk_size": 128, "mamba_conv_bias": True,
        "mamba_proj_bias": False, "mamba_norm_before_gate": False, "mamba_rms_norm": False, "projectors_bias": False,
        "rope_theta": 1e11, "rms_norm_eps": 1e-5, "max_position_embeddings": 16384, "tie_word_embeddings": False,
        "attention_in_multiplier": 1.0, "attention_out_multiplier": 0.9375, "embedding_multiplier": 5.66,
        "key_multiplier": 0.39, "lm_head_multiplier": 0.039, "mlp_multipliers": [0.88, 0.59], "ssm_in_multiplier": 1.25,
        "ssm_multipliers": [0.35, 0.25, 0.35, 0.5, 0.35], "ssm_out_multiplier": 0.24, "mamba_use_mlp": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(ours) is FalconH1Config and ours.head_dim == theirs.head_dim == 64
    for key in ("mamba_d_ssm", "mamba_d_head", "ssm_multipliers", "mlp_multipliers", "key_multiplier",
                "embedding_multiplier", "mamba_chunk_size"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.extra["mamba_use_mlp"] is True
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert again.head_dim == 64 and again.mamba_d_ssm == 384 and again.rope_parameters == theirs.rope_parameters


@pytest.mark.parametrize("values, message", [
    (dict(mamba_d_ssm=40), "mamba_n_heads=6; expected mamba_n_heads \\* mamba_d_head \\(8\\) equal to mamba_d_ssm"),
    (dict(mamba_d_ssm=0), "mamba_d_ssm=0"),
    (dict(mamba_n_heads=5), "mamba_n_heads=5"),
    (dict(mamba_n_groups=4), "mamba_n_groups=4"),
    (dict(time_step_limit=(0.5, 0.1)), "time_step_limit="),
    (dict(ssm_multipliers=[1.0, 1.0]), "ssm_multipliers=\\[1.0, 1.0\\]"),
    (dict(mlp_multipliers=[1.0, "2"]), "mlp_multipliers="),
    (dict(key_multiplier="0.5"), "key_multiplier='0.5'"),
    (dict(mamba_rms_norm="yes"), "mamba_rms_norm='yes'"),
    (dict(head_dim=7), "head_dim=7"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    settings = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(FalconH1Config, {**settings, **values}, message, tmp_path)


def test_tokenizer_of_a_falcon_h1_folder_is_the_references(tmp_path):
    """Falcon-H1's folders hold a byte-level BPE tokenizer.json and name PreTrainedTokenizerFast; the reference
    registers no tokenizer of its own for the model type."""
    special = ["<|begin_of_text|>", "<|end_of_text|>"]
    name = assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, ["Hey, are you conscious?", "Falcon-H1: attention and SSM, side by side."], special,
        {"model_type": "falcon_h1"},
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": special[0], "eos_token": special[1]})
    assert name == "TokenizersBackend"


# GGUF files as llama.cpp's converter writes them (convert_hf_to_gguf.py FalconH1Model): architecture "falcon-h1",
# Mamba-2's ssm.* metadata (the mixer's width as inner_size, the heads as time_step_rank) with the attention's
# (key_length the head size) and the multipliers folded into the weights: token_embd times embedding_multiplier,
# attn_q and attn_v times attention_in_multiplier, attn_k times it and key_multiplier, attn_output times
# attention_out_multiplier, ffn_gate and ffn_down times the two mlp_multipliers, ssm_in times ssm_in_multiplier and its
# rows part by part by ssm_multipliers, ssm_out times ssm_out_multiplier, output times lm_head_multiplier; the mixers'
# tensors as for mamba2 (A as -exp(A_log), A and D as (H, 1), the gated norm as (G, I / G), the squeezed
# convolution; Bamba's names, test_models_bamba.GGUF_NAMES); no row permutation. The converter scales biases with their weights, so biased variants compute
# otherwise there, and llama.cpp's gated norm comes after the gate: the variants without biases whose norm, if any,
# comes after it are llama.cpp's functions.

def _folded(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """`tensor` times the multipliers llama.cpp's converter folds into it."""
    factors = {"embed_tokens": config.embedding_multiplier, "lm_head": config.lm_head_multiplier,
               "q_proj": config.attention_in_multiplier, "v_proj": config.attention_in_multiplier,
               "k_proj": config.attention_in_multiplier * config.key_multiplier,
               "o_proj": config.attention_out_multiplier, "gate_proj": config.mlp_multipliers[0],
               "down_proj": config.mlp_multipliers[1], "out_proj": config.ssm_out_multiplier}
    factor = next((f for part, f in factors.items() if f".{part}." in f".{name}"), None)
    if factor is not None:
        return tensor * factor
    if ".mamba.in_proj." in name:
        I, GN = config.mamba_d_ssm, config.mamba_n_groups * config.mamba_d_state
        sizes = [I, I, GN, GN, config.mamba_n_heads]
        parts = torch.cat([torch.full((n,), m) for n, m in zip(sizes, config.ssm_multipliers)])
        return tensor * config.ssm_in_multiplier * parts[:, None]
    return tensor


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "falcon-h1")
    add_decoder_metadata(writer, config)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    add_hybrid_mixer_metadata(writer, config, config.mamba_d_ssm)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        tensor = _folded(name, tensor, config)
        if ".mamba." in name:
            tensor = llama_cpp_mixer_tensor(name, tensor, config.mamba_n_groups)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", ["no-norm-own-width", "norm-after-gate"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "falcon-h1.gguf", reference)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "falcon-h1.gguf")
    assert type(model) is openformers.FalconH1ForCausalLM
    config, theirs = model.config, reference.config
    for key in ("head_dim", "mamba_d_ssm", "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state",
                "mamba_rms_norm", "mamba_conv_bias", "projectors_bias", "tie_word_embeddings"):
        assert getattr(config, key) == getattr(theirs, key), key
    assert config.embedding_multiplier == config.ssm_out_multiplier == 1.0 and config.ssm_multipliers == [1.0] * 5
    ids, mask = TestFalconH1.ids(2, 9, seed=7), torch.ones(2, 9, dtype=torch.long)
    mask[1, :2] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")

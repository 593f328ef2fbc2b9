"""Falcon-H1 (model_type "falcon_h1") against the reference, on tiny random models it makes and saves.

Two layers, each with attention and a Mamba-2 mixer side by side, over prompts that span several scan chunks (chunk
size 4), A_log, D and dt_bias drawn per head, the weights at std 0.15 and every muP multiplier away from 1. Variants:
no gated norm (the released models' setting), the mixer as wide as mamba_d_ssm (not mamba_expand * hidden_size) and a
head_dim other than hidden_size / heads, two groups; the gated norm before the gate, every bias, tied embeddings, one
group; the gated norm after the gate. Through HybridCacheTests and DecoderFamilyTests: both heads the reference has,
with the loss, in each variant; greedy and beam generation; hidden states and attention weights; inputs_embeds (not
scaled, as the reference's); a training step's gradients with and without checkpointing; saving both ways; and in
their HybridCache forms (every layer holding keys and values and a state) cached decoding, a left-padded batch
against its rows alone (and the reference's batch), sampled sequences, and the refusals (a DynamicCache, a static
cache, assisted decoding, the server, the CPU kernel). Also each multiplier's effect, config defaults, a config.json
in the released layout, refusals, and the tokenizer class.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import assert_byte_level_bpe_folder_tokenizes_as_the_reference, load_saved
from decoder_suite import DecoderFamilyTests, HybridCacheTests
from openformers import FalconH1Config

transformers = pytest.importorskip("transformers")

MULTIPLIERS = dict(
    embedding_multiplier=1.7, lm_head_multiplier=0.6, key_multiplier=0.5, attention_in_multiplier=1.3,
    attention_out_multiplier=0.8, ssm_in_multiplier=1.2, ssm_out_multiplier=0.7,
    ssm_multipliers=[0.5, 1.5, 0.7, 1.3, 0.9], mlp_multipliers=[0.6, 1.4],
)
TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, mamba_d_ssm=48, mamba_n_heads=6, mamba_d_head=8,
    mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
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
    for key, value in theirs.to_dict().items():
        if key in ("transformers_version", "dtype", "architectures", "_name_or_path", "chunk_size_feed_forward",
                   "is_encoder_decoder", "id2label", "label2id", "rope_parameters"):
            continue
        ours_value = getattr(ours, key)
        assert (list(ours_value) if isinstance(ours_value, tuple) else ours_value) == value, key
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
    with pytest.raises(ValueError, match=f"Invalid config: {message}"):
        FalconH1Config(**{**settings, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon_h1", **settings, **values}))
    with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
        openformers.AutoConfig.from_pretrained(tmp_path)


def test_tokenizer_of_a_falcon_h1_folder_is_the_references(tmp_path):
    """Falcon-H1's folders hold a byte-level BPE tokenizer.json and name PreTrainedTokenizerFast; the reference
    registers no tokenizer of its own for the model type."""
    special = ["<|begin_of_text|>", "<|end_of_text|>"]
    name = assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, ["Hey, are you conscious?", "Falcon-H1: attention and SSM, side by side."], special,
        {"model_type": "falcon_h1"},
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": special[0], "eos_token": special[1]})
    assert name == "TokenizersBackend"

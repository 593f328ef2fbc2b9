"""Bamba (model_type "bamba") against the reference, on tiny random models it makes and saves.

Two layers, a Mamba-2 mixer and an attention layer (in either order), over prompts that span several scan chunks
(chunk size 4), two groups of B and C serving eight heads, A_log, D and dt_bias drawn per head, the weights at std
0.15. Variants: the mixer first, half of each head rotating (the reference's setting) and the z-loss on; the attention
first, whole heads rotating, tied embeddings and every bias, one group. Through HybridCacheTests and
DecoderFamilyTests: both heads the reference has, with the loss, in each variant; greedy and beam generation; hidden
states and attention weights; inputs_embeds; a training step's gradients with and without checkpointing; saving both
ways; and in their HybridCache forms cached decoding, a left-padded batch against its rows alone (and the
reference's batch), sampled sequences, assisted decoding giving the reference's greedy tokens, and
the refusals (a DynamicCache, a static cache, the CPU kernel). Also the z-loss and the rotated half, config defaults, a config.json in the released layout,
refusals, GGUF files of llama.cpp's "granitehybrid" architecture as its converter writes a Bamba, and the tokenizer
class.
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
from openformers import BambaConfig
from test_models_mamba2 import add_hybrid_mixer_metadata, llama_cpp_mixer_tensor

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=8,
    mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4,
    rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    z_loss_coefficient=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.15,
)
VARIANTS = {
    "mamba-first": {},
    "attention-first-whole-heads-tied-biased": dict(
        attn_layer_indices=[0],
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 1.0},
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, mamba_proj_bias=True, mamba_conv_bias=False,
        mamba_n_groups=1, z_loss_coefficient=0.0),
}


class TestBamba(HybridCacheTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "BambaConfig"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {"BambaModel": "AutoModel", "BambaForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}
    HEAD_VARIANTS = list(VARIANTS)
    TRAINING_VARIANTS = list(VARIANTS)


_reference, _ids = TestBamba.reference, TestBamba.ids


@torch.inference_mode()
def test_the_z_loss_and_the_rotated_half_are_the_references(tmp_path):
    """The first variant's loss holds the z-loss (0.3 times the mean squared log-sum-exp, about as large as the
    cross-entropy here), and its attention turns half of each head: the model config says so and reads so."""
    reference = _reference()
    model = load_saved(reference, tmp_path)
    ids = _ids(2, 9, seed=7)
    ours, theirs = model(ids, labels=ids), reference(ids, labels=ids)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-4, rtol=1e-4)
    z_loss = 0.3 * theirs.logits.logsumexp(-1).pow(2).mean()
    assert z_loss > 0.1 * theirs.loss
    assert model.config.partial_rotary_factor == 0.5 and model.model.rotary_emb.head_dim == 4
    kinds = ["linear_attention", "full_attention"]
    assert model.config.layer_types == kinds == list(reference.config.layers_block_type)


def test_config_defaults_equal_the_references():
    ours, theirs = BambaConfig(), transformers.BambaConfig()
    assert_config_defaults_equal_the_references(ours, theirs)
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters
    assert ours.mamba_d_head == theirs.mamba_d_head == 64 and ours.layer_types == list(theirs.layers_block_type)


def test_a_config_in_the_released_layout_reads_and_saves_as_the_references(tmp_path):
    """Bamba-9B's config.json layout (rope_theta at the top, attn_layer_indices, the mixer's fields; sizes cut here):
    the same fields, layer kinds and rotation, and what ours saves the reference reads alike."""
    values = {
        "architectures": ["BambaForCausalLM"], "model_type": "bamba", "vocab_size": 128256, "hidden_size": 512,
        "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "attn_layer_indices": [1, 3], "mamba_n_heads": 16, "mamba_d_head": 64, "mamba_n_groups": 1,
        "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_chunk_size": 256, "mamba_conv_bias": True,
        "mamba_proj_bias": False, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
        "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128004,
    }
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(ours) is BambaConfig
    assert ours.layer_types == list(theirs.layers_block_type) == ["linear_attention", "full_attention"] * 2
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert again.attn_layer_indices == [1, 3] and again.rope_parameters == theirs.rope_parameters


@pytest.mark.parametrize("values, message", [
    (dict(attn_layer_indices=[2]), "attn_layer_indices=\\[2\\]"),
    (dict(attn_layer_indices="1"), "attn_layer_indices='1'"),
    (dict(mamba_n_heads=5), "mamba_n_heads=5"),
    (dict(mamba_d_head=4), "mamba_n_heads=8; expected mamba_n_heads \\* mamba_d_head \\(4\\)"),
    (dict(mamba_n_groups=3), "mamba_n_groups=3"),
    (dict(mamba_chunk_size=0), "mamba_chunk_size=0"),
    (dict(time_step_limit=(0.5, 0.1)), "time_step_limit="),
    (dict(z_loss_coefficient=-1.0), "z_loss_coefficient=-1.0"),
    (dict(partial_rotary_factor=0.1), "partial_rotary_factor=0.1"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    settings = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(BambaConfig, {**settings, **values}, message, tmp_path)


def test_tokenizer_of_a_bamba_folder_is_the_references(tmp_path):
    """Bamba-9B's folder holds Llama 3's byte-level BPE tokenizer.json and names PreTrainedTokenizerFast; the
    reference registers no tokenizer of its own for the model type."""
    special = ["<|begin_of_text|>", "<|end_of_text|>"]
    name = assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, ["Hey, are you conscious?", "Can you talk to me? 9 billion!"], special, {"model_type": "bamba"},
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": special[0], "eos_token": special[1]})
    assert name == "TokenizersBackend"


# GGUF files as llama.cpp's converter writes a Bamba checkpoint (convert_hf_to_gguf.py GraniteHybridModel, which
# registers BambaForCausalLM): architecture "granitehybrid" without Granite's four scalars, Llama's metadata with the
# key/value head count per layer (0 for a Mamba layer), rope.scaling.finetuned true, rope.dimension_count the rotated
# part of each head (from the checkpoint's attn_rotary_emb, as Bamba-9B's config.json has it), Mamba-2's ssm.*
# metadata and tensors (ssm_dt.bias as dt_bias, A as -exp(A_log), A and D as (H, 1), the gated norm as (G, I / G),
# the squeezed convolution), the query and key rows permuted over whole heads as for llama.cpp's "llama" files.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output",
    "model.layers.": "blk.", "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "pre_ff_layernorm": "ffn_norm",
    "feed_forward.gate_proj": "ffn_gate", "feed_forward.up_proj": "ffn_up", "feed_forward.down_proj": "ffn_down",
    "mamba.in_proj": "ssm_in", "mamba.conv1d": "ssm_conv1d", "mamba.dt_bias": "ssm_dt.bias", "mamba.A_log": "ssm_a",
    "mamba.D": "ssm_d", "mamba.norm": "ssm_norm", "mamba.out_proj": "ssm_out",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    attends = [kind == "full_attention" for kind in config.layers_block_type]
    writer = gguf.GGUFWriter(str(path), "granitehybrid")
    add_decoder_metadata(writer, config)
    writer.add_head_count_kv([config.num_key_value_heads if a else 0 for a in attends])
    head_dim = config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(int(head_dim * config.rope_parameters["partial_rotary_factor"]))
    writer.add_rope_scaling_finetuned(True)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    add_hybrid_mixer_metadata(writer, config, config.mamba_expand * config.hidden_size)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES, permute_heads=True):
        if ".mamba." in name:
            tensor = llama_cpp_mixer_tensor(name, tensor, config.mamba_n_groups)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "bamba.gguf", reference)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "bamba.gguf")
    assert type(model) is openformers.BambaForCausalLM
    config, theirs = model.config, reference.config
    for key in ("attn_layer_indices", "num_key_value_heads", "mamba_n_heads", "mamba_d_head", "mamba_n_groups",
                "mamba_conv_bias", "mamba_proj_bias", "attention_bias", "mlp_bias", "tie_word_embeddings"):
        assert getattr(config, key) == getattr(theirs, key), key
    assert config.partial_rotary_factor == theirs.rope_parameters["partial_rotary_factor"]
    inputs = {k: v for k, v in TestBamba.inputs().items() if k != "labels"}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")

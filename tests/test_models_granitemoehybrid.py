"""Granite 4.0 hybrids (model_type "granitemoehybrid") against the reference, on tiny random models it makes and saves.

Two layers, a Mamba-2 mixer and Granite's attention (in either order), over prompts that span several scan chunks
(chunk size 4), two groups of B and C serving eight heads, A_log, D and dt_bias drawn per head (the reference's init
makes them all alike), Granite's four scalars away from 1 and the weights at std 0.15. Variants: the hybrids' layout
(attention without positions, routed experts with the shared MLP); rotary attention first, tied embeddings and every
bias; no routed experts (the shared MLP alone, granite-4.0-h-micro's). Through RoutedExpertsTests: both heads the
reference has, with the loss, in each variant; greedy and beam generation; hidden states and attention weights;
inputs_embeds; a training step's gradients with and without checkpointing; saving both ways, the files holding the
reference's tensors; router logits and the load-balancing loss; bfloat16 as the reference's. Through
decoder_suite.HybridCacheTests, in their HybridCache forms: cached decoding, a left-padded batch against its rows
alone (and the reference's batch), sampled sequences, assisted decoding giving the reference's greedy tokens, and the refusals (a DynamicCache, a static cache, the CPU
kernel). Also
the time-step limit, the config's defaults, aliases and refusals, a released config.json as the reference reads it,
and GGUF files of llama.cpp's "granitehybrid" architecture. AutoTokenizer's class for the model type is checked with
Granite MoE's (test_models_granitemoe.py).
"""

import json

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    assert_config_defaults_equal_the_references,
    assert_config_refuses_by_name,
    assert_outputs_close,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
)
from decoder_suite import HybridCacheTests, RoutedExpertsTests
from openformers import AutoModelForCausalLM, GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM
from openformers.models.granitemoe import from_checkpoint_layout
from test_models_granite import SCALARS
from test_models_granitemoe import GGUF_HALVES as GRANITEMOE_GGUF_HALVES
from test_models_granitemoe import GGUF_NAMES as GRANITEMOE_GGUF_NAMES
from test_models_mamba2 import add_hybrid_mixer_metadata, llama_cpp_mixer_tensor

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2,
    shared_intermediate_size=40, layer_types=["mamba", "attention"], mamba_n_heads=8, mamba_d_head=8,
    mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.15, **SCALARS,
)
VARIANTS = {
    "hybrid": {},  # no positions in the attention (the default, the hybrids' "nope"), experts and the shared MLP
    "rope-first-tied-biased": dict(position_embedding_type="rope", layer_types=["attention", "mamba"],
                                   tie_word_embeddings=True, attention_bias=True, mamba_proj_bias=True,
                                   mamba_conv_bias=False),
    "dense-one-group": dict(num_local_experts=0, mamba_n_groups=1, position_embedding_type="nope"),
}


class TestGraniteMoeHybrid(HybridCacheTests, RoutedExpertsTests):
    REFERENCE_CONFIG = "GraniteMoeHybridConfig"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {"GraniteMoeHybridModel": "AutoModel", "GraniteMoeHybridForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}
    HEAD_VARIANTS = list(VARIANTS)
    TRAINING_VARIANTS = ["hybrid", "rope-first-tied-biased"]

    @classmethod
    def reference_grads(cls, reference) -> dict:
        # the reference's fused experts and router under the checkpoints' names (input_linear, output_linear, ...)
        return from_checkpoint_layout({name: p.grad for name, p in reference.named_parameters()})

    @torch.inference_mode()
    def test_router_logits_match_the_reference(self, tiny, variant):
        if VARIANTS[variant].get("num_local_experts") == 0:  # the shared MLP alone: no router, no scores
            _, reference, model = tiny
            inputs = {**self.inputs(), "output_router_logits": True}
            assert not outputs_of(model, inputs).get("router_logits") and "aux_loss" not in outputs_of(model, inputs)
            assert all(layer.block_sparse_moe is None for layer in model.model.layers)
            return
        super().test_router_logits_match_the_reference(tiny)

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny, variant):
        if VARIANTS[variant].get("num_local_experts") != 0:
            return super().test_bfloat16_matches_the_reference_in_bfloat16(tiny)
        # Without experts the reference's output_router_logits fails (its load-balancing loss indexes an empty
        # tuple): the same bits of the logits alone.
        folder = tiny[0]
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        ours = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, dtype=torch.bfloat16), folder)
        logits = ours(ids, attention_mask=mask).logits
        assert logits.dtype == torch.bfloat16
        torch.testing.assert_close(logits, theirs(ids, attention_mask=mask).logits, atol=0, rtol=0)


_reference, _ids, _inputs = TestGraniteMoeHybrid.reference, TestGraniteMoeHybrid.ids, TestGraniteMoeHybrid.inputs


@torch.inference_mode()
def test_the_time_step_limit_clamps_the_scan_as_the_references(tmp_path):
    reference = _reference(time_step_limit=(0.0, 0.1))
    model = load_saved(reference, tmp_path)
    assert list(model.config.time_step_limit) == [0.0, 0.1]
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "time_step_limit")
    ids = _ids(2, 9, seed=7)
    assert (_reference()(ids).logits - reference(ids).logits).abs().max() > 5e-3  # logits of about 0.1 here


# The config: defaults, the layer kinds' names, refusals.

def test_config_defaults_equal_the_references():
    ours, theirs = GraniteMoeHybridConfig(), transformers.GraniteMoeHybridConfig()
    assert_config_defaults_equal_the_references(ours, theirs)
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert ours.mamba_d_head == 64 and ours.layer_types == ["linear_attention"] * 32


# The sizes and kinds of layers of ibm-granite/granite-4.0-h-tiny's config.json (written here from its published
# config, four layers kept), under the files' "mamba"/"attention" names.
GRANITE_4_H_TINY = {
    "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "vocab_size": 100352,
    "hidden_size": 1536, "intermediate_size": 512, "shared_intermediate_size": 1024, "num_hidden_layers": 4,
    "num_attention_heads": 12, "num_key_value_heads": 4, "num_local_experts": 64, "num_experts_per_tok": 6,
    "layer_types": ["mamba", "mamba", "mamba", "attention"], "position_embedding_type": "nope",
    "mamba_n_heads": 48, "mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4,
    "mamba_expand": 2, "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False,
    "embedding_multiplier": 12, "attention_multiplier": 0.0078125, "residual_multiplier": 0.22, "logits_scaling": 6,
    "rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 131072, "tie_word_embeddings": True,
    "bos_token_id": 100257, "eos_token_id": 100257, "pad_token_id": 100256, "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize("alias", ["layer_types", "layers_block_type"])
def test_a_released_config_reads_and_saves_as_the_references(alias, tmp_path):
    values = dict(GRANITE_4_H_TINY)
    values[alias] = values.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(ours) is GraniteMoeHybridConfig
    assert ours.layer_types == list(theirs.layer_types) == ["linear_attention"] * 3 + ["full_attention"]
    assert ours.layers_block_type == ours.layer_types and [ours.attends(i) for i in range(4)] == [False] * 3 + [True]
    for key in ("mamba_d_head", "mamba_n_heads", "shared_intermediate_size", "position_embedding_type",
                "embedding_multiplier", "logits_scaling", "num_local_experts", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["layer_types"] == ours.layer_types and "layers_block_type" not in saved
    assert list(transformers.AutoConfig.from_pretrained(tmp_path / "ours").layer_types) == ours.layer_types


@pytest.mark.parametrize("values, message", [
    (dict(layer_types=["mamba", "sliding_attention"]), "layer_types="),
    (dict(layer_types=["mamba"]), "layer_types=.*num_hidden_layers=2"),
    (dict(position_embedding_type="alibi"), "position_embedding_type='alibi'"),
    (dict(mamba_n_heads=5), "mamba_n_heads=5"),
    (dict(mamba_d_head=4), "mamba_n_heads=8; expected mamba_n_heads \\* mamba_d_head \\(4\\)"),
    (dict(mamba_n_groups=3), "mamba_n_groups=3"),
    (dict(mamba_d_state=0), "mamba_d_state=0"),
    (dict(mamba_chunk_size=-1), "mamba_chunk_size=-1"),
    (dict(time_step_limit=(0.5, 0.1)), "time_step_limit="),
    (dict(shared_intermediate_size=0), "shared_intermediate_size=0"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok=5"),
    (dict(num_local_experts=0, num_experts_per_tok=0), "num_experts_per_tok=0"),
    (dict(num_local_experts=-1), "num_local_experts=-1"),
    (dict(residual_multiplier="0.22"), "residual_multiplier='0.22'"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    settings = {k: v for k, v in TINY.items() if k != "rope_parameters"}
    assert_config_refuses_by_name(GraniteMoeHybridConfig, {**settings, **values}, message, tmp_path)


# GGUF files as llama.cpp's converter writes them (convert_hf_to_gguf.py GraniteHybridModel): architecture
# "granitehybrid", Granite MoE's metadata and tensors (q/k rows permuted, the experts' and the shared expert's halves
# apart; without experts the shared MLP as ffn_gate, ffn_up and ffn_down), the key/value head count per layer with 0
# for a Mamba layer, rope.scaling.finetuned false without rotation, and Mamba-2's ssm_* tensors and metadata
# (ssm_dt.bias as dt_bias, A as -exp(A_log), A and D as (H, 1), the gated norm as (G, I / G), the squeezed
# convolution).

GGUF_NAMES = {
    **{hf: cpp for hf, cpp in GRANITEMOE_GGUF_NAMES.items() if not hf.startswith("shared_mlp")},
    "mamba.in_proj": "ssm_in", "mamba.conv1d": "ssm_conv1d", "mamba.dt_bias": "ssm_dt.bias", "mamba.A_log": "ssm_a",
    "mamba.D": "ssm_d", "mamba.norm": "ssm_norm", "mamba.out_proj": "ssm_out",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    experts = config.num_local_experts
    attends = [kind == "full_attention" for kind in config.layer_types]
    writer = gguf.GGUFWriter(str(path), "granitehybrid")
    rope = config.position_embedding_type == "rope"
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings if rope else 2**20)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv([config.num_key_value_heads if a else 0 for a in attends])
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_scaling_finetuned(rope)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_shared_feed_forward_length(config.shared_intermediate_size)
    writer.add_embedding_scale(config.embedding_multiplier)
    writer.add_residual_scale(config.residual_multiplier)
    writer.add_attention_scale(config.attention_multiplier)
    writer.add_logit_scale(config.logits_scaling)
    inner = config.mamba_expand * config.hidden_size
    add_hybrid_mixer_metadata(writer, config, inner)
    shared = ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp") if experts else ("ffn_gate", "ffn_up", "ffn_down")
    halves = {**GRANITEMOE_GGUF_HALVES, "shared_mlp.input_linear.weight": shared[:2]}
    for name, gguf_name, tensor in llama_cpp_tensors(reference, {**GGUF_NAMES, "shared_mlp.output_linear": shared[2]},
                                                     permute_heads=True):
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        pair = next((pair for end, pair in halves.items() if name.endswith(end)), None)
        if pair is not None:
            for half, w in zip(pair, np.split(tensor.numpy(), 2, axis=-2)):
                writer.add_tensor(f"blk.{layer}.{half}.weight", np.ascontiguousarray(w))
            continue
        if ".mamba." in name:
            tensor = llama_cpp_mixer_tensor(name, tensor, config.mamba_n_groups)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "granitehybrid.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "granitehybrid.gguf")
    assert type(model) is GraniteMoeHybridForCausalLM
    config, theirs = model.config, reference.config
    for key in ("layer_types", "num_local_experts", "shared_intermediate_size", "num_key_value_heads",
                "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_conv_bias",
                "mamba_proj_bias", "attention_bias", "tie_word_embeddings"):
        assert getattr(config, key) == getattr(theirs, key), key
    assert (config.position_embedding_type == "rope") == (theirs.position_embedding_type == "rope")
    inputs = {**_inputs(), "output_router_logits": bool(theirs.num_local_experts)}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    model.save_pretrained(tmp_path / "saved")  # the fused halves, saved as the reference reads them
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert_outputs_close(outputs_of(reloaded, inputs), outputs_of(reference, inputs), "GGUF saved")

"""Phi-3 / Phi-4 (model_type "phi3") against the reference: fused qkv and gate_up projections, partial rotary
embeddings and LongRoPE scaling, on tiny random models the reference makes and saves.

Each tiny model comes in two kinds: plain rope over the whole head, and Phi-4-mini's layout (rotary over 3/4 of
each head, longrope with short and long factors, original_max_position_embeddings=32), run on sequences shorter
and longer than 32 positions, where the long factors and the attention factor take over. TestPhi3 runs the common
decoder tests (tests/decoder_suite.py) on both kinds, every head on a padded batch of 44 positions, and adds the
long sequences' generation, cached steps, left padding and static cache, and the CPU kernel's runs of steps.
"""

import copy

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    OneStepAtATime,
    assert_decoding_step_gives_the_references_logits,
    finish_gguf,
    llama_cpp_tensors,
)
from decoder_suite import DecoderFamilyTests
from openformers.configs import Phi3Config

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
LONGROPE = dict(
    original_max_position_embeddings=32, partial_rotary_factor=0.75,
    rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.25, 1.5, 2.0, 3.0],
                  "long_factor": [2.0, 3.0, 5.0, 8.0, 13.0, 21.0]},
)
SHORT, LONG = 12, 44  # prompt lengths below and past original_max_position_embeddings=32


def _outputs(model, ids, mask=None):
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    return out.last_hidden_state if "logits" not in out else out.logits


def _padded_batch():
    ids = torch.stack([TestPhi3.ids(LONG, seed=2),
                       torch.cat([torch.zeros(9, dtype=torch.long), TestPhi3.ids(LONG - 9, seed=3)])])
    return ids, (ids != 0).long()


class TestPhi3(DecoderFamilyTests):
    REFERENCE_CONFIG = "Phi3Config"
    TINY = TINY
    VARIANTS = {"plain": {}, "longrope": LONGROPE}
    HEADS = {
        "Phi3Model": "AutoModel",
        "Phi3ForCausalLM": "AutoModelForCausalLM",
        "Phi3ForSequenceClassification": "AutoModelForSequenceClassification",
        "Phi3ForTokenClassification": "AutoModelForTokenClassification",
    }
    HEAD_VARIANTS = list(VARIANTS)
    LOWEST_ID = 3
    BATCH_LENGTH = LONG  # the longer row past original_max_position_embeddings, where longrope's long factors rotate

    @classmethod
    def reference(cls, name=None, **overrides):
        # A deep copy: the reference's config keeps the rope_scaling dict it is given and adds keys to it.
        return super().reference(name, **copy.deepcopy(overrides))

    def test_config_reads_the_reference_file(self, variant, tiny):
        config = openformers.AutoConfig.from_pretrained(tiny[0])
        assert isinstance(config, Phi3Config) and config.num_key_value_heads == 2
        if variant == "longrope":
            assert config.rotary_dim == 12 and config.rope_scaling["rope_type"] == "longrope"
            assert config.original_max_position_embeddings == 32
        else:
            assert config.rope_scaling is None and config.rotary_dim == 16

    @pytest.mark.parametrize("length", [SHORT, LONG])
    @torch.inference_mode()
    def test_logits_and_loss_match_reference(self, tiny, length):
        """Unpadded rows below and past the original context, each token its own label."""
        _, reference, model = tiny
        ids = self.ids(2, length)
        ours, theirs = model(ids, labels=ids), reference(ids, labels=ids)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)

    @torch.inference_mode()
    def test_the_cpu_decoding_step_runs_phi3_with_the_references_logits(self, tiny):
        """from_pretrained gives the model the CPU accelerator's decoding step (fused projections, partial rotary
        tables, longrope's long ones past position 32): one-token steps over a cache, each a call of the compiled
        step, give the reference's logits. The prompt reaches past position 32, as the reference's forward of the
        whole sequence does, so that both rotate every position by the long factors."""
        _, reference, model = tiny
        assert_decoding_step_gives_the_references_logits(model, reference, self.ids(1, LONG), prefill=LONG - 3,
                                                         rtol=0)

    @pytest.mark.parametrize("length", [SHORT, LONG])
    @torch.inference_mode()
    def test_greedy_and_beam_generation_match_reference(self, tiny, length):
        _, reference, model = tiny
        ids = self.ids(1, length, seed=4)
        for options in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
            ours = model.generate(ids, max_new_tokens=10, **options)
            theirs = reference.generate(ids, max_new_tokens=10, **options)
            assert ours.tolist() == theirs.tolist(), options

    def test_a_run_of_greedy_steps_stops_where_longrope_switches_tables(self, variant, tiny, monkeypatch):
        """generate's run of greedy steps (kernels/llama.py `greedy_tokens`) ends before position 32, where
        longrope's long tables take over for single steps too, and the next run goes on with them: the tokens of
        single steps."""
        model = openformers.AutoModelForCausalLM.from_pretrained(tiny[0])
        monkeypatch.setattr(openformers.kernels.llama, "RUN_SECONDS", 60.0)  # runs end where the tables switch
        runs, decode_tokens = [], torch.ops.openformers.decode_tokens
        counted = lambda *args: runs.append(decode_tokens(*args)) or runs[-1]  # noqa: E731
        monkeypatch.setattr(torch.ops.openformers, "decode_tokens", counted)
        ids, options = self.ids(1, 28, seed=5), dict(max_new_tokens=10, do_sample=False, eos_token_id=None)

        ran = model.generate(ids, **options)
        assert runs == ([4, 5] if variant == "longrope" else [9])
        assert ran.tolist() == model.generate(ids, streamer=OneStepAtATime(), **options).tolist()

    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows(self, tiny):
        """Also past the original context: a batch of 44 positions, one row left-padded over 9, generates each
        row's tokens alone and gives its last logits."""
        super().test_left_padded_batch_equals_single_rows(tiny)
        model = tiny[2]
        ids, mask = _padded_batch()
        batched = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
        logits = _outputs(model, ids, mask)
        for row in range(2):
            alone = ids[row][mask[row].bool()][None]
            single = model.generate(alone, max_new_tokens=8, do_sample=False)
            assert batched[row, -8:].tolist() == single[0, -8:].tolist()
            torch.testing.assert_close(logits[row, -1], _outputs(model, alone)[0, -1], atol=1e-4, rtol=0)

    @torch.inference_mode()
    def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(self, tiny):
        """Also for a prompt past the original context."""
        super().test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny)
        model = tiny[2]
        ids = self.ids(1, LONG, seed=5)
        dynamic = model.generate(ids, max_new_tokens=6, do_sample=False)
        static = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static")
        assert static.tolist() == dynamic.tolist()


def test_older_rope_scaling_names_read_as_longrope():
    scaling = {**LONGROPE["rope_scaling"], "type": "su"}
    config = Phi3Config.from_dict({**TINY, **LONGROPE, "rope_scaling": scaling})
    assert config.rope_scaling["rope_type"] == "longrope" and "type" not in config.rope_scaling


def test_longrope_factors_of_the_wrong_length_are_refused():
    scaling = {**LONGROPE["rope_scaling"], "short_factor": [1.0] * 8}
    with pytest.raises(ValueError, match=r"rope_scaling.short_factor=.*6 factors"):
        Phi3Config(**{**TINY, **LONGROPE, "rope_scaling": scaling})


def test_sliding_window_matches_reference(tmp_path):
    """Phi-3-mini-4k's checkpoints set sliding_window (2047): each query sees the last sliding_window keys."""
    reference = TestPhi3.reference(sliding_window=8)
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, mask = _padded_batch()
    torch.testing.assert_close(_outputs(model, ids, mask), _outputs(reference, ids, mask), atol=1e-4, rtol=0)


def test_a_llama_model_with_longrope_matches_reference(tmp_path):
    """layers.RotaryEmbedding's longrope serves any family whose config asks for it; the CPU kernel refuses it."""
    torch.manual_seed(0)
    scaling = {**LONGROPE["rope_scaling"], "rope_type": "longrope", "factor": 8.0,
               "original_max_position_embeddings": 32, "rope_theta": 10000.0}
    del scaling["type"]
    config = transformers.LlamaConfig(**{**TINY, "rope_parameters": scaling, "head_dim": 12})
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.model.accelerated_step is None
    for length in (SHORT, LONG):
        ids = TestPhi3.ids(1, length)
        torch.testing.assert_close(_outputs(model, ids), _outputs(reference, ids), atol=1e-4, rtol=0)


def _write_gguf(path, reference):
    """A GGUF file as llama.cpp's converter writes a Phi-3 checkpoint: phi3.* metadata, the fused tensors renamed,
    the longrope factors as tensors."""
    gguf = pytest.importorskip("gguf")
    config = reference.config
    head_dim = config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_rope_scaling_orig_ctx_len(config.original_max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(int(head_dim * config.rope_parameters["partial_rotary_factor"]))
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_sliding_window(0)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    for kind in ("long", "short"):
        writer.add_tensor(f"rope_factors_{kind}.weight", np.array(config.rope_parameters[f"{kind}_factor"], np.float32))
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm",
             "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm",
             "model.layers.": "blk."}
    for _, gguf_name, tensor in llama_cpp_tensors(reference, names):
        writer.add_tensor(gguf_name, tensor.numpy())
    finish_gguf(writer)


def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = TestPhi3.reference(**LONGROPE)
    _write_gguf(tmp_path / "tiny.gguf", reference)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
    assert model.config.rotary_dim == 12 and model.config.rope_scaling["rope_type"] == "longrope"
    for length in (SHORT, LONG):
        ids = TestPhi3.ids(1, length)
        torch.testing.assert_close(_outputs(model, ids), _outputs(reference, ids), atol=1e-4, rtol=0)

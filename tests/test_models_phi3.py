"""Phi-3 / Phi-4 (model_type "phi3") against the reference: fused qkv and gate_up projections, partial rotary
embeddings and LongRoPE scaling, on tiny random models the reference makes and saves.

Each tiny model comes in two kinds: plain rope over the whole head, and Phi-4-mini's layout (rotary over 3/4 of
each head, longrope with short and long factors, original_max_position_embeddings=32), run on sequences shorter
and longer than 32 positions, where the long factors and the attention factor take over.
"""

import copy
import json

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
KINDS = {"plain": {}, "longrope": LONGROPE}
SHORT, LONG = 12, 44  # prompt lengths below and past original_max_position_embeddings=32
HEADS = {
    "base": ("Phi3Model", "AutoModel"),
    "causal-lm": ("Phi3ForCausalLM", "AutoModelForCausalLM"),
    "sequence-classification": ("Phi3ForSequenceClassification", "AutoModelForSequenceClassification"),
    "token-classification": ("Phi3ForTokenClassification", "AutoModelForTokenClassification"),
}


def _reference(kind, head="causal-lm", **overrides):
    torch.manual_seed(0)
    # A deep copy: the reference's config keeps the rope_scaling dict it is given and adds keys to it.
    config = transformers.Phi3Config(**copy.deepcopy({**TINY, **KINDS[kind], "num_labels": 3, **overrides}))
    return getattr(transformers, HEADS[head][0])(config).eval()


def _ids(*shape, seed=1):
    return torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _padded_batch():
    ids = torch.stack([_ids(LONG, seed=2), torch.cat([torch.zeros(9, dtype=torch.long), _ids(LONG - 9, seed=3)])])
    return ids, (ids != 0).long()


def _outputs(model, ids, mask=None):
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    return out.last_hidden_state if "logits" not in out else out.logits


@pytest.fixture(scope="module", params=list(KINDS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"phi3-{request.param}")
    reference = _reference(request.param)
    reference.save_pretrained(folder)
    return request.param, folder, reference


def test_config_reads_the_reference_file(tiny):
    kind, folder, _ = tiny
    config = openformers.AutoConfig.from_pretrained(folder)
    assert isinstance(config, Phi3Config) and config.num_key_value_heads == 2
    if kind == "longrope":
        assert config.rotary_dim == 12 and config.rope_scaling["rope_type"] == "longrope"
        assert config.original_max_position_embeddings == 32
    else:
        assert config.rope_scaling is None and config.rotary_dim == 16


@pytest.mark.parametrize("length", [SHORT, LONG])
def test_logits_and_loss_match_reference(tiny, length):
    kind, folder, reference = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "Phi3ForCausalLM"
    ids = _ids(2, length)
    with torch.no_grad():
        ours, theirs = model(ids, labels=ids), reference(ids, labels=ids)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)


@torch.no_grad()
def test_the_cpu_decoding_step_runs_phi3_with_the_references_logits(tiny):
    """from_pretrained gives the model the CPU accelerator's decoding step (fused projections, partial rotary tables,
    longrope's long ones past position 32): one-token steps over a cache, each a call of the compiled step, give
    the reference's logits. The prompt reaches past position 32, as the reference's forward of the whole sequence
    does, so that both rotate every position by the long factors."""
    _, folder, reference = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, LONG), prefill=LONG - 3, rtol=0)


@pytest.mark.parametrize("length", [SHORT, LONG])
def test_greedy_and_beam_generation_match_reference(tiny, length):
    _, folder, reference = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    ids = _ids(1, length, seed=4)
    for options in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        ours = model.generate(ids, max_new_tokens=10, **options)
        theirs = reference.generate(ids, max_new_tokens=10, **options)
        assert ours.tolist() == theirs.tolist(), options


def test_a_run_of_greedy_steps_stops_where_longrope_switches_tables(tiny, monkeypatch):
    """generate's run of greedy steps (kernels/llama.py `greedy_tokens`) ends before position 32, where longrope's
    long tables take over for single steps too, and the next run goes on with them: the tokens of single steps."""
    kind, folder, _ = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    monkeypatch.setattr(openformers.kernels.llama, "RUN_SECONDS", 60.0)  # runs end where the tables switch
    runs, decode_tokens = [], torch.ops.openformers.decode_tokens
    counted = lambda *args: runs.append(decode_tokens(*args)) or runs[-1]  # noqa: E731
    monkeypatch.setattr(torch.ops.openformers, "decode_tokens", counted)
    ids, options = _ids(1, 28, seed=5), dict(max_new_tokens=10, do_sample=False, eos_token_id=None)

    ran = model.generate(ids, **options)
    assert runs == ([4, 5] if kind == "longrope" else [9])
    assert ran.tolist() == model.generate(ids, streamer=OneStepAtATime(), **options).tolist()


def test_left_padded_batch_equals_single_rows(tiny):
    _, folder, _ = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = _padded_batch()
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    logits = _outputs(model, ids, mask)
    for row in range(2):
        alone = ids[row][mask[row].bool()][None]
        single = model.generate(alone, max_new_tokens=8, do_sample=False)
        assert batched[row, -8:].tolist() == single[0, -8:].tolist()
        torch.testing.assert_close(logits[row, -1], _outputs(model, alone)[0, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_heads_match_reference_and_save_both_ways(kind, head, tmp_path):
    reference = _reference(kind, head)
    reference.save_pretrained(tmp_path / "reference")
    auto = getattr(openformers, HEADS[head][1])
    model = auto.from_pretrained(tmp_path / "reference")
    assert type(model).__name__ == HEADS[head][0]
    ids, mask = _padded_batch()
    expected = _outputs(reference, ids, mask)
    torch.testing.assert_close(_outputs(model, ids, mask), expected, atol=1e-4, rtol=0)
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == "phi3" and saved["architectures"] == [HEADS[head][0]]
    back = getattr(transformers, HEADS[head][0]).from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(_outputs(back, ids, mask), expected, atol=1e-4, rtol=0)
    again = auto.from_pretrained(tmp_path / "ours")
    torch.testing.assert_close(_outputs(again, ids, mask), expected, atol=1e-4, rtol=0)


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
    reference = _reference("plain", sliding_window=8)
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
        ids = _ids(1, length)
        torch.testing.assert_close(_outputs(model, ids), _outputs(reference, ids), atol=1e-4, rtol=0)


def test_static_cache_gives_the_dynamic_cache_tokens(tiny):
    _, folder, _ = tiny
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    ids = _ids(1, LONG, seed=5)
    dynamic = model.generate(ids, max_new_tokens=6, do_sample=False)
    static = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert static.tolist() == dynamic.tolist()


def test_hidden_states_and_attention_weights_match_reference(tiny):
    _, folder, _ = tiny
    reference = transformers.Phi3ForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = _padded_batch()
    with torch.no_grad():
        ours, theirs = (m(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
                        for m in (model, reference))
    for name in ("hidden_states", "attentions"):
        assert len(getattr(ours, name)) == len(getattr(theirs, name))
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


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
    reference = _reference("longrope")
    _write_gguf(tmp_path / "tiny.gguf", reference)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
    assert model.config.rotary_dim == 12 and model.config.rope_scaling["rope_type"] == "longrope"
    for length in (SHORT, LONG):
        ids = _ids(1, length)
        torch.testing.assert_close(_outputs(model, ids), _outputs(reference, ids), atol=1e-4, rtol=0)

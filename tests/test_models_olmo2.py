"""OLMo 2 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens; a left-padded batch gives each row's logits alone; what we save, the reference loads; a GGUF
written as llama.cpp's converter writes an "olmo2" file gives the original's logits.
"""

import pytest
import torch

import openformers
from decoder_parity import (
    GENERATE_OPTIONS,
    assert_cached_decoding_equals_the_full_forward,
    assert_generate_matches,
    assert_decoding_step_gives_the_references_logits,
    assert_gradient_checkpointing_changes_nothing,
    assert_hidden_states_and_attentions_match,
    assert_kernel_leaves_the_plain_path,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_same_attributes,
    assert_saved_both_ways,
    assert_static_cache_gives_the_dynamic_cache_tokens,
    assert_training_step_matches,
    generation_inputs,
    head_inputs,
    lm_inputs,
    load_quietly,
    load_saved,
    make_reference,
    outputs_of,
    padded_batch,
    write_gguf,
)
from openformers import AutoModelForCausalLM, Olmo2Config, Olmo2ForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, pad_token_id=0,
)
VARIANTS = {
    "untied": {},
    "tied": dict(tie_word_embeddings=True),
    "biased": dict(attention_bias=True),
    "no-grouping": dict(num_key_value_heads=4),
}
HEADS = {
    "Olmo2Model": "AutoModel",
    "Olmo2ForCausalLM": "AutoModelForCausalLM",
    "Olmo2ForSequenceClassification": "AutoModelForSequenceClassification",
}


def _reference(name="Olmo2ForCausalLM", **overrides):
    return make_reference(name, transformers.Olmo2Config(**{**TINY, **overrides}))


def _ids(*shape, seed=1):
    return torch.randint(1, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    return head_inputs(name, *padded_batch(_ids(2, 9, seed=7)))


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    return folder, reference, load_saved(reference, folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny_head(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name, num_labels=3)
    return name, folder, reference, load_saved(reference, folder, HEADS[name])


@torch.inference_mode()
def test_causal_lm_logits_and_loss_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, Olmo2ForCausalLM) and not model.training
    inputs = _inputs("Olmo2ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "causal LM")


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny_head):
    name, _, reference, model = tiny_head
    assert type(model).__name__ == name and not model.training
    assert_outputs_close(outputs_of(model, _inputs(name)), outputs_of(reference, _inputs(name)), name)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path):
    name, _, reference, model = tiny_head
    inputs = _inputs(name)
    assert_saved_both_ways(model, tmp_path, HEADS[name], inputs, outputs_of(reference, inputs))


@torch.inference_mode()
def test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path):
    _, reference, model = tiny
    inputs = _inputs("Olmo2ForCausalLM")
    reloaded = assert_saved_both_ways(model, tmp_path, "AutoModelForCausalLM", inputs, outputs_of(reference, inputs))
    assert reloaded.config.tie_word_embeddings == reference.config.tie_word_embeddings


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    assert_cached_decoding_equals_the_full_forward(tiny[2], _ids(2, 12))


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    assert_left_padded_batch_equals_single_rows(model, _ids, reference)


@GENERATE_OPTIONS
@torch.inference_mode()
def test_generate_matches_reference(tiny, options):
    _, reference, model = tiny
    assert_generate_matches(model, reference, *generation_inputs(_ids), **options)


@torch.inference_mode()
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny):
    assert_static_cache_gives_the_dynamic_cache_tokens(tiny[2], *generation_inputs(_ids))


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_the_reference(tiny):
    folder, _, model = tiny
    assert_hidden_states_and_attentions_match(model, folder, *padded_batch(_ids(2, 9, seed=7)))


@torch.inference_mode()
def test_bfloat16_logits_match_the_reference(tmp_path):
    # OLMo 2's norms scale before casting back to bfloat16 (Llama's after): the reference's rounding, step for step.
    reference = _reference()
    reference.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    ids = _ids(2, 10, seed=3)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=2e-2, rtol=2e-2)


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    reference = _reference()
    model = load_saved(reference, tmp_path)
    assert_training_step_matches(model, reference, lm_inputs(_ids(2, 9, seed=7)))


@torch.inference_mode()
def test_the_cpu_decoding_step_runs_olmo2_with_the_references_logits(tiny):
    # Norms after each branch and none before, the queries and the keys normed over all heads at once.
    # A bias on the output projection the step has not: that model keeps the plain path.
    _, reference, model = tiny
    if model.config.attention_bias:
        return assert_kernel_leaves_the_plain_path(model, reference, _ids(1, 12, seed=9))
    assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


def test_config_defaults_match_the_reference():
    ours, theirs = Olmo2Config(), transformers.Olmo2Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


def test_what_olmo2_does_not_have_is_refused():
    with pytest.raises(ValueError, match="mlp_bias"):
        Olmo2Config(**TINY, mlp_bias=True)
    with pytest.raises(ValueError, match="attention_dropout"):
        Olmo2Config(**TINY, attention_dropout=1.5)


def test_heads_build_on_the_olmo2_base_model():
    config = Olmo2Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "Olmo2Model" else model.base_model
        assert type(base).__name__ == "Olmo2Model"
        layer = base.layers[0]
        assert layer.self_attn.q_norm.weight.shape == (TINY["num_attention_heads"] * 16,)  # over all heads at once
        assert layer.self_attn.k_norm.weight.shape == (TINY["num_key_value_heads"] * 16,)
        assert not hasattr(layer, "input_layernorm")


# A GGUF written the way llama.cpp's converter writes an "olmo2" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    reference = _reference(tie_word_embeddings=tied)
    epsilon = reference.config.rms_norm_eps
    write_gguf(tmp_path / "olmo2.gguf", "olmo2", reference, GGUF_NAMES, layer_norm_rms_eps=epsilon)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "olmo2.gguf")
    assert isinstance(model, Olmo2ForCausalLM) and model.config.rms_norm_eps == pytest.approx(TINY["rms_norm_eps"])
    assert model.config.tie_word_embeddings == tied and model.generation_config.eos_token_id == 2
    inputs = _inputs("Olmo2ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "olmo2.gguf").model_type == "olmo2"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = Olmo2ForCausalLM.from_config(Olmo2Config(**TINY, attention_dropout=0.1)).train()
    assert_gradient_checkpointing_changes_nothing(model, lm_inputs(_ids(2, 9, seed=7)))

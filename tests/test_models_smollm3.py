"""SmolLM3 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens, through the CPU kernel's decoding step; what we save, the reference loads. The tiny models have
four layers, the fourth unrotated (the family's default), or the layers a config's `no_rope_layers` marks.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    GENERATE_OPTIONS,
    assert_cached_decoding_equals_the_full_forward,
    assert_generate_matches,
    assert_decoding_step_gives_the_references_logits,
    assert_hidden_states_and_attentions_match,
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
from openformers import SmolLM3Config, SmolLM3ForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, rope_theta=500.0, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)
VARIANTS = {
    "tied": {},
    "untied": dict(tie_word_embeddings=False),
    "unrotated-first": dict(no_rope_layers=[0, 1, 1, 0]),
    # A window the config does not switch on applies nowhere, in the reference as here.
    "window-off": dict(sliding_window=3, use_sliding_window=False),
}
HEADS = {
    "SmolLM3Model": "AutoModel",
    "SmolLM3ForCausalLM": "AutoModelForCausalLM",
    "SmolLM3ForSequenceClassification": "AutoModelForSequenceClassification",
    "SmolLM3ForTokenClassification": "AutoModelForTokenClassification",
    "SmolLM3ForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def _reference(name="SmolLM3ForCausalLM", **overrides):
    return make_reference(name, transformers.SmolLM3Config(**{**TINY, **overrides}))


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
    assert isinstance(model, SmolLM3ForCausalLM) and not model.training
    assert [layer.self_attn.rotates for layer in model.model.layers] == [
        bool(flag) for flag in reference.config.no_rope_layers
    ]
    inputs = _inputs("SmolLM3ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "causal LM")


@torch.inference_mode()
def test_the_unrotated_layers_change_the_logits(tmp_path):
    # The same weights with every layer rotated give other logits: the parity above is not Llama's by accident.
    reference = _reference()
    model = load_saved(reference, tmp_path)
    ids = _ids(1, 9)
    unrotated = model(ids).logits
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "no_rope_layers": [1, 1, 1, 1]}))
    rotated = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path)
    assert [layer.self_attn.rotates for layer in rotated.model.layers] == [True] * 4
    assert (rotated(ids).logits - unrotated).abs().max() > 1e-4  # the tiny weights move them by ~5e-4


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
def test_the_cpu_decoding_step_runs_smollm3_with_the_references_logits(tiny):
    # Llama's step, the unrotated layers' queries and keys attending as projected (StepWeights.set_unrotated).
    _, reference, model = tiny
    assert_decoding_step_gives_the_references_logits(model, reference, _ids(1, 12, seed=9))


# A GGUF as llama.cpp's converter writes a "smollm3" file: Llama's names and metadata, the query and key rows permuted
# for its rotation, no output.weight (tied), and nothing that says which layers rotate.
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _reference()
    write_gguf(tmp_path / "tiny.gguf", "smollm3", reference, GGUF_NAMES, permute_heads=True,
               layer_norm_rms_eps=reference.config.rms_norm_eps)
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, tmp_path / "tiny.gguf")
    assert isinstance(model, SmolLM3ForCausalLM) and model.config.tie_word_embeddings
    assert model.config.no_rope_layers == [1, 1, 1, 0]  # llama.cpp's every fourth layer
    inputs = _inputs("SmolLM3ForCausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    reference = _reference()
    model = load_saved(reference, tmp_path)
    assert_training_step_matches(model, reference, lm_inputs(_ids(2, 9, seed=7)))


def test_config_defaults_match_the_reference():
    ours, theirs = SmolLM3Config(), transformers.SmolLM3Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "attention_bias", "attention_dropout", "mlp_bias", "tie_word_embeddings", "pad_token_id", "bos_token_id",
        "eos_token_id", "no_rope_layers", "no_rope_layer_interval", "layer_types", "use_sliding_window",
        "sliding_window",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


def test_what_smollm3_does_not_implement_is_refused_by_name():
    with pytest.raises(ValueError, match="use_sliding_window"):
        SmolLM3Config(**TINY, use_sliding_window=True, sliding_window=4)
    with pytest.raises(ValueError, match="no_rope_layers"):
        SmolLM3Config(**TINY, no_rope_layers=[1, 1, 0])
    with pytest.raises(ValueError, match="no_rope_layers"):
        SmolLM3Config(**TINY, no_rope_layers=[1, 1, 2, 0])
    with pytest.raises(ValueError, match="hidden_act"):
        SmolLM3Config(**TINY, hidden_act="gelu")


def test_heads_build_on_the_smollm3_base_model():
    config = SmolLM3Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "SmolLM3Model" else model.base_model
        assert type(base).__name__ == "SmolLM3Model"
        assert [layer.self_attn.rotates for layer in base.layers] == [True, True, True, False]

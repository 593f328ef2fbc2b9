"""Dynamic NTK rope scaling (rope_type "dynamic" with a `factor`, without Hunyuan's alpha) against the reference, on
tiny random models it makes and saves: Llama (whole heads), GPT-NeoX (half of each head rotated) and Gemma 3 (its full
layers stretched, its sliding layers rotating by a plain base of their own).

The reference stretches the base for the longest call since the last one within max_position_embeddings (12 here),
theta * (factor * length / 12 - (factor - 1)) ** (d / (d - 2)), and goes back to the plain base when a call is within
it again; keys already cached keep the rotation they were made with. So the tests run a sequence of calls of lengths
around the context through both libraries in the same order: logits and loss, cached decoding one token at a time
past the context, greedy and beam generation crossing it (a prompt within it and one past it), the CPU decoding step
following the stretch as the layers do, the sequence classifier, saving both ways and the config.
"""

import pytest
import torch

from decoder_parity import (
    assert_generate_matches,
    assert_head_matches_and_saves_both_ways,
    assert_outputs_close,
    assert_saved_both_ways,
    generation_inputs,
    lm_inputs,
    load_saved,
    make_reference,
    outputs_of,
)
from openformers import GPTNeoXConfig, LlamaConfig

transformers = pytest.importorskip("transformers")

CONTEXT = 12
DYNAMIC = {"rope_type": "dynamic", "factor": 4.0}
# family -> (the reference's config class, its causal LM, its sequence classifier, its tiny config)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rope_theta=100.0)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        rotary_pct=0.5, rotary_emb_base=100)),
    # the full layers stretched, the sliding ones (a window of 4) rotating by a plain base of their own
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "Gemma3TextForSequenceClassification", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rope_theta=100.0, rope_local_base_freq=50.0, query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"], sliding_window=4)),
}
# weights large enough that a rotation a little off moves the logits past the tolerance
COMMON = dict(max_position_embeddings=CONTEXT, initializer_range=0.15, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def ids_of(*shape, seed=1):
    return torch.randint(1, 128, shape, generator=torch.Generator().manual_seed(seed))


def reference_model(family: str, head: int = 1, scaling: dict | None = DYNAMIC, **overrides):
    """The reference's tiny random model of `family`: its causal LM (head 1) or its sequence classifier (head 2)."""
    config_class, *heads, values = FAMILIES[family]
    config = getattr(transformers, config_class)(**values, **COMMON, **overrides,
                                                 rope_scaling=None if scaling is None else dict(scaling))
    return make_reference(heads[head - 1], config)


@pytest.fixture(params=FAMILIES)
def tiny(request, tmp_path):
    """(family, reference, model): a fresh reference causal LM (no call made yet), saved and loaded by ours."""
    reference = reference_model(request.param)
    return request.param, reference, load_saved(reference, tmp_path)


@torch.inference_mode()
def test_logits_follow_the_longest_call_as_the_references(tiny):
    # 30 positions stretch the base for 30; 20 and 12 keep that stretch (the reference rebuilds only for a longer call
    # or resets only below the context); 8 go back to the plain base; 20 then stretch it for 20.
    family, reference, model = tiny
    assert model.config.rope_scaling == DYNAMIC
    for step, length in enumerate((30, 20, CONTEXT, 8, 20)):
        inputs = lm_inputs(ids_of(2, length, seed=step))
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), f"{family} call of {length}")


@torch.inference_mode()
def test_the_stretch_changes_the_logits_past_the_context_only(tiny, tmp_path):
    # The same weights without the scaling: equal within the context, apart past it (so the tests above can fail).
    family, _, model = tiny
    plain = load_saved(reference_model(family, scaling=None), tmp_path / "plain")
    short, long = ids_of(1, 10), ids_of(1, 30)
    torch.testing.assert_close(model(short).logits, plain(short).logits)
    assert not torch.allclose(model(long).logits, plain(long).logits, atol=1e-2)


@torch.inference_mode()
def test_cached_decoding_past_the_context_matches_the_references(tiny):
    # A prefill of 8 positions, then one token at a time to 24: each step stretches the base for its own length and
    # rotates its own key alone by it, the cached keys keeping theirs, in both libraries; then a short call resets.
    family, reference, model = tiny
    ids = ids_of(1, 24, seed=4)
    ours, theirs = model.new_cache(), transformers.DynamicCache(config=reference.config)
    mine = [model(ids[:, :8], past_key_values=ours).logits]
    expected = [reference(ids[:, :8], past_key_values=theirs).logits]
    for t in range(8, ids.shape[1]):
        mine.append(model(ids[:, t : t + 1], past_key_values=ours).logits)
        expected.append(reference(ids[:, t : t + 1], past_key_values=theirs).logits)
    torch.testing.assert_close(torch.cat(mine, dim=1), torch.cat(expected, dim=1), atol=1e-4, rtol=1e-4)
    # not the full forward's logits: the full forward rotates every key by the stretch for 24
    assert not torch.allclose(torch.cat(mine, dim=1), model(ids).logits, atol=1e-3)
    short = ids[:, :6]
    torch.testing.assert_close(model(short).logits, reference(short).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
@pytest.mark.parametrize("prompt", ["within", "past"])
@torch.inference_mode()
def test_generation_crossing_the_context_matches_the_reference(tiny, prompt, options):
    # Two prompts of 6 positions (one left-padded) and 10 new tokens: positions 0-15, crossing 12; or of 14, past it.
    _, reference, model = tiny
    ids, mask = generation_inputs(ids_of)
    if prompt == "past":
        ids, mask = torch.cat([ids_of(2, 8, seed=9), ids], dim=1), torch.cat([torch.ones(2, 8).long(), mask], dim=1)
    assert_generate_matches(model, reference, ids, mask, **options)


@torch.inference_mode()
def test_the_cpu_decoding_step_follows_the_stretch_as_the_layers(tiny):
    # The step reads the tables after following each call's length as the layers' forward does: a prompt of 8, then
    # one step a token to 24 (each one a call of decode_step, each stretching the base for its own length), give the
    # reference's cached logits; then greedy generation crossing the context from a prompt of 9 takes the step for
    # its prompt and every token (runs of greedy steps within the context, one step a token past it).
    import openformers.kernels  # noqa: F401 (loads the library's operators)
    from openformers.kernels.llama import refusal

    family, reference, model = tiny
    assert refusal(model.config) is None and model.base_model.accelerated_step is not None
    ids = ids_of(1, 24, seed=4)
    ours, theirs = model.new_cache(), transformers.DynamicCache(config=reference.config)
    calls, decode_step = [], torch.ops.openformers.decode_step
    torch.ops.openformers.decode_step = lambda *args: calls.append(1) or decode_step(*args)
    try:
        mine = [model(ids[:, :8], past_key_values=ours).logits]
        mine += [model(ids[:, t : t + 1], past_key_values=ours).logits for t in range(8, ids.shape[1])]
    finally:
        torch.ops.openformers.decode_step = decode_step
    expected = [reference(ids[:, :8], past_key_values=theirs).logits]
    expected += [reference(ids[:, t : t + 1], past_key_values=theirs).logits for t in range(8, ids.shape[1])]
    assert len(calls) == ids.shape[1] - 8
    torch.testing.assert_close(torch.cat(mine, dim=1), torch.cat(expected, dim=1), atol=1e-4, rtol=1e-4)
    layer_calls = []
    hook = model.base_model.layers[0].register_forward_hook(lambda *_: layer_calls.append(1))
    settings = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    try:
        for prompt in (ids_of(1, 9, seed=3), ids_of(1, 14, seed=5)):
            assert model.generate(prompt, **settings).tolist() == reference.generate(prompt, **settings).tolist()
    finally:
        hook.remove()
    assert layer_calls == []


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_the_sequence_classifier_and_saving_both_ways_match_the_reference(family, tmp_path):
    reference = reference_model(family, head=2, num_labels=3)
    ids = ids_of(2, 20, seed=3)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([2, 0])}
    assert_head_matches_and_saves_both_ways(reference, tmp_path, "AutoModelForSequenceClassification", inputs)


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_a_saved_causal_lm_loads_in_the_reference_and_back(family, tmp_path):
    reference = reference_model(family)
    model = load_saved(reference, tmp_path / "reference")
    inputs = lm_inputs(ids_of(2, 20, seed=5))
    expected = outputs_of(reference, inputs)
    saved = assert_saved_both_ways(model, tmp_path / "ours", "AutoModelForCausalLM", inputs, expected)
    parameters = saved.config.rope_parameters.get("full_attention", saved.config.rope_parameters)  # Gemma 3's per type
    assert {key: parameters[key] for key in DYNAMIC} == DYNAMIC


@pytest.mark.parametrize("config_class", [LlamaConfig, GPTNeoXConfig])
@pytest.mark.parametrize("scaling", [{"rope_type": "dynamic"}, {"rope_type": "dynamic", "factor": 0.0}],
                         ids=["no-factor", "factor-zero"])
def test_a_dynamic_scaling_without_a_positive_factor_is_refused_by_name(config_class, scaling):
    with pytest.raises(ValueError, match="rope_scaling.factor"):
        config_class(rope_scaling=scaling)


@pytest.mark.parametrize("config_class", [LlamaConfig, GPTNeoXConfig])
def test_hunyuans_alpha_is_refused_by_name_elsewhere(config_class):
    # The reference's Llama and GPT-NeoX ignore an alpha (Hunyuan's fixed stretch of the base): not read as one here.
    with pytest.raises(ValueError, match="rope_scaling.alpha=2.0"):
        config_class(rope_scaling={"rope_type": "dynamic", "factor": 2.0, "alpha": 2.0})

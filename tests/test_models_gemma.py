"""Gemma 2 against the reference: tiny random models made and saved by transformers, loaded by openformers.

The tiny models have a sliding window of 4 and sequences longer than that, soft-caps small enough to bend the
scores and logits, and every weight (norms included, which the reference initializes to zero) drawn at random.
"""

import warnings

import pytest
import torch

import openformers
from openformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM
from openformers.generation.cache import DynamicCache
from openformers.kernels import accelerate
from openformers.kernels import llama as llama_kernel

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=4, query_pre_attn_scalar=12,
    attn_logit_softcapping=3.0, final_logit_softcapping=4.0, rope_theta=500.0,
)
HEADS = ("Gemma2Model", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification", "Gemma2ForTokenClassification")
AUTO_OF_HEAD = {
    "Gemma2Model": "AutoModel", "Gemma2ForCausalLM": "AutoModelForCausalLM",
    "Gemma2ForSequenceClassification": "AutoModelForSequenceClassification",
    "Gemma2ForTokenClassification": "AutoModelForTokenClassification",
}


def _reference(name="Gemma2ForCausalLM", **overrides):
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.Gemma2Config(**{**TINY, "num_labels": 3, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.3)
    return model


def _load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


def _ids(*shape, seed=1):
    return torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    """Two rows of 12 tokens (three windows), one right-padded and one left-padded, with the head's labels."""
    ids = _ids(2, 12, seed=7)
    mask = torch.ones_like(ids)
    ids[0, 9:], mask[0, 9:] = 0, 0
    ids[1, :2], mask[1, :2] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "Gemma2ForSequenceClassification":
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "Gemma2ForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "Gemma2ForCausalLM":
        return {**inputs, "labels": ids.masked_fill(mask == 0, -100)}
    return inputs


def _outputs(model, name) -> dict:
    out = model(**_inputs(name))
    return {key: out[key] for key in out.keys() if isinstance(out[key], torch.Tensor)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma2")
    reference = _reference()
    reference.save_pretrained(folder)
    return folder, reference, _load_quietly(AutoModelForCausalLM.from_pretrained, folder)


@pytest.mark.parametrize("name", HEADS)
@torch.inference_mode()
def test_every_head_matches_the_reference_and_saves_what_it_loads(name, tmp_path):
    reference = _reference(name)
    reference.save_pretrained(tmp_path / "theirs")
    model = _load_quietly(getattr(openformers, AUTO_OF_HEAD[name]).from_pretrained, tmp_path / "theirs")
    assert type(model).__name__ == name and not model.training
    expected = _outputs(reference, name)
    got = _outputs(model, name)
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-4, msg=key)

    model.save_pretrained(tmp_path / "ours")
    reloaded = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    for key, value in _outputs(reloaded, name).items():
        torch.testing.assert_close(value, expected[key], atol=1e-4, rtol=1e-4, msg=key)
    ours_again = _load_quietly(getattr(openformers, name).from_pretrained, tmp_path / "ours")
    for key, value in _outputs(ours_again, name).items():
        torch.testing.assert_close(value, got[key], msg=key)


@torch.inference_mode()
def test_untied_lm_head_and_no_soft_caps_match_the_reference(tmp_path):
    reference = _reference(tie_word_embeddings=False, attn_logit_softcapping=None, final_logit_softcapping=None)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert not model.config.tie_word_embeddings and model.config.final_logit_softcapping is None
    ids = _ids(2, 10)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_hidden_states_and_attentions_match_the_reference(tiny):
    _, reference, model = tiny
    ids = _ids(1, 9)
    ours = model(ids, output_hidden_states=True, output_attentions=True)
    theirs = reference(ids, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    for got, expected in zip(ours.hidden_states + ours.attentions, theirs.hidden_states + theirs.attentions):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    model = tiny[2]
    ids = _ids(2, 12)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :5], past_key_values=cache).logits]  # prefill past the window
    steps.append(model(ids[:, 5:8], past_key_values=cache).logits)  # a chunk on top of the cache
    for t in range(8, 12):
        steps.append(model(ids[:, t : t + 1], past_key_values=cache).logits)  # one token at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    model = tiny[2]
    rows = [_ids(1, 9, seed=2)[0], _ids(1, 5, seed=3)[0], _ids(1, 1, seed=4)[0]]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]).long() for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    prefill = model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits
    step_ids = _ids(3, 1, seed=5)
    mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
    step = model(step_ids, attention_mask=mask, position_ids=positions[:, -1:] + 1, past_key_values=cache).logits
    for i, row in enumerate(rows):
        alone = model(torch.cat([row, step_ids[i]])[None]).logits[0]
        torch.testing.assert_close(prefill[i, width - len(row) :], alone[:-1])
        torch.testing.assert_close(step[i, 0], alone[-1])


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3)], ids=["greedy", "beams"])
@torch.inference_mode()
def test_generate_matches_the_reference(tiny, options):
    _, reference, model = tiny
    ids = torch.stack([_ids(1, 6, seed=6)[0], torch.cat([torch.zeros(2, dtype=torch.long), _ids(1, 4, seed=8)[0]])])
    mask = (torch.arange(6) >= torch.tensor([[0], [2]])).long()
    for batch in ((ids[:1], mask[:1]), (ids, mask)):
        expected = reference.generate(batch[0], attention_mask=batch[1], max_new_tokens=10, do_sample=False,
                                      eos_token_id=None, pad_token_id=0, **options)
        got = model.generate(batch[0], attention_mask=batch[1], max_new_tokens=10, do_sample=False,
                             eos_token_id=None, pad_token_id=0, **options)
        assert got.tolist() == expected.tolist()


def test_the_cpu_kernel_leaves_gemma_on_the_plain_path(tiny):
    model = tiny[2]
    assert not llama_kernel.eligible(model) and not accelerate(model)
    assert isinstance(model, Gemma2ForCausalLM)


def test_config_reads_and_writes_the_references_fields(tiny, tmp_path):
    folder, reference, model = tiny
    config = model.config
    assert isinstance(config, Gemma2Config)
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert (config.query_pre_attn_scalar, config.rope_theta, config.sliding_window) == (12, 500.0, 4)
    config.save_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    for name in ("layer_types", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
                 "sliding_window", "head_dim", "hidden_activation", "tie_word_embeddings"):
        assert getattr(theirs, name) == getattr(reference.config, name), name
    assert theirs.rope_parameters["rope_theta"] == 500.0


@pytest.mark.parametrize("field, value, message", [
    ("layer_types", ["sliding_attention"], "layer_types"),
    ("layer_types", ["sliding_attention", "chunked_attention", "full_attention"], "layer_types"),
    ("hidden_activation", "silu", "hidden_activation"),
    ("attn_logit_softcapping", 0.0, "attn_logit_softcapping"),
    ("use_bidirectional_attention", True, "use_bidirectional_attention"),
])
def test_config_refuses_what_it_does_not_implement(field, value, message):
    with pytest.raises(ValueError, match=message):
        Gemma2Config(**{**TINY, field: value})

"""Every decoding strategy on tiny random Llama models, with HF transformers' generate as the oracle."""

import warnings

import pytest
import torch

from openformers import AutoModelForCausalLM, TextStreamer

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=5, pad_token_id=3,
)
PROMPT_LENGTH = 7
# Ids the random model below generates often, so that EOS is hit early in some rows and late in others.
FREQUENT = [126, 94, 9]


def _tiny_pair(folder, **overrides):
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, **overrides)).eval()
    reference.save_pretrained(folder)
    return reference, AutoModelForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _tiny_pair(tmp_path_factory.mktemp("untied"))


@pytest.fixture(scope="module")
def prompts():
    ids = torch.randint(4, 128, (3, PROMPT_LENGTH), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    return ids, mask


def _both(models, ids, mask, seed=11, **options):
    """Our output and the reference's, from the same seed, as return_dict_in_generate outputs."""
    reference, model = models
    options = dict(output_scores=True, output_logits=True, return_dict_in_generate=True, **options)
    torch.manual_seed(seed)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reference.generate(ids, attention_mask=torch.ones_like(ids) if mask is None else mask, **options)
    torch.manual_seed(seed)
    ours = model.generate(ids, attention_mask=mask, **options)
    return ours, theirs


STRATEGIES = {
    "greedy": dict(),
    "greedy eos": dict(eos_token_id=FREQUENT[0]),
    "greedy eos list, penalties": dict(eos_token_id=FREQUENT, repetition_penalty=1.3, no_repeat_ngram_size=2),
    "greedy min_new_tokens": dict(eos_token_id=FREQUENT[0], min_new_tokens=6),
    "sample": dict(do_sample=True, eos_token_id=FREQUENT[0]),
    "sample warped": dict(do_sample=True, top_k=5, top_p=0.8, temperature=0.7, eos_token_id=FREQUENT[0]),
    "sample min_p typical": dict(do_sample=True, min_p=0.05, typical_p=0.9, top_k=0),
    "sample 3 sequences": dict(do_sample=True, num_return_sequences=3, eos_token_id=FREQUENT[0]),
    "beam 3": dict(num_beams=3, eos_token_id=FREQUENT[0]),
    "beam 3 return 3": dict(num_beams=3, num_return_sequences=3, eos_token_id=FREQUENT[:2]),
    "beam early stopping": dict(num_beams=4, length_penalty=0.5, early_stopping=True, num_return_sequences=2,
                                eos_token_id=FREQUENT[0]),
    "beam never": dict(num_beams=3, early_stopping="never", length_penalty=2.0, eos_token_id=FREQUENT[1]),
    "beam short": dict(num_beams=3, length_penalty=-1.0, eos_token_id=FREQUENT[1]),
    "beam no eos": dict(num_beams=2, eos_token_id=None),
    "beam sample": dict(do_sample=True, num_beams=3, num_return_sequences=2, eos_token_id=FREQUENT[0]),
}


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_matches_reference(models, prompts, name, padded):
    ids, mask = prompts
    ours, theirs = _both(models, ids, mask if padded else None, max_new_tokens=20, **STRATEGIES[name])
    _assert_same(ours, theirs, beams=STRATEGIES[name].get("num_beams", 1) > 1)


def _assert_same(ours, theirs, beams: bool):
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    assert len(ours.scores) == len(theirs.scores) and len(ours.logits) == len(theirs.logits)
    for got, expected in zip(ours.scores + ours.logits, theirs.scores + theirs.logits):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    if beams:
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-5, rtol=1e-5)
        assert ours.beam_indices.tolist() == theirs.beam_indices.tolist()


SMALL = dict(vocab_size=128, bos_token_id=1, eos_token_id=5, pad_token_id=3)
LLAMA_LIKE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
FAMILIES = {
    "llama tied, attention bias": lambda: transformers.LlamaConfig(
        **SMALL, **LLAMA_LIKE, tie_word_embeddings=True, attention_bias=True
    ),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL, **LLAMA_LIKE),
    "mistral": lambda: transformers.MistralConfig(**SMALL, **LLAMA_LIKE),
    "gpt2": lambda: transformers.GPT2Config(**SMALL, n_embd=64, n_layer=2, n_head=4, n_positions=256),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_causal_family_matches_reference(tmp_path, prompts, family):
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(FAMILIES[family]()).eval()
    reference.save_pretrained(tmp_path)
    pair = (reference, AutoModelForCausalLM.from_pretrained(tmp_path))
    ids, mask = prompts
    # An EOS id the model produces, so that rows stop at different steps.
    eos = pair[1].generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)[:, -6:].mode().values[0]
    for name in ("greedy", "beam 3 return 3", "sample warped"):
        options = {**STRATEGIES[name], "eos_token_id": int(eos)}
        ours, theirs = _both(pair, ids, mask, max_new_tokens=12, **options)
        _assert_same(ours, theirs, beams=name.startswith("beam"))


def test_output_reads_like_the_reference(models, prompts):
    ids, _ = prompts
    ours, _ = _both(models, ids, None, max_new_tokens=3)
    assert ours[0] is ours.sequences and ours["scores"] is ours.scores and "sequences_scores" not in ours.keys()
    assert ours.past_key_values.seq_len == PROMPT_LENGTH + 2
    plain = models[1].generate(ids, max_new_tokens=3)
    assert isinstance(plain, torch.Tensor) and plain.tolist() == ours.sequences.tolist()


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
def test_left_padded_batch_equals_each_prompt_alone(models, prompts, options):
    model = models[1]
    ids, mask = prompts
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=FREQUENT[0], **options)
    rows = options.get("num_return_sequences", 1)
    for i in range(ids.shape[0]):
        alone = model.generate(ids[i : i + 1, mask[i].bool()], max_new_tokens=12, eos_token_id=FREQUENT[0], **options)
        for r in range(rows):
            got = batch[i * rows + r, PROMPT_LENGTH:].tolist()
            expected = alone[r, int(mask[i].sum()) :].tolist()
            assert got[: len(expected)] == expected
            assert all(token == TINY["pad_token_id"] for token in got[len(expected) :])


def test_same_seed_same_sample(models, prompts):
    model = models[1]
    ids, _ = prompts
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(model.generate(ids, max_new_tokens=10, do_sample=True, top_k=0).tolist())
    assert draws[0] == draws[1] and draws[0] != draws[2]
    with_generator = [
        model.generate(ids, max_new_tokens=10, do_sample=True, generator=torch.Generator().manual_seed(3)).tolist()
        for _ in range(2)
    ]
    assert with_generator[0] == with_generator[1]


def test_max_length_and_max_new_tokens(models, prompts):
    model = models[1]
    ids, _ = prompts
    assert model.generate(ids, max_length=PROMPT_LENGTH + 3, eos_token_id=None).shape == (3, PROMPT_LENGTH + 3)
    # max_new_tokens wins over max_length, as in the reference
    assert model.generate(ids, max_length=2, max_new_tokens=4, eos_token_id=None).shape == (3, PROMPT_LENGTH + 4)
    assert model.generate(ids, num_beams=2, max_new_tokens=4, eos_token_id=None).shape == (3, PROMPT_LENGTH + 4)


def test_right_padding_is_warned_about(models, prompts):
    model = models[1]
    ids, mask = prompts
    with pytest.warns(UserWarning, match="right-padded"):
        model.generate(ids, attention_mask=mask.flip(-1), max_new_tokens=2)


def test_a_mask_of_ones_is_the_same_as_none(models, prompts):
    model = models[1]
    ids, _ = prompts
    assert torch.equal(
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5), model.generate(ids, max_new_tokens=5)
    )


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(num_return_sequences=2), ValueError, "greedy decoding gives only one"),
        (dict(num_beams=2, num_return_sequences=3), ValueError, r"num_return_sequences \(3\) cannot exceed num_beams"),
        (dict(num_beams=0), ValueError, r"num_beams must be an integer >= 1 \(1 means no beam search\), got 0"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be an integer >= 1"),
        (dict(early_stopping="sometimes"), ValueError, "early_stopping must be True, False or 'never'"),
        (dict(do_sample=True, temperature=0.0), ValueError, "temperature=0 with do_sample=True"),
        (dict(stop_strings=["x"]), ValueError, "needs the tokenizer"),
        (dict(stop_strings=""), ValueError, "stop_strings must be"),
        (dict(eos_token_id="</s>"), ValueError, "eos_token_id must be a token id"),
        (dict(num_beams=2, num_beam_groups=2), ValueError, "Group Beam Search .* is no longer part of transformers"),
        (dict(generation_config={"max_new_tokens": 2}), TypeError, "generation_config must be a GenerationConfig"),
    ],
)
def test_impossible_options_are_explained(models, prompts, options, error, message):
    with pytest.raises(error, match=message):
        models[1].generate(prompts[0], **options)


def test_streamer_needs_a_single_sequence(models, prompts):
    with pytest.raises(ValueError, match="streamer streams one sequence"):
        models[1].generate(prompts[0][:1], num_beams=2, max_new_tokens=2, streamer=TextStreamer(tokenizer=None))
    # print, or a tokenizer, where a streamer belongs: refused before the prompt runs, not at the first put()
    for wrong in (print, "stream"):
        with pytest.raises(TypeError, match=r"streamer must be an object with put\(token_ids\) and end\(\)"):
            models[1].generate(prompts[0][:1], max_new_tokens=2, streamer=wrong)


def test_options_the_strategy_ignores_are_warned_about(models, prompts):
    model = models[1]
    ids = prompts[0][:1]
    with pytest.warns(UserWarning, match=r"do_sample is not True.*temperature=0.7"):
        model.generate(ids, max_new_tokens=2, temperature=0.7)
    with pytest.warns(UserWarning, match=r"num_beams is 1.*length_penalty=2.0"):
        model.generate(ids, max_new_tokens=2, length_penalty=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(ids, max_new_tokens=2, temperature=0.7, do_sample=True)
        model.generate(ids, max_new_tokens=2, temperature=0.0)  # the usual way to ask for greedy decoding

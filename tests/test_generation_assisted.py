"""Assisted decoding (a draft model, prompt lookup): the same tokens as plain greedy decoding, checked against
the reference's greedy decoding on tiny random Llama models."""

import pytest
import torch

from openformers import AutoModelForCausalLM
from openformers.generation import (
    AssistedCandidateGenerator, CandidateGenerator, GenerationConfig, PromptLookupCandidateGenerator,
)
from openformers.generation.decoding import _speculative_sample

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=5, pad_token_id=3,
)
DRAFT = dict(TINY, hidden_size=32, intermediate_size=48, num_hidden_layers=1)


def _pair(folder, seed, **config):
    torch.manual_seed(seed)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    reference.save_pretrained(folder)
    return reference, AutoModelForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    reference, main = _pair(tmp_path_factory.mktemp("main"), 0, **TINY)
    _, draft = _pair(tmp_path_factory.mktemp("draft"), 5, **DRAFT)
    return reference, main, draft


def _prompt(seed=1, length=7):
    return torch.randint(4, 128, (1, length), generator=torch.Generator().manual_seed(seed))


def _reference_greedy(reference, ids, **options):
    with torch.inference_mode():
        return reference.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=3, **options)


# Ids the main model makes often: EOS among them ends some runs early, in the middle of a round of candidates.
OPTIONS = {
    "no eos": dict(eos_token_id=None),
    "eos": dict(eos_token_id=97),
    "penalty": dict(eos_token_id=None, repetition_penalty=1.3, no_repeat_ngram_size=3),
    "min new tokens": dict(eos_token_id=[126, 94], min_new_tokens=5),
}


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_assisted_decoding_gives_the_greedy_tokens(models, options, seed):
    reference, main, draft = models
    ids = _prompt(seed)
    expected = _reference_greedy(reference, ids, max_new_tokens=40, **options)
    assert main.generate(ids, max_new_tokens=40, **options).tolist() == expected.tolist()
    for assisted in (dict(assistant_model=draft), dict(assistant_model=main),
                     dict(assistant_model=draft, num_assistant_tokens=3, num_assistant_tokens_schedule="heuristic"),
                     dict(prompt_lookup_num_tokens=4), dict(prompt_lookup_num_tokens=2, max_matching_ngram_size=1)):
        got = main.generate(ids, max_new_tokens=40, **options, **assisted)
        assert got.tolist() == expected.tolist(), assisted


def test_prompt_lookup_on_a_repetitive_prompt(models):
    reference, main, _ = models
    ids = _prompt(4, 6).repeat(1, 4)
    expected = _reference_greedy(reference, ids, max_new_tokens=30, eos_token_id=None)
    got = main.generate(ids, max_new_tokens=30, eos_token_id=None, prompt_lookup_num_tokens=10)
    assert got.tolist() == expected.tolist()


def test_assisted_outputs_equal_plain_outputs(models):
    _, main, draft = models
    ids = _prompt(2)
    options = dict(max_new_tokens=12, eos_token_id=None, return_dict_in_generate=True, output_scores=True,
                   output_logits=True)
    plain = main.generate(ids, **options)
    for assisted in (dict(assistant_model=draft), dict(prompt_lookup_num_tokens=3)):
        got = main.generate(ids, **options, **assisted)
        assert got.sequences.tolist() == plain.sequences.tolist()
        assert len(got.scores) == len(got.logits) == 12
        for ours, theirs in zip(got.scores + got.logits, plain.scores + plain.logits):
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
        assert got.past_key_values.get_seq_length() == plain.past_key_values.get_seq_length()


def test_assisted_sampling_is_reproducible_and_stops_at_the_length(models):
    _, main, draft = models
    ids = _prompt(3)
    for assisted in (dict(assistant_model=draft), dict(prompt_lookup_num_tokens=3)):
        runs = []
        for _ in range(2):
            torch.manual_seed(7)
            runs.append(main.generate(ids, max_new_tokens=15, do_sample=True, eos_token_id=None, **assisted))
        assert runs[0].tolist() == runs[1].tolist() and runs[0].shape == (1, 22)


def test_speculative_sampling_follows_the_model_distribution():
    # One candidate drawn from q; the kept token (or its replacement) must be distributed as p.
    generator = torch.Generator().manual_seed(0)
    p_logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    q_logits = torch.tensor([[0.0, 1.5, 1.0, 0.5]])
    q = q_logits.softmax(-1)[0]
    counts = torch.zeros(4)
    draws = 8000
    for _ in range(draws):
        candidate = torch.multinomial(q, 1, generator=generator).view(1, 1)
        kept = _speculative_sample(candidate, p_logits[None], q_logits[None], generator)
        counts[kept[0, 0]] += 1
    torch.testing.assert_close(counts / draws, p_logits[0].softmax(-1), atol=0.02, rtol=0)


def test_candidate_generators_propose_as_documented(models):
    _, main, draft = models
    ids = torch.tensor([[10, 11, 12, 13, 10, 11]])
    lookup = PromptLookupCandidateGenerator(num_output_tokens=3, max_matching_ngram_size=2, max_length=50)
    proposed, scores = lookup.get_candidates(ids)
    assert proposed.tolist() == [[10, 11, 12, 13, 10, 11, 12, 13, 10]] and scores is None
    stops = PromptLookupCandidateGenerator(eos_token_id=13, num_output_tokens=3, max_length=50)
    assert stops.get_candidates(ids)[0].tolist() == [[10, 11, 12, 13, 10, 11, 12]]
    assert lookup.get_candidates(torch.tensor([[1, 2, 3]]))[0].tolist() == [[1, 2, 3]]  # nothing repeats
    with pytest.raises(ValueError, match="num_output_tokens"):
        PromptLookupCandidateGenerator(num_output_tokens=0)

    config = GenerationConfig(max_length=30, eos_token_id=None)
    assistant = AssistedCandidateGenerator(ids, draft, config, num_assistant_tokens=4,
                                           assistant_confidence_threshold=0.0)
    proposed, scores = assistant.get_candidates(ids)
    expected = draft.generate(ids, max_new_tokens=4, eos_token_id=None)
    assert proposed.tolist() == expected.tolist() and scores.shape == (1, 4, 128)
    # The next round reuses the draft's cache for the part of the ids it has seen.
    again, _ = assistant.get_candidates(expected[:, :8])
    assert again.tolist() == draft.generate(expected[:, :8], max_new_tokens=4, eos_token_id=None).tolist()
    with pytest.raises(TypeError, match="get_candidates"):
        CandidateGenerator().get_candidates(ids)


def test_assisted_decoding_refuses_what_it_cannot_do(models):
    _, main, draft = models
    with pytest.raises(ValueError, match="one prompt"):
        main.generate(torch.ones(2, 3, dtype=torch.long), assistant_model=draft, max_new_tokens=3)
    with pytest.raises(ValueError, match="without beams"):
        main.generate(_prompt(), assistant_model=draft, num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="assistant_tokenizer"):
        main.generate(_prompt(), assistant_model=draft, assistant_tokenizer=object(), max_new_tokens=3)

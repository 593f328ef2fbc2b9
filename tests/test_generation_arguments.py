"""generate()'s keyword arguments beyond the options, its default length, its output classes and
compute_transition_scores, with the reference's generate on tiny random Llama models as the oracle."""

import warnings

import pytest
import torch

from openformers import AutoModelForCausalLM
from openformers.generation import (
    Cache, DynamicCache, GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput, LogitsProcessor,
    LogitsProcessorList, MaxLengthCriteria, RepetitionPenaltyLogitsProcessor, StoppingCriteria, StoppingCriteriaList,
)

transformers = pytest.importorskip("transformers")
from transformers import generation as reference  # noqa: E402

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=5, pad_token_id=3,
)


def _pair(folder, **overrides):
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **overrides})).eval()
    theirs.save_pretrained(folder)
    return theirs, AutoModelForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def ids():
    return torch.randint(4, 128, (2, 7), generator=torch.Generator().manual_seed(1))


def _theirs(model, ids, seed=None, **options):
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=torch.ones_like(ids), **options)


def _ours(model, ids, seed=None, **options):
    if seed is not None:
        torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, **options)


def test_without_a_length_twenty_new_tokens_as_the_reference(models, ids, tmp_path):
    theirs, ours = models
    expected = _theirs(theirs, ids, eos_token_id=None)
    assert expected.shape == (2, 7 + 20)
    assert _ours(ours, ids, eos_token_id=None).tolist() == expected.tolist()
    assert ours.generate(input_ids=ids, eos_token_id=None).tolist() == expected.tolist()
    assert ours.generate(inputs=ids, eos_token_id=None).tolist() == expected.tolist()
    # Capped at max_position_embeddings, as the reference does.
    short_theirs, short_ours = _pair(tmp_path, max_position_embeddings=12)
    expected = _theirs(short_theirs, ids, eos_token_id=None)
    assert expected.shape == (2, 12)
    assert _ours(short_ours, ids, eos_token_id=None).tolist() == expected.tolist()
    # A max_length from the model's generation config counts the prompt.
    ours.generation_config.max_length = 10
    try:
        assert _ours(ours, ids, eos_token_id=None).shape == (2, 10)
    finally:
        ours.generation_config.max_length = None


class _BanEvenIds(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores.index_fill(-1, torch.arange(0, scores.shape[-1], 2), -float("inf"))


class _ReferenceBanEvenIds(reference.LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores.index_fill(-1, torch.arange(0, scores.shape[-1], 2), -float("inf"))


def test_user_logits_processors_run_as_in_the_reference(models, ids):
    theirs, ours = models
    expected = _theirs(theirs, ids, max_new_tokens=8, logits_processor=reference.LogitsProcessorList([_ReferenceBanEvenIds()]))
    got = _ours(ours, ids, max_new_tokens=8, logits_processor=LogitsProcessorList([_BanEvenIds()]))
    assert got.tolist() == expected.tolist() and all(t % 2 for t in got[:, 7:].flatten().tolist())
    # A processor of a type generate builds too replaces the built one (here: penalty 3.0, not 1.1).
    expected = _theirs(theirs, ids, max_new_tokens=8, repetition_penalty=1.1,
                       logits_processor=[reference.RepetitionPenaltyLogitsProcessor(3.0)])
    got = _ours(ours, ids, max_new_tokens=8, repetition_penalty=1.1,
                logits_processor=[RepetitionPenaltyLogitsProcessor(3.0)])
    assert got.tolist() == expected.tolist()
    with pytest.warns(UserWarning, match="RepetitionPenaltyLogitsProcessor"):
        ours.generate(ids, max_new_tokens=2, repetition_penalty=1.1, logits_processor=[RepetitionPenaltyLogitsProcessor(3.0)])


class _EndsWithSeven(StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] % 7 == 0


class _ReferenceEndsWithSeven(reference.StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] % 7 == 0


@pytest.mark.parametrize("beams", [1, 3])
def test_user_stopping_criteria_run_as_in_the_reference(models, ids, beams):
    theirs, ours = models
    expected = _theirs(theirs, ids, max_new_tokens=12, num_beams=beams,
                       stopping_criteria=reference.StoppingCriteriaList([_ReferenceEndsWithSeven()]))
    got = _ours(ours, ids, max_new_tokens=12, num_beams=beams, stopping_criteria=StoppingCriteriaList([_EndsWithSeven()]))
    assert got.tolist() == expected.tolist()
    # A MaxLengthCriteria passed in replaces the one built from max_new_tokens.
    expected = _theirs(theirs, ids, max_new_tokens=12, num_beams=beams, eos_token_id=None,
                       stopping_criteria=reference.StoppingCriteriaList([reference.MaxLengthCriteria(10)]))
    got = _ours(ours, ids, max_new_tokens=12, num_beams=beams, eos_token_id=None,
                stopping_criteria=StoppingCriteriaList([MaxLengthCriteria(10)]))
    assert got.shape == expected.shape == (2, 10) and got.tolist() == expected.tolist()


def test_max_time_stops_generation(models, ids):
    _, ours = models
    assert _ours(ours, ids, max_new_tokens=50, eos_token_id=None, max_time=1e-9).shape == (2, 8)


def test_prefix_allowed_tokens_fn_as_in_the_reference(models, ids):
    theirs, ours = models

    def allowed(batch_id, row):
        return [10 + batch_id, 20 + int(row[-1]) % 5, 99]

    for beams in (1, 2):
        expected = _theirs(theirs, ids, max_new_tokens=6, num_beams=beams, prefix_allowed_tokens_fn=allowed)
        assert _ours(ours, ids, max_new_tokens=6, num_beams=beams, prefix_allowed_tokens_fn=allowed).tolist() == (
            expected.tolist()
        )


def test_negative_prompt_with_guidance_as_in_the_reference(models, ids):
    theirs, ours = models
    negative = torch.randint(4, 128, (2, 4), generator=torch.Generator().manual_seed(9))
    expected = _theirs(theirs, ids, max_new_tokens=6, guidance_scale=1.5, negative_prompt_ids=negative,
                       negative_prompt_attention_mask=torch.ones_like(negative))
    got = _ours(ours, ids, max_new_tokens=6, guidance_scale=1.5, negative_prompt_ids=negative,
                negative_prompt_attention_mask=torch.ones_like(negative))
    assert got.tolist() == expected.tolist()


STRATEGIES = {
    "greedy": dict(eos_token_id=126),
    "sample": dict(do_sample=True, top_k=20, eos_token_id=126),
    "beams": dict(num_beams=3, num_return_sequences=2, eos_token_id=126),
    "beam sample": dict(num_beams=3, do_sample=True, eos_token_id=126),
}


@pytest.mark.parametrize("options", list(STRATEGIES.values()), ids=list(STRATEGIES))
def test_outputs_and_transition_scores_match_the_reference(models, ids, options):
    theirs, ours = models
    options = dict(max_new_tokens=8, return_dict_in_generate=True, output_scores=True, output_logits=True, **options)
    expected = _theirs(theirs, ids, seed=3, **options)
    got = _ours(ours, ids, seed=3, **options)
    beams = options.get("num_beams", 1) > 1
    assert type(got).__name__ == type(expected).__name__
    assert isinstance(got, GenerateBeamDecoderOnlyOutput if beams else GenerateDecoderOnlyOutput)
    assert list(got.keys()) == list(expected.keys())
    assert got.sequences.tolist() == expected.sequences.tolist()
    assert isinstance(got.past_key_values, Cache) and got.cache is got.past_key_values
    extra = dict(beam_indices=got.beam_indices) if beams else {}
    theirs_extra = dict(beam_indices=expected.beam_indices) if beams else {}
    for normalize, scores, their_scores in ((False, got.scores, expected.scores), (True, got.logits, expected.logits)):
        mine = ours.compute_transition_scores(got.sequences, scores, normalize_logits=normalize, **extra)
        want = theirs.compute_transition_scores(expected.sequences, their_scores, normalize_logits=normalize,
                                                **theirs_extra)
        torch.testing.assert_close(mine, want, atol=1e-4, rtol=1e-4)
    if beams:
        assert got.beam_indices.tolist() == expected.beam_indices.tolist()
        torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=1e-4)


def test_a_cache_from_an_earlier_call_continues_the_same(models, ids):
    _, ours = models
    first = _ours(ours, ids[:1], max_new_tokens=5, return_dict_in_generate=True, eos_token_id=None)
    longer = torch.cat([first.sequences, torch.tensor([[42, 43]])], dim=1)
    fresh = _ours(ours, longer, max_new_tokens=6, eos_token_id=None)
    reused = _ours(ours, longer, max_new_tokens=6, eos_token_id=None, past_key_values=first.past_key_values)
    assert reused.tolist() == fresh.tolist()
    with pytest.raises(ValueError, match="past_key_values already holds"):
        ours.generate(ids[:1, :3], past_key_values=first.past_key_values, max_new_tokens=2)
    with pytest.raises(TypeError, match="past_key_values must be a Cache"):
        ours.generate(ids, past_key_values=((1, 2),), max_new_tokens=2)


def test_other_reference_arguments_are_accepted(models, ids):
    _, ours = models
    plain = _ours(ours, ids, max_new_tokens=4)
    assert _ours(ours, ids, max_new_tokens=4, synced_gpus=True).tolist() == plain.tolist()  # one process: no effect
    assert _ours(ours, ids, max_new_tokens=4, synced_gpus=False, trust_remote_code=False).tolist() == plain.tolist()
    with pytest.raises(ValueError, match="custom_generate"):
        ours.generate(ids, custom_generate="transformers-community/dola", max_new_tokens=2)
    with pytest.raises(ValueError, match="twice"):
        ours.generate(ids, input_ids=ids, max_new_tokens=2)


def test_use_model_defaults_false_skips_the_model_generation_config(models, ids):
    from openformers.generation import GenerationConfig

    _, ours = models
    ours.generation_config.repetition_penalty = 5.0
    try:
        passed = GenerationConfig(max_new_tokens=6, eos_token_id=None)
        with_model = _ours(ours, ids, generation_config=passed)
        without = _ours(ours, ids, generation_config=passed, use_model_defaults=False)
        assert with_model.tolist() == _ours(ours, ids, max_new_tokens=6, eos_token_id=None).tolist()
        assert without.tolist() == _ours(ours, ids, max_new_tokens=6, eos_token_id=None, repetition_penalty=1.0).tolist()
        assert with_model.tolist() != without.tolist()
    finally:
        ours.generation_config.repetition_penalty = None


def test_cache_speaks_the_reference_methods():
    cache = DynamicCache()
    assert isinstance(cache, Cache) and cache.get_seq_length() == 0 and len(cache) == 0 and cache.batch_size == -1
    k = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).view(2, 1, 5, 2)
    keys, values = cache.update(k, -k, 0)  # the reference's argument order
    assert torch.equal(keys, k) and torch.equal(values, -k)
    keys, _ = cache.update(0, k[:, :, :1], k[:, :, :1])  # ours
    assert cache.get_seq_length() == cache.seq_len == 6 and keys.shape == (2, 1, 6, 2)
    cache.crop(-2)  # the reference's 5.x use: remove 2 from the end
    assert cache.get_seq_length() == 4
    cache.crop(3)  # keep 3
    assert cache.get_seq_length() == 3
    cache.reorder_cache(torch.tensor([1, 0]))
    assert torch.equal(cache.keys[0][:, :, :3], k[[1, 0], :, :3])
    cache.batch_select_indices(torch.tensor([1]))
    assert cache.batch_size == 1 and torch.equal(cache.keys[0][:, :, :3], k[:1, :, :3])
    cache.batch_repeat_interleave(3)
    assert cache.batch_size == 3 and cache.get_max_length() == -1 and not cache.is_compileable
    cache.reset()
    assert cache.get_seq_length() == 0


@pytest.mark.parametrize("beams", [1, 2])
def test_attentions_and_hidden_states_per_step_as_the_reference(tmp_path, ids, beams):
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, attn_implementation="eager")).eval()
    theirs.save_pretrained(tmp_path)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    options = dict(return_dict_in_generate=True, output_attentions=True, output_hidden_states=True,
                   max_new_tokens=4, num_beams=beams)
    with torch.inference_mode():
        expected = theirs.generate(ids, attention_mask=mask, **options)
    got = ours.generate(ids, attention_mask=mask, **options)
    assert list(got.keys()) == list(expected.keys())
    assert len(got.attentions) == len(got.hidden_states) == 4
    rows = mask.bool().repeat_interleave(beams, 0)
    for step, (mine, want) in enumerate(zip(got.attentions + got.hidden_states, expected.attentions + expected.hidden_states)):
        assert [t.shape for t in mine] == [t.shape for t in want]
        if beams == 1:
            for a, b in zip(mine, want):
                if a.dim() == 3 and a.shape[1] > 1:  # the prompt's hidden states: padded positions may differ
                    a, b = a[rows], b[rows]
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


SYNCED_STRATEGIES = [dict(), dict(num_beams=2), dict(prompt_lookup_num_tokens=3)]  # greedy, beams, assisted


def _synced_rank(rank: int, folder: str, port: int, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder)
        ids = torch.randint(4, 128, (1, 5), generator=torch.Generator().manual_seed(rank))
        # Rank 0 is done after 2 tokens and must keep stepping while rank 1 makes 8.
        results[rank] = [
            model.generate(ids, max_new_tokens=2 + 6 * rank, eos_token_id=None, synced_gpus=True, **strategy).tolist()
            for strategy in SYNCED_STRATEGIES
        ]
    finally:
        torch.distributed.destroy_process_group()


def test_synced_gpus_keeps_processes_in_step(models, tmp_path):
    import socket

    import torch.multiprocessing as mp

    _, ours = models
    ours.save_pretrained(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_synced_rank, args=(str(tmp_path), port, results), nprocs=2, join=True)
    for rank in range(2):
        ids = torch.randint(4, 128, (1, 5), generator=torch.Generator().manual_seed(rank))
        alone = [ours.generate(ids, max_new_tokens=2 + 6 * rank, eos_token_id=None, **strategy).tolist()
                 for strategy in SYNCED_STRATEGIES]
        assert results[rank] == alone


@pytest.mark.parametrize("draft", [False, True])
def test_a_config_asking_for_tuples_still_generates(tmp_path, ids, draft):
    """config.return_dict=False makes forward return tuples; generate reads outputs by name all the same (the
    reference's own generate fails on such a config, so it runs with the default one)."""
    theirs, _ = _pair(tmp_path)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, return_dict=False)
    assert isinstance(ours(ids), tuple)
    options = {"assistant_model": ours} if draft else {}
    expected = _theirs(theirs, ids[:1], max_new_tokens=5, eos_token_id=None)
    assert torch.equal(_ours(ours, ids[:1], max_new_tokens=5, eos_token_id=None, **options), expected)

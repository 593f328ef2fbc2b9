"""Watermarking: the same green lists, g-values, scores and detections as HF transformers for the same keys."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from openformers.generation import GenerationConfig
from openformers.generation import processors as of
from openformers.generation import watermarking as ow

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("transformers.generation.logits_process")
hw = pytest.importorskip("transformers.generation.watermarking")

VOCAB = 64


def random_inputs(seed: int, batch: int = 3, length: int = 7):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator), torch.randn(batch, VOCAB, generator=generator)


GREEN_LIST_OPTIONS = [
    dict(),
    dict(greenlist_ratio=0.5, bias=1.0, hashing_key=12345, context_width=3),
    dict(seeding_scheme="selfhash"),
    dict(seeding_scheme="selfhash", context_width=2, greenlist_ratio=0.4),
]


@pytest.mark.parametrize("options", GREEN_LIST_OPTIONS, ids=["lefthash", "lefthash-3", "selfhash", "selfhash-2"])
def test_green_list_processor_matches_reference(options):
    ours = ow.WatermarkLogitsProcessor(VOCAB, "cpu", **options)
    theirs = hf.WatermarkLogitsProcessor(VOCAB, "cpu", **options)
    assert torch.equal(ours.fixed_table, theirs.fixed_table)
    for seed in range(3):
        input_ids, scores = random_inputs(seed)
        torch.testing.assert_close(ours(input_ids, scores), theirs(input_ids, scores), rtol=0, atol=0)
        assert torch.equal(ours._get_greenlist_ids(input_ids[0]), theirs._get_greenlist_ids(input_ids[0]))


def test_green_list_processor_skips_short_contexts_with_a_warning():
    processor = ow.WatermarkLogitsProcessor(VOCAB, "cpu", context_width=4)
    input_ids, scores = random_inputs(0, length=3)
    with pytest.warns(UserWarning, match="seeded by 4 tokens"):
        assert torch.equal(processor(input_ids, scores), scores)


def watermarked_ids(processor, seed: int, batch: int = 2, steps: int = 24) -> torch.Tensor:
    """Greedy "generation" over random logits through the processor: text that carries the watermark."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, 3), generator=generator)
    for _ in range(steps):
        scores = processor(ids, torch.randn(batch, VOCAB, generator=generator))
        ids = torch.cat([ids, scores.argmax(dim=-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("options", GREEN_LIST_OPTIONS, ids=["lefthash", "lefthash-3", "selfhash", "selfhash-2"])
@pytest.mark.parametrize("ignore_repeated_ngrams", [False, True])
def test_detector_matches_reference(options, ignore_repeated_ngrams):
    model_config = SimpleNamespace(vocab_size=VOCAB, bos_token_id=1, is_encoder_decoder=False)
    config = ow.WatermarkingConfig(**options)
    ours = ow.WatermarkDetector(model_config, "cpu", config, ignore_repeated_ngrams=ignore_repeated_ngrams)
    theirs = hw.WatermarkDetector(model_config, "cpu", transformers.WatermarkingConfig(**options),
                                  ignore_repeated_ngrams=ignore_repeated_ngrams)
    marked = watermarked_ids(ow.WatermarkLogitsProcessor(VOCAB, "cpu", bias=6.0, **{
        k: v for k, v in options.items() if k != "bias"}), seed=0)
    plain = torch.randint(2, VOCAB, (2, 27), generator=torch.Generator().manual_seed(9))
    plain[:, 5:9] = plain[:, 10:14]  # repeated n-grams
    for ids in (marked, plain, torch.cat([torch.ones(2, 1, dtype=torch.long), plain], dim=1)):
        got, expected = ours(ids, return_dict=True), theirs(ids, return_dict=True)
        for name in ("num_tokens_scored", "num_green_tokens", "green_fraction", "z_score", "p_value",
                     "prediction", "confidence"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        np.testing.assert_array_equal(ours(ids, z_threshold=1.0), theirs(ids, z_threshold=1.0))
    assert ours(marked).all(), "strongly watermarked text must be detected"


def test_detector_refuses_mixed_bos_and_short_input():
    detector = ow.WatermarkDetector(SimpleNamespace(vocab_size=VOCAB, bos_token_id=1), "cpu", ow.WatermarkingConfig())
    with pytest.raises(ValueError, match="start with the BOS token and some do not"):
        detector(torch.tensor([[1, 5, 6], [4, 5, 6]]))
    with pytest.raises(ValueError, match="needs at least 2 tokens"):
        detector(torch.tensor([[1, 5]]))


SYNTHID = dict(ngram_len=3, keys=[654, 400, 836, 123, 340], context_history_size=16, sampling_table_size=2**10)


@pytest.mark.parametrize("options", [SYNTHID, {**SYNTHID, "skip_first_ngram_calls": True, "sampling_table_seed": 7},
                                     {**SYNTHID, "debug_mode": True, "ngram_len": 2}], ids=["plain", "skip", "debug"])
def test_synthid_processor_matches_reference(options):
    config = ow.SynthIDTextWatermarkingConfig(**options)
    ours = config.construct_processor(VOCAB, "cpu")
    theirs = transformers.SynthIDTextWatermarkingConfig(**options).construct_processor(VOCAB, "cpu")
    assert torch.equal(ours.sampling_table, theirs.sampling_table)
    ids, _ = random_inputs(0, length=4)
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):  # the state (context and history) evolves over the calls
        scores = torch.randn(ids.shape[0], VOCAB, generator=generator)
        got, expected = ours(ids, scores), theirs(ids, scores)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        ids = torch.cat([ids, expected.argmax(dim=-1, keepdim=True) % 3], dim=1)  # % 3: contexts repeat
    assert torch.equal(ours.compute_g_values(ids), theirs.compute_g_values(ids))
    assert torch.equal(ours.compute_context_repetition_mask(ids), theirs.compute_context_repetition_mask(ids))
    assert torch.equal(ours.compute_eos_token_mask(ids, 2), theirs.compute_eos_token_mask(ids, 2))
    assert ours.expected_mean_g_value(VOCAB) == theirs.expected_mean_g_value(VOCAB)


def test_synthid_detector_matches_reference():
    torch.manual_seed(0)
    detector_module = hw.BayesianDetectorModel(hw.BayesianDetectorConfig(watermarking_depth=len(SYNTHID["keys"])))
    tokenizer = SimpleNamespace(eos_token_id=2)
    ours_processor = ow.SynthIDTextWatermarkingConfig(**SYNTHID).construct_processor(VOCAB, "cpu")
    theirs_processor = transformers.SynthIDTextWatermarkingConfig(**SYNTHID).construct_processor(VOCAB, "cpu")
    ids = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(4))
    ids[1, 12] = 2  # an EOS: the rest of that row is not scored
    ids[2, 3:6] = ids[2, 8:11]  # a repeated context
    got = ow.SynthIDTextWatermarkDetector(detector_module, ours_processor, tokenizer)(ids)
    expected = hw.SynthIDTextWatermarkDetector(detector_module, theirs_processor, tokenizer)(ids)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)


# --- configs ------------------------------------------------------------------------------------------------


def test_configs_round_trip_with_the_reference(tmp_path):
    for ours, theirs in [
        (ow.WatermarkingConfig(bias=1.5, seeding_scheme="selfhash"),
         transformers.WatermarkingConfig(bias=1.5, seeding_scheme="selfhash")),
        (ow.SynthIDTextWatermarkingConfig(**SYNTHID), transformers.SynthIDTextWatermarkingConfig(**SYNTHID)),
    ]:
        assert ours.to_dict() == theirs.to_dict()
        assert json.loads(ours.to_json_string()) == json.loads(theirs.to_json_string())
        GenerationConfig(watermarking_config=ours, do_sample=True).save_pretrained(tmp_path / "ours")
        loaded = transformers.GenerationConfig.from_pretrained(tmp_path / "ours")
        assert type(loaded.watermarking_config).__name__ == type(ours).__name__
        assert loaded.watermarking_config.to_dict() == ours.to_dict()
        transformers.GenerationConfig(watermarking_config=theirs).save_pretrained(tmp_path / "theirs")
        back = GenerationConfig.from_pretrained(tmp_path / "theirs")
        assert type(back.watermarking_config) is type(ours) and back.watermarking_config.to_dict() == ours.to_dict()
    assert isinstance(GenerationConfig(watermarking_config={"bias": 3.0}).watermarking_config, ow.WatermarkingConfig)
    with pytest.raises(ValueError, match="seeding_scheme must be 'lefthash' or 'selfhash'"):
        GenerationConfig(watermarking_config=ow.WatermarkingConfig(seeding_scheme="both"))
    with pytest.raises(ValueError, match="sampling_table_size must be at most 2\\*\\*24"):
        GenerationConfig(watermarking_config=ow.SynthIDTextWatermarkingConfig(3, [1], sampling_table_size=2**25))
    config = ow.WatermarkingConfig.from_dict({"bias": 1.0}, context_width=2, unknown=3)
    assert (config.bias, config.context_width) == (1.0, 2)


@pytest.mark.parametrize("watermark", ["green", "synthid"])
@pytest.mark.filterwarnings("ignore")
def test_build_processors_appends_the_watermark_last_as_the_reference(watermark):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )).eval()
    options = dict(do_sample=True, top_k=10, renormalize_logits=True, eos_token_id=2)
    ours_config = ow.WatermarkingConfig(bias=2.5) if watermark == "green" else ow.SynthIDTextWatermarkingConfig(**SYNTHID)
    theirs_config = transformers.WatermarkingConfig(bias=2.5) if watermark == "green" else \
        transformers.SynthIDTextWatermarkingConfig(**SYNTHID)
    built = []
    original = model._get_logits_processor
    model._get_logits_processor = lambda *a, **k: built.append(original(*a, **k)) or built[-1]
    input_ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))
    out = model.generate(input_ids, max_new_tokens=1, pad_token_id=0, output_scores=True, output_logits=True,
                         return_dict_in_generate=True, watermarking_config=theirs_config, **options)
    ours = of.build_processors(SimpleNamespace(watermarking_config=ours_config, **options), 5, model=model)
    assert [type(p).__name__ for p in ours] == [type(p).__name__ for p in built[0]]
    torch.testing.assert_close(ours(input_ids, out.logits[0]), out.scores[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs the vocabulary size"):
        of.build_processors(SimpleNamespace(watermarking_config=ours_config), 5)

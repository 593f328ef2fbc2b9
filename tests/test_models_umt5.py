"""UMT5 against the reference: tiny random models made by the reference for every head (each block's self-attention
with its own relative position table) load with no warning, give the reference's outputs and losses, save what the
reference loads back, decode with the cache as without it, generate the reference's tokens (greedy and beams), give
a left-padded row what it gives alone, and come back from the Auto classes as the reference's classes.

Two variants: UMT5's checkpoints (gated GELU, their own LM head, no output scaling: config.json says
tie_word_embeddings false) and a config that leaves tie_word_embeddings out (ReLU, the decoder output scaled by
d_model ** -0.5 before the tied head, T5's rule, which UMT5's config keeps and mT5's does not).
"""

import json

import pytest
import torch

import openformers

from encoder_parity import assert_same, load_quietly, outputs_of
from seq2seq_models import cached_steps_and_full_pass, t5_head_inputs

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, dropout_rate=0.0)
VARIANTS = {"umt5": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
            "scaled": dict(feed_forward_proj="relu")}
HEADS = {"Model": "AutoModel", "ForConditionalGeneration": "AutoModelForSeq2SeqLM", "EncoderModel": None,
         "ForSequenceClassification": "AutoModelForSequenceClassification",
         "ForTokenClassification": "AutoModelForTokenClassification",
         "ForQuestionAnswering": "AutoModelForQuestionAnswering"}
CASES = [(variant, head) for variant in VARIANTS for head in HEADS
         if variant == "umt5" or head == "ForConditionalGeneration"]


def reference_model(variant: str, head: str, **overrides):
    """A reference model with random weights, its norms and biases drawn too, and (UMT5's checkpoints) an LM head of
    its own; the position tables drawn large so that each layer's counts."""
    torch.manual_seed(0)
    num_labels = 2 if head == "ForQuestionAnswering" else 3
    config = transformers.UMT5Config(**{**TINY, **VARIANTS[variant], "num_labels": num_labels, **overrides})
    model = getattr(transformers, f"UMT5{head}")(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.normal_(1.0, 0.2)
            elif name.endswith("relative_attention_bias.weight"):
                parameter.normal_(std=1.0)
            elif name.endswith("bias"):
                parameter.normal_(std=0.1)
        if variant == "umt5" and hasattr(model, "lm_head"):
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model


def inputs(head: str) -> dict:
    return t5_head_inputs(head, TINY["vocab_size"])


@pytest.fixture(scope="module", params=CASES, ids=[f"{variant}-{head}" for variant, head in CASES])
def pair(request, tmp_path_factory):
    variant, head = request.param
    reference = reference_model(variant, head)
    folder = tmp_path_factory.mktemp(f"{variant}{head}")
    reference.save_pretrained(folder)
    return head, reference, load_quietly(getattr(openformers, f"UMT5{head}").from_pretrained, folder), folder


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    reference = reference_model("umt5", "ForConditionalGeneration")
    reference.save_pretrained(folder)
    return reference, openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)


@torch.inference_mode()
def test_outputs_and_losses_are_the_reference_s(pair):
    head, reference, ours, _ = pair
    batch = inputs(head)
    mine, theirs = ours(**batch), reference(**batch)
    assert type(mine).__name__ == type(theirs).__name__
    assert_same(outputs_of(mine), outputs_of(theirs))


@torch.inference_mode()
def test_the_reference_loads_what_we_save(pair, tmp_path):
    head, reference, ours, _ = pair
    ours.save_pretrained(tmp_path)
    again, info = getattr(transformers, f"UMT5{head}").from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = inputs(head)
    assert_same(outputs_of(again.eval()(**batch)), outputs_of(reference(**batch)))


def test_the_auto_classes_pick_the_reference_s_class(pair):
    head, reference, _, folder = pair
    if HEADS[head] is None:
        pytest.skip("the reference's encoder-only class has no Auto class of ours")
    loaded = load_quietly(getattr(openformers, HEADS[head]).from_pretrained, folder)
    assert type(loaded).__name__ == type(reference).__name__ == type(
        getattr(transformers, HEADS[head]).from_pretrained(folder)).__name__


def test_every_self_attention_owns_a_position_table(seq2seq):
    _, ours = seq2seq
    tables = {name for name, _ in ours.named_parameters() if name.endswith("relative_attention_bias.weight")}
    assert tables == {f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
                      for stack in ("encoder", "decoder") for i in range(TINY["num_layers"])}


@torch.inference_mode()
def test_a_left_padded_row_gives_what_it_gives_alone(seq2seq):
    """Relative positions: padding on the left moves nothing, in the encoder's outputs and in generation."""
    _, ours = seq2seq
    ids = torch.tensor([[4, 9, 23, 7, 8, 1], [0, 0, 0, 31, 5, 1]])
    mask = (torch.arange(6) >= torch.tensor([[0], [3]])).long()
    decoder_ids = torch.tensor([[0, 5, 7], [0, 3, 3]])
    together = ours(ids, mask, decoder_input_ids=decoder_ids)
    alone = ours(ids[1:, 3:], decoder_input_ids=decoder_ids[1:])
    torch.testing.assert_close(together.logits[1:], alone.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.encoder_last_hidden_state[1:, 3:], alone.encoder_last_hidden_state,
                               atol=1e-5, rtol=1e-5)
    kwargs = dict(max_new_tokens=6, do_sample=False)
    assert torch.equal(ours.generate(ids, attention_mask=mask, **kwargs)[1:], ours.generate(ids[1:, 3:], **kwargs))


@torch.inference_mode()
def test_decoding_with_the_cache_gives_the_full_forward_s_logits(seq2seq):
    _, ours = seq2seq
    batch = inputs("ForConditionalGeneration")
    decoder_ids = torch.tensor([[0, 5, 7, 9, 11], [0, 3, 3, 8, 2]])
    steps, full = cached_steps_and_full_pass(ours, batch["input_ids"], batch["attention_mask"], decoder_ids)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2)],
                         ids=["greedy", "beams", "two-returned"])
@torch.inference_mode()
def test_generation_matches_reference(seq2seq, options):
    reference, ours = seq2seq
    batch = inputs("EncoderModel")
    kwargs = dict(max_new_tokens=10, do_sample=False, **options)
    assert torch.equal(ours.generate(**batch, **kwargs), reference.generate(**batch, **kwargs))


def test_the_config_derives_what_the_reference_derives():
    for options in ({}, {"tie_word_embeddings": False}, {"feed_forward_proj": "relu", "d_model": 16}):
        ours, theirs = openformers.UMT5Config(**options), transformers.UMT5Config(**options)
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
                     "layer_norm_epsilon", "initializer_factor", "dense_act_fn", "is_gated_act",
                     "scale_decoder_outputs", "tie_word_embeddings", "pad_token_id", "eos_token_id",
                     "decoder_start_token_id", "classifier_dropout", "hidden_size", "num_attention_heads",
                     "head_dim"):
            assert getattr(ours, name) == getattr(theirs, name), (options, name)
    assert openformers.AutoConfig.for_model("umt5").model_type == "umt5"
    for field, value in (("feed_forward_proj", "gated-gelu-fast"), ("num_heads", 0), ("dropout_rate", 1.5)):
        with pytest.raises(ValueError, match=field):
            openformers.UMT5Config(**{field: value})


def test_auto_tokenizer_picks_the_reference_s_class_for_a_umt5_folder(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["The quick brown fox jumps over the lazy dog.", "Hello world, how are you?"] * 10),
        model_prefix=str(tmp_path / "spiece"), vocab_size=40, model_type="unigram", minloglevel=2,
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    folder = tmp_path / "umt5"
    transformers.T5Tokenizer(vocab_file=str(tmp_path / "spiece.model"), extra_ids=0).save_pretrained(folder)
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "T5Tokenizer"
    (folder / "config.json").write_text(json.dumps({"model_type": "umt5"}))  # as umt5-small's folder
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(theirs).__name__ == "TokenizersBackend"  # the class registered for umt5
    assert ours("Hello world").input_ids == theirs("Hello world").input_ids

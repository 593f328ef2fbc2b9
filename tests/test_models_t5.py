"""T5, Flan-T5 and mT5 against the reference: tiny random models made by the reference for every head load with no
warning, give the reference's outputs and losses (also attention weights and hidden states) on a padded batch and
each row alone, save what the reference loads back, and come back from the Auto classes as the reference's class.

Three variants: the original T5 (ReLU feed-forward, tied LM head, decoder output scaled), T5 v1.1 / Flan-T5
(gated GELU, its own LM head, no scaling) and mT5 (gated GELU, its own head, never scaled).
"""

import warnings

import pytest
import torch

import openformers
from openformers.generation import DynamicCache, EncoderDecoderCache

from seq2seq_models import t5_head_inputs

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, decoder_start_token_id=0)
VARIANTS = {
    "t5": ("T5", dict(feed_forward_proj="relu")),
    "flan-t5": ("T5", dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "mt5": ("MT5", dict(feed_forward_proj="gated-silu")),
}
HEADS = {  # the class's name after the family prefix -> the Auto class that picks it
    "Model": "AutoModel",
    "ForConditionalGeneration": "AutoModelForSeq2SeqLM",
    "EncoderModel": None,
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
}
CASES = [(variant, head) for variant in VARIANTS for head in HEADS
         if variant != "flan-t5" or head == "ForConditionalGeneration"]


def reference_model(variant: str, head: str, **overrides):
    """A reference model with random weights, its norms and biases drawn too (the reference sets them to 1 and 0),
    and, for the untied variants, an LM head of its own."""
    family, options = VARIANTS[variant]
    torch.manual_seed(0)
    num_labels = 2 if head == "ForQuestionAnswering" else 3  # the reference's QA head has num_labels outputs
    config = getattr(transformers, f"{family}Config")(**{**TINY, **options, "num_labels": num_labels, **overrides})
    model = getattr(transformers, f"{family}{head}")(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.normal_(1.0, 0.2)
            elif name.endswith("bias") and "relative_attention_bias" not in name:
                parameter.normal_(std=0.1)
        if variant != "t5" and hasattr(model, "lm_head"):
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model


def inputs(head: str) -> dict:
    return t5_head_inputs(head, TINY["vocab_size"])


def load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


def tensors(output) -> dict:
    return {name: value for name, value in output.items() if torch.is_tensor(value)}


def assert_close(ours: dict, theirs: dict, atol=1e-4):
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=atol, rtol=atol, msg=name)


@pytest.fixture(scope="module", params=CASES, ids=[f"{variant}-{head}" for variant, head in CASES])
def pair(request, tmp_path_factory):
    variant, head = request.param
    reference = reference_model(variant, head)
    folder = tmp_path_factory.mktemp(f"{variant}{head}")
    reference.save_pretrained(folder)
    family = VARIANTS[variant][0]
    ours = load_quietly(getattr(openformers, f"{family}{head}").from_pretrained, folder)
    return variant, head, reference, ours, folder


def test_outputs_and_losses_are_the_reference_s(pair):
    _, head, reference, ours, _ = pair
    batch = inputs(head)
    with torch.no_grad():
        theirs = reference(**batch)
        mine = ours(**batch)
    assert_close(tensors(mine), tensors(theirs))
    assert type(mine).__name__ == type(theirs).__name__


def test_a_padded_batch_gives_each_row_s_own_outputs(pair):
    _, head, _, ours, _ = pair
    batch = {k: v for k, v in inputs(head).items() if k in ("input_ids", "attention_mask")}
    if head in ("Model", "ForConditionalGeneration"):
        batch["decoder_input_ids"] = torch.tensor([[0, 5, 7, 9], [0, 3, 3, 8]])
    alone = {k: v[1:] if k == "decoder_input_ids" else v[1:, :6] for k, v in batch.items()}
    with torch.no_grad():
        together, alone = ours(**batch), ours(**alone)
    # Outputs over the input's positions (the encoder's, or a decoder reading the input shifted right) are compared
    # over the row's real tokens; the seq2seq decoders read their own decoder_input_ids.
    own_decoder_ids = head in ("Model", "ForConditionalGeneration")
    for name, value in tensors(alone).items():
        per_position = value.dim() > 1 and (name == "encoder_last_hidden_state" or not own_decoder_ids)
        expected = together[name][1:, :6] if per_position else together[name][1:]
        torch.testing.assert_close(expected, value, atol=1e-5, rtol=1e-5, msg=name)


def test_the_reference_loads_what_we_save(pair, tmp_path):
    variant, head, reference, ours, _ = pair
    ours.save_pretrained(tmp_path)
    family = VARIANTS[variant][0]
    again, info = getattr(transformers, f"{family}{head}").from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = inputs(head)
    with torch.no_grad():
        assert_close(tensors(again.eval()(**batch)), tensors(reference(**batch)))


def test_the_auto_classes_pick_the_reference_s_class(pair):
    variant, head, reference, _, folder = pair
    auto = HEADS[head]
    if auto is None:
        pytest.skip("the reference's encoder-only class has no Auto class of ours")
    loaded = load_quietly(getattr(openformers, auto).from_pretrained, folder)
    assert type(loaded).__name__ == type(reference).__name__ == type(getattr(transformers, auto).from_pretrained(
        folder)).__name__


def test_attentions_and_hidden_states_are_the_reference_s(tmp_path):
    reference = reference_model("flan-t5", "ForConditionalGeneration", num_decoder_layers=3)
    reference.save_pretrained(tmp_path)
    eager = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ours = load_quietly(openformers.T5ForConditionalGeneration.from_pretrained, tmp_path)
    batch = inputs("ForConditionalGeneration")
    with torch.no_grad():
        theirs = eager(**batch, output_attentions=True, output_hidden_states=True)
        mine = ours(**batch, output_attentions=True, output_hidden_states=True)
    for name in ("decoder_hidden_states", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                 "encoder_attentions"):
        assert len(mine[name]) == len(theirs[name]), name
        for layer, (a, b) in enumerate(zip(mine[name], theirs[name])):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{name}[{layer}]")
    torch.testing.assert_close(mine.logits, theirs.logits, atol=1e-4, rtol=1e-4)


def test_decoding_with_the_cache_gives_the_full_forward_s_logits(tmp_path):
    reference = reference_model("mt5", "ForConditionalGeneration")
    reference.save_pretrained(tmp_path)
    ours = openformers.MT5ForConditionalGeneration.from_pretrained(tmp_path)
    batch = inputs("ForConditionalGeneration")
    decoder_ids = torch.tensor([[0, 5, 7, 9, 11], [0, 3, 3, 8, 2]])
    with torch.no_grad():
        full = ours(batch["input_ids"], batch["attention_mask"], decoder_ids).logits
        encoded = ours.get_encoder()(batch["input_ids"], attention_mask=batch["attention_mask"])
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        steps = [ours(attention_mask=batch["attention_mask"], decoder_input_ids=decoder_ids[:, :2],
                      encoder_outputs=encoded, past_key_values=cache).logits]
        for t in range(2, 5):
            out = ours(attention_mask=batch["attention_mask"], decoder_input_ids=decoder_ids[:, t : t + 1],
                       encoder_outputs=encoded, past_key_values=cache, logits_to_keep=1)
            steps.append(out.logits)
    assert out.past_key_values is cache and cache.get_seq_length() == 5 and cache.is_updated == {0: True, 1: True}
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_flan_t5_and_mt5_keep_their_own_lm_head_and_t5_ties_it(variant, tmp_path):
    family = VARIANTS[variant][0]
    reference_model(variant, "ForConditionalGeneration").save_pretrained(tmp_path)
    ours = load_quietly(getattr(openformers, f"{family}ForConditionalGeneration").from_pretrained, tmp_path)
    assert (ours.lm_head.weight is ours.shared.weight) == (variant == "t5")
    assert ours.encoder.embed_tokens.weight is ours.shared.weight is ours.decoder.embed_tokens.weight
    assert ours.get_output_embeddings() is ours.lm_head and ours.get_input_embeddings() is ours.shared
    ours.resize_token_embeddings(104)
    assert ours.encoder.embed_tokens.weight is ours.shared.weight and ours.lm_head.weight.shape[0] == 104
    assert (ours.lm_head.weight is ours.shared.weight) == (variant == "t5")


def test_the_encoder_alone_loads_from_a_full_checkpoint(tmp_path):
    reference = reference_model("t5", "ForConditionalGeneration")
    reference.save_pretrained(tmp_path)
    encoder = load_quietly(openformers.T5EncoderModel.from_pretrained, tmp_path)
    batch = inputs("EncoderModel")
    with torch.no_grad():
        expected = reference.get_encoder()(**batch).last_hidden_state
        torch.testing.assert_close(encoder(**batch).last_hidden_state, expected, atol=1e-5, rtol=1e-5)


def test_a_classifier_starts_from_a_seq2seq_checkpoint(tmp_path):
    reference_model("t5", "ForConditionalGeneration").save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="classification_head"):
        model = openformers.T5ForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert model.classification_head.out_proj.out_features == 4


def test_the_config_derives_what_the_reference_derives():
    for options in ({}, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}, {"d_model": 16}):
        ours, theirs = openformers.T5Config(**options), transformers.T5Config(**options)
        for name in ("dense_act_fn", "is_gated_act", "scale_decoder_outputs", "tie_word_embeddings",
                     "num_decoder_layers", "hidden_size", "num_attention_heads", "head_dim"):
            assert getattr(ours, name) == getattr(theirs, name), name
    mt5 = openformers.MT5Config()
    assert (mt5.vocab_size, mt5.dense_act_fn, mt5.decoder_start_token_id) == (250112, "gelu_new", 0)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        openformers.T5Config(feed_forward_proj="gated-gelu-fast")
    with pytest.raises(ValueError, match="feed_forward_proj"):
        openformers.T5Config(feed_forward_proj="mish")


def test_labels_without_a_decoder_start_id_are_refused():
    config = openformers.T5Config(**{k: v for k, v in TINY.items() if k != "decoder_start_token_id"})
    model = openformers.T5ForConditionalGeneration(config)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model(torch.tensor([[4, 5]]), labels=torch.tensor([[6, 7]]))
    with pytest.raises(TypeError, match="EncoderDecoderCache"):
        model(torch.tensor([[4, 5]]), decoder_input_ids=torch.tensor([[0]]), past_key_values=DynamicCache())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_gives_the_reference_s_loss_and_gradients(tmp_path, checkpointing):
    reference = reference_model("flan-t5", "ForConditionalGeneration", dropout_rate=0.0)
    reference.save_pretrained(tmp_path)
    ours = openformers.T5ForConditionalGeneration.from_pretrained(tmp_path)
    reference.train(), ours.train()
    if checkpointing:
        ours.gradient_checkpointing_enable()
    batch = inputs("ForConditionalGeneration")
    reference(**batch).loss.backward()
    out = ours(**batch)
    out.loss.backward()
    assert out.past_key_values is None if checkpointing else isinstance(out.past_key_values, EncoderDecoderCache)
    theirs = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_float16_keeps_the_feed_forward_output_in_float32_as_the_reference(tmp_path):
    reference_model("flan-t5", "ForConditionalGeneration").save_pretrained(tmp_path)
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float16).eval()
    ours = load_quietly(lambda folder: openformers.T5ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float16), tmp_path)
    assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert ours.shared.weight.dtype == ours.lm_head.weight.dtype == torch.float16
    batch = inputs("ForConditionalGeneration")
    with torch.no_grad():
        expected, got = theirs(**batch), ours(**batch)
    assert got.logits.dtype == expected.logits.dtype == torch.float16
    torch.testing.assert_close(got.logits, expected.logits, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got.loss, expected.loss, atol=2e-3, rtol=2e-3, check_dtype=False)  # ours in float32
    bf16 = openformers.T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf16.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16  # float16 only

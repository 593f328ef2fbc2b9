"""MPNet against the reference: a tiny random model made by the reference for every head loads with no warning,
gives the reference's outputs and losses on a padded batch and each row alone (relative-position bias included),
saves what the reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import tokenizers
import torch

import openformers
from openformers import configs
from openformers.models.mpnet import relative_position_buckets

from encoder_parity import (
    assert_corpus_parity,
    assert_gradients_match,
    assert_pipeline_matches,
    assert_same,
    assert_saved_both_ways,
    draw_weights,
    load_quietly,
    outputs_of,
)

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64,
)
PAD = 1
HEADS = {  # the reference's class -> the Auto class that picks it
    "MPNetModel": "AutoModel",
    "MPNetForMaskedLM": "AutoModelForMaskedLM",
    "MPNetForSequenceClassification": "AutoModelForSequenceClassification",
    "MPNetForTokenClassification": "AutoModelForTokenClassification",
    "MPNetForQuestionAnswering": "AutoModelForQuestionAnswering",
    "MPNetForMultipleChoice": "AutoModelForMultipleChoice",
}
PER_SEQUENCE = ("MPNetForSequenceClassification", "MPNetForMultipleChoice")


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name == "MPNetForQuestionAnswering" else 3
    config = transformers.MPNetConfig(**{**TINY, "num_labels": num_labels, **overrides})
    return draw_weights(getattr(transformers, name)(config).eval(), "relative_attention_bias")  # a bias that matters


def _inputs(name, length=10) -> dict:
    """Two rows, the second right-padded with <pad> (id 1), with every label the head takes."""
    shape = (2, 3, length) if name == "MPNetForMultipleChoice" else (2, length)
    ids = torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, ..., 7:], mask[1, ..., 7:] = PAD, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "MPNetForMaskedLM":
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {**inputs, "labels": labels}
    if name in PER_SEQUENCE:
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "MPNetForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "MPNetForQuestionAnswering":
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    return inputs


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    ours, theirs = model(**inputs), reference(**inputs)
    assert type(ours).__name__ == type(theirs).__name__
    assert_same(outputs_of(ours), outputs_of(theirs))
    as_tuples = model(**inputs, return_dict=False), reference(**inputs, return_dict=False)
    assert [tuple(value.shape) for value in as_tuples[0]] == [tuple(value.shape) for value in as_tuples[1]]


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask")}
    batched = outputs_of(model(**inputs))
    length = 7  # the second row's real tokens
    alone = outputs_of(model(inputs["input_ids"][1:, ..., :length]))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in PER_SEQUENCE and key != "pooler_output":
            row = row[:, :length]  # per-token outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    theirs = load_quietly(getattr(transformers, HEADS[name]).from_pretrained, tmp_path).eval()
    ours = load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    assert type(theirs).__name__ == type(ours).__name__ == name
    inputs = _inputs(name)
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_reference(tiny):
    name, _, reference, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask")}
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_token_type_ids_are_ignored_as_the_reference_does(tiny):
    """A BERT-style tokenizer's token_type_ids change nothing (MPNet has no token types)."""
    name, _, reference, model = tiny
    inputs = _inputs(name)
    token_types = (torch.arange(inputs["input_ids"].shape[-1]) >= 5).long().expand_as(inputs["input_ids"])
    assert_same(outputs_of(model(**inputs, token_type_ids=token_types)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_inputs_embeds_give_the_referenceoutputs_of(tiny):
    """Given embeddings, every token counts as real when placing positions, as in the reference."""
    name, _, reference, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k != "input_ids"}
    embeds = model.get_input_embeddings()(_inputs(name)["input_ids"])
    ours, theirs = model(inputs_embeds=embeds, **inputs), reference(inputs_embeds=embeds, **inputs)
    assert_same(outputs_of(ours), outputs_of(theirs))


@torch.inference_mode()
def test_far_apart_tokens_fall_in_the_reference_log_buckets(tmp_path):
    """Offsets past 8 are bucketed on a log scale up to 128, and farther ones share the last bucket."""
    T = 150
    _reference("MPNetModel", max_position_embeddings=T + 2).save_pretrained(tmp_path)
    reference = transformers.MPNetModel.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.MPNetModel.from_pretrained, tmp_path)
    theirs = reference.encoder.relative_position_bucket(torch.arange(T)[None, :] - torch.arange(T)[:, None])
    assert torch.equal(relative_position_buckets(T, torch.device("cpu")), theirs)
    ids = torch.randint(3, TINY["vocab_size"], (1, T), generator=torch.Generator().manual_seed(2))
    assert_same(outputs_of(model(ids)), outputs_of(reference(ids)))


def test_masked_lm_from_config_ties_the_decoder_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.MPNetConfig(**TINY))
    assert model.lm_head.decoder.weight is model.mpnet.embeddings.word_embeddings.weight
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert model.mpnet.pooler is None and not model.lm_head.bias.any()
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


@torch.inference_mode()
def test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways(tmp_path):
    _reference("MPNetForMaskedLM", tie_word_embeddings=False).save_pretrained(tmp_path / "theirs")
    reference = transformers.MPNetForMaskedLM.from_pretrained(tmp_path / "theirs").eval()
    model = load_quietly(openformers.MPNetForMaskedLM.from_pretrained, tmp_path / "theirs")
    inputs = _inputs("MPNetForMaskedLM")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))
    model.save_pretrained(tmp_path / "ours")
    again = load_quietly(transformers.MPNetForMaskedLM.from_pretrained, tmp_path / "ours").eval()
    assert_same(outputs_of(again(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)


def test_config_defaults_and_validation():
    config, reference = configs.MPNetConfig(), transformers.MPNetConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "relative_attention_num_buckets", "pad_token_id",
                 "bos_token_id", "eos_token_id", "layer_norm_eps", "max_position_embeddings"):
        assert getattr(config, name) == getattr(reference, name), name
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        configs.MPNetConfig(relative_attention_num_buckets=16)
    with pytest.raises(ValueError, match="hidden_size"):
        configs.MPNetConfig(hidden_size=30, num_attention_heads=4)


def test_every_head_drops_out_by_hidden_dropout_prob():
    config = configs.MPNetConfig(**TINY, hidden_dropout_prob=0.3, classifier_dropout=0.7)
    assert openformers.MPNetForTokenClassification(config).dropout.p == 0.3
    assert openformers.MPNetForMultipleChoice(config).dropout.p == 0.3
    assert openformers.MPNetForSequenceClassification(config).classifier.dropout.p == 0.3


def test_encoder_refuses_a_cache_and_overlong_inputs():
    model = openformers.AutoModel.from_config(configs.MPNetConfig(**TINY))
    with pytest.raises(ValueError, match="past_key_values"):
        model(torch.tensor([[5, 6]]), past_key_values=object())
    with pytest.raises(ValueError, match="truncate"):
        model(torch.full((1, TINY["max_position_embeddings"] - 1), 5))


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(tmp_path, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient (the shared relative-position
    table's included) are the reference's."""
    name = "MPNetForSequenceClassification"
    _reference(name, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(tmp_path)
    reference = transformers.MPNetForSequenceClassification.from_pretrained(tmp_path).train()
    model = openformers.MPNetForSequenceClassification.from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    assert_gradients_match(model, reference, _inputs(name))


# MPNetTokenizer: a WordPiece vocabulary trained here with `tokenizers` on a sample of the project's corpus, laid out
# as MPNet's (fairseq's <s> <pad> </s> <unk> first, <mask> last), read from vocab.txt and from the tokenizer.json the
# reference writes: the reference's ids on the corpus, offsets and decoded text on a part of it; and the pipelines.


@pytest.fixture(scope="module")
def mpnet_tokenizer_folders(tmp_path_factory):
    from test_tokenizers_corpus import CORPUS
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    trained = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer = normalizers.BertNormalizer(lowercase=True)
    trained.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]
    trained.train_from_iterator(CORPUS[::8], trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials,
                                                                       show_progress=False))
    source = tmp_path_factory.mktemp("mpnet-vocab")
    vocab = sorted(trained.get_vocab(), key=trained.get_vocab().get)
    (source / "vocab.txt").write_text("".join(f"{token}\n" for token in [*vocab, "<mask>"]), encoding="utf-8")
    saved = tmp_path_factory.mktemp("mpnet-tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.MPNetTokenizer.from_pretrained(source).save_pretrained(saved)
    return source, saved


@pytest.mark.parametrize("files, every", [("tokenizer.json", 1), ("vocab.txt", 4)])
def test_tokenizer_matches_the_reference_on_the_corpus(mpnet_tokenizer_folders, files, every):
    folder = mpnet_tokenizer_folders[0 if files == "vocab.txt" else 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.MPNetTokenizer.from_pretrained(folder)
    ours = (openformers.AutoTokenizer if files == "tokenizer.json" else openformers.MPNetTokenizer).from_pretrained(
        folder
    )
    assert type(ours).__name__ == "MPNetTokenizer" and ours.model_input_names == ["input_ids", "attention_mask"]
    for text, pair in [("Paris is the <mask> of France.", None), ("The cat sat.", "Les chats dorment!")]:
        assert dict(ours(text, pair)) == dict(reference(text, pair))  # <mask> takes its space; RoBERTa's pairs
    assert_corpus_parity(ours, reference, every)


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("MPNetForMaskedLM", ["Paris is the <mask> of France.", "The <mask> sat on the mat."]),
    "text-classification": ("MPNetForSequenceClassification", ["I love this movie.", "Der Hund spielt."]),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, mpnet_tokenizer_folders, tmp_path):
    shutil.copytree(mpnet_tokenizer_folders[1], tmp_path, dirs_exist_ok=True)
    name, inputs = PIPELINE_HEADS[task]
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    _reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)


@pytest.mark.parametrize(
    "options", [{}, {"do_lower_case": False}, {"strip_accents": True, "tokenize_chinese_chars": False}],
    ids=["defaults", "cased", "accents-stripped-no-cjk-split"],
)
def test_tokenizer_options_and_saving_both_ways(mpnet_tokenizer_folders, options, tmp_path):
    """The options rebuild BERT's normalizer as the reference's; each library reads what the other saves and encodes
    as before, <mask> still taking the space before it."""
    from test_tokenizers_corpus import CORPUS

    documents = [*CORPUS[::40], "Ünïcödé TEXT 日本語", "Paris is the <mask> of France.", "a<mask>  <mask>b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.MPNetTokenizer.from_pretrained(mpnet_tokenizer_folders[1], **options)
    ours = openformers.MPNetTokenizer.from_pretrained(mpnet_tokenizer_folders[1], **options)
    assert_saved_both_ways(ours, reference, documents, tmp_path, "MPNetTokenizer")


def test_tokenizer_built_from_its_vocabulary_file_encodes_as_from_the_folder(mpnet_tokenizer_folders):
    source = mpnet_tokenizer_folders[0]
    built = openformers.MPNetTokenizer(vocab_file=str(source / "vocab.txt"))
    loaded = openformers.MPNetTokenizer.from_pretrained(source)
    texts = ["Paris is the <mask> of France.", ("The cat sat.", "Les chats dorment!")]
    for text in texts:
        pair = text if isinstance(text, tuple) else (text, None)
        assert dict(built(*pair)) == dict(loaded(*pair))
    assert (built.cls_token, built.sep_token, built.unk_token, built.mask_token) == ("<s>", "</s>", "[UNK]", "<mask>")


def test_auto_tokenizer_picks_mpnet_from_the_model_type(mpnet_tokenizer_folders, tmp_path):
    """A folder with vocab.txt and an mpnet config.json: the reference's class, ids and inputs."""
    shutil.copy(mpnet_tokenizer_folders[0] / "vocab.txt", tmp_path)
    transformers.MPNetConfig(**TINY).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "MPNetTokenizer"
    assert dict(ours("Hello <mask> world", "second")) == dict(reference("Hello <mask> world", "second"))


@torch.inference_mode()
def test_bfloat16_logits_are_the_references_within_its_rounding(tmp_path):
    _reference("MPNetForMaskedLM").save_pretrained(tmp_path)
    reference = transformers.MPNetForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = load_quietly(lambda folder: openformers.MPNetForMaskedLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    assert model.dtype == torch.bfloat16
    inputs = {k: v for k, v in _inputs("MPNetForMaskedLM").items() if k != "labels"}
    ours, theirs = model(**inputs).logits, reference(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-2, rtol=1e-2)

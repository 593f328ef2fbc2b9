"""ALBERT against the reference: a tiny random model made by the reference for every head (layers shared in groups,
factorized embeddings) loads with no warning, gives the reference's outputs and losses on a padded batch and each
row alone, saves what the reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import torch

import openformers
from openformers import configs

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

# Three steps through two groups of two layers: steps 0 and 1 share group 0, step 2 runs group 1.
TINY = dict(
    vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2,
    num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
)
HEADS = {  # the reference's class -> the Auto class that picks it
    "AlbertModel": "AutoModel",
    "AlbertForPreTraining": "AutoModelForPreTraining",
    "AlbertForMaskedLM": "AutoModelForMaskedLM",
    "AlbertForSequenceClassification": "AutoModelForSequenceClassification",
    "AlbertForTokenClassification": "AutoModelForTokenClassification",
    "AlbertForQuestionAnswering": "AutoModelForQuestionAnswering",
    "AlbertForMultipleChoice": "AutoModelForMultipleChoice",
}
PER_SEQUENCE = ("AlbertForSequenceClassification", "AlbertForMultipleChoice")


def _reference(name, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if name in ("AlbertForQuestionAnswering", "AlbertForPreTraining") else 3
    config = transformers.AlbertConfig(**{**TINY, "num_labels": num_labels, **overrides})
    return draw_weights(getattr(transformers, name)(config).eval())


def _inputs(name) -> dict:
    """Two rows, the second right-padded, two segments of token types, and every label the head takes."""
    shape = (2, 3, 10) if name == "AlbertForMultipleChoice" else (2, 10)
    ids = torch.randint(5, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, ..., 7:], mask[1, ..., 7:] = 0, 0
    token_types = (torch.arange(shape[-1]) >= 4).long().expand(shape)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}
    if name in ("AlbertForMaskedLM", "AlbertForPreTraining"):
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        order = {"sentence_order_label": torch.tensor([1, 0])} if name == "AlbertForPreTraining" else {}
        return {**inputs, "labels": labels, **order}
    if name in PER_SEQUENCE:
        return {**inputs, "labels": torch.tensor([2, 0])}
    if name == "AlbertForTokenClassification":
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if name == "AlbertForQuestionAnswering":
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
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    batched = outputs_of(model(**inputs))
    length = 7  # the second row's real tokens
    row = {key: value[1:, ..., :length] for key, value in inputs.items() if key != "attention_mask"}
    alone = outputs_of(model(**row))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in PER_SEQUENCE and key not in ("pooler_output", "sop_logits"):
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
def test_hidden_states_and_attention_weights_match_reference(tmp_path):
    """One hidden state per layer step (a shared layer counts each time it runs), after the embeddings' projection."""
    reference = _reference("AlbertModel", attn_implementation="eager")
    reference.save_pretrained(tmp_path)
    model = openformers.AutoModel.from_pretrained(tmp_path)
    inputs = _inputs("AlbertModel")
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    steps = TINY["num_hidden_layers"] * TINY["inner_group_num"]
    assert len(ours.hidden_states) == len(theirs.hidden_states) == steps + 1
    assert len(ours.attentions) == len(theirs.attentions) == steps
    torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("depth, groups", [(4, 4), (5, 2), (2, 1)])
@torch.inference_mode()
def test_layer_groups_are_shared_across_depth_as_the_reference(tmp_path, depth, groups):
    _reference("AlbertModel", num_hidden_layers=depth, num_hidden_groups=groups, inner_group_num=1).save_pretrained(
        tmp_path
    )
    reference = transformers.AlbertModel.from_pretrained(tmp_path).eval()
    model = load_quietly(openformers.AlbertModel.from_pretrained, tmp_path)
    assert len(model.encoder.albert_layer_groups) == groups
    inputs = _inputs("AlbertModel")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))


@torch.inference_mode()
def test_inputs_embeds_give_what_the_ids_give(tiny):
    name, _, reference, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k != "input_ids"}
    embeds = model.get_input_embeddings()(_inputs(name)["input_ids"])  # (..., T, embedding_size)
    ours, theirs = model(inputs_embeds=embeds, **inputs), reference(inputs_embeds=embeds, **inputs)
    assert_same(outputs_of(ours), outputs_of(theirs))


def test_masked_lm_from_config_ties_the_decoder_to_the_embeddings():
    model = openformers.AutoModelForMaskedLM.from_config(configs.AlbertConfig(**TINY))
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    assert model.predictions.decoder.bias is model.predictions.bias
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"])
    assert model.albert.pooler is None and not model.predictions.bias.any()


@torch.inference_mode()
def test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways(tmp_path):
    """With tie_word_embeddings=False the decoder predicts with its own bias; predictions.bias is kept, unused."""
    _reference("AlbertForMaskedLM", tie_word_embeddings=False).save_pretrained(tmp_path / "theirs")
    reference = transformers.AlbertForMaskedLM.from_pretrained(tmp_path / "theirs").eval()
    model = load_quietly(openformers.AlbertForMaskedLM.from_pretrained, tmp_path / "theirs")
    assert model.predictions.decoder.bias is not model.predictions.bias
    inputs = _inputs("AlbertForMaskedLM")
    assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))
    model.save_pretrained(tmp_path / "ours")
    again = load_quietly(transformers.AlbertForMaskedLM.from_pretrained, tmp_path / "ours").eval()
    assert_same(outputs_of(again(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)


def test_resizing_the_vocabulary_resizes_the_tied_decoder_and_its_bias():
    model = openformers.AlbertForMaskedLM(configs.AlbertConfig(**TINY))
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    assert model.predictions.decoder.bias is model.predictions.bias
    assert model.predictions.bias.shape == (TINY["vocab_size"] + 5,)
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, TINY["vocab_size"] + 5)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_hidden_groups"):
        configs.AlbertConfig(num_hidden_groups=0)
    with pytest.raises(ValueError, match="hidden_size"):
        configs.AlbertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        configs.AlbertConfig(hidden_act="mish")
    config = configs.AlbertConfig()
    reference = transformers.AlbertConfig()
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_hidden_groups",
                 "num_attention_heads", "intermediate_size", "inner_group_num", "hidden_act", "hidden_dropout_prob",
                 "classifier_dropout_prob", "pad_token_id", "bos_token_id", "eos_token_id", "layer_norm_eps"):
        assert getattr(config, name) == getattr(reference, name), name


def test_dropouts_follow_the_reference_fields():
    config = configs.AlbertConfig(**TINY, hidden_dropout_prob=0.2, classifier_dropout_prob=0.3)
    for head in ("AlbertForSequenceClassification", "AlbertForTokenClassification", "AlbertForMultipleChoice"):
        assert getattr(openformers, head)(config).dropout.p == 0.3
    assert openformers.AlbertForPreTraining(config).sop_classifier.dropout.p == 0.3
    config = configs.AlbertConfig(**TINY, hidden_dropout_prob=0.2, classifier_dropout_prob=None)
    assert openformers.AlbertForTokenClassification(config).dropout.p == 0.2


def test_encoder_refuses_a_cache_and_overlong_inputs():
    model = openformers.AutoModel.from_config(configs.AlbertConfig(**TINY))
    with pytest.raises(ValueError, match="past_key_values"):
        model(torch.tensor([[5, 6]]), past_key_values=object())
    with pytest.raises(ValueError, match="truncate"):
        model(torch.full((1, TINY["max_position_embeddings"] + 1), 5))


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_training_gradients_match_reference(tmp_path, checkpointing):
    """Without dropout, one training step's loss and every parameter's gradient (shared layers summed over the
    steps that run them) are the reference's."""
    name = "AlbertForPreTraining"
    _reference(name, classifier_dropout_prob=0.0).save_pretrained(tmp_path)
    reference = transformers.AlbertForPreTraining.from_pretrained(tmp_path).train()
    model = openformers.AlbertForPreTraining.from_pretrained(tmp_path).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    assert_gradients_match(model, reference, _inputs(name))


# AlbertTokenizer: a SentencePiece unigram model trained here on a sample of the project's corpus (with its NFKC
# rules, which the reference keeps as a Precompiled normalizer), read from spiece.model and from the tokenizer.json
# the reference writes, gives the reference's ids on the corpus (tests/test_tokenizers_corpus.py), offsets and decoded
# text on a part of it.


@pytest.fixture(scope="module")
def albert_tokenizer_folders(tmp_path_factory):
    sentencepiece = pytest.importorskip("sentencepiece")
    from test_tokenizers_corpus import CORPUS

    source = tmp_path_factory.mktemp("spiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS[::20]), model_prefix=str(source / "spiece"), model_type="unigram",
        vocab_size=1000, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
    )
    saved = tmp_path_factory.mktemp("albert-tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AlbertTokenizer.from_pretrained(source).save_pretrained(saved)
    assert (saved / "tokenizer.json").exists() and not (saved / "spiece.model").exists()
    return source, saved


@pytest.mark.parametrize("files, every", [("tokenizer.json", 1), ("spiece.model", 4)])
def test_tokenizer_matches_the_reference_on_the_corpus(albert_tokenizer_folders, files, every):
    folder = albert_tokenizer_folders[0 if files == "spiece.model" else 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AlbertTokenizer.from_pretrained(folder)
    ours = (openformers.AutoTokenizer if files == "tokenizer.json" else openformers.AlbertTokenizer).from_pretrained(
        folder
    )
    assert type(ours).__name__ == "AlbertTokenizer" and ours.model_input_names == ["input_ids", "attention_mask"]
    assert_corpus_parity(ours, reference, every)


PIPELINE_HEADS = {  # task -> (the reference's class, its inputs)
    "fill-mask": ("AlbertForMaskedLM", ["Paris is the [MASK] of France.", "The [MASK] sat on the mat."]),
    "text-classification": ("AlbertForSequenceClassification", ["I love this movie.", "Der Hund spielt."]),
    "token-classification": ("AlbertForTokenClassification", "Les chats dorment sur le canapé."),
}


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, albert_tokenizer_folders, tmp_path):
    shutil.copytree(albert_tokenizer_folders[1], tmp_path, dirs_exist_ok=True)
    name, inputs = PIPELINE_HEADS[task]
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    _reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    assert_pipeline_matches(task, tmp_path, inputs)


@pytest.mark.parametrize("options", [{}, {"keep_accents": True, "do_lower_case": False}, {"add_prefix_space": False}],
                         ids=["defaults", "cased-with-accents", "no-prefix-space"])
def test_tokenizer_options_and_saving_both_ways(albert_tokenizer_folders, options, tmp_path):
    """The options rebuild the normalizer and pre-tokenizer as the reference's; each library reads what the other
    saves and encodes as before (the options travel in tokenizer_config.json)."""
    from test_tokenizers_corpus import CORPUS

    documents = [*CORPUS[::40], "Ünïcödé ``quoted'' TEXT", "  spaced   out  ", "[MASK] eats [MASK]."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AlbertTokenizer.from_pretrained(albert_tokenizer_folders[1], **options)
    ours = openformers.AlbertTokenizer.from_pretrained(albert_tokenizer_folders[1], **options)
    assert_saved_both_ways(ours, reference, documents, tmp_path, "AlbertTokenizer")


def test_tokenizer_built_from_its_sentencepiece_file_encodes_as_from_the_folder(albert_tokenizer_folders):
    """AlbertTokenizer(vocab_file=...) reads the model (the reference 5.x's constructor keeps only the specials)."""
    source = albert_tokenizer_folders[0]
    built = openformers.AlbertTokenizer(vocab_file=str(source / "spiece.model"), keep_accents=True)
    loaded = openformers.AlbertTokenizer.from_pretrained(source, keep_accents=True)
    texts = ["Ünïcödé ``quoted'' TEXT", "The cat sat on the mat.", "[MASK] eats [MASK]."]
    assert built(texts)["input_ids"] == loaded(texts)["input_ids"]
    assert built.convert_ids_to_tokens(built("Hello")["input_ids"])[0] == "[CLS]"


def test_auto_tokenizer_picks_albert_from_the_model_type(albert_tokenizer_folders, tmp_path):
    """A folder with spiece.model and an albert config.json, as older checkpoints are: the reference's class and ids."""
    shutil.copy(albert_tokenizer_folders[0] / "spiece.model", tmp_path)
    transformers.AlbertConfig(**TINY).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "AlbertTokenizer"
    texts = ["Hello world, Ünïcödé ``quoted''.", "[MASK] eats [MASK]."]
    assert ours(texts)["input_ids"] == reference(texts)["input_ids"]


@torch.inference_mode()
def test_bfloat16_logits_are_the_references_within_its_rounding(tmp_path):
    _reference("AlbertForMaskedLM").save_pretrained(tmp_path)
    reference = transformers.AlbertForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = load_quietly(lambda folder: openformers.AlbertForMaskedLM.from_pretrained(folder, dtype=torch.bfloat16), tmp_path)
    assert model.dtype == torch.bfloat16
    inputs = {k: v for k, v in _inputs("AlbertForMaskedLM").items() if k != "labels"}
    ours, theirs = model(**inputs).logits, reference(**inputs).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-2, rtol=1e-2)

"""ALBERT against the reference: a tiny random model made by the reference for every head (layers shared in groups,
factorized embeddings) loads with no warning, gives the reference's outputs and losses on a padded batch and each
row alone, saves what the reference loads back, and comes back from the Auto classes as the reference's class."""

import shutil
import warnings

import pytest
import tokenizers
import torch

import openformers
from openformers import configs

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


def draw_weights(model):
    """The reference initializes biases to zero and norms to one: draw them so that they count."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.1)
            elif "LayerNorm" in name or "layer_norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


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


def _outputs(out) -> dict:
    """The tensors a head returns, by name (the tuples of hidden states left out)."""
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def _assert_same(ours, theirs, atol=1e-4):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=atol, rtol=atol, msg=key)


def _load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name)
    reference.save_pretrained(folder)
    return name, folder, reference, _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    name, _, reference, model = tiny
    assert type(model).__name__ == name and not model.training
    inputs = _inputs(name)
    ours, theirs = model(**inputs), reference(**inputs)
    assert type(ours).__name__ == type(theirs).__name__
    _assert_same(_outputs(ours), _outputs(theirs))
    as_tuples = model(**inputs, return_dict=False), reference(**inputs, return_dict=False)
    assert [tuple(value.shape) for value in as_tuples[0]] == [tuple(value.shape) for value in as_tuples[1]]


@torch.inference_mode()
def test_each_padded_row_gives_what_it_gives_alone(tiny):
    name, _, _, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    batched = _outputs(model(**inputs))
    length = 7  # the second row's real tokens
    row = {key: value[1:, ..., :length] for key, value in inputs.items() if key != "attention_mask"}
    alone = _outputs(model(**row))
    for key, value in alone.items():
        row = batched[key][1:]
        if name not in PER_SEQUENCE and key not in ("pooler_output", "sop_logits"):
            row = row[:, :length]  # per-token outputs (B, T, ...): the padding positions are not compared
        torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    name, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    theirs = _load_quietly(getattr(transformers, HEADS[name]).from_pretrained, tmp_path).eval()
    ours = _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    assert type(theirs).__name__ == type(ours).__name__ == name
    inputs = _inputs(name)
    _assert_same(_outputs(theirs(**inputs)), _outputs(reference(**inputs)), atol=1e-6)
    _assert_same(_outputs(ours(**inputs)), _outputs(model(**inputs)), atol=1e-6)


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
    model = _load_quietly(openformers.AlbertModel.from_pretrained, tmp_path)
    assert len(model.encoder.albert_layer_groups) == groups
    inputs = _inputs("AlbertModel")
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))


@torch.inference_mode()
def test_inputs_embeds_give_what_the_ids_give(tiny):
    name, _, reference, model = tiny
    inputs = {k: v for k, v in _inputs(name).items() if k != "input_ids"}
    embeds = model.get_input_embeddings()(_inputs(name)["input_ids"])  # (..., T, embedding_size)
    _assert_same(_outputs(model(inputs_embeds=embeds, **inputs)), _outputs(reference(inputs_embeds=embeds, **inputs)))


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
    model = _load_quietly(openformers.AlbertForMaskedLM.from_pretrained, tmp_path / "theirs")
    assert model.predictions.decoder.bias is not model.predictions.bias
    inputs = _inputs("AlbertForMaskedLM")
    _assert_same(_outputs(model(**inputs)), _outputs(reference(**inputs)))
    model.save_pretrained(tmp_path / "ours")
    again = _load_quietly(transformers.AlbertForMaskedLM.from_pretrained, tmp_path / "ours").eval()
    _assert_same(_outputs(again(**inputs)), _outputs(reference(**inputs)), atol=1e-6)


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
    inputs = _inputs(name)
    ours, theirs = model(**inputs).loss, reference(**inputs).loss
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    grads = {n: p.grad for n, p in reference.named_parameters()}
    for parameter_name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[parameter_name], atol=1e-5, rtol=1e-4, msg=parameter_name)



# AlbertTokenizer: a SentencePiece unigram model trained here on a sample of the project's corpus (with its NFKC
# rules, which the reference keeps as a Precompiled normalizer), read from spiece.model and from the tokenizer.json
# the reference writes, gives the reference's ids on the corpus (tests/test_tokenizers_corpus.py), offsets and decoded
# text on a part of it.


def assert_corpus_parity(ours, reference, every: int = 1):
    """Ids on every `every`-th document of the corpus, with and without special tokens; offsets and decode (special
    tokens kept and skipped) on a quarter of those. Token strings are not compared: for an unknown piece the
    reference's Unigram gives the text it covers, ours the unknown token."""
    from test_tokenizers_corpus import CORPUS, _assert_rows_equal

    documents = CORPUS[::every]
    backend = tokenizers.Tokenizer.from_str(reference.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    expected = [encoding.ids for encoding in backend.encode_batch(documents, add_special_tokens=True)]
    _assert_rows_equal(ours(documents)["input_ids"], expected, "ids")
    plain = [encoding.ids for encoding in backend.encode_batch(documents, add_special_tokens=False)]
    _assert_rows_equal(ours(documents, add_special_tokens=False)["input_ids"], plain, "ids without specials")
    sample, sample_ids = documents[::4], expected[::4]
    offsets = [encoding.offsets for encoding in backend.encode_batch(sample, add_special_tokens=True)]
    _assert_rows_equal(ours(sample, return_offsets_mapping=True)["offset_mapping"], offsets, "offsets")
    for skip in (False, True):
        _assert_rows_equal(ours.batch_decode(sample_ids, skip_special_tokens=skip),
                           reference.batch_decode(sample_ids, skip_special_tokens=skip), "decode")


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


def _assert_records_close(got, expected):
    if isinstance(expected, (list, dict)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for key in range(len(expected)) if isinstance(expected, list) else expected:
            _assert_records_close(got[key], expected[key])
    elif isinstance(expected, float) or type(expected).__module__ == "numpy":
        assert float(got) == pytest.approx(float(expected), abs=1e-5)
    else:
        assert got == expected


@pytest.mark.parametrize("task", list(PIPELINE_HEADS))
def test_pipelines_with_the_reference_tokenizer_match_reference(task, albert_tokenizer_folders, tmp_path):
    shutil.copytree(albert_tokenizer_folders[1], tmp_path, dirs_exist_ok=True)
    name, inputs = PIPELINE_HEADS[task]
    vocab_size = len(openformers.AutoTokenizer.from_pretrained(tmp_path))
    _reference(name, vocab_size=vocab_size).save_pretrained(tmp_path)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(tmp_path))(inputs)
    _assert_records_close(openformers.pipeline(task, model=tmp_path)(inputs), expected)


@pytest.mark.parametrize("options", [{}, {"keep_accents": True, "do_lower_case": False}, {"add_prefix_space": False}],
                         ids=["defaults", "cased-with-accents", "no-prefix-space"])
def test_tokenizer_options_and_saving_both_ways(albert_tokenizer_folders, options, tmp_path):
    """The options rebuild the normalizer and pre-tokenizer as the reference's; each library reads what the other
    saves and encodes as before (the options travel in tokenizer_config.json)."""
    from test_tokenizers_corpus import CORPUS, _assert_rows_equal

    documents = [*CORPUS[::40], "Ünïcödé ``quoted'' TEXT", "  spaced   out  ", "[MASK] eats [MASK]."]
    folder = albert_tokenizer_folders[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AlbertTokenizer.from_pretrained(folder, **options)
    ours = openformers.AlbertTokenizer.from_pretrained(folder, **options)
    expected = reference(documents)["input_ids"]
    _assert_rows_equal(ours(documents)["input_ids"], expected, "ids")
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_rows_equal(transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")(documents)["input_ids"],
                           expected, "ids of the reference reading ours")
    for saved in ("ours", "theirs"):
        again = openformers.AutoTokenizer.from_pretrained(tmp_path / saved)
        assert type(again).__name__ == "AlbertTokenizer"
        _assert_rows_equal(again(documents)["input_ids"], expected, f"ids of {saved} read back")


def test_tokenizer_built_from_its_sentencepiece_file_encodes_as_from_the_folder(albert_tokenizer_folders):
    """AlbertTokenizer(vocab_file=...) reads the model (the reference 5.x's constructor keeps only the specials)."""
    source = albert_tokenizer_folders[0]
    built = openformers.AlbertTokenizer(vocab_file=str(source / "spiece.model"), keep_accents=True)
    loaded = openformers.AlbertTokenizer.from_pretrained(source, keep_accents=True)
    texts = ["Ünïcödé ``quoted'' TEXT", "The cat sat on the mat.", "[MASK] eats [MASK]."]
    assert built(texts)["input_ids"] == loaded(texts)["input_ids"]
    assert built.convert_ids_to_tokens(built("Hello")["input_ids"])[0] == "[CLS]"

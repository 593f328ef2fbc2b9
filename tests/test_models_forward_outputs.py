"""forward(output_hidden_states=, output_attentions=, return_dict=, use_cache=, cache=, inputs_embeds=) against the
reference, for every family and head: the same hidden states, softmax weights, keys and tuples."""

import pytest
import torch

import openformers
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

LLAMA = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
GPT2 = dict(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
DISTILBERT = dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
NARROW_EMBEDDINGS = dict(BERT, embedding_size=16)  # ALBERT and ELECTRA embed in fewer dimensions, projected up
FAMILIES = {"Llama": ("LlamaConfig", LLAMA), "GPT2": ("GPT2Config", GPT2), "Bert": ("BertConfig", BERT),
            "Roberta": ("RobertaConfig", BERT), "DistilBert": ("DistilBertConfig", DISTILBERT),
            "XLMRoberta": ("XLMRobertaConfig", BERT), "Albert": ("AlbertConfig", NARROW_EMBEDDINGS),
            "Electra": ("ElectraConfig", NARROW_EMBEDDINGS), "MPNet": ("MPNetConfig", BERT)}
HEADS = {
    "Llama": ["LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification",
              "LlamaForQuestionAnswering"],
    "GPT2": ["GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
             "GPT2ForQuestionAnswering"],
    "Bert": ["BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
             "BertForQuestionAnswering"],
    "Roberta": ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                "RobertaForTokenClassification", "RobertaForQuestionAnswering"],
    "DistilBert": ["DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                   "DistilBertForTokenClassification", "DistilBertForQuestionAnswering"],
    "XLMRoberta": ["XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForSequenceClassification",
                   "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering"],
    "Albert": ["AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM", "AlbertForSequenceClassification",
               "AlbertForQuestionAnswering"],
    "Electra": ["ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM", "ElectraForSequenceClassification",
                "ElectraForTokenClassification"],
    "MPNet": ["MPNetModel", "MPNetForMaskedLM", "MPNetForSequenceClassification", "MPNetForQuestionAnswering"],
}
CASES = [(family, name) for family, names in HEADS.items() for name in names]
DECODERS = ("Llama", "GPT2")
ROBERTA_POSITIONS = ("Roberta", "XLMRoberta", "MPNet")  # positions counted from pad_token_id + 1, padding skipped


@pytest.fixture(scope="module", params=CASES, ids=[name for _, name in CASES])
def pair(request, tmp_path_factory):
    """(family, our model, the reference's with eager attention), from one tiny random reference checkpoint."""
    family, name = request.param
    config_name, values = FAMILIES[family]
    torch.manual_seed(0)
    labels = {"num_labels": 3} if "Classification" in name else {}
    reference = getattr(transformers, name)(getattr(transformers, config_name)(**values, **labels)).eval()
    with torch.no_grad():
        for parameter_name, parameter in reference.named_parameters():
            if parameter_name.endswith("bias"):  # the reference initializes biases to zero: make them count
                parameter.normal_(std=0.1)
    folder = tmp_path_factory.mktemp(name)
    reference.save_pretrained(folder)
    reference = getattr(transformers, name).from_pretrained(folder, attn_implementation="eager").eval()
    return family, getattr(openformers, name).from_pretrained(folder), reference


def _eager(model):
    """The model switched to the eager path (and back on exit), as the reference's in these tests.

    Left-padded rows (queries that may see no key) differ between the two paths, in the reference too.
    """

    class Switch:
        def __enter__(self):
            model.config._attn_implementation = "eager"

        def __exit__(self, *exc):
            model.config._attn_implementation = "sdpa"

    return Switch()


def _batch(family):
    """Ids with right padding in row 1 (and left padding in row 0 for the decoders), and their mask."""
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    if family in DECODERS:
        mask[0, :2] = 0
    ids = ids.masked_fill(mask == 0, 1 if family in ROBERTA_POSITIONS else 0)
    return ids, mask


def _reference_options(family):
    return {"use_cache": False} if family in DECODERS else {}


def _assert_same(ours, theirs, what):
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), what
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_same(a, b, f"{what}[{i}]")
    else:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=what)


@torch.inference_mode()
def test_hidden_states_and_attentions_match_the_reference(pair):
    family, ours, theirs = pair
    ids, mask = _batch(family)
    mine = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    expected = theirs(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True,
                      **_reference_options(family))
    assert list(mine.keys()) == list(expected.keys())
    layers, heads = 2, 4
    assert len(mine.hidden_states) == layers + 1 and len(mine.attentions) == layers
    assert all(weights.shape == (2, heads, 9, 9) for weights in mine.attentions)
    for key in expected.keys():
        _assert_same(mine[key], expected[key], key)


@torch.inference_mode()
def test_return_dict_false_gives_the_references_tuple(pair):
    family, ours, theirs = pair
    ids, mask = _batch(family)
    for options in ({}, {"output_hidden_states": True}, {"output_attentions": True, "output_hidden_states": True}):
        with _eager(ours):
            mine = ours(ids, attention_mask=mask, return_dict=False, **options)
        expected = theirs(ids, attention_mask=mask, return_dict=False, **options, **_reference_options(family))
        _assert_same(mine, expected, f"tuple with {options}")


@torch.inference_mode()
def test_the_configs_defaults_apply(pair):
    family, ours, _ = pair
    ids, mask = _batch(family)
    ours.config.output_hidden_states = True
    ours.config.return_dict = False
    try:
        as_tuple = ours(ids, attention_mask=mask)
        assert isinstance(as_tuple, tuple)
        with_states = ours(ids, attention_mask=mask, return_dict=True)
        assert len(with_states.hidden_states) == 3
        assert ours(ids, attention_mask=mask, return_dict=True, output_hidden_states=False).hidden_states is None
    finally:
        ours.config.output_hidden_states = False
        ours.config.return_dict = True


@torch.inference_mode()
def test_inputs_embeds_give_what_input_ids_give(pair):
    family, ours, _ = pair
    ids, mask = _batch(family)
    embeds = ours.get_input_embeddings()(ids)
    from_ids = ours(ids, attention_mask=mask).to_tuple()
    from_embeds = ours(inputs_embeds=embeds, attention_mask=mask).to_tuple()
    if "ForSequenceClassification" in type(ours).__name__ and family in DECODERS:
        return  # without ids the decoders read the last position, as the reference's do: another answer
    if family in ROBERTA_POSITIONS:  # positions from inputs_embeds count every token as real, as the reference's do
        from_ids = ours(ids[:1, :6], attention_mask=mask[:1, :6]).to_tuple()
        from_embeds = ours(inputs_embeds=embeds[:1, :6], attention_mask=mask[:1, :6]).to_tuple()
    _assert_same(from_embeds, from_ids, "inputs_embeds")
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        ours(ids, inputs_embeds=embeds)


@torch.inference_mode()
def test_question_answering_logits_are_contiguous(pair):
    family, ours, theirs = pair
    if "QuestionAnswering" not in type(ours).__name__:
        pytest.skip("not a QA head")
    ids, mask = _batch(family)
    out = ours(ids, attention_mask=mask)
    assert out.start_logits.is_contiguous() and out.end_logits.is_contiguous()
    out.start_logits[mask == 0] = -10000  # what the course's QA post-processing does, in place
    expected = theirs(ids, attention_mask=mask).end_logits
    torch.testing.assert_close(out.end_logits[mask == 1], expected[mask == 1], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_decoders_take_use_cache_and_the_cache_keyword():
    config = openformers.LlamaConfig(**LLAMA)
    torch.manual_seed(0)
    model = openformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(3, 100, (1, 8), generator=torch.Generator().manual_seed(5))
    full = model(ids).logits
    first = model(ids[:, :5], use_cache=True)
    assert isinstance(first.cache, DynamicCache) and first.past_key_values is first.cache and first.cache.seq_len == 5
    rest = model(ids[:, 5:], cache=first.cache)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), full, atol=1e-5, rtol=1e-5)
    assert model(ids, use_cache=False).past_key_values is None
    with pytest.raises(ValueError, match="past_key_values= and cache="):
        model(ids, past_key_values=DynamicCache(), cache=DynamicCache())
    logits, cache = model(ids, use_cache=True, return_dict=False)
    assert isinstance(cache, DynamicCache) and cache.seq_len == 8


@torch.inference_mode()
def test_asking_for_weights_leaves_unpadded_logits_unchanged(pair):
    family, ours, _ = pair
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(6))
    plain, with_weights = ours(ids), ours(ids, output_attentions=True)
    _assert_same(with_weights.to_tuple()[: len(plain.to_tuple())], plain.to_tuple(), "output_attentions=True")


@torch.inference_mode()
def test_from_pretrained_output_options_become_the_defaults(tmp_path):
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).save_pretrained(tmp_path)
    model = openformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_hidden_states=True,
                                                              output_attentions=True)
    out = model(torch.tensor([[5, 6, 7]]))
    assert len(out.hidden_states) == 3 and out.attentions[0].shape == (1, 4, 3, 3)
    assert model(torch.tensor([[5, 6, 7]]), output_attentions=False).attentions is None

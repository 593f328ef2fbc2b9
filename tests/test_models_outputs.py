"""ModelOutput against the reference's: the same operations on the same classes give the same results."""

import copy
import pickle

import pytest
import torch
import torch.utils._pytree as pytree

from openformers import ModelOutput
from openformers.models import outputs

transformers = pytest.importorskip("transformers")
from transformers import modeling_outputs as reference_outputs  # noqa: E402

CLASSES = ["CausalLMOutputWithPast", "MaskedLMOutput", "QuestionAnsweringModelOutput",
           "BaseModelOutputWithPoolingAndCrossAttentions", "SequenceClassifierOutputWithPast"]


def _pair(name):
    return getattr(outputs, name), getattr(reference_outputs, name)


def _same(ours, theirs):
    assert type(ours).__name__ == type(theirs).__name__
    assert list(ours.keys()) == list(theirs.keys())
    assert len(ours) == len(theirs)
    for a, b in zip(ours.to_tuple(), theirs.to_tuple(), strict=True):
        assert a is b


@pytest.mark.parametrize("name", CLASSES)
def test_fields_match_the_reference(name):
    ours, theirs = _pair(name)
    assert [f.name for f in ours.__dataclass_fields__.values()] == list(theirs.__dataclass_fields__)


def test_keys_positions_and_slices_count_only_the_fields_that_are_set():
    ours_class, theirs_class = _pair("CausalLMOutputWithPast")
    logits, hidden = torch.randn(2, 3), (torch.randn(2, 3),)
    ours, theirs = (cls(logits=logits, hidden_states=hidden) for cls in (ours_class, theirs_class))
    _same(ours, theirs)
    assert ours[0] is logits and ours[1] is hidden and ours[-1] is hidden and ours[:1] == (logits,)
    assert ours["logits"] is logits and ours.get("loss") is None and ours.get("loss", 3) == 3
    assert list(ours) == ["logits", "hidden_states"] and list(ours.items()) == list(theirs.items())
    assert "logits" in ours and "loss" not in ours and isinstance(ours, dict)
    with pytest.raises(KeyError):
        ours["loss"]
    with pytest.raises(KeyError):
        theirs["loss"]


def test_positional_values_and_a_dict_build_the_same_outputs():
    loss, logits = torch.tensor(1.0), torch.randn(2, 3)
    ours_class, theirs_class = _pair("CausalLMOutputWithPast")
    _same(ours_class(loss, logits), theirs_class(loss, logits))
    _same(ours_class({"logits": logits, "loss": loss}), theirs_class({"logits": logits, "loss": loss}))
    _same(ours_class([("logits", logits)]), theirs_class([("logits", logits)]))
    built = ours_class({"logits": logits, "loss": loss})
    assert built.loss is loss and built.logits is logits and list(built) == ["logits", "loss"]  # dict order, as theirs


def test_setting_an_attribute_or_an_item_sets_both():
    logits, loss, extra = torch.randn(2, 3), torch.tensor(0.5), (torch.randn(1),)
    pair = [cls(logits=logits) for cls in _pair("CausalLMOutputWithPast")]
    for output in pair:
        output.loss = loss
        output["attentions"] = extra
        output.hidden_states = None  # None leaves the keys as they are
    _same(*pair)
    ours = pair[0]
    assert ours["loss"] is loss and ours.attentions is extra and ours[2] is extra
    ours["logits"] = loss
    assert ours.logits is loss


def test_the_cache_answers_to_its_earlier_name():
    cache = object()
    ours = outputs.CausalLMOutputWithPast(logits=torch.zeros(1), past_key_values=cache)
    theirs = reference_outputs.CausalLMOutputWithPast(logits=torch.zeros(1), past_key_values=cache)
    assert list(ours.keys()) == list(theirs.keys()) == ["logits", "cache"]
    assert ours.cache is ours.past_key_values is ours["past_key_values"] is ours["cache"] is cache
    assert "past_key_values" in ours and ours.get("past_key_values") is cache
    ours.past_key_values = None
    assert ours.cache is None


def test_removing_keys_is_refused_like_the_reference():
    ours, theirs = (cls(logits=torch.zeros(1)) for cls in _pair("MaskedLMOutput"))
    for method, args in (("pop", ("logits",)), ("setdefault", ("loss", 1)), ("update", ({"loss": 1},))):
        with pytest.raises(Exception):
            getattr(theirs, method)(*args)
        with pytest.raises(TypeError, match="does not support"):
            getattr(ours, method)(*args)
    with pytest.raises(TypeError):
        del ours["logits"]


def test_pickle_and_copies_keep_the_class_and_the_fields():
    output = outputs.QuestionAnsweringModelOutput(start_logits=torch.randn(2, 4), end_logits=torch.randn(2, 4))
    for copied in (pickle.loads(pickle.dumps(output)), copy.deepcopy(output), copy.copy(output)):
        assert type(copied) is type(output) and list(copied.keys()) == ["start_logits", "end_logits"]
        torch.testing.assert_close(copied.end_logits, output.end_logits)


def test_pytree_flattens_to_the_set_values_like_the_reference():
    logits, hidden = torch.randn(2, 3), (torch.randn(2, 3), torch.randn(2, 3))
    ours, theirs = (cls(logits=logits, hidden_states=hidden) for cls in _pair("CausalLMOutputWithPast"))
    our_leaves, our_spec = pytree.tree_flatten(ours)
    their_leaves, their_spec = pytree.tree_flatten(theirs)
    assert len(our_leaves) == len(their_leaves) == 3 and all(a is b for a, b in zip(our_leaves, their_leaves))
    assert our_spec.context == their_spec.context == ["logits", "hidden_states"]
    doubled = pytree.tree_map(lambda t: t * 2, ours)
    assert type(doubled) is type(ours) and list(doubled.keys()) == ["logits", "hidden_states"]
    torch.testing.assert_close(doubled.hidden_states[1], hidden[1] * 2)
    paths = [pytree.keystr(path) for path, _ in pytree.tree_flatten_with_path(ours)[0]]
    assert paths == ["['logits']", "['hidden_states'][0]", "['hidden_states'][1]"]


def test_a_users_own_output_class_and_torch_export():
    from dataclasses import dataclass

    @dataclass
    class PairOutput(ModelOutput):
        first: torch.Tensor | None = None
        second: torch.Tensor | None = None

    class Pair(torch.nn.Module):
        def forward(self, x):
            return PairOutput(first=x + 1, second=x * 2)

    x = torch.randn(3)
    exported = torch.export.export(Pair(), (x,))
    result = exported.module()(x)
    assert type(result) is PairOutput and list(result.keys()) == ["first", "second"]
    torch.testing.assert_close(result.second, x * 2)


def test_torch_compile_builds_outputs_in_one_graph():
    def scored(x):
        output = outputs.CausalLMOutputWithPast(logits=x * 2, past_key_values=None)
        output.loss = x.sum()
        return output

    result = torch.compile(scored, backend="eager", fullgraph=True)(torch.ones(3))
    assert type(result) is outputs.CausalLMOutputWithPast and list(result.keys()) == ["logits", "loss"]
    torch.testing.assert_close(result.loss, torch.tensor(3.0))


def test_torch_export_of_a_model_returns_its_output_class():
    from openformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                         num_attention_heads=2)).eval()
    ids = torch.randint(0, 50, (1, 5))
    exported = torch.export.export(model, (ids,), kwargs={"output_hidden_states": True})
    result = exported.module()(ids, output_hidden_states=True)
    assert type(result) is outputs.CausalLMOutputWithPast and list(result.keys()) == ["logits", "hidden_states"]
    torch.testing.assert_close(result.logits, model(ids).logits)

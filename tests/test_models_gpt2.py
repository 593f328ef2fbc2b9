"""GPT-2 against the reference: tiny random HF models for every head, Conv1D weights transposed in and out."""

import pytest
import torch
from safetensors.torch import save_file

import openformers
from openformers import AutoModelForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=0)
HEADS = {
    "AutoModelForCausalLM": "GPT2LMHeadModel",
    "AutoModelForSequenceClassification": "GPT2ForSequenceClassification",
    "AutoModelForTokenClassification": "GPT2ForTokenClassification",
    "AutoModelForQuestionAnswering": "GPT2ForQuestionAnswering",
}


def _reference(head, **overrides):
    torch.manual_seed(0)
    num_labels = 2 if head == "AutoModelForQuestionAnswering" else 3
    config = transformers.GPT2Config(**{**TINY, "num_labels": num_labels, **overrides})
    return getattr(transformers, HEADS[head])(config).eval()


def _batch():
    """Two rows (pad id 0), the first left-padded (its padding queries see no key and give zeros, as in the
    reference), the second right-padded."""
    ids = torch.randint(1, TINY["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0
    ids[1, 7:], mask[1, 7:] = 0, 0
    return ids, mask


def _outputs(model, head):
    ids, mask = _batch()
    if head == "AutoModelForQuestionAnswering":
        out = model(ids, attention_mask=mask, start_positions=torch.tensor([2, 11]), end_positions=torch.tensor([4, 6]))
        return out.loss, torch.stack([out.start_logits, out.end_logits])
    labels = {
        "AutoModelForCausalLM": ids,  # padding included: the loss reads every position
        "AutoModelForSequenceClassification": torch.tensor([2, 0]),
        "AutoModelForTokenClassification": torch.tensor(
            [[0, 1, 2, 1, 0, 2, 1, 0, 1, 2], [1, 1, 2, 0, 0, 1, 2, -100, -100, -100]]
        ),
    }[head]
    out = model(ids, attention_mask=mask, labels=labels)
    return out.loss, out.logits


@pytest.fixture(scope="module", params=list(HEADS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(request.param)
    reference.save_pretrained(folder)
    return request.param, folder, reference, getattr(openformers, request.param).from_pretrained(folder)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny):
    head, _, reference, model = tiny
    assert type(model).__name__ == HEADS[head]
    ours, theirs = _outputs(model, head), _outputs(reference, head)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_every_head_saves_and_loads_in_both_directions(tiny, tmp_path):
    head, _, reference, model = tiny
    model.save_pretrained(tmp_path)
    theirs = getattr(transformers, head).from_pretrained(tmp_path).eval()
    ours = getattr(openformers, head).from_pretrained(tmp_path)
    torch.testing.assert_close(_outputs(theirs, head)[1], _outputs(reference, head)[1])
    torch.testing.assert_close(_outputs(ours, head)[1], _outputs(model, head)[1])


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("causal")
    reference = _reference("AutoModelForCausalLM")
    reference.save_pretrained(folder)
    return reference, AutoModelForCausalLM.from_pretrained(folder)


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(causal_lm):
    model = causal_lm[1]
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(1, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(2))
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :5], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full[:, -1:])


@torch.inference_mode()
def test_generate_matches_reference_greedy(causal_lm):
    reference, model = causal_lm
    ids = torch.randint(1, TINY["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(3))
    expected = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    model.generation_config.eos_token_id = None
    assert model.generate(ids, max_new_tokens=8).tolist() == expected.tolist()


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
@torch.inference_mode()
def test_generate_with_token_type_ids_from_the_tokenizer_matches_reference(causal_lm, options):
    """model.generate(**tokenizer(...)) where the tokenizer returns token types: GPT-2 embeds them, and each new
    token takes its row's last type."""
    reference, model = causal_lm
    ids = torch.randint(1, TINY["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(3))
    encoded = dict(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.full_like(ids, 5))
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
    expected = reference.generate(**encoded, **settings)
    assert expected.tolist() != reference.generate(ids, **settings).tolist()  # the types matter here
    assert model.generate(encoded, **settings).tolist() == expected.tolist()
    assert model.generate(**encoded, **settings).tolist() == expected.tolist()
    with pytest.raises(ValueError, match=r"token_type_ids must be a tensor shaped like input_ids \(2, 6\)"):
        model.generate(ids, token_type_ids=encoded["token_type_ids"][:, :3], **settings)


@torch.inference_mode()
def test_the_original_checkpoint_layout_loads(causal_lm, tmp_path):
    """The `gpt2` repository's layout: no "transformer." prefix, and the causal-mask buffers stored."""
    reference = causal_lm[0]
    state_dict = {k.removeprefix("transformer."): v for k, v in reference.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY["n_layer"]):
        state_dict[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state_dict[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state_dict, tmp_path / "model.safetensors")
    reference.config.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, _ = _batch()
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_inputs_past_the_positions_are_refused(causal_lm):
    with pytest.raises(ValueError, match="n_positions"):
        causal_lm[1](torch.ones(1, TINY["n_positions"] + 1, dtype=torch.long))

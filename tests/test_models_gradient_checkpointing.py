"""Gradient checkpointing: every family recomputes its layers in the backward pass and gets the same gradients."""

import pytest
import torch

from openformers import configs
from openformers.models.bert import BertForSequenceClassification, RobertaForMaskedLM
from openformers.models.gpt2 import GPT2LMHeadModel
from openformers.models.llama import LlamaForCausalLM, LlamaForSequenceClassification

FAMILIES = {
    "llama": lambda: LlamaForCausalLM.from_config(configs.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)),
    "mistral-classifier": lambda: LlamaForSequenceClassification.from_config(configs.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4, pad_token_id=0, num_labels=2)),
    # GPT-2 and BERT have dropout: checkpointing must replay the same dropout masks.
    "gpt2": lambda: GPT2LMHeadModel.from_config(configs.GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=True)),
    "bert-classifier": lambda: BertForSequenceClassification.from_config(configs.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=32, num_labels=3)),
    "roberta-mlm": lambda: RobertaForMaskedLM.from_config(configs.RobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=40)),
}


def _batch(name):
    ids = torch.randint(2, 64, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    if name.endswith("classifier"):
        ids[1, 6:] = 0
        labels = torch.tensor([1, 0])
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _layers(model):
    stack = model._layer_stacks()[0]
    return getattr(stack, "layers", None) or getattr(stack, "h", None) or stack.layer


def _gradients_and_layer_calls(model, batch):
    calls = []
    hooks = [layer.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in _layers(model)]
    model.zero_grad()
    torch.manual_seed(7)  # the same dropout masks in both runs
    model(**batch).loss.backward()
    for hook in hooks:
        hook.remove()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_checkpointed_gradients_equal_the_plain_ones(name):
    torch.manual_seed(0)
    model = FAMILIES[name]().train()
    batch = _batch(name)
    assert model.supports_gradient_checkpointing and not model.is_gradient_checkpointing
    plain, plain_calls = _gradients_and_layer_calls(model, batch)

    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed, checkpointed_calls = _gradients_and_layer_calls(model, batch)
    # Each layer ran again in the backward pass, except a decoder stack's last one (models/layers.run_layers).
    assert checkpointed_calls == 2 * plain_calls - (name in ("llama", "mistral-classifier", "gpt2"))
    assert plain.keys() == checkpointed.keys() and len(plain) > 4
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-6, rtol=1e-5, msg=key)

    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert _gradients_and_layer_calls(model, batch)[1] == plain_calls


def test_checkpointing_is_off_in_evaluation_and_with_a_cache():
    from openformers.generation.cache import DynamicCache

    torch.manual_seed(0)
    model = FAMILIES["llama"]()
    model.gradient_checkpointing_enable({"use_reentrant": False})
    ids = _batch("llama")["input_ids"]
    calls = []
    model.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model.eval()
    model(ids).logits.sum().backward()  # eval mode: nothing to recompute
    model.train()
    model(ids[:, :4], past_key_values=DynamicCache()).logits.sum().backward()  # the cache is written once
    assert len(calls) == 2


def test_checkpointing_options_are_checked():
    model = FAMILIES["gpt2"]()
    with pytest.raises(ValueError, match="use_reentrant"):
        model.gradient_checkpointing_enable({"reentrant": False})


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_a_stacks_last_layer_is_not_recomputed_and_the_gradients_stay_the_same(use_reentrant, monkeypatch):
    """Its backward comes right after the head's: the gradients are bit for bit those of checkpointing every
    layer, LoRA's dropout masks included, and those of no checkpointing."""
    from openformers import LoraConfig
    from openformers.models import layers

    torch.manual_seed(0)
    model = FAMILIES["llama"]().train()
    model.add_adapter(LoraConfig(r=4, lora_dropout=0.25, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    batch = _batch("llama")
    plain, plain_calls = _gradients_and_layer_calls(model, batch)
    model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
    last_calls = []
    _layers(model)[-1].register_forward_pre_hook(lambda *_: last_calls.append(1))
    checkpointed, calls = _gradients_and_layer_calls(model, batch)
    assert calls == 2 * plain_calls - 1 and len(last_calls) == 1

    run_layer = layers.run_layer
    monkeypatch.setattr(layers, "run_layer", lambda layer, options, *inputs, last: run_layer(layer, options, *inputs))
    every_layer, calls = _gradients_and_layer_calls(model, batch)
    assert calls == 2 * plain_calls and len(last_calls) == 3
    assert every_layer.keys() == checkpointed.keys() == plain.keys() and len(plain) > 4
    for key in plain:
        assert torch.equal(checkpointed[key], every_layer[key]), key
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_a_llama_layers_halves_are_checkpointed_apart_so_o_proj_is_not_recomputed(use_reentrant):
    """The attention half's recomputation stops after the attention: o_proj, which gave the MLP half's norm its
    input, and down_proj finish once (a reentrant checkpoint reruns each half whole); the gradients stay those
    of no checkpointing."""
    torch.manual_seed(0)
    model = FAMILIES["llama"]().train()
    batch = _batch("llama")
    plain, _ = _gradients_and_layer_calls(model, batch)
    finished = []
    first = _layers(model)[0]  # checkpointed (the last layer is not); hooks on its submodules leave it in halves
    for name in ("self_attn.o_proj", "mlp.down_proj", "mlp.gate_proj"):
        first.get_submodule(name).register_forward_hook(lambda *_, name=name: finished.append(name))
    model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
    model.zero_grad()
    torch.manual_seed(7)
    model(**batch).loss.backward()
    checkpointed = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    runs = 2 if use_reentrant else 1
    assert sorted(finished) == ["mlp.down_proj"] * runs + ["mlp.gate_proj"] * 2 + ["self_attn.o_proj"] * runs
    assert checkpointed.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-6, rtol=1e-5, msg=key)


def test_a_layer_class_with_a_forward_of_its_own_is_checkpointed_whole():
    """A subclass of a decoder layer that changes its forward keeps it under checkpointing: the halves would run
    the parent's two blocks and leave the subclass's forward out."""
    from openformers.models.llama import LlamaDecoderLayer

    class Scaled(LlamaDecoderLayer):
        def forward(self, *args, **kwargs):
            x, weights = super().forward(*args, **kwargs)
            return 2 * x, weights

    torch.manual_seed(0)
    model = FAMILIES["llama"]().train()
    for layer in _layers(model):
        layer.__class__ = Scaled
    batch = _batch("llama")
    plain, _ = _gradients_and_layer_calls(model, batch)
    plain_loss = model(**batch).loss
    model.gradient_checkpointing_enable({"use_reentrant": False})
    checkpointed, calls = _gradients_and_layer_calls(model, batch)
    assert torch.equal(model(**batch).loss, plain_loss)
    assert calls == 3  # both layers' forwards, and the first one's recomputation
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-6, rtol=1e-5, msg=key)

"""StarCoder2 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens, with and without a sliding window shorter than the sequences; a left-padded batch gives each
row's logits alone; what we save, the reference loads; a GGUF written as llama.cpp's converter writes a
"starcoder2" file gives the original's logits.
"""

import json
import warnings

import pytest
import torch

import openformers
from openformers import AutoModelForCausalLM, Starcoder2Config, Starcoder2ForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, norm_epsilon=1e-5, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)
VARIANTS = {
    "tied": {},
    "untied": dict(tie_word_embeddings=False),
    "windowed": dict(sliding_window=4),
    "unbiased": dict(use_bias=False, hidden_act="gelu"),
}
HEADS = {
    "Starcoder2Model": "AutoModel",
    "Starcoder2ForCausalLM": "AutoModelForCausalLM",
    "Starcoder2ForSequenceClassification": "AutoModelForSequenceClassification",
    "Starcoder2ForTokenClassification": "AutoModelForTokenClassification",
}


def _reference(name="Starcoder2ForCausalLM", **overrides):
    """A tiny random reference model, its norms and biases drawn too (the reference sets them to ones and zeros)."""
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.Starcoder2Config(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name and parameter_name.endswith("weight"):
                parameter.normal_(mean=1.0, std=0.2)
            elif parameter_name.endswith("bias"):
                parameter.normal_(std=0.1)
    return model


def _load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


def _ids(*shape, seed=1):
    return torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _padded_batch():
    """Two rows with pad id 0: the first right-padded, the second left-padded."""
    ids = _ids(2, 9, seed=7)
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0
    ids[1, :2], mask[1, :2] = 0, 0
    return ids, mask


def _outputs(model, name) -> dict:
    """Every tensor field of the output on a padded batch with the head's labels, by name (the cache left out)."""
    ids, mask = _padded_batch()
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name in ("Starcoder2ForCausalLM", "Starcoder2ForTokenClassification"):
        inputs["labels"] = (ids % 3).masked_fill(mask == 0, -100)
    elif name == "Starcoder2ForSequenceClassification":
        inputs["labels"] = torch.tensor([2, 0])
    out = model(**inputs)
    return {key: out[key] for key in out.keys() if isinstance(out[key], torch.Tensor)}


def _assert_outputs_close(ours: dict, theirs: dict, name: str):
    assert list(ours) == list(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=f"{name}.{key}")


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    reference.save_pretrained(folder)
    return folder, reference, _load_quietly(AutoModelForCausalLM.from_pretrained, folder)


@pytest.fixture(scope="module", params=list(HEADS))
def tiny_head(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    reference = _reference(name, num_labels=3)
    reference.save_pretrained(folder)
    return name, folder, reference, _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, folder)


@torch.inference_mode()
def test_causal_lm_logits_and_loss_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, Starcoder2ForCausalLM) and not model.training
    assert model.config.sliding_window == reference.config.sliding_window
    name = "Starcoder2ForCausalLM"
    _assert_outputs_close(_outputs(model, name), _outputs(reference, name), "causal LM")


@torch.inference_mode()
def test_a_long_sequence_through_the_sliding_window_matches_reference(tmp_path):
    reference = _reference(sliding_window=5)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    ids = _ids(2, 40, seed=11)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding: the window counts slots, padding included, as the reference's does
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits,
                               atol=1e-4, rtol=1e-4)
    cache = DynamicCache()
    steps = [model(ids[:, :20], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(20, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), reference(ids).logits, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_every_head_matches_reference_on_a_padded_batch(tiny_head):
    name, _, reference, model = tiny_head
    assert type(model).__name__ == name and not model.training
    _assert_outputs_close(_outputs(model, name), _outputs(reference, name), name)


@torch.inference_mode()
def test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path):
    name, _, reference, model = tiny_head
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [name]
    expected = _outputs(reference, name)
    theirs, info = getattr(transformers, HEADS[name]).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    theirs.eval()
    assert type(theirs).__name__ == name
    _assert_outputs_close(_outputs(theirs, name), expected, name)
    ours = _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    _assert_outputs_close(_outputs(ours, name), expected, name)


@torch.inference_mode()
def test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path):
    _, reference, model = tiny
    model.save_pretrained(tmp_path)
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    reloaded.eval()
    for field in ("sliding_window", "use_bias", "norm_epsilon", "hidden_act", "tie_word_embeddings"):
        assert getattr(reloaded.config, field) == getattr(reference.config, field), field
    name = "Starcoder2ForCausalLM"
    _assert_outputs_close(_outputs(reloaded, name), _outputs(reference, name), "saved")


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    model = tiny[2]
    ids = _ids(2, 12)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :5], past_key_values=cache).logits]
    steps.append(model(ids[:, 5:8], past_key_values=cache).logits)
    for t in range(8, 12):
        steps.append(model(ids[:, t : t + 1], past_key_values=cache).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    rows = [_ids(1, 9, seed=2)[0], _ids(1, 5, seed=3)[0], _ids(1, 1, seed=4)[0]]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]).long() for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    prefill = model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits
    step_ids = _ids(3, 1, seed=5)
    step_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
    step = model(step_ids, attention_mask=step_mask, position_ids=positions[:, -1:] + 1, past_key_values=cache).logits
    theirs = reference(ids, attention_mask=mask, position_ids=positions).logits
    for i, row in enumerate(rows):
        alone = model(torch.cat([row, step_ids[i]])[None]).logits[0]
        torch.testing.assert_close(prefill[i, width - len(row) :], alone[:-1])
        torch.testing.assert_close(step[i, 0], alone[-1])
        torch.testing.assert_close(theirs[i, width - len(row) :], alone[:-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(num_beams=3, num_return_sequences=2)],
                         ids=["greedy", "beam", "beam-return-2"])
@torch.inference_mode()
def test_generate_matches_reference(tiny, options):
    _, reference, model = tiny
    ids = torch.stack([_ids(1, 6, seed=6)[0], torch.cat([torch.zeros(2, dtype=torch.long), _ids(1, 4, seed=8)[0]])])
    mask = (torch.arange(6) >= torch.tensor([[0], [2]])).long()
    settings = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
    expected = reference.generate(ids, attention_mask=mask, **settings)
    assert model.generate(ids, attention_mask=mask, **settings).tolist() == expected.tolist()


@torch.inference_mode()
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny):
    model = tiny[2]
    ids = torch.stack([_ids(1, 6, seed=6)[0], torch.cat([torch.zeros(2, dtype=torch.long), _ids(1, 4, seed=8)[0]])])
    mask = (torch.arange(6) >= torch.tensor([[0], [2]])).long()
    for options in (dict(), dict(num_beams=3)):
        settings = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None, **options)
        static = model.generate(ids, cache_implementation="static", **settings)
        assert static.tolist() == model.generate(ids, **settings).tolist(), options


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_the_reference(tiny):
    folder, _, model = tiny
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = _padded_batch()
    ours = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    theirs = reference(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) and len(ours.attentions) == len(theirs.attentions)
    for got, expected in zip(ours.hidden_states + ours.attentions, theirs.hidden_states + theirs.attentions):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    reference = _reference(tie_word_embeddings=False)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    ids, mask = _padded_batch()
    labels = ids.masked_fill(mask == 0, -100)
    ours, theirs = (m(ids, attention_mask=mask, labels=labels).loss for m in (model.train(), reference.train()))
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_dropouts_apply_while_training_only(tmp_path):
    config = Starcoder2Config(**TINY, embedding_dropout=0.3, residual_dropout=0.3, attention_dropout=0.3)
    model = Starcoder2ForCausalLM(config)
    ids = _ids(1, 8)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(ids).logits, model(ids).logits)
        model.train()
        torch.manual_seed(0)
        first = model(ids).logits
        torch.manual_seed(1)
        assert not torch.equal(first, model(ids).logits)
    layer = model.model.layers[0]
    assert model.model.embedding_dropout.p == layer.residual_dropout.p == layer.self_attn.dropout == 0.3


@torch.inference_mode()
def test_the_cpu_kernel_leaves_starcoder2_on_the_plain_path_with_the_same_logits(tiny):
    from openformers.kernels.llama import refusal

    _, reference, model = tiny
    assert refusal(model.config) is not None and model.model.accelerated_step is None
    ids = _ids(1, 7, seed=9)
    cache, theirs = DynamicCache(), reference(ids).logits
    steps = [model(ids[:, :4], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(4, 7)]  # one-token steps
    torch.testing.assert_close(torch.cat(steps, dim=1), theirs, atol=1e-4, rtol=1e-4)


def test_config_defaults_match_the_reference():
    ours, theirs = Starcoder2Config(), transformers.Starcoder2Config()
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "norm_epsilon",
                 "sliding_window", "attention_dropout", "residual_dropout", "embedding_dropout", "use_bias",
                 "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert ours.head_dim == 128 and Starcoder2Config(head_dim=64).head_dim == 64


@pytest.mark.parametrize("field, value", [("hidden_act", "tanh"), ("sliding_window", 0), ("residual_dropout", 1.0),
                                          ("norm_epsilon", 0), ("num_key_value_heads", 3)])
def test_what_the_model_cannot_run_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Starcoder2Config(**{**TINY, field: value})


# A GGUF written the way llama.cpp's converter writes a "starcoder2" file: its names, the rows in the reference's
# order, biases and LayerNorm biases as tensors of their own.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}


def _write_gguf(path, reference, with_vocabulary=False):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "starcoder2")
    if with_vocabulary:  # the reference's GGUF loader sizes the model by the token list
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([chr(0x100 + i) for i in range(config.vocab_size)])
        writer.add_token_merges([])
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_eps(config.norm_epsilon)
    if config.sliding_window is not None:
        writer.add_sliding_window(config.sliding_window)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    for name, tensor in reference.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp writes no output tensor for tied embeddings
        for hf, cpp in GGUF_NAMES.items():
            name = name.replace(hf, cpp)
        writer.add_tensor(name, tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("variant", ["tied", "untied", "windowed", "unbiased"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, variant):
    overrides = {**VARIANTS[variant], "hidden_act": "gelu_pytorch_tanh"}  # llama.cpp runs StarCoder2 with GELU-tanh
    reference = _reference(**overrides)
    _write_gguf(tmp_path / "starcoder2.gguf", reference)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "starcoder2.gguf")
    config = reference.config
    assert isinstance(model, Starcoder2ForCausalLM) and model.config.norm_epsilon == pytest.approx(config.norm_epsilon)
    assert model.config.tie_word_embeddings == config.tie_word_embeddings
    assert (model.config.use_bias, model.config.sliding_window) == (config.use_bias, config.sliding_window)
    assert model.generation_config.eos_token_id == 2
    name = "Starcoder2ForCausalLM"
    _assert_outputs_close(_outputs(model, name), _outputs(reference, name), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "starcoder2.gguf").model_type == "starcoder2"


def test_a_transformers_4_config_file_reads_and_saves_as_the_reference_reads_it(tmp_path):
    # bigcode/starcoder2-3b's layout: rope_theta at the top, no rope_parameters, and keys the model does not use.
    values = {**TINY, "model_type": "starcoder2", "architectures": ["Starcoder2ForCausalLM"],
              "rope_theta": 999999.4420358813, "sliding_window": 4096, "norm_type": "layer_norm",
              "mlp_type": "default", "embedding_dropout": 0.1, "residual_dropout": 0.1, "attention_dropout": 0.1}
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = openformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, Starcoder2Config) and config.rope_theta == values["rope_theta"]
    assert config.sliding_window == 4096 and config.norm_type == "layer_norm" and config.residual_dropout == 0.1
    config.save_pretrained(tmp_path / "saved")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "saved")
    assert theirs.rope_parameters["rope_theta"] == values["rope_theta"]
    for name in ("sliding_window", "embedding_dropout", "residual_dropout", "attention_dropout", "use_bias"):
        assert getattr(theirs, name) == getattr(config, name), name
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["mlp_type"] == "default"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    dropouts = dict(embedding_dropout=0.1, residual_dropout=0.1, attention_dropout=0.1)
    model = Starcoder2ForCausalLM.from_config(Starcoder2Config(**TINY, sliding_window=4, **dropouts)).train()
    ids, mask = _padded_batch()
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable()
        calls = []
        hooks = [layer.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in model.model.layers]
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout masks in both runs
        loss = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        for hook in hooks:
            hook.remove()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], len(calls)))
    assert results[1][2] == 2 * results[0][2]  # each layer ran again in the backward pass
    torch.testing.assert_close(results[0][0], results[1][0])
    for plain, checkpointed in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(plain, checkpointed)


@pytest.mark.parametrize("variant", ["tied", "untied"])
def test_gguf_weights_are_those_the_reference_reads(tmp_path, variant):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "starcoder2.gguf", reference, with_vocabulary=True)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="starcoder2.gguf").state_dict()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="starcoder2.gguf").state_dict()
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)

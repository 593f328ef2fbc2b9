"""Qwen3 against the reference: tiny random models made by transformers, saved and loaded both ways.

Each head gives the reference's outputs and losses within 1e-4 on a padded batch; greedy and beam generation give
the same tokens; a left-padded batch gives each row's logits alone; what we save, the reference loads.
"""

import json
import warnings

import pytest
import torch

import openformers
from openformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

# head_dim 24 is not hidden_size // num_attention_heads (16): Qwen3 sizes its heads on their own.
TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-5, pad_token_id=0,
)
VARIANTS = {
    "untied": {},
    "tied": dict(tie_word_embeddings=True),
    "windowed": dict(use_sliding_window=True, sliding_window=4, max_window_layers=0),
    "biased": dict(attention_bias=True),
}
HEADS = {
    "Qwen3Model": "AutoModel",
    "Qwen3ForCausalLM": "AutoModelForCausalLM",
    "Qwen3ForSequenceClassification": "AutoModelForSequenceClassification",
    "Qwen3ForTokenClassification": "AutoModelForTokenClassification",
    "Qwen3ForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def _reference(name="Qwen3ForCausalLM", **overrides):
    """A tiny random reference model, its norms and biases drawn too (the reference sets them to ones and zeros)."""
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.Qwen3Config(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("norm.weight"):
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
    return torch.randint(1, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


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
    if name == "Qwen3ForCausalLM" or name == "Qwen3ForTokenClassification":
        inputs["labels"] = (ids % 3).masked_fill(mask == 0, -100)
    elif name == "Qwen3ForSequenceClassification":
        inputs["labels"] = torch.tensor([2, 0])
    elif name == "Qwen3ForQuestionAnswering":
        inputs.update(start_positions=torch.tensor([3, 12]), end_positions=torch.tensor([5, 4]))
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
    assert isinstance(model, Qwen3ForCausalLM) and not model.training
    _assert_outputs_close(_outputs(model, "Qwen3ForCausalLM"), _outputs(reference, "Qwen3ForCausalLM"), "causal LM")


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
    theirs = getattr(transformers, HEADS[name]).from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == name
    _assert_outputs_close(_outputs(theirs, name), expected, name)
    ours = _load_quietly(getattr(openformers, HEADS[name]).from_pretrained, tmp_path)
    _assert_outputs_close(_outputs(ours, name), expected, name)


@torch.inference_mode()
def test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path):
    _, reference, model = tiny
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.layer_types == reference.config.layer_types
    assert reloaded.config.sliding_window == reference.config.sliding_window
    _assert_outputs_close(_outputs(reloaded, "Qwen3ForCausalLM"), _outputs(reference, "Qwen3ForCausalLM"), "saved")


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

@torch.inference_mode()
def test_the_cpu_kernel_leaves_qwen3_on_the_plain_path_with_the_same_logits(tiny):
    from openformers.kernels.llama import refusal

    _, reference, model = tiny
    assert refusal(model.config) is not None and model.model.accelerated_step is None
    ids = _ids(1, 7, seed=9)
    cache, theirs = DynamicCache(), reference(ids).logits
    steps = [model(ids[:, :4], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(4, 7)]  # one-token steps
    torch.testing.assert_close(torch.cat(steps, dim=1), theirs, atol=1e-4, rtol=1e-4)


def test_config_defaults_match_the_reference():
    ours, theirs = Qwen3Config(), transformers.Qwen3Config()
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias",
                 "use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "tie_word_embeddings",
                 "bos_token_id", "eos_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]


def test_a_partial_sliding_window_or_bad_layer_types_are_refused():
    with pytest.raises(ValueError, match="layer_types"):
        Qwen3Config(num_hidden_layers=4, use_sliding_window=True, sliding_window=8, max_window_layers=2)
    with pytest.raises(ValueError, match="layer_types"):
        Qwen3Config(num_hidden_layers=2, layer_types=["full_attention"])
    unused = Qwen3Config(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    assert unused.sliding_window is None and unused.attention_window is None  # use_sliding_window is off


def test_heads_build_on_the_qwen3_base_model():
    config = Qwen3Config(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "Qwen3Model" else model.base_model
        assert type(base).__name__ == "Qwen3Model"
        assert base.layers[0].self_attn.q_norm.weight.shape == (TINY["head_dim"],)
    assert hasattr(openformers.Qwen3ForQuestionAnswering(config), "transformer")  # the reference's name


# A GGUF written the way llama.cpp's converter writes a "qwen3" file: its names, the rows in the reference's order.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
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


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    reference = _reference(tie_word_embeddings=tied)
    _write_gguf(tmp_path / "qwen3.gguf", reference)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "qwen3.gguf")
    assert isinstance(model, Qwen3ForCausalLM) and model.config.head_dim == TINY["head_dim"]
    assert model.config.tie_word_embeddings == tied and model.generation_config.eos_token_id == 2
    _assert_outputs_close(_outputs(model, "Qwen3ForCausalLM"), _outputs(reference, "Qwen3ForCausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "qwen3.gguf").model_type == "qwen3"


def test_attention_dropout_applies_while_training_only():
    model = Qwen3ForCausalLM(Qwen3Config(**TINY, attention_dropout=0.5))
    ids = _ids(1, 6)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)

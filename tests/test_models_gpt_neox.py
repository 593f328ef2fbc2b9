"""GPT-NeoX / Pythia (model_type "gpt_neox") against the reference, on tiny random models it makes and saves.

Parallel and sequential residuals, partial rotary embeddings (rotary_pct), with and without attention biases, linear
rope scaling and tied embeddings; every head the reference has, on a right- and a left-padded row with the head's
labels; greedy and beam generation; saving both ways; GGUF files written as llama.cpp's converter writes them; and
the GPTNeoXTokenizer, which the reference builds from a tokenizer.json's vocabulary in its own way.
"""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from openformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=256, rotary_pct=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
VARIANTS = {
    "parallel": {},
    "sequential": dict(use_parallel_residual=False, rotary_pct=1.0, rotary_emb_base=500),
    "no-bias-tied": dict(attention_bias=False, tie_word_embeddings=True, rotary_pct=0.25),
    "linear-rope": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
}
HEADS = {
    "GPTNeoXModel": "AutoModel",
    "GPTNeoXForCausalLM": "AutoModelForCausalLM",
    "GPTNeoXForSequenceClassification": "AutoModelForSequenceClassification",
    "GPTNeoXForTokenClassification": "AutoModelForTokenClassification",
    "GPTNeoXForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def _reference(name="GPTNeoXForCausalLM", **overrides):
    """A tiny random reference model, its LayerNorms and biases drawn too (the reference makes them ones and zeros)."""
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.GPTNeoXConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm." in parameter_name and parameter_name.endswith("weight"):
                parameter.normal_(mean=1.0, std=0.2)
            elif parameter_name.endswith("bias"):
                parameter.normal_(std=0.1)
    return model


def _load_quietly(load, source):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(source)


def _ids(*shape, seed=1):
    return torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    """Two rows of 9 tokens with pad id 0, the first right-padded and the second left-padded, with the head's labels."""
    ids = _ids(2, 9, seed=7)
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0
    ids[1, :2], mask[1, :2] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name.endswith("CausalLM"):
        inputs["labels"] = ids.masked_fill(mask == 0, -100)
    elif name.endswith("TokenClassification"):
        inputs["labels"] = (ids % 3).masked_fill(mask == 0, -100)
    elif name.endswith("SequenceClassification"):
        inputs["labels"] = torch.tensor([2, 0])
    elif name.endswith("QuestionAnswering"):
        inputs.update(start_positions=torch.tensor([3, 12]), end_positions=torch.tensor([5, 4]))
    return inputs


def _outputs(model, name) -> dict:
    """Every tensor the model returns (the cache left out), by name."""
    out = model(**_inputs(name))
    return {key: out[key] for key in out.keys() if isinstance(out[key], torch.Tensor)}


def _assert_outputs_close(ours: dict, theirs: dict, what: str):
    assert list(ours) == list(theirs), what
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=f"{what}.{key}")


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    reference.save_pretrained(folder)
    return folder, reference, _load_quietly(AutoModelForCausalLM.from_pretrained, folder)


@torch.inference_mode()
def test_causal_lm_logits_and_loss_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, GPTNeoXForCausalLM) and not model.training
    _assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "causal LM")


@pytest.mark.parametrize("name", list(HEADS))
@torch.inference_mode()
def test_every_head_matches_reference_and_saves_both_ways(name, tmp_path):
    reference = _reference(name, num_labels=3)
    reference.save_pretrained(tmp_path / "reference")
    auto = getattr(openformers, HEADS[name])
    model = _load_quietly(auto.from_pretrained, tmp_path / "reference")
    assert type(model).__name__ == name
    expected = _outputs(reference, name)
    _assert_outputs_close(_outputs(model, name), expected, name)
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == "gpt_neox" and saved["architectures"] == [name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference reports missing or unexpected keys with a warning
        theirs = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    _assert_outputs_close(_outputs(theirs, name), expected, f"{name} saved by openformers")
    again = _load_quietly(auto.from_pretrained, tmp_path / "ours")
    _assert_outputs_close(_outputs(again, name), expected, f"{name} reloaded")


@torch.inference_mode()
def test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path):
    _, reference, model = tiny
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert ("embed_out.weight" in stored) != reference.config.tie_word_embeddings  # transformers 4's name, as theirs
    assert "lm_head.weight" not in stored
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for name in ("use_parallel_residual", "attention_bias", "tie_word_embeddings", "rope_parameters"):
        assert getattr(reloaded.config, name) == getattr(reference.config, name), name
    _assert_outputs_close(_outputs(reloaded, "CausalLM"), _outputs(reference, "CausalLM"), "saved")


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    model = tiny[2]
    ids = _ids(2, 12)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :5], past_key_values=cache).logits, model(ids[:, 5:8], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(8, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    rows = [_ids(1, 9, seed=2)[0], _ids(1, 5, seed=3)[0], _ids(1, 1, seed=4)[0]]
    width = max(len(row) for row in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(row), dtype=torch.long), row]) for row in rows])
    mask = (ids != 0).long()
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
    inputs = _inputs("GPTNeoXModel")
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) and len(ours.attentions) == len(theirs.attentions)
    for got, expected in zip(ours.hidden_states + ours.attentions, theirs.hidden_states + theirs.attentions):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    """Dropout off, the loss and every gradient of a training step are the reference's, with gradient checkpointing
    too (the layers run again in the backward pass)."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    inputs = _inputs("CausalLM")
    reference.train()
    reference(**inputs).loss.backward()
    expected = {name: p.grad for name, p in reference.named_parameters()}
    for checkpointing in (False, True):
        model.zero_grad()
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**inputs).loss.backward()
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(parameter.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


@torch.inference_mode()
def test_older_checkpoints_with_embed_out_and_mask_buffers_load(tmp_path):
    """Pythia's files keep each layer's causal-mask buffers and rotary frequencies, and rotary_pct and rotary_emb_base
    in config.json; they load as the reference loads them."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for i in range(TINY["num_hidden_layers"]):
        weights[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        weights[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        weights[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("rope_parameters", "rope_scaling"):
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps({**config, "rotary_pct": 0.5, "rotary_emb_base": 10000}))
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.partial_rotary_factor == 0.5 and model.config.rotary_pct == 0.5
    _assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "embed_out checkpoint")


def test_config_defaults_and_older_names_match_the_reference():
    ours, theirs = GPTNeoXConfig(), transformers.GPTNeoXConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "attention_dropout", "hidden_dropout", "classifier_dropout", "max_position_embeddings",
                 "layer_norm_eps", "use_parallel_residual", "attention_bias", "tie_word_embeddings", "bos_token_id",
                 "eos_token_id", "pad_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.partial_rotary_factor == theirs.rope_parameters["partial_rotary_factor"]
    older = GPTNeoXConfig(rotary_pct=0.5, rotary_emb_base=500)
    assert (older.partial_rotary_factor, older.rope_theta, older.rotary_emb_base) == (0.5, 500, 500)
    parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0, "partial_rotary_factor": 1.0}
    scaled = GPTNeoXConfig.from_dict({"rope_parameters": parameters, "rotary_pct": 0.5})
    assert scaled.partial_rotary_factor == 1.0 and scaled.rope_theta == 100.0  # the dict wins, as in the reference
    assert scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}


@pytest.mark.parametrize("values, message", [
    (dict(rotary_pct=0.1), "partial_rotary_factor"),
    (dict(hidden_act="tanh"), "hidden_act"),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope_type"),
    (dict(rope_scaling={"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 8,
                        "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}), "longrope"),
    (dict(hidden_size=66), "hidden_size"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        GPTNeoXConfig(**{**TINY, **values})


def test_the_cpu_kernel_refuses_gpt_neox(tiny):
    from openformers.kernels import llama as llama_kernel

    model = tiny[2]
    assert llama_kernel.refusal(model.config) is not None and not llama_kernel.eligible(model)


def test_heads_build_on_the_gpt_neox_base_model():
    config = GPTNeoXConfig(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "GPTNeoXModel" else model.gpt_neox
        assert type(base).__name__ == "GPTNeoXModel" and base.rotary_emb.head_dim == 8
    assert openformers.GPTNeoXForTokenClassification(config).classifier.out_features == 2


# GGUF files as llama.cpp's converter writes a "gptneox" checkpoint: its names, and the fused rows regrouped as all
# queries, all keys, all values.

GGUF_NAMES = {
    "gpt_neox.embed_in": "token_embd", "gpt_neox.final_layer_norm": "output_norm", "lm_head": "output",
    "gpt_neox.layers": "blk", "attention.query_key_value": "attn_qkv", "attention.dense": "attn_output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up",
    "mlp.dense_4h_to_h": "ffn_down",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    writer = gguf.GGUFWriter(str(path), "gptneox")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(hidden)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(int(config.rope_parameters["partial_rotary_factor"] * hidden // heads))
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_head_count(heads)
    writer.add_parallel_residual(config.use_parallel_residual)
    writer.add_layer_norm_eps(config.layer_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    for name, tensor in reference.state_dict().items():
        if "query_key_value" in name:  # (heads, 3, hs, ...) -> (3, heads, hs, ...)
            tensor = tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        for hf, cpp in GGUF_NAMES.items():
            name = name.replace(hf, cpp)
        writer.add_tensor(name, tensor.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("variant", ["parallel", "sequential"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "pythia.gguf", reference)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "pythia.gguf")
    assert isinstance(model, GPTNeoXForCausalLM) and model.generation_config.eos_token_id == 2
    assert model.config.use_parallel_residual == reference.config.use_parallel_residual
    assert model.config.rotary_dim == int(reference.config.rope_parameters["partial_rotary_factor"] * 16)
    _assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "pythia.gguf").model_type == "gpt_neox"


# The tokenizer: the reference's GPTNeoXTokenizer keeps a tokenizer.json's vocabulary, merges and added tokens and
# builds its own pipeline around them (NFC, byte-level, no offset trimming, BOS/EOS on request).

TEXTS = ["Hello world, this is GPT-NeoX.", "  two  spaces and\ttabs\n newline", "café déjà vu ñ", "3.14 and 12345",
         "e\u0301 composed by NFC", "<|endoftext|> between <|padding|> specials", ""]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)  # Pythia's file; the reference ignores it
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    folder = tmp_path_factory.mktemp("gpt-neox-tokenizer")
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPTNeoXTokenizerFast"}))
    return folder


@pytest.mark.parametrize("config_names_the_class", [True, False])
def test_tokenizer_ids_and_offsets_match_the_reference(tokenizer_folder, config_names_the_class, tmp_path):
    folder = tokenizer_folder
    if not config_names_the_class:  # only config.json's model_type says which class
        folder = tmp_path
        (folder / "tokenizer.json").write_text((tokenizer_folder / "tokenizer.json").read_text())
        (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "GPTNeoXTokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        assert ours.decode(got["input_ids"]) == reference.decode(expected["input_ids"])
    assert ours("a pair", "of texts")["input_ids"] == reference("a pair", "of texts")["input_ids"]
    batch = dict(padding=True, return_tensors="pt")
    assert ours(TEXTS[:3], **batch)["input_ids"].tolist() == reference(TEXTS[:3], **batch)["input_ids"].tolist()


def test_tokenizer_from_vocab_json_and_merges_txt_matches_the_reference(tokenizer_folder, tmp_path):
    from tokenizers import Tokenizer

    Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json")).model.save(str(tmp_path))  # vocab.json, merges.txt
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPTNeoXTokenizer"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    folder = openformers.AutoTokenizer.from_pretrained(tmp_path)
    files = openformers.GPTNeoXTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")
    for ours in (folder, files):
        assert type(ours).__name__ == "GPTNeoXTokenizer" and ours.pad_token == reference.pad_token == "<|padding|>"
        for text in TEXTS:
            expected = reference(text, return_offsets_mapping=True)
            got = ours(text, return_offsets_mapping=True)
            assert got["input_ids"] == expected["input_ids"], text
            assert got["offset_mapping"] == expected["offset_mapping"], text


def test_tokenizer_options_and_saving_match_the_reference(tokenizer_folder, tmp_path):
    options = dict(add_prefix_space=True, add_bos_token=True, add_eos_token=True)
    reference = transformers.GPTNeoXTokenizer.from_pretrained(str(tokenizer_folder), **options)
    ours = openformers.GPTNeoXTokenizer.from_pretrained(tokenizer_folder, **options)
    for text in TEXTS[:4]:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
    # Saved and read back, the prefix space stays; BOS and EOS do not, as the reference lets a folder's tokenizer.json
    # decide over its tokenizer_config.json's add_bos_token and add_eos_token.
    ours.save_pretrained(tmp_path)
    plain = transformers.GPTNeoXTokenizer.from_pretrained(str(tokenizer_folder), add_prefix_space=True)
    for reloaded in (transformers.AutoTokenizer.from_pretrained(str(tmp_path)),
                     openformers.AutoTokenizer.from_pretrained(tmp_path)):
        assert type(reloaded).__name__ == "GPTNeoXTokenizer"
        for text in TEXTS[:4]:
            assert reloaded(text)["input_ids"] == plain(text)["input_ids"], text
    expected = transformers.AutoTokenizer.from_pretrained(str(tmp_path), add_bos_token=True)("a")["input_ids"]
    assert openformers.AutoTokenizer.from_pretrained(tmp_path, add_bos_token=True)("a")["input_ids"] == expected
    assert expected[0] == plain.bos_token_id


@torch.inference_mode()
def test_inputs_embeds_and_tuples_match_the_reference(tiny):
    _, reference, model = tiny
    inputs = _inputs("CausalLM")
    given = dict(inputs_embeds=reference.gpt_neox.embed_in(inputs["input_ids"]),
                 attention_mask=inputs["attention_mask"], labels=inputs["labels"], return_dict=False)
    ours, theirs = model(**given), reference(**given)
    for got, expected in zip(ours[:2], theirs[:2]):  # loss, logits
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_text_generation_pipeline_matches_the_reference(tokenizer_folder, tmp_path):
    """A GPT-NeoX model and its tokenizer in one folder: the pipeline's texts are the reference's."""
    vocabulary = len(transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder)))
    _reference(vocab_size=vocabulary, pad_token_id=1, bos_token_id=0, eos_token_id=0).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((tokenizer_folder / name).read_text())
    prompts = ["Hello world, this", "café déjà"]
    options = dict(max_new_tokens=8, do_sample=False)
    expected = transformers.pipeline("text-generation", model=str(tmp_path))(prompts, **options)
    assert openformers.pipeline("text-generation", model=tmp_path)(prompts, **options) == expected


@pytest.mark.parametrize("quantization, tolerance", [("int8", 0.02), ("int4", 0.2)])
@torch.inference_mode()
def test_quantized_loading_stays_near_the_reference(tiny, quantization, tolerance):
    """from_pretrained(..., quantization=...) packs every projection; the logits move by the rounding only."""
    folder, reference, _ = tiny
    model = AutoModelForCausalLM.from_pretrained(folder, quantization=quantization)
    ids = _ids(1, 12)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=tolerance, rtol=0)
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 16)


def test_gguf_tokenizer_of_gpt_neox_vocabulary_matches_the_reference(tokenizer_folder, tmp_path):
    """llama.cpp names GPT-NeoX's vocabulary "olmo" (tokenizer.ggml.pre) and splits it with GPT-2's pattern."""
    import gguf

    data = json.loads((tokenizer_folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    writer = gguf.GGUFWriter(str(tmp_path / "pythia.gguf"), "gpt2")  # the reference reads no gptneox file
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("olmo")
    tokens = sorted(vocab, key=vocab.get)
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t.startswith("<|") else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(merge) for merge in data["model"]["merges"]])
    writer.add_bos_token_id(vocab["<|endoftext|>"])
    writer.add_eos_token_id(vocab["<|endoftext|>"])
    writer.add_pad_token_id(vocab["<|padding|>"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="pythia.gguf")
    ours = _load_quietly(openformers.AutoTokenizer.from_pretrained, tmp_path / "pythia.gguf")
    for text in TEXTS[:4]:
        assert ours.encode(text) == reference.encode(text), text


@pytest.mark.parametrize("overrides", [
    dict(hidden_act="relu", rotary_pct=0.75),
    dict(hidden_act="gelu_new", use_parallel_residual=False, attention_bias=False),
], ids=["relu", "gelu-new-sequential-no-bias"])
@torch.inference_mode()
def test_other_activations_match_the_reference(overrides, tmp_path):
    reference = _reference(**overrides)
    reference.save_pretrained(tmp_path)
    model = _load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    _assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), str(overrides))
    ids = _ids(1, 6, seed=6)
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()

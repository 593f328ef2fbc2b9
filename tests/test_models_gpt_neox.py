"""GPT-NeoX / Pythia (model_type "gpt_neox") against the reference, on tiny random models it makes and saves.

Parallel and sequential residuals, partial rotary embeddings (rotary_pct), with and without attention biases, linear
rope scaling and tied embeddings; every head the reference has, on a right- and a left-padded row with the head's
labels; greedy and beam generation; saving both ways; GGUF files written as llama.cpp's converter writes them; and
the GPTNeoXTokenizer, which the reference builds from a tokenizer.json's vocabulary in its own way.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

transformers = pytest.importorskip("transformers")


class TestGPTNeoX(DecoderFamilyTests):
    REFERENCE_CONFIG = "GPTNeoXConfig"
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
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: "norm." in name and name.endswith("weight"))
    LM_LABELS_ARE_THE_TOKENS = True
    SAVED_CONFIG_ATTRIBUTES = ("use_parallel_residual", "attention_bias", "tie_word_embeddings", "rope_parameters")

    @torch.inference_mode()
    def test_causal_lm_saves_what_the_reference_loads(self, tiny, tmp_path):
        super().test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path)
        reference = tiny[1]
        stored = load_file(tmp_path / "model.safetensors")
        # transformers 4's name, as theirs
        assert ("embed_out.weight" in stored) != reference.config.tie_word_embeddings
        assert "lm_head.weight" not in stored

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives every variant the kernel's decoding step (parallel or sequential branches, the fused
        q/k/v read head by head, partial rotary, with or without biases), whose steps give the reference's logits
        and whose greedy tokens are the reference's."""
        folder, reference, _ = tiny
        model = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
        assert_kernel_steps_and_generates_as_the_reference(model, reference, _ids(1, 12, seed=9))

    @pytest.mark.parametrize("quantization, tolerance", [("int8", 0.02), ("int4", 0.2)])
    @torch.inference_mode()
    def test_quantized_loading_stays_near_the_reference(self, tiny, quantization, tolerance):
        """from_pretrained(..., quantization=...) packs every projection; the logits move by the rounding only."""
        folder, reference, _ = tiny
        model = AutoModelForCausalLM.from_pretrained(folder, quantization=quantization)
        ids = _ids(1, 12)
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=tolerance, rtol=0)
        assert model.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 16)


TINY, VARIANTS, HEADS = TestGPTNeoX.TINY, TestGPTNeoX.VARIANTS, TestGPTNeoX.HEADS
_reference, _ids, _inputs = TestGPTNeoX.reference, TestGPTNeoX.ids, TestGPTNeoX.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


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
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.partial_rotary_factor == 0.5 and model.config.rotary_pct == 0.5
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "embed_out checkpoint")


def test_config_defaults_and_older_names_match_the_reference():
    ours, theirs = GPTNeoXConfig(), transformers.GPTNeoXConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "attention_dropout", "hidden_dropout", "classifier_dropout", "max_position_embeddings", "layer_norm_eps",
        "use_parallel_residual", "attention_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id",
        "pad_token_id",
    ))
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
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type"),
    (dict(rope_scaling={"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 8,
                        "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}), "longrope"),
    (dict(hidden_size=66), "hidden_size"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        GPTNeoXConfig(**{**TINY, **values})


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
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if "query_key_value" in name:  # (heads, 3, hs, ...) -> (3, heads, hs, ...)
            tensor = tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", ["parallel", "sequential"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "pythia.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "pythia.gguf")
    assert isinstance(model, GPTNeoXForCausalLM) and model.generation_config.eos_token_id == 2
    assert model.config.use_parallel_residual == reference.config.use_parallel_residual
    assert model.config.rotary_dim == int(reference.config.rope_parameters["partial_rotary_factor"] * 16)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "pythia.gguf").model_type == "gpt_neox"



def test_gguf_without_a_required_key_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "broken.gguf"), "gptneox")
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"broken.gguf lacks the GGUF metadata key gptneox.feed_forward_length"):
        openformers.AutoConfig.from_pretrained(tmp_path / "broken.gguf")


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
    ours = load_quietly(openformers.AutoTokenizer.from_pretrained, tmp_path / "pythia.gguf")
    for text in TEXTS[:4]:
        assert ours.encode(text) == reference.encode(text), text


@pytest.mark.parametrize("overrides", [
    dict(hidden_act="relu", rotary_pct=0.75),
    dict(hidden_act="gelu_new", use_parallel_residual=False, attention_bias=False),
], ids=["relu", "gelu-new-sequential-no-bias"])
@torch.inference_mode()
def test_other_activations_match_the_reference(overrides, tmp_path):
    reference = _reference(**overrides)
    model = load_saved(reference, tmp_path)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), str(overrides))
    ids = _ids(1, 6, seed=6)
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()

"""GPT-BigCode (model_type "gpt_bigcode": StarCoder, SantaCoder...) against the reference, on tiny random models it
makes and saves.

Multi-query attention (every released checkpoint) and the per-head layout without it, unscaled attention scores, the
exact GELU and the reference's "gelu_fast" (SantaCoder's), other widths; every head the reference has, greedy and beam
generation, padded batches, cached decoding, bfloat16, saving both ways, a training step, the config's defaults,
aliases and refusals, GGUF files of llama.cpp's "starcoder" architecture, the tokenizer folders of the family and the
CPU kernel's refusal.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_generate_matches,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_hidden_states_and_attentions_match,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GPTBigCodeConfig, GPTBigCodeForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")


class TestGPTBigCode(DecoderFamilyTests):
    REFERENCE_CONFIG = "GPTBigCodeConfig"
    TINY = dict(
        vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=48, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,  # weights large enough that attention is far from uniform and a wrong detail shows
    )
    VARIANTS = {
        "multi-query": {},  # StarCoder's and SantaCoder's layout
        "multi-head": dict(multi_query=False, n_inner=40, tie_word_embeddings=False, activation_function="gelu_fast"),
        "unscaled-gelu": dict(scale_attn_weights=False, activation_function="gelu", layer_norm_epsilon=1e-3),
    }
    HEADS = {
        "GPTBigCodeModel": "AutoModel",
        "GPTBigCodeForCausalLM": "AutoModelForCausalLM",
        "GPTBigCodeForSequenceClassification": "AutoModelForSequenceClassification",
        "GPTBigCodeForTokenClassification": "AutoModelForTokenClassification",
    }
    EMBEDS_TOKEN_TYPES = True
    LOWEST_ID = 3
    IS_NORM = staticmethod(
        lambda name: name.endswith("weight") and any(part in ("ln_1", "ln_2", "ln_f") for part in name.split(".")))
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = TRAINING_VARIANTS = ["multi-query", "multi-head"]
    TRAINING_OVERRIDES = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    SAVED_CONFIG_ATTRIBUTES = ("multi_query", "num_key_value_heads", "n_inner", "n_embd", "n_layer", "n_head",
                               "n_positions", "scale_attn_weights", "activation_function", "layer_norm_epsilon",
                               "tie_word_embeddings")

    @torch.inference_mode()
    def test_causal_lm_saves_what_the_reference_loads(self, tiny, tmp_path):
        super().test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["num_key_value_heads"] == tiny[2].config.num_key_value_heads

    @torch.inference_mode()
    def test_hidden_states_and_attention_weights_match_the_reference(self, tiny):
        folder, _, model = tiny
        ours = assert_hidden_states_and_attentions_match(model, folder, *padded_batch(_ids(2, 9, seed=7)))
        assert ours.attentions[0].shape == (2, TINY["n_head"], 9, 9)  # the shared key/value head serves every head

    @torch.inference_mode()
    def test_positions_past_the_table_are_refused_by_name(self, tiny):
        model = tiny[2]
        with pytest.raises(ValueError, match="past the 48 positions GPT-BigCode has [(]n_positions[)]"):
            model(_ids(1, TINY["n_positions"] + 1))
        cache = DynamicCache()
        model(_ids(1, TINY["n_positions"]), past_key_values=cache)
        with pytest.raises(ValueError, match="n_positions"):
            model(_ids(1, 1), past_key_values=cache)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_multi_query_models_and_refuses_the_rest_by_name(self, tiny, variant):
        """Multi-query models (every released one) take the kernel's decoding step, which gives the reference's
        logits and tokens; the step reads neither the head-by-head fused q/k/v of multi_query=False nor the exact GELU,
        and generate runs those models' layers."""
        from openformers.kernels import llama as llama_kernel

        _, reference, model = tiny
        if variant == "multi-query":
            assert_kernel_steps_and_generates_as_the_reference(model, reference, _ids(1, 12, seed=9))
            return
        named = {"multi-head": "activation_function='gelu_fast'", "unscaled-gelu": "activation_function='gelu'"}
        assert llama_kernel.refusal(model.config) == f"{named[variant]} is not implemented by the decoding kernel"
        model.config.activation_function = "gelu_pytorch_tanh"
        if variant == "multi-head":
            assert llama_kernel.refusal(model.config) == "multi_query=False is not implemented by the decoding kernel"
        model.config.activation_function = reference.config.activation_function
        assert not llama_kernel.eligible(model) and model.transformer.accelerated_step is None
        calls = []
        hook = model.transformer.h[0].register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            with torch.inference_mode():
                assert_generate_matches(model, reference, _ids(1, 5), torch.ones(1, 5, dtype=torch.long))
        finally:
            hook.remove()
        assert len(calls) == 10  # the prompt and every new token but the last went through the layers


TINY, VARIANTS = TestGPTBigCode.TINY, TestGPTBigCode.VARIANTS
_reference, _ids, _inputs = TestGPTBigCode.reference, TestGPTBigCode.ids, TestGPTBigCode.inputs


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("variant", ["multi-query", "multi-head"])
@torch.inference_mode()
def test_bfloat16_logits_equal_the_references(variant, attention, tmp_path):
    """In bfloat16 every rounding is the reference's, on the fused path and on the eager one (whose softmax both take
    in float32)."""
    _reference(**VARIANTS[variant]).save_pretrained(tmp_path)
    options = dict(dtype=torch.bfloat16, attn_implementation=attention)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, **options).eval()
    model = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, **options), tmp_path)
    inputs = _inputs("GPTBigCodeModel")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=0, rtol=0)


def test_config_defaults_match_the_reference():
    ours, theirs = GPTBigCodeConfig(), transformers.GPTBigCodeConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function", "resid_pdrop",
        "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "scale_attn_weights", "bos_token_id",
        "eos_token_id", "pad_token_id", "attention_softmax_in_fp32", "scale_attention_softmax_in_fp32",
        "multi_query", "add_cross_attention", "tie_word_embeddings", "num_key_value_heads", "hidden_size",
        "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
    ))
    # The common names set GPT-2's fields, as the reference's attribute_map does.
    given = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, max_position_embeddings=128,
                 multi_query=False)
    ours, theirs = GPTBigCodeConfig(**given), transformers.GPTBigCodeConfig(**given)
    assert_same_attributes(ours, theirs, ("n_embd", "n_layer", "n_head", "n_positions"))
    # The reference derives its num_key_value_heads before the common names apply (12 here); its attention reads n_head.
    assert (ours.n_embd, ours.num_key_value_heads, ours.head_dim) == (64, 8, 8)
    # num_key_value_heads follows multi_query, which alone shapes the reference's attention: a stated one is dropped.
    stated = GPTBigCodeConfig(num_key_value_heads=3)
    assert stated.num_key_value_heads == 1 and "num_key_value_heads" not in stated.extra


@pytest.mark.parametrize("values, message", [
    (dict(n_embd=30), "n_embd=30"),
    (dict(n_inner=0), "n_inner=0"),
    (dict(activation_function="swiglu"), "activation_function='swiglu'"),
    (dict(attn_pdrop=1.5), "attn_pdrop=1.5"),
    (dict(multi_query="yes"), "multi_query='yes'"),
    (dict(add_cross_attention=True), "add_cross_attention=True"),
    (dict(n_positions=None), "n_positions=None"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        GPTBigCodeConfig(**{**TINY, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_bigcode", **TINY, **values}))
    with pytest.raises(ValueError, match=f"config.json.*{message}"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "starcoder" checkpoint: its names and the tensors as they are (c_attn's
# rows in the multi-query order, all queries then the key then the value), no output tensor where the head is tied.
# Without multi_query the fused rows are written as llama.cpp reads them with one key/value head per query head: all
# queries, all keys, all values.

GGUF_NAMES = {
    "transformer.wte": "token_embd", "transformer.wpe": "position_embd", "transformer.ln_f": "output_norm",
    "lm_head": "output", "transformer.h": "blk", "ln_1": "attn_norm", "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output", "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}


def _write_gguf(path, reference, kv_heads=None):
    import gguf

    config = reference.config
    heads = config.n_head
    kv_heads = config.num_key_value_heads if kv_heads is None else kv_heads
    writer = gguf.GGUFWriter(str(path), "starcoder")
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if "c_attn" in name and not config.multi_query:  # (nh, 3, hs, ...) -> (3, nh, hs, ...)
            tensor = tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", ["multi-query", "multi-head"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "starcoder.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "starcoder.gguf")
    assert isinstance(model, GPTBigCodeForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, reference.config, (
        "multi_query", "num_key_value_heads", "n_positions", "tie_word_embeddings",
    ))
    assert model.config.intermediate_size == (reference.config.n_inner or 4 * reference.config.n_embd)
    assert model.config.layer_norm_epsilon == pytest.approx(reference.config.layer_norm_epsilon)  # a float32 there
    inputs = _inputs("CausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    config = openformers.AutoConfig.from_pretrained(tmp_path / "starcoder.gguf")
    assert config.model_type == "gpt_bigcode" and "rope_theta" not in config.to_dict()


def test_gguf_with_grouped_key_value_heads_is_refused(tmp_path):
    _write_gguf(tmp_path / "grouped.gguf", _reference(), kv_heads=2)
    with pytest.raises(ValueError, match="grouped.gguf: starcoder.attention.head_count_kv=2"):
        openformers.AutoConfig.from_pretrained(tmp_path / "grouped.gguf")


# The tokenizer: StarCoder's folders hold a byte-level BPE tokenizer.json and name GPT2Tokenizer; the reference's Auto
# mapping registers its generic TokenizersBackend for model_type "gpt_bigcode", which wins over the class a folder
# names.

TEXTS = ["def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1)", "<fim_prefix>x = 1<fim_suffix>", "  é\t2"]


def _tokenizer_folder(folder, names_the_class: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<fim_prefix>", "<fim_suffix>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 10, trainer)
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
              "additional_special_tokens": ["<fim_prefix>", "<fim_suffix>"]}
    if names_the_class:
        config["tokenizer_class"] = "GPT2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_bigcode"}))
    return folder


@pytest.mark.parametrize("names_the_class", [True, False], ids=["GPT2Tokenizer-named", "none-named"])
def test_tokenizer_of_a_gpt_bigcode_folder_matches_the_reference(names_the_class, tmp_path):
    folder = _tokenizer_folder(tmp_path / "tokenizer", names_the_class)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    assert ours.special_tokens_map == reference.special_tokens_map
    for text in TEXTS:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
        assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference(text)["input_ids"]), text

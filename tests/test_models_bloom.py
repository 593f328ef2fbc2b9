"""BLOOM (model_type "bloom") against the reference, on tiny random models it makes and saves.

Residuals from the layer's input and from its normalized input (apply_residual_connection_post_layernorm), 4 heads and
6 (ALiBi's slopes for a number of heads that is not a power of two); every head the reference has, on a right- and a
left-padded row with the head's labels; ALiBi's positions over a left-padded batch; greedy and beam generation; saving
both ways and the older checkpoints without the `transformer.` prefix; slow_but_exact's sliced projections; GGUF files
written as llama.cpp's converter writes them; and BLOOM's tokenizer.json, which the reference reads with its backend.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_hidden_states_and_attentions_match,
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    assert_training_step_matches,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, BloomConfig, BloomForCausalLM

transformers = pytest.importorskip("transformers")


class TestBloom(DecoderFamilyTests):
    """ALiBi counts each key's position over the real tokens, so that a left-padded row is biased as the row alone
    (test_left_padded_batch_equals_single_rows)."""

    REFERENCE_CONFIG = "BloomConfig"
    TINY = dict(vocab_size=128, hidden_size=32, n_layer=2, n_head=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    VARIANTS = {
        "residual-from-input": {},
        "residual-post-layernorm-6-heads": dict(apply_residual_connection_post_layernorm=True, n_head=6,
                                                hidden_size=48),
    }
    HEADS = {
        "BloomModel": "AutoModel",
        "BloomForCausalLM": "AutoModelForCausalLM",
        "BloomForSequenceClassification": "AutoModelForSequenceClassification",
        "BloomForTokenClassification": "AutoModelForTokenClassification",
        "BloomForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: name.endswith("weight") and ("layernorm" in name or "ln_f" in name))
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = list(VARIANTS)
    SAVED_CONFIG_ATTRIBUTES = ("n_layer", "n_head", "hidden_size", "apply_residual_connection_post_layernorm",
                               "tie_word_embeddings", "layer_norm_epsilon", "pretraining_tp", "slow_but_exact")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        model = tiny[2]
        assert model.lm_head.weight is model.transformer.word_embeddings.weight

    @torch.inference_mode()
    def test_hidden_states_and_attention_weights_match_the_reference(self, tiny):
        """Computed step by step (eager), ALiBi's biases are added to the scaled scores as a float mask; the first
        hidden state is the embeddings after their LayerNorm."""
        folder, _, model = tiny
        ours = assert_hidden_states_and_attentions_match(model, folder, *padded_batch(_ids(2, 9, seed=7)))
        assert len(ours.hidden_states) == TINY["n_layer"] + 1

    @pytest.mark.parametrize("attention", ["sdpa", "eager"])
    def test_training_loss_and_gradients_match_the_reference(self, attention, tmp_path):
        """Dropout off, the loss and every gradient of a training step are the reference's (whose GELU has a backward
        of its own), with gradient checkpointing too. The reference computes attention step by step: on the fused path
        the padding queries of a left-padded row, which see no key, pass other gradients back, so that path is checked
        on a right-padded batch and the step-by-step one on the left- and right-padded batch."""
        reference = _reference(**VARIANTS["residual-post-layernorm-6-heads"])
        reference.save_pretrained(tmp_path)
        model = load_quietly(
            lambda folder: AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention), tmp_path)
        inputs = _inputs("CausalLM")
        if attention == "sdpa":
            inputs = {name: t[:1] for name, t in inputs.items()}  # the right-padded row
        assert_training_step_matches(model, reference, inputs, checkpointing=(False, True))

    @torch.inference_mode()
    def test_checkpoint_without_the_transformer_prefix_loads(self, tiny, tmp_path):
        """The older BLOOM files name the base model's weights without `transformer.` (and store no lm_head)."""
        folder, reference, _ = tiny
        weights = load_file(folder / "model.safetensors")
        assert any(name.startswith("transformer.") for name in weights)
        bare = {name.removeprefix("transformer."): t for name, t in weights.items() if name != "lm_head.weight"}
        save_file(bare, tmp_path / "model.safetensors", metadata={"format": "pt"})
        (tmp_path / "config.json").write_text((folder / "config.json").read_text())
        for auto_class in ("AutoModelForCausalLM", "AutoModel"):
            model = load_quietly(getattr(openformers, auto_class).from_pretrained, tmp_path)
            theirs = getattr(transformers, auto_class).from_pretrained(tmp_path).eval()
            inputs = _inputs(type(model).__name__)
            assert_outputs_close(outputs_of(model, inputs), outputs_of(theirs, inputs), f"{auto_class} without prefix")
        assert_outputs_close(_outputs(model, "BloomModel"), _outputs(reference.transformer, "BloomModel"), "base")

    @torch.inference_mode()
    def test_alibi_positions_count_only_real_tokens(self, tiny):
        """A key's ALiBi position counts the real tokens before it: with a hole in the mask, the keys after it are
        one position nearer than their index says (a shift of every key alike, as left padding gives, changes
        nothing)."""
        _, reference, model = tiny
        ids = _ids(2, 8, seed=9)
        mask = torch.ones_like(ids)
        mask[0, 3] = 0
        expected = reference(ids, attention_mask=mask).logits
        got = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(got[:, 4:], expected[:, 4:], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[:, :3], expected[:, :3], atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_alibi_past_256_positions_matches_the_reference(self, tiny):
        """BLOOM's reference multiplies slopes by positions in float32 (Falcon's in bfloat16, which rounds positions
        past 256): so do ours."""
        _, reference, model = tiny
        ids = _ids(1, 300, seed=11)
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives BLOOM the kernel's decoding step (ALiBi's biases, the embeddings' LayerNorm, the fused
        q/k/v head by head), whose steps and greedy tokens are the reference's; the residuals after the norms
        (apply_residual_connection_post_layernorm) it refuses, and generation runs the layers."""
        folder, reference, model = tiny
        post = model.config.apply_residual_connection_post_layernorm
        refused = "apply_residual_connection_post_layernorm=True" if post else None
        assert_kernel_steps_unless_refused(folder, reference, _ids(1, 12, seed=9), "bloom", refused)

TINY, VARIANTS = TestBloom.TINY, TestBloom.VARIANTS
_reference, _ids, _inputs = TestBloom.reference, TestBloom.ids, TestBloom.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


@pytest.mark.parametrize("pretraining_tp", [2, 3])
@torch.inference_mode()
def test_slow_but_exact_slices_match_the_reference(pretraining_tp, tmp_path):
    """slow_but_exact sums pretraining_tp slices of the output projections (3 slices of 32: uneven ones), without
    their biases, as the reference does; off, pretraining_tp changes nothing."""
    reference = _reference(slow_but_exact=True, pretraining_tp=pretraining_tp)
    model = load_saved(reference, tmp_path)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "slow_but_exact")
    exact_off = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, slow_but_exact=False),
                             tmp_path)
    difference = (exact_off(**_inputs("BloomModel")).logits - model(**_inputs("BloomModel")).logits).abs().max()
    assert difference > 1e-3  # the biases left out of the sum


@pytest.mark.parametrize("quantization, tolerance, overrides", [
    ("int8", 0.02, {}), ("int4", 0.2, {}), ("int8", 0.02, dict(slow_but_exact=True, pretraining_tp=2)),
], ids=["int8", "int4", "int8-slow-but-exact"])
@torch.inference_mode()
def test_quantized_loading_stays_near_the_reference(quantization, tolerance, overrides, tmp_path):
    """from_pretrained(..., quantization=...) packs every projection; the logits move by the rounding only (with
    slow_but_exact too, whose sliced sums have no float weights to slice then)."""
    reference = _reference(**overrides)
    reference.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization=quantization)
    ids = _ids(1, 12)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=tolerance, rtol=0)
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 16)


def test_config_defaults_and_names_match_the_reference():
    ours, theirs = BloomConfig(), transformers.BloomConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "n_layer", "n_head", "num_hidden_layers", "num_attention_heads",
        "layer_norm_epsilon", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
        "apply_residual_connection_post_layernorm", "hidden_dropout", "attention_dropout", "pretraining_tp",
        "slow_but_exact", "tie_word_embeddings",
    ))
    named = BloomConfig(num_hidden_layers=3, num_attention_heads=2, n_embed=16)
    assert (named.n_layer, named.n_head, named.hidden_size, named.head_dim) == (3, 2, 16, 8)
    assert "num_hidden_layers" not in named.to_dict() and named.to_dict()["n_layer"] == 3
    named.num_hidden_layers = 5
    assert named.n_layer == 5
    # a BLOOM config.json's keys the model does not read stay, and are written back
    config = BloomConfig.from_dict({"n_layer": 2, "seq_length": 2048, "masked_softmax_fusion": True})
    assert config.to_dict()["seq_length"] == 2048


@pytest.mark.parametrize("values, message", [
    (dict(hidden_size=30), "hidden_size=30"),
    (dict(n_head=0), "n_head=0"),
    (dict(num_hidden_layers=-1), "n_layer=-1"),
    (dict(pretraining_tp=0), "pretraining_tp=0"),
    (dict(hidden_dropout=1.5), "hidden_dropout=1.5"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0"),
    (dict(apply_residual_connection_post_layernorm="yes"), "apply_residual_connection_post_layernorm='yes'"),
])
def test_config_refuses_bad_values_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        BloomConfig(**{**TINY, **values})


def test_bad_config_json_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bloom", "hidden_size": 30, "n_head": 4}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: hidden_size=30"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "bloom" checkpoint: its names, the fused rows regrouped as all
# queries, all keys, all values, and the embeddings stored a second time as the output projection.

GGUF_NAMES = {
    "transformer.word_embeddings_layernorm": "token_embd_norm", "transformer.word_embeddings": "token_embd",
    "transformer.ln_f": "output_norm", "lm_head": "output", "transformer.h": "blk",
    "self_attention.query_key_value": "attn_qkv", "self_attention.dense": "attn_output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up",
    "mlp.dense_4h_to_h": "ffn_down",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    heads, hidden = config.n_head, config.hidden_size
    writer = gguf.GGUFWriter(str(path), "bloom")
    writer.add_context_length(hidden)  # the converter's seq_length, else n_embed
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(4 * hidden)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_vocab_size(config.vocab_size)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if "query_key_value" in name:  # (heads, 3, hs, ...) -> (3, heads, hs, ...)
            tensor = tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
        if gguf_name == "token_embd.weight":
            writer.add_tensor("output.weight", tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**{**VARIANTS[variant], "apply_residual_connection_post_layernorm": False})
    _write_gguf(tmp_path / "bloom.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "bloom.gguf")
    assert isinstance(model, BloomForCausalLM) and model.generation_config.eos_token_id == 2
    assert (model.config.n_head, model.config.n_layer, model.config.pad_token_id) == (reference.config.n_head, 2, 0)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    config = openformers.AutoConfig.from_pretrained(tmp_path / "bloom.gguf")
    assert config.model_type == "bloom" and "rope_theta" not in config.to_dict()


def test_gguf_without_a_required_key_is_refused(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "broken.gguf"), "bloom")
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    finish_gguf(writer)
    with pytest.raises(ValueError, match=r"broken.gguf lacks the GGUF metadata key bloom.attention[.]head_count"):
        openformers.AutoConfig.from_pretrained(tmp_path / "broken.gguf")


# The tokenizer: BLOOM's folders hold only a tokenizer.json (byte-level BPE after a split at spaces and punctuation,
# no prefix space) and a tokenizer_config.json naming BloomTokenizerFast, which the reference 5.x reads with its
# backend, padding on the left.

TEXTS = ["Hello world, this is BLOOM.", "  two  spaces and\ttabs\n newline", "café déjà vu ñ, ¿qué?", "3.14 and 12345",
         "数学。标点，符号", "<s> between </s> specials <pad>", ""]
BLOOM_SPLIT = " ?[^(\\s|[.,!?…。，、।۔،])]+"


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(BLOOM_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    folder = tmp_path_factory.mktemp("bloom-tokenizer")
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bloom"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "padding_side": "left", "tokenizer_class": "BloomTokenizerFast",
    }))
    return folder


def test_tokenizer_ids_and_padding_match_the_reference(tokenizer_folder, tmp_path):
    reference = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ours = openformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    assert ours.padding_side == reference.padding_side == "left"
    assert ours.special_tokens_map == reference.special_tokens_map
    assert (ours.pad_token_id, ours.eos_token_id) == (reference.pad_token_id, reference.eos_token_id) == (3, 2)
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        assert ours.decode(got["input_ids"]) == reference.decode(expected["input_ids"]) == text
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == \
            reference.decode(expected["input_ids"], skip_special_tokens=True)
    batch = dict(padding=True, return_tensors="pt")
    got, expected = ours(TEXTS[:4], **batch), reference(TEXTS[:4], **batch)
    assert got["input_ids"].tolist() == expected["input_ids"].tolist()
    assert got["attention_mask"].tolist() == expected["attention_mask"].tolist()
    assert got["attention_mask"][:, 0].tolist() != got["attention_mask"][:, -1].tolist()  # padded on the left
    ours.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert reloaded.padding_side == "left"
    assert all(reloaded(text)["input_ids"] == reference(text)["input_ids"] for text in TEXTS)


def test_gguf_tokenizer_splits_as_blooms_tokenizer_json(tokenizer_folder, tmp_path):
    """llama.cpp names BLOOM's vocabulary "bloom" (tokenizer.ggml.pre): read from the GGUF file, it gives the ids of the
    tokenizer.json it was converted from."""
    import gguf

    data = json.loads((tokenizer_folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    writer = gguf.GGUFWriter(str(tmp_path / "bloom.gguf"), "bloom")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("bloom")
    tokens = sorted(vocab, key=vocab.get)
    writer.add_token_list(tokens)
    specials = ("<unk>", "<s>", "</s>", "<pad>")
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(merge) for merge in data["model"]["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(3)
    writer.add_add_bos_token(False)
    finish_gguf(writer)
    reference = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ours = load_quietly(openformers.AutoTokenizer.from_pretrained, tmp_path / "bloom.gguf")
    for text in TEXTS[:5]:
        assert ours.encode(text) == reference.encode(text), text

"""StableLM (model_type "stablelm") against the reference, on tiny random models it makes and saves.

The variants: StableLM 2 1.6B's layout (q/k/v biases, a LayerNorm before attention and one before the MLP, a quarter
of each head rotated), StableLM 2 12B's (parallel residual, per-head q/k LayerNorms, grouped-query attention) and
linear rope scaling with tied embeddings. Every head the reference has, on a right- and a left-padded row with the
head's labels; cached decoding, left padding, greedy and beam generation, a static cache, hidden states and
attention weights, a training step; saving both ways and transformers 4's config.json; GGUF files written as
llama.cpp's converter writes a "stablelm" checkpoint (per-head norms stacked, no rows permuted); and the tokenizer
class the reference picks for a StableLM folder whatever class its tokenizer_config.json names.
"""

import json
import warnings

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_gradient_checkpointing_changes_nothing,
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, StableLmConfig, StableLmForCausalLM

transformers = pytest.importorskip("transformers")


class TestStableLm(DecoderFamilyTests):
    REFERENCE_CONFIG = "StableLmConfig"
    TINY = dict(
        vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )
    VARIANTS = {
        "stablelm-2-1_6b": dict(use_qkv_bias=True),  # partial_rotary_factor 0.25 by default: 4 of 16 dimensions turn
        # a large epsilon, so that the norms' own (the per-head ones' too) shows in the logits
        "stablelm-2-12b": dict(use_parallel_residual=True, qk_layernorm=True, num_key_value_heads=2,
                               layer_norm_eps=0.1),
        "linear-rope-tied": dict(tie_word_embeddings=True, rope_parameters={
            "rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.5}),
    }
    HEADS = {
        "StableLmModel": "AutoModel",
        "StableLmForCausalLM": "AutoModelForCausalLM",
        "StableLmForSequenceClassification": "AutoModelForSequenceClassification",
        "StableLmForTokenClassification": "AutoModelForTokenClassification",
    }
    LOWEST_ID = 3
    # LayerNorm weights, the per-head ones (`q_layernorm.norms.3.weight`) among them, drawn around one
    IS_NORM = staticmethod(lambda name: name.endswith("weight") and "norm" in name)
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = ["stablelm-2-1_6b"]  # with the 12B layout over it: q/k/v biases, per-head norms, parallel residual
    HEAD_OVERRIDES = dict(num_labels=3, **VARIANTS["stablelm-2-12b"])
    TRAINING_VARIANTS = ["stablelm-2-1_6b", "stablelm-2-12b"]
    SAVED_CONFIG_ATTRIBUTES = ("use_qkv_bias", "qk_layernorm", "use_parallel_residual", "num_key_value_heads",
                               "tie_word_embeddings", "rope_parameters", "layer_norm_eps")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives StableLM the kernel's decoding step (LayerNorms with biases, partial rotary, q/k/v
        biases; StableLM 2 12B's per-head q/k LayerNorms), whose steps give the reference's logits and whose greedy
        tokens are the reference's."""
        folder, reference, model = tiny
        assert_kernel_steps_unless_refused(folder, reference, _ids(1, 12, seed=9), "stablelm", None)

    def test_auto_classes_pick_the_stablelm_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is StableLmConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "StableLmModel"
        with warnings.catch_warnings(record=True) as caught:  # the new head's weights are reported
            classifier = openformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        assert any("score.weight" in str(warning.message) for warning in caught)
        assert type(classifier).__name__ == "StableLmForSequenceClassification" and classifier.score.bias is None
        with pytest.raises(ValueError, match="no question-answering class for 'stablelm'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(folder)


TINY, VARIANTS = TestStableLm.TINY, TestStableLm.VARIANTS
_reference, _ids, _inputs = TestStableLm.reference, TestStableLm.ids, TestStableLm.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


def test_training_with_hidden_dropout_draws_the_references_masks(tmp_path):
    """hidden_dropout drops the MLP's output only: seeded alike, the reference and this model draw the same masks
    (attention's weights, without attention_dropout, draw none) and give the same loss, which dropout changes."""
    reference = _reference(hidden_dropout=0.3, **VARIANTS["stablelm-2-1_6b"])
    model = load_saved(reference, tmp_path)
    inputs = _inputs("CausalLM")
    with torch.no_grad():
        plain = model(**inputs).loss
        losses = []
        for seeded in (reference.train(), model.train()):
            torch.manual_seed(3)
            losses.append(seeded(**inputs).loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    assert abs(losses[1] - plain) > 1e-3


def test_gradient_checkpointing_with_dropout_changes_nothing(tmp_path):
    """hidden_dropout on the MLP's output and attention_dropout, drawn the same way with and without checkpointing."""
    model = load_saved(_reference(hidden_dropout=0.3, attention_dropout=0.2, **VARIANTS["stablelm-2-12b"]), tmp_path)
    model.train()
    assert_gradient_checkpointing_changes_nothing(model, _inputs("CausalLM"))


@torch.inference_mode()
def test_transformers_4_config_json_loads(tmp_path):
    """StableLM 2's config.json (transformers 4) has partial_rotary_factor, rope_theta and rope_scaling at the top and
    no rope_parameters; it loads as the reference loads it, and is written back in both layouts."""
    reference = _reference(partial_rotary_factor=0.5, use_qkv_bias=True)
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(partial_rotary_factor=0.5, rope_theta=10000.0, rope_scaling=None, use_cache=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.partial_rotary_factor == 0.5 and model.config.rotary_dim == 8
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "transformers 4 config")
    written = model.config.to_dict()
    assert written["partial_rotary_factor"] == written["rope_parameters"]["partial_rotary_factor"] == 0.5
    assert written["rope_theta"] == written["rope_parameters"]["rope_theta"] == 10000.0


def test_config_defaults_match_the_reference():
    ours, theirs = StableLmConfig(), transformers.StableLmConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "intermediate_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "layer_norm_eps",
        "tie_word_embeddings", "use_qkv_bias", "qk_layernorm", "use_parallel_residual", "hidden_dropout",
        "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.partial_rotary_factor == theirs.rope_parameters["partial_rotary_factor"] == 0.25
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0, "partial_rotary_factor": 0.5}
    scaled = StableLmConfig.from_dict({"rope_parameters": parameters, "partial_rotary_factor": 0.25})
    assert scaled.partial_rotary_factor == 0.5 and scaled.rope_theta == 100.0  # the dict wins, as in the reference
    assert scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert openformers.AutoConfig.for_model("stablelm", **TINY).num_key_value_heads == 4


@pytest.mark.parametrize("values, message", [
    (dict(partial_rotary_factor=0.1), "partial_rotary_factor=0.1"),
    (dict(partial_rotary_factor=1.5), "partial_rotary_factor=1.5"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(hidden_size=66), "hidden_size=66"),
    (dict(hidden_dropout=1.0), "hidden_dropout=1.0"),
    (dict(use_parallel_residual="yes"), "use_parallel_residual='yes'"),
    (dict(qk_layernorm=1), "qk_layernorm=1"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type='proportional'"),
    (dict(layer_norm_eps=0), "layer_norm_eps=0"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        StableLmConfig(**{**TINY, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "stablelm", **TINY, "num_key_value_heads": 3}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: num_key_value_heads=3"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "stablelm" checkpoint: Llama's tensor names, the rows as they are
# (llama.cpp rotates StableLM as Hugging Face does), each layer's per-head q/k norm weights stacked into one
# (heads, head_dim) tensor, and no ffn_norm in the layers of a parallel residual.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "self_attn.q_layernorm": "attn_q_norm", "self_attn.k_layernorm": "attn_k_norm",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "stablelm")
    add_decoder_metadata(writer, config)
    head_dim = config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(int(config.rope_parameters["partial_rotary_factor"] * head_dim))
    writer.add_parallel_residual(config.use_parallel_residual)
    writer.add_layer_norm_eps(config.layer_norm_eps)
    tensors, norms = {}, {}
    for _, name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if "_norm.norms." in name:  # blk.0.attn_q_norm.norms.3.weight: stacked by head, as llama.cpp's converter does
            stacked, _, head = name.removesuffix(".weight").rpartition(".norms.")
            norms.setdefault(f"{stacked}.weight", {})[int(head)] = tensor
        else:
            tensors[name] = tensor
    for name, by_head in norms.items():
        tensors[name] = torch.stack([by_head[h] for h in range(len(by_head))])
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", ["stablelm-2-1_6b", "stablelm-2-12b"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "stablelm.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "stablelm.gguf")
    assert isinstance(model, StableLmForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, reference.config, (
        "use_qkv_bias", "qk_layernorm", "use_parallel_residual", "num_key_value_heads",
    ))
    assert model.config.layer_norm_eps == pytest.approx(reference.config.layer_norm_eps)  # stored as float32
    assert model.config.rotary_dim == 4
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "stablelm.gguf").model_type == "stablelm"


# The tokenizer: StableLM 2's tokenizer.json is a byte-level BPE split by a tiktoken-style pattern (Arcade100k) and
# its tokenizer_config.json names GPT2TokenizerFast (StableLM-3B-4E1T's, GPT-NeoX's tokenizer, GPTNeoXTokenizerFast);
# the reference reads a stablelm folder with its tokenizers backend whatever the class named.

ARCADE_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
TEXTS = ["def hello_world():\n    print('Hello, world!')\n", "  two  spaces and\ttabs\n newline", "café déjà vu ñ",
         "3.14 and 12345678", "<|endoftext|> between specials", "I'M here, you'LL see", " leading space",
         "<|user|>\nHi<|endoftext|>\n<|assistant|>\n", "x  =  1 ,  y isn't", "日本語のテキスト", ""]


def _stablelm_tokenizer_folder(folder, tokenizer_class):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(ARCADE_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.add_special_tokens(["<|user|>", "<|assistant|>"])
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    settings = {"add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "clean_up_tokenization_spaces": True, "model_max_length": 4096}
    if tokenizer_class is not None:
        settings["tokenizer_class"] = tokenizer_class
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    (folder / "config.json").write_text(json.dumps({"model_type": "stablelm"}))
    return folder


@pytest.mark.parametrize("tokenizer_class", ["GPT2TokenizerFast", "GPTNeoXTokenizerFast", None])
def test_tokenizer_of_a_stablelm_folder_matches_the_reference(tokenizer_class, tmp_path):
    folder = _stablelm_tokenizer_folder(tmp_path / "stablelm", tokenizer_class)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    assert ours.special_tokens_map == reference.special_tokens_map
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        for skip in (False, True):
            assert ours.decode(got["input_ids"], skip_special_tokens=skip) == reference.decode(
                expected["input_ids"], skip_special_tokens=skip), text
    assert ours("a pair", "of texts")["input_ids"] == reference("a pair", "of texts")["input_ids"]
    for tokenizer in (ours, reference):
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
    got, expected = ours(TEXTS[:4], padding=True), reference(TEXTS[:4], padding=True)
    assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]

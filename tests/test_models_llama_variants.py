"""Seed-OSS, Arcee (AFM), Helium and EXAONE 4.0 against the reference, on tiny random models it makes and saves.

Four small Llama-style families, each a class over decoder_suite.DecoderFamilyTests (every head the reference has, on
a right- and a left-padded row with labels; cached decoding, left padding, greedy and beam generation, a static
cache, hidden states and attention weights, a training step, saving both ways) with what is its own: the config's
defaults and refusals, the variants that change its computation, a bfloat16 model's logits against the reference's
bfloat16 model, the CPU kernel's decoding step giving the reference's logits and tokens, GGUF files as llama.cpp's
converter writes them where llama.cpp has the architecture, and the tokenizer class the reference picks for a folder
of the family.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    add_llama3_rope_freqs,
    assert_bfloat16_matches_the_reference,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests, SteppedDecoderTests
from openformers import AutoModelForCausalLM

transformers = pytest.importorskip("transformers")

# The sizes every family's tiny models share; weights drawn wide enough that a detail left out moves the logits.
SIZES = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0,
             bos_token_id=1, eos_token_id=2)

# llama.cpp's names for Llama's tensors (its converter's map), which each family's GGUF names start from.
LLAMA_GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _decoder_heads(family: str, question_answering: bool = True) -> dict:
    heads = {f"{family}Model": "AutoModel", f"{family}ForCausalLM": "AutoModelForCausalLM",
             f"{family}ForSequenceClassification": "AutoModelForSequenceClassification",
             f"{family}ForTokenClassification": "AutoModelForTokenClassification"}
    if question_answering:
        heads[f"{family}ForQuestionAnswering"] = "AutoModelForQuestionAnswering"
    return heads


# The config fields whose defaults every family's config shares with the reference's.
DEFAULT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
                  "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_dropout")


class LlamaVariantTests(DecoderFamilyTests):
    """What the four families' classes add to the common tests: the config's defaults and refusals, bfloat16, the
    kernel's refusal, the Auto classes."""

    MODEL_TYPE: str
    DEFAULT_FIELDS: tuple  # the family's own fields, beside DEFAULT_FIELDS, whose defaults are the reference's
    REFUSALS: list  # (values over TINY, the start of the message naming the field and value) that the config refuses

    def pytest_generate_tests(self, metafunc):
        super().pytest_generate_tests(metafunc)
        if "refusal" in metafunc.fixturenames:
            metafunc.parametrize("refusal", self.REFUSALS, ids=[message for _, message in self.REFUSALS])

    def test_config_defaults_match_the_reference(self):
        ours, theirs = getattr(openformers, self.REFERENCE_CONFIG)(), getattr(transformers, self.REFERENCE_CONFIG)()
        assert_same_attributes(ours, theirs, DEFAULT_FIELDS + self.DEFAULT_FIELDS)
        assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}

    def test_config_refuses_bad_values_by_name(self, refusal, tmp_path):
        values, message = refusal
        with pytest.raises(ValueError, match=message):
            getattr(openformers, self.REFERENCE_CONFIG)(**{**self.TINY, **values})
        (tmp_path / "config.json").write_text(json.dumps({"model_type": self.MODEL_TYPE, **self.TINY, **values}))
        with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
            openformers.AutoConfig.from_pretrained(tmp_path)

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    def test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3), self.MODEL_TYPE)

    def test_auto_classes_pick_the_familys_classes(self, tiny):
        folder, reference, model = tiny
        config = openformers.AutoConfig.from_pretrained(folder)
        assert type(config).__name__ == type(reference.config).__name__ and config.model_type == self.MODEL_TYPE
        assert type(model).__name__ == self.causal_lm()
        base = next(name for name, auto_class in self.HEADS.items() if auto_class == "AutoModel")
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == base


class SteppedLlamaVariantTests(SteppedDecoderTests, LlamaVariantTests):
    """A family that the CPU kernel's decoding step takes: decoder_suite.SteppedDecoderTests in place of the refusal."""

    test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers = None


# Seed-OSS ----------------------------------------------------------------------------------------------------------


class TestSeedOss(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "SeedOssConfig"
    MODEL_TYPE = "seed_oss"
    TINY = dict(SIZES, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    VARIANTS = {
        "q-k-v-biases": {},  # Seed-OSS-36B's: attention_bias on, attention_out_bias off, dropouts 0.1
        "output-bias-tied": dict(attention_out_bias=True, tie_word_embeddings=True, mlp_bias=True),
        "no-biases-gqa-1": dict(attention_bias=False, num_key_value_heads=1),
    }
    HEADS = _decoder_heads("SeedOss")
    HEAD_VARIANTS = ["output-bias-tied"]
    TRAINING_VARIANTS = ["q-k-v-biases", "output-bias-tied"]
    TRAINING_OVERRIDES = dict(attention_dropout=0.0, residual_dropout=0.0)
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "attention_out_bias", "mlp_bias", "tie_word_embeddings",
                               "residual_dropout", "attention_dropout")
    DEFAULT_FIELDS = ("head_dim", "attention_bias", "attention_out_bias", "residual_dropout", "mlp_bias")
    REFUSALS = [
        (dict(attention_out_bias="no"), "attention_out_bias='no'"),
        (dict(residual_dropout=1.0), "residual_dropout=1.0"),
        (dict(attention_dropout=-0.1), "attention_dropout=-0.1"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ]

    def test_biases_are_where_the_config_says(self, tiny):
        _, reference, model = tiny
        attention = model.model.layers[0].self_attn
        config = reference.config
        assert (attention.q_proj.bias is not None) == (attention.v_proj.bias is not None) == config.attention_bias
        assert (attention.o_proj.bias is not None) == config.attention_out_bias


def test_seed_oss_residual_dropout_draws_the_references_masks(tmp_path):
    """While training, each branch's output is dropped out before its residual add: seeded alike, the reference and
    this model draw the same masks and give the same loss, which the dropout changes."""
    reference = TestSeedOss.reference(attention_dropout=0.0, residual_dropout=0.3)
    model = load_saved(reference, tmp_path)
    inputs = TestSeedOss.inputs()
    with torch.no_grad():
        plain = model(**inputs).loss
        losses = []
        for seeded in (reference.train(), model.train()):
            torch.manual_seed(3)
            losses.append(seeded(**inputs).loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    assert abs(losses[1] - plain) > 1e-3


# llama.cpp's "seed_oss" files: Llama's names, except the norm before the MLP (post_attention_norm), the rows as they
# are, the biases where the checkpoint has them.
SEED_OSS_GGUF_NAMES = {**LLAMA_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm"}


@pytest.mark.parametrize("variant", ["q-k-v-biases", "output-bias-tied"])
@torch.inference_mode()
def test_seed_oss_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = TestSeedOss.reference(**TestSeedOss.VARIANTS[variant])
    config = reference.config
    write_gguf(tmp_path / "seed.gguf", "seed_oss", reference, SEED_OSS_GGUF_NAMES,
               layer_norm_rms_eps=config.rms_norm_eps, key_length=config.head_dim, value_length=config.head_dim)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "seed.gguf")
    assert type(model).__name__ == "SeedOssForCausalLM"
    assert_same_attributes(model.config, config, ("attention_bias", "attention_out_bias", "tie_word_embeddings",
                                                   "head_dim"))
    inputs = TestSeedOss.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# Arcee (AFM) -------------------------------------------------------------------------------------------------------


class TestArcee(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "ArceeConfig"
    MODEL_TYPE = "arcee"
    TINY = dict(SIZES, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    VARIANTS = {
        "relu2": {},  # AFM-4.5B's MLP: up_proj, a squared ReLU, down_proj
        # AFM-4.5B's long context is YaRN's; biases everywhere, tied embeddings
        "yarn-biases-tied": dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 500.0,
                                                  "original_max_position_embeddings": 64},
                                 attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    }
    HEADS = _decoder_heads("Arcee")
    HEAD_VARIANTS = ["yarn-biases-tied"]
    TRAINING_VARIANTS = ["relu2"]
    SAVED_CONFIG_ATTRIBUTES = ("hidden_act", "attention_bias", "mlp_bias", "tie_word_embeddings", "rope_parameters")
    DEFAULT_FIELDS = ("head_dim", "attention_bias", "mlp_bias")
    REFUSALS = [
        (dict(hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(hidden_size=66, head_dim=None), "hidden_size=66"),
    ]

    def test_the_mlp_has_no_gate(self, tiny):
        mlp = tiny[2].model.layers[0].mlp
        assert not hasattr(mlp, "gate_proj") and mlp.up_proj.weight.shape == (96, 64)


@torch.inference_mode()
def test_arcee_activation_is_the_configs(tmp_path):
    # The same weights with relu in place of relu2 give other logits: the parity above holds for the square taken.
    reference = TestArcee.reference()
    model = load_saved(reference, tmp_path)
    ids = TestArcee.ids(1, 9)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    relu = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert (relu(ids).logits - model(ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize("variant", list(TestArcee.VARIANTS))
@torch.inference_mode()
def test_arcee_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    # llama.cpp's "arcee" files: Llama's (q/k rows permuted for its rotation), no ffn_gate, YaRN as rope.scaling.*.
    import gguf

    reference = TestArcee.reference(**TestArcee.VARIANTS[variant])
    config = reference.config
    scaling = config.rope_parameters
    yarn = dict(rope_scaling_type=gguf.RopeScalingType.YARN, rope_scaling_factor=scaling.get("factor"),
                rope_scaling_orig_ctx_len=scaling.get("original_max_position_embeddings"))
    write_gguf(tmp_path / "afm.gguf", "arcee", reference, LLAMA_GGUF_NAMES, permute_heads=True,
               layer_norm_rms_eps=config.rms_norm_eps, **(yarn if scaling["rope_type"] == "yarn" else {}))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "afm.gguf")
    assert type(model).__name__ == "ArceeForCausalLM"
    assert_same_attributes(model.config, config, ("tie_word_embeddings", "attention_bias", "mlp_bias"))
    inputs = TestArcee.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# Helium ------------------------------------------------------------------------------------------------------------


class TestHelium(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "HeliumConfig"
    MODEL_TYPE = "helium"
    TINY = dict(SIZES, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    VARIANTS = {
        "helium-1": {},  # helium-1-2b's layout
        # q/k/v biases (none on o_proj), an MLP's biases, linear scaling, tied embeddings, a large epsilon that shows
        "biases-linear-tied": dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True, rms_norm_eps=0.1,
                                   rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}),
    }
    HEADS = _decoder_heads("Helium", question_answering=False)
    HEAD_VARIANTS = ["biases-linear-tied"]
    TRAINING_VARIANTS = ["biases-linear-tied"]
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "mlp_bias", "tie_word_embeddings", "rope_parameters",
                               "rms_norm_eps")
    DEFAULT_FIELDS = ("head_dim", "attention_bias", "mlp_bias")
    REFUSALS = [
        (dict(head_dim=32), "head_dim=32"),  # 4 heads of 32 do not fill o_proj's 64 inputs
        (dict(attention_dropout=1.0), "attention_dropout=1.0"),
        (dict(num_key_value_heads=3), "num_key_value_heads=3"),
        (dict(rms_norm_eps=0), "rms_norm_eps=0"),
    ]

    def test_attention_bias_is_on_q_k_v_only(self, tiny):
        _, reference, model = tiny
        attention = model.model.layers[0].self_attn
        assert (attention.q_proj.bias is not None) == reference.config.attention_bias
        assert attention.o_proj.bias is None

    def test_auto_classes_pick_the_familys_classes(self, tiny):
        super().test_auto_classes_pick_the_familys_classes(tiny)
        with pytest.raises(ValueError, match="no question-answering class for 'helium'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(tiny[0])


@torch.inference_mode()
def test_helium_rotates_interleaved_pairs(tmp_path, monkeypatch):
    # Llama's rotation of halves on the same weights gives other logits: the parity above holds for the pairs turned.
    from openformers.models.helium import HeliumAttention
    from openformers.models.layers import apply_rope

    reference = TestHelium.reference()
    ids = TestHelium.ids(1, 9)
    model = load_saved(reference, tmp_path)
    model.model.accelerated_step = None  # the layers' rotation (the kernel's step sets its own once, when it gathers)
    interleaved = model(ids).logits
    torch.testing.assert_close(interleaved, reference(ids).logits, atol=1e-4, rtol=1e-4)
    monkeypatch.setattr(HeliumAttention, "rope", staticmethod(apply_rope))  # restored after the test
    assert (model(ids).logits - interleaved).abs().max() > 1e-2



# EXAONE 4.0 --------------------------------------------------------------------------------------------------------


class TestExaone4(SteppedLlamaVariantTests):
    REFERENCE_CONFIG = "Exaone4Config"
    MODEL_TYPE = "exaone4"
    # A window of 4 positions, shorter than the 9- and 12-token rows, so that it shows.
    TINY = dict(SIZES, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 500.0}, sliding_window=4,
                sliding_window_pattern=2)
    VARIANTS = {
        "sliding-then-full": {},  # layer 0 slides and rotates, layer 1 sees everything unrotated (the 32B's runs)
        # the 1.2B's: no window, every layer full and rotating; llama3 scaling (the 32B's long context), tied
        "no-window-llama3-tied": dict(
            sliding_window=None, layer_types=["full_attention"] * 2, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16, "rope_theta": 500.0}),
    }
    HEADS = _decoder_heads("Exaone4")
    SAVED_CONFIG_ATTRIBUTES = ("sliding_window", "layer_types", "tie_word_embeddings", "rope_parameters")
    DEFAULT_FIELDS = ("sliding_window", "sliding_window_pattern", "layer_types")
    REFUSALS = [
        (dict(sliding_window_pattern="LXG"), "sliding_window_pattern='LXG'"),
        (dict(sliding_window_pattern=0), "sliding_window_pattern=0"),
        (dict(sliding_window=0), "sliding_window=0"),
        (dict(layer_types=["sliding_attention"]), "layer_types="),
        (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    ]

    def test_only_the_layers_the_config_says_rotate(self, tiny):
        _, reference, model = tiny
        rotates = [layer.self_attn.rotates for layer in model.model.layers]
        assert rotates == ([True, False] if reference.config.sliding_window else [True, True])


def test_exaone4_sliding_window_pattern_spelled_as_a_string():
    # The 32B's config.json spells its runs "LLLG" beside its layer_types; spelled alone, it gives the same layers.
    theirs = transformers.Exaone4Config()
    assert openformers.Exaone4Config(sliding_window_pattern="LLLG").layer_types == theirs.layer_types


@pytest.mark.parametrize("change", ["rotate-every-layer", "no-window"])
@torch.inference_mode()
def test_exaone4_unrotated_full_layers_and_the_window_count(change, tmp_path):
    # The same weights with the full layer rotated too, or without the window, give other logits: the parity above
    # holds for both.
    reference = TestExaone4.reference()
    model = load_saved(reference, tmp_path)
    model.model.accelerated_step = None  # the layers' flags (the kernel's step reads its own once, when it gathers)
    ids = TestExaone4.ids(1, 12)
    expected = model(ids).logits
    if change == "rotate-every-layer":
        model.model.layers[1].self_attn.rotates = True
    else:
        model.model.layers[0].is_sliding = False
    assert (model(ids).logits - expected).abs().max() > 1e-2


# llama.cpp's "exaone4" files: OLMo 2's names for the norms after each branch and the q/k norms, the rows as they are,
# the window and each layer's flag as exaone4.attention.sliding_window(_pattern), llama3 scaling as rope_freqs.
EXAONE4_GGUF_NAMES = {**LLAMA_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm",
                      "post_feedforward_layernorm": "post_ffw_norm", "self_attn.q_norm": "attn_q_norm",
                      "self_attn.k_norm": "attn_k_norm"}


@pytest.mark.parametrize("variant", list(TestExaone4.VARIANTS))
@torch.inference_mode()
def test_exaone4_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    import gguf

    reference = TestExaone4.reference(**TestExaone4.VARIANTS[variant])
    config = reference.config
    path = tmp_path / "exaone4.gguf"
    writer = gguf.GGUFWriter(str(path), "exaone4")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    if config.sliding_window is not None:
        writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in config.layer_types])
    add_llama3_rope_freqs(writer, config)
    for _, name, tensor in llama_cpp_tensors(reference, EXAONE4_GGUF_NAMES):
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, path)
    assert type(model).__name__ == "Exaone4ForCausalLM"
    assert_same_attributes(model.config, config, ("sliding_window", "layer_types", "tie_word_embeddings"))
    inputs = TestExaone4.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


# Tokenizers: the reference registers no tokenizer class for these model types, so a folder is read as the class its
# tokenizer_config.json names; a byte-level BPE tokenizer.json here, named as a fast tokenizer (EXAONE 4.0's folders
# name GPT2Tokenizer), with the family's model_type in config.json.

TEXTS = ["Hello there, how are you?", "<|endoftext|>code:\n  def f(x):\treturn x", "café déjà vu 12345", ""]


@pytest.mark.parametrize("model_type, tokenizer_class", [
    ("seed_oss", "PreTrainedTokenizerFast"), ("arcee", "PreTrainedTokenizerFast"),
    ("helium", "PreTrainedTokenizerFast"), ("exaone4", "GPT2Tokenizer"),
])
def test_autotokenizer_picks_the_references_class_and_ids(model_type, tokenizer_class, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": tokenizer_class, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__
    assert (ours.eos_token_id, ours.pad_token_id) == (reference.eos_token_id, reference.pad_token_id) == (0, 0)
    for text in TEXTS:
        ids = reference(text)["input_ids"]
        assert ours(text)["input_ids"] == ids, text
        assert ours.decode(ids) == reference.decode(ids)

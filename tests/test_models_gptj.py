"""GPT-J (model_type "gptj") against the reference, on tiny random models it makes and saves.

Rotary embeddings over part of each head and over all of it (rotary_dim None read as the whole head); every head the
reference has, on a right- and a left-padded row with the head's labels; cached decoding, left padding, greedy and
beam generation; hidden states and attention weights; a training step; saving both ways; the older checkpoints'
mask buffers; the interleaved rotation checked on its own and shown to matter; the config's names and refusals; the
CPU kernel's decoding step against the reference; and GPT-2's tokenizer picked for a GPT-J folder.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GPTJConfig
from openformers.models import gptj
from openformers.models.layers import RotaryEmbedding, apply_interleaved_rope, apply_rope

transformers = pytest.importorskip("transformers")


class TestGPTJ(DecoderFamilyTests):
    REFERENCE_CONFIG = "GPTJConfig"
    # Heads of 16 dimensions; weights drawn 5x the reference's default spread, so that attention is far from uniform
    # and a rotation done wrong moves the logits far past the tolerance (test_the_half_split_rotation_...).
    TINY = dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=256, pad_token_id=0,
                bos_token_id=1, eos_token_id=2, initializer_range=0.1)
    VARIANTS = {
        "partial-rotary": {},
        "whole-head-rotary": dict(rotary_dim=16, n_inner=96, activation_function="gelu"),
    }
    HEADS = {
        "GPTJModel": "AutoModel",
        "GPTJForCausalLM": "AutoModelForCausalLM",
        "GPTJForSequenceClassification": "AutoModelForSequenceClassification",
        "GPTJForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    EMBEDS_TOKEN_TYPES = True
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: ".ln_" in name and name.endswith("weight"))
    LM_LABELS_ARE_THE_TOKENS = True
    SAVED_CONFIG_ATTRIBUTES = ("n_embd", "n_layer", "n_head", "n_positions", "rotary_dim", "n_inner",
                               "activation_function")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        model = tiny[2]
        assert model.lm_head.bias is not None and model.lm_head.weight is not model.transformer.wte.weight

    @torch.inference_mode()
    def test_causal_lm_saves_what_the_reference_loads(self, tiny, tmp_path):
        super().test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path)
        assert "lm_head.bias" in load_file(tmp_path / "model.safetensors")

    @torch.inference_mode()
    def test_the_half_split_rotation_would_not_match_the_reference(self, tiny, monkeypatch):
        """Parity is not by accident: GPT-J's model with Llama's rotation in place of the interleaved one moves the
        logits far from the reference's."""
        _, reference, model = tiny
        monkeypatch.setattr(model.transformer, "accelerated_step", None)  # (the kernel's step rotates on its own)
        monkeypatch.setattr(gptj.GPTJAttention, "rotate", staticmethod(apply_rope))
        ours, theirs = _outputs(model, "CausalLM")["logits"], _outputs(reference, "CausalLM")["logits"]
        assert (ours - theirs).abs().max() > 0.1

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives GPT-J the kernel's decoding step (one LayerNorm for both branches, interleaved
        partial rotary, biases on the MLP and the head), whose steps give the reference's logits and whose greedy
        tokens are the reference's."""
        folder, reference, _ = tiny
        model = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
        assert_kernel_steps_and_generates_as_the_reference(model, reference, _ids(1, 12, seed=9))


TINY, HEADS = TestGPTJ.TINY, TestGPTJ.HEADS
_reference, _ids, _inputs = TestGPTJ.reference, TestGPTJ.ids, TestGPTJ.inputs


def _outputs(model, name) -> dict:
    return outputs_of(model, _inputs(name))


@torch.inference_mode()
def test_older_checkpoints_with_mask_buffers_load(tmp_path):
    """GPT-J 6B's files keep each block's causal-mask buffers (attn.bias, attn.masked_bias); they load as the
    reference loads them."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for i in range(TINY["n_layer"]):
        weights[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        weights[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e9)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "checkpoint with buffers")


@torch.inference_mode()
def test_rotary_dim_none_rotates_the_whole_head(tmp_path):
    """config.json's rotary_dim null (which transformers 4 wrote, and 5 no longer reads) rotates every dimension of
    each head: the reference's model with rotary_dim = head_dim."""
    reference = _reference(rotary_dim=16)
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "rotary_dim": None}))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.rotary_dim is None and model.config.rotated_dim == 16
    assert_outputs_close(_outputs(model, "CausalLM"), _outputs(reference, "CausalLM"), "rotary_dim None")


def test_interleaved_rotation_turns_neighbouring_pairs():
    """Each (2i, 2i + 1) pair turns by position * theta^(-2i / d), as a complex number times e^(i angle); Llama's
    rotation of the same tables pairs i with i + d/2 and gives something else."""
    d, positions = 8, torch.arange(5)
    rotary = RotaryEmbedding(d, 10000.0, None, 16)
    cos, sin = rotary(positions[None], torch.float64)  # (1, 1, T, d)
    x = torch.randn(1, 2, 5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    angles = positions[:, None] * 10000.0 ** (-torch.arange(0, d, 2) / d)  # (T, d/2)
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(1, 2, 5, d // 2, 2).contiguous())
                                  * torch.polar(torch.ones_like(angles), angles).to(torch.complex128))
    torch.testing.assert_close(apply_interleaved_rope(x, cos, sin), expected.reshape(x.shape))
    assert (apply_interleaved_rope(x, cos, sin) - apply_rope(x, cos, sin)).abs().max() > 0.1
    # Norms are kept and a zero angle changes nothing, for either form.
    torch.testing.assert_close(apply_interleaved_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_interleaved_rope(x, cos, sin)[:, :, 0], x[:, :, 0])


@torch.inference_mode()
def test_bfloat16_eager_attention_takes_float32_scores_as_the_reference(tmp_path):
    """The eager path multiplies queries and keys in float32 (the reference's; GPT-J's scores overflow float16): in
    bfloat16 the first block's attention weights are the reference's within float32 rounding."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager",
                                                               dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.bfloat16), tmp_path)
    ids = _ids(1, 12, seed=3)
    got = ours(ids, output_attentions=True).attentions[0]
    expected = theirs(ids, output_attentions=True).attentions[0]
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_config_defaults_and_names_match_the_reference():
    ours, theirs = GPTJConfig(), transformers.GPTJConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner", "activation_function",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "bos_token_id",
        "eos_token_id", "pad_token_id", "tie_word_embeddings", "hidden_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings",
    ))
    common = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, max_position_embeddings=32, rotary_dim=8)
    for config in (GPTJConfig(**common), GPTJConfig.from_dict(common), transformers.GPTJConfig(**common)):
        assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == (64, 3, 8, 32)
        assert "hidden_size" not in config.to_dict()
    config = GPTJConfig(n_embd=64, n_head=4, rotary_dim=8)
    config.hidden_size = 128
    assert config.n_embd == 128 and config.head_dim == 32 and config.intermediate_size == 512


@pytest.mark.parametrize("values, field", [
    (dict(rotary_dim=7), "rotary_dim=7"),
    (dict(rotary_dim=32), "rotary_dim=32"),
    (dict(rotary_dim=0), "rotary_dim=0"),
    (dict(n_embd=66), "n_embd=66"),
    (dict(n_inner=-1), "n_inner=-1"),
    (dict(activation_function="quick_gelu"), "activation_function='quick_gelu'"),
    (dict(attn_pdrop=1.5), "attn_pdrop=1.5"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0"),
    (dict(hidden_size=0), "n_embd=0"),
])
def test_config_refuses_bad_values_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field};"):
        GPTJConfig(**{**TINY, **values})


def test_a_bad_config_json_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "gptj", "rotary_dim": 12, "n_embd": 40}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: rotary_dim=12; expected None \(the whole "
                                         r"head\) or an even positive number up to the head's 10 dimensions"):
        openformers.AutoConfig.from_pretrained(tmp_path)


def test_heads_build_on_the_gptj_base_model():
    config = GPTJConfig(**TINY, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "GPTJModel" else model.transformer
        assert type(base).__name__ == "GPTJModel" and base.rotary_emb.head_dim == 8
    assert openformers.GPTJForSequenceClassification(config).score.out_features == 2
    with pytest.raises(ValueError, match="no token-classification class for 'gptj'"):
        openformers.AutoModelForTokenClassification.from_config(config)


# The tokenizer: GPT-J's checkpoints ship GPT-2's byte-level BPE (tokenizer_config.json names GPT2Tokenizer).

TEXTS = ["Hello world, this is GPT-J.", "  two  spaces and\ttabs\n newline", "café déjà vu", "<|endoftext|> end", ""]


@pytest.mark.parametrize("config_names_the_class", [True, False])
def test_gpt2_tokenizer_of_a_gptj_folder_matches_the_reference(config_names_the_class, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gptj"}))
    if config_names_the_class:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "GPT2Tokenizer"
    for text in TEXTS:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
        assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference(text)["input_ids"])


def test_rotary_tables_of_the_reference_are_ours():
    """The reference's sinusoid table (sin then cos of each pair's angle) holds our tables' halves."""
    table = transformers.models.gptj.modeling_gptj.create_sinusoidal_positions(32, 8)  # (32, 8)
    rotary = RotaryEmbedding(8, 10000.0, None, 32)
    torch.testing.assert_close(table[:, :4], rotary.sin[:, 4:])
    torch.testing.assert_close(table[:, 4:], rotary.cos[:, :4])
    assert math.isclose(float(rotary.cos[1, 1]), math.cos(10000 ** (-2 / 8)), rel_tol=1e-6)

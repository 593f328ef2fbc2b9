"""CodeGen (model_type "codegen": Salesforce/codegen-350M-mono...) against the reference, on tiny random models it
makes and saves.

Rotary embeddings over part of each head and over all of it, heads that straddle the fused projection's four blocks,
a tied head; both heads the reference has, on a right- and a left-padded row with the loss; cached decoding, left
padding, greedy and beam generation, a static cache; hidden states and attention weights; a training step; saving
both ways; the released files' mask buffers; the fused projection's layout checked on its own and shown to matter;
bfloat16 logits (the rotation in float32); the config's defaults, names and refusals; the CPU kernel's decoding step
against the reference (heads that straddle two blocks refused); and
the tokenizer picked for a CodeGen folder. llama.cpp has no CodeGen architecture: no GGUF files.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_kernel_steps_unless_refused,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, CodeGenConfig
from openformers.models import codegen

transformers = pytest.importorskip("transformers")


class TestCodeGen(DecoderFamilyTests):
    REFERENCE_CONFIG = "CodeGenConfig"
    # Heads of 16 dimensions, weights drawn 5x the reference's default spread, so that attention is far from uniform
    # and a projection split otherwise moves the logits far past the tolerance.
    TINY = dict(vocab_size=96, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64, n_ctx=64,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.1)
    VARIANTS = {
        "partial-rotary": {},
        # Heads of 8 dimensions over the projection's blocks of 12: the second head starts in one block, ends in the next.
        "straddling-heads": dict(n_embd=48, n_head=6, rotary_dim=8, n_inner=80, activation_function="gelu",
                                 tie_word_embeddings=True),
        "whole-head-rotary": dict(rotary_dim=16),
    }
    HEADS = {"CodeGenModel": "AutoModel", "CodeGenForCausalLM": "AutoModelForCausalLM"}
    EMBEDS_TOKEN_TYPES = True
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: ".ln_" in name and name.endswith("weight"))
    LM_LABELS_ARE_THE_TOKENS = True
    TRAINING_VARIANTS = ["partial-rotary", "straddling-heads"]
    SAVED_CONFIG_ATTRIBUTES = ("n_embd", "n_layer", "n_head", "n_positions", "n_ctx", "rotary_dim", "n_inner",
                               "activation_function", "tie_word_embeddings")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        model = tiny[2]
        assert model.lm_head.bias is not None
        assert (model.lm_head.weight is model.transformer.wte.weight) == model.config.tie_word_embeddings

    @torch.inference_mode()
    def test_the_query_key_value_order_of_each_block_matters(self, tiny, monkeypatch):
        """Parity is not by accident: the fused rows read as GPT-J's order (queries, keys, values) in each block, or
        as one block, move the logits far from the reference's."""
        _, reference, model = tiny
        monkeypatch.setattr(model.transformer, "accelerated_step", None)  # (the kernel's step reads the rows itself)
        expected = outputs_of(reference, self.inputs())["logits"]
        for shards, order in ((CodeGenConfig.shards, (0, 1, 2)), (1, (0, 2, 1))):  # the blocks are (q, v, k)
            def project(attention, x, shards=shards, order=order):
                B, T, C = x.shape
                parts = attention.qkv_proj(x).view(B, T, shards, 3, C // shards).unbind(3)
                return tuple(parts[i].reshape(B, T, attention.n_head, attention.head_dim).transpose(1, 2)
                             for i in order)
            monkeypatch.setattr(codegen.CodeGenAttention, "project", project)
            assert (outputs_of(model, self.inputs())["logits"] - expected).abs().max() > 0.1, (shards, order)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_and_generates_as_the_reference(self, tiny):
        """from_pretrained gives CodeGen the kernel's decoding step (GPT-J's layers, the fused q/k/v read in place in
        its blocks), whose steps give the reference's logits and whose greedy tokens are the reference's; heads that
        straddle two blocks it refuses by the layers, and generation runs them."""
        folder, reference, model = tiny
        refused = "" if model.config.n_head % CodeGenConfig.shards else None  # (by the layers: the config is taken)
        assert_kernel_steps_unless_refused(folder, reference, self.ids(1, 12, seed=9), "codegen", refused)


TINY, VARIANTS = TestCodeGen.TINY, TestCodeGen.VARIANTS
_reference, _ids, _inputs = TestCodeGen.reference, TestCodeGen.ids, TestCodeGen.inputs


def test_projection_blocks_give_the_references_queries_keys_and_values():
    """Each of the 4 blocks of qkv_proj's output holds its share of the queries, the values and the keys, in that
    order: the reference's split, on a projection whose rows are numbered."""
    model = openformers.CodeGenModel(CodeGenConfig(**TINY))
    attention = model.h[0].attn
    C = TINY["n_embd"]
    with torch.no_grad():
        attention.qkv_proj.weight.zero_()[:, 0] = torch.arange(3 * C)  # output dimension r is r for x = (1, 0...)
    q, k, v = attention.project(torch.eye(1, C)[None])  # each (1, nh, 1, hs): the output dimensions it takes
    rows = torch.arange(3 * C).view(4, 3, C // 4)
    torch.testing.assert_close(q.flatten(), rows[:, 0].flatten().float())
    torch.testing.assert_close(v.flatten(), rows[:, 1].flatten().float())
    torch.testing.assert_close(k.flatten(), rows[:, 2].flatten().float())


@torch.inference_mode()
def test_released_checkpoints_with_mask_buffers_load(tmp_path):
    """The released files keep each block's causal-mask buffer (attn.causal_mask); it loads as the reference loads
    it."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for i in range(TINY["n_layer"]):
        weights[f"transformer.h.{i}.attn.causal_mask"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "checkpoint with buffers")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@torch.inference_mode()
def test_bfloat16_logits_equal_the_references(attention, tmp_path):
    """In bfloat16 the rotation is computed in float32 by float32 tables and rounded once, as the reference's: the
    logits are the reference's bit for bit (exact GELU: gelu_new rounds otherwise in bfloat16 here)."""
    _reference(**VARIANTS["straddling-heads"]).save_pretrained(tmp_path)
    options = dict(dtype=torch.bfloat16, attn_implementation=attention)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, **options).eval()
    model = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, **options), tmp_path)
    inputs = _inputs("CodeGenModel")
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=0, rtol=0)


def test_config_defaults_and_names_match_the_reference():
    ours, theirs = CodeGenConfig(), transformers.CodeGenConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
        "activation_function", "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
        "bos_token_id", "eos_token_id", "tie_word_embeddings", "hidden_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings",
    ))
    common = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, max_position_embeddings=32, rotary_dim=8)
    for config in (CodeGenConfig(**common), CodeGenConfig.from_dict(common), transformers.CodeGenConfig(**common)):
        assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == (64, 3, 8, 32)


@pytest.mark.parametrize("values, field", [
    (dict(rotary_dim=None), "rotary_dim=None"),
    (dict(rotary_dim=7), "rotary_dim=7"),
    (dict(rotary_dim=32), "rotary_dim=32"),
    (dict(n_embd=18, n_head=1, rotary_dim=8), "n_embd=18"),
    (dict(n_embd=66), "n_embd=66"),
    (dict(n_ctx=0), "n_ctx=0"),
    (dict(n_inner=-1), "n_inner=-1"),
    (dict(activation_function="quick_gelu"), "activation_function='quick_gelu'"),
    (dict(attn_pdrop=1.5), "attn_pdrop=1.5"),
])
def test_config_refuses_bad_values_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field};"):
        CodeGenConfig(**{**TINY, **values})


def test_a_bad_config_json_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "codegen", "n_embd": 18, "n_head": 1}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: n_embd=18; expected a multiple of 4"):
        openformers.AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("config_names_the_class", [True, False])
def test_tokenizer_of_a_codegen_folder_is_the_references(config_names_the_class, tmp_path):
    """CodeGen's checkpoints ship GPT-2's byte-level BPE and name CodeGenTokenizer; the reference registers
    GPT2Tokenizer for the model type."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "codegen"}))
    if config_names_the_class:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CodeGenTokenizer"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__
    assert ours("abab")["input_ids"] == reference("abab")["input_ids"] == [3, 3]

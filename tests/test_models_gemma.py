"""Gemma 2 and Gemma 3 text against the reference: tiny random models made and saved by transformers, loaded by
openformers.

The tiny models have a sliding window of 4 and sequences longer than that, sliding and full layers, soft-caps
small enough to bend the scores and logits (Gemma 2; Gemma 3 has none by default and attends with sdpa), Gemma 3's
own rope base on its sliding layers, and every weight (norms included, which the reference initializes to zero)
drawn at random. TestGemma2 and TestGemma3Text run the common decoder tests (tests/decoder_suite.py) on each
family's variants (soft-capped or not, tied or not, Gemma 3's linear rope scaling) and add the CPU kernel's steps,
unscaled inputs_embeds, bfloat16, the config's fields and GGUF files.
"""

import gguf
import pytest
import torch

import openformers
from decoder_parity import (
    GENERATE_OPTIONS,
    assert_generate_matches,
    assert_same_attributes,
    assert_training_step_matches,
    finish_gguf,
    generation_inputs,
    llama_cpp_tensors,
    load_saved,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig
from openformers.kernels import llama as llama_kernel

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=4, query_pre_attn_scalar=12,
    rope_theta=500.0, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
)


# A GGUF written here the way llama.cpp's converter writes a Gemma: its tensor names, reversed shapes, every norm
# weight stored as 1 + w, no output.weight (tied), head_dim as key_length, and the soft-caps of Gemma 2.
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "model.layers": "blk",
}


def _write_gguf(path, reference):
    config = reference.config
    arch = {"gemma2": "gemma2", "gemma3_text": "gemma3"}[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_sliding_window(config.sliding_window)
    writer.add_vocab_size(config.vocab_size)
    parameters = config.rope_parameters
    writer.add_rope_freq_base(parameters.get("full_attention", parameters)["rope_theta"])
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):  # tied: no output.weight
        w = tensor.numpy() + 1 if name.endswith("norm.weight") else tensor.numpy()
        writer.add_tensor(gguf_name, w)
    finish_gguf(writer)


class GemmaTests(DecoderFamilyTests):
    """What Gemma 2 and Gemma 3 text check beyond the common tests, on padded batches of 12 tokens (three windows)
    with each token its own label."""

    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    BATCH_LENGTH = 12
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "final_logit_softcapping", "attn_logit_softcapping")
    GGUF_LAYER_TYPES: list  # what llama.cpp assumes of the family's layers: one full layer in 2 or in 6

    @classmethod
    def reference(cls, name=None, **overrides):
        """Every weight drawn at std 0.3, the norms' too (the reference's are zeros: 1 + w scales by one)."""
        model = super().reference(name, **overrides)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(std=0.3)
        return model

    @GENERATE_OPTIONS
    @torch.inference_mode()
    def test_generate_matches_reference(self, tiny, options):
        """Also the first prompt alone."""
        super().test_generate_matches_reference(tiny, options)
        _, reference, model = tiny
        ids, mask = generation_inputs(self.ids)
        assert_generate_matches(model, reference, ids[:1], mask[:1], **options)

    def test_the_cpu_decoding_step_runs_gemma_with_the_references_logits(self, tiny, monkeypatch):
        # from_pretrained gave both families the step (so every test here decodes through it): sandwich norms of
        # 1 + w, GELU, queries scaled by query_pre_attn_scalar (12 here, head_dim 16), the sliding layers' window,
        # Gemma 3's rotary base of its own on them and Gemma 2's soft-capped attention scores (a cap of 3 bends them).
        _, reference, model = tiny
        assert llama_kernel.refusal(model.config) is None and model.model.accelerated_step is not None
        calls = {"decode_step": [], "decode_batch": []}
        for name, counted in calls.items():
            run = getattr(torch.ops.openformers, name)
            monkeypatch.setattr(torch.ops.openformers, name,
                                lambda *args, run=run, counted=counted: counted.append(1) or run(*args))
        ids = self.ids(1, 12, seed=9)  # past the window of 4
        cache = openformers.DynamicCache()
        with torch.inference_mode():
            steps = [model(ids[:, :3], past_key_values=cache).logits]
            steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(3, ids.shape[1])]
        assert len(calls["decode_step"]) == ids.shape[1] - 3
        torch.testing.assert_close(torch.cat(steps, dim=1), reference(ids).logits, atol=1e-4, rtol=1e-4)
        ids, mask = generation_inputs(self.ids)  # left-padded rows: the batched step
        assert_generate_matches(model, reference, ids, mask)
        assert calls["decode_batch"]
        # One row: generate's shortcut past the forward, the step scaling the embedding's row itself and the shortcut
        # soft-capping the logits as the head model does, with the cap the config holds at each step (Gemma 2's 4,
        # then one set later; Gemma 3 has none, then that one).
        shortcut, taken = model.accelerated_logits, []

        def counted(*args):
            logits_and_argmax = shortcut(*args)
            taken.append(logits_and_argmax is not None)
            return logits_and_argmax

        monkeypatch.setattr(model, "accelerated_logits", counted)
        assert_generate_matches(model, reference, ids[:1], mask[:1])
        # Without a cap the 9 steps are one run of greedy steps (greedy_tokens); soft-capped logits take single steps.
        assert taken == ([True] * 9 if model.config.final_logit_softcapping else [])
        del taken[:]
        monkeypatch.setattr(model.config, "final_logit_softcapping", 2.5)
        monkeypatch.setattr(reference.config.get_text_config(), "final_logit_softcapping", 2.5)  # an image-and-text
        # model's is its text config's (test_models_gemma3_multimodal.py)
        assert_generate_matches(model, reference, ids[:1], mask[:1])
        assert taken == [True] * 9

    def test_config_reads_and_writes_the_references_fields(self, tiny, tmp_path):
        _, reference, model = tiny
        config = model.config
        assert type(config).__name__ == self.REFERENCE_CONFIG
        assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
        assert (config.query_pre_attn_scalar, config.rope_theta, config.sliding_window) == (12, 500.0, 4)
        config.save_pretrained(tmp_path)
        theirs = transformers.AutoConfig.from_pretrained(tmp_path)
        assert_same_attributes(theirs, reference.config, (
            "layer_types", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
            "sliding_window", "head_dim", "hidden_activation", "tie_word_embeddings", "rope_parameters",
        ))

    @torch.inference_mode()
    def test_inputs_embeds_are_taken_unscaled_as_in_the_reference(self, tiny):
        _, reference, model = tiny
        ids = self.ids(1, 7)
        embeds = model.get_input_embeddings()(ids)  # scaled by sqrt(hidden_size), as the reference's module does
        torch.testing.assert_close(embeds, reference.get_input_embeddings()(ids))
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, reference(inputs_embeds=embeds).logits,
                                   atol=1e-4, rtol=1e-4)

    def test_bfloat16_logits_match_the_reference(self, tiny):
        folder = tiny[0]
        reference = getattr(transformers, self.causal_lm()).from_pretrained(folder, dtype=torch.bfloat16).eval()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
        ids = self.ids(2, 9)
        with torch.inference_mode():
            torch.testing.assert_close(model(ids).logits, reference(ids).logits)

    @torch.inference_mode()
    def test_gguf_written_like_llama_cpp_matches_the_original(self, tmp_path):
        # What llama.cpp assumes for a Gemma GGUF: query_pre_attn_scalar = head_dim, Gemma 3's local rope base 10000
        # and one full layer in 6, Gemma 2's one in 2.
        layer_types = self.GGUF_LAYER_TYPES
        reference = self.reference(query_pre_attn_scalar=TINY["head_dim"], rope_local_base_freq=10_000.0,
                                   num_hidden_layers=len(layer_types), layer_types=layer_types)
        _write_gguf(tmp_path / "tiny.gguf", reference)
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
        assert type(model).__name__ == self.causal_lm() and model.config.tie_word_embeddings
        assert model.config.layer_types == layer_types
        ids = self.ids(2, 10)
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_gguf_weights_are_those_the_reference_reads(self, tmp_path):
        _write_gguf(tmp_path / "tiny.gguf", self.reference())
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf").state_dict()
        ours = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf").state_dict()
        assert sorted(ours) == sorted(theirs)
        for name, tensor in ours.items():
            torch.testing.assert_close(tensor, theirs[name], msg=name)


class TestGemma2(GemmaTests):
    REFERENCE_CONFIG = "Gemma2Config"
    TINY = {**TINY, "attn_logit_softcapping": 3.0, "final_logit_softcapping": 4.0}
    VARIANTS = {
        "capped-tied": {},
        "uncapped-untied": dict(tie_word_embeddings=False, attn_logit_softcapping=None, final_logit_softcapping=None),
    }
    HEADS = {
        "Gemma2Model": "AutoModel",
        "Gemma2ForCausalLM": "AutoModelForCausalLM",
        "Gemma2ForSequenceClassification": "AutoModelForSequenceClassification",
        "Gemma2ForTokenClassification": "AutoModelForTokenClassification",
    }
    GGUF_LAYER_TYPES = ["sliding_attention", "full_attention"]

    def test_training_on_unpadded_rows_matches_the_reference(self, training_variant, tmp_path):
        """The loss and every gradient of a training step, with gradient checkpointing too, on rows without
        padding."""
        reference = self.reference(**self.VARIANTS[training_variant])
        model = load_saved(reference, tmp_path)
        ids = self.ids(2, 9, seed=7)
        assert_training_step_matches(model, reference, dict(input_ids=ids, labels=ids), checkpointing=(False, True))


class TestGemma3Text(GemmaTests):
    REFERENCE_CONFIG = "Gemma3TextConfig"
    TINY = {**TINY, "rope_local_base_freq": 50.0}
    VARIANTS = {
        "uncapped-tied": {},
        # Gemma 3's reference caps the final logits but never the attention scores, whatever its config says.
        "capped-untied": dict(tie_word_embeddings=False, attn_logit_softcapping=3.0, final_logit_softcapping=4.0),
        "linear-scaled": dict(rope_scaling={"rope_type": "linear", "factor": 4.0}),
    }
    HEADS = {
        "Gemma3TextModel": "AutoModel",
        "Gemma3ForCausalLM": "AutoModelForCausalLM",
        "Gemma3TextForSequenceClassification": "AutoModelForSequenceClassification",
    }
    GGUF_LAYER_TYPES = ["sliding_attention"] * 5 + ["full_attention"]


def test_gemma3_defaults_are_the_references():
    ours, theirs = Gemma3TextConfig(num_hidden_layers=8), transformers.Gemma3TextConfig(num_hidden_layers=8)
    assert ours.layer_types == theirs.layer_types  # five sliding layers to one full
    assert (ours.rope_theta, ours.rope_local_base_freq) == (1_000_000.0, 10_000.0)
    assert ours.final_logit_softcapping is ours.attn_logit_softcapping is None
    assert ours.vocab_size == theirs.vocab_size and ours.max_position_embeddings == theirs.max_position_embeddings


@pytest.mark.parametrize("field, value, message", [
    ("layer_types", ["sliding_attention"], "layer_types"),
    ("layer_types", ["sliding_attention", "chunked_attention", "full_attention"], "layer_types"),
    ("hidden_activation", "silu", "hidden_activation"),
    ("attn_logit_softcapping", 0.0, "attn_logit_softcapping"),
    ("use_bidirectional_attention", True, "use_bidirectional_attention"),
])
def test_config_refuses_what_it_does_not_implement(field, value, message):
    with pytest.raises(ValueError, match=message):
        Gemma2Config(**{**TINY, field: value})


def test_gemma3_config_refuses_a_scaled_rope_on_the_sliding_layers(tmp_path):
    transformers.Gemma3TextConfig(**TINY, rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 500.0},
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 50.0},
    }).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="sliding_attention"):
        openformers.AutoConfig.from_pretrained(tmp_path)

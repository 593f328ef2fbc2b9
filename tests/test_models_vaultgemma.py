"""VaultGemma (model_type "vaultgemma") against the reference, on tiny random models it makes and saves.

VaultGemma is Gemma 2's network without the norms after attention and after the MLP, so its class runs Gemma 2's
tests (test_models_gemma.TestGemma2: decoder_suite's common tests over the reference's two heads, soft-capped or not,
tied or not, with a window of 4 under 12-token rows and every weight drawn at std 0.3; the CPU kernel's decoding step
against the reference's logits and tokens, unscaled inputs_embeds, bfloat16, the config's fields) with VaultGemma's
config and classes, and adds the layers' norms and the config's defaults. llama.cpp has no VaultGemma architecture:
no GGUF round.
"""

import pytest
import torch

import openformers
import test_models_gemma
from decoder_parity import assert_same_attributes

transformers = pytest.importorskip("transformers")


class TestVaultGemma(test_models_gemma.TestGemma2):
    REFERENCE_CONFIG = "VaultGemmaConfig"
    HEADS = {"VaultGemmaModel": "AutoModel", "VaultGemmaForCausalLM": "AutoModelForCausalLM"}
    # llama.cpp has no VaultGemma architecture.
    test_gguf_written_like_llama_cpp_matches_the_original = None
    test_gguf_weights_are_those_the_reference_reads = None

    def test_layers_norm_only_their_inputs(self, tiny):
        _, reference, model = tiny
        layer = model.model.layers[0]
        norms = sorted(name for name, _ in layer.named_modules() if name.endswith("layernorm"))
        assert norms == ["input_layernorm", "pre_feedforward_layernorm"]
        assert sorted(dict(model.named_parameters())) == sorted(dict(reference.named_parameters()))


def test_config_defaults_are_the_references():
    ours, theirs = openformers.VaultGemmaConfig(), transformers.VaultGemmaConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "hidden_activation", "max_position_embeddings", "rms_norm_eps",
        "pad_token_id", "eos_token_id", "bos_token_id", "tie_word_embeddings", "query_pre_attn_scalar",
        "sliding_window", "layer_types", "final_logit_softcapping", "attn_logit_softcapping", "attention_bias",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert "use_bidirectional_attention" not in ours.to_dict()

"""Mamba and Falcon-Mamba (model_type "mamba", "falcon_mamba") against the reference, on tiny random models it makes
and saves.

The state-space decoders have no attention, so DecoderFamilyTests' tests that hand the model a DynamicCache, a static
cache or ask for attention weights are replaced here by their MambaCache forms: cached decoding (a prefill, a chunk
on top of the cache, then single tokens) against the full forward; a left-padded batch, prefilled and stepped on one
cache, against each row alone, and the reference's padded batch against ours (with `use_bias`, in_proj's bias reaches
the convolution at padded positions, so there the reference's own padded rows differ from its rows alone, and ours
are checked against the reference's batch only); hidden states as the reference records them (each layer's output,
then the normed last one); beams, return sequences and the batch operations of the cache; assisted decoding (prompt
lookup, drafts) giving the reference's greedy tokens; static caches and DynamicCaches refused by name. Also: each variant (biases on in_proj/out_proj, no conv bias,
untied head, Falcon-Mamba's norms) shown to change the logits, the config's defaults and refusals, GGUF files written
as llama.cpp's converter writes them (Falcon-Mamba's as "mamba" with dt_b_c_rms), int8 and int4 linear layers, and
AutoTokenizer's class for a Mamba folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_byte_level_bpe_folder_tokenizes_as_the_reference,
    assert_outputs_close,
    assert_the_users_dynamic_cache_works_as_the_references,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    make_reference,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests, StateCacheTests
from openformers import AutoModelForCausalLM, FalconMambaForCausalLM, MambaCache, MambaForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, state_size=8, num_hidden_layers=2, conv_kernel=4, time_step_rank=32,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
    initializer_range=0.2,  # weights large enough that a detail computed wrong moves the logits past the tolerance
)
VARIANTS = {
    "default": {},
    "biases": dict(use_bias=True),  # in_proj and out_proj biases
    "no-conv-bias": dict(use_conv_bias=False),
    "untied": dict(tie_word_embeddings=False),
}


class MambaFamilyTests(StateCacheTests, DecoderFamilyTests):
    """The common decoder tests, with the MambaCache forms of those that assume attention."""

    TINY = TINY
    VARIANTS = VARIANTS
    HEAD_OVERRIDES = {}
    HEAD_VARIANTS = ["biases"]
    TRAINING_VARIANTS = ["biases"]
    MIXER_LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")  # the linear layers quantization replaces

    # Replaced below: these hand the model a DynamicCache or a StaticCache, or compare attention weights.
    test_cached_decoding_equals_the_full_forward = None
    test_left_padded_batch_equals_single_rows = None
    test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens = None
    test_hidden_states_and_attention_weights_match_the_reference = None

    @staticmethod
    def state_shapes(config, rows):
        """A layer's convolution and scan states in a cache of `rows` rows."""
        return (rows, config.intermediate_size, config.conv_kernel), (rows, config.intermediate_size, config.state_size)

    @torch.inference_mode()
    def test_cached_decoding_with_a_state_cache_equals_the_full_forward(self, tiny):
        model = tiny[2]
        ids = self.ids(2, 12)
        full = model(ids).logits
        cache = MambaCache()
        steps = [model(ids[:, :5], past_key_values=cache).logits, model(ids[:, 5:8], past_key_values=cache).logits]
        steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(8, ids.shape[1])]
        assert cache.seq_len == ids.shape[1] and len(cache) == 2
        assert (cache.conv_states[0].shape, cache.ssm_states[0].shape) == self.state_shapes(model.config, rows=2)
        torch.testing.assert_close(torch.cat(steps, dim=1), full)
        used = model(ids[:, :5], use_cache=True).cache  # a forward asked for a cache makes a MambaCache
        assert isinstance(used, MambaCache) and used.seq_len == 5

    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows_or_the_references_batch(self, tiny, variant):
        _, reference, model = tiny
        rows = [self.ids(1, 9, seed=2)[0], self.ids(1, 5, seed=3)[0], self.ids(1, 1, seed=4)[0]]
        ids = torch.stack([torch.cat([torch.zeros(9 - len(row), dtype=torch.long), row]) for row in rows])
        mask = torch.stack([torch.cat([torch.zeros(9 - len(row)), torch.ones(len(row))]).long() for row in rows])
        cache = MambaCache()
        prefill = model(ids, attention_mask=mask, past_key_values=cache).logits
        step_ids = self.ids(3, 1, seed=5)
        step = model(step_ids, attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1),
                     past_key_values=cache).logits
        theirs = reference(ids, attention_mask=mask).logits
        torch.testing.assert_close(prefill, theirs, atol=1e-4, rtol=1e-4)
        alone_equal = []
        for i, row in enumerate(rows):
            alone = model(torch.cat([row, step_ids[i]])[None]).logits[0]
            their_alone = reference(row[None]).logits[0]
            references_rows_agree = torch.allclose(theirs[i, 9 - len(row):], their_alone, atol=1e-4, rtol=1e-4)
            alone_equal.append(references_rows_agree)
            if references_rows_agree:
                torch.testing.assert_close(prefill[i, 9 - len(row):], alone[:-1])
                torch.testing.assert_close(step[i, 0], alone[-1])
        # Without in_proj's bias the padding leaves the states at zero: every row as alone. With it, the bias reaches
        # the convolution at padded positions in the reference as here, and the longest row alone is unpadded.
        assert alone_equal == ([True, True, True] if variant != "biases" else [True, False, False])

    @torch.inference_mode()
    def test_hidden_states_match_the_reference(self, tiny):
        _, reference, model = tiny
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        ours = model(ids, attention_mask=mask, output_hidden_states=True)
        theirs = reference(ids, attention_mask=mask, output_hidden_states=True)
        assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
        for got, expected in zip(ours.hidden_states, theirs.hidden_states):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_every_variant_changes_the_logits(self, tiny, variant):
        if variant == "default":
            return
        _, reference, model = tiny
        plain = self.reference(**self.VARIANTS["default"])
        ids = self.ids(2, 9, seed=7)
        assert (model(ids).logits - plain(ids).logits).abs().max() > 1e-2

    @torch.inference_mode()
    def test_beams_and_return_sequences_reorder_the_states(self, tiny):
        _, reference, model = tiny
        ids = self.ids(2, 6, seed=6)
        settings = dict(max_new_tokens=8, do_sample=True, top_k=0, eos_token_id=None, pad_token_id=0,
                        num_return_sequences=3)
        sampled = model.generate(ids, generator=torch.Generator().manual_seed(3), **settings)
        assert sampled.shape == (6, 14)
        # each returned sequence, run alone from its prompt, is what the model's own forward would continue with
        for row in sampled[::3]:
            cache = MambaCache()
            logits = model(row[None, :-1], past_key_values=cache).logits
            torch.testing.assert_close(logits[0], model(row[None, :-1]).logits[0])

    @torch.inference_mode()
    def test_the_users_dynamic_cache_of_the_config_is_a_mamba_cache(self, tiny):
        _, reference, model = tiny
        assert_the_users_dynamic_cache_works_as_the_references(model, reference, self.ids)

    @torch.inference_mode()
    def test_the_cpu_kernel_refuses_the_family_and_quantized_layers_run(self, tiny, variant):
        from openformers import kernels
        from openformers.kernels.llama import refusal

        folder, reference, _ = tiny
        assert f"model_type={reference.config.model_type!r}" in refusal(reference.config)
        ids = self.ids(1, 8)
        expected = reference(ids).logits
        for quantization, tolerance in (("int8", 0.05), ("int4", 0.5)):  # the logits' mean error
            model = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, quantization=quantization),
                                 folder)
            assert not kernels.accelerate(model)
            mixer = model.base_model.layers[0].mixer
            assert all(isinstance(getattr(mixer, name), kernels.Linear)
                       for name in self.MIXER_LINEARS)
            assert (model(ids).logits - expected).abs().mean() < tolerance, quantization
            generated = model.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None)
            assert generated.shape == (1, 12)


class TestMamba(MambaFamilyTests):
    REFERENCE_CONFIG = "MambaConfig"
    HEADS = {"MambaModel": "AutoModel", "MambaForCausalLM": "AutoModelForCausalLM"}


class TestFalconMamba(MambaFamilyTests):
    REFERENCE_CONFIG = "FalconMambaConfig"
    VARIANTS = {**VARIANTS, "mixer-eps": dict(mixer_rms_eps=0.5)}
    HEADS = {"FalconMambaModel": "AutoModel", "FalconMambaForCausalLM": "AutoModelForCausalLM"}

    @torch.inference_mode()
    def test_the_norms_of_dt_b_and_c_change_the_logits(self, tiny):
        """Falcon-Mamba's weights in Mamba's network give other logits: the norms are applied."""
        folder, reference, _ = tiny
        config = transformers.MambaConfig(**{k: v for k, v in reference.config.to_dict().items()
                                             if k in transformers.MambaConfig().to_dict() and k != "model_type"})
        mamba = transformers.MambaForCausalLM(config).eval()
        mamba.load_state_dict(reference.state_dict())
        ids = self.ids(1, 8)
        assert (mamba(ids).logits - reference(ids).logits).abs().max() > 1e-2


# The config: defaults and refusals.

@pytest.mark.parametrize("name", ["MambaConfig", "FalconMambaConfig"])
def test_config_defaults_equal_the_references(name):
    ours, theirs = getattr(openformers, name)(), getattr(transformers, name)()
    for key, value in theirs.to_dict().items():
        if key in ("transformers_version", "dtype", "architectures", "_name_or_path", "chunk_size_feed_forward",
                   "is_encoder_decoder"):
            continue
        assert getattr(ours, key) == value, key
    assert ours.intermediate_size == 1536 and ours.time_step_rank == 48
    assert ours.layer_types == theirs.layer_types


@pytest.mark.parametrize("given, expected", [(dict(intermediate_size=7), 7), ({}, 120)])
def test_config_reads_or_derives_intermediate_size_and_time_step_rank_as_the_reference(given, expected, tmp_path):
    values = dict(model_type="mamba", hidden_size=40, expand=3, time_step_rank="auto", **given)
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert (ours.intermediate_size, ours.time_step_rank) == (theirs.intermediate_size, theirs.time_step_rank)
    assert (ours.intermediate_size, ours.time_step_rank) == (expected, 3)


@pytest.mark.parametrize("values, field", [
    (dict(state_size=0), "state_size"),
    (dict(conv_kernel=-1), "conv_kernel"),
    (dict(expand=1.5), "expand"),
    (dict(time_step_rank="big"), "time_step_rank"),
    (dict(hidden_act="tanhh"), "hidden_act"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon"),
])
def test_bad_config_values_are_refused_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field}="):
        openformers.MambaConfig(**values)
    with pytest.raises(ValueError, match="Invalid config: mixer_rms_eps="):
        openformers.FalconMambaConfig(mixer_rms_eps=-1.0)


# GGUF files as llama.cpp's converter (convert_hf_to_gguf.py MambaModel) writes them: architecture "mamba", the
# sizes under mamba.ssm.*, A stored as -exp(A_log), the convolution's weight squeezed to (D, conv_kernel), the
# output projection left out when tied, Falcon-Mamba's flagged by mamba.ssm.dt_b_c_rms.

GGUF_NAMES = {
    "backbone.embeddings": "token_embd", "backbone.layers": "blk", "backbone.norm_f": "output_norm",
    ".norm.": ".attn_norm.", "mixer.in_proj": "ssm_in", "mixer.conv1d": "ssm_conv1d", "mixer.x_proj": "ssm_x",
    "mixer.dt_proj": "ssm_dt", "mixer.A_log": "ssm_a", "mixer.D": "ssm_d", "mixer.out_proj": "ssm_out",
    "lm_head": "output",
}


def _write_mamba_gguf(path, reference):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_context_length(2**20)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_ssm_conv_kernel(config.conv_kernel)
    writer.add_ssm_inner_size(config.intermediate_size)
    writer.add_ssm_state_size(config.state_size)
    writer.add_ssm_time_step_rank(config.time_step_rank)
    writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
    writer.add_ssm_dt_b_c_rms(config.model_type == "falcon_mamba")
    writer.add_eos_token_id(2)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if name.endswith("A_log"):
            tensor = -torch.exp(tensor)
        elif name.endswith("conv1d.weight"):
            tensor = tensor.squeeze(1)
        writer.add_tensor(gguf_name, tensor.numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("name, variant", [("MambaConfig", "default"), ("MambaConfig", "untied"),
                                           ("MambaConfig", "biases"), ("FalconMambaConfig", "default")])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(name, variant, tmp_path):
    config = getattr(transformers, name)(**{**TINY, **VARIANTS[variant]})
    reference = make_reference(name.replace("Config", "ForCausalLM"), config)
    _write_mamba_gguf(tmp_path / "mamba.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "mamba.gguf")
    assert type(model) is (FalconMambaForCausalLM if name.startswith("Falcon") else MambaForCausalLM)
    assert model.config.tie_word_embeddings == config.tie_word_embeddings
    assert (model.config.use_bias, model.config.time_step_rank) == (config.use_bias, config.time_step_rank)
    ids, mask = padded_batch(torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(7)))
    assert_outputs_close(outputs_of(model, dict(input_ids=ids, attention_mask=mask)),
                         outputs_of(reference, dict(input_ids=ids, attention_mask=mask)), "GGUF")


# The tokenizer: Mamba's folders hold GPT-NeoX's tokenizer.json, read as the reference's GPTNeoXTokenizer.

def test_a_mamba_folder_gets_the_references_tokenizer_class(tmp_path):
    texts = ["Hello Mamba, a state space model.", "  indented\ttabs and café", ""]
    name = assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, texts, ["<|endoftext|>", "<|padding|>"], {"model_type": "mamba"},
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|padding|>"})
    assert name == "GPTNeoXTokenizer"

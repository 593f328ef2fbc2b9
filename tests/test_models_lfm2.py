"""LFM2 and LFM2-MoE (model_type "lfm2", "lfm2_moe") against the reference, on tiny random models it makes and saves.

Three layers, a convolution, an attention layer and a convolution again (LFM2-MoE: a dense first layer, then experts
chosen with drawn expert biases), weights at std 0.2, norms and biases drawn: the common decoder tests
(decoder_suite: both heads and the loss, cached decoding on the model's HybridCache, left padding, greedy and beam
generation, hidden states and attention weights, inputs_embeds, a training step with and without checkpointing,
saving both ways; RoutedExpertsTests' router logits and bfloat16 run for the mixture) in each variant. With
`conv_bias`, in_proj's bias reaches the convolution at padded positions in the reference, whose padded rows then
differ from its rows alone: there ours are checked against the reference's padded batch and its cached step instead.
Also: each variant shown to change the logits, the MLP width rule against the reference's modules, static and
dynamic caches refused by name, assisted decoding giving the reference's greedy tokens, sampling with return sequences, the CPU kernel's
refusal, config defaults, aliases and refusals, GGUF files written as llama.cpp's converter writes "lfm2" and
"lfm2moe", and the tokenizer class the reference picks for an LFM2 folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_byte_level_bpe_folder_tokenizes_as_the_reference,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_outputs_close,
    assert_the_users_dynamic_cache_works_as_the_references,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests, RoutedExpertsTests, StateCacheTests
from openformers import AutoModelForCausalLM, HybridCache, Lfm2ForCausalLM, Lfm2MoeForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, intermediate_size=96, block_multiple_of=16, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention", "conv"],
    max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    initializer_range=0.2,  # weights large enough that a detail computed wrong moves the logits past the tolerance
    rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
)
MOE_TINY = dict(
    {k: v for k, v in TINY.items() if k != "block_multiple_of"}, intermediate_size=48, moe_intermediate_size=16,
    num_experts=6, num_experts_per_tok=2, num_dense_layers=1, routed_scaling_factor=1.5,
)


class StateLayersTests(StateCacheTests):
    """What an LFM2 decoder is checked for beyond the common tests: its cache, padding with conv_bias, refusals."""

    MODEL_TYPE: str

    # A HybridCache cannot be a static cache: refused instead (test_attention_caches_are_refused).
    test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens = None

    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows(self, tiny, variant):
        """Without conv_bias, each row as alone; with it, the reference's padded batch and its cached step."""
        _, reference, model = tiny
        if not self.VARIANTS[variant].get("conv_bias"):
            return super().test_left_padded_batch_equals_single_rows(tiny)
        rows = [self.ids(1, 9, seed=2)[0], self.ids(1, 5, seed=3)[0]]
        ids = torch.stack([torch.cat([torch.zeros(9 - len(row), dtype=torch.long), row]) for row in rows])
        mask = (ids != 0).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, step_mask = self.ids(2, 1, seed=5), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        cache = model.new_cache()
        ours = [model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits,
                model(step_ids, attention_mask=step_mask, position_ids=positions[:, -1:] + 1,
                      past_key_values=cache).logits]
        theirs = reference(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        theirs = [theirs.logits, reference(step_ids, attention_mask=step_mask, position_ids=positions[:, -1:] + 1,
                                           cache=theirs.cache, use_cache=True).logits]
        for got, expected in zip(ours, theirs):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        alone = model(rows[1][None]).logits[0]
        assert (ours[0][1, -5:] - alone).abs().max() > 1e-3  # the reference's padding moves the row, and ours

    @torch.inference_mode()
    def test_every_variant_changes_the_logits(self, tiny, variant):
        if variant == "default":
            return
        _, _, model = tiny
        plain = self.reference(**self.VARIANTS["default"])
        ids = self.ids(2, 9, seed=7)
        assert (model(ids).logits - plain(ids).logits).abs().max() > 1e-2

    @torch.inference_mode()
    def test_the_cache_holds_keys_for_attention_layers_and_states_for_convolutions(self, tiny):
        model = tiny[2]
        config = model.config
        cache = model(self.ids(2, 7), use_cache=True).cache
        assert isinstance(cache, HybridCache) and cache.seq_len == 7
        assert cache.attends == [kind != "conv" for kind in config.layer_types]
        convolutions = config.layer_types.count("conv")
        assert [tuple(k.shape[:2]) for k in cache.keys] == [(2, config.num_key_value_heads)] * (
            config.num_hidden_layers - convolutions)
        assert [tuple(c.shape) for c in cache.states.conv_states] == [
            (2, config.hidden_size, config.conv_L_cache)] * convolutions
        assert cache.states.ssm_states == [None] * convolutions

    @torch.inference_mode()
    def test_sampling_with_return_sequences_repeats_the_states(self, tiny):
        """top_k=1 sampling picks greedy's tokens: each returned sequence, from its repeated cache rows, is the
        reference's greedy continuation."""
        _, reference, model = tiny
        ids = self.ids(2, 6, seed=6)
        settings = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=0)
        sampled = model.generate(ids, do_sample=True, top_k=1, num_return_sequences=2,
                                 generator=torch.Generator().manual_seed(3), **settings)
        expected = reference.generate(ids, do_sample=False, **settings).repeat_interleave(2, dim=0)
        assert sampled.tolist() == expected.tolist()

    @torch.inference_mode()
    def test_the_users_dynamic_cache_of_the_config_works_as_the_references(self, tiny):
        _, reference, model = tiny
        assert_the_users_dynamic_cache_works_as_the_references(model, reference, self.ids)

    def test_the_cpu_kernel_refuses_the_family(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 6), self.MODEL_TYPE)


class TestLfm2(StateLayersTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "Lfm2Config"
    MODEL_TYPE = "lfm2"
    TINY = TINY
    VARIANTS = {
        "default": {},
        "conv-bias": dict(conv_bias=True),
        "untied-attention-first-taps-4": dict(tie_word_embeddings=False, conv_L_cache=4,
                                              layer_types=["full_attention", "conv", "full_attention"]),
        "mlp-as-given": dict(block_auto_adjust_ff_dim=False, intermediate_size=40),
    }
    HEADS = {"Lfm2Model": "AutoModel", "Lfm2ForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings", "layer_types", "conv_bias", "conv_L_cache", "intermediate_size",
                               "block_auto_adjust_ff_dim")

    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    def test_auto_classes_pick_ours(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is openformers.Lfm2Config
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Lfm2ForCausalLM
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Lfm2Model"


class TestLfm2Moe(StateLayersTests, RoutedExpertsTests):
    REFERENCE_CONFIG = "Lfm2MoeConfig"
    MODEL_TYPE = "lfm2_moe"
    TINY = MOE_TINY
    VARIANTS = {
        "default": {},
        "conv-bias": dict(conv_bias=True),
        "no-expert-bias-unnormalized-all-sparse": dict(use_expert_bias=False, norm_topk_prob=False, num_dense_layers=0,
                                                       tie_word_embeddings=False),
    }
    HEADS = {"Lfm2MoeModel": "AutoModel", "Lfm2MoeForCausalLM": "AutoModelForCausalLM"}
    HEAD_OVERRIDES = {}
    LOAD_BALANCING = False
    EXPERT_BLOCK = "feed_forward"
    EXPERT_NAMES = ("w1", "w3", "w2")

    @classmethod
    def reference(cls, name=None, **overrides):
        """The expert biases drawn too (the reference's init zeroes them)."""
        model = super().reference(name, **overrides)
        with torch.no_grad():
            for layer in model.base_model.layers:
                if getattr(layer.feed_forward, "expert_bias", None) is not None:
                    layer.feed_forward.expert_bias.normal_(std=0.3)
        return model

    @torch.inference_mode()
    def test_the_expert_bias_steers_the_choice_alone(self, tiny, variant):
        """Zeroing the biases changes the logits (they choose the experts), but they never weight them: scaling them
        all by one offset changes nothing."""
        if not tiny[2].config.use_expert_bias:
            return
        model = tiny[2]
        ids = self.ids(2, 9, seed=7)
        logits = model(ids).logits
        block = model.model.layers[1].feed_forward
        saved = block.expert_bias.clone()
        try:
            block.expert_bias += 5.0
            torch.testing.assert_close(model(ids).logits, logits)
            block.expert_bias.zero_()
            assert (model(ids).logits - logits).abs().max() > 1e-3
        finally:
            block.expert_bias.copy_(saved)

    def test_auto_classes_pick_ours(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is openformers.Lfm2MoeConfig
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Lfm2MoeForCausalLM


# The MLP's width and the config.

@pytest.mark.parametrize("values", [
    dict(intermediate_size=12288, block_multiple_of=256),  # LFM2-2.6B's rule: 8192
    dict(intermediate_size=100, block_ffn_dim_multiplier=1.5, block_multiple_of=24),
    dict(intermediate_size=100, block_ffn_dim_multiplier=1, block_multiple_of=1),  # two thirds
    dict(intermediate_size=100, block_auto_adjust_ff_dim=False),
])
def test_the_mlp_width_is_the_references(values):
    settings = dict(TINY, hidden_size=8, num_hidden_layers=1, layer_types=["conv"], **values)
    reference = transformers.models.lfm2.modeling_lfm2.Lfm2MLP(transformers.Lfm2Config(**settings))
    assert openformers.Lfm2Config(**settings).feed_forward_size == reference.w1.out_features


@pytest.mark.parametrize("name", ["Lfm2Config", "Lfm2MoeConfig"])
def test_config_defaults_equal_the_references(name):
    ours, theirs = getattr(openformers, name)(), getattr(transformers, name)()
    for key, value in theirs.to_dict().items():
        if key in ("transformers_version", "dtype", "architectures", "_name_or_path", "chunk_size_feed_forward",
                   "is_encoder_decoder", "output_attentions", "output_hidden_states", "return_dict"):
            continue
        if key == "rope_parameters":
            assert (ours.rope_theta, ours.rope_scaling) == (value["rope_theta"], None)
        elif key == "layer_types" and value is None:  # LFM2-MoE's reference default, from which it builds no model
            assert ours.layer_types == ["full_attention"] * ours.num_hidden_layers
        else:
            assert getattr(ours, key) == value, key
    assert ours.to_dict()["rope_parameters"] == theirs.rope_parameters


def test_config_json_aliases_read_as_the_references(tmp_path):
    """full_attn_idxs when layer_types is absent, tie_embedding and block_ff_dim (LFM2's first config.json files)."""
    values = dict(model_type="lfm2", num_hidden_layers=4, full_attn_idxs=[1, 3], tie_embedding=False,
                  block_ff_dim=300)
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    for key in ("layer_types", "tie_word_embeddings", "intermediate_size"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.layer_types == ["conv", "full_attention", "conv", "full_attention"]
    assert (ours.tie_word_embeddings, ours.intermediate_size) == (False, 300)


@pytest.mark.parametrize("name, values, field", [
    ("Lfm2Config", dict(layer_types=["conv", "mamba", "conv"]), "layer_types"),
    ("Lfm2Config", dict(layer_types=["conv"]), "layer_types"),
    ("Lfm2Config", dict(conv_L_cache=0), "conv_L_cache"),
    ("Lfm2Config", dict(num_key_value_heads=3), "num_key_value_heads"),
    ("Lfm2Config", dict(block_multiple_of=0), "block_multiple_of"),
    ("Lfm2Config", dict(block_ffn_dim_multiplier=-1.0), "block_ffn_dim_multiplier"),
    ("Lfm2Config", dict(block_ffn_dim_multiplier=None), "block_ffn_dim_multiplier"),  # the reference's refusal too
    ("Lfm2Config", dict(norm_eps=0), "norm_eps"),
    ("Lfm2Config", dict(conv_bias="yes"), "conv_bias"),
    ("Lfm2Config", dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}), "rope_type"),
    ("Lfm2MoeConfig", dict(num_experts_per_tok=9), "num_experts_per_tok"),
    ("Lfm2MoeConfig", dict(num_dense_layers=-1), "num_dense_layers"),
    ("Lfm2MoeConfig", dict(routed_scaling_factor=0), "routed_scaling_factor"),
    ("Lfm2MoeConfig", dict(moe_intermediate_size=0), "moe_intermediate_size"),
])
def test_bad_config_values_are_refused_by_name(name, values, field):
    settings = {**(MOE_TINY if name == "Lfm2MoeConfig" else TINY), **values}
    with pytest.raises(ValueError, match=f"{field}="):
        getattr(openformers, name)(**settings)


# GGUF files as llama.cpp's converter writes them (convert_hf_to_gguf.py LFM2Model, LFM2MoeModel): head_count_kv a
# list with 0 for each convolution layer, lfm2.shortconv.l_cache, the MLP's adjusted width as feed_forward_length,
# the convolution squeezed to (hidden_size, conv_L_cache), embedding_norm as token_embd_norm; LFM2-MoE's experts
# stacked per projection and its expert bias as exp_probs_b.bias.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.embedding_norm": "token_embd_norm", "model.layers": "blk",
    "operator_norm": "attn_norm", "self_attn.q_layernorm": "attn_q_norm", "self_attn.k_layernorm": "attn_k_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.out_proj": "attn_output", "conv.in_proj": "shortconv.in_proj", "conv.out_proj": "shortconv.out_proj",
    "conv.conv": "shortconv.conv", "feed_forward.expert_bias": "exp_probs_b.bias", "feed_forward.gate": "ffn_gate_inp",
    "feed_forward.w1": "ffn_gate", "feed_forward.w3": "ffn_up", "feed_forward.w2": "ffn_down", "lm_head": "output",
}


def _write_lfm2_gguf(path, reference):
    import gguf

    config = reference.config
    moe = config.model_type == "lfm2_moe"
    writer = gguf.GGUFWriter(str(path), "lfm2moe" if moe else "lfm2")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(reference.model.layers[0].feed_forward.w1.out_features)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv([config.num_key_value_heads if kind != "conv" else 0 for kind in config.layer_types])
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_shortconv_l_cache(config.conv_L_cache)
    writer.add_eos_token_id(2)
    if moe:
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
        writer.add_leading_dense_block_count(config.num_dense_layers)
        writer.add_expert_weights_scale(config.routed_scaling_factor)  # none in llama.cpp's files (LFM2-8B-A1B's is 1)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if ".experts." in name:
            continue
        if name.endswith("conv.conv.weight"):
            tensor = tensor.squeeze(1)
        writer.add_tensor(gguf_name, tensor.numpy())
    for i, layer in enumerate(reference.model.layers):
        if not hasattr(layer.feed_forward, "experts"):
            continue
        gate_up = layer.feed_forward.experts.gate_up_proj.detach()  # the reference's memory: (E, 2I, C)
        gate, up = gate_up.chunk(2, dim=1)
        experts = {"ffn_gate_exps": gate, "ffn_up_exps": up, "ffn_down_exps": layer.feed_forward.experts.down_proj}
        for kind, tensor in experts.items():
            writer.add_tensor(f"blk.{i}.{kind}.weight", tensor.detach().contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("name, values", [
    ("Lfm2ForCausalLM", {}),
    ("Lfm2ForCausalLM", dict(conv_bias=True, tie_word_embeddings=False, block_ffn_dim_multiplier=1.5)),
    ("Lfm2MoeForCausalLM", {}),
])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(name, values, tmp_path):
    moe = name.startswith("Lfm2Moe")
    reference = (TestLfm2Moe if moe else TestLfm2).reference(name, **values)
    _write_lfm2_gguf(tmp_path / "lfm2.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "lfm2.gguf")
    assert type(model).__name__ == name
    assert model.config.layer_types == reference.config.layer_types
    assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings
    ids, mask = padded_batch(torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(7)))
    assert_outputs_close(outputs_of(model, dict(input_ids=ids, attention_mask=mask)),
                         outputs_of(reference, dict(input_ids=ids, attention_mask=mask)), "GGUF")


# The tokenizer: the reference registers no class for lfm2; LFM2's folders ship a byte-level BPE tokenizer.json and
# name PreTrainedTokenizerFast.

def test_an_lfm2_folder_gets_the_references_tokenizer_class(tmp_path):
    texts = ["<|im_start|>user\nHello LFM2, a hybrid model.<|im_end|>", "  indented\ttabs and café", ""]
    name = assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, texts, ["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"], {"model_type": "lfm2"},
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>", "eos_token": "<|im_end|>",
         "pad_token": "<|pad|>"})
    assert name == "TokenizersBackend"

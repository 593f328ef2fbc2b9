"""llama.cpp's "deepseek2" GGUF files (DeepSeek-V2, V2-Lite, V3, R1, Kimi K2, Moonlight) read into our DeepSeek models,
and the DeepSeek tokenizers' `tokenizer.ggml.pre` names.

Each file is written from the reference's tiny random model as llama.cpp's converter (DeepseekV2Model) writes it: its
metadata (head_count_kv 1, the gating function, the group counts, yarn_log_multiplier as 0.1 * mscale_all_dim...),
the experts stacked, the correction biases as `exp_probs_b.bias`, and kv_b_proj either whole (`attn_kv_b`, files
converted before April 2025) or split per head into `attn_k_b` (transposed) and `attn_v_b`. Loaded by ours, it gives
the reference's logits and loss, chooses V3 or V2 by the gating function, and saves to a folder the reference reads.
The weights are drawn at std 0.15 and the correction biases at 0.3 (test_models_deepseek.py), so that a row order,
a routing rule or a scale read wrong moves the logits far past the tolerance.
"""

import numpy as np
import pytest
import regex
import tokenizers
import torch
from tokenizers import Regex, decoders, models, pre_tokenizers

import openformers
import test_models_deepseek as deepseek_tests
from decoder_parity import assert_outputs_close, finish_gguf, load_quietly
from openformers import AutoModelForCausalLM, AutoTokenizer, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM
from openformers.tokenizers import loaders
from test_models_mixtral import add_gguf_tensors, head_outputs
from test_tokenizers import DIGIT_TEXTS, TEXTS, _train, _write_gguf

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

YARN = {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0, "original_max_position_embeddings": 64,
        "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 16, "beta_slow": 1}  # a file states mscale_all_dim only
SOFTMAX, SIGMOID = gguf.ExpertGatingFuncType.SOFTMAX, gguf.ExpertGatingFuncType.SIGMOID
# (reference's test class, overrides, the gating function the converter writes (None: a file without one))
VARIANTS = {
    "v3-q-lora-grouped": (deepseek_tests.TestDeepseekV3, {}, SIGMOID),
    "v3-yarn-tied-unnormalized-biased": (deepseek_tests.TestDeepseekV3, dict(
        rope_parameters=YARN, tie_word_embeddings=True, norm_topk_prob=False, attention_bias=True), SIGMOID),
    "v2-lite-direct-q": (deepseek_tests.TestDeepseekV2, dict(q_lora_rank=None), SOFTMAX),
    "v2-grouped-yarn-no-gating-key": (deepseek_tests.TestDeepseekV2, dict(
        topk_method="group_limited_greedy", n_group=4, topk_group=1, rope_parameters=YARN, mlp_bias=True,
        first_k_dense_replace=0), None),
}
GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.q_a_proj": "attn_q_a", "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b", "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm", "self_attn.kv_b_proj": "attn_kv_b", "self_attn.o_proj": "attn_output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp", "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "mlp.gate.e_score_correction_bias": "exp_probs_b.bias", "mlp.gate": "ffn_gate_inp",
}


def _reference(variant):
    tests, overrides, _ = VARIANTS[variant]
    return tests.reference(**overrides)


class _SplitKvB:
    """The writer, with each kv_b_proj written as the converter has since April 2025: per head, its key rows
    transposed (`attn_k_b`, (nh, kv_lora_rank, nope)) and its value rows (`attn_v_b`, (nh, v, kv_lora_rank))."""

    def __init__(self, writer, config):
        self.writer, self.config = writer, config

    def add_tensor(self, name, w):
        if not name.endswith("attn_kv_b.weight"):
            return self.writer.add_tensor(name, w)
        c = self.config
        kv_b = w.reshape(c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank)
        k_b, v_b = kv_b[:, :c.qk_nope_head_dim], kv_b[:, c.qk_nope_head_dim:]
        self.writer.add_tensor(name.replace("attn_kv_b", "attn_k_b"), np.ascontiguousarray(k_b.transpose(0, 2, 1)))
        self.writer.add_tensor(name.replace("attn_kv_b", "attn_v_b"), np.ascontiguousarray(v_b))


def write_deepseek2_gguf(path, reference, gating, split_kv_b: bool, **extra):
    """The reference's model as llama.cpp's converter writes a "deepseek2" file; `extra` items are written with the
    writer's `add_<key>`."""
    c = reference.config
    rope = c.rope_parameters
    writer = gguf.GGUFWriter(str(path), "deepseek2")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(1)  # the converter's: latent attention as one shared key and value
    if rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
        writer.add_rope_scaling_yarn_log_mul(0.1 * rope["mscale_all_dim"])
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_expert_count(c.n_routed_experts)
    writer.add_expert_used_count(c.num_experts_per_tok)
    if c.n_group is not None:
        writer.add_expert_group_count(c.n_group)
        writer.add_expert_group_used_count(c.topk_group)
    if gating is not None:
        writer.add_expert_gating_func(gating)
    writer.add_leading_dense_block_count(c.first_k_dense_replace)
    writer.add_vocab_size(c.vocab_size)
    if c.q_lora_rank is not None:
        writer.add_q_lora_rank(c.q_lora_rank)
    writer.add_kv_lora_rank(c.kv_lora_rank)
    if split_kv_b:  # key_length and value_length are then llama.cpp's compressed cache's
        writer.add_key_length(c.kv_lora_rank + c.qk_rope_head_dim)
        writer.add_value_length(c.kv_lora_rank)
        writer.add_key_length_mla(c.qk_nope_head_dim + c.qk_rope_head_dim)
        writer.add_value_length_mla(c.v_head_dim)
    else:
        writer.add_key_length(c.qk_nope_head_dim + c.qk_rope_head_dim)
        writer.add_value_length(c.v_head_dim)
    writer.add_expert_feed_forward_length(c.moe_intermediate_size)
    writer.add_expert_shared_count(c.n_shared_experts)
    writer.add_expert_weights_scale(c.routed_scaling_factor)
    if c.norm_topk_prob:
        writer.add_expert_weights_norm(True)
    writer.add_rope_dimension_count(c.qk_rope_head_dim)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for key, value in extra.items():
        getattr(writer, f"add_{key}")(value)
    add_gguf_tensors(_SplitKvB(writer, c) if split_kv_b else writer, reference, GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)


@pytest.mark.parametrize("split_kv_b", [False, True], ids=["kv_b", "k_b-v_b"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_deepseek2_gguf_written_like_llama_cpp_matches_the_reference(tmp_path, variant, split_kv_b):
    tests, overrides, gating = VARIANTS[variant]
    reference = _reference(variant)
    path = tmp_path / "deepseek2.gguf"
    write_deepseek2_gguf(path, reference, gating, split_kv_b)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, path)
    v3 = gating == SIGMOID
    assert type(model) is (DeepseekV3ForCausalLM if v3 else DeepseekV2ForCausalLM)
    ours, theirs = model.config, reference.config
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "q_lora_rank",
                 "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "n_routed_experts",
                 "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size", "first_k_dense_replace",
                 "tie_word_embeddings", "attention_bias", "vocab_size", "intermediate_size"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.routed_scaling_factor == pytest.approx(theirs.routed_scaling_factor)
    if v3:
        assert (ours.n_group, ours.topk_group, ours.norm_topk_prob) == (theirs.n_group, theirs.topk_group,
                                                                        theirs.norm_topk_prob)
    else:
        assert ours.topk_method == theirs.topk_method and ours.mlp_bias == theirs.mlp_bias
    if "rope_parameters" in overrides:
        assert ours.rope_scaling["mscale"] == ours.rope_scaling["mscale_all_dim"] == YARN["mscale_all_dim"]
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF")
    model.save_pretrained(tmp_path / "saved")  # kv_b_proj whole again, the experts and correction biases named
    saved = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert_outputs_close(head_outputs(saved, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF saved")


def test_auto_config_reads_a_deepseek2_file_as_v3_or_v2(tmp_path):
    write_deepseek2_gguf(tmp_path / "v3.gguf", _reference("v3-q-lora-grouped"), SIGMOID, True)
    write_deepseek2_gguf(tmp_path / "v2.gguf", _reference("v2-lite-direct-q"), None, False)
    assert openformers.AutoConfig.from_pretrained(tmp_path / "v3.gguf").model_type == "deepseek_v3"
    v2 = openformers.AutoConfig.from_pretrained(tmp_path / "v2.gguf")
    assert v2.model_type == "deepseek_v2" and v2.topk_method == "greedy" and v2.q_lora_rank is None


class _Gating:  # a gating function llama.cpp numbers 3 (its sqrt-softplus), which DeepSeek's models do not use
    value = 3


@pytest.mark.parametrize("gating, extra, message", [
    (SOFTMAX, dict(expert_weights_norm=True), "expert_weights_norm"),  # a softmax router's weights renormalized
    (_Gating, {}, "expert_gating_func"),
])
def test_deepseek2_files_openformers_cannot_run_are_refused(tmp_path, gating, extra, message):
    write_deepseek2_gguf(tmp_path / "bad.gguf", _reference("v2-lite-direct-q"), gating, True, **extra)
    with pytest.raises(ValueError, match=message):
        openformers.AutoConfig.from_pretrained(tmp_path / "bad.gguf")


# -- tokenizers ----------------------------------------------------------------------------------------------------

# DeepSeek's tokenizer.json pre-tokenizers, as their files spell them: each a sequence of splits, then the bytes.
DEEPSEEK_SPLITS = {
    "deepseek-v3": [
        r"\p{N}{1,3}",
        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
        r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+"""
        r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ],
    "deepseek-coder": [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}"],
    # DeepSeek LLM's cased letters: the long class is ours (test_deepseek_llm_letters_are_cased_letters checks it).
    "deepseek-llm": [
        r"[\r\n]", rf"\s?[{loaders._DEEPSEEK_CASED_LETTERS}]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+", r"\s+$",
        "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}+",
    ],
}
DEEPSEEK_TEXTS = [
    "DeepSeek路由tokens到experts，共256个。",
    "カタカナとひらがなとKanji漢字mixed123456",
    "한국어 텍스트와 English 1234567 숫자",
    "x.com and @user: ...!!! (ok)\r\n\tend",
    "  Ωmega ΐota ώmega Kelvin K",
    "a=b+c; print(\"12345\")\n\n",
    "Ｆｕｌｌ，ｗｉｄｔｈ！ «quotes» “curly” and trailing   ",
]


def test_deepseek_llm_letters_are_cased_letters():
    """The class of DeepSeek LLM's letters: ranges that ascend over letters only, with the six characters that
    Unicode normalization would fold into others (ώ U+1F7D, ι U+1FBE, ΐ U+1FD3, Ί U+1FDB, Ω U+2126, K U+212A) as
    themselves; folded, the Kelvin sign's range would start at K and take in most of the BMP's symbols."""
    import unicodedata

    letters = loaders._DEEPSEEK_CASED_LETTERS
    ends = [(letters[i], letters[i + 2]) if letters[i + 1:i + 2] == "-" else (letters[i], letters[i])
            for i in range(len(letters)) if letters[i] != "-" and letters[i - 1:i] != "-"]
    for first, last in ends:
        assert first <= last and unicodedata.category(first)[0] == unicodedata.category(last)[0] == "L", (first, last)
    assert {"\u1f7d", "\u1fbe", "\u1fd3", "\u1fdb", "\u2126", "\u212a"} <= set(letters)
    assert regex.fullmatch(f"[{letters}]+", "KΩώÀµ𐐀") and not regex.search(f"[{letters}]", "€$1_中ª")


@pytest.mark.parametrize("pre", list(DEEPSEEK_SPLITS))
def test_deepseek_gguf_pre_tokenizers_split_as_deepseeks_tokenizer_json(tmp_path, pre):
    """A vocabulary trained without any split (so that its merges cross every boundary a split would draw), stored
    in a GGUF under `pre`, encodes as the reference's tokenizer with DeepSeek's pre-tokenizer; under GPT-2's split
    (what an unknown name falls back to) it would not."""
    reference = tokenizers.Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    reference = _train(reference, ["<|bos|>", "<|eos|>"])
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), "isolated") for pattern in DEEPSEEK_SPLITS[pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    reference.decoder = decoders.ByteLevel()
    ours = AutoTokenizer.from_pretrained(_write_gguf(tmp_path / f"{pre}.gguf", reference, pre))
    gpt2 = AutoTokenizer.from_pretrained(_write_gguf(tmp_path / "gpt2.gguf", reference, "gpt2"))
    texts = [text for text in TEXTS + DIGIT_TEXTS + DEEPSEEK_TEXTS if "<|" not in text and "<think>" not in text]
    differs = False
    for text in texts:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text).ids, text
        assert ours.decode(ids) == reference.decode(ids)
        differs |= gpt2.encode(text, add_special_tokens=False) != ids
    assert differs

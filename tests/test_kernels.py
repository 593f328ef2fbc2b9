"""The CPU accelerator (kernels/) against the plain PyTorch path it replaces: which models take it, parity for
each family, the one-call decoding step, its linear layer, and how the library is built."""

import copy
import dataclasses
import pickle
import sys

import pytest
import torch
import transformers

from decoder_parity import OneStepAtATime
from openformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, kernels
from openformers.configs import (
    ApertusConfig,
    ArceeConfig,
    CodeGenConfig,
    Cohere2Config,
    BloomConfig,
    CohereConfig,
    Dots1Config,
    Ernie4_5Config,
    Ernie4_5_MoeConfig,
    Exaone4Config,
    ExaoneConfig,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPTJConfig,
    GptOssConfig,
    GPTNeoXConfig,
    Glm4Config,
    Glm4MoeConfig,
    GlmConfig,
    GPT2Config,
    GPTBigCodeConfig,
    GPTNeoConfig,
    GraniteConfig,
    GraniteMoeConfig,
    GraniteMoeSharedConfig,
    HeliumConfig,
    InternLM3Config,
    HunYuanDenseV1Config,
    HunYuanMoEV1Config,
    LlamaConfig,
    MinistralConfig,
    Ministral3Config,
    MistralConfig,
    MixtralConfig,
    NemotronConfig,
    Olmo2Config,
    OPTConfig,
    Olmo3Config,
    OlmoConfig,
    OlmoeConfig,
    Phi3Config,
    PhiConfig,
    PhimoeConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
    SeedOssConfig,
    SmolLM3Config,
    StableLmConfig,
    Starcoder2Config,
    VaultGemmaConfig,
)
from openformers.generation.cache import DynamicCache
from openformers.kernels import library
from openformers.kernels.llama import refusal
from openformers.models.apertus import XIELU, ApertusForCausalLM
from openformers.models.arcee import ArceeForCausalLM
from openformers.models.bloom import BloomForCausalLM
from openformers.models.codegen import CodeGenForCausalLM
from openformers.models.cohere import CohereForCausalLM
from openformers.models.cohere2 import Cohere2ForCausalLM
from openformers.models.ernie4_5 import Ernie4_5ForCausalLM
from openformers.models.deepseek_v3 import DeepseekV3Router
from openformers.models.dots1 import Dots1ForCausalLM
from openformers.models.ernie4_5_moe import Ernie4_5_MoeForCausalLM
from openformers.models.exaone4 import Exaone4ForCausalLM
from openformers.models.falcon import FalconForCausalLM
from openformers.models.gemma import Gemma2ForCausalLM, Gemma3ForCausalLM, GemmaForCausalLM
from openformers.models.vaultgemma import VaultGemmaForCausalLM
from openformers.models.glm import Glm4ForCausalLM, GlmForCausalLM
from openformers.models.gpt_neox import GPTNeoXForCausalLM
from openformers.models.gpt2 import GPT2LMHeadModel
from openformers.models.gpt_bigcode import GPTBigCodeForCausalLM
from openformers.models.gpt_neo import GPTNeoForCausalLM
from openformers.models.gptj import GPTJForCausalLM
from openformers.models.gpt_oss import GptOssAttention, GptOssExperts, GptOssForCausalLM, GptOssMLP
from openformers.models.granite import GraniteForCausalLM
from openformers.models.granitemoe import GraniteMoeForCausalLM, GraniteMoeSharedForCausalLM, StackedExperts
from openformers.models.helium import HeliumForCausalLM
from openformers.models.hunyuan_v1_dense import HunYuanDenseV1ForCausalLM
from openformers.models.glm4_moe import Glm4MoeForCausalLM
from openformers.models.hunyuan_v1_moe import HunYuanMoEV1ForCausalLM
from openformers.models.llama import LlamaForCausalLM
from openformers.models.ministral import MinistralForCausalLM
from openformers.models.ministral3 import Ministral3ForCausalLM
from openformers.models.mixtral import MixtralForCausalLM, SparseMoeBlock
from openformers.models.nemotron import NemotronForCausalLM
from openformers.models.olmo import OlmoForCausalLM
from openformers.models.olmo2 import Olmo2ForCausalLM
from openformers.models.olmo3 import Olmo3ForCausalLM
from openformers.models.olmoe import OlmoeForCausalLM
from openformers.models.opt import OPTForCausalLM
from openformers.models.phi import PhiForCausalLM
from openformers.models.phi3 import Phi3ForCausalLM
from openformers.models.phimoe import PhimoeForCausalLM, PhimoeSparseMoeBlock
from openformers.models.qwen2_moe import Qwen2MoeForCausalLM
from openformers.models.qwen3 import Qwen3ForCausalLM
from openformers.models.qwen3_moe import Qwen3MoeForCausalLM
from openformers.models.seed_oss import SeedOssForCausalLM
from openformers.models.smollm3 import SmolLM3ForCausalLM
from openformers.models.stablelm import StableLmForCausalLM
from openformers.models.starcoder2 import Starcoder2ForCausalLM

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512,
)


# Head sizes with the kernel's own attention loops (attend_heads), in groups of three and two query heads.
HEAD_DIM_64 = dict(hidden_size=192, num_attention_heads=3, num_key_value_heads=1)
HEAD_DIM_128 = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2)


def test_kernels_build_here():
    # CI machines have a compiler and ninja: a failed build there must be red, not a silent fallback.
    assert kernels.build()


# Gemma 3: heads of 16 whose queries are scaled by 12 ** -0.5 (not 16 ** -0.5), a window of 5 on the first layer
# only, which rotates by a base of its own.
GEMMA3 = dict(head_dim=16, query_pre_attn_scalar=12, sliding_window=5, rope_theta=500.0, rope_local_base_freq=50.0,
              layer_types=["sliding_attention", "full_attention"])
# Gemma 2: the same, one rotary base for all layers, attention scores soft-capped at 0.05 (low enough to bend a tiny
# random model's small scores: at 3 the step passed without the cap) and the logits at 4; with heads of 64, three
# to a key/value head, the capped scores of attend_heads (decode.cpp).
GEMMA2 = dict(head_dim=16, query_pre_attn_scalar=12, sliding_window=5, rope_theta=500.0, attn_logit_softcapping=0.05,
              final_logit_softcapping=4.0, layer_types=["sliding_attention", "full_attention"])
GEMMA2_HEAD_DIM_64 = {**GEMMA2, **HEAD_DIM_64, "head_dim": 64, "query_pre_attn_scalar": 64}
# Phi-3: a window of 6, heads of 16 rotated over their first 8 dimensions only. With longrope (Phi-4-mini's 0.75 of
# each head), a 40-token test crosses from the short factors' tables to the long ones' at position 16.
PHI3 = dict(partial_rotary_factor=0.5, sliding_window=6)
PHI3_LONGROPE = dict(partial_rotary_factor=0.75, original_max_position_embeddings=16, max_position_embeddings=64,
                     rope_scaling={"rope_type": "longrope", "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0],
                                   "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]})
# Mixtures of experts: Mixtral's four experts of 96, two a token, renormalized; Qwen3-MoE's six of 64, three a token,
# not renormalized, a dense MLP on its second layer (mlp_only_layers); Qwen2-MoE's the same with q/k/v biases and a
# shared expert of 128 beside them, or its first layer dense (decoder_sparse_step).
MIXTRAL = dict(num_local_experts=4, num_experts_per_tok=2)
# The first Gemma: Llama's layers with Gemma's norms, scaled embeddings and GELU, heads of 16.
GEMMA = dict(head_dim=16, rope_theta=500.0)
# SmolLM3: its first layer unrotated (the family's default leaves every fourth so; a tiny model has two).
SMOLLM3 = dict(no_rope_layers=[0, 1], rope_theta=500.0)
# Granite: its four scalars, none of them 1 (the attention's not 1/sqrt(head_dim) either).
GRANITE = dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.4, logits_scaling=8.0)
# OLMo 3: a sliding layer (window 5, its own rotation base) before a full one, whose rotation is scaled.
OLMO3 = dict(layer_types=["sliding_attention", "full_attention"], sliding_window=5, rope_theta=500.0,
             sliding_rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
# YaRN: a context of 16 stretched by 4 (the Qwen model cards' form), so that a 40-token test runs past it; and
# gpt-oss's form, its band of blended pairs unrounded (truncate False) and an attention factor of its own, which
# scales the rotary tables' cos and sin that the step reads.
YARN = dict(rope_theta=500.0, rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})
YARN_GPT_OSS = dict(rope_theta=500.0, rope_scaling={
    "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16, "beta_fast": 8.0, "beta_slow": 0.5,
    "truncate": False, "attention_factor": 1.25})
# Dynamic NTK: a context of 16 stretched by 4, the tables rebuilt for each call past it (as the layers follow it).
DYNAMIC = dict(rope_theta=500.0, max_position_embeddings=16, rope_scaling={"rope_type": "dynamic", "factor": 4.0})
OLMO3_YARN = {**OLMO3, **YARN}  # the full layer's rotation YaRN's, the sliding layer's its own unscaled one
# Ministral: Mistral's layers, a full one between sliding ones (window 5), all rotated alike.
MINISTRAL = dict(num_hidden_layers=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                 sliding_window=5)
# Ministral 3: Mistral's layers with YaRN's tables, its queries' factor by position 1 within the original context of 64
# that the tests stay in (the layers take the positions past it: test_models_ministral3.py). InternLM3: Llama's layers
# with a bias on every projection.
MINISTRAL3 = dict(sliding_window=5, rope_theta=500.0, rope_scaling={
    "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "llama_4_scaling_beta": 0.6})
INTERNLM3 = dict(rope_theta=500.0, attention_bias=True, mlp_bias=True)
# ERNIE 4.5: heads of 16 turned in interleaved pairs; with use_bias, a bias on every projection.
ERNIE4_5 = dict(head_dim=16, rope_theta=500.0)
ERNIE4_5_BIASED = {**ERNIE4_5, "use_bias": True, "tie_word_embeddings": False}
# GLM and GLM-4-0414: heads of 16 of which the first 8 dimensions turn in interleaved pairs, q/k/v biases, the fused
# gate/up; GLM-4-0414's norms after each branch too. A quarter of heads of 64, with linear rope scaling.
GLM = dict(head_dim=16, partial_rotary_factor=0.5, rope_theta=500.0, pad_token_id=0, eos_token_id=2)
GLM_HEAD_DIM_64 = {**GLM, **HEAD_DIM_64, "head_dim": 64, "partial_rotary_factor": 0.25,
                   "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
# Seed-OSS: q/k/v biases (its default), o_proj's and the MLP's too; its dropouts of 0.1 (the default) in eval.
SEED_OSS = dict(head_dim=16, rope_theta=500.0)
SEED_OSS_EVERY_BIAS = {**SEED_OSS, "attention_out_bias": True, "mlp_bias": True}
# Helium: interleaved rotary pairs; with q/k/v biases (none on o_proj) and the MLP's.
HELIUM = dict(head_dim=16, rope_theta=500.0)
HELIUM_BIASES = {**HELIUM, "attention_bias": True, "mlp_bias": True}
# Hunyuan dense: per-head q/k norms after the rotation, the base stretched by alpha; with biases on q, k, v and o.
HUNYUAN = dict(head_dim=16, rope_theta=500.0, rope_scaling={"rope_type": "dynamic", "alpha": 4.0, "factor": 1.0})
HUNYUAN_BIASES = {**HUNYUAN, "attention_bias": True}
# EXAONE 4.0: norms after each branch, per-head q/k norms, a sliding layer (window 5, rotated) before a full one
# (unrotated); without a window (EXAONE-4.0-1.2B's) every layer full and rotated.
EXAONE4 = dict(head_dim=16, rope_theta=500.0, sliding_window=5, layer_types=["sliding_attention", "full_attention"])
EXAONE4_NO_WINDOW = dict(head_dim=16, rope_theta=500.0, sliding_window=None, layer_types=["full_attention"] * 2)
# GPT-NeoX: heads of 16 (as many key/value heads as query heads), the fused q/k/v laid out head by head, half of each
# head rotated, exact GELU, biases everywhere, parallel branches with a norm each; sequential with tanh GELU, a
# quarter rotated, no attention biases; heads of 64 with linear rope scaling.
GPT_NEOX = dict(num_key_value_heads=4, partial_rotary_factor=0.5, rope_theta=500.0)
GPT_NEOX_SEQUENTIAL = {**GPT_NEOX, "use_parallel_residual": False, "hidden_act": "gelu_new",
                       "partial_rotary_factor": 0.25, "attention_bias": False}
GPT_NEOX_HEAD_DIM_64 = {**GPT_NEOX, **HEAD_DIM_64, "num_key_value_heads": 3,
                        "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
# GPT-2's line: learned positions (a table of 64), LayerNorms with biases, biases on every projection, heads of 16;
# GPT-2's scale_attn_by_inverse_layer_idx over three layers (their scores further divided by 1, 2 and 3) and
# reorder_and_upcast_attn (float32 scores: the step's).
# GPT-BigCode's one key/value head, or its scores unscaled; OPT's ReLU, its positions offset by 2; GPT-Neo's unscaled
# scores and a local layer with a window of 5 before a global one.
GPT2 = dict(max_position_embeddings=64)
GPT2_INVERSE_LAYER_IDX = dict(max_position_embeddings=64, num_hidden_layers=3, scale_attn_by_inverse_layer_idx=True,
                              reorder_and_upcast_attn=True)
GPT_BIGCODE_UNSCALED = dict(scale_attn_weights=False, max_position_embeddings=64)
GPT_NEO = dict(attention_types=[[["local", "global"], 1]], window_size=5, max_position_embeddings=64)
# Phi: grouped queries, half of each head rotated, biases everywhere (the head's too); heads of 64, 24 rotated, linear
# rope scaling.
PHI = dict(partial_rotary_factor=0.5, rope_theta=500.0)
PHI_HEAD_DIM_64 = {**HEAD_DIM_64, "partial_rotary_factor": 0.375,
                   "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
# Cohere: LayerNorms without biases, interleaved pairs, biases on attention's projections, logits scaled; Cohere 2: a
# sliding layer (rotated) and a full one (unrotated), its weights drawn larger: each layer's attention then depends on
# the rotation or its absence.
COHERE = dict(rope_theta=500.0, attention_bias=True, logit_scale=0.5)
COHERE2 = {**COHERE, "sliding_window": 5, "layer_types": ["sliding_attention", "full_attention"],
           "initializer_range": 0.2}
# GPT-J: 8 of each head's 16 dimensions turned in interleaved pairs; exact GELU (its inputs spread over the curve by
# tiny_model's MLP weights); CodeGen: 8 heads, two to each of its 4 blocks, tanh GELU.
GPTJ = dict(rotary_dim=8, n_inner=96)
GPTJ_EXACT_GELU = {**GPTJ, "activation_function": "gelu", "initializer_range": 0.2}
GPTJ_HEAD_DIM_64 = {**GPTJ, **HEAD_DIM_64, "rotary_dim": 32}
CODEGEN = dict(rotary_dim=8, n_inner=96, hidden_size=128, num_attention_heads=8)
# StableLM: LayerNorms with biases, a quarter of each head rotated; sequential with q/k/v biases, or parallel.
STABLELM = dict(partial_rotary_factor=0.25, use_qkv_bias=True, rope_theta=500.0)
STABLELM_PARALLEL = {**STABLELM, "use_parallel_residual": True, "use_qkv_bias": False}
# BLOOM: ALiBi's biases on the scores (tiny_model's small attention weights leave them most of each score), the
# embeddings' LayerNorm, its fused q/k/v head by head, LayerNorms and biases drawn; heads of 64, three of them.
BLOOM = dict()
BLOOM_HEAD_DIM_64 = dict(hidden_size=192, num_attention_heads=3)
# Falcon-7B's layout: one key/value head after every query head in the fused q/k/v, parallel branches after one norm,
# exact GELU, rotary positions, no biases. Falcon-RW's: ALiBi (16 heads, whose slopes past the first eight and their
# products with the positions bfloat16 rounds), each head's q, k and v in turn, branches one after the other, biases.
# The new decoder architecture's two norms, with as many key/value heads as query heads (read head by head) or one; and
# Falcon-40B's groups: 8 query heads, four to each of two key/value heads (each group's queries, key and value in
# turn), or heads of 64, two to a key/value head, after one norm.
FALCON = dict(rope_theta=500.0, initializer_range=0.2)
FALCON_RW = dict(alibi=True, multi_query=False, parallel_attn=False, bias=True, hidden_size=128,
                 num_attention_heads=16, activation="gelu_pytorch_tanh")
FALCON_NEW = dict(new_decoder_architecture=True, num_kv_heads=4, rope_theta=500.0, bias=True)
FALCON_NEW_ONE_KV_HEAD = dict(new_decoder_architecture=True, num_kv_heads=1, rope_theta=500.0,
                              num_ln_in_parallel_attn=1, **HEAD_DIM_64)
FALCON_GROUPED = dict(new_decoder_architecture=True, num_kv_heads=2, hidden_size=128, num_attention_heads=8,
                      rope_theta=500.0, bias=True)
FALCON_GROUPED_64 = dict(new_decoder_architecture=True, num_kv_heads=2, hidden_size=256, num_attention_heads=4,
                         num_ln_in_parallel_attn=1, rope_theta=500.0)
# Per-head q/k LayerNorms before the rotation: Phi's qk_layernorm (a bias, one weight for every head), StableLM 2 12B's
# (a weight of its own for each head, no bias) and Command R+'s use_qk_norm (a weight row a head, no bias).
PHI_QK_NORMS = {**PHI, "qk_layernorm": True}
STABLELM_QK_NORMS = {**STABLELM_PARALLEL, "qk_layernorm": True}
COHERE_QK_NORMS = {**COHERE, "use_qk_norm": True}
# Arcee: an MLP without a gate over the squared ReLU (relu2); with biases on every projection, and YaRN.
ARCEE = dict(head_dim=16, rope_theta=500.0)
ARCEE_BIASES = {**ARCEE, "attention_bias": True, "mlp_bias": True, **YARN}
# Nemotron: Arcee's MLP with LayerNorms of 1 + w with biases (drawn), heads of 16 of which the first 8 dimensions
# rotate (partial_rotary_factor), biases on every projection.
NEMOTRON = dict(head_dim=16, rope_theta=500.0, partial_rotary_factor=0.5, attention_bias=True, mlp_bias=True)
# Apertus: per-head q/k norms and xIELU, whose learned values tiny_model draws for each layer; llama3's scaling.
APERTUS = dict(head_dim=16, rope_theta=500.0, rope_scaling=None)
APERTUS_LLAMA3 = {**APERTUS, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}
# OLMo: LayerNorms without parameters, q, k and v clamped at 0.15 (about a third of a tiny model's values).
OLMO = dict(head_dim=16, rope_theta=500.0, clip_qkv=0.15)
# OLMoE: six experts, three a token, q/k norms over all heads, the clamp; renormalized or not.
OLMOE = dict(num_experts=6, num_experts_per_tok=3, clip_qkv=0.15)
QWEN3_MOE = dict(num_experts=6, num_experts_per_tok=3, moe_intermediate_size=64, mlp_only_layers=[1])
QWEN2_MOE = {**QWEN3_MOE, "shared_expert_intermediate_size": 128}
QWEN2_MOE_SPARSE_STEP = {**QWEN2_MOE, "mlp_only_layers": [], "decoder_sparse_step": 2}
# Granite MoE: Granite's scalars, six experts in 3-D banks (three a token, chosen by score, weighted by the softmax of
# theirs alone); with a shared MLP (gate and up fused) beside them.
GRANITEMOE = {**GRANITE, "num_local_experts": 6, "num_experts_per_tok": 3}
GRANITEMOE_SHARED = {**GRANITEMOE, "shared_intermediate_size": 128}
# ERNIE 4.5 MoE: a dense first layer, then six experts chosen by probability plus a drawn correction, their weights'
# sum clamped below at 0.75 (above some sums of three of six), two shared experts; interleaved pairs.
ERNIE4_5_MOE = {**ERNIE4_5, "moe_num_experts": 6, "moe_k": 3, "moe_intermediate_size": 64, "moe_num_shared_experts": 2,
                "moe_layer_start_index": 1, "moe_norm_min": 0.75}
ERNIE4_5_MOE_BIASED = {**ERNIE4_5_MOE, "use_bias": True, "tie_word_embeddings": False}
# Hunyuan-MoE: Hunyuan dense's layers, six experts (three a token) and a shared MLP in every layer.
HUNYUAN_MOE = {**HUNYUAN, "num_experts": 6, "moe_topk": 3}
HUNYUAN_MOE_BIASES = {**HUNYUAN_MOE, "attention_bias": True}
# GLM-4.5: GLM's q/k/v biases and half-rotated heads (turned in halves), per-head q/k norms, a dense first layer, then
# DeepSeek-V3's mixture: eight experts in four groups, three a token from the two best groups by sigmoid score plus a
# drawn correction, renormalized, times 1.75, and two shared experts. Its Air-like form: no biases or q/k norms, a
# quarter of each head rotated, every layer sparse, one group, not renormalized.
GLM4_MOE = dict(head_dim=16, partial_rotary_factor=0.5, rope_theta=500.0, n_routed_experts=8, n_group=4, topk_group=2,
                num_experts_per_tok=3, moe_intermediate_size=32, n_shared_experts=2, first_k_dense_replace=1,
                routed_scaling_factor=1.75, norm_topk_prob=True, attention_bias=True, use_qk_norm=True)
GLM4_MOE_AIR = {**GLM4_MOE, "attention_bias": False, "use_qk_norm": False, "partial_rotary_factor": 0.25, "n_group": 1,
                "topk_group": 1, "first_k_dense_replace": 0, "norm_topk_prob": False}
# dots.llm1: Qwen3's q/k norms with the same mixture (not renormalized, times 2.5, one shared expert), its dense first
# layer full and its sparse second layer sliding (a window of 5); with q/k/v/o biases and no window.
DOTS1 = dict(head_dim=16, rope_theta=500.0, n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3,
             moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=2.5,
             norm_topk_prob=False, sliding_window=5, max_window_layers=1)
DOTS1_BIASED = {**DOTS1, "attention_bias": True, "sliding_window": None, "tie_word_embeddings": False}
# gpt-oss: sliding and full layers (Ministral's windows), YaRN, a sink per head, six experts (three a token) with
# biases and a router with one, the clamped SwiGLU's limit low enough to cut (tiny_model draws what it reads).
GPT_OSS = {**YARN_GPT_OSS, **MINISTRAL, "head_dim": 16, "num_local_experts": 6, "num_experts_per_tok": 3,
           "swiglu_limit": 0.5, "swiglu_alpha": 1.5}
GPT_OSS_HEAD_DIM_64 = {**GPT_OSS, **HEAD_DIM_64, "head_dim": 64}
# PhiMoE: six experts, the sparsemixer's two picks each weighted by a softmax over the scores within a relative 0.6 of
# its own; biases on q, k, v, o and the head, LayerNorms with biases (tiny_model draws them all); with longrope, a
# 40-token test crosses from the short factors' tables to the long ones' at position 16.
PHIMOE = dict(head_dim=16, num_local_experts=6, num_experts_per_tok=2, router_jitter_noise=0.3, attention_bias=True,
              lm_head_bias=True, tie_word_embeddings=False)
PHIMOE_LONGROPE = {**PHIMOE, "max_position_embeddings": 64, "rope_scaling": {
    "rope_type": "longrope", "original_max_position_embeddings": 16, "short_mscale": 1.2, "long_mscale": 1.45,
    "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0], "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]}}
PHIMOE_HEAD_DIM_64 = {**PHIMOE, **HEAD_DIM_64, "head_dim": 64, "router_jitter_noise": 0.05}
MODEL_CLASSES = {Qwen3Config: Qwen3ForCausalLM, Gemma2Config: Gemma2ForCausalLM, Gemma3TextConfig: Gemma3ForCausalLM,
                 Phi3Config: Phi3ForCausalLM, Olmo2Config: Olmo2ForCausalLM, Olmo3Config: Olmo3ForCausalLM,
                 MixtralConfig: MixtralForCausalLM, Qwen3MoeConfig: Qwen3MoeForCausalLM,
                 Qwen2MoeConfig: Qwen2MoeForCausalLM, Starcoder2Config: Starcoder2ForCausalLM,
                 GemmaConfig: GemmaForCausalLM, SmolLM3Config: SmolLM3ForCausalLM, GraniteConfig: GraniteForCausalLM,
                 MinistralConfig: MinistralForCausalLM, Ministral3Config: Ministral3ForCausalLM, Ernie4_5Config: Ernie4_5ForCausalLM,
                 GlmConfig: GlmForCausalLM, Glm4Config: Glm4ForCausalLM, SeedOssConfig: SeedOssForCausalLM,
                 HeliumConfig: HeliumForCausalLM, HunYuanDenseV1Config: HunYuanDenseV1ForCausalLM,
                 Exaone4Config: Exaone4ForCausalLM, GPTNeoXConfig: GPTNeoXForCausalLM, PhiConfig: PhiForCausalLM,
                 CohereConfig: CohereForCausalLM, Cohere2Config: Cohere2ForCausalLM, GPTJConfig: GPTJForCausalLM,
                 CodeGenConfig: CodeGenForCausalLM, StableLmConfig: StableLmForCausalLM, GPT2Config: GPT2LMHeadModel,
                 GPTBigCodeConfig: GPTBigCodeForCausalLM, OPTConfig: OPTForCausalLM, GPTNeoConfig: GPTNeoForCausalLM,
                 VaultGemmaConfig: VaultGemmaForCausalLM, ArceeConfig: ArceeForCausalLM,
                 NemotronConfig: NemotronForCausalLM, ApertusConfig: ApertusForCausalLM, OlmoConfig: OlmoForCausalLM,
                 OlmoeConfig: OlmoeForCausalLM,
                 GraniteMoeConfig: GraniteMoeForCausalLM, GraniteMoeSharedConfig: GraniteMoeSharedForCausalLM,
                 Ernie4_5_MoeConfig: Ernie4_5_MoeForCausalLM, HunYuanMoEV1Config: HunYuanMoEV1ForCausalLM,
                 BloomConfig: BloomForCausalLM, FalconConfig: FalconForCausalLM, Glm4MoeConfig: Glm4MoeForCausalLM,
                 Dots1Config: Dots1ForCausalLM, GptOssConfig: GptOssForCausalLM, PhimoeConfig: PhimoeForCausalLM}
# GPT-2's line: learned positions, LayerNorms, its configs' own names for TINY's sizes (None: a field they lack).
LEARNED_POSITIONS = {
    GPT2Config: dict(hidden_size="n_embd", num_hidden_layers="n_layer", num_attention_heads="n_head",
                     intermediate_size="n_inner", max_position_embeddings="n_positions", num_key_value_heads=None),
    GPTBigCodeConfig: dict(hidden_size="n_embd", num_hidden_layers="n_layer", num_attention_heads="n_head",
                           intermediate_size="n_inner", max_position_embeddings="n_positions",
                           num_key_value_heads=None),
    OPTConfig: dict(intermediate_size="ffn_dim", num_key_value_heads=None),
    GPTNeoConfig: dict(num_hidden_layers="num_layers", num_attention_heads="num_heads", num_key_value_heads=None),
}
# Families whose every norm weight and every bias tiny_model draws (from_config sets them to ones and zeros).
DRAWN_NORMS_AND_BIASES = (Starcoder2Config, Ernie4_5Config, GlmConfig, Glm4Config, GPTNeoXConfig, PhiConfig,
                          CohereConfig, Cohere2Config, GPTJConfig, CodeGenConfig, StableLmConfig, NemotronConfig,
                          Ernie4_5_MoeConfig, BloomConfig, FalconConfig, PhimoeConfig)


def tiny_model(config_class=LlamaConfig, dtype=torch.float32, **overrides) -> LlamaForCausalLM:
    """A plain tiny model (from_config does not accelerate)."""
    torch.manual_seed(0)
    model_class = MODEL_CLASSES.get(config_class, LlamaForCausalLM)
    values = {**TINY, **overrides}
    if config_class in (GPTNeoXConfig, GPTJConfig, CodeGenConfig, BloomConfig, FalconConfig):
        values.pop("num_key_value_heads")  # (all key/value heads, or Falcon's num_kv_heads)
    if config_class is BloomConfig:  # (an MLP of 4 x hidden_size)
        values.pop("intermediate_size")
    if config_class is FalconConfig:
        values["ffn_hidden_size"] = values.pop("intermediate_size")
    if config_class in (GPTJConfig, CodeGenConfig):  # (n_inner)
        values.pop("intermediate_size")
    if config_class in LEARNED_POSITIONS:  # under the family's names
        names = LEARNED_POSITIONS[config_class]
        values = {names.get(name, name): value for name, value in values.items() if names.get(name, name)}
    model = model_class.from_config(config_class.from_dict(values), dtype=dtype)
    if config_class in LEARNED_POSITIONS:  # every weight drawn wide enough that a wrong detail moves the logits
        # (no RMS norm scales these layers' outputs down: the projections' outputs about half their inputs' size, and
        # the token table, which is the tied head, narrow, so that one int8 input rounded to the neighbouring step
        # moves a logit by well under the quantized tests' tolerance, as in the other families)
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                torch.nn.init.normal_(parameter, std=0.1)
            elif parameter.dim() == 1:  # a LayerNorm's
                torch.nn.init.normal_(parameter, mean=1.0, std=0.1)
            else:  # the embeddings' (the positions' as large as the tokens')
                embedding = "embed" in name or name.split(".")[-2] in ("wte", "wpe")
                torch.nn.init.normal_(parameter, std=0.03 if embedding else 0.5 * parameter.shape[1] ** -0.5)
        return model.eval()
    for name, module in model.named_modules():
        # ERNIE 4.5 MoE's correction biases, which move the picks; the shared MLPs beside the experts (ERNIE's,
        # Hunyuan-MoE's, Granite MoE shared's) drawn large enough to count
        if name.endswith("moe_statics"):
            torch.nn.init.normal_(module.e_score_correction_bias, std=0.1)
        # DeepSeek-V3's routers (GLM-4.5's, dots.llm1's): sigmoid scores spread past their correction biases' reach
        if isinstance(module, DeepseekV3Router):
            torch.nn.init.normal_(module.weight, std=0.15)
            torch.nn.init.normal_(module.e_score_correction_bias, std=0.1)
        if name.endswith(("shared_experts", "shared_mlp")):
            for projection in module.children():
                torch.nn.init.normal_(projection.weight, std=0.05)
        if isinstance(module, StackedExperts):  # Granite MoE's banks, whose outputs the residual factor scales down
            torch.nn.init.normal_(module.weight, std=0.1)
        # gpt-oss's experts and their biases (gate and up past the clamps), its routers' biases and its sinks
        if isinstance(module, GptOssExperts):
            for parameter, std in ((module.gate_up_proj, 0.1), (module.down_proj, 0.1), (module.gate_up_proj_bias, 0.3),
                                   (module.down_proj_bias, 0.2)):
                torch.nn.init.normal_(parameter, std=std)
        if isinstance(module, GptOssMLP):
            torch.nn.init.normal_(module.router.bias, std=0.5)
        if isinstance(module, GptOssAttention):
            torch.nn.init.normal_(module.sinks, std=1.0)
        if isinstance(module, PhimoeSparseMoeBlock):  # PhiMoE's experts and router, their weights large enough to count
            for projection in (module.gate, *(p for expert in module.experts for p in expert.children())):
                torch.nn.init.normal_(projection.weight, std=0.1)
    # from_config zeroes Gemma's norms (offsets)
    if config_class in (GemmaConfig, Gemma2Config, Gemma3TextConfig, VaultGemmaConfig):
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                torch.nn.init.normal_(parameter, std=0.5)
        return model.eval()
    for layer in model.base_model.layers:  # an MLP without a gate (Arcee's, Nemotron's, Apertus's), drawn large enough
        mlp = getattr(layer, "mlp", None)  # that its activation moves the logits past every tolerance
        if hasattr(mlp, "up_proj") and not hasattr(mlp, "gate_proj"):
            for projection in (mlp.up_proj, mlp.down_proj):
                torch.nn.init.normal_(projection.weight, std=0.1)
    if config_class in DRAWN_NORMS_AND_BIASES:  # e.g. StarCoder2's LayerNorms' weights and biases, every bias
        for name, parameter in model.named_parameters():
            # (StableLM's per-head q/k norms: q_layernorm.norms.{h}.weight)
            if (name.endswith(("norm.weight", "ln_1.weight", "ln_f.weight", "ln_attn.weight", "ln_mlp.weight"))
                    or "layernorm.norms." in name):
                torch.nn.init.normal_(parameter, mean=1.0, std=0.3)
            elif name.endswith("bias"):
                torch.nn.init.normal_(parameter, std=0.3)
            # GPT-NeoX's and GPT-J's MLP inputs spread over GELU's curve (-3..3), where its exact and tanh forms part by
            # 1e-4-1e-3
            elif name.endswith(("dense_h_to_4h.weight", "dense_4h_to_h.weight", "fc_in.weight", "fc_out.weight")):
                torch.nn.init.normal_(parameter, std=0.3)
        return model.eval()
    for layer in model.model.layers:  # from_config zeroes biases and sets norms to ones; make them count
        block = getattr(layer, "mlp", None)
        # Qwen2-MoE's shared expert, its gate's sigmoid away from 0.5: the factor moves the logits far past the
        # quantized tests' tolerance (an output so large that it outweighed the rest, the final norm would hide).
        if hasattr(block, "shared_expert"):
            for projection in block.shared_expert.children():  # gate, up and down
                torch.nn.init.normal_(projection.weight, std=0.05)
            torch.nn.init.normal_(block.shared_expert_gate.weight, std=0.3)
        if isinstance(getattr(block, "act_fn", None), XIELU):  # Apertus's xIELU: its own values in each layer
            xielu = block.act_fn
            for value, mean in ((xielu.alpha_p, 0.0), (xielu.alpha_n, 0.0), (xielu.beta, 0.5), (xielu.eps, -0.3)):
                torch.nn.init.normal_(value, mean=mean, std=0.4 if mean > -0.3 else 0.1)  # eps's clamp shows
        attention = layer.self_attn
        if getattr(attention, "q_proj", attention.o_proj).bias is not None:
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
        # o_proj's and the MLP's biases (Seed-OSS, Helium, Hunyuan), drawn smaller: they add to the residual stream
        for proj in (attention.o_proj, *(getattr(block, name, None) for name in ("gate_proj", "up_proj", "down_proj"))):
            if proj is not None and proj.bias is not None:
                torch.nn.init.normal_(proj.bias, std=0.2)
        # q/k norms (Hunyuan's named as the layer norms they are), and the norms after each branch (EXAONE 4.0)
        norms = [getattr(attention, name, None) for name in ("q_norm", "k_norm", "query_layernorm", "key_layernorm")]
        if config_class is Exaone4Config:
            norms += (layer.post_attention_layernorm, layer.post_feedforward_layernorm)
        for norm in norms:
            if norm is not None:
                torch.nn.init.normal_(norm.weight, mean=1.0, std=0.5)
    return model.eval()


def int8_per_16(linear: torch.nn.Linear) -> kernels.Linear:
    """`linear` as int8 with a scale per 16 weights, as a GGUF Q6_K matrix loads: 6-bit steps (-32..31)."""
    groups = linear.weight.detach().reshape(linear.out_features, -1, 16)
    scale = groups.abs().amax(-1) / 31
    steps = (groups / scale[..., None]).round().clamp(-32, 31).to(torch.int8).reshape(linear.weight.shape)
    return kernels.Linear.from_linear(linear).train(linear.training)._packed(steps, scale, linear.bias)


def quantized(model, quantization: str):
    """`model` quantized as "int8", "int4", or "int4+int8": int4 with each layer's v projection at int8 and up
    projection at int8 with a scale per 16 weights, as from_pretrained keeps a GGUF file's 5-8-bit matrices at int8
    under int4 (Q6_K's with their scales per 16); Phi-3's fused q/k/v and gate/up projections so, GLM's fused
    gate/up as an up projection, and every other expert's up projection of a mixture, and its shared expert's."""
    if quantization == "int4+int8":
        for layer in model.base_model.layers:
            # GPT-NeoX's attention `attention`, GPT-2's, GPT-Neo's, GPT-J's and CodeGen's `attn` (GPT-Neo's
            # projections in its own `attention`); OPT's MLP the layer's
            attention = (getattr(layer, "self_attn", None) or getattr(layer, "attention", None)
                         or getattr(layer, "self_attention", None) or layer.attn)  # (BLOOM's, Falcon's the last)
            attention = getattr(attention, "attention", attention)
            mlp = getattr(layer, "block_sparse_moe", getattr(layer, "mlp", layer))
            if hasattr(attention, "query_key_value"):  # GPT-NeoX's fused q/k/v, and its up projection per 16
                attention.query_key_value = kernels.Linear.from_linear(attention.query_key_value, "int8")
                mlp.dense_h_to_4h = int8_per_16(mlp.dense_h_to_4h)
                continue
            fused = next((name for name in ("qkv_proj", "c_attn") if hasattr(attention, name)), None)
            if fused:  # Phi-3's, GPT-2's and CodeGen's fused q/k/v, Phi-3's fused gate/up, GPT-2's or CodeGen's up
                setattr(attention, fused, kernels.Linear.from_linear(getattr(attention, fused), "int8"))
                up = next(name for name in ("gate_up_proj", "c_fc", "fc_in") if hasattr(mlp, name))
                setattr(mlp, up, int8_per_16(getattr(mlp, up)))
                continue
            attention.v_proj = kernels.Linear.from_linear(attention.v_proj, "int8")
            if isinstance(mlp, GptOssMLP):  # (its experts' stacks packed alike)
                continue
            if not isinstance(mlp, SparseMoeBlock):
                # StarCoder2's and GPT-Neo's, OPT's and Phi's, GLM's fused one, Llama's, GPT-J's
                up = next(name for name in ("c_fc", "fc1", "gate_up_proj", "up_proj", "fc_in") if hasattr(mlp, name))
                setattr(mlp, up, int8_per_16(getattr(mlp, up)))
                continue
            for expert in list(mlp.experts)[::2] + ([mlp.shared_expert] if hasattr(mlp, "shared_expert") else []):
                up = "w3" if hasattr(expert, "w3") else "up_proj"
                setattr(expert, up, int8_per_16(getattr(expert, up)))
        quantization = "int4"
    return kernels.quantize(model, quantization)


def accelerated(model):
    assert kernels.accelerate(model)
    return model


def counted_decode_steps(monkeypatch) -> list:
    """A list that gets an item for each call of the compiled decoding step from here on."""
    calls, decode_step = [], torch.ops.openformers.decode_step
    monkeypatch.setattr(torch.ops.openformers, "decode_step", lambda *args: calls.append(1) or decode_step(*args))
    return calls


def counted_runs(monkeypatch) -> list:
    """A list that gets, for each call of the compiled run of greedy steps from here on, how many tokens it made."""
    calls, decode_tokens = [], torch.ops.openformers.decode_tokens

    def counted(*args):
        made = decode_tokens(*args)
        calls.append(made)
        return made

    monkeypatch.setattr(torch.ops.openformers, "decode_tokens", counted)
    return calls


def counted_matvecs(monkeypatch) -> list:
    """A list that gets the row count of each call of the kernel's product from here on."""
    calls, matvec = [], torch.ops.openformers.matvec
    monkeypatch.setattr(torch.ops.openformers, "matvec", lambda *args: calls.append(len(args[0])) or matvec(*args))
    return calls


def rounded(x: torch.Tensor) -> torch.Tensor:
    """`x` as the kernel rounds the input of an int8 or int4 product: per block of 32 along the last dimension, int8
    steps round(x * 127 / top) times top / 127, where top is the block's largest magnitude (float32 throughout)."""
    columns = x.shape[-1]
    blocks = torch.nn.functional.pad(x.float(), (0, -columns % 32)).unflatten(-1, (-1, 32))
    top = blocks.abs().amax(-1, keepdim=True)
    # 127 / top as the kernel divides: a number over a tensor is 127 times top's reciprocal, which can differ in the
    # last bit and move a step that lands near a half
    steps = torch.round(blocks * torch.where(top > 0, torch.full_like(top, 127) / top, torch.zeros_like(top)))
    return (steps * (top / 127)).flatten(-2)[..., :columns].to(x.dtype)


def plain_path_rounds_inputs(monkeypatch) -> None:
    """From here on the plain path rounds every packed layer's input as the kernel does, so that the two compute
    the same thing and agree up to float sums."""
    forward = kernels.Linear.forward
    monkeypatch.setattr(kernels.Linear, "forward", lambda self, x: forward(
        self, rounded(x) if self.scale is not None and not library.loaded() else x))


def step_logits(model, tokens: list[int], use_kernels: bool, monkeypatch) -> torch.Tensor:
    """Logits of every decoding step after a 3-token prefill, one token at a time through a DynamicCache, with the
    loaded kernels used or, as if they were not, left aside."""
    assert kernels.build()
    monkeypatch.setattr(library, "loaded", lambda: use_kernels)
    cache, logits = DynamicCache(), []
    with torch.inference_mode():
        model(torch.tensor([tokens[:3]]), past_key_values=cache)
        for token in tokens[3:]:
            logits.append(model(torch.tensor([[token]]), past_key_values=cache, logits_to_keep=1).logits[0, -1])
    return torch.stack(logits)


# Which models take the kernels ----------------------------------------------------------------------------------


REFERENCE_FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": 5}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM, {"partial_rotary_factor": 0.5, "pad_token_id": 0}),
}


@pytest.mark.parametrize("family", REFERENCE_FAMILIES)
def test_each_family_loads_accelerated_with_the_plain_results(family, tmp_path, monkeypatch):
    config_class, model_class, overrides = REFERENCE_FAMILIES[family]
    torch.manual_seed(0)
    reference = model_class(config_class(**TINY, **overrides))
    for name, parameter in reference.named_parameters():
        if name.endswith("bias"):  # the reference zeroes them: make Qwen2's q/k/v biases count
            torch.nn.init.normal_(parameter, std=0.5)
    reference.save_pretrained(tmp_path)
    fast = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert fast.model.accelerated_step is not None
    assert isinstance(fast.lm_head, kernels.Linear)
    monkeypatch.setattr(kernels, "accelerate", lambda model: False)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert plain.model.accelerated_step is None and type(plain.lm_head) is torch.nn.Linear

    tokens = torch.randint(0, 96, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    steps = counted_decode_steps(monkeypatch)
    fast_logits = step_logits(fast, tokens, True, monkeypatch)
    assert len(steps) == len(tokens) - 3
    torch.testing.assert_close(fast_logits, step_logits(plain, tokens, True, monkeypatch), atol=1e-4, rtol=1e-4)
    assert len(steps) == len(tokens) - 3
    prompt = torch.tensor([tokens[:4]])
    assert fast.generate(prompt, max_new_tokens=20).tolist() == plain.generate(prompt, max_new_tokens=20).tolist()


def test_every_way_of_loading_is_accelerated(tmp_path):
    from openformers import LlamaForCausalLM as Llama, LlamaModel

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
    for load in (AutoModelForCausalLM.from_pretrained, Llama.from_pretrained):
        assert load(tmp_path).model.accelerated_step is not None
    for load in (AutoModel.from_pretrained, LlamaModel.from_pretrained):
        assert load(tmp_path).accelerated_step is not None


def test_gpt2_takes_the_step_and_bert_is_left_plain(tmp_path):
    # GPT-2 takes the decoding step, its linear layers the kernel's few-row products; an encoder's forward of whole
    # sentences would not use them.
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4)).save_pretrained(
        tmp_path / "gpt2")
    transformers.BertModel(transformers.BertConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    )).save_pretrained(tmp_path / "bert")
    gpt2, bert = AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2"), AutoModel.from_pretrained(tmp_path / "bert")
    assert gpt2.transformer.accelerated_step is not None and not kernels.accelerate(bert)
    linears = [module for module in gpt2.modules() if isinstance(module, torch.nn.Linear)]
    assert linears and all(isinstance(module, kernels.Linear) for module in linears)
    assert not any(isinstance(module, kernels.Linear) for module in bert.modules())


@dataclasses.dataclass
class QueryKeyNormConfig(LlamaConfig):
    qk_norm: bool = True  # a feature the models might gain (Qwen3) before the decoding step implements it


@pytest.mark.parametrize(
    "config, named",
    [
        (QueryKeyNormConfig.from_dict(TINY), "qk_norm"),
        (LlamaConfig.from_dict({**TINY, "attention_bias": True}), "attention_bias"),
        (LlamaConfig.from_dict({**TINY, "mlp_bias": True}), "mlp_bias"),
    ],
    ids=["unknown-field", "output-bias", "mlp-bias"],
)
def test_a_config_feature_the_step_does_not_implement_is_refused(config, named):
    assert named in refusal(config)
    model = LlamaForCausalLM.from_config(config).eval()
    assert not kernels.accelerate(model)
    assert model.model.accelerated_step is None
    # the plain forward, with the kernel's products for its linear layers (it generates)
    assert not any(type(module) is torch.nn.Linear for module in model.modules())


def test_groups_that_hold_fewer_experts_than_a_token_takes_are_refused():
    # (GLM-4.5's and dots.llm1's choice would then take experts outside the best groups, which the step never picks)
    for config_class, overrides in ((Glm4MoeConfig, GLM4_MOE), (Dots1Config, DOTS1)):
        config = config_class.from_dict({**TINY, **overrides})
        assert refusal(config) is None
        config.topk_group = 1  # one group of two experts for three a token
        assert "n_group=4 with topk_group=1" in refusal(config)


def test_an_unknown_rope_scaling_is_refused():
    config = LlamaConfig.from_dict(TINY)
    assert refusal(config) is None
    config.rope_scaling = {"rope_type": "longrope", "factor": 2.0}  # (Phi-3's alone)
    assert "rope_scaling" in refusal(config)
    for kind in ("linear", "llama3", "yarn", "dynamic"):
        config.rope_scaling = {"rope_type": kind, "factor": 2.0}
        assert refusal(config) is None


# The decoding step ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, overrides",
    [(LlamaConfig, {}), (Qwen2Config, {}), (MistralConfig, {"sliding_window": 5}), (LlamaConfig, {"head_dim": 8}),
     (LlamaConfig, {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
     (LlamaConfig, HEAD_DIM_64), (MistralConfig, {**HEAD_DIM_128, "sliding_window": 5}), (Qwen3Config, {}),
     (Qwen3Config, {**HEAD_DIM_128, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 0}),
     (Gemma3TextConfig, GEMMA3), (Gemma3TextConfig, {**HEAD_DIM_64, "head_dim": 64, "query_pre_attn_scalar": 64,
                                                     "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
     (Phi3Config, PHI3), (Phi3Config, PHI3_LONGROPE), (Phi3Config, HEAD_DIM_128), (Gemma2Config, GEMMA2),
     (Gemma2Config, GEMMA2_HEAD_DIM_64), (Olmo2Config, {}), (Olmo2Config, HEAD_DIM_64), (Olmo3Config, OLMO3),
     (MixtralConfig, MIXTRAL),
     (MixtralConfig, {**MIXTRAL, **HEAD_DIM_64, "num_experts_per_tok": 1, "sliding_window": 5}),
     (Qwen3MoeConfig, QWEN3_MOE), (Qwen3MoeConfig, {**QWEN3_MOE, "norm_topk_prob": True, "mlp_only_layers": []}),
     (Qwen2MoeConfig, QWEN2_MOE), (Qwen2MoeConfig, {**QWEN2_MOE_SPARSE_STEP, "norm_topk_prob": True}),
     (Starcoder2Config, {}), (Starcoder2Config, {"use_bias": False}),
     (Starcoder2Config, {**HEAD_DIM_64, "sliding_window": 5}), (GemmaConfig, GEMMA), (SmolLM3Config, SMOLLM3),
     (SmolLM3Config, {**SMOLLM3, **HEAD_DIM_64}), (GraniteConfig, GRANITE), (LlamaConfig, YARN), (LlamaConfig, DYNAMIC),
     (Qwen2Config, YARN_GPT_OSS), (Gemma3TextConfig, {**GEMMA3, **YARN}), (Olmo3Config, OLMO3_YARN),
     (MinistralConfig, MINISTRAL), (MinistralConfig, {**MINISTRAL, **HEAD_DIM_64, **YARN}),
     (Ministral3Config, MINISTRAL3), (InternLM3Config, {**INTERNLM3, **HEAD_DIM_64, "head_dim": 64}), (Ernie4_5Config, ERNIE4_5),
     (Ernie4_5Config, {**ERNIE4_5_BIASED, **HEAD_DIM_64, "head_dim": 64}), (GlmConfig, GLM),
     (GlmConfig, {**GLM_HEAD_DIM_64, "attention_bias": False}), (Glm4Config, GLM), (Glm4Config, GLM_HEAD_DIM_64),
     (SeedOssConfig, SEED_OSS), (SeedOssConfig, {**SEED_OSS_EVERY_BIAS, **HEAD_DIM_64, "head_dim": 64}),
     (HeliumConfig, HELIUM), (HeliumConfig, {**HELIUM_BIASES, **HEAD_DIM_64, "head_dim": 64}),
     (HunYuanDenseV1Config, HUNYUAN), (HunYuanDenseV1Config, {**HUNYUAN_BIASES, **HEAD_DIM_128, "head_dim": 64}),
     (Exaone4Config, EXAONE4), (Exaone4Config, {**EXAONE4_NO_WINDOW, **HEAD_DIM_64, "head_dim": 64}),
     (ExaoneConfig, {"rope_theta": 500.0}),
     (VaultGemmaConfig, GEMMA2),
     (GPTNeoXConfig, GPT_NEOX), (GPTNeoXConfig, GPT_NEOX_SEQUENTIAL), (GPTNeoXConfig, GPT_NEOX_HEAD_DIM_64),
     (PhiConfig, PHI), (PhiConfig, PHI_HEAD_DIM_64), (CohereConfig, COHERE),
     (CohereConfig, {**COHERE, **HEAD_DIM_64, "attention_bias": False}), (Cohere2Config, COHERE2),
     (GPTJConfig, GPTJ_EXACT_GELU), (GPTJConfig, GPTJ_HEAD_DIM_64), (CodeGenConfig, CODEGEN),
     (StableLmConfig, STABLELM), (StableLmConfig, {**STABLELM_PARALLEL, **HEAD_DIM_64}),
     (PhiConfig, PHI_QK_NORMS), (StableLmConfig, {**STABLELM_QK_NORMS, **HEAD_DIM_64}), (CohereConfig, COHERE_QK_NORMS),
     (GPT2Config, GPT2), (GPT2Config, {**GPT2, **HEAD_DIM_64}),
     (GPT2Config, {**GPT2_INVERSE_LAYER_IDX, **HEAD_DIM_64, "scale_attn_weights": False}), (GPTBigCodeConfig, GPT2),
     (GPTBigCodeConfig, {**GPT_BIGCODE_UNSCALED, **HEAD_DIM_128}), (OPTConfig, GPT2),
     (OPTConfig, {**GPT2, **HEAD_DIM_64, "activation_function": "gelu_new"}), (GPTNeoConfig, GPT_NEO),
     (GPTNeoConfig, {**GPT_NEO, **HEAD_DIM_64}),
     (ArceeConfig, ARCEE), (ArceeConfig, {**ARCEE_BIASES, **HEAD_DIM_64, "head_dim": 64}), (NemotronConfig, NEMOTRON),
     (NemotronConfig, {**NEMOTRON, **HEAD_DIM_64, "head_dim": 64, "partial_rotary_factor": 0.25,
                       "attention_bias": False}),
     (ApertusConfig, APERTUS), (ApertusConfig, {**APERTUS_LLAMA3, **HEAD_DIM_128, "head_dim": 64}),
     (OlmoConfig, OLMO), (OlmoConfig, {**OLMO, **HEAD_DIM_64, "head_dim": 64, "attention_bias": True}),
     (OlmoeConfig, OLMOE), (OlmoeConfig, {**OLMOE, **HEAD_DIM_64, "norm_topk_prob": True}),
     (GraniteMoeConfig, GRANITEMOE), (GraniteMoeSharedConfig, {**GRANITEMOE_SHARED, **HEAD_DIM_64}),
     (Ernie4_5_MoeConfig, ERNIE4_5_MOE), (Ernie4_5_MoeConfig, {**ERNIE4_5_MOE_BIASED, **HEAD_DIM_64, "head_dim": 64}),
     (HunYuanMoEV1Config, HUNYUAN_MOE), (HunYuanMoEV1Config, {**HUNYUAN_MOE_BIASES, **HEAD_DIM_128, "head_dim": 64}),
     (BloomConfig, BLOOM), (BloomConfig, BLOOM_HEAD_DIM_64), (FalconConfig, FALCON), (FalconConfig, FALCON_RW),
     (FalconConfig, FALCON_NEW), (FalconConfig, FALCON_NEW_ONE_KV_HEAD), (FalconConfig, FALCON_GROUPED),
     (FalconConfig, FALCON_GROUPED_64), (Glm4MoeConfig, GLM4_MOE), (Glm4MoeConfig,
     {**GLM4_MOE_AIR, **HEAD_DIM_64, "head_dim": 64}), (Dots1Config, DOTS1),
     (Dots1Config, {**DOTS1_BIASED, **HEAD_DIM_64, "head_dim": 64}), (GptOssConfig, GPT_OSS),
     (GptOssConfig, GPT_OSS_HEAD_DIM_64), (PhimoeConfig, PHIMOE_LONGROPE), (PhimoeConfig, PHIMOE_HEAD_DIM_64)],
    ids=["llama", "qwen2-bias", "mistral-window", "head-dim", "llama3-rope", "head-dim-64", "head-dim-128-window",
         "qwen3-qk-norms", "qwen3-head-dim-128-window", "gemma3", "gemma3-head-dim-64-linear-rope",
         "phi3-partial-rope-window", "phi3-longrope", "phi3-head-dim-128", "gemma2-soft-caps",
         "gemma2-head-dim-64", "olmo2", "olmo2-head-dim-64", "olmo3-window-local-rope", "mixtral",
         "mixtral-top-1-window", "qwen3-moe-dense-layer", "qwen3-moe-renormalized", "qwen2-moe-dense-layer",
         "qwen2-moe-sparse-step-renormalized", "starcoder2", "starcoder2-no-biases", "starcoder2-head-dim-64-window",
         "gemma", "smollm3", "smollm3-head-dim-64", "granite", "llama-yarn", "llama-dynamic", "qwen2-yarn-gpt-oss", "gemma3-yarn",
         "olmo3-yarn", "ministral-per-layer-windows", "ministral-head-dim-64-yarn",
         "ministral3-window-yarn", "internlm3-biases-head-dim-64", "ernie4_5",
         "ernie4_5-biases-head-dim-64", "glm", "glm-no-bias-head-dim-64-quarter-linear-rope", "glm4",
         "glm4-head-dim-64-quarter-linear-rope", "seed-oss-q-k-v-biases", "seed-oss-every-bias-head-dim-64",
         "helium-interleaved", "helium-biases-head-dim-64", "hunyuan-norms-after", "hunyuan-biases-head-dim-64",
         "exaone4-window-unrotated-full", "exaone4-no-window-head-dim-64", "exaone", "vaultgemma-soft-caps",
         "gpt-neox-parallel",
         "gpt-neox-sequential", "gpt-neox-head-dim-64-linear-rope", "phi", "phi-head-dim-64-linear-rope", "cohere",
         "cohere-no-bias-head-dim-64", "cohere2-window-unrotated-full", "gptj-exact-gelu", "gptj-head-dim-64",
         "codegen-blocks", "stablelm-qkv-bias", "stablelm-parallel-head-dim-64",
         "phi-qk-layernorm", "stablelm-qk-norms-per-head-head-dim-64", "cohere-qk-norms-per-head", "gpt2", "gpt2-head-dim-64",
         "gpt2-inverse-layer-idx-unscaled-head-dim-64",
         "gpt-bigcode", "gpt-bigcode-unscaled-head-dim-128", "opt", "opt-gelu-head-dim-64", "gpt-neo",
         "gpt-neo-head-dim-64",
         "arcee-relu2", "arcee-biases-yarn-head-dim-64", "nemotron-layer-norms-half-rotated",
         "nemotron-head-dim-64-quarter-rotated", "apertus-xielu", "apertus-llama3-head-dim-64", "olmo-clipped",
         "olmo-biases-head-dim-64", "olmoe-clipped", "olmoe-renormalized-head-dim-64", "granitemoe",
         "granitemoe-shared-head-dim-64", "ernie4_5-moe", "ernie4_5-moe-biases-head-dim-64", "hunyuan-moe",
         "hunyuan-moe-biases-head-dim-64", "bloom-alibi", "bloom-head-dim-64", "falcon-multi-query-parallel",
         "falcon-rw-alibi-sequential", "falcon-new-two-norms", "falcon-new-one-kv-head-64", "falcon-grouped",
         "falcon-grouped-64", "glm4-moe", "glm4-moe-air-head-dim-64", "dots1-sliding",
         "dots1-biases-head-dim-64", "gpt-oss", "gpt-oss-head-dim-64", "phimoe-longrope", "phimoe-head-dim-64"],
)
def test_decode_steps_match_plain_path(config_class, overrides, monkeypatch):
    fast = accelerated(tiny_model(config_class, **overrides))
    plain = tiny_model(config_class, **overrides)
    tokens = torch.randint(0, 96, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    steps = counted_decode_steps(monkeypatch)
    fast_logits = step_logits(fast, tokens, True, monkeypatch)
    assert len(steps) == len(tokens) - 3
    torch.testing.assert_close(fast_logits, step_logits(plain, tokens, True, monkeypatch), atol=1e-4, rtol=1e-4)


def counted_batch_steps(monkeypatch) -> list:
    """A list that gets an item for each call of the compiled batched decoding step from here on."""
    calls, decode_batch = [], torch.ops.openformers.decode_batch
    monkeypatch.setattr(torch.ops.openformers, "decode_batch", lambda *args: calls.append(1) or decode_batch(*args))
    return calls


def left_padded_batch(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of `length` ids left-padded to different lengths (one unpadded), and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 96, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for row, padding in enumerate(torch.randint(0, length - 1, (rows,), generator=generator).tolist()[1:], 1):
        ids[row, :padding], mask[row, :padding] = 0, 0
    return ids, mask


def batch_step_logits(model, ids, mask, steps: int, use_kernels: bool, monkeypatch) -> torch.Tensor:
    """Logits of `steps` one-token steps of every row after a left-padded prompt, each row at its own positions
    (as generate feeds them), with the loaded kernels used or left aside. The prompt is fed a column at a time too,
    so that quantized products take the kernel's rounding there as well (a whole prompt takes PyTorch's matmul);
    a column where some row is padding takes the layers."""
    assert kernels.build()
    monkeypatch.setattr(library, "loaded", lambda: use_kernels)
    tokens = torch.randint(1, 96, (ids.shape[0], steps), generator=torch.Generator().manual_seed(9))
    ids, mask = torch.cat([ids, tokens], -1), torch.cat([mask, torch.ones_like(tokens)], -1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, logits = DynamicCache(), []
    with torch.inference_mode():
        for column in range(ids.shape[1]):
            end = column + 1
            logits.append(model(ids[:, column:end], attention_mask=mask[:, :end], position_ids=positions[:, column:end],
                                past_key_values=cache).logits[:, -1])
    return torch.stack(logits[-steps - 1:])


# Every family and weight layout the steps take: (config class, overrides, quantization), and their test ids.
STEP_CASES = [(LlamaConfig, {}, None), (Qwen2Config, {}, None), (MistralConfig, {"sliding_window": 5}, None),
    (LlamaConfig, {}, "int8"), (LlamaConfig, {}, "int4"), (LlamaConfig, {}, "int4+int8"),
    (MistralConfig, {**HEAD_DIM_64, "sliding_window": 5}, None), (LlamaConfig, HEAD_DIM_128, "int8"),
    (Qwen3Config, {}, None), (Qwen3Config, {}, "int4"), (Gemma3TextConfig, GEMMA3, None),
    (Gemma3TextConfig, GEMMA3, "int8"), (Gemma3TextConfig, GEMMA3, "int4+int8"), (Phi3Config, PHI3, None),
    (Phi3Config, PHI3_LONGROPE, "int8"), (Phi3Config, PHI3, "int4+int8"), (Gemma2Config, GEMMA2, None),
    (Gemma2Config, GEMMA2_HEAD_DIM_64, "int4+int8"), (Olmo2Config, {}, None), (Olmo2Config, {}, "int4+int8"),
    (MixtralConfig, MIXTRAL, None), (MixtralConfig, {**MIXTRAL, "sliding_window": 5}, "int8"),
    (Qwen3MoeConfig, QWEN3_MOE, None), (Qwen3MoeConfig, {**QWEN3_MOE, "norm_topk_prob": True}, "int4"),
    (Qwen3MoeConfig, QWEN3_MOE, "int4+int8"), (Qwen2MoeConfig, QWEN2_MOE, None),
    (Qwen2MoeConfig, {**QWEN2_MOE_SPARSE_STEP, "norm_topk_prob": True}, "int8"),
    (Qwen2MoeConfig, {**QWEN2_MOE, "norm_topk_prob": True}, "int4"), (Qwen2MoeConfig, QWEN2_MOE, "int4+int8"),
    (Starcoder2Config, {"sliding_window": 5}, None),
    (Starcoder2Config, {}, "int8"), (Starcoder2Config, {}, "int4+int8"), (GemmaConfig, GEMMA, None),
    (SmolLM3Config, SMOLLM3, None), (SmolLM3Config, SMOLLM3, "int4+int8"), (GraniteConfig, GRANITE, None),
    (GraniteConfig, GRANITE, "int4+int8"), (LlamaConfig, YARN, None), (LlamaConfig, DYNAMIC, None),
    (Gemma3TextConfig, {**GEMMA3, **DYNAMIC}, "int8"), (Qwen3Config, YARN_GPT_OSS, "int8"),
    (Olmo3Config, OLMO3_YARN, None), (MinistralConfig, MINISTRAL, None), (MinistralConfig, MINISTRAL, "int4+int8"),
    (Ministral3Config, MINISTRAL3, None), (InternLM3Config, INTERNLM3, "int4+int8"),
    (Ernie4_5Config, ERNIE4_5, None), (Ernie4_5Config, ERNIE4_5_BIASED, "int4+int8"), (GlmConfig, GLM, None),
    (GlmConfig, GLM, "int8"), (Glm4Config, GLM, None), (Glm4Config, GLM_HEAD_DIM_64, "int4+int8"),
    (SeedOssConfig, SEED_OSS_EVERY_BIAS, None), (SeedOssConfig, SEED_OSS, "int4+int8"),
    (HeliumConfig, HELIUM_BIASES, None),
    (HeliumConfig, HELIUM_BIASES, "int4+int8"), (HunYuanDenseV1Config, HUNYUAN, None),
    (HunYuanDenseV1Config, HUNYUAN_BIASES, "int8"), (Exaone4Config, EXAONE4, None),
    (Exaone4Config, EXAONE4, "int4+int8"), (GPTNeoXConfig, GPT_NEOX, None), (GPTNeoXConfig, GPT_NEOX_SEQUENTIAL, None),
    (GPTNeoXConfig, GPT_NEOX, "int8"), (GPTNeoXConfig, GPT_NEOX_SEQUENTIAL, "int4+int8"), (PhiConfig, PHI, None),
    (PhiConfig, PHI, "int4+int8"), (CohereConfig, COHERE, None), (Cohere2Config, COHERE2, None),
    (Cohere2Config, COHERE2, "int4+int8"), (GPTJConfig, GPTJ, None), (GPTJConfig, GPTJ, "int8"),
    (CodeGenConfig, CODEGEN, None), (CodeGenConfig, CODEGEN, "int4+int8"), (StableLmConfig, STABLELM, None),
    (StableLmConfig, STABLELM_PARALLEL, "int4+int8"),
    (PhiConfig, PHI_QK_NORMS, None), (StableLmConfig, STABLELM_QK_NORMS, "int8"), (CohereConfig, COHERE_QK_NORMS, None), (GPT2Config, GPT2, None), (GPT2Config, GPT2, "int8"),
    (GPT2Config, GPT2_INVERSE_LAYER_IDX, None), (GPT2Config, GPT2_INVERSE_LAYER_IDX, "int8"),
    (GPTBigCodeConfig, GPT2, None), (GPTBigCodeConfig, GPT_BIGCODE_UNSCALED, "int8"), (OPTConfig, GPT2, None),
    (OPTConfig, GPT2, "int4+int8"), (GPTNeoConfig, GPT_NEO, None), (GPTNeoConfig, GPT_NEO, "int4+int8"),
    (ArceeConfig, ARCEE_BIASES, None), (ArceeConfig, ARCEE, "int4+int8"),
    (NemotronConfig, NEMOTRON, None), (NemotronConfig, NEMOTRON, "int8"), (ApertusConfig, APERTUS_LLAMA3, None),
    (ApertusConfig, APERTUS, "int4+int8"), (OlmoConfig, OLMO, None), (OlmoConfig, OLMO, "int4+int8"),
    (OlmoeConfig, OLMOE, None), (OlmoeConfig, {**OLMOE, "norm_topk_prob": True}, "int4+int8"),
    (GraniteMoeConfig, GRANITEMOE, None), (GraniteMoeConfig, GRANITEMOE, "int8"),
    (GraniteMoeSharedConfig, GRANITEMOE_SHARED, None), (GraniteMoeSharedConfig, GRANITEMOE_SHARED, "int4"),
    (Ernie4_5_MoeConfig, ERNIE4_5_MOE, None), (Ernie4_5_MoeConfig, ERNIE4_5_MOE_BIASED, "int4+int8"),
    (HunYuanMoEV1Config, HUNYUAN_MOE_BIASES, None), (HunYuanMoEV1Config, HUNYUAN_MOE, "int8"),
    (BloomConfig, BLOOM, None), (BloomConfig, BLOOM, "int4+int8"), (FalconConfig, FALCON, None),
    (FalconConfig, FALCON_RW, None), (FalconConfig, FALCON_RW, "int8"), (FalconConfig, FALCON_NEW, "int4+int8"),
    (FalconConfig, FALCON_GROUPED, None), (FalconConfig, FALCON_GROUPED_64, "int8"), (Glm4MoeConfig, GLM4_MOE, None),
    (Glm4MoeConfig, GLM4_MOE_AIR, "int4+int8"), (Dots1Config, DOTS1, None),
    (Dots1Config, DOTS1_BIASED, "int8"), (GptOssConfig, GPT_OSS, None), (GptOssConfig, GPT_OSS, "int8"),
    (GptOssConfig, GPT_OSS_HEAD_DIM_64, "int4+int8"), (PhimoeConfig, PHIMOE, None), (PhimoeConfig, PHIMOE_LONGROPE,
    "int8"), (PhimoeConfig, PHIMOE, "int4+int8")]
STEP_CASE_IDS = ["llama", "qwen2-bias", "mistral-window", "int8", "int4", "int4+int8", "head-dim-64-window",
    "head-dim-128-int8", "qwen3-qk-norms", "qwen3-int4", "gemma3", "gemma3-int8", "gemma3-int4+int8", "phi3",
    "phi3-longrope-int8", "phi3-int4+int8", "gemma2", "gemma2-head-dim-64-int4+int8", "olmo2", "olmo2-int4+int8",
    "mixtral", "mixtral-window-int8", "qwen3-moe", "qwen3-moe-renormalized-int4", "qwen3-moe-int4+int8",
    "qwen2-moe", "qwen2-moe-sparse-step-renormalized-int8", "qwen2-moe-renormalized-int4", "qwen2-moe-int4+int8",
    "starcoder2-window", "starcoder2-int8", "starcoder2-int4+int8", "gemma", "smollm3", "smollm3-int4+int8", "granite",
    "granite-int4+int8", "llama-yarn", "llama-dynamic", "gemma3-dynamic-int8", "qwen3-yarn-gpt-oss-int8", "olmo3-yarn", "ministral",
    "ministral-int4+int8", "ministral3-window-yarn", "internlm3-biases-int4+int8", "ernie4_5", "ernie4_5-biases-int4+int8", "glm", "glm-int8", "glm4",
    "glm4-head-dim-64-int4+int8", "seed-oss-every-bias", "seed-oss-int4+int8", "helium-biases",
    "helium-biases-int4+int8", "hunyuan", "hunyuan-biases-int8", "exaone4", "exaone4-int4+int8", "gpt-neox",
    "gpt-neox-sequential", "gpt-neox-int8", "gpt-neox-sequential-int4+int8", "phi", "phi-int4+int8", "cohere",
    "cohere2", "cohere2-int4+int8", "gptj", "gptj-int8", "codegen", "codegen-int4+int8", "stablelm",
    "stablelm-parallel-int4+int8", "phi-qk-layernorm", "stablelm-qk-norms-per-head-int8", "cohere-qk-norms-per-head", "gpt2", "gpt2-int8",
    "gpt2-inverse-layer-idx", "gpt2-inverse-layer-idx-int8", "gpt-bigcode", "gpt-bigcode-unscaled-int8", "opt",
    "opt-int4+int8", "gpt-neo", "gpt-neo-int4+int8",
    "arcee-biases-yarn", "arcee-int4+int8", "nemotron", "nemotron-int8", "apertus-llama3", "apertus-int4+int8", "olmo",
    "olmo-int4+int8", "olmoe", "olmoe-renormalized-int4+int8", "granitemoe", "granitemoe-int8",
    "granitemoe-shared", "granitemoe-shared-int4", "ernie4_5-moe", "ernie4_5-moe-biases-int4+int8",
    "hunyuan-moe-biases", "hunyuan-moe-int8", "bloom", "bloom-int4+int8", "falcon", "falcon-rw", "falcon-rw-int8",
    "falcon-new-int4+int8", "falcon-grouped", "falcon-grouped-64-int8", "glm4-moe", "glm4-moe-air-int4+int8", "dots1",
    "dots1-biases-int8", "gpt-oss", "gpt-oss-int8", "gpt-oss-head-dim-64-int4+int8", "phimoe", "phimoe-longrope-int8",
    "phimoe-int4+int8"]


@pytest.mark.parametrize("config_class, overrides, quantization", STEP_CASES, ids=STEP_CASE_IDS)
def test_batched_steps_match_plain_path(config_class, overrides, quantization, monkeypatch):
    # Six rows left-padded to different lengths (one not at all), 12 steps: past a window of 5, so a padded row's
    # window starts inside its padding and later past it. Three threads split the rows and the heads unevenly.
    model = tiny_model(config_class, **overrides)
    if quantization:
        model = quantized(model, quantization)
        plain_path_rounds_inputs(monkeypatch)
    accelerated(model)
    ids, mask = left_padded_batch(6, 7, seed=5)
    steps = counted_batch_steps(monkeypatch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        fast = batch_step_logits(model, ids, mask, 12, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert len(steps) == 12 + int(mask[:, 1:].all(0).sum())  # and the prompt's columns without padding after the first
    plain = batch_step_logits(model, ids, mask, 12, False, monkeypatch)
    # int8 and int4's int8 head: an input that the two paths' float sums put a unit apart on either side of a half
    # step rounds to neighbouring steps, which moves a logit by up to a few thousandths
    tolerance = 1e-2 if quantization else 1e-4
    torch.testing.assert_close(fast, plain, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("quantization", ["int8", "int4", "int4+int8"])
def test_a_batch_steps_each_row_as_it_would_step_alone(quantization, monkeypatch):
    # Integer products of a batch equal each input's alone bit for bit, and so does the attention of a batch's rows
    # (attend_heads keeps attend's arithmetic): a batch decodes the tokens its sequences decode alone.
    # batch_step_logits draws the steps' tokens for all rows from one seed, so the first row's are the same alone.
    # Seven rows: int8's products take sixteen rows at a time from six inputs on, int4's from three (decode.cpp).
    model = accelerated(quantized(tiny_model(**HEAD_DIM_64), quantization))
    ids = torch.randint(1, 96, (7, 5), generator=torch.Generator().manual_seed(3))
    batches, steps = counted_batch_steps(monkeypatch), counted_decode_steps(monkeypatch)
    together = batch_step_logits(model, ids, torch.ones_like(ids), 6, True, monkeypatch)
    alone = batch_step_logits(model, ids[:1], torch.ones_like(ids[:1]), 6, True, monkeypatch)
    assert len(batches) == len(steps) == 10  # the prompt's columns after the first, then the steps
    assert torch.equal(together[:, :1], alone)


def test_batched_greedy_tokens_match_plain_path(monkeypatch):
    fast, plain = accelerated(tiny_model()), tiny_model()
    ids, mask = left_padded_batch(9, 6, seed=6)  # nine rows: eight inputs to a product, then one
    steps = counted_batch_steps(monkeypatch)
    options = dict(attention_mask=mask, max_new_tokens=16, do_sample=False)
    expected = plain.generate(ids, **options).tolist()
    assert fast.generate(ids, **options).tolist() == expected
    assert len(steps) == 15  # every token after the prompt's
    unpadded = fast.generate(ids[:3, -2:], max_new_tokens=5, do_sample=False).tolist()
    assert unpadded == plain.generate(ids[:3, -2:], max_new_tokens=5, do_sample=False).tolist()
    assert len(steps) == 19


def counted_prompts(monkeypatch) -> list:
    """A list that gets the token count of each call of the compiled prompt step from here on."""
    assert kernels.build()
    calls, decode_prompt = [], torch.ops.openformers.decode_prompt
    monkeypatch.setattr(torch.ops.openformers, "decode_prompt",
                        lambda *args: calls.append(len(args[0])) or decode_prompt(*args))
    return calls


def prompt_logits(model, tokens: torch.Tensor, stepped: bool, padding: tuple[int, ...] = ()):
    """Prompts (B, L) fed in two parts (13 tokens into an empty cache, then L - 14 after them) and one step after them,
    through the accelerated model's steps or its layers (with the kernel's products, which round a quantized layer's
    inputs as the steps do): the logits of all positions, and every layer's cached keys and values. With `padding`,
    row b's first padding[b] positions are padding, as generate left-pads a batch: the mask hides them and the row
    counts its positions from its first real token."""
    assert kernels.build()
    step, decoder = model.base_model.accelerated_step, model.base_model
    cache = DynamicCache()
    mask = torch.ones_like(tokens)
    for row, count in enumerate(padding):
        mask[row, :count] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    length = tokens.shape[1]
    try:
        decoder.accelerated_step = step if stepped else None
        with torch.inference_mode():
            logits = [model(tokens[:, start:end], past_key_values=cache,
                            attention_mask=mask[:, :end] if padding else None,
                            position_ids=positions[:, start:end] if padding else None).logits
                      for start, end in ((0, 13), (13, length - 1), (length - 1, length))]
    finally:
        decoder.accelerated_step = step
    cached = torch.stack([torch.stack([k[:, :, :length], v[:, :, :length]]) for k, v in zip(cache.keys, cache.values)])
    return torch.cat(logits, dim=1), cached.float()


def assert_prompts_match_layers(config_class, overrides, quantization, tokens: torch.Tensor,
                                padding: tuple[int, ...] = ()) -> None:
    """prompt_logits of a tiny accelerated model (quantized as asked) through its steps and through its layers agree,
    logits and caches, and for float models with the plain model's logits too."""
    model = accelerated(quantized(tiny_model(config_class, **overrides), quantization) if quantization else
                        tiny_model(config_class, **overrides))
    fast, fast_cache = prompt_logits(model, tokens, True, padding)
    layers, layers_cache = prompt_logits(model, tokens, False, padding)
    # An int8/int4 input that the two paths' float sums (the attention's, the norms') put on either side of a half
    # step rounds to neighbouring steps: up to ~0.016 in a later layer's keys or a logit (builds without AVX-512 VNNI,
    # whose prompts take the batch's products and the layers' matvec; with it, both take prompt_product's tiles).
    tolerance = 3e-2 if quantization else 1e-4
    torch.testing.assert_close(fast, layers, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(fast_cache, layers_cache, atol=tolerance, rtol=tolerance)
    if not quantization:
        plain = prompt_logits(tiny_model(config_class, **overrides), tokens, False, padding)[0]
        torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config_class, overrides, quantization", STEP_CASES, ids=STEP_CASE_IDS)
def test_prompts_match_plain_path(config_class, overrides, quantization, monkeypatch):
    # The second part's 20 positions run past every window of 5 and 6 and, with longrope, past its short tables (16
    # positions): each row attends to its own positions only. Three threads split the rows and the heads unevenly.
    tokens = torch.randint(1, 96, (1, 34), generator=torch.Generator().manual_seed(4))
    prompts = counted_prompts(monkeypatch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert_prompts_match_layers(config_class, overrides, quantization, tokens)
    finally:
        torch.set_num_threads(threads)
    assert prompts == [13, 20]


# Prompts of 32 positions and more whose layers see every earlier position attend in blocks (decode.cpp's
# attend_in_blocks), in heads of 64 and 128: Qwen3's q/k norms, OLMo 2's whole ones, Gemma 3's scaled queries (its
# sliding layer attends a row at a time), a window longer than the prompt, a mixture's layers.
BLOCK_CASES = [(LlamaConfig, HEAD_DIM_64, None), (LlamaConfig, HEAD_DIM_128, "int4"),
               (MistralConfig, {**HEAD_DIM_64, "sliding_window": 100}, "int8"), (Qwen3Config, HEAD_DIM_128, None),
               (Olmo2Config, HEAD_DIM_64, None), (Gemma3TextConfig, {**GEMMA3, **HEAD_DIM_64, "head_dim": 64}, None),
               (MixtralConfig, {**MIXTRAL, **HEAD_DIM_128}, "int8"),
               (Qwen2MoeConfig, {**QWEN2_MOE, **HEAD_DIM_128}, "int4"), (Glm4Config, GLM_HEAD_DIM_64, None),
               (HeliumConfig, {**HELIUM, **HEAD_DIM_64, "head_dim": 64}, None),
               (HunYuanDenseV1Config, {**HUNYUAN_BIASES, **HEAD_DIM_128, "head_dim": 64}, None),
               (Exaone4Config, {**EXAONE4_NO_WINDOW, **HEAD_DIM_128, "head_dim": 64}, None),
               (GPTNeoXConfig, GPT_NEOX_HEAD_DIM_64, None), (PhiConfig, PHI_HEAD_DIM_64, None),
               (GPTJConfig, GPTJ_HEAD_DIM_64, None),
               (StableLmConfig, {**STABLELM_PARALLEL, **HEAD_DIM_64}, None),
               (GPT2Config, {**HEAD_DIM_64, "max_position_embeddings": 128}, None),
               (GPT2Config, {**GPT2_INVERSE_LAYER_IDX, **HEAD_DIM_64, "max_position_embeddings": 128}, None),
               (NemotronConfig, {**NEMOTRON, **HEAD_DIM_64, "head_dim": 64}, None),
               (ApertusConfig, {**APERTUS, **HEAD_DIM_128, "head_dim": 64}, None),
               (OlmoeConfig, {**OLMOE, **HEAD_DIM_64}, "int8"),
               (GraniteMoeSharedConfig, {**GRANITEMOE_SHARED, **HEAD_DIM_128}, "int8"),
               (Ernie4_5_MoeConfig, {**ERNIE4_5_MOE, **HEAD_DIM_64, "head_dim": 64}, None),
               (Glm4MoeConfig, {**GLM4_MOE, **HEAD_DIM_64, "head_dim": 64}, None),
               (Dots1Config, {**DOTS1_BIASED, **HEAD_DIM_128, "head_dim": 64}, "int8"),
               (GptOssConfig, {**GPT_OSS_HEAD_DIM_64, "sliding_window": 100}, "int8"),
               (PhimoeConfig, PHIMOE_HEAD_DIM_64, None)]


@pytest.mark.parametrize("config_class, overrides, quantization", BLOCK_CASES,
                         ids=["llama-64", "llama-128-int4", "mistral-long-window-int8", "qwen3-128", "olmo2-64",
                              "gemma3-64", "mixtral-128-int8", "qwen2-moe-128-int4", "glm4-64-quarter-rotated",
                              "helium-64", "hunyuan-64", "exaone4-64", "gpt-neox-64", "phi-64", "gptj-64",
                              "stablelm-parallel-64", "gpt2-64",
                              "gpt2-inverse-layer-idx-64", "nemotron-64", "apertus-64", "olmoe-64-int8",
                              "granitemoe-shared-128-int8", "ernie4_5-moe-64", "glm4-moe-64", "dots1-128-int8",
                              "gpt-oss-64-int8", "phimoe-64"])
def test_long_prompts_attend_in_blocks_as_the_layers(config_class, overrides, quantization, monkeypatch):
    # 13 positions a row at a time, then 60 in blocks (two tasks of 32 and 28 rows over two key blocks: 73 keys).
    tokens = torch.randint(1, 96, (1, 74), generator=torch.Generator().manual_seed(8))
    prompts = counted_prompts(monkeypatch)
    assert_prompts_match_layers(config_class, overrides, quantization, tokens)
    assert prompts == [13, 60]


@pytest.mark.parametrize("config_class, overrides, quantization", STEP_CASES, ids=STEP_CASE_IDS)
def test_padded_prompts_match_plain_path(config_class, overrides, quantization, monkeypatch):
    # A batch of three, left-padded by 0, 4 and 9 positions, in one call a part: a row attends to its own sequence's
    # positions that its mask allows, and a padding position, which sees none, attends to nothing (zeros), as in the
    # layers, so its hidden states, keys and values match theirs too.
    # GPT-Neo's padding positions attend as its added mask says (gpt_neo.added_mask): its padded prompts take the
    # layers.
    tokens = torch.randint(1, 96, (3, 34), generator=torch.Generator().manual_seed(5))
    prompts = counted_prompts(monkeypatch)
    assert_prompts_match_layers(config_class, overrides, quantization, tokens, padding=(0, 4, 9))
    assert prompts == ([] if config_class is GPTNeoConfig else [3 * 13, 3 * 20])


def test_padded_prompts_of_an_eager_model_match_its_layers(monkeypatch):
    # attn_implementation="eager" gives a padding position, which sees no key, the mean of all the values (the
    # reference's eager path), where sdpa gives it zeros: the step follows whichever the model's layers take.
    fast = accelerated(tiny_model(attn_implementation="eager"))
    tokens = torch.randint(1, 96, (3, 34), generator=torch.Generator().manual_seed(6))
    prompts = counted_prompts(monkeypatch)
    stepped = prompt_logits(fast, tokens, True, padding=(0, 4, 9))
    assert prompts == [3 * 13, 3 * 20]
    plain = prompt_logits(tiny_model(attn_implementation="eager"), tokens, False, padding=(0, 4, 9))
    for ours, theirs in zip(stepped, plain):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    sdpa = prompt_logits(tiny_model(), tokens, False, padding=(0, 4, 9))[0]
    assert not torch.allclose(stepped[0][1, :4], sdpa[1, :4], atol=1e-2)  # the padding positions differ
    torch.testing.assert_close(stepped[0][1, 4:], sdpa[1, 4:], atol=1e-4, rtol=1e-4)


def test_a_prompt_takes_its_step_with_its_mask_and_positions_and_leaves_the_rest_to_the_layers(monkeypatch):
    fast, plain = accelerated(tiny_model()), tiny_model()
    prompts = counted_prompts(monkeypatch)
    ids = torch.randint(1, 96, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        # Without a cache (use_cache=False) the keys and values go to one made for the call.
        torch.testing.assert_close(fast(ids[:1]).logits, plain(ids[:1]).logits, atol=1e-4, rtol=1e-4)
        assert prompts == [9]
        padded = torch.ones_like(ids)
        padded[1, :2] = 0
        torch.testing.assert_close(fast(ids, attention_mask=padded).logits, plain(ids, attention_mask=padded).logits,
                                   atol=1e-4, rtol=1e-4)
        shifted = torch.arange(3, 12)[None]  # positions that do not start where the (empty) cache ends
        torch.testing.assert_close(fast(ids, position_ids=shifted).logits, plain(ids, position_ids=shifted).logits,
                                   atol=1e-4, rtol=1e-4)
        assert prompts == [9, 18, 18]
        # A mask of another shape: the layers, which say what is wrong with it.
        with pytest.raises(ValueError, match="attention_mask covers 8 positions"):
            fast(ids, attention_mask=padded[:, 1:])
        # More tokens than PROMPT_ROWS for the weights' dtype: the layers.
        monkeypatch.setitem(kernels.llama.PROMPT_ROWS, torch.float32, 17)
        torch.testing.assert_close(fast(ids).logits, plain(ids).logits, atol=1e-4, rtol=1e-4)
        assert prompts == [9, 18, 18]
        fast(ids[:, :8])
        assert prompts == [9, 18, 18, 16]


def test_a_prompt_past_the_caches_capacity_is_refused_by_name():
    model = accelerated(tiny_model())
    step = model.model.accelerated_step
    cache = DynamicCache()
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]), past_key_values=cache)
        x = torch.zeros(4, 64)
        angles = torch.zeros(4, 16)
        unpadded = torch.empty(0, dtype=torch.uint8)
        with pytest.raises(RuntimeError, match="decode_prompt: position 257 is beyond the cache capacity 256"):
            torch.ops.openformers.decode_prompt(x, step._kernel_stack(), cache.keys, cache.values, 254, 0, angles,
                                                angles, unpadded, False, 1e-6)
        more = torch.zeros(5, 16)  # five positions' angles for four tokens
        refused = r"decode_prompt: cos must hold .* at most the heads' size \(16\), for 4"
        with pytest.raises(RuntimeError, match=refused):
            torch.ops.openformers.decode_prompt(x, step._kernel_stack(), cache.keys, cache.values, 3, 0, more, more,
                                                unpadded, False, 1e-6)


def test_a_mixture_records_its_router_scores_through_its_layers(monkeypatch):
    # The step records no router scores: a forward asking for them (output_router_logits) takes the layers.
    model = accelerated(tiny_model(Qwen3MoeConfig, **QWEN3_MOE))
    steps = counted_decode_steps(monkeypatch)
    with torch.inference_mode():
        model(torch.tensor([[5, 6, 7]]), past_key_values=(cache := DynamicCache()))
        model(torch.tensor([[8]]), past_key_values=cache)
        output = model(torch.tensor([[9]]), past_key_values=cache, output_router_logits=True)
    assert len(steps) == 1 and len(output.router_logits) == 1  # the second layer is dense (mlp_only_layers)


@pytest.mark.parametrize("config_class, overrides", [(Starcoder2Config, {"residual_dropout": 0.5}),
                                                     (SeedOssConfig, SEED_OSS)], ids=["starcoder2", "seed-oss"])
def test_a_decoder_with_dropout_steps_through_its_layers_while_training(config_class, overrides, monkeypatch):
    # Its dropouts (Seed-OSS's default 0.1 on attention and on each branch) draw while training, which the step does
    # not: a training model's steps and prompts take the layers, even without gradients, its first prompt too (before
    # the step has gathered its layers); in eval the step runs and matches the plain path in bfloat16 too.
    model = accelerated(tiny_model(config_class, **overrides))
    steps, prompts = counted_decode_steps(monkeypatch), counted_prompts(monkeypatch)
    tokens = [5, 6, 7, 8, 9]
    model.train()
    step_logits(model, tokens, True, monkeypatch)
    assert not steps and not prompts
    model.eval()
    float32 = step_logits(model, tokens, True, monkeypatch)
    assert len(steps) == 2 and prompts == [3]
    fast = step_logits(model.to(torch.bfloat16), tokens, True, monkeypatch)
    assert len(steps) == 4 and fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), float32, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("config_class, overrides",
                         [(Qwen3MoeConfig, QWEN3_MOE), (Qwen2MoeConfig, QWEN2_MOE),
                          (GraniteMoeSharedConfig, GRANITEMOE_SHARED), (Ernie4_5_MoeConfig, ERNIE4_5_MOE_BIASED),
                          (HunYuanMoEV1Config, HUNYUAN_MOE), (Glm4MoeConfig, GLM4_MOE), (Dots1Config, DOTS1)],
                         ids=["qwen3-moe", "qwen2-moe", "granitemoe-shared", "ernie4_5-moe", "hunyuan-moe", "glm4-moe",
                              "dots1"])
def test_bfloat16_qwen_mixtures_steps_stay_close_to_float32(config_class, overrides, monkeypatch):
    # Qwen3-MoE rounds the chosen experts' weights to bfloat16 in a bfloat16 model, as the step does (set_experts);
    # Qwen2-MoE's shared expert's gate, and its sigmoid, are rounded to bfloat16 as the router's scores are.
    model = accelerated(tiny_model(config_class, dtype=torch.bfloat16, **overrides))
    tokens = torch.randint(0, 96, (16,), generator=torch.Generator().manual_seed(2)).tolist()
    steps = counted_decode_steps(monkeypatch)
    fast = step_logits(model, tokens, True, monkeypatch)
    assert len(steps) == len(tokens) - 3 and fast.dtype == torch.bfloat16
    plain = step_logits(model, tokens, False, monkeypatch)
    float32 = step_logits(model.float(), tokens, False, monkeypatch)
    torch.testing.assert_close(fast.float(), float32, atol=0.05, rtol=0.05)
    torch.testing.assert_close(plain.float(), float32, atol=0.05, rtol=0.05)


def test_an_expert_whose_weights_are_not_the_steps_is_named_when_picked(monkeypatch):
    model = accelerated(tiny_model(MixtralConfig, **MIXTRAL))
    with torch.inference_mode():
        model(torch.tensor([[5, 6, 7]]), past_key_values=(cache := DynamicCache()))
        for expert in model.model.layers[1].block_sparse_moe.experts:  # every expert, whichever the router picks
            expert.w2.weight.data = torch.zeros(64, 48)  # down's width is the experts' 96
        with pytest.raises(RuntimeError, match=r"an expert the router picked .* \(width, hidden\)"):
            model(torch.tensor([[8]]), past_key_values=cache)


def test_int4_experts_beside_int8_attention_take_the_step(monkeypatch):
    # As a GGUF file of mixed widths loads under int4 (its attention in 5-8 bits kept at int8, its experts Q4_K): the
    # stack's layout is the mixed one, whichever of its matrices are read first. One row steps as the plain path
    # does; a batch's rows step each as it would alone (their integer products and picks are the same).
    model = quantized(tiny_model(MixtralConfig, **MIXTRAL), "int4")
    for layer in model.model.layers:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            plain = torch.nn.Linear(64, getattr(layer.self_attn, name).out_features, bias=False)
            plain.weight.data = getattr(layer.self_attn, name).dequantized(torch.float32)
            setattr(layer.self_attn, name, kernels.Linear.from_linear(plain, "int8"))
    plain_path_rounds_inputs(monkeypatch)
    accelerated(model)
    ids = torch.randint(1, 96, (5, 8), generator=torch.Generator().manual_seed(5))
    steps, batches = counted_decode_steps(monkeypatch), counted_batch_steps(monkeypatch)

    def stepped(rows):  # each column fed to the cache alone: the first is the prompt, the rest steps
        with torch.inference_mode():
            cache = DynamicCache()
            return torch.stack([model(rows[:, c : c + 1], past_key_values=cache).logits[:, -1]
                                for c in range(rows.shape[1])], dim=1)

    alone = torch.cat([stepped(ids[r : r + 1]) for r in range(len(ids))])
    together = stepped(ids)
    assert len(steps) == 5 * 7 and len(batches) == 7
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)
    monkeypatch.setattr(library, "loaded", lambda: False)
    torch.testing.assert_close(alone[:1], stepped(ids[:1]), atol=1e-2, rtol=1e-2)


def test_a_down_projection_of_another_height_than_the_hidden_size_is_refused_by_name(monkeypatch):
    # The step writes down's rows into the residual stream's buffer: a taller weight, set after the prompt (whose
    # forward would have failed on it), is refused by name rather than written past that buffer.
    model = accelerated(tiny_model())
    down = model.model.layers[1].mlp.down_proj
    monkeypatch.setattr(library, "loaded", lambda: True)
    with torch.inference_mode():
        model(torch.tensor([[5, 6]]), past_key_values=(cache := DynamicCache()))
        down.weight.data = torch.zeros(down.weight.shape[0] + 4, down.weight.shape[1])
        with pytest.raises(RuntimeError, match=r"layer 1's down projection has 68 rows for a hidden size of 64"):
            model(torch.tensor([[7]]), past_key_values=cache)


def test_a_router_of_nan_scores_or_of_another_size_is_not_read_past_its_experts(monkeypatch):
    # NaN scores rank above every number (torch.topk's order): the step picks experts as the layers do and gives their
    # NaN logits. A router given another count of experts than the step was set with is refused by name.
    model = accelerated(tiny_model(MixtralConfig, **MIXTRAL))
    router = model.model.layers[1].block_sparse_moe.gate
    router.weight.data[1:3] = float("nan")
    tokens = [5, 6, 7, 8, 9]
    steps = counted_decode_steps(monkeypatch)
    fast = step_logits(model, tokens, True, monkeypatch)
    assert len(steps) == 2 and fast.isnan().all()
    assert step_logits(model, tokens, False, monkeypatch).isnan().all()
    router.weight.data = torch.zeros(3, 64)
    monkeypatch.setattr(library, "loaded", lambda: True)  # step_logits left the kernels aside
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"layer 1's router must be .* \(4 experts, 64\)"):
        model(torch.tensor([[5, 6]]), past_key_values=(cache := DynamicCache()))
        model(torch.tensor([[7]]), past_key_values=cache)


def test_bfloat16_batched_steps_stay_close_to_float32(monkeypatch):
    model = accelerated(tiny_model())
    ids, mask = left_padded_batch(5, 6, seed=7)
    reference = batch_step_logits(model, ids, mask, 8, False, monkeypatch)
    steps = counted_batch_steps(monkeypatch)
    fast = batch_step_logits(model.to(torch.bfloat16), ids, mask, 8, True, monkeypatch)
    assert len(steps) == 8 + int(mask[:, 1:].all(0).sum()) and fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    "config_class, overrides, quantization",
    [(MistralConfig, {"sliding_window": 6}, None), (MistralConfig, {"sliding_window": 6}, "int8"),
     (MistralConfig, {"sliding_window": 6}, "int4"), (MistralConfig, {"sliding_window": 6}, "int4+int8"),
     (Gemma3TextConfig, GEMMA3, None), (Gemma3TextConfig, GEMMA3, "int4+int8"), (Phi3Config, PHI3, "int4+int8"),
     (Gemma2Config, GEMMA2_HEAD_DIM_64, None), (Olmo2Config, {}, None), (MixtralConfig, MIXTRAL, None),
     (MixtralConfig, MIXTRAL, "int8"), (Qwen3MoeConfig, QWEN3_MOE, "int4"), (Qwen3MoeConfig, QWEN3_MOE, "int4+int8"),
     (Qwen2MoeConfig, QWEN2_MOE, None), (Qwen2MoeConfig, QWEN2_MOE, "int8"), (Qwen2MoeConfig, QWEN2_MOE, "int4+int8"),
     (Starcoder2Config, {}, None), (Starcoder2Config, {}, "int4+int8"), (SmolLM3Config, SMOLLM3, None),
     (GraniteConfig, GRANITE, None), (Ernie4_5Config, ERNIE4_5_BIASED, None), (GlmConfig, GLM, "int4+int8"),
     (Glm4Config, GLM, None), (SeedOssConfig, SEED_OSS_EVERY_BIAS, None), (HeliumConfig, HELIUM_BIASES, None),
     (HunYuanDenseV1Config, HUNYUAN_BIASES, None), (Exaone4Config, EXAONE4, "int4+int8"),
     (GPTNeoXConfig, GPT_NEOX, None), (GPTNeoXConfig, GPT_NEOX_SEQUENTIAL, "int4+int8"), (PhiConfig, PHI, None),
     (Cohere2Config, COHERE2, None), (CodeGenConfig, CODEGEN, "int4+int8"), (StableLmConfig, STABLELM, None),
     (ArceeConfig, ARCEE_BIASES, None), (NemotronConfig, NEMOTRON, "int4+int8"), (ApertusConfig, APERTUS, None),
     (OlmoConfig, OLMO, None), (OlmoeConfig, OLMOE, "int8"),
     (GraniteMoeSharedConfig, GRANITEMOE_SHARED, "int4"), (Ernie4_5_MoeConfig, ERNIE4_5_MOE_BIASED, None),
     (HunYuanMoEV1Config, HUNYUAN_MOE, "int8"), (BloomConfig, BLOOM, None), (FalconConfig, FALCON_RW, None),
     (FalconConfig, FALCON, "int4+int8"), (FalconConfig, FALCON_GROUPED, None), (Glm4MoeConfig, GLM4_MOE, "int4+int8"),
     (Dots1Config, DOTS1, None), (GptOssConfig, GPT_OSS, None), (GptOssConfig, GPT_OSS, "int4"),
     (PhimoeConfig, PHIMOE_LONGROPE, "int8")],
    ids=["float32", "int8", "int4", "int4+int8", "gemma3", "gemma3-int4+int8", "phi3-int4+int8", "gemma2-head-dim-64",
         "olmo2", "mixtral", "mixtral-int8", "qwen3-moe-int4", "qwen3-moe-int4+int8", "qwen2-moe",
         "qwen2-moe-int8", "qwen2-moe-int4+int8", "starcoder2",
         "starcoder2-int4+int8", "smollm3", "granite", "ernie4_5-biases", "glm-int4+int8", "glm4", "seed-oss", "helium",
         "hunyuan", "exaone4-int4+int8", "gpt-neox", "gpt-neox-sequential-int4+int8", "phi", "cohere2",
         "codegen-int4+int8", "stablelm", "arcee", "nemotron-int4+int8", "apertus", "olmo", "olmoe-int8",
         "granitemoe-shared-int4", "ernie4_5-moe-biases", "hunyuan-moe-int8", "bloom", "falcon-rw",
         "falcon-int4+int8", "falcon-grouped", "glm4-moe-int4+int8", "dots1", "gpt-oss", "gpt-oss-int4",
         "phimoe-longrope-int8"],
)
def test_a_team_of_threads_gives_the_one_thread_results(config_class, overrides, quantization, monkeypatch):
    # The suite runs one thread per worker; three threads split every matrix and the heads unevenly
    # (four query heads, two key/value heads), so a missing barrier or a wrong share shows here. Gemma's threads
    # each keep a copy of the residual stream, updated after the barriers that end its attention and its MLP.
    model = tiny_model(config_class, **overrides)
    if quantization:
        model = quantized(model, quantization)
        plain_path_rounds_inputs(monkeypatch)
    accelerated(model)
    tokens = torch.randint(0, 96, (30,), generator=torch.Generator().manual_seed(4)).tolist()
    steps = counted_decode_steps(monkeypatch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        team = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    alone = step_logits(model, tokens, True, monkeypatch) if threads == 1 else None
    plain = step_logits(model, tokens, False, monkeypatch)
    assert len(steps) == (len(tokens) - 3) * (2 if alone is not None else 1)
    # Quantized, as in test_batched_steps_match_plain_path: an input the two paths' sums put either side of a half
    # step rounds to neighbouring steps (Gemma's GELU in the plain x86-64 build's scalar loop does so here).
    tolerance = 1e-2 if quantization else 1e-4
    torch.testing.assert_close(team, plain, atol=tolerance, rtol=tolerance)
    if alone is not None:
        torch.testing.assert_close(team, alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_generate_skips_the_forward_for_the_same_logits_unless_a_hook_would_see_it(dtype, monkeypatch):
    # generate's steps of one sequence take the kernel's shortcut past the model's forward (accelerated_logits),
    # with the logits the forward gives; a forward hook (the model's, its embedding's, whose row the step reads
    # itself, or a global one) keeps them on the forward.
    model = accelerated(tiny_model(dtype=dtype))
    prompt = torch.tensor([[5, 9, 14]])
    options = dict(max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True)
    shortcut, taken, forwards = model.accelerated_logits, [], []

    def counted(*args):
        logits_and_argmax = shortcut(*args)
        taken.append(None if logits_and_argmax is None else logits_and_argmax[0].dtype)  # float32, as the loop's
        return logits_and_argmax

    model.accelerated_logits = counted
    greedy, asked = model.accelerated_greedy, []
    model.accelerated_greedy = lambda *args: asked.append(1) or greedy(*args)
    hooks = [lambda: model.register_forward_hook(lambda *args: forwards.append(1)),
             lambda: model.model.embed_tokens.register_forward_hook(lambda *args: forwards.append(1)),
             lambda: torch.nn.modules.module.register_module_forward_hook(
                 lambda module, *args: forwards.append(1) if module is model else None)]
    for register in hooks:
        del taken[:], forwards[:], asked[:]
        hook = register()
        try:
            with torch.inference_mode():
                hooked = model.generate(prompt, **options)
                hooked_greedy = model.generate(prompt, max_new_tokens=30, do_sample=False)
        finally:
            hook.remove()
        assert taken == [None] * (7 + 29) and len(forwards) == 8 + 30  # each call's prompt and steps
        assert asked == [1]  # the greedy call's run refused once, then single steps
    del taken[:]
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)
    steps, runs = counted_decode_steps(monkeypatch), counted_runs(monkeypatch)
    with torch.inference_mode():
        skipped = model.generate(prompt, **options)
        skipped_greedy = model.generate(prompt, max_new_tokens=30, do_sample=False)  # one run of the step's argmax
    assert taken == [torch.float32] * 7 and len(steps) == 7 and runs == [29]  # after each prompt's forward
    assert torch.equal(skipped.sequences, hooked.sequences) and torch.equal(skipped_greedy, hooked_greedy)
    assert all(torch.equal(a, b) for a, b in zip(skipped.logits, hooked.logits))


@pytest.mark.parametrize("config_class, overrides", [(CohereConfig, COHERE), (PhiConfig, PHI), (GPTJConfig, GPTJ),
                                                     (BloomConfig, BLOOM)],
                         ids=["cohere-logit-scale", "phi-head-bias", "gptj-head-bias", "bloom-embedding-norm"])
def test_generates_shortcut_gives_the_forwards_logits_past_the_head(config_class, overrides):
    # Past the forward (accelerated_logits), the step runs the head: its bias added there (Phi's, GPT-J's:
    # set_head_bias), Cohere's logit_scale applied after it (_finish), BLOOM's token row normed by its embeddings'
    # LayerNorm in the step (set_embedding_norm): the forward's logits either way.
    model, plain = accelerated(tiny_model(config_class, **overrides)), tiny_model(config_class, **overrides)
    shortcut, taken = model.accelerated_logits, []
    model.accelerated_logits = lambda *args: taken.append(shortcut(*args)) or taken[-1]
    options = dict(max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True,
                   eos_token_id=None, pad_token_id=0)
    prompt = torch.tensor([[5, 9, 14]])
    with torch.inference_mode():
        fast, reference = model.generate(prompt, **options), plain.generate(prompt, **options)
    assert len(taken) == 7 and all(logits is not None for logits in taken)
    assert torch.equal(fast.sequences, reference.sequences)
    torch.testing.assert_close(torch.stack(fast.logits), torch.stack(reference.logits), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_steps_argmax_is_torchs_on_ties_and_nan(dtype):
    # The threads each take the largest of the head's rows they made; merged, that is torch.argmax's: the lowest
    # index among equal largest logits (here in both threads' shares of the 96 rows), the first NaN above all.
    model = accelerated(tiny_model(dtype=dtype))
    weight, cache, threads = model.lm_head.weight, DynamicCache(), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            model(torch.tensor([[5, 9, 14]]), past_key_values=cache)
            tokens = iter(range(20, 40))

            def step():
                logits, argmax = model.accelerated_logits(model, torch.tensor([next(tokens)]), cache)
                assert logits.shape == (1, 96) and torch.equal(argmax, logits.argmax(dim=-1))
                return logits[0], int(argmax)

            row = weight[0].clone()
            weight.copy_(row.expand_as(weight))  # every logit the same
            logits, argmax = step()
            assert argmax == 0 and bool((logits == logits[0]).all())
            weight.zero_()
            weight[[30, 80]], weight[[31, 81]] = row, -row  # the two largest equal, one in each thread's share
            assert step()[1] in (30, 31)
            weight[[70, 40]] = float("nan")
            assert step()[1] == 40
            with pytest.raises(RuntimeError, match="token id 96 is outside the embedding's 96 rows"):
                model.accelerated_logits(model, torch.tensor([96]), cache)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8", "int4"])
def test_the_head_run_in_the_step_gives_the_separate_heads_logits(precision, monkeypatch):
    # After a step whose hidden state reached the head, decode_step runs the final norm and the head's product in
    # its team; the head's own product (matvec) then runs only on the prompt and the first step. A bfloat16 model's
    # head rounds the normed state to bfloat16 either way, so every precision gives the same logits bit for bit.
    quantization = precision if precision in kernels.QUANTIZATIONS else None
    model = tiny_model(dtype=torch.bfloat16 if precision == "bfloat16" else torch.float32)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    tokens = torch.randint(0, 96, (20,), generator=torch.Generator().manual_seed(7)).tolist()
    heads, matvec = [], torch.ops.openformers.matvec  # whether each product is the head's
    monkeypatch.setattr(torch.ops.openformers, "matvec", lambda x, weight, scale: heads.append(
        weight is model.lm_head.weight) or matvec(x, weight, scale))
    fused = step_logits(model, tokens, True, monkeypatch)
    assert heads.count(True) == 2  # the prompt's head and the first step's
    monkeypatch.setattr(type(model.lm_head), "fused_tensors", lambda head: None)
    separate = step_logits(model, tokens, True, monkeypatch)
    assert heads.count(True) == 2 + 1 + len(tokens) - 3
    assert fused.dtype == model.dtype and torch.equal(fused, separate)


def test_the_head_takes_the_steps_logits_only_for_its_hidden_state(monkeypatch):
    model = accelerated(tiny_model())
    plain = tiny_model()
    cache, plain_cache = DynamicCache(), DynamicCache()
    with torch.inference_mode():
        for ids in ([[1, 2, 3]], [[4]], [[5]]):  # the second step runs the head in the step
            model(torch.tensor(ids), past_key_values=cache)
            plain(torch.tensor(ids), past_key_values=plain_cache)
        assert model.lm_head.follows_step
        # The decoder stepped alone: a copy of its hidden state, the state itself and any other get their logits.
        hidden = model.model(torch.tensor([[6]]), past_key_values=cache).last_hidden_state
        expected = plain.lm_head(plain.model(torch.tensor([[6]]), past_key_values=plain_cache).last_hidden_state)
        torch.testing.assert_close(model.lm_head(hidden.clone()), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.lm_head(hidden), expected, atol=1e-4, rtol=1e-4)
        other = torch.randn(1, 1, 64)
        torch.testing.assert_close(model.lm_head(other), plain.lm_head(other), atol=1e-4, rtol=1e-4)
        # A step whose hidden state never reached the head leaves the next steps' heads to the head itself.
        model.model(torch.tensor([[7]]), past_key_values=cache)
        model.model(torch.tensor([[8]]), past_key_values=cache)
        assert not model.lm_head.follows_step


def test_a_hidden_state_changed_in_place_gets_the_heads_own_product():
    # The step's logits are of the hidden state it returned; a caller that scales it in place before the head
    # must get the logits of what it now holds.
    model = accelerated(tiny_model())
    plain = tiny_model()
    cache, plain_cache = DynamicCache(), DynamicCache()
    with torch.inference_mode():
        for ids in ([[1, 2, 3]], [[4]], [[5]]):
            model(torch.tensor(ids), past_key_values=cache)
            plain(torch.tensor(ids), past_key_values=plain_cache)
        assert model.lm_head.follows_step  # the next step runs the head in the step
        hidden = model.model(torch.tensor([[6]]), past_key_values=cache).last_hidden_state
        hidden.mul_(2)
        expected = plain.lm_head(2 * plain.model(torch.tensor([[6]]), past_key_values=plain_cache).last_hidden_state)
        torch.testing.assert_close(model.lm_head(hidden), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config_class, overrides",
                         [(LlamaConfig, {}), (Ernie4_5Config, ERNIE4_5_BIASED), (Glm4Config, GLM),
                          (SeedOssConfig, SEED_OSS_EVERY_BIAS), (HeliumConfig, HELIUM_BIASES),
                          (HunYuanDenseV1Config, HUNYUAN_BIASES), (Exaone4Config, EXAONE4), (GPTNeoXConfig, GPT_NEOX),
                          (PhiConfig, PHI), (CohereConfig, COHERE), (Cohere2Config, COHERE2), (GPTJConfig, GPTJ),
                          (CodeGenConfig, CODEGEN), (StableLmConfig, STABLELM_PARALLEL), (ArceeConfig, ARCEE_BIASES),
                          (NemotronConfig, NEMOTRON), (ApertusConfig, APERTUS), (OlmoConfig, OLMO),
                          (OlmoeConfig, OLMOE),
                          (BloomConfig, BLOOM), (FalconConfig, FALCON), (FalconConfig, FALCON_RW),
                          (GptOssConfig, GPT_OSS), (PhimoeConfig, PHIMOE)],
                         ids=["llama", "ernie4_5-biases", "glm4", "seed-oss", "helium", "hunyuan", "exaone4",
                              "gpt-neox", "phi", "cohere", "cohere2", "gptj", "codegen", "stablelm-parallel", "arcee",
                              "nemotron", "apertus", "olmo", "olmoe", "bloom", "falcon", "falcon-rw", "gpt-oss",
                              "phimoe"])
def test_bfloat16_weights_stay_close_to_float32(config_class, overrides, monkeypatch):
    model = accelerated(tiny_model(config_class, **overrides))
    tokens = torch.randint(0, 96, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    reference = step_logits(model, tokens, False, monkeypatch)
    fast = step_logits(model.to(torch.bfloat16), tokens, True, monkeypatch)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference, atol=0.1, rtol=0.05)


def test_bfloat16_prompts_take_the_step_only_for_generation(monkeypatch):
    # Elsewhere a bfloat16 prompt takes the layers, which round every sum to bfloat16 as the reference's bfloat16
    # forward does; generate's prefill takes the step, which keeps the residual in float32 as its decoding steps do.
    model, plain = accelerated(tiny_model(dtype=torch.bfloat16)), tiny_model(dtype=torch.bfloat16)
    prompts = counted_prompts(monkeypatch)
    ids = torch.randint(1, 96, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits)
        assert prompts == []
        with kernels.prompts_for_generation():
            stepped = model(ids).logits
        assert prompts == [18]
        torch.testing.assert_close(stepped.float(), tiny_model()(ids).logits, atol=0.1, rtol=0.05)
    model.generate(ids[:1], max_new_tokens=2, do_sample=False)
    assert prompts == [18, 9]


def test_bfloat16_biases_are_read_as_they_hold_at_each_step(monkeypatch):
    # The kernel takes float32 biases: a bfloat16 model's are converted at each step, not once with the model's
    # tensors (decode.cpp's StepWeights), so one changed in place after earlier steps is read as it is then.
    model = accelerated(tiny_model(Qwen2Config))
    tokens = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    fast_model = copy.deepcopy(model).to(torch.bfloat16)
    for changed in (False, True):
        if changed:
            with torch.no_grad():
                for layers in (model.model.layers, fast_model.model.layers):
                    layers[1].self_attn.v_proj.bias.mul_(-4)
        reference = step_logits(model, tokens, False, monkeypatch)
        fast = step_logits(fast_model, tokens, True, monkeypatch)
        torch.testing.assert_close(fast.float(), reference, atol=0.1, rtol=0.05)


def test_cache_grows_past_its_first_block(monkeypatch):
    prompt = torch.tensor([[1, 2, 3]])
    fast = accelerated(tiny_model()).generate(prompt, max_new_tokens=300, min_new_tokens=300, do_sample=False)
    plain = tiny_model().generate(prompt, max_new_tokens=300, min_new_tokens=300, do_sample=False)
    assert fast.shape == (1, 303)
    assert fast.tolist() == plain.tolist()


def test_the_step_reads_its_rotary_row_of_the_tables_as_the_row_itself(monkeypatch):
    # generate's steps hand decode_step the rotary module's whole tables and the position's row in them.
    decode_step, compared = torch.ops.openformers.decode_step, []

    def both_ways(*args):
        cos, sin, row = args[6], args[7], args[15]
        assert cos.dim() == 2 and row >= 0
        with pytest.raises(RuntimeError, match="rotary row"):
            decode_step(*args[:15], cos.shape[0])
        for table_cos, table_sin in ((cos.bfloat16(), sin.bfloat16()), (cos, sin)):  # the tables' own last
            as_rows = decode_step(*args[:6], table_cos[row], table_sin[row], *args[8:15], -1)
            as_tables = decode_step(*args[:6], table_cos, table_sin, *args[8:15], row)
            assert torch.equal(as_tables[0], as_rows[0]) and torch.equal(as_tables[1], as_rows[1])
        compared.append(row)
        return as_tables

    monkeypatch.setattr(torch.ops.openformers, "decode_step", both_ways)
    prompt = torch.tensor([[1, 2, 3]])
    model = accelerated(tiny_model())
    monkeypatch.delattr(model, "accelerated_greedy")  # single steps
    fast = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert compared == [3, 4, 5, 6, 7]
    assert fast.tolist() == tiny_model().generate(prompt, max_new_tokens=6, do_sample=False).tolist()


def test_steps_past_the_rotary_tables_grow_them():
    prompt = torch.tensor([[1, 2, 3]])
    fast, plain = accelerated(tiny_model(max_position_embeddings=8)), tiny_model(max_position_embeddings=8)
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        tokens = fast.generate(prompt, max_new_tokens=20, do_sample=False)
    assert fast.model.rotary_emb.cos.shape[0] >= 22  # the positions fed: the prompt's 3 and 19 steps' (a run's)
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        assert tokens.tolist() == plain.generate(prompt, max_new_tokens=20, do_sample=False).tolist()


def test_training_large_batches_and_long_prompts_take_the_plain_path():
    model = accelerated(tiny_model())
    step, taken = model.model.accelerated_step, []

    def counted(*args):
        hidden = step(*args)
        taken.append(hidden is not None)
        return hidden

    model.model.accelerated_step = counted
    cache = DynamicCache()
    model(torch.tensor([[1, 2], [3, 4]]), past_key_values=cache)
    model(torch.tensor([[5], [6]]), past_key_values=cache)  # two rows
    cache = DynamicCache()
    model(torch.tensor([[1, 2]]), past_key_values=cache)
    model(torch.tensor([[5]]), past_key_values=cache)  # one row, but gradients are on
    with torch.inference_mode():
        cache = DynamicCache()
        model(torch.tensor([[1, 2]]), past_key_values=cache)  # one sequence's prompt: decode_prompt
        model(torch.tensor([[5]]), past_key_values=cache)
        cache = DynamicCache()
        model(torch.tensor([[1, 2], [3, 4]]), past_key_values=cache)  # two rows' prompts: decode_prompt too
        model(torch.tensor([[5], [6]]), past_key_values=cache)  # two rows: the batched step
        rows = kernels.llama.BATCH_ROWS + 1
        cache = DynamicCache()
        model(torch.ones(rows, 2, dtype=torch.long), past_key_values=cache)  # 66 tokens in all
        model(torch.ones(rows, 1, dtype=torch.long), past_key_values=cache)  # more rows than the batched step takes
        cache = DynamicCache()
        too_long = kernels.llama.PROMPT_ROWS[torch.float32] + 1
        model(torch.ones(1, too_long, dtype=torch.long), past_key_values=cache)
    assert taken == [False, False, False, False, True, True, True, True, True, False, False]


def test_weights_replaced_or_cast_after_a_step_are_the_ones_used(monkeypatch):
    # The step keeps the tensors it hands the kernel between steps; every way of changing them must show.
    model = accelerated(tiny_model())
    tokens = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    step_logits(model, tokens, True, monkeypatch)  # gathers and keeps the tensors
    layers = model.model.layers

    def quantize_int8():
        kernels.quantize(model, "int8")
        plain_path_rounds_inputs(monkeypatch)

    changes = [  # each with whether the step can still run
        (lambda: setattr(layers[1].self_attn.q_proj, "weight", torch.nn.Parameter(torch.randn(64, 64))), True),
        (lambda: layers[1].mlp.up_proj.weight.data.mul_(2), True),  # in place: the kept tensor itself
        (lambda: model.load_state_dict({k: v * 1.5 for k, v in model.state_dict().items()}, assign=True), True),
        # not the kernel's layer (in the model's mode, eval)
        (lambda: setattr(layers[0].mlp, "down_proj", torch.nn.Linear(96, 64, bias=False).eval()), False),
        (lambda: layers[0].mlp._modules.update(down_proj=kernels.linear.Linear.from_linear(layers[0].mlp.down_proj)),
         True),  # written into the module's dict directly: the kernel's again
        (lambda: layers[1].self_attn.k_proj._parameters.__setitem__("weight", torch.nn.Parameter(torch.randn(32, 64))),
         True),
        (quantize_int8, True),
        (lambda: model.to(torch.bfloat16), True),
    ]
    for change, step_runs in changes:
        change()
        steps = counted_decode_steps(monkeypatch)
        fast = step_logits(model, tokens, True, monkeypatch)
        assert len(steps) == (len(tokens) - 3 if step_runs else 0)
        plain = step_logits(model, tokens, False, monkeypatch)
        # int8: an input that the two paths' float sums put a unit apart on either side of a half step rounds to
        # neighbouring steps, which moves the logits by up to a few thousandths
        quantized = getattr(layers[0].mlp.down_proj, "scale", None) is not None
        tolerance = 0.1 if fast.dtype != torch.float32 else 1e-2 if quantized else 1e-4
        torch.testing.assert_close(fast, plain, atol=tolerance, rtol=tolerance)


def test_a_clip_qkv_changed_after_a_step_is_the_one_used(monkeypatch):
    # OLMo's clamp is an attribute of each attention, which no module dict watches: each step compares it. Changed on
    # every layer, the step clamps by the new value (or not at all); on one layer only, the layers take the steps.
    model, plain = accelerated(tiny_model(OlmoConfig, **OLMO)), tiny_model(OlmoConfig, **OLMO)
    tokens = [5, 6, 7, 8, 9, 10]
    steps = counted_decode_steps(monkeypatch)
    step_logits(model, tokens, True, monkeypatch)
    for clip, layers in ((0.3, 2), (None, 2), (0.05, 1)):
        for decoder in (model.model, plain.model):
            for layer in decoder.layers[:layers]:
                layer.self_attn.clip_qkv = clip
        taken = len(steps)
        torch.testing.assert_close(step_logits(model, tokens, True, monkeypatch),
                                   step_logits(plain, tokens, True, monkeypatch), atol=1e-4, rtol=1e-4)
        assert len(steps) - taken == (3 if layers == 2 else 0)


def test_a_copied_model_notices_changes_to_its_own_weights(monkeypatch):
    # The step keeps its tensors until the module dicts it watches change; a copy's dicts are new, unwatched ones.
    model = accelerated(tiny_model())
    tokens = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(4)).tolist()
    step_logits(model, tokens, True, monkeypatch)  # gathers and keeps the tensors
    copied = copy.deepcopy(model)
    copied.model.layers[1].mlp._modules["up_proj"]._parameters["weight"] = torch.nn.Parameter(torch.randn(96, 64))
    fast = step_logits(copied, tokens, True, monkeypatch)
    torch.testing.assert_close(fast, step_logits(copied, tokens, False, monkeypatch), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fast, step_logits(model, tokens, True, monkeypatch), atol=1e-2)


def test_a_deep_copy_steps_and_places_weights_for_the_copied_model(monkeypatch):
    # The copy's step runs the copy's head (pointing at the original's, it ran that head's product and offered the
    # original its results), and its weights are placed for it: also once the original's placement has begun,
    # whose mapping cannot be copied (copy.deepcopy raised TypeError). A decoder copied alone belongs to no model.
    model = accelerated(tiny_model())
    model.model.accelerated_step.before_step._gathered()  # the placement begun, its tensors still to move
    copied = copy.deepcopy(model)
    step = copied.model.accelerated_step
    assert step.model_reference() is copied and step.before_step.model_reference() is copied
    assert step.before_step.placement is None
    tokens = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(5)).tolist()
    with torch.no_grad():
        copied.lm_head.weight.mul_(2)
    fast = step_logits(copied, tokens, True, monkeypatch)
    assert copied.lm_head.follows_step and model.lm_head._offered is None and not model.lm_head.follows_step
    torch.testing.assert_close(fast, step_logits(copied, tokens, False, monkeypatch), atol=1e-4, rtol=1e-4)
    assert copy.deepcopy(model.model).accelerated_step.model_reference is None


def test_a_pickled_model_steps_as_the_original(monkeypatch):
    # A weak reference cannot be pickled: the restored step holds none, and places nothing.
    model = accelerated(tiny_model())
    model.model.accelerated_step.before_step._gathered()
    restored = pickle.loads(pickle.dumps(model))
    assert restored.model.accelerated_step.model_reference is None
    tokens = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(6)).tolist()
    torch.testing.assert_close(step_logits(restored, tokens, True, monkeypatch),
                               step_logits(model, tokens, True, monkeypatch), atol=1e-5, rtol=1e-5)


def test_smollm2_greedy_tokens_match_plain_path(smollm2_gguf, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    assert model.model.accelerated_step is not None
    input_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three rivers in Europe."}], add_generation_prompt=True, return_tensors="pt",
        return_dict=False,
    )
    steps, runs = counted_decode_steps(monkeypatch), counted_runs(monkeypatch)
    # One run to the end, not cut by the clock: a loaded machine's float32 run past RUN_SECONDS left one token,
    # which takes a single step.
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)
    fast = model.generate(input_ids, max_new_tokens=48)
    assert not steps and sum(runs) == fast.shape[1] - input_ids.shape[1] - 1  # every token after the prompt's
    monkeypatch.setattr(library, "loaded", lambda: False)
    assert fast.tolist() == model.generate(input_ids, max_new_tokens=48).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_run_of_greedy_steps_makes_the_tokens_and_cache_of_single_steps(dtype, monkeypatch):
    # generate without a streamer makes a greedy row's tokens in runs of decode_tokens, each within the cache's
    # buffer: a prompt of 250 leaves 6 positions before the first block's end, one step grows it, a run the rest.
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)  # runs end where the cache does, not by the clock
    model = accelerated(tiny_model(dtype=dtype))
    prompt = torch.randint(3, TINY["vocab_size"], (1, 250), generator=torch.Generator().manual_seed(3))
    options = dict(max_new_tokens=40, do_sample=False, eos_token_id=None)
    runs = counted_runs(monkeypatch)
    caches = [DynamicCache(), DynamicCache()]
    with torch.inference_mode():
        ran = model.generate(prompt, past_key_values=caches[0], **options)
        assert runs == [6, 1, 32]
        stepped = model.generate(prompt, past_key_values=caches[1], streamer=OneStepAtATime(), **options)
    assert runs == [6, 1, 32] and ran.tolist() == stepped.tolist()
    assert caches[0].lengths == caches[1].lengths == [289] * TINY["num_hidden_layers"]
    for ours, theirs in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        assert torch.equal(ours[:, :, :289], theirs[:, :, :289])
    if dtype == torch.float32:
        assert ran.tolist() == tiny_model().generate(prompt, **options).tolist()


def test_a_run_of_greedy_steps_stops_at_an_eos_token(monkeypatch):
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)
    model = accelerated(tiny_model())
    prompt = torch.tensor([[5, 9, 14]])
    with torch.inference_mode():
        free = model.generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=None)[0, 3:].tolist()
    # The first new tokens that appear nowhere before them, the first token aside (the prompt's forward makes it).
    firsts = [k for k, token in enumerate(free) if k > 1 and free.index(token) == k]
    runs = counted_runs(monkeypatch)
    for eos in ([free[firsts[0]]], [free[firsts[2]], free[firsts[1]], 10_000]):
        stop = min(free.index(token) for token in eos if token in free)
        options = dict(max_new_tokens=24, do_sample=False, eos_token_id=eos, pad_token_id=0)
        with torch.inference_mode():
            ran = model.generate(prompt, **options)
            stepped = model.generate(prompt, streamer=OneStepAtATime(), **options)
        assert runs[-1] == stop and ran[0, 3:].tolist() == free[: stop + 1] == stepped[0, 3:].tolist()


@pytest.mark.parametrize("config_class, overrides",
                         [(Qwen3MoeConfig, QWEN3_MOE), (Qwen2MoeConfig, QWEN2_MOE), (OlmoeConfig, OLMOE),
                          (ArceeConfig, ARCEE_BIASES), (NemotronConfig, NEMOTRON), (ApertusConfig, APERTUS),
                          (OlmoConfig, OLMO), (Ernie4_5_MoeConfig, ERNIE4_5_MOE),
                          (HunYuanMoEV1Config, HUNYUAN_MOE_BIASES), (BloomConfig, BLOOM), (FalconConfig, FALCON),
                          (FalconConfig, FALCON_RW), (FalconConfig, FALCON_GROUPED), (Glm4MoeConfig, GLM4_MOE),
                          (Dots1Config, DOTS1_BIASED), (GptOssConfig, GPT_OSS), (PhimoeConfig, PHIMOE),
                          (GPT2Config, GPT2_INVERSE_LAYER_IDX)],
                         ids=["qwen3-moe", "qwen2-moe", "olmoe", "arcee", "nemotron", "apertus", "olmo", "ernie4_5-moe",
                              "hunyuan-moe", "bloom", "falcon", "falcon-rw", "falcon-grouped", "glm4-moe",
                              "dots1-biases", "gpt-oss", "phimoe", "gpt2-inverse-layer-idx"])
def test_a_familys_run_of_greedy_steps_makes_the_plain_paths_tokens_and_cache(config_class, overrides, monkeypatch):
    # Each step of a run routes its token (and runs Qwen2-MoE's shared expert, ERNIE 4.5 MoE's and Hunyuan-MoE's
    # shared MLPs), activates, norms and clamps as the layers do: the tokens, and the keys and values of the second
    # layer, which the first one's output feeds.
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)
    model = accelerated(tiny_model(config_class, **overrides))
    prompt = torch.tensor([[5, 9, 14, 3]])
    options = dict(max_new_tokens=16, do_sample=False, eos_token_id=None)
    runs = counted_runs(monkeypatch)
    caches = [DynamicCache(), DynamicCache()]
    with torch.inference_mode():
        ran = model.generate(prompt, past_key_values=caches[0], **options)
        plain = tiny_model(config_class, **overrides).generate(prompt, past_key_values=caches[1], **options)
    assert runs == [15] and ran.tolist() == plain.tolist()  # every token after the prompt's in one run
    assert caches[0].lengths == caches[1].lengths == [19] * model.config.num_hidden_layers
    for ours, theirs in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        torch.testing.assert_close(ours[:, :, :19], theirs[:, :, :19], atol=1e-4, rtol=1e-4)


def test_a_run_returns_after_the_token_that_passes_its_time(monkeypatch):
    # decode_tokens gives its caller's thread back after the first token made past RUN_SECONDS: at 0, one a call.
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 0.0)
    model, prompt = accelerated(tiny_model()), torch.tensor([[4, 8, 15]])
    runs = counted_runs(monkeypatch)
    with torch.inference_mode():
        ran = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert runs == [1] * 10  # and the last token a step of its own: Sequence.run_greedy runs two tokens or more
    assert ran.tolist() == tiny_model().generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None).tolist()


def test_a_run_refuses_arguments_it_cannot_take_by_name(monkeypatch):
    decode_tokens, checked = torch.ops.openformers.decode_tokens, []

    def checking(*args):
        *leading, count, eos, ids, seconds = args
        for wrong in (ids.float(), ids[: count - 1], ids.view(-1, 1)):
            with pytest.raises(RuntimeError, match="ids must be a contiguous 1-D int64 tensor"):
                decode_tokens(*leading, count, eos, wrong, seconds)
        with pytest.raises(RuntimeError, match="count must be at least 1"):
            decode_tokens(*leading, 0, eos, ids, seconds)
        with pytest.raises(RuntimeError, match="needs the head and the embedding"):
            decode_tokens(*leading[:10], None, *leading[11:], count, eos, ids, seconds)
        checked.append(count)
        return decode_tokens(*args)

    monkeypatch.setattr(torch.ops.openformers, "decode_tokens", checking)
    monkeypatch.setattr(kernels.llama, "RUN_SECONDS", 60.0)
    model, prompt = accelerated(tiny_model()), torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert model.generate(prompt, max_new_tokens=6, do_sample=False).tolist() == \
            tiny_model().generate(prompt, max_new_tokens=6, do_sample=False).tolist()
    assert checked == [5]


def test_sampling_beams_and_streaming_give_the_plain_path_results():
    fast, plain = accelerated(tiny_model()), tiny_model()
    prompt = torch.tensor([[5, 6, 7]])
    runs = {
        "sampled": dict(do_sample=True, top_k=20, temperature=0.9, max_new_tokens=24),
        "beams": dict(num_beams=3, num_return_sequences=2, max_new_tokens=12),
        "penalized": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=24),
    }
    for name, options in runs.items():
        torch.manual_seed(7)
        expected = plain.generate(prompt, **options).tolist()
        torch.manual_seed(7)
        assert fast.generate(prompt, **options).tolist() == expected, name


def test_streamed_text_matches_the_returned_tokens(smollm2_gguf):
    from openformers import TextIteratorStreamer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    input_ids = tokenizer.encode("Write a haiku about the sea.", return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    output = model.generate(input_ids, max_new_tokens=24, streamer=streamer)
    assert "".join(streamer) == tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)


# The linear layer -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("columns", [72, 64])
def test_few_rows_of_a_linear_layer_take_the_kernel_with_torch_results(dtype, columns, monkeypatch):
    # 72 columns: a tail past the last 16 (float32) or 32 (bfloat16) of a row; 64: none, where the tiles of two rows
    # times eight inputs add up their sums as one tree (lane_sums16). 200 rows: blocks of four and of two.
    torch.manual_seed(0)
    layer = kernels.Linear.from_linear(torch.nn.Linear(columns, 200, bias=True).to(dtype)).eval()
    x = torch.randn(2, 9, columns).to(dtype)
    assert kernels.build()
    calls = counted_matvecs(monkeypatch)
    limit = kernels.linear.KERNEL_ROWS_BFLOAT16 if dtype == torch.bfloat16 else kernels.KERNEL_ROWS  # in eval
    counts = (1, 3, 4, 7, 8, 9, 13, 16, 17)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with torch.inference_mode():
            for rows in counts:
                flat = torch.randn(rows, columns).to(dtype)
                expected = torch.nn.functional.linear(flat, layer.weight, layer.bias)
                tolerance = 1e-5 if dtype == torch.float32 else 1e-2
                torch.testing.assert_close(layer(flat), expected, atol=tolerance, rtol=tolerance)
            assert layer(x[:, :4]).shape == (2, 4, 200)  # 8 rows in a batch of two
    finally:
        torch.set_num_threads(threads)
    taken = [rows for rows in counts if rows <= limit] + [8]
    assert calls == taken  # more rows take torch's matmul
    assert layer(x[0, :2].clone().requires_grad_(True)).requires_grad  # gradients: torch's path
    assert calls == taken


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_packed_layers_take_the_kernel_up_to_64_rows(quantization, monkeypatch):
    # Where the integer products beat widening the weights for a matmul: a batch of 32 sequences' head, short prompts.
    torch.manual_seed(0)
    layer = kernels.quantize(torch.nn.Sequential(torch.nn.Linear(64, 40)), quantization)[0].eval()
    x = torch.randn(65, 64)
    assert kernels.build()
    calls = counted_matvecs(monkeypatch)
    with torch.inference_mode():
        products = {rows: layer(x[:rows]) for rows in (9, 64, 65)}
    assert calls == [9, 64]  # 65 rows: the weights widened for one matmul
    with torch.inference_mode():
        layer.train()(x[:9])  # a training layer: 8 rows at most
    assert calls == [9, 64]
    expected = torch.nn.functional.linear(rounded(x[:64]), layer.dequantized(torch.float32), layer.bias)
    torch.testing.assert_close(products[64], expected, atol=1e-4, rtol=1e-4)


def test_a_float32_vocabulary_head_takes_the_kernel_up_to_64_rows(monkeypatch):
    # At least four times as many outputs as inputs: PyTorch's matmul is slow on a few rows of such a matrix.
    torch.manual_seed(0)
    head = kernels.Linear.from_linear(torch.nn.Linear(72, 288, bias=False)).eval()
    layer = kernels.Linear.from_linear(torch.nn.Linear(72, 287, bias=False)).eval()
    bfloat16_head = kernels.Linear.from_linear(torch.nn.Linear(72, 288, bias=False).bfloat16()).eval()
    x = torch.randn(65, 72)
    assert kernels.build()
    calls = counted_matvecs(monkeypatch)
    with torch.inference_mode():
        for rows in (9, 64, 65):
            torch.testing.assert_close(head(x[:rows]), torch.nn.functional.linear(x[:rows], head.weight),
                                       atol=1e-4, rtol=1e-4)
        assert calls == [9, 64]
        layer(x[:9]), bfloat16_head(x[:17].bfloat16())
    assert calls == [9, 64]  # fewer outputs: 8 rows at most; bfloat16 weights: 16 (KERNEL_ROWS_BFLOAT16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_products_of_a_batch_match_torch_for_every_count_of_inputs(dtype):
    # Five to eight inputs take two rows at a time for all of them, fewer four rows by four inputs; 13 inputs take
    # eight and then five, 10 eight and then two. An odd count of rows leaves one for the one-input loops; 40 and
    # 72 columns leave tails of 8 after the 16- and 32-wide steps. bfloat16 weights multiply the inputs rounded to
    # bfloat16 where the CPU has bfloat16 dot products (as PyTorch does), the float32 inputs elsewhere.
    assert kernels.build()
    torch.manual_seed(0)
    for inputs in (2, 4, 5, 6, 7, 8, 10, 13):
        for rows, columns in ((7, 40), (131, 72)):
            weight, x = torch.randn(rows, columns).to(dtype), torch.randn(inputs, columns)
            product = torch.ops.openformers.matvec(x, weight, None)
            exact = [torch.nn.functional.linear(given.double(), weight.double()).float() for given in (x, x.to(dtype))]
            assert any(torch.allclose(product, expected, atol=1e-4, rtol=1e-4) for expected in exact), (inputs, rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_row_products_match_torch_for_every_tail_of_a_row(dtype):
    # A row is read 64 weights at a time, then 16 (float32) or 32 (bfloat16), then one by one: these widths take
    # each of those loops alone and together. bfloat16 rows of 64 to 768 weights in 64s hold the input in registers
    # (64, 576, 768); 832 is the first such width past them.
    assert kernels.build()
    torch.manual_seed(0)
    for columns in (5, 16, 32, 64, 120, 184, 576, 768, 832):
        weight, x = torch.randn(13, columns).to(dtype), torch.randn(columns)
        expected = torch.nn.functional.linear(x.to(dtype), weight).float()
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(torch.ops.openformers.matvec(x, weight, None), expected, atol=tolerance, rtol=tolerance)


def test_a_float_layer_keeps_the_parameters_it_was_made_from():
    linear = torch.nn.Linear(8, 4)
    layer = kernels.Linear.from_linear(linear)
    assert layer.weight is linear.weight and layer.bias is linear.bias  # tied weights stay tied, training sees them
    assert set(layer.state_dict()) == {"weight", "bias"}


# Building the library ---------------------------------------------------------------------------------------------


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("OPENFORMERS_KERNELS", "0")
    library.build.cache_clear()
    try:
        assert not kernels.build()
        assert not kernels.accelerate(tiny_model())
    finally:
        monkeypatch.delenv("OPENFORMERS_KERNELS")
        library.build.cache_clear()
        assert kernels.build()


def test_forward_passes_never_build(monkeypatch):
    def refuse():
        raise AssertionError("a forward pass asked for a build")

    model = accelerated(tiny_model())
    quantized = kernels.quantize(tiny_model(), "int8")  # quantizing may build: it runs at load
    monkeypatch.setattr(library, "build", refuse)
    with torch.inference_mode():
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4)
        quantized(torch.tensor([[1, 2, 3]]))


def test_compiling_says_so_on_stderr_with_how_long(monkeypatch, tmp_path, capsys):
    from torch.utils import cpp_extension

    monkeypatch.setattr(library, "build_folder", lambda name: tmp_path / name)  # no library built there yet
    monkeypatch.setattr(cpp_extension, "load", lambda **options: None)
    library.build.cache_clear()
    try:
        assert kernels.build()
    finally:
        library.build.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "compiling" in lines[0] and lines[0].endswith(" s"), lines


def test_build_folder_is_keyed_by_everything_that_goes_into_the_build(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # asking for a folder makes it
    inputs = library.build_inputs()
    name = library.build_name(inputs)
    assert library.build_name(library.build_inputs()) == name  # the same environment reuses its build
    for key, other in [("source", "0" * 64), ("cpu", "flags: sse2"), ("torch", "2.12.0 0123abc"),
                       ("compiler", "/usr/bin/clang++"), ("flags", "-O2")]:
        assert library.build_name({**inputs, key: other}) != name, key
    # Another virtual environment with the same torch: its own folder, so neither rewrites the other's build.ninja.
    monkeypatch.setattr(sys, "prefix", "/elsewhere/.venv")
    elsewhere = library.build_name(library.build_inputs())
    assert elsewhere != name
    assert library.build_folder(elsewhere) != library.build_folder(name)

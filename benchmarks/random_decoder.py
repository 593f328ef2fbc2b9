"""Greedy decoding (batch 1, or `--batch` sequences together) of a decoder family that has no real weights at hand,
at a real model's shape with random weights, three ways in one process (`--ways` picks some): the plain forward
(PyTorch's products), the plain forward with the kernel's products for its linear layers (as `kernels.accelerate`
gives them to a model the decoding step does not implement, here with the weights left on their pages), and the
compiled decoding step (its weights placed on 2 MB pages first, where the memory left allows). Rounds are
interleaved; each way's best is printed with the ratios to the first way, and whether they made the same tokens
(random weights tie often in bfloat16, whose roundings differ by way).

Shapes: `qwen3` is Qwen3-0.6B's (28 layers, hidden 1024, 16 query and 8 key/value heads of 128, intermediate 3072,
a tied vocabulary of 151936); `phi4-mini` is Phi-4-mini's (32 layers, hidden 3072, 24 query and 8 key/value heads of
128 rotated over their first 96 dimensions, intermediate 8192, a tied vocabulary of 200064, longrope from 4096
positions on), whose 3.8B parameters three times over (one model a way) outgrow a 24 GB machine: `--layers` keeps
that many of its layers; `gemma2-2b` is Gemma-2-2B's (26 layers, hidden 2304, 8 query and 4 key/value heads of 256,
intermediate 9216, a tied vocabulary of 256000, every other layer sliding over 4096 positions, attention scores
soft-capped at 50 and logits at 30); `qwen3-moe` is Qwen3-30B-A3B's (48 layers, hidden 2048, 32 query and 4
key/value heads of 128, 128 experts of 768 a layer, 8 a token renormalized, an untied vocabulary of 151936), whose
30.5B parameters need `--layers` (each layer 0.62B, a token reading 57M of them) and, past a few layers, `--ways`
(each way holds a model); `qwen2-moe` is Qwen1.5-MoE-A2.7B's (24 layers, hidden 2048, 16 heads of 128 with q/k/v
biases, 60 experts of 1408 a layer, 4 a token not renormalized, a shared expert of 5632 behind its sigmoid gate, an
untied vocabulary of 151936; each layer 0.57B parameters, a token reading 86M of them, half in the shared expert);
`mixtral-8x7b` is Mixtral-8x7B's (32 layers, hidden 4096, 32 query and 8 key/value
heads of 128, 8 experts of 14336 a layer, 2 a token; a layer 1.45B parameters, a token reading 0.39B of them);
`starcoder2-3b` is StarCoder2-3B's (30 layers, hidden 3072, 24 query and 2 key/value heads of 128, a plain MLP of
12288 with GELU, LayerNorms and a bias on every projection, a tied vocabulary of 49152); `olmo2-1b` is
OLMo-2-0425-1B's (16 layers, hidden 2048, 16 heads of 128, each query and key norm over all 2048 of them,
intermediate 8192, an untied vocabulary of 100352); `granite-2b` is Granite-3.x-2B's (40 layers, hidden 2048, 32 query
and 8 key/value heads of 64, intermediate 8192, a tied vocabulary of 49155, its four scalars); `ernie4_5-0.3b` is
ERNIE-4.5-0.3B's (18 layers, hidden 1024, 16 query and 2 key/value heads of 128 turned in interleaved pairs,
intermediate 3072, a tied vocabulary of 103424); `glm4-9b` is GLM-4-9B-0414's (40 layers, hidden 4096, 32 query and 2
key/value heads of 128 with q/k/v biases, half of each turned in interleaved pairs, a fused gate/up of 2 x 13696,
norms after each branch, an untied vocabulary of 151552), whose 9.4B parameters need `--layers` and, in float32,
`--ways` (its vocabulary's two tables alone are 5 GB a way); `seed-oss-36b` is Seed-OSS-36B's (64 layers, hidden
5120, 80 query and 8 key/value heads of 128 with q/k/v biases, intermediate 27648, an untied vocabulary of 155136;
each layer 0.54B parameters, and 1.6B in the embedding and the head: `--layers` and `--ways` keep it within memory);
`helium-2b` is helium-1-2b's (24 layers, hidden 2560, 20 heads of 128 rotating interleaved pairs, intermediate 7040,
an untied vocabulary of 48000); `hunyuan-0.5b` is Hunyuan-0.5B's (24 layers, hidden 1024, 16 query and 8 key/value
heads of 128 normed after their rotation, intermediate 3584, a tied vocabulary of 120818, the base stretched by an
alpha of 1000); `exaone4-1.2b` is EXAONE-4.0-1.2B's (30 layers, hidden 2048, 32 query and 8 key/value heads of 64
with per-head q/k norms, norms after each branch, intermediate 4096, a tied vocabulary of 102400, no window, llama3
scaling); `pythia-1.4b` is Pythia-1.4B's (GPT-NeoX: 24 layers, hidden 2048, 16 heads of 128 fused q/k/v head by
head with a quarter of each rotated, exact GELU MLP of 8192, two LayerNorms a layer read in parallel, biases
everywhere, an untied vocabulary of 50304); the parallel-branch families: `phi-2` is Phi-2's (32 layers, hidden 2560,
32 heads of 80, 0.4 of each rotated, one LayerNorm a layer, tanh GELU MLP of 10240, biases everywhere, the head's too,
a vocabulary of 51200), `command-r7b` is Command R7B's (Cohere 2: 32 layers, hidden 4096, 32 query and 8 key/value
heads of 128, three sliding layers of 4096 to one full unrotated one, one LayerNorm without a bias a layer, SwiGLU of
14336, a tied vocabulary of 256000: `--layers`), `gpt-j-6b` is GPT-J-6B's (28 layers, hidden 4096, 16 heads of 256,
64 of each turned in interleaved pairs, GELU MLP of 16384 with biases, a vocabulary of 50400 with a biased head:
`--layers`), `codegen-350m` is codegen-350M-mono's (GPT-J's layers, 20 of hidden 1024, 16 heads of 64, their q/v/k
fused in 4 blocks, 32 of each rotated) and `stablelm-2-1.6b` is stablelm-2-1_6b's (24 layers, hidden 2048, 32 heads of
64 with q/k/v biases, a quarter of each rotated, LayerNorms with biases, SwiGLU of 5632, an untied vocabulary of
100352); GPT-2's line: `gpt2` is GPT-2's (124M: 12 layers, hidden 768, 12 heads of 64, an MLP of 3072 with the tanh
GELU, LayerNorms and a bias on every projection, learned positions, a tied vocabulary of 50257); `santacoder` is
SantaCoder's (1.1B: 24 layers, hidden 2048, 16 query heads and one key/value head of 128, an MLP of 8192, a tied
vocabulary of 49280); `opt-125m` is OPT-125m's (GPT-2's sizes with a ReLU MLP and a vocabulary of 50272);
`gpt-neo-125m` is GPT-Neo-125M's (GPT-2's sizes, unscaled scores, every other layer local over 256 positions);
`arcee-4.5b` is AFM-4.5B's (36 layers, hidden 2560, 20 query and 4 key/value heads of 128, an MLP of 18432 without a
gate over the squared ReLU, an untied vocabulary of 128004); `nemotron-4b` is Minitron-4B's (32 layers, hidden 3072,
24 query and 8 key/value heads of 128 half rotated, LayerNorms of 1 + w, a squared-ReLU MLP of 9216 without a gate,
an untied vocabulary of 256000); `apertus-8b` is Apertus-8B's (32 layers, hidden 4096, 32 query and 8 key/value heads
of 128 with per-head q/k norms, an xIELU MLP of 21504 without a gate, an untied vocabulary of 131072, llama3
scaling); `olmo-1b` is OLMo-1B-hf's (16 layers, hidden 2048, 16 heads of 128, LayerNorms without parameters,
intermediate 8192, a tied vocabulary of 50304), with OLMo-7B-0424's clip_qkv of 8; `olmoe-1b-7b` is
OLMoE-1B-7B-0924's (16 layers, hidden 2048, 16 heads of 128 with q/k norms over all of them, 64 experts of 1024 a
layer, 8 a token not renormalized, an untied vocabulary of 50304); `granitemoe-1b` is granite-3.1-1b-a400m's (24
layers, hidden 1024, 16 query and 8 key/value heads of 64, 32 experts of 512 a layer held in 3-D banks, 8 a token, a
tied vocabulary of 49155, Granite's scalars; 1.3B parameters, a token reading 0.4B of them); `ernie4_5-21b` is
ERNIE-4.5-21B-A3B's (28 layers, hidden 2560, 20 query and 4 key/value heads of 128 turned in interleaved pairs, a dense
first layer of 12288, then 64 experts of 1536 a layer, 6 a token chosen with correction biases, two shared experts
(3072), a tied vocabulary of 103424; a sparse layer 0.78B parameters: `--layers` and `--ways`); `hunyuan-a13b` is
Hunyuan-A13B's (32 layers, hidden 4096, 32 query and 8 key/value heads of 128 normed after their rotation, 64 experts
of 3072 a layer, 8 a token, a shared MLP of 3072, an untied vocabulary of 128167; a layer 2.5B parameters: `--layers`
and `--ways`); `bloom-560m` is bloom-560m's (24 layers, hidden 1024, 16 heads of 64 with ALiBi, the embeddings'
LayerNorm, a tanh GELU MLP of 4096, biases everywhere, a tied vocabulary of 250880) and `falcon-7b` is Falcon-7B's (32
layers, hidden 4544, 71 query heads and one key/value head of 64, parallel branches after one LayerNorm, an exact GELU
MLP of 18176, no biases, a tied vocabulary of 65024: `--layers`); `glm4_5-air` is GLM-4.5-Air's (46 layers, hidden 4096,
96 query and 8 key/value heads of 128 with q/k/v biases, half of each rotated, a dense first layer of 10944, then 128
experts of 1408 a layer, 8 a token by sigmoid score plus correction bias, a shared expert, an untied vocabulary of
151552) and `dots1` dots.llm1's (62 layers, hidden 4096, 32 heads of 128 with q/k norms, a dense first layer of 10944,
then 128 experts of 1408, 6 a token, times 2.5, two shared experts, an untied vocabulary of 152064): a sparse layer of
either is 2.2B parameters, so `--layers` and `--ways`; `--experts` keeps fewer routed experts, of which a token reads as
many); `gpt-oss-20b` is gpt-oss-20b's (24 layers, hidden 2880, 64 query and 8 key/value heads of 64 with biases and a
sink each, sliding (128) and full layers in turn, YaRN, 32 experts of 2880 a layer with biases, their gate and up rows
alternating, 4 a token by a router with a bias, the clamped SwiGLU, an untied vocabulary of 201088; a layer 0.8B
parameters, a token reading 0.13B of them: `--layers`, and `--vocabulary` to keep its head from outweighing the
layers); `internlm3-8b` is internlm3-8b-instruct's (48 layers, hidden 4096, 32 query and 2 key/value heads of 128,
intermediate 10240, an untied vocabulary of 128512, dynamic NTK scaling of factor 6 past 32768 positions: `--layers`);
`ministral3-3b` is Ministral-3-3B's text decoder (26 layers, hidden 3072, 32 query and 8 key/value heads of 128,
intermediate 9216, a tied vocabulary of 131072, YaRN of factor 16 past 16384 positions with its queries' factor by
position). Run from the repository root:

    .venv/bin/python benchmarks/random_decoder.py [--family qwen3] [--dtype bfloat16] [--new-tokens 32] [--rounds 2]
        [--layers N] [--experts N] [--vocabulary N] [--batch N] [--ways plain products step]
"""

import argparse
import copy
import time

import torch

from openformers import kernels
from openformers.configs import (
    ApertusConfig,
    ArceeConfig,
    Dots1Config,
    Ernie4_5_MoeConfig,
    Ernie4_5Config,
    Exaone4Config,
    Gemma2Config,
    Glm4Config,
    Glm4MoeConfig,
    CodeGenConfig,
    Cohere2Config,
    GPTJConfig,
    GPTNeoXConfig,
    GPT2Config,
    GPTBigCodeConfig,
    GPTNeoConfig,
    GptOssConfig,
    PhiConfig,
    StableLmConfig,
    BloomConfig,
    FalconConfig,
    GraniteConfig,
    GraniteMoeConfig,
    HeliumConfig,
    HunYuanDenseV1Config,
    HunYuanMoEV1Config,
    InternLM3Config,
    Ministral3Config,
    MixtralConfig,
    NemotronConfig,
    Olmo2Config,
    OlmoConfig,
    OlmoeConfig,
    OPTConfig,
    Phi3Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
    SeedOssConfig,
    Starcoder2Config,
)
from openformers.models.apertus import ApertusForCausalLM
from openformers.models.arcee import ArceeForCausalLM
from openformers.models.bloom import BloomForCausalLM
from openformers.models.dots1 import Dots1ForCausalLM
from openformers.models.ernie4_5 import Ernie4_5ForCausalLM
from openformers.models.ernie4_5_moe import Ernie4_5_MoeForCausalLM
from openformers.models.exaone4 import Exaone4ForCausalLM
from openformers.models.falcon import FalconForCausalLM
from openformers.models.gemma import Gemma2ForCausalLM
from openformers.models.glm import Glm4ForCausalLM
from openformers.models.glm4_moe import Glm4MoeForCausalLM
from openformers.models.codegen import CodeGenForCausalLM
from openformers.models.cohere2 import Cohere2ForCausalLM
from openformers.models.gpt_neox import GPTNeoXForCausalLM
from openformers.models.gpt2 import GPT2LMHeadModel
from openformers.models.gpt_bigcode import GPTBigCodeForCausalLM
from openformers.models.gpt_neo import GPTNeoForCausalLM
from openformers.models.gptj import GPTJForCausalLM
from openformers.models.gpt_oss import GptOssForCausalLM
from openformers.models.phi import PhiForCausalLM
from openformers.models.stablelm import StableLmForCausalLM
from openformers.models.granite import GraniteForCausalLM
from openformers.models.granitemoe import GraniteMoeForCausalLM
from openformers.models.helium import HeliumForCausalLM
from openformers.models.hunyuan_v1_dense import HunYuanDenseV1ForCausalLM
from openformers.models.hunyuan_v1_moe import HunYuanMoEV1ForCausalLM
from openformers.models.llama import LlamaForCausalLM
from openformers.models.ministral3 import Ministral3ForCausalLM
from openformers.models.mixtral import MixtralForCausalLM
from openformers.models.nemotron import NemotronForCausalLM
from openformers.models.olmo import OlmoForCausalLM
from openformers.models.olmo2 import Olmo2ForCausalLM
from openformers.models.olmoe import OlmoeForCausalLM
from openformers.models.opt import OPTForCausalLM
from openformers.models.phi3 import Phi3ForCausalLM
from openformers.models.qwen2_moe import Qwen2MoeForCausalLM
from openformers.models.qwen3 import Qwen3ForCausalLM
from openformers.models.qwen3_moe import Qwen3MoeForCausalLM
from openformers.models.seed_oss import SeedOssForCausalLM
from openformers.models.starcoder2 import Starcoder2ForCausalLM

FAMILIES = {
    "qwen3": (Qwen3ForCausalLM, Qwen3Config, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, max_position_embeddings=4096)),
    "phi4-mini": (Phi3ForCausalLM, Phi3Config, dict(
        vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=24,
        num_key_value_heads=8, partial_rotary_factor=0.75, tie_word_embeddings=True, max_position_embeddings=131072,
        original_max_position_embeddings=4096, pad_token_id=199999,
        rope_scaling={"rope_type": "longrope", "long_factor": [1.0 + i / 8 for i in range(48)],
                      "short_factor": [1.0] * 48})),
    "gemma2-2b": (Gemma2ForCausalLM, Gemma2Config, dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=True)),
    "qwen3-moe": (Qwen3MoeForCausalLM, Qwen3MoeConfig, dict(
        vocab_size=151936, hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
        head_dim=128, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
        rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096, tie_word_embeddings=False)),
    "qwen2-moe": (Qwen2MoeForCausalLM, Qwen2MoeConfig, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=16, num_experts=60, num_experts_per_tok=4, moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632, norm_topk_prob=False, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=4096, tie_word_embeddings=False)),
    "mixtral-8x7b": (MixtralForCausalLM, MixtralConfig, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, rope_theta=1000000.0,
        max_position_embeddings=4096, tie_word_embeddings=False)),
    "starcoder2-3b": (Starcoder2ForCausalLM, Starcoder2Config, dict(
        vocab_size=49152, hidden_size=3072, intermediate_size=12288, num_hidden_layers=30, num_attention_heads=24,
        num_key_value_heads=2, rope_theta=999999.4, sliding_window=4096, max_position_embeddings=16384,
        tie_word_embeddings=True)),
    "olmo2-1b": (Olmo2ForCausalLM, Olmo2Config, dict(
        vocab_size=100352, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=16, rope_theta=500000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
        tie_word_embeddings=False)),
    "granite-2b": (GraniteForCausalLM, GraniteConfig, dict(
        vocab_size=49155, hidden_size=2048, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32,
        num_key_value_heads=8, rope_theta=5000000.0, max_position_embeddings=4096, tie_word_embeddings=True,
        embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.015625, logits_scaling=8.0)),
    "ernie4_5-0.3b": (Ernie4_5ForCausalLM, Ernie4_5Config, dict(
        vocab_size=103424, hidden_size=1024, intermediate_size=3072, num_hidden_layers=18, num_attention_heads=16,
        num_key_value_heads=2, head_dim=128, rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=4096,
        tie_word_embeddings=True)),
    "glm4-9b": (Glm4ForCausalLM, Glm4Config, dict(
        vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=32,
        num_key_value_heads=2, head_dim=128, partial_rotary_factor=0.5, attention_bias=True, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=False)),
    "seed-oss-36b": (SeedOssForCausalLM, SeedOssConfig, dict(
        vocab_size=155136, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=80,
        num_key_value_heads=8, head_dim=128, attention_bias=True, rope_theta=10000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=4096, tie_word_embeddings=False)),
    "helium-2b": (HeliumForCausalLM, HeliumConfig, dict(
        vocab_size=48000, hidden_size=2560, intermediate_size=7040, num_hidden_layers=24, num_attention_heads=20,
        num_key_value_heads=20, head_dim=128, rope_theta=100000.0, rms_norm_eps=1e-8, tie_word_embeddings=False)),
    "hunyuan-0.5b": (HunYuanDenseV1ForCausalLM, HunYuanDenseV1Config, dict(
        vocab_size=120818, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, rope_theta=10000.0, max_position_embeddings=4096,
        rope_scaling={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0}, tie_word_embeddings=True)),
    "gpt2": (GPT2LMHeadModel, GPT2Config, dict(
        vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)),
    "santacoder": (GPTBigCodeForCausalLM, GPTBigCodeConfig, dict(
        vocab_size=49280, n_embd=2048, n_layer=24, n_head=16, n_inner=8192, n_positions=2048, multi_query=True)),
    "opt-125m": (OPTForCausalLM, OPTConfig, dict(
        vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
        max_position_embeddings=2048)),
    "gpt-neo-125m": (GPTNeoForCausalLM, GPTNeoConfig, dict(
        vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, max_position_embeddings=2048,
        window_size=256)),
    "exaone4-1.2b": (Exaone4ForCausalLM, Exaone4Config, dict(
        vocab_size=102400, hidden_size=2048, intermediate_size=4096, num_hidden_layers=30, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, sliding_window=None, rope_theta=1000000.0, max_position_embeddings=4096,
        rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}, tie_word_embeddings=True)),
    "pythia-1.4b": (GPTNeoXForCausalLM, GPTNeoXConfig, dict(
        vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
        partial_rotary_factor=0.25, hidden_act="gelu", use_parallel_residual=True, max_position_embeddings=2048,
        tie_word_embeddings=False)),
    "phi-2": (PhiForCausalLM, PhiConfig, dict(
        vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, partial_rotary_factor=0.4, hidden_act="gelu_new", max_position_embeddings=2048)),
    "command-r7b": (Cohere2ForCausalLM, Cohere2Config, dict(
        vocab_size=256000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, sliding_window=4096, sliding_window_pattern=4, rope_theta=50000.0, logit_scale=0.25,
        max_position_embeddings=8192, tie_word_embeddings=True)),
    "gpt-j-6b": (GPTJForCausalLM, GPTJConfig, dict(
        vocab_size=50400, hidden_size=4096, n_inner=16384, num_hidden_layers=28, num_attention_heads=16, rotary_dim=64,
        max_position_embeddings=2048)),
    "codegen-350m": (CodeGenForCausalLM, CodeGenConfig, dict(
        vocab_size=51200, hidden_size=1024, num_hidden_layers=20, num_attention_heads=16, rotary_dim=32,
        max_position_embeddings=2048)),
    "stablelm-2-1.6b": (StableLmForCausalLM, StableLmConfig, dict(
        vocab_size=100352, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=32,
        num_key_value_heads=32, partial_rotary_factor=0.25, use_qkv_bias=True, max_position_embeddings=4096,
        tie_word_embeddings=False)),
    "arcee-4.5b": (ArceeForCausalLM, ArceeConfig, dict(
        vocab_size=128004, hidden_size=2560, intermediate_size=18432, num_hidden_layers=36, num_attention_heads=20,
        num_key_value_heads=4, head_dim=128, rope_theta=10000.0, max_position_embeddings=4096,
        tie_word_embeddings=False)),
    "nemotron-4b": (NemotronForCausalLM, NemotronConfig, dict(
        vocab_size=256000, hidden_size=3072, intermediate_size=9216, num_hidden_layers=32, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, partial_rotary_factor=0.5, rope_theta=10000.0,
        max_position_embeddings=4096, tie_word_embeddings=False)),
    "apertus-8b": (ApertusForCausalLM, ApertusConfig, dict(
        vocab_size=131072, hidden_size=4096, intermediate_size=21504, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=4096, tie_word_embeddings=False)),
    "olmo-1b": (OlmoForCausalLM, OlmoConfig, dict(
        vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=16, rope_theta=10000.0, clip_qkv=8.0, max_position_embeddings=4096,
        tie_word_embeddings=True)),
    "olmoe-1b-7b": (OlmoeForCausalLM, OlmoeConfig, dict(
        vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, norm_topk_prob=False, rope_theta=10000.0,
        max_position_embeddings=4096, tie_word_embeddings=False)),
    "granitemoe-1b": (GraniteMoeForCausalLM, GraniteMoeConfig, dict(
        vocab_size=49155, hidden_size=1024, intermediate_size=512, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=8, num_local_experts=32, num_experts_per_tok=8, rope_theta=10000.0,
        max_position_embeddings=4096, tie_word_embeddings=True, embedding_multiplier=12.0, residual_multiplier=0.22,
        attention_multiplier=0.015625, logits_scaling=6.0)),
    "ernie4_5-21b": (Ernie4_5_MoeForCausalLM, Ernie4_5_MoeConfig, dict(
        vocab_size=103424, hidden_size=2560, intermediate_size=12288, num_hidden_layers=28, num_attention_heads=20,
        num_key_value_heads=4, head_dim=128, moe_num_experts=64, moe_k=6, moe_intermediate_size=1536,
        moe_num_shared_experts=2, moe_layer_start_index=1, moe_layer_end_index=27, rope_theta=500000.0,
        rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=True)),
    "hunyuan-a13b": (HunYuanMoEV1ForCausalLM, HunYuanMoEV1Config, dict(
        vocab_size=128167, hidden_size=4096, intermediate_size=3072, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, num_experts=64, moe_topk=8, rope_theta=10000.0,
        max_position_embeddings=4096, rope_scaling={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0},
        tie_word_embeddings=False)),
    "bloom-560m": (BloomForCausalLM, BloomConfig, dict(
        vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16, tie_word_embeddings=True)),
    "falcon-7b": (FalconForCausalLM, FalconConfig, dict(
        vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71, multi_query=True,
        parallel_attn=True, bias=False, new_decoder_architecture=False, max_position_embeddings=2048,
        tie_word_embeddings=True)),
    "glm4_5-air": (Glm4MoeForCausalLM, Glm4MoeConfig, dict(
        vocab_size=151552, hidden_size=4096, intermediate_size=10944, num_hidden_layers=46, num_attention_heads=96,
        num_key_value_heads=8, head_dim=128, partial_rotary_factor=0.5, attention_bias=True, use_qk_norm=False,
        n_routed_experts=128, num_experts_per_tok=8, moe_intermediate_size=1408, n_shared_experts=1,
        first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.0,
        rope_theta=1000000.0, max_position_embeddings=4096, tie_word_embeddings=False)),
    "dots1": (Dots1ForCausalLM, Dots1Config, dict(
        vocab_size=152064, hidden_size=4096, intermediate_size=10944, num_hidden_layers=62, num_attention_heads=32,
        num_key_value_heads=32, head_dim=128, n_routed_experts=128, num_experts_per_tok=6, moe_intermediate_size=1408,
        n_shared_experts=2, first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
        routed_scaling_factor=2.5, rope_theta=10000000.0, max_position_embeddings=4096, tie_word_embeddings=False)),
    "gpt-oss-20b": (GptOssForCausalLM, GptOssConfig, dict(
        vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_attention_heads=64,
        num_key_value_heads=8, head_dim=64, num_local_experts=32, num_experts_per_tok=4, sliding_window=128,
        rope_theta=150000.0, max_position_embeddings=131072, tie_word_embeddings=False, rope_scaling={
            "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
            "original_max_position_embeddings": 4096})),
    "internlm3-8b": (LlamaForCausalLM, InternLM3Config, dict(
        vocab_size=128512, hidden_size=4096, intermediate_size=10240, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=2, head_dim=128, rope_theta=50000000.0, max_position_embeddings=32768,
        rope_scaling={"rope_type": "dynamic", "factor": 6.0}, tie_word_embeddings=False)),
    "ministral3-3b": (Ministral3ForCausalLM, Ministral3Config, dict(
        vocab_size=131072, hidden_size=3072, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)),
}


WAYS = {"plain": "plain forward", "products": "kernel's products", "step": "decoding step"}


# a mixture's count of routed experts under each family's name (--experts)
EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def random_model(family: str, dtype: torch.dtype, layers: int | None = None, experts: int | None = None,
                 vocabulary: int | None = None):
    model_class, config_class, shape = FAMILIES[family]
    torch.manual_seed(0)
    depth = next(name for name in ("num_hidden_layers", "n_layer", "num_layers") if name in shape)  # GPT-2's names
    shape = {**shape, depth: layers or shape[depth]}
    if experts:
        shape.update((name, experts) for name in EXPERT_COUNTS if name in shape)
    if vocabulary:
        shape["vocab_size"] = vocabulary
    model = model_class.from_config(config_class.from_dict(shape), dtype=dtype).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # matrices of a trained model's scale; norms around one
            if parameter.dim() > 1 or name.endswith("bias"):
                parameter.normal_(std=0.02)
            else:
                parameter.normal_(mean=1.0, std=0.1)
    return model


def tokens_per_second(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, torch.Tensor]:
    """Tokens a second of every row of `ids` together, the prompt's forward pass left out."""
    options = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    started = time.perf_counter()
    model.generate(ids, **{**options, "max_new_tokens": 1, "min_new_tokens": 1})  # the prompt alone
    prompt = time.perf_counter() - started
    started = time.perf_counter()
    tokens = model.generate(ids, **options)
    return len(ids) * (new_tokens - 1) / (time.perf_counter() - started - prompt), tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen3", choices=list(FAMILIES))
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, help="keep this many of the family's layers")
    parser.add_argument("--experts", type=int, help="keep this many of a mixture's routed experts (a token reads as "
                        "many bytes: as many are chosen, of the same size)")
    parser.add_argument("--vocabulary", type=int, help="keep this many of the vocabulary's tokens")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together (unpadded prompts)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                        help="run only these (each way holds a model of its own)")
    args = parser.parse_args()

    model = random_model(args.family, getattr(torch, args.dtype), args.layers, args.experts, args.vocabulary)
    ways = {}
    for way in args.ways:  # the last way takes the model itself, the others copies
        ways[WAYS[way]] = model if way == args.ways[-1] else copy.deepcopy(model)
    if "products" in args.ways:
        kernels.take_kernel_products(ways[WAYS["products"]])  # accelerate's swap, without its placing hook
    if "step" in args.ways:
        step = ways[WAYS["step"]]
        if not kernels.accelerate(step):
            raise SystemExit(f"the decoding step does not take {args.family}: {kernels.llama.refusal(step.config)}")
        if not kernels.place_weights(step):  # refused where the copies would cut into the memory reserve
            print("the decoding step's weights stay on 4 KB pages: too little memory left to place them")
    baseline = next(iter(ways))
    ids = torch.randint(0, model.config.vocab_size, (args.batch, 8), generator=torch.Generator().manual_seed(1))
    for model in ways.values():  # warm-up
        model.generate(ids, max_new_tokens=4, do_sample=False)
    best, tokens = {name: 0.0 for name in ways}, {}
    for _ in range(args.rounds):
        for name, model in ways.items():
            speed, tokens[name] = tokens_per_second(model, ids, args.new_tokens)
            best[name] = max(best[name], speed)
    layers = model.config.num_hidden_layers
    print(f"{args.family} ({layers} layers, {model.num_parameters() / 1e6:.0f}M parameters, random), {args.dtype}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, best of {args.rounds} rounds of "
          f"{args.new_tokens} tokens")
    for name, speed in best.items():
        print(f"  {name:18s} {speed:7.1f} tok/s  {speed / best[baseline]:5.2f}x the {baseline}")
    same = all(torch.equal(t, tokens[baseline]) for t in tokens.values())
    print(f"same tokens in every way: {same}")


if __name__ == "__main__":
    main()

"""The Llama-style decoding step as one call of the compiled kernel, and which models may take it.

Decoding one token of one sequence reads every weight once; the plain forward spends as much again on ~40
small dispatched operations per layer. `DecodeStep` runs the whole decoder stack in one call of
`torch.ops.openformers.decode_step` (decode.cpp), the same computation as the layers up to float rounding,
with the residual stream kept in float32 whatever the weights' dtype. A batch (one token for each of up to
BATCH_ROWS sequences) takes `decode_batch`, which reads each weight once for all its rows and attends each row
over its own cache positions, where the layers also build a mask over the padded cache: SmolLM2, 8 sampled
sequences, one thread, CPU time per step with sampling (9 ms of it), float32 64 ms against the layers' 76-84,
bfloat16 43.5 against 62 (benchmarks/RESULTS.md). generate's greedy row without a streamer makes its tokens in
runs of steps, each fed the argmax of the one before, in one call of `decode_tokens` (`greedy_tokens`). Prompts
of up to PROMPT_ROWS tokens in all, of one sequence or a padded batch's, take `decode_prompt`: decode_batch's work
with the prompts' tokens as its rows, each at its own position of its sequence's cache row and attending to those
before it that its mask allows (SmolLM2, 16 tokens, two threads: 1.6-2.2x the layers' forward; a chat turn's time
to its first token); a bfloat16 model's only for generation (`prompts_for_generation`).

A model takes the step only when every field of its config is one the step implements (`refusal` says which is not):
Llama, Mistral, InternLM3 (Llama's layers, with its qkv_bias and bias a bias on every projection), Qwen2 (q/k/v
biases), Qwen3 (each head's queries and keys RMS-normed before the rotation), SmolLM3
(some layers unrotated, `set_unrotated`), Gemma (Llama's layers with Gemma's norms of 1 + w, scaled embeddings and
GELU), Gemma 2 and Gemma 3's text decoder (norms of 1 + w around attention and MLP as well as before them, GELU,
queries scaled by query_pre_attn_scalar, sliding layers, Gemma 3's with rotary tables of their own, Gemma 2's soft-
capped attention scores; `set_family` of decode.cpp's StepWeights; the final logits' soft-cap after the head; also
under the image-and-text config's model_type gemma3),
VaultGemma (Gemma 2's windows and soft-caps in the first Gemma's layers), OLMo
2 (norms after attention and MLP only, queries and keys normed over all heads at once) and OLMo 3 (OLMo 2's layers
with Gemma's per-layer windows and the sliding layers' own rotary tables), Ministral (Mistral's layers with those
per-layer windows, `set_family`'s sliding flags), Ministral 3 (Mistral's layers with YaRN's tables; its queries'
factor by position is 1 before original_max_position_embeddings, the positions the step takes, the layers taking
those past it), Phi-3 / Phi-4 (fused q/k/v and gate/up
weights, `set_fused`; rotary tables over a head's leading dimensions; longrope), StarCoder2 (LayerNorms with biases,
`set_norm_biases`; biases on every projection; an MLP without a gate), Granite (Llama's layers with the embedding
scale and the queries' factor of `set_family`, each branch's output scaled before the residual add,
`set_residual_scale`, and the logits divided after the head), Seed-OSS (Llama's layers with biases on q, k and v, and
with its options on o and the MLP, read as StarCoder2's), Helium (Llama's layers rotating interleaved pairs
(2i, 2i + 1), `set_interleaved`), Hunyuan dense (Qwen3's per-head q/k norms run after the rotation instead,
`set_norms_after_rotation`; its rope alpha's stretched base is in the tables the step reads), EXAONE 4.0 (OLMo 2's
norms after each branch with Qwen3's per-head q/k norms, the sliding layers' windows by set_family's flags and the full
layers unrotated, `set_unrotated`), Mixtral and Qwen3-MoE (`set_experts`: the router's picks and the chosen experts'
products in the step, a batch's rows grouped by the experts they picked),
Qwen2-MoE (Qwen2's attention with Qwen3-MoE's mixture, and in each sparse layer a shared expert that every token
runs: the step's dense MLP on the layer's own gate, up and down, its output scaled by the sigmoid of its gate,
`set_shared_experts`), Granite MoE (Granite's scalars with the mixture, its experts held as 3-D banks read as views of
each expert's rows, float or packed by quantization) and Granite MoE shared (a shared MLP without a gate, its gate and
up fused, `set_fused`), ERNIE 4.5 MoE (ERNIE 4.5's layers, its experts chosen by probability plus a correction bias
and its weights' sum floored by moe_norm_min, `set_expert_choice`, shared experts without a gate, dense leading
layers), Hunyuan-MoE (Hunyuan dense's layers with the mixture and a shared MLP without a gate; one moe_topk for every
layer), gpt-oss (Ministral's per-layer windows, biases on q, k, v and o and a learned sink per head joining each
softmax's denominator, `set_sinks`; a router with a bias whose chosen scores are softmaxed, experts with biases whose
gate and up rows alternate, the float stacks read as stored, (in, out), over the clamped SwiGLU, `set_expert_layout`,
`set_clamped_swiglu`), PhiMoE (Mixtral's layers with StarCoder2's LayerNorms, biases on q, k, v, o and the head,
Phi-3's longrope, and the sparsemixer's routing at inference, `set_sparsemixer`: two picks, each the best expert left
weighted by the softmax over those left within a relative 2 * router_jitter_noise of its score), ERNIE 4.5 dense (Llama's layers turning interleaved pairs (2i, 2i + 1), GPT-J's form,
`set_interleaved`; with use_bias a bias on every projection), GLM and GLM-4-0414 (q/k/v biases, Phi-3's fused
gate/up alone, `set_fused`, and partial rotary tables, turning interleaved pairs; GLM-4-0414's plain RMSNorms after
each branch as Gemma 2's sandwich norms), GPT-NeoX / Pythia (StarCoder2's LayerNorms and MLP without a gate,
GELU's exact form, `set_exact_gelu`, partial rotary tables, its fused q/k/v read in place head by head,
`set_qkv_per_head`, and with use_parallel_residual attention and the MLP both reading the layer's input, each
through its own norm, their outputs joining the residual together, `set_parallel`), GPT-2's line: GPT-2, GPT-BigCode
(multi-query), OPT (LayerNorms before each branch, embeddings as wide as the layers) and GPT-Neo, whose learned
absolute positions the step adds to the token's embedding (`set_positions`, read past OPT's offset of 2), every layer
unrotated (`set_unrotated`), with StarCoder2's LayerNorms, biases and gate-less MLP, GPT-2's fused c_attn read as
Phi-3's fused q/k/v, OPT's ReLU (`set_relu`), GPT-Neo's unscaled scores and local layers by `set_family` (its padded
prompts take the layers); Phi-1 / 1.5 / 2 (GPT-NeoX's parallel branches reading one LayerNorm, biases everywhere and
the head's bias, added to the step's logits, `set_head_bias`), GPT-J (Phi's layers under GPT-2's names, turning
interleaved pairs) and CodeGen (GPT-J's, its fused q/k/v read in place in blocks of a quarter of the heads, each
block's queries, values and keys, `set_qkv_blocks`), StableLM (Llama's attention and MLP after LayerNorms with biases,
partial rotary tables, sequential or parallel branches), and Cohere and Cohere 2 (parallel branches after one
LayerNorm without a bias, `set_centred_norms`, interleaved pairs, the logits multiplied by logit_scale after the head;
Cohere 2's sliding layers windowed, its full layers unrotated); Arcee (Llama's layers with an MLP without a gate, up,
the squared ReLU and down: the MLP's activation is one option of the step, `set_activation`, of SiLU, GELU's tanh and
exact forms, ReLU, relu2 and xIELU), Nemotron (Arcee's MLP, LayerNorms of 1 + w with biases, set_family's norm offset
and `set_norm_biases`, and partial rotary tables), Apertus (Qwen3's per-head q/k norms and an MLP without a gate over
xIELU, whose learned values set_activation reads from each layer), OLMo (LayerNorms without parameters, read as
weights of ones and biases of zeros, and q, k and v clamped to clip_qkv after their projections, `set_clip_qkv`) and
OLMoE (OLMo's clamp and OLMo 2's q/k norms over all heads with Qwen3-MoE's mixture); BLOOM (GPT-NeoX's LayerNorms,
biases and fused q/k/v read head by head, every layer unrotated, with ALiBi's biases on the attention scores instead,
each key's slope x position counted over its row's real positions, `set_alibi`, the embeddings' LayerNorm where the
step embeds a token itself, `set_embedding_norm`, and tanh GELU), Falcon (Falcon-7B's one key/value head read as
Phi-3's fused q/k/v, Falcon-RW's layout head by head and Falcon-40B's groups of query heads with their key and value
read in place, `set_qkv_per_head`, parallel branches after one norm or two or sequential ones, exact GELU, rotary
positions or BLOOM's ALiBi with its products rounded to bfloat16), GLM-4.5 (GLM's q/k/v biases and
partial rotary tables turned in halves, Qwen3's per-head q/k norms with use_qk_norm, dense leading layers, then
DeepSeek-V3's mixture: sigmoid scores plus correction biases, `set_expert_choice`, the choice limited to the best
groups of experts, a group ranked by its two best, and the weights times routed_scaling_factor, `set_expert_groups`,
with shared experts without a gate) and dots.llm1 (Qwen3's attention with that mixture, sliding layers by
set_family's flags). Per-head q/k LayerNorms are read as the family's other norms are (centred, with a bias where
set_norm_biases gives one): Phi's qk_layernorm (one weight for every head), StableLM 2 12B's and Command R+'s
use_qk_norm (a weight row for each head, `set_qk_norms_per_head`). DeepSeek-V3 and V2 are refused (model_types
deepseek_v3 and deepseek_v2; generation runs their layers): their multi-head latent attention caches one compressed
latent and one shared rotated key per position, which each step expands through kv_b_proj into every head's keys and
values over all cached positions, where the step attends over cached per-head keys and values of one head size. The step
rotates by the tables of the model's rotary modules (cos and sin times the rope scaling's attention factor), so every
rope scaling those tables hold rotates as in the layers: default, linear, llama3 and YaRN (Qwen2.5 / Qwen3's long
contexts, OLMo 3's full layers), Phi-3's longrope, and dynamic NTK, whose tables a call past the context rebuilds for
its length: the step follows each call's length as the layers' forward does before it reads them (a run of greedy steps
stays within the length they were made for).
A feature added to the models later (another rope, another norm) leaves such models on the plain path until the
step implements it and tests/test_kernels.py proves parity for it.
"""

import contextlib
import copy
import threading
import weakref

import torch
from torch import nn
from torch.nn.modules import module as torch_modules

from ..configs import CodeGenConfig
from ..generation.cache import DynamicCache
from ..models.apertus import XIELU, ApertusDecoderLayer, ApertusMLP
from ..models.arcee import ArceeDecoderLayer
from ..models.bloom import BloomAttention, BloomBlock, BloomMLP, BloomModel
from ..models.codegen import CodeGenAttention, CodeGenBlock, CodeGenModel
from ..models.cohere import CohereAttention, CohereDecoderLayer, CohereForCausalLM, CohereLayerNorm, CohereModel
from ..models.cohere2 import Cohere2Attention, Cohere2DecoderLayer, Cohere2Model
from ..models.decoder import DecoderModel
from ..models.deepseek_v3 import DeepseekV3MoE, DeepseekV3Router, FloatRouter
from ..models.dots1 import Dots1DecoderLayer, Dots1Model
from ..models.ernie4_5 import Ernie4_5Attention, Ernie4_5DecoderLayer, Ernie4_5Model
from ..models.ernie4_5_moe import Ernie4_5_MoeDecoderLayer, Ernie4_5_MoeModel, Ernie4_5_MoeSparseMoeBlock
from ..models.exaone4 import Exaone4Attention, Exaone4DecoderLayer, Exaone4Model
from ..models.falcon import FalconAttention, FalconDecoderLayer, FalconLinear, FalconMLP, FalconModel
from ..models.gemma import (
    Gemma2Attention,
    Gemma2DecoderLayer,
    GemmaDecoderLayer,
    GemmaModel,
    Gemma2ForCausalLM,
    Gemma2MLP,
    Gemma2Model,
    GemmaRMSNorm,
    GemmaScaledEmbedding,
)
from ..models.glm import Glm4DecoderLayer, GlmAttention, GlmDecoderLayer, GlmModel
from ..models.glm4_moe import Glm4MoeAttention, Glm4MoeDecoderLayer
from ..models.gpt_neox import GPTNeoXAttention, GPTNeoXLayer, GPTNeoXMLP, GPTNeoXModel
from ..models.gpt2 import GPT2Attention, GPT2Block, GPT2LMHeadModel, GPT2MLP, GPT2Model
from ..models.gpt_oss import GptOssAttention, GptOssDecoderLayer, GptOssExperts, GptOssMLP, GptOssModel
from ..models.gpt_bigcode import GPTBigCodeAttention, GPTBigCodeBlock, GPTBigCodeModel
from ..models.gpt_neo import GPTNeoAttention, GPTNeoBlock, GPTNeoMLP, GPTNeoModel
from ..models.gptj import GPTJAttention, GPTJBlock, GPTJMLP, GPTJModel
from ..models.granite import GraniteAttention, GraniteDecoderLayer, GraniteForCausalLM, GraniteModel, ScaledEmbeddings
from ..models.granitemoe import (
    GraniteMoeDecoderLayer,
    GraniteMoeModel,
    GraniteMoeMoE,
    GraniteMoeRouter,
    GraniteMoeSharedDecoderLayer,
    GraniteMoeSharedMLP,
    GraniteMoeSharedModel,
    StackedExperts,
)
from ..models.heads import CausalLM
from ..models.helium import HeliumAttention, HeliumDecoderLayer, HeliumModel
from ..models.hunyuan_v1_dense import HunYuanDenseV1Attention, HunYuanDenseV1DecoderLayer, HunYuanDenseV1Model
from ..models.hunyuan_v1_moe import HunYuanMoEV1DecoderLayer, HunYuanMoEV1Gate, HunYuanMoEV1Model, HunYuanMoEV1Moe
from ..models.layers import ACTIVATIONS, RMSNorm, alibi_slopes
from ..models.llama import LlamaAttention, LlamaDecoderLayer, LlamaMLP, LlamaModel
from ..models.ministral import MinistralDecoderLayer, MinistralModel
from ..models.ministral3 import Ministral3Attention, Ministral3DecoderLayer, Ministral3Model
from ..models.mixtral import (
    ExpertLinear,
    MixtralDecoderLayer,
    MixtralExpert,
    MixtralModel,
    MixtralSparseMoeBlock,
    MoeCausalLM,
    Router,
    SparseMoeBlock,
)
from ..models.nemotron import NemotronAttention, NemotronDecoderLayer, NemotronLayerNorm1P, NemotronMLP, NemotronModel
from ..models.olmo import OlmoAttention, OlmoDecoderLayer, OlmoLayerNorm, OlmoModel
from ..models.olmo2 import Olmo2Attention, Olmo2DecoderLayer, Olmo2Model, Olmo2RMSNorm
from ..models.olmoe import OlmoeAttention, OlmoeDecoderLayer
from ..models.olmo3 import Olmo3DecoderLayer, Olmo3Model
from ..models.opt import POSITION_OFFSET, OPTAttention, OPTDecoderLayer, OPTModel
from ..models.decoder import SlidingLayersDecoder, positions_of_real_tokens
from ..models.phi import PhiAttention, PhiDecoderLayer, PhiMLP, PhiModel
from ..models.phi3 import Phi3Attention, Phi3DecoderLayer, Phi3MLP, Phi3Model
from ..models.phimoe import PhimoeDecoderLayer, PhimoeModel, PhimoeSparseMoeBlock
from ..models.qwen2_moe import Qwen2MoeDecoderLayer, Qwen2MoeSparseMoeBlock
from ..models.qwen3 import Qwen3Attention, Qwen3DecoderLayer
from ..models.smollm3 import SmolLM3Attention, SmolLM3DecoderLayer, SmolLM3Model
from ..models.qwen3_moe import Qwen3MoeDecoderLayer, Qwen3MoeMLP, Qwen3MoeSparseMoeBlock
from ..models.seed_oss import SeedOssAttention, SeedOssDecoderLayer, SeedOssModel
from ..models.stablelm import LayerNormPerHead, StableLmAttention, StableLmDecoderLayer, StableLmModel
from ..models.starcoder2 import Starcoder2DecoderLayer, Starcoder2MLP, Starcoder2Model
from ..models.vaultgemma import VaultGemmaDecoderLayer, VaultGemmaModel
from . import library
from .linear import KERNEL_WEIGHTS, Linear, PackedExperts

KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # activation dtypes decode.cpp takes
BATCH_ROWS = 32  # the most sequences decode_batch steps at once; larger batches take the layers
# The most tokens that one call of decode_prompt takes (a batch's prompts together), by the layers' weight dtype
# (int4: uint8); longer prompts take the layers, whose products are one matmul each (float weights) where the step's
# tiles fall behind on many rows. SmolLM2 at two threads, a forward of T tokens against the layers' (best of 4-5,
# benchmarks/prompt.py), since a float32 cache's prompts attend in blocks (decode.cpp's attend_in_blocks): float32
# 2.0x at 16 tokens, 1.4x at 64, 1.10x at 256, 0.98x at 384; int8 1.56x, 1.37x, 1.15x at 256 and 512, 1.04-1.14x at
# 768-1024 (int4 alike). bfloat16 caches attend a row at a time: 1.67x, 1.34x, 1.11x at 96, 0.95x at 128.
PROMPT_ROWS = {torch.float32: 256, torch.bfloat16: 96, torch.int8: 512, torch.uint8: 512}

# Every config field, with the values the step implements...
IMPLEMENTED = {
    "model_type": lambda value: value in ("llama", "mistral", "qwen2", "qwen3"),
    "hidden_act": lambda value: value == "silu",
    # The step rotates by the tables of the model's rotary modules (their attention factor, YaRN's, in cos and sin).
    # Dynamic NTK's tables follow each call's length (layers.RotaryEmbedding.follow_length) before the step reads them.
    "rope_scaling": lambda value: value is None or value.get("rope_type") in ("default", "linear", "llama3", "yarn",
                                                                              "dynamic"),
    "attention_bias": lambda value: not value,  # Llama's q/k/v/o biases: not read for Llama (Seed-OSS's are)
    "qkv_bias": lambda value: True,  # Qwen2's q/k/v biases
    "mlp_bias": lambda value: not value,
    "sliding_window": lambda value: True,  # None, or one window for every layer
}
# Gemma 3's text decoder, beside the fields that change nothing for Llama either (ARITHMETIC_FREE); also under the
# image-and-text config's model_type "gemma3" (a Gemma3Config made in Python rather than read from a folder, which gives
# its text_config: the same fields, the text decoder's network).
GEMMA3_IMPLEMENTED = {
    "model_type": lambda value: value in ("gemma3_text", "gemma3"),
    "hidden_activation": lambda value: value in ("gelu_pytorch_tanh", "gelu_new"),  # the tanh form
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: not value,
    "attention_dropout": lambda value: not value,
    "final_logit_softcapping": lambda value: True,  # applied after the head's product (next_token_logits)
    "attn_logit_softcapping": lambda value: True,  # never applied by Gemma 3 (Gemma3TextConfig.caps_attention)
    "use_bidirectional_attention": lambda value: not value,
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
    "query_pre_attn_scalar": lambda value: True,  # the queries' factor (set_family)
    "rope_local_base_freq": lambda value: True,  # the sliding layers' tables, read from their rotary module
}
# Gemma 2: Gemma 3's layers without q/k norms, all rotated by one table, and its attention scores soft-capped
# (set_family's attention cap).
GEMMA2_IMPLEMENTED = {
    **{name: check for name, check in GEMMA3_IMPLEMENTED.items() if name != "rope_local_base_freq"},
    "model_type": lambda value: value == "gemma2",
    "attn_logit_softcapping": lambda value: True,
}
# VaultGemma: Gemma 2's layers without the norms after each branch (the first Gemma's layer shape, set_family without
# sandwich norms), with Gemma 2's windows and soft-caps.
VAULTGEMMA_IMPLEMENTED = {
    **{name: check for name, check in GEMMA2_IMPLEMENTED.items() if name != "use_bidirectional_attention"},
    "model_type": lambda value: value == "vaultgemma",
}
# Gemma: Gemma 2's parts in Llama's layers (set_family without sandwich norms), no window and no soft-cap.
GEMMA_IMPLEMENTED = {
    "model_type": lambda value: value == "gemma",
    "hidden_act": GEMMA3_IMPLEMENTED["hidden_activation"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: not value,
    "mlp_bias": lambda value: not value,
    "attention_dropout": lambda value: not value,
    "use_bidirectional_attention": lambda value: not value,
    "sliding_window": lambda value: value is None,
}
# SmolLM3: Llama's layers, those no_rope_layers marks 0 without rotary positions (StepWeights.set_unrotated). Its
# config refuses the sliding window that use_sliding_window would put on them.
SMOLLM3_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "smollm3",
    "attention_dropout": lambda value: not value,
    "no_rope_layers": lambda value: True,  # read from the layers
    "no_rope_layer_interval": lambda value: True,
    "use_sliding_window": lambda value: not value,
    "sliding_window": lambda value: True,  # applies only with use_sliding_window
}
# Phi-3 and Phi-4: Llama's arithmetic on fused q/k/v and gate/up weights (decode.cpp's StepWeights.set_fused), with
# rotary tables over a head's leading dimensions only (partial_rotary_factor: their width) and longrope's long
# tables past original_max_position_embeddings (DecodeStep.run picks them as RotaryEmbedding.forward does).
PHI3_IMPLEMENTED = {
    "model_type": lambda value: value == "phi3",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": lambda value: IMPLEMENTED["rope_scaling"](value) or value.get("rope_type") == "longrope",
    "resid_pdrop": lambda value: not value,
    "attention_dropout": lambda value: not value,
    "embd_pdrop": lambda value: True,  # applied by neither this model nor the reference's
    "partial_rotary_factor": lambda value: True,
    "original_max_position_embeddings": lambda value: True,
    "sliding_window": lambda value: True,  # None, or one window for every layer
}
# OLMo 2: Llama's fields, its norms after each branch instead of before (set_family's sandwich norms without the
# inputs' norms) and over all the queries and all the keys at once (decode.cpp's Layer::whole_qk_norms).
OLMO2_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "olmo2",
    "attention_dropout": lambda value: not value,
}
# OLMo 3: OLMo 2's layers, with Gemma's per-layer windows (set_family's sliding flags) and the sliding layers' own
# rotary tables (Layer::local), read from local_rotary_emb.
OLMO3_IMPLEMENTED = {
    **OLMO2_IMPLEMENTED,
    "model_type": lambda value: value == "olmo3",
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
    "sliding_rope_theta": lambda value: True,
}
# Ministral: Mistral's layers with Gemma's per-layer windows (set_family's sliding flags), every layer rotated by the
# same tables.
MINISTRAL_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "ministral",
    "attention_dropout": lambda value: not value,
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
}
# Ministral 3: Mistral's layers and YaRN tables, its queries multiplied by 1 + llama_4_scaling_beta * ln(1 + floor(p /
# original_max_position_embeddings)) after the rotation, which is exactly 1 before that context: the step takes the
# positions there (DecodeStep._plain_positions), the layers those past it.
MINISTRAL3_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "ministral3",
    "rope_scaling": lambda value: value is not None and value.get("rope_type") == "yarn",
    "attention_dropout": lambda value: not value,
}
MOST_CHOSEN_EXPERTS = 64  # decode.cpp's kMostChosenExperts
# Mixtral and Qwen3-MoE: Mistral's and Qwen3's layers with a sparse mixture of SwiGLU experts in place of the MLP
# (decode.cpp's StepWeights.set_experts): the router's picks and the chosen experts' products run in the step.
MIXTURE_FIELDS = {
    **IMPLEMENTED,
    "num_experts_per_tok": lambda value: value <= MOST_CHOSEN_EXPERTS,
    "output_router_logits": lambda value: True,  # a forward that records router scores leaves the step to the layers
    "router_aux_loss_coef": lambda value: True,  # the training loss's
}
MIXTRAL_IMPLEMENTED = {
    **MIXTURE_FIELDS,
    "model_type": lambda value: value == "mixtral",
    "num_local_experts": lambda value: True,
    "router_jitter_noise": lambda value: True,  # drawn only while training: DecodeStep.run leaves that to the layers
}
QWEN3_MOE_IMPLEMENTED = {
    **MIXTURE_FIELDS,
    "model_type": lambda value: value == "qwen3_moe",
    "num_experts": lambda value: True,
    "moe_intermediate_size": lambda value: True,
    "decoder_sparse_step": lambda value: True,  # which layers are sparse: read from the layers
    "mlp_only_layers": lambda value: True,
    "norm_topk_prob": lambda value: True,
}
# OLMoE: Qwen3-MoE's mixture in every layer, OLMo 2's q/k norms over all heads and OLMo's clamp of q, k and v.
OLMOE_IMPLEMENTED = {
    **{name: check for name, check in QWEN3_MOE_IMPLEMENTED.items()
       if name not in ("moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers")},
    "model_type": lambda value: value == "olmoe",
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
    "clip_qkv": lambda value: True,
}
# Qwen2-MoE: Qwen3-MoE's mixture in Qwen2's layers (q/k/v biases), each sparse layer's shared expert run beside its
# experts (StepWeights.set_shared_experts).
QWEN2_MOE_IMPLEMENTED = {
    **QWEN3_MOE_IMPLEMENTED,
    "model_type": lambda value: value == "qwen2_moe",
    "shared_expert_intermediate_size": lambda value: True,
    "attention_dropout": lambda value: not value,
}
# StarCoder2: LayerNorms with biases (StepWeights.set_norm_biases), a bias on every projection with use_bias, an MLP
# without a gate (an empty gate weight) and GELU's tanh form. Its dropouts draw only while training: DecodeStep.run
# leaves a training decoder's steps to its layers.
STARCODER2_IMPLEMENTED = {
    "model_type": lambda value: value == "starcoder2",
    "hidden_act": lambda value: value in ("gelu_pytorch_tanh", "gelu_new"),  # the tanh form
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "use_bias": lambda value: True,
    "norm_epsilon": lambda value: True,  # read from the norms
    "sliding_window": lambda value: True,  # None, or one window for every layer
    "embedding_dropout": lambda value: True,
    "attention_dropout": lambda value: True,
    "residual_dropout": lambda value: True,
}
# Granite: Llama's fields and its four scalars (set_family's embedding scale and queries' factor, set_residual_scale,
# and the logits' divisor applied after the head's product, next_token_logits).
GRANITE_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "granite",
    "attention_dropout": lambda value: not value,
    **dict.fromkeys(("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"),
                    lambda value: True),
}
# ERNIE 4.5: Llama's layers turning interleaved pairs (StepWeights.set_interleaved), in float32 as the step always
# rotates, and with use_bias a bias on every projection (StarCoder2's, read by _gather).
ERNIE4_5_IMPLEMENTED = {
    "model_type": lambda value: value == "ernie4_5",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "use_bias": lambda value: True,
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# GLM: Qwen2's q/k/v biases, Phi-3's fused gate/up (set_fused without fused q/k/v) and partial rotary tables, the
# pairs turned interleaved (set_interleaved); GLM-4-0414 adds a plain RMSNorm after each branch (set_family's
# sandwich norms, no offset).
GLM_IMPLEMENTED = {
    "model_type": lambda value: value == "glm",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: True,  # on q, k and v only
    "attention_dropout": lambda value: not value,
    "partial_rotary_factor": lambda value: True,  # the rotary tables' width
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
GLM4_IMPLEMENTED = {**GLM_IMPLEMENTED, "model_type": lambda value: value == "glm4"}
# Seed-OSS: Llama's layers with biases on q, k and v (attention_bias), on o (attention_out_bias) and the MLP's
# (mlp_bias), read as StarCoder2's biases are. Its dropouts (0.1 by default) draw only while training, as
# StarCoder2's: DecodeStep.run leaves a training decoder's steps to its layers.
SEED_OSS_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "seed_oss",
    **dict.fromkeys(("attention_bias", "attention_out_bias", "mlp_bias", "attention_dropout", "residual_dropout"),
                    lambda value: True),
}
# Helium: Llama's layers rotating interleaved pairs (2i, 2i + 1) by the same tables (StepWeights.set_interleaved),
# with biases on q, k and v only (attention_bias) and on the MLP's projections (mlp_bias).
HELIUM_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "helium",
    "attention_bias": lambda value: True,
    "mlp_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
}
# InternLM3: Llama's layers under Llama's classes, with its qkv_bias and bias a bias on every projection (read as
# Seed-OSS's are, by _gather): Helium's fields (whose interleaved pairs are its decoder's, not its config's).
INTERNLM3_IMPLEMENTED = {**HELIUM_IMPLEMENTED, "model_type": lambda value: value == "internlm3"}
# Hunyuan dense: Qwen3's per-head q/k norms, run after the rotation (StepWeights.set_norms_after_rotation), biases on
# q, k, v and o (attention_bias), and the base stretched by rope_scaling's alpha ("dynamic", which its config takes only
# with an alpha), which is in the rotary tables the step reads.
HUNYUAN_DENSE_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "hunyuan_v1_dense",
    "rope_scaling": lambda value: IMPLEMENTED["rope_scaling"](value) or (value.get("rope_type") == "dynamic"
                                                                          and value.get("alpha") is not None),
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
    "eod_token_id": lambda value: True,
}
# EXAONE 4.0: OLMo 2's norms after each branch with Qwen3's per-head q/k norms, and with a window Gemma's per-layer
# windows (set_family's sliding flags), its full layers unrotated (set_unrotated); without one, Llama's attention.
EXAONE4_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "exaone4",
    "attention_dropout": lambda value: not value,
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "sliding_window_pattern": lambda value: True,  # read into layer_types
    "layer_types": lambda value: True,
}
# EXAONE 3.0/3.5: Llama's layers (its checkpoints' other names are renamed at load).
EXAONE_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "exaone",
    "attention_dropout": lambda value: not value,
}
# GPT-NeoX and Pythia: StarCoder2's LayerNorms with biases (set_norm_biases) and MLP without a gate, GELU in its
# exact form ("gelu": set_exact_gelu) or tanh's, biases on every projection, rotary tables over a head's leading
# dimensions (partial_rotary_factor), the fused q/k/v laid out head by head (set_qkv_per_head: read in place), and with
# use_parallel_residual both branches reading the layer's input, each through its own norm (set_parallel). Its
# dropouts draw only while training: DecodeStep.run leaves a training decoder's steps to its layers.
GPT_NEOX_IMPLEMENTED = {
    "model_type": lambda value: value == "gpt_neox",
    "hidden_act": lambda value: value in ("gelu", "gelu_new", "gelu_pytorch_tanh"),
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "partial_rotary_factor": lambda value: True,  # the rotary tables' width
    "attention_bias": lambda value: True,
    "use_parallel_residual": lambda value: True,
    "layer_norm_eps": lambda value: True,  # read from the norms
    "attention_dropout": lambda value: True,
    "hidden_dropout": lambda value: True,
    "classifier_dropout": lambda value: True,  # the sequence classifier's
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# GPT-2: learned absolute positions added to the token's embedding (StepWeights.set_positions), every layer unrotated
# (set_unrotated), LayerNorms with biases (set_norm_biases), a bias on every projection, the fused c_attn (q, k and v
# rows in turn) read as Phi-3's fused q/k/v (set_fused), an MLP without a gate and GELU's tanh form;
# scale_attn_by_inverse_layer_idx's further 1 / (layer + 1) on each layer's scores is set_layer_attention_scales', and
# reorder_and_upcast_attn's float32 scores are the step's own. The checkpoints'
# Conv1D weights are transposed once as they load (models/gpt2.py), so the step reads the layers' own (out, in)
# weights. Its dropouts draw only while training: DecodeStep.run leaves a training decoder's steps to its layers.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")
GPT2_IMPLEMENTED = {
    "model_type": lambda value: value == "gpt2",
    "activation_function": lambda value: value in TANH_GELUS,
    "scale_attn_weights": lambda value: True,  # False: the scores unscaled (set_family's queries' factor)
    "scale_attn_by_inverse_layer_idx": lambda value: True,  # 1 / (layer + 1) (set_layer_attention_scales)
    "reorder_and_upcast_attn": lambda value: True,  # the scores in float32: the step's always are
    "add_cross_attention": lambda value: not value,
    # sizes under GPT-2's names, dropouts, the norms' epsilon (read from them) and the double heads' summary
    **dict.fromkeys(("n_positions", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon", "resid_pdrop",
                     "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj", "summary_activation",
                     "summary_proj_to_labels", "summary_first_dropout"), lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# GPT-BigCode: GPT-2's layers with multi-query attention (one key/value head, c_attn's rows every query head, then the
# key, then the value: Phi-3's fused layout); without multi_query each head's q, k and v follow one another, which the
# step does not read. scale_attn_weights=False leaves the scores unscaled (set_family's queries' factor).
GPT_BIGCODE_IMPLEMENTED = {
    **{name: check for name, check in GPT2_IMPLEMENTED.items() if not name.startswith(("summary", "scale_attn_by",
                                                                                        "reorder"))},
    "model_type": lambda value: value == "gpt_bigcode",
    "multi_query": lambda value: value,
    "attention_softmax_in_fp32": lambda value: True,  # every softmax is in float32, the step's too
    "scale_attention_softmax_in_fp32": lambda value: True,
}
# OPT: GPT-2's step with q, k, v and out_proj apart, ReLU (StepWeights.set_relu) and positions read past the table's
# first POSITION_OFFSET rows; LayerNorms before attention and the MLP (do_layer_norm_before: opt-350m's after each
# residual sum, and its projected embeddings, word_embed_proj_dim, are refused; see `refusal`).
OPT_IMPLEMENTED = {
    "model_type": lambda value: value == "opt",
    "activation_function": lambda value: value in TANH_GELUS + ("relu",),
    "do_layer_norm_before": lambda value: value,
    "layer_norm_elementwise_affine": lambda value: value,
    "word_embed_proj_dim": lambda value: True,  # checked against hidden_size by `refusal`
    **dict.fromkeys(("ffn_dim", "enable_bias", "dropout", "attention_dropout", "layerdrop", "init_std"),
                    lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# GPT-Neo: GPT-2's step with q, k and v apart (no biases), scores left unscaled (set_family's queries' factor) and its
# "local" layers attending within window_size (set_family's sliding flags).
GPT_NEO_IMPLEMENTED = {
    "model_type": lambda value: value == "gpt_neo",
    "activation_function": lambda value: value in TANH_GELUS,
    **dict.fromkeys(("num_layers", "num_heads", "attention_types", "attention_layers", "window_size",
                     "layer_norm_epsilon", "resid_dropout", "embed_dropout", "attention_dropout", "classifier_dropout"),
                    lambda value: True),
    "sliding_window": lambda value: True,  # window_size, on the layers attention_layers marks "local"
}
# The activations of MLPs without a gate (Nemotron's and Arcee's `act`, by its function), as the kinds of decode.cpp's
# StepWeights.set_activation: SiLU, GELU's tanh form, the squared ReLU; xIELU (Apertus's module) is kind 3.
ACTIVATION_KINDS = {ACTIVATIONS["silu"]: 0, ACTIVATIONS["gelu_pytorch_tanh"]: 1, ACTIVATIONS["gelu_new"]: 1,
                    ACTIVATIONS["relu2"]: 2}
XIELU_KIND = 3
# Arcee: Llama's layers with an MLP without a gate (up, the squared ReLU, down: set_activation), and with
# attention_bias and mlp_bias a bias on every projection (StarCoder2's, read by _gather).
UNGATED_ACTIVATIONS = ("relu2", "silu", "gelu_pytorch_tanh", "gelu_new")
ARCEE_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "arcee",
    "hidden_act": lambda value: value in UNGATED_ACTIVATIONS,
    "attention_bias": lambda value: True,
    "mlp_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
}
# Nemotron: Arcee's MLP and biases with LayerNorms of 1 + w with biases (set_family's norm offset, set_norm_biases)
# and rotary tables over a head's leading partial_rotary_factor (Phi-3's partial rotation).
NEMOTRON_IMPLEMENTED = {
    **{name: check for name, check in ARCEE_IMPLEMENTED.items() if name not in ("qkv_bias", "sliding_window")},
    "model_type": lambda value: value == "nemotron",
    "norm_eps": lambda value: True,  # read from the norms
    "partial_rotary_factor": lambda value: True,  # the rotary tables' width
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# Apertus: Qwen3's per-head q/k norms, biases on q, k, v and o with attention_bias, and an MLP without a gate over
# xIELU, whose learned values StepWeights.set_activation reads from each layer's module.
APERTUS_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "apertus",
    "hidden_act": lambda value: value == "xielu",
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
}
# OLMo: Llama's layers with LayerNorms without parameters (read as weights of ones and biases of zeros,
# set_norm_biases) and, with clip_qkv, q, k and v clamped after their projections (StepWeights.set_clip_qkv).
OLMO_IMPLEMENTED = {
    **IMPLEMENTED,
    "model_type": lambda value: value == "olmo",
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
    "clip_qkv": lambda value: True,
}
# Granite MoE: Granite's scalars and layers with a mixture in place of the MLP, its experts held as 3-D banks (read as
# views of each expert's rows) and weighted by the softmax of the chosen ones' scores alone, which is Mixtral's
# renormalized softmax; Granite MoE shared adds a shared MLP (gate and up fused, set_fused) without a gate.
GRANITEMOE_IMPLEMENTED = {
    **MIXTURE_FIELDS,
    **GRANITE_IMPLEMENTED,
    "model_type": lambda value: value == "granitemoe",
    "num_local_experts": lambda value: True,
}
GRANITEMOE_SHARED_IMPLEMENTED = {
    **GRANITEMOE_IMPLEMENTED,
    "model_type": lambda value: value == "granitemoeshared",
    "shared_intermediate_size": lambda value: True,  # 0: no shared MLP
}
# ERNIE 4.5 MoE: ERNIE 4.5's layers, its sparse ones' experts chosen by probability plus a correction bias, their sum
# clamped below at moe_norm_min (set_expert_choice), and shared experts run beside them without a gate; dense leading
# layers (which layers are sparse is read from the layers). Its multi-token prediction layers are not loaded.
ERNIE4_5_MOE_IMPLEMENTED = {
    **ERNIE4_5_IMPLEMENTED,
    "model_type": lambda value: value == "ernie4_5_moe",
    "moe_k": MIXTURE_FIELDS["num_experts_per_tok"],
    "output_router_logits": MIXTURE_FIELDS["output_router_logits"],
    "router_aux_loss_coef": lambda value: True,
    **dict.fromkeys(("moe_num_experts", "moe_intermediate_size", "moe_layer_start_index", "moe_layer_end_index",
                     "moe_layer_interval", "moe_num_shared_experts", "moe_norm_min", "num_nextn_predict_layers"),
                    lambda value: True),
}
# Hunyuan-MoE: Hunyuan dense's layers, every one a mixture (Mixtral's routing) with a shared MLP beside it without a
# gate; one moe_topk for every layer.
HUNYUAN_MOE_IMPLEMENTED = {
    **HUNYUAN_DENSE_IMPLEMENTED,
    "model_type": lambda value: value == "hunyuan_v1_moe",
    # one count for every layer (set_experts takes one): a list of different ones is refused
    "moe_topk": lambda value: len(set(value)) == 1 and value[0] <= MOST_CHOSEN_EXPERTS
    if isinstance(value, (list, tuple)) else value <= MOST_CHOSEN_EXPERTS,
    "num_experts": lambda value: True,
    "output_router_logits": MIXTURE_FIELDS["output_router_logits"],
}
# GLM-4.5 (glm4_moe): GLM's q/k/v biases and partial rotary tables, the rotated part turned in halves, with use_qk_norm
# Qwen3's per-head q/k norms; the first first_k_dense_replace layers dense, the others DeepSeek-V3's mixture: the
# experts scored by the sigmoid, chosen by score plus correction bias within the topk_group best of n_group groups (a
# group ranked by its two best), weighted by the scores, renormalized with norm_topk_prob, times routed_scaling_factor
# (set_expert_choice's corrections, set_expert_groups), and shared experts without a gate. Its multi-token prediction
# layers are not loaded. dots.llm1 (dots1): Qwen3's attention with the same mixture, sliding layers by layer_types.
DEEPSEEK_V3_MIXTURE = {
    "num_experts_per_tok": MIXTURE_FIELDS["num_experts_per_tok"],
    "output_router_logits": MIXTURE_FIELDS["output_router_logits"],
    **dict.fromkeys(("n_routed_experts", "n_shared_experts", "moe_intermediate_size", "first_k_dense_replace",
                     "norm_topk_prob", "routed_scaling_factor", "n_group", "topk_group"), lambda value: True),
}
GLM4_MOE_IMPLEMENTED = {
    **GLM_IMPLEMENTED,
    **DEEPSEEK_V3_MIXTURE,
    "model_type": lambda value: value == "glm4_moe",
    "use_qk_norm": lambda value: True,
    "num_nextn_predict_layers": lambda value: True,
}
DOTS1_IMPLEMENTED = {
    **DEEPSEEK_V3_MIXTURE,
    "model_type": lambda value: value == "dots1",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: True,  # on q, k, v and o
    "attention_dropout": lambda value: not value,
    "mlp_bias": lambda value: True,  # (read by neither the model nor the reference)
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
}
# gpt-oss: Ministral's per-layer windows and Llama's q/k/v/o biases, a sink per head in each softmax (set_sinks), and in
# every layer a mixture: a router with a bias whose best scores are softmaxed (the renormalized softmax of the chosen
# experts, Granite MoE's), experts with biases, their gate and up rows alternating, over the clamped SwiGLU
# (set_expert_layout, set_clamped_swiglu).
GPT_OSS_IMPLEMENTED = {
    **MIXTURE_FIELDS,
    "model_type": lambda value: value == "gpt_oss",
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
    "num_local_experts": lambda value: True,
    "swiglu_alpha": lambda value: True,
    "swiglu_limit": lambda value: True,
}
# PhiMoE: Mixtral's layers with LayerNorms with biases (set_norm_biases), biases on q, k, v and o and on the head
# (set_head_bias), Phi-3's longrope, and the sparsemixer's routing at inference (set_sparsemixer): two picks, each the
# best expert left weighted by the softmax over those left within a relative 2 * router_jitter_noise of it.
PHIMOE_IMPLEMENTED = {
    **MIXTRAL_IMPLEMENTED,
    "model_type": lambda value: value == "phimoe",
    "rope_scaling": PHI3_IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: True,
    "attention_dropout": lambda value: not value,
    "lm_head_bias": lambda value: True,
    "num_experts_per_tok": lambda value: value == 2,  # (the sparsemixer's two picks)
    "router_jitter_noise": lambda value: True,  # the sparsemixer's eps; its draws only while training
    "input_jitter_noise": lambda value: True,  # drawn only while training: DecodeStep.run leaves that to the layers
}
# Phi-1, 1.5 and 2: one LayerNorm with a bias read by both branches (set_parallel, the two norms one tensor), biases on
# every projection, GELU without a gate (its exact form, "gelu": set_exact_gelu, or tanh's), rotary tables over a
# head's leading dimensions, and the head's bias (set_head_bias); with qk_layernorm each head's queries and keys
# LayerNormed (with a bias, one weight every head shares) before the rotation. Its dropouts draw only while training: DecodeStep.run leaves a training decoder's steps to its layers.
PHI_IMPLEMENTED = {
    "model_type": lambda value: value == "phi",
    "hidden_act": GPT_NEOX_IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "partial_rotary_factor": lambda value: True,  # the rotary tables' width
    "qk_layernorm": lambda value: True,  # q/k norms read with the layer's norms (_layer_norms)
    "layer_norm_eps": lambda value: True,  # read from the norms
    **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attention_dropout"), lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# Cohere: Llama's attention and MLP as parallel branches after one LayerNorm without a bias (set_parallel,
# set_centred_norms), turning interleaved pairs (set_interleaved), its logits multiplied by logit_scale after the head
# (next_token_logits); Command R+'s use_qk_norm LayerNorms each head's queries and keys by a weight row of its own
# (StepWeights.set_qk_norms_per_head). Cohere 2: Gemma's per-layer
# windows (set_family's sliding flags), its full layers unrotated (set_unrotated).
COHERE_IMPLEMENTED = {
    "model_type": lambda value: value == "cohere",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "attention_bias": lambda value: True,  # on every projection of attention
    "attention_dropout": lambda value: not value,
    "use_qk_norm": lambda value: True,
    "layer_norm_eps": lambda value: True,  # read from the norms
    "logit_scale": lambda value: True,
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
COHERE2_IMPLEMENTED = {
    **{name: check for name, check in COHERE_IMPLEMENTED.items() if name != "use_qk_norm"},
    "model_type": lambda value: value == "cohere2",
    "sliding_window": lambda value: True,  # on the layers layer_types marks as sliding
    "layer_types": lambda value: True,
}
# GPT-J: Phi's parallel branches under GPT-2's names, q, k, v and o without biases, the MLP's and the head's with
# them, turning interleaved pairs of a head's leading rotary_dim dimensions. CodeGen: GPT-J's layers with one fused
# q/k/v in blocks of a quarter of the heads, each block's queries, values and keys (set_qkv_blocks, read in place).
GPTJ_IMPLEMENTED = {
    "model_type": lambda value: value == "gptj",
    "activation_function": GPT_NEOX_IMPLEMENTED["hidden_act"],
    "rotary_dim": lambda value: True,  # the rotary tables' width
    "n_positions": lambda value: True,
    **dict.fromkeys(("n_embd", "n_layer", "n_head", "n_inner"), lambda value: True),  # sizes
    "layer_norm_epsilon": lambda value: True,  # read from the norms
    **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
CODEGEN_IMPLEMENTED = {**GPTJ_IMPLEMENTED, "model_type": lambda value: value == "codegen", "n_ctx": lambda value: True}
# StableLM: Llama's layers with LayerNorms with biases (set_norm_biases), q/k/v biases with use_qkv_bias, rotary
# tables over a head's leading dimensions, and with use_parallel_residual both branches reading the one norm's output
# (set_parallel). StableLM 2 12B's qk_layernorm LayerNorms each head's queries and keys without a bias, by a weight of
# its own for each head (StepWeights.set_qk_norms_per_head; their biases zeros to set_norm_biases).
STABLELM_IMPLEMENTED = {
    "model_type": lambda value: value == "stablelm",
    "hidden_act": IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    "partial_rotary_factor": lambda value: True,  # the rotary tables' width
    "use_qkv_bias": lambda value: True,
    "qk_layernorm": lambda value: True,
    "use_parallel_residual": lambda value: True,
    "layer_norm_eps": lambda value: True,  # read from the norms
    **dict.fromkeys(("hidden_dropout", "attention_dropout"), lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# BLOOM: GPT-NeoX's LayerNorms with biases, biases on every projection, MLP without a gate and fused q/k/v read head by
# head (set_qkv_per_head), every layer unrotated (set_unrotated) with ALiBi's biases on the attention scores instead
# (StepWeights.set_alibi), the embeddings' LayerNorm (set_embedding_norm, where the step embeds a token itself) and
# GELU's tanh form (bloom_gelu's). Its residuals after the norms (apply_residual_connection_post_layernorm) and
# slow_but_exact's sliced output products, which drop their bias, the step does not run. Its dropouts draw only while
# training: DecodeStep.run leaves a training decoder's steps to its layers.
BLOOM_IMPLEMENTED = {
    "model_type": lambda value: value == "bloom",
    "apply_residual_connection_post_layernorm": lambda value: not value,
    "slow_but_exact": lambda value: not value,
    "pretraining_tp": lambda value: True,  # (read only with slow_but_exact)
    **dict.fromkeys(("n_layer", "n_head", "layer_norm_epsilon", "hidden_dropout", "attention_dropout"),
                    lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# Falcon: LayerNorms with biases, its fused q/k/v read as Phi-3's (every query head, then the one key and value head:
# multi_query, set_fused) or in place a key/value head at a time (set_qkv_per_head: Falcon-RW's each head's query, key
# and value; the new decoder architecture's each group's query heads, then its key and value, Falcon-40B's and 180B's),
# attention and MLP in parallel after one norm or two (parallel_attn, num_ln_in_parallel_attn: set_parallel) or one
# after the other, GELU exact or tanh, biases with `bias`, and rotary positions or ALiBi's (`alibi`: set_alibi, the
# slopes' products rounded to bfloat16 and divided by sqrt(head_dim) as its reference takes them).
FALCON_IMPLEMENTED = {
    "model_type": lambda value: value == "falcon",
    "activation": GPT_NEOX_IMPLEMENTED["hidden_act"],
    "rope_scaling": IMPLEMENTED["rope_scaling"],
    **dict.fromkeys(("alibi", "new_decoder_architecture", "multi_query", "parallel_attn", "bias",
                     "num_ln_in_parallel_attn", "num_kv_heads", "ffn_hidden_size", "layer_norm_epsilon",
                     "hidden_dropout", "attention_dropout"), lambda value: True),
    "sliding_window": lambda value: value is None,  # (not a field of the family's: read as absent)
}
# model_type -> what the step implements, where not IMPLEMENTED
FAMILIES = {"gemma": GEMMA_IMPLEMENTED, "gemma2": GEMMA2_IMPLEMENTED, "gemma3_text": GEMMA3_IMPLEMENTED, "gemma3": GEMMA3_IMPLEMENTED,
            "vaultgemma": VAULTGEMMA_IMPLEMENTED,
            "olmo2": OLMO2_IMPLEMENTED, "olmo3": OLMO3_IMPLEMENTED, "smollm3": SMOLLM3_IMPLEMENTED,
            "ministral": MINISTRAL_IMPLEMENTED, "ministral3": MINISTRAL3_IMPLEMENTED, "internlm3": INTERNLM3_IMPLEMENTED,
            "seed_oss": SEED_OSS_IMPLEMENTED, "helium": HELIUM_IMPLEMENTED,
            "hunyuan_v1_dense": HUNYUAN_DENSE_IMPLEMENTED, "exaone4": EXAONE4_IMPLEMENTED, "exaone": EXAONE_IMPLEMENTED,
            "phi3": PHI3_IMPLEMENTED, "mixtral": MIXTRAL_IMPLEMENTED, "qwen3_moe": QWEN3_MOE_IMPLEMENTED,
            "qwen2_moe": QWEN2_MOE_IMPLEMENTED, "starcoder2": STARCODER2_IMPLEMENTED, "granite": GRANITE_IMPLEMENTED,
            "ernie4_5": ERNIE4_5_IMPLEMENTED, "glm": GLM_IMPLEMENTED, "glm4": GLM4_IMPLEMENTED,
            "gpt_neox": GPT_NEOX_IMPLEMENTED, "phi": PHI_IMPLEMENTED, "cohere": COHERE_IMPLEMENTED,
            "cohere2": COHERE2_IMPLEMENTED, "gptj": GPTJ_IMPLEMENTED, "codegen": CODEGEN_IMPLEMENTED,
            "stablelm": STABLELM_IMPLEMENTED,
            "gpt2": GPT2_IMPLEMENTED, "gpt_bigcode": GPT_BIGCODE_IMPLEMENTED, "opt": OPT_IMPLEMENTED,
            "gpt_neo": GPT_NEO_IMPLEMENTED, "arcee": ARCEE_IMPLEMENTED, "nemotron": NEMOTRON_IMPLEMENTED,
            "apertus": APERTUS_IMPLEMENTED, "olmo": OLMO_IMPLEMENTED, "olmoe": OLMOE_IMPLEMENTED,
            "granitemoe": GRANITEMOE_IMPLEMENTED, "granitemoeshared": GRANITEMOE_SHARED_IMPLEMENTED,
            "ernie4_5_moe": ERNIE4_5_MOE_IMPLEMENTED, "hunyuan_v1_moe": HUNYUAN_MOE_IMPLEMENTED,
            "bloom": BLOOM_IMPLEMENTED, "falcon": FALCON_IMPLEMENTED,
            "glm4_moe": GLM4_MOE_IMPLEMENTED, "dots1": DOTS1_IMPLEMENTED,
            "gpt_oss": GPT_OSS_IMPLEMENTED, "phimoe": PHIMOE_IMPLEMENTED}
# ... and those that do not change its arithmetic: sizes (read from the tensors), the rotary tables and norm epsilon
# (read from the model's modules), token ids, head and output options, and what Qwen2 and Qwen3 fold into the
# decoder's sliding_window (Qwen3's layer_types: one window for every layer or none, as its config checks).
ARITHMETIC_FREE = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta", "rms_norm_eps", "initializer_range",
    "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "dtype", "architectures", "num_labels",
    "id2label", "label2id", "problem_type", "output_hidden_states", "output_attentions", "return_dict", "extra",
    "use_sliding_window", "max_window_layers", "layer_types",
}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# The threads the caller had set while a decoding loop holds torch's own to the team's (threads_following_team),
# for each thread: torch's setting is a thread's own (OpenMP's), and generate may run in several threads at once.
_following = threading.local()
# Whether the forwards running in this thread are prompts for generation (prompts_for_generation).
_generating = threading.local()
# The callers' settings of the loops following the teams now, in every thread, the newest last: what teams ask for.
_team_requests: list[int] = []
_team_requests_lock = threading.Lock()


# A run of greedy steps (greedy_tokens) ends with the first token made past this many seconds, so that a keyboard
# interrupt (which Python sees only between the op's calls; other threads run meanwhile, the op releasing the GIL)
# still stops a long generation of a large model within a step or so, while SmolLM2 makes 25-50 tokens a run,
# paying the time between calls once for them all; a model slower than that a token takes one step a call.
RUN_SECONDS = 0.25


def refusal(config) -> str | None:
    """Why the step cannot run a model of this config (the first field it does not implement), or None.

    The fields are the config's attributes (keys config.json holds that no family reads stay in `extra`) and the
    family facts its class holds (model_type, Qwen2's qkv_bias, Llama's absent sliding_window).
    """
    # model_type first: for a family the step does not take, the answer that says most.
    values = {"model_type": config.model_type}
    values.update((name, value) for name, value in vars(config).items() if not name.startswith("_"))
    implemented = FAMILIES.get(config.model_type, IMPLEMENTED)
    # Other families' configs lack Llama's facts: read as absent, so their own fields are refused.
    values.update(sliding_window=getattr(config, "sliding_window", None))
    if implemented is IMPLEMENTED:
        values.update(qkv_bias=getattr(config, "qkv_bias", False))
    for name, value in values.items():
        if name in implemented and not implemented[name](value):
            return f"{name}={value!r} is not implemented by the decoding kernel"
        if name not in implemented and name not in ARITHMETIC_FREE:
            return f"config field {name!r} is unknown to the decoding kernel"
    # OPT's embeddings narrower than its layers (opt-350m's project_in and project_out), and its final LayerNorm left
    # out (a field named with an underscore, the reference's)
    if getattr(config, "word_embed_proj_dim", None) not in (None, getattr(config, "hidden_size", None)):
        return f"word_embed_proj_dim={config.word_embed_proj_dim!r} (projected embeddings) is not implemented by the " \
               "decoding kernel"
    if getattr(config, "_remove_final_layer_norm", False):
        return "_remove_final_layer_norm=True is not implemented by the decoding kernel"
    # DeepSeek-V3's groups holding fewer experts than a token takes (the reference would then take excluded ones)
    groups = getattr(config, "n_group", None) if implemented in (GLM4_MOE_IMPLEMENTED, DOTS1_IMPLEMENTED) else None
    if groups and (config.n_routed_experts % groups or config.topk_group * (config.n_routed_experts // groups)
                   < config.num_experts_per_tok):
        return f"n_group={groups!r} with topk_group={config.topk_group!r} is not implemented by the decoding kernel"
    return None


# GPT-2's line: learned positions added to the embeddings, no rotation (set_positions, set_unrotated)
LEARNED_POSITION_DECODERS = (GPT2Model, GPTBigCodeModel, OPTModel, GPTNeoModel)
# the decoder stacks whose layers the step may reproduce
STEP_DECODERS = (LlamaModel, Gemma2Model, Phi3Model, GPTNeoXModel, NemotronModel, PhiModel, CohereModel, GPTJModel,
                 StableLmModel, BloomModel, FalconModel, *LEARNED_POSITION_DECODERS)
# The (layer, attention, MLP) classes the step reproduces, in each kind of decoder.
LLAMA_LAYERS = ((LlamaDecoderLayer, LlamaAttention, LlamaMLP), (Qwen3DecoderLayer, Qwen3Attention, LlamaMLP),
                (MinistralDecoderLayer, LlamaAttention, LlamaMLP),
                (Ministral3DecoderLayer, Ministral3Attention, LlamaMLP),
                (SmolLM3DecoderLayer, SmolLM3Attention, LlamaMLP), (GraniteDecoderLayer, GraniteAttention, LlamaMLP),
                (Ernie4_5DecoderLayer, Ernie4_5Attention, LlamaMLP), (GlmDecoderLayer, GlmAttention, Phi3MLP),
                (Glm4DecoderLayer, GlmAttention, Phi3MLP),
                (SeedOssDecoderLayer, SeedOssAttention, LlamaMLP), (HeliumDecoderLayer, HeliumAttention, LlamaMLP),
                (HunYuanDenseV1DecoderLayer, HunYuanDenseV1Attention, LlamaMLP),
                (ArceeDecoderLayer, LlamaAttention, NemotronMLP),
                (NemotronDecoderLayer, NemotronAttention, NemotronMLP),
                (ApertusDecoderLayer, Qwen3Attention, ApertusMLP), (OlmoDecoderLayer, OlmoAttention, LlamaMLP))
# MLPs without a gate: up, the activation (set_activation), down
UNGATED_MLPS = (NemotronMLP, ApertusMLP)
# LayerNorms: Nemotron's of 1 + w with biases, OLMo's without parameters (set_norm_biases)
LAYER_NORM_CLASSES = {NemotronModel: NemotronLayerNorm1P, OlmoModel: OlmoLayerNorm}
# rotating pairs (2i, 2i + 1) (set_interleaved)
INTERLEAVED_DECODERS = (Ernie4_5Model, Ernie4_5_MoeModel, GlmModel, HeliumModel, CohereModel, GPTJModel)
# Gemma 2's and Gemma 3's; the first Gemma's; VaultGemma's
GEMMA_LAYERS = ((Gemma2DecoderLayer, Gemma2Attention, Gemma2MLP), (GemmaDecoderLayer, Gemma2Attention, Gemma2MLP),
                (VaultGemmaDecoderLayer, Gemma2Attention, Gemma2MLP))
PHI3_LAYERS = ((Phi3DecoderLayer, Phi3Attention, Phi3MLP),)
OLMO2_LAYERS = ((Olmo2DecoderLayer, Olmo2Attention, LlamaMLP), (Olmo3DecoderLayer, Olmo2Attention, LlamaMLP),
                (Exaone4DecoderLayer, Exaone4Attention, LlamaMLP))
# norms after each branch, none before (set_family's sandwich norms)
OLMO2_DECODERS = (Olmo2Model, Olmo3Model, Exaone4Model)
# whose norms are OLMo 2's RMSNorm (its weight applied before the cast back: the same in float32)
OLMO2_NORMED_DECODERS = (Olmo2Model, Olmo3Model, HeliumModel, GptOssModel)
MIXTURE_LAYERS = ((MixtralDecoderLayer, LlamaAttention, MixtralSparseMoeBlock),
                  (Qwen3MoeDecoderLayer, Qwen3Attention, Qwen3MoeSparseMoeBlock),
                  (Qwen3MoeDecoderLayer, Qwen3Attention, Qwen3MoeMLP),  # Qwen3-MoE's dense layers
                  (Qwen2MoeDecoderLayer, LlamaAttention, Qwen2MoeSparseMoeBlock),
                  (Qwen2MoeDecoderLayer, LlamaAttention, Qwen3MoeMLP),
                  (OlmoeDecoderLayer, OlmoeAttention, SparseMoeBlock),
                  (GraniteMoeDecoderLayer, GraniteAttention, GraniteMoeMoE),
                  (GraniteMoeSharedDecoderLayer, GraniteAttention, GraniteMoeMoE),
                  (Ernie4_5_MoeDecoderLayer, Ernie4_5Attention, Ernie4_5_MoeSparseMoeBlock),
                  (Ernie4_5_MoeDecoderLayer, Ernie4_5Attention, Qwen3MoeMLP),  # ERNIE's dense layers
                  (HunYuanMoEV1DecoderLayer, HunYuanDenseV1Attention, HunYuanMoEV1Moe),
                  (Glm4MoeDecoderLayer, Glm4MoeAttention, DeepseekV3MoE),
                  (Glm4MoeDecoderLayer, Glm4MoeAttention, Qwen3MoeMLP),  # GLM-4.5's dense layers
                  (Dots1DecoderLayer, Qwen3Attention, DeepseekV3MoE), (Dots1DecoderLayer, Qwen3Attention, Qwen3MoeMLP),
                  (GptOssDecoderLayer, GptOssAttention, GptOssMLP),
                  (PhimoeDecoderLayer, LlamaAttention, PhimoeSparseMoeBlock))
GRANITE_DECODERS = (GraniteModel, GraniteMoeModel, GraniteMoeSharedModel)  # Granite's scalars (set_family)
HUNYUAN_DECODERS = (HunYuanDenseV1Model, HunYuanMoEV1Model)  # q/k norms after the rotation
STARCODER2_LAYERS = ((Starcoder2DecoderLayer, LlamaAttention, Starcoder2MLP),)
GPT_NEOX_LAYERS = ((GPTNeoXLayer, GPTNeoXAttention, GPTNeoXMLP),)
# BLOOM's and Falcon's layers: LayerNorms with biases, one fused q/k/v (set_qkv_per_head or set_fused), ALiBi's or
# rotary positions
ALIBI_FAMILY_LAYERS = {BloomModel: ((BloomBlock, BloomAttention, BloomMLP),),
                       FalconModel: ((FalconDecoderLayer, FalconAttention, FalconMLP),)}
# The parallel-branch families' layers (set_parallel), by decoder: the norm class and (layer, attention, MLP) kinds.
PARALLEL_LAYERS = {
    PhiModel: (nn.LayerNorm, ((PhiDecoderLayer, PhiAttention, PhiMLP),)),
    CohereModel: (CohereLayerNorm, ((CohereDecoderLayer, CohereAttention, LlamaMLP),)),
    Cohere2Model: (CohereLayerNorm, ((Cohere2DecoderLayer, Cohere2Attention, LlamaMLP),)),
    GPTJModel: (nn.LayerNorm, ((GPTJBlock, GPTJAttention, GPTJMLP),)),
    CodeGenModel: (nn.LayerNorm, ((CodeGenBlock, CodeGenAttention, GPTJMLP),)),
    StableLmModel: (nn.LayerNorm, ((StableLmDecoderLayer, StableLmAttention, LlamaMLP),)),
}
# The modules the step reads under each family's own names (GPT-2's and GPT-J's wte, ln_f and attn, Phi's
# final_layernorm, OPT's inside its `decoder`: _stack_modules): the token table, the final norm, a layer's attention.
EMBEDDING_NAMES = ("embed_tokens", "embed_in", "wte", "word_embeddings")
FINAL_NORM_NAMES = ("norm", "final_layer_norm", "final_layernorm", "ln_f")
ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
# Phi's and GPT-J's linear layers under their names: q, k, v and o; up and down (no gate)
GATELESS_PROJECTIONS = {PhiDecoderLayer: (("q_proj", "k_proj", "v_proj", "dense"), ("fc1", "fc2")),
                        GPTJBlock: (("q_proj", "k_proj", "v_proj", "out_proj"), ("fc_in", "fc_out"))}
# Layers whose one norm both branches read, as each layer's input norm and MLP norm (_layer_norms)
ONE_NORM_LAYERS = (PhiDecoderLayer, CohereDecoderLayer, Cohere2DecoderLayer, GPTJBlock, CodeGenBlock)


def _named(modules: dict, names: tuple) -> nn.Module | None:
    """The first of `names` in a module's `_modules` (read through the dict: see _kernel_stack)."""
    return next((modules[name] for name in names if name in modules), None)


def _stack_modules(decoder: nn.Module) -> dict:
    """The `_modules` holding the stack's embedding and final norm: the decoder's, or OPT's `decoder`'s."""
    modules = decoder._modules
    return modules["decoder"]._modules if "decoder" in modules else modules


def _embedding(decoder: nn.Module) -> nn.Module | None:
    return _named(_stack_modules(decoder), EMBEDDING_NAMES)


def _final_norm(decoder: nn.Module) -> nn.Module:
    return _named(_stack_modules(decoder), FINAL_NORM_NAMES)


def _attention(layer: nn.Module) -> nn.Module:
    return _named(layer._modules, ATTENTION_NAMES)


def _sliding_layers(decoder: nn.Module) -> bool:
    """Whether the decoder's layers slide by config.sliding_window where they say so (Cohere 2's borrow
    SlidingLayersDecoder's inputs)."""
    return isinstance(decoder, (SlidingLayersDecoder, Cohere2Model))
LEARNED_POSITION_LAYERS = ((GPT2Block, GPT2Attention, GPT2MLP), (GPTBigCodeBlock, GPTBigCodeAttention, GPT2MLP),
                           (OPTDecoderLayer, OPTAttention, type(None)), (GPTNeoBlock, GPTNeoAttention, GPTNeoMLP))
# one q/k/v projection (set_fused)
FUSED_QKV_LAYERS = (Phi3DecoderLayer, GPTNeoXLayer, GPT2Block, GPTBigCodeBlock, BloomBlock, FalconDecoderLayer)
EXPERT_PROJECTIONS = {MixtralExpert: ("w1", "w3", "w2"), Qwen3MoeMLP: MLP_PROJECTIONS}  # gate, up, down


def decoder_of(model: nn.Module) -> DecoderModel | None:
    """The decoder stack of `model` (a head's base model, or the model itself) of a kind the step may take."""
    if isinstance(model, STEP_DECODERS):
        return model
    return next((child for child in model.children() if isinstance(child, STEP_DECODERS)), None)


def eligible(model: nn.Module) -> bool:
    """Whether `model` has a decoder whose config (`refusal`) and layers (`_implemented_layers`) the step implements."""
    decoder = decoder_of(model)
    return decoder is not None and refusal(decoder.config) is None and _implemented_layers(decoder)


def install(model: nn.Module, before_step=None) -> None:
    """Swap the kernel's Linear into an eligible `model`'s decoder and language-model head, and give the decoder
    the step, which calls `before_step` (if given) before each step it takes, until that returns False."""
    decoder = decoder_of(model)
    for layer in decoder.layers:
        for parent, name in _present(_linear_slots(layer)) + _expert_slots(layer):
            _swap_linear(parent, name)
    if isinstance(getattr(model, "lm_head", None), nn.Linear):
        _swap_linear(model, "lm_head")
        # Retyped in place, as torch.nn.utils.parametrize retypes a module: the same object, its ties and buffers.
        model.lm_head.__class__ = StepHead
    decoder.accelerated_step = DecodeStep(decoder, before_step, weakref.ref(model))
    if type(getattr(model, "lm_head", None)) is StepHead:
        model.accelerated_logits = next_token_logits
        model.accelerated_greedy = greedy_tokens


def next_token_logits(model: nn.Module, tokens: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor] | None:
    """generate's shortcut past the model's forward (installed as `model.accelerated_logits`, called by the
    Decoder of generation/steps.py): for the (1,) token fed to one unpadded sequence, the (1, vocab) logits of the
    next and their (1,) argmax, from a step that runs the final norm and the head's product in its team; None to
    leave the token to the forward. They are the forward's logits, in float32 as generate's loop takes them: a
    bfloat16 model's are rounded to bfloat16 values in the step, where the forward's bfloat16 tensor cost a
    conversion, and argmax over it 180-220 us, twice float32's. The argmax is torch.argmax's, taken by the step's
    threads (decode.cpp), and the step reads the token's embedding row itself.

    The forward's way to the same logits (the causal-LM head's forward and the decoder's, their two output
    objects, the embedding module, the step's hidden state converted, offered to the StepHead and compared there)
    is some 30 Python-level operations, each slow right after a step has streamed the weights through the caches:
    SmolLM2 at two threads, the time between two steps' kernel calls is 0.35-0.45 ms through the shortcut against
    0.77-1.0 through the forward (bfloat16 / float32, medians of 64 tokens, rounds interleaved in one process;
    benchmarks/RESULTS.md). The shortcut stands in for it only where the forward computes the same thing: the
    model's class keeps CausalLM's forward and head (or Gemma's or Granite's, whose soft-cap or divisor is applied
    here as their token_logits apply them), the model is not compiled, the embedding is a plain nn.Embedding or
    Gemma's scaled one (whose row the step reads and scales itself, as it scales Granite's), no forward hook would
    see the call (the model's, the decoder's, the embedding's, the head's or a global one) and the head fuses.
    """
    found = _shortcut(model, tokens)
    if found is None:
        return None
    step, fused, table, finish = found
    bfloat16_model = table.dtype == torch.bfloat16  # the head's output: the hidden's dtype
    ran = step.run(tokens, None, None, cache, fused, bfloat16_logits=bfloat16_model, embedding=table)
    if ran is None:
        return None
    _, logits, argmax = ran
    if finish is not None:  # the family's token_logits on the head's output, in its dtype
        logits = finish(logits.to(table.dtype)).float()
        argmax = logits.argmax(-1)  # over the finished logits: a cap or a rounding can make the largest equal
    return logits, argmax


def greedy_tokens(model: nn.Module, tokens: torch.Tensor, cache, count: int, eos: list[int],
                  ids: torch.Tensor) -> int | None:
    """generate's run of greedy tokens (installed as `model.accelerated_greedy`, called by the Decoder of
    generation/steps.py): the (1,) token fed to one unpadded sequence, then the argmax of each step's logits fed to
    the next, up to `count` tokens or the first one in `eos`, written into `ids` (1-D int64, at least `count`
    long), in one call of decode.cpp's `decode_tokens`, which returns after the first token made past RUN_SECONDS;
    how many it made, or None to leave the tokens to single steps. The tokens are those next_token_logits' argmax
    would have chosen one step at a time; a run spares each token the op's call and return and generate's loop
    between steps (0.3-0.45 ms of a 5.3-8 ms SmolLM2 bfloat16 token, mostly memory the step's stream of weights has
    pushed out of the caches: benchmarks/RESULTS.md). Taken where next_token_logits is, but for logits that a
    family's token_logits finishes (Gemma 2's cap, Granite's divisor: either can make the largest logits equal)."""
    found = _shortcut(model, tokens)
    if found is None or found[3] is not None:
        return None
    step, fused, table, _ = found
    ran = step.run(tokens, None, None, cache, fused, bfloat16_logits=table.dtype == torch.bfloat16, embedding=table,
                   count=count, eos=eos, ids=ids)
    return None if ran is None else ran[2]


def _shortcut(model: nn.Module, tokens: torch.Tensor) -> tuple | None:
    """What next_token_logits and greedy_tokens run past the model's forward: (the decoder's DecodeStep, the head's
    fused tensors, the embedding's table, what the family's token_logits does to the head's output (`_finish`) or
    None), or None where the forward must run."""
    # Submodules through the module dicts, as StepHead.fused_tensors reads its tensors, and for the same reason.
    decoder, head = model._modules.get(model.base_model_prefix), model._modules.get("lm_head")
    step = getattr(decoder, "accelerated_step", None)
    model_class = type(model)
    # MoeCausalLM's forward is CausalLM's where it records no router scores.
    # GPT2LMHeadModel's is CausalLM's product under GPT-2's output class.
    forward = model_class.forward
    if (not isinstance(step, DecodeStep) or type(head) is not StepHead or tokens.shape != (1,)
            or not (forward in (CausalLM.forward, GPT2LMHeadModel.forward) or forward is MoeCausalLM.forward
                    and not model.config.output_router_logits)
            or getattr(model_class, "token_logits", CausalLM.token_logits) not in (
                CausalLM.token_logits, Gemma2ForCausalLM.token_logits, GraniteForCausalLM.token_logits,
                CohereForCausalLM.token_logits)
            or "forward" in vars(model) or getattr(model, "_compiled_call_impl", None) is not None):
        return None
    embedding = _embedding(decoder)
    # Gemma's scaled rows the step scales as the module does (StepWeights.set_family's embedding_scale); the learned
    # positions' row the step adds (StepWeights.set_positions).
    embedding_class = GemmaScaledEmbedding if isinstance(decoder, Gemma2Model) else nn.Embedding
    positions = _position_embedding(decoder)
    embeddings = (embedding,) if positions is None else (embedding, positions)
    if (type(embedding) is not embedding_class or any(e.max_norm is not None for e in embeddings)
            or positions is not None and type(positions) is not nn.Embedding
            or not _unhooked(model, decoder, head, *embeddings, *filter(None, [_embedding_norm(decoder)]))):
        return None
    fused = head.fused_tensors()
    table = embedding._parameters["weight"]
    # The step multiplies a bfloat16 row by the scale rounded to bfloat16 (Gemma's, a bfloat16 tensor); Granite's
    # layers by the config's number itself, which only the same where bfloat16 holds it (12, its checkpoints').
    scale = getattr(decoder.config, "embedding_multiplier", None) if isinstance(decoder, ScaledEmbeddings) else None
    if fused is None or table.dtype == torch.bfloat16 and scale is not None and float(torch.tensor(
            scale, dtype=torch.bfloat16)) != scale:
        return None
    return step, fused, table, _finish(model)


def _finish(model: nn.Module):
    """What the model's token_logits does after the head's product, as a function of the product (in the model's
    dtype, its config read now, as token_logits reads it), or None where it does nothing."""
    token_logits, config = getattr(type(model), "token_logits", None), model.config  # (GPT2LMHeadModel has none)
    if token_logits is Gemma2ForCausalLM.token_logits and config.final_logit_softcapping is not None:
        cap = config.final_logit_softcapping
        return lambda logits: torch.tanh(logits / cap) * cap
    if token_logits is GraniteForCausalLM.token_logits:
        return lambda logits: logits / config.logits_scaling
    if token_logits is CohereForCausalLM.token_logits:
        return lambda logits: logits * config.logit_scale
    return None


def copied_reference(reference: weakref.ref | None, memo: dict) -> weakref.ref | None:
    """For the deep copy (`memo`: copy.deepcopy's) of an object that refers weakly to a model: a reference to the
    model's copy where the same deepcopy copied the model (the object belongs to the copy), else None (a decoder
    copied alone belongs to no model; pointing at the original would have its steps run that model's head)."""
    model = reference() if reference is not None else None
    model_copy = memo.get(id(model)) if model is not None else None
    return weakref.ref(model_copy) if model_copy is not None else None


def _unhooked(*modules: nn.Module) -> bool:
    """Whether no forward hook would see a call of these modules: none of their own, and no global one."""
    if torch_modules._global_forward_hooks or torch_modules._global_forward_pre_hooks:
        return False
    return not any(module._forward_hooks or module._forward_pre_hooks for module in modules)


@contextlib.contextmanager
def threads_following_team(model: nn.Module):
    """While generate decodes with `model`: torch's own operations between the compiled steps (the embedding, the
    final norm, the logits processors, argmax or sampling, a step the layers take) run on as many threads as the
    kernel's team has settled on, fewer while the CPU is crowded, and the caller's setting is back when the block
    ends, however it ends. The teams keep asking for the caller's threads (decode.cpp's Crowding), so they still
    try one more now and then and grow back when the CPU is free, and torch follows them.

    With one of two cores taken by a busy process, each of torch's parallel regions (argmax and the processors'
    masks over the 49152-token vocabulary are large enough to split) waits for a thread that the system runs a
    few milliseconds at a time: SmolLM2 int4 decoded at 45 tok/s with the team at one thread and torch at two,
    where one torch thread kept 71-74% of the quiet speed (benchmarks/RESULTS.md). Quiet, nothing changes: at
    batch 1 none of those operations gains from a second thread; a batch's top-p sort does.

    Torch's setting is each thread's own (OpenMP's; a thread started later begins at the newest one set), so each
    thread's loop holds and restores its own, whatever loops run in other threads; the teams ask for the newest
    running loop's caller setting.
    """
    step = getattr(decoder_of(model), "accelerated_step", None)
    if not isinstance(step, DecodeStep) or not library.loaded():
        yield
        return
    outer = getattr(_following, "caller", None)
    caller = torch.get_num_threads() if outer is None else outer  # an assistant's loop inside the main model's
    _following.caller = caller
    with _team_requests_lock:
        _team_requests.append(caller)
        torch.ops.openformers.request_team(caller)
    try:
        yield
    finally:
        _following.caller = outer
        with _team_requests_lock:
            _team_requests.remove(caller)
            torch.ops.openformers.request_team(_team_requests[-1] if _team_requests else 0)
        if outer is None and torch.get_num_threads() != caller:
            torch.set_num_threads(caller)


@contextlib.contextmanager
def prompts_for_generation():
    """While generation feeds prompts (generate's and the server's prefill, which decode with the step after them):
    a bfloat16 model's prompts take the step too, which keeps the residual stream in float32 as its decoding steps
    do. Elsewhere (an evaluation's forward, a loss's) they take the layers, which round every sum to bfloat16 as the
    reference's bfloat16 forward does, and so give its logits (the step's differ from them by up to a few bfloat16
    steps: 0.07 in a tiny Gemma's). Float32 prompts take the step either way: its logits are the layers' to float32
    rounding."""
    outer = getattr(_generating, "prompts", False)
    _generating.prompts = True
    try:
        yield
    finally:
        _generating.prompts = outer


def _swap_linear(parent: nn.Module, name: str) -> None:
    layer = getattr(parent, name)
    if not isinstance(layer, Linear):
        swapped = Linear.from_linear(layer)
        swapped.bias_after_product = isinstance(layer, FalconLinear)  # (its bfloat16 rounding, for the layers)
        setattr(parent, name, swapped)


def _implemented_layers(decoder: DecoderModel) -> bool:
    """Whether the decoder is made of the layers the step reproduces (a user's own subclass or a swapped-in
    adapter is not), with every linear layer the kernel's or a plain nn.Linear."""
    gemma, olmo2, starcoder2 = isinstance(decoder, Gemma2Model), type(decoder) in OLMO2_DECODERS, _layer_normed(decoder)
    norm_class = (GemmaRMSNorm if gemma else Olmo2RMSNorm if type(decoder) in OLMO2_NORMED_DECODERS
                  else nn.LayerNorm if starcoder2 else LAYER_NORM_CLASSES.get(type(decoder), RMSNorm))
    learned = type(decoder) in LEARNED_POSITION_DECODERS
    layer_kinds = (GEMMA_LAYERS if gemma else OLMO2_LAYERS if olmo2 else PHI3_LAYERS if type(decoder) is Phi3Model
                   else MIXTURE_LAYERS if isinstance(decoder, MixtralModel) else LEARNED_POSITION_LAYERS if learned
                   else GPT_NEOX_LAYERS if type(decoder) is GPTNeoXModel
                   else ALIBI_FAMILY_LAYERS.get(type(decoder)) or STARCODER2_LAYERS if starcoder2 else LLAMA_LAYERS)
    norm_class, layer_kinds = PARALLEL_LAYERS.get(type(decoder), (norm_class, layer_kinds))
    if type(decoder) is CodeGenModel and _attention(decoder.layers[0]).n_head % CodeGenConfig.shards:
        return False  # (heads that straddle its blocks)
    final_norm = _final_norm(decoder)
    if final_norm is None:  # (OPT's _remove_final_layer_norm)
        return False
    embedding_norm = _embedding_norm(decoder)  # BLOOM's, with its weight and bias (set_embedding_norm)
    if embedding_norm is not None and (type(embedding_norm) is not nn.LayerNorm or embedding_norm.weight is None
                                       or embedding_norm.bias is None):
        return False
    # LayerNorms with their weights and biases (StarCoder2's always have both; OPT's may have neither), the first
    # layer's epsilon for all (DecodeStep._settings), GPT-2's line's learned positions as wide as the layers
    if starcoder2 and any(norm is None or _norm_eps(norm) != final_norm.eps or type(norm) is not LayerNormPerHead
                          and (norm.weight is None or norm.bias is None)
                          for norm in [final_norm] + [n for layer in decoder.layers for n in _layer_norms(layer)]):
        return False
    if learned and (getattr(_position_embedding(decoder), "embedding_dim", None) != final_norm.normalized_shape[0]
                    or any(type(layer) is OPTDecoderLayer and not layer.norm_first for layer in decoder.layers)):
        return False
    routings = set()  # (top_k, normalize, weights_in_model_dtype, DeepSeek-V3's groups and scale): the step takes one
    for layer in decoder.layers:
        feed_forward = _feed_forward(layer)
        kinds = (type(layer), type(_attention(layer)), type(feed_forward))
        if kinds not in layer_kinds:
            return False
        # (StableLM's per-head q/k norms a class of their own)
        if any(norm is not None and type(norm) not in (norm_class, LayerNormPerHead) for norm in _layer_norms(layer)):
            return False
        if any(type(linear) not in (nn.Linear, ExpertLinear, Linear, FalconLinear)
               for linear in _linears(layer) + _experts(layer)):
            return False
        if type(feed_forward) is NemotronMLP and feed_forward.act not in ACTIVATION_KINDS:
            return False
        if type(feed_forward) is ApertusMLP and type(feed_forward.act_fn) is not XIELU:
            return False
        if _sparse(feed_forward):
            if not _known_mixture(layer, feed_forward):
                return False
            routings.add((feed_forward.top_k, feed_forward.normalize, feed_forward.weights_in_model_dtype,
                          *(getattr(feed_forward, name, None) for name in ("n_group", "topk_group", "scaling_factor"))))
    clips = {getattr(_attention(layer), "clip_qkv", None) for layer in decoder.layers}  # set_clip_qkv takes one
    return type(final_norm) is norm_class and len(routings) <= 1 and len(clips) <= 1


def _known_mixture(layer: nn.Module, block: nn.Module) -> bool:
    """Whether a sparse layer's router, experts and shared expert are of the classes its block builds."""
    shared = _shared_mlp(layer)
    if type(block) is GraniteMoeMoE:
        banks = (block.input_linear, block.output_linear)
        return (type(block.router) is GraniteMoeRouter and type(block.router.layer) is Router
                and all(type(b) is StackedExperts and type(b.weight) in (nn.Parameter, PackedExperts) for b in banks)
                and type(shared) in (type(None), GraniteMoeSharedMLP))
    if type(block) is HunYuanMoEV1Moe and type(block.gate) is not HunYuanMoEV1Gate:
        return False
    if type(block) is GptOssMLP:  # both stacks float Parameters, or both packed
        experts = block.experts
        stacks = {type(experts.gate_up_proj), type(experts.down_proj)}
        return (type(block.router) is Router and type(experts) is GptOssExperts
                and stacks in ({nn.Parameter}, {PackedExperts}))
    if type(_router(block)) not in (Router, FloatRouter) and (type(block), type(_router(block))) != (
            DeepseekV3MoE, DeepseekV3Router):
        return False
    if any(type(expert) not in EXPERT_PROJECTIONS for expert in block.experts):
        return False
    if type(block) is Qwen2MoeSparseMoeBlock and type(block.shared_expert_gate) is not Router:
        return False
    return shared is None or type(shared) is Qwen3MoeMLP


def _layer_normed(decoder: DecoderModel) -> bool:
    """Whether the decoder's norms are LayerNorms with biases (StarCoder2's, GPT-NeoX's, Phi's, GPT-J's, CodeGen's,
    StableLM's, PhiMoE's and GPT-2's line's; set_norm_biases)."""
    return (type(decoder) in (Starcoder2Model, GPTNeoXModel, PhiModel, GPTJModel, CodeGenModel, StableLmModel,
                              BloomModel, FalconModel, PhimoeModel)
            or type(decoder) in LEARNED_POSITION_DECODERS)


def _feed_forward(layer: nn.Module) -> nn.Module | None:
    """A layer's MLP, or its mixture of experts (Mixtral's `block_sparse_moe`, Qwen3-MoE's `mlp`); None where the
    layer holds its MLP's projections itself (OPT's fc1 and fc2)."""
    return layer._modules.get(getattr(type(layer), "feed_forward_name", "mlp"))


def _embedding_norm(decoder: DecoderModel) -> nn.Module | None:
    """The LayerNorm of the token embeddings (BLOOM's word_embeddings_layernorm), or None."""
    return decoder._modules.get("word_embeddings_layernorm")


def _alibi(decoder: DecoderModel) -> bool:
    """Whether the decoder's positions are ALiBi's biases on the attention scores (BLOOM's, Falcon-RW's)."""
    return type(decoder) is BloomModel or type(decoder) is FalconModel and decoder.config.alibi


def _position_embedding(decoder: DecoderModel) -> nn.Module | None:
    """The learned positions' embedding of GPT-2's line (`wpe`, OPT's `embed_positions`), or None (rotary families)."""
    if type(decoder) not in LEARNED_POSITION_DECODERS:
        return None
    modules = decoder._modules
    return modules["wpe"] if "wpe" in modules else modules["decoder"]._modules["embed_positions"]


def _position_table(decoder: DecoderModel) -> torch.Tensor:
    """StepWeights.set_positions' table: the learned positions' rows from position 0 (OPT's past its offset)."""
    table = _position_embedding(decoder).weight
    return table[POSITION_OFFSET:] if type(decoder) is OPTModel else table


def _cache_heads(decoder: DecoderModel) -> tuple[int, int]:
    """The key/value heads a layer caches and their size."""
    attention = _attention(decoder.layers[0])
    if type(decoder) not in LEARNED_POSITION_DECODERS:  # (GPT-NeoX, GPT-J: no grouped queries)
        return getattr(attention, "n_kv_head", None) or attention.n_head, attention.head_dim
    config = decoder.config
    heads = config.num_attention_heads
    return getattr(config, "num_key_value_heads", heads), config.hidden_size // heads


def _learned_positions_family(decoder: DecoderModel) -> tuple:
    """StepWeights.set_family's arguments for GPT-2's line: no sandwich norms, GELU's tanh form (else SiLU's place
    taken by set_relu's ReLU), the queries' factor sqrt(head_dim) where the scores are left unscaled (GPT-Neo's,
    GPT-2's and GPT-BigCode's scale_attn_weights=False), and GPT-Neo's local layers sliding."""
    config = decoder.config
    unscaled = type(decoder) is GPTNeoModel or not getattr(config, "scale_attn_weights", True)
    factor = _cache_heads(decoder)[1] ** 0.5 if unscaled else 1.0
    sliding = [int(layer.is_sliding) for layer in decoder.layers] if type(decoder) is GPTNeoModel else []
    return False, config.activation_function in TANH_GELUS, 0.0, factor, 1.0, sliding, 0.0


class _Unrotated:
    """The rotary tables a decoder without rotary positions hands the step in their place (GPT-2's line, whose layers
    the step leaves unrotated: set_unrotated): zeros two wide, as many rows as the positions reach, for the calls'
    checks of the tables."""

    long_after = None

    def __init__(self):
        self._buffers = {"cos": torch.zeros(0, 2), "sin": torch.zeros(0, 2)}

    def ensure_length(self, length: int) -> None:
        rows = self._buffers["cos"].shape[0]
        if length > rows:
            self._buffers = dict.fromkeys(("cos", "sin"), torch.zeros(max(length, 2 * rows), 2))


def _layer_norms(layer: nn.Module) -> list[nn.Module | None]:
    """A layer's norms in the order decode.cpp's StepWeights takes them: its input's and its MLP input's (Gemma:
    its input's, the attention output's, the MLP input's and the MLP output's; OLMo 2 the same with None for the
    inputs' norms, which it has not), then the queries' and keys'."""
    if type(layer) in (GPT2Block, GPTBigCodeBlock, GPTNeoBlock):
        return [layer.ln_1, layer.ln_2]
    if type(layer) is OPTDecoderLayer:
        return [layer.self_attn_layer_norm, layer.final_layer_norm]
    if type(layer) is Gemma2DecoderLayer:
        norms = [layer.input_layernorm, layer.post_attention_layernorm, layer.pre_feedforward_layernorm,
                 layer.post_feedforward_layernorm]
    elif type(layer) in (Olmo2DecoderLayer, Olmo3DecoderLayer, Exaone4DecoderLayer):
        norms = [None, layer.post_attention_layernorm, None, layer.post_feedforward_layernorm]
    elif type(layer) is VaultGemmaDecoderLayer:  # the first Gemma's two, under Gemma 2's names
        norms = [layer.input_layernorm, layer.pre_feedforward_layernorm]
    elif type(layer) is ApertusDecoderLayer:
        norms = [layer.attention_layernorm, layer.feedforward_layernorm]
    elif type(layer) is Glm4DecoderLayer:
        norms = [layer.input_layernorm, layer.post_self_attn_layernorm, layer.post_attention_layernorm,
                 layer.post_mlp_layernorm]
    elif type(layer) is FalconDecoderLayer:  # two norms, one read by both branches, or a norm before each
        norms = ([layer.ln_attn, layer.ln_mlp] if layer.two_norms else [layer.input_layernorm] * 2 if layer.parallel
                 else [layer.input_layernorm, layer.post_attention_layernorm])
    elif type(layer) in ONE_NORM_LAYERS or type(layer) is StableLmDecoderLayer and layer.parallel:
        norm = layer._modules.get("input_layernorm") or layer.ln_1  # both branches' (set_parallel)
        norms = [norm, norm]
    else:
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
    attention = _attention(layer)
    if (type(attention) in (Qwen3Attention, Olmo2Attention, Exaone4Attention, OlmoeAttention)
            or type(attention) is Gemma2Attention and attention.qk_norm
            or type(attention) is Glm4MoeAttention and attention.use_qk_norm):
        norms += (attention.q_norm, attention.k_norm)
    elif type(attention) is HunYuanDenseV1Attention:  # normed after the rotation (set_norms_after_rotation)
        norms += (attention.query_layernorm, attention.key_layernorm)
    elif getattr(attention, "qk_layernorm", False):  # Phi's (one weight for every head), StableLM's (one a head)
        norms += (attention.q_layernorm, attention.k_layernorm)
    elif getattr(attention, "use_qk_norm", False):  # Command R+'s, a weight row a head
        norms += (attention.q_norm, attention.k_norm)
    return norms


class DecodeStep:
    """The decoder's step for one token of each sequence after a cached prompt, as one call of decode.cpp: its
    `decode_step` for one unpadded sequence, `decode_batch` for up to BATCH_ROWS sequences sharing one cache,
    each with its own position and left padding (generate's batch, the server's running rows).

    Called by the decoder's forward (DecoderModel.forward) with (input_ids, attention_mask, position_ids, cache);
    returns the (B, 1, C) last hidden state, or None to leave any other step to the layers (a prompt, gradients,
    another device).

    The model's language-model head (`model_reference`, a weak reference to the model that holds the decoder) is a
    `StepHead`. While it is fed the hidden state of each step of one sequence (generate's loop), `decode_step` also
    runs the final norm and the head's product in its team and hands the head the logits: one team a token
    instead of two, and none of the final norm's and the head call's small operations.
    """

    def __init__(self, decoder: DecoderModel, before_step=None, model_reference: weakref.ref | None = None):
        self.decoder = decoder
        self.before_step = before_step
        self.model_reference = model_reference
        self._stack = None  # decode.cpp's StepWeights of the layers
        self._current = False  # whether _stack still holds the tensors the module dicts hold (a _WatchedDict clears it)
        self._layer_count = 0  # the decoder's layers when _stack was gathered
        self._weight_dtype = None  # their linear weights' (the first one's, where int4 and int8 mix)
        self._mixture = False  # whether _stack has sparse layers (set_experts)
        self._eps = 0.0  # the layers' norms' epsilon (their first layer's second norm's: every norm has the config's)
        self._positions = None  # how many learned positions the step may add (set_positions), or None
        self._unrotated = _Unrotated()
        # whether the layers draw random numbers while training (Mixtral's router_jitter_noise, StarCoder2's dropouts)
        self._draws_while_training = False
        # The attention modules whose clip_qkv the stack holds (OLMo's, OLMoE's; an attribute no module dict watches,
        # so each step compares it), and that value.
        self._clipped, self._clip = [], None

    def __getstate__(self) -> dict:
        # A copy's modules hold plain dicts (_WatchedDict copies as one): it gathers its tensors, and watches, anew.
        # A pickle holds no model (a weak reference cannot be pickled): its head then multiplies on its own.
        return {**self.__dict__, "_stack": None, "_current": False, "model_reference": None, "_clipped": []}

    def __deepcopy__(self, memo: dict) -> "DecodeStep":
        copied = DecodeStep.__new__(DecodeStep)
        memo[id(self)] = copied
        state = {**self.__getstate__(), "model_reference": copied_reference(self.model_reference, memo)}
        copied.__dict__.update(copy.deepcopy(state, memo))
        return copied

    def __call__(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor | None:
        if input_ids is not None and input_ids.dim() == 2 and input_ids.shape[1] > 1:
            return self.prompt(input_ids, attention_mask, position_ids, cache)
        head = self._head()
        fused = head.fused_tensors() if head is not None and head.follows_step else None
        ran = self.run(input_ids, attention_mask, position_ids, cache, fused)
        if ran is None:
            return None
        x, logits, _ = ran
        hidden = x.to(_embedding(self.decoder).weight.dtype)
        if head is not None:
            head.offer(hidden, logits)
        return hidden

    def run(self, input_ids, attention_mask, position_ids, cache, head: tuple | None = None,
            bfloat16_logits: bool = False, embedding: torch.Tensor | None = None, count: int = 1,
            eos: list[int] | None = None, ids: torch.Tensor | None = None):
        """The step, if it takes these inputs: (x, logits, argmax), x the float32 hidden state after the final
        norm, (B, 1, C) for input_ids (B, 1) or (B, C) for (B,). When the head's (weight, scale) are given (`head`,
        StepHead.fused_tensors) and one sequence steps, its product runs in the step: the (1, vocab) float32 logits
        (with `bfloat16_logits`, rounded to bfloat16 values) and their (1,) argmax, else None and None. Given the
        `embedding`'s table (by a caller that checked the embedding is a plain nn.Embedding that no hook watches),
        one sequence's step reads its token's row itself, and x is None.

        Given `ids` too (greedy_tokens), a run of up to `count` greedy steps (decode.cpp's decode_tokens) writes its
        tokens into `ids`, stopping after one in `eos`: (None, None, how many it made). A run stays within the
        cache's buffers (at least one step) and on one side of longrope's switch to its long tables, so that it
        stops short of `count` rather than reserve room that single steps would not have."""
        decoder = self.decoder
        table = _embedding(decoder).weight if embedding is None else embedding
        takes = (
            input_ids is not None
            and (input_ids.dim() == 1 or input_ids.dim() == 2 and input_ids.shape[1] == 1)
            and input_ids.shape[0] <= BATCH_ROWS
            and _library_takes(input_ids, cache, table)
            and cache.seq_len > 0
        )
        if takes and attention_mask is not None and decoder.positions_from_mask:  # (the layers check what it counts)
            takes = attention_mask.shape == (input_ids.shape[0], cache.seq_len + 1)
        padding = takes and attention_mask is not None and not bool(attention_mask.all())
        if padding:  # each row's mask over the cache and its new token, which it must see
            rows, past = input_ids.shape[0], cache.seq_len
            takes = attention_mask.shape == (rows, past + 1) and bool(attention_mask[:, -1].all())
        if takes and self.before_step is not None and not self.before_step():
            self.before_step = None
        if padding and position_ids is None and decoder.positions_from_mask:  # OPT's: over each row's real tokens
            position_ids = positions_of_real_tokens(attention_mask, 1, cache)
        stack = self._kernel_stack() if takes else None
        if stack is None or len(cache.lengths) != self._layer_count:  # (a cache of other layers: the layers')
            return None
        rows = input_ids.shape[0]
        one_sequence = rows == 1 and not padding  # decode_step, else decode_batch
        run = ids is not None
        if run and not (one_sequence and embedding is not None and head is not None and position_ids is None):
            return None
        if self._draws_while_training and decoder.training:
            return None  # the layers' noise or dropout, which the step does not draw
        rotary_row = -1
        if one_sequence and (position_ids is None or position_ids.numel() == 1):
            # The tables whole, and the position's row in them for the step to read: indexing them here cost two
            # operations, 15-20 us a token once the step has left torch's data out of the caches (and a tensor of
            # positions and its max four more).
            rotaries = self._rotaries()
            rotary_row = cache.seq_len if position_ids is None else int(position_ids)
            positions = torch.tensor([rotary_row])
            learned = self._positions
            if learned is not None and embedding is not None and rotary_row + (count if run else 1) > learned:
                if rotary_row >= learned:  # past the learned positions: the layers say so
                    return None
                count = learned - rotary_row
            plain = self._plain_positions()
            if rotary_row + (count if run else 1) > plain:  # (Ministral 3's queries scaled past it: the layers')
                if rotary_row >= plain:
                    return None
                count = plain - rotary_row
            for rotary in rotaries:  # dynamic NTK's tables for this call's length, as the layers' forward follows it
                _follow_length(rotary, rotary_row + 1)
            if run:
                count = min(count, max(cache.keys[0].shape[2] - rotary_row, 1))
                for rotary in rotaries:
                    if rotary.long_after is not None and rotary_row < rotary.long_after < rotary_row + count:
                        count = rotary.long_after - rotary_row
                    if getattr(rotary, "dynamic_after", None) is not None:  # (up to the length they are made for)
                        count = min(count, max(rotary.stretched_for - rotary_row, 1))
            angles = []
            for rotary in rotaries:
                if rotary_row + count > rotary._buffers["cos"].shape[0]:
                    rotary.ensure_length(rotary_row + count)
                angles += _rotary_tables(rotary, rotary_row + count)
        else:
            if position_ids is None:
                positions = torch.full((rows,), cache.seq_len)
            else:
                positions = position_ids.reshape(-1)
                positions = positions.expand(rows) if position_ids.numel() == 1 else positions
            if int(positions.max()) >= self._plain_positions():
                return None
            angles = self._angles_at(positions)
            if one_sequence:
                angles = [angle[0] for angle in angles]
        cos, sin, *local_angles = angles
        local_cos, local_sin = local_angles or (None, None)
        if embedding is not None and one_sequence:  # decode_step reads the token's row of the table itself
            x = None
        else:
            # (rows, 1, C) or (rows, C)
            x, embedding = self._embedded(input_ids, positions, cache.seq_len + 1), None
        keys, values, position = cache.reserve_all(count)
        window, eps, following = self._settings()
        layers = (stack, keys, values, position, window)
        logits = argmax = None
        # x leaves either call normed by the final norm, in float32 (the layers round a bfloat16 model's residual
        # to bfloat16 first), with the layers' eps: every norm of a model has its config's rms_norm_eps.
        if run:
            norm = _norm_weight(_final_norm(decoder))
            made = torch.ops.openformers.decode_tokens(input_ids, *layers, cos, sin, eps, norm, *head, bfloat16_logits,
                                                       following, embedding, rotary_row, local_cos, local_sin, count,
                                                       eos or [], ids, RUN_SECONDS)
            cache.crop(position + made)
            return None, None, made
        if one_sequence:  # decode_step: each product's rows shared by the threads
            step_input = input_ids if embedding is not None else x.view(-1)  # with the table: the token's id
            norm = _norm_weight(_final_norm(decoder))
            logits, argmax = torch.ops.openformers.decode_step(step_input, *layers, cos, sin, eps, norm,
                                                               *(head or (None, None)), bfloat16_logits, following,
                                                               embedding, rotary_row, local_cos, local_sin)
            logits, argmax = (logits, argmax) if head is not None else (None, None)
        else:  # decode_batch: each row's rotary angles at its own position, its mask over the cache
            mask = attention_mask.to(torch.uint8) if padding else torch.empty(0, dtype=torch.uint8)
            torch.ops.openformers.decode_batch(x.view(rows, -1), *layers, cos, sin, mask, eps,
                                               _norm_weight(_final_norm(decoder)), following, local_cos, local_sin)
        return x, logits, argmax

    def prompt(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor | None:
        """The prompts of B sequences, T tokens each after what the cache holds (input_ids (B, T), the mask over the
        cached and new positions where some are padding, each row's positions where given), up to PROMPT_ROWS
        tokens in all (by the layers' weight dtype), as one call of decode.cpp's `decode_prompt`: the (B, T, C) last
        hidden state, or None to leave the prompts to the layers. Without a cache (use_cache=False), the keys and
        values go to one made for the call. A bfloat16 model's only inside `prompts_for_generation`."""
        decoder = self.decoder
        cache = DynamicCache() if cache is None else cache
        table = _embedding(decoder).weight
        sequences, tokens = input_ids.shape
        rows = sequences * tokens
        takes = (
            (table.dtype == torch.float32 or getattr(_generating, "prompts", False))  # see prompts_for_generation
            and _library_takes(input_ids, cache, table)
            and (not cache.keys or cache.keys[0].shape[0] == sequences)
        )
        if not takes:
            return None
        past = cache.seq_len
        if attention_mask is not None:
            if attention_mask.shape != (sequences, past + tokens):
                return None  # (the layers say what is wrong with it)
            if type(decoder) is GPTNeoModel and not bool(attention_mask.all()):
                return None  # its padding positions attend as gpt_neo.added_mask says, not as the step's
            if position_ids is None and decoder.positions_from_mask:  # OPT's: over each row's real tokens
                position_ids = positions_of_real_tokens(attention_mask, tokens, cache)
            attention_mask = None if bool(attention_mask.all()) else attention_mask.bool().to(torch.uint8).contiguous()
        if position_ids is None:
            positions = torch.arange(past, past + tokens).repeat(sequences)
        elif position_ids.shape in ((sequences, tokens), (1, tokens)):
            positions = position_ids.expand(sequences, tokens).reshape(-1)
        else:
            return None
        if int(positions.max()) >= self._plain_positions():
            return None
        stack = self._kernel_stack()  # (not before_step: a prompt alone, as an evaluation's, moves no weights)
        limit = PROMPT_ROWS.get(self._weight_dtype, 0)
        if table.dtype == torch.bfloat16:  # its cache attends a row at a time, whatever the weights' dtype
            limit = min(limit, PROMPT_ROWS.get(torch.bfloat16, 0))
        if stack is None or rows > limit:
            return None
        if self._draws_while_training and decoder.training:  # (known once _kernel_stack has gathered the layers)
            return None
        if not cache.keys:
            cache.start_layers(self._layer_count, sequences, *_cache_heads(decoder), table.dtype)
        if len(cache.lengths) != self._layer_count:
            return None
        cos, sin, *local_angles = self._angles_at(positions)
        local_cos, local_sin = local_angles or (None, None)
        x = self._embedded(input_ids, positions, past + tokens)  # (B, T, C), as the layers take them
        keys, values, position = cache.reserve_all(tokens)
        window, eps, following = self._settings()
        mask = torch.empty(0, dtype=torch.uint8) if attention_mask is None else attention_mask
        # (a padding row's attention: see decode_prompt; ALiBi's float mask hides every key alike, so it averages too)
        averages = decoder.attention_path(False) == "eager" or _alibi(decoder)
        torch.ops.openformers.decode_prompt(x.view(rows, -1), stack, keys, values, position, window, cos, sin, mask,
                                            averages, eps, _norm_weight(_final_norm(decoder)), following, local_cos,
                                            local_sin)
        return x.to(table.dtype)

    def _plain_positions(self) -> float:
        """How many positions the step runs: Ministral 3's queries are scaled by a factor of their position past its
        original_max_position_embeddings, which the step has not (the layers take those positions); unbounded for
        every other family."""
        if isinstance(self.decoder, Ministral3Model):
            return self.decoder.config.rope_scaling["original_max_position_embeddings"]
        return float("inf")

    def _rotaries(self) -> list[nn.Module]:
        """The rotary modules whose tables the step reads: Gemma 3's sliding layers rotate by tables of their own
        (decode.cpp's Layer::local); Gemma 2's by the same as its other layers."""
        decoder = self.decoder
        if type(decoder) in LEARNED_POSITION_DECODERS or _alibi(decoder):  # unrotated: the tables' stand-in
            return [self._unrotated]
        rotaries = [decoder._modules["rotary_emb"]]
        if _sliding_layers(decoder) and decoder._modules["local_rotary_emb"] is not rotaries[0]:
            rotaries.append(decoder._modules["local_rotary_emb"])
        return rotaries

    def _angles_at(self, positions: torch.Tensor) -> list[torch.Tensor]:
        """Each position's row of the (cos, sin) tables the layers would take for a forward reaching the furthest of
        them (longrope's long ones past its original context), of every rotary module the step reads: (n, width)
        each."""
        reach = int(positions.max()) + 1
        angles = []
        for rotary in self._rotaries():
            _follow_length(rotary, reach)
            rotary.ensure_length(reach)
            angles += (table[positions] for table in _rotary_tables(rotary, reach))
        return angles

    def _embedded(self, input_ids: torch.Tensor, positions: torch.Tensor, end: int) -> torch.Tensor:
        """The float32 rows the step takes for input_ids (B, T), (B, 1) or (B,): their embeddings as the layers take
        them, with GPT-2's line's learned positions (`positions`, one per token; `end`, how many the keys span) added
        by the decoder, which refuses positions past its table as its forward does."""
        decoder = self.decoder
        x = decoder.input_embeddings(input_ids, None)
        if type(decoder) in LEARNED_POSITION_DECODERS:
            x = decoder.add_position_embeddings(x, positions.view(input_ids.shape), end)
        return x.float().contiguous()

    def _settings(self) -> tuple[int, float, bool]:
        """The step's window (0: none), its norms' eps, and whether it leaves torch's threads at the team's size."""
        decoder = self.decoder
        sliding = _sliding_layers(decoder) or type(decoder) is GptOssModel  # (gpt-oss's decoder holds no window)
        window = decoder.config.sliding_window if sliding else decoder.sliding_window
        eps = self._eps
        # Inside threads_following_team, the step leaves torch's threads at the team's settled size.
        following = getattr(_following, "caller", None) is not None
        return window or 0, eps, following

    def _head(self) -> "StepHead | None":
        model = self.model_reference() if self.model_reference is not None else None
        head = getattr(model, "lm_head", None)
        return head if type(head) is StepHead else None

    def _kernel_stack(self) -> "torch.ScriptObject | None":
        """The norm weights, linear weights, their scales (quantized) and q/k/v biases as decode.cpp's StepWeights,
        which holds them for every step (passing the ~300 tensors with each step cost ~0.1 ms a token); None when the
        decoder no longer has the layers the step reproduces.

        Gathering them reads ~900 module attributes, a tenth of a quantized step, so they are kept until a module
        dict they were reached through changes: a swapped layer, a reassigned weight, a cast that makes new
        buffers or load_state_dict(assign=True) makes the step gather them again. Those dicts become
        `_WatchedDict`s, which tell the step when they change: comparing their ~1000 values instead cost 0.2-0.3 ms
        a token, the decoder's modules being out of the caches after each step has streamed the weights.
        """
        if self._current and (not self._clipped or all(a.clip_qkv == self._clip for a in self._clipped)):
            return self._stack
        # The decoder's own submodules (its `layers`) and those of every module in its layers, the learned positions
        # and OPT's inner `decoder`, and the head's tensors (its bias: set_head_bias).
        positions = _position_embedding(self.decoder)
        head = self._head()
        inner = [positions, self.decoder._modules.get("decoder"), head]  # (OPT's stack inside its `decoder`)
        for module in (self.decoder, *self.decoder.layers.modules(), *(m for m in inner if m is not None)):
            for name in ("_modules", "_parameters", "_buffers"):
                held = module.__dict__[name]
                if type(held) is not _WatchedDict:
                    held = module.__dict__[name] = _WatchedDict(held)
                held.steps.add(self)
        ready = _step_ready(self.decoder)
        self._stack = torch.classes.openformers.StepWeights(*_gather(self.decoder)) if ready else None
        if ready and isinstance(self.decoder, Gemma2Model):
            self._stack.set_family(*_gemma_family(self.decoder))
        if ready and type(self.decoder) in OLMO2_DECODERS:  # norms after each branch, none before
            layered = isinstance(self.decoder, SlidingLayersDecoder)  # OLMo 3's and EXAONE 4.0's sliding layers
            sliding = [int(layer.is_sliding) for layer in self.decoder.layers] if layered else []
            self._stack.set_family(True, False, 0.0, 1.0, 1.0, sliding, 0.0)
        if ready and type(self.decoder) in (MinistralModel, Dots1Model, GptOssModel):  # Llama's layers, some sliding
            sliding = [int(layer.is_sliding) for layer in self.decoder.layers]
            self._stack.set_family(False, False, 0.0, 1.0, 1.0, sliding, 0.0)
        if ready and type(self.decoder) is Phi3Model:
            self._stack.set_fused(True, True)
        if ready and isinstance(self.decoder, GlmModel):  # a fused gate/up, q, k and v apart
            self._stack.set_fused(False, True)
            if type(self.decoder.layers[0]) is Glm4DecoderLayer:  # plain RMSNorms after each branch too
                self._stack.set_family(True, False, 0.0, 1.0, 1.0, [], 0.0)
        if ready and isinstance(self.decoder, INTERLEAVED_DECODERS):
            self._stack.set_interleaved(True)
        if ready and any(type(_shared_mlp(layer)) is GraniteMoeSharedMLP for layer in self.decoder.layers):
            self._stack.set_fused(False, True)  # its shared MLP's gate and up rows in one matrix
        if ready and type(self.decoder) in GRANITE_DECODERS:
            config = self.decoder.config
            query_factor = config.attention_multiplier * self.decoder.layers[0].self_attn.head_dim**0.5
            self._stack.set_family(False, False, 0.0, query_factor, config.embedding_multiplier, [], 0.0)
            self._stack.set_residual_scale(config.residual_multiplier)
        if ready and type(self.decoder) in (SmolLM3Model, Exaone4Model):
            self._stack.set_unrotated([int(not layer.self_attn.rotates) for layer in self.decoder.layers])
        if ready and type(self.decoder) in HUNYUAN_DECODERS:  # per-head q/k norms after the rotation
            self._stack.set_norms_after_rotation(True)
        learned = ready and positions is not None
        if learned:  # GPT-2's line: learned positions added to the embedding, no rotation
            if type(self.decoder.layers[0]) in FUSED_QKV_LAYERS:  # c_attn: q, k and v rows in turn
                self._stack.set_fused(True, False)
            self._stack.set_family(*_learned_positions_family(self.decoder))
            self._stack.set_relu(self.decoder.config.activation_function == "relu")
            self._stack.set_unrotated([1] * len(self.decoder.layers))
            if getattr(self.decoder.config, "scale_attn_by_inverse_layer_idx", False):  # GPT-2's
                self._stack.set_layer_attention_scales([1.0 / (i + 1) for i in range(len(self.decoder.layers))])
            table = _position_table(self.decoder)
            self._stack.set_positions(table)
            self._positions = table.shape[0]
        if ready and _layer_normed(self.decoder):
            layer_norms = [norm for layer in self.decoder.layers for norm in _layer_norms(layer)]
            if not learned and type(self.decoder) not in (StableLmModel, PhimoeModel):  # (their gated MLPs: SiLU)
                self._stack.set_family(False, True, 0.0, 1.0, 1.0, [], 0.0)  # GELU
            self._stack.set_norm_biases([_norm_bias(norm) for norm in layer_norms] + [_final_norm(self.decoder).bias])
        if ready and type(self.decoder) in PARALLEL_LAYERS:
            first = self.decoder.layers[0]
            self._stack.set_parallel(getattr(first, "parallel", True))  # (StableLM's use_parallel_residual)
            config = self.decoder.config  # GELU's exact form (Phi's hidden_act, GPT-J's activation_function)
            activation = getattr(config, "activation_function", None) or getattr(config, "hidden_act", None)
            self._stack.set_exact_gelu(activation == "gelu")
        if ready and head is not None and head.bias is not None:  # Phi's, GPT-J's, CodeGen's, ERNIE 4.5 MoE's
            self._stack.set_head_bias(head.bias)
        if ready and isinstance(self.decoder, CohereModel):  # LayerNorms without biases
            self._stack.set_centred_norms(True)
        if ready and any(getattr(_attention(layer), "use_qk_norm", False) or type(_layer_norms(layer)[-1]) is
                         LayerNormPerHead for layer in self.decoder.layers):  # a weight row a head (Cohere's, StableLM's)
            self._stack.set_qk_norms_per_head(True)
        if ready and type(self.decoder) is Cohere2Model:  # Gemma's per-layer windows, the full layers unrotated
            sliding = [int(layer.is_sliding) for layer in self.decoder.layers]
            self._stack.set_family(False, False, 0.0, 1.0, 1.0, sliding, 0.0)
            self._stack.set_unrotated([int(not layer.self_attn.rotates) for layer in self.decoder.layers])
        if ready and type(self.decoder) is CodeGenModel:  # q/k/v fused in blocks of its shards' heads
            self._stack.set_qkv_per_head(True)
            self._stack.set_qkv_blocks(_attention(self.decoder.layers[0]).n_head // CodeGenConfig.shards, True)
        if ready and type(self.decoder) is GPTNeoXModel:
            self._stack.set_qkv_per_head(True)
            self._stack.set_exact_gelu(self.decoder.config.hidden_act == "gelu")
            self._stack.set_parallel(self.decoder.layers[0].use_parallel_residual)
        if ready and type(self.decoder) in ALIBI_FAMILY_LAYERS:
            self._alibi_family()
        if ready and type(self.decoder) in LAYER_NORM_CLASSES:  # Nemotron's LayerNorms of 1 + w, OLMo's bare ones
            if type(self.decoder) is NemotronModel:
                self._stack.set_family(False, False, 1.0, 1.0, 1.0, [], 0.0)
            norms = [norm for layer in self.decoder.layers for norm in _layer_norms(layer)]
            self._stack.set_norm_biases([_norm_bias(norm) for norm in norms + [_final_norm(self.decoder)]])
        if ready and type(_feed_forward(self.decoder.layers[0])) in UNGATED_MLPS:
            self._stack.set_activation(*_activation(self.decoder))
        attentions = [_attention(layer) for layer in self.decoder.layers]
        self._clipped = [attention for attention in attentions if hasattr(attention, "clip_qkv")]  # OLMo's, OLMoE's
        self._clip = self._clipped[0].clip_qkv if self._clipped else None
        if ready and self._clip is not None:
            self._stack.set_clip_qkv(self._clip)
        blocks = [block for block in map(_feed_forward, self.decoder.layers) if _sparse(block)]
        self._mixture = ready and bool(blocks)
        config = self.decoder.config
        # StarCoder2's dropouts (Seed-OSS has the last two; GPT-NeoX the second and hidden_dropout; StableLM those
        # two; Phi's, GPT-J's and CodeGen's the last three)
        dropouts = ("embedding_dropout", "attention_dropout", "residual_dropout", "hidden_dropout", "embd_pdrop",
                    "resid_pdrop", "attn_pdrop")
        # (PhiMoE's sparsemixer draws its picks while training)
        self._draws_while_training = (any(block.jitter_noise or type(block) is PhimoeSparseMoeBlock for block in blocks)
                                      or learned
                                      or (_layer_normed(self.decoder) or type(self.decoder) is SeedOssModel)
                                      and any(getattr(config, d, 0.0) for d in dropouts))
        if self._mixture:
            block = blocks[0]  # _implemented_layers checked that every block routes alike
            # rounded to the hidden states' dtype (the embedding's), whatever the router's (ERNIE's is float32)
            # (gpt-oss's softmax of the chosen scores alone, in the router's dtype: the renormalized softmax, rounded)
            gpt_oss = type(block) is GptOssMLP
            rounded = ((block.weights_in_model_dtype or gpt_oss)
                       and self.decoder.embed_tokens.weight.dtype == torch.bfloat16)
            self._stack.set_experts(*_gather_experts(self.decoder), block.top_k, block.normalize or gpt_oss, rounded)
            if gpt_oss:  # sinks, experts' biases and layout, the routers' biases, the clamped SwiGLU
                layers = self.decoder.layers
                self._stack.set_sinks([_attention(layer).sinks for layer in layers])
                experts = [_feed_forward(layer).experts for layer in layers]
                biases = [bias for e in experts for pair in zip(e.gate_up_proj_bias, e.down_proj_bias) for bias in pair]
                in_major = type(experts[0].gate_up_proj) is nn.Parameter
                self._stack.set_expert_layout(True, in_major, biases,
                                              [_feed_forward(layer).router.bias for layer in layers])
                self._stack.set_clamped_swiglu(experts[0].alpha, experts[0].limit)
            if isinstance(block, Qwen2MoeSparseMoeBlock):
                self._stack.set_shared_experts([_shared_expert_gate(layer) for layer in self.decoder.layers])
            if type(block) is PhimoeSparseMoeBlock:  # two picks, each by its own masked softmax
                self._stack.set_sparsemixer(True, block.router_jitter_noise)
            if type(block) is Ernie4_5_MoeSparseMoeBlock:  # by probability plus correction, the sum clamped
                self._stack.set_expert_choice(list(map(_correction, self.decoder.layers)), block.norm_min)
            if type(block) is DeepseekV3MoE:  # sigmoid scores plus corrections, by group, the weights scaled
                self._stack.set_expert_choice(list(map(_correction, self.decoder.layers)), 0.0)
                self._stack.set_expert_groups(True, block.n_group, block.topk_group, 2, block.scaling_factor)
        self._layer_count = len(self.decoder.layers)
        if ready:
            self._eps = _layer_norms(self.decoder.layers[0])[1].eps
        self._weight_dtype = _linears(self.decoder.layers[0])[0].weight.dtype if ready else None
        self._current = True
        return self._stack


    def _alibi_family(self) -> None:
        """BLOOM's and Falcon's options of the step (after the LayerNorms' and GELU's): the fused q/k/v's layout,
        Falcon's branches and exact GELU, ALiBi's slopes with every layer unrotated, BLOOM's embedding norm."""
        decoder, stack = self.decoder, self._stack
        first = decoder.layers[0]
        attention = _attention(first)
        falcon = type(decoder) is FalconModel
        if falcon and attention.n_kv_head == 1 < attention.n_head:  # every query head, then the key and the value
            stack.set_fused(True, False)
        else:  # each key/value head's query heads (one for BLOOM's and Falcon-RW's), its key and its value in turn
            stack.set_qkv_per_head(True)
        if falcon:
            stack.set_parallel(first.parallel)
            stack.set_exact_gelu(decoder.config.activation == "gelu")
        if _alibi(decoder):
            # Falcon's reference multiplies slopes rounded to bfloat16 by the positions in bfloat16 and scales the
            # biases with the scores; BLOOM's in float32, rounded to a bfloat16 model's dtype after.
            slopes = alibi_slopes(attention.n_head, torch.device("cpu"))
            rounded = falcon or _embedding(decoder).weight.dtype == torch.bfloat16
            if falcon:
                slopes = slopes.to(torch.bfloat16).float()
            stack.set_alibi(slopes.tolist(), rounded, attention.head_dim**-0.5 if falcon else 1.0)
            stack.set_unrotated([1] * len(decoder.layers))
        norm = _embedding_norm(decoder)
        if norm is not None:
            stack.set_embedding_norm(norm.weight, norm.bias, norm.eps)


class _WatchedDict(dict):
    """A module's `_modules`, `_parameters` or `_buffers` dict that marks the `DecodeStep`s gathering through it
    stale whenever it changes: setattr on the module, register_*, load_state_dict(assign=True), a cast's new
    buffers (nn.Module._apply writes the dict directly) and direct writes all go through these methods.

    A copy or pickle of it is a plain dict (a copied step then holds no tensors: see DecodeStep.__getstate__).
    """

    def __init__(self, items: dict):
        super().__init__(items)
        self.steps = weakref.WeakSet()

    def _changed(self) -> None:
        for step in self.steps:
            step._current = False

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def __ior__(self, other):
        super().__ior__(other)
        self._changed()
        return self

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def popitem(self):
        self._changed()
        return super().popitem()

    def clear(self):
        super().clear()
        self._changed()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key, default=None):
        self._changed()
        return super().setdefault(key, default)

    def __reduce__(self):
        return dict, (dict(self),)


class StepHead(Linear):
    """The language-model head of a model whose decoder takes `DecodeStep`: fed the hidden state of a step that
    also ran the head (decode_step's final norm and product), it returns that step's logits; fed anything else, it
    multiplies as `Linear` does.

    Which steps run the head: those after one whose hidden state this head was fed (`follows_step`). generate's
    loop feeds it every step's, so its first step runs the head here and every later one in the step; a caller of
    the decoder alone (its hidden states never reaching the head) costs at most one product that nobody reads.
    The hidden state fed is recognised by its shape, dtype and values, against a copy the offer keeps (the step's
    tensor, or the head model's `logits_to_keep` slice of it whole): the step's logits are exactly those of such a
    tensor, while a caller that changed the step's tensor in place (inference tensors keep no version to tell)
    gets the head's own product of what it holds now.
    """

    follows_step = False  # this head was fed the hidden state of the last step it was offered
    _offered: tuple | None = None  # (a copy of the hidden state, logits or None) of the last step, until fed

    def offer(self, hidden: torch.Tensor, logits: torch.Tensor | None) -> None:
        """From the step: its hidden state and, when it ran the head, the (vocab,) float32 logits."""
        if self._offered is not None:  # the last step's hidden state never reached this head
            self.follows_step = False
        self._offered = (hidden.clone(), logits)

    def fused_tensors(self) -> tuple | None:
        """(weight, scale) for decode_step to run this head's product, or None where it cannot: a bias, or weights
        in no layout of the kernel's. Read through the module's dicts, as nn.Module's attribute fallback took ~20 us
        an attribute right after a step had streamed the weights through the caches. (Quantized, the weight and
        bias are buffers: see Linear.from_linear.)"""
        tensors = self._buffers if "weight" in self._buffers else self._parameters
        weight, bias = tensors.get("weight"), tensors.get("bias")
        fuses = ((bias is None or bias.dtype in KERNEL_DTYPES and bias.is_cpu) and weight is not None and weight.is_cpu
                 and weight.dtype in KERNEL_WEIGHTS and weight.is_contiguous())
        return (weight, self._buffers.get("scale")) if fuses else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offered, self._offered = self._offered, None
        if offered is not None:
            hidden, logits = offered
            if x.shape == hidden.shape and x.dtype == hidden.dtype and torch.equal(x, hidden):
                self.follows_step = True
                if logits is not None:
                    return logits.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return super().forward(x)


def _library_takes(input_ids: torch.Tensor, cache, table: torch.Tensor) -> bool:
    """What every call of the step asks of its inputs: CPU ids, a growing DynamicCache, float32 or bfloat16
    activations (the embedding `table`'s dtype), no gradients, no torch.compile tracing, the library loaded."""
    return (
        isinstance(cache, DynamicCache) and not cache.is_compileable
        and input_ids.is_cpu
        and table.dtype in KERNEL_DTYPES
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and library.loaded()
    )


def _step_ready(decoder: DecoderModel) -> bool:
    """The layers are the step's, every linear one is the kernel's, all with one weight layout (or int4 and int8
    mixed: a GGUF file's 5-8-bit matrices kept at int8 under int4) and biases only where decode.cpp reads them:
    on any projection of a layer (_gather), but on Phi-3's fused q/k/v alone and on no expert (a bias added there
    after loading would be ignored)."""
    if not _implemented_layers(decoder):
        return False
    linears = [p for layer in decoder.layers for p in _linears(layer) + _experts(layer)]
    layouts = {p.weight.dtype for p in linears} | {w.dtype for layer in decoder.layers for w, _ in _banked(layer)}
    unread = [p for layer in decoder.layers for p in _experts(layer)
              + (_linears(layer)[1:] if type(layer) is Phi3DecoderLayer else [])]
    return (
        all(type(p) is Linear for p in linears)
        and (len(layouts) == 1 or layouts == {torch.int8, torch.uint8})
        and all(p.bias is None for p in unread)
    )


def _follow_length(rotary: nn.Module, reach: int) -> None:
    """Dynamic NTK scaling's tables for a call whose furthest position is reach - 1 (RotaryEmbedding.follow_length,
    as the module's forward follows it); nothing for any other rotary module."""
    if getattr(rotary, "dynamic_after", None) is not None:
        rotary.follow_length(reach)


def _rotary_tables(rotary: nn.Module, reach: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole (cos, sin) tables of a rotary module (layers.RotaryEmbedding) that a call whose furthest position is
    reach - 1 rotates by: longrope's long ones past its original context, as the module's forward picks them."""
    buffers = rotary._buffers
    if rotary.long_after is not None and reach > rotary.long_after:
        return buffers["long_cos"], buffers["long_sin"]
    return buffers["cos"], buffers["sin"]


def _gemma_family(decoder: Gemma2Model) -> tuple:
    """StepWeights.set_family's arguments for every Gemma: sandwich norms (Gemma 2 and 3), GELU, norm weights stored
    as offsets from one, the queries' scale (query_pre_attn_scalar ** -0.5) as a factor on the step's
    1 / sqrt(head_dim), the embedding's scale (sqrt(hidden_size)), which layers slide, and the attention scores'
    soft-cap (Gemma 2's; 0 for none)."""
    attention = decoder.layers[0].self_attn
    sandwich_norms = not isinstance(decoder, (GemmaModel, VaultGemmaModel))
    return (sandwich_norms, True, 1.0, attention.scale * attention.head_dim**0.5, decoder.embed_tokens.scale,
            [int(layer.is_sliding) for layer in decoder.layers], float(attention.softcap or 0.0))


def _norm_weight(norm: nn.Module) -> torch.Tensor:
    """The weight the step reads for a norm: its own, or ones for OLMo's LayerNorm without parameters."""
    if type(norm) is OlmoLayerNorm:
        return torch.ones(norm.normalized_shape)
    if type(norm) is LayerNormPerHead:  # StableLM's: its heads' weights as one (heads, head_dim) tensor
        return torch.stack([head._parameters["weight"] for head in norm.norms]).detach()
    return norm._parameters["weight"]


def _norm_bias(norm: nn.Module) -> torch.Tensor:
    """set_norm_biases' tensor for a LayerNorm: its bias, or zeros for OLMo's without parameters."""
    if type(norm) is OlmoLayerNorm:
        return torch.zeros(norm.normalized_shape)
    if type(norm) is LayerNormPerHead:  # (StableLM's per-head q/k norms: none)
        return torch.zeros(len(norm.norms), norm.norms[0].normalized_shape[0], dtype=norm.norms[0].weight.dtype)
    return norm.bias


def _norm_eps(norm: nn.Module) -> float:
    return norm.norms[0].eps if type(norm) is LayerNormPerHead else norm.eps


def _activation(decoder: DecoderModel) -> tuple[int, list[torch.Tensor]]:
    """StepWeights.set_activation's arguments for a decoder of MLPs without a gate: the kind of their activation and,
    for Apertus's xIELU, each layer's alpha_p, alpha_n, beta and eps."""
    mlps = [_feed_forward(layer) for layer in decoder.layers]
    if type(mlps[0]) is ApertusMLP:
        return XIELU_KIND, [value for mlp in mlps for value in (mlp.act_fn.alpha_p, mlp.act_fn.alpha_n,
                                                                  mlp.act_fn.beta, mlp.act_fn.eps)]
    return ACTIVATION_KINDS[mlps[0].act], []


def _linear_slots(layer: nn.Module) -> list[tuple[nn.Module, str] | None]:
    """(parent, name) of a layer's linear layers in the order decode.cpp's StepWeights takes their weights: q, k, v,
    o, gate, up, down, None for one the layer has not (StarCoder2's gate; a sparse layer's gate, up and down, which
    are its experts', or Qwen2-MoE's its shared expert's); Phi-3's fused ones qkv, o, gate_up, down, GLM's q, k, v, o,
    gate_up, down (StepWeights.set_fused)."""
    if type(layer) is Phi3DecoderLayer:
        return [(layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"), (layer.mlp, "gate_up_proj"),
                (layer.mlp, "down_proj")]
    if type(layer) in (GPTNeoXLayer, BloomBlock, FalconDecoderLayer):  # q/k/v fused, an MLP without a gate
        attention = _attention(layer)
        return [(attention, "query_key_value"), (attention, "dense"), None, (layer.mlp, "dense_h_to_4h"),
                (layer.mlp, "dense_4h_to_h")]
    if type(layer) in (GPT2Block, GPTBigCodeBlock):  # c_attn: q, k, v fused; an MLP without a gate
        return [(layer.attn, "c_attn"), (layer.attn, "c_proj"), None, (layer.mlp, "c_fc"), (layer.mlp, "c_proj")]
    if type(layer) in (OPTDecoderLayer, GPTNeoBlock):  # q, k, v apart; an MLP without a gate
        attention = layer.attn.attention if type(layer) is GPTNeoBlock else layer.self_attn
        mlp = [None, (layer, "fc1"), (layer, "fc2")] if type(layer) is OPTDecoderLayer else [
            None, (layer.mlp, "c_fc"), (layer.mlp, "c_proj")]
        return [(attention, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj")] + mlp
    if type(layer) is CodeGenBlock:  # q/k/v fused in blocks (set_qkv_blocks), an MLP without a gate
        return [(layer.attn, "qkv_proj"), (layer.attn, "out_proj"), None, (layer.mlp, "fc_in"), (layer.mlp, "fc_out")]
    if type(layer) in GATELESS_PROJECTIONS:  # q, k, v, o, an MLP without a gate
        attention_names, mlp_names = GATELESS_PROJECTIONS[type(layer)]
        return ([(_attention(layer), n) for n in attention_names] + [None]
                + [(layer.mlp, n) for n in mlp_names])
    feed_forward, shared = _feed_forward(layer), _shared_mlp(layer)
    if type(shared) is GraniteMoeSharedMLP:  # gate and up rows in one matrix (set_fused)
        mlp = [(shared, "input_linear"), (shared, "output_linear")]
    elif shared is not None:  # its shared expert's, beside its experts (Qwen2-MoE's gated: set_shared_experts)
        mlp = [(shared, n) for n in MLP_PROJECTIONS]
    elif _sparse(feed_forward):  # its gate, up and down are its experts' (set_experts)
        mlp = [None] * 3
    elif type(layer) is Starcoder2DecoderLayer:  # an MLP without a gate
        mlp = [None, (feed_forward, "c_fc"), (feed_forward, "c_proj")]
    elif type(feed_forward) in UNGATED_MLPS:
        mlp = [None, (feed_forward, "up_proj"), (feed_forward, "down_proj")]
    elif type(feed_forward) is Phi3MLP:  # GLM's fused gate/up
        mlp = [(feed_forward, "gate_up_proj"), (feed_forward, "down_proj")]
    else:
        mlp = [(feed_forward, n) for n in MLP_PROJECTIONS]
    return [(layer.self_attn, n) for n in PROJECTIONS] + mlp


def _present(slots: list) -> list:
    return [slot for slot in slots if slot is not None]


def _slot_linears(layer: nn.Module) -> list[nn.Linear | None]:
    """A layer's linear layers in StepWeights' order (_linear_slots), None where it has none."""
    return [None if slot is None else getattr(*slot) for slot in _linear_slots(layer)]


def _linears(layer: nn.Module) -> list[nn.Linear]:
    return _present(_slot_linears(layer))


def _expert_slots(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, name) of a sparse layer's experts' linear layers, gate, up and down of each expert in turn (the order
    of StepWeights.set_experts); none for any other layer."""
    block = _feed_forward(layer)
    if not isinstance(block, SparseMoeBlock):
        return []
    return [(expert, name) for expert in block.experts for name in EXPERT_PROJECTIONS[type(expert)]]


def _experts(layer: nn.Module) -> list[nn.Linear]:
    return [getattr(parent, name) for parent, name in _expert_slots(layer)]


def _query_key_value_count(layer: nn.Module) -> int:
    """How many of a layer's first linear layers (_linear_slots) make its queries, keys and values."""
    return 1 if type(layer) in FUSED_QKV_LAYERS or type(layer) is CodeGenBlock else 3


def _gather(decoder: DecoderModel) -> tuple[list, list, list, list]:
    """StepWeights' tensors. Biases: none where no projection has one; q, k and v's where only those have them
    (Qwen2's); else every projection's (StarCoder2's use_bias). An empty tensor marks what a layer has not: a
    norm (OLMo 2's inputs'), a matrix (StarCoder2's gate; a sparse layer's MLP, which its experts are), a bias."""
    norms, weights, scales, biases = [], [], [], []
    empty = torch.empty(0)
    layers = [(layer, _slot_linears(layer)) for layer in decoder.layers]
    any_bias = any(p is not None and p.bias is not None for _, linears in layers for p in linears)
    beyond_qkv = any(p is not None and p.bias is not None
                     for layer, linears in layers for p in linears[_query_key_value_count(layer):])
    for layer, linears in layers:
        norms += (empty if norm is None else _norm_weight(norm) for norm in _layer_norms(layer))
        weights += (empty if p is None else p.weight for p in linears)
        if linears[0].scale is not None:
            scales += (empty if p is None else p.scale for p in linears)
        if any_bias:
            biased = linears if beyond_qkv else linears[:_query_key_value_count(layer)]
            biases += (empty if p is None or p.bias is None else p.bias for p in biased)
    return norms, weights, scales, biases


def _gpt_oss_views(block: GptOssMLP) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """_banked's views of gpt-oss's experts (set_expert_layout): each expert's gate_up matrix, its gate and up rows
    alternating, as its gate, an empty tensor as its up, and its down matrix; the float stacks' as stored, (in, out),
    the packed ones' (out, in) with their scales."""
    views = []
    for stack in (block.experts.gate_up_proj, block.experts.down_proj):
        packed = isinstance(stack, PackedExperts)
        views.append([(w, s) for w, s in zip(stack.weight, stack.scale)] if packed else [(w, None) for w in stack.detach()])
    weight, scale = views[0][0]
    nothing = (torch.empty(0, dtype=weight.dtype), None if scale is None else torch.empty(0, dtype=scale.dtype))
    return [view for gate_up, down in zip(*views) for view in (gate_up, nothing, down)]


def _banked(layer: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, scale or None) of a sparse layer whose experts are held as 3-D banks (Granite MoE's input_linear and
    output_linear), gate, up and down of each expert in turn, as views of the banks (nothing copied): each expert's
    gate rows and up rows of input_linear and its output_linear matrix, or, packed (kernels.PackedExperts), those rows
    of the packed weights and of their scales. None for any other layer. A bank given new data (`.data =`) is read
    again only when the step gathers its tensors again; a bank changed in place is read as it is."""
    block = _feed_forward(layer)
    if type(block) is GptOssMLP:
        return _gpt_oss_views(block)
    if type(block) is not GraniteMoeMoE:
        return []

    def bank(experts: StackedExperts) -> tuple[torch.Tensor, torch.Tensor | None]:
        held = experts.weight
        return (held.weight, held.scale) if isinstance(held, PackedExperts) else (held.detach(), None)

    (gate_up, gate_up_scale), (down, down_scale) = bank(block.input_linear), bank(block.output_linear)
    width = gate_up.shape[1] // 2
    views = []
    for e in range(gate_up.shape[0]):
        for rows in (slice(0, width), slice(width, 2 * width), slice(None)):
            weight, scale = (gate_up, gate_up_scale) if rows.stop is not None else (down, down_scale)
            views.append((weight[e, rows], None if scale is None else scale[e, rows]))
    return views


def _gather_experts(decoder: DecoderModel) -> tuple[list, list, list]:
    """StepWeights.set_experts' tensors: each layer's router (an empty tensor for a dense layer), the sparse layers'
    experts' weights (gate, up and down of each) and their scales when quantized."""
    routers, weights, scales = [], [], []
    for layer in decoder.layers:
        block = _feed_forward(layer)
        routers.append(_router(block).weight if _sparse(block) else torch.empty(0))
        experts = [(p.weight, p.scale) for p in _experts(layer)] + _banked(layer)
        weights += (weight for weight, _ in experts)
        scales += (scale for _, scale in experts if scale is not None)
    return routers, weights, scales


def _sparse(block: nn.Module) -> bool:
    """Whether a layer's feed-forward part is a mixture of experts the step runs (set_experts)."""
    return isinstance(block, (SparseMoeBlock, GraniteMoeMoE, GptOssMLP))


def _router(block: nn.Module) -> nn.Module:
    """A sparse block's router (a Router, or a FloatRouter: ERNIE 4.5 MoE's and Hunyuan-MoE's, in float32)."""
    if type(block) is GraniteMoeMoE:
        return block.router.layer
    if type(block) is GptOssMLP:
        return block.router
    return block.gate.wg if type(block) is HunYuanMoEV1Moe else block.gate


def _shared_mlp(layer: nn.Module) -> nn.Module | None:
    """A sparse layer's shared expert, which every token runs beside the chosen ones (Qwen2-MoE's gated one, ERNIE 4.5
    MoE's, Hunyuan-MoE's and Granite MoE shared's without a gate), or None."""
    if type(layer) is GraniteMoeSharedDecoderLayer:
        return layer.shared_mlp
    block = _feed_forward(layer)
    name = {Qwen2MoeSparseMoeBlock: "shared_expert", Ernie4_5_MoeSparseMoeBlock: "shared_experts",
            HunYuanMoEV1Moe: "shared_mlp", DeepseekV3MoE: "shared_experts"}.get(type(block))
    return None if name is None else getattr(block, name)


def _correction(layer: nn.Module) -> torch.Tensor:
    """StepWeights.set_expert_choice's correction for a layer: ERNIE 4.5 MoE's bias per expert, or an empty tensor."""
    block = _feed_forward(layer)
    if type(block) is Ernie4_5_MoeSparseMoeBlock:
        return block.moe_statics.e_score_correction_bias
    if type(block) is DeepseekV3MoE:
        return block.gate.e_score_correction_bias
    return torch.empty(0)


def _shared_expert_gate(layer: nn.Module) -> torch.Tensor:
    """StepWeights.set_shared_experts' tensor for a layer: its shared expert's gate (1, hidden), or an empty tensor."""
    block = _feed_forward(layer)
    return block.shared_expert_gate.weight if type(block) is Qwen2MoeSparseMoeBlock else torch.empty(0)

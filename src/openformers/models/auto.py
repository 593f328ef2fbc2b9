"""The Auto classes: pick the config and model classes from the checkpoint's `model_type` (or GGUF architecture).

Adding a model family takes three pieces, each in its layer:
1. its config: a dataclass in `configs.py` (fields with the reference's names and defaults, `validate()` naming the
   field and value it refuses) and a row in `configs.CONFIG_CLASSES`;
2. its model file, `models/<family>.py`, in plain torch.nn: the layers and base model under the reference's
   parameter names, a `<Family>PreTrainedModel` (its `base_model_prefix`, and `new_base_model(config)` building
   the base model), the language-model head, and the task heads as one-line classes over models/heads.py
   (`class FooForTokenClassification(FooPreTrainedModel, TokenClassification)`, with `projection_name` where the
   reference names the projection otherwise); a family that loads from GGUF also holds there its
   `config_from_gguf` (registered in `configs.GGUF_CONFIG_READERS`) and its tensor renames;
3. a row in `MODEL_CLASSES` below: the module and the reference's class name for each task (and its import here).
Its public names go in the table of `openformers/__init__.py`. The tests load a tiny random model of the reference
and compare outputs and losses, and save it back for the reference to load (tests/test_models_heads.py).
"""

import os
from collections import OrderedDict
from collections.abc import Mapping

from ..configs import CONFIG_CLASSES, PretrainedConfig, config_class_for
from . import bert, gpt2, llama  # each family registers what it reads (llama: its GGUF architectures)
from . import phi3
from . import qwen3
from . import smollm3
from . import granite, granitemoe, granitemoehybrid
from . import bamba, falcon_h1, jamba
from . import seed_oss
from . import arcee
from . import bitnet
from . import helium
from . import hunyuan_v1_dense
from . import ministral, ministral3
from . import apertus
from . import exaone4
from . import mixtral, qwen3_moe, qwen2_moe
from . import phimoe
from . import deepseek_v3, deepseek_v2
from . import ernie4_5, ernie4_5_moe
from . import gemma, vaultgemma
from . import distilbert
from . import xlm_roberta
from . import camembert
from . import albert, electra, mpnet
from . import roformer
from . import olmo, olmo2, olmo3, olmoe  # olmo3 after olmo2: it reads OLMo 3's "olmo2" GGUF files
from . import starcoder2
from . import gpt_neox
from . import mamba, falcon_mamba, mamba2
from . import lfm2, lfm2_moe
from . import falcon
from . import gptj
from . import gpt_neo
from . import codegen
from . import opt
from . import bloom
from . import phi
from . import stablelm
from . import gpt_oss
from . import cohere
from . import cohere2
from . import nemotron
from . import glm, glm4_moe
from . import dots1
from . import hunyuan_v1_moe
from . import gpt_bigcode
from . import bart, marian, m2m_100, mbart, pegasus
from . import t5
from . import blenderbot, blenderbot_small, umt5
from . import modernbert
from . import deberta_v2
from . import mobilebert
from . import ernie
from . import roberta_prelayernorm, xlm_roberta_xl, megatron_bert
from . import nomic_bert, gte, eurobert, jina_embeddings_v3
from .base import PreTrainedModel, load_pretrained


def _decoder_classes(family: str) -> dict[str, str]:
    """The task -> class-name table of a Llama-style family ("Mistral" -> MistralForCausalLM...)."""
    return {
        "base": f"{family}Model",
        "causal-lm": f"{family}ForCausalLM",
        "sequence-classification": f"{family}ForSequenceClassification",
        "token-classification": f"{family}ForTokenClassification",
        "question-answering": f"{family}ForQuestionAnswering",
    }


def _encoder_classes(family: str) -> dict[str, str]:
    """The task -> class-name table of a BERT-style family ("Roberta" -> RobertaForMaskedLM...)."""
    return {
        "base": f"{family}Model",
        "causal-lm": "BertLMHeadModel" if family == "Bert" else f"{family}ForCausalLM",
        "masked-lm": f"{family}ForMaskedLM",
        "sequence-classification": f"{family}ForSequenceClassification",
        "token-classification": f"{family}ForTokenClassification",
        "question-answering": f"{family}ForQuestionAnswering",
        "multiple-choice": f"{family}ForMultipleChoice",
    }


# model_type -> (model file, {task: class name}): the reference's Auto mappings for our families.
MODEL_CLASSES = {
    "llama": (llama, _decoder_classes("Llama")),
    "mistral": (llama, _decoder_classes("Mistral")),  # Llama with a sliding window
    "ministral": (ministral, _decoder_classes("Ministral")),  # Mistral with sliding and full layers
    "ministral3": (ministral3, _decoder_classes("Ministral3")),  # Mistral with queries scaled by position
    "qwen2": (llama, _decoder_classes("Qwen2")),  # Llama with q/k/v biases
    "qwen3": (qwen3, _decoder_classes("Qwen3")),  # Llama with q/k norms per head
    "smollm3": (smollm3, _decoder_classes("SmolLM3")),  # Llama with unrotated layers
    "granite": (granite, {  # Llama with four scalar multipliers; the reference has no other head for Granite
        "base": "GraniteModel",
        "causal-lm": "GraniteForCausalLM",
    }),
    "seed_oss": (seed_oss, _decoder_classes("SeedOss")),  # Llama with q/k/v biases and residual dropout
    "arcee": (arcee, _decoder_classes("Arcee")),  # Llama with an MLP without a gate (AFM-4.5B)
    "bitnet": (bitnet, {  # Llama with sub-norms and ternary linear maps; the reference has no other head for it
        "base": "BitNetModel",
        "causal-lm": "BitNetForCausalLM",
    }),
    "helium": (helium, {  # Llama with interleaved rotary pairs; the reference has no QA head for it
        "base": "HeliumModel",
        "causal-lm": "HeliumForCausalLM",
        "sequence-classification": "HeliumForSequenceClassification",
        "token-classification": "HeliumForTokenClassification",
    }),
    "hunyuan_v1_dense": (hunyuan_v1_dense, {  # Llama with q/k norms per head after the rotation; these heads
        "base": "HunYuanDenseV1Model",
        "causal-lm": "HunYuanDenseV1ForCausalLM",
        "sequence-classification": "HunYuanDenseV1ForSequenceClassification",
    }),
    "hunyuan_v1_moe": (hunyuan_v1_moe, {  # Hunyuan dense's attention, softmax-routed experts and a shared MLP
        "base": "HunYuanMoEV1Model",
        "causal-lm": "HunYuanMoEV1ForCausalLM",
        "sequence-classification": "HunYuanMoEV1ForSequenceClassification",
    }),
    "dots1": (dots1, {  # Qwen3's attention, DeepSeek-V3's experts; the reference has these two classes
        "base": "Dots1Model",
        "causal-lm": "Dots1ForCausalLM",
    }),
    "apertus": (apertus, {  # Qwen3's q/k norms and an MLP without gate, xIELU's; these heads
        "base": "ApertusModel",
        "causal-lm": "ApertusForCausalLM",
        "token-classification": "ApertusForTokenClassification",
    }),
    "exaone": (llama, {  # EXAONE 3.0/3.5: Llama under other checkpoint names; the reference runs Llama's classes
        "base": "LlamaModel",
        "causal-lm": "LlamaForCausalLM",
    }),
    "internlm3": (llama, {  # InternLM3: Llama's network (dynamic NTK rope scaling); the reference runs Llama's classes
        "base": "LlamaModel",
        "causal-lm": "LlamaForCausalLM",
    }),
    # q/k norms, norms after each branch, unrotated full layers
    "exaone4": (exaone4, {**_decoder_classes("Exaone4"), "pretraining": "Exaone4ForCausalLM"}),
    "granitemoe": (granitemoe, {  # Granite with a sparse mixture of experts; the reference has these two classes
        "base": "GraniteMoeModel",
        "causal-lm": "GraniteMoeForCausalLM",
    }),
    "granitemoeshared": (granitemoe, {  # Granite MoE with a shared expert; the same two classes
        "base": "GraniteMoeSharedModel",
        "causal-lm": "GraniteMoeSharedForCausalLM",
    }),
    "granitemoehybrid": (granitemoehybrid, {  # Granite 4: Mamba-2 and attention layers; the same two classes
        "base": "GraniteMoeHybridModel",
        "causal-lm": "GraniteMoeHybridForCausalLM",
    }),
    "bamba": (bamba, {  # Mamba-2 and attention layers, each with a SwiGLU MLP; the reference's two classes
        "base": "BambaModel",
        "causal-lm": "BambaForCausalLM",
    }),
    "jamba": (jamba, {  # Mamba and attention layers, each with an MLP or experts; the reference's three classes
        "base": "JambaModel",
        "causal-lm": "JambaForCausalLM",
        "sequence-classification": "JambaForSequenceClassification",
    }),
    "falcon_h1": (falcon_h1, {  # attention and a Mamba-2 mixer side by side in every layer; the same two classes
        "base": "FalconH1Model",
        "causal-lm": "FalconH1ForCausalLM",
    }),
    "mixtral": (mixtral, _decoder_classes("Mixtral")),  # Mistral with a sparse mixture of experts
    "phimoe": (phimoe, {  # Mixtral with LayerNorms, biases and sparsemixer routing; the reference's three classes
        "base": "PhimoeModel",
        "causal-lm": "PhimoeForCausalLM",
        "sequence-classification": "PhimoeForSequenceClassification",
    }),
    "qwen3_moe": (qwen3_moe, _decoder_classes("Qwen3Moe")),  # Qwen3 with a sparse mixture of experts
    "qwen2_moe": (qwen2_moe, _decoder_classes("Qwen2Moe")),  # Qwen2 with experts and a shared expert
    "deepseek_v3": (deepseek_v3, {  # latent attention, grouped routing; the reference has no QA head for it
        "base": "DeepseekV3Model",
        "causal-lm": "DeepseekV3ForCausalLM",
        "sequence-classification": "DeepseekV3ForSequenceClassification",
        "token-classification": "DeepseekV3ForTokenClassification",
    }),
    "deepseek_v2": (deepseek_v2, {  # V3's attention, softmax routing; the reference has these three heads
        "base": "DeepseekV2Model",
        "causal-lm": "DeepseekV2ForCausalLM",
        "sequence-classification": "DeepseekV2ForSequenceClassification",
    }),
    "ernie4_5": (ernie4_5, {  # Llama with interleaved rotary pairs and use_bias; the reference has no other head
        "base": "Ernie4_5Model",
        "causal-lm": "Ernie4_5ForCausalLM",
    }),
    "ernie4_5_moe": (ernie4_5_moe, {  # ERNIE 4.5 with experts and shared experts; the reference has no other head
        "base": "Ernie4_5_MoeModel",
        "causal-lm": "Ernie4_5_MoeForCausalLM",
    }),
    "phi3": (phi3, {  # Phi-3 and Phi-4; the reference has no QA head for them
        "base": "Phi3Model",
        "causal-lm": "Phi3ForCausalLM",
        "sequence-classification": "Phi3ForSequenceClassification",
        "token-classification": "Phi3ForTokenClassification",
    }),
    "gemma": (gemma, {  # the reference has no QA head for Gemma
        "base": "GemmaModel",
        "causal-lm": "GemmaForCausalLM",
        "sequence-classification": "GemmaForSequenceClassification",
        "token-classification": "GemmaForTokenClassification",
    }),
    "gemma2": (gemma, {  # the reference has no QA head for Gemma 2
        "base": "Gemma2Model",
        "causal-lm": "Gemma2ForCausalLM",
        "sequence-classification": "Gemma2ForSequenceClassification",
        "token-classification": "Gemma2ForTokenClassification",
    }),
    "gemma3_text": (gemma, {  # Gemma 3's text decoder; the reference has these three heads for it
        "base": "Gemma3TextModel",
        "causal-lm": "Gemma3ForCausalLM",
        "sequence-classification": "Gemma3TextForSequenceClassification",
    }),
    "vaultgemma": (vaultgemma, {  # Gemma 2 without the norms after each branch; the reference has these two classes
        "base": "VaultGemmaModel",
        "causal-lm": "VaultGemmaForCausalLM",
    }),
    "gpt2": (gpt2, {
        "base": "GPT2Model",
        "causal-lm": "GPT2LMHeadModel",
        "pretraining": "GPT2LMHeadModel",
        "sequence-classification": "GPT2ForSequenceClassification",
        "token-classification": "GPT2ForTokenClassification",
        "question-answering": "GPT2ForQuestionAnswering",
    }),
    "bert": (bert, {
        **_encoder_classes("Bert"),
        "pretraining": "BertForPreTraining",
        "next-sentence-prediction": "BertForNextSentencePrediction",
    }),
    "roberta": (bert, {**_encoder_classes("Roberta"), "pretraining": "RobertaForMaskedLM"}),
    "megatron-bert": (megatron_bert, {  # pre-LayerNorm BERT
        **_encoder_classes("MegatronBert"),
        "pretraining": "MegatronBertForPreTraining",
        "next-sentence-prediction": "MegatronBertForNextSentencePrediction",
    }),
    "nomic_bert": (nomic_bert, {  # rotary BERT: masked LM and classifiers only, as the reference
        task: _encoder_classes("NomicBert")[task]
        for task in ("base", "masked-lm", "sequence-classification", "token-classification")
    }),
    "gte": (gte, {task: _encoder_classes("Gte")[task]
                  for task in ("base", "masked-lm", "sequence-classification", "token-classification")}),
    "jina_embeddings_v3": (jina_embeddings_v3, {  # RoBERTa's heads over the rotary encoder
        task: _encoder_classes("JinaEmbeddingsV3")[task] for task in (
            "base", "masked-lm", "sequence-classification", "token-classification", "question-answering")
    }),
    "eurobert": (eurobert, {task: _encoder_classes("EuroBert")[task]  # Llama's layers as an encoder
                            for task in ("base", "masked-lm", "sequence-classification", "token-classification")}),
    "ernie": (ernie, {  # ERNIE 1.0-3.0, BERT's heads (ERNIE 4.5 is "ernie4_5")
        **_encoder_classes("Ernie"),
        "pretraining": "ErnieForPreTraining",
        "next-sentence-prediction": "ErnieForNextSentencePrediction",
    }),
    "distilbert": (distilbert, {  # an encoder without a causal-LM head
        **{task: name for task, name in _encoder_classes("DistilBert").items() if task != "causal-lm"},
        "pretraining": "DistilBertForMaskedLM",
    }),
    "xlm-roberta": (xlm_roberta, {**_encoder_classes("XLMRoberta"), "pretraining": "XLMRobertaForMaskedLM"}),
    "camembert": (camembert, {**_encoder_classes("Camembert"), "pretraining": "CamembertForMaskedLM"}),
    "roberta-prelayernorm": (roberta_prelayernorm, {
        **_encoder_classes("RobertaPreLayerNorm"), "pretraining": "RobertaPreLayerNormForMaskedLM",
    }),
    "xlm-roberta-xl": (xlm_roberta_xl, {**_encoder_classes("XLMRobertaXL"), "pretraining": "XLMRobertaXLForMaskedLM"}),
    "deberta-v2": (deberta_v2, {  # no causal-LM head; pretraining is the masked LM
        **{task: name for task, name in _encoder_classes("DebertaV2").items() if task != "causal-lm"},
        "pretraining": "DebertaV2ForMaskedLM",
    }),
    "deberta": (deberta_v2, {  # v1: no causal-LM or multiple-choice head
        **{task: name for task, name in _encoder_classes("Deberta").items()
           if task not in ("causal-lm", "multiple-choice")},
        "pretraining": "DebertaForMaskedLM",
    }),
    "albert": (albert, {  # no causal-LM head; pretraining adds sentence-order prediction
        **{task: name for task, name in _encoder_classes("Albert").items() if task != "causal-lm"},
        "pretraining": "AlbertForPreTraining",
    }),
    "mobilebert": (mobilebert, {  # no causal-LM head
        **{task: name for task, name in _encoder_classes("MobileBert").items() if task != "causal-lm"},
        "pretraining": "MobileBertForPreTraining", "next-sentence-prediction": "MobileBertForNextSentencePrediction",
    }),
    "electra": (electra, {**_encoder_classes("Electra"), "pretraining": "ElectraForPreTraining"}),  # discriminator
    "roformer": (roformer, _encoder_classes("RoFormer")),
    "mpnet": (mpnet, {  # no causal-LM head
        **{task: name for task, name in _encoder_classes("MPNet").items() if task != "causal-lm"},
        "pretraining": "MPNetForMaskedLM",
    }),
    "olmo2": (olmo2, {  # Llama with its norms after each branch; the reference has these three heads
        "base": "Olmo2Model",
        "causal-lm": "Olmo2ForCausalLM",
        "sequence-classification": "Olmo2ForSequenceClassification",
    }),
    "olmo": (olmo, {  # Llama with parameter-free LayerNorms; the reference has these three heads
        "base": "OlmoModel",
        "causal-lm": "OlmoForCausalLM",
        "sequence-classification": "OlmoForSequenceClassification",
    }),
    "olmo3": (olmo3, {  # OLMo 2 with sliding-window layers; the reference has these three heads
        "base": "Olmo3Model",
        "causal-lm": "Olmo3ForCausalLM",
        "sequence-classification": "Olmo3ForSequenceClassification",
    }),
    "olmoe": (olmoe, {  # OLMo's attention with q/k norms and a sparse mixture of experts; a causal LM only
        "base": "OlmoeModel",
        "causal-lm": "OlmoeForCausalLM",
    }),
    "starcoder2": (starcoder2, {  # LayerNorms, a plain MLP, biases; the reference has no QA head for it
        "base": "Starcoder2Model",
        "causal-lm": "Starcoder2ForCausalLM",
        "sequence-classification": "Starcoder2ForSequenceClassification",
        "token-classification": "Starcoder2ForTokenClassification",
    }),
    "gpt_neox": (gpt_neox, _decoder_classes("GPTNeoX")),  # GPT-NeoX and Pythia
    "falcon": (falcon, _decoder_classes("Falcon")),
    "mamba": (mamba, {  # a state-space decoder, no attention; the reference has no other head for Mamba
        "base": "MambaModel",
        "causal-lm": "MambaForCausalLM",
        "pretraining": "MambaForCausalLM",
    }),
    "falcon_mamba": (falcon_mamba, {  # Mamba with its time step, B and C RMS-normalized
        "base": "FalconMambaModel",
        "causal-lm": "FalconMambaForCausalLM",
        "pretraining": "FalconMambaForCausalLM",
    }),
    "mamba2": (mamba2, {  # the state-space duality mixer; the reference has no other head for Mamba-2
        "base": "Mamba2Model",
        "causal-lm": "Mamba2ForCausalLM",
        "pretraining": "Mamba2ForCausalLM",
    }),
    "lfm2": (lfm2, {  # gated short convolutions and attention; the reference has no other head for LFM2
        "base": "Lfm2Model",
        "causal-lm": "Lfm2ForCausalLM",
    }),
    "lfm2_moe": (lfm2_moe, {  # LFM2 with a mixture of experts after the first dense layers
        "base": "Lfm2MoeModel",
        "causal-lm": "Lfm2MoeForCausalLM",
    }),
    "gptj": (gptj, {  # GPT-J; the reference has no token-classification head for it
        "base": "GPTJModel",
        "causal-lm": "GPTJForCausalLM",
        "sequence-classification": "GPTJForSequenceClassification",
        "question-answering": "GPTJForQuestionAnswering",
    }),
    "gpt_neo": (gpt_neo, _decoder_classes("GPTNeo")),  # EleutherAI's GPT-Neo 125M, 1.3B, 2.7B
    "codegen": (codegen, {"base": "CodeGenModel", "causal-lm": "CodeGenForCausalLM"}),  # the reference's two
    "opt": (opt, {  # the reference has no token classification head for OPT
        "base": "OPTModel",
        "causal-lm": "OPTForCausalLM",
        "sequence-classification": "OPTForSequenceClassification",
        "question-answering": "OPTForQuestionAnswering",
    }),
    "bloom": (bloom, {**_decoder_classes("Bloom"), "pretraining": "BloomForCausalLM"}),
    "gpt_bigcode": (gpt_bigcode, {  # StarCoder, SantaCoder...; the reference has no QA head for them
        "base": "GPTBigCodeModel",
        "causal-lm": "GPTBigCodeForCausalLM",
        "pretraining": "GPTBigCodeForCausalLM",
        "sequence-classification": "GPTBigCodeForSequenceClassification",
        "token-classification": "GPTBigCodeForTokenClassification",
    }),
    "phi": (phi, {  # Phi-1, Phi-1.5 and Phi-2; the reference has no QA head for them
        "base": "PhiModel",
        "causal-lm": "PhiForCausalLM",
        "sequence-classification": "PhiForSequenceClassification",
        "token-classification": "PhiForTokenClassification",
    }),
    "stablelm": (stablelm, {  # StableLM-3B-4E1T, Stable Code 3B, StableLM 2; the reference has no QA head for them
        "base": "StableLmModel",
        "causal-lm": "StableLmForCausalLM",
        "sequence-classification": "StableLmForSequenceClassification",
        "token-classification": "StableLmForTokenClassification",
    }),
    "glm": (glm, {  # GLM-4 (glm-4-9b-chat-hf, glm-edge); the reference has no QA head for it
        "base": "GlmModel",
        "causal-lm": "GlmForCausalLM",
        "sequence-classification": "GlmForSequenceClassification",
        "token-classification": "GlmForTokenClassification",
    }),
    "glm4": (glm, {  # GLM-4-0414 and GLM-Z1; the reference has no QA head for them
        "base": "Glm4Model",
        "causal-lm": "Glm4ForCausalLM",
        "sequence-classification": "Glm4ForSequenceClassification",
        "token-classification": "Glm4ForTokenClassification",
    }),
    "glm4_moe": (glm4_moe, {  # GLM-4.5, GLM-4.5-Air, GLM-4.6; the reference has these two classes
        "base": "Glm4MoeModel",
        "causal-lm": "Glm4MoeForCausalLM",
    }),
    "gpt_oss": (gpt_oss, {  # gpt-oss-20b and gpt-oss-120b; the reference has no QA head for them
        "base": "GptOssModel",
        "causal-lm": "GptOssForCausalLM",
        "sequence-classification": "GptOssForSequenceClassification",
        "token-classification": "GptOssForTokenClassification",
    }),
    "cohere": (cohere, {  # Command R, Command R+, Aya; the reference has a causal LM only
        "base": "CohereModel",
        "causal-lm": "CohereForCausalLM",
    }),
    "cohere2": (cohere2, {  # Command R7B, Command A; the reference has a causal LM only
        "base": "Cohere2Model",
        "causal-lm": "Cohere2ForCausalLM",
    }),
    "nemotron": (nemotron, _decoder_classes("Nemotron")),  # Minitron, Nemotron-Mini
    "bart": (bart, {  # an encoder-decoder; the reference maps masked LM and pre-training to the seq2seq LM too
        "base": "BartModel",
        "seq2seq-lm": "BartForConditionalGeneration",
        "masked-lm": "BartForConditionalGeneration",
        "pretraining": "BartForConditionalGeneration",
        "causal-lm": "BartForCausalLM",
        "sequence-classification": "BartForSequenceClassification",
        "question-answering": "BartForQuestionAnswering",
    }),
    "marian": (marian, {  # Helsinki-NLP's opus-mt translation models; the reference has no classification heads
        "base": "MarianModel",
        "seq2seq-lm": "MarianMTModel",
        "causal-lm": "MarianForCausalLM",
    }),
    "m2m_100": (m2m_100, {  # M2M100 and NLLB translation models; the reference has no other head
        "base": "M2M100Model",
        "seq2seq-lm": "M2M100ForConditionalGeneration",
    }),
    "mbart": (mbart, {  # mBART and mBART-50; as BART's, the masked LM is the seq2seq LM (no pre-training head)
        "base": "MBartModel",
        "seq2seq-lm": "MBartForConditionalGeneration",
        "masked-lm": "MBartForConditionalGeneration",
        "causal-lm": "MBartForCausalLM",
        "sequence-classification": "MBartForSequenceClassification",
        "question-answering": "MBartForQuestionAnswering",
    }),
    "pegasus": (pegasus, {  # summarization; the reference has no classification heads for Pegasus
        "base": "PegasusModel",
        "seq2seq-lm": "PegasusForConditionalGeneration",
        "causal-lm": "PegasusForCausalLM",
    }),
    "t5": (t5, {  # T5 and Flan-T5; the seq2seq LM is also the pre-training head
        "base": "T5Model",
        "seq2seq-lm": "T5ForConditionalGeneration",
        "pretraining": "T5ForConditionalGeneration",
        "sequence-classification": "T5ForSequenceClassification",
        "token-classification": "T5ForTokenClassification",
        "question-answering": "T5ForQuestionAnswering",
    }),
    "mt5": (t5, {
        "base": "MT5Model",
        "seq2seq-lm": "MT5ForConditionalGeneration",
        "sequence-classification": "MT5ForSequenceClassification",
        "token-classification": "MT5ForTokenClassification",
        "question-answering": "MT5ForQuestionAnswering",
    }),
    "umt5": (umt5, {  # the reference also has UMT5EncoderModel, with no Auto class
        "base": "UMT5Model",
        "seq2seq-lm": "UMT5ForConditionalGeneration",
        "sequence-classification": "UMT5ForSequenceClassification",
        "token-classification": "UMT5ForTokenClassification",
        "question-answering": "UMT5ForQuestionAnswering",
    }),
    "blenderbot": (blenderbot, {  # open-domain chat; the reference has no classification heads
        "base": "BlenderbotModel",
        "seq2seq-lm": "BlenderbotForConditionalGeneration",
        "causal-lm": "BlenderbotForCausalLM",
    }),
    "blenderbot-small": (blenderbot_small, {
        "base": "BlenderbotSmallModel",
        "seq2seq-lm": "BlenderbotSmallForConditionalGeneration",
        "causal-lm": "BlenderbotSmallForCausalLM",
    }),
    "modernbert": (modernbert, {  # an encoder without causal-LM or pre-training heads
        task: name for task, name in _encoder_classes("ModernBert").items() if task != "causal-lm"
    }),
}


def model_class_for(model_type: str, task: str, source) -> type[PreTrainedModel]:
    if model_type not in MODEL_CLASSES:
        raise ValueError(
            f"{source} holds a {model_type!r} model, which openformers does not support; supported model types: "
            f"{', '.join(sorted(MODEL_CLASSES))}."
        )
    module, classes = MODEL_CLASSES[model_type]
    if task not in classes:
        raise ValueError(f"openformers has no {task} class for {model_type!r} models; it has: {', '.join(classes)}.")
    return getattr(module, classes[task])


class AutoConfig:
    """Read the config of a model folder, a GGUF file or a Hub id, as the class its `model_type` names."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs) -> PretrainedConfig:
        """Options as `PretrainedConfig.from_pretrained` (gguf_file, revision, cache_dir, local_files_only, token);
        other keyword arguments override the config's values."""
        return PretrainedConfig.from_pretrained(name_or_path, **kwargs)

    @staticmethod
    def for_model(model_type: str, *args, **values) -> PretrainedConfig:
        """A new config of the class `model_type` names, built with these values."""
        return config_class_for(model_type, "AutoConfig.for_model()")(*args, **values)

    @staticmethod
    def register(model_type: str, config_class: type[PretrainedConfig], exist_ok: bool = False) -> None:
        """Make `model_type` (a user's own config class) known to AutoConfig and to from_pretrained."""
        if not (isinstance(config_class, type) and issubclass(config_class, PretrainedConfig)):
            raise TypeError(f"AutoConfig.register needs a PretrainedConfig subclass, got {config_class!r}.")
        if config_class.model_type != model_type:
            raise ValueError(f"AutoConfig.register({model_type!r}, {config_class.__name__}): the class says "
                             f"model_type={config_class.model_type!r}; register it under that name.")
        if model_type in CONFIG_CLASSES and not exist_ok and CONFIG_CLASSES[model_type] is not config_class:
            raise ValueError(f"model_type {model_type!r} is already registered to {CONFIG_CLASSES[model_type].__name__}; "
                             "pass exist_ok=True to replace it.")
        CONFIG_CLASSES[model_type] = config_class


class _AutoModelClass:
    task = ""

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(...).")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
        """Load with the class the checkpoint's config names; the options are those of `load_pretrained`."""
        return load_pretrained(lambda config, source: model_class_for(config.model_type, cls.task, source),
                               name_or_path, **kwargs)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs) -> PreTrainedModel:
        """A model with freshly initialized weights, of the class the config's `model_type` names."""
        return model_class_for(config.model_type, cls.task, "the config").from_config(config, **kwargs)


class AutoModel(_AutoModelClass):
    """The base model (hidden states, no head)."""

    task = "base"


class AutoModelForCausalLM(_AutoModelClass):
    """The model with its language-model head, for `generate`."""

    task = "causal-lm"


class AutoModelForSeq2SeqLM(_AutoModelClass):
    """An encoder-decoder with its language-model head (BART, T5), for summarization and translation."""

    task = "seq2seq-lm"


class AutoModelForSequenceClassification(_AutoModelClass):
    """One label (or score, when num_labels == 1) per sequence; pass num_labels=N to size a new head."""

    task = "sequence-classification"


class AutoModelForTokenClassification(_AutoModelClass):
    """One label per token, for named entity recognition and tagging."""

    task = "token-classification"


class AutoModelForQuestionAnswering(_AutoModelClass):
    """Extractive question answering: start and end logits over the tokens."""

    task = "question-answering"


class AutoModelForMaskedLM(_AutoModelClass):
    """Masked language modeling (BERT, RoBERTa): logits over the vocabulary at every position."""

    task = "masked-lm"


class AutoModelForMultipleChoice(_AutoModelClass):
    """One score per choice: inputs shaped (batch, num_choices, length) give logits (batch, num_choices)."""

    task = "multiple-choice"


class AutoModelForNextSentencePrediction(_AutoModelClass):
    """BERT's next-sentence head: whether the second segment follows the first (logits for yes, no)."""

    task = "next-sentence-prediction"


class AutoModelForPreTraining(_AutoModelClass):
    """The model with the heads it was pretrained with (BERT: masked LM and next sentence; GPT-2: the LM head)."""

    task = "pretraining"


# The reference's task mappings, built from MODEL_CLASSES: `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` maps model_type to the
# class name, `MODEL_FOR_CAUSAL_LM_MAPPING` the config class to the model class (run_clm.py lists the model types
# a script can train from scratch with `conf.model_type for conf in MODEL_FOR_CAUSAL_LM_MAPPING.keys()`).
_MAPPING_TASKS = {
    "MODEL": "base",
    "MODEL_FOR_CAUSAL_LM": "causal-lm",
    "MODEL_FOR_MASKED_LM": "masked-lm",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM": "seq2seq-lm",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION": "sequence-classification",
    "MODEL_FOR_TOKEN_CLASSIFICATION": "token-classification",
    "MODEL_FOR_QUESTION_ANSWERING": "question-answering",
    "MODEL_FOR_MULTIPLE_CHOICE": "multiple-choice",
    "MODEL_FOR_NEXT_SENTENCE_PREDICTION": "next-sentence-prediction",
    "MODEL_FOR_PRETRAINING": "pretraining",
}


class _ConfigMapping(Mapping):
    """`CONFIG_MAPPING`: model_type -> config class, a live view of configs.CONFIG_CLASSES."""

    def __getitem__(self, model_type: str) -> type[PretrainedConfig]:
        return CONFIG_CLASSES[model_type]

    def __iter__(self):
        return iter(list(CONFIG_CLASSES))

    def __len__(self) -> int:
        return len(CONFIG_CLASSES)

    def register(self, model_type: str, config_class: type[PretrainedConfig], exist_ok: bool = False) -> None:
        AutoConfig.register(model_type, config_class, exist_ok=exist_ok)

    def __repr__(self) -> str:
        return f"CONFIG_MAPPING({len(self)} model types)"


class _TaskMapping(Mapping):
    """A `MODEL_FOR_*_MAPPING`: config class -> the task's model class, for the families that have one."""

    def __init__(self, task: str):
        self.task = task

    def _model_types(self) -> list[str]:
        return [t for t, (_, classes) in MODEL_CLASSES.items() if self.task in classes and t in CONFIG_CLASSES]

    def __getitem__(self, config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
        model_type = getattr(config_class, "model_type", None)
        if model_type not in self._model_types() or CONFIG_CLASSES[model_type] is not config_class:
            raise KeyError(config_class)
        return model_class_for(model_type, self.task, config_class)

    def __iter__(self):
        return iter([CONFIG_CLASSES[t] for t in self._model_types()])

    def __len__(self) -> int:
        return len(self._model_types())

    def __repr__(self) -> str:
        return f"model mapping for {self.task!r} ({len(self)} config classes)"


CONFIG_MAPPING = _ConfigMapping()
for _prefix, _task in _MAPPING_TASKS.items():
    globals()[f"{_prefix}_MAPPING"] = _TaskMapping(_task)
    globals()[f"{_prefix}_MAPPING_NAMES"] = OrderedDict(
        (t, classes[_task]) for t, (_, classes) in MODEL_CLASSES.items() if _task in classes)

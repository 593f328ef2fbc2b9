"""openformers: load Hugging Face and GGUF checkpoints, tokenize, generate and fine-tune in plain PyTorch.

Public names are imported lazily, so `import openformers` stays fast and `openformers --help` does not
pay for importing torch. The names follow Hugging Face `transformers`, so existing code runs after changing
its import line; `tests/test_public_api.py` checks them against the reference's `__all__`.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_MODULE_OF = {}


def _public(module: str, *names: str) -> None:
    for name in names:
        _MODULE_OF[name] = module


_public(
    "openformers.tokenizers",
    "AutoTokenizer", "PreTrainedTokenizer", "PreTrainedTokenizerFast", "PreTrainedTokenizerBase", "AddedToken",
    "BatchEncoding", "CharSpan", "TokenSpan", "TensorType", "PaddingStrategy", "TruncationStrategy",
    "SPIECE_UNDERLINE", "BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer", "DistilBertTokenizerFast",
    "GPT2Tokenizer", "GPT2TokenizerFast", "RobertaTokenizer", "RobertaTokenizerFast", "LlamaTokenizer",
    "LlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast", "T5Tokenizer", "T5TokenizerFast",
    "XLMRobertaTokenizer", "XLMRobertaTokenizerFast", "CamembertTokenizer", "CamembertTokenizerFast",
    "AlbertTokenizer", "AlbertTokenizerFast", "MPNetTokenizer", "MPNetTokenizerFast", "ElectraTokenizer",
    "ElectraTokenizerFast", "GPTNeoXTokenizer", "GPTNeoXTokenizerFast", "CodeGenTokenizer", "CodeGenTokenizerFast",
    "CohereTokenizer", "CohereTokenizerFast",
    "BartTokenizer", "BartTokenizerFast",
    "MarianTokenizer", "NllbTokenizer", "NllbTokenizerFast", "M2M100Tokenizer",
    "MBartTokenizer", "MBartTokenizerFast", "MBart50Tokenizer", "MBart50TokenizerFast",
    "PegasusTokenizer", "PegasusTokenizerFast", "BlenderbotTokenizer", "BlenderbotTokenizerFast",
    "DebertaV2Tokenizer", "DebertaV2TokenizerFast", "DebertaTokenizer", "DebertaTokenizerFast",
    "MobileBertTokenizer", "MobileBertTokenizerFast",
)
_public(
    "openformers.configs",
    "PretrainedConfig", "PreTrainedConfig", "LlamaConfig", "MistralConfig", "Qwen2Config", "GPT2Config",
    "BertConfig", "RobertaConfig",
    "Phi3Config",
    "Qwen3Config",
    "MixtralConfig", "Qwen3MoeConfig", "Qwen2MoeConfig", "PhimoeConfig",
    "DeepseekV3Config", "DeepseekV2Config",
    "Ernie4_5Config", "Ernie4_5_MoeConfig",
    "GemmaConfig", "Gemma2Config", "SmolLM3Config",
    "Gemma3TextConfig", "VaultGemmaConfig",
    "DistilBertConfig",
    "XLMRobertaConfig",
    "CamembertConfig",
    "T5Config", "MT5Config",
    "GPTNeoXConfig", "FalconConfig", "GPTJConfig", "GPTNeoConfig", "CodeGenConfig", "OPTConfig",
    "BloomConfig",
    "PhiConfig",
    "GraniteConfig", "SeedOssConfig", "ArceeConfig", "BitNetConfig", "HeliumConfig", "ExaoneConfig", "Exaone4Config", "InternLM3Config", "GraniteMoeConfig",
    "GraniteMoeSharedConfig", "HunYuanDenseV1Config", "ApertusConfig",
    "MinistralConfig", "Ministral3Config", "HunYuanMoEV1Config", "Dots1Config",
    "GraniteMoeHybridConfig",
    "JambaConfig",
    "BambaConfig",
    "FalconH1Config",
    "StableLmConfig",
    "MambaConfig", "FalconMambaConfig", "Mamba2Config", "Lfm2Config", "Lfm2MoeConfig",
    "CohereConfig", "Cohere2Config", "NemotronConfig", "GlmConfig", "Glm4Config", "Glm4MoeConfig", "GptOssConfig",
    "GPTBigCodeConfig",
    "AlbertConfig", "ElectraConfig", "MPNetConfig", "RoFormerConfig",
    "OlmoConfig", "Olmo2Config", "Olmo3Config", "OlmoeConfig",
    "Starcoder2Config",
    "BartConfig",
    "MarianConfig",
    "M2M100Config",
    "MBartConfig",
    "PegasusConfig",
    "BlenderbotConfig", "BlenderbotSmallConfig",
    "UMT5Config",
    "ModernBertConfig",
    "DebertaV2Config",
    "DebertaConfig",
    "MobileBertConfig", "ErnieConfig", "RobertaPreLayerNormConfig", "XLMRobertaXLConfig",
    "MegatronBertConfig", "NomicBertConfig", "GteConfig", "EuroBertConfig",
    "JinaEmbeddingsV3Config",
)
_public(
    "openformers.models.auto",
    "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice", "AutoModelForNextSentencePrediction", "AutoModelForPreTraining",
    "AutoModelForSeq2SeqLM",
    # the reference's task mappings (config class -> model class), and by model_type -> class name (_NAMES)
    "CONFIG_MAPPING", "MODEL_MAPPING", "MODEL_FOR_CAUSAL_LM_MAPPING", "MODEL_FOR_MASKED_LM_MAPPING",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING", "MODEL_FOR_QUESTION_ANSWERING_MAPPING", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING",
    "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING", "MODEL_FOR_PRETRAINING_MAPPING",
    "MODEL_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES", "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES",
    "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
)
_public("openformers.models.base", "PreTrainedModel")
_public("openformers.quantization_config", "BitsAndBytesConfig")  # loaded as quantization="int4" / "int8"
_public("openformers.hf_argparser", "HfArgumentParser")
_public("openformers.pytorch_utils", "Conv1D", "apply_chunking_to_forward")
_public("openformers.models.lora", "LoraConfig")  # peft's name; the reference exports none
_public("openformers.models.outputs", "ModelOutput")
_public(
    "openformers.models.llama",
    "LlamaPreTrainedModel", "LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification",
    "LlamaForTokenClassification", "LlamaForQuestionAnswering",
    "MistralPreTrainedModel", "MistralModel", "MistralForCausalLM", "MistralForSequenceClassification",
    "MistralForTokenClassification", "MistralForQuestionAnswering",
    "Qwen2PreTrainedModel", "Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification",
    "Qwen2ForTokenClassification", "Qwen2ForQuestionAnswering",
)
_public(
    "openformers.models.ministral",
    "MinistralPreTrainedModel", "MinistralModel", "MinistralForCausalLM", "MinistralForSequenceClassification",
    "MinistralForTokenClassification", "MinistralForQuestionAnswering",
)
_public(
    "openformers.models.ministral3",
    "Ministral3PreTrainedModel", "Ministral3Model", "Ministral3ForCausalLM", "Ministral3ForSequenceClassification",
    "Ministral3ForTokenClassification", "Ministral3ForQuestionAnswering",
)
_public(
    "openformers.models.qwen3",
    "Qwen3PreTrainedModel", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification",
    "Qwen3ForTokenClassification", "Qwen3ForQuestionAnswering",
)
_public(
    "openformers.models.smollm3",
    "SmolLM3PreTrainedModel", "SmolLM3Model", "SmolLM3ForCausalLM", "SmolLM3ForSequenceClassification",
    "SmolLM3ForTokenClassification", "SmolLM3ForQuestionAnswering",
)
_public("openformers.models.granite", "GranitePreTrainedModel", "GraniteModel", "GraniteForCausalLM")
_public(
    "openformers.models.exaone4",
    "Exaone4PreTrainedModel", "Exaone4Model", "Exaone4ForCausalLM", "Exaone4ForSequenceClassification",
    "Exaone4ForTokenClassification", "Exaone4ForQuestionAnswering",
)
_public(
    "openformers.models.helium",
    "HeliumPreTrainedModel", "HeliumModel", "HeliumForCausalLM", "HeliumForSequenceClassification",
    "HeliumForTokenClassification",
)
_public(
    "openformers.models.hunyuan_v1_dense",
    "HunYuanDenseV1PreTrainedModel", "HunYuanDenseV1Model", "HunYuanDenseV1ForCausalLM",
    "HunYuanDenseV1ForSequenceClassification",
)
_public(
    "openformers.models.hunyuan_v1_moe",
    "HunYuanMoEV1PreTrainedModel", "HunYuanMoEV1Model", "HunYuanMoEV1ForCausalLM",
    "HunYuanMoEV1ForSequenceClassification",
)
_public("openformers.models.dots1", "Dots1PreTrainedModel", "Dots1Model", "Dots1ForCausalLM")
_public(
    "openformers.models.apertus",
    "ApertusPreTrainedModel", "ApertusModel", "ApertusForCausalLM", "ApertusForTokenClassification",
)
_public(
    "openformers.models.arcee",
    "ArceePreTrainedModel", "ArceeModel", "ArceeForCausalLM", "ArceeForSequenceClassification",
    "ArceeForTokenClassification", "ArceeForQuestionAnswering",
)
_public(
    "openformers.models.bitnet",
    "BitNetPreTrainedModel", "BitNetModel", "BitNetForCausalLM",
)
_public(
    "openformers.models.seed_oss",
    "SeedOssPreTrainedModel", "SeedOssModel", "SeedOssForCausalLM", "SeedOssForSequenceClassification",
    "SeedOssForTokenClassification", "SeedOssForQuestionAnswering",
)
_public(
    "openformers.models.granitemoe",
    "GraniteMoePreTrainedModel", "GraniteMoeModel", "GraniteMoeForCausalLM", "GraniteMoeSharedPreTrainedModel",
    "GraniteMoeSharedModel", "GraniteMoeSharedForCausalLM",
)
_public(
    "openformers.models.granitemoehybrid",
    "GraniteMoeHybridPreTrainedModel", "GraniteMoeHybridModel", "GraniteMoeHybridForCausalLM",
)
_public(
    "openformers.models.bamba",
    "BambaPreTrainedModel", "BambaModel", "BambaForCausalLM",
)
_public(
    "openformers.models.jamba",
    "JambaPreTrainedModel", "JambaModel", "JambaForCausalLM", "JambaForSequenceClassification",
)
_public(
    "openformers.models.falcon_h1",
    "FalconH1PreTrainedModel", "FalconH1Model", "FalconH1ForCausalLM",
)
_public(
    "openformers.models.mixtral",
    "MixtralPreTrainedModel", "MixtralModel", "MixtralForCausalLM", "MixtralForSequenceClassification",
    "MixtralForTokenClassification", "MixtralForQuestionAnswering",
)
_public(
    "openformers.models.phimoe",
    "PhimoePreTrainedModel", "PhimoeModel", "PhimoeForCausalLM", "PhimoeForSequenceClassification",
)
_public(
    "openformers.models.qwen3_moe",
    "Qwen3MoePreTrainedModel", "Qwen3MoeModel", "Qwen3MoeForCausalLM", "Qwen3MoeForSequenceClassification",
    "Qwen3MoeForTokenClassification", "Qwen3MoeForQuestionAnswering",
)
_public(
    "openformers.models.qwen2_moe",
    "Qwen2MoePreTrainedModel", "Qwen2MoeModel", "Qwen2MoeForCausalLM", "Qwen2MoeForSequenceClassification",
    "Qwen2MoeForTokenClassification", "Qwen2MoeForQuestionAnswering",
)
_public(
    "openformers.models.deepseek_v3",
    "DeepseekV3PreTrainedModel", "DeepseekV3Model", "DeepseekV3ForCausalLM", "DeepseekV3ForSequenceClassification",
    "DeepseekV3ForTokenClassification",
)
_public(
    "openformers.models.deepseek_v2",
    "DeepseekV2PreTrainedModel", "DeepseekV2Model", "DeepseekV2ForCausalLM", "DeepseekV2ForSequenceClassification",
)
_public("openformers.models.ernie4_5", "Ernie4_5PreTrainedModel", "Ernie4_5Model", "Ernie4_5ForCausalLM")
_public(
    "openformers.models.ernie4_5_moe", "Ernie4_5_MoePreTrainedModel", "Ernie4_5_MoeModel", "Ernie4_5_MoeForCausalLM",
)
_public(
    "openformers.models.gemma",
    "GemmaPreTrainedModel", "GemmaModel", "GemmaForCausalLM", "GemmaForSequenceClassification",
    "GemmaForTokenClassification",
    "Gemma2PreTrainedModel", "Gemma2Model", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification",
    "Gemma2ForTokenClassification",
    "Gemma3PreTrainedModel", "Gemma3TextModel", "Gemma3ForCausalLM", "Gemma3TextForSequenceClassification",
)
_public("openformers.models.vaultgemma", "VaultGemmaPreTrainedModel", "VaultGemmaModel", "VaultGemmaForCausalLM")
_public(
    "openformers.models.distilbert",
    "DistilBertPreTrainedModel", "DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification", "DistilBertForQuestionAnswering", "DistilBertForMultipleChoice",
)
_public(
    "openformers.models.camembert",
    "CamembertPreTrainedModel", "CamembertModel", "CamembertForMaskedLM", "CamembertForCausalLM",
    "CamembertForSequenceClassification", "CamembertForTokenClassification", "CamembertForQuestionAnswering",
    "CamembertForMultipleChoice",
)
_public(
    "openformers.models.xlm_roberta",
    "XLMRobertaPreTrainedModel", "XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForCausalLM",
    "XLMRobertaForSequenceClassification", "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering",
    "XLMRobertaForMultipleChoice",
)
_public(
    "openformers.models.deberta_v2",
    "DebertaV2PreTrainedModel", "DebertaV2Model", "DebertaV2ForMaskedLM", "DebertaV2ForSequenceClassification",
    "DebertaV2ForTokenClassification", "DebertaV2ForQuestionAnswering", "DebertaV2ForMultipleChoice",
    "DebertaPreTrainedModel", "DebertaModel", "DebertaForMaskedLM", "DebertaForSequenceClassification",
    "DebertaForTokenClassification", "DebertaForQuestionAnswering",
)
_public(
    "openformers.models.mobilebert",
    "MobileBertPreTrainedModel", "MobileBertModel", "MobileBertLayer", "MobileBertForPreTraining",
    "MobileBertForMaskedLM", "MobileBertForNextSentencePrediction", "MobileBertForSequenceClassification",
    "MobileBertForTokenClassification", "MobileBertForQuestionAnswering", "MobileBertForMultipleChoice",
)
_public(
    "openformers.models.ernie",
    "ErniePreTrainedModel", "ErnieModel", "ErnieForPreTraining", "ErnieForMaskedLM", "ErnieForCausalLM",
    "ErnieForNextSentencePrediction", "ErnieForSequenceClassification", "ErnieForTokenClassification",
    "ErnieForQuestionAnswering", "ErnieForMultipleChoice",
)
_public(
    "openformers.models.roberta_prelayernorm",
    "RobertaPreLayerNormPreTrainedModel", "RobertaPreLayerNormModel", "RobertaPreLayerNormForMaskedLM",
    "RobertaPreLayerNormForCausalLM", "RobertaPreLayerNormForSequenceClassification",
    "RobertaPreLayerNormForTokenClassification", "RobertaPreLayerNormForQuestionAnswering",
    "RobertaPreLayerNormForMultipleChoice",
)
_public(
    "openformers.models.xlm_roberta_xl",
    "XLMRobertaXLPreTrainedModel", "XLMRobertaXLModel", "XLMRobertaXLForMaskedLM", "XLMRobertaXLForCausalLM",
    "XLMRobertaXLForSequenceClassification", "XLMRobertaXLForTokenClassification", "XLMRobertaXLForQuestionAnswering",
    "XLMRobertaXLForMultipleChoice",
)
_public(
    "openformers.models.megatron_bert",
    "MegatronBertPreTrainedModel", "MegatronBertModel", "MegatronBertForPreTraining", "MegatronBertForMaskedLM",
    "MegatronBertForCausalLM", "MegatronBertForNextSentencePrediction", "MegatronBertForSequenceClassification",
    "MegatronBertForTokenClassification", "MegatronBertForQuestionAnswering", "MegatronBertForMultipleChoice",
)
_public(
    "openformers.models.nomic_bert",
    "NomicBertPreTrainedModel", "NomicBertModel", "NomicBertForMaskedLM", "NomicBertForSequenceClassification",
    "NomicBertForTokenClassification",
)
_public(
    "openformers.models.gte",
    "GtePreTrainedModel", "GteModel", "GteForMaskedLM", "GteForSequenceClassification", "GteForTokenClassification",
)
_public(
    "openformers.models.jina_embeddings_v3",
    "JinaEmbeddingsV3PreTrainedModel", "JinaEmbeddingsV3Model", "JinaEmbeddingsV3ForMaskedLM",
    "JinaEmbeddingsV3ForSequenceClassification", "JinaEmbeddingsV3ForTokenClassification",
    "JinaEmbeddingsV3ForQuestionAnswering", "JinaEmbeddingsV3Layer",
)
_public(
    "openformers.models.eurobert",
    "EuroBertPreTrainedModel", "EuroBertModel", "EuroBertForMaskedLM", "EuroBertForSequenceClassification",
    "EuroBertForTokenClassification",
)
_public(
    "openformers.models.modernbert",
    "ModernBertPreTrainedModel", "ModernBertModel", "ModernBertForMaskedLM", "ModernBertForSequenceClassification",
    "ModernBertForTokenClassification", "ModernBertForQuestionAnswering", "ModernBertForMultipleChoice",
)
_public(
    "openformers.models.bart",
    "BartPreTrainedModel", "BartPretrainedModel", "PretrainedBartModel", "BartModel", "BartForConditionalGeneration",
    "BartForSequenceClassification", "BartForQuestionAnswering", "BartForCausalLM",
)
_public(
    "openformers.models.marian",
    "MarianPreTrainedModel", "MarianModel", "MarianMTModel", "MarianForCausalLM",
)
_public(
    "openformers.models.m2m_100",
    "M2M100PreTrainedModel", "M2M100Model", "M2M100ForConditionalGeneration",
)
_public(
    "openformers.models.mbart",
    "MBartPreTrainedModel", "MBartModel", "MBartForConditionalGeneration", "MBartForSequenceClassification",
    "MBartForQuestionAnswering", "MBartForCausalLM",
)
_public(
    "openformers.models.pegasus",
    "PegasusPreTrainedModel", "PegasusModel", "PegasusForConditionalGeneration", "PegasusForCausalLM",
)
_public(
    "openformers.models.blenderbot",
    "BlenderbotPreTrainedModel", "BlenderbotModel", "BlenderbotForConditionalGeneration", "BlenderbotForCausalLM",
)
_public(
    "openformers.models.blenderbot_small",
    "BlenderbotSmallPreTrainedModel", "BlenderbotSmallModel", "BlenderbotSmallForConditionalGeneration",
    "BlenderbotSmallForCausalLM",
)
_public(
    "openformers.models.umt5",
    "UMT5PreTrainedModel", "UMT5Model", "UMT5ForConditionalGeneration", "UMT5EncoderModel",
    "UMT5ForSequenceClassification", "UMT5ForTokenClassification", "UMT5ForQuestionAnswering",
)
_public(
    "openformers.models.olmo",
    "OlmoPreTrainedModel", "OlmoModel", "OlmoForCausalLM", "OlmoForSequenceClassification",
)
_public(
    "openformers.models.olmo2",
    "Olmo2PreTrainedModel", "Olmo2Model", "Olmo2ForCausalLM", "Olmo2ForSequenceClassification",
)
_public(
    "openformers.models.olmo3",
    "Olmo3PreTrainedModel", "Olmo3Model", "Olmo3ForCausalLM", "Olmo3ForSequenceClassification",
)
_public(
    "openformers.models.olmoe",
    "OlmoePreTrainedModel", "OlmoeModel", "OlmoeForCausalLM",
)
_public(
    "openformers.models.starcoder2",
    "Starcoder2PreTrainedModel", "Starcoder2Model", "Starcoder2ForCausalLM", "Starcoder2ForSequenceClassification",
    "Starcoder2ForTokenClassification",
)
_public(
    "openformers.models.albert",
    "AlbertPreTrainedModel", "AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM",
    "AlbertForSequenceClassification", "AlbertForTokenClassification", "AlbertForQuestionAnswering",
    "AlbertForMultipleChoice",
)
_public(
    "openformers.models.electra",
    "ElectraPreTrainedModel", "ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM", "ElectraForCausalLM",
    "ElectraForSequenceClassification", "ElectraForTokenClassification", "ElectraForQuestionAnswering",
    "ElectraForMultipleChoice",
)
_public(
    "openformers.models.roformer",
    "RoFormerPreTrainedModel", "RoFormerModel", "RoFormerForMaskedLM", "RoFormerForCausalLM",
    "RoFormerForSequenceClassification", "RoFormerForTokenClassification", "RoFormerForQuestionAnswering",
    "RoFormerForMultipleChoice",
)
_public(
    "openformers.models.mpnet",
    "MPNetPreTrainedModel", "MPNetModel", "MPNetForMaskedLM", "MPNetForSequenceClassification",
    "MPNetForTokenClassification", "MPNetForQuestionAnswering", "MPNetForMultipleChoice",
)
_public(
    "openformers.models.gpt_neox",
    "GPTNeoXPreTrainedModel", "GPTNeoXModel", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification",
    "GPTNeoXForTokenClassification", "GPTNeoXForQuestionAnswering",
)
_public("openformers.models.mamba", "MambaPreTrainedModel", "MambaModel", "MambaForCausalLM")
_public("openformers.models.falcon_mamba", "FalconMambaPreTrainedModel", "FalconMambaModel", "FalconMambaForCausalLM")
_public("openformers.models.mamba2", "Mamba2PreTrainedModel", "Mamba2Model", "Mamba2ForCausalLM")
_public("openformers.models.lfm2", "Lfm2PreTrainedModel", "Lfm2Model", "Lfm2ForCausalLM")
_public("openformers.models.lfm2_moe", "Lfm2MoePreTrainedModel", "Lfm2MoeModel", "Lfm2MoeForCausalLM")
_public(
    "openformers.models.gptj",
    "GPTJPreTrainedModel", "GPTJModel", "GPTJForCausalLM", "GPTJForSequenceClassification", "GPTJForQuestionAnswering",
)
_public(
    "openformers.models.gpt_neo",
    "GPTNeoPreTrainedModel", "GPTNeoModel", "GPTNeoForCausalLM", "GPTNeoForSequenceClassification",
    "GPTNeoForTokenClassification", "GPTNeoForQuestionAnswering",
)
_public("openformers.models.codegen", "CodeGenPreTrainedModel", "CodeGenModel", "CodeGenForCausalLM")
_public(
    "openformers.models.falcon",
    "FalconPreTrainedModel", "FalconModel", "FalconForCausalLM", "FalconForSequenceClassification",
    "FalconForTokenClassification", "FalconForQuestionAnswering",
)
_public(
    "openformers.models.opt",
    "OPTPreTrainedModel", "OPTModel", "OPTForCausalLM", "OPTForSequenceClassification", "OPTForQuestionAnswering",
)
_public(
    "openformers.models.bloom",
    "BloomPreTrainedModel", "BloomModel", "BloomForCausalLM", "BloomForSequenceClassification",
    "BloomForTokenClassification", "BloomForQuestionAnswering",
)
_public(
    "openformers.models.phi",
    "PhiPreTrainedModel", "PhiModel", "PhiForCausalLM", "PhiForSequenceClassification", "PhiForTokenClassification",
)
_public(
    "openformers.models.stablelm",
    "StableLmPreTrainedModel", "StableLmModel", "StableLmForCausalLM", "StableLmForSequenceClassification",
    "StableLmForTokenClassification",
)
_public(
    "openformers.models.gpt_oss",
    "GptOssPreTrainedModel", "GptOssModel", "GptOssForCausalLM", "GptOssForSequenceClassification",
    "GptOssForTokenClassification",
)
_public(
    "openformers.models.cohere",
    "CoherePreTrainedModel", "CohereModel", "CohereForCausalLM",
)
_public(
    "openformers.models.cohere2",
    "Cohere2PreTrainedModel", "Cohere2Model", "Cohere2ForCausalLM",
)
_public(
    "openformers.models.nemotron",
    "NemotronPreTrainedModel", "NemotronModel", "NemotronForCausalLM", "NemotronForSequenceClassification",
    "NemotronForTokenClassification", "NemotronForQuestionAnswering",
)
_public(
    "openformers.models.glm",
    "GlmPreTrainedModel", "GlmModel", "GlmForCausalLM", "GlmForSequenceClassification", "GlmForTokenClassification",
    "Glm4PreTrainedModel", "Glm4Model", "Glm4ForCausalLM", "Glm4ForSequenceClassification", "Glm4ForTokenClassification",
)
_public(
    "openformers.models.glm4_moe",
    "Glm4MoePreTrainedModel", "Glm4MoeModel", "Glm4MoeForCausalLM",
)
_public(
    "openformers.models.gpt_bigcode",
    "GPTBigCodePreTrainedModel", "GPTBigCodeModel", "GPTBigCodeForCausalLM", "GPTBigCodeForSequenceClassification",
    "GPTBigCodeForTokenClassification",
)
_public(
    "openformers.models.t5",
    "T5PreTrainedModel", "T5Model", "T5ForConditionalGeneration", "T5EncoderModel", "T5ForSequenceClassification",
    "T5ForTokenClassification", "T5ForQuestionAnswering",
    "MT5PreTrainedModel", "MT5Model", "MT5ForConditionalGeneration", "MT5EncoderModel", "MT5ForSequenceClassification",
    "MT5ForTokenClassification", "MT5ForQuestionAnswering",
)
_public(
    "openformers.models.phi3",
    "Phi3PreTrainedModel", "Phi3Model", "Phi3ForCausalLM", "Phi3ForSequenceClassification",
    "Phi3ForTokenClassification",
)
_public(
    "openformers.models.gpt2",
    "GPT2PreTrainedModel", "GPT2Model", "GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification", "GPT2ForQuestionAnswering",
)
_public(
    "openformers.models.bert",
    "BertPreTrainedModel", "BertModel", "BertForMaskedLM", "BertLMHeadModel", "BertForPreTraining",
    "BertForNextSentencePrediction", "BertForSequenceClassification", "BertForMultipleChoice",
    "BertForTokenClassification", "BertForQuestionAnswering",
    "RobertaPreTrainedModel", "RobertaModel", "RobertaForMaskedLM", "RobertaForCausalLM",
    "RobertaForSequenceClassification", "RobertaForMultipleChoice", "RobertaForTokenClassification",
    "RobertaForQuestionAnswering",
)
_public(
    "openformers.generation",
    "GenerationConfig", "GenerationMode", "CompileConfig", "GenerationMixin", "Cache", "DynamicCache", "StaticCache",
    "EncoderDecoderCache", "HybridCache", "MambaCache",
    "TextStreamer", "TextIteratorStreamer", "AsyncTextIteratorStreamer",
    "LogitsProcessor", "LogitsWarper", "LogitsProcessorList",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper",
    "EpsilonLogitsWarper", "EtaLogitsWarper", "TopHLogitsWarper",
    "RepetitionPenaltyLogitsProcessor", "EncoderRepetitionPenaltyLogitsProcessor",
    "NoRepeatNGramLogitsProcessor", "EncoderNoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
    "SequenceBiasLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "LogitNormalization", "PrefixConstrainedLogitsProcessor", "ExponentialDecayLengthPenalty",
    "ClassifierFreeGuidanceLogitsProcessor", "UnbatchedClassifierFreeGuidanceLogitsProcessor",
    "WatermarkingConfig", "WatermarkLogitsProcessor", "WatermarkDetector",
    "SynthIDTextWatermarkingConfig", "SynthIDTextWatermarkLogitsProcessor", "SynthIDTextWatermarkDetector",
    "StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
    "StopStringCriteria", "ConfidenceCriteria", "validate_stopping_criteria",
)
_public(
    "openformers.pipelines",
    "pipeline", "Pipeline", "TextGenerationPipeline", "TextClassificationPipeline", "TokenClassificationPipeline",
    "NerPipeline", "QuestionAnsweringPipeline", "FillMaskPipeline", "FeatureExtractionPipeline",
    "ZeroShotClassificationPipeline", "Text2TextGenerationPipeline", "SummarizationPipeline", "TranslationPipeline",
)
_public(
    "openformers.training",
    "Trainer", "TrainingArguments", "TrainerCallback", "TrainerState", "TrainerControl", "CallbackHandler",
    "Seq2SeqTrainer", "Seq2SeqTrainingArguments",
    "DefaultFlowCallback", "ProgressCallback", "PrinterCallback", "EarlyStoppingCallback", "ExportableState",
    "IntervalStrategy", "SchedulerType", "EvalPrediction", "set_seed", "enable_full_determinism",
    "DataCollator", "DefaultDataCollator", "default_data_collator", "DataCollatorWithPadding",
    "DataCollatorForLanguageModeling", "DataCollatorForTokenClassification", "DataCollatorForSeq2Seq",
    "DataCollatorWithFlattening", "DataCollatorForMultipleChoice",
    "get_scheduler", "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup", "get_cosine_with_min_lr_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup", "get_constant_schedule", "get_constant_schedule_with_warmup",
    "get_inverse_sqrt_schedule", "get_reduce_on_plateau_schedule", "get_wsd_schedule",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate", "get_greedy_schedule", "GreedyLR", "Adafactor",
)
_public(
    "openformers.utils",
    "CONFIG_NAME", "GENERATION_CONFIG_NAME", "WEIGHTS_NAME", "WEIGHTS_INDEX_NAME", "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME", "is_apex_available", "is_av_available", "is_bitsandbytes_available",
    "is_clearml_available", "is_comet_available", "is_datasets_available", "is_dvclive_available",
    "is_faiss_available", "is_matplotlib_available", "is_mlx_available", "is_neptune_available",
    "is_optuna_available", "is_phonemizer_available", "is_psutil_available", "is_py3nvml_available",
    "is_pyctcdecode_available", "is_ray_available", "is_ray_tune_available", "is_sacremoses_available",
    "is_scipy_available", "is_sentencepiece_available", "is_sklearn_available", "is_speech_available",
    "is_swanlab_available", "is_tensorboard_available", "is_timm_available", "is_tokenizers_available",
    "is_torch_available", "is_torch_hpu_available", "is_torch_mlu_available", "is_torch_musa_available",
    "is_torch_neuroncore_available", "is_torch_npu_available", "is_torch_supa_available", "is_torch_xla_available",
    "is_torch_xpu_available", "is_torchvision_available", "is_trackio_available", "is_vision_available",
    "is_wandb_available",
)

__all__ = sorted([*_MODULE_OF, "logging"])

# The reference's module paths that user code imports from (custom models, callbacks, training scripts), each
# served by the module here that holds those names.
_REFERENCE_MODULE_PATHS = {
    "openformers.modeling_outputs": "openformers.models.outputs",
    "openformers.modeling_utils": "openformers.models.base",
    "openformers.configuration_utils": "openformers.configs",
    "openformers.cache_utils": "openformers.generation",  # the caches live in generation/cache.py and static_cache.py
    "openformers.tokenization_utils_base": "openformers.tokenizers",
    "openformers.tokenization_utils": "openformers.tokenizers",
    "openformers.tokenization_utils_fast": "openformers.tokenizers",
    "openformers.utils.logging": "openformers.logging",
    "openformers.trainer": "openformers.training.trainer",
    "openformers.trainer_callback": "openformers.training.callbacks",
    "openformers.trainer_utils": "openformers.training",
    "openformers.training_args": "openformers.training.arguments",
    "openformers.trainer_seq2seq": "openformers.training.seq2seq",
    "openformers.training_args_seq2seq": "openformers.training.seq2seq",
    "openformers.optimization": "openformers.training",
    "openformers.data.data_collator": "openformers.training.collators",
    # Watermarking is one module here and is spread over several there: the package holds every name.
    "openformers.generation.logits_process": "openformers.generation",
    "openformers.generation.configuration_utils": "openformers.generation",
    "openformers.generation.candidate_generator": "openformers.generation",
    "openformers.generation.utils": "openformers.generation",
}


class _ReferenceModulePaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `openformers.modeling_outputs` and the like as the module that holds their names here."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "openformers.data" or fullname in _REFERENCE_MODULE_PATHS:
            return importlib.util.spec_from_loader(fullname, self, is_package=fullname == "openformers.data")
        return None

    def create_module(self, spec):
        if spec.name == "openformers.data":
            return None  # a package of its own, the parent of data.data_collator
        return importlib.import_module(_REFERENCE_MODULE_PATHS[spec.name])

    def exec_module(self, module):
        if module.__name__ == "openformers.data":
            module.__getattr__ = _data_attribute


def _data_attribute(name):
    """`openformers.data`'s names, as the reference's `transformers.data`: data_collator, and the collators."""
    if f"openformers.data.{name}" in _REFERENCE_MODULE_PATHS:
        return importlib.import_module(f"openformers.data.{name}")
    if name.startswith("_"):
        raise AttributeError(f"module 'openformers.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_REFERENCE_MODULE_PATHS["openformers.data.data_collator"]), name)


sys.meta_path.append(_ReferenceModulePaths())

# from_pretrained hands every model it loads to the CPU accelerator (openformers.kernels), imported with the first
# model; the models never import it, as it sits in a layer above them (see acceleration.py).
from . import acceleration  # noqa: E402

acceleration.register(lambda: importlib.import_module("openformers.kernels"))

# Likewise the model files register the GGUF architectures they read; configs, below them, imports them through this.
from . import configs  # noqa: E402

configs.register_families(lambda: importlib.import_module("openformers.models.auto"))


def __getattr__(name):
    if name == "logging":
        return importlib.import_module("openformers.logging")
    module_name = _MODULE_OF.get(name)
    if module_name is None:
        # A submodule not imported yet, as the reference's lazy module gives them: openformers.utils.logging,
        # openformers.trainer_utils (a reference path, above), openformers.generation.
        submodule = f"{__name__}.{name}"
        if not name.startswith("_") and (submodule in _REFERENCE_MODULE_PATHS or submodule == f"{__name__}.data"
                                         or importlib.util.find_spec(submodule) is not None):
            return importlib.import_module(submodule)
        raise AttributeError(f"module 'openformers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

"""Jina embeddings v3 (jinaai/jina-embeddings-v3-hf): NomicBERT's rotary encoder (models/nomic_bert.py) with biases
everywhere and BERT's two-layer GELU feed-forward (`fc1`, `fc2`), under XLM-RoBERTa's names and heads
(models/bert.py: `roberta`, `lm_head`, `classifier.dense/out_proj`) and its pooler on the base model. Positions count
from 0 in every row (not from pad_token_id + 1 as RoBERTa's). Checkpoints in Jina's own layout (`encoder.layers.0.
mixer.Wqkv`, `mixer.out_proj`, `emb_ln`, `norm1`/`norm2`) are renamed and their fused q/k/v split on loading, as the
reference does. The reference holds the merged model, without the task LoRA adapters of Jina's own code.
"""

from ..configs import JinaEmbeddingsV3Config
from .bert import (
    BertModel,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)
from .nomic_bert import NomicBertLayer, NomicBertModel, NomicBertPreTrainedModel
from .phi import PhiMLP


class JinaEmbeddingsV3Layer(NomicBertLayer):
    attention_bias = True
    mlp_class = PhiMLP  # fc2(act(fc1(x))), with biases


class JinaEmbeddingsV3PreTrainedModel(NomicBertPreTrainedModel):
    config_class = JinaEmbeddingsV3Config
    base_model_prefix = "roberta"
    checkpoint_renames = (("encoder.layers.", "layers."), ("emb_ln.", "embeddings.LayerNorm."),
                          ("mixer.out_proj.", "self_attn.o_proj."), ("norm1.", "post_attention_layernorm."),
                          ("norm2.", "post_mlp_layernorm."))
    fused_projections = {"mixer.Wqkv.": ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")}

    def base_model_class(self, config: JinaEmbeddingsV3Config) -> type:
        return JinaEmbeddingsV3Model


class JinaEmbeddingsV3Model(JinaEmbeddingsV3PreTrainedModel, NomicBertModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` unless built without the pooler."""

    layer_class = JinaEmbeddingsV3Layer

    def __init__(self, config: JinaEmbeddingsV3Config, add_pooling_layer: bool = True):
        BertModel.__init__(self, config, add_pooling_layer)


class JinaEmbeddingsV3ForMaskedLM(JinaEmbeddingsV3PreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""


class JinaEmbeddingsV3ForSequenceClassification(JinaEmbeddingsV3PreTrainedModel, RobertaForSequenceClassification):
    """One label (or score) per sequence, from the first token through dense, tanh and out_proj."""


class JinaEmbeddingsV3ForTokenClassification(JinaEmbeddingsV3PreTrainedModel, RobertaForTokenClassification):
    """One label per token."""


class JinaEmbeddingsV3ForQuestionAnswering(JinaEmbeddingsV3PreTrainedModel, RobertaForQuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

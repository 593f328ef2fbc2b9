"""GTE (Alibaba-NLP/gte-multilingual-base, gte-base-en-v1.5): NomicBERT's rotary encoder (models/nomic_bert.py) with
biases on attention's projections and on the feed-forward's `down_proj`, dropout on the gated product, token types
that the English model leaves out (type_vocab_size 0) and RoBERTa's masked LM head (models/bert.py), whose decoder
keeps a bias of its own. Checkpoints in Alibaba's layout (`new.encoder.layer.0.attention.qkv_proj`,
`mlp.up_gate_proj`, `attn_ln`, `mlp_ln`, `lm_head.norm`) are renamed and their fused projections split on loading,
as the reference does.
"""

from torch import nn

from ..configs import GteConfig
from .bert import BertForSequenceClassification, BertForTokenClassification, RobertaForMaskedLM, RobertaLMHead
from .heads import HeadModel
from .nomic_bert import NomicBertLayer, NomicBertMLP, NomicBertModel, NomicBertPreTrainedModel


class GteMLP(NomicBertMLP):
    """down_proj(dropout(act(gate_proj(x)) * up_proj(x))), down_proj with a bias."""

    def __init__(self, config: GteConfig):
        super().__init__(config)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x):
        return self.down_proj(self.dropout(self.act(self.gate_proj(x)) * self.up_proj(x)))


class GteLayer(NomicBertLayer):
    attention_bias = True
    mlp_class = GteMLP


class GtePreTrainedModel(NomicBertPreTrainedModel):
    config_class = GteConfig
    base_model_prefix = "gte"
    checkpoint_renames = (("encoder.layer.", "layers."), ("attention.o_proj.", "self_attn.o_proj."),
                          ("attn_ln.", "post_attention_layernorm."), ("mlp_ln.", "post_mlp_layernorm."),
                          ("lm_head.norm.", "lm_head.layer_norm."))
    fused_projections = {"attention.qkv_proj.": ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."),
                         "mlp.up_gate_proj.": ("mlp.up_proj.", "mlp.gate_proj.")}
    tied_decoder_bias = False

    def base_model_class(self, config: GteConfig) -> type:
        return GteModel


class GteModel(GtePreTrainedModel, NomicBertModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` when built with the pooler."""

    layer_class = GteLayer


class GteLMHead(RobertaLMHead):
    """RoBERTa's head (dense, GELU, layer_norm), its decoder with a bias of its own, tied or not."""

    def __init__(self, config: GteConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        del self.bias


class GteForMaskedLM(GtePreTrainedModel, RobertaForMaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"lm_head.decoder.weight": "gte.embeddings.word_embeddings.weight"}

    def __init__(self, config: GteConfig):
        HeadModel.__init__(self, config)
        self.lm_head = GteLMHead(config)
        self.tie_weights()


class GteForSequenceClassification(GtePreTrainedModel, BertForSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class GteForTokenClassification(GtePreTrainedModel, BertForTokenClassification):
    """One label per token."""

"""BERT and RoBERTa encoders in plain torch.nn: learned positions, token types, post-LayerNorm blocks.

Parameter names are those of Hugging Face checkpoints (`bert.encoder.layer.0.attention.self.query.weight`),
so checkpoints load without renaming. RoBERTa is the same network with two differences kept here:
positions count from `pad_token_id + 1` and skip padding, and its heads are named `roberta`,
`lm_head` and `classifier.dense/out_proj`.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import BertConfig, RobertaConfig
from .base import PreTrainedModel, check_inputs, embedded, forward_cache, recorded
from .heads import (
    HeadModel,
    MaskedLM,
    MultipleChoice,
    PooledSequenceClassification,
    QuestionAnswering,
    TokenClassification,
)
from .layers import (
    ACTIVATIONS,
    apply_interleaved_rope,
    decoder_attention,
    encoder_attention,
    fairseq_positions_of,
    positions_and_mask,
    run_layer,
)
from .losses import next_token_loss, token_loss
from .outputs import (
    BaseModelOutputWithPooling,
    BaseModelOutputWithPoolingAndCrossAttentions,
    BertForPreTrainingOutput,
    CausalLMOutputWithCrossAttentions,
    NextSentencePredictorOutput,
)


def _embedding(count: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    # An explicit weight skips nn.Embedding's random init, which is slow on the meta device (see llama.py).
    return nn.Embedding(count, dim, padding_idx=padding_idx, _weight=torch.empty(count, dim))


class BertEmbeddings(nn.Module):
    """Token, token-type and position embeddings of width `dim` (hidden_size; ALBERT and ELECTRA embed narrower and
    project up), then LayerNorm and dropout. Without `learned_positions` (RoFormer, which turns q and k by position
    instead) there is no position table; with the config's `use_task_id` (ERNIE 2.0 and 3.0) a task table is added."""

    def __init__(self, config: BertConfig, dim: int | None = None, learned_positions: bool = True):
        super().__init__()
        dim = config.hidden_size if dim is None else dim
        self.word_embeddings = _embedding(config.vocab_size, dim, config.pad_token_id)
        # RoBERTa's position table has a row per padding position too; that row is never trained.
        position_padding = config.pad_token_id if isinstance(config, RobertaConfig) else None
        if learned_positions:
            self.position_embeddings = _embedding(config.max_position_embeddings, dim, position_padding)
        if config.type_vocab_size:  # GTE's English model has no token types (type_vocab_size 0)
            self.token_type_embeddings = _embedding(config.type_vocab_size, dim)
        if getattr(config, "use_task_id", False):
            self.task_type_embeddings = _embedding(config.task_type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids, inputs_embeds=None, task_type_ids=None):
        x = embedded(self.word_embeddings, input_ids) if inputs_embeds is None else inputs_embeds
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            x = x + embedded(self.token_type_embeddings, token_type_ids, "token_type_ids",
                             ": its config's type_vocab_size.")
        if hasattr(self, "position_embeddings"):
            x = x + self.position_embeddings(position_ids)
        if hasattr(self, "task_type_embeddings"):  # ERNIE's task of each token, 0 where none is given
            if task_type_ids is None:
                task_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            x = x + embedded(self.task_type_embeddings, task_type_ids, "task_type_ids",
                             ": its config's task_type_vocab_size.")
        elif task_type_ids is not None:
            raise ValueError("task_type_ids were given to a model without task types: they are ERNIE's, whose "
                             "config has use_task_id=True; leave them out.")
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig, layer_idx: int = 0):
        super().__init__()
        self.layer_idx, self.is_decoder = layer_idx, config.is_decoder
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob
        self.rotary_value = getattr(config, "rotary_value", False)  # RoFormer's option: v is turned too

    def forward(self, x, mask, cache=None, attention_path="sdpa", rotary=None):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None. `rotary`
        (1, 1, T, hs): RoFormer's table of each position's cos and sin, which turn q and k by position."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        if rotary is not None:  # pairs (2i, 2i + 1); the table's first half holds each pair's cos, its second the sin
            q, k = apply_interleaved_rope(q, rotary, rotary), apply_interleaved_rope(k, rotary, rotary)
            if self.rotary_value:
                v = apply_interleaved_rope(v, rotary, rotary)
        dropout = self.dropout if self.training else 0.0
        # A decoder's `mask` is attention_mask_for's, None meaning plain causal attention; an encoder's None: no mask.
        if self.is_decoder:
            return decoder_attention(q, k, v, mask, cache, self.layer_idx, dropout, attention_path)
        return encoder_attention(q, k, v, mask, dropout, attention_path)


class BertResidualOutput(nn.Module):
    """Project, dropout, add the block's input, then LayerNorm (BERT normalizes after the residual)."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig, layer_idx: int = 0):
        super().__init__()
        self.self = BertSelfAttention(config, layer_idx)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, x, mask, cache=None, attention_path="sdpa", rotary=None):
        y, weights = self.self(x, mask, cache, attention_path, rotary)
        return self.output(y, x), weights


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig, layer_idx: int = 0):
        super().__init__()
        self.attention = BertAttention(config, layer_idx)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, x, mask, cache=None, attention_path="sdpa", rotary=None):
        x, weights = self.attention(x, mask, cache, attention_path, rotary)
        return self.output(self.intermediate(x), x), weights


class BertEncoder(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)
    layer_class = BertLayer  # the pre-LayerNorm families' own (models/roberta_prelayernorm.py)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))

    def forward(self, x, mask, cache=None, attention_path="sdpa", output_hidden_states=False, output_attentions=False):
        """The last layer's output, the embeddings and every layer's output (output_hidden_states), and every
        layer's attention weights (output_attentions, which need an attention_path other than "sdpa")."""
        # A layer run twice (checkpointing) would write its keys and values to the cache twice: not with a cache.
        checkpointing = self.gradient_checkpointing if self.training and cache is None else None
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        rotary = self.rotary_table(x, cache)
        for layer in self.layer:
            x, weights = run_layer(layer, checkpointing, x, mask, cache, attention_path, rotary)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        return x, recorded(hidden_states), recorded(attentions)

    def rotary_table(self, x: torch.Tensor, cache) -> torch.Tensor | None:
        """The table that turns q and k by position (RoFormer's encoder); BERT's positions are embedded instead."""
        return None


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token)): the sentence vector BERT's classifier reads."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # Buffers older checkpoints store (and, tied, the decoder's bias: see new_base_model).
    ignored_checkpoint_keys = (r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$")

    # A checkpoint saved from a head without the pooler (masked LM) still loads into BertModel.
    initialized_if_missing = (r"(^|\.)pooler\.",)
    # The heads' settings (models/heads.py): the reference's BERT names its projections "classifier", and its
    # classifier dropout falls back to the hidden dropout.
    projection_name = "classifier"
    hidden_dropout_field = "hidden_dropout_prob"
    # Whether a tied masked LM's decoder bias is its `bias` (False: GTE's decoder keeps a bias of its own).
    tied_decoder_bias = True

    def new_base_model(self, config: BertConfig) -> "BertModel":
        """The encoder a head builds on, with the pooler when the head reads it (`add_pooling_layer`)."""
        if not self.add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)
        if config.tie_word_embeddings and self.tied_decoder_bias:  # the decoder bias is `bias` stored a second time
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, DECODER_BIAS)
        else:  # the decoder's own bias, which the head adds; a checkpoint saved tied lacks it (zeros, as the reference)
            self.initialized_if_missing = (*self.initialized_if_missing, DECODER_BIAS)
        return self.base_model_class(config)(config, add_pooling_layer=self.add_pooling_layer)

    def base_model_class(self, config: BertConfig) -> type:
        """The class of the encoder (the reference's class for `model.bert` or `model.roberta`): RobertaModel for a
        RoBERTa config, else BertModel; RoBERTa's renamed families (XLM-RoBERTa, CamemBERT) name their own."""
        return RobertaModel if isinstance(config, RobertaConfig) else BertModel

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class BertModel(BertPreTrainedModel):
    """The encoder: `last_hidden_state` (B, T, C), and `pooler_output` (B, C) unless built without the pooler."""

    # Its parts, which a family with its own embeddings, layers or pooler replaces (MobileBERT).
    embeddings_class, encoder_class, pooler_class = BertEmbeddings, BertEncoder, BertPooler
    # Where a pre-LayerNorm family keeps the norm over the last layer's output, under the model (RoBERTa-PreLayerNorm's
    # "LayerNorm", Megatron-BERT's "encoder.ln"); None for BERT's layers, which normalize their own outputs.
    final_norm: str | None = None
    # The reference's output class (MobileBERT's and the rotary encoders' hold no cache or cross-attentions).
    output_class = BaseModelOutputWithPoolingAndCrossAttentions

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.add_encoder(config)
        if self.final_norm is not None:
            add_layer_norm(self, self.final_norm, config)
        self.pooler = self.pooler_class(config) if add_pooling_layer else None
        if not add_pooling_layer:  # a checkpoint's pooler is left unused, as the reference does
            self.ignored_checkpoint_keys = (*self.ignored_checkpoint_keys, POOLER_KEYS)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        """The last hidden state (B, T, C) and the pooled first token; with output_hidden_states, also the
        embeddings and every layer's output, and with output_attentions every layer's weights. `task_type_ids`
        (B, T): ERNIE's task of each token (config.use_task_id)."""
        check_inputs(input_ids, inputs_embeds)
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        past_key_values = forward_cache(past_key_values, cache, use_cache and self.config.is_decoder)
        if past_key_values is not None and not self.config.is_decoder:
            raise ValueError(
                f"{type(self).__name__} is an encoder and keeps no cache: pass past_key_values=None (a cache is kept "
                "by models built as decoders, with config.is_decoder=True)."
            )
        if labels is not None:
            raise ValueError(f"{type(self).__name__} has no head to compute a loss with; use a For... class.")
        past = past_key_values.seq_len if past_key_values is not None else 0
        if position_ids is None:
            # Given inputs_embeds, every position holds a real token: ids that are not padding stand in for them.
            ids = input_ids if input_ids is not None else torch.full(inputs_embeds.shape[:2], -1, device=inputs_embeds.device)
            position_ids = self.default_positions(ids, past)
        x = self.embed(input_ids, position_ids, token_type_ids, inputs_embeds, task_type_ids)  # (B, T, C)
        if self.config.is_decoder:  # each position sees itself and the ones before it (BertLMHeadModel)
            _, mask, _ = positions_and_mask(past_key_values, attention_mask, position_ids, x.shape[1], x.device)
        else:
            mask = padding_mask(attention_mask)
        x, hidden_states, attentions = self.encode(
            x, mask, past_key_values, self.attention_path(output_attentions), output_hidden_states, output_attentions,
            position_ids,
        )
        if self.final_norm is not None:  # the last hidden state recorded is the normalized one, as the reference's
            x = self.get_submodule(self.final_norm)(x)
            hidden_states = None if hidden_states is None else (*hidden_states[:-1], x)
        pooled = self.pooler(x) if self.pooler is not None else None
        outputs = dict(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states, cache=past_key_values,
                       attentions=attentions, cross_attentions=() if output_attentions else None)  # as the reference's
        fields = self.output_class.__dataclass_fields__
        return self.returned(self.output_class(**{k: v for k, v in outputs.items() if k in fields}), return_dict)

    def add_encoder(self, config: BertConfig) -> None:
        """The layers, under `encoder`; the rotary families keep theirs on the model (models/nomic_bert.py)."""
        self.encoder = self.encoder_class(config)

    def encode(self, x, mask, cache, attention_path, output_hidden_states, output_attentions, position_ids):
        """The last layer's output, and the hidden states and attention weights asked for (BertEncoder.forward)."""
        return self.encoder(x, mask, cache, attention_path, output_hidden_states, output_attentions)

    def embed(self, input_ids, position_ids, token_type_ids, inputs_embeds, task_type_ids=None) -> torch.Tensor:
        """The encoder's input (B, T, C); ELECTRA projects its narrower embeddings up to hidden_size here."""
        if task_type_ids is None:  # MobileBERT's embeddings take no task types
            return self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds)
        return self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds, task_type_ids)

    def default_positions(self, input_ids: torch.Tensor, past: int = 0) -> torch.Tensor:
        """The positions of `input_ids` after `past` cached tokens (a decoder's cache)."""
        T = input_ids.shape[1]
        if past + T > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {past + T} tokens{f' ({past} cached)' if past else ''}, more than the "
                f"{self.config.max_position_embeddings} positions this model has (max_position_embeddings); "
                "truncate the input (tokenizer(..., truncation=True))."
            )
        return torch.arange(past, past + T, device=input_ids.device)[None]  # (1, T)


class RobertaPreTrainedModel(BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"


class RobertaModel(RobertaPreTrainedModel, BertModel):
    def default_positions(self, input_ids: torch.Tensor, past: int = 0) -> torch.Tensor:
        """Real tokens count from pad_token_id + 1 (after `past` cached ones); padding tokens sit at pad_token_id
        (RoBERTa's convention)."""
        pad = self.config.pad_token_id
        positions = fairseq_positions_of(input_ids, pad, past)  # (B, T)
        if positions.max() >= self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {int(input_ids.ne(pad).sum(1).max())} tokens, more than the "
                f"{self.config.max_position_embeddings - pad - 1} positions this model has; truncate the input."
            )
        return positions


def add_layer_norm(root: nn.Module, path: str, config: BertConfig) -> None:
    """A LayerNorm over hidden_size at `path` under `root` ("encoder.ln"), the name checkpoints give it."""
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent), name, nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps))


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The tokenizer's (B, T) mask as (B, 1, 1, T) booleans every query reads; None when nothing is padding."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


# The pooler's weights, which a model built without the pooler leaves unused.
POOLER_KEYS = r"^([a-z_]+\.)?pooler\."
DECODER_BIAS = r"(^|\.)decoder\.bias$"


# Heads --------------------------------------------------------------------------------------------------------


def prediction_width(config: BertConfig) -> int:
    """The width a masked LM head predicts from: the token embeddings', which RoFormer's embedding_size may narrow."""
    return getattr(config, "embedding_size", None) or config.hidden_size


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig, width: int | None = None):
        """`width`: what it outputs, by default prediction_width(config) (MobileBERT's stays hidden_size)."""
        super().__init__()
        width = prediction_width(config) if width is None else width
        self.dense = nn.Linear(config.hidden_size, width)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


def lm_decoder(config) -> tuple[nn.Linear, nn.Parameter]:
    """A masked LM head's decoder and per-token `bias`. Tied, the decoder is the token embedding and `bias` its bias;
    untied, the decoder has its own bias, the one it predicts with, as the reference's (`bias` is then kept, unused)."""
    decoder = nn.Linear(prediction_width(config), config.vocab_size, bias=not config.tie_word_embeddings)
    return decoder, nn.Parameter(torch.zeros(config.vocab_size))


def decoded(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = head.decoder(x)
    return logits if head.decoder.bias is not None else logits + head.bias


class BertLMPredictionHead(nn.Module):
    """The transform, then the (tied) output embedding plus a per-token bias."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder, self.bias = lm_decoder(config)

    def forward(self, x):
        return decoded(self, self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class BertForMaskedLM(BertPreTrainedModel, MaskedLM):
    """Logits over the vocabulary at every position; the loss over positions whose label is not -100."""

    tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    ignored_checkpoint_keys = (*BertPreTrainedModel.ignored_checkpoint_keys, r"^cls\.seq_relationship\.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertOnlyMLMHead(config)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.cls(hidden)


class BertForSequenceClassification(BertPreTrainedModel, PooledSequenceClassification):
    """One label (or score) per sequence, from the pooled first token."""


class BertForTokenClassification(BertPreTrainedModel, TokenClassification):
    """One label per token (named entities)."""


class BertForQuestionAnswering(BertPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


class BertForMultipleChoice(BertPreTrainedModel, MultipleChoice):
    """One score per choice, from each choice's pooled first token."""


# RoBERTa: the same heads under the reference's RoBERTa names.


class RobertaLMHead(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder, self.bias = lm_decoder(config)

    def forward(self, x):
        return decoded(self, self.layer_norm(F.gelu(self.dense(x))))


class RobertaClassificationHead(nn.Module):
    """dropout, dense, tanh, dropout, out_proj over the first token (<s>); RoBERTa has no pooler."""

    def __init__(self, config: RobertaConfig, dropout: float):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden):
        x = torch.tanh(self.dense(self.dropout(hidden[:, 0])))
        return self.out_proj(self.dropout(x))


# The RoBERTa heads run the BERT heads' forward; each builds its own head under its checkpoint name.


class RobertaForMaskedLM(RobertaPreTrainedModel, BertForMaskedLM):
    tied_weights = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight"}
    ignored_checkpoint_keys = RobertaPreTrainedModel.ignored_checkpoint_keys

    def __init__(self, config: RobertaConfig):
        HeadModel.__init__(self, config)
        self.lm_head = RobertaLMHead(config)
        self.tie_weights()

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class RobertaForSequenceClassification(RobertaPreTrainedModel, BertForSequenceClassification):
    add_pooling_layer = False

    def __init__(self, config: RobertaConfig):
        HeadModel.__init__(self, config)
        self.classifier = RobertaClassificationHead(config, self.classifier_dropout())

    def sequence_logits(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return self.classifier(base.last_hidden_state)  # the head reads the first token (<s>)


class RobertaForTokenClassification(RobertaPreTrainedModel, BertForTokenClassification):
    pass


class RobertaForQuestionAnswering(RobertaPreTrainedModel, BertForQuestionAnswering):
    pass


class RobertaForMultipleChoice(RobertaPreTrainedModel, BertForMultipleChoice):
    def classifier_dropout(self) -> float:
        return self.config.hidden_dropout_prob  # the reference's RoBERTa ignores classifier_dropout here


# Pretraining, next-sentence and decoder heads ------------------------------------------------------------------


class BertPreTrainingHeads(nn.Module):
    """BERT's two pretraining heads: masked-token logits, and next-sentence logits from the pooled first token."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, hidden, pooled):
        return self.predictions(hidden), self.seq_relationship(pooled)


class BertForPreTraining(BertPreTrainedModel, HeadModel):
    """BERT as pretrained: masked LM logits and next-sentence logits; the loss is their sum.

    The loss needs both `labels` (B, T), -100 where a token is not predicted, and `next_sentence_label`
    (B,): 0 when the second segment follows the first, 1 when it is random.
    """

    add_pooling_layer = True
    tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    output_class = BertForPreTrainingOutput  # MobileBERT's has its own name

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertPreTrainingHeads(config)
        self.tie_weights()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, next_sentence_label=None, logits_to_keep=0, inputs_embeds=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> BertForPreTrainingOutput | tuple:
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, None,
                                      inputs_embeds, None, output_attentions, output_hidden_states, task_type_ids)
        prediction_logits, seq_relationship_logits = self.cls(encoded.last_hidden_state, encoded.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = token_loss(prediction_logits, labels) + _next_sentence_loss(seq_relationship_logits, next_sentence_label)
        output = self.output_class(
            loss=loss, prediction_logits=prediction_logits, seq_relationship_logits=seq_relationship_logits,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )
        return self.returned(output, return_dict)


def _next_sentence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.view(-1, 2), labels.to(logits.device).view(-1))


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled):
        return self.seq_relationship(pooled)


class BertForNextSentencePrediction(BertPreTrainedModel, HeadModel):
    """Whether the second segment follows the first: logits (B, 2), label 0 for "follows", 1 for "random"."""

    add_pooling_layer = True

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertOnlyNSPHead(config)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, inputs_embeds=None, output_attentions=None,
        output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> NextSentencePredictorOutput | tuple:
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, None,
                                      inputs_embeds, None, output_attentions, output_hidden_states, task_type_ids)
        logits = self.cls(encoded.pooler_output)
        loss = None if labels is None else _next_sentence_loss(logits, labels)
        output = NextSentencePredictorOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
        return self.returned(output, return_dict)


class BertLMHeadModel(BertPreTrainedModel, HeadModel):
    """BERT as a left-to-right language model: next-token logits and loss, and `generate`.

    Built for this with `is_decoder=True` in the config: each position then sees only itself and the ones
    before it, and a cache of keys and values makes generation incremental. With `is_decoder=False` the
    encoder stays bidirectional, as the reference does (with a warning).
    """

    tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    ignored_checkpoint_keys = (*BertPreTrainedModel.ignored_checkpoint_keys, r"^cls\.seq_relationship\.")
    loss_shifts_labels = True  # the loss at position t is against labels[t + 1] (the Trainer counts tokens by it)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if not config.is_decoder:
            warnings.warn(
                f"{type(self).__name__} is built with config.is_decoder=False, so every position sees the whole "
                "input; set is_decoder=True to use it as a left-to-right language model.",
                stacklevel=2,
            )
        self.add_lm_head(config)
        self.tie_weights()

    def add_lm_head(self, config: BertConfig) -> None:
        self.cls = BertOnlyMLMHead(config)

    def keeps_cache(self, use_cache: bool | None, labels: torch.Tensor | None) -> bool:
        """Whether the forward returns a cache: when asked, and not when training, as the reference's BERT."""
        return bool(use_cache) and labels is None

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.cls(hidden)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 when passing labels.")
        use_cache = self.keeps_cache(use_cache, labels)
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                      inputs_embeds, use_cache, output_attentions, output_hidden_states, task_type_ids)
        hidden = encoded.last_hidden_state
        logits = self.token_logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None if labels is None else next_token_loss(logits, labels)
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, cache=encoded.cache, hidden_states=encoded.hidden_states,
            attentions=encoded.attentions, cross_attentions=encoded.get("cross_attentions"),
        )
        return self.returned(output, return_dict)


class RobertaForCausalLM(RobertaPreTrainedModel, BertLMHeadModel):
    tied_weights = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight"}
    ignored_checkpoint_keys = RobertaPreTrainedModel.ignored_checkpoint_keys

    def add_lm_head(self, config: RobertaConfig) -> None:
        self.lm_head = RobertaLMHead(config)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

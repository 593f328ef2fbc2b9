"""GPT-2 in plain torch.nn: learned positions, pre-LayerNorm blocks, one fused q/k/v projection, GELU (tanh).

Parameter names are those of Hugging Face checkpoints (`transformer.h.0.attn.c_attn.weight`). The
checkpoints store the projections as `Conv1D`, whose weight is (in, out), the transpose of an
`nn.Linear`'s: `from_checkpoint_layout` and `to_checkpoint_layout` transpose them on the way in and out.
"""

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GPT2Config
from .base import PreTrainedModel, check_inputs
from .decoder import GPT2NamedDecoder
from .heads import HeadModel, QuestionAnswering, SequenceClassification, TokenClassification, choice_rows
from .layers import ACTIVATIONS, decoder_attention
from .losses import next_token_loss
from .outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    GPT2DoubleHeadsModelOutput,
)

CONV1D_WEIGHT = re.compile(r"(^|\.)(c_attn|c_proj|c_fc)\.weight$")


def _transpose_conv1d(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.t() if CONV1D_WEIGHT.search(k) else v for k, v in state_dict.items()}


def _from_conv1d(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's Conv1D weights (in, out) as the layers' (out, in), each laid out anew in that order, so that
    the model holds one copy of each in the layout the CPU kernel's products and decoding step read (a transposed
    view would leave them the torch product's)."""
    return {k: v.t().contiguous() if CONV1D_WEIGHT.search(k) else v for k, v in state_dict.items()}


class GPT2Attention(nn.Module):
    """GPT-2's attention. Its scores are scaled by 1/sqrt(head_dim) (none with scale_attn_weights=False), and further
    divided by layer_idx + 1 with scale_attn_by_inverse_layer_idx (either way); reorder_and_upcast_attn computes the
    step-by-step path's scores in float32 whatever the model's dtype, as the reference's eager path does (its fused
    one, and ours, ignore it)."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.layer_idx, self.n_head = layer_idx, config.n_head
        scale = (config.n_embd // config.n_head) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        self.scale, self.float32_scores = scale, config.reorder_and_upcast_attn
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, mask, cache, attention_path="sdpa"):
        """The attention output, and its weights (B, nh, T, S) when computed step by step, else None."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(x).split(C, dim=-1))
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = decoder_attention(q, k, v, mask, cache, self.layer_idx, dropout, attention_path, scale=self.scale,
                                       float32_scores=self.float32_scores)
        return self.resid_dropout(self.c_proj(y)), weights


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    attention_class = GPT2Attention  # GPT-BigCode's block is GPT-2's with its own attention

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = self.attention_class(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa"):
        """cos and sin are None: the positions were added to the embeddings."""
        h, weights = self.attn(self.ln_1(x), mask, cache, attention_path)
        x = x + h
        return x + self.mlp(self.ln_2(x)), weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    # The causal-mask buffers older checkpoints store ("h.0.attn.bias", "h.0.attn.masked_bias").
    ignored_checkpoint_keys = (r"(^|\.)attn\.(masked_)?bias$",)
    from_checkpoint_layout = staticmethod(_from_conv1d)
    to_checkpoint_layout = staticmethod(_transpose_conv1d)

    def new_base_model(self, config: GPT2Config) -> "GPT2Model":
        """The decoder stack a head builds on."""
        return GPT2Model(config)


class GPT2Model(GPT2PreTrainedModel, GPT2NamedDecoder):
    """The decoder stack without a head: returns the last hidden state. decoder.DecoderModel's forward under GPT-2's
    names (GPT2NamedDecoder), the positions' embeddings added to the tokens' (so that the CPU kernel's decoding step
    can take it: kernels/llama.py), and GPT-2's output class."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        # Explicit weights skip nn.Embedding's random init, which is slow on the meta device (see llama.py).
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd))
        self.wpe = nn.Embedding(
            config.n_positions, config.n_embd, _weight=torch.empty(config.n_positions, config.n_embd)
        )
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """The last hidden state (B, T, C) after the final LayerNorm; with output_hidden_states, also the embeddings
        and every block's output (the last one normed), and with output_attentions every block's weights."""
        if labels is not None:
            raise ValueError(f"{type(self).__name__} has no head to compute a loss with; use GPT2LMHeadModel.")
        base = self.decode(input_ids, attention_mask, position_ids, past_key_values, cache, use_cache, None,
                           inputs_embeds, output_attentions, output_hidden_states, None, token_type_ids=token_type_ids)
        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=base.last_hidden_state, cache=base.cache, hidden_states=base.hidden_states,
            attentions=base.attentions,
            # the reference's: GPT-2 here has no cross-attention
            cross_attentions=() if self.output_options(output_attentions, None, None)[0] else None,
        )
        return self.returned(output, return_dict)

    def add_position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor, end: int) -> torch.Tensor:
        if end > self.config.n_positions:
            raise ValueError(
                f"The cache and the new tokens span {end} positions, more than the {self.config.n_positions} "
                "GPT-2 has (n_positions); truncate the input, generate fewer tokens or use a smaller cache."
            )
        return self.drop(x + self.wpe(position_ids))

    def layer_inputs(self, x, position_ids, mask, end: int, attention_mask, cache):
        return lambda layer: (None, None, mask)  # no rotation: positions were added to the embeddings


class GPT2LMHeadModel(GPT2PreTrainedModel, HeadModel):
    """GPT-2 with its language-model head (tied to the token embedding): next-token logits and loss."""

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}
    loss_shifts_labels = True  # the loss at position t is against labels[t + 1] (the Trainer counts tokens by it)

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_weights()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 when passing labels.")
        base = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                   inputs_embeds, use_cache, output_attentions, output_hidden_states)
        hidden = base.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None if labels is None else next_token_loss(logits, labels)
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, cache=base.cache, hidden_states=base.hidden_states, attentions=base.attentions,
            cross_attentions=base.get("cross_attentions"),
        )
        return self.returned(output, return_dict)


class GPT2ForSequenceClassification(GPT2PreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the last token that is not padding."""


class GPT2ForTokenClassification(GPT2PreTrainedModel, TokenClassification):
    """One label per token."""

    projection_name = "classifier"  # the reference's GPT-2 name (Llama-style decoders say "score")


class GPT2ForQuestionAnswering(GPT2PreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""


# The double-heads model: the language-model head and a multiple-choice head over the same hidden states. -------

SUMMARY_TYPES = ("cls_index", "last", "first", "mean")


class GPT2SequenceSummary(nn.Module):
    """One vector per sequence, then dropout, an optional projection and activation: the score of a choice.

    `summary_type` picks the vector: "cls_index" the hidden state at each sequence's classification token
    (the last token when none is given), "last", "first", or "mean" over the positions.
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.summary_type = config.summary_type
        if self.summary_type not in SUMMARY_TYPES:
            raise ValueError(f"summary_type={self.summary_type!r} is not supported; expected one of {SUMMARY_TYPES}.")
        self.summary = nn.Identity()
        if config.summary_use_proj:
            to_labels = config.summary_proj_to_labels and config.num_labels > 0
            self.summary = nn.Linear(config.n_embd, config.num_labels if to_labels else config.n_embd)
        activation = config.summary_activation
        if activation and activation != "tanh" and activation not in ACTIVATIONS:
            raise ValueError(
                f"summary_activation={activation!r} is not supported; expected None, 'tanh' or one of "
                f"{', '.join(ACTIVATIONS)}."
            )
        self.activation = torch.tanh if activation == "tanh" else ACTIVATIONS.get(activation, nn.Identity())
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        # Not a GPT2Config field in the reference either: read when a config.json has it.
        self.last_dropout = nn.Dropout(getattr(config, "summary_last_dropout", 0.0))

    def forward(self, hidden: torch.Tensor, cls_index: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (..., T, C), cls_index (...) -> (..., C) or (..., num_labels)."""
        if self.summary_type == "first":
            x = hidden[..., 0, :]
        elif self.summary_type == "mean":
            x = hidden.mean(dim=-2)
        elif self.summary_type == "last" or cls_index is None:
            x = hidden[..., -1, :]
        else:
            index = cls_index.to(hidden.device).long()[..., None, None].expand(*cls_index.shape, 1, hidden.shape[-1])
            x = hidden.gather(-2, index).squeeze(-2)
        return self.last_dropout(self.activation(self.summary(self.first_dropout(x))))


class GPT2DoubleHeadsModel(GPT2PreTrainedModel, HeadModel):
    """GPT-2 scoring several continuations at once: language-model logits, and one score per choice.

    Inputs are shaped (B, num_choices, T) (or (B, T)); `mc_token_ids` (B, num_choices) gives the position of
    each choice's classification token, the last one when omitted. `labels` give the language-model loss
    (`loss`), `mc_labels` (B,) the index of the right choice and the multiple-choice loss (`mc_loss`).
    """

    tied_weights = {"lm_head.weight": "transformer.wte.weight"}
    loss_shifts_labels = True

    def __init__(self, config: GPT2Config):
        if config.num_labels != 1:  # the choice head scores each choice with one number, as the reference sets
            config.num_labels, config.id2label, config.label2id = 1, {0: "LABEL_0"}, {"LABEL_0": 0}
        super().__init__(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.multiple_choice_head = GPT2SequenceSummary(config)
        self.tie_weights()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, mc_token_ids=None, labels=None, mc_labels=None, logits_to_keep=0, cache=None,
        inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> GPT2DoubleHeadsModelOutput | tuple:
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 when passing labels.")
        check_inputs(input_ids, inputs_embeds)
        choices = (input_ids.shape[:-1] if inputs_embeds is None else inputs_embeds.shape[:-2])  # (B, num_choices)
        embeds = None if inputs_embeds is None else inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])
        base = self.run_base_model(*(choice_rows(t) for t in (input_ids, attention_mask, position_ids)),
                                   past_key_values, choice_rows(token_type_ids), cache, embeds, use_cache,
                                   output_attentions, output_hidden_states)
        hidden = base.last_hidden_state
        hidden = hidden.view(*choices, *hidden.shape[-2:])  # (B, num_choices, T, C)
        logits = self.lm_head(hidden[..., -logits_to_keep:, :] if logits_to_keep else hidden)
        mc_logits = self.multiple_choice_head(hidden, mc_token_ids).squeeze(-1)  # (B, num_choices)
        loss = None if labels is None else next_token_loss(logits.flatten(0, -3), choice_rows(labels))
        mc_loss = None
        if mc_labels is not None:
            mc_loss = F.cross_entropy(mc_logits.view(-1, mc_logits.shape[-1]), mc_labels.to(mc_logits.device).view(-1))
        hidden_states = base.hidden_states
        if hidden_states is not None:  # the reference gives the last one the inputs' shape, the others one row per choice
            hidden_states = (*hidden_states[:-1], hidden)
        output = GPT2DoubleHeadsModelOutput(
            loss=loss, mc_loss=mc_loss, logits=logits, mc_logits=mc_logits, cache=base.cache,
            hidden_states=hidden_states, attentions=base.attentions,
        )
        return self.returned(output, return_dict)


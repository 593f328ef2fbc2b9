"""The task heads every family shares: its base model, a projection of the hidden states, and the loss.

A family names a head with a class that puts its own PreTrainedModel first, so that the family's
`new_base_model`, `base_model_prefix` and checkpoint names apply:

    class LlamaForTokenClassification(LlamaPreTrainedModel, TokenClassification):
        '''One label per token.'''

The layer names follow the reference's checkpoints: the base model under `base_model_prefix`, the
projection under `projection_name` ("score" in Llama-style decoders, "classifier" in BERT and in
GPT-2's token classifier), QA's under "qa_outputs". A family's PreTrainedModel provides
`new_base_model(config)`, which may read the head's `add_pooling_layer` (BERT).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import PreTrainedModel, check_inputs
from .losses import next_token_loss, question_answering_loss, sequence_classification_loss, token_loss
from .outputs import (
    CausalLMOutputWithPast,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)


class HeadModel(PreTrainedModel):
    """A head over the family's base model, which it builds and calls with the forward contract."""

    # Whether the base model keeps its pooler (BERT's dense + tanh over the first token); families without one ignore it.
    add_pooling_layer = False
    # The attribute (and checkpoint name) of the head's projection.
    projection_name = "score"
    # The config field the classifier's dropout falls back to when config.classifier_dropout is None.
    hidden_dropout_field = "hidden_dropout"
    # The config field giving the width of the hidden states the base model returns, which the projections take
    # (OPT's word_embed_proj_dim, where its decoder projects its output down).
    hidden_size_field = "hidden_size"

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.new_base_model(config))

    def run_base_model(
        self, input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache, inputs_embeds,
        use_cache, output_attentions, output_hidden_states, task_type_ids=None,
    ) -> ModelOutput:
        """The base model's output object, whatever return_dict says. `task_type_ids` are ERNIE's task types, which
        only its base model takes."""
        given = {} if task_type_ids is None else {"task_type_ids": task_type_ids}
        return self.base_model(
            input_ids, attention_mask, position_ids, past_key_values, token_type_ids=token_type_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, **given,
        )

    def add_projection(self, out_features: int, bias: bool = True) -> None:
        setattr(self, self.projection_name, nn.Linear(self.hidden_width(), out_features, bias=bias))

    def hidden_width(self) -> int:
        return getattr(self.config, self.hidden_size_field)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.projection_name)(hidden)

    def classifier_dropout(self) -> float:
        """The dropout before the projection, as the reference sets it."""
        for name in ("classifier_dropout", self.hidden_dropout_field):
            value = getattr(self.config, name, None)
            if value is not None:
                return value
        return 0.1  # the reference's default where the config has neither (decoders)


class CausalLM(HeadModel):
    """A decoder with its language-model head: next-token logits, and the loss when labels are given."""

    tied_weights = {"lm_head.weight": "model.embed_tokens.weight"}
    loss_shifts_labels = True  # the loss at position t is against labels[t + 1] (the Trainer counts tokens by it)
    lm_head_bias = False  # whether the language-model head has a bias (GPT-J's, Phi's)
    # A shortcut an accelerator installs at load (openformers.kernels): called by generate's loop with (model,
    # tokens, cache) for the (1,) token fed to one unpadded row, it returns the (1, vocab) logits of the next that
    # this forward would give (in float32, as the loop takes them) and their (1,) argmax, or None to leave the
    # token to the forward.
    accelerated_logits = None

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = nn.Linear(self.hidden_width(), config.vocab_size, bias=self.lm_head_bias)
        self.tie_weights()

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None,
    ) -> CausalLMOutputWithPast | tuple:
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 when passing labels.")
        # Only families whose base model takes cache_position (the reference's static-cache callers) or
        # token_type_ids get them.
        given = {name: value for name, value in (("cache_position", cache_position), ("token_type_ids", token_type_ids))
                 if value is not None}
        base = self.base_model(
            input_ids, attention_mask, position_ids, past_key_values, cache=cache, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, **given,
        )
        hidden = base.last_hidden_state
        logits = self.token_logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None if labels is None else self.lm_loss(logits, labels)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, cache=base.cache, hidden_states=base.hidden_states,
                                        attentions=base.attentions)
        return self.returned(output, return_dict)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss with labels: next-token cross-entropy here (Bamba adds its z-loss)."""
        return next_token_loss(logits, labels)


class MaskedLM(HeadModel):
    """Vocabulary logits at every position, through the family's own `token_logits`, and the loss at the
    labelled positions."""

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, inputs_embeds=None, output_attentions=None,
        output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> MaskedLMOutput | tuple:
        encoded = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, None,
                                      inputs_embeds, None, output_attentions, output_hidden_states, task_type_ids)
        hidden, labels = self.predicted_positions(encoded.last_hidden_state, labels)
        logits = self.token_logits(hidden)  # (B, T, vocab_size)
        loss = None if labels is None else token_loss(logits, labels)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                attentions=encoded.attentions)
        return self.returned(output, return_dict)

    def predicted_positions(self, hidden: torch.Tensor, labels: torch.Tensor | None):
        """The hidden states to predict and their labels: every position (ModernBERT's sparse prediction keeps only
        the labelled ones)."""
        return hidden, labels


class SequenceClassification(HeadModel):
    """One label (or score) per sequence, read from the last token that is not padding (decoders)."""

    def __init__(self, config):
        super().__init__(config)
        self.add_projection(config.num_labels, bias=False)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> SequenceClassifierOutputWithPast | tuple:
        base = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                   inputs_embeds, use_cache, output_attentions, output_hidden_states)
        hidden = base.last_hidden_state
        last = last_token_positions(input_ids, self.config.pad_token_id, hidden)
        logits = self.project(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        output = SequenceClassifierOutputWithPast(loss=loss, logits=logits, cache=base.cache,
                                                  hidden_states=base.hidden_states, attentions=base.attentions)
        return self.returned(output, return_dict)


def last_token_positions(
    input_ids: torch.Tensor | None, pad_token_id: int | None, hidden: torch.Tensor | None = None
) -> torch.Tensor:
    """The position of the rightmost token of each row that is not `pad_token_id` (left or right padding).

    Without input_ids (inputs_embeds were given) the last position of the `hidden` (B, T, C) rows, as the reference.
    """
    if input_ids is None:
        return torch.full((hidden.shape[0],), hidden.shape[1] - 1, device=hidden.device)
    B, T = input_ids.shape
    if pad_token_id is None:
        if B > 1:
            raise ValueError(
                f"Classifying a batch of {B} sequences needs config.pad_token_id, to find where each one ends; "
                "set model.config.pad_token_id (for example to tokenizer.pad_token_id), or classify one at a time."
            )
        return torch.full((1,), T - 1, device=input_ids.device)
    positions = torch.arange(T, device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


class PooledSequenceClassification(HeadModel):
    """One label (or score) per sequence, from the base model's pooled first token (encoders)."""

    add_pooling_layer = True

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.add_projection(config.num_labels)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> SequenceClassifierOutput | tuple:
        base = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                   inputs_embeds, use_cache, output_attentions, output_hidden_states, task_type_ids)
        logits = self.sequence_logits(base)  # (B, num_labels)
        loss = None if labels is None else self.sequence_loss(logits, labels)
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states,
                                          attentions=base.attentions)
        return self.returned(output, return_dict)

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        return self.project(self.dropout(base.pooler_output))

    def sequence_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss by config.problem_type (DeBERTa-v2 has rules of its own when that is None)."""
        return sequence_classification_loss(logits, labels, self.config)


class TokenClassification(HeadModel):
    """One label per token (named entities, parts of speech)."""

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.add_projection(config.num_labels)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> TokenClassifierOutput | tuple:
        base = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                   inputs_embeds, use_cache, output_attentions, output_hidden_states, task_type_ids)
        logits = self.token_scores(base.last_hidden_state)  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels)
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states,
                                       attentions=base.attentions)
        return self.returned(output, return_dict)

    def token_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, num_labels) (ModernBERT transforms the hidden states first)."""
        return self.project(self.dropout(hidden))


class QuestionAnswering(HeadModel):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

    # The attribute (and checkpoint name) of the start/end projection.
    span_projection_name = "qa_outputs"

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.span_projection_name, nn.Linear(self.hidden_width(), 2))

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, start_positions=None, end_positions=None, logits_to_keep=0, cache=None,
        inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
        task_type_ids=None,
    ) -> QuestionAnsweringModelOutput | tuple:
        base = self.run_base_model(input_ids, attention_mask, position_ids, past_key_values, token_type_ids, cache,
                                   inputs_embeds, use_cache, output_attentions, output_hidden_states, task_type_ids)
        start_logits, end_logits = span_logits(self.span_scores(base.last_hidden_state))  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=base.hidden_states, attentions=base.attentions)
        return self.returned(output, return_dict)

    def span_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, 2), the start and end scores (DistilBERT applies a dropout first)."""
        return getattr(self, self.span_projection_name)(hidden)


def span_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A QA head's (B, T, 2) as start and end logits, (B, T) each, contiguous (callers mask them in place)."""
    start, end = logits.split(1, dim=-1)
    return start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()


class MultipleChoice(HeadModel):
    """One score per choice: inputs (B, num_choices, T), each choice encoded alone, logits (B, num_choices).

    `labels` (B,) holds the index of the right choice.
    """

    add_pooling_layer = True

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.add_projection(1)

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, return_dict=None, task_type_ids=None,
    ) -> MultipleChoiceModelOutput | tuple:
        check_inputs(input_ids, inputs_embeds)
        shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:-1]
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} takes input_ids shaped (batch, num_choices, length) (inputs_embeds with a "
                f"last axis of hidden states); got shape {tuple(shape)}."
            )
        embeds = None if inputs_embeds is None else inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])
        base = self.run_base_model(  # B * num_choices sequences
            choice_rows(input_ids), choice_rows(attention_mask), choice_rows(position_ids), past_key_values,
            choice_rows(token_type_ids), cache, embeds, use_cache, output_attentions, output_hidden_states,
            choice_rows(task_type_ids),
        )
        logits = self.sequence_logits(base).view(-1, shape[1])  # (B, num_choices)
        loss = None if labels is None else F.cross_entropy(logits, labels.to(logits.device))
        output = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=base.hidden_states,
                                           attentions=base.attentions)
        return self.returned(output, return_dict)

    def sequence_logits(self, base: ModelOutput) -> torch.Tensor:
        """One score per choice, (B * num_choices, 1), from the base model's pooled first tokens."""
        return self.project(self.dropout(base.pooler_output))


def choice_rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """(B, num_choices, T) -> (B * num_choices, T): each choice runs as a sequence of its own."""
    return None if t is None else t.reshape(-1, t.shape[-1])

"""BART in plain torch.nn: a post-LayerNorm encoder and decoder with learned positions, the decoder attending to
the encoder's output through a cross-attention in every layer.

Parameter names are those of Hugging Face checkpoints (`model.encoder.layers.0.self_attn.q_proj.weight`,
`model.decoder.layers.0.encoder_attn.k_proj.weight`), so checkpoints load without renaming. One token table,
`model.shared`, is the encoder's and the decoder's `embed_tokens` and the LM head's weight (tie_word_embeddings);
checkpoints store it once. The position tables have two rows more than max_position_embeddings: position p reads
row p + 2 (fairseq kept the first two for padding). The LM head adds `final_logits_bias`, a buffer that
checkpoints store and that fine-tuning never changes.

With a cache, the decoder keeps its self-attention keys and values in `cache.self_attention_cache` and the
encoder's projected keys and values in `cache.cross_attention_cache`, computed at the first decoding step and
read back afterwards, so `generate` runs the encoder and its projections once.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import BartConfig
from ..generation.cache import EncoderDecoderCache
from .base import PreTrainedModel, check_inputs, embedded, forward_cache, recorded, seq2seq_cache
from .bert import padding_mask
from .layers import ACTIVATIONS, encoder_attention, positions_and_mask, run_layer
from .losses import question_answering_loss, sequence_classification_loss, shift_tokens_right, token_loss
from .heads import span_logits
from .outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    ModelOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqQuestionAnsweringModelOutput,
    Seq2SeqSequenceClassifierOutput,
)

POSITION_OFFSET = 2  # position p reads row p + 2 of embed_positions


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times `embed_scale` (sqrt(d_model) with scale_embedding, else 1); `rows` tokens (default
    config.vocab_size)."""

    def __init__(self, config: BartConfig, rows: int | None = None):
        rows = config.vocab_size if rows is None else rows
        # Explicit weights skip nn.Embedding's random init, which is slow on the meta device (see llama.py).
        super().__init__(rows, config.d_model, padding_idx=config.pad_token_id,
                         _weight=torch.empty(rows, config.d_model))
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.embed_scale


def position_table(config: BartConfig, offset: int = POSITION_OFFSET) -> nn.Embedding:
    """The learned positions: max_position_embeddings rows after the `offset` first ones (BART's two)."""
    rows = config.max_position_embeddings + offset
    return nn.Embedding(rows, config.d_model, _weight=torch.empty(rows, config.d_model))


class BartAttention(nn.Module):
    """Multi-head attention of queries from `x` over keys and values from `x` (self-attention) or from the
    encoder's output (cross-attention)."""

    def __init__(self, config: BartConfig, heads: int):
        super().__init__()
        self.heads, self.dropout = heads, config.attention_dropout
        d = config.d_model
        self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))

    def forward(self, x, k, v, mask, is_causal=False, attention_path="sdpa"):
        """x (B, T, C) attends over k, v (B, nh, S, hs): the output, and the weights (B, nh, T, S) when computed
        step by step, else None. `mask`: (B or 1, 1, T or 1, S) booleans or None; `is_causal` with no mask."""
        q = self.split_heads(self.q_proj(x))
        dropout = self.dropout if self.training else 0.0
        y, weights = encoder_attention(q, k, v, mask, dropout, attention_path, is_causal)
        return self.out_proj(y), weights


class BartEncoderLayer(nn.Module):
    """Self-attention, add, LayerNorm; feed-forward, add, LayerNorm (normalized after each residual)."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.self_attn = BartAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation = ACTIVATIONS[config.activation_function]
        self.dropout, self.activation_dropout = nn.Dropout(config.dropout), nn.Dropout(config.activation_dropout)

    def forward(self, x, mask, attention_path="sdpa"):
        y, weights = self.self_attn(x, *self.self_attn.keys_values(x), mask, False, attention_path)
        x = self.self_attn_layer_norm(x + self.dropout(y))
        return feed_forward(self, x), weights


def feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's last step: fc1, activation, fc2, added to the input and normalized (final_layer_norm)."""
    y = layer.fc2(layer.activation_dropout(layer.activation(layer.fc1(x))))
    return layer.final_layer_norm(x + layer.dropout(y))


class BartDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output (when there is one), feed-forward; each
    added to its input and normalized."""

    def __init__(self, config: BartConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = BartAttention(config, config.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = BartAttention(config, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation = ACTIVATIONS[config.activation_function]
        self.dropout, self.activation_dropout = nn.Dropout(config.dropout), nn.Dropout(config.activation_dropout)

    def forward(self, x, mask, encoder_states, encoder_mask, cache, attention_path="sdpa"):
        """The layer's output and its self- and cross-attention weights (None unless computed step by step)."""
        k, v = self.self_attn.keys_values(x)
        if cache is not None:  # an EncoderDecoderCache updates its self-attention part
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, past + T, hs)
        causal = mask is None and x.shape[1] > 1
        y, weights = self.self_attn(x, k, v, mask, causal, attention_path)
        x = self.self_attn_layer_norm(x + self.dropout(y))
        cross_weights = None
        if encoder_states is not None:
            k, v = self.cross_keys_values(encoder_states, cache)
            y, cross_weights = self.encoder_attn(x, k, v, encoder_mask, False, attention_path)
            x = self.encoder_attn_layer_norm(x + self.dropout(y))
        return feed_forward(self, x), weights, cross_weights

    def cross_keys_values(self, encoder_states, cache) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder output's keys and values for this layer: projected at the first step, then read from the
        cross-attention cache (the encoder's output does not change while decoding)."""
        if not isinstance(cache, EncoderDecoderCache):
            return self.encoder_attn.keys_values(encoder_states)
        stored = cache.cross_attention(self.layer_idx)
        if stored is not None:
            return stored
        return cache.store_cross_attention(self.layer_idx, *self.encoder_attn.keys_values(encoder_states))


def layer_dropped(stack: nn.Module, probability: float) -> bool:
    """LayerDrop: while training, a layer is skipped with this probability (one draw per layer and call)."""
    return stack.training and probability > 0 and bool(torch.rand([]) < probability)


class BartEncoder(nn.Module):
    gradient_checkpointing: dict | None = None  # torch.utils.checkpoint options while it is on (see base.py)
    position_offset = POSITION_OFFSET  # the row of embed_positions that position 0 reads
    layer_class = BartEncoderLayer
    length_name = "input_ids"  # what a length past max_position_embeddings is blamed on

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = ScaledEmbedding(config)
        self.embed_positions = position_table(config, self.position_offset)
        self.layers = nn.ModuleList(self.layer_class(config) for _ in range(config.encoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=True) -> BaseModelOutput | tuple:
        """The last hidden state (B, S, C); the embeddings' and every layer's output (output_hidden_states), and
        every layer's attention weights (output_attentions), by default as the config says."""
        check_inputs(input_ids, inputs_embeds)
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        attention_path = "eager" if output_attentions or config._attn_implementation == "eager" else "sdpa"
        x = embedded(self.embed_tokens, input_ids) if inputs_embeds is None else inputs_embeds  # (B, S, C)
        S = x.shape[1]
        positions = self.position_embeddings(input_ids, torch.arange(S, device=x.device)[None], S)
        x = self.dropout(self.layernorm_embedding(x + positions.to(x.dtype)))
        mask = padding_mask(attention_mask)
        checkpointing = self.gradient_checkpointing if self.training else None
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            if not layer_dropped(self, self.config.encoder_layerdrop):
                x, weights = run_layer(layer, checkpointing, x, mask, attention_path)
            else:
                weights = None
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        x = final_norm(self, x, hidden_states)
        output = BaseModelOutput(last_hidden_state=x, hidden_states=recorded(hidden_states),
                                 attentions=recorded(attentions))
        return output if return_dict is not False else output.to_tuple()

    def position_embeddings(self, input_ids, position_ids, end) -> torch.Tensor:
        """The embeddings (B or 1, T, C) of `position_ids` (counted from 0, the last one below `end`); BART reads
        them from its learned table, whatever the tokens."""
        check_length(self.config, end, self.length_name)
        return self.embed_positions(position_ids + self.position_offset)


def final_norm(stack: nn.Module, x: torch.Tensor, hidden_states: list | None) -> torch.Tensor:
    """A stack's last step: its `layer_norm` over the last layer's output, when it has one (pre-LayerNorm stacks:
    M2M100's), which then also is the last of the recorded hidden states, as in the reference."""
    if getattr(stack, "layer_norm", None) is None:
        return x
    x = stack.layer_norm(x)
    if hidden_states:
        hidden_states[-1] = x
    return x


class BartDecoder(nn.Module):
    gradient_checkpointing: dict | None = None
    position_offset = POSITION_OFFSET
    takes_position_ids = True  # False: positions count from the cache whatever `position_ids` say (Marian's)
    layer_class = BartDecoderLayer
    length_name = "the cache and decoder_input_ids"
    position_embeddings = BartEncoder.position_embeddings

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = ScaledEmbedding(config)
        self.embed_positions = position_table(config, self.position_offset)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, inputs_embeds=None, position_ids=None, attention_path="sdpa", output_hidden_states=False,
                output_attentions=False) -> BaseModelOutputWithPastAndCrossAttentions:
        """The last hidden state (B, T, C) for T new tokens after what `cache` holds; hidden states, self- and
        cross-attention weights of every layer when asked for. Positions count on from the cache unless
        `position_ids` are given."""
        check_inputs(input_ids, inputs_embeds)
        x = self.input_embeddings(input_ids, inputs_embeds)
        T = x.shape[1]
        position_ids = position_ids if self.takes_position_ids else None
        position_ids, mask, end = positions_and_mask(cache, attention_mask, position_ids, T, x.device)
        positions = self.position_embeddings(input_ids, position_ids, end).to(x.dtype)
        x = self.dropout(self.with_positions(x, positions))
        encoder_mask = padding_mask(encoder_attention_mask)
        # A layer run twice (checkpointing) would write its keys and values to the cache twice: not with a cache.
        checkpointing = self.gradient_checkpointing if self.training and cache is None else None
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        cross_attentions = [] if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layers:
            weights = cross_weights = None
            if not layer_dropped(self, self.config.decoder_layerdrop):
                x, weights, cross_weights = run_layer(layer, checkpointing, x, mask, encoder_hidden_states,
                                                      encoder_mask, cache, attention_path)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
                if cross_attentions is not None:
                    cross_attentions.append(cross_weights)
        x = final_norm(self, x, hidden_states)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x, cache=cache, hidden_states=recorded(hidden_states), attentions=recorded(attentions),
            cross_attentions=recorded(cross_attentions),
        )

    def with_positions(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The token embeddings x (B, T, C) with their position embeddings added, then normalized
        (layernorm_embedding)."""
        return self.layernorm_embedding(x + positions)

    def input_embeddings(self, input_ids, inputs_embeds) -> torch.Tensor:
        """The token embeddings (B, T, C) of `input_ids`, or `inputs_embeds` as given."""
        return embedded(self.embed_tokens, input_ids, "decoder_input_ids") if inputs_embeds is None else inputs_embeds


def check_length(config: BartConfig, length: int, what: str) -> None:
    if length > config.max_position_embeddings:
        raise ValueError(
            f"{what} span {length} positions, more than the {config.max_position_embeddings} this model has "
            "(max_position_embeddings); truncate the input (tokenizer(..., truncation=True)) or generate fewer tokens."
        )


class BartPreTrainedModel(PreTrainedModel):
    config_class = BartConfig
    base_model_prefix = "model"
    ignored_checkpoint_keys = (r"(^|\.)(encoder|decoder)\.version$",)  # fairseq's format markers
    encoder_class, decoder_class = BartEncoder, BartDecoder  # the stacks the base model and the causal LM build

    def new_base_model(self, config: BartConfig) -> "BartModel":
        return BartModel(config)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # normal(0, init_std) weights, zero biases and padding row, unit norms
        if isinstance(module, BartForConditionalGeneration) and module.has_logits_bias:
            nn.init.zeros_(module.final_logits_bias)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Resize the shared token table; the encoder and decoder read the new one, as in the reference (where they
        become the same module), and the LM head's final_logits_bias grows with zeros."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        for stack in (self.get_encoder(), self.get_decoder()):
            if stack is not None:
                stack.embed_tokens.weight = embeddings.weight
                stack.embed_tokens.num_embeddings = embeddings.num_embeddings
        return embeddings

    def get_encoder(self) -> "BartEncoder | None":
        return getattr(self.base_model, "encoder", None)

    def get_decoder(self) -> "BartDecoder":
        return self.base_model.decoder


class BartModel(BartPreTrainedModel):
    """The encoder and the decoder without a head: the decoder's last hidden state, and the encoder's."""

    input_embeddings_name = "shared"
    tied_weights = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
    shifts_input_ids = True  # without decoder inputs, the decoder reads input_ids shifted right

    def __init__(self, config: BartConfig):
        super().__init__(config)
        if self.shares_token_table(config):
            self.shared = ScaledEmbedding(config)
        self.encoder = self.encoder_class(config)
        self.decoder = self.decoder_class(config)

    @staticmethod
    def shares_token_table(config: BartConfig) -> bool:
        """Whether the encoder and the decoder read one token table, `shared` (always, in BART)."""
        return True

    def decoder_inputs_for(self, input_ids: torch.Tensor | None) -> torch.Tensor:
        """The decoder's inputs when none are given: input_ids shifted right (BART's denoising pre-training), as the
        reference does; translation models (`shifts_input_ids` False) want them given."""
        if not self.shifts_input_ids:
            raise ValueError(
                f"{type(self).__name__} needs decoder_input_ids or decoder_inputs_embeds: it does not shift input_ids "
                f"into decoder inputs. Start them with config.decoder_start_token_id "
                f"({self.config.decoder_start_token_id})."
            )
        if input_ids is None:
            raise ValueError(
                f"{type(self).__name__} needs decoder_input_ids or decoder_inputs_embeds, or input_ids to shift right "
                "into decoder inputs; got none of them."
            )
        return shift_tokens_right(input_ids, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, past_key_values=None, *, cache=None, inputs_embeds=None, decoder_inputs_embeds=None,
        use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> Seq2SeqModelOutput | tuple:
        """Encode `input_ids` (unless `encoder_outputs` are given), then decode `decoder_input_ids` attending to it.

        Without decoder inputs, the decoder reads `decoder_inputs_for(input_ids)` (BART: input_ids shifted right).
        With use_cache (by default config.use_cache) or a cache passed in, the decoder's keys and values and the
        encoder's projected ones are kept in an EncoderDecoderCache, returned as `past_key_values`.
        """
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.decoder_inputs_for(input_ids)
        attention_path = self.attention_path(output_attentions)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds, output_attentions,
                                           output_hidden_states)
        elif not isinstance(encoder_outputs, ModelOutput):  # a tuple (last hidden state, hidden states, attentions)
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        use_cache = self.config.use_cache if use_cache is None else use_cache
        decoded = self.decoder(
            decoder_input_ids, decoder_attention_mask, encoder_outputs.last_hidden_state, attention_mask,
            seq2seq_cache(past_key_values, cache, use_cache), decoder_inputs_embeds, None, attention_path,
            output_hidden_states, output_attentions,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoded.last_hidden_state, cache=decoded.cache,
            decoder_hidden_states=decoded.hidden_states, decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.get("hidden_states"),
            encoder_attentions=encoder_outputs.get("attentions"),
        )
        return self.returned(output, return_dict)


class BartForConditionalGeneration(BartPreTrainedModel):
    """Summarization, translation and denoising: vocabulary logits for every decoder position, and their loss
    against `labels` (whose shift right is the decoder's input when none is given)."""

    input_embeddings_name = "model.shared"
    tied_weights = {"lm_head.weight": "model.shared.weight",
                    **{f"model.{k}": f"model.{v}" for k, v in BartModel.tied_weights.items()}}
    has_logits_bias = True  # final_logits_bias (BART's, Marian's; not M2M100's)

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = self.new_base_model(config)
        rows = self.model.decoder.embed_tokens.num_embeddings  # the decoder's vocabulary
        if self.has_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(1, rows))
        self.lm_head = nn.Linear(config.d_model, rows, bias=False)

    @classmethod
    def from_checkpoint_layout(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoints without final_logits_bias (a BartModel's, some fine-tunes) get it at zero, as the reference
        fills it in silently; a bare BartModel checkpoint's keys are put under `model.` first, so that the bias
        is read as this head's."""
        if "final_logits_bias" in state_dict or not cls.has_logits_bias:
            return state_dict
        if "shared.weight" in state_dict or "decoder.embed_tokens.weight" in state_dict:
            state_dict = {f"model.{k}": v for k, v in state_dict.items()}
        table = state_dict.get("model.shared.weight", state_dict.get("model.decoder.embed_tokens.weight"))
        if table is None:
            return state_dict
        return {**state_dict, "final_logits_bias": table.new_zeros(1, table.shape[0])}

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's inputs for `labels` (DataCollatorForSeq2Seq calls it): decoder_start_token_id, then the
        labels shifted right, -100 read as padding."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if not self.has_logits_bias:
            return embeddings
        rows, old = embeddings.num_embeddings, self.final_logits_bias.shape[1]
        self.final_logits_bias = F.pad(self.final_logits_bias[:, :rows], (0, max(0, rows - old)))
        return embeddings

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, past_key_values=None, *, cache=None, inputs_embeds=None, decoder_inputs_embeds=None,
        labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
        logits_to_keep=0,
    ) -> Seq2SeqLMOutput | tuple:
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 with labels.")
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        base = self.model(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            cache=cache, inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = base.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        if self.has_logits_bias:
            logits = logits + self.final_logits_bias
        loss = None if labels is None else token_loss(logits, labels)
        output = Seq2SeqLMOutput(loss=loss, logits=logits, **seq2seq_fields(base))
        return self.returned(output, return_dict)


def seq2seq_fields(base: Seq2SeqModelOutput) -> dict:
    """What a head passes on from the base model's output besides its own logits and loss."""
    return dict(
        cache=base.cache, decoder_hidden_states=base.decoder_hidden_states,
        decoder_attentions=base.decoder_attentions, cross_attentions=base.cross_attentions,
        encoder_last_hidden_state=base.encoder_last_hidden_state, encoder_hidden_states=base.encoder_hidden_states,
        encoder_attentions=base.encoder_attentions,
    )


class BartClassificationHead(nn.Module):
    """dropout, dense, tanh, dropout, out_proj: the sentence classifier over one hidden state."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class BartForSequenceClassification(BartPreTrainedModel):
    """One label (or score) per sequence, from the decoder's hidden state at the last <eos> of the input (the
    decoder reads the input shifted right, so that state has seen the whole sequence)."""

    tied_weights = {f"model.{k}": f"model.{v}" for k, v in BartModel.tied_weights.items()}
    input_embeddings_name = "model.shared"

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = self.new_base_model(config)
        self.classification_head = BartClassificationHead(config)

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None, *,
        output_attentions=None, output_hidden_states=None, return_dict=None,
    ) -> Seq2SeqSequenceClassifierOutput | tuple:
        if input_ids is None:
            raise ValueError(f"{type(self).__name__} needs input_ids, to find each row's last <eos> token; "
                             "inputs_embeds alone cannot say where it is.")
        if labels is not None:
            use_cache = False
        base = self.model(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
            inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = base.last_hidden_state  # (B, T, C)
        logits = self.classification_head(last_eos_states(input_ids, hidden, self.config.eos_token_id))
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        output = Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **seq2seq_fields(base))
        return self.returned(output, return_dict)


def last_eos_states(input_ids: torch.Tensor, hidden: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """The (B, C) hidden states at each row's last `eos_token_id`; every row must hold as many of them."""
    is_eos = input_ids.eq(eos_token_id).to(hidden.device)
    counts = is_eos.sum(1)
    if bool((counts != counts[0]).any()):
        raise ValueError(
            f"All examples must have the same number of <eos> tokens (eos_token_id={eos_token_id}); the rows of "
            f"input_ids hold {counts.tolist()}. Tokenize every row the same way (the tokenizer ends each with one)."
        )
    if int(counts[0]) == 0:
        raise ValueError(f"Each example must contain at least one <eos> token (eos_token_id={eos_token_id}) in "
                         "input_ids; the tokenizer adds it unless add_special_tokens=False.")
    return hidden[is_eos].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1]


class BartForQuestionAnswering(BartPreTrainedModel):
    """Extractive QA: the logits of each decoder position being the start and the end of the answer span."""

    tied_weights = BartForSequenceClassification.tied_weights
    input_embeddings_name = "model.shared"

    def __init__(self, config: BartConfig):
        config.num_labels = 2  # the reference sets it: one start and one end score
        super().__init__(config)
        self.model = self.new_base_model(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)

    def forward(
        self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
        encoder_outputs=None, start_positions=None, end_positions=None, inputs_embeds=None,
        decoder_inputs_embeds=None, use_cache=None, *, output_attentions=None, output_hidden_states=None,
        return_dict=None,
    ) -> Seq2SeqQuestionAnsweringModelOutput | tuple:
        has_positions = start_positions is not None and end_positions is not None
        base = self.model(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
            inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=False if has_positions else use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        start_logits, end_logits = span_logits(self.qa_outputs(base.last_hidden_state))  # (B, T) each
        loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions) if has_positions \
            else None
        output = Seq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                                     **seq2seq_fields(base))
        return self.returned(output, return_dict)


class BartDecoderWrapper(nn.Module):
    """Holds the decoder under `model.decoder`, the name BartForCausalLM's checkpoints use."""

    def __init__(self, decoder: BartDecoder):
        super().__init__()
        self.decoder = decoder


class BartForCausalLM(BartPreTrainedModel):
    """BART's decoder alone as a language model (cross-attending to `encoder_hidden_states` when given).

    As in the reference 5.x, the loss compares logits[t] with labels[t]: labels are not shifted inside the model.
    """

    input_embeddings_name = "model.decoder.embed_tokens"
    tied_weights = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: BartConfig):
        config.is_decoder, config.is_encoder_decoder = True, False  # as the reference sets them
        super().__init__(config)
        self.model = BartDecoderWrapper(self.decoder_class(config))
        self.lm_head = nn.Linear(config.d_model, self.model.decoder.embed_tokens.num_embeddings, bias=False)

    @classmethod
    def from_checkpoint_layout(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A whole model's checkpoint (encoder and decoder, as BartModel or BartForConditionalGeneration save them)
        read as its decoder: the shared token table becomes the decoder's, the other weights are left out."""
        prefix = next((p for p in ("model.", "") if any(k.startswith(f"{p}encoder.") for k in state_dict)), None)
        if prefix is None:
            return state_dict
        kept = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(f"{prefix}decoder.")}
        if f"{prefix}shared.weight" in state_dict:
            kept.setdefault("decoder.embed_tokens.weight", state_dict[f"{prefix}shared.weight"])
        warnings.warn(f"{cls.__name__} reads the decoder of a whole encoder-decoder checkpoint; the encoder's weights "
                      "(and the LM head's final_logits_bias) are left out.", stacklevel=4)
        return {f"model.{k}": v for k, v in kept.items()}

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_decoder(self) -> BartDecoder:
        return self.model.decoder

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        encoder_hidden_states=None, encoder_attention_mask=None, inputs_embeds=None, labels=None, use_cache=None,
        cache=None, logits_to_keep=0, output_attentions=None, output_hidden_states=None, return_dict=None,
        token_type_ids=None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        """`position_ids` (generate's, which count from each row's first real token) replace the positions the
        decoder counts from its cache; token_type_ids are ignored (BART has none)."""
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 with labels.")
        output_attentions, output_hidden_states, return_dict = self.output_options(
            output_attentions, output_hidden_states, return_dict
        )
        if encoder_hidden_states is None:
            cache = forward_cache(past_key_values, cache, use_cache)
        else:
            cache = seq2seq_cache(past_key_values, cache, use_cache)
        decoded = self.model.decoder(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, cache, inputs_embeds,
            position_ids, self.attention_path(output_attentions), output_hidden_states, output_attentions,
        )
        hidden = decoded.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None if labels is None else token_loss(logits, labels)
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, cache=decoded.cache, hidden_states=decoded.hidden_states,
            attentions=decoded.attentions, cross_attentions=decoded.cross_attentions,
        )
        return self.returned(output, return_dict)


def _deprecated_base(cls, **kwargs):
    warnings.warn(f"{cls.__name__} subclasses a deprecated name: subclass BartPreTrainedModel instead.",
                  FutureWarning, stacklevel=2)


class BartPretrainedModel(BartPreTrainedModel):
    """The reference's deprecated name for BartPreTrainedModel; a subclass of it says so."""

    __init_subclass__ = _deprecated_base


class PretrainedBartModel(BartPreTrainedModel):
    """The reference's older deprecated name for BartPreTrainedModel; a subclass of it says so."""

    __init_subclass__ = _deprecated_base

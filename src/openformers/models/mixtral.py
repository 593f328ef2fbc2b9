"""Mixtral decoders in plain torch.nn: Mistral's network with a sparse mixture of experts in place of the MLP.

Each layer's `block_sparse_moe` holds a router (`gate`, scoring the `num_local_experts` experts) and the experts,
SwiGLU MLPs named as in the checkpoints (`experts.{e}.w1` gate, `w3` up, `w2` down). A token is sent to its
`num_experts_per_tok` best-scored experts, whose outputs are summed with the softmax weights of those scores,
renormalized over the chosen ones. The experts run only on the tokens routed to them (`SparseMoeBlock.mix`), so a
step costs the chosen experts' work, not every expert's. The router is not an nn.Linear, so quantization leaves it
in floating point.

Parameter names are those of the checkpoints the reference saves and the Hub holds (the reference fuses the experts
into 3D tensors in memory and splits them back on saving; a file holding the fused tensors loads too), so a folder
loads strictly and saves back unchanged. With `output_router_logits` the base model returns every layer's router
scores and the causal LM adds the reference's load-balancing loss (`load_balancing_loss`) to its loss. GGUF files
store Mixtral under llama.cpp's "llama" architecture with `llama.expert_count` set, each layer's experts stacked into
one tensor per projection (or, in files converted before April 2024, one tensor per expert); they are read here
(`config_from_gguf`, `convert_gguf_state_dict`). Qwen3-MoE (qwen3_moe.py) reuses the block, the layer and the heads,
and Qwen2-MoE (qwen2_moe.py) too, with a shared expert added to the block.
The CPU decoding kernel's step (kernels/llama.py) takes both: the router's picks and only the chosen experts'
products in its team (decode.cpp's mixture_step, and batch_mixture_step for a batch).
"""

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import GGUF_CONFIG_READERS, MixtralConfig
from ..weights import rename
from . import llama
from .base import recorded
from .heads import CausalLM, QuestionAnswering, SequenceClassification, TokenClassification
from .layers import RMSNorm
from .losses import next_token_loss
from .outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast


def config_from_gguf(gguf, **overrides):
    """The config of an opened `weights.GGUFFile` of llama.cpp's "llama" architecture: Mixtral when the file has
    experts (`llama.expert_count`), else what llama.py reads (Llama, Mistral)."""
    experts = gguf.get("llama.expert_count")
    if not experts:
        return llama.config_from_gguf(gguf, **overrides)
    values = {
        "architectures": ["MixtralForCausalLM"],
        **llama.gguf_config_values(gguf),
        "num_local_experts": experts,
        "num_experts_per_tok": gguf.get("llama.expert_used_count", 2),
    }
    return MixtralConfig.from_dict(values, **overrides)


# Mixtral's files say "llama": the reader of that architecture tells the two apart (llama.py is imported first).
GGUF_CONFIG_READERS["llama"] = config_from_gguf

# llama.cpp's expert tensors: one per layer and projection with the experts stacked (experts, out, in), or in files
# converted before April 2024 one per expert (`blk.N.ffn_gate.E.weight`).
_GGUF_EXPERTS = re.compile(r"^blk\.(?P<layer>\d+)\.ffn_(?P<kind>gate|up|down)(_exps|\.(?P<expert>\d+))\.weight$")


def split_gguf_experts(state_dict: dict[str, torch.Tensor], block: str, names: dict[str, str]) -> dict:
    """A GGUF state dict (llama.cpp's names) with each expert's weights apart, named
    `blk.N.{block}.experts.{e}.{names[kind]}.weight` (kind: gate, up or down); the others pass unchanged."""
    out = {}
    for key, t in state_dict.items():
        match = _GGUF_EXPERTS.match(key)
        if match is None:
            out[key] = t
            continue
        name = f"blk.{match['layer']}.{block}.experts.{{}}.{names[match['kind']]}.weight"
        if match["expert"] is not None:
            out[name.format(match["expert"])] = t
            continue
        for e in range(t.shape[0]):  # a copy each: safetensors refuses to save tensors that share storage
            out[name.format(e)] = t[e].clone()
    return out


def convert_gguf_state_dict(state_dict: dict[str, torch.Tensor], config: MixtralConfig) -> dict[str, torch.Tensor]:
    """The experts split out, then Llama's renames and query/key row order (llama.py), and the router's name."""
    state_dict = split_gguf_experts(state_dict, "block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"})
    return rename(llama.convert_gguf_state_dict(state_dict, config), {"ffn_gate_inp": "block_sparse_moe.gate"})


def split_fused_experts(state_dict: dict[str, torch.Tensor], block: str, names: tuple[str, str, str],
                        fused_block: str = "mlp") -> dict:
    """A checkpoint holding the experts as the reference holds them in memory (`X.mlp.experts.gate_up_proj`
    (E, 2I, C), `X.mlp.experts.down_proj` (E, C, I), the router `X.mlp.gate.weight`; Jamba's under `feed_forward`,
    its `fused_block`), under the names the reference saves: `X.{block}.experts.{e}.{gate, up, down name}.weight` and
    `X.{block}.gate.weight`. Others pass unchanged."""
    gate, up, down = names
    out = {}
    for key, t in state_dict.items():
        prefix, _, rest = key.partition(f".{fused_block}.")
        if rest == "experts.gate_up_proj":
            for e, w in enumerate(t):
                w_gate, w_up = w.chunk(2)
                out[f"{prefix}.{block}.experts.{e}.{gate}.weight"] = w_gate.clone()
                out[f"{prefix}.{block}.experts.{e}.{up}.weight"] = w_up.clone()
        elif rest == "experts.down_proj":
            for e, w in enumerate(t):
                out[f"{prefix}.{block}.experts.{e}.{down}.weight"] = w.clone()
        elif rest == "gate.weight":
            out[f"{prefix}.{block}.gate.weight"] = t
        else:
            out[key] = t
    return out


def route(router_logits: torch.Tensor, top_k: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` experts of each token (N, top_k) and their softmax weights in float32, renormalized to sum to 1
    when `normalize`."""
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)  # (N, E)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def softmax_of_best(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` best-scored experts of each token (N, top_k), weighted by the softmax of those scores alone, in
    their dtype (gpt-oss's and Granite MoE's routing, where `route` takes the softmax over every expert)."""
    best, chosen = router_logits.topk(top_k, dim=-1)
    return F.softmax(best, dim=-1), chosen


def load_balancing_loss(router_logits: tuple[torch.Tensor, ...], num_experts: int, top_k: int,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss on the routers' (B * T, E) scores, one per sparse layer, as the
    reference computes it: num_experts * sum over experts of (the share of top-k picks it got) * (its mean routing
    probability), both taken over the tokens of every layer together. Padding (`attention_mask` 0) is left out; a
    mask that also covers cached positions is read over its last T columns, those of the scored tokens."""
    logits = torch.cat([t.to(router_logits[0].device) for t in router_logits])  # (layers * B * T, E)
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    picks = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).sum(dim=1).float()  # (rows, E)
    if attention_mask is None:
        return num_experts * (picks.mean(0) * probs.mean(0)).sum()
    tokens = router_logits[0].shape[0] // attention_mask.shape[0]
    mask = attention_mask[:, -tokens:].reshape(-1).to(probs).repeat(len(router_logits))[:, None]  # (rows, 1)
    total = mask.sum()
    return num_experts * ((picks * mask).sum(0) / total * (probs * mask).sum(0) / total).sum()


class Router(nn.Module):
    """The scores of the experts for each token, a linear layer (with a bias in gpt-oss). Not an nn.Linear, so
    quantization (kernels.quantize) leaves it in floating point, as llama.cpp keeps ffn_gate_inp: its errors change
    which experts run."""

    def __init__(self, hidden_size: int, num_experts: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        self.bias = nn.Parameter(torch.empty(num_experts)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ExpertLinear(nn.Linear):
    """An expert's projection: nn.Linear without the random init it draws when built. A model has thousands of them
    (Qwen3-30B-A3B: 18432), and that init took most of the time of building one, on the meta device too; the
    checkpoint, or init_weights when there is none, sets every weight anyway."""

    def reset_parameters(self) -> None:
        pass


def expert_product(stack: torch.Tensor | nn.Module, e: int, x: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """x (rows, in) times expert e's matrix of a stack of experts' matrices: a float Parameter (experts, out, in), or
    (experts, in, out) when `transposed` (gpt-oss's), or a module holding the stack quantized, called as
    `stack(e, x)` (kernels.PackedExperts: quantization packs the stacks a module names in its `expert_stacks`,
    parameter name -> `transposed`)."""
    if isinstance(stack, nn.Module):
        return stack(e, x)
    return x @ stack[e] if transposed else F.linear(x, stack[e])


class MixtralExpert(nn.Module):
    """One expert: a SwiGLU MLP under the checkpoints' names (w1 gate, w3 up, w2 down)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.w1 = ExpertLinear(hidden_size, intermediate_size, bias=False)
        self.w2 = ExpertLinear(intermediate_size, hidden_size, bias=False)
        self.w3 = ExpertLinear(hidden_size, intermediate_size, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MixtureOfExperts(nn.Module):
    """What a sparse block does with the tokens, whatever holds its router and experts: the router's scores
    (`score`), each token's `top_k` experts and their weights (`choose`), and the chosen experts' weighted sum
    (`mix`). SparseMoeBlock holds the router and each expert as modules; Granite MoE's block holds its experts' weights
    stacked (granitemoe.py). A subclass defines `score` and `mix`.

    `normalize`: renormalize the chosen experts' weights to sum to 1 (Mixtral; Qwen3-MoE with norm_topk_prob).
    `weights_in_model_dtype`: round those weights to the model's dtype (the hidden states') before weighting the
    experts' outputs, as Qwen3-MoE and ERNIE 4.5 MoE do (Mixtral keeps them in float32). `jitter_noise`: while training,
    the input is scaled by noise drawn uniformly from [1 - jitter_noise, 1 + jitter_noise] (Mixtral's
    router_jitter_noise); `jitter_draws` such scalings one after the other (PhiMoE's block and its router each scale
    the input, so its experts and router see it scaled twice).
    """

    jitter_draws = 1

    def __init__(self, top_k: int, normalize: bool, weights_in_model_dtype: bool = False, jitter_noise: float = 0.0):
        super().__init__()
        self.top_k, self.normalize = top_k, normalize
        self.weights_in_model_dtype, self.jitter_noise = weights_in_model_dtype, jitter_noise

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the experts' weighted sum (B, T, C), and the router's scores (B * T, E)."""
        B, T, C = x.shape
        for _ in range(self.jitter_draws if self.training and self.jitter_noise > 0 else 0):
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
        x = x.reshape(-1, C)  # (N, C)
        router_logits = self.score(x)  # (N, E)
        weights, chosen = self.choose(router_logits)  # (N, k) each
        if self.weights_in_model_dtype:  # the hidden states' (a router in float32, ERNIE 4.5's, scores in float32)
            weights = weights.to(x.dtype)
        return self.mix(x, weights, chosen).view(B, T, C), router_logits

    def choose(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's experts (N, top_k) and their weights from the router's scores: the softmax's best here
        (DeepSeek's and Granite MoE's blocks choose otherwise)."""
        return route(router_logits, self.top_k, self.normalize)


class SparseMoeBlock(MixtureOfExperts):
    """A router (`gate`) and its experts, each a module: each token goes through its `top_k` experts, weighted by the
    router (MixtureOfExperts)."""

    def __init__(self, hidden_size: int, experts: list[nn.Module], top_k: int, normalize: bool,
                 weights_in_model_dtype: bool = False, jitter_noise: float = 0.0):
        super().__init__(top_k, normalize, weights_in_model_dtype, jitter_noise)
        self.gate = Router(hidden_size, len(experts))
        self.experts = nn.ModuleList(experts)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)

    def mix(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        return mix_experts(x, weights, chosen, lambda e, rows: self.experts[e](rows), len(self.experts))


# Its shapes depend on the routing (the rows each expert gets): traced by torch.compile (a static cache's compiled
# step), every new routing would be another graph, so it runs eagerly between the compiled parts.
@torch.compiler.disable
def mix_experts(x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor, run, num_experts: int) -> torch.Tensor:
    """Each token's (N, C) chosen experts' outputs, weighted and summed: `chosen` and `weights` (N, k) are each
    token's experts and their weights, `run(e, rows)` expert e's output on its rows. The (token, expert) pairs are
    sorted by expert, so each expert runs once, on the rows routed to it, and experts nobody chose do not run."""
    N, k = chosen.shape
    pairs = chosen.flatten()  # (N * k,) the expert of each pair
    order = pairs.argsort(stable=True)
    counts = torch.bincount(pairs, minlength=num_experts).tolist()
    groups = x[order // k].split(counts)  # the rows of each expert, in expert order
    y = torch.cat([run(e, rows) for e, rows in enumerate(groups) if len(rows)])  # (N * k, C)
    y = y * weights.flatten()[order, None]
    y = torch.zeros_like(y).index_copy(0, order, y)  # back to (token, slot) order
    # Summed over the k slots in the weights' dtype, then cast: the reference's order of rounding.
    return y.view(N, k, -1).sum(dim=1).to(x.dtype)


class MixtralSparseMoeBlock(SparseMoeBlock):
    def __init__(self, config: MixtralConfig):
        experts = [MixtralExpert(config.hidden_size, config.intermediate_size) for _ in range(config.num_local_experts)]
        super().__init__(config.hidden_size, experts, config.num_experts_per_tok, normalize=True,
                         jitter_noise=config.router_jitter_noise)


class MixtralDecoderLayer(nn.Module):
    """Llama's pre-norm block with a feed-forward part that may be sparse (a SparseMoeBlock, gpt-oss's mixture), whose
    router scores are appended to `router_logits` when a list is given."""

    attention_class = llama.LlamaAttention  # Qwen3-MoE: Qwen3's, with q/k norms
    feed_forward_name = "block_sparse_moe"  # the checkpoints' name for the feed-forward part ("mlp" in Qwen3-MoE)
    norm_class = RMSNorm  # gpt-oss's scales in float32 before casting back (olmo2.Olmo2RMSNorm)

    def __init__(self, config: MixtralConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.attention_class(config, layer_idx)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps)
        setattr(self, self.feed_forward_name, self.new_feed_forward(config, layer_idx))

    def new_feed_forward(self, config: MixtralConfig, layer_idx: int) -> nn.Module:
        return MixtralSparseMoeBlock(config)

    def forward(self, x, cos, sin, mask, cache, attention_path="sdpa", router_logits=None):
        h, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_path)
        x = x + h
        return x + self.feed_forward(self.post_attention_layernorm(x), router_logits), weights

    def feed_forward(self, x: torch.Tensor, router_logits: list | None) -> torch.Tensor:
        """The feed-forward part's output on the normed `x`; a sparse block's router scores are appended to
        `router_logits` when it is a list."""
        return routed(getattr(self, self.feed_forward_name)(x), router_logits)


def routed(h: torch.Tensor | tuple, router_logits: list | None) -> torch.Tensor:
    """A feed-forward part's output `h`: a dense MLP's output, or a sparse block's output and router scores, the
    scores appended to `router_logits` when it is a list (Mixtral's layers, Jamba's)."""
    if isinstance(h, tuple):
        h, scores = h
        if router_logits is not None:
            router_logits.append(scores)
    return h


class MixtralPreTrainedModel(llama.LlamaPreTrainedModel):
    config_class = MixtralConfig
    convert_gguf_state_dict = staticmethod(convert_gguf_state_dict)

    @staticmethod
    def from_checkpoint_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return split_fused_experts(state_dict, "block_sparse_moe", ("w1", "w3", "w2"))

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Router):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def new_base_model(self, config: MixtralConfig) -> "MixtralModel":
        return MixtralModel(config)


class MixtralModel(MixtralPreTrainedModel, llama.LlamaModel):
    """The decoder stack without a head: the last hidden state, and with output_router_logits every sparse layer's
    router scores."""

    layer_class = MixtralDecoderLayer

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, output_router_logits=None, return_dict=None,
        cache_position=None,
    ) -> MoeModelOutputWithPast | tuple:
        """The last hidden state (B, T, C) after the final norm; with output_hidden_states also the embeddings and
        every layer's output (the last one normed), with output_attentions every layer's weights, and with
        output_router_logits (else the config's) every sparse layer's router scores (B * T, num_experts)."""
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        router_logits = [] if output_router_logits else None  # filled by the layers
        # Only a list to fill goes to the layers: without one, a decoding step may run past them (decode's extra).
        base = self.decode(input_ids, attention_mask, position_ids, past_key_values, cache, use_cache, labels,
                           inputs_embeds, output_attentions, output_hidden_states, cache_position,
                           (router_logits,) if output_router_logits else ())
        output = MoeModelOutputWithPast(
            last_hidden_state=base.last_hidden_state, cache=base.cache, hidden_states=base.hidden_states,
            attentions=base.attentions, router_logits=recorded(router_logits),
        )
        return self.returned(output, return_dict)


class MoeCausalLM(CausalLM):
    """The language-model head of a sparse mixture of experts: CausalLM's logits and next-token loss, plus with
    output_router_logits (else the config's) the load-balancing loss (`aux_loss`), added to the loss times
    config.router_aux_loss_coef when labels are given (unless `load_balancing` is False: DeepSeek's head returns the
    router scores and no such loss)."""

    load_balancing = True

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, *,
        token_type_ids=None, labels=None, logits_to_keep=0, cache=None, inputs_embeds=None, use_cache=None,
        output_attentions=None, output_hidden_states=None, output_router_logits=None, return_dict=None,
        cache_position=None,
    ) -> MoeCausalLMOutputWithPast | tuple:
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: leave logits_to_keep at 0 when passing labels.")
        base = self.base_model(
            input_ids, attention_mask, position_ids, past_key_values, cache=cache, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            output_router_logits=output_router_logits, return_dict=True, cache_position=cache_position,
        )
        hidden = base.last_hidden_state
        logits = self.token_logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None if labels is None else next_token_loss(logits, labels)
        aux_loss = None
        if base.router_logits and self.load_balancing:  # a Qwen3-MoE with only dense layers has no router scores
            config = self.config
            aux_loss = load_balancing_loss(base.router_logits, config.num_experts, config.num_experts_per_tok,
                                           attention_mask)
            if loss is not None:
                loss = loss + config.router_aux_loss_coef * aux_loss.to(loss.device)
        output = MoeCausalLMOutputWithPast(
            loss=loss, aux_loss=aux_loss, logits=logits, cache=base.cache, hidden_states=base.hidden_states,
            attentions=base.attentions, router_logits=base.router_logits,
        )
        return self.returned(output, return_dict)


class MixtralForCausalLM(MixtralPreTrainedModel, MoeCausalLM):
    """The decoder with its language-model head: next-token logits, the loss when labels are given, and the
    load-balancing loss with output_router_logits."""


class MixtralForSequenceClassification(MixtralPreTrainedModel, SequenceClassification):
    """One label (or score) per sequence, read from the hidden state of the last token that is not padding."""


class MixtralForTokenClassification(MixtralPreTrainedModel, TokenClassification):
    """One label per token (named entities, parts of speech)."""


class MixtralForQuestionAnswering(MixtralPreTrainedModel, QuestionAnswering):
    """Extractive QA: the logits of each token being the start and the end of the answer span."""

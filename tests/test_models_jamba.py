"""Jamba (model_type "jamba") against the reference, on tiny random models it makes and saves.

Two layers, a Mamba mixer and an attention layer (in either order), one with the experts (four, two per token) and
the other with the dense MLP, each mixer's A_log, D, time-step bias and its time-step, B and C norms drawn away from
the reference's init, the other weights at std 0.15. Variants: the mixer first with the experts; the attention first
with the experts, tied embeddings, in_proj's bias and no convolution bias. Through HybridCacheTests and
RoutedExpertsTests: the three heads the reference has, with the loss, in each variant; greedy and beam generation;
hidden states and attention weights; inputs_embeds; a training step's gradients (with the load-balancing loss) with
and without checkpointing; saving both ways, the files holding the reference's tensors; router logits and the
load-balancing loss; bfloat16 as the reference's; and in their HybridCache forms cached decoding, a left-padded batch
against its rows alone (and the reference's batch), sampled sequences, assisted decoding giving the reference's
greedy tokens, and the refusals (a DynamicCache, a static cache, the CPU kernel). Also a model without experts (num_experts 1), a file holding
the reference's fused experts, the config's defaults, layer kinds and refusals, the tokenizer class, and GGUF files
of llama.cpp's "jamba" architecture.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

import openformers
from decoder_parity import (
    assert_config_defaults_equal_the_references,
    assert_config_refuses_by_name,
    assert_metaspace_bpe_folder_tokenizes_as_the_reference,
    assert_outputs_close,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
)
from decoder_suite import HybridCacheTests, RoutedExpertsTests
from openformers import AutoModelForCausalLM, JambaConfig, JambaForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, num_experts=4, num_experts_per_tok=2,
    attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=0,
    mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=6,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.15,
)
VARIANTS = {
    "mamba-first-with-experts": {},
    "attention-with-experts-tied-biased": dict(attn_layer_offset=0, tie_word_embeddings=True, mamba_proj_bias=True,
                                               mamba_conv_bias=False),
}


class TestJamba(HybridCacheTests, RoutedExpertsTests):
    REFERENCE_CONFIG = "JambaConfig"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {"JambaModel": "AutoModel", "JambaForCausalLM": "AutoModelForCausalLM",
             "JambaForSequenceClassification": "AutoModelForSequenceClassification"}
    HEAD_VARIANTS = list(VARIANTS)
    TRAINING_VARIANTS = list(VARIANTS)
    TRAINING_OVERRIDES = dict(router_aux_loss_coef=0.5, output_router_logits=True)
    EXPERT_BLOCK = "feed_forward"

    @staticmethod
    def draw_mixer(mixer) -> None:
        """Mamba's A_log and D drawn per channel and state (the reference's init makes every channel alike), the time
        step's bias, the weights of the time-step, B and C norms around one, out_proj at std 0.5."""
        mixer.A_log.normal_(mean=0.0, std=1.0)
        mixer.D.normal_(mean=1.0, std=0.5)
        mixer.dt_proj.bias.normal_(mean=0.0, std=0.5)
        for norm in (mixer.dt_layernorm, mixer.b_layernorm, mixer.c_layernorm):
            norm.weight.normal_(mean=1.0, std=0.5)
        mixer.out_proj.weight.normal_(std=0.5)

    @staticmethod
    def state_shapes(config) -> tuple[tuple, tuple]:
        width = config.mamba_expand * config.hidden_size
        return (width, config.mamba_d_conv), (width, config.mamba_d_state)


_reference, _ids, _inputs = TestJamba.reference, TestJamba.ids, TestJamba.inputs


@torch.inference_mode()
def test_the_layer_kinds_are_the_references(tmp_path):
    """Four layers, attention every fourth from the second and experts every second from the first: the same kinds
    and modules as the reference's, and the same outputs."""
    reference = _reference(num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=1)
    model = load_saved(reference, tmp_path)
    config, theirs = model.config, reference.config
    assert config.layers_block_type == list(theirs.layers_block_type) == ["mamba", "attention", "mamba", "mamba"]
    assert config.layer_types == list(theirs.layer_types)
    assert config.layers_num_experts == list(theirs.layers_num_experts) == [4, 1, 4, 1]
    for ours, their_layer in zip(model.model.layers, reference.model.layers):
        assert (ours.mamba is None) == (type(their_layer).__name__ == "JambaAttentionDecoderLayer")
        assert hasattr(ours.feed_forward, "router") == hasattr(their_layer.feed_forward, "router")
    inputs = {**_inputs(), "output_router_logits": True}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "four layers")


@torch.inference_mode()
def test_a_model_without_experts_is_the_references(tmp_path):
    """num_experts 1: every layer's feed-forward part is the dense MLP, and there is no router to score."""
    reference = _reference(num_experts=1, num_experts_per_tok=1)
    model = load_saved(reference, tmp_path)
    assert not any(model.config.is_sparse(i) for i in range(2))
    assert not any(hasattr(layer.feed_forward, "router") for layer in model.model.layers)
    ids, mask = _inputs()["input_ids"], _inputs()["attention_mask"]
    ours, theirs = model(ids, attention_mask=mask, labels=ids), reference(ids, attention_mask=mask, labels=ids)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_a_file_of_the_references_fused_experts_loads(tmp_path):
    """The reference's in-memory tensors (each layer's experts fused into gate_up_proj and down_proj), saved as they
    are: the same outputs, and saved back under each expert's names, as the reference saves them."""
    reference = _reference()
    reference.config.save_pretrained(tmp_path)
    state = {name: t.contiguous() for name, t in reference.state_dict().items()}
    assert "model.layers.0.feed_forward.experts.gate_up_proj" in state
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert type(model) is JambaForCausalLM
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "fused experts")
    assert "model.layers.0.feed_forward.experts.3.up_proj.weight" in model.state_dict()


# The config: defaults, aliases, refusals.

def test_config_defaults_equal_the_references():
    ours, theirs = JambaConfig(), transformers.JambaConfig()
    assert_config_defaults_equal_the_references(ours, theirs)
    assert ours.mamba_dt_rank == theirs.mamba_dt_rank == 256 and ours.head_dim == 128
    assert ours.layers_block_type == list(theirs.layers_block_type)
    assert ours.layers_num_experts == list(theirs.layers_num_experts)
    assert JambaConfig(num_local_experts=8).num_experts == 8 and JambaConfig(num_experts=8).num_local_experts == 8


def test_a_config_json_reads_and_saves_as_the_references(tmp_path):
    """A config.json as Jamba's files write it (num_experts under its own name, mamba_dt_rank given, the kernels'
    switches): the same fields, and what ours saves the reference reads alike."""
    values = {"model_type": "jamba", "architectures": ["JambaForCausalLM"], "hidden_size": 64,
              "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2, "num_experts": 16,
              "mamba_dt_rank": 4, "use_mamba_kernels": False, "attn_layer_offset": 4, "attn_layer_period": 8,
              "expert_layer_offset": 1, "expert_layer_period": 2, "vocab_size": 65536}
    (tmp_path / "config.json").write_text(json.dumps(values))
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    assert type(ours) is JambaConfig and not ours.extra
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    for key in ("mamba_dt_rank", "num_experts", "use_mamba_kernels", "layers_block_type", "layers_num_experts"):
        assert getattr(ours, key) == (list if key.startswith("layers") else lambda v: v)(getattr(theirs, key)), key


@pytest.mark.parametrize("values, message", [
    (dict(attn_layer_offset=2), "attn_layer_offset=2"),
    (dict(expert_layer_offset=-1), "expert_layer_offset=-1"),
    (dict(attn_layer_period=0), "attn_layer_period=0"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok=5"),
    (dict(num_experts=0), "num_experts=0"),
    (dict(mamba_d_state=0), "mamba_d_state=0"),
    (dict(mamba_dt_rank=0), "mamba_dt_rank=0"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    assert_config_refuses_by_name(JambaConfig, {**TINY, **values}, message, tmp_path)


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizer", "LlamaTokenizerFast"])
def test_tokenizer_of_a_jamba_folder_is_the_references(tokenizer_class, tmp_path):
    """Jamba's folders hold a SentencePiece-converted tokenizer.json (a Metaspace pipeline here) and name a Llama
    tokenizer, which the reference overrides for the model type with its TokenizersBackend."""
    name = assert_metaspace_bpe_folder_tokenizes_as_the_reference(
        tmp_path, ["Jamba mixes Mamba and attention layers, 52B or 398B.", "Hello world, 12345 and café"],
        ["<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"], "jamba",
        {"tokenizer_class": tokenizer_class, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
         "unk_token": "<|unk|>", "pad_token": "<|pad|>"},
        "Jamba says hello, 2024 café")
    assert name == "TokenizersBackend"


# GGUF files as llama.cpp's converter writes them (convert_hf_to_gguf.py JambaModel): architecture "jamba", the
# key/value head count per layer (0 for a Mamba layer), Mamba's ssm.* metadata, the expert counts, the experts stacked
# per projection (ffn_gate_exps, ffn_up_exps, ffn_down_exps), A as -exp(A_log), the squeezed convolution, and the
# query and key rows as they are.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output",
    "model.layers.": "blk.", "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "pre_ff_layernorm": "ffn_norm",
    "feed_forward.router": "ffn_gate_inp", "feed_forward.gate_proj": "ffn_gate", "feed_forward.up_proj": "ffn_up",
    "feed_forward.down_proj": "ffn_down", "feed_forward.experts.down_proj": "ffn_down_exps.weight",
    "mamba.in_proj": "ssm_in", "mamba.conv1d": "ssm_conv1d", "mamba.x_proj": "ssm_x", "mamba.dt_proj": "ssm_dt",
    "mamba.dt_layernorm": "ssm_dt_norm", "mamba.b_layernorm": "ssm_b_norm", "mamba.c_layernorm": "ssm_c_norm",
    "mamba.A_log": "ssm_a", "mamba.D": "ssm_d", "mamba.out_proj": "ssm_out",
}


def _write_gguf(path, reference, kv_heads=None):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "jamba")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(kv_heads or [config.num_key_value_heads if kind == "attention" else 0
                                          for kind in config.layers_block_type])
    writer.add_ssm_conv_kernel(config.mamba_d_conv)
    writer.add_ssm_inner_size(config.mamba_expand * config.hidden_size)
    writer.add_ssm_state_size(config.mamba_d_state)
    writer.add_ssm_time_step_rank(config.mamba_dt_rank)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_expert_count(config.num_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_eos_token_id(2)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if name.endswith("experts.gate_up_proj"):  # the reference's fused halves: llama.cpp's two stacks
            layer = name.split(".")[2]
            for half, stack in zip(("gate", "up"), tensor.chunk(2, dim=1)):
                writer.add_tensor(f"blk.{layer}.ffn_{half}_exps.weight", stack.contiguous().numpy())
            continue
        if name.endswith("A_log"):
            tensor = -torch.exp(tensor)
        elif name.endswith("conv1d.weight"):
            tensor = tensor.squeeze(1)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(num_hidden_layers=4, **VARIANTS[variant])
    _write_gguf(tmp_path / "jamba.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "jamba.gguf")
    assert type(model) is JambaForCausalLM
    config, theirs = model.config, reference.config
    assert config.layers_block_type == list(theirs.layers_block_type)
    assert config.layers_num_experts == list(theirs.layers_num_experts)
    for key in ("num_key_value_heads", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank",
                "mamba_conv_bias", "mamba_proj_bias", "num_experts", "num_experts_per_tok", "tie_word_embeddings"):
        assert getattr(config, key) == getattr(theirs, key), key
    inputs = {**_inputs(), "output_router_logits": True}
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    model.save_pretrained(tmp_path / "saved")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert_outputs_close(outputs_of(reloaded, inputs), outputs_of(reference, inputs), "GGUF saved")


def test_gguf_layers_that_do_not_repeat_are_refused(tmp_path):
    """Attention in layers 0, 1 and 3 of four: no period and offset give them, and the file is refused by name."""
    _write_gguf(tmp_path / "jamba.gguf", _reference(num_hidden_layers=4), kv_heads=[2, 2, 0, 2])
    with pytest.raises(ValueError, match=r"jamba.gguf has layers \[0, 1, 3\] by jamba.attention.head_count_kv"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "jamba.gguf")

"""Mamba-2 (model_type "mamba2") against the reference, on tiny random models it makes and saves.

The common decoder tests in their state-cache forms (test_models_mamba.MambaFamilyTests: both heads and the loss,
cached decoding, a left-padded batch against rows alone, generation, hidden states, saving both ways, training, the
refusals, quantized linear layers) on a model whose prompts span several scan chunks (chunk_size 4) and whose two
groups of B and C each serve four heads; A_log and D drawn per head, as the reference's init makes them all alike.
Also: each variant shown to change the logits, the time-step limit (the chunked scan clamps dt, a decoding step does
not, in the reference as here), the chunk size changing nothing, the config's defaults and refusals, config.json's
Infinity as the reference writes it, GGUF files written as llama.cpp's converter writes them, and AutoTokenizer's
class for a Mamba-2 folder (Codestral's names LlamaTokenizer).
"""

import pytest
import torch

import openformers
from decoder_parity import (
    assert_byte_level_bpe_folder_tokenizes_as_the_reference,
    assert_outputs_close,
    finish_gguf,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    make_reference,
    outputs_of,
    padded_batch,
)
from openformers import AutoModelForCausalLM, Mamba2ForCausalLM, MambaCache
from test_models_mamba import MambaFamilyTests

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99, hidden_size=32, state_size=8, num_hidden_layers=2, conv_kernel=4, num_heads=8, head_dim=8,
    n_groups=2, chunk_size=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    initializer_range=0.2,  # weights large enough that a detail computed wrong moves the logits past the tolerance
)
VARIANTS = {
    "default": {},
    "biases": dict(use_bias=True),  # in_proj and out_proj biases
    "no-conv-bias": dict(use_conv_bias=False),
    "tied": dict(tie_word_embeddings=True),
    "one-group": dict(n_groups=1, num_heads=4, head_dim=16),
}


def reference_model(name, **values):
    """The reference's tiny model with A_log and D drawn per head (its init makes A = 1..H and D = 1)."""
    model = make_reference(name, transformers.Mamba2Config(**{**TINY, **values}))
    for layer in model.base_model.layers:
        draw_per_head(layer.mixer)
    return model


@torch.no_grad()
def draw_per_head(mixer) -> None:
    """A Mamba-2 mixer's A_log and D drawn per head, where the reference's init makes A = 1..H and D = 1."""
    mixer.A_log.normal_(mean=0.0, std=1.0)
    mixer.D.normal_(mean=1.0, std=0.5)


class TestMamba2(MambaFamilyTests):
    REFERENCE_CONFIG = "Mamba2Config"
    TINY = TINY
    VARIANTS = VARIANTS
    HEADS = {"Mamba2Model": "AutoModel", "Mamba2ForCausalLM": "AutoModelForCausalLM"}
    MIXER_LINEARS = ("in_proj", "out_proj")

    @classmethod
    def reference(cls, name=None, **overrides):
        return reference_model(name or cls.causal_lm(), **overrides)

    @staticmethod
    def state_shapes(config, rows):
        """(rows, I + 2 G N, K) for the convolution over x, B and C; (rows, H, P, N) for the scan."""
        conv = config.intermediate_size + 2 * config.n_groups * config.state_size
        return (rows, conv, config.conv_kernel), (rows, config.num_heads, config.head_dim, config.state_size)


# The time step's limit, and the chunk size.

@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    reference = reference_model("Mamba2ForCausalLM", time_step_limit=(0.3, 0.6))
    return reference, load_saved(reference, tmp_path_factory.mktemp("limited"))


@torch.inference_mode()
def test_the_time_step_limit_clamps_the_scan_as_the_references(limited):
    reference, model = limited
    assert model.config.time_step_limit == [0.3, 0.6]
    ids, mask = padded_batch(torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(7)))
    inputs = dict(input_ids=ids, attention_mask=mask, labels=ids)
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "time_step_limit")
    unlimited = reference_model("Mamba2ForCausalLM")
    assert (unlimited(ids).logits - reference(ids).logits).abs().max() > 1e-2


@torch.inference_mode()
def test_a_decoding_step_leaves_the_time_step_unclamped_as_the_references(limited):
    """The reference's step (and mamba_ssm's) skips the limit: its tokens are ours, and a cached step is not the full
    forward's last position, in both."""
    reference, model = limited
    ids = torch.randint(1, 99, (2, 7), generator=torch.Generator().manual_seed(3))
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
    cache = MambaCache()
    model(ids[:, :-1], past_key_values=cache)
    step = model(ids[:, -1:], past_key_values=cache).logits[:, 0]
    their_cache = reference(ids[:, :-1], use_cache=True).cache
    their_step = reference(ids[:, -1:], cache=their_cache, use_cache=True).logits[:, 0]
    torch.testing.assert_close(step, their_step, atol=1e-4, rtol=1e-4)
    assert (step - model(ids).logits[:, -1]).abs().max() > 1e-3


@torch.inference_mode()
def test_the_chunk_size_changes_no_logits(tmp_path):
    reference = reference_model("Mamba2ForCausalLM")
    model = load_saved(reference, tmp_path)
    ids = torch.randint(1, 99, (2, 11), generator=torch.Generator().manual_seed(5))
    chunked = model(ids).logits
    for layer in model.base_model.layers:
        layer.mixer.chunk_size = 256
    torch.testing.assert_close(model(ids).logits, chunked, atol=1e-5, rtol=1e-5)


# The config: defaults, refusals and Infinity in config.json.

def test_config_defaults_equal_the_references():
    ours, theirs = openformers.Mamba2Config(), transformers.Mamba2Config()
    for key, value in theirs.to_dict().items():
        if key in ("transformers_version", "dtype", "architectures", "_name_or_path", "chunk_size_feed_forward",
                   "is_encoder_decoder"):
            continue
        ours_value = getattr(ours, key)
        assert (list(ours_value) if isinstance(ours_value, tuple) else ours_value) == value, key
    assert ours.time_step_rank == 256 and ours.intermediate_size == 8192 and ours.layer_types == theirs.layer_types


def test_config_json_with_infinity_reads_and_writes_as_the_references(tmp_path):
    """The reference writes time_step_limit's Infinity as {"__float__": "Infinity"}; Codestral's file holds a bare
    Infinity. Both read, and what we write the reference reads back."""
    reference = transformers.Mamba2Config(**TINY)
    reference.save_pretrained(tmp_path)
    assert '"__float__": "Infinity"' in (tmp_path / "config.json").read_text()
    ours = openformers.AutoConfig.from_pretrained(tmp_path)
    assert ours.time_step_limit == [0.0, float("inf")]
    ours.save_pretrained(tmp_path / "ours")
    assert '"__float__": "Infinity"' in (tmp_path / "ours" / "config.json").read_text()
    assert list(transformers.AutoConfig.from_pretrained(tmp_path / "ours").time_step_limit) == [0.0, float("inf")]
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text('{"model_type": "mamba2", "time_step_limit": [0.0, Infinity]}')
    assert openformers.AutoConfig.from_pretrained(tmp_path / "bare").time_step_limit == [0.0, float("inf")]


@pytest.mark.parametrize("values, field", [
    (dict(num_heads=3), "num_heads"),  # num_heads * head_dim != expand * hidden_size
    (dict(n_groups=3), "n_groups"),  # not a divisor of num_heads
    (dict(state_size=0), "state_size"),
    (dict(chunk_size=-4), "chunk_size"),
    (dict(time_step_limit=(0.5, 0.1)), "time_step_limit"),
    (dict(time_step_limit=1.0), "time_step_limit"),
    (dict(hidden_act="tanhh"), "hidden_act"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon"),
])
def test_bad_config_values_are_refused_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field}="):
        openformers.Mamba2Config(**{**TINY, **values})


# GGUF files as llama.cpp's converter (convert_hf_to_gguf.py Mamba2Model) writes them: architecture "mamba2", the
# head count as mamba2.ssm.time_step_rank, the groups as mamba2.ssm.group_count, dt_bias as ssm_dt.bias, A stored as
# -exp(A_log) and A and D as (H, 1), the gated norm's weight as (G, I / G), the convolution squeezed.

GGUF_NAMES = {
    "backbone.embeddings": "token_embd", "backbone.layers": "blk", "backbone.norm_f": "output_norm",
    ".norm.": ".attn_norm.", "mixer.in_proj": "ssm_in", "mixer.conv1d": "ssm_conv1d", "mixer.dt_bias": "ssm_dt.bias",
    "mixer.A_log": "ssm_a", "mixer.D": "ssm_d", "mixer.attn_norm": "ssm_norm", "mixer.out_proj": "ssm_out",
    "lm_head": "output",
}


def _write_mamba2_gguf(path, reference):
    import gguf

    config = reference.config
    inner = config.expand * config.hidden_size
    writer = gguf.GGUFWriter(str(path), "mamba2")
    writer.add_context_length(2**20)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_ssm_conv_kernel(config.conv_kernel)
    writer.add_ssm_inner_size(inner)
    writer.add_ssm_state_size(config.state_size)
    writer.add_ssm_time_step_rank(inner // config.head_dim)
    writer.add_ssm_group_count(config.n_groups)
    writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
    writer.add_eos_token_id(2)
    for name, gguf_name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        if ".mixer." in name:
            tensor = llama_cpp_mixer_tensor(name, tensor, config.n_groups)
        writer.add_tensor(gguf_name, tensor.contiguous().numpy())
    finish_gguf(writer)


def add_hybrid_mixer_metadata(writer, config, inner: int) -> None:
    """The `<arch>.ssm.*` metadata llama.cpp's converters write for a hybrid's Mamba-2 mixers (its `mamba_*` fields),
    `inner` wide, the head count as time_step_rank."""
    writer.add_ssm_conv_kernel(config.mamba_d_conv)
    writer.add_ssm_inner_size(inner)
    writer.add_ssm_state_size(config.mamba_d_state)
    writer.add_ssm_time_step_rank(config.mamba_n_heads)
    writer.add_ssm_group_count(config.mamba_n_groups)


def llama_cpp_mixer_tensor(name: str, tensor: torch.Tensor, groups: int) -> torch.Tensor:
    """A Mamba-2 mixer's tensor as llama.cpp's converter writes it: the convolution squeezed to (C, K), A as
    -exp(A_log), A and D as (H, 1), the gated norm's weight as (groups, I / groups); others as they are."""
    if name.endswith("conv1d.weight"):
        return tensor.squeeze(1)
    if name.endswith("A_log"):
        return -torch.exp(tensor).reshape(-1, 1)
    if name.endswith(".D"):
        return tensor.reshape(-1, 1)
    if name.endswith("norm.weight"):
        return tensor.reshape(groups, -1)
    return tensor


@pytest.mark.parametrize("variant", ["default", "biases", "tied", "one-group"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = reference_model("Mamba2ForCausalLM", **VARIANTS[variant])
    _write_mamba2_gguf(tmp_path / "mamba2.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "mamba2.gguf")
    assert type(model) is Mamba2ForCausalLM
    config = model.config
    assert (config.num_heads, config.head_dim, config.n_groups) == (reference.config.num_heads,
                                                                     reference.config.head_dim,
                                                                     reference.config.n_groups)
    assert (config.tie_word_embeddings, config.use_bias) == (reference.config.tie_word_embeddings,
                                                             reference.config.use_bias)
    ids, mask = padded_batch(torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(7)))
    assert_outputs_close(outputs_of(model, dict(input_ids=ids, attention_mask=mask)),
                         outputs_of(reference, dict(input_ids=ids, attention_mask=mask)), "GGUF")


# The tokenizer: the reference registers GPTNeoXTokenizer for mamba2; Codestral's folder names LlamaTokenizer.

@pytest.mark.parametrize("named", [None, "LlamaTokenizer"])
def test_a_mamba2_folder_gets_the_references_tokenizer_class(named, tmp_path):
    texts = ["def fibonacci(n):\n    return n", "  indented\ttabs and café", ""]
    settings = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    assert_byte_level_bpe_folder_tokenizes_as_the_reference(
        tmp_path, texts, ["<unk>", "<s>", "</s>"], {"model_type": "mamba2"},
        {**settings, **({"tokenizer_class": named} if named else {})})

"""Nemotron (model_type "nemotron": Minitron, Nemotron-Mini, Mistral-NeMo-Minitron) against the reference, on tiny
random models it makes and saves.

The variants: Minitron's layout (LayerNorms with biases scaling by 1 + weight, a gate-less MLP over a squared ReLU,
half of each head rotated, grouped-query attention, an untied head), and one with biases on the attention and the
MLP, a head_dim of its own, a quarter of each head rotated and linear rope scaling. Every head the reference has, on a
right- and a left-padded row with the head's labels; cached decoding, left padding, greedy and beam generation, a
static cache, hidden states and attention weights, a training step; saving both ways and transformers 4's
config.json; the config's defaults and refusals; GGUF files written as llama.cpp's converter writes a "nemotron"
checkpoint (norm weights plus one); and the tokenizer class the reference picks for a Nemotron folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_metaspace_bpe_folder_tokenizes_as_the_reference,
    assert_bfloat16_matches_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests, SteppedDecoderTests
from openformers import AutoModelForCausalLM, NemotronConfig, NemotronForCausalLM

transformers = pytest.importorskip("transformers")


class TestNemotron(SteppedDecoderTests, DecoderFamilyTests):
    REFERENCE_CONFIG = "NemotronConfig"
    TINY = dict(
        vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, norm_eps=0.1,  # large, so that the norms' own epsilon shows in the logits
    )
    VARIANTS = {
        "minitron": {},  # partial_rotary_factor 0.5 by default: 8 of 16 dimensions turn
        "biases-head-dim-linear-rope": dict(attention_bias=True, mlp_bias=True, head_dim=24, rope_parameters={
            "rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.25}),
    }
    HEADS = {
        "NemotronModel": "AutoModel",
        "NemotronForCausalLM": "AutoModelForCausalLM",
        "NemotronForSequenceClassification": "AutoModelForSequenceClassification",
        "NemotronForTokenClassification": "AutoModelForTokenClassification",
        "NemotronForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = ["biases-head-dim-linear-rope"]
    TRAINING_VARIANTS = ["minitron", "biases-head-dim-linear-rope"]
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "mlp_bias", "head_dim", "num_key_value_heads", "tie_word_embeddings",
                               "rope_parameters", "norm_eps")

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """The LayerNorm1P (weight + 1) in the model's dtype, the partial rotation by tables rounded to bfloat16
        and the squared-ReLU MLP, as the reference's: the same bits."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))


    def test_auto_classes_pick_the_nemotron_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is NemotronConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "NemotronModel"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is NemotronForCausalLM


TINY, VARIANTS = TestNemotron.TINY, TestNemotron.VARIANTS
_reference, _ids, _inputs = TestNemotron.reference, TestNemotron.ids, TestNemotron.inputs


@torch.inference_mode()
def test_transformers_4_config_json_loads(tmp_path):
    """Minitron's config.json (transformers 4) has partial_rotary_factor and rope_theta at the top and no
    rope_parameters; it loads as the reference loads it, and is written back in both layouts."""
    reference = _reference(rope_parameters={"rope_type": "default", "rope_theta": 700.0, "partial_rotary_factor": 0.25})
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(partial_rotary_factor=0.25, rope_theta=700.0, rope_scaling=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.rotary_dim == 4
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "transformers 4 config")
    written = model.config.to_dict()
    assert written["partial_rotary_factor"] == written["rope_parameters"]["partial_rotary_factor"] == 0.25


def test_config_defaults_match_the_reference():
    ours, theirs = NemotronConfig(), transformers.NemotronConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "head_dim",
        "hidden_act", "max_position_embeddings", "initializer_range", "norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
        "mlp_bias",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert ours.rotary_dim == 64
    # The reference keeps None, and then cannot build its attention (heads // None); every checkpoint sets it.
    assert theirs.num_key_value_heads is None and ours.num_key_value_heads == ours.num_attention_heads == 48


@pytest.mark.parametrize("values, message", [
    (dict(hidden_act="tanh"), "hidden_act='tanh'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(head_dim=0), "head_dim=0"),
    (dict(norm_eps=-1.0), "norm_eps=-1.0"),
    (dict(mlp_bias="yes"), "mlp_bias='yes'"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    (dict(partial_rotary_factor=0.1), "partial_rotary_factor=0.1"),
    (dict(rope_parameters={"rope_type": "proportional", "factor": 2.0, "rope_theta": 10.0}), "'proportional'"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        NemotronConfig.from_dict({**TINY, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nemotron", **TINY, "norm_eps": 0}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: norm_eps=0"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "nemotron" checkpoint (convert_hf_to_gguf.py's NemotronModel): Llama's
# tensor names with the norms' biases, the rows as they are, one added to every norm weight, the LayerNorms' epsilon
# and the rotated width in its metadata, linear rope scaling as type and factor.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    import gguf

    reference = _reference(**VARIANTS[variant])
    config = reference.config
    stored = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    scaling = config.rope_parameters.get("factor")
    with torch.no_grad():  # the converter's norm weights: plus one
        for name, parameter in reference.named_parameters():
            if name.endswith("norm.weight"):
                parameter += 1
        write_gguf(tmp_path / "nemotron.gguf", "nemotron", reference, GGUF_NAMES, layer_norm_eps=config.norm_eps,
                   rope_dimension_count=int(config.head_dim * config.rope_parameters["partial_rotary_factor"]),
                   key_length=config.head_dim, value_length=config.head_dim,
                   rope_scaling_type=gguf.RopeScalingType.LINEAR if scaling else gguf.RopeScalingType.NONE,
                   **({"rope_scaling_factor": scaling} if scaling else {}))
        reference.load_state_dict(stored)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "nemotron.gguf")
    assert isinstance(model, NemotronForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, config, ("num_key_value_heads", "tie_word_embeddings", "attention_bias",
                                                  "mlp_bias", "head_dim"))
    assert model.config.rotary_dim == int(config.head_dim * config.rope_parameters["partial_rotary_factor"])
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizer", "PreTrainedTokenizerFast"])
def test_tokenizer_of_a_nemotron_folder_is_the_references(tokenizer_class, tmp_path):
    """The reference takes the class Nemotron folders name as wrong and reads their tokenizer.json with its
    TokenizersBackend (a Metaspace pipeline here, as NeMo's SentencePiece models convert)."""
    name = assert_metaspace_bpe_folder_tokenizes_as_the_reference(
        tmp_path, ["Minitron is a pruned and distilled Nemotron, 4B or 8B.", "Hello world, 12345 and café"],
        ["<pad>", "<unk>", "<s>", "</s>"], "nemotron",
        {"tokenizer_class": tokenizer_class, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "Nemotron says hello, 2024 café")
    assert name == "TokenizersBackend"

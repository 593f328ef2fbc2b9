"""GLM-4 (model_type "glm") and GLM-4-0414 (model_type "glm4") against the reference, on tiny random models it makes
and saves.

The variants: the released layout (q/k/v biases, grouped-query attention, half of each head turned in interleaved
pairs), and one without biases, a quarter of each head turned, linear rope scaling and tied embeddings; GLM-4-0414
with its norms after each branch in both. Every head the reference has, on a right- and a left-padded row with the
head's labels; cached decoding, left padding, greedy and beam generation, a static cache, hidden states and attention
weights, a training step; saving both ways and transformers 4's config.json; the config's defaults and refusals; the
CPU kernel's decoding step and greedy generation through it; GGUF files written as llama.cpp's converter writes a "glm4" checkpoint (the fused gate/up tensor
as ffn_up, no rows permuted); the tokenizer class the reference picks for a GLM folder, with its [gMASK]<sop>
prefix and chat template, and the same vocabulary read from a GGUF file.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, Glm4Config, Glm4ForCausalLM, GlmConfig

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0,
    bos_token_id=1, eos_token_id=2,
)
VARIANTS = {
    "glm-4-9b": {},  # q/k/v biases, 8 of 16 dimensions turned in pairs (2i, 2i + 1)
    "no-bias-linear-tied": dict(attention_bias=False, tie_word_embeddings=True, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.25}),
}


class GlmFamilyTests(DecoderFamilyTests):
    """What GLM-4 and GLM-4-0414 test alike; each class names its reference classes."""

    TINY, VARIANTS = TINY, VARIANTS
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = TRAINING_VARIANTS = list(VARIANTS)
    SAVED_CONFIG_ATTRIBUTES = ("attention_bias", "tie_word_embeddings", "rope_parameters", "num_key_value_heads",
                               "head_dim")

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings
        assert model.model.layers[0].self_attn.o_proj.bias is None

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """RMSNorm normalizing in float32 and the partial interleaved rotation by tables rounded to bfloat16, as
        the reference's: the same bits."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits(self, tiny):
        """The kernel's step turns the interleaved pairs of the rotated width, adds the q/k/v biases, splits the fused
        gate/up, and norms each branch's output where GLM-4-0414 does, as the layers do."""
        _, reference, model = tiny
        assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))

    def test_auto_classes_pick_the_family_classes(self, tiny):
        folder, reference, _ = tiny
        prefix = type(reference).__name__.removesuffix("ForCausalLM")
        assert type(openformers.AutoConfig.from_pretrained(folder)).__name__ == f"{prefix}Config"
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == f"{prefix}Model"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)).__name__ == f"{prefix}ForCausalLM"
        with pytest.raises(ValueError, match=f"no question-answering class for '{reference.config.model_type}'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(folder)


def _heads(prefix: str) -> dict:
    """The reference's classes of the family named `prefix` ("Glm4"), each with the Auto class that loads it."""
    return {f"{prefix}{suffix}": f"AutoModel{suffix.removeprefix('Model')}"
            for suffix in ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification")}


class TestGlm(GlmFamilyTests):
    REFERENCE_CONFIG = "GlmConfig"
    HEADS = _heads("Glm")


class TestGlm4(GlmFamilyTests):
    REFERENCE_CONFIG = "Glm4Config"
    HEADS = _heads("Glm4")


_reference, _ids, _inputs = TestGlm4.reference, TestGlm4.ids, TestGlm4.inputs


@torch.inference_mode()
def test_transformers_4_config_json_loads(tmp_path):
    """glm-4-9b-chat-hf's config.json (transformers 4) has partial_rotary_factor and rope_theta at the top and no
    rope_parameters; it loads as the reference loads it, and is written back in both layouts."""
    reference = TestGlm.reference(rope_parameters={"rope_theta": 300.0, "partial_rotary_factor": 0.25})
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(partial_rotary_factor=0.25, rope_theta=300.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.config.rotary_dim == 4 and model.config.rope_theta == 300.0
    inputs = TestGlm.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "transformers 4 config")
    written = model.config.to_dict()
    assert written["partial_rotary_factor"] == written["rope_parameters"]["partial_rotary_factor"] == 0.25
    assert written["rope_theta"] == written["rope_parameters"]["rope_theta"] == 300.0


@pytest.mark.parametrize("ours, theirs", [(GlmConfig, "GlmConfig"), (Glm4Config, "Glm4Config")])
def test_config_defaults_match_the_reference(ours, theirs):
    ours, theirs = ours(), getattr(transformers, theirs)()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "hidden_act", "attention_dropout", "max_position_embeddings",
        "initializer_range", "rms_norm_eps", "tie_word_embeddings", "pad_token_id", "eos_token_id", "bos_token_id",
        "attention_bias",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert ours.rotary_dim == 64
    scaled = Glm4Config.from_dict({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0,
                                                       "partial_rotary_factor": 0.25}, "partial_rotary_factor": 0.5})
    assert scaled.partial_rotary_factor == 0.25 and scaled.rope_theta == 100.0  # the dict wins, as in the reference
    assert scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}


@pytest.mark.parametrize("values, message", [
    (dict(partial_rotary_factor=0.1), "partial_rotary_factor=0.1"),
    (dict(partial_rotary_factor=1.5), "partial_rotary_factor=1.5"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(head_dim=15), "head_dim=15"),
    (dict(attention_bias="yes"), "attention_bias='yes'"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type='proportional'"),
    (dict(rms_norm_eps=0), "rms_norm_eps=0"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    for config_class in (GlmConfig, Glm4Config):
        with pytest.raises(ValueError, match=message):
            config_class(**{**TINY, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "glm4", **TINY, "num_key_value_heads": 3}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: num_key_value_heads=3"):
        openformers.AutoConfig.from_pretrained(tmp_path)


# GGUF files as llama.cpp's converter writes a "glm4" checkpoint: the rows as they are (llama.cpp turns GLM-4's pairs
# as stored), the fused gate/up projection as ffn_up, the norms after each branch as Gemma 2's, and the number of
# rotated dimensions per head as rope.dimension_count.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_self_attn_layernorm": "post_attention_norm",
    "post_mlp_layernorm": "post_ffw_norm",
}


@pytest.mark.parametrize("variant", [{}, dict(attention_bias=False, tie_word_embeddings=True)],
                         ids=["glm-4-9b-0414", "no-bias-tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**variant)
    config = reference.config
    write_gguf(tmp_path / "glm4.gguf", "glm4", reference, GGUF_NAMES, layer_norm_rms_eps=config.rms_norm_eps,
               key_length=config.head_dim, value_length=config.head_dim,
               rope_dimension_count=int(config.head_dim * config.rope_parameters["partial_rotary_factor"]))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "glm4.gguf")
    assert isinstance(model, Glm4ForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, config, ("attention_bias", "tie_word_embeddings", "head_dim"))
    assert model.config.rotary_dim == 8
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "GGUF")


# The tokenizer: GLM-4's folders hold a tokenizer.json (a byte-level BPE split by cl100k's pattern, whose
# post-processor puts [gMASK]<sop> before each text) with a tokenizer_config.json naming PreTrainedTokenizerFast and
# the chat template; the reference reads a glm or glm4 folder with its tokenizers backend. llama.cpp names that
# vocabulary "chatglm-bpe" or "glm4" (tokenizer.ggml.pre) and splits it with Llama 3's pattern, the same one.

SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
         r"\s+(?!\S)|\s+")
TEXTS = ["Hello, world!", "  two  spaces\tand a tab\n", "café 日本語", "<|user|>\nHi<|assistant|>", "I'M 1234567 x",
         ""]
SPECIAL = ["<|endoftext|>", "[gMASK]", "<sop>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _glm_tokenizer_folder(folder, model_type, post_processor=True):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    if post_processor:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[gMASK] <sop> $A", pair="[gMASK] <sop> $A $B", special_tokens=[("[gMASK]", 1), ("<sop>", 2)])
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "padding_side": "left", "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
    }))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@pytest.mark.parametrize("model_type", ["glm", "glm4"])
def test_tokenizer_of_a_glm_folder_matches_the_reference(model_type, tmp_path):
    folder = _glm_tokenizer_folder(tmp_path / "glm", model_type)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__
    for text in TEXTS:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
        assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == reference.decode(
            reference(text)["input_ids"], skip_special_tokens=True)
    messages = [{"role": "user", "content": "Hi there"}]
    assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    got = ours(TEXTS[:3], padding=True)
    expected = reference(TEXTS[:3], padding=True)
    assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]


@pytest.mark.parametrize("pre", ["chatglm-bpe", "glm4"])
def test_gguf_tokenizer_splits_as_the_glm_tokenizer_json(pre, tmp_path):
    """Read from a GGUF file (no bos added: llama.cpp's GLM-4 prompts get [gMASK]<sop> from the chat template), the
    vocabulary gives the ids of the tokenizer.json it was converted from, three digits a piece."""
    import gguf

    folder = _glm_tokenizer_folder(tmp_path / "glm", "glm4", post_processor=False)
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    writer = gguf.GGUFWriter(str(tmp_path / "glm4.gguf"), "glm4")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    tokens = sorted(vocab, key=vocab.get)
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(merge) for merge in data["model"]["merges"]])
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(False)
    finish_gguf(writer)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load_quietly(openformers.AutoTokenizer.from_pretrained, tmp_path / "glm4.gguf")
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text), text

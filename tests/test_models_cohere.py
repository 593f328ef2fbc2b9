"""Cohere (model_type "cohere": Command R, Command R+, Aya) against the reference, on tiny random models it makes and
saves.

The variants: Command R's layout (one LayerNorm without a bias for attention and the MLP in parallel, interleaved
rotary pairs, grouped-query attention, tied head, logits scaled), Command R+'s (per-head q/k LayerNorms) with biases
on the attention projections, and an untied head with linear rope scaling. Both heads the reference has, on a right-
and a left-padded row; cached decoding, left padding, greedy and beam generation, a static cache, hidden states and
attention weights, a training step; saving both ways; GGUF files written as llama.cpp's converter writes a
"command-r" checkpoint; and the tokenizer the reference picks for a Cohere folder.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    GENERATE_OPTIONS,
    assert_generate_matches,
    assert_hidden_states_and_attentions_match,
    assert_kernel_steps_unless_refused,
    assert_cached_decoding_equals_the_full_forward,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_same_attributes,
    assert_saved_both_ways,
    assert_static_cache_gives_the_dynamic_cache_tokens,
    assert_training_step_matches,
    generation_inputs,
    llama_cpp_tensors,
    add_decoder_metadata,
    finish_gguf,
    load_quietly,
    load_saved,
    make_reference,
    outputs_of,
    padded_head_inputs,
)
from openformers import AutoModelForCausalLM, CohereConfig, CohereForCausalLM

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0, bos_token_id=1,
    eos_token_id=2, logit_scale=0.5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
VARIANTS = {
    # a large epsilon, so that the norms' own (the per-head ones' too) shows in the logits
    "command-r": dict(layer_norm_eps=0.1),
    "command-r-plus": dict(use_qk_norm=True, attention_bias=True, layer_norm_eps=0.1),
    "untied-linear-rope": dict(tie_word_embeddings=False, logit_scale=2.0, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}),
}
HEADS = {"CohereModel": "AutoModel", "CohereForCausalLM": "AutoModelForCausalLM"}


def _reference(name="CohereForCausalLM", **overrides):
    # Norm weights, the per-head (heads, head_dim) ones among them, drawn around one.
    return make_reference(name, transformers.CohereConfig(**{**TINY, **overrides}),
                          is_norm=lambda name: name.endswith("norm.weight"))


def _ids(*shape, seed=1):
    return torch.randint(3, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def _inputs(name) -> dict:
    return padded_head_inputs(_ids, name)


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _reference(**VARIANTS[request.param])
    return folder, reference, load_saved(reference, folder)


@torch.inference_mode()
def test_causal_lm_logits_and_loss_match_reference(tiny):
    _, reference, model = tiny
    assert isinstance(model, CohereForCausalLM) and not model.training
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings
    inputs = _inputs("CausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "causal LM")


@pytest.mark.parametrize("name", list(HEADS))
@torch.inference_mode()
def test_every_head_matches_reference_and_saves_both_ways(name, tmp_path):
    reference = _reference(name, **VARIANTS["command-r-plus"])
    model = load_saved(reference, tmp_path / "reference", HEADS[name])
    assert type(model).__name__ == name
    inputs = _inputs(name)
    expected = outputs_of(reference, inputs)
    assert_outputs_close(outputs_of(model, inputs), expected, name)
    assert_saved_both_ways(model, tmp_path / "ours", HEADS[name], inputs, expected)


@torch.inference_mode()
def test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path):
    _, reference, model = tiny
    inputs = _inputs("CausalLM")
    reloaded = assert_saved_both_ways(model, tmp_path, "AutoModelForCausalLM", inputs, outputs_of(reference, inputs))
    assert_same_attributes(reloaded.config, reference.config, (
        "use_qk_norm", "attention_bias", "num_key_value_heads", "tie_word_embeddings", "rope_parameters",
        "layer_norm_eps", "logit_scale",
    ))


@torch.inference_mode()
def test_cached_decoding_equals_the_full_forward(tiny):
    assert_cached_decoding_equals_the_full_forward(tiny[2], _ids(2, 12))


@torch.inference_mode()
def test_left_padded_batch_equals_single_rows(tiny):
    _, reference, model = tiny
    assert_left_padded_batch_equals_single_rows(model, _ids, reference)


@GENERATE_OPTIONS
@torch.inference_mode()
def test_generate_matches_reference(tiny, options):
    _, reference, model = tiny
    assert_generate_matches(model, reference, *generation_inputs(_ids), **options)


@torch.inference_mode()
def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(tiny):
    assert_static_cache_gives_the_dynamic_cache_tokens(tiny[2], *generation_inputs(_ids))


@torch.inference_mode()
def test_hidden_states_and_attention_weights_match_the_reference(tiny):
    folder, _, model = tiny
    ids = _inputs("CohereModel")
    assert_hidden_states_and_attentions_match(model, folder, ids["input_ids"], ids["attention_mask"])


def test_training_loss_and_gradients_match_the_reference(tmp_path):
    """The loss and every gradient of a training step are the reference's, with gradient checkpointing too."""
    reference = _reference(**VARIANTS["command-r-plus"])
    model = load_saved(reference, tmp_path)
    assert_training_step_matches(model, reference, _inputs("CausalLM"), checkpointing=(False, True))


@torch.inference_mode()
def test_bfloat16_norms_and_rotation_round_as_the_references():
    """In bfloat16 the LayerNorms (the per-head ones too) and the rotation run in float32 and round once, as the
    reference's do: the same bits, where computing them in bfloat16 differs in many places."""
    from transformers.models.cohere import modeling_cohere as theirs

    from openformers.models import cohere
    from openformers.models.layers import RotaryEmbedding

    torch.manual_seed(0)
    x = (torch.randn(2, 5, 4, 16) * 3 + 1).bfloat16()  # (B, T, heads, hs)
    weight = (torch.randn(4, 16) * 0.3 + 1).bfloat16()
    ours_norm, their_norm = cohere.CohereLayerNorm((4, 16), 1e-5), theirs.CohereLayerNorm((4, 16), eps=1e-5)
    ours_norm.weight.data, their_norm.weight.data = weight.clone(), weight.clone()
    assert torch.equal(ours_norm(x), their_norm(x))
    q = x.transpose(1, 2)  # (B, heads, T, hs)
    positions = torch.arange(5)[None]
    cos, sin = RotaryEmbedding(16, 10000.0, None, 64)(positions, torch.bfloat16)
    config = transformers.CohereConfig(hidden_size=64, num_attention_heads=4,
                                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    expected, _ = theirs.apply_rotary_pos_emb(q, q, *theirs.CohereRotaryEmbedding(config)(q, positions))
    assert torch.equal(cohere.CohereAttention.rope(q, cos, sin), expected)


def test_config_defaults_match_the_reference():
    ours, theirs = CohereConfig(), transformers.CohereConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "logit_scale", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "layer_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
        "use_qk_norm",
    ))
    assert ours.to_dict()["rope_parameters"] == {**theirs.rope_parameters}
    assert ours.head_dim == 128
    # transformers 4's config.json (Command R's): rope_theta at the top level, no rope_parameters
    old = CohereConfig.from_dict({**TINY, "rope_parameters": None, "rope_theta": 8000000.0, "rope_scaling": None})
    assert old.rope_theta == 8000000.0 and old.rope_scaling is None
    assert openformers.AutoConfig.for_model("cohere", **TINY).num_key_value_heads == 2


@pytest.mark.parametrize("values, message", [
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_key_value_heads=3), "num_key_value_heads=3"),
    (dict(hidden_size=66), "hidden_size=66"),
    (dict(hidden_size=72, num_attention_heads=8, num_key_value_heads=8), "head_dim=9"),
    (dict(logit_scale=0), "logit_scale=0"),
    (dict(layer_norm_eps=-1.0), "layer_norm_eps=-1.0"),
    (dict(use_qk_norm="yes"), "use_qk_norm='yes'"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
    (dict(rope_parameters={"rope_type": "proportional", "factor": 2.0, "rope_theta": 10.0}), "'proportional'"),
])
def test_config_refuses_what_it_does_not_implement(values, message):
    with pytest.raises(ValueError, match=message):
        CohereConfig.from_dict({**TINY, **values})


def test_a_bad_config_json_value_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "cohere", **TINY, "num_key_value_heads": 3}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: num_key_value_heads=3"):
        openformers.AutoConfig.from_pretrained(tmp_path)


@torch.inference_mode()
def test_the_cpu_kernel_steps_and_generates_as_the_reference(tiny):
    """from_pretrained gives Cohere the kernel's decoding step (one LayerNorm without a bias for both branches,
    interleaved pairs, the logits scaled), whose steps give the reference's logits and whose greedy tokens are the
    reference's, with Command R+'s per-head q/k norms (use_qk_norm) too."""
    folder, reference, model = tiny
    assert_kernel_steps_unless_refused(folder, reference, _ids(1, 12, seed=9), "cohere", None)


def test_auto_classes_pick_the_cohere_classes(tiny):
    folder = tiny[0]
    assert type(openformers.AutoConfig.from_pretrained(folder)) is CohereConfig
    assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "CohereModel"
    with pytest.raises(ValueError, match="no sequence-classification class for 'cohere'"):
        openformers.AutoModelForSequenceClassification.from_pretrained(folder)


# GGUF files as llama.cpp's converter writes a "command-r" checkpoint (convert_hf_to_gguf.py's CommandR2Model): Llama's
# tensor names, the rows as they are (llama.cpp rotates consecutive pairs, as Cohere does), the per-head q/k norm
# weights as (heads, head_dim) tensors, no output tensor for the tied head, the logit scale and the norms' epsilon.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}


def _write_gguf(path, reference):
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), "command-r")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_eps(config.layer_norm_eps)
    writer.add_logit_scale(config.logit_scale)
    writer.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    for _, name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)


@pytest.mark.parametrize("variant", ["command-r", "command-r-plus"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(variant, tmp_path):
    reference = _reference(**VARIANTS[variant])
    _write_gguf(tmp_path / "command-r.gguf", reference)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "command-r.gguf")
    assert isinstance(model, CohereForCausalLM) and model.generation_config.eos_token_id == 2
    assert_same_attributes(model.config, reference.config, (
        "use_qk_norm", "attention_bias", "num_key_value_heads", "tie_word_embeddings",
    ))
    assert model.config.layer_norm_eps == pytest.approx(reference.config.layer_norm_eps)  # stored as float32
    assert model.config.logit_scale == pytest.approx(reference.config.logit_scale)
    assert "head_dim" not in model.config.to_dict()
    inputs = _inputs("CausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "command-r.gguf").model_type == "cohere"


def test_gguf_without_the_logit_scale_is_refused(tmp_path):
    import gguf

    reference = _reference(**VARIANTS["command-r"])
    writer = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "command-r")
    add_decoder_metadata(writer, reference.config)
    writer.add_layer_norm_eps(reference.config.layer_norm_eps)
    for _, name, tensor in llama_cpp_tensors(reference, GGUF_NAMES):
        writer.add_tensor(name, tensor.contiguous().numpy())
    finish_gguf(writer)
    with pytest.raises(ValueError, match="command-r.logit_scale"):
        openformers.AutoConfig.from_pretrained(tmp_path / "bad.gguf")


# The tokenizer: Command R's and Aya's tokenizer.json is a byte-level BPE (NFC, digits one by one) and their
# tokenizer_config.json names CohereTokenizerFast (newer folders CohereTokenizer). The reference's CohereTokenizer keeps
# the file's vocabulary, merges, added tokens and post-processor and builds its normalizer, pre-tokenizer and decoder
# itself: a file whose parts differ (here plain ByteLevel, no NFC) is read the class's way.

SPECIALS = ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<|START_OF_TURN_TOKEN|>",
            "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>"]
TEXTS = ["Hello world, 12345 and café déjà vu", "def f(x):\n    return x * 2\n", "  two  spaces\ttabs 2024",
         "e\u0301 composed, \u00e9 precomposed", "<BOS_TOKEN>x<|END_OF_TURN_TOKEN|>", "日本語のテキスト", ""]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + message['content'] + '<|END_OF_TURN_TOKEN|>' }}"
    "{% else %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' + message['content'] + '<|END_OF_TURN_TOKEN|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)


def _cohere_tokenizer_folder(folder, tokenizer_class, command_r_parts):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if command_r_parts:
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<BOS_TOKEN> $A", pair="<BOS_TOKEN> $A:0 <BOS_TOKEN>:1 $B:1", special_tokens=[("<BOS_TOKEN>", 5)])
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    # Command R's tokenizer_config.json: its null unk_token turns the class's default off
    settings = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<BOS_TOKEN>",
                "eos_token": "<|END_OF_TURN_TOKEN|>", "pad_token": "<PAD>", "unk_token": None,
                "clean_up_tokenization_spaces": False, "tokenizer_class": tokenizer_class,
                "chat_template": CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    (folder / "config.json").write_text(json.dumps({"model_type": "cohere"}))
    return folder


@pytest.mark.parametrize("tokenizer_class, command_r_parts", [
    ("CohereTokenizerFast", True), ("CohereTokenizer", False),
])
def test_tokenizer_of_a_cohere_folder_matches_the_reference(tokenizer_class, command_r_parts, tmp_path):
    folder = _cohere_tokenizer_folder(tmp_path / "cohere", tokenizer_class, command_r_parts)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "CohereTokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map and ours.unk_token is None
    assert ours.padding_side == reference.padding_side == "left"
    for text in TEXTS + ["digits 9876543210 in a row"]:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        for skip in (False, True):
            assert ours.decode(got["input_ids"], skip_special_tokens=skip) == reference.decode(
                expected["input_ids"], skip_special_tokens=skip), text
    assert ours("a pair", "of texts")["input_ids"] == reference("a pair", "of texts")["input_ids"]
    got, expected = ours(TEXTS[:4], padding=True), reference(TEXTS[:4], padding=True)
    assert got["input_ids"] == expected["input_ids"] and got["attention_mask"] == expected["attention_mask"]
    chat = [{"role": "user", "content": "Hi, 12 pandas?"}, {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "More"}]
    for tokenize in (False, True):
        assert ours.apply_chat_template(chat, tokenize=tokenize, add_generation_prompt=True) == \
            reference.apply_chat_template(chat, tokenize=tokenize, add_generation_prompt=True)


# Command R's folders name three templates: the chat's, "tool_use" and "rag" (grounded generation with documents).
TOOL_USE_TEMPLATE = (
    "{{ bos_token }}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{% for tool in tools %}## {{ tool.name }}: "
    "{{ tool.description }}\n{% endfor %}<|END_OF_TURN_TOKEN|>{% for message in messages %}"
    "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + message['content'] + '<|END_OF_TURN_TOKEN|>' }}{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)
RAG_TEMPLATE = (
    "{{ bos_token }}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{% for document in documents %}Document: {{ loop.index0 }}"
    "\ntitle: {{ document.title }}\n{{ document.text }}\n{% endfor %}citations: {{ citation_mode }}"
    "<|END_OF_TURN_TOKEN|>{% for message in messages %}"
    "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + message['content'] + '<|END_OF_TURN_TOKEN|>' }}{% endfor %}"
)


def test_tool_use_and_grounded_generation_templates_render_as_the_references(tmp_path):
    folder = _cohere_tokenizer_folder(tmp_path / "command-r", "CohereTokenizerFast", True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["chat_template"] = [{"name": "default", "template": CHAT_TEMPLATE},
                                 {"name": "tool_use", "template": TOOL_USE_TEMPLATE},
                                 {"name": "rag", "template": RAG_TEMPLATE}]
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "user", "content": "What's the biggest penguin in the world?"}]
    tools = [{"name": "internet_search", "description": "Returns relevant snippets for a query"},
             {"name": "directly_answer", "description": "Answers without tools"}]
    documents = [{"title": "Tall penguins", "text": "Emperor penguins are the tallest."},
                 {"title": "Penguin habitats", "text": "Emperor penguins only live in Antarctica."}]
    for tokenize in (False, True):
        rendered = ours.apply_tool_use_template(chat, tools=tools, tokenize=tokenize, add_generation_prompt=True)
        assert rendered == reference.apply_tool_use_template(chat, tools=tools, tokenize=tokenize,
                                                             add_generation_prompt=True)
        for mode in ("accurate", "fast"):
            rendered = ours.apply_grounded_generation_template(chat, documents=documents, citation_mode=mode,
                                                               tokenize=tokenize)
            assert rendered == reference.apply_grounded_generation_template(chat, documents=documents,
                                                                            citation_mode=mode, tokenize=tokenize)
    assert "internet_search" in ours.apply_tool_use_template(chat, tools=tools, tokenize=False)
    assert "citations: fast" in ours.apply_grounded_generation_template(chat, documents, "fast", tokenize=False)

"""Llama against the reference: tiny random HF models saved to disk, and the real SmolLM2 GGUF.

TestLlama runs the common decoder tests (tests/decoder_suite.py: every head on a padded batch and saved both ways,
cached decoding, left padding, greedy and beam generation, static caches, hidden states, a training step) on tied
and untied models, and adds Llama's own: the output's names, logits_to_keep, generate's defaults, the base model
from a head's checkpoint, loading options, labels' names and counts, and a classification head made from a causal
LM's checkpoint; then rope scaling, GGUF files, SmolLM2, the sequence-classification losses and the Mistral and
Qwen2 configurations of the Llama classes.
"""

import json

import gguf
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_generate_with_the_defaults_matches,
    assert_left_padded_batch_equals_single_rows,
    finish_gguf,
    llama_cpp_tensors,
    load_saved,
    make_reference,
    padded_batch,
    quantized_blocks,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModel, AutoModelForCausalLM, LlamaForCausalLM, LlamaModel
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, rope_theta=5000.0, rms_norm_eps=1e-5,
)


def _save_tiny(folder, **overrides):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(folder)
    return model


class TestLlama(DecoderFamilyTests):
    REFERENCE_CONFIG = "LlamaConfig"
    TINY = TINY  # no pad token: a classification head made from the causal LM cannot pool a batch
    VARIANTS = {"untied": {}, "tied": dict(tie_word_embeddings=True)}
    HEADS = {
        "LlamaModel": "AutoModel",
        "LlamaForCausalLM": "AutoModelForCausalLM",
        "LlamaForSequenceClassification": "AutoModelForSequenceClassification",
        "LlamaForTokenClassification": "AutoModelForTokenClassification",
        "LlamaForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    HEAD_OVERRIDES = dict(num_labels=3, pad_token_id=0, id2label={0: "neg", 1: "neutral", 2: "pos"})

    @torch.inference_mode()
    def test_logits_and_loss_match_reference(self, tiny):
        _, reference, model = tiny
        assert isinstance(model, LlamaForCausalLM) and not model.training
        ids = self.ids(2, 11)
        labels = ids.clone()
        labels[0, :3] = -100
        ours, theirs = model(ids, labels=labels), reference(ids, labels=labels)
        torch.testing.assert_close(ours.logits, theirs.logits)
        torch.testing.assert_close(ours.loss, theirs.loss)
        assert ours[0] is ours.loss and ours["logits"] is ours.logits and list(ours) == ["loss", "logits"]

    @torch.inference_mode()
    def test_logits_to_keep_projects_the_last_positions(self, tiny):
        model = tiny[2]
        ids = self.ids(1, 7)
        full = model(ids).logits
        torch.testing.assert_close(model(ids, logits_to_keep=2).logits, full[:, -2:])
        with pytest.raises(ValueError, match="logits_to_keep"):
            model(ids, labels=ids, logits_to_keep=1)



    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows(self, tiny):
        """The reference's rows within torch's float32 tolerance, not only 1e-4."""
        _, reference, model = tiny
        assert_left_padded_batch_equals_single_rows(model, self.ids, reference, tolerance=None)

    @torch.inference_mode()
    def test_generate_with_the_generation_configs_defaults_matches_reference(self, tiny):
        assert_generate_with_the_defaults_matches(tiny[2], tiny[1], self.ids(1, 6, seed=6))

    @torch.inference_mode()
    def test_base_model_loads_from_a_checkpoint_with_a_head(self, tiny):
        folder, reference, _ = tiny
        base = AutoModel.from_pretrained(folder)
        assert isinstance(base, LlamaModel)
        ids = self.ids(2, 6)
        torch.testing.assert_close(base(ids).last_hidden_state, reference.model(ids).last_hidden_state)

    def test_dtype_options(self, tiny):
        folder = tiny[0]
        assert AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).dtype == torch.bfloat16
        assert AutoModelForCausalLM.from_pretrained(folder, torch_dtype="float16").dtype == torch.float16
        assert AutoModelForCausalLM.from_pretrained(folder, dtype="auto").dtype == torch.float32
        with pytest.raises(ValueError, match="dtype"):
            AutoModelForCausalLM.from_pretrained(folder, dtype="float8")
        with pytest.raises(TypeError, match="unexpected keyword arguments"):
            AutoModelForCausalLM.from_pretrained(folder, not_an_option=1)

    def test_config_overrides_and_properties(self, tiny):
        model = AutoModelForCausalLM.from_pretrained(tiny[0], rms_norm_eps=1e-3)
        assert model.config.rms_norm_eps == 1e-3
        assert model.device == torch.device("cpu")
        assert model.num_parameters() == sum(p.numel() for p in tiny[1].parameters())

    @torch.inference_mode()
    def test_every_head_saves_what_the_reference_loads_and_back(self, tiny_head, tmp_path):
        """Also the labels' names, which both libraries read back."""
        super().test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path)
        model = tiny_head[3]
        assert model.config.id2label == {0: "neg", 1: "neutral", 2: "pos"} and model.config.label2id["pos"] == 2
        assert transformers.AutoConfig.from_pretrained(tmp_path).id2label == model.config.id2label

    def test_a_head_checkpoint_with_the_wrong_number_of_labels_is_refused(self, tiny_head):
        name, folder, _, _ = tiny_head
        auto_class = getattr(openformers, self.HEADS[name])
        if name == "LlamaForQuestionAnswering":  # always two outputs (start, end), whatever num_labels says
            assert auto_class.from_pretrained(folder, num_labels=5).qa_outputs.out_features == 2
        elif name.endswith("Classification"):
            refused = r"wrong shape.*score\.weight: checkpoint \(3, 64\), model \(5, 64\)"
            with pytest.raises(ValueError, match=refused):
                auto_class.from_pretrained(folder, num_labels=5)
        else:  # no labels: nothing to refuse
            assert auto_class.from_pretrained(folder, num_labels=5).config.num_labels == 5

    def test_sequence_classification_from_a_causal_lm_checkpoint_warns_once(self, tiny):
        from openformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

        folder = tiny[0]
        with pytest.warns(UserWarning) as caught:
            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "score.weight" in message and "newly initialized" in message
        assert ("lm_head.weight" in message) == (not tiny[2].config.tie_word_embeddings)
        assert isinstance(model, LlamaForSequenceClassification)
        assert model.score.weight.shape == (2, TINY["hidden_size"])
        assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
        torch.testing.assert_close(model.model.embed_tokens.weight, tiny[2].model.embed_tokens.weight)
        with pytest.raises(ValueError, match="pad_token_id"):
            model(self.ids(2, 4))  # the tiny causal LM has no pad token: a batch cannot be pooled
        assert model(self.ids(1, 4)).logits.shape == (1, 2)


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
    ],
)
@torch.inference_mode()
def test_rope_scaling_matches_reference(tmp_path, scaling):
    reference = _save_tiny(tmp_path, rope_scaling=scaling)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.config.rope_scaling["rope_type"] == scaling["rope_type"]
    ids = TestLlama.ids(1, 40)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_a_head_missing_from_the_checkpoint_is_initialized_with_one_warning(tmp_path):
    torch.manual_seed(0)
    transformers.LlamaModel(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="lm_head.weight") as caught:
        model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert len(caught) == 1
    assert model.lm_head.weight.device.type == "cpu" and model.lm_head.weight.std() > 0


def test_from_config_builds_a_random_model():
    from openformers import LlamaConfig

    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY, tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(TestLlama.ids(1, 4)).logits.shape == (1, 4, TINY["vocab_size"])


# A GGUF written here the way llama.cpp's converter writes one: names, reversed shapes, permuted Q/K rows.


def _write_gguf(path, reference, quantize_to=None):
    config = reference.config
    arch = config.model_type  # llama.cpp permutes the q/k rows of "llama" files only
    writer = gguf.GGUFWriter(str(path), arch)
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm",
             "model.layers.": "blk."}
    for name, gguf_name, tensor in llama_cpp_tensors(reference, names, permute_heads=arch == "llama"):
        w = tensor.numpy()
        kind = quantize_to(gguf_name) if callable(quantize_to) else quantize_to  # one type, or one per name
        if kind is not None and w.ndim == 2:
            writer.add_tensor(gguf_name, quantized_blocks(w, kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name, w)
    finish_gguf(writer)


@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    reference = _save_tiny(tmp_path / "hf")
    _write_gguf(tmp_path / "tiny.gguf", reference)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny.gguf")
    assert not model.config.tie_word_embeddings and model.generation_config.eos_token_id == 2
    ids = TestLlama.ids(2, 8)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


# The real SmolLM2 GGUF (Q4_1 and Q8_0 blocks), against the reference's GGUF loader.

SMOLLM2_PROMPT = [1, 9906, 28, 339, 744, 253, 1789, 1743, 28, 284, 5248, 314, 2391, 30]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, reference_from_gguf):
    reference = reference_from_gguf("AutoModelForCausalLM", smollm2_gguf).eval()
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    return model, reference


@torch.inference_mode()
def test_smollm2_logits_match_reference(smollm2):
    model, reference = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (2, 2)
    ids = torch.tensor([SMOLLM2_PROMPT])
    expected = reference(ids).logits
    # The 14-token prompt runs through the compiled step (decode_prompt), whose products sum in another order than
    # PyTorch's matmul through 30 layers: float32 rounding, up to ~1.3e-4 apart at logits of ~20.
    torch.testing.assert_close(model(ids).logits, expected, atol=3e-4, rtol=1e-5)
    # The layers alone: the head's 14 rows go to the kernel (a float32 vocabulary head, see
    # kernels.Linear.kernel_rows), which sums each logit's 576 products in another order: ~1e-5 apart.
    step, model.model.accelerated_step = model.model.accelerated_step, None
    try:
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-4, rtol=1e-5)
    finally:
        model.model.accelerated_step = step


@torch.inference_mode()
def test_smollm2_greedy_generation_matches_reference(smollm2):
    model, reference = smollm2
    ids = torch.tensor([SMOLLM2_PROMPT])
    expected = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                                  pad_token_id=2)
    assert model.generate(ids, max_new_tokens=16).tolist() == expected.tolist()


@torch.inference_mode()
def test_smollm2_saved_as_safetensors_loads_in_the_reference(smollm2, tmp_path):
    model, reference = smollm2
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 2
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([SMOLLM2_PROMPT])
    torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits)


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [
        (1, None, torch.tensor([0.5, -1.0])),  # regression
        (3, "multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        (3, None, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),  # float labels: multi-label
    ],
)
@torch.inference_mode()
def test_sequence_classification_losses_match_reference(tmp_path, num_labels, problem_type, labels):
    reference = TestLlama.reference("LlamaForSequenceClassification", pad_token_id=0, num_labels=num_labels,
                                    problem_type=problem_type)
    model = load_saved(reference, tmp_path, "AutoModelForSequenceClassification")
    assert model.config.num_labels == num_labels and model.config.problem_type == problem_type
    ids, mask = padded_batch(TestLlama.ids(2, 9, seed=7))
    ours, theirs = model(ids, attention_mask=mask, labels=labels), reference(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits)
    torch.testing.assert_close(ours.loss, theirs.loss)


# Mistral (sliding window) and Qwen2 (q/k/v biases): configurations of the Llama classes.

FAMILIES = {
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen2-windowed": ("Qwen2Config", "Qwen2ForCausalLM", dict(use_sliding_window=True, sliding_window=5,
                                                              max_window_layers=0)),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    config_name, class_name, extra = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    config = getattr(transformers, config_name)(**TINY, **extra)
    reference = make_reference(class_name, config, is_norm=lambda name: False)  # biases drawn, norms left at one
    reference.save_pretrained(folder)
    return request.param, folder, reference, AutoModelForCausalLM.from_pretrained(folder)


@torch.inference_mode()
def test_family_logits_match_reference_on_a_padded_batch(family):
    name, _, reference, model = family
    assert model.config.model_type == name.removesuffix("-windowed")
    if name == "qwen2":
        attention = model.model.layers[0].self_attn
        assert attention.q_proj.bias is not None and attention.o_proj.bias is None
    ids = TestLlama.ids(3, 11, seed=8)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, :3] = 0  # left padding: those queries see no key and give zeros, as in the reference
    labels = ids.masked_fill(mask == 0, -100)
    ours, theirs = model(ids, attention_mask=mask, labels=labels), reference(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-4, rtol=1e-4)
    # A loss over every label, padding included (labels=input_ids), reads the padding positions too.
    ours, theirs = model(ids, attention_mask=mask, labels=ids), reference(ids, attention_mask=mask, labels=ids)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_family_cached_decoding_equals_the_full_forward(family):
    model = family[3]
    ids = TestLlama.ids(2, 12, seed=9)
    full = model(ids).logits
    cache = DynamicCache()
    steps = [model(ids[:, :3], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(3, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.inference_mode()
def test_family_saves_what_the_reference_loads(family, tmp_path):
    name, _, reference, model = family
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [type(reference).__name__]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(reference)
    ids = TestLlama.ids(1, 10, seed=10)
    torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits)


def test_family_sequence_classification_matches_reference(tmp_path):
    from openformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = transformers.Qwen2Config(**TINY, pad_token_id=0, num_labels=2)
    reference = transformers.Qwen2ForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = padded_batch(TestLlama.ids(2, 9, seed=7))
    labels = torch.tensor([1, 0])
    with torch.inference_mode():
        ours = model(ids, attention_mask=mask, labels=labels)
        theirs = reference(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits)
    torch.testing.assert_close(ours.loss, theirs.loss)


def test_qwen2_with_a_partial_sliding_window_is_refused():
    from openformers.configs import Qwen2Config

    with pytest.raises(ValueError, match="max_window_layers"):
        Qwen2Config(num_hidden_layers=4, use_sliding_window=True, max_window_layers=2)


@torch.inference_mode()
def test_qwen2_gguf_with_biases_matches_the_original(tmp_path):
    reference = make_reference("Qwen2ForCausalLM", transformers.Qwen2Config(**TINY), is_norm=lambda name: False)
    _write_gguf(tmp_path / "qwen2.gguf", reference)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "qwen2.gguf")
    assert model.config.model_type == "qwen2" and model.model.layers[0].self_attn.k_proj.bias is not None
    ids = TestLlama.ids(2, 8)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)

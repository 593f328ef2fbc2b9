"""GPT-Neo (model_type "gpt_neo": EleutherAI/gpt-neo-125m...) against the reference, on tiny random models it makes
and saves.

Global and local layers alternating (the released layout) and in another order with a narrower window, an untied head,
another MLP width and the exact GELU; every head the reference has, on a right- and a left-padded row with the head's
labels; cached decoding, left padding, greedy and beam generation, a static cache; hidden states and attention
weights; a training step; saving both ways; the older checkpoints' mask buffers; the window and the unscaled scores
each shown to matter; bfloat16 attention weights; the config's defaults, aliases, derived attention_layers and
refusals; the position table's bound; the CPU kernel's refusal; and GPT-2's tokenizer picked for a GPT-Neo folder.
llama.cpp has no GPT-Neo architecture: no GGUF files.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, GPTNeoConfig
from openformers.generation.cache import DynamicCache
from openformers.models import gpt_neo

transformers = pytest.importorskip("transformers")


class TestGPTNeo(DecoderFamilyTests):
    REFERENCE_CONFIG = "GPTNeoConfig"
    # Windows of 4 and 3 positions over rows of 9-16 tokens, so that local layers hide keys the global ones see; the
    # weights drawn wide (0.2) so that attention is far from uniform and a wrong detail moves the logits.
    TINY = dict(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=48,
                attention_types=[[["global", "local"], 1]], window_size=4, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, initializer_range=0.2)
    VARIANTS = {
        "global-local": {},  # the released checkpoints' alternation
        "local-global": dict(attention_types=[[["local"], 1], [["global"], 1]], window_size=3, intermediate_size=48,
                             activation_function="gelu", tie_word_embeddings=False),
    }
    HEADS = {
        "GPTNeoModel": "AutoModel",
        "GPTNeoForCausalLM": "AutoModelForCausalLM",
        "GPTNeoForSequenceClassification": "AutoModelForSequenceClassification",
        "GPTNeoForTokenClassification": "AutoModelForTokenClassification",
        "GPTNeoForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    EMBEDS_TOKEN_TYPES = True
    LOWEST_ID = 3
    IS_NORM = staticmethod(lambda name: name.endswith("weight") and any(part in ("ln_1", "ln_2", "ln_f")
                                                                         for part in name.split(".")))
    LM_LABELS_ARE_THE_TOKENS = True
    TRAINING_VARIANTS = ["global-local", "local-global"]
    SAVED_CONFIG_ATTRIBUTES = ("hidden_size", "num_layers", "num_heads", "max_position_embeddings", "attention_types",
                               "attention_layers", "window_size", "intermediate_size", "activation_function",
                               "tie_word_embeddings")

    @torch.inference_mode()
    def test_causal_lm_saves_what_the_reference_loads(self, tiny, tmp_path):
        super().test_causal_lm_saves_what_the_reference_loads(tiny, tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["attention_layers"] == tiny[1].config.attention_layers  # written, as the reference writes it

    @torch.inference_mode()
    def test_a_full_window_changes_nothing_and_a_narrow_one_matters(self, tiny, variant):
        """The local layers' window is what hides keys: as wide as the rows, the logits are those of global layers
        everywhere; as set, far from them."""
        _, reference, model = tiny
        inputs = self.inputs()
        everywhere_global = self.reference(**{**self.VARIANTS[variant], "attention_types": [[["global"], 2]]})
        moved = (outputs_of(model, inputs)["logits"] - outputs_of(everywhere_global, inputs)["logits"]).abs().max()
        assert moved > 0.1, moved
        wide = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(folder, window_size=48), tiny[0])
        assert_outputs_close(outputs_of(wide, inputs), outputs_of(everywhere_global, inputs), "window of 48")

    @torch.inference_mode()
    def test_scores_scaled_by_the_head_size_would_not_match_the_reference(self, tiny, monkeypatch):
        """Parity is not by accident: GPT-Neo's attention with the usual 1/sqrt(head_dim) moves the logits far from
        the reference's."""
        _, reference, model = tiny
        attend = gpt_neo.decoder_attention
        monkeypatch.setattr(gpt_neo, "decoder_attention", lambda *args, **kwargs: attend(*args, **{**kwargs,
                                                                                                   "scale": None}))
        moved = (outputs_of(model, self.inputs())["logits"] - outputs_of(reference, self.inputs())["logits"]).abs()
        assert moved.max() > 0.1

    @torch.inference_mode()
    def test_positions_past_the_table_are_refused_by_name(self, tiny):
        model = tiny[2]
        with pytest.raises(ValueError, match="past the 48 positions GPT-Neo has [(]max_position_embeddings[)]"):
            model(self.ids(1, 49))
        cache = DynamicCache()
        model(self.ids(1, 48), past_key_values=cache)
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model(self.ids(1, 1), past_key_values=cache)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_tanh_gelu_models_and_refuses_the_exact_gelu(self, tiny, variant):
        """The released layout (tanh GELU) takes the kernel's decoding step, whose steps past the local layers'
        window give the reference's logits and tokens; the exact GELU is refused by name and runs the layers."""
        _, reference, model = tiny
        if variant == "global-local":
            assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))
        else:
            assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5),
                                                               "gpt_neo", field="activation_function")


TINY, VARIANTS = TestGPTNeo.TINY, TestGPTNeo.VARIANTS
_reference, _ids, _inputs = TestGPTNeo.reference, TestGPTNeo.ids, TestGPTNeo.inputs


@torch.inference_mode()
def test_older_checkpoints_with_mask_buffers_load(tmp_path):
    """The released files keep each layer's causal-mask buffers (attn.attention.bias, attn.attention.masked_bias);
    they load as the reference loads them."""
    reference = _reference()
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for i in range(TINY["num_layers"]):
        weights[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        weights[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert_outputs_close(outputs_of(model, _inputs()), outputs_of(reference, _inputs()), "checkpoint with buffers")


@torch.inference_mode()
def test_bfloat16_eager_attention_takes_float32_scores_as_the_reference(tmp_path):
    """The eager path multiplies queries and keys in float32 (the reference's only attention on the CPU): in
    bfloat16 each layer's attention weights, local and global, are the reference's bit for bit (with the exact GELU:
    gelu_new rounds otherwise in bfloat16 here, as for GPT-2 and GPT-J)."""
    _reference(**VARIANTS["local-global"]).save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager",
                                                               dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda folder: AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.bfloat16), tmp_path)
    ids = _ids(1, 12, seed=3)
    got, expected = ours(ids, output_attentions=True).attentions, theirs(ids, output_attentions=True).attentions
    assert got[0][0, 0, -1, :-3].eq(0).all()  # the local layer's last query sees its 3 positions only
    for layer, (weights, their_weights) in enumerate(zip(got, expected)):
        assert weights.dtype == their_weights.dtype == torch.bfloat16
        torch.testing.assert_close(weights, their_weights, atol=0, rtol=0, msg=f"layer {layer}")


def test_config_defaults_and_names_match_the_reference():
    ours, theirs = GPTNeoConfig(), transformers.GPTNeoConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "max_position_embeddings", "hidden_size", "num_layers", "attention_types", "attention_layers",
        "num_heads", "intermediate_size", "window_size", "activation_function", "resid_dropout", "embed_dropout",
        "attention_dropout", "classifier_dropout", "layer_norm_epsilon", "initializer_range", "bos_token_id",
        "eos_token_id", "pad_token_id", "tie_word_embeddings", "num_attention_heads", "num_hidden_layers",
    ))
    given = dict(num_hidden_layers=3, num_attention_heads=8, hidden_size=64, attention_types=[[["local"], 3]])
    for config in (GPTNeoConfig(**given), GPTNeoConfig.from_dict(given), transformers.GPTNeoConfig(**given)):
        assert (config.num_layers, config.num_heads, config.attention_layers) == (3, 8, ["local"] * 3)
    assert "num_hidden_layers" not in GPTNeoConfig(**given).to_dict()


def test_attention_layers_of_config_json_win_over_attention_types():
    """config.json's attention_layers (which the reference writes) is the layers' kinds, over what attention_types
    would give, as the reference reads it; without it, attention_types gives them."""
    values = {**TINY, "attention_types": [[["local", "global"], 1]]}
    for stated, kinds in ((None, ["local", "global"]), (["global", "local"], ["global", "local"])):
        given = values if stated is None else {**values, "attention_layers": stated}
        ours, theirs = GPTNeoConfig.from_dict(given), transformers.GPTNeoConfig(**given)
        assert ours.attention_layers == theirs.attention_layers == kinds and ours.to_dict()["attention_layers"] == kinds
        model, reference = openformers.GPTNeoModel(ours), transformers.GPTNeoModel(theirs)
        assert [block.is_sliding for block in model.h] == [block.attn.attention_type == "local"
                                                            for block in reference.h] == [k == "local" for k in kinds]


@pytest.mark.parametrize("values, field", [
    (dict(attention_types=[[["global", "local"], 2]]), r"attention_layers=\['global', 'local', 'global', 'local'\]"),
    (dict(attention_layers=["global", "sparse"]), r"attention_layers=\['global', 'sparse'\]"),
    (dict(attention_types=[[["global", "sparse"], 1]]), "attention_types="),
    (dict(attention_types=[["global", 2]]), "attention_types="),
    (dict(attention_types="global"), "attention_types='global'"),
    (dict(window_size=0), "window_size=0"),
    (dict(hidden_size=30), "hidden_size=30"),
    (dict(num_heads=0), "num_heads=0"),
    (dict(num_attention_heads=0), "num_heads=0"),
    (dict(intermediate_size=-1), "intermediate_size=-1"),
    (dict(activation_function="quick_gelu"), "activation_function='quick_gelu'"),
    (dict(attention_dropout=1.5), "attention_dropout=1.5"),
    (dict(classifier_dropout=-0.1), "classifier_dropout=-0.1"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0"),
])
def test_config_refuses_bad_values_by_name(values, field):
    with pytest.raises(ValueError, match=f"Invalid config: {field}"):
        GPTNeoConfig(**{**TINY, **values})


def test_a_config_json_whose_runs_miss_layers_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt_neo", "num_layers": 3}))
    with pytest.raises(ValueError, match=r"config.json: Invalid config: attention_layers=\['global', 'local'\]; "
                                         r"expected one kind of attention per layer, num_layers=3 of them"):
        openformers.AutoConfig.from_pretrained(tmp_path)


def test_gpt2_tokenizer_is_picked_for_a_gpt_neo_folder(tmp_path):
    """GPT-Neo's checkpoints ship GPT-2's byte-level BPE; the reference registers GPT2Tokenizer for the model type."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neo"}))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__ == "GPT2Tokenizer"
    assert ours("abab")["input_ids"] == reference("abab")["input_ids"] == [3, 3]

"""OPT (model_type "opt") against the reference, on tiny random models it makes and saves.

Both layouts of the released checkpoints: LayerNorms before attention and the MLP (opt-125m and every size but one),
and after each residual sum with embeddings narrower than the layers, projected in and out (opt-350m); plus one
without biases, LayerNorm weights or the final LayerNorm. Every head the reference has, on a right- and a left-padded
row with the head's labels; positions counted from the attention mask (left padding, with and without a cache);
greedy and beam generation; saving both ways; the Hub's files, which store the stack without the "model." prefix; the
config's defaults and refusals; and the tokenizer OPT folders name (GPT2Tokenizer with `</s>` in front).
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openformers
from decoder_parity import (
    assert_kernel_steps_and_generates_as_the_reference,
    assert_hidden_states_and_attentions_match,
    assert_outputs_close,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, OPTConfig
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

LAYOUTS = ["pre-ln", "post-ln-projected"]


class TestOPT(DecoderFamilyTests):
    REFERENCE_CONFIG = "OPTConfig"
    TINY = dict(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, ffn_dim=48, num_attention_heads=4,
        max_position_embeddings=40, pad_token_id=0, bos_token_id=2, eos_token_id=2,
        init_std=0.15,  # weights large enough that attention is far from uniform (the default 0.02 hides its scale)
    )
    VARIANTS = {
        "pre-ln": {},  # opt-125m's layout
        "post-ln-projected": dict(do_layer_norm_before=False, word_embed_proj_dim=16),  # opt-350m's
        "bare": dict(enable_bias=False, layer_norm_elementwise_affine=False, _remove_final_layer_norm=True,
                     activation_function="gelu"),
    }
    HEADS = {
        "OPTModel": "AutoModel",
        "OPTForCausalLM": "AutoModelForCausalLM",
        "OPTForSequenceClassification": "AutoModelForSequenceClassification",
        "OPTForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    LOWEST_ID = 3
    LM_LABELS_ARE_THE_TOKENS = True
    HEAD_VARIANTS = TRAINING_VARIANTS = LAYOUTS
    TRAINING_OVERRIDES = dict(dropout=0.0)
    SAVED_CONFIG_ATTRIBUTES = ("do_layer_norm_before", "word_embed_proj_dim", "enable_bias",
                               "layer_norm_elementwise_affine", "_remove_final_layer_norm", "activation_function",
                               "tie_word_embeddings")

    @torch.inference_mode()
    def test_hidden_states_and_attention_weights_match_the_reference(self, tiny):
        folder, _, model = tiny
        ours = assert_hidden_states_and_attentions_match(model, folder, *padded_batch(_ids(2, 9, seed=7)))
        # projected out, as the reference's
        assert ours.hidden_states[-1].shape[-1] == model.config.word_embed_proj_dim

    @torch.inference_mode()
    def test_positions_past_the_table_are_refused_by_name(self, tiny):
        model = tiny[2]
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model(_ids(1, TINY["max_position_embeddings"] + 1))
        # A left-padded row longer than the table whose real tokens fit is run, as the reference runs it.
        ids = torch.cat([torch.zeros(1, 5, dtype=torch.long), _ids(1, TINY["max_position_embeddings"])], dim=1)
        mask = (ids != 0).long()
        assert model(ids, attention_mask=mask).logits.shape == (1, ids.shape[1], TINY["vocab_size"])

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_pre_ln_models_and_refuses_the_rest_by_name(self, tiny, variant):
        """opt-125m's layout takes the kernel's decoding step, which gives the reference's logits and tokens, also
        for a left-padded batch, whose positions count each row's real tokens; opt-350m's (norms after each residual
        sum, projected embeddings) and the bare layout (no biases or LayerNorm weights, no final LayerNorm, exact GELU)
        are refused by name."""
        from openformers.kernels import llama as llama_kernel

        _, reference, model = tiny
        if variant == "pre-ln":
            assert_kernel_steps_and_generates_as_the_reference(model, reference, _ids(1, 12, seed=9))
            ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), _ids(1, 4, seed=3)], dim=1)
            ids = torch.cat([_ids(1, 7, seed=2), ids])
            mask = (ids != 0).long()
            settings = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
            batches, decode_batch = [], torch.ops.openformers.decode_batch
            torch.ops.openformers.decode_batch = lambda *args: batches.append(1) or decode_batch(*args)
            try:
                assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
            finally:
                torch.ops.openformers.decode_batch = decode_batch
            assert len(batches) == 5
            return
        named = {"post-ln-projected": "do_layer_norm_before=False", "bare": "activation_function='gelu'"}
        assert llama_kernel.refusal(model.config) == f"{named[variant]} is not implemented by the decoding kernel"
        assert not llama_kernel.eligible(model) and model.model.accelerated_step is None


TINY, VARIANTS, HEADS = TestOPT.TINY, TestOPT.VARIANTS, TestOPT.HEADS
_reference, _ids, _inputs = TestOPT.reference, TestOPT.ids, TestOPT.inputs


@pytest.mark.parametrize("layout", LAYOUTS)
@torch.inference_mode()
def test_positions_are_counted_from_the_attention_mask(layout, tmp_path):
    """Without position_ids a left-padded row's first real token is at position 0, in a prefill and in the steps
    after it on the cache (the mask covering the cached positions too), as the reference counts them: each row gives
    its logits alone."""
    reference = _reference(**VARIANTS[layout])
    model = load_saved(reference, tmp_path)
    rows = [_ids(1, 7, seed=2)[0], _ids(1, 4, seed=3)[0]]
    ids = torch.stack([rows[0], torch.cat([torch.zeros(3, dtype=torch.long), rows[1]])])
    mask = torch.tensor([[1] * 7, [0] * 3 + [1] * 4])
    steps = _ids(2, 2, seed=5)
    cache = DynamicCache()
    prefill = model(ids, attention_mask=mask, past_key_values=cache).logits
    full_mask = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], dim=1)
    step1 = model(steps[:, :1], attention_mask=full_mask[:, :-1], past_key_values=cache).logits
    step2 = model(steps[:, 1:], attention_mask=full_mask, past_key_values=cache).logits
    theirs = reference(torch.cat([ids, steps], dim=1), attention_mask=full_mask).logits
    for i, row in enumerate(rows):
        alone = model(torch.cat([row, steps[i]])[None]).logits[0]
        start = 7 - len(row)
        torch.testing.assert_close(prefill[i, start:], alone[:-2])
        torch.testing.assert_close(torch.cat([step1[i], step2[i]]), alone[-2:])
        torch.testing.assert_close(theirs[i, start:], alone, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="attention_mask covers 1 positions, but there are 9 cached"):
        model(steps[:, :1], attention_mask=torch.ones(2, 1, dtype=torch.long), past_key_values=cache)


def test_layerdrop_skips_the_layers_the_reference_skips(tmp_path):
    """While training, each layer is skipped with probability layerdrop, one draw per layer in order, as the
    reference draws them: with the same seed, the same layers run (the loss is the reference's), and in
    inference every layer runs."""
    reference = _reference(dropout=0.0, layerdrop=0.5, num_hidden_layers=4)
    model = load_saved(reference, tmp_path)
    inputs = _inputs("CausalLM")
    reference.train()
    model.train()
    losses = set()
    for seed in range(4):
        torch.manual_seed(seed)
        expected = reference(**inputs).loss
        torch.manual_seed(seed)
        torch.testing.assert_close(model(**inputs).loss, expected, atol=1e-5, rtol=1e-5)
        losses.add(round(expected.item(), 4))
    assert len(losses) > 1  # the draws did skip different layers
    reference.eval()
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).loss, reference(**inputs).loss, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_hub_files_with_the_stack_stored_without_the_model_prefix_load(tmp_path):
    """The Hub's OPT files store the decoder as "decoder.*" (saved from OPTModel); the causal LM loads them, with
    its head tied to the embeddings, as the reference does."""
    reference = _reference(**VARIANTS["post-ln-projected"])
    reference.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert all(name.startswith("model.decoder.") for name in weights)
    save_file({name.removeprefix("model."): t for name, t in weights.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    inputs = _inputs("CausalLM")
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "bare decoder keys")


def test_config_defaults_match_the_reference():
    ours, theirs = OPTConfig(), transformers.OPTConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "ffn_dim", "max_position_embeddings",
                 "do_layer_norm_before", "_remove_final_layer_norm", "word_embed_proj_dim", "dropout",
                 "attention_dropout", "num_attention_heads", "activation_function", "layerdrop", "init_std",
                 "pad_token_id", "bos_token_id", "eos_token_id", "enable_bias", "layer_norm_elementwise_affine",
                 "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert OPTConfig(hidden_size=64, num_attention_heads=4).word_embed_proj_dim == 64  # None: hidden_size


@pytest.mark.parametrize("values, message", [
    (dict(hidden_size=30), "hidden_size=30"),
    (dict(activation_function="swiglu"), "activation_function='swiglu'"),
    (dict(dropout=1.5), "dropout=1.5"),
    (dict(word_embed_proj_dim=0), "word_embed_proj_dim=0"),
    (dict(pad_token_id=99), "pad_token_id=99"),
    (dict(ffn_dim=None), "ffn_dim=None"),
])
def test_config_refuses_bad_values_by_name(values, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        OPTConfig(**{**TINY, **values})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "opt", **TINY, **values}))
    with pytest.raises(ValueError, match=f"config.json.*{message}"):
        openformers.AutoConfig.from_pretrained(tmp_path)


def test_heads_build_on_the_opt_base_model():
    config = OPTConfig(**TINY, word_embed_proj_dim=16, num_labels=2)
    for name in HEADS:
        model = getattr(openformers, name)(config)
        base = model if name == "OPTModel" else model.model
        assert type(base).__name__ == "OPTModel" and base.decoder.project_in.in_features == 16
    assert openformers.OPTForSequenceClassification(config).score.in_features == 16
    assert openformers.OPTForQuestionAnswering(config).qa_outputs.in_features == 16
    with pytest.raises(ValueError, match="no token-classification class for 'opt'"):
        openformers.AutoModelForTokenClassification.from_config(config)


# The tokenizer: OPT folders name GPT2Tokenizer (or only model_type "opt"), with `</s>` as BOS, EOS and unknown,
# `<pad>` (id 1) padding, and add_bos_token: true, which puts `</s>` (id 2) in front of every encoding when the
# folder has vocab.json and merges.txt (the Hub's OPT files); a tokenizer.json's own layout wins over it.

TEXTS = ["Hello world, this is OPT.", "  two  spaces and\ttabs\n newline", "café déjà vu ñ", "3.14 and 12345",
         "</s> between <pad> specials", ""]
TOKENIZER_CONFIG = {"add_bos_token": True, "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
                    "pad_token": "<pad>", "add_prefix_space": False, "errors": "replace"}


@pytest.fixture(scope="module")
def byte_level_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20, trainer)
    return tokenizer


def _tokenizer_folder(folder, tokenizer, files: str, names_the_class: bool):
    if files == "tokenizer.json":
        tokenizer.save(str(folder / "tokenizer.json"))
    else:
        tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    config = {**TOKENIZER_CONFIG, **({"tokenizer_class": "GPT2Tokenizer"} if names_the_class else {})}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"model_type": "opt"}))
    return folder


def _assert_same_encodings(ours, reference):
    assert type(ours).__name__ == type(reference).__name__ == "GPT2Tokenizer"
    assert ours.special_tokens_map == reference.special_tokens_map and ours.pad_token_id == reference.pad_token_id
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"] and got["offset_mapping"] == expected["offset_mapping"], text
        for skip in (False, True):
            assert ours.decode(got["input_ids"], skip_special_tokens=skip) == reference.decode(
                expected["input_ids"], skip_special_tokens=skip), text
    assert ours("a pair", "of texts")["input_ids"] == reference("a pair", "of texts")["input_ids"]
    for side in ("right", "left"):
        batch = dict(padding=True, return_tensors="pt", padding_side=side)
        got, expected = ours(TEXTS[:3], **batch), reference(TEXTS[:3], **batch)
        assert got["input_ids"].tolist() == expected["input_ids"].tolist(), side
        assert got["attention_mask"].tolist() == expected["attention_mask"].tolist(), side


def _loaded_alike(folder, **options):
    """The folder's tokenizer as ours loads it, checked against the reference's (AutoTokenizer, the same options)."""
    reference = transformers.AutoTokenizer.from_pretrained(str(folder), **options)
    ours = openformers.AutoTokenizer.from_pretrained(folder, **options)
    _assert_same_encodings(ours, reference)
    return ours


@pytest.mark.parametrize("names_the_class", [True, False], ids=["tokenizer_class", "model_type"])
def test_tokenizer_of_the_hubs_files_puts_bos_in_front_as_the_reference(byte_level_bpe, names_the_class, tmp_path):
    ours = _loaded_alike(_tokenizer_folder(tmp_path, byte_level_bpe, "vocab.json", names_the_class))
    assert ours("Hello")["input_ids"][0] == 2 and ours.bos_token == "</s>"


@pytest.mark.parametrize("names_the_class", [True, False], ids=["tokenizer_class", "model_type"])
def test_tokenizer_json_layout_wins_over_add_bos_token_as_in_the_reference(byte_level_bpe, names_the_class, tmp_path):
    folder = _tokenizer_folder(tmp_path, byte_level_bpe, "tokenizer.json", names_the_class)
    assert _loaded_alike(folder)("Hello")["input_ids"][0] != 2  # the file's ByteLevel post-processor adds no BOS
    assert _loaded_alike(folder, add_bos_token=True)("Hello")["input_ids"][0] == 2  # an argument lays BOS out anew

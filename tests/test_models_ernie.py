"""ERNIE 4.5 (model_type "ernie4_5") and ERNIE 4.5 MoE ("ernie4_5_moe") against the reference, on tiny random models
it makes and saves.

The dense family: Llama's network with interleaved rotary pairs turned in float32 and `use_bias` on every projection,
tied and untied. The mixture: the router's softmax with drawn correction biases steering the choice, the clamped
renormalization, shared experts (two, or none), sparse layers from moe_layer_start_index to moe_layer_end_index every
moe_layer_interval-th among dense ones, biases on the dense and shared MLPs and on the language-model head. Both heads
the reference has on a padded batch with labels, the router logits and load-balancing loss, cached decoding, left
padding, greedy and beam generation, static caches, hidden states and attention weights, a training step's gradients,
saving both ways (and the reference's in-memory layout), the Auto classes, the config's defaults and refusals, a
released config.json read as the reference reads it, multi-token prediction weights left out, GGUF files written as
llama.cpp's converter writes "ernie4_5" and "ernie4_5-moe" ones, the CPU kernel's decoding step (dense) and refusal
(MoE), and the tokenizer of an ERNIE folder (a tokenizer.model naming the remote-code Ernie4_5_Tokenizer, read as the reference's TokenizersBackend).
The weights are drawn at std 0.15 and the correction biases at 0.3, so that a rotation, routing or bias detail
applied wrong moves the logits far past the tolerance.
"""

import json
import warnings

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
    write_gguf,
)
from decoder_suite import DecoderFamilyTests, RoutedExpertsTests
from openformers import (
    AutoModelForCausalLM,
    Ernie4_5_MoeConfig,
    Ernie4_5_MoeForCausalLM,
    Ernie4_5Config,
    Ernie4_5ForCausalLM,
)
from test_models_mixtral import (
    add_gguf_tensors,
    assert_loads_the_reference_in_memory_layout,
)

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, rms_norm_eps=1e-5,
    initializer_range=0.15,  # weights large enough that a detail applied wrong moves the logits past the tolerance
)
MOE = dict(moe_intermediate_size=16, moe_num_experts=4, moe_k=2, moe_num_shared_experts=2, num_hidden_layers=3)


class TestErnie4_5(DecoderFamilyTests):
    REFERENCE_CONFIG = "Ernie4_5Config"
    TINY = TINY
    VARIANTS = {
        "tied": {},  # the reference's default, and every released checkpoint's
        "biased-untied": dict(use_bias=True, tie_word_embeddings=False),
    }
    HEADS = {"Ernie4_5Model": "AutoModel", "Ernie4_5ForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = TRAINING_VARIANTS = ["biased-untied"]
    HEAD_OVERRIDES = {}

    def test_auto_classes_pick_the_ernie4_5_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Ernie4_5Config
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Ernie4_5Model"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Ernie4_5ForCausalLM
        with pytest.raises(ValueError, match="no sequence-classification class for 'ernie4_5'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits(self, tiny):
        """The kernel's step turns the interleaved pairs (and adds use_bias's biases) as the layers do."""
        _, reference, model = tiny
        assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))

    @torch.inference_mode()
    def test_the_pairs_turned_are_interleaved(self, tiny, monkeypatch):
        """Llama's rotation of halves in place of the interleaved pairs moves the logits far from the reference's."""
        from openformers.models.ernie4_5 import Ernie4_5Attention
        from openformers.models.layers import apply_rope

        _, reference, model = tiny
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        monkeypatch.setattr(Ernie4_5Attention, "rope", staticmethod(apply_rope))
        monkeypatch.setattr(model.model, "accelerated_step", None)  # the layers, not the kernel's prompt step
        moved = model(ids, attention_mask=mask).logits - reference(ids, attention_mask=mask).logits
        assert moved.abs().max() > 1e-2

    @torch.inference_mode()
    def test_bfloat16_rotates_in_float32_as_the_reference(self, tiny):
        """In bfloat16 the layers get float32 rotary tables and turn the pairs in float32, as the reference's: the
        cached keys are the reference's to bfloat16's last bit."""
        folder, _, _ = tiny
        ours = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, dtype=torch.bfloat16), folder)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        ids = self.ids(1, 40, seed=4)
        ours_cache = ours(ids, use_cache=True).past_key_values
        theirs_cache = theirs(ids, use_cache=True).past_key_values
        assert ours_cache.keys[0].dtype == torch.bfloat16
        torch.testing.assert_close(ours_cache.keys[0][:, :, :40], theirs_cache.layers[0].keys, atol=0, rtol=0)


class TestErnie4_5Moe(RoutedExpertsTests):
    REFERENCE_CONFIG = "Ernie4_5_MoeConfig"
    TINY = {**TINY, **MOE}
    VARIANTS = {
        # layer 0 dense, 1 and 2 sparse with two shared experts; tied, as the released checkpoints
        "shared-tied": {},
        # of 4 layers, every other one from 0 to 2 sparse (layer 1 only: not 3, past the end index), no shared
        # experts; biases everywhere, the head's too
        "interval-biased-untied": dict(num_hidden_layers=4, moe_layer_start_index=0, moe_layer_end_index=2,
                                       moe_layer_interval=2, moe_num_shared_experts=0, use_bias=True,
                                       tie_word_embeddings=False),
    }
    HEADS = {"Ernie4_5_MoeModel": "AutoModel", "Ernie4_5_MoeForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = ["interval-biased-untied"]
    TRAINING_VARIANTS = list(VARIANTS)
    HEAD_OVERRIDES = {}

    @torch.inference_mode()
    def test_the_correction_biases_and_the_shared_experts_count(self, tiny):
        """Zeroing the correction biases (which change only the choice) or the shared experts moves the logits far
        from the reference's."""
        _, reference, model = tiny
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        expected = reference(ids, attention_mask=mask).logits
        blocks = [layer.mlp for layer in model.model.layers if hasattr(layer.mlp, "moe_statics")]
        parts = [block.moe_statics for block in blocks] + [block.shared_experts for block in blocks
                                                           if block.shared_experts is not None]
        assert blocks
        for part in parts:
            saved = {k: v.clone() for k, v in part.state_dict().items()}
            part.load_state_dict({k: torch.zeros_like(v) for k, v in saved.items()})
            try:
                assert (model(ids, attention_mask=mask).logits - expected).abs().max() > 1e-2, type(part).__name__
            finally:
                part.load_state_dict(saved)
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_the_renormalization_floor_is_the_configs(self, tmp_path):
        """With moe_norm_min above every sum of chosen probabilities, the weights are divided by the floor: the
        reference's logits again, which dividing by the sums would miss."""
        reference = self.reference(moe_norm_min=1.5)
        model = load_saved(reference, tmp_path)
        inputs = self.inputs()
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "moe_norm_min")
        unclamped = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, moe_norm_min=1e-12), tmp_path)
        moved = unclamped(inputs["input_ids"]).logits - model(inputs["input_ids"]).logits
        assert moved.abs().max() > 1e-2

    def test_auto_classes_pick_the_ernie4_5_moe_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is Ernie4_5_MoeConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "Ernie4_5_MoeModel"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is Ernie4_5_MoeForCausalLM
        with pytest.raises(ValueError, match="no token-classification class for 'ernie4_5_moe'"):
            openformers.AutoModelForTokenClassification.from_pretrained(folder)

    def test_a_checkpoint_in_the_reference_in_memory_layout_loads(self, tmp_path):
        """The fused experts and the correction biases under the router (`mlp.gate.moe_statics`), as the reference
        holds them in memory."""
        assert_loads_the_reference_in_memory_layout(self.reference(tie_word_embeddings=False), tmp_path)

    @torch.inference_mode()
    def test_multi_token_prediction_weights_of_a_checkpoint_are_left_out(self, tiny, tmp_path):
        """A released checkpoint's MTP weights (model.mtp_block.0..., mtp_emb_norm, mtp_hidden_norm,
        mtp_linear_proj) load to the same model, without a warning."""
        from safetensors.torch import load_file, save_file

        folder, reference, _ = tiny
        tensors = load_file(str(folder / "model.safetensors"))
        extra = {name.replace("model.layers.0.", "model.mtp_block.0."): t.clone() for name, t in tensors.items()
                 if name.startswith("model.layers.0.")}
        extra.update({"model.mtp_emb_norm.0.weight": torch.ones(32), "model.mtp_hidden_norm.0.weight": torch.ones(32),
                      "model.mtp_linear_proj.0.weight": torch.zeros(32, 64)})
        save_file({**tensors, **extra}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((folder / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 1}))
        loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
        assert loaded.config.num_mtp_layers == 1
        inputs = self.inputs()
        assert_outputs_close(outputs_of(loaded, inputs), outputs_of(reference, inputs), "with MTP weights")

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits(self, tiny):
        """The kernel's step chooses the experts by probability plus correction, runs the shared experts beside them
        and the dense layers' MLPs, and turns the interleaved pairs, as the layers do."""
        _, reference, model = tiny
        assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))


# -- configs ------------------------------------------------------------------------------------------------------


def test_config_defaults_match_the_reference():
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
              "rms_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "use_bias")
    ours, theirs = Ernie4_5Config(), transformers.Ernie4_5Config()
    assert_same_attributes(ours, theirs, fields)
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    ours, theirs = Ernie4_5_MoeConfig(), transformers.Ernie4_5_MoeConfig()
    assert_same_attributes(ours, theirs, tuple(f for f in fields if f != "head_dim") + (
        "moe_intermediate_size", "moe_k", "moe_num_experts", "moe_num_shared_experts", "moe_layer_start_index",
        "moe_layer_end_index", "moe_layer_interval", "moe_norm_min", "output_router_logits", "router_aux_loss_coef",
        "num_experts", "num_experts_per_tok", "num_mtp_layers"))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.head_dim == 128


def test_configs_saved_by_ours_are_read_by_the_reference(tmp_path):
    config = Ernie4_5_MoeConfig(**{**TINY, **MOE, "rope_parameters": None}, use_bias=True, moe_layer_interval=2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "attention_bias" not in saved and "mlp_bias" not in saved  # use_bias is this family's one switch
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert_same_attributes(config, theirs, ("use_bias", "moe_layer_interval", "moe_layer_end_index", "moe_k",
                                            "moe_num_experts", "head_dim", "tie_word_embeddings"))


# ERNIE-4.5-21B-A3B-PT's config.json (rope_theta at the top level, as Baidu wrote it).
ERNIE_4_5_21B = {
    "architectures": ["Ernie4_5_MoeForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 2560, "intermediate_size": 12288, "max_position_embeddings": 131072, "model_type": "ernie4_5_moe",
    "num_attention_heads": 20, "num_key_value_heads": 4, "num_hidden_layers": 28, "pad_token_id": 0,
    "rms_norm_eps": 1e-05, "use_cache": False, "vocab_size": 103424, "rope_theta": 500000, "use_bias": False,
    "tie_word_embeddings": True, "moe_num_experts": 64, "moe_num_shared_experts": 2, "moe_layer_start_index": 1,
    "moe_layer_end_index": 27, "moe_layer_interval": 1, "moe_intermediate_size": 1536, "moe_k": 6,
    "moe_norm_min": 1e-12, "head_dim": 128, "router_aux_loss_coef": 0.001, "num_nextn_predict_layers": 1,
    "torch_dtype": "bfloat16",
}


def test_ernie_4_5_21b_config_reads_as_the_reference_reads_it(tmp_path):
    """Its values, and at two layers (one dense, one sparse) as many weights on the meta device as the reference's
    (whose correction biases are parameters that take no gradient, ours buffers)."""
    (tmp_path / "config.json").write_text(json.dumps({**ERNIE_4_5_21B, "num_hidden_layers": 2}))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert_same_attributes(ours, theirs, (
        "hidden_size", "moe_num_experts", "moe_k", "num_experts_per_tok", "head_dim", "moe_layer_start_index",
        "moe_layer_end_index", "tie_word_embeddings", "num_mtp_layers", "moe_intermediate_size"))
    assert ours.rope_theta == 500000 and [ours.is_sparse(i) for i in range(2)] == [False, True]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(ours)
        reference = transformers.AutoModelForCausalLM.from_config(theirs)
    weights = sum(t.numel() for name, t in model.state_dict().items() if name != "lm_head.weight")
    assert weights == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("values, field", [
    (dict(use_bias="yes"), "use_bias"),
    (dict(head_dim=15), "head_dim"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type"),
])
def test_bad_config_values_name_the_field(values, field):
    with pytest.raises(ValueError, match=f"{field}="):
        Ernie4_5Config(**{**TINY, "rope_parameters": None, **values})


@pytest.mark.parametrize("values, field", [
    (dict(moe_k=5), "moe_k"),
    (dict(moe_num_experts=0), "moe_num_experts"),
    (dict(moe_intermediate_size=0), "moe_intermediate_size"),
    (dict(moe_layer_interval=0), "moe_layer_interval"),
    (dict(moe_num_shared_experts=-1), "moe_num_shared_experts"),
    (dict(moe_layer_start_index=-2), "moe_layer_start_index"),
    (dict(moe_layer_end_index=-3), "moe_layer_end_index"),
    (dict(moe_norm_min=0), "moe_norm_min"),
    (dict(router_aux_loss_coef=-1), "router_aux_loss_coef"),
    (dict(num_nextn_predict_layers=2), "num_nextn_predict_layers"),
])
def test_moe_bad_config_values_name_the_field(values, field):
    with pytest.raises(ValueError, match=f"{field}="):
        Ernie4_5_MoeConfig(**{**TINY, **MOE, "rope_parameters": None, **values})


# -- GGUF files as llama.cpp's converter writes them: Llama's names, the rows as stored (llama.cpp turns adjacent
# pairs for these architectures), the MoE's experts stacked, its shared experts as ffn_*_shexp and its correction
# biases squeezed to a vector under exp_probs_b.bias.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate.moe_statics.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp", "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@torch.inference_mode()
def test_dense_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    reference = TestErnie4_5.reference(tie_word_embeddings=tied)
    config = reference.config
    write_gguf(tmp_path / "ernie.gguf", "ernie4_5", reference, GGUF_NAMES, layer_norm_rms_eps=config.rms_norm_eps,
               key_length=config.head_dim, value_length=config.head_dim)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "ernie.gguf")
    assert isinstance(model, Ernie4_5ForCausalLM) and model.config.tie_word_embeddings == tied
    assert model.config.head_dim == 16 != config.hidden_size // config.num_attention_heads
    inputs = TestErnie4_5.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")


@torch.inference_mode()
def test_moe_gguf_written_like_llama_cpp_matches_the_original(tmp_path):
    import gguf

    reference = TestErnie4_5Moe.reference()
    config = reference.config
    writer = gguf.GGUFWriter(str(tmp_path / "ernie-moe.gguf"), "ernie4_5-moe")
    add_decoder_metadata(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_expert_count(config.moe_num_experts)
    writer.add_expert_used_count(config.moe_k)
    writer.add_interleave_moe_layer_step(config.moe_layer_interval)
    writer.add_leading_dense_block_count(config.moe_layer_start_index)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_shared_count(config.moe_num_shared_experts)
    writer.add_expert_shared_feed_forward_length(config.intermediate_size // config.num_key_value_heads)

    class SqueezedBiases:  # the writer, with the (1, E) correction biases squeezed as the converter squeezes them
        def __getattr__(self, name):
            return getattr(writer, name)

        def add_tensor(self, name, w):
            writer.add_tensor(name, np.ascontiguousarray(w.reshape(-1)) if "exp_probs_b" in name else w)

    add_gguf_tensors(SqueezedBiases(), reference, GGUF_NAMES, permute_heads=False)
    finish_gguf(writer)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "ernie-moe.gguf")
    assert isinstance(model, Ernie4_5_MoeForCausalLM)
    assert_same_attributes(model.config, config, ("moe_num_experts", "moe_k", "moe_intermediate_size",
                                                  "moe_layer_start_index", "moe_layer_interval",
                                                  "moe_num_shared_experts", "tie_word_embeddings", "head_dim"))
    inputs = TestErnie4_5Moe.inputs()
    assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "GGUF")
    model.save_pretrained(tmp_path / "saved")  # the split experts are tensors of their own, the biases (1, E)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert_outputs_close(outputs_of(theirs, inputs), outputs_of(reference, inputs), "GGUF saved")


# -- the tokenizer: ERNIE 4.5's folders hold a SentencePiece tokenizer.model (BPE with byte fallback) and name their
# remote-code Ernie4_5_Tokenizer, which the reference replaces with its generic TokenizersBackend: sentencepiece's ids,
# no BOS in front.

TOKENIZER_TEXTS = ["ERNIE routes each token to its experts.", "Baidu trained ERNIE 4.5 on text.",
                   "def f(x):\n    return x * 2", "你好，世界！文心一言。", "The quick brown fox jumps over the lazy dog."]


def test_tokenizer_of_an_ernie_folder_gives_the_references_ids(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path / "spm"
    folder.mkdir()
    special = ["<|begin_of_sentence|>", "<|end_of_sentence|>", "<mask:0>", "<mask:1>", "<mask:7>"]
    with open(folder / "tokenizer.model", "wb") as model_file:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(TOKENIZER_TEXTS * 30), model_writer=model_file, vocab_size=400, model_type="bpe",
            byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            user_defined_symbols=special, minloglevel=2,
        )
    (folder / "config.json").write_text(json.dumps({"model_type": "ernie4_5"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Ernie4_5_Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_ernie4_5.Ernie4_5_Tokenizer", None]},
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "cls_token": "<|begin_of_sentence|>", "sep_token": "<|end_of_sentence|>", "mask_token": "<mask:1>",
        "padding_side": "right", "legacy": True,
    }))
    texts = ["ERNIE routes tokens.", "  two  spaces\tand a tab", "你好世界", "<mask:1> hello </s>", "ünïcödé ✓", ""]
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__ == "TokenizersBackend"
    for text in texts:
        expected = reference(text)["input_ids"]
        assert ours(text)["input_ids"] == expected, text
        if "<" not in text:
            assert expected == processor.encode(text), text
        assert ours.decode(expected, skip_special_tokens=True) == reference.decode(expected, skip_special_tokens=True)
    assert ours(texts, padding=True)["input_ids"] == reference(texts, padding=True)["input_ids"]
    # The reference's saved folder (its tokenizer.json) reads back to the same ids.
    reference.save_pretrained(tmp_path / "saved")
    again = openformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert [again(text)["input_ids"] for text in texts] == [reference(text)["input_ids"] for text in texts]


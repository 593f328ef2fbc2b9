"""GPT-2 against the reference: tiny random HF models for every head, Conv1D weights transposed in and out.

TestGPT2 runs the common decoder tests (tests/decoder_suite.py: every head on a padded batch, saving both ways,
token types embedded, cached decoding, left padding, greedy and beam generation, static caches, hidden states and
attention weights, a training step) and adds GPT-2's own: its tied head and logits_to_keep, generate's defaults and
a tokenizer's token types, the original checkpoint layout, and the refusal of inputs past the positions. Also
scale_attn_by_inverse_layer_idx (each layer's scores divided by layer_idx + 1) with and without scale_attn_weights,
and reorder_and_upcast_attn's float32 scores in bfloat16; a second variant with both options runs the whole suite,
the decoding step's test included.
"""

import pytest
import torch
from safetensors.torch import save_file

import openformers
from decoder_parity import (
    assert_generate_with_the_defaults_matches,
    assert_kernel_steps_and_generates_as_the_reference,
    load_quietly,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests

transformers = pytest.importorskip("transformers")


class TestGPT2(DecoderFamilyTests):
    REFERENCE_CONFIG = "GPT2Config"
    TINY = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=0, initializer_range=0.1)
    # (the second's weights drawn wider, so that its scores spread enough for each layer's divisor to move the logits)
    VARIANTS = {"tied": {}, "inverse-layer-idx-upcast": dict(scale_attn_by_inverse_layer_idx=True,
                                                             reorder_and_upcast_attn=True, initializer_range=0.3)}
    HEADS = {
        "GPT2Model": "AutoModel",
        "GPT2LMHeadModel": "AutoModelForCausalLM",
        "GPT2ForSequenceClassification": "AutoModelForSequenceClassification",
        "GPT2ForTokenClassification": "AutoModelForTokenClassification",
        "GPT2ForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    TRAINING_OVERRIDES = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    EMBEDS_TOKEN_TYPES = True  # token_type_ids add rows of the token table

    @classmethod
    def reference_grads(cls, reference) -> dict:
        """The reference's gradients, those of its Conv1D weights (in, out) transposed as our Linear weights are."""
        from transformers.pytorch_utils import Conv1D

        grads = super().reference_grads(reference)
        for name, module in reference.named_modules():
            if isinstance(module, Conv1D):
                grads[f"{name}.weight"] = grads[f"{name}.weight"].T
        return grads

    @torch.inference_mode()
    def test_cached_decoding_equals_the_full_forward(self, tiny):
        """Also: the head is the token table itself, and logits_to_keep=1 gives the full forward's last position."""
        super().test_cached_decoding_equals_the_full_forward(tiny)
        model = tiny[2]
        assert model.lm_head.weight is model.transformer.wte.weight
        ids = self.ids(2, 12, seed=2)
        torch.testing.assert_close(model(ids, logits_to_keep=1).logits, model(ids).logits[:, -1:])

    @torch.inference_mode()
    def test_generate_with_the_generation_configs_defaults_matches_reference(self, tiny):
        assert_generate_with_the_defaults_matches(tiny[2], tiny[1], self.ids(1, 6, seed=3))

    @pytest.mark.parametrize("options", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
    @torch.inference_mode()
    def test_generate_with_token_type_ids_from_the_tokenizer_matches_reference(self, tiny, options):
        """model.generate(**tokenizer(...)) where the tokenizer returns token types: GPT-2 embeds them, and each new
        token takes its row's last type."""
        _, reference, model = tiny
        ids = self.ids(2, 6, seed=3)
        encoded = dict(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.full_like(ids, 5))
        settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
        expected = reference.generate(**encoded, **settings)
        assert expected.tolist() != reference.generate(ids, **settings).tolist()  # the types matter here
        assert model.generate(encoded, **settings).tolist() == expected.tolist()
        assert model.generate(**encoded, **settings).tolist() == expected.tolist()
        with pytest.raises(ValueError, match=r"token_type_ids must be a tensor shaped like the prompt \(2, 6\)"):
            model.generate(ids, token_type_ids=encoded["token_type_ids"][:, :3], **settings)

    @torch.inference_mode()
    def test_the_original_checkpoint_layout_loads(self, tiny, tmp_path):
        """The `gpt2` repository's layout: no "transformer." prefix, and the causal-mask buffers stored."""
        from openformers import AutoModelForCausalLM

        reference = tiny[1]
        state_dict = {k.removeprefix("transformer."): v for k, v in reference.state_dict().items()
                      if k != "lm_head.weight"}
        for i in range(self.TINY["n_layer"]):
            state_dict[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
            state_dict[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        save_file(state_dict, tmp_path / "model.safetensors")
        reference.config.save_pretrained(tmp_path)
        model = AutoModelForCausalLM.from_pretrained(tmp_path)
        ids = self.inputs()["input_ids"]
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_through_the_learned_positions(self, tiny):
        """from_pretrained gives the model the kernel's decoding step (its Conv1D weights laid out as the layers'
        (out, in) weights, which the step reads): its steps give the reference's logits and generate the reference's
        tokens; a run of greedy tokens stops at the last learned position, and the next step past it is refused by
        name, as the layers refuse it."""
        from openformers.generation.cache import DynamicCache
        from openformers.kernels import llama as llama_kernel

        _, reference, model = tiny
        assert llama_kernel.refusal(model.config) is None
        assert all(layer.attn.c_attn.weight.is_contiguous() for layer in model.transformer.h)
        assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))
        positions = self.TINY["n_positions"]
        ids = self.ids(1, 4, seed=2)
        settings = dict(max_new_tokens=positions - 4, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
        cache = DynamicCache()
        model(self.ids(1, positions, seed=3), past_key_values=cache)
        with pytest.raises(ValueError, match="n_positions"):
            model(self.ids(1, 1), past_key_values=cache)
        with pytest.raises(ValueError, match="n_positions"):
            model.generate(ids, **{**settings, "max_new_tokens": positions - 2})

    def test_inputs_past_the_positions_are_refused(self, tiny):
        with pytest.raises(ValueError, match="n_positions"):
            tiny[2](torch.ones(1, self.TINY["n_positions"] + 1, dtype=torch.long))

    @pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
    @pytest.mark.parametrize("scale_attn_weights", [True, False], ids=["scaled", "unscaled"])
    @torch.inference_mode()
    def test_scores_divided_by_the_layer_index_match_the_reference(self, scale_attn_weights, attn_implementation,
                                                                     tmp_path):
        """scale_attn_by_inverse_layer_idx divides layer i's scores by i + 1, over 1/sqrt(head_dim) or over none
        (scale_attn_weights=False): three layers' logits are the reference's on both attention paths."""
        options = dict(scale_attn_by_inverse_layer_idx=True, scale_attn_weights=scale_attn_weights, n_layer=3)
        self.reference(**options).save_pretrained(tmp_path)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=attn_implementation)
        ours = load_quietly(lambda folder: openformers.AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation=attn_implementation), tmp_path)
        assert [layer.attn.scale for layer in ours.transformer.h] == [
            layer.attn.scaling for layer in theirs.eval().transformer.h]
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits,
                                   atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_bfloat16_eager_scores_are_computed_in_float32_with_reorder_and_upcast_attn(self, tmp_path):
        """reorder_and_upcast_attn multiplies the eager path's queries and keys in float32 (then softmax in float32,
        rounded to bfloat16): a bfloat16 model's attention weights and logits are the reference's bit for bit, where
        scores rounded to bfloat16 first give other weights (the reference's own without the option). With the exact
        GELU: gelu_new rounds otherwise in bfloat16 here, as for GPT-J and GPT-Neo."""
        weights_of = {}
        for upcast in (True, False):
            folder = tmp_path / str(upcast)
            self.reference(reorder_and_upcast_attn=upcast, scale_attn_by_inverse_layer_idx=True,
                           activation_function="gelu").save_pretrained(folder)
            weights_of[upcast] = transformers.AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation="eager", dtype=torch.bfloat16).eval()
        theirs = weights_of[True]
        ours = load_quietly(lambda folder: openformers.AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation="eager", dtype=torch.bfloat16), tmp_path / "True")
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        out, expected = (model(ids, attention_mask=mask, output_attentions=True) for model in (ours, theirs))
        rounded = weights_of[False](ids, attention_mask=mask, output_attentions=True).attentions
        for layer, (weights, their_weights) in enumerate(zip(out.attentions, expected.attentions)):
            assert weights.dtype == their_weights.dtype == torch.bfloat16
            assert not torch.equal(rounded[layer], their_weights), layer  # the float32 scores matter here
            torch.testing.assert_close(weights, their_weights, atol=0, rtol=0, msg=f"layer {layer}")
        torch.testing.assert_close(out.logits, expected.logits, atol=0, rtol=0)

    def test_config_refuses_attention_options_that_are_not_true_or_false(self):
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            with pytest.raises(ValueError, match=f"{name}='yes'; expected true or false"):
                openformers.GPT2Config(**{name: "yes"})

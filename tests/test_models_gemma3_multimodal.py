"""Gemma 3's image-and-text folders (model_type "gemma3": gemma-3-4b-it, -12b-it, -27b-it) against the reference.

The reference's AutoModelForCausalLM gives Gemma3ForConditionalGeneration for such a folder; openformers loads its
language model into Gemma 3's text decoder (Gemma3ForCausalLM over the folder's text_config), skipping the vision
tower and projector with a warning. The class runs Gemma 3 text's tests (test_models_gemma.TestGemma3Text:
decoder_suite's common tests, the CPU kernel's steps, unscaled inputs_embeds) against the reference's
Gemma3ForConditionalGeneration made from a tiny text config and a one-layer vision tower and given text alone: the
same logits, losses, cache, padding and greedy and beam generation; saved, the text decoder is a Gemma 3 text folder
that the reference loads as its Gemma3ForCausalLM. It adds the warning, the refusal of pixel_values, the checkpoint
names the reference's save_pretrained writes and those of its in-memory model, and the config read from text_config.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

import openformers
import test_models_gemma
from decoder_parity import assert_outputs_close, outputs_of
from openformers import AutoModelForCausalLM
from openformers.models.gemma import gemma3_text_weights

transformers = pytest.importorskip("transformers")

# A tiny SigLIP tower: two 14-pixel patches a side, pooled to 4 image tokens.
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14)
# The image tokens inside the tiny vocabulary, as the released ones (262144...) are inside theirs.
IMAGE_TOKENS = dict(mm_tokens_per_image=4, boi_token_index=125, eoi_token_index=126, image_token_index=127)


def load_text_decoder(folder, **options):
    """Ours from an image-and-text folder, with the one warning that it gives."""
    with pytest.warns(UserWarning, match="vision tower; images are not supported") as caught:
        model = AutoModelForCausalLM.from_pretrained(folder, **options)
    assert len(caught) == 1, [str(w.message) for w in caught]
    return model


class TestGemma3ImageTextFolders(test_models_gemma.TestGemma3Text):
    REFERENCE_CONFIG = "Gemma3Config"
    VARIANTS = {
        "uncapped": {},
        # a soft-cap in text_config, which the reference's wrapper does not apply (nor, reading it, openformers)
        "capped-linear-scaled": dict(final_logit_softcapping=4.0, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    }
    HEADS = {"Gemma3ForCausalLM": "AutoModelForCausalLM"}  # what openformers gives; the reference's is the wrapper
    SAVED_CONFIG_ATTRIBUTES = ()  # the reference's config is the wrapper's: test_saved_folder_is_the_text_decoders
    # token_type_ids mark image tokens in the reference's wrapper (attending both ways); images are not supported.
    test_token_type_ids_are_embedded_or_ignored_as_by_the_reference = None
    test_generate_with_token_type_ids_matches_reference = None
    # llama.cpp's gemma3 files hold the text decoder alone: test_models_gemma's GGUF tests.
    test_gguf_written_like_llama_cpp_matches_the_original = None
    test_gguf_weights_are_those_the_reference_reads = None
    test_config_reads_and_writes_the_references_fields = None  # test_config_is_the_text_configs below

    @classmethod
    def reference(cls, name=None, **overrides):
        """The reference's image-and-text model over TINY's text config, every weight drawn at std 0.3."""
        text = {**cls.TINY, **overrides}
        config = transformers.Gemma3Config(text_config=text, vision_config=VISION, **IMAGE_TOKENS)
        torch.manual_seed(0)
        model = transformers.Gemma3ForConditionalGeneration(config).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(std=0.3)
        return model

    @classmethod
    def load_saved(cls, reference, folder, auto_class="AutoModelForCausalLM"):
        reference.save_pretrained(folder)
        return load_text_decoder(folder)

    @classmethod
    def reference_grads(cls, reference) -> dict:
        """The language model's gradients under the text decoder's names (the vision tower has none)."""
        return gemma3_text_weights({name: p.grad for name, p in reference.named_parameters()})

    def test_bfloat16_logits_match_the_reference(self, tiny):
        folder = tiny[0]
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        model = load_text_decoder(folder, dtype=torch.bfloat16)
        ids = self.ids(2, 9)
        with torch.inference_mode():
            torch.testing.assert_close(model(ids).logits, reference(ids).logits)

    def test_loading_warns_that_images_are_not_supported(self, tiny):
        model = load_text_decoder(tiny[0])
        assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.model_type == "gemma3_text"

    def test_pixel_values_are_refused_by_name(self, tiny):
        model, ids = tiny[2], self.ids(1, 5)
        pixels = torch.zeros(1, 3, VISION["image_size"], VISION["image_size"])
        with pytest.raises(TypeError, match="pixel_values"):
            model(ids, pixel_values=pixels)
        with pytest.raises(TypeError, match="pixel_values"):
            model.generate(ids, pixel_values=pixels, max_new_tokens=2)

    def test_config_is_the_text_configs(self, tiny):
        folder, reference, model = tiny
        text = reference.config.text_config
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim", "sliding_window", "layer_types",
                     "query_pre_attn_scalar"):
            assert getattr(model.config, name) == getattr(text, name), name
        with pytest.warns(UserWarning, match="images are not supported"):
            assert type(openformers.AutoConfig.from_pretrained(folder)).__name__ == "Gemma3TextConfig"

    @torch.inference_mode()
    def test_saved_folder_is_the_text_decoders(self, tiny, tmp_path):
        """Saved, the model is a Gemma 3 text folder, which the reference loads as its Gemma3ForCausalLM with no key
        missing or left over, to the wrapper's logits."""
        _, reference, model = tiny
        model.save_pretrained(tmp_path)
        assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gemma3_text"
        theirs, info = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
        assert not any(info.values()), info
        inputs = self.inputs()
        assert_outputs_close(outputs_of(theirs.eval(), inputs), outputs_of(reference, inputs), "saved text decoder")

    @torch.inference_mode()
    def test_the_in_memory_names_load_too(self, tiny, tmp_path):
        """A checkpoint under the wrapper's in-memory names (model.language_model.*, model.vision_tower.*), as other
        tools write them, loads the same text decoder."""
        folder, reference, model = tiny
        (tmp_path / "config.json").write_text((folder / "config.json").read_text())
        tensors = {name: t.contiguous() for name, t in reference.state_dict().items() if name != "lm_head.weight"}
        save_file(tensors,  # the head tied to the token embeddings, stored once
                  tmp_path / "model.safetensors", metadata={"format": "pt"})
        again = load_text_decoder(tmp_path)
        inputs = self.inputs()
        assert_outputs_close(outputs_of(again, inputs), outputs_of(model, inputs), "in-memory names")


@torch.inference_mode()
def test_a_gemma3_config_made_in_python_takes_the_decoding_step(tmp_path):
    """A Gemma3Config made in Python keeps model_type "gemma3" (a folder's gives its text_config, "gemma3_text"): the
    text decoder's fields and network, which the CPU kernel's step runs as Gemma 3 text's, with the reference's
    logits one token at a time and its greedy tokens."""
    import dataclasses

    import openformers.kernels as kernels
    from decoder_parity import assert_kernel_steps_and_generates_as_the_reference
    from openformers.configs import Gemma3Config
    from openformers.kernels import llama as llama_kernel

    cls = TestGemma3ImageTextFolders
    reference = cls.reference(**cls.VARIANTS["uncapped"])
    reference.save_pretrained(tmp_path)
    text = load_text_decoder(tmp_path)
    fields = {f.name: getattr(text.config, f.name) for f in dataclasses.fields(text.config) if f.init}
    config = Gemma3Config(**fields)
    assert config.model_type == "gemma3" and llama_kernel.refusal(config) is None
    model = openformers.Gemma3ForCausalLM.from_config(config)
    model.load_state_dict(text.state_dict())
    assert kernels.accelerate(model.eval())
    assert_kernel_steps_and_generates_as_the_reference(model, reference, cls.ids(1, 12, seed=9))

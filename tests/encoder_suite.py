"""The tests every encoder family runs against the reference, written once: a family's test file subclasses
`EncoderFamilyTests`, sets its config class, sizes and heads as class attributes, and keeps only what that family
has of its own (as further methods, or module functions).

The tiny models are made once per class, head and variant (the `tiny` fixture), as module-scoped fixtures made them
when each file had its own: `pytest_generate_tests` below parametrizes `head` by the class's attributes at class
scope, with the head's class name as the test id (`[AlbertModel]`), or the variant's and the head's where a family
has several variants (`[v3-DebertaV2Model]`).
"""

import pytest
import torch

import openformers
from openformers import configs

from encoder_parity import (
    assert_gradients_match,
    assert_head_saved_both_ways,
    assert_same,
    draw_weights,
    load_quietly,
    outputs_of,
    padded_head_inputs,
)

ROW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a head's inputs hold besides its labels


def without_labels(inputs: dict, kept: tuple = ROW_INPUTS) -> dict:
    return {k: v for k, v in inputs.items() if k in kept}


class EncoderFamilyTests:
    """The common tests of an encoder family, driven by the class attributes below (the family's file sets the
    first three; the rest have defaults that most families keep). A family that lacks one of these tests sets its
    name to None in its class, with a comment saying why; one whose test checks more overrides it."""

    REFERENCE_CONFIG: str  # the reference's config class, e.g. "AlbertConfig" (ours has the same name)
    TINY: dict  # the config values of every tiny model
    HEADS: dict  # the reference's class name -> our Auto class that loads it; one must be the base (AutoModel)

    VARIANTS = {"default": {}}  # variant name -> config values over TINY; every head is made in every variant
    PER_SEQUENCE = ()  # the heads whose outputs are one per sequence (B, ...), the others' per token (B, T, ...)
    PER_SEQUENCE_OUTPUTS = ("pooler_output",)  # the outputs that are one per sequence whatever the head
    PAD = 0  # the pad id of the padded batch
    LOWEST_ID = 3  # random token ids are drawn from LOWEST_ID up to the vocabulary's end
    TOKEN_TYPES = False  # whether the padded batch has two segments of token types
    ROW_INPUTS = ROW_INPUTS  # the inputs besides the labels (ERNIE's task_type_ids too)
    REAL = 7  # the real tokens of the padded batch's second row
    ALSO_DRAWN = ()  # parameters drawn at std 1 besides the biases and norms (by a part of their names)
    POSITION_OFFSET = 0  # the positions a family keeps before the first token's (RoBERTa's padding_idx + 1)
    TRAINING_OVERRIDES = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout off

    def pytest_generate_tests(self, metafunc):
        if "head" in metafunc.fixturenames:
            heads = [(name, variant) for variant in self.VARIANTS for name in self.HEADS]
            ids = [name if len(self.VARIANTS) == 1 else f"{variant}-{name}" for name, variant in heads]
            metafunc.parametrize("head", heads, ids=ids, scope="class")

    @classmethod
    def head_named(cls, auto_class: str) -> str:
        return next(name for name, auto in cls.HEADS.items() if auto == auto_class)

    @classmethod
    def num_labels(cls, name: str) -> int:
        return 2 if name.endswith("ForQuestionAnswering") else 3  # the reference's QA head has num_labels outputs

    @classmethod
    def reference(cls, name, variant=None, **overrides):
        """The reference's tiny model of class `name`, TINY with the variant's values and `overrides`, its biases,
        norms and ALSO_DRAWN parameters drawn so that they count."""
        import transformers

        torch.manual_seed(0)
        values = {**cls.TINY, **cls.VARIANTS[variant or next(iter(cls.VARIANTS))], "num_labels": cls.num_labels(name)}
        if name.endswith("ForCausalLM"):
            values["is_decoder"] = True
        config = getattr(transformers, cls.REFERENCE_CONFIG)(**{**values, **overrides})
        return draw_weights(getattr(transformers, name)(config).eval(), *cls.ALSO_DRAWN)

    @classmethod
    def inputs(cls, name, variant=None) -> dict:
        """Two rows, the second right-padded after REAL tokens, with every label the head named `name` takes."""
        return padded_head_inputs(name, cls.TINY["vocab_size"], cls.PAD, lowest=cls.LOWEST_ID,
                                  token_types=cls.TOKEN_TYPES)

    @classmethod
    def training_head(cls) -> str:
        """The head whose training step is checked: the sequence classifier unless a family names another."""
        return cls.head_named("AutoModelForSequenceClassification")

    @classmethod
    def layers_run(cls) -> int:
        """How many layers a forward pass runs: one hidden state after each, and one attention each."""
        return cls.TINY["num_hidden_layers"]

    @pytest.fixture(scope="class")
    @classmethod
    def tiny(cls, head, tmp_path_factory):
        """(name, folder, reference, model): the reference's head `name` in its variant, saved to folder and loaded
        by the head's Auto class with no warning."""
        name, variant = head
        folder = tmp_path_factory.mktemp(name)
        reference = cls.reference(name, variant)
        reference.save_pretrained(folder)
        return name, folder, reference, load_quietly(getattr(openformers, cls.HEADS[name]).from_pretrained, folder)

    @torch.inference_mode()
    def test_every_head_matches_reference_on_a_padded_batch(self, head, tiny):
        """The outputs and losses, of the reference's output class, and as tuples of the reference's types and
        shapes."""
        name, _, reference, model = tiny
        assert type(model).__name__ == name and not model.training
        assert type(model.base_model).__name__ == self.head_named("AutoModel")
        inputs = self.inputs(*head)
        ours, theirs = model(**inputs), reference(**inputs)
        assert type(ours).__name__ == type(theirs).__name__
        assert_same(outputs_of(ours), outputs_of(theirs))
        as_tuples = model(**inputs, return_dict=False), reference(**inputs, return_dict=False)
        assert [(type(value).__name__, getattr(value, "shape", None)) for value in as_tuples[0]] == [
            (type(value).__name__, getattr(value, "shape", None)) for value in as_tuples[1]]

    @torch.inference_mode()
    def test_each_padded_row_gives_what_it_gives_alone(self, head, tiny):
        name, _, _, model = tiny
        inputs = without_labels(self.inputs(*head), self.ROW_INPUTS)
        batched = outputs_of(model(**inputs))
        alone = outputs_of(model(**{k: v[1:, ..., :self.REAL] for k, v in inputs.items() if k != "attention_mask"}))
        for key, value in alone.items():
            row = batched[key][1:]
            if name not in self.PER_SEQUENCE and key not in self.PER_SEQUENCE_OUTPUTS:
                row = row[:, :self.REAL]  # per-token outputs (B, T, ...): the padding positions are not compared
            torch.testing.assert_close(row, value, atol=1e-5, rtol=1e-5, msg=key)

    @torch.inference_mode()
    def test_every_head_saves_and_loads_in_both_directions(self, head, tiny, tmp_path):
        name, _, reference, model = tiny
        assert_head_saved_both_ways(model, reference, self.HEADS[name], self.inputs(*head), tmp_path)

    @torch.inference_mode()
    def test_hidden_states_and_attention_weights_match_reference(self, head, tiny):
        """Every head's hidden states (the embeddings' output, then each layer's) and attention weights, against
        the reference's computed step by step (eager)."""
        import transformers

        name, folder, _, model = tiny
        reference = getattr(transformers, name).from_pretrained(folder, attn_implementation="eager").eval()
        inputs = without_labels(self.inputs(*head), self.ROW_INPUTS)
        ours = model(**inputs, output_hidden_states=True, output_attentions=True)
        theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
        assert len(ours.hidden_states) == len(theirs.hidden_states) == self.layers_run() + 1
        assert len(ours.attentions) == len(theirs.attentions) == self.layers_run()
        torch.testing.assert_close(ours.hidden_states, theirs.hidden_states, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.attentions, theirs.attentions, atol=1e-4, rtol=1e-4)

    @torch.inference_mode()
    def test_inputs_embeds_give_what_the_ids_give(self, head, tiny):
        """Given embeddings (embedding_size wide where the family projects them up), every head gives the
        reference's outputs."""
        name, _, reference, model = tiny
        inputs = self.inputs(*head)
        embeds = model.get_input_embeddings()(inputs.pop("input_ids"))  # (..., T, embedding_size)
        assert embeds.shape[-1] == self.TINY.get("embedding_size", embeds.shape[-1])
        ours, theirs = model(inputs_embeds=embeds, **inputs), reference(inputs_embeds=embeds, **inputs)
        assert_same(outputs_of(ours), outputs_of(theirs))

    @torch.inference_mode()
    def test_bfloat16_logits_are_the_references_within_its_rounding(self, tmp_path):
        import transformers

        name = self.head_named("AutoModelForMaskedLM")
        self.reference(name).save_pretrained(tmp_path)
        reference = getattr(transformers, name).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
        model = load_quietly(lambda folder: getattr(openformers, name).from_pretrained(folder, dtype=torch.bfloat16),
                             tmp_path)
        assert model.dtype == torch.bfloat16
        inputs = without_labels(self.inputs(name), self.ROW_INPUTS)
        ours, theirs = model(**inputs).logits, reference(**inputs).logits
        assert ours.dtype == theirs.dtype == torch.bfloat16
        torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-2, rtol=1e-2)

    @torch.inference_mode()
    def test_an_untied_decoder_keeps_its_own_weights_and_bias_both_ways(self, tmp_path):
        """With tie_word_embeddings=False the masked LM predicts with its own weights: the reference's outputs, and
        saved, the reference's outputs again in the reference."""
        import transformers

        name = self.head_named("AutoModelForMaskedLM")
        self.reference(name, tie_word_embeddings=False).save_pretrained(tmp_path / "theirs")
        reference = getattr(transformers, name).from_pretrained(tmp_path / "theirs").eval()
        model = load_quietly(getattr(openformers, name).from_pretrained, tmp_path / "theirs")
        inputs = self.inputs(name)
        assert_same(outputs_of(model(**inputs)), outputs_of(reference(**inputs)))
        model.save_pretrained(tmp_path / "ours")
        again = load_quietly(getattr(transformers, name).from_pretrained, tmp_path / "ours").eval()
        assert_same(outputs_of(again(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)

    @pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
    def test_training_gradients_match_reference(self, tmp_path, checkpointing):
        """Without dropout (TRAINING_OVERRIDES), one training step's loss and every parameter's gradient of the
        training head are the reference's."""
        import transformers

        name = self.training_head()
        self.reference(name, **self.TRAINING_OVERRIDES).save_pretrained(tmp_path)
        reference = getattr(transformers, name).from_pretrained(tmp_path).train()
        model = getattr(openformers, name).from_pretrained(tmp_path).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        assert_gradients_match(model, reference, self.inputs(name))

    def test_encoder_refuses_a_cache_and_overlong_inputs(self):
        model = openformers.AutoModel.from_config(getattr(configs, self.REFERENCE_CONFIG)(**self.TINY))
        with pytest.raises(ValueError, match="past_key_values"):
            model(torch.tensor([[5, 6]]), past_key_values=object())
        longest = self.TINY["max_position_embeddings"] - self.POSITION_OFFSET
        with pytest.raises(ValueError, match="truncate"):
            model(torch.full((1, longest + 1), 5))


class EncoderWithoutTokenTypesTests(EncoderFamilyTests):
    """The common tests of an encoder without token types (MPNet, DistilBERT), whose forward takes the
    token_type_ids a BERT-style tokenizer gives and ignores them, as the reference does."""

    @torch.inference_mode()
    def test_token_type_ids_are_ignored_as_the_reference_does(self, head, tiny):
        _, _, reference, model = tiny
        inputs = self.inputs(*head)
        token_types = (torch.arange(inputs["input_ids"].shape[-1]) >= 5).long().expand_as(inputs["input_ids"])
        assert_same(outputs_of(model(**inputs, token_type_ids=token_types)), outputs_of(reference(**inputs)))


class RobertaLayoutTests(EncoderFamilyTests):
    """The common tests of an encoder over RoBERTa's layout (RoBERTa, CamemBERT, XLM-RoBERTa): pad id 1, the real
    tokens' positions after the padding's."""

    PAD = 1
    POSITION_OFFSET = 2

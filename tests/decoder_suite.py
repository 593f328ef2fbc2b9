"""The tests every decoder family runs against the reference, written once: a family's test file subclasses
`DecoderFamilyTests`, sets its sizes, variants and heads as class attributes, and keeps only what that family has
of its own (as further methods, or module functions).

The tiny models are made once per class and variant (the `tiny` fixture) and once per class, head and head variant
(`tiny_head`), as module-scoped fixtures made them when each file had its own: `pytest_generate_tests` below
parametrizes `variant` and `head` by the class's attributes at class scope, with the variant's name as the test id
(`[partial-rotary]`) and the head's class name (`[GPTJModel]`, `[BloomModel-residual-from-input]`).
"""

import pytest
import torch

from decoder_parity import (
    GENERATE_OPTIONS,
    assert_assisted_decoding_gives_the_references_greedy_tokens,
    assert_bfloat16_matches_the_reference,
    assert_cached_decoding_equals_the_full_forward,
    assert_decoding_step_gives_the_references_logits,
    assert_generate_matches,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_hidden_states_and_attentions_match,
    assert_left_padded_batch_equals_single_rows,
    assert_outputs_close,
    assert_same_attributes,
    assert_saved_both_ways,
    assert_state_cache_refusals,
    assert_static_cache_gives_the_dynamic_cache_tokens,
    assert_the_users_dynamic_cache_works_as_the_references,
    assert_training_step_matches,
    generation_inputs,
    head_inputs,
    lm_inputs,
    load_saved,
    make_reference,
    outputs_of,
    padded_batch,
)


class SteppedDecoderTests:
    """For a family that the CPU kernel's decoding step takes, beside DecoderFamilyTests: from_pretrained gives the
    model the step, whose steps give the reference's logits, and greedy generation with them the reference's
    tokens."""

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_and_tokens(self, tiny):
        """from_pretrained gives the model the kernel's decoding step, whose steps give the reference's logits;
        greedy generation with it gives the reference's tokens."""
        _, reference, model = tiny
        ids = self.ids(1, 12, seed=9)
        assert_decoding_step_gives_the_references_logits(model, reference, ids)
        settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()


class DecoderFamilyTests:
    """The common tests of a decoder family, driven by the class attributes below (the family's file sets the first
    four; the rest have defaults that most families keep). A family that lacks one of these tests sets its name to
    None in its class, with a comment saying why; one whose test checks more overrides it."""

    REFERENCE_CONFIG: str  # the reference's config class, e.g. "GPTJConfig"
    TINY: dict  # the config values of every tiny model
    VARIANTS: dict  # variant name -> config values over TINY; `tiny` makes one causal LM per variant
    HEADS: dict  # the reference's class name -> our Auto class that loads it; one must be the causal LM

    LOWEST_ID = 1  # random token ids are drawn from LOWEST_ID up to the vocabulary's end
    IS_NORM = None  # make_reference's `is_norm` (the weights drawn around one); None for its default
    LM_LABELS_ARE_THE_TOKENS = False  # a causal LM's labels: the tokens themselves, or (False) a class per token
    HEAD_VARIANTS = None  # the variants every head is checked in; None for the first variant alone
    HEAD_OVERRIDES = dict(num_labels=3)  # config values over the variant for every head
    TRAINING_VARIANTS = None  # the variants a training step is checked in; None for the first variant alone
    TRAINING_OVERRIDES = {}  # config values over the variant for a training step (dropout off where it is on)
    SAVED_CONFIG_ATTRIBUTES = ("tie_word_embeddings",)  # config fields the reference reads back as they were
    EMBEDS_TOKEN_TYPES = False  # whether token_type_ids add rows of the token table (GPT-J's), else are ignored
    BATCH_LENGTH = 9  # the tokens of each row of the padded batch the heads, hidden states and saved files are run on

    def pytest_generate_tests(self, metafunc):
        if "variant" in metafunc.fixturenames:
            metafunc.parametrize("variant", list(self.VARIANTS), scope="class")
        if "head" in metafunc.fixturenames:
            variants = self.HEAD_VARIANTS or list(self.VARIANTS)[:1]
            heads = [(name, variant) for name in self.HEADS for variant in variants]
            ids = [name if len(variants) == 1 else f"{name}-{variant}" for name, variant in heads]
            metafunc.parametrize("head", heads, ids=ids, scope="class")
        if "training_variant" in metafunc.fixturenames:
            metafunc.parametrize("training_variant", self.TRAINING_VARIANTS or list(self.VARIANTS)[:1])

    @classmethod
    def causal_lm(cls) -> str:
        return next(name for name, auto_class in cls.HEADS.items() if auto_class == "AutoModelForCausalLM")

    @classmethod
    def reference(cls, name=None, **overrides):
        """The reference's tiny random model of class `name` (the causal LM by default), TINY with `overrides`."""
        import transformers

        config = getattr(transformers, cls.REFERENCE_CONFIG)(**{**cls.TINY, **overrides})
        if cls.IS_NORM is None:
            return make_reference(name or cls.causal_lm(), config)
        return make_reference(name or cls.causal_lm(), config, is_norm=cls.IS_NORM)

    @classmethod
    def reference_grads(cls, reference) -> dict:
        """The reference's gradients after a backward pass, under our parameters' names and in their shapes: its
        own, unless a family's checkpoint differs from the reference's memory (fused experts, Conv1D)."""
        return {name: parameter.grad for name, parameter in reference.named_parameters()}

    @classmethod
    def ids(cls, *shape, seed=1):
        return torch.randint(cls.LOWEST_ID, cls.TINY["vocab_size"], shape,
                             generator=torch.Generator().manual_seed(seed))

    @classmethod
    def inputs(cls, name=None) -> dict:
        """Two rows of BATCH_LENGTH tokens with pad id 0, the first right-padded and the second left-padded, with the
        labels the head named `name` (the causal LM by default) takes."""
        ids, mask = padded_batch(cls.ids(2, cls.BATCH_LENGTH, seed=7))
        lm_labels = ids.masked_fill(mask == 0, -100) if cls.LM_LABELS_ARE_THE_TOKENS else None
        return head_inputs(name or cls.causal_lm(), ids, mask, lm_labels=lm_labels)

    @classmethod
    def load_saved(cls, reference, folder, auto_class: str = "AutoModelForCausalLM"):
        """`reference` saved to `folder`, loaded by our `auto_class` (without a warning, unless a family expects
        one)."""
        return load_saved(reference, folder, auto_class)

    @pytest.fixture(scope="class")
    @classmethod
    def tiny(cls, variant, tmp_path_factory):
        """(folder, reference, model): the reference's causal LM of `variant`, saved to folder and loaded by ours."""
        folder = tmp_path_factory.mktemp(variant)
        reference = cls.reference(**cls.VARIANTS[variant])
        return folder, reference, cls.load_saved(reference, folder)

    @pytest.fixture(scope="class")
    @classmethod
    def tiny_head(cls, head, tmp_path_factory):
        """(name, folder, reference, model) for the head `name` in its variant, loaded by the head's Auto class."""
        name, variant = head
        folder = tmp_path_factory.mktemp(name)
        reference = cls.reference(name, **{**cls.VARIANTS[variant], **cls.HEAD_OVERRIDES})
        return name, folder, reference, cls.load_saved(reference, folder, cls.HEADS[name])

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        _, reference, model = tiny
        assert type(model).__name__ == self.causal_lm() and not model.training
        inputs = self.inputs()
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "causal LM")

    @torch.inference_mode()
    def test_every_head_matches_reference_on_a_padded_batch(self, tiny_head):
        name, _, reference, model = tiny_head
        assert type(model).__name__ == name and not model.training
        inputs = self.inputs(name)
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), name)

    @torch.inference_mode()
    def test_every_head_saves_what_the_reference_loads_and_back(self, tiny_head, tmp_path):
        name, _, reference, model = tiny_head
        inputs = self.inputs(name)
        assert_saved_both_ways(model, tmp_path, self.HEADS[name], inputs, outputs_of(reference, inputs))

    @torch.inference_mode()
    def test_causal_lm_saves_what_the_reference_loads(self, tiny, tmp_path):
        _, reference, model = tiny
        inputs = self.inputs()
        reloaded = assert_saved_both_ways(model, tmp_path, "AutoModelForCausalLM", inputs,
                                          outputs_of(reference, inputs))
        assert_same_attributes(reloaded.config, reference.config, self.SAVED_CONFIG_ATTRIBUTES)

    @torch.inference_mode()
    def test_token_type_ids_are_embedded_or_ignored_as_by_the_reference(self, tiny):
        _, reference, model = tiny
        inputs = self.inputs()
        typed = {**inputs, "token_type_ids": self.ids(*inputs["input_ids"].shape, seed=3)}
        ours = outputs_of(model, typed)
        try:
            theirs = outputs_of(reference, typed)
        except TypeError:  # a forward without the argument: it cannot add them
            theirs = outputs_of(reference, inputs)
        assert_outputs_close(ours, theirs, "causal LM with token_type_ids")
        moved = (ours["logits"] - outputs_of(model, inputs)["logits"]).abs().max()
        assert (moved > 1e-3) == self.EMBEDS_TOKEN_TYPES, moved

    @torch.inference_mode()
    def test_cached_decoding_equals_the_full_forward(self, tiny):
        assert_cached_decoding_equals_the_full_forward(tiny[2], self.ids(2, 12))

    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows(self, tiny):
        _, reference, model = tiny
        assert_left_padded_batch_equals_single_rows(model, self.ids, reference)

    @GENERATE_OPTIONS
    @torch.inference_mode()
    def test_generate_matches_reference(self, tiny, options):
        _, reference, model = tiny
        assert_generate_matches(model, reference, *generation_inputs(self.ids), **options)

    @GENERATE_OPTIONS
    @torch.inference_mode()
    def test_generate_with_token_type_ids_matches_reference(self, tiny, options):
        """The prompt's token types, and each new token taking its row's last one, as the reference extends them."""
        _, reference, model = tiny
        ids, mask = generation_inputs(self.ids)
        types = (torch.arange(ids.shape[1]) >= ids.shape[1] // 2).long().expand_as(ids) * (self.LOWEST_ID + 1)
        settings = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0,
                        **options)
        try:
            expected = reference.generate(ids, token_type_ids=types, **settings)
        except (TypeError, ValueError):  # a forward without the argument: it cannot add them
            expected = reference.generate(ids, **settings)
        assert model.generate(ids, token_type_ids=types, **settings).tolist() == expected.tolist()

    @torch.inference_mode()
    def test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens(self, tiny):
        assert_static_cache_gives_the_dynamic_cache_tokens(tiny[2], *generation_inputs(self.ids))

    @torch.inference_mode()
    def test_hidden_states_and_attention_weights_match_the_reference(self, tiny):
        folder, _, model = tiny
        inputs = self.inputs()
        assert_hidden_states_and_attentions_match(model, folder, inputs["input_ids"], inputs["attention_mask"])

    @torch.inference_mode()
    def test_inputs_embeds_and_tuples_match_the_reference(self, tiny):
        _, reference, model = tiny
        inputs = self.inputs()
        given = dict(inputs_embeds=reference.get_input_embeddings()(inputs["input_ids"]),
                     attention_mask=inputs["attention_mask"], labels=inputs["labels"], return_dict=False)
        ours, theirs = model(**given), reference(**given)
        for got, expected in zip(ours[:2], theirs[:2]):  # loss, logits
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    def test_training_loss_and_gradients_match_the_reference(self, training_variant, tmp_path):
        """Dropout off, the loss and every gradient of a training step are the reference's, with gradient
        checkpointing too (the layers run again in the backward pass)."""
        reference = self.reference(**{**self.VARIANTS[training_variant], **self.TRAINING_OVERRIDES})
        model = self.load_saved(reference, tmp_path)
        inputs = lm_inputs(self.ids(2, 9, seed=7))
        assert_training_step_matches(model, reference, inputs, checkpointing=(False, True),
                                     reference_grads=self.reference_grads)


def reference_grads_as_checkpoint(reference, block: str, expert_names: tuple[str, str, str]) -> dict:
    """The reference's gradients under the checkpoint's names: its fused experts (`mlp.experts.gate_up_proj`
    (E, 2I, C), `mlp.experts.down_proj` (E, C, I); LFM2-MoE's under `feed_forward`, its checkpoints' name) split into
    each expert's gate, up and down weights, under `block` (the checkpoint's name of the sparse block: `mlp`, Mixtral's
    `block_sparse_moe`)."""
    gate, up, down = expert_names
    grads = {}
    for name, parameter in reference.named_parameters():
        if parameter.grad is None:
            continue
        prefix, _, last = name.rpartition(".mlp." if ".mlp." in name else f".{block}.")
        if last.startswith("experts."):
            for e, g in enumerate(parameter.grad):
                if last == "experts.gate_up_proj":
                    g_gate, g_up = g.chunk(2)
                    grads[f"{prefix}.{block}.experts.{e}.{gate}.weight"] = g_gate
                    grads[f"{prefix}.{block}.experts.{e}.{up}.weight"] = g_up
                else:
                    grads[f"{prefix}.{block}.experts.{e}.{down}.weight"] = g
        else:
            grads[name.replace(".mlp.gate.", f".{block}.gate.") if prefix else name] = parameter.grad
    return grads


class RoutedExpertsTests(DecoderFamilyTests):
    """The common tests of a mixture of experts whose checkpoints hold each expert's gate, up and down projections
    (`EXPERT_NAMES`) under the sparse block (`EXPERT_BLOCK`; the reference fuses them in memory) and whose routers may
    choose with correction biases (`e_score_correction_bias`, which the reference's init zeroes: drawn at std 0.3
    here, so that a choice made without them moves the logits far past the tolerance): the router logits (and the
    load-balancing loss where the family's head computes one, `LOAD_BALANCING`), saved files holding the tensors the
    reference's own hold, and a training step's gradients, the reference's fused experts split per expert
    (DeepSeek's, ERNIE 4.5 MoE's, Mixtral's, Qwen3-MoE's, Qwen2-MoE's). A family whose training loss adds the
    load-balancing loss sets `output_router_logits=True` (and a large `router_aux_loss_coef`) in TRAINING_OVERRIDES."""

    LOAD_BALANCING = True  # whether the causal LM adds the load-balancing loss (`aux_loss`) with the router logits
    EXPERT_BLOCK = "mlp"  # the checkpoint's name of a layer's sparse block
    EXPERT_NAMES = ("gate_proj", "up_proj", "down_proj")  # the checkpoint's names of an expert's projections

    @classmethod
    def reference(cls, name=None, **overrides):
        model = super().reference(name, **overrides)
        with torch.no_grad():
            for tensor_name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                if tensor_name.endswith("e_score_correction_bias"):
                    tensor.normal_(std=0.3)
        return model

    @classmethod
    def reference_grads(cls, reference) -> dict:
        return reference_grads_as_checkpoint(reference, cls.EXPERT_BLOCK, cls.EXPERT_NAMES)

    @torch.inference_mode()
    def test_router_logits_match_the_reference(self, tiny):
        _, reference, model = tiny
        inputs = {**self.inputs(), "output_router_logits": True}
        ours, theirs = outputs_of(model, inputs), outputs_of(reference, inputs)
        sparse = sum(model.config.is_sparse(i) for i in range(model.config.num_hidden_layers))
        assert len(ours["router_logits"]) == sparse > 0 and ("aux_loss" in ours) == self.LOAD_BALANCING
        assert_outputs_close(ours, theirs, "router logits")

    @torch.inference_mode()
    def test_every_head_saves_what_the_reference_loads_and_back(self, tiny_head, tmp_path):
        """Saved, each head loads both ways to the reference's outputs, its file holding the tensors that the
        reference's holds: each expert's own weights, as the reference's save_pretrained splits them."""
        from safetensors import safe_open

        super().test_every_head_saves_what_the_reference_loads_and_back(tiny_head, tmp_path)
        with safe_open(tiny_head[1] / "model.safetensors", "pt") as theirs, \
                safe_open(tmp_path / "model.safetensors", "pt") as ours:
            assert sorted(ours.keys()) == sorted(theirs.keys())

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """A bfloat16 model keeps in float32 what the reference's keeps (DeepSeek's and ERNIE's routers and
        correction biases, its _keep_in_fp32_modules_strict): the same logits and the same experts chosen."""
        assert_bfloat16_matches_the_reference(tiny[0], *padded_batch(self.ids(2, 9, seed=7)))


class StateCacheTests:
    """What a family whose cache keeps states (a MambaCache, a HybridCache) is checked for beyond its cache's forms of
    the common tests: the caches it refuses, and assisted decoding, which goes back to snapshots of its states."""

    @torch.inference_mode()
    def test_attention_caches_are_refused(self, tiny):
        assert_state_cache_refusals(tiny[2], self.ids(1, 6))

    @torch.inference_mode()
    def test_assisted_decoding_gives_the_references_greedy_tokens(self, tiny, monkeypatch):
        _, reference, model = tiny
        assert_assisted_decoding_gives_the_references_greedy_tokens(model, reference, self.ids(1, 6, seed=2),
                                                                    monkeypatch)


class HybridCacheTests(StateCacheTests):
    """The cache tests of a decoder whose layers keep Mamba-2 states beside or instead of keys and values (Granite 4's
    hybrids, Bamba, Falcon-H1; Jamba's Mamba states, through `draw_mixer` and `state_shapes`: its config's
    `attends(i)` and `has_mixer(i)`, the mixers' sizes under the `mamba_*` names), in their HybridCache forms, in
    place of DecoderFamilyTests' forms that hand the model a DynamicCache or a static cache. Listed before the
    family's base class; `padded_rows_differ_alone(variant)` says where the reference's own padded rows differ from
    themselves alone (in_proj's bias reaches the convolution's state at padding)."""

    test_cached_decoding_equals_the_full_forward = None
    test_left_padded_batch_equals_single_rows = None
    test_generate_with_a_static_cache_gives_the_dynamic_cache_tokens = None

    @classmethod
    def reference(cls, name=None, **overrides):
        """The reference's tiny model with each mixer drawn as `draw_mixer` draws it."""
        model = super().reference(name, **overrides)
        with torch.no_grad():
            for layer in model.base_model.layers:
                if getattr(layer, "mamba", None) is not None:
                    cls.draw_mixer(layer.mamba)
        return model

    @staticmethod
    def draw_mixer(mixer) -> None:
        """A Mamba-2 mixer's A_log, D and dt_bias drawn per head (the reference's init makes them alike in every head)
        and out_proj at std 0.5 (the mixer weighing in the logits as much as the attention)."""
        mixer.A_log.normal_(mean=0.0, std=1.0)
        mixer.D.normal_(mean=1.0, std=0.5)
        mixer.dt_bias.normal_(mean=0.0, std=0.5)
        mixer.out_proj.weight.normal_(std=0.5)

    @staticmethod
    def state_shapes(config) -> tuple[tuple, tuple]:
        """A mixer's convolution state and scan state shapes for one row: Mamba-2's (channels of x, B and C, taps)
        and (heads, head_dim, state)."""
        channels = config.mamba_intermediate_size + 2 * config.mamba_n_groups * config.mamba_d_state
        return (channels, config.mamba_d_conv), (config.mamba_n_heads, config.mamba_d_head, config.mamba_d_state)

    @classmethod
    def padded_rows_differ_alone(cls, variant) -> bool:
        return cls.VARIANTS[variant].get("mamba_proj_bias", False)

    @torch.inference_mode()
    def test_cached_decoding_with_a_hybrid_cache_equals_the_full_forward(self, tiny):
        from openformers import HybridCache

        model = tiny[2]
        config = model.config
        ids = self.ids(2, 12)
        full = model(ids).logits
        cache = model.new_cache()
        steps = [model(ids[:, :5], past_key_values=cache).logits, model(ids[:, 5:8], past_key_values=cache).logits]
        steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(8, ids.shape[1])]
        assert isinstance(cache, HybridCache) and cache.seq_len == ids.shape[1]
        layers = range(config.num_hidden_layers)
        assert cache.attends == [config.attends(i) for i in layers]
        assert cache.keeps_state == [config.has_mixer(i) for i in layers]
        conv, ssm = cache.state(next(i for i in layers if config.has_mixer(i)))
        conv_shape, ssm_shape = self.state_shapes(config)
        assert conv.shape == (2, *conv_shape) and ssm.shape == (2, *ssm_shape)
        assert len(cache.keys) == sum(map(config.attends, layers)) and cache.keys[0].shape[-2] >= ids.shape[1]
        torch.testing.assert_close(torch.cat(steps, dim=1), full)
        used = model(ids[:, :5], use_cache=True).past_key_values  # a forward asked for a cache makes a HybridCache
        assert isinstance(used, HybridCache) and used.seq_len == 5

    @torch.inference_mode()
    def test_the_users_dynamic_cache_of_the_config_works_as_the_references(self, tiny):
        _, reference, model = tiny
        assert_the_users_dynamic_cache_works_as_the_references(model, reference, self.ids)

    @torch.inference_mode()
    def test_left_padded_batch_equals_single_rows_or_the_references_batch(self, tiny, variant):
        """Three rows of 9, 5 and 1 tokens left-padded, with their positions: the prefill is the reference's on the
        batch, and it and a step give each row's logits alone wherever the reference's own rows do (with in_proj's
        bias the padded positions reach the convolution's state, in the reference as here: the padded rows then
        differ from themselves alone in both)."""
        _, reference, model = tiny
        rows = [self.ids(1, 9, seed=2)[0], self.ids(1, 5, seed=3)[0], self.ids(1, 1, seed=4)[0]]
        ids = torch.stack([torch.cat([torch.zeros(9 - len(row), dtype=torch.long), row]) for row in rows])
        mask = torch.stack([torch.cat([torch.zeros(9 - len(row)), torch.ones(len(row))]).long() for row in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = model.new_cache()
        prefill = model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits
        step_ids = self.ids(3, 1, seed=5)
        step = model(step_ids, attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1),
                     position_ids=positions[:, -1:] + 1, past_key_values=cache).logits
        theirs = reference(ids, attention_mask=mask, position_ids=positions).logits
        real = mask.bool()
        torch.testing.assert_close(prefill[real], theirs[real], atol=1e-4, rtol=1e-4)
        alone_equal = []
        for i, row in enumerate(rows):
            alone = model(torch.cat([row, step_ids[i]])[None]).logits[0]
            their_alone = reference(row[None]).logits[0]
            torch.testing.assert_close(alone[:-1], their_alone, atol=1e-4, rtol=1e-4)
            agree = torch.allclose(theirs[i, 9 - len(row):], their_alone, atol=1e-4, rtol=1e-4)
            alone_equal.append(agree)
            if agree:
                torch.testing.assert_close(prefill[i, 9 - len(row):], alone[:-1])
                torch.testing.assert_close(step[i, 0], alone[-1])
        assert alone_equal == ([True, False, False] if self.padded_rows_differ_alone(variant) else [True] * 3)

    @torch.inference_mode()
    def test_sampled_sequences_keep_their_own_states(self, tiny):
        """Sampling three sequences per prompt (rows repeated, states and keys with them): each step's logits are the
        full forward's at that position of the sequence it continued."""
        model = tiny[2]
        ids = self.ids(2, 6, seed=6)
        out = model.generate(ids, max_new_tokens=6, do_sample=True, top_k=0, eos_token_id=None, pad_token_id=0,
                             num_return_sequences=3, generator=torch.Generator().manual_seed(3),
                             return_dict_in_generate=True, output_logits=True)
        sequences = out.sequences
        assert sequences.shape == (6, 12) and len({tuple(row.tolist()) for row in sequences}) > 2
        full = model(sequences).logits  # (6, 12, V)
        for t, logits in enumerate(out.logits):
            torch.testing.assert_close(logits, full[:, 5 + t], atol=1e-4, rtol=1e-4)

    def test_the_cpu_kernel_refuses_the_family_and_generate_runs_the_layers(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3),
                                                           model.config.model_type)

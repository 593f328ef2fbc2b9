"""What the decoder families' tests share: a tiny reference model with every weight drawn, a padded batch and each
head's labels, outputs compared within 1e-4, cached decoding, left padding, generation (greedy, beam, static cache),
hidden states and attention weights, one training step's gradients, saving both ways, the CPU kernel's refusal,
GGUF files written as llama.cpp's converter writes them and a streamer that keeps nothing. Each family's test file
keeps its sizes, its variants and what only that family has.

`ids_of(*shape, seed=...)` below is a family's own maker of random token ids (they differ in the lowest id).
"""

import json
import warnings

import pytest
import torch

import openformers
from encoder_parity import load_quietly
from openformers.generation.cache import DynamicCache

GENERATE_OPTIONS = pytest.mark.parametrize(
    "options", [dict(), dict(num_beams=3), dict(num_beams=3, num_return_sequences=2)],
    ids=["greedy", "beam", "beam-return-2"],
)


class OneStepAtATime:
    """A streamer that keeps nothing: generate with it takes single steps (it streams each token), where without a
    streamer a greedy row on the CPU kernel's step runs its steps in one call (kernels/llama.py greedy_tokens)."""

    def put(self, value):
        pass

    def end(self):
        pass


def _is_norm_weight(name: str) -> bool:
    return name.endswith("norm.weight")


def make_reference(class_name: str, config, is_norm=_is_norm_weight):
    """A tiny random model of the reference's class, seeded, its norms (the parameters `is_norm` names) and biases
    drawn too: the reference sets them to ones and zeros, which would hide a norm or a bias left out."""
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, class_name)(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if is_norm(name):
                parameter.normal_(mean=1.0, std=0.2)
            elif name.endswith("bias"):
                parameter.normal_(std=0.1)
    return model


def load_saved(reference, folder, auto_class: str = "AutoModelForCausalLM"):
    """`reference` saved to `folder`, loaded by openformers' `auto_class` without a warning."""
    reference.save_pretrained(folder)
    return load_quietly(getattr(openformers, auto_class).from_pretrained, folder)


def padded_batch(ids: torch.Tensor):
    """Two rows of `ids` with pad id 0 and their attention mask: the first right-padded from position 6, the second
    left-padded over its first two positions."""
    ids, mask = ids.clone(), torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0
    ids[1, :2], mask[1, :2] = 0, 0
    return ids, mask


def lm_inputs(ids: torch.Tensor) -> dict:
    """The padded batch of `ids` with each real token as its label (the padding left out): a language model's loss."""
    ids, mask = padded_batch(ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def head_inputs(head: str, ids, mask, lm_labels=None) -> dict:
    """The batch with the labels the head named `head` takes: a class per token (padding left out) for token
    classification and, unless `lm_labels` are given, for the causal LM; a class per row for sequence classification;
    answer spans for question answering, one of them starting past the end. A causal LM's name ends in CausalLM, or
    in LMHeadModel as GPT-2's does."""
    inputs = {"input_ids": ids, "attention_mask": mask}
    if head.endswith(("CausalLM", "LMHeadModel")):
        inputs["labels"] = (ids % 3).masked_fill(mask == 0, -100) if lm_labels is None else lm_labels
    elif head.endswith("TokenClassification"):
        inputs["labels"] = (ids % 3).masked_fill(mask == 0, -100)
    elif head.endswith("SequenceClassification"):
        inputs["labels"] = torch.tensor([2, 0])
    elif head.endswith("QuestionAnswering"):
        inputs.update(start_positions=torch.tensor([3, 12]), end_positions=torch.tensor([5, 4]))
    return inputs


def padded_head_inputs(ids_of, head: str) -> dict:
    """Two rows of 9 tokens from `ids_of` with pad id 0, the first right-padded and the second left-padded, with the
    labels the head named `head` takes (a causal LM's: the tokens themselves)."""
    ids, mask = padded_batch(ids_of(2, 9, seed=7))
    return head_inputs(head, ids, mask, lm_labels=ids.masked_fill(mask == 0, -100))


def outputs_of(model, inputs: dict) -> dict:
    """Every tensor (or tuple of tensors, as router scores) the model returns on `inputs`, by name; the cache left
    out."""
    out = model(**inputs)
    return {key: out[key] for key in out.keys() if isinstance(out[key], (torch.Tensor, tuple))}


def assert_outputs_close(ours: dict, theirs: dict, what: str):
    assert list(ours) == list(theirs), what
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=f"{what}.{key}")


def assert_bfloat16_matches_the_reference(folder, ids, mask, tolerance: float = 0.0):
    """The reference's model saved in `folder`, loaded in bfloat16 by the reference and by ours, gives the same logits
    on the batch within `tolerance` (0: the same bits), the parameters both have in the same dtypes (what the
    reference keeps in float32 stays so), and with a router the same router logits within `tolerance` and the same
    experts among each token's best num_experts_per_tok scores (a router computed otherwise chooses others: a
    different answer, not rounding). Returns our model."""
    import transformers

    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    ours = load_quietly(lambda f: openformers.AutoModelForCausalLM.from_pretrained(f, dtype=torch.bfloat16), folder)
    their_dtypes = {name: t.dtype for name, t in [*theirs.named_parameters(), *theirs.named_buffers()]}
    dtypes = {name: (t.dtype, their_dtypes[name]) for name, t in [*ours.named_parameters(), *ours.named_buffers()]
              if name in their_dtypes}
    assert {name: pair for name, pair in dtypes.items() if pair[0] != pair[1]} == {}
    routed = getattr(ours.config, "num_experts_per_tok", None) is not None
    options = dict(attention_mask=mask, output_router_logits=True) if routed else dict(attention_mask=mask)
    out, expected = ours(ids, **options), theirs(ids, **options)
    assert out.logits.dtype == torch.bfloat16
    torch.testing.assert_close(out.logits, expected.logits, atol=tolerance, rtol=tolerance)
    if routed:
        counts = ours.config.num_experts_per_tok  # one for every layer, or one per layer (Hunyuan-MoE's moe_topk)
        assert len(out.router_logits) == len(expected.router_logits) > 0
        for layer, (scores, their_scores) in enumerate(zip(out.router_logits, expected.router_logits)):
            assert scores.dtype == their_scores.dtype, layer
            torch.testing.assert_close(scores, their_scores, atol=tolerance, rtol=tolerance, msg=f"layer {layer}")
            k = counts[layer] if isinstance(counts, list) else counts
            chosen, their_chosen = (s.float().topk(k, dim=-1).indices.sort(dim=-1).values
                                    for s in (scores, their_scores))
            assert torch.equal(chosen, their_chosen), f"layer {layer} chose other experts"
    return ours


def assert_same_attributes(ours, theirs, names):
    for name in names:
        assert getattr(ours, name) == getattr(theirs, name), name


def assert_saved_both_ways(model, folder, auto_class: str, inputs: dict, expected: dict):
    """`model` saved to `folder` is read by the reference's `auto_class` as the same class, without a warning or a
    missing, unexpected or mismatched key, and by ours; both give `expected`. Returns the reference's model."""
    import transformers

    name = type(model).__name__
    model.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architectures"] == [name] and saved["model_type"] == model.config.model_type
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theirs, info = getattr(transformers, auto_class).from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    theirs.eval()
    assert type(theirs).__name__ == name
    assert_outputs_close(outputs_of(theirs, inputs), expected, f"{name} saved by openformers")
    ours = load_quietly(getattr(openformers, auto_class).from_pretrained, folder)
    assert_outputs_close(outputs_of(ours, inputs), expected, f"{name} reloaded")
    return theirs


def assert_head_matches_and_saves_both_ways(reference, folder, auto_class: str, inputs: dict):
    """The reference's model saved to `folder`/reference and loaded by our `auto_class` is of its class and gives its
    outputs on `inputs`; saved again, into `folder`/ours, both libraries read it back (assert_saved_both_ways)."""
    name = type(reference).__name__
    model = load_saved(reference, folder / "reference", auto_class)
    assert type(model).__name__ == name
    expected = outputs_of(reference, inputs)
    assert_outputs_close(outputs_of(model, inputs), expected, name)
    assert_saved_both_ways(model, folder / "ours", auto_class, inputs, expected)


def assert_cached_decoding_equals_the_full_forward(model, ids):
    """A prefill of 5 positions, a chunk of 3 on top of the cache (the model's own kind: model.new_cache()), then one
    token at a time: the full forward's logits."""
    full = model(ids).logits
    cache = model.new_cache()
    steps = [model(ids[:, :5], past_key_values=cache).logits, model(ids[:, 5:8], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(8, ids.shape[1])]
    assert cache.seq_len == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def assert_left_padded_batch_equals_single_rows(model, ids_of, reference=None, tolerance=1e-4):
    """Three rows of 9, 5 and 1 tokens, left-padded to one batch with their positions: the prefill and one step on
    its cache give each row's logits alone, and so does the reference (within `tolerance`; None for
    torch.testing's defaults) on the batch."""
    rows = [ids_of(1, 9, seed=2)[0], ids_of(1, 5, seed=3)[0], ids_of(1, 1, seed=4)[0]]
    width = max(len(row) for row in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(row), dtype=torch.long), row]) for row in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(row)), torch.ones(len(row))]).long() for row in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = model.new_cache()
    prefill = model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits
    step_ids = ids_of(3, 1, seed=5)
    step_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
    step = model(step_ids, attention_mask=step_mask, position_ids=positions[:, -1:] + 1, past_key_values=cache).logits
    theirs = None if reference is None else reference(ids, attention_mask=mask, position_ids=positions).logits
    for i, row in enumerate(rows):
        alone = model(torch.cat([row, step_ids[i]])[None]).logits[0]
        torch.testing.assert_close(prefill[i, width - len(row) :], alone[:-1])
        torch.testing.assert_close(step[i, 0], alone[-1])
        if theirs is not None:
            torch.testing.assert_close(theirs[i, width - len(row) :], alone[:-1], atol=tolerance, rtol=tolerance)


def assert_state_cache_refusals(model, ids):
    """A model that decodes with a state cache (its new_cache(): a MambaCache, a HybridCache) refuses by name a
    DynamicCache or a static cache in its place."""
    name, kind = type(model.base_model).__name__, type(model.new_cache()).__name__
    with pytest.raises(TypeError, match=f"{name} keeps a state in its layers.*its cache is a {kind}, got DynamicCache;"
                                        r" pass DynamicCache\(config=model.config\)"):
        model(ids, past_key_values=DynamicCache())
    with pytest.raises(TypeError, match="got StaticCache; leave cache_implementation unset"):
        model.generate(ids, max_new_tokens=3, cache_implementation="static")


def assert_assisted_decoding_gives_the_references_greedy_tokens(model, reference, ids, monkeypatch):
    """Assisted decoding of a model whose cache keeps states, which cannot be cropped back past rejected candidates,
    gives the reference's greedy tokens, as the reference's own assisted decoding does: with prompt lookup over a
    prompt that repeats, the model as its own draft, and as draft a copy with its weights moved (which the model
    disagrees with now and then, in both caches), the caches going back to their snapshots (counted) and feeding the
    kept tokens again; the cache generate returns holds every token but the last, as a cropped one does."""
    import copy

    prompt = ids.repeat(1, 3)
    settings = dict(max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), **settings).tolist()
    assert model.generate(prompt, **settings).tolist() == expected
    draft = copy.deepcopy(model)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in draft.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=noise) * parameter.std().nan_to_num())
    kind = type(model.new_cache())
    restores, restore = [], kind.restore
    monkeypatch.setattr(kind, "restore", lambda cache, snapshot: restores.append(cache) or restore(cache, snapshot))
    drafting = dict(assistant_confidence_threshold=0)  # a tiny random draft is never confident: it drafts on
    caches = []
    for assisted in (dict(prompt_lookup_num_tokens=3), dict(assistant_model=model, **drafting),
                     dict(assistant_model=draft, **drafting), dict(assistant_model=draft, num_assistant_tokens=2,
                                                                   num_assistant_tokens_schedule="heuristic")):
        out = model.generate(prompt, **settings, **assisted, return_dict_in_generate=True)
        assert out.sequences.tolist() == expected, assisted
        assert out.cache.seq_len == prompt.shape[1] + settings["max_new_tokens"] - 1  # all but the last, as a crop
        caches.append(out.cache)
    models_restored = [cache for cache in restores if any(cache is mine for mine in caches)]
    assert models_restored  # the model's caches went back, and the draft's, unless the model repeats one token:
    assert len(restores) > len(models_restored) or len(set(expected[0][prompt.shape[1]:])) == 1  # every draft guesses it


def assert_the_users_dynamic_cache_works_as_the_references(model, reference, ids_of):
    """DynamicCache(config=model.config), which a user of the reference makes for a model whose layers keep states, is
    the cache the model decodes with (its new_cache()'s kind and layers) and serves as the reference's does: a prompt
    and a step fed through it give the full forward's logits and get_seq_length counts both; generate given such a
    cache (greedy and beams), or one holding the prompt already (only the new position is fed), gives the reference's
    tokens with its own DynamicCache(config=...) (under either name, past_key_values or cache); and it can only be
    cropped back to nothing."""
    transformers = pytest.importorskip("transformers")
    expected = model.new_cache()
    cache = DynamicCache(config=model.config)
    assert type(cache) is type(expected)
    if isinstance(expected, openformers.HybridCache):
        assert isinstance(cache, DynamicCache)
        assert (cache.attends, cache.keeps_state) == (expected.attends, expected.keeps_state)
    ids, step = ids_of(2, 7, seed=11), ids_of(2, 1, seed=12)
    prompt = torch.cat([ids, step], 1)
    logits = [model(ids, past_key_values=cache).logits, model(step, past_key_values=cache).logits]
    torch.testing.assert_close(torch.cat(logits, 1), reference(prompt).logits, atol=1e-4, rtol=1e-4)
    assert cache.get_seq_length() == 8
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    for options in (dict(), dict(num_beams=3)):
        theirs = reference.generate(ids, cache=transformers.DynamicCache(config=reference.config), **settings, **options)
        ours = model.generate(ids, past_key_values=DynamicCache(config=model.config), **settings, **options)
        assert ours.tolist() == theirs.tolist(), options
    theirs_cache, ours_cache = transformers.DynamicCache(config=reference.config), DynamicCache(config=model.config)
    reference(ids, cache=theirs_cache)
    model(ids, cache=ours_cache)  # the reference's newer name, as generate takes it too
    theirs = reference.generate(prompt, cache=theirs_cache, **settings)
    assert model.generate(prompt, cache=ours_cache, **settings).tolist() == theirs.tolist()
    assert ours_cache.get_seq_length() == int(theirs_cache.get_seq_length()) == prompt.shape[1] + 5
    with pytest.raises(ValueError, match="cannot be cropped"):
        ours_cache.crop(-1)
    ours_cache.crop(0)
    assert ours_cache.get_seq_length() == 0


def generation_inputs(ids_of):
    """Two prompts of 6 positions, the second left-padded over two."""
    ids = torch.stack([ids_of(1, 6, seed=6)[0], torch.cat([torch.zeros(2, dtype=torch.long), ids_of(1, 4, seed=8)[0]])])
    return ids, (torch.arange(6) >= torch.tensor([[0], [2]])).long()


def assert_generate_matches(model, reference, ids, mask, **options):
    """Ten new tokens without sampling or an end token: the reference's."""
    settings = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
    expected = reference.generate(ids, attention_mask=mask, **settings)
    assert model.generate(ids, attention_mask=mask, **settings).tolist() == expected.tolist()


def assert_generate_with_the_defaults_matches(model, reference, ids):
    """generate given only the prompt and max_new_tokens (no attention mask, no pad id: the generation config's
    defaults, its end token left out) gives the reference's greedy tokens."""
    expected = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    assert model.generate(ids, max_new_tokens=8, eos_token_id=None).tolist() == expected.tolist()


def assert_static_cache_gives_the_dynamic_cache_tokens(model, ids, mask, strategies=(dict(), dict(num_beams=3))):
    for options in strategies:
        settings = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None, **options)
        static = model.generate(ids, cache_implementation="static", **settings)
        assert static.tolist() == model.generate(ids, **settings).tolist(), options


def assert_hidden_states_and_attentions_match(model, folder, ids, mask=None):
    """Every layer's hidden state and attention weights, against the reference loaded from `folder` with eager
    attention (the one that returns its weights)."""
    import transformers

    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ours = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    theirs = reference(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) and len(ours.attentions) == len(theirs.attentions)
    for got, expected in zip(ours.hidden_states + ours.attentions, theirs.hidden_states + theirs.attentions):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    return ours


def assert_training_step_matches(model, reference, inputs: dict, checkpointing=(False,), reference_grads=None,
                                 seed=None):
    """Dropout off, one training step's loss and every gradient are the reference's, for each setting of gradient
    checkpointing in `checkpointing` (with it, the layers run again in the backward pass). `reference_grads` gives
    the reference's gradients under our names (a mixture's fused experts split per expert), by default its own; a
    parameter of ours without a gradient (an expert no token chose) is compared as zeros. With `seed`, each forward
    starts from it (a training forward that draws: PhiMoE's routing)."""
    reference.train()
    if seed is not None:
        torch.manual_seed(seed)
    expected_loss = reference(**inputs).loss
    expected_loss.backward()
    if reference_grads is None:
        expected = {name: parameter.grad for name, parameter in reference.named_parameters()}
    else:
        expected = reference_grads(reference)
    for enabled in checkpointing:
        model.zero_grad()
        model.train()
        if enabled:
            model.gradient_checkpointing_enable()
        if seed is not None:
            torch.manual_seed(seed)
        loss = model(**inputs).loss
        loss.backward()
        torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
        for name, parameter in model.named_parameters():
            grad = parameter.grad
            if grad is None and expected[name] is not None:
                grad = torch.zeros_like(parameter)
            torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def assert_gradient_checkpointing_changes_nothing(model, inputs: dict):
    """With dropout on and the same random draws, gradient checkpointing gives the same loss and gradients, each
    layer but the last running again in the backward pass (models/layers.run_layers)."""
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable()
        calls = []
        hooks = [layer.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in model.model.layers]
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout masks in both runs
        loss = model(**inputs).loss
        loss.backward()
        for hook in hooks:
            hook.remove()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], len(calls)))
    assert results[1][2] == 2 * results[0][2] - 1  # each layer but the last ran again in the backward pass
    torch.testing.assert_close(results[0][0], results[1][0])
    for plain, checkpointed in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(plain, checkpointed)


def assert_kernel_leaves_the_plain_path(model, reference, ids):
    """The CPU kernel's decoding step refuses the config by name and leaves the model's forward plain, its linear
    layers the kernel's products (a prefill and one-token steps: the kernel's few-row products): they give the
    reference's logits."""
    from openformers import kernels
    from openformers.kernels.llama import refusal

    assert refusal(model.config) is not None and not kernels.accelerate(model)
    assert model.model.accelerated_step is None
    # every linear layer the kernel's, experts (mixtral.ExpertLinear, an nn.Linear subclass) included
    assert not any(isinstance(m, torch.nn.Linear) and not isinstance(m, kernels.Linear) for m in model.modules())
    cache, theirs = DynamicCache(), reference(ids).logits
    steps = [model(ids[:, :4], past_key_values=cache).logits]
    steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(4, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), theirs, atol=1e-4, rtol=1e-4)


def assert_kernel_refuses_and_generate_runs_the_layers(model, reference, ids, model_type: str,
                                                       field: str = "model_type", refused: str | None = None):
    """The CPU kernel's decoding step refuses the family by its model_type (or by the config's `field`, or by what
    `refused` names: a config field's value, or "" for the layers where the config is one it takes) and leaves the
    model no step of its own: greedy generation runs the layers at every step (the prompt, then each new token but the
    last) and gives the reference's tokens."""
    from openformers.kernels import llama as llama_kernel

    refusal = llama_kernel.refusal(model.config)
    if refused is None:
        value = model_type if field == "model_type" else getattr(model.config, field)
        refused = f"{field}={value!r}"
    assert (refused in refusal if refused else refusal is None) and not llama_kernel.eligible(model)
    assert model.base_model.accelerated_step is None and model.accelerated_logits is None
    calls = []
    hook = model.base_model.layers[0].register_forward_hook(lambda *_: calls.append(1))
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    try:
        with torch.inference_mode():
            assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
    finally:
        hook.remove()
    assert len(calls) == 6


def assert_decoding_step_gives_the_references_logits(model, reference, ids, prefill: int = 4, rtol: float = 1e-4):
    """from_pretrained gave the model the CPU kernel's decoding step: after a prefill of `prefill` tokens, each
    one-token step is one call of the compiled step, and the steps give the reference's logits."""
    import openformers.kernels  # noqa: F401 (loads the library's operators)
    from openformers.kernels.llama import refusal

    assert refusal(model.config) is None and model.base_model.accelerated_step is not None
    calls, decode_step = [], torch.ops.openformers.decode_step
    counted = lambda *args: calls.append(1) or decode_step(*args)  # noqa: E731
    torch.ops.openformers.decode_step = counted
    try:
        cache = DynamicCache()
        steps = [model(ids[:, :prefill], past_key_values=cache).logits]
        steps += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(prefill, ids.shape[1])]
    finally:
        torch.ops.openformers.decode_step = decode_step
    assert len(calls) == ids.shape[1] - prefill
    torch.testing.assert_close(torch.cat(steps, dim=1), reference(ids).logits, atol=1e-4, rtol=rtol)


def assert_kernel_steps_and_generates_as_the_reference(model, reference, ids):
    """from_pretrained gave the model the CPU kernel's decoding step: its one-token steps give the reference's logits
    (assert_decoding_step_gives_the_references_logits), and greedy generation, whose prompt and tokens all take the
    step (none runs the layers), gives the reference's tokens."""
    assert_decoding_step_gives_the_references_logits(model, reference, ids)
    calls = []
    hook = model.base_model.layers[0].register_forward_hook(lambda *_: calls.append(1))
    settings = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    try:
        assert model.generate(ids, **settings).tolist() == reference.generate(ids, **settings).tolist()
    finally:
        hook.remove()
    assert calls == []


def assert_kernel_steps_unless_refused(folder, reference, ids, model_type: str, refused: str | None):
    """The model from_pretrained loads from `folder` takes the CPU kernel's decoding step and matches the reference
    (assert_kernel_steps_and_generates_as_the_reference), or, where `refused` names what the step refuses (a config
    field's value: per-head q/k norms), leaves generation to its layers on the first 5 ids of `ids`
    (assert_kernel_refuses_and_generate_runs_the_layers)."""
    model = load_quietly(openformers.AutoModelForCausalLM.from_pretrained, folder)
    if refused is None:
        assert_kernel_steps_and_generates_as_the_reference(model, reference, ids)
    else:
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, ids[:, :5], model_type, refused=refused)


# GGUF files as llama.cpp's converter writes them.


def assert_experts_packed_alone(model, float_model, quantization: str):
    """Every stack of experts' matrices that `float_model`'s modules name in `expert_stacks` is, in the quantized
    `model`, a kernels.PackedExperts holding for each expert what quantizing that expert's (out, in) matrix alone
    as a linear layer gives; the rest of those modules (gpt-oss's experts' biases) as in `float_model`."""
    from openformers.kernels import Linear, PackedExperts

    stacks = 0
    for name, module in float_model.named_modules():
        for stack_name, transposed in getattr(module, "expert_stacks", {}).items():
            packed = model.get_submodule(f"{name}.{stack_name}")
            assert isinstance(packed, PackedExperts) and not packed.training, name
            for e, matrix in enumerate(getattr(module, stack_name).detach()):
                matrix = matrix.T if transposed else matrix
                linear = torch.nn.Linear(matrix.shape[1], matrix.shape[0], bias=False)
                linear.weight.data = matrix.contiguous()
                alone = Linear.from_linear(linear, quantization)
                assert torch.equal(packed.weight[e], alone.weight) and torch.equal(packed.scale[e], alone.scale)
            stacks += 1
            for other, parameter in module.named_parameters(recurse=False):
                if other in module.expert_stacks:
                    continue
                assert torch.equal(model.get_submodule(name).get_parameter(other), parameter), f"{name}.{other}"
    assert stacks


def dequantized_copy(model, float_model, quantization: str):
    """A copy of `float_model` holding the weights `model` (`float_model` quantized) holds, unpacked: its linear
    layers' as `model` unpacks them, its experts' stacks each expert's matrix packed alone and unpacked (what
    assert_experts_packed_alone finds in `model`), transposed back where the module stores them (experts, in,
    out)."""
    import copy

    from openformers.kernels import Linear

    rebuilt = copy.deepcopy(float_model)
    for name, module in rebuilt.named_modules():
        for stack_name, transposed in getattr(module, "expert_stacks", {}).items():
            stack = getattr(module, stack_name)
            for e, matrix in enumerate(stack.detach()):
                matrix = matrix.T if transposed else matrix
                linear = torch.nn.Linear(matrix.shape[1], matrix.shape[0], bias=False)
                linear.weight.data = matrix.contiguous()
                unpacked = Linear.from_linear(linear, quantization).dequantized(torch.float32)
                stack.data[e] = unpacked.T if transposed else unpacked
        packed = model.get_submodule(name)
        if isinstance(packed, Linear) and packed.scale is not None:
            module.weight.data = packed.dequantized(torch.float32)
    return rebuilt


def assert_quantized_products_are_the_unpacked_weights(model, float_model, quantization: str, ids, block: str,
                                                      monkeypatch):
    """The quantized `model`'s logits on the plain path in float32 (no kernel, no bfloat16 products): those of
    `float_model` holding its unpacked weights (dequantized_copy). Its sparse block `block` (a module name) on a
    batch of hidden states, through the kernel's products (matvec for an expert's few rows, prompt_product for
    more), which round each input to int8 steps per 32: the plain path given those rounded inputs (test_kernels's
    plain_path_rounds_inputs). A block rather than the logits: where the kernel's rounding and PyTorch's differ in a
    last bit, a step moves, which the tiny model's layers amplify (up to 1e-2 in its logits). In training, the
    gradients reaching the inputs: those of the unpacked weights."""
    from openformers.kernels import library
    from openformers.kernels import linear as linear_module
    from test_kernels import counted_matvecs, plain_path_rounds_inputs

    assert openformers.kernels.build()
    monkeypatch.setattr(linear_module, "BFLOAT16_PROMPT_PRODUCTS", False)
    sparse = model.get_submodule(block)
    x = torch.randn(3, 30, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    rebuilt = dequantized_copy(model, float_model, quantization)
    with torch.inference_mode():
        calls = counted_matvecs(monkeypatch)
        fast = sparse(x)[0]
        assert calls  # the experts' products went to the kernel
        with monkeypatch.context() as patch:
            patch.setattr(library, "loaded", lambda: False)
            plain = model(ids).logits
            torch.testing.assert_close(plain, rebuilt(ids).logits, atol=1e-5, rtol=1e-5)
            plain_path_rounds_inputs(patch)
            rounded = sparse(x)[0]
    torch.testing.assert_close(fast, rounded, atol=1e-5, rtol=1e-5)
    # In training the packed products unpack their weights (kernel_rows 0) and pass gradients to their inputs
    # (QLoRA's path): the inputs' gradients are those of the unpacked weights'.
    grads = []
    for trained in (model, rebuilt):
        embeds = trained.get_input_embeddings()(ids).detach().requires_grad_()
        trained.train()(inputs_embeds=embeds, labels=ids).loss.backward()
        trained.eval()
        grads.append(embeds.grad)
    torch.testing.assert_close(*grads, atol=1e-5, rtol=1e-4)


def assert_quantized_generation_is_its_greedy_chain(model, ids, steps: int = 5):
    """Greedy generation (cached decoding) gives the tokens that the full forward's argmax picks one at a time."""
    with torch.inference_mode():
        generated = model.generate(ids, max_new_tokens=steps, do_sample=False)
        chain = ids
        for _ in range(steps):
            chain = torch.cat([chain, model(chain).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, chain)


def add_decoder_metadata(writer, config):
    """The sizes, rope base and end token (id 2) of a Llama-style decoder, as `<arch>.*` metadata; the norm's epsilon
    is the family's to add."""
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    rope = config.rope_parameters.get("full_attention", config.rope_parameters)  # one per layer type: the full's
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_eos_token_id(2)


def add_llama3_rope_freqs(writer, config):
    """Llama 3.1's rope scaling as llama.cpp's converter writes it, when `config` has it: a rope_freqs tensor of the
    factor each rotated pair's frequency is divided by."""
    from openformers.models.layers import rope_inverse_frequencies

    scaling = config.rope_parameters
    if scaling["rope_type"] != "llama3":
        return
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    plain = rope_inverse_frequencies(head_dim, scaling["rope_theta"], None)
    scaled = rope_inverse_frequencies(head_dim, scaling["rope_theta"],
                                      {k: v for k, v in scaling.items() if k != "rope_theta"})
    writer.add_tensor("rope_freqs.weight", (plain / scaled).float().numpy())


def llama_cpp_tensors(reference, names: dict, permute_heads=False):
    """(Hugging Face name, llama.cpp name, tensor) for each weight of `reference`, `names` mapping parts of the first to
    parts of the second; the output projection left out when tied to the embeddings, as llama.cpp writes none. With
    `permute_heads` the query and key rows come in the order llama.cpp's converter writes them for its "llama"-style
    rotation (`permuted_heads`)."""
    config = reference.config
    for name, tensor in reference.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        gguf_name = name
        for hf, cpp in names.items():
            gguf_name = gguf_name.replace(hf, cpp)
        if permute_heads and ".q_proj." in name:
            tensor = permuted_heads(tensor, config.num_attention_heads)
        elif permute_heads and ".k_proj." in name:
            tensor = permuted_heads(tensor, config.num_key_value_heads)
        yield name, gguf_name, tensor


def permuted_heads(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Query or key rows in llama.cpp's order for its rotary kernel: each head's two halves interleaved pair by pair."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def quantized_blocks(w, kind):
    """`w` (a float32 numpy matrix) as GGUF blocks of type `kind` (a gguf.GGMLQuantizationType): gguf.quants' own,
    and Q6_K's, which gguf.quants cannot make, as `q6_k_blocks` makes them."""
    import gguf

    if kind == gguf.GGMLQuantizationType.Q6_K:
        return q6_k_blocks(w)
    return gguf.quants.quantize(w, kind)


def q6_k_blocks(w):
    """Q6_K blocks of `w` (rows of whole 256s) in llama.cpp's layout: per 256 weights a float16 d, per 16 a signed
    8-bit scale of d, per weight a step in -32..31 (its low 4 bits in the first 128 bytes, its high 2 in the next
    64). Each 16's largest magnitude is rounded to step 31: a plainer choice of scales than llama.cpp's search, in
    the same layout, which gguf.quants.dequantize reads back (tests/test_weights.py checks it)."""
    import numpy as np

    values = w.astype(np.float32).reshape(-1, 16, 16)
    n = values.shape[0]
    steps = np.abs(values).max(-1) / 31  # (n, 16)
    d = (steps.max(-1, keepdims=True) / 127).astype(np.float16)
    scales = np.round(steps / np.where(d == 0, 1, d.astype(np.float32))).clip(-128, 127).astype(np.int8)
    step = d.astype(np.float32) * scales.astype(np.float32)
    q = np.round(values / np.where(step == 0, 1, step)[..., None]).clip(-32, 31)
    unsigned = (q.astype(np.int16) + 32).astype(np.uint8).reshape(n, 2, 128)
    low = (unsigned[:, :, :64] & 15) | ((unsigned[:, :, 64:] & 15) << 4)
    high = (unsigned >> 4).reshape(n, 2, 4, 32)
    high = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    blocks = np.concatenate([low.reshape(n, 128), high.reshape(n, 64), scales.view(np.uint8), d.view(np.uint8)], 1)
    return blocks.reshape(w.shape[0], -1)


def finish_gguf(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_gguf(path, arch: str, reference, names: dict, permute_heads=False, **metadata):
    """A Llama-style decoder's GGUF file of architecture `arch`: its metadata and each `metadata` item (`key=value`
    written by the writer's `add_<key>`), and its weights under llama.cpp's names, as they are or (`permute_heads`)
    with the query and key rows permuted as for llama.cpp's "llama" files."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    add_decoder_metadata(writer, reference.config)
    for key, value in metadata.items():
        getattr(writer, f"add_{key}")(value)
    for _, name, tensor in llama_cpp_tensors(reference, names, permute_heads):
        writer.add_tensor(name, tensor.numpy())
    finish_gguf(writer)


def assert_byte_level_bpe_folder_tokenizes_as_the_reference(folder, texts, special_tokens, config: dict,
                                                            tokenizer_config: dict) -> str:
    """A folder with a byte-level BPE tokenizer.json trained on `texts` (300 pieces, `special_tokens` first), and
    `config` and `tokenizer_config` as its config.json and tokenizer_config.json (what GPT-2-style checkpoints ship):
    AutoTokenizer gives the reference's class and ids on each text. Returns the class's name."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts * 20, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__
    for text in texts:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
    return type(ours).__name__


def assert_metaspace_bpe_folder_tokenizes_as_the_reference(folder, texts, special_tokens, model_type: str,
                                                           tokenizer_config: dict, text: str) -> str:
    """A folder with a Metaspace BPE tokenizer.json trained on `texts` (200 pieces, `special_tokens` first, the second
    its unknown token), as SentencePiece models convert, a config.json of `model_type` and `tokenizer_config` as its
    tokenizer_config.json: AutoTokenizer gives the reference's class, and its ids and decoding of `text`. Returns the
    class's name."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=special_tokens[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts * 20, trainers.BpeTrainer(vocab_size=200, special_tokens=special_tokens))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = openformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours).__name__ == type(reference).__name__
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference(text)["input_ids"])
    return type(ours).__name__


# The keys of the reference's config.json that are not a family's defaults (its version, dtype, labels...).
REFERENCE_BOOKKEEPING = ("transformers_version", "dtype", "architectures", "_name_or_path", "chunk_size_feed_forward",
                         "is_encoder_decoder", "id2label", "label2id", "rope_parameters")


def assert_config_defaults_equal_the_references(ours, theirs):
    """Every value of the reference's default config `theirs` (bar REFERENCE_BOOKKEEPING) is `ours`' (tuples as
    lists, as config.json holds them)."""
    for key, value in theirs.to_dict().items():
        if key in REFERENCE_BOOKKEEPING:
            continue
        ours_value = getattr(ours, key)
        assert (list(ours_value) if isinstance(ours_value, tuple) else ours_value) == value, key


def assert_config_refuses_by_name(config_class, values: dict, message: str, folder):
    """`config_class(**values)`, and a config.json of its model type holding `values`, refused with a ValueError
    matching "Invalid config: <message>" (the field named, with the value)."""
    with pytest.raises(ValueError, match=f"Invalid config: {message}"):
        config_class(**values)
    (folder / "config.json").write_text(json.dumps({"model_type": config_class.model_type, **values}))
    with pytest.raises(ValueError, match=f"config.json: Invalid config: {message}"):
        openformers.AutoConfig.from_pretrained(folder)

"""What the encoder tests share, beside the common tests that tests/encoder_suite.py runs for each family: drawing a
reference model's weights so that every one counts, a padded batch with each head's labels, comparing outputs,
a new model's initialization, loading without a warning, saving a head both ways, one training step's gradients, pipeline records, and the
tokenizer against the reference on the project's corpus (tests/test_tokenizers_corpus.py)."""

import warnings

import pytest
import tokenizers
import torch


def draw_weights(model, *also: str):
    """The reference initializes biases to zero and norms to one: draw them so that they count (and the parameters
    whose names contain one of `also`)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.1)
            elif "LayerNorm" in name or "layer_norm" in name:
                parameter.uniform_(0.5, 1.5)
            elif any(part in name for part in also):
                parameter.normal_(std=1.0)
    return model


def assert_initialized_as_the_reference(model, std: float):
    """A new model's weights drawn from normal(0, std), its biases zero and its norms one."""
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            assert not parameter.any(), name
        elif "LayerNorm" in name:
            assert torch.equal(parameter, torch.ones_like(parameter)), name
        else:
            assert abs(parameter.std().item() - std) < 0.01, name


def outputs_of(out) -> dict:
    """The tensors a head returns, by name (caches and the tuples of hidden states left out)."""
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def assert_same(ours: dict, theirs: dict, atol=1e-4):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=atol, rtol=atol, msg=key)


def load_quietly(load, folder):
    """Load, failing on any warning: a missing, unexpected or newly initialized weight is reported by one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


def padded_head_inputs(head: str, vocab_size: int, pad: int, lowest: int = 3, token_types: bool = False) -> dict:
    """Two rows of 10 random ids from `lowest` up (three choices of them for multiple choice), the second right-padded
    with `pad` after 7 tokens, two segments of token types (from the fifth token) if `token_types`, with every label
    the head named `head` takes (its class name's task)."""
    shape = (2, 3, 10) if head.endswith("ForMultipleChoice") else (2, 10)
    ids = torch.randint(lowest, vocab_size, shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, ..., 7:], mask[1, ..., 7:] = pad, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        inputs["token_type_ids"] = (torch.arange(shape[-1]) >= 4).long().expand(shape)
    if head.endswith("ForMaskedLM"):
        labels = torch.full_like(ids, -100)
        labels[:, [1, 4]] = ids[:, [1, 4]]
        return {**inputs, "labels": labels}
    if head.endswith("ForCausalLM"):
        return {**inputs, "labels": ids.masked_fill(mask == 0, -100)}
    if head.endswith(("ForSequenceClassification", "ForMultipleChoice")):
        return {**inputs, "labels": torch.tensor([2, 0])}
    if head.endswith("ForTokenClassification"):
        return {**inputs, "labels": (ids % 3).masked_fill(mask == 0, -100)}
    if head.endswith("ForQuestionAnswering"):
        return {**inputs, "start_positions": torch.tensor([2, 11]), "end_positions": torch.tensor([4, 6])}
    return inputs


def assert_head_saved_both_ways(model, reference, auto_class: str, inputs: dict, folder):
    """`model` saved to `folder` is read by the reference's and openformers' `auto_class` as the same class, without
    a warning, and each gives what its source gives."""
    import transformers

    import openformers

    model.save_pretrained(folder)
    theirs = load_quietly(getattr(transformers, auto_class).from_pretrained, folder).eval()
    ours = load_quietly(getattr(openformers, auto_class).from_pretrained, folder)
    assert type(theirs).__name__ == type(ours).__name__ == type(model).__name__
    assert_same(outputs_of(theirs(**inputs)), outputs_of(reference(**inputs)), atol=1e-6)
    assert_same(outputs_of(ours(**inputs)), outputs_of(model(**inputs)), atol=1e-6)


def assert_causal_lm_generates_as_reference(reference, folder, options: dict):
    """The reference's causal LM, saved to `folder` and loaded by AutoModelForCausalLM, generates the reference's
    tokens with `options` (greedy, beams) from one prompt, and from a batch with a left-padded row."""
    import openformers

    reference.save_pretrained(folder)
    model = openformers.AutoModelForCausalLM.from_pretrained(folder)
    prompt = torch.tensor([[2, 5, 6, 7], [0, 0, 8, 9]])
    mask = (prompt != 0).long()
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None, **options)
    torch.testing.assert_close(model.generate(prompt[:1], **settings), reference.generate(prompt[:1], **settings))
    torch.testing.assert_close(model.generate(prompt, attention_mask=mask, **settings),
                               reference.generate(prompt, attention_mask=mask, **settings))


def assert_gradients_match(model, reference, inputs: dict):
    """One training step (both in train mode, without dropout): the loss and every parameter's gradient."""
    ours, theirs = model(**inputs).loss, reference(**inputs).loss
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    grads = {n: p.grad for n, p in reference.named_parameters()}
    for parameter_name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[parameter_name], atol=1e-5, rtol=1e-4, msg=parameter_name)


def assert_records_close(got, expected):
    if isinstance(expected, (list, dict)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for key in range(len(expected)) if isinstance(expected, list) else expected:
            assert_records_close(got[key], expected[key])
    elif isinstance(expected, float) or type(expected).__module__ == "numpy":
        assert float(got) == pytest.approx(float(expected), abs=1e-5)
    else:
        assert got == expected


def assert_pipeline_matches(task: str, folder, inputs):
    """The records of openformers' pipeline on the model and tokenizer in `folder` are the reference's."""
    import transformers

    import openformers

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.pipeline(task, model=str(folder))(inputs)
    assert_records_close(openformers.pipeline(task, model=folder)(inputs), expected)


def assert_corpus_parity(ours, reference, every: int = 1):
    """Ids on every `every`-th document of the corpus, with and without special tokens; offsets and decode (special
    tokens kept and skipped) on a quarter of those. Token strings are not compared: for an unknown piece the
    reference's Unigram gives the text it covers, ours the unknown token."""
    from test_tokenizers_corpus import CORPUS, _assert_rows_equal

    documents = CORPUS[::every]
    backend = tokenizers.Tokenizer.from_str(reference.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    expected = [encoding.ids for encoding in backend.encode_batch(documents, add_special_tokens=True)]
    _assert_rows_equal(ours(documents)["input_ids"], expected, "ids")
    plain = [encoding.ids for encoding in backend.encode_batch(documents, add_special_tokens=False)]
    _assert_rows_equal(ours(documents, add_special_tokens=False)["input_ids"], plain, "ids without specials")
    sample, sample_ids = documents[::4], expected[::4]
    offsets = [encoding.offsets for encoding in backend.encode_batch(sample, add_special_tokens=True)]
    _assert_rows_equal(ours(sample, return_offsets_mapping=True)["offset_mapping"], offsets, "offsets")
    for skip in (False, True):
        _assert_rows_equal(ours.batch_decode(sample_ids, skip_special_tokens=skip),
                           reference.batch_decode(sample_ids, skip_special_tokens=skip), "decode")


def assert_saved_both_ways(ours, reference, documents: list[str], folder, class_name: str):
    """`ours` encodes `documents` as `reference`; each library reads what the other saves (in `folder`) with the
    same ids."""
    import transformers

    import openformers
    from test_tokenizers_corpus import _assert_rows_equal

    expected = reference(documents)["input_ids"]
    _assert_rows_equal(ours(documents)["input_ids"], expected, "ids")
    ours.save_pretrained(folder / "ours")
    reference.save_pretrained(folder / "theirs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_rows_equal(transformers.AutoTokenizer.from_pretrained(folder / "ours")(documents)["input_ids"],
                           expected, "ids of the reference reading ours")
    for saved in ("ours", "theirs"):
        again = openformers.AutoTokenizer.from_pretrained(folder / saved)
        assert type(again).__name__ == class_name
        _assert_rows_equal(again(documents)["input_ids"], expected, f"ids of {saved} read back")

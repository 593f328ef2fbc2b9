"""pipeline("text-generation"): chats, output forms and prompt options against the reference's pipeline.

The folder holds a tiny random Llama with SmolLM2's vocabulary and tokenizer (with its chat template), so
both libraries load the same files quickly; one test runs the real SmolLM2 GGUF through our pipeline alone.
"""

import warnings

import pytest
import torch

from openformers.pipelines import TextGenerationPipeline, pipeline

transformers = pytest.importorskip("transformers")

GREEDY = dict(do_sample=False, max_new_tokens=6)
CHAT = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}]
OTHER_CHAT = [{"role": "user", "content": "Count to three."}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, smollm2_gguf, reference_from_gguf):
    folder = tmp_path_factory.mktemp("tiny-llama-chat")
    tokenizer = reference_from_gguf("AutoTokenizer", smollm2_gguf)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipelines(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-generation", model=str(folder))
    return pipeline("text-generation", model=folder), theirs


def _both(pipelines, inputs, **options):
    """(ours, the reference's) results; `inputs` may be a function that makes a fresh generator for each."""
    ours, theirs = pipelines
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(inputs() if callable(inputs) else inputs, **options)
        got = ours(inputs() if callable(inputs) else inputs, **options)
    if callable(inputs):  # a generator's results come lazily
        assert not isinstance(got, list)
        got, expected = list(got), list(expected)
    return got, expected


@pytest.mark.parametrize(
    "inputs, options",
    [
        (CHAT, dict(num_beams=2, num_return_sequences=2)),
        ([CHAT, OTHER_CHAT], dict(return_full_text=False)),
        ([CHAT, OTHER_CHAT], dict(return_tensors=True)),
        (CHAT + [{"role": "assistant", "content": "Blue, or"}], dict(continue_final_message=False)),
        (CHAT + [{"role": "assistant", "content": "Blue, or"}], dict(return_full_text=False)),
        ("Hello there", dict(prefix="Once upon a time. ")),
        ("Hello there", dict(prefix="Once upon a time. ", max_length=14, max_new_tokens=None)),
        ("Hello there", dict(return_tensors=False)),  # the reference gives tensors for any return_tensors
        ("Hello there", dict(return_text=True)),
        ("Hello there", dict(max_length=12, max_new_tokens=None)),
        (["Hello there", "The sky is"], dict(add_special_tokens=True, skip_special_tokens=False)),
        ("Hello there", dict(tokenizer_encode_kwargs={"add_special_tokens": False})),
        ("", {}),
        ("", dict(return_tensors=True)),
        ("", dict(skip_special_tokens=False)),
    ],
    ids=["chat-beams", "chats-new-text", "chats-tensors", "assistant-not-continued", "continued-new-text",
         "prefix", "prefix-max-length", "return-tensors-false", "return-text", "max-length", "special-tokens",
         "encode-kwargs", "empty", "empty-tensors", "empty-special-tokens"],
)
def test_outputs_match_reference(pipelines, inputs, options):
    got, expected = _both(pipelines, inputs, **{**GREEDY, **options})
    assert got == expected


def test_chats_from_a_generator(pipelines):
    got, expected = _both(pipelines, lambda: (chat for chat in [CHAT, OTHER_CHAT]), **GREEDY)
    assert got == expected and got[0][0]["generated_text"][-1]["role"] == "assistant"


def test_stop_sequence(pipelines):
    _, theirs = pipelines
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new_text = theirs("Hello there", **GREEDY, return_full_text=False)[0]["generated_text"]
    stop = new_text[len(new_text) // 2 :][:3]  # a piece of what greedy decoding writes, so that it stops there
    assert stop.strip()
    got, expected = _both(pipelines, "Hello there", **GREEDY, stop_sequence=stop)
    assert got == expected and len(got[0]["generated_text"]) < len("Hello there" + new_text)


def test_a_long_prompt_with_a_hole(folder):
    """handle_long_generation="hole" drops the prompt's first tokens so that the new ones fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-generation", model=str(folder))
    ours = pipeline("text-generation", model=folder)
    ours.tokenizer.model_max_length = theirs.tokenizer.model_max_length = 12
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(prompt, **GREEDY, handle_long_generation="hole", return_tensors=True)
    got = ours(prompt, **GREEDY, handle_long_generation="hole", return_tensors=True)
    assert got == expected and len(got[0]["generated_token_ids"]) == 12
    with pytest.raises(ValueError, match="must be None or 'hole'"):
        ours(prompt, handle_long_generation="middle")


def test_generation_options_given_when_building(folder, pipelines):
    _, theirs = pipelines
    ours = pipeline("text-generation", model=folder, max_new_tokens=4, do_sample=False, return_full_text=False)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(CHAT, max_new_tokens=4, do_sample=False, return_full_text=False)
    assert ours(CHAT) == expected
    assert len(ours("Hi", max_new_tokens=2, return_tensors=True)[0]["generated_token_ids"]) == len(
        ours.tokenizer("Hi")["input_ids"]) + 2  # a call's option wins over the pipeline's


def test_loading_options_are_used_at_load(folder):
    """dtype/torch_dtype/device_map/model_kwargs load the model; before, some of them reached generate() and failed."""
    for options in (dict(torch_dtype=torch.bfloat16), dict(dtype="bfloat16", device_map="cpu"),
                    dict(model_kwargs={"dtype": torch.bfloat16}, device="cpu")):
        ours = pipeline("text-generation", model=folder, **options)
        assert ours.model.dtype == torch.bfloat16 and isinstance(ours, TextGenerationPipeline)
        record = ours(CHAT, **GREEDY)[0]["generated_text"]
        assert record[:2] == CHAT and record[2]["role"] == "assistant"


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize(
    "inputs, options",
    [(["Hello there", "The sky is very", "Once"], {}), ([CHAT, OTHER_CHAT, CHAT[1:]], {}),
     (["Hello there", "The sky is very"], dict(num_beams=2, num_return_sequences=2, return_full_text=False))],
    ids=["strings", "chats", "beams"],
)
def test_batches_match_the_references(pipelines, inputs, options, padding_side):
    """batch_size pads the prompts into one generate() call, on the tokenizer's side, as the reference does."""
    ours, theirs = pipelines
    sides = ours.tokenizer.padding_side, theirs.tokenizer.padding_side
    ours.tokenizer.padding_side = theirs.tokenizer.padding_side = padding_side
    try:
        got, expected = _both(pipelines, inputs, batch_size=2, **GREEDY, **options)
    finally:
        ours.tokenizer.padding_side, theirs.tokenizer.padding_side = sides
    assert got == expected
    if padding_side == "left":  # left padding leaves each prompt's continuation as it is alone
        assert got == ours(inputs, **GREEDY, **options)


def test_a_batch_needs_a_pad_token(folder):
    ours = pipeline("text-generation", model=folder, batch_size=2)
    ours.tokenizer.pad_token = None
    with pytest.raises(ValueError, match="has no pad token"):
        ours(["Hello", "there"], **GREEDY)
    assert ours("Hello", **GREEDY)  # one prompt needs no padding


def test_smollm2_gguf_answers_a_chat(smollm2_gguf):
    """The real SmolLM2 GGUF through model_kwargs={"gguf_file": ...}; the tokenizer comes from the same file.

    transformers 5.25's pipeline on the same file (model_kwargs and tokenizer with gguf_file=) writes the same
    reply; loading it there takes about 40 s, so the reply is written here instead of recomputed.
    """
    ours = pipeline("text-generation", model=smollm2_gguf.parent, model_kwargs={"gguf_file": smollm2_gguf.name})
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    reply = ours(chat, max_new_tokens=12, do_sample=False)
    assert reply == [{"generated_text": chat + [{"role": "assistant", "content": "The capital of France is Paris."}]}]


class _BanToken:
    """A logits processor of one's own: the token it bans is never generated."""

    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        scores[:, self.token_id] = -float("inf")
        return scores


def test_generate_arguments_pass_through(pipelines):
    import openformers

    ours, theirs = pipelines
    first = ours("Hello there", **GREEDY, return_tensors=True)[0]["generated_token_ids"][
        len(ours.tokenizer("Hello there")["input_ids"])]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        banned = transformers.LogitsProcessorList([_BanToken(first)])
        expected = theirs("Hello there", **GREEDY, logits_processor=banned)
    got = ours("Hello there", **GREEDY, logits_processor=openformers.LogitsProcessorList([_BanToken(first)]))
    assert got == expected
    assert got != ours("Hello there", **GREEDY)  # the processor changed the first token
    assert ours("Hello there", **GREEDY, stop_strings=["zzz"], tokenizer=ours.tokenizer)


def test_an_assistant_model_by_name(folder, tmp_path, pipelines):
    """assistant_model= (a name, loaded like the model) drafts tokens; greedy output stays the model's own."""
    import shutil

    for file in folder.iterdir():
        if file.name.startswith("tokenizer") or file.name == "special_tokens_map.json" or file.suffix == ".jinja":
            shutil.copy(file, tmp_path / file.name)
    torch.manual_seed(1)
    config = transformers.LlamaConfig.from_pretrained(folder)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    ours = pipeline("text-generation", model=folder, assistant_model=str(tmp_path))
    assert ours.assistant_model is not None and ours.assistant_tokenizer is None  # same vocabulary: none needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-generation", model=str(folder), assistant_model=str(tmp_path))
    for inputs in ([CHAT, OTHER_CHAT], "Hello there"):
        got, expected = _both((ours, theirs), inputs, **GREEDY)
        assert got == expected == _both(pipelines, inputs, **GREEDY)[0]


def test_a_subclass_with_its_own_postprocess(folder):
    """A subclass written for the reference's steps (here postprocess) runs the same way on ours."""

    def shouting(base):
        class Shouting(base):
            def postprocess(self, model_outputs, **params):
                return [{"shout": record["generated_text"].upper()} for record in super().postprocess(model_outputs,
                                                                                                     **params)]

        return Shouting

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.pipeline("text-generation", model=str(folder),
                                       pipeline_class=shouting(transformers.TextGenerationPipeline))
    ours = pipeline("text-generation", model=folder, pipeline_class=shouting(TextGenerationPipeline),
                    return_full_text=False)
    for inputs in ("Hello there", ["Hello there", "The sky is"], CHAT):
        got, expected = _both((ours, theirs), inputs, **GREEDY, return_full_text=False)
        assert got == expected and "shout" in str(got)
    assert ours("Hello there", **GREEDY) == theirs("Hello there", **GREEDY, return_full_text=False)

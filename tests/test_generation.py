"""End-to-end generation on the real SmolLM2 GGUF, with HF transformers as the oracle."""

import threading

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer, TextStreamer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.long  # the reference's SmolLM2 generating 64 tokens per prompt: minutes in all

PROMPTS = [
    "Hello, I am a language model,",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "用中文介绍一下你自己。",
]
CHATS = [
    [{"role": "user", "content": "What is the tallest mountain on Earth?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
]


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    return tokenizer, model


@pytest.fixture(scope="module")
def reference(smollm2_gguf, reference_from_gguf):
    tokenizer = reference_from_gguf("AutoTokenizer", smollm2_gguf)
    model = reference_from_gguf("AutoModelForCausalLM", smollm2_gguf)
    return tokenizer, model.eval()


def _reference_greedy(model, input_ids, max_new_tokens):
    with torch.inference_mode():
        return model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=2,
        )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_reference(ours, reference, prompt):
    tokenizer, model = ours
    input_ids = tokenizer.encode(prompt, return_tensors="pt")
    assert input_ids.tolist() == reference[0].encode(prompt, return_tensors="pt").tolist()
    output = model.generate(input_ids, max_new_tokens=64)
    assert output.tolist() == _reference_greedy(reference[1], input_ids, 64).tolist()


@pytest.mark.parametrize("messages", CHATS)
def test_chat_greedy_matches_reference(ours, reference, messages):
    tokenizer, model = ours
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    expected = reference[0].apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    assert inputs["input_ids"].tolist() == expected["input_ids"].tolist()
    input_ids = inputs["input_ids"]
    output = model.generate(**inputs, max_new_tokens=64)
    # The reference stops at EOS (<|im_end|>) too; compare up to where both stopped.
    assert output.tolist() == _reference_greedy(reference[1], input_ids, 64).tolist()


def test_max_length_counts_the_prompt(ours):
    tokenizer, model = ours
    input_ids = tokenizer.encode(PROMPTS[0], return_tensors="pt")
    output = model.generate(input_ids, max_length=input_ids.shape[1] + 5)
    assert output.shape[1] == input_ids.shape[1] + 5
    with pytest.raises(ValueError, match="max_length"):
        model.generate(input_ids, max_length=input_ids.shape[1])


def test_the_standard_flow_decodes_text(ours):
    tokenizer, model = ours
    output = model.generate(tokenizer.encode("Hello, I am a language model,", return_tensors="pt"), max_length=20)
    text = tokenizer.decode(output[0], skip_special_tokens=True)
    assert text.startswith("Hello, I am a language model,") and len(text) > len("Hello, I am a language model,")


def test_stops_at_eos_and_pads_finished_rows(ours):
    tokenizer, model = ours
    input_ids = tokenizer.apply_chat_template(CHATS[1], add_generation_prompt=True, return_tensors="pt", return_dict=False)
    output = model.generate(input_ids, max_new_tokens=200)
    assert output[0, -1].item() == tokenizer.eos_token_id
    assert output.shape[1] < input_ids.shape[1] + 200


def test_left_padded_batch_equals_single_rows(ours):
    tokenizer, model = ours
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS[:3], padding=True, return_tensors="pt")
    output = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=12)
    width = batch["input_ids"].shape[1]
    for row, prompt in enumerate(PROMPTS[:3]):
        alone = model.generate(tokenizer.encode(prompt, return_tensors="pt"), max_new_tokens=12)
        assert output[row, width:].tolist() == alone[0, -12:].tolist()


def test_bad_generate_input_is_explained(ours):
    _, model = ours
    with pytest.raises(ValueError, match="empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=4)
    with pytest.raises(TypeError, match="input_ids"):
        model.generate([[1, 2, 3]], max_new_tokens=4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokenz=4)


def test_text_streamer_prints_the_decoded_text(ours, capsys):
    tokenizer, model = ours
    input_ids = tokenizer.encode("Emoji: 🎉🎉 and 你好", return_tensors="pt")
    output = model.generate(input_ids, max_new_tokens=24, streamer=TextStreamer(tokenizer, skip_prompt=True))
    printed = capsys.readouterr().out
    assert printed == tokenizer.decode(output[0, input_ids.shape[1] :]) + "\n"  # special tokens too, as the reference


def test_iterator_streamer_from_a_thread(ours):
    tokenizer, model = ours
    input_ids = tokenizer.encode(PROMPTS[0], return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("ids", model.generate(input_ids, max_new_tokens=20, streamer=streamer))
    )
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == tokenizer.decode(result["ids"][0, input_ids.shape[1] :])


def _reference_generate(model, input_ids, **options):
    with torch.inference_mode():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), pad_token_id=2, **options)


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_beam_search_matches_reference(ours, reference, prompt):
    tokenizer, model = ours
    input_ids = tokenizer.encode(prompt, return_tensors="pt")
    options = dict(num_beams=3, num_return_sequences=3, max_new_tokens=24)
    expected = _reference_generate(reference[1], input_ids, **options)
    assert model.generate(input_ids, **options).tolist() == expected.tolist()


def test_beam_search_on_a_padded_chat_batch_matches_reference(ours, reference):
    tokenizer, model = ours
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in CHATS]
    batch = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    options = dict(num_beams=3, num_return_sequences=2, max_new_tokens=24, length_penalty=0.8, early_stopping=True)
    with torch.inference_mode():
        expected = reference[1].generate(**batch, pad_token_id=2, **options)
    assert model.generate(**batch, **options).tolist() == expected.tolist()


@pytest.mark.parametrize("stop", ["Paris", [" is", "\n"], "sky blue"])
def test_stop_strings_match_reference(ours, reference, stop):
    tokenizer, model = ours
    prompts = [PROMPTS[1], "Why is the sky blue? Because"]
    for prompt in prompts:
        input_ids = tokenizer.encode(prompt, return_tensors="pt")
        options = dict(stop_strings=stop, max_new_tokens=20)
        expected = _reference_generate(reference[1], input_ids, tokenizer=reference[0], **options)
        assert model.generate(input_ids, tokenizer=tokenizer, **options).tolist() == expected.tolist()

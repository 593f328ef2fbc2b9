"""`openformers serve`: the OpenAI-compatible server, driven by the official `openai` client over loopback.

Two servers: SmolLM2 (real weights, where the text must be the model's own greedy answer) and a tiny Llama with
random weights behind an API key (fast, for concurrency, disconnects and errors).
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.configs import LlamaConfig
from openformers.serving import BatchScheduler

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from openformers.serving.app import BackgroundServer, create_app  # noqa: E402
from openformers.serving.protocol import Limits  # noqa: E402
from openformers.serving.tokenizing import can_fork  # noqa: E402

TINY_KEY = "test-key"
QUESTIONS = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea."]


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    scheduler = BatchScheduler(model, tokenizer, max_batch=8)
    with BackgroundServer(create_app(scheduler, "smollm2")) as url:
        yield model, scheduler, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    scheduler.close()


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tiny(tiny_model, tokenizer):
    scheduler = BatchScheduler(tiny_model, tokenizer, max_batch=32)
    limits = Limits(max_tokens=4000, max_body_bytes=200_000)
    with BackgroundServer(create_app(scheduler, "tiny", api_key=TINY_KEY, limits=limits)) as url:
        yield scheduler, url
    scheduler.close()


def greedy_alone(model, tokenizer, input_ids: list[int], max_tokens: int, **options) -> str:
    """What `generate` answers for these ids alone, ended at EOS, as text; greedy unless `options` say otherwise."""
    ids = torch.tensor([input_ids])
    new = model.generate(ids, max_new_tokens=max_tokens, **options)[0, ids.shape[1] :].tolist()
    eos = set(model.generation_config.eos_token_ids) | {tokenizer.eos_token_id}
    ends = [i for i, token in enumerate(new) if token in eos]
    return tokenizer.decode(new[: ends[0]] if ends else new, skip_special_tokens=True)


def chat_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))


# -- the real model, through the openai client -------------------------------------------------------------------


def test_chat_completion_is_the_models_greedy_answer(smollm2, tokenizer):
    model, _, client = smollm2
    response = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=0, max_tokens=24
    )
    ids = chat_ids(tokenizer, QUESTIONS[0])
    assert response.choices[0].message.content == greedy_alone(model, tokenizer, ids, 24)
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.object == "chat.completion" and response.model == "smollm2"
    assert response.usage.prompt_tokens == len(ids)
    assert response.usage.total_tokens == len(ids) + response.usage.completion_tokens


def test_streamed_chat_chunks_add_up_to_the_answer(smollm2):
    _, _, client = smollm2
    messages = [{"role": "user", "content": QUESTIONS[1]}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=32)
    stream = client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=32, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # it really streamed
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_continues_the_prompt_greedily(smollm2, tokenizer):
    model, _, client = smollm2
    prompt = "The three primary colors are"
    response = client.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=20)
    assert response.choices[0].text == greedy_alone(model, tokenizer, tokenizer.encode(prompt), 20)
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 20


def test_a_seeded_completion_and_a_stopped_one_are_the_text_generate_gives(smollm2, tokenizer):
    model, _, client = smollm2
    prompt = "The three primary colors are"
    ids = tokenizer.encode(prompt)
    sampling = dict(temperature=0.8, top_p=0.9)
    sampled = client.completions.create(model="smollm2", prompt=prompt, seed=7, max_tokens=16, **sampling)
    # The server's request options as generate's: top_k=0, as the OpenAI API has no top-k.
    assert sampled.choices[0].text == greedy_alone(model, tokenizer, ids, 16, do_sample=True, top_k=0,
                                                   generator=torch.Generator().manual_seed(7), **sampling)
    free = greedy_alone(model, tokenizer, ids, 20)
    stop = free.split()[2]
    stopped = client.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=20, stop=[stop])
    new = model.generate(torch.tensor([ids]), max_new_tokens=20, stop_strings=[stop], tokenizer=tokenizer)[0, len(ids):]
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert stopped.choices[0].text == text[: text.index(stop)] == free[: free.index(stop)]
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == len(new)


def test_models_lists_the_served_model(smollm2):
    _, _, client = smollm2
    assert [m.id for m in client.models.list()] == ["smollm2"]
    assert client.models.retrieve("smollm2").id == "smollm2"


# -- concurrency and disconnects (tiny model) ----------------------------------------------------------------------


def test_32_concurrent_streams_are_decoded_together_with_the_right_text(tiny, tiny_model, tokenizer):
    scheduler, url = tiny
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=TINY_KEY, max_retries=0)
    questions = [f"Question number {i}: {QUESTIONS[i % 3]}" + " Think." * (i % 5) for i in range(32)]
    max_tokens = [12 + i % 9 for i in range(32)]

    async def ask(question, limit):
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=limit,
            stream=True, stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[-1].usage.completion_tokens

    async def ask_all():
        async with client:
            return await asyncio.gather(*(ask(q, n) for q, n in zip(questions, max_tokens)))

    steps_before = scheduler.decode_steps
    answers = asyncio.run(ask_all())
    steps = scheduler.decode_steps - steps_before
    tokens = sum(n for _, n in answers)
    expected = [greedy_alone(tiny_model, tokenizer, chat_ids(tokenizer, q), n) for q, n in zip(questions, max_tokens)]
    assert [text for text, _ in answers] == expected
    # Together: the longest answer bounds the steps when all run at once; far fewer than one step per token.
    assert steps < tokens / 4, (steps, tokens)



@pytest.mark.parametrize("family", ["MambaConfig", "Lfm2Config"])
def test_concurrent_streamed_chats_of_a_model_whose_layers_keep_a_state_are_generates_answers(family, tokenizer,
                                                                                              tmp_path):
    """A Mamba (its cache all states) and an LFM2 (states and an attention layer's keys and values), made by the
    reference: two chats streamed at once, decoded in one batch, each the text generate gives it alone."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=2, initializer_range=0.2)
    if family == "Lfm2Config":
        sizes.update(intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                     layer_types=["conv", "full_attention"])
    config = getattr(transformers, family)(vocab_size=len(tokenizer), **sizes)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    scheduler = BatchScheduler(model, tokenizer, max_batch=4)

    async def ask(client, question):
        stream = await client.chat.completions.create(
            model="state", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=20,
            stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

    async def ask_both(url):
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
            return await asyncio.gather(ask(client, QUESTIONS[0]), ask(client, QUESTIONS[2]))

    try:
        with BackgroundServer(create_app(scheduler, "state")) as url:
            answers = asyncio.run(ask_both(url))
    finally:
        scheduler.close()
    assert answers == [greedy_alone(model, tokenizer, chat_ids(tokenizer, q), 20) for q in QUESTIONS[::2]]
    assert scheduler.decode_steps < 2 * 20  # the two answers shared steps

def wait_until_idle(scheduler, seconds=30.0):
    deadline = time.monotonic() + seconds
    while scheduler.active or scheduler.waiting:
        assert time.monotonic() < deadline, "the server kept decoding for a client that left"
        time.sleep(0.01)


def test_a_client_that_disconnects_mid_stream_is_cancelled(tiny):
    scheduler, url = tiny
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 3900, "temperature": 0, "stream": True}
    steps_before = scheduler.decode_steps
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TINY_KEY}"}) as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            events = response.iter_lines()
            received = [line for line, _ in zip(events, range(6)) if line.startswith("data: ")]
            assert received  # it was streaming
    wait_until_idle(scheduler)
    assert scheduler.decode_steps - steps_before < 3000
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["active"] == 0


def test_a_client_that_gives_up_on_a_whole_answer_is_cancelled(tiny):
    scheduler, url = tiny
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 3900, "temperature": 0}
    steps_before = scheduler.decode_steps
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {TINY_KEY}"}, timeout=0.3)
    wait_until_idle(scheduler)
    assert scheduler.decode_steps - steps_before < 3000


def test_a_client_that_stops_reading_does_not_hold_up_the_others(tiny):
    scheduler, url = tiny
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 3900, "temperature": 0, "stream": True}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TINY_KEY}"}) as client:
        with client.stream("POST", "/v1/completions", json=body) as stalled:
            assert stalled.status_code == 200  # its answer streams, and nobody reads it
            other = post(url, "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 8, "temperature": 0})
            assert other.status_code == 200 and other.json()["usage"]["completion_tokens"] == 8
    wait_until_idle(scheduler)


def test_n_choices_with_a_seed_are_reproducible(tiny):
    _, url = tiny
    client = openai.OpenAI(base_url=url + "/v1", api_key=TINY_KEY, max_retries=0)
    ask = dict(model="tiny", prompt=["Hello", "Goodbye"], max_tokens=8, n=2, seed=7, temperature=1.0)
    first, second = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert first.choices[0].text != first.choices[1].text  # each choice draws with its own seed


def test_a_streamed_chat_with_n_choices_streams_each_to_its_end(tiny):
    _, url = tiny
    client = openai.OpenAI(base_url=url + "/v1", api_key=TINY_KEY, max_retries=0)
    ask = dict(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, n=2, seed=3)
    whole = client.chat.completions.create(**ask)
    texts, reasons = ["", ""], [None, None]
    for chunk in client.chat.completions.create(**ask, stream=True):
        choice = chunk.choices[0]
        texts[choice.index] += choice.delta.content or ""
        reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert texts == [c.message.content for c in whole.choices]
    assert reasons == ["length", "length"]


def test_stop_ends_the_text_before_the_stop_string(tiny):
    _, url = tiny
    client = openai.OpenAI(base_url=url + "/v1", api_key=TINY_KEY, max_retries=0)
    ask = dict(model="tiny", prompt="Hello", max_tokens=16, temperature=0)
    full = client.completions.create(**ask).choices[0].text
    stop = full[8:11]
    stopped = client.completions.create(**ask, stop=[stop]).choices[0]
    assert stopped.text == full[: full.index(stop)] and stopped.finish_reason == "stop"
    streamed = client.completions.create(**ask, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == stopped.text


# -- errors --------------------------------------------------------------------------------------------------------


def post(url, path, body, key=TINY_KEY, headers=None, **kwargs):
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return httpx.post(url + path, content=body, headers={**headers, "Content-Type": "application/json"}, **kwargs)


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


@pytest.mark.parametrize(
    "body, status, param, message",
    [
        ("{not json", 400, None, "not valid JSON"),
        ("[1, 2]", 400, None, "JSON object"),
        ({**CHAT, "model": "gpt-4"}, 400, "model", "does not exist"),
        ({"messages": CHAT["messages"]}, 400, "model", "Missing required parameter: model"),
        ({**CHAT, "messages": "Hi"}, 400, "messages", "must be an array"),
        ({**CHAT, "messages": []}, 400, "messages", "empty"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "Hi"}]}, 400, "messages.[0].role", "must be one of"),
        ({**CHAT, "messages": [{"role": "user", "content": 3}]}, 400, "messages.[0].content", "must be a string"),
        ({**CHAT, "temperature": "hot"}, 400, "temperature", "must be a number"),
        ({**CHAT, "temperature": 3}, 400, "temperature", "between 0 and 2"),
        ({**CHAT, "max_tokens": 4.5}, 400, "max_tokens", "must be an integer"),
        ({**CHAT, "max_tokens": 100_000}, 400, "max_tokens", "between 1 and 4000"),
        ({**CHAT, "n": 99}, 400, "n", "between 1 and 8"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
        ({**CHAT, "stop": "x" * 1000}, 400, "stop", "at most 256 characters"),
        ({**CHAT, "seed": 2**64}, 400, "seed", "a 64-bit integer"),
        ({**CHAT, "seed": 2**64 - 1, "n": 2}, 400, "seed", "choice j uses seed + j"),
        ({**CHAT, "seed": -(2**63) - 1}, 400, "seed", "a 64-bit integer"),
        ({**CHAT, "temperature": 1e-300}, 400, "temperature", "0 (greedy) or at least 0.0001"),
        ("[" * 100_000 + "]" * 100_000, 400, None, "nests JSON"),
        ({**CHAT, "stream": "yes"}, 400, "stream", "must be a boolean"),
        ({**CHAT, "tools": [{"type": "function"}]}, 400, "tools", "not supported"),
        ({**CHAT, "frequency_penalty": 0.5}, 400, "frequency_penalty", "not supported"),
        ({**CHAT, "colour": "blue"}, 400, "colour", "Unrecognized request argument"),
        ({**CHAT, "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "messages", "context of 4096"),
        ({**CHAT, "max_tokens": 3990, "messages": [{"role": "user", "content": "word " * 200}]}, 400, "max_tokens",
         "lower max_tokens"),
    ],
)
def test_bad_chat_requests_get_openai_errors(tiny, body, status, param, message):
    _, url = tiny
    response = post(url, "/v1/chat/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_error_codes_name_the_problem(tiny):
    _, url = tiny
    assert post(url, "/v1/chat/completions", {**CHAT, "model": "x"}).json()["error"]["code"] == "model_not_found"
    too_long = {**CHAT, "messages": [{"role": "user", "content": "word " * 5000}]}
    assert post(url, "/v1/chat/completions", too_long).json()["error"]["code"] == "context_length_exceeded"
    response = post(url, "/v1/completions", {"model": "tiny", "prompt": "x" * 300_000})
    assert response.status_code == 413 and "at most 200000" in response.json()["error"]["message"]
    assert post(url, "/v1/completions", {"model": "tiny", "prompt": [10**9]}).status_code == 400
    assert post(url, "/v1/completions", {"model": "tiny", "prompt": ""}).status_code == 400


def test_a_request_beyond_the_servers_queue_is_answered_429(tiny_model, tokenizer):
    scheduler = BatchScheduler(tiny_model, tokenizer, max_batch=2)
    with BackgroundServer(create_app(scheduler, "tiny", limits=Limits(max_requests=3))) as url:
        response = post(url, "/v1/chat/completions", {**CHAT, "n": 4}, key=None)
        assert response.status_code == 429 and response.json()["error"]["code"] == "server_busy"
        assert post(url, "/v1/chat/completions", {**CHAT, "n": 3}, key=None).status_code == 200
    scheduler.close()


def test_a_prompt_too_long_for_the_context_whatever_its_tokens_is_refused_before_tokenizing(tokenizer, monkeypatch):
    short_context = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    scheduler = BatchScheduler(AutoModelForCausalLM.from_config(short_context).eval(), tokenizer)
    longest = max(map(len, tokenizer.get_vocab()))
    with BackgroundServer(create_app(scheduler, "tiny")) as url:
        monkeypatch.setattr(type(tokenizer), "encode", lambda *args, **kwargs: pytest.fail("tokenized"))
        for path, body in (("/v1/completions", {"model": "tiny", "prompt": "ab" * (32 * longest + 1)}),
                           ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a" * 10**5}]})):
            response = post(url, path, body, key=None)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "context_length_exceeded"
            assert "characters, more than the model's context of 64 tokens" in response.json()["error"]["message"]
    scheduler.close()


needs_fork = pytest.mark.skipif(not can_fork(), reason="long prompts are tokenized in forked processes on Linux only")


def held_encode(encode, folder):
    """`encode` that notes each text's start in folder/seen and, for a long text, lasts until folder/release
    exists: files, since a long text is tokenized in a forked process."""

    def encode_when_released(self, text, *args, **kwargs):
        with open(folder / "seen", "a") as seen:
            seen.write(text[:5] + "\n")
        if len(text) > 1000:
            # Written whole, then renamed: a test that sees "started" exist reads the pid, never an empty file that
            # a kill between the file's creation and its write would leave.
            (folder / "started.partial").write_text(str(os.getpid()))
            os.replace(folder / "started.partial", folder / "started")
            deadline = time.monotonic() + 60
            while not (folder / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return encode(self, text, *args, **kwargs)

    return encode_when_released


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def send_and_leave(url: str, body: dict, leave_when=None) -> None:
    """Send a request whose body is over uvicorn's 64 KB read buffer (after which it reads the connection again only
    when the app asks, so the app sees the close only by listening for it), then close the connection: once
    `leave_when()` holds if given (asserted within wait_for's time), else half a second after the whole request."""
    from urllib.parse import urlsplit

    payload = json.dumps(body).encode()
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as leaving:
        leaving.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload[:1000])
        time.sleep(0.3)
        leaving.sendall(payload[1000:])
        if leave_when is None:
            time.sleep(0.5)  # the whole request is in
        else:
            assert wait_for(leave_when)


@needs_fork
def test_long_prompts_are_tokenized_one_at_a_time_and_not_once_their_client_has_gone(tiny_model, tokenizer,
                                                                                    monkeypatch, tmp_path):
    import threading

    scheduler = BatchScheduler(tiny_model, tokenizer)
    statuses = []
    with BackgroundServer(create_app(scheduler, "tiny")) as url:
        monkeypatch.setattr(type(tokenizer), "encode", held_encode(type(tokenizer).encode, tmp_path))
        long_prompt = "first" + " " * 40_000  # over LONG_PROMPT_CHARACTERS in a few hundred tokens
        first = threading.Thread(target=lambda: statuses.append(post(
            url, "/v1/completions", {"model": "tiny", "prompt": long_prompt, "max_tokens": 2}, key=None, timeout=30,
        ).status_code))
        first.start()
        assert wait_for((tmp_path / "started").exists)
        child = int((tmp_path / "started").read_text())
        assert child != os.getpid()  # tokenized in another process
        short = post(url, "/v1/completions", {"model": "tiny", "prompt": "short", "max_tokens": 2}, key=None,
                     timeout=5)  # a short prompt goes at once, whatever long one is being tokenized
        assert short.status_code == 200
        send_and_leave(url, {"model": "tiny", "prompt": "gone " * 20_000, "max_tokens": 2})
        time.sleep(0.5)  # the server sees the connection close
        (tmp_path / "release").touch()
        first.join(30)
        assert wait_for(lambda: not _alive(child))
    scheduler.close()
    assert statuses == [200]
    assert (tmp_path / "seen").read_text().split() == ["first", "short"]


@needs_fork
def test_a_long_prompt_whose_client_leaves_has_its_tokenizing_process_killed(tiny_model, tokenizer, monkeypatch,
                                                                            tmp_path):
    scheduler = BatchScheduler(tiny_model, tokenizer)
    with BackgroundServer(create_app(scheduler, "tiny")) as url:
        monkeypatch.setattr(type(tokenizer), "encode", held_encode(type(tokenizer).encode, tmp_path))
        # Leaving once the child tokenizes, not after a fixed wait: a loaded host may take longer to start the fork
        # server and its child, and a client gone before then is (rightly) never tokenized for.
        send_and_leave(url, {"model": "tiny", "prompt": "gone " * 20_000, "max_tokens": 2},
                       leave_when=(tmp_path / "started").exists)
        child = int((tmp_path / "started").read_text())
        assert child != os.getpid()
        # Never released: only the kill ends it.
        assert wait_for(lambda: not _alive(child))
        assert post(url, "/v1/completions", {"model": "tiny", "prompt": "after", "max_tokens": 2},
                    key=None).status_code == 200
    scheduler.close()


@needs_fork
def test_a_server_stopped_while_tokenizing_leaves_no_process_behind(tiny_model, tokenizer, monkeypatch, tmp_path):
    import multiprocessing
    import threading

    scheduler = BatchScheduler(tiny_model, tokenizer)
    server = BackgroundServer(create_app(scheduler, "tiny"))
    with server as url:
        monkeypatch.setattr(type(tokenizer), "encode", held_encode(type(tokenizer).encode, tmp_path))
        waiting = threading.Thread(target=lambda: _post_quietly(url, {"model": "tiny", "prompt": "held " * 20_000}))
        waiting.start()
        assert wait_for((tmp_path / "started").exists)
        child = int((tmp_path / "started").read_text())
    scheduler.close()
    waiting.join(30)
    assert not _alive(child) and not multiprocessing.active_children()


def _post_quietly(url: str, body: dict) -> None:
    try:
        post(url, "/v1/completions", body, key=None, timeout=30)
    except httpx.HTTPError:  # the server stopped under the request
        pass


def _alive(pid: int) -> bool:
    """Whether the child `pid` is running (not yet reaped, and not a zombie waiting to be)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def in_a_process(processes, kind: str, prompts: list, gone_after: float | None = None) -> list[list[int]]:
    """`processes.tokenize` run to its end, with the client leaving after `gone_after` seconds if given."""

    async def tokenize():
        gone = asyncio.get_running_loop().create_future()
        if gone_after is not None:
            asyncio.get_running_loop().call_later(gone_after, gone.set_result, None)
        return await processes.tokenize(kind, prompts, gone)

    return asyncio.run(tokenize())


@needs_fork
def test_a_long_prompt_tokenized_in_a_process_has_the_ids_of_inline_tokenizing(tiny, tokenizer):
    from openformers.serving.tokenizing import TokenizingProcesses

    texts = ["The quick brown fox jumps over the lazy dog. " * 800,
             "漢字とemoji 🙂🙃 " * 3000 + "\n\n  tabs\t" * 500]
    processes = TokenizingProcesses(tokenizer)
    try:
        assert in_a_process(processes, "completion", texts + [[5, 6, 7]]) == \
            [tokenizer.encode(text) for text in texts] + [[5, 6, 7]]
        messages = [{"role": "user", "content": texts[1]}]
        assert in_a_process(processes, "chat", [messages]) == [chat_ids(tokenizer, texts[1])]
    finally:
        processes.close()
    scheduler, url = tiny
    spaces = "Hello" + " " * 40_000 + "there"  # over LONG_PROMPT_CHARACTERS in a few hundred tokens
    # The child tokenizes at nice 19: on a machine whose cores are busy (the test suite's other workers) it runs
    # only in their gaps, so this answer may take longer than httpx's default five seconds.
    response = post(url, "/v1/completions", {"model": "tiny", "prompt": spaces, "max_tokens": 1}, timeout=120)
    assert response.json()["usage"]["prompt_tokens"] == len(tokenizer.encode(spaces))


@needs_fork
def test_an_error_in_the_tokenizing_process_is_the_requests_error(tokenizer):
    from openformers.serving.protocol import APIError
    from openformers.serving.tokenizing import TokenizingProcesses

    processes = TokenizingProcesses(tokenizer)
    try:
        with pytest.raises(APIError, match="The prompt is empty") as error:
            in_a_process(processes, "completion", ["a text", ""])
        assert (error.value.status, error.value.param) == (400, "prompt")
        with pytest.raises(APIError, match="outside the vocabulary"):
            in_a_process(processes, "completion", [[1, len(tokenizer)]])
        with pytest.raises(RuntimeError, match="TypeError"):
            in_a_process(processes, "completion", [None])
    finally:
        processes.close()


@needs_fork
def test_a_tokenizing_child_is_killed_when_its_client_leaves_and_the_processes_end_with_close(tokenizer, monkeypatch,
                                                                                              tmp_path):
    from openformers.serving.protocol import APIError
    from openformers.serving.tokenizing import TokenizingProcesses

    monkeypatch.setattr(type(tokenizer), "encode", held_encode(type(tokenizer).encode, tmp_path))
    processes = TokenizingProcesses(tokenizer)
    fork_server = processes.pid
    started = time.monotonic()
    with pytest.raises(APIError, match="closed the connection") as error:
        in_a_process(processes, "completion", ["held " * 1000], gone_after=0.5)  # never released
    assert error.value.status == 499
    child = int((tmp_path / "started").read_text())
    assert child not in (os.getpid(), fork_server)
    assert wait_for(lambda: not _alive(child), 5)
    assert time.monotonic() - started < 10  # the kill, not the 60 s the held encode would last
    assert in_a_process(processes, "completion", ["short"]) == [tokenizer.encode("short")]  # the next one is served
    (tmp_path / "started").unlink()

    async def closed_during_a_job():
        job = asyncio.ensure_future(processes.tokenize("completion", ["held " * 1000],
                                                       asyncio.get_running_loop().create_future()))
        while not (tmp_path / "started").exists():
            await asyncio.sleep(0.01)
        processes.close()
        return await asyncio.wait_for(job, 10)

    with pytest.raises(RuntimeError, match="ended before sending its result"):
        asyncio.run(closed_during_a_job())
    assert not _alive(fork_server) and wait_for(lambda: not _alive(int((tmp_path / "started").read_text())), 5)


@needs_fork
def test_a_dead_fork_server_fails_its_jobs_clearly_and_is_replaced_for_the_next(tokenizer, monkeypatch, tmp_path):
    import signal

    from openformers.serving.tokenizing import TokenizingProcesses

    processes = TokenizingProcesses(tokenizer)
    try:
        first = processes.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: not _alive(first), 5)
        text = "Hello there, " * 3000
        assert in_a_process(processes, "completion", [text]) == [tokenizer.encode(text)]  # on a new fork server
        second = processes.pid
        assert second != first
        monkeypatch.setattr(type(tokenizer), "encode", held_encode(type(tokenizer).encode, tmp_path))
        processes.close()
        processes = TokenizingProcesses(tokenizer)  # holding the held encode

        async def fork_server_dies_during_the_job():
            job = asyncio.ensure_future(processes.tokenize("completion", ["held " * 1000],
                                                           asyncio.get_running_loop().create_future()))
            while not (tmp_path / "started").exists():
                await asyncio.sleep(0.01)
            os.kill(processes.pid, signal.SIGKILL)
            return await asyncio.wait_for(job, 10)  # not the 60 s of the held encode: the child dies with it

        with pytest.raises(RuntimeError, match="ended before sending its result"):
            asyncio.run(fork_server_dies_during_the_job())
        assert wait_for(lambda: not _alive(int((tmp_path / "started").read_text())), 5)
    finally:
        processes.close()


def test_a_request_needing_more_cache_than_the_server_keeps_is_refused(tiny_model, tokenizer):
    scheduler = BatchScheduler(tiny_model, tokenizer, max_cache_bytes=100 * 2 * 2 * 2 * 16 * 4)  # 100 positions
    with BackgroundServer(create_app(scheduler, "tiny")) as url:
        response = post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 200}, key=None)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
        assert "keeps at most 100 tokens of cache for a request" in error["message"]
        assert post(url, "/v1/chat/completions", CHAT, key=None).status_code == 200
    scheduler.close()


def test_hosts_and_origins_other_than_the_allowed_ones_are_refused(tiny_model, tokenizer):
    from openformers.serving.app import LOOPBACK_HOSTS

    scheduler = BatchScheduler(tiny_model, tokenizer)
    with BackgroundServer(create_app(scheduler, "tiny", allowed_hosts=LOOPBACK_HOSTS)) as url:
        port = url.rsplit(":", 1)[1]
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/health", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert httpx.get(url + "/health", headers={"Origin": f"http://[::1]:{port}"}).status_code == 200
        rebound = httpx.get(url + "/health", headers={"Host": f"attacker.example:{port}"})
        assert rebound.status_code == 403 and "attacker.example" in rebound.json()["error"]["message"]
        cross_site = post(url, "/v1/chat/completions", CHAT, key=None, headers={"Origin": "https://attacker.example"})
        assert cross_site.status_code == 403 and "Origin" in cross_site.json()["error"]["message"]
        assert post(url, "/v1/chat/completions", CHAT, key=None, headers={"Origin": "null"}).status_code == 403
    scheduler.close()


def test_connections_too_slow_to_send_their_headers_or_body_are_closed(tiny_model, tokenizer):
    import socket
    from urllib.parse import urlsplit

    scheduler = BatchScheduler(tiny_model, tokenizer)
    app = create_app(scheduler, "tiny", limits=Limits(body_timeout=1.0))
    with BackgroundServer(app, header_timeout=1.0) as url:
        address = (urlsplit(url).hostname, urlsplit(url).port)
        idle, trickling, slow_body = (socket.create_connection(address, timeout=5) for _ in range(3))
        start = time.monotonic()
        slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{")
        closed_by_server = False
        for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100:
            try:
                trickling.sendall(bytes([byte]))
            except OSError:  # the server closed the connection
                closed_by_server = True
                break
            time.sleep(0.05)
            if time.monotonic() - start > 4:
                break
        assert closed_by_server or trickling.recv(100) == b""
        assert time.monotonic() - start < 4
        assert idle.recv(100) == b""  # closed without a byte sent
        assert slow_body.recv(1000).split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
        assert httpx.get(url + "/health").status_code == 200
        for connection in (idle, trickling, slow_body):
            connection.close()
    scheduler.close()


def test_the_api_key_is_required_when_set(tiny):
    _, url = tiny
    missing = post(url, "/v1/chat/completions", CHAT, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert post(url, "/v1/chat/completions", CHAT, key="wrong").status_code == 401
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.get(url + "/health").status_code == 200  # health checks need no key
    client = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)


def test_the_openai_client_raises_bad_request_errors(tiny):
    _, url = tiny
    client = openai.OpenAI(base_url=url + "/v1", api_key=TINY_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client.chat.completions.create(**{**CHAT, "model": "gpt-4"})


def test_unknown_routes_and_methods_get_json_errors(tiny):
    _, url = tiny
    missing = httpx.get(url + "/v2/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = httpx.get(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {TINY_KEY}"})
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_the_chat_page_is_served(tiny):
    _, url = tiny
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text


# -- the command ---------------------------------------------------------------------------------------------------


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    from openformers import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli.main(["serve"]) == 1
    assert 'pip install "openformers[serve]"' in capsys.readouterr().err


def test_openformers_serve_answers_on_the_port_it_was_given(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "openformers.cli", "serve", "--model", str(tmp_path), "--port", str(port),
               "--max-new-tokens", "5"]
    env = {**os.environ, "OPENFORMERS_API_KEY": "from-env"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="from-env", max_retries=0)
        response = client.completions.create(model=str(tmp_path), prompt="Hello", temperature=0)
        assert response.usage.completion_tokens == 5  # --max-new-tokens is the default max_tokens
        if can_fork():  # a long prompt goes to the fork server started before the model loaded
            spaces = "Hello" + " " * 40_000 + "there"
            response = client.with_options(timeout=120).completions.create(model=str(tmp_path), prompt=spaces,
                                                                            max_tokens=1)
            assert response.usage.prompt_tokens == len(tokenizer.encode(spaces))
            with open(f"/proc/{server.pid}/task/{server.pid}/children") as children:
                fork_servers = [int(pid) for pid in children.read().split()]
            assert len(fork_servers) == 1
            with open(f"/proc/{fork_servers[0]}/maps") as maps:  # started before torch loaded: small, cheap to fork
                assert "libtorch" not in maps.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
    if can_fork():
        assert wait_for(lambda: not _alive(fork_servers[0]), 10)  # stopped with the server

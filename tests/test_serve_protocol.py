"""The server's request parsing: the generation options a request sets come from the options table."""

import pytest

from openformers.generation.options import server_options
from openformers.serving.protocol import APIError, Limits, parse_chat_request, parse_completion_request

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}


def test_a_request_sets_the_options_of_the_table_by_their_option_names():
    parsed = parse_chat_request({**CHAT, "temperature": 0, "top_p": 0.5}, Limits())
    assert parsed.options == {"temperature": 0, "top_p": 0.5}
    assert parse_completion_request({"model": "tiny", "prompt": "Hi"}, Limits()).options == {}
    assert {option.server for option in server_options()} >= {"temperature", "top_p"}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", "hot", "temperature must be a number >= 0"),
        ("temperature", -1, "temperature must be a number >= 0"),
        ("temperature", 3, "temperature must be between 0 and 2, got int 3"),  # OpenAI's range, narrower
        ("top_p", 0, "top_p must be a number in (0, 1]"),
        ("top_p", 1.5, "top_p must be a number in (0, 1]"),
    ],
)
def test_an_impossible_option_is_refused_naming_its_field(field, value, message):
    with pytest.raises(APIError) as error:
        parse_chat_request({**CHAT, field: value}, Limits())
    assert error.value.status == 400 and error.value.param == field
    assert message in error.value.message


def _random_json(chooser, depth=0):
    """A random JSON value: the odd values a client can send (huge and negative numbers, NaN, nesting, unicode)."""
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = chooser.choice(kinds)
    if kind == "int":
        return chooser.choice([0, 1, -1, 2**63, -(2**63) - 1, 2**64, 10**30, chooser.randrange(-100, 100)])
    if kind == "float":
        return chooser.choice([0.0, 1e-300, -0.0, 1e308, float("nan"), float("inf"), chooser.uniform(-3, 3)])
    if kind == "str":
        return "".join(chr(chooser.randrange(0x110000)) for _ in range(chooser.randrange(6))).replace("\ud800", "")
    if kind == "bool":
        return chooser.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_json(chooser, depth + 1) for _ in range(chooser.randrange(4))]
    return {chooser.choice(["role", "content", "type", "text", "x"]): _random_json(chooser, depth + 1)
            for _ in range(chooser.randrange(4))}


FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
          "n", "stream", "stream_options", "echo", "logprobs", "tools", "presence_penalty", "user", "suffix"]


def test_random_request_bodies_are_parsed_or_refused_with_an_api_error_naming_the_field():
    import random

    chooser = random.Random(0)
    for _ in range(3000):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi"}
        for name in chooser.sample(FIELDS, chooser.randrange(1, 4)):
            body[name] = _random_json(chooser)
        parse = chooser.choice([parse_chat_request, parse_completion_request])
        try:
            parse({k: v for k, v in body.items() if k != ("prompt" if parse is parse_chat_request else "messages")},
                  Limits())
        except APIError as error:
            assert error.status == 400 and error.message
            assert error.param is None or error.param.split(".")[0] in FIELDS + ["messages"]

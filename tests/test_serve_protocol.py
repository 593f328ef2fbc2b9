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

"""The OpenAI wire format: checking request bodies and shaping responses, chunks and errors.

Kept apart from the HTTP code (app.py) so that the rules are plain functions over dicts. A body is checked
field by field; the first problem raises an `APIError` that names the field, what was found and what is
expected, which app.py turns into OpenAI's error JSON. Unknown fields are refused, as OpenAI refuses them;
options we do not implement are accepted only at their neutral value (e.g. `presence_penalty: 0`). The
generation options a request may set are the rows of the options table with a `server` field
(generation/options.py), each checked as GenerationConfig checks it.
"""

import math
import time
import uuid
from dataclasses import dataclass, field

from ..generation.options import is_int, server_options


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    """What one request may ask for."""

    max_tokens: int = 4096  # the largest max_tokens accepted
    default_max_tokens: int = 512  # used when a request gives none (less if the context is shorter)
    max_n: int = 8  # choices per prompt
    max_prompts: int = 32  # prompts in one /v1/completions request
    max_body_bytes: int = 1 << 20
    max_requests: int = 256  # requests decoded or waiting at once; more are answered 429 until some finish
    body_timeout: float = 30.0  # seconds for a request's whole body to arrive
    max_stop_chars: int = 256  # the length of one stop string (matching it costs time per token and memory per vocabulary entry)


@dataclass
class ParsedRequest:
    """A checked request body. `prompts` holds chat conversations (lists of messages) or completion prompts
    (a string or a list of token ids)."""

    model: str
    prompts: list
    max_tokens: int | None
    stop: list[str]
    seed: int | None
    n: int
    stream: bool
    include_usage: bool
    echo: bool = False
    options: dict = field(default_factory=dict)  # the generation options the request sets, by option name


# The request fields that set a generation option, and OpenAI's range for those it documents narrower.
_OPTION_FIELDS = {option.server: option for option in server_options()}
_OPENAI_RANGES = {"temperature": (0, 2)}
# Below this a temperature overflows the scaled logits to inf (nan after softmax); it samples the argmax anyway.
SMALLEST_TEMPERATURE = 1e-4
# torch.Generator.manual_seed takes a 64-bit seed, signed or not; choice j of a request uses seed + j.
_SEEDS = (-(2**63), 2**64 - 1)
_COMMON_FIELDS = {"model", "max_tokens", "stop", "seed", "n", "stream", "stream_options", "user", "presence_penalty",
                  "frequency_penalty", "logprobs", "logit_bias"} | set(_OPTION_FIELDS)
_CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
                                 "tool_choice", "parallel_tool_calls", "metadata", "store"}
_COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "best_of", "suffix"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def parse_chat_request(body: dict, limits: Limits) -> ParsedRequest:
    _refuse_unknown(body, _CHAT_FIELDS)
    _require_neutral(body, {"top_logprobs": (None,), "tools": (None, []), "tool_choice": (None, "none"),
                            "parallel_tool_calls": (None, True, False), "response_format": (None, {"type": "text"})})
    messages = _field(body, "messages", list, required=True)
    if not messages:
        raise APIError(400, "messages is empty: give at least one message.", param="messages")
    max_tokens = _field(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _field(body, "max_tokens", int)
        param = "max_tokens"
    else:
        param = "max_completion_tokens"
    return _common(body, limits, [[_message(m, i) for i, m in enumerate(messages)]], max_tokens, param)


def parse_completion_request(body: dict, limits: Limits) -> ParsedRequest:
    _refuse_unknown(body, _COMPLETION_FIELDS)
    _require_neutral(body, {"best_of": (None, 1), "suffix": (None, "")})
    prompt = body.get("prompt")
    if isinstance(prompt, str) or _is_token_list(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or _is_token_list(p) for p in prompt):
        prompts = prompt
    else:
        raise APIError(400, f"prompt must be a string, a list of strings, a list of token ids or a list of such "
                            f"lists, got {_describe(prompt)}.", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise APIError(400, f"prompt holds {len(prompts)} prompts; at most {limits.max_prompts} are accepted.",
                       param="prompt")
    parsed = _common(body, limits, prompts, _field(body, "max_tokens", int), "max_tokens")
    parsed.echo = bool(_field(body, "echo", bool))
    return parsed


def _common(body: dict, limits: Limits, prompts: list, max_tokens: int | None, max_tokens_param: str) -> ParsedRequest:
    _require_neutral(body, {"presence_penalty": (None, 0), "frequency_penalty": (None, 0),
                            "logprobs": (None, False), "logit_bias": (None, {})})
    model = _field(body, "model", str, required=True)
    if max_tokens is not None and not 1 <= max_tokens <= limits.max_tokens:
        raise APIError(400, f"{max_tokens_param} must be between 1 and {limits.max_tokens}, got {max_tokens}.",
                       param=max_tokens_param)
    n = _field(body, "n", int)
    n = 1 if n is None else n
    if not 1 <= n <= limits.max_n:
        raise APIError(400, f"n must be between 1 and {limits.max_n}, got {n}.", param="n")
    stream_options = _field(body, "stream_options", dict) or {}
    include_usage = stream_options.get("include_usage", False)
    if set(stream_options) - {"include_usage"} or not isinstance(include_usage, bool):
        raise APIError(400, f"stream_options accepts only include_usage (true or false), got {stream_options!r}.",
                       param="stream_options")
    seed = _field(body, "seed", int)
    if seed is not None and not _SEEDS[0] <= seed <= _SEEDS[1] - (n - 1):
        raise APIError(400, f"seed must be between {_SEEDS[0]} and {_SEEDS[1] - (n - 1)} (a 64-bit integer; choice j "
                            f"uses seed + j), got {seed}.", param="seed")
    return ParsedRequest(
        model=model, prompts=prompts, max_tokens=max_tokens, stop=_stop(body, limits), seed=seed, n=n,
        stream=bool(_field(body, "stream", bool)), include_usage=include_usage, options=_generation_options(body),
    )


def _generation_options(body: dict) -> dict:
    """{option name: value} for the option fields the request sets, each checked as its option is."""
    options = {}
    for name, option in _OPTION_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if not option.is_possible(value):
            raise APIError(400, f"{name} must be {option.expected}, got {_describe(value)}.", param=name)
        low, high = _OPENAI_RANGES.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            raise APIError(400, f"{name} must be between {low:g} and {high:g}, got {_describe(value)}.", param=name)
        if name == "temperature" and 0 < value < SMALLEST_TEMPERATURE:
            raise APIError(400, f"temperature must be 0 (greedy) or at least {SMALLEST_TEMPERATURE:g}, got "
                                f"{_describe(value)}.", param=name)
        options[option.name] = value
    return options


def _refuse_unknown(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}.", param=unknown[0])


def _require_neutral(body: dict, neutral: dict[str, tuple]) -> None:
    for name, allowed in neutral.items():
        value = body.get(name)
        if value not in allowed:
            raise APIError(400, f"{name}={value!r} is not supported by this server; leave it out "
                                f"(supported: {', '.join(repr(a) for a in allowed if a is not None)}).", param=name)


def _field(body: dict, name: str, kind: type, required: bool = False):
    """body[name], checked to be of `kind` (JSON null counts as absent)."""
    value = body.get(name)
    if value is None:
        if required:
            raise APIError(400, f"Missing required parameter: {name}.", param=name)
        return None
    ok = is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        names = {int: "an integer", str: "a string", bool: "a boolean", list: "an array", dict: "an object"}
        raise APIError(400, f"{name} must be {names[kind]}, got {_describe(value)}.", param=name)
    return value


def _stop(body: dict, limits: Limits) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, f"stop must be a non-empty string or a list of at most 4 of them, got {_describe(stop)}.",
                       param="stop")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise APIError(400, f"stop strings may be at most {limits.max_stop_chars} characters long, got one of "
                            f"{max(map(len, stops))}.", param="stop")
    return stops


def _message(message, index: int) -> dict:
    param = f"messages.[{index}]"
    if not isinstance(message, dict):
        raise APIError(400, f"{param} must be an object with role and content, got {_describe(message)}.", param=param)
    role, content = message.get("role"), message.get("content")
    if role not in _ROLES:
        raise APIError(400, f"{param}.role must be one of {sorted(_ROLES)}, got {_describe(role)}.",
                       param=f"{param}.role")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise APIError(400, f"{param}.content must be a string or a list of text parts, got {_describe(content)}.",
                       param=f"{param}.content")
    return {"role": _ROLES[role], "content": content}


def _is_token_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(is_int(v) for v in value)


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


# -- responses --------------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(response_id: str, model: str, choices: list[tuple[str, str]], usage_counts: dict) -> dict:
    return {
        "id": response_id, "object": "chat.completion", "created": now(), "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": usage_counts,
    }


def chat_chunk(response_id: str, model: str, index: int, delta: dict, finish_reason: str | None = None) -> dict:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {"id": response_id, "object": "chat.completion.chunk", "created": now(), "model": model,
            "choices": [choice]}


def completion_response(response_id: str, model: str, choices: list[tuple[str, str]], usage_counts: dict) -> dict:
    return {
        "id": response_id, "object": "text_completion", "created": now(), "model": model,
        "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                    for i, (text, reason) in enumerate(choices)],
        "usage": usage_counts,
    }


def completion_chunk(response_id: str, model: str, index: int, text: str, finish_reason: str | None = None) -> dict:
    choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {"id": response_id, "object": "text_completion", "created": now(), "model": model, "choices": [choice]}


def usage_chunk(response_id: str, model: str, kind: str, usage_counts: dict) -> dict:
    return {"id": response_id, "object": kind, "created": now(), "model": model, "choices": [],
            "usage": usage_counts}

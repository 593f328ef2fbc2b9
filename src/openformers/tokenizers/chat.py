"""Chat templates: render a conversation into the prompt text a chat model was trained on.

A template is Jinja shipped with the model (tokenizer_config.json, chat_template.jinja, or a GGUF's
`tokenizer.chat_template`). It comes from an untrusted file, so it runs in Jinja's immutable sandbox.
The environment is the reference's: trim_blocks and lstrip_blocks, loop controls, a `tojson` filter
that keeps non-ASCII text, `raise_exception(message)`, `strftime_now(format)`, and the tokenizer's
special tokens (`bos_token`, `eos_token`, ...) as variables.
"""

import functools
import inspect
import json
import re
import warnings
from contextvars import ContextVar
from datetime import datetime

import jinja2
import jinja2.nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


# While a conversation is rendered for an assistant mask: the text given out so far, and the
# (start, end) characters of each `{% generation %}` block.
_TRACKING: ContextVar[tuple[list[str], list[tuple[int, int]]] | None] = ContextVar("generation_spans", default=None)


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` marks the assistant's text; with
    return_assistant_tokens_mask, where each block falls in the rendered text is recorded."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        text = caller()
        tracking = _TRACKING.get()
        if tracking is not None:
            pieces, spans = tracking
            start = sum(len(piece) for piece in pieces)
            spans.append((start, start + len(text)))
        return text


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"The chat template is not valid Jinja (line {error.lineno}: {error.message}).") from None


def select_template(tokenizer, chat_template: str | None, tools) -> str:
    """The template text: `chat_template` itself, or the tokenizer's (by name when it has several)."""
    templates = tokenizer.chat_template
    if isinstance(templates, dict):
        if chat_template in templates:
            return templates[chat_template]
        if chat_template is None:
            name = "tool_use" if tools is not None and "tool_use" in templates else "default"
            if name not in templates:
                raise ValueError(
                    f"This tokenizer has several chat templates ({sorted(templates)}) and none is 'default'; "
                    "choose one with chat_template=NAME."
                )
            return templates[name]
    if chat_template is not None:
        return chat_template
    if templates is None:
        raise ValueError(
            "This tokenizer has no chat template (none in tokenizer_config.json, chat_template.jinja or the GGUF "
            "metadata). Pass one with chat_template=..., or set tokenizer.chat_template."
        )
    return templates


def _checked_conversation(messages, where: str) -> list[dict]:
    """The messages as plain dicts, without keys whose value is None (as the reference passes them)."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"{where} must be a list of messages like [{{'role': 'user', 'content': 'Hi'}}], "
            f"got {type(messages).__name__}."
        )
    if not messages:
        raise ValueError(f"{where} is an empty conversation; give at least one message.")
    conversation = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(
                f"{where}[{index}] must be a dict like {{'role': 'user', 'content': 'Hi'}}, "
                f"got {type(message).__name__}: {message!r:.60}."
            )
        message = {key: value for key, value in message.items() if value is not None}
        if "role" not in message or ("content" not in message and "tool_calls" not in message):
            raise ValueError(
                f"{where}[{index}] needs 'role' and 'content' keys, found {sorted(message)}: {message!r:.80}."
            )
        conversation.append(message)
    return conversation


def render(template: str, messages: list[dict], variables: dict) -> str:
    return compile_template(template).render(messages=messages, **variables)


def render_with_spans(template: str, messages: list[dict], variables: dict) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its `{% generation %}` blocks. The text is
    taken piece by piece as Jinja gives it out, so that a block knows where it starts."""
    pieces, spans = [], []
    token = _TRACKING.set((pieces, spans))
    try:
        for piece in compile_template(template).generate(messages=messages, **variables):
            pieces.append(piece)
    finally:
        _TRACKING.reset(token)
    return "".join(pieces), spans


def _assistant_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap a generation span (so a span cut by truncation keeps
    the tokens left of it), 0 for the others; spans and offsets both run left to right."""
    mask, span = [0] * len(offsets), 0
    for index, (start, end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if end > spans[span][0]:
            mask[index] = 1
    return mask


# sanitize_control_tokens: control tokens found in the caller's strings are wrapped in these two
# private-use characters before rendering, so that they can be told from the ones the template writes.
_MARK_START, _MARK_END = "\U000f0000", "\U000f0001"


def _template_literals(template: str) -> str:
    """The template's literal text and string constants, joined so that no match spans two of them."""
    tree = compile_template(template).environment.parse(template)
    literals = {node.data for node in tree.find_all(jinja2.nodes.TemplateData)}
    literals |= {node.value for node in tree.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
    return "\0".join(literals)


def control_tokens(tokenizer, template: str) -> tuple[str, ...]:
    """The tokens a caller's text may not produce: the special tokens, and the added tokens named in
    `tokenizer.chat_control_tokens` or, without it, those the template's own text contains (as the reference)."""
    added = tokenizer.added_tokens_decoder.values()
    chosen = getattr(tokenizer, "chat_control_tokens", None)
    if chosen is not None:
        return tuple(token.content for token in added if token.special or token.content in set(chosen))
    literals = _template_literals(template)
    return tuple(
        token.content for token in added if token.special or (token.content in literals and not token.content.isspace())
    )


def _alternatives(tokens) -> str:
    return "|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)) or "(?!)"


def mark_control_tokens(value, pattern: re.Pattern):
    """`value` (a string, or lists and dicts of them) with each control token wrapped in the markers; markers
    already there are dropped first, so that they cannot be forged."""
    if isinstance(value, str):
        value = value.replace(_MARK_START, "").replace(_MARK_END, "")
        return pattern.sub(lambda match: _MARK_START + match.group(0) + _MARK_END, value)
    if isinstance(value, dict):
        return {key: mark_control_tokens(item, pattern) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mark_control_tokens(item, pattern) for item in value]
    return value


def encode_marked(tokenizer, text: str) -> list[int]:
    """The ids of a chat rendered from marked inputs: a marked control token is encoded as plain text, the
    rest (the template's own control tokens included) as usual. A marker left alone (a template that split
    the text) is dropped but still separates the text on its two sides."""
    tokens = _alternatives(tokenizer.added_tokens_encoder)
    markers = re.compile(f"{_MARK_START}({tokens}){_MARK_END}|[{_MARK_START}{_MARK_END}]")
    pieces = markers.split(text)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    ids = tokenizer.encode(pieces[0], add_special_tokens=False)
    for index, piece in enumerate(pieces[1:], start=1):
        if not piece:
            continue
        as_text = index % 2 == 1  # the captured pieces are the marked tokens
        piece_ids = _encode_piece(tokenizer, piece, as_text, newline)
        if as_text and tokenizer.convert_tokens_to_ids(piece) in piece_ids:
            raise ValueError(f"Cannot sanitize {piece!r}: this tokenizer makes that token from plain text too.")
        ids += piece_ids
    return ids


def _encode_piece(tokenizer, piece: str, as_text: bool, newline: list[int]) -> list[int]:
    """A piece from inside a chat; encoded after a newline, then taken off, so that a SentencePiece tokenizer
    does not put the space in front that it puts at the start of a text."""

    def encode(text: str) -> list[int]:
        pipeline = tokenizer._pipeline
        split, pipeline.split_special_tokens = pipeline.split_special_tokens, as_text or pipeline.split_special_tokens
        try:
            return pipeline.encode(text, None, False)
        finally:
            pipeline.split_special_tokens = split

    ids = encode("\n" + piece)
    return ids[len(newline) :] if ids[: len(newline)] == newline else encode(piece)


def _tool_schemas(tools) -> list[dict] | None:
    """Tools as the template sees them: JSON schemas as given, functions converted (see `tool_schema`)."""
    if tools is None:
        return None
    from .tool_schema import get_json_schema

    schemas = []
    for index, tool in enumerate(tools):
        if isinstance(tool, dict):
            schemas.append(tool)
        elif inspect.isfunction(tool) or inspect.ismethod(tool):
            schemas.append(get_json_schema(tool))
        else:
            raise TypeError(
                f"tools[{index}] must be a JSON schema (a dict) or a function with type hints and a Google-style "
                f"docstring, got {type(tool).__name__}."
            )
    return schemas


# Put after the final message's text to find where it ends once rendered.
_END_MARK = "CONTINUE_FINAL_MESSAGE_TAG "


def _render_open_ended(template: str, messages: list[dict], variables: dict, field: str) -> str:
    """The rendered conversation cut right after the final message's `field`, as the reference does:
    the text is marked at its end, rendered, and everything from the mark on is dropped."""
    if not messages:
        raise ValueError("continue_final_message is set but the conversation is empty.")
    final = dict(messages[-1])
    if final.get(field) is None:
        raise ValueError(f"continue_final_message is set but the final message has no {field!r} to continue.")
    if field not in template:
        raise ValueError(f"continue_final_message={field!r}, but the chat template never reads a {field!r} field.")
    if isinstance(final[field], (list, tuple)):  # content blocks: continue the last one with text
        blocks = [dict(block) for block in final[field]]
        texts = [block for block in blocks if isinstance(block, dict) and "text" in block]
        if not texts:
            raise ValueError("continue_final_message is set but the final message has no text block to continue.")
        texts[-1]["text"] += _END_MARK
        final[field] = blocks
    else:
        final[field] = final[field] + _END_MARK
    rendered = render(template, [*messages[:-1], final], variables)
    mark = rendered.rfind(_END_MARK.strip())
    if mark < 0:
        raise ValueError(
            "continue_final_message is set but the final message does not appear in the rendered chat: the "
            f"template leaves it out or changes it. Rendered chat:\n{rendered}"
        )
    if rendered[mark : mark + len(_END_MARK)] == _END_MARK:  # the template kept the text as it was
        return rendered[:mark]
    return rendered[:mark].rstrip()  # it trimmed the text's end, and the mark's space with it


def apply_chat_template(
    tokenizer,
    messages,
    *,
    tokenize: bool = True,
    add_generation_prompt: bool = False,
    return_tensors: str | None = None,
    return_dict: bool = True,
    padding: bool | str = False,
    truncation: bool | str | None = None,
    max_length: int | None = None,
    chat_template: str | None = None,
    tools: list | None = None,
    documents: list[dict] | None = None,
    continue_final_message: bool | str = False,
    return_assistant_tokens_mask: bool = False,
    tokenizer_kwargs: dict | None = None,
    sanitize_control_tokens: bool = False,
    **template_kwargs,
):
    """Render `messages` (or a list of conversations) with the chat template.

    Returns the text with tokenize=False. Otherwise the ids of the text, encoded without adding
    special tokens (the template writes them): as in the reference, a BatchEncoding (input_ids and
    attention_mask) by default, or with return_dict=False the ids alone (a list, or a tensor with
    return_tensors). Extra keyword arguments become template variables (e.g. `enable_thinking=False`).

    `continue_final_message` leaves the last message open (no end-of-turn after it), so that the model
    goes on with it, e.g. from a prefilled assistant answer; a string names the field to continue
    instead of "content". `tools` are JSON schemas or Python functions (converted as the reference's
    `get_json_schema` does); `documents` are dicts for retrieval templates. With
    `return_assistant_tokens_mask`, `assistant_masks` marks the tokens the template wrote inside
    `{% generation %}` blocks (1) and the others (0), for training on the assistant's turns only.
    With `sanitize_control_tokens`, control tokens (special tokens, and the added tokens the template
    writes) found in the messages, tools, documents or variables are encoded as plain text, so that only
    the template's own become tokens.
    """
    if return_assistant_tokens_mask and not (return_dict and tokenize):
        raise ValueError("return_assistant_tokens_mask=True needs return_dict=True and tokenize=True.")
    batched = isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))
    conversations = (
        [_checked_conversation(chat, f"messages[{index}]") for index, chat in enumerate(messages)]
        if batched
        else [_checked_conversation(messages, "messages")]
    )
    template = select_template(tokenizer, chat_template, tools)
    if documents is not None and not all(isinstance(document, dict) for document in documents):
        raise TypeError("documents must be a list of dicts, such as {'title': ..., 'text': ...}.")
    variables = {
        **tokenizer.special_tokens_map,
        "tools": _tool_schemas(tools),
        "documents": documents,
        "add_generation_prompt": add_generation_prompt,
        **template_kwargs,
    }
    if continue_final_message and add_generation_prompt:
        raise ValueError(
            "continue_final_message and add_generation_prompt cannot be used together: the first continues the "
            "last message, the second starts a new assistant message after it. Pass one of them."
        )
    if continue_final_message and return_assistant_tokens_mask:
        raise ValueError("continue_final_message cannot be used with return_assistant_tokens_mask.")
    if sanitize_control_tokens:
        if not tokenize or return_assistant_tokens_mask:
            raise ValueError(
                "sanitize_control_tokens=True needs tokenize=True and cannot be used with return_assistant_tokens_mask."
            )
        pattern = re.compile(_alternatives(control_tokens(tokenizer, template)))
        conversations = [mark_control_tokens(conversation, pattern) for conversation in conversations]
        variables = {**variables, **mark_control_tokens(
            {key: variables[key] for key in ("tools", "documents", *template_kwargs)}, pattern
        )}  # fmt: skip
    spans = None
    if continue_final_message:
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        texts = [_render_open_ended(template, conversation, variables, field) for conversation in conversations]
    elif return_assistant_tokens_mask:
        if not re.search(r"\{%-?\s*generation\s*-?%\}", template):
            warnings.warn(
                "return_assistant_tokens_mask=True, but the chat template has no {% generation %} block: the "
                "mask will be all zeros.",
                stacklevel=3,
            )
        rendered = [render_with_spans(template, conversation, variables) for conversation in conversations]
        texts, spans = [text for text, _ in rendered], [found for _, found in rendered]
    else:
        texts = [render(template, conversation, variables) for conversation in conversations]
    if not tokenize:
        return texts if batched else texts[0]
    if sanitize_control_tokens:
        encoding = _encode_sanitized(tokenizer, texts, batched, padding, truncation, max_length, return_tensors)
        return encoding if return_dict else encoding["input_ids"]
    encoding = tokenizer(
        texts if batched else texts[0], add_special_tokens=False, padding=padding, truncation=truncation,
        max_length=max_length, return_tensors=return_tensors, **(tokenizer_kwargs or {}),
    )  # fmt: skip
    if not return_dict:
        return encoding["input_ids"]
    if spans is not None:
        masks = [_assistant_mask(row.offsets, found) for row, found in zip(encoding.encodings, spans)]
        encoding["assistant_masks"] = masks if batched or return_tensors else masks[0]
        if return_tensors:
            encoding.convert_to_tensors(return_tensors)
    return encoding


def _encode_sanitized(tokenizer, texts, batched, padding, truncation, max_length, return_tensors):
    """Encode marked chats (see `encode_marked`), truncated and padded as the reference does."""
    rows = [encode_marked(tokenizer, text) for text in texts]
    if truncation not in (None, False, "do_not_truncate") and max_length is not None:
        rows = [row[:max_length] if tokenizer.truncation_side == "right" else row[-max_length:] for row in rows]
    return tokenizer.pad(
        {"input_ids": rows if batched or return_tensors else rows[0]},
        padding=padding, max_length=max_length, return_tensors=return_tensors,
    )  # fmt: skip

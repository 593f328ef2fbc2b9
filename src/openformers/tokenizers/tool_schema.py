"""Python functions as the JSON schemas that chat templates show a model as tools, as the reference's
`get_json_schema` makes them: the name, the description and argument descriptions from a Google-style
docstring (`Args:`, `Returns:`), and the argument types from the type hints.

    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> float:
        '''The temperature in a city.

        Args:
            city: The city's name.
            unit: The unit of the answer.
        '''
"""

import inspect
import json
import re
import types
import typing
from enum import Enum

_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}
_PLAIN = {**{kind: {"type": name} for kind, name in _SCALARS.items()},
          list: {"type": "array"}, tuple: {"type": "array"}, dict: {"type": "object"}, typing.Any: {}}  # fmt: skip

_DESCRIPTION = re.compile(r"^(.*?)[\n\s]*(Args:|Returns:|Raises:|\Z)", re.DOTALL)
_ARGS = re.compile(r"\n\s*Args:\n(.*?)[\n\s]*(Returns:|Raises:|\Z)", re.DOTALL)
_RETURNS = re.compile(r"\n\s*Returns:\n\s*(.*?)[\n\s]*(Raises:|\Z)", re.DOTALL)
# One "name: text" or "name (type): text" entry of the Args block; it runs on over lines indented deeper.
_ARG = re.compile(
    r"(?:^|\n)([ \t]*)(\w+)(?:[ \t]*\([^()\n]*\))?:\s*(.*?)\s*(?=\n(?!\1[ \t])[ \t]*\w+(?:[ \t]*\([^()\n]*\))?:|\Z)",
    re.DOTALL,
)
_CHOICES = re.compile(r"\(choices:\s*(.*?)\)\s*$", re.IGNORECASE)


def _enum(values: list) -> dict:
    kinds = list(dict.fromkeys(_SCALARS[type(value)] for value in values))
    return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": values}


def type_schema(hint) -> dict:
    """The JSON schema of one type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is None and isinstance(hint, type) and issubclass(hint, Enum):
        values = [member.value for member in hint]
        if not values or any(type(value) not in _SCALARS for value in values):
            raise TypeError(f"The Enum {hint.__name__} needs members whose values are int, float, str, bool or None.")
        return _enum(values)
    if origin is None:
        if hint not in _PLAIN:
            raise TypeError(
                f"The type hint {hint!r} has no JSON schema: use int, float, str, bool, Enum, Literal, or list, tuple, "
                "dict and unions of those; or write the tool's JSON schema by hand and pass the dict."
            )
        return dict(_PLAIN[hint])
    if origin is typing.Union or origin is types.UnionType:
        parts = [type_schema(arg) for arg in args if arg is not type(None)]
        if len(parts) == 1:
            schema = parts[0]
        elif all(part.keys() == {"type"} and isinstance(part["type"], str) for part in parts):
            names = sorted({part["type"] for part in parts})
            schema = {"type": names[0] if len(names) == 1 else names}
        else:
            schema = {"anyOf": parts}
        if type(None) in args:
            schema["nullable"] = True
        return schema
    if origin is typing.Literal and args:
        if any(type(arg) not in _SCALARS for arg in args):
            raise TypeError(f"Literal values must be int, float, str, bool or None, got {args}.")
        return _enum(list(args))
    if origin is list:
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if not args:
            return {"type": "array"}
        if len(args) == 1 or ... in args:
            raise TypeError(f"The type hint {hint} is not converted: use list[...] for inputs of any length.")
        return {"type": "array", "prefixItems": [type_schema(arg) for arg in args]}
    if origin is dict:
        if len(args) == 2:  # JSON keys are strings; the values' type is what can be said
            return {"type": "object", "additionalProperties": type_schema(args[1])}
        return {"type": "object"}
    raise TypeError(f"The type hint {hint!r} has no JSON schema; pass the tool's JSON schema as a dict instead.")


def _parse_docstring(doc: str) -> tuple[str | None, dict[str, str], str | None]:
    description, args, returns = _DESCRIPTION.search(doc), _ARGS.search(doc), _RETURNS.search(doc)
    arguments = {}
    if args:
        block = "\n".join(line for line in args.group(1).split("\n") if line.strip())
        arguments = {name: re.sub(r"\s*\n+\s*", " ", text.strip()) for _, name, text in _ARG.findall(block)}
    return (
        description.group(1).strip() if description else None,
        arguments,
        returns.group(1).strip() if returns else None,
    )


def get_json_schema(function) -> dict:
    """`{"type": "function", "function": {"name", "description", "parameters", ["return"]}}` for `function`."""
    name = getattr(function, "__name__", "operation")
    doc = inspect.getdoc(function)
    if not doc:
        raise ValueError(f"Cannot make a JSON schema for {name}: it has no docstring to describe it and its arguments.")
    description, argument_docs, return_doc = _parse_docstring(doc.strip())
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)
    names = list(signature.parameters)
    receiver = names[0] if names and names[0] in ("self", "cls") and names[0] not in hints else None
    properties, required = {}, []
    for parameter in signature.parameters.values():
        if parameter.name == receiver:
            continue
        if parameter.name not in hints:
            raise TypeError(f"Cannot make a JSON schema for {name}: argument {parameter.name!r} has no type hint.")
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
        properties[parameter.name] = type_schema(hints[parameter.name])
    for argument, schema in properties.items():
        if argument not in argument_docs:
            raise ValueError(
                f"Cannot make a JSON schema for {name}: its docstring's Args: section does not describe {argument!r}."
            )
        text = argument_docs[argument]
        choices = _CHOICES.search(text)
        if choices:
            values = json.loads(choices.group(1))
            schema["enum"] = [value.strip() if isinstance(value, str) else value for value in values]
            text = text[: choices.start()].strip()
        schema["description"] = text
    parameters = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    output = {"name": name, "description": description, "parameters": parameters}
    if "return" in hints:
        try:  # the model never writes the return value, so a hint without a schema is left out
            output["return"] = type_schema(hints["return"])
        except TypeError:
            pass
        else:
            if return_doc is not None:
                output["return"]["description"] = return_doc
    return {"type": "function", "function": output}

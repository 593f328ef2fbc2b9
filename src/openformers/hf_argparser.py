"""HfArgumentParser: command-line options from dataclasses, as the reference's example scripts parse them.

`HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))` adds one option per init field of each
dataclass, typed from its annotation, and `parse_args_into_dataclasses()` returns one instance of each (plus a
namespace for options added by hand). The rules follow the reference's parser, so the same argv gives the same values:
- `X | None` parses as X; a union with `str` parses as its enum (choices) if it has one, else as a flag if it has
  `bool`, else as a list if it has `list[...]`, else as text (a `dict | str` field takes JSON text).
- `bool` fields take `--flag`, `--flag true/false/yes/no/1/0`, and `--no_flag` when their default is True.
- Enums and `Literal[...]` become choices; `list[X]` takes one or more values; a field without a default is required.
- The field's metadata (`help`, `aliases`, `choices`, ...) goes to `add_argument`; `--a-b` is an alias of `--a_b`.
`parse_json_file`, `parse_yaml_file` (needs PyYAML) and `parse_dict` fill the dataclasses from a mapping instead.
"""

import dataclasses
import json
import os
import sys
import types
import typing
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, ArgumentTypeError
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any, Literal

_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")


def string_to_bool(value) -> bool:
    """'yes'/'no', 'true'/'false', 't'/'f', 'y'/'n', '1'/'0' (any case) as a bool; a bool as itself."""
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ArgumentTypeError(f"expected a truth value (yes/no, true/false, t/f, y/n, 1/0), got {value!r}.")


def HfArg(*, aliases: str | list[str] | None = None, help: str | None = None,  # noqa: N802  (the reference's name)
          default: Any = dataclasses.MISSING, default_factory: Callable[[], Any] = dataclasses.MISSING,
          metadata: dict | None = None, **kwargs) -> dataclasses.Field:
    """A dataclass field with its command-line aliases and help given as keywords."""
    metadata = dict(metadata or {})
    if aliases is not None:
        metadata["aliases"] = aliases
    if help is not None:
        metadata["help"] = help
    return dataclasses.field(metadata=metadata, default=default, default_factory=default_factory, **kwargs)


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_enum(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def _is_list(annotation) -> bool:
    return annotation is list or typing.get_origin(annotation) is list


def _parsed_type(name: str, annotation):
    """The one type a field's text is parsed as (see the module's docstring), and whether None was allowed."""
    if not _is_union(annotation):
        return annotation, False
    members = typing.get_args(annotation)
    optional = type(None) in members
    members = [m for m in members if m is not type(None) and typing.get_origin(m) is not Literal]
    if len(members) == 1:
        return members[0], optional
    if str in members:
        for choose in (_is_enum, lambda m: m is bool, lambda m: typing.get_origin(m) is list, lambda m: m is str):
            for member in members:
                if choose(member):
                    return member, optional
    raise TypeError(
        f"HfArgumentParser: field {name!r} is typed {annotation}; a field parsed from the command line takes one "
        "type, optionally with None or str (`int | None`, `MyEnum | str`). Give it one type."
    )


def _choice_type(choices) -> Callable[[str], Any]:
    by_text = {str(choice): choice for choice in choices}
    return lambda text: by_text.get(text, text)


def _add_field(parser, field: dataclasses.Field, annotation) -> None:
    options = [f"--{field.name}"]
    if "_" in field.name:
        options.append(f"--{field.name.replace('_', '-')}")
    kwargs = dict(field.metadata)
    aliases = kwargs.pop("aliases", [])
    options += [aliases] if isinstance(aliases, str) else list(aliases)
    kind, optional = _parsed_type(field.name, annotation)
    has_default = field.default is not dataclasses.MISSING
    default = field.default if has_default else (
        field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING)

    if typing.get_origin(kind) is Literal or _is_enum(kind):
        kwargs["choices"] = list(typing.get_args(kind)) if typing.get_origin(kind) is Literal else [m.value for m in kind]
        kwargs["type"] = _choice_type(kwargs["choices"])
    elif kind is bool:
        kwargs["type"] = string_to_bool
        if default is dataclasses.MISSING:
            default = None if optional else False  # never required: unset, it is False (None when it may be)
        if not optional or default is not None:
            kwargs.update(nargs="?", const=True)  # `--flag` alone means True
    elif _is_list(kind):
        kwargs["type"] = typing.get_args(kind)[0] if typing.get_args(kind) else str
        kwargs["nargs"] = "+"
    elif kind is Any or kind is object:
        pass  # kept as the text given
    else:
        kwargs["type"] = kind
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    parser.add_argument(*options, **kwargs)
    if kind is bool and field.default is True:
        parser.add_argument(f"--no_{field.name}", f"--no-{field.name.replace('_', '-')}", action="store_false",
                            dest=field.name, default=False, help=field.metadata.get("help"))  # the first default wins


class HfArgumentParser(ArgumentParser):
    """An ArgumentParser whose options come from the fields of dataclasses; see the module's docstring."""

    def __init__(self, dataclass_types=None, **kwargs):
        if dataclass_types is None:
            dataclass_types = []
        elif dataclasses.is_dataclass(dataclass_types) or not isinstance(dataclass_types, Iterable):
            dataclass_types = [dataclass_types]
        kwargs.setdefault("formatter_class", ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)
        self.dataclass_types = list(dataclass_types)
        for dtype in self.dataclass_types:
            self._add_dataclass_arguments(dtype)

    def _add_dataclass_arguments(self, dtype) -> None:
        if not (isinstance(dtype, type) and dataclasses.is_dataclass(dtype)):
            raise TypeError(f"HfArgumentParser takes dataclass types, got {dtype!r}.")
        try:
            hints = typing.get_type_hints(dtype)
        except NameError as error:
            raise RuntimeError(
                f"The annotations of {dtype.__name__} cannot be resolved ({error}): declare the class and the types "
                "it names at module level, or drop `from __future__ import annotations`."
            ) from error
        group = getattr(dtype, "_argument_group_name", None)
        parser = self.add_argument_group(group) if group else self
        for field in dataclasses.fields(dtype):
            if field.init:
                _add_field(parser, field, hints[field.name])

    def _build(self, values: dict) -> list:
        """One instance of each dataclass from `values`, each taking the keys it has (they are removed)."""
        outputs = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype) if f.init}
            outputs.append(dtype(**{name: values.pop(name) for name in names if name in values}))
        return outputs

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings: bool = False,
                                    look_for_args_file: bool = True, args_filename=None, args_file_flag=None):
        """Parse `args` (default sys.argv[1:]) into one instance of each dataclass, then a namespace of the options
        added by hand (if any), then the unparsed strings when `return_remaining_strings` (otherwise they raise).

        Options are also read from `args_filename`, from the file next to the script named like it with `.args`
        (`look_for_args_file`), and from the files given with the option `args_file_flag`; the command line comes
        last, so it wins."""
        if args_file_flag or args_filename or (look_for_args_file and sys.argv):
            files = [Path(args_filename)] if args_filename else (
                [Path(sys.argv[0]).with_suffix(".args")] if look_for_args_file and sys.argv else [])
            if args_file_flag:
                flag_parser = ArgumentParser()
                flag_parser.add_argument(args_file_flag, type=str, action="append")
                found, args = flag_parser.parse_known_args(args=args)
                files += [Path(p) for p in vars(found).get(args_file_flag.lstrip("-")) or []]
            from_files = [word for file in files if file.exists() for word in file.read_text().split()]
            args = from_files + (list(args) if args is not None else sys.argv[1:])
        namespace, remaining = self.parse_known_args(args=args)
        values = vars(namespace)
        outputs = self._build(values)
        if values:
            outputs.append(namespace)
        if return_remaining_strings:
            return (*outputs, remaining)
        if remaining:
            raise ValueError(f"HfArgumentParser: these arguments match no field of "
                             f"{', '.join(d.__name__ for d in self.dataclass_types)}: {remaining}")
        return tuple(outputs)

    def parse_dict(self, args: dict[str, Any], allow_extra_keys: bool = False) -> tuple:
        """The dataclasses filled from a dict (no command line); a key no dataclass has raises unless allowed."""
        values = dict(args)
        outputs = self._build(values)
        if values and not allow_extra_keys:
            raise ValueError(f"HfArgumentParser.parse_dict: keys that match no field of "
                             f"{', '.join(d.__name__ for d in self.dataclass_types)}: {sorted(values)}")
        return tuple(outputs)

    def parse_json_file(self, json_file: str | os.PathLike, allow_extra_keys: bool = False) -> tuple:
        """The dataclasses filled from a JSON file holding one object of field values."""
        with open(json_file, encoding="utf-8") as handle:
            values = json.load(handle)
        if not isinstance(values, dict):
            raise ValueError(f"{json_file} must hold a JSON object of field values, got {type(values).__name__}.")
        return self.parse_dict(values, allow_extra_keys=allow_extra_keys)

    def parse_yaml_file(self, yaml_file: str | os.PathLike, allow_extra_keys: bool = False) -> tuple:
        """The dataclasses filled from a YAML file holding one mapping of field values (needs PyYAML)."""
        try:
            import yaml
        except ImportError as error:
            raise ImportError(f"parse_yaml_file({str(yaml_file)!r}) needs PyYAML, which openformers does not "
                              "depend on: pip install pyyaml, or pass the values as JSON (parse_json_file).") from error
        values = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError(f"{yaml_file} must hold a YAML mapping of field values, got {type(values).__name__}.")
        return self.parse_dict(values, allow_extra_keys=allow_extra_keys)

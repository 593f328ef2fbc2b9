"""ModelOutput: what a model's forward returns, an ordered dict of the fields that are set, as the reference's.

An output is read by attribute (`out.logits`), by name (`out["logits"]`, `out.get("loss")`) or by
position among the fields that are not None (`out[0]` is the loss when labels were given, the logits
otherwise; `out.to_tuple()` is what `return_dict=False` returns). Setting an attribute or an item sets
both. Outputs are registered as torch pytree nodes, so `torch.compile`, `torch.export` and
`torch.utils._pytree.tree_map` see through them.

It lives with generation, which reads model outputs by name (the forward contract) and returns its own
(GenerateDecoderOnlyOutput...); models/outputs.py holds the models' output classes. transformers 5 names the
KV cache field `cache`; `past_key_values`, its earlier name, is accepted when building an output and reads the
same field.
"""

import functools
from collections import OrderedDict
from dataclasses import fields, is_dataclass

import torch
import torch.utils._pytree as pytree

# The earlier names of the `cache` field, still used by most code written against transformers 4.
_CACHE_ALIASES = ("past_key_values", "cache_params")


class _OutputType(type):
    """Lets `SomeOutput(past_key_values=...)` fill the `cache` field, in classes that declare `cache`.

    @dataclass installs the generated __init__ with setattr on the class; the wrapper is put around it there,
    so constructing an output stays a plain call (torch.compile traces it without a graph break).
    """

    def __setattr__(cls, name, value):
        if name == "__init__" and not any(alias in cls.__dict__.get("__dataclass_fields__", {}) for alias in _CACHE_ALIASES):
            value = _accepting_cache_aliases(value)
        super().__setattr__(name, value)


def _accepting_cache_aliases(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for alias in _CACHE_ALIASES:
            if alias in kwargs:
                if "cache" in kwargs:
                    raise TypeError(f"{type(self).__name__}() got both cache= and {alias}=; pass only cache=.")
                kwargs["cache"] = kwargs.pop(alias)
        init(self, *args, **kwargs)

    return __init__


class ModelOutput(OrderedDict, metaclass=_OutputType):
    """Base class of model outputs; subclasses are @dataclass with every field defaulting to None but the first.

    Besides the fields as keyword or positional arguments, an output may be built from one dict (or one
    iterable of (name, value) pairs) passed as the first argument: `CausalLMOutput({"logits": x})`.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register_pytree_node(cls)

    def __post_init__(self):
        class_fields = fields(self)
        if not class_fields:
            raise TypeError(f"{type(self).__name__} has no fields; a ModelOutput subclass must be a @dataclass.")
        first = getattr(self, class_fields[0].name)
        others_unset = all(getattr(self, f.name) is None for f in class_fields[1:])
        if others_unset and not torch.is_tensor(first) and _is_pairs(first):
            # Built from a dict or (name, value) pairs: those set the fields, the first field included.
            object.__setattr__(self, class_fields[0].name, None)
            OrderedDict.pop(self, class_fields[0].name, None)
            for name, value in (first.items() if isinstance(first, dict) else first):
                if name not in {f.name for f in class_fields} and name not in _CACHE_ALIASES:
                    raise TypeError(f"{type(self).__name__} has no field {name!r}; its fields are "
                                    f"{[f.name for f in class_fields]}.")
                setattr(self, name, value)

    # -- keeping the dict and the attributes in step -------------------------------------------------------------

    def __setattr__(self, name, value):
        name = self._field_name(name)
        if value is not None and name in self.__dataclass_fields__:
            OrderedDict.__setitem__(self, name, value)
        object.__setattr__(self, name, value)

    def __setitem__(self, key, value):
        key = self._field_name(key)
        OrderedDict.__setitem__(self, key, value)
        object.__setattr__(self, key, value)

    def _field_name(self, name: str) -> str:
        """`past_key_values` -> `cache` in classes whose field is `cache` (transformers 5 renamed it)."""
        if name in _CACHE_ALIASES and name not in self.__dataclass_fields__ and "cache" in self.__dataclass_fields__:
            return "cache"
        return name

    @property
    def past_key_values(self):
        return getattr(self, "cache", None)

    @past_key_values.setter
    def past_key_values(self, value):
        setattr(self, "cache", value)

    # -- reading ---------------------------------------------------------------------------------------------------

    def __getitem__(self, key):
        if isinstance(key, str):
            name = self._field_name(key)
            if name not in self:
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; the ones set are {list(self.keys())}.")
            return OrderedDict.__getitem__(self, name)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return OrderedDict.__contains__(self, self._field_name(key) if isinstance(key, str) else key)

    def get(self, key, default=None):
        return OrderedDict.get(self, self._field_name(key) if isinstance(key, str) else key, default)

    def to_tuple(self) -> tuple:
        """The values of the fields that are set, in field order (what `return_dict=False` returns)."""
        return tuple(self.values())

    # -- an output's set of fields is fixed once built: the dict methods that remove or merge are refused -----------

    def _refuse(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not support removing or merging keys; set a field instead "
                        "(out.name = value or out['name'] = value).")

    __delitem__ = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        # Pickled as the class called with its field values (the dict part is rebuilt by __init__).
        if not is_dataclass(self):
            return super().__reduce__()
        callable_, _, *rest = super().__reduce__()
        return (callable_, tuple(getattr(self, f.name) for f in fields(self)), *rest)


def _is_pairs(value) -> bool:
    """Whether a first argument is a dict, or a non-empty iterable of (str, value) pairs, to build an output from."""
    if isinstance(value, dict):
        return True
    if value is None or isinstance(value, (str, bytes)):
        return False
    try:
        items = list(value)
    except TypeError:
        return False
    return bool(items) and all(
        isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) for item in items
    )


_REGISTERED: set[type] = set()


def _register_pytree_node(cls: type) -> None:
    """Flatten an output into the values of its set fields, keyed by their names, and rebuild it from them."""
    if cls in _REGISTERED:
        return
    pytree.register_pytree_node(
        cls,
        lambda output: (list(output.values()), list(output.keys())),
        lambda values, names: cls(**dict(zip(names, values))),
        serialized_type_name=f"{cls.__module__}.{cls.__name__}",
        flatten_with_keys_fn=lambda output: (
            [(pytree.MappingKey(name), value) for name, value in output.items()], list(output.keys())
        ),
    )
    _REGISTERED.add(cls)

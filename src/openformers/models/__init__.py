"""The model families, one module each (`openformers.models.llama`), and what they share. A module is an attribute
once named (`openformers.models.llama.LlamaForCausalLM`), as the reference's lazy `transformers.models` gives them."""

import importlib
import importlib.util


def __getattr__(name):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

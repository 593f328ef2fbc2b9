"""A quantized model's folder: save_pretrained writes the packed weights as they are, and from_pretrained reads
them back into the same packed layers, never through floats.

A model loaded with quantization="int8" / "int4" (or a BitsAndBytesConfig) saves each packed layer's `weight` (int8
steps, or int4 steps two a byte) and `scale` (float32 scales, or int4's float16 (scale, minimum) pairs) under the
layer's own name, and config.json gets openformers' marker, as the reference's quantized saves carry theirs:

    "quantization_config": {"quant_method": "openformers", "quantization": "int4",
                            "packed_modules": {"model.layers.0.self_attn.q_proj": "int4", ..., "lm_head": "int8"},
                            "packed_experts": {"model.layers.0.mlp.experts.gate_up_proj": "int4", ...}}

`quantization` is what the model was loaded with; `packed_modules` maps each packed linear layer to its layout
(under int4 the head, and a mixed-width GGUF file's wider matrices, are int8), `packed_experts` each packed stack of
experts' matrices (kernels.PackedExperts: gpt-oss, Granite MoE) to its. Linear layers named in neither (those
llm_int8_skip_modules kept) are stored in floating point as usual. Such a folder is openformers' own: the reference
knows no quant_method "openformers": it warns "Unknown quantization type ... we will skip the quantization" and reads
the tensors as floats, refusing int4's packed rows by their shape, but loading int8's steps (of the float matrix's
shape) as if they were weights, wrong. For a checkpoint any library reads, save the floats: load the original
checkpoint without quantization and save that.
"""

import torch
from torch import nn

from ..acceleration import accelerator

QUANT_METHOD = "openformers"
GROUP = 32  # int8 blocks and int4 groups along a row (kernels.linear.GROUP)


def marker(model: nn.Module) -> dict | None:
    """config.json's quantization_config for `model` when it holds packed layers (see the module's docstring)."""
    quantization = getattr(model, "quantization", None)
    if quantization is None:
        return None
    kinds = accelerator()
    linear, experts = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, (kinds.Linear, kinds.PackedExperts)) and module.scale is not None:
            layout = "int8" if module.weight.dtype == torch.int8 else "int4"
            (experts if isinstance(module, kinds.PackedExperts) else linear)[name] = layout
    return {"quant_method": QUANT_METHOD, "quantization": quantization, "packed_modules": linear,
            "packed_experts": experts}


def stored_marker(config) -> dict | None:
    """The folder's openformers quantization_config, checked, or None when its config.json holds none."""
    stored = config.extra.get("quantization_config")
    if not isinstance(stored, dict) or stored.get("quant_method") != QUANT_METHOD:
        return None
    where = "config.json's quantization_config"
    if stored.get("quantization") not in ("int8", "int4"):
        raise ValueError(f"{where}: quantization must be 'int8' or 'int4', got {stored.get('quantization')!r}.")
    for key in ("packed_modules", "packed_experts"):
        layouts = stored.get(key, {})
        if not isinstance(layouts, dict) or any(v not in ("int8", "int4") for v in layouts.values()):
            raise ValueError(f"{where}: {key} must map module names to 'int8' or 'int4', got {layouts!r}.")
    return stored


def check_asked(stored: dict, quantization: str | None, source) -> None:
    """from_pretrained's quantization on a packed folder: none, or the folder's own; another is refused."""
    if quantization is not None and quantization != stored["quantization"]:
        raise ValueError(
            f"{source} holds weights packed as {stored['quantization']!r} (config.json's quantization_config), so "
            f"quantization={quantization!r} cannot be applied: they are not requantized. Leave quantization unset "
            "(or ask for the folder's own), or load the original float checkpoint to quantize it another way.")


def packed_names(stored: dict) -> set[str]:
    """The checkpoint names of the packed tensors, which loading keeps in their dtypes."""
    owners = [*stored.get("packed_modules", {}), *stored.get("packed_experts", {})]
    return {f"{owner}.{part}" for owner in owners for part in ("weight", "scale")}


def install(model: nn.Module, stored: dict, state_dict: dict, source) -> None:
    """Replace the layers that `stored` names in `model` (built on the meta device) by packed ones holding the
    checkpoint's tensors, after checking each tensor's shape and dtype against the layer's."""
    kinds = accelerator()
    for name, layout in stored.get("packed_modules", {}).items():
        module = _module(model, name, source)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{source}: quantization_config packs {name}, which is no linear layer of this model.")
        weight, scale = _checked(state_dict, name, layout, (), module.out_features, module.in_features, source)
        layer = kinds.Linear(module.in_features, module.out_features, bias=False, device="meta")
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, layer.train(module.training)._packed(weight, scale, module.bias))
    for name, layout in stored.get("packed_experts", {}).items():
        parent_name, _, attribute = name.rpartition(".")
        parent = _module(model, parent_name, source)
        stack = parent._parameters.get(attribute)
        if stack is None or attribute not in getattr(parent, "expert_stacks", {}):
            raise ValueError(f"{source}: quantization_config packs {name}, which is no stack of experts of this model.")
        experts, rows, columns = stack.shape
        out_features, in_features = (columns, rows) if parent.expert_stacks[attribute] else (rows, columns)
        weight, scale = _checked(state_dict, name, layout, (experts,), out_features, in_features, source)
        kinds.install_packed_experts(parent, attribute, kinds.PackedExperts(weight, scale, in_features))
    model.quantization = stored["quantization"]


def _module(model: nn.Module, name: str, source) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{source}: quantization_config packs {name}, which this model does not have.") from None


def _checked(state_dict: dict, name: str, layout: str, lead: tuple, out_features: int, in_features: int, source):
    """The checkpoint's `name`.weight and `name`.scale, which must be `layout`'s packing of an (out, in) matrix
    (after `lead`, the experts' count): int8 (out, in) int8 steps with float32 scales per 32 weights (or per 16, a
    GGUF Q6_K matrix's), int4 (out, in / 2) uint8 with float16 (out, in / 32, 2) pairs."""
    if layout == "int8":
        weights = [((*lead, out_features, in_features), torch.int8)]
        scales = [((*lead, out_features, -(-in_features // GROUP)), torch.float32)]
        if in_features % 16 == 0:
            scales.append(((*lead, out_features, in_features // 16), torch.float32))
    else:
        weights = [((*lead, out_features, in_features // 2), torch.uint8)]
        scales = [((*lead, out_features, in_features // GROUP, 2), torch.float16)]
    found = []
    for part, allowed in (("weight", weights), ("scale", scales)):
        key = f"{name}.{part}"
        tensor = state_dict.get(key)
        if tensor is None:
            raise ValueError(f"{source}: quantization_config packs {name} as {layout}, but the checkpoint has no "
                             f"tensor {key}.")
        if (tuple(tensor.shape), tensor.dtype) not in allowed:
            expected = " or ".join(f"{shape} {str(dtype).removeprefix('torch.')}" for shape, dtype in allowed)
            raise ValueError(f"{source}: tensor {key} is {tuple(tensor.shape)} "
                             f"{str(tensor.dtype).removeprefix('torch.')}, but a {layout} packing of {name} "
                             f"({in_features} inputs x {out_features} outputs) stores {expected}.")
        found.append(tensor)
    return found

"""The opt-in CPU accelerator: compiled kernels swapped into a plain model when it is loaded.

Models are plain torch.nn and never import this package. `from_pretrained` hands each model it loads here
(through openformers.acceleration, which the top-level package fills): `quantize` on request, then
`accelerate` once the model is on its device. Users who build a model themselves call the same two.

- `quantize(model, "int8" or "int4")`: every linear layer becomes `Linear` with packed weights (linear.py), in
  the layout `layout` gives it; from_pretrained's quantized GGUF loads pack a matrix's blocks straight into
  `Linear` where its layout holds them (`Linear.from_gguf_rows`). A mixture's experts stored as one stack per
  projection (gpt-oss, Granite MoE: a module's `expert_stacks`) become a `PackedExperts`, each expert's matrix
  packed alone as `Linear` packs one, whose products go through the same `Linear` products on views of its slices.
- `accelerate(model)`: on the CPU, builds the library (library.py) when the model has a use for it, so no
  forward pass ever compiles; where every config field of the model is one the decoding step implements
  (llama.refusal), swaps `Linear` in for its linear layers and gives its decoder the one-call `DecodeStep`,
  which also runs its language-model head (a `StepHead`) while generate feeds the head each step's output.
  Their weights move onto 2 MB pages where the system has them (library.HugePagePlacement) from the first
  decoding step on, a part before each step within a time budget: a model loaded to be trained never takes one,
  and never pays the copies' memory.
  Any other model that generates (`can_generate`: its decoding multiplies a row per sequence) gets `Linear` for
  its plain nn.Linear layers and its experts' (`take_kernel_products`), without the step: PyTorch's matmul streams
  float weights at about half the memory bandwidth for so few rows, the kernel at about all of it (Gemma 3 270M's
  greedy decode, two threads, before Gemma 3 took the step: float32 10.1 -> 21.6 tok/s, bfloat16 21.8 -> 33.7,
  the same tokens), and their weights move onto 2 MB pages as the step's do, a part before each forward of one
  new token per sequence (`_PlacingBeforeDecoding`). Other models stay as they are, on the plain path.

Once the library is loaded, models/layers.py's `attention` also sends a prompt's plain causal attention on the
CPU in float32 or bfloat16 (no mask, no gradient, heads of 64 or 128, a build with AVX-512) to its
`prompt_attention`, in any model that calls it, and models/mamba.py's selective scan (Mamba, Falcon-Mamba, Jamba) runs
in its scan.cpp, with its backward pass while training.

`Linear` sends products of a few rows (a batch decoding a token per sequence, a short prompt: up to 8 for float32
weights, 16 for bfloat16, 64 for int8 and int4 weights and a float32 vocabulary head, `Linear.kernel_rows`) to the
kernel, and an int8 or int4 layer's prompt in inference (more rows, or a sequence's 16 positions and more) to its
`prompt_product` (a build with AVX-512 VNNI); `OPENFORMERS_KERNELS=0` switches everything off.
tests/test_kernels.py proves each family's parity with the plain path, which stays the reference.
"""

import weakref

import torch
from torch import nn

from ..models.mixtral import ExpertLinear
from . import library, llama
from .library import build, loaded
from .linear import (
    KERNEL_ROWS,
    QUANTIZATIONS,
    Linear,
    PackedExperts,
    check_quantization,
    install_packed_experts,
    layout,
    quantize,
)
from .llama import prompts_for_generation, threads_following_team

__all__ = ["KERNEL_ROWS", "QUANTIZATIONS", "Linear", "PackedExperts", "accelerate", "build", "check_quantization",
           "install_packed_experts", "loaded", "layout", "place_weights", "prompts_for_generation", "quantize",
           "take_kernel_products", "threads_following_team"]


def accelerate(model: nn.Module) -> bool:
    """Swap the kernels into `model` where they apply (see the module's docstring); returns whether the decoding
    step was installed. Quantized layers use the kernel from here on even when the architecture is refused."""
    if not _on_the_cpu(model):
        return False
    eligible = llama.eligible(model)
    packed = any(isinstance(m, Linear) and m.scale is not None for m in model.modules())
    generates = getattr(model, "can_generate", lambda: False)()
    if not (eligible or packed or generates) or not library.build():
        return False
    if eligible:
        llama.install(model, before_step=_WeightPlacement(weakref.ref(model)))
    elif generates:
        _take_kernel_products(model)
    return eligible


def take_kernel_products(model: nn.Module) -> None:
    """`Linear` in place of every plain nn.Linear of `model` and every expert's (mixtral.ExpertLinear, an nn.Linear
    that skips the random init; other subclasses, such as an adapter's, are their own), holding the same
    Parameters: ties, training and saving are unchanged. The experts' products are most of a mixture's decoding:
    Qwen3-30B-A3B's shape with 3 of its layers, bfloat16, two threads, 26.6 -> 39.1 tok/s with theirs the kernel's
    too (benchmarks/random_decoder.py --family qwen3-moe)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.Linear, ExpertLinear):
                setattr(parent, name, Linear.from_linear(child))


def _take_kernel_products(model: nn.Module) -> None:
    """take_kernel_products, and the weights placed as decoding goes."""
    take_kernel_products(model)
    model.register_forward_pre_hook(_PlacingBeforeDecoding(_WeightPlacement(weakref.ref(model))), with_kwargs=True)


class _PlacingBeforeDecoding:
    """A forward pre-hook of a model that generates without the decoding step: before each forward of one new token
    per sequence in inference (generate's steps, not a prompt's forward nor training), the model's _WeightPlacement
    moves a part of its weights onto 2 MB pages, as the step's does before each step (Gemma 3 270M float32, its
    linear layers the kernel's, rounds interleaved: 28.7 -> 34.3 tok/s); the hook leaves once all are placed."""

    def __init__(self, placement: "_WeightPlacement"):
        self.placement = placement

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("decoder_input_ids")  # an encoder-decoder's decoding forward
        if ids is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
        if (module.training or torch.is_grad_enabled() or not isinstance(ids, torch.Tensor) or ids.shape[-1] != 1
                or torch.compiler.is_compiling()):  # a compiled step's graph holds no placing
            return
        if not self.placement():
            self.leave(module)

    def leave(self, module: nn.Module) -> None:
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is self:
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


def place_weights(model: nn.Module) -> bool:
    """Move the weights `model`'s decoding steps read onto 2 MB pages now, all of them, where its first steps would
    otherwise move them a part at a time (see library.HugePagePlacement): for a server before its first request,
    or a benchmark of the steady decoding speed. A float32 SmolLM2 takes ~2.5 s here, of which the first step
    spends ~2 s and the next ones 20% of their time until done. Returns whether any moved."""
    step = getattr(llama.decoder_of(model), "accelerated_step", None)
    if step is not None:
        placement = step.before_step
    else:  # a model that decodes without the step (_take_kernel_products)
        hook = next((h for h in model._forward_pre_hooks.values() if isinstance(h, _PlacingBeforeDecoding)), None)
        placement = hook.placement if hook is not None else None
    if not isinstance(placement, _WeightPlacement):
        return False
    moved = placement.finish()
    if step is not None:
        step.before_step = None
    else:
        hook.leave(model)
    return moved


class _WeightPlacement:
    """What runs before each decoding step until it returns False: moves a part of the weights each step reads
    whole onto 2 MB pages (see library.HugePagePlacement), gathered at the first step, once the model is final."""

    def __init__(self, model_reference: weakref.ref | None):
        self.model_reference = model_reference
        self.placement: library.HugePagePlacement | None = None

    # A copy places its own model's weights, gathered at its own first step (a placement begun holds a mapping,
    # which cannot be copied); a pickle holds no model, and places nothing.
    def __deepcopy__(self, memo: dict) -> "_WeightPlacement":
        return _WeightPlacement(llama.copied_reference(self.model_reference, memo))

    def __getstate__(self) -> dict:
        return {"model_reference": None, "placement": None}

    def __call__(self) -> bool:
        return self._gathered() is not None and self.placement()

    def finish(self) -> bool:
        """Moves whatever is left now; returns whether anything moved."""
        placement = self._gathered()
        if placement is None or not placement.pending:
            return False
        moved = placement.moved
        placement.place()
        return placement.moved > moved

    def _gathered(self) -> "library.HugePagePlacement | None":
        if self.placement is None:
            model = self.model_reference() if self.model_reference is not None else None
            if model is None:
                return None
            self.placement = library.HugePagePlacement([t for m in model.modules() if isinstance(m, Linear)
                                                        for t in (m.weight, m.scale) if t is not None])
        return self.placement


def _on_the_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in model.parameters()) and all(t.device.type == "cpu" for t in model.buffers())

"""The accelerator's one linear layer, for float, int8 and int4 weights, and weight-only quantization with it.
Decoding a token per sequence multiplies a few rows by every weight once, so its speed is set by how fast the
weights stream from memory. For a few rows on the CPU (`Linear.kernel_rows`: 8 for float weights, 64 for int8 and
int4 weights and for a float32 vocabulary head; in training, 8 and none), without gradients, `Linear` sends the
product to the compiled kernel (decode.cpp), which reads each weight once for all rows at about the memory bandwidth
and reads int8 and int4 rows as they are stored; PyTorch's matmul streams float weights at about half of it for so
few rows (1.5x slower at 8 float32 rows), and quantized rows would first have to be widened to floats. Other inputs
(a longer prompt, training) take PyTorch's path, but for a quantized layer's prompt in inference (eval mode without
gradients; more rows than the kernel takes, or a sequence's PROMPT_PRODUCT_ROWS positions and more, where it is the
faster): the kernel's `prompt_product` (AVX-512 VNNI builds) rounds each input row as decoding does and
multiplies the stored integers, 32 weight rows held in registers while every row of the prompt passes, nothing
unpacked (SmolLM2's 1536 x 576 layer at 512 rows, two threads: 1.4-1.6 ms against 2.2-2.3 for unpacking to
bfloat16 and PyTorch's bfloat16 matmul; its 512-token prefill 0.40 -> 0.30 s at int8, 0.41 -> 0.32 s at int4).
Decoding's own loops (matvec) keep the rows they take: each row's sums in the order of the one-row step, so a batch
decodes what its sequences decode alone. Where prompt_product has no vector loops, or with INTEGER_PROMPT_PRODUCTS
off, the prompt's weights are unpacked for PyTorch's matmul: in bfloat16 on a CPU with bfloat16 dot products
(AVX512_BF16, AMX), half the time of float32, for 2.8e-3 relative error per product, the input unrounded; where
bfloat16 matmul has no such instructions (2.6-4.9x slower than float32 there), and in training (QLoRA), float32.
What each route costs in quality against float32 (benchmarks/quality.py, RESULTS.md's quality rows): the integer
products round a prompt's inputs as llama.cpp's CPU products round every input (Q8_0 / Q8_1 blocks of 32).

Quantization (`from_pretrained(..., quantization="int8" or "int4")`). int8: each block of 32 weights along a row
becomes int8 with one float32 scale (symmetric: the block's largest magnitude maps to 127, llama.cpp's Q8_0 grid),
9/32 of the float32 bytes; a Q8_0 GGUF file's weights come back unchanged, as its float16 scales are float32s, and a
Q5_0 or Q4_0 file's too, a block whose largest magnitude is fewer than 127 of its steps taking its own step; a Q6_K
matrix, whose 16-weight sub-blocks each scale their 6-bit steps by d times an 8-bit scale, keeps a scale per 16
weights instead (10 bits a weight against 9; requantized to scales per 32, SmolLM2's and Gemma 3 270M's Q6_K
matrices moved by 0.53-0.57% of their size, root mean square). int4: groups of 32 weights along a row keep a float16
scale and minimum each (weight = scale * q + minimum, q in 0..15, llama.cpp's Q4_1), 5/32 of the float32 bytes (a
model whose layer inputs are not multiples of 32 is refused); the language-model head stays int8. On a Q4_1 GGUF
file (the default model's) int4 finds the file's blocks again bit for bit, and on a Q4_0 file its grid (d * (q - 8):
the minimum is -8 d): no weight changes. On a Q4_K file each group's own grid (d * scale * q - dmin * min), which
float16 cannot hold: every weight keeps its step and moves only by the float16 roundings of the group's step and
minimum (Gemma 3 270M's Q4_K matrices: 0.06% of their size, root mean square, where the span / 15 grid moved them by
4.8%). Loading such a file, those blocks are packed straight into these layouts (`Linear.from_gguf_rows`), never
made floats (SmolLM2's int4 load 0.44 -> 0.26 s): the same weights, Q4_K's steps with their grids rounded to float16
(0.059% at most); quantizing the floats finds them as well, for a model built some other way (Q6_K's aside, whose
scales per 16 only its blocks give).
Activations stay in the model's dtype, except in the kernel's int8 and int4 products: there each input is rounded
to int8 steps per block of 32 (one float scale each, as llama.cpp's Q8_1 blocks) and multiplies the stored integers
directly (AVX-512 VNNI or AVX2 integer dot products), so no weight is widened to a float and the products stream
the weights at the memory bandwidth instead of being compute-bound. The result is exactly the weights times the
rounded input, within half a step per input of the unrounded product. The cost in quality is measured by
benchmarks/quality.py and recorded in benchmarks/RESULTS.md. A quantized layer's weights are buffers, not
parameters, so nothing trains them, and a tied language-model head gets an int8 copy of its own; gradients still
flow through it to its input, so LoRA adapters train on a quantized base (QLoRA, models/lora.py).
A mixture's experts stored as one 3-D stack per projection (gpt-oss, Granite MoE) become a `PackedExperts`: every
expert's matrix packed alone as above, into one stack, whose products each go through a `Linear` over views of
that expert's slices, and so through the same kernel products.
"""

import functools
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import backward_follows
from ..quantization_config import is_kept
from ..weights import GGUF_PACKERS, WIDER_QUANTIZED_TYPES
from . import library

QUANTIZATIONS = ("int8", "int4")
GROUP = 32  # int4 weights per (scale, minimum) pair
# How many rows (a batch decoding a token per sequence, a short prompt) go to the kernel, which reads each weight
# once for all of them, rather than to PyTorch's matmul. Float32 weights: up to KERNEL_ROWS; at 32-64 rows
# PyTorch's matmul is as fast on a layer's shapes (576 x 1536 at 32 rows, two threads: 0.38 ms against the
# kernel's 0.44). bfloat16 weights: up to KERNEL_ROWS_BFLOAT16, where the kernel's vdpbf16ps tiles (their sums
# added as one tree, lane_sums16) beat PyTorch's at every shape measured (two threads, best of 3: 1536 x 576 at 16
# rows 0.10 against 0.12 ms, SmolLM2's 49152 x 576 head 3.3 against 5.3, Gemma 3's 262144 x 640 head 20.6 against
# 31.0), and at 32 rows they are alike (0.19 / 6.2 / 46.6 against 0.18 / 7.1 / 42.7). A float32 matrix at least
# TALL times as high as wide (a vocabulary head) keeps the kernel up to KERNEL_ROWS_TALL rows, where PyTorch's
# matmul is slow on so few rows for so many outputs (SmolLM2's 49152 x 576 head at 32 rows: 15 ms against 23;
# Llama's 32000 x 4096 at 64 rows: 147 against 170; 128256 x 2048: 293 against 319; 1536 x 576 at 64 rows: 0.74
# against 0.67). int8 and int4 weights: up to KERNEL_ROWS_PACKED, where the kernel's integer products beat
# widening the weights (one pass of the kernel's `dequantize`) for a bfloat16 matmul at every shape measured up to
# 128 rows: 32 rows of the 49152 x 576 head 8.8 / 9.9 ms (int8 / int4) against 27.7 / 27.5, 64 rows of 1536 x 576
# 0.54 / 0.64 against 0.84 / 0.88.
KERNEL_ROWS = 8
KERNEL_ROWS_BFLOAT16 = 16
TALL = 4
KERNEL_ROWS_TALL = 64
KERNEL_ROWS_PACKED = 64
KERNEL_WEIGHTS = (torch.float32, torch.bfloat16, torch.int8, torch.uint8)  # uint8: int4 steps, two per byte
UNPACKED_DTYPES = (torch.float32, torch.bfloat16)  # what the kernel's dequantize_into writes


def _cpu_has_bfloat16_dot_products() -> bool:
    # torch.cpu's probes are private and may go: without them the float32 products stay.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


# A quantized layer's prompt products (more rows than the kernel takes, in inference) multiply float32
# inputs in bfloat16 where the CPU has bfloat16 dot products (AVX512_BF16, AMX): PyTorch's bfloat16 matmul then
# takes half of float32's time, and the weights unpack into half the bytes. Elsewhere it is 2.6x (AVX-512 without
# them) to 4.9x (AVX2) slower than float32, so those CPUs keep float32. Measured on SmolLM2's 7 products of a
# layer at 512 rows, one thread (oneDNN capped with ONEDNN_MAX_CPU_ISA for the CPUs without).
BFLOAT16_PROMPT_PRODUCTS = _cpu_has_bfloat16_dot_products()


# A quantized layer's prompt products multiply the stored int8 and int4 steps by the inputs rounded to int8 steps
# per block of 32, as decoding's products do (decode.cpp's prompt_product, AVX-512 VNNI builds). False unpacks the
# weights for PyTorch's matmul instead (see the module's docstring), with the prompt's inputs unrounded.
INTEGER_PROMPT_PRODUCTS = True
# The fewest positions of a sequence that take prompt_product rather than decoding's loops (matvec), which keep
# each row's sums in the order of a one-row step: at 16 rows prompt_product takes 0.73-0.75x their time at int8,
# 0.86-0.96x at int4 (one thread, SmolLM2's four shapes), at 8 rows 0.88-0.93x and 1.02-1.16x.
PROMPT_PRODUCT_ROWS = 16


@functools.cache
def _compiled_prompt_products() -> bool:
    """Whether the loaded library has prompt_product's vector loops; without them its plain loops take longer than
    unpacking the weights for PyTorch's matmul. Asked once, after the library has loaded."""
    return torch.ops.openformers.prompt_product_vectorized()


class _KeepsScaleDtype(nn.Module):
    """A module whose `scale` buffer, when set, holds packed weights' scales."""

    def _apply(self, fn, recurse=True):
        """`.to(...)`, `.half()`, `.cuda()`...: packed scales move with the module but keep their dtype (int8:
        float32, int4: float16), which the kernel reads and the weights were rounded against: a cast to bfloat16
        would move every weight by up to 0.4% of its group's step, with nothing to say so."""
        scale = self._buffers.get("scale")
        if scale is None:
            return super()._apply(fn, recurse)
        self._buffers["scale"] = None
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers["scale"] = scale
        self._buffers["scale"] = scale.to(device=fn(scale[:0]).device)
        return self


class Linear(_KeepsScaleDtype, nn.Linear):
    """y = x W^T + b, with W as nn.Linear holds it (a float Parameter) or packed for inference (`scale` set):

    int8: `weight` (out, in) int8, `scale` (out, ceil(in / 32)) float32, one per block of 32 weights along a row
    (the last block of a row may be shorter): llama.cpp's Q8_0 grid; or (out, in / 16), one per 16 weights, which
    holds a GGUF Q6_K matrix's weights as they are (its 6-bit steps, and d times each 16's 8-bit scale). int4:
    `weight` (out, in / 2) uint8, byte j of a group's 16 holding step j in its low nibble and step j + 16 in its
    high one; `scale` (out, in / 32, 2) float16, each group's (scale, minimum): llama.cpp's Q4_1 layout and size
    (20 bytes per 32 weights), which the kernel reads directly.
    """

    # Float weights' product rounded to the input's dtype before the bias is added, two operations, as a Falcon
    # FalconLinear that this layer took the place of computes it (its reference's bfloat16 rounding)
    bias_after_product = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, quantization: str | None = None) -> "Linear":
        """`linear` as this layer: its own Parameters (ties and training unchanged), or quantized ("int8", "int4");
        in its mode (train or eval), which decides what goes to the kernel (kernel_rows)."""
        layer = cls(linear.in_features, linear.out_features, bias=False, device="meta").train(linear.training)
        if quantization is None:
            layer.weight, layer.bias = linear.weight, linear.bias
            layer.register_buffer("scale", None)
            return layer
        return layer._packed(*_quantized(linear.weight.detach(), quantization), linear.bias)

    @classmethod
    def from_gguf_rows(cls, linear: nn.Linear, kind: str, rows: torch.Tensor | None, layout: str) -> "Linear | None":
        """`linear` (its shape, mode and bias) with the weights of a GGUF matrix of block type `kind`, its stored
        `rows` (weights.GGUFLayerReader.stored_rows), packed as `layout` straight from its blocks where the layout
        holds them (weights.GGUF_PACKERS: int8 Q8_0, Q6_K, Q5_0, Q4_0; int4 Q4_0, Q4_1, Q4_K), the file's weights
        without computing them as floats (Q4_K's steps, their grids rounded to float16); else None."""
        kinds, pack = GGUF_PACKERS[layout]
        if kind not in kinds or rows is None:
            return None
        weight, scale = pack(rows, kind)
        columns = weight.shape[1] * (2 if layout == "int4" else 1)
        if (weight.shape[0], columns) != (linear.out_features, linear.in_features):
            raise ValueError(f"GGUF {kind} rows of {columns} weights x {weight.shape[0]} do not fit "
                             f"a linear layer of {linear.in_features} inputs x {linear.out_features} outputs")
        if not torch.isfinite(scale).all():  # a float16 d times 8 (Q4_0's minimum) or a scale past float16's range
            return None
        layer = cls(linear.in_features, linear.out_features, bias=False, device="meta").train(linear.training)
        return layer._packed(weight, scale, linear.bias)

    def _packed(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> "Linear":
        del self.weight, self.bias  # buffers from here on
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias_after_product and self.scale is None and self.bias is not None:
            return F.linear(x, self.weight) + self.bias
        if self._integer_prompt_pays(x):
            return self._compiled_product(torch.ops.openformers.prompt_product, x)
        if self._kernel_takes(x):
            return self._compiled_product(torch.ops.openformers.matvec, x)
        if self.scale is None:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if x.requires_grad and torch.is_grad_enabled():  # training adapters on a quantized base (QLoRA)
            y = _PackedProduct.apply(x, self)
            return y if bias is None else y + bias
        if self._bfloat16_product_pays(x):
            y = F.linear(x.to(torch.bfloat16), self.unpacked_for_product(torch.bfloat16)).float()
            return y if bias is None else y + bias
        return F.linear(x, self.unpacked_for_product(x.dtype), bias)

    def _compiled_product(self, product, x: torch.Tensor) -> torch.Tensor:
        """x W^T + b by one of the compiled library's products, which take float32 rows and give float32 ones."""
        y = product(x.reshape(-1, self.in_features).float().contiguous(), self.weight, self.scale)
        if self.bias is not None:
            y += self.bias
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def _bfloat16_product_pays(self, x: torch.Tensor) -> bool:
        # Only in inference: a QLoRA step's products (and their gradients) stay in the input's dtype, also in the
        # forward that a reentrant gradient checkpoint runs without gradients before recomputing it with them.
        return (
            BFLOAT16_PROMPT_PRODUCTS
            and not self.training
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.numel() > KERNEL_ROWS * self.in_features
            and not torch.is_grad_enabled()
        )

    def _integer_prompt_pays(self, x: torch.Tensor) -> bool:
        # Only in inference, as for _bfloat16_product_pays. Within kernel_rows, only a sequence's positions (a
        # prompt's, not a batch's one token per row, whose products must stay those of the rows alone) of at least
        # PROMPT_PRODUCT_ROWS rows.
        if self.scale is None or not INTEGER_PROMPT_PRODUCTS or self.training or torch.is_grad_enabled():
            return False
        rows = x.numel() // self.in_features
        prompt = x.dim() > 2 and x.shape[-2] > 1 and rows >= PROMPT_PRODUCT_ROWS
        return (rows > self.kernel_rows() or prompt) and self._library_may_run(x) and _compiled_prompt_products()

    def kernel_rows(self) -> int:
        """The most rows whose product goes to the kernel (see KERNEL_ROWS). In training, the forward that a
        reentrant checkpoint runs without gradients must compute what its recomputation, with gradients and so
        PyTorch's products, computes: a packed layer then takes none (the kernel rounds its input to int8 steps,
        which moved a QLoRA adapter's gradients by up to 3e-3 on a batch of 4 tokens), a float one KERNEL_ROWS
        (the same products, summed in another order)."""
        if self.scale is not None:
            return 0 if self.training else KERNEL_ROWS_PACKED
        if self.training:
            return KERNEL_ROWS
        if self.weight.dtype == torch.float32 and self.out_features >= TALL * self.in_features:
            return KERNEL_ROWS_TALL
        return KERNEL_ROWS_BFLOAT16 if self.weight.dtype == torch.bfloat16 else KERNEL_ROWS

    def _kernel_takes(self, x: torch.Tensor) -> bool:
        return (
            x.numel() <= self.kernel_rows() * self.in_features
            and self.weight.dtype in KERNEL_WEIGHTS
            and self._library_may_run(x)
        )

    def _library_may_run(self, x: torch.Tensor) -> bool:
        """What any of the compiled library's products asks: a CPU input without gradients, the library loaded, the
        weights contiguous, and no torch.compile tracing (the library is opaque to it: the plain path traces)."""
        return (
            x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and library.loaded()
            and self.weight.is_contiguous()
            and not torch.compiler.is_compiling()
        )

    def float_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The packed weights as a new `dtype` matrix: unpacked in one pass of the kernel on the CPU, straight
        into float32 or bfloat16 (`dequantized` takes several passes, each making a new tensor)."""
        if not self._kernel_unpacks(dtype):
            return self.dequantized(dtype)
        matrix = torch.empty(self.out_features, self.in_features, dtype=dtype)
        torch.ops.openformers.dequantize_into(self.weight, self.scale, matrix)
        return matrix

    def unpacked_for_product(self, dtype: torch.dtype) -> torch.Tensor:
        """The packed weights as a `dtype` matrix for one product that keeps no reference to it: on the CPU, a
        matrix of this thread's that every layer of the same shape unpacks into in turn. A QLoRA step unpacks
        each layer three times (forward, the checkpointed recomputation, backward); a new matrix each time
        was a fresh allocation of tens of MB that the system faults in page by page, and the reused one costs
        one matrix per shape and dtype for as long as the thread lives."""
        if not self._kernel_unpacks(dtype):
            return self.dequantized(dtype)
        matrices = _unpacked.__dict__.setdefault("matrices", {})
        key = (self.out_features, self.in_features, dtype)
        if key not in matrices:
            matrices[key] = torch.empty(self.out_features, self.in_features, dtype=dtype)
        torch.ops.openformers.dequantize_into(self.weight, self.scale, matrices[key])
        return matrices[key]

    def _kernel_unpacks(self, dtype: torch.dtype) -> bool:
        return (
            self.weight.device.type == "cpu"
            and dtype in UNPACKED_DTYPES
            and library.loaded()
            and not torch.compiler.is_compiling()  # the kernel is opaque to torch.compile: the plain path traces
        )

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The packed weights unpacked with PyTorch's own operations (the plain path): computed in float32 and
        rounded to `dtype` once, as the kernel does, so both paths give the same matrix."""
        scale = self.scale.float()
        if self.weight.dtype == torch.int8:
            group = GROUP if scale.shape[1] == -(-self.in_features // GROUP) else 16  # see the class's docstring
            return (self.weight.float() * scale.repeat_interleave(group, dim=1)[:, : self.in_features]).to(dtype)
        packed = self.weight.reshape(self.out_features, -1, 16)
        steps = torch.cat([packed & 15, packed >> 4], dim=-1).float()  # (out, groups, 32)
        scale, minimum = scale.unbind(-1)
        matrix = steps * scale[..., None] + minimum[..., None]
        return matrix.reshape(self.out_features, self.in_features).to(dtype)

    def extra_repr(self) -> str:
        packed = {torch.int8: ", int8", torch.uint8: ", int4"}.get(self.weight.dtype, "")
        return super().extra_repr() + packed


class PackedExperts(_KeepsScaleDtype):
    """A mixture's stack of experts' matrices (gpt-oss's `gate_up_proj`, Granite MoE's `input_linear.weight`)
    quantized: `weight` (experts, out, packed in) and `scale` (experts, out, ...), expert e's slices packed as
    `Linear` packs that expert's (out, in) matrix alone (int8 or int4, `_quantized`). Called as `bank(e, x)`: x
    (rows, in) times expert e's matrix, by a `Linear` whose buffers are views of e's slices, which are contiguous:
    its products (the kernel's matvec for a few rows, prompt_product for more, the unpacked matrix in training) read
    them in place, nothing copied. Those views are made once and made again when the stacks are replaced
    (`.to(...)`)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, in_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, weight.shape[1]
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)

    @classmethod
    def from_matrices(cls, count: int, matrix, quantization: str) -> "PackedExperts":
        """`count` experts' matrices, expert e's (out, in) float matrix given by `matrix(e)`, each quantized alone
        and written into the stacks before the next is asked for: a stack stored some other way (a float
        Parameter, MXFP4 blocks) is never floats all at once."""
        weight = scale = None
        for e in range(count):
            rows = matrix(e)
            if quantization == "int4" and rows.shape[1] % GROUP:
                raise ValueError(
                    f"quantization='int4' groups each row's weights by {GROUP}, but these experts' matrices have "
                    f"{rows.shape[1]} inputs; use quantization='int8' for this model.")
            packed, scales = _quantized(rows, quantization)
            if weight is None:
                weight = torch.empty(count, *packed.shape, dtype=packed.dtype, device=packed.device)
                scale = torch.empty(count, *scales.shape, dtype=scales.dtype, device=scales.device)
                in_features = rows.shape[1]
            weight[e], scale[e] = packed, scales
        return cls(weight, scale, in_features)

    def forward(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return self.expert(e)(x)

    def expert(self, e: int) -> Linear:
        """Expert e as a packed `Linear` over views of its slices, in this module's mode."""
        made = _expert_views.get(self)
        if made is None or made[0] is not self.weight or made[1] is not self.scale:
            views = [self._linear_over(weight, scale) for weight, scale in zip(self.weight, self.scale)]
            made = _expert_views[self] = (self.weight, self.scale, views)
        view = made[2][e]
        view.training = self.training
        return view

    def _linear_over(self, weight: torch.Tensor, scale: torch.Tensor) -> Linear:
        return Linear(self.in_features, self.out_features, bias=False, device="meta")._packed(weight, scale, None)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The experts' matrices unpacked, (experts, out, in) of `dtype`."""
        return torch.stack([self._linear_over(w, s).dequantized(dtype) for w, s in zip(self.weight, self.scale)])

    def extra_repr(self) -> str:
        kind = "int8" if self.weight.dtype == torch.int8 else "int4"
        return f"experts={len(self.weight)}, in_features={self.in_features}, out_features={self.out_features}, {kind}"


# Each PackedExperts' views of its experts, kept beside the module rather than in it, so that a copy of a model
# (deepcopy, pickle) copies its stacks once, not the views' slices of them as well.
_expert_views = weakref.WeakKeyDictionary()


class _PackedProduct(torch.autograd.Function):
    """x W^T for packed weights, differentiable in x only (the weights are frozen buffers). The float matrix is
    unpacked again in the backward instead of being kept from the forward: F.linear would keep one float copy
    of every layer's weights until the backward, a whole float model's worth of memory in a QLoRA step. Since
    neither pass keeps the matrix past its own product, both unpack into the thread's reused one.

    Under gradient checkpointing the backward pass recomputes each layer just before its own backward (see
    models/layers.run_layer): a product recomputed there keeps its unpacked matrix until its backward, which then
    multiplies by it without unpacking again. That holds one layer's float weights at a time (about 0.3 GB for a
    7B Llama in bfloat16) and saves one unpacking of every recomputed weight matrix. A QLoRA step then multiplies
    as often as a bf16 LoRA step does (per layer 7 products in the forward, 5 recomputed, 7 in the backward: a
    decoder layer's halves are checkpointed apart, whose recomputations stop before o_proj and down_proj; the
    stack's last layer is not recomputed: 7 and 7) and adds 14 unpackings per layer (7, 5, and 2 in the
    backward), each 6-8% of its product's time for 128 rows (streamed to memory, see decode.cpp's
    unpack_int4_row_bfloat16); the last layer's forward keeps its matrices for its backward, which comes next,
    and unpacks 7. The kept matrices are looked up by layer, not saved on this product: the backward that runs is
    the forward pass's, whose products saved nothing, and a saved matrix would make checkpointing recompute o_proj
    and down_proj too, which it otherwise skips."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "Linear") -> torch.Tensor:
        ctx.layer = layer
        if backward_follows() and layer._kernel_unpacks(x.dtype):
            matrix = _spare_matrix(layer.out_features, layer.in_features, x.dtype)
            torch.ops.openformers.dequantize_into(layer.weight, layer.scale, matrix)
            kept = _unpacked.__dict__.setdefault("kept", weakref.WeakKeyDictionary())
            kept[layer] = (matrix, layer.weight, layer.weight._version)  # what it was unpacked from
            return F.linear(x, matrix)
        return F.linear(x, layer.unpacked_for_product(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if torch.is_grad_enabled():  # create_graph=True: this product keeps its matrix for a second backward
            return grad @ ctx.layer.float_weight(grad.dtype), None
        kept, weight, version = _unpacked.__dict__.get("kept", {}).pop(ctx.layer, (None, None, None))
        layer = ctx.layer
        if kept is None or kept.dtype != grad.dtype or weight is not layer.weight or version != weight._version:
            return grad @ layer.unpacked_for_product(grad.dtype), None
        x_grad = grad @ kept
        _unpacked.__dict__.setdefault("spare", []).append(kept)  # nothing else holds it: the next layer's turn
        return x_grad, None


_unpacked = threading.local()  # each thread's reused unpacked matrices, by (rows, columns, dtype), kept and spare


def _spare_matrix(rows: int, columns: int, dtype: torch.dtype) -> torch.Tensor:
    """A matrix to unpack into and keep until a backward: one given back by an earlier backward when one fits,
    since a new one is an allocation the system faults in page by page (3-6x the time of the unpacking)."""
    spare = _unpacked.__dict__.setdefault("spare", [])
    for index, matrix in enumerate(spare):
        if matrix.shape == (rows, columns) and matrix.dtype == dtype:
            return spare.pop(index)
    return torch.empty(rows, columns, dtype=dtype)


def free_unpacked_matrices() -> None:
    """Let go of this thread's reused unpacked matrices (up to one per layer shape and dtype, and one layer's
    worth kept for or given back by checkpointed backward passes), e.g. when a process is done training or
    reading prompts on a quantized model; the next product makes them again."""
    for name in ("matrices", "kept", "spare"):
        _unpacked.__dict__.pop(name, None)


QUANTIZED_FROM = (torch.float32, torch.bfloat16, torch.float16)  # what the kernel's quantize ops read as stored


def _quantized(weight: torch.Tensor, quantization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` (out, in) packed as `Linear` holds it: by the kernel's one pass over each row on the CPU (an
    11008 x 4096 bfloat16 matrix, one thread: int4 0.37-0.43 -> 0.05-0.06 CPU s, int8 0.53-0.64 -> 0.07-0.08),
    otherwise by `_int8_blocks` and `_int4_groups` in PyTorch operations: the plain path, which the kernel's
    results equal bit for bit (tests/test_quantization.py). The kernel reads a bfloat16 or float16 checkpoint's
    weights as stored, where the plain path first makes a float32 copy (exact: the same weights)."""
    if weight.device.type == "cpu" and weight.dtype in QUANTIZED_FROM and library.build() and library.loaded():
        packed, scale, finite = getattr(torch.ops.openformers, f"quantize_{quantization}")(weight.contiguous())
    else:
        packed, scale = (_int8_blocks if quantization == "int8" else _int4_groups)(weight.float())
        finite = bool(scale.isfinite().all())  # 13% of the kernel's time on float16 pairs, which it tells itself
    if finite:
        return packed, scale
    if quantization == "int8":  # a block's scale is finite exactly when its weights are
        raise ValueError("quantization='int8' rounds finite weights to steps of a block's scale, but this layer's "
                         "weights hold NaN or infinity.")
    raise ValueError(
        "quantization='int4' stores each group's scale and minimum as float16, which holds magnitudes up to "
        f"65504; this layer's weights reach {weight.abs().max().item():.4g} (or are not finite): use "
        "quantization='int8' for this model.")


def _int8_blocks(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # A scale per 32 weights rather than per row: one large weight then coarsens only its own block's grid (the
    # decoded perplexity's loss fell from +1.03% to that of llama.cpp's Q8_0, see benchmarks/quality.py). Scales
    # stay float32, not Q8_0's float16: they cost 4 of every 36 bytes instead of 2 of 34 (6% more to stream), but
    # the kernel reads them without a conversion, as it reads int4's pairs, and a float16 scale converts exactly.
    out_features, in_features = weight.shape
    blocks = -(-in_features // GROUP)
    padded = F.pad(weight, (0, blocks * GROUP - in_features)).reshape(out_features, blocks, GROUP)
    largest = padded.abs().amax(-1)
    scale = largest.clamp(min=1e-12) / 127
    steps = (padded / scale[..., None]).round().clamp(-127, 127)
    # A block of llama.cpp's Q4_0 or Q5_0 (d * (q - 8), d * (q - 16)) has its largest magnitude at most 8 or 16 of its
    # steps from zero, so largest / 127 is not its grid and would move its weights: it takes its own step, which
    # rebuilds it exactly (Gemma 3 270M's Q5_0 matrices: 0.52% of their size, root mean square, before). As
    # decode.cpp's symmetric_grid_steps: the fewest steps n <= 16 whose largest / n every weight is a multiple of.
    fewest = _symmetric_grid_steps(padded.reshape(-1, GROUP), largest.reshape(-1)).reshape(largest.shape)
    chosen = (fewest > 0).nonzero(as_tuple=True)
    moved = ~(steps[chosen] * scale[chosen][:, None] == padded[chosen]).all(-1)
    chosen = tuple(index[moved] for index in chosen)
    scale[chosen] = largest[chosen] / fewest[chosen]
    steps[chosen] = (padded[chosen] / scale[chosen][:, None]).round().clamp(-127, 127)
    steps = steps.to(torch.int8)
    return steps.reshape(out_features, -1)[:, :in_features].contiguous(), scale


def _symmetric_grid_steps(blocks: torch.Tensor, largest: torch.Tensor) -> torch.Tensor:
    """For each row of `blocks` (n, 32), the fewest steps n, 1 to 16, for which every weight is a whole multiple of
    `largest` / n exactly; 0 where there is none."""
    counts = torch.arange(1, 17, dtype=torch.float32, device=blocks.device)

    def on_grids(values, rows):  # (m, 16): whether all values are multiples of each step
        step = (largest[rows][:, None] / counts)[..., None]
        return ((values[:, None, :] / step).round() * step == values[:, None, :]).all(-1)

    return _fewest_steps(blocks, (largest > 0) & largest.isfinite(), counts, on_grids)


def _int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Each group's scale and minimum are stored as float16 (Q4_1's 20 bytes a group; float32 made it 24, a fifth
    # more for decoding to read) and rounded to it before the steps are chosen, so that each weight takes the
    # nearest step of the grid that is stored. A Q4_1 file's float16 (d, m) come back exactly: its minimum is a
    # group's smallest weight and its largest is 15 steps above.
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, in_features // GROUP, GROUP)
    # + 0.0 makes -0.0 0.0: which zero amin and amax give for a group holding both depends on their reduction
    # order, and the kernel's quantize_int4 gives the same pairs.
    lowest, highest = groups.amin(-1) + 0.0, groups.amax(-1) + 0.0
    minimum = lowest.half().float()
    scale = ((highest - minimum) / 15).half().float()
    # A span below float16's smallest scale gives a scale of 0: every step 0, the weights the minimum.
    steps = (groups - minimum[..., None]).div_(torch.where(scale == 0, 1, scale)[..., None]).round_().clamp_(0, 15)
    # A group of llama.cpp's Q4_0 (d * (q - 8), q in 0..15) that leaves steps at one end unused spans fewer than 15
    # of its steps, so the span / 15 above is not its grid. Its weight of the largest magnitude is its -8 d (step
    # 0), which gives d with its sign: with scale d and minimum -8 d (both float16 exactly) a group on that grid
    # that the grid above misses keeps its steps, so a Q4_0 file loads unchanged. (A minimum of -7 |d| for a
    # negative d, with the steps reversed, would not always be a float16.) Only groups whose d is a float16 can
    # be such groups, and only those whose first four weights are on the grid: a bfloat16 checkpoint's d are nearly
    # all float16s, and checking each of its groups whole took ten times as long as quantizing it.
    largest = torch.where(-lowest > highest, lowest, highest)
    q4_0_step = largest / -8
    _, first_on_grid = _on_q4_0_grid(groups[..., :4], q4_0_step[..., None], largest[..., None])
    candidates = (first_on_grid & (q4_0_step != 0) & (q4_0_step.half().float() == q4_0_step)).nonzero(as_tuple=True)
    group = groups[candidates]
    on_grid, q4_0 = _on_q4_0_grid(group, q4_0_step[candidates][:, None], largest[candidates][:, None])
    elsewhere = torch.ones_like(lowest, dtype=torch.bool)  # the groups on no Q4_0 grid
    elsewhere[tuple(index[q4_0] for index in candidates)] = False
    q4_0 &= ~_rebuilt(group, steps[candidates], scale[candidates], minimum[candidates])
    chosen = tuple(index[q4_0] for index in candidates)
    scale[chosen], minimum[chosen], steps[chosen] = q4_0_step[chosen], largest[chosen], on_grid[q4_0]
    # A group on an even grid of fewer than 15 steps whose step float16 cannot hold (llama.cpp's Q4_K: a float16
    # d times a six-bit scale, groups leaving steps unused) takes that grid's step, rounded to float16, where the
    # span / 15 grid above would move its weights by up to half a step (Gemma 3's Q4_K_M matrices: 4.8% of their
    # size, root mean square, against 0.06%). `_grid_steps` finds the fewest steps, as decode.cpp's grid_steps.
    fewest = _grid_steps(groups.reshape(-1, GROUP), lowest.reshape(-1), highest.reshape(-1)).reshape(lowest.shape)
    own = ((highest - lowest) / fewest.clamp(min=1)).half().float()
    chosen = (elsewhere & (fewest > 0) & (own != 0) & own.isfinite()).nonzero(as_tuple=True)
    moved = ~_rebuilt(groups[chosen], steps[chosen], scale[chosen], minimum[chosen])
    chosen = tuple(index[moved] for index in chosen)
    scale[chosen] = own[chosen]
    steps[chosen] = (groups[chosen] - minimum[chosen][:, None]).div_(own[chosen][:, None]).round_().clamp_(0, 15)
    pairs = torch.stack([scale, minimum], -1).half()  # not finite where float16 cannot hold them: refused
    steps = steps.to(torch.uint8)
    packed = steps[..., :16] | (steps[..., 16:] << 4)  # (out, groups, 16)
    return packed.reshape(out_features, -1).contiguous(), pairs


def _rebuilt(groups: torch.Tensor, steps: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """Whether each group's weights are exactly its steps times its scale plus its minimum."""
    return (steps * scale[:, None] + minimum[:, None] == groups).all(-1)


def _grid_steps(groups: torch.Tensor, lowest: torch.Tensor, highest: torch.Tensor) -> torch.Tensor:
    """For each row of `groups` (n, 32), the fewest steps, 1 to 14, of an even grid from `lowest` to `highest` that
    every weight lies on within 1/1024 of a step; 0 where there is none."""
    span = highest - lowest
    counts = torch.arange(1, 15, dtype=torch.float32, device=groups.device)

    def on_grids(values, rows):  # (m, 14): whether all values lie on each grid
        r = (values[:, None, :] - lowest[rows][:, None, None]) / (span[rows][:, None] / counts)[..., None]
        return ((r - r.round()).abs() <= 1 / 1024).all(-1)

    return _fewest_steps(groups, (span > 0) & span.isfinite(), counts, on_grids)


def _fewest_steps(groups: torch.Tensor, usable: torch.Tensor, counts: torch.Tensor, on_grids) -> torch.Tensor:
    """For each row of `groups` (n, 32), the least of `counts` whose grid all its weights lie on by
    `on_grids(values, rows)` ((m, len(counts)) for `values` of the rows `rows`); 0 where there is none, or where
    `usable` is False. Groups whose first two weights are on no grid (a float checkpoint's: nearly all) are not
    checked whole, and those two are checked a chunk of groups at a time: (n, counts, 2) at once would take about
    as much memory as a float32 copy of the matrix."""
    maybe = usable.clone()
    for start in range(0, len(groups), 65536):
        rows = slice(start, start + 65536)
        maybe[rows] &= on_grids(groups[rows, :2], rows).any(-1)
    maybe = maybe.nonzero(as_tuple=True)[0]
    first = torch.where(on_grids(groups[maybe], maybe), counts, torch.inf).amin(-1)
    fewest = torch.zeros(len(groups), dtype=torch.float32, device=groups.device)
    fewest[maybe] = torch.where(first.isfinite(), first, 0)
    return fewest


def _on_q4_0_grid(values: torch.Tensor, step: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The steps q of `values` on the grid top + step * q, and whether each row of them lies on it exactly with
    q in 0..15."""
    steps = ((values - top) / step).round()
    return steps, ((steps >= 0) & (steps <= 15) & (steps * step + top == values)).all(-1)


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; use one of {', '.join(map(repr, QUANTIZATIONS))} "
            "(weight-only: int8 with a scale per 32 weights, int4 in groups of 32), or leave it unset for the "
            "checkpoint's weights."
        )


def quantize(model: nn.Module, quantization: str, keep: tuple[str, ...] = (), prefix: str = "") -> nn.Module:
    """Replace every float linear layer of `model` by its quantized form (in the layout `layout` gives it), and
    every stack of experts' matrices that a module names in its `expert_stacks` (parameter name -> whether it is
    stored (experts, in, out), as gpt-oss's, rather than (experts, out, in)) by a `PackedExperts`, in place;
    returns the model. Modules whose names (under `prefix`, the name of `model` in the whole model) match a pattern
    of `keep` (BitsAndBytesConfig's llm_int8_skip_modules, quantization_config.is_kept) stay as they are."""
    check_quantization(quantization)
    kept = {id(module) for name, module in model.named_modules(prefix=prefix) if keep and is_kept(name, keep)}
    for module in list(model.modules()):
        if id(module) in kept:
            continue
        for name, transposed in getattr(module, "expert_stacks", {}).items():
            stack = module._parameters.get(name)
            if stack is not None:  # else packed already (a quantized load packs some stacks as it reads them)
                stack = stack.detach()
                matrix = (lambda e: stack[e].T) if transposed else (lambda e: stack[e])
                install_packed_experts(module, name, PackedExperts.from_matrices(len(stack), matrix, quantization))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or getattr(child, "scale", None) is not None or id(child) in kept:
                continue
            if quantization == "int4" and child.in_features % GROUP:
                raise ValueError(
                    f"quantization='int4' groups each row's weights by {GROUP}, but layer {name!r} has "
                    f"{child.in_features} inputs; use quantization='int8' for this model."
                )
            setattr(parent, name, Linear.from_linear(child, layout(model, child, quantization)))
    model.quantization = quantization
    return model


def install_packed_experts(module: nn.Module, name: str, packed: PackedExperts) -> None:
    """`packed` in place of `module`'s stack parameter `name`: a submodule of that name, which the module's
    products call as `packed(e, x)` (mixtral.expert_product), in the module's mode (train or eval), which decides
    what goes to the kernel (Linear.kernel_rows)."""
    delattr(module, name)
    setattr(module, name, packed.train(module.training))


def layout(model: nn.Module, linear: nn.Linear, quantization: str, stored_as: str | None = None,
           widths_mixed: bool = False) -> str:
    """The layout of `linear` in `model` quantized as `quantization`: int8 for the language-model head under int4,
    as llama.cpp keeps it at 8 bits or more (its errors land on every logit directly), and under int4 for a matrix
    that a GGUF file of mixed widths (`widths_mixed`, weights.GGUFFile.mixes_widths: Q4_K_M's Q5_0, Q6_K and Q8_0
    matrices beside Q4_K) stores in 5-8 bits (block type `stored_as`), so that each keeps the precision the file gave
    it: Gemma 3 270M Q4_K_M's perplexity is then -0.23% from its float32 (KL 0.0027), where with its 99 such
    matrices at int4 it was +11.6% (KL 0.19). decode.cpp rounds the inputs of such a stack as for int4, which int8
    products read as well, so the decoding step takes it whole."""
    if linear is getattr(model, "lm_head", None) or (widths_mixed and stored_as in WIDER_QUANTIZED_TYPES):
        return "int8"
    return quantization

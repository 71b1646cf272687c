"""The Triton recurrence compiled ahead of time for GPUs that need not be here, and what the
compiler says of each kernel: registers, spills and shared memory.

`triton.compile` builds a kernel's cubin for any target on a CPU-only machine, and the
`cuobjdump` in Triton's wheel reads its resource usage (`-res-usage`). A variant is compiled
as the launcher would compile it (`kernel_options`, the arguments' types and their 16-byte
alignment), so the figures are those of the kernel a GPU would run. Spills show as a stack
frame or local memory: the kernels call no functions and keep no local arrays, so any of
either is registers spilled.
"""

import functools
import re
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from litlab.kernels.triton_recurrent import BACKWARD, FORWARD, fits_on_chip, kernel_options

# The GPUs the layer runs on, by compute capability, and the shared memory one block may opt
# into: 96 KiB on 7.0 (the V100, which it refuses), 163 KiB on 8.0, 227 KiB on 9.0 (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability": maximum amount of
# shared memory per thread block).
ARCHS = {80: "A100", 90: "H100/H200"}
SHARED_PER_BLOCK = {70: 96 * 1024, 80: 163 * 1024, 90: 227 * 1024}
MAX_REGISTERS = 255  # per thread, on every architecture since sm_30
# The precision paths: the weights' dtype and tl.dot's input precision for fp32. bf16 and
# fp16 are what autocast gives the layer; fp32 runs TF32 where matmul precision allows it.
PATHS = {
    "fp32": (torch.float32, "ieee"),
    "tf32": (torch.float32, "tf32"),
    "bf16": (torch.bfloat16, "ieee"),
    "fp16": (torch.float16, "ieee"),
}
TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class Variant(NamedTuple):
    cell: str  # "lstm" | "gru" | "rnn"
    hidden: int
    path: str  # a key of PATHS
    kernel: str  # "forward" | "backward"
    arch: int  # compute capability, 80 for sm_80


class Usage(NamedTuple):
    """One kernel's resources as the compiler reports them (bytes, but registers)."""

    registers: int  # per thread
    stack: int  # per thread
    local: int  # per thread
    shared: int  # per block: static plus the dynamic amount the launch requests

    @property
    def spilled(self) -> int:
        return self.stack + self.local


def hidden_sizes(cell: str) -> list[int]:
    """A hidden size for each tile width the layer takes for `cell` (16, 32, ... up to the
    largest `fits_on_chip` accepts), and the largest tile again at a size that is no multiple
    of 16, for which the launcher compiles the kernel without `hidden`'s alignment hint."""
    largest = largest_on_chip(cell)
    return [16 * 2**i for i in range(largest.bit_length() - 4)] + [largest - 1]


def largest_on_chip(cell: str) -> int:
    """The largest hidden size `cell`'s Triton layer takes (a power of two: the kernels' tile)."""
    hidden = 16
    while fits_on_chip(cell, 2 * hidden):
        hidden *= 2
    return hidden


def variants(cells=("lstm", "gru", "rnn"), archs=tuple(ARCHS)) -> list[Variant]:
    """Every kernel litlab launches: each cell, precision path, kernel and accepted size."""
    return [
        Variant(cell, hidden, path, kernel, arch)
        for cell in cells
        for hidden in hidden_sizes(cell)
        for path in PATHS
        for kernel in ("forward", "backward")
        for arch in archs
    ]


def source(variant: Variant) -> tuple[ASTSource, dict]:
    """The kernel's source with the launch's argument types, constexprs and options."""
    dtype, precision = PATHS[variant.path]
    meta = kernel_options(variant.cell, variant.hidden, dtype, precision)
    data = f"*{TYPES[dtype]}"
    if variant.kernel == "forward":
        fn = FORWARD
        del meta["GRADS"]
        #          gx,   w,    b,    lengths, out,  acts
        pointers = [data, data, data, "*i64", data, "*fp32"]
    else:
        fn = BACKWARD
        #          d_out, out, acts,   w,    lengths, d_gates
        pointers = [data, data, "*fp32", data, "*i64", data]
    options = {"num_warps": meta.pop("num_warps")}
    types = [*pointers, "i32", "i32", "i32"]  # steps, batch, hidden
    names = fn.arg_names
    signature = dict(zip(names[: len(types)], types, strict=True)) | {
        name: "constexpr" for name in meta
    }
    # As the launcher specializes: torch's buffers are 16-byte aligned, and so is `hidden`
    # where it is a multiple of 16 (steps and batch vary run to run)
    aligned = [*range(len(pointers))] + [names.index("hidden")] * (variant.hidden % 16 == 0)
    attrs = {(index,): [["tt.divisibility", 16]] for index in aligned}
    return ASTSource(fn=fn, signature=signature, constexprs=meta, attrs=attrs), options


@functools.cache
def compiled(variant: Variant):
    """The kernel compiled for `variant.arch` (Triton caches it on disk, too)."""
    ast, options = source(variant)
    return triton.compile(ast, target=GPUTarget("cuda", variant.arch, 32), options=options)


@functools.cache
def usage(variant: Variant) -> Usage:
    kernel = compiled(variant)
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        report = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "-res-usage", str(cubin)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return parse_res_usage(report, kernel.metadata.shared)


def parse_res_usage(report: str, dynamic_shared: int = 0) -> Usage:
    """`cuobjdump -res-usage`'s line for the one function in a cubin, e.g.
    `REG:178 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:608 ...`."""
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", report))
    if len(fields) != 4:
        raise ValueError(f"no resource usage in cuobjdump's report:\n{report}")
    return Usage(
        int(fields["REG"]),
        int(fields["STACK"]),
        int(fields["LOCAL"]),
        int(fields["SHARED"]) + dynamic_shared,
    )


def problems(variant: Variant, found: Usage, shared_limit: int | None = None) -> list[str]:
    """What keeps the kernel from running well, or at all, on its architecture (whose shared
    memory per block is `shared_limit`, SHARED_PER_BLOCK's figure unless given)."""
    limit = shared_limit or SHARED_PER_BLOCK[variant.arch]
    return [
        message
        for failed, message in (
            (found.spilled, f"spills registers ({found.stack} B stack, {found.local} B local)"),
            (found.shared > limit, f"needs {found.shared} B of shared memory, over {limit} B"),
            (found.registers > MAX_REGISTERS, f"needs {found.registers} registers"),
        )
        if failed
    ]

"""The Triton recurrence's kernels compiled for the A100 (sm_80) and H100/H200 (sm_90) without
a GPU: registers, shared memory and spills of every kernel `cell_impl=triton` launches, and of
the next tile up, which `fits_on_chip` refuses; then sm_70 (V100), which the layer refuses.

Static figures from the compiler (`litlab.kernels.triton_aot`), the same on any machine.
"""

from report import write_section

from litlab.kernels.triton_aot import (
    ARCHS,
    PATHS,
    SHARED_PER_BLOCK,
    Variant,
    hidden_sizes,
    largest_on_chip,
    problems,
    usage,
)
from litlab.kernels.triton_recurrent import kernel_options

CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "Elman"}
KERNELS = ("forward", "backward")
OLD = 70  # the V100's sm_70


def label(cell: str, hidden: int, path: str, kernel: str) -> str:
    return f"{CELLS[cell]} {hidden} {path} {kernel}"


def kernels(cell: str) -> list[tuple[int, str, str, bool]]:
    """(hidden, path, kernel, accepted by fits_on_chip) of every row for `cell`."""
    sizes = [(hidden, True) for hidden in hidden_sizes(cell)] + [(2 * largest_on_chip(cell), False)]
    return [
        (hidden, path, kernel, accepted)
        for hidden, accepted in sizes
        for path in PATHS
        for kernel in KERNELS
    ]


ROWS = tuple(label(cell, *row[:3]) for cell in CELLS for row in kernels(cell))


def figures(variant: Variant) -> str:
    found = usage(variant)
    verdict = "; ".join(problems(variant, found))
    return f"{found.registers} | {found.shared / 1024:.0f} | {found.spilled} | {verdict or 'fits'}"


def row(cell: str, hidden: int, path: str, kernel: str, accepted: bool, archs) -> str:
    dtype, precision = PATHS[path]
    warps = kernel_options(cell, hidden, dtype, precision)["num_warps"]
    name = label(cell, hidden, path, kernel) + ("" if accepted else " (refused)")
    cells = " | ".join(figures(Variant(cell, hidden, path, kernel, arch)) for arch in archs)
    return f"| {name} | {warps} | {cells} |"


def header(archs) -> str:
    columns = "".join(
        f" sm_{arch} registers | shared, KiB | spilled, B | sm_{arch} verdict |" for arch in archs
    )
    return f"| kernel (cell, hidden, precision) | warps |{columns}\n|---|---:|" + (
        "---:|---:|---:|---|" * len(archs)
    )


def main() -> None:
    archs = tuple(ARCHS)
    table = "\n".join(
        [header(archs)] + [row(cell, *kernel, archs) for cell in CELLS for kernel in kernels(cell)]
    )
    old = "\n".join(
        [header((OLD,))]
        + [
            row(cell, largest_on_chip(cell), path, kernel, True, (OLD,))
            for cell in CELLS
            for path in PATHS
            for kernel in KERNELS
        ]
    )
    limits = ", ".join(f"sm_{arch} {SHARED_PER_BLOCK[arch] // 1024} KiB" for arch in archs)
    write_section(
        "triton_aot",
        "Triton kernels on sm_80 / sm_90, compiled without a GPU",
        f"""Each kernel `cell_impl=triton` launches, compiled by `triton.compile` for the A100
(sm_80) and the H100/H200 (sm_90) as the launcher would (`litlab.kernels.triton_aot`), read
by `cuobjdump -res-usage`: registers per thread, shared memory per block (static and the
launch's dynamic share), and bytes spilled per thread (stack and local memory). A verdict
other than "fits" names what fails: spilled registers, or shared memory over the block's
opt-in limit ({limits}). Rows marked "refused" are the next tile up, which `fits_on_chip`
sends to compiled cells; a size that is no multiple of 16 runs the same tile without the
launcher's alignment hint for `hidden`. These are the compiler's figures, the same on any
machine; `make test` holds every accepted row to "fits" (tests/test_triton_aot.py).

{table}

The largest accepted tile compiled for sm_70 (V100, {SHARED_PER_BLOCK[OLD] // 1024} KiB of shared
memory per block). Triton supports NVIDIA GPUs from sm_80 on, so there `cell_impl=triton` runs
compiled cells instead.

{old}
""",
    )


if __name__ == "__main__":
    main()

"""The Triton recurrence compiled ahead of time for the A100 (sm_80) and the H100/H200 (sm_90),
on any machine, GPU or not: every kernel litlab launches fits the GPU's registers and shared
memory without spilling, `fits_on_chip` is the compiler's bound, and older GPUs or larger
layers fall back to compiled cells with one line in the log."""

import logging

import pytest
import torch

from litlab.kernels import triton_recurrent
from litlab.kernels.recurrent import CELLS
from litlab.kernels.triton_aot import (
    ARCHS,
    MAX_REGISTERS,
    PATHS,
    SHARED_PER_BLOCK,
    Variant,
    largest_on_chip,
    parse_res_usage,
    problems,
    usage,
    variants,
)
from litlab.kernels.triton_recurrent import TritonRecurrent, fallback, fits_on_chip
from litlab.nets import RecurrentClassifier


def name(variant: Variant) -> str:
    return f"{variant.cell}-{variant.hidden}-{variant.path}-{variant.kernel}-sm{variant.arch}"


@pytest.mark.parametrize("variant", variants(), ids=name)
def test_every_kernel_compiles_without_spills_within_the_gpu_s_limits(variant):
    found = usage(variant)
    assert found.registers > 0 and found.shared > 0  # a kernel, read
    assert not problems(variant, found), f"{name(variant)} {found}: {problems(variant, found)}"


KERNELS, FP32 = ("forward", "backward"), ("fp32", "tf32")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fits_on_chip_is_the_compiler_s_bound(cell):
    """The largest size accepted compiles clean on both GPUs in every precision; twice that
    (the next tile) does not fit, or spills, on each of them in fp32, the rule's case."""
    largest = largest_on_chip(cell)
    assert fits_on_chip(cell, largest) and not fits_on_chip(cell, largest + 1)
    for arch in ARCHS:
        accepted = [
            Variant(cell, largest, path, kernel, arch) for path in PATHS for kernel in KERNELS
        ]
        assert not any(problems(variant, usage(variant)) for variant in accepted)
        over = (
            Variant(cell, 2 * largest, path, kernel, arch) for path in FP32 for kernel in KERNELS
        )
        assert any(problems(variant, usage(variant)) for variant in over), (cell, arch)


def test_res_usage_reads_spills_and_the_launch_s_shared_memory():
    report = """
Resource usage:
 Common:
  GLOBAL:0
 Function _forward:
  REG:32 STACK:2864 SHARED:1024 LOCAL:0 CONSTANT[0]:432 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    found = parse_res_usage(report, dynamic_shared=73728)
    assert found == (32, 2864, 0, 74752) and found.spilled == 2864
    variant = Variant("rnn", 128, "fp32", "forward", 80)
    assert problems(variant, found) == ["spills registers (2864 B stack, 0 B local)"]
    too_big = found._replace(stack=0, shared=SHARED_PER_BLOCK[80] + 1, registers=MAX_REGISTERS)
    assert problems(variant, too_big) == ["needs 166913 B of shared memory, over 166912 B"]
    with pytest.raises(ValueError, match="no resource usage"):
        parse_res_usage("cuobjdump info: no cubin")


@pytest.mark.parametrize(
    "capability, hidden, reason",
    [
        ((9, 0), 64, None),
        ((8, 0), 64, None),
        (None, 64, None),  # no GPU: the interpreter, for tests
        ((7, 0), 64, "this GPU is sm_70, older than the sm_80 its kernels need"),
        ((7, 5), 32, "this GPU is sm_75, older than the sm_80 its kernels need"),
        ((9, 0), 65, "hidden_size=65 is over the 64 units its gru kernels hold on chip"),
    ],
)
def test_which_gpus_and_sizes_run_the_kernels(capability, hidden, reason):
    assert fallback("gru", hidden, capability) == reason


def test_a_gpu_older_than_sm80_runs_compiled_cells_with_one_line_naming_it(caplog, monkeypatch):
    """A V100 (sm_70), which Triton does not support: the net takes compiled cells when it is
    built, before Triton compiles anything."""
    monkeypatch.setattr(triton_recurrent, "gpu_capability", lambda: (7, 0))
    with caplog.at_level(logging.WARNING, "litlab.nets.recurrent"):
        net = RecurrentClassifier(hidden_size=64, cell="lstm", cell_impl="triton")
    assert net.cell_impl == "compiled" and not isinstance(net.layers[0], TritonRecurrent)
    (record,) = caplog.records
    assert record.getMessage() == (
        "cell_impl=triton: this GPU is sm_70, older than the sm_80 its kernels need; "
        "running compiled cells instead"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here to compare with")
def test_on_a_cuda_gpu_its_own_kernels_fit_the_limits_it_reports():
    """On a GPU (`bash benchmarks/gpu.sh --all`): the kernels compiled for its architecture fit
    the shared memory the driver reports, and the limits cited here are the driver's."""
    major, minor = torch.cuda.get_device_capability()
    arch = 10 * major + minor
    optin = torch.cuda.get_device_properties().shared_memory_per_block_optin
    assert SHARED_PER_BLOCK.get(arch, optin) == optin
    for variant in variants(archs=(arch,)):
        assert not problems(variant, usage(variant), shared_limit=optin), name(variant)

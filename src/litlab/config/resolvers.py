"""OmegaConf resolvers the configs use; imported wherever a config is composed.

Importing this module stays cheap (no torch): every command line composes a config, and a
mistaken one is refused before torch is imported.
"""

import secrets

from omegaconf import OmegaConf

from litlab import objective


def fastest_cpu_precision() -> str:
    """bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX), where it
    measured faster; elsewhere bf16 is emulated and slower than fp32. Kernels held to AVX2
    (ATEN_CPU_CAPABILITY=avx2) count as a CPU without it: oneDNN's then have no bf16 layers."""
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "bf16-mixed" if native and avx512 else "32-true"


# A short random id per process: run directories started in the same second stay apart.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
if not OmegaConf.has_resolver("fastest_cpu_precision"):
    OmegaConf.register_new_resolver("fastest_cpu_precision", fastest_cpu_precision)


def hydra_choice(group: str) -> str | None:
    """The option chosen for a config group (`experiment`), where Hydra runs the command."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


if not OmegaConf.has_resolver("hydra_choice"):
    OmegaConf.register_new_resolver("hydra_choice", hydra_choice)
# Which way the monitored and the optimized metric improve (see litlab.objective).
RESOLVERS = {"objective_mode": objective.mode, "objective_direction": objective.direction}
for name, resolver in RESOLVERS.items():
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, resolver)

"""FLOP counts and the CPU's fp32 peak, shared by the benchmarks that report 'share of peak'.

FLOPs: 2 per multiply-add, counted by forward hooks on Conv2d, ConvTranspose2d
and Linear (elementwise ops, activations and the O(B^2 D) TC estimator are
ignored: they are well under 1% here). A training step is counted as 3x the
forward pass (forward, grad w.r.t. inputs, grad w.r.t. weights).

Peak: cores x clock x fp32 FLOPs per cycle per core. The clock is read from
/proc/cpuinfo ('cpu MHz'; a VM often shows the base clock, so boost can make the
measured share look better than it is). FLOPs per cycle by ISA: AVX-512 on Intel
(two 512-bit FMA ports) 64; AVX-512 on AMD Zen 4 (256-bit FMA datapaths) 32;
AVX2 + FMA 32; otherwise SSE 8.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def count_forward_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-add FLOPs of one forward pass over `example`, per batch."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
            total += 2 * k * output.numel()
        elif isinstance(layer, nn.ConvTranspose2d):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels // layer.groups
            total += 2 * k * inputs[0].numel()
        elif isinstance(layer, nn.Linear):
            total += 2 * layer.in_features * output.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    with torch.no_grad():
        module(example)
    for h in handles:
        h.remove()
    return total


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_peak_gflops(cores: int | None = None) -> tuple[float, str]:
    """fp32 peak in GFLOP/s and a sentence saying how it was computed."""
    info = _cpuinfo()
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "").split()
    vendor = "AMD" if "AuthenticAMD" in info else "Intel" if "GenuineIntel" in info else "?"
    mhz = [float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    ghz = (mhz[0] if mhz else 2000.0) / 1000
    if "avx512f" in flags:
        per_cycle = 64 if vendor == "Intel" else 32
        isa = f"AVX-512 ({vendor})"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2+FMA"
    else:
        per_cycle, isa = 8, "SSE"
    cores = cores or os.cpu_count() or 1
    peak = cores * ghz * per_cycle
    how = f"{cores} cores x {ghz:.2f} GHz x {per_cycle} fp32 FLOP/cycle ({isa})"
    how += f" = {peak:.0f} GFLOP/s"
    return peak, how

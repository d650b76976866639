"""FLOP counts and the CPU's fp32 peak, shared by the benchmarks that report 'share of peak'.

FLOPs: 2 per multiply-add, counted by forward hooks on Conv2d, ConvTranspose2d
and Linear (elementwise ops, activations and the O(B^2 D) TC estimator are
ignored: they are well under 1% here). A training step is counted as 3x the
forward pass (forward, grad w.r.t. inputs, grad w.r.t. weights).

Peak: cores x clock x fp32 FLOPs per cycle per core. The clock is read from
/proc/cpuinfo ('cpu MHz'; a VM often shows the base clock, so boost can make the
measured share look better than it is). FLOPs per cycle by ISA: AVX-512 on Intel
(two 512-bit FMA ports) 64; AVX-512 on AMD Zen 4 (256-bit FMA datapaths) 32;
AVX2 + FMA 32; otherwise SSE 8. Conv layers count output pixels x Cin x k x k,
transposed convs input pixels x Cout x k x k, Linear in x out; all x 2.
"""

from __future__ import annotations

import os
import re
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


def cpu_peak_gflops(cores: int | None = None) -> tuple[float, str]:
    """fp32 peak in GFLOP/s and a sentence saying how it was computed."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if text else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)] or [2000.0]
    vendor = (re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M) or [None, "?"])[1]
    family = int((re.search(r"^cpu family\s*:\s*(\d+)", text, re.M) or [None, "0"])[1])
    if "avx512f" in flags and vendor == "AuthenticAMD" and family == 25:
        per_cycle, why = 32, "Zen 4 AVX-512: 2 FMA pipes x 256-bit (double-pumped) = 2x8x2"
    elif "avx512f" in flags:
        per_cycle, why = 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOP"
    elif {"avx2", "fma"} <= flags:
        per_cycle, why = 32, "AVX2+FMA: 2 FMA units x 8 fp32 lanes x 2 FLOP"
    else:
        per_cycle, why = 8, "SSE: 4 lanes x (add + mul)"
    cores, ghz = cores or os.cpu_count() or 1, max(mhz) / 1000.0
    peak = cores * ghz * per_cycle
    how = f"{cores} cores x {ghz:.2f} GHz (cpuinfo 'cpu MHz') x {per_cycle} FLOP/cycle ({why})"
    return peak, f"{how} = {peak:.0f} GFLOP/s"

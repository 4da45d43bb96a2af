"""The machine: device, precision and seeds, shared by training, evaluation and the lab.

Shape legend: B batch (sequences), T time, V vocab.
"""
import contextlib
import ctypes
import ctypes.util
import os
import random

import numpy as np
import torch


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def set_determinism():
    """torchtitan's set_determinism: deterministic kernels, no cudnn autotune, a fixed cuBLAS workspace."""
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def keep_freed_memory():
    """glibc returns freed blocks above its thresholds to the system and every later tensor of that size
    faults its pages back in; with many 0.1-3 MB activations a step (the synthetic students) that is a
    measurable share of the step (lab/BENCHMARK.md). Blocks up to 32 MiB (the largest the option takes) then
    come from the heap, and the heap is not trimmed below 1 GiB of free memory: the same as
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment. A no-op without glibc. Nothing here
    calls it: a program that wants it says so (lab/experiment.py)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20), libc.mallopt(-1, 1 << 30)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        pass


def get_device(name: str = "auto") -> torch.device:
    """auto: cuda (this process's LOCAL_RANK under torchrun), then mps, then cpu. On CUDA, fp32 matmuls may
    use TF32 (as Ampere+ defaults for convolutions): 8x the fp32 rate at ~1e-3 relative error."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def autocast_ctx(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def cpu_has_amx() -> bool:
    """AMX tiles do bf16 matmuls ~6x faster than fp32; an AVX2-only CPU runs bf16 ~100x slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read(1 << 16)
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device, dim: int = 0) -> str:
    """auto: bf16 on a GPU that has it, fp16 on other GPUs; on a CPU bf16 only with AMX and a model of width
    >= 256 (smaller ones are bound by non-matmul work, where bf16 only adds casts), else fp32. A capability
    check, not a timing probe: a probe spends minutes on CPUs without fast bf16."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and dim >= 256 and cpu_has_amx():
        return "bf16"
    return "fp32"

"""Helpers shared by the bench scripts. Imported as ``_common``: running ``python bench/X.py`` puts
``bench/`` first on ``sys.path``."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so that wall times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, its queued device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo ('' if it has none), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU's otherwise (for the reports' ``device_name``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()

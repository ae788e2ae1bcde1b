"""What machine a benchmark ran on, how loaded it was, and how much memory a process holds.

Plain standard library plus torch's device query; Linux ``/proc`` where available, with
fallbacks elsewhere.
"""

from __future__ import annotations

import os
import platform
import resource
import sys

import torch


def resident_bytes() -> int:
    """Current resident set size (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_resident_bytes()


def peak_resident_bytes() -> int:
    """``ru_maxrss`` of this process in bytes (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo``, or ``None`` where there is none."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_average() -> str:
    """1/5/15-minute load averages, or ``n/a`` where the platform has none."""
    try:
        return " / ".join(f"{load:.1f}" for load in os.getloadavg())
    except OSError:
        return "n/a"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (CUDA, CPU allocator or Python)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error)
    return "can't allocate memory" in message or "out of memory" in message


def device_name(device: torch.device) -> str:
    """``cuda (<GPU name>)`` or ``cpu (<processor>, <n> logical cores)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({processor}, {os.cpu_count()} logical cores)"

"""What the figures were measured on: recorded with every result, since they depend on it.

Cores (and how many this process may use), CPU model, memory, OS, the Python that ran, the
versions of every package that sits on a measured path, and the load average at the start and at
the end of the run (a busy neighbour on a shared machine shows up there). Standard library only;
fields that a platform cannot tell (no ``/proc`` on macOS) are ``None``.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

__all__ = ["describe_machine", "load_average", "proc_field"]

PACKAGES = (
    "paradigm-kit",
    "aiohttp",
    "yarl",
    "multidict",
    "requests",
    "urllib3",
    "httpx",
    "httpcore",
    "openai",
    "matplotlib",
)


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def proc_field(path: str, name: str) -> str | None:
    """The value of the first ``name: value`` line of a /proc file; None without /proc."""
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    return proc_field("/proc/cpuinfo", "model name") or platform.processor() or None


def _memory_total_mb() -> float | None:
    total = proc_field("/proc/meminfo", "MemTotal:")  # "16384256 kB"
    return int(total.split()[0]) / 1024 if total else None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": _cpu_model(),
        "memory_total_mb": _memory_total_mb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": _package_versions(),
    }

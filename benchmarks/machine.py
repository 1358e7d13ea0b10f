"""Machine and version facts recorded in every benchmark's JSON output, and a timing helper."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Dict


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> Dict[str, Any]:
    """CPU, core count, OS, Python/torch/ASE versions, torch threads and CUDA device if any."""
    import ase
    import torch

    import forcefield_et

    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ase": ase.__version__,
        "forcefield_et": forcefield_et.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def median_ms(function: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``function``, in ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)

"""Model precision names: 'float32' / 'float64' and their torch dtypes."""

from __future__ import annotations

from typing import Union

import torch


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """'float32' / 'float64' (or a torch dtype) -> torch dtype; anything else raises ValueError."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
    elif dtype in ("float32", "float64", "single", "double"):
        return torch.float32 if dtype in ("float32", "single") else torch.float64
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


__all__ = ["resolve_dtype"]

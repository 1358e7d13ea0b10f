"""Model precision names and their torch dtypes."""

from __future__ import annotations

import pytest
import torch

from forcefield_et.dtypes import resolve_dtype


@pytest.mark.parametrize(("name", "dtype"), [("float32", torch.float32), ("single", torch.float32),
                                             ("float64", torch.float64), ("double", torch.float64),
                                             (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_names_and_dtypes_resolve(name, dtype):
    assert resolve_dtype(name) is dtype


@pytest.mark.parametrize("bad", ["float16", "Float32", "", torch.float16, torch.int64, None, 32])
def test_other_precisions_are_refused(bad):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        resolve_dtype(bad)

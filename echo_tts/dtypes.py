"""Model dtypes named as strings (settings, CLI flags) turned into ``torch.dtype``."""

from __future__ import annotations

import torch

from .errors import InvalidInput

__all__ = ["as_dtype"]

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16``/``torch.float32`` or their names ("bfloat16", "bf16", "float32", "fp32")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidInput(f"unknown dtype {dtype!r}; use one of: {', '.join(_DTYPES)}") from None

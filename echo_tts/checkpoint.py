"""Read safetensors files and load them strictly into modules, with errors that name tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointMismatch, WeightsError, WeightsNotFound

_LISTED = 10  # names shown per category in a mismatch message


def read_safetensors(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, as stored (no dtype change), on ``device``."""
    if not os.path.isfile(path):
        raise WeightsNotFound(f"safetensors file {os.fspath(path)!r} does not exist")
    try:
        return load_file(os.fspath(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read safetensors file {os.fspath(path)!r}: {exc}") from exc


def _listing(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return f"{len(names)} {label}: {shown}{more}"


def _mismatch(what: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> CheckpointMismatch:
    parts = [
        _listing(label, names)
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if names
    ]
    return CheckpointMismatch(f"{what} checkpoint does not match the model: " + "; ".join(parts))


def load_state_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    optional: Callable[[str], bool] | None = None,
) -> None:
    """Load ``state`` into ``module`` with ``assign=True``, refusing any mismatch.

    Every tensor of the module must be in ``state`` unless ``optional(name)`` is true (those keep
    the module's current value), no extra tensor may be in ``state``, and shapes must agree.
    Otherwise :class:`CheckpointMismatch` lists the first names of each kind, with counts;
    ``what`` names the checkpoint in the message (e.g. ``"EchoDiT"``).
    Key renames belong in a ``load_state_dict`` pre-hook of the module; they are honoured.
    """
    expected = module.state_dict(keep_vars=True)
    misshaped = sorted(
        f"{name} (checkpoint {tuple(tensor.shape)}, model {tuple(expected[name].shape)})"
        for name, tensor in state.items()
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape)
    )
    if misshaped:
        raise _mismatch(what, [], [], misshaped)
    try:
        result = module.load_state_dict(dict(state), strict=False, assign=True)
    except RuntimeError as exc:  # shape errors after a pre-hook renamed keys
        raise CheckpointMismatch(f"{what} checkpoint does not match the model: {exc}") from exc
    missing = sorted(name for name in result.missing_keys if optional is None or not optional(name))
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        raise _mismatch(what, missing, unexpected, [])

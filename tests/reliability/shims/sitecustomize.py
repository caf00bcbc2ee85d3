"""Fault injection for ``tests/reliability/test_worker_errors.py`` only: that test puts this directory on
the ``PYTHONPATH`` of the one ``python -m worker`` it starts, so Python imports this module at start-up.
Nothing in the service loads it.

It wraps ``Pipeline.synthesize_batch`` so that a piece of text holding one of these words makes the
render fail inside the call, the way the fault would:
- ``oomcpu``: asks torch's CPU allocator for a petabyte (a real ``RuntimeError: ... can't allocate memory``);
- ``oompython``: asks Python for a petabyte (a real ``MemoryError``);
- ``oomcuda``: a petabyte on the GPU when there is one (a real ``torch.OutOfMemoryError``), else raises
  that class with CUDA's wording;
- ``modelbreak``: a matrix product of mismatched shapes inside torch (a real ``RuntimeError``, not memory).
Any other text renders as usual.
"""

from __future__ import annotations

from typing import Any


def _install() -> None:
    import torch

    from echo_tts.pipeline import Pipeline

    original = Pipeline.synthesize_batch
    petabyte = 1 << 50

    def synthesize_batch(self: Any, texts: Any, *args: Any, **kwargs: Any) -> Any:
        words = " ".join(texts).lower()
        if "oomcpu" in words:
            torch.empty(petabyte, dtype=torch.uint8)
        if "oompython" in words:
            bytearray(petabyte)
        if "oomcuda" in words:
            if torch.cuda.is_available():
                torch.empty(petabyte, dtype=torch.uint8, device="cuda")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1024.00 TiB (injected)")
        if "modelbreak" in words:
            torch.ones(2, 3) @ torch.ones(2, 3)
        return original(self, texts, *args, **kwargs)

    Pipeline.synthesize_batch = synthesize_batch  # type: ignore[method-assign]


_install()

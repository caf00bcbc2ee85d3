"""The device check of issue 10 (``bench/bench_gpu_efficiency.py``) stays runnable: a CPU run at a tiny width
gives every figure the GPU run reports, so a short device lease is not lost to a broken script."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_gpu_efficiency(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCH))  # the bench scripts import their helpers as top-level modules
    import bench_gpu_efficiency

    yield bench_gpu_efficiency
    for name in ("bench_gpu_efficiency", "bench_canvas", "bench_sampler", "_common"):
        sys.modules.pop(name, None)


def test_a_tiny_cpu_run_reports_flops_memory_batch_gain_and_the_book_projection(bench_gpu_efficiency) -> None:  # type: ignore[no-untyped-def]
    # Given a tiny random model on the CPU, When the device check runs at batch 1 and 2
    args = "--device cpu --model-size 64 --num-layers 1 --num-heads 2 --steps 2 --batches 1,2 --book-batch 2"
    report = bench_gpu_efficiency.main([*args.split(), "--words", "120", "--repeats", "1"])
    # Then each batch size has counted FLOPs, a share of the peak, its gain over batch 1 and its memory
    assert set(report["batches"]) == {"1", "2"} and report["cuda_graphs"] is False
    for row in report["batches"].values():
        assert row["tflop_per_call"] > 0 and 0 < row["fraction_of_peak"] < 1 and row["peak_memory_gib"] == 0
    assert report["batches"]["1"]["batch_gain"] == 1.0
    # And the FLOPs of a batch of 2 are twice those of one item (the same work per item)
    one, two = (report["batches"][b]["tflop_per_call"] for b in ("1", "2"))
    assert two == pytest.approx(2 * one, rel=0.02)
    # And the book projection covers its canvas lengths, whose shares add up to one
    book = report["ten_hour_book"]
    assert book["projected_sampling_minutes"] > 0 and book["segments_per_10h"] > 0
    assert sum(length["share"] for length in book["canvas_lengths"].values()) == pytest.approx(1.0, abs=0.01)

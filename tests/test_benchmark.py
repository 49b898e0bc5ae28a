"""The benchmark's training-step measure runs every ladder width (timings themselves are not tested)."""

from snn.benchmarks.training_step import training_step_times


def test_every_width_and_the_distilled_step_are_timed():
    rows = training_step_times(batch=1, size=16, steps=1, warmup=0)
    labels = [r.label for r in rows]
    assert labels == ["FP32", "W8A8", "W4A4", "W4A4 + distillation", "W2A4", "W1A4", "W1A1"]
    assert all(r.seconds > 0 and r.samples_per_s == 1 / r.seconds for r in rows)

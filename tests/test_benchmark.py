"""The benchmark's training-step measure runs every ladder width (timings themselves are not tested)."""

import pytest
import torch

from snn.benchmarks.training_step import STEPS, config_for, random_batch, training_step, training_step_times
from snn.models.factory import build_model


def test_every_width_and_the_distilled_step_are_timed():
    rows = training_step_times(batch=1, size=16, steps=1, warmup=0)
    labels = [r.label for r in rows]
    assert labels == ["FP32", "W8A8", "W4A4", "W4A4 + distillation", "W2A4", "W1A4", "W1A1"]
    fp = next(r for r in rows if r.label == "FP32")
    assert fp.ratio_to_fp == 1.0
    assert all(r.samples_per_s == pytest.approx(1 / r.seconds) for r in rows)  # batch 1


@pytest.mark.parametrize(("label", "name", "overrides"), STEPS)
def test_each_timed_step_trains_its_model_at_the_width_it_is_named_after(label, name, overrides):
    from snn.quantization.control import model_widths, widths_tag

    cfg = config_for(name, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.model_args())
    assert widths_tag(*model_widths(model)) == label
    data = random_batch(cfg, 2, 16, torch.Generator().manual_seed(0))
    model(data["events"][:1])
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    step = training_step(model, cfg, data)
    step()
    moved = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert any(k.endswith("conv.weight") for k in moved)  # the step really is a training step


def test_the_loader_measure_counts_samples_after_the_first_batch(monkeypatch):
    from snn.benchmarks import measures

    clock = iter([10.0, 10.5])
    monkeypatch.setattr(measures.time, "perf_counter", lambda: next(clock))
    batches = [{"events": torch.zeros(3, 1)} for _ in range(3)]  # the first one is not timed
    assert measures.loader_samples_per_s(batches, 2) == pytest.approx(6 / 0.5)
    clock = iter([0.0, 2.0])
    assert measures.loader_samples_per_s(batches, 5) == pytest.approx(6 / 2.0)  # the loader ran out


def test_the_ann_twin_has_no_neurons_left_and_the_same_convolutions():
    from snn.benchmarks.measures import as_ann
    from snn.models.flownet import EventSNNFlowNetLiteV2
    from snn.models.neurons import LIFNeuron

    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1)
    convs = [m.weight.shape for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    twin = as_ann(model)
    assert not any(isinstance(m, LIFNeuron) for m in twin.modules())
    assert [m.weight.shape for m in twin.modules() if isinstance(m, torch.nn.Conv2d)] == convs
    assert twin(torch.rand(1, 2, 2, 16, 16)).shape == (1, 2, 16, 16)


def test_event_rates_inference_and_loader_measures_return_positive_figures(tiny_synthetic_root):
    from snn.benchmarks.measures import events_to_tensor, inference, loader_samples_per_s
    from snn.config import load_config
    from snn.data.loaders import make_dataset, make_loader

    rates = events_to_tensor(1000, 32, repeats=1)
    assert {"counts", "voxel"} <= rates.keys() and all(r > 0 for r in rates.values())
    latency = inference(16, repeats=1)
    assert latency["seconds_per_window"] > 0 and 0 <= latency["forward_rss_mb"] < latency["peak_rss_mb"]
    cfg = load_config(
        overrides={"data_root": str(tiny_synthetic_root), "dataset": "blinksim", "crop_size": 32, "batch_size": 2}
    )
    loader = make_loader(cfg, make_dataset(cfg, tiny_synthetic_root, "train", train=True), train=True)
    loader.sampler.set_epoch(0)
    assert loader_samples_per_s(loader, 2) > 0  # runs on a real loader (the count is tested above)


def test_the_lif_measure_times_ours_and_the_plain_loop_and_compares_their_results():
    from snn.benchmarks.measures import multistep_lif

    runs = multistep_lif((3, 1, 2, 4, 4), repeats=1)
    assert list(runs)[:2] == ["ours (fused)", "plain per-step loop"]
    assert all(r["seconds"] > 0 for r in runs.values())
    assert runs["plain per-step loop"]["spikes_differing"] == 0.0
    assert runs["plain per-step loop"]["max_grad_difference"] < 1e-5


def test_interleaved_timing_calls_each_run_once_per_round_and_pairs_the_ratios():
    from snn.benchmarks.timing import interleaved_seconds, median_ratios

    calls = []
    seconds = interleaved_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4  # warm-up round, then three timed ones, alternating
    assert [len(v) for v in seconds.values()] == [3, 3]
    # b took twice as long as a in two rounds of three; the ratio of their medians says 0.4.
    ratios = median_ratios({"a": [1.0, 10.0, 5.0], "b": [2.0, 20.0, 1.0]}, "a")
    assert ratios == {"a": 1.0, "b": 2.0}


def test_a_measure_in_a_fresh_process_returns_its_result_from_another_process():
    import os

    from snn.benchmarks.timing import in_fresh_process

    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(divmod, 7, 2) == (3, 1)

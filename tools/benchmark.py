"""Benchmark training and data speed: each measure a ratio taken within one run.

    python tools/benchmark.py                  # batch 8 of 48x48 crops, 10 timed steps per measure
    python tools/benchmark.py --quick --json results/benchmark.json

Measures: the training step at FP and every ladder width (and W4A4 distilling from W8A8), each
over the FP step, on crops and on one full 320x320 frame; the spiking step over the same network
with ReLUs; the multi-step LIF's forward+backward against a plain per-step loop (and spikingjelly's
and snntorch's neurons where installed, pip install -r requirements-bench.txt); events to tensor
(counts, voxel grid, tonic's voxel grid where installed); the data loader's samples/s over the
training step's, with 0 and 2 workers; inference per window at the crop size and at 320x320, with
peak memory; the numpy integer reference of the shipped W8A8 on a 320x320 window beside the PyTorch
model on the same window. Each measure runs in a fresh process; within it, contenders are timed in
interleaved rounds and each ratio is the median of the rounds' ratios, which cancels most of the
drift of a shared machine. Still, run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from snn.benchmarks.measures import (  # noqa: E402
    events_to_tensor,
    inference,
    integer_reference,
    loader_samples_per_s,
    multistep_lif,
    spiking_vs_ann,
)
from snn.benchmarks.timing import in_fresh_process  # noqa: E402
from snn.benchmarks.training_step import training_step_times  # noqa: E402
from snn.config import load_config  # noqa: E402
from snn.data.loaders import make_dataset, make_loader, prepare_data_root  # noqa: E402
from snn.evaluation.report import markdown_table  # noqa: E402

MEASURES = ("training", "ann", "lif", "events", "loader", "inference", "reference")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=48, help="square crop side (default: %(default)s)")
    p.add_argument(
        "--full-size", type=int, default=320, metavar="N",
        help="also time the training step on one NxN frame, as BlinkSim writes them; 0 skips (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=10, help="timed steps per measure (default: %(default)s)")
    p.add_argument("--events", type=int, default=2_000_000, help="events for the tensor measure (default: 2 M)")
    p.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up, 200 k events")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"],
        help="where the training steps run (default: %(default)s); inference runs on CUDA when present",
    )  # fmt: skip
    p.add_argument(
        "--only", nargs="+", choices=MEASURES, default=list(MEASURES), metavar="M",
        help=f"run only these measures: {', '.join(MEASURES)} (default: all)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    steps, warmup = (3, 1) if args.quick else (args.steps, 2)
    events = 200_000 if args.quick else args.events
    doc: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                 f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
                 "device": args.device, "batch": args.batch, "size": args.size, "steps": steps}  # fmt: skip
    print(f"{doc['machine']}; batch {args.batch} of {args.size}x{args.size}, median of {steps} steps\n")

    rows = (
        in_fresh_process(training_step_times, args.batch, args.size, steps, warmup, args.device)
        if "training" in args.only or "loader" in args.only
        else []
    )
    if "training" in args.only:
        _training_table(doc, rows, "training_step", f"training step, batch {args.batch} of {args.size}x{args.size}")
        if args.full_size:
            full = in_fresh_process(training_step_times, 1, args.full_size, 2 if args.quick else 3, 1, args.device)
            _training_table(doc, full, "training_step_full_size",
                            f"training step, batch 1 of {args.full_size}x{args.full_size}")  # fmt: skip
    if "ann" in args.only:
        _ann(doc, args, steps, warmup)
    if "lif" in args.only:
        _lif(doc, args.quick)
    if "events" in args.only:
        _events(doc, events)
    if "loader" in args.only:
        _loader(doc, args, rows)
    if "inference" in args.only:
        _inference(doc, args)
    if "reference" in args.only:
        _reference(doc, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _training_table(doc, rows, key: str, title: str) -> None:
    doc[key] = [vars(r) for r in rows]
    print(markdown_table([title, "ms/step", "samples/s", "time / FP time"],
                         [[r.label, f"{1000 * r.seconds:.0f}", f"{r.samples_per_s:.1f}", f"{r.ratio_to_fp:.2f}"]
                          for r in rows]) + "\n")  # fmt: skip


def _ann(doc, args, steps, warmup) -> None:
    twin = in_fresh_process(spiking_vs_ann, args.batch, args.size, steps, warmup)
    doc["spiking_vs_ann"] = twin
    print(f"spiking step {1000 * twin['spiking']:.0f} ms, same network with ReLUs {1000 * twin['ann']:.0f} ms: "
          f"ratio {twin['ratio']:.2f}\n")  # fmt: skip


def _lif(doc, quick) -> None:
    shape = (5, 4, 32, 64, 64) if quick else (5, 4, 32, 160, 160)
    runs = in_fresh_process(multistep_lif, shape, 2 if quick else 5)
    doc["multistep_lif"] = {"shape": list(shape), "runs": runs}
    print(markdown_table([f"LIF forward+backward, [T, B, C, H, W] = {list(shape)}", "ms", "time / ours",
                          "spikes that differ", "largest gradient difference"],
                         [[name, f"{1000 * r['seconds']:.1f}", f"{r['ratio_to_ours']:.2f}",
                           str(r['spikes_differing']), f"{r['max_grad_difference']:.1e}"]
                          for name, r in runs.items()]) + "\n")  # fmt: skip


def _events(doc, events) -> None:
    rates = in_fresh_process(events_to_tensor, events, 320)
    doc["events_per_s"] = rates
    tonic = rates.get("tonic voxel")
    print(markdown_table(["events to tensor (320x320, 5 bins)", "M events/s", "over tonic's voxel grid"],
                         [[k, f"{v / 1e6:.1f}", f"{v / tonic:.2f}" if tonic else "-"]
                          for k, v in rates.items() if k != "tonic voxel max difference"]))  # fmt: skip
    if "tonic voxel max difference" in rates:
        print(f"largest difference to tonic's grid on the bins both define: {rates['tonic voxel max difference']:.1e}")
    print()


def _loader(doc, args, rows) -> None:
    cfg = load_config(overrides={"batch_size": args.batch, "crop_size": args.size})
    train_set = make_dataset(cfg, prepare_data_root(cfg), "train", train=True)
    loader_rows = []
    for workers in (cfg.num_workers, 2):
        loader = make_loader(load_config(overrides={"batch_size": args.batch, "num_workers": workers}), train_set,
                             train=True)  # fmt: skip
        loader.sampler.set_epoch(0)
        rate = loader_samples_per_s(loader, 10 if args.quick else 40)
        loader_rows.append([str(workers), f"{rate:.1f}", f"{rate / rows[0].samples_per_s:.1f}"])
        doc.setdefault("loader", []).append({"workers": workers, "samples_per_s": rate,
                                             "ratio_to_fp_step": rate / rows[0].samples_per_s})  # fmt: skip
    print(markdown_table(["loader workers", "samples/s", "over the FP step's samples/s"], loader_rows) + "\n")


def _inference(doc, args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    doc["inference"] = {str(size): inference(size, 1 if args.quick else 3, device) for size in (args.size, 320)}
    memory = "CUDA max allocated (MB)" if device == "cuda" else "peak RSS (MB): process / forward passes"
    print(markdown_table(["inference (FP, batch 1, " + device + ", own process)", "ms/window", memory],
                         [[f"{s}x{s}", f"{1000 * v['seconds_per_window']:.0f}",
                           f"{v['cuda_max_allocated_mb']:.0f}" if device == "cuda"
                           else f"{v['peak_rss_mb']:.0f} / {v['forward_rss_mb']:.0f}"]
                          for s, v in ((int(k), v) for k, v in doc["inference"].items())]))  # fmt: skip


def _reference(doc, args) -> None:
    r = doc["integer_reference"] = integer_reference(320, 2 if args.quick else 5)
    print(markdown_table(["one 320x320 window, shipped W8A8, CPU", "s/window", "reference over it"],
                         [["numpy integer reference", f"{r['reference_seconds']:.2f}", "1.00"],
                          ["PyTorch, integer evaluation", f"{r['torch_integer_seconds']:.2f}",
                           f"{r['reference_over_torch_integer']:.2f}"],
                          ["PyTorch, float fake-quant", f"{r['torch_float_seconds']:.2f}",
                           f"{r['reference_over_torch_float']:.2f}"]]))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

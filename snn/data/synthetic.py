"""Built-in synthetic event-flow dataset: the default training data, generated on first use.

Each sequence is a stack of textured layers moving with their own affine motions
(``synthetic_scene``); the log image is rendered at ``substeps`` times per frame and fed to an
event-camera model (``synthetic_events``); the forward flow between frames is exact, with a
validity mask that excludes occluded and disoccluded pixels. Sequences are written in BlinkSim
layout C, so the ordinary BlinkSim reader loads them::

    <root>/
      dataset.yaml                 # SyntheticConfig, split sizes, seed
      train/seq_0000/events.h5     # events/{x,y,t,p,ms_to_idx}
      train/seq_0000/flow.h5       # flow/{forward,valid,event_start,event_end,
                                   #       frame_event_start,frame_event_end}
      train/seq_0000/config.yaml   # fps, duration, height, width, seed
      val/seq_0000/...
      test/seq_0000/...

Everything is a deterministic function of the dataset seed: each sequence gets its own seed
from ``(dataset seed, split, index)``, so the worker count does not matter and the splits never
share a scene.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from snn.data.synthetic_config import SyntheticConfig, SyntheticDataset
from snn.data.synthetic_events import (
    EventSimulator,
    draw_thresholds,
    finalize_events,
    noise_events,
)
from snn.data.synthetic_io import write_sequence_layout_c
from snn.data.synthetic_scene import UNIT_RANGE, MotionRanges, forward_flow, render, sample_scene

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_SPLITS",
    "GenerationSummary",
    "SyntheticConfig",
    "ensure_synthetic_dataset",
    "estimate_seconds",
    "generate_dataset",
    "generate_sequence",
    "sequence_seed",
    "write_sequence_layout_c",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("data/synthetic")
SPLITS = ("train", "val", "test")
# One source of truth with the run config's `synthetic` section, so the tool regenerates what training expects.
DEFAULT_SPLITS = {k: v for k, v in SyntheticDataset().split_args().items() if k.startswith("num_")}
DATASET_FORMAT = "snn-synthetic-flow"
DATASET_VERSION = 1

# Seconds per simulated pixel-sub-step on one core, measured on the reference 2-core machine;
# only used for the "~N s" hint, so it need not be exact.
_SECONDS_PER_PIXEL_SUBSTEP = 1.1e-7
_POOL_STARTUP_SECONDS = 1.0


def generate_sequence(seed: int, config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Render one sequence and simulate its events.

    Returns numpy arrays: events ``x``, ``y`` (uint16), ``t`` (int64 us, sorted), ``p`` (uint8,
    1 = ON); ``flow`` float32 [N, H, W, 2] and ``valid`` bool [N, H, W] for frame i -> i+1;
    ``frame_times_us`` int64 [N+1]; the rendered ``log_frames`` float32 [N+1, H, W] and their
    topmost-layer ``labels`` int8 [N+1, H, W]; and the scalars ``seed`` and ``fps``.
    """
    cfg = config
    scene_seq, threshold_seq, noise_seq = np.random.SeedSequence(seed).spawn(3)
    rng = np.random.default_rng(scene_seq)
    layers = sample_scene(
        rng,
        cfg.height,
        cfg.width,
        cfg.num_frames,
        int(rng.integers(cfg.min_foreground, cfg.max_foreground + 1)),
        MotionRanges(cfg.background_speed, cfg.background_accel, cfg.background_spin, cfg.background_zoom),
        MotionRanges(cfg.foreground_speed, cfg.foreground_accel, cfg.foreground_spin, cfg.foreground_zoom),
        background_photos=cfg.background_photos,
        photo_fraction=cfg.photo_fraction,
        scene_scale=cfg.scene_scale,
        texture_noise=cfg.texture_noise,
    )
    threshold_rng = np.random.default_rng(threshold_seq)
    shape = (cfg.height, cfg.width)
    thresholds = [
        draw_thresholds(threshold_rng, shape, mean, cfg.threshold_std, cfg.threshold_min)
        for mean in (cfg.threshold_on, cfg.threshold_off)
    ]

    interval = cfg.frame_interval_us
    frames = np.empty((cfg.num_frames, *shape), np.float32)
    labels = np.empty((cfg.num_frames, *shape), np.int8)
    simulator = None
    for k in range((cfg.num_frames - 1) * cfg.substeps + 1):
        image, label = render(layers, k / cfg.substeps, cfg.height, cfg.width)
        if simulator is None:
            simulator = EventSimulator(image, 0.0, *thresholds, cfg.refractory_us)
        else:
            simulator.step(image, k * interval / cfg.substeps)
        if k % cfg.substeps == 0:
            frames[k // cfg.substeps] = image
            labels[k // cfg.substeps] = label

    num_flows = cfg.num_frames - 1
    flow = np.empty((num_flows, *shape, 2), np.float32)
    valid = np.empty((num_flows, *shape), bool)
    for i in range(num_flows):
        flow[i], valid[i] = forward_flow(layers, i, i + 1, labels[i], labels[i + 1])

    duration_us = num_flows * interval
    noise = noise_events(np.random.default_rng(noise_seq), shape, duration_us, cfg.noise_rate_hz)
    events = finalize_events([simulator.events(), noise], cfg.width, duration_us)
    return {
        **events,
        "flow": flow,
        "valid": valid,
        "frame_times_us": np.arange(cfg.num_frames, dtype=np.int64) * interval,
        "log_frames": frames,
        "labels": labels,
        "seed": np.int64(seed),
        "fps": np.float64(cfg.fps),
    }


def sequence_seed(dataset_seed: int, split: str, index: int) -> int:
    """Seed of sequence ``index`` of ``split``: distinct per (dataset seed, split, index)."""
    key = (SPLITS.index(split), index)
    state = np.random.SeedSequence(dataset_seed, spawn_key=key).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))  # 63 bits, so it fits the int64 the files store


@dataclass(frozen=True)
class GenerationSummary:
    """What ``generate_dataset`` produced, for logs and the tool's report."""

    root: Path
    num_sequences: int
    num_events: int
    num_windows: int
    mean_abs_flow: float  # px, over all pixels of all flow maps
    valid_fraction: float
    seconds: float

    @property
    def events_per_window(self) -> float:
        return self.num_events / max(self.num_windows, 1)


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def _generate_and_write(task: tuple[str, int, dict]) -> tuple[int, int, float, int, int]:
    """Pool job: generate one sequence, write it, return (events, windows, sum|flow|, px, valid)."""
    seq_dir, seed, config_dict = task
    seq = generate_sequence(seed, SyntheticConfig.from_dict(config_dict))
    write_sequence_layout_c(Path(seq_dir), seq)
    magnitude = np.linalg.norm(seq["flow"], axis=-1)
    return (
        int(seq["t"].size),
        int(seq["flow"].shape[0]),
        float(magnitude.sum(dtype=np.float64)),
        int(magnitude.size),
        int(seq["valid"].sum()),
    )


def _spawn_can_start_workers() -> bool:
    """Spawned workers re-run the caller's main script from its file; a script read from stdin
    (``python - <<EOF``) or a string has none, so its workers would die at start-up."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not Path(main_file).exists():
        logger.info("main script %s is no file that workers can re-import; generating in this process", main_file)
        return False
    return True


def _is_populated(root: Path) -> bool:
    return root.exists() and (not root.is_dir() or any(root.iterdir()))


def generate_dataset(
    root: str | os.PathLike,
    config: SyntheticConfig,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> GenerationSummary:
    """Generate the train/val/test splits under ``root``.

    The dataset is built in a temporary sibling folder and moved into place at the end, so an
    interrupted run never leaves a partial dataset that looks complete. Raises
    ``FileExistsError`` if ``root`` already holds files and ``overwrite`` is false.
    """
    root = Path(root)
    if _is_populated(root) and not overwrite:
        raise FileExistsError(
            f"{root} already exists and is not empty; pass overwrite=True "
            "(tools/make_synthetic_dataset.py --force) to replace it"
        )
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    root.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # Not tempfile.mkdtemp: its 0700 mode would become the dataset's; mkdir honours the umask.
    staging = root.with_name(f".{root.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        tasks = [
            (str(staging / split / f"seq_{i:04d}"), sequence_seed(seed, split, i), config.to_dict())
            for split in SPLITS
            for i in range(sizes[split])
        ]
        for split in SPLITS:
            (staging / split).mkdir()
        logger.info("generating %d synthetic sequences in %s with %d worker(s)", len(tasks), root, workers)
        stats = []
        with tqdm(total=len(tasks), desc="synthetic dataset", unit="seq", disable=not progress) as bar:
            if workers > 1 and len(tasks) > 1 and _spawn_can_start_workers():
                # spawn: safe if the caller has threads. An executor, not multiprocessing.Pool, because
                # a worker that dies at start-up breaks it with an error, where a Pool restarts it forever.
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(min(workers, len(tasks)), context, initializer=_init_worker) as pool:
                    for result in pool.map(_generate_and_write, tasks):
                        stats.append(result)
                        bar.update(1)
            else:
                for task in tasks:
                    stats.append(_generate_and_write(task))
                    bar.update(1)
        _write_dataset_yaml(staging / "dataset.yaml", config, sizes, seed)
        _move_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    totals = np.array(stats, dtype=np.float64).sum(axis=0) if stats else np.zeros(5)
    summary = GenerationSummary(
        root=root,
        num_sequences=len(stats),
        num_events=int(totals[0]),
        num_windows=int(totals[1]),
        mean_abs_flow=float(totals[2] / max(totals[3], 1)),
        valid_fraction=float(totals[4] / max(totals[3], 1)),
        seconds=time.perf_counter() - start,
    )
    logger.info("synthetic dataset ready in %s (%.1f s, %d sequences)", root, summary.seconds, summary.num_sequences)
    return summary


def _move_into_place(staging: Path, root: Path) -> None:
    """Atomically swap ``staging`` in as ``root``, removing an old ``root`` afterwards."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.replace(root, old)
    os.replace(staging, root)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _dataset_record(config: SyntheticConfig, sizes: dict[str, int], seed: int) -> dict:
    return {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "seed": int(seed),
        "splits": {split: int(sizes[split]) for split in SPLITS},
        "config": config.to_dict(),
    }


def _write_dataset_yaml(path: Path, config: SyntheticConfig, sizes: dict, seed: int) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(_dataset_record(config, sizes, seed), f, sort_keys=False)


def estimate_seconds(config: SyntheticConfig, num_sequences: int, workers: int = 2) -> float:
    """Rough wall time to generate ``num_sequences`` sequences (for the first-use message)."""
    work = config.height * config.width * (config.num_frames - 1) * config.substeps
    startup = _POOL_STARTUP_SECONDS if workers > 1 else 0.0
    return startup + num_sequences * work * _SECONDS_PER_PIXEL_SUBSTEP / max(workers, 1)


def regenerate_hint(root: Path, config: SyntheticConfig, sizes: dict[str, int], seed: int) -> str:
    """The command that writes exactly the requested dataset, or, where the tool lacks a flag, what to do instead."""
    flags = ("height", "width", "num_frames", "scene_scale")  # the settings the tool has a flag for
    defaults = SyntheticConfig().to_dict()
    others = sorted(k for k, v in config.to_dict().items() if k not in flags and v != defaults.get(k))
    if others:  # settings the tool has no flag for: let training regenerate it from the config
        return f"remove {root}; the next training run generates it from the config"
    args = [
        f"--output {root}",
        f"--num-train {sizes['train']} --num-val {sizes['val']} --num-test {sizes['test']} --seed {seed}",
        f"--height {config.height} --width {config.width} --num-frames {config.num_frames}",
    ]
    if config.scene_scale != UNIT_RANGE:
        args.append("--scene-scale {:g} {:g}".format(*config.scene_scale))
    args.append("--force")
    return "python tools/make_synthetic_dataset.py " + " ".join(args)


def ensure_synthetic_dataset(
    root: str | os.PathLike = DEFAULT_ROOT,
    config: SyntheticConfig | None = None,
    *,
    num_train: int = DEFAULT_SPLITS["num_train"],
    num_val: int = DEFAULT_SPLITS["num_val"],
    num_test: int = DEFAULT_SPLITS["num_test"],
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Return ``root``, generating the synthetic dataset there first if it is not there yet.

    An existing dataset (``root/dataset.yaml``) is used as is; if it was generated with other
    settings than the ones asked for, a warning says so and gives the command that regenerates it.
    """
    root = Path(root)
    config = config or SyntheticConfig()
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    wanted = _dataset_record(config, sizes, seed)
    marker = root / "dataset.yaml"
    if marker.exists():
        with open(marker) as f:
            found = yaml.safe_load(f) or {}
        differing = sorted(key for key in wanted if found.get(key) != wanted[key])
        if differing:
            logger.warning(
                "synthetic dataset in %s was generated with different %s than requested; using it as is "
                "(to regenerate it as requested: %s)",
                root,
                ", ".join(differing),
                regenerate_hint(root, config, sizes, seed),
            )
        return root
    total = num_train + num_val + num_test
    logger.info(
        "generating the synthetic dataset in %s (first use, ~%.0f s)", root, estimate_seconds(config, total, workers)
    )
    generate_dataset(root, config, num_train, num_val, num_test, seed=seed, workers=workers, progress=progress)
    return root

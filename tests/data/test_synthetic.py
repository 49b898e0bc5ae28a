"""Tests of the synthetic event-flow generator and its layout-C output."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml

from snn.data.synthetic import (
    SyntheticConfig,
    ensure_synthetic_dataset,
    generate_dataset,
    generate_sequence,
    sequence_seed,
    write_sequence_layout_c,
)
from tests.tool_modules import load_tool

SMALL = SyntheticConfig(num_frames=6)  # default 64x64 scenes, fewer frames
TINY = SyntheticConfig(height=32, width=32, num_frames=5)


@pytest.fixture(scope="module")
def seq() -> dict[str, np.ndarray]:
    return generate_sequence(3, SMALL)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "ds"
    generate_dataset(root, TINY, 2, 1, 1, seed=7, workers=1, progress=False)
    return root


def _window(seq: dict, i: int) -> slice:
    times = seq["frame_times_us"]
    a, b = np.searchsorted(seq["t"], [times[i], times[i + 1]], side="left")
    return slice(int(a), int(b))


def test_same_seed_same_sequence_other_seed_differs(seq: dict) -> None:
    again = generate_sequence(3, SMALL)
    assert again.keys() == seq.keys()
    for key in seq:
        np.testing.assert_array_equal(again[key], seq[key], err_msg=key)
    other = generate_sequence(4, SMALL)
    assert not np.array_equal(other["log_frames"], seq["log_frames"])
    assert not np.array_equal(other["flow"], seq["flow"])


def test_shapes_and_dtypes(seq: dict) -> None:
    n, h, w = SMALL.num_frames - 1, SMALL.height, SMALL.width
    assert seq["flow"].shape == (n, h, w, 2) and seq["flow"].dtype == np.float32
    assert seq["valid"].shape == (n, h, w) and seq["valid"].dtype == bool
    assert seq["log_frames"].shape == (n + 1, h, w)
    np.testing.assert_array_equal(seq["frame_times_us"], np.arange(n + 1) * 33333)
    assert seq["t"].dtype == np.int64 and np.all(np.diff(seq["t"]) >= 0)
    assert seq["t"][0] >= 0 and seq["t"][-1] <= seq["frame_times_us"][-1]
    assert seq["x"].max() < w and seq["y"].max() < h


def test_gt_flow_warps_next_frame_onto_current(seq: dict) -> None:
    h, w = SMALL.height, SMALL.width
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    frames = seq["log_frames"]
    for i in range(SMALL.num_frames - 1):
        flow, valid = seq["flow"][i], seq["valid"][i]
        warped = cv2.remap(frames[i + 1], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
        gt_error = np.abs(warped - frames[i])[valid].mean()
        zero_error = np.abs(frames[i + 1] - frames[i])[valid].mean()
        assert gt_error < 0.06, (i, gt_error)
        assert zero_error > 3 * gt_error, (i, gt_error, zero_error)


def test_flow_magnitude_and_valid_mask(seq: dict) -> None:
    magnitude = np.linalg.norm(seq["flow"], axis=-1)
    assert 0.5 < magnitude.mean() < 5.0
    assert (magnitude > 0.05).mean() > 0.95  # the background moves too
    for i, valid in enumerate(seq["valid"]):
        overlap = len(np.unique(seq["labels"][i])) > 1
        assert overlap and valid.any() and not valid.all(), i
        assert valid.mean() > 0.6, (i, valid.mean())
        # Where the topmost layer changes between frames the pixel is disoccluded.
        assert not valid[seq["labels"][i] != seq["labels"][i + 1]].any()


def test_events_spread_over_window_and_follow_intensity_change(seq: dict) -> None:
    h, w = SMALL.height, SMALL.width
    substep_us = 33333 / SMALL.substeps
    frames = seq["log_frames"]
    assert set(np.unique(seq["p"])) == {0, 1}
    for i in range(SMALL.num_frames - 1):
        window = _window(seq, i)
        t = seq["t"][window] - seq["frame_times_us"][i]
        assert len(np.unique((t // substep_us).astype(int))) >= 10
        counts = np.bincount(seq["y"][window].astype(int) * w + seq["x"][window], minlength=h * w).reshape(h, w)
        change = np.abs(frames[i + 1] - frames[i])
        strong, flat = change > 3 * SMALL.threshold_on, change < 0.02
        assert strong.sum() > 20 and flat.sum() > 20
        assert counts[strong].mean() > 5 * max(counts[flat].mean(), 0.05), i


def test_written_layout_c(tmp_path: Path, seq: dict) -> None:
    write_sequence_layout_c(tmp_path / "s", seq)
    n, h, w = SMALL.num_frames - 1, SMALL.height, SMALL.width
    with h5py.File(tmp_path / "s" / "events.h5", "r") as f:
        ev = f["events"]
        expected = {"x": np.uint16, "y": np.uint16, "t": np.int64, "p": np.uint8, "ms_to_idx": np.uint64}
        for name, dtype in expected.items():
            assert ev[name].dtype == dtype, name
            assert ev[name].ndim == 1
        t, ms = ev["t"][:], ev["ms_to_idx"][:]
        np.testing.assert_array_equal(t, seq["t"])
    duration = int(seq["frame_times_us"][-1])
    assert (len(ms) - 1) * 1000 >= duration
    np.testing.assert_array_equal(ms, np.searchsorted(t, np.arange(len(ms)) * 1000))
    with h5py.File(tmp_path / "s" / "flow.h5", "r") as f:
        fl = f["flow"]
        assert fl["forward"].dtype == np.float32 and fl["forward"].shape == (n, h, w, 2)
        assert fl["valid"].dtype == np.uint8 and fl["valid"].shape == (n, h, w, 1)
        np.testing.assert_array_equal(fl["valid"][..., 0], seq["valid"])
        times = {k: fl[k][:] for k in ("event_start", "event_end", "frame_event_start", "frame_event_end")}
    for k, v in times.items():
        assert v.dtype == np.int64 and v.shape == (n,), k
    np.testing.assert_array_equal(times["event_start"], seq["frame_times_us"][:-1])
    np.testing.assert_array_equal(times["event_end"], seq["frame_times_us"][1:])
    for i in range(n):
        first, last = times["frame_event_start"][i], times["frame_event_end"][i]
        inside = (t >= times["event_start"][i]) & (t <= times["event_end"][i])
        assert first == np.flatnonzero(inside)[0] and last == np.flatnonzero(inside)[-1]
    info = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert info["fps"] == 30.0 and info["height"] == h and info["width"] == w
    assert info["duration"] == pytest.approx(duration * 1e-6)


def test_empty_window_indices(tmp_path: Path, seq: dict) -> None:
    quiet = dict(seq)
    keep = (seq["t"] < seq["frame_times_us"][1]) | (seq["t"] > seq["frame_times_us"][2])
    for key in "xytp":
        quiet[key] = seq[key][keep]
    write_sequence_layout_c(tmp_path / "q", quiet)
    with h5py.File(tmp_path / "q" / "flow.h5", "r") as f:
        start, end = f["flow/frame_event_start"][1], f["flow/frame_event_end"][1]
    assert start == end + 1


def test_dataset_layout_and_split_seeds(tiny_root: Path) -> None:
    record = yaml.safe_load((tiny_root / "dataset.yaml").read_text())
    assert record["splits"] == {"train": 2, "val": 1, "test": 1}
    assert SyntheticConfig.from_dict(record["config"]) == TINY
    seqs = sorted(p.relative_to(tiny_root).as_posix() for p in tiny_root.glob("*/seq_*"))
    assert seqs == ["test/seq_0000", "train/seq_0000", "train/seq_0001", "val/seq_0000"]
    seeds = {yaml.safe_load((tiny_root / s / "config.yaml").read_text())["seed"] for s in seqs}
    assert len(seeds) == 4
    assert sequence_seed(7, "train", 0) != sequence_seed(7, "val", 0)
    assert not list(tiny_root.parent.glob(".ds.partial-*"))


def test_dataset_identical_for_any_worker_count(tiny_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "ds"
    generate_dataset(other, TINY, 2, 1, 1, seed=7, workers=2, progress=False)
    files = sorted(p.relative_to(tiny_root) for p in tiny_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for rel in files:
        assert (tiny_root / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_workers_from_a_script_read_on_stdin_do_not_hang(tmp_path: Path) -> None:
    # Spawned workers cannot re-import a main script that came on stdin; this once restarted them forever.
    script = (
        "from snn.data.synthetic import generate_dataset\n"
        "from snn.data.synthetic_config import SyntheticConfig\n"
        f"generate_dataset({str(tmp_path / 'ds')!r}, SyntheticConfig(height=32, width=32, num_frames=5),"
        " 2, 0, 0, workers=2, progress=False)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-"], input=script, text=True, cwd=repo, timeout=120, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ds" / "train").iterdir()) == ["seq_0000", "seq_0001"]


def test_generate_refuses_existing_root(tiny_root: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_dataset(tiny_root, TINY, 1, 0, 0, workers=1, progress=False)


def test_ensure_reuses_and_warns_on_other_config(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = (tiny_root / "dataset.yaml").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        out = ensure_synthetic_dataset(
            tiny_root, SyntheticConfig(), num_train=2, num_val=1, num_test=1, seed=7, progress=False
        )
    assert out == tiny_root
    assert (tiny_root / "dataset.yaml").stat().st_mtime_ns == before
    (warning,) = [r.getMessage() for r in caplog.records if "different config" in r.getMessage()]
    # The advice regenerates what was asked for: the requested sizes, seed and frame size.
    assert f"make_synthetic_dataset.py --output {tiny_root} --num-train 2 --num-val 1 --num-test 1 --seed 7" in warning
    assert "--height 64 --width 64 --num-frames 16 --force" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ensure_synthetic_dataset(tiny_root, TINY, num_train=2, num_val=1, num_test=1, seed=7)
    assert not caplog.records


def test_ensure_generates_on_first_use(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "fresh"
    with caplog.at_level(logging.INFO):
        out = ensure_synthetic_dataset(root, TINY, num_train=1, num_val=0, num_test=0, workers=1, progress=False)
    assert (out / "dataset.yaml").exists() and (out / "train" / "seq_0000" / "flow.h5").exists()
    assert any("first use" in r.getMessage() for r in caplog.records)


def test_config_rejects_unknown_key_and_bad_values() -> None:
    with pytest.raises(ValueError, match="bogus"):
        SyntheticConfig.from_dict({"bogus": 1}, source="x.yaml")
    with pytest.raises(ValueError, match="substeps"):
        SyntheticConfig(substeps=4)
    with pytest.raises(ValueError, match="height"):
        SyntheticConfig.from_dict({"height": "64"})
    assert SyntheticConfig.from_dict(SyntheticConfig().to_dict()) == SyntheticConfig()
    assert SyntheticConfig(foreground_speed=[1.0, 2.0]).foreground_speed == (1.0, 2.0)
    with pytest.raises(ValueError, match="foreground_speed"):
        SyntheticConfig(foreground_speed=[3.0, 2.0])


def test_tool_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = load_tool("make_synthetic_dataset")
    out = tmp_path / "tool_ds"
    args = [
        "--output",
        str(out),
        "--height",
        "32",
        "--width",
        "32",
        "--num-train",
        "1",
        "--num-val",
        "1",
        "--num-test",
        "0",
        "--num-frames",
        "3",
        "--workers",
        "1",
    ]
    assert tool.main(args) == 0
    marker = out / "train" / "seq_0000" / "events.h5"
    before = marker.read_bytes()
    capsys.readouterr()
    assert tool.main([*args, "--seed", "5"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--force" in err and len(err.splitlines()) == 1
    assert marker.read_bytes() == before
    assert tool.main([*args, "--seed", "5", "--force"]) == 0
    assert marker.read_bytes() != before
    assert not list(tmp_path.glob(".tool_ds.*"))


def test_tool_writes_a_scaled_set_and_the_warning_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    tool = load_tool("make_synthetic_dataset")
    out = tmp_path / "scaled"
    args = ["--output", str(out), "--height", "32", "--width", "32", "--num-train", "1", "--num-val", "0",
            "--num-test", "0", "--num-frames", "3", "--workers", "1"]  # fmt: skip
    assert tool.main([*args, "--scene-scale", "1", "2"]) == 0
    record = yaml.safe_load((out / "dataset.yaml").read_text())
    assert record["config"]["scene_scale"] == [1.0, 2.0]
    # the set python train.py asks for (scaled) against one at the generator's own scale: the
    # warning's command writes the scaled one
    plain = tmp_path / "plain"
    assert tool.main([*args, "--output", str(plain)]) == 0
    scaled = SyntheticConfig(height=32, width=32, num_frames=3, scene_scale=(1, 2))
    with caplog.at_level(logging.WARNING):
        ensure_synthetic_dataset(plain, scaled, num_train=1, num_val=0, num_test=0, progress=False)
    (warning,) = [r.getMessage() for r in caplog.records if "different config" in r.getMessage()]
    assert "--scene-scale 1 2 --force" in warning
    capsys.readouterr()
    assert tool.main([*args, "--output", str(tmp_path / "bad"), "--scene-scale", "2", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scene_scale" in err and len(err.splitlines()) == 1


def test_scene_scale_multiplies_texture_and_motion_sizes() -> None:
    from snn.data.synthetic_scene import MotionRanges, sample_scene

    motion = MotionRanges((0.6, 2.4), 0.03, 0.01, 0.006)
    args = (32, 32, 5, 1, motion, motion)
    plain_rng = np.random.default_rng(5)
    plain_rng.uniform()  # the scale's draw, so that both scenes draw the rest alike
    plain = sample_scene(plain_rng, *args)
    scaled = sample_scene(np.random.default_rng(5), *args, scene_scale=(2.0, 2.0))
    for a, b in zip(plain, scaled, strict=True):
        np.testing.assert_allclose(b.vel, 2 * a.vel)
        np.testing.assert_allclose(b.acc, 2 * a.acc)
        assert b.spin == a.spin and b.zoom == a.zoom
    # textures drawn at twice the unit are smoother: smaller differences between neighbouring pixels
    step = [float(np.abs(np.diff(layers[0].texture, axis=1)).mean()) for layers in (plain, scaled)]
    assert step[1] < 0.75 * step[0]


def test_scene_scale_is_validated_and_left_out_of_the_record_at_one() -> None:
    assert "scene_scale" not in SyntheticConfig().to_dict()
    assert SyntheticConfig(scene_scale=[1, 2]).to_dict()["scene_scale"] == [1, 2]
    assert SyntheticConfig.from_dict({"scene_scale": [1.0, 2.0]}).scene_scale == (1.0, 2.0)
    for bad in ([0, 1], [2, 1], [1]):
        with pytest.raises(ValueError, match="scene_scale"):
            SyntheticConfig(scene_scale=bad)


def _flat_fraction(texture: np.ndarray, motion_px: float = 2.0, threshold: float = 0.2) -> float:
    """Share of pixels where a move of ``motion_px`` changes the log intensity by less than a threshold."""
    gx = np.abs(np.diff(texture, axis=1))[:-1]
    gy = np.abs(np.diff(texture, axis=0))[:, :-1]
    return float((np.hypot(gx, gy) * motion_px < threshold).mean())


def test_texture_noise_near_zero_leaves_flat_ground_between_the_patches() -> None:
    from snn.data.synthetic_scene import make_texture

    rng = np.random.default_rng(0)
    textured = np.mean([_flat_fraction(make_texture(rng, (128, 128), 1.0)) for _ in range(10)])
    flat = np.mean([_flat_fraction(make_texture(rng, (128, 128), 1.0, (0.0, 0.0))) for _ in range(10)])
    assert flat > textured + 0.15
    # the contrast of what is left is the same: the patches keep their edges
    assert 0.3 < float(make_texture(np.random.default_rng(1), (128, 128), 1.0, (0.0, 0.0)).std()) < 0.7


def test_texture_noise_at_one_draws_nothing_so_old_datasets_stay_the_same() -> None:
    plain = generate_sequence(3, TINY)
    same = generate_sequence(3, SyntheticConfig(height=32, width=32, num_frames=5, texture_noise=(1.0, 1.0)))
    other = generate_sequence(3, SyntheticConfig(height=32, width=32, num_frames=5, texture_noise=(0.0, 0.5)))
    # A range that draws a factor of almost exactly 1 still shifts the random stream: (1, 1) draws nothing.
    drawn = generate_sequence(3, SyntheticConfig(height=32, width=32, num_frames=5, texture_noise=(1.0, 1.0 + 1e-9)))
    np.testing.assert_array_equal(plain["log_frames"], same["log_frames"])
    assert not np.array_equal(plain["log_frames"], drawn["log_frames"])
    assert not np.array_equal(plain["log_frames"], other["log_frames"])
    assert "texture_noise" not in TINY.to_dict()
    assert SyntheticConfig(texture_noise=[0, 1]).to_dict()["texture_noise"] == [0, 1]
    for bad in ([-1, 1], [1, 0.5], [0.5]):
        with pytest.raises(ValueError, match="texture_noise"):
            SyntheticConfig(texture_noise=bad)

"""The constant flow per tile searched on a grid, and the pseudo-labels built from it."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from snn.data.provider import build_dataset
from snn.data.synthetic import generate_dataset
from snn.data.synthetic_config import SyntheticConfig
from snn.evaluation.contrast import bin_times, reference_times, splat
from snn.evaluation.landscape import tile_span
from snn.evaluation.pseudo_labels import TileLabelling, fill_tiles, label_sequence, label_span, span_ends
from snn.evaluation.tile_search import (
    binomial_blur,
    event_values,
    flow_grid,
    neighbour_spread,
    tile_scores,
    tile_search,
)
from tests.tool_modules import load_tool


def _moving_dots(flows, num_bins: int = 2, windows: int = 2, dots: int = 6) -> torch.Tensor:
    """Random dots in each 8x8 tile of a frame, each tile's dots moving at its own constant flow (px a
    window; rows of tiles, None: a tile without events) over ``windows`` windows, at whole pixels."""
    gen = torch.Generator().manual_seed(0)
    times = bin_times(num_bins, windows=windows)
    span = (times[-1] - times[0]).item()
    rows, cols = len(flows), len(flows[0])
    events = torch.zeros(1, windows * num_bins, 2, 8 * rows, 8 * cols)
    for r, row in enumerate(flows):
        for c, flow in enumerate(row):
            if flow is None:
                continue
            u, v = flow
            start = torch.randint(2, 6, (dots, 2), generator=gen)  # (x, y) at time 0, inside the tile
            for k, t in enumerate(times.tolist()):
                # Whole-pixel steps from bin to bin (exact where the flow moves a whole pixel a bin),
                # centred on the tile so that the dots stay inside it.
                dx = round(u * (t - times[0].item())) - round(u * span / 2)
                dy = round(v * (t - times[0].item())) - round(v * span / 2)
                x = (start[:, 0] + dx).clamp(0, 7) + 8 * c
                y = (start[:, 1] + dy).clamp(0, 7) + 8 * r
                events[0, k, 0, y, x] = 1.0
    return events


def test_flow_grid_spans_its_limits_and_refuses_a_bad_step():
    grid = flow_grid(1.0, 0.5)
    assert grid.shape == (25, 2) and grid.min() == -1.0 and grid.max() == 1.0
    assert (grid == 0).all(dim=1).sum() == 1  # zero flow is a candidate
    with pytest.raises(ValueError, match="positive"):
        flow_grid(1.0, 0.0)


def test_tile_scores_are_the_variance_of_each_tiles_full_frame_image():
    # The patch around each tile must give exactly what the full frame would, events lost at the
    # frame's border included.
    gen = torch.Generator().manual_seed(1)
    events = (torch.rand(1, 6, 2, 16, 24, generator=gen) < 0.1).float() * 2
    candidates = flow_grid(3.0, 0.75)
    scores = tile_scores(events, num_bins=3, tile=8, candidates=candidates)
    counts = events[0].sum(dim=1)
    ki, yi, xi = counts.nonzero(as_tuple=True)
    t = bin_times(3, windows=2)[ki]
    owner = (yi // 8) * 3 + xi // 8
    for n, (u, v) in enumerate(candidates.tolist()):
        expected = 0
        for t_ref in reference_times(2):
            image = splat(xi + (t_ref - t) * u, yi + (t_ref - t) * v, counts[ki, yi, xi], owner, (6, 1, 16, 24))
            expected = expected + image.flatten(1).var(dim=1, unbiased=False)
        torch.testing.assert_close(scores[n], expected, rtol=1e-4, atol=1e-7)


def _canvas_scores(events, num_bins, candidates, blur, beyond_frame, pad=12):
    """``tile_scores`` the slow way, 8-px tiles: each tile's signed image splatted on a canvas ``pad`` px
    beyond the frame (or on the frame alone, then padded, when events beyond it are dropped), blurred
    by a 3x3 binomial convolution ``blur`` times, its variance taken over the frame's pixel count."""
    values = event_values(events[0], "signed")
    ki, yi, xi = values.nonzero(as_tuple=True)
    windows = events.shape[1] // num_bins
    t = bin_times(num_bins, windows=windows)[ki]
    h, w = values.shape[-2:]
    owner = (yi // 8) * (w // 8) + xi // 8
    num_tiles = (h // 8) * (w // 8)
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None])[None, None]
    scores = []
    for u, v in candidates.tolist():
        total = 0
        for t_ref in reference_times(windows):
            x, y = xi + (t_ref - t) * u, yi + (t_ref - t) * v
            if beyond_frame == "keep":
                shape = (num_tiles, 1, h + 2 * pad, w + 2 * pad)
                image = splat(x + pad, y + pad, values[ki, yi, xi], owner, shape)
            else:
                image = F.pad(splat(x, y, values[ki, yi, xi], owner, (num_tiles, 1, h, w)), (pad,) * 4)
            for _ in range(blur):
                image = F.conv2d(image, kernel, padding=1)
            mean = image.sum(dim=(1, 2, 3)) / (h * w)
            total = total + image.square().sum(dim=(1, 2, 3)) / (h * w) - mean.square()
        scores.append(total)
    return torch.stack(scores)


@pytest.mark.parametrize(("blur", "beyond_frame"), [(1, "keep"), (2, "drop"), (0, "keep")])
def test_blurred_scores_and_kept_events_are_the_variance_of_the_image_beyond_the_frame(blur, beyond_frame):
    gen = torch.Generator().manual_seed(2)
    events = torch.randint(0, 3, (1, 6, 2, 16, 24), generator=gen).float() * (torch.rand(1, 6, 2, 16, 24) < 0.1)
    candidates = flow_grid(3.0, 0.75)
    scores = tile_scores(events, 3, 8, candidates, polarity="signed", blur=blur, beyond_frame=beyond_frame)
    expected = _canvas_scores(events, 3, candidates, blur, beyond_frame)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)
    if beyond_frame == "keep":  # some candidate moves events out of the frame: dropping them scores less
        dropped = tile_scores(events, 3, 8, candidates, polarity="signed", blur=blur)
        assert (dropped < scores - 1e-6).any()


def test_binomial_blur_keeps_the_mass_and_refuses_a_bad_option():
    image = torch.zeros(1, 7, 7)
    image[0, 3, 3] = 16.0
    once = binomial_blur(image, 1)
    assert once.sum() == pytest.approx(16.0) and once[0, 2:5, 2:5].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    assert binomial_blur(image, 2).sum() == pytest.approx(16.0) and binomial_blur(image, 0) is image
    events = torch.zeros(1, 2, 2, 8, 8)
    with pytest.raises(ValueError, match="beyond_frame must be one of drop, keep"):
        tile_scores(events, 1, 8, flow_grid(1.0, 1.0), beyond_frame="wrap")
    with pytest.raises(ValueError, match="blur must be >= 0"):
        tile_scores(events, 1, 8, flow_grid(1.0, 1.0), blur=-1)
    with pytest.raises(ValueError, match="beyond_frame"):
        TileLabelling(beyond_frame="wrap")
    with pytest.raises(ValueError, match="blur"):
        TileLabelling(blur=-1)


def test_tile_search_finds_each_tiles_own_constant_flow():
    # Two tiles moving apart at a whole pixel a bin: each tile's own events pick its own flow,
    # not zero flow and not the neighbour's.
    events = _moving_dots([[(2.0, 0.0), (0.0, -2.0)]])
    found = tile_search(events, num_bins=2, tile=8, candidates=flow_grid(3.0, 1.0))
    assert found.shape == (2, 1, 2)
    assert found[:, 0, 0].tolist() == [2.0, 0.0] and found[:, 0, 1].tolist() == [0.0, -2.0]
    truth = torch.zeros(1, 2, 2, 8, 16)
    truth[0, :, 0, :, :8], truth[0, :, 1, :, 8:] = 2.0, -2.0
    scored = tile_span(events, truth, num_bins=2, tile=8, candidates=flow_grid(3.0, 1.0))
    assert scored.zero_px == pytest.approx(2.0)
    assert scored.search_px == pytest.approx(0.0) and scored.tile_truth_px == pytest.approx(0.0)
    with pytest.raises(ValueError, match="do not divide"):
        tile_search(events, num_bins=2, tile=5, candidates=flow_grid(1.0, 1.0))


def test_refining_around_each_tiles_best_reaches_a_flow_between_the_coarse_points():
    # One bin a window: the true flow lands every event on a whole pixel at each reference time, so it
    # is the sharpest (bilinear splatting blurs a landing between pixels).
    events = _moving_dots([[(2.0, 0.0), (0.0, -2.0)]], num_bins=1)
    coarse = flow_grid(3.0, 1.5)  # no candidate at 2 px
    found = tile_search(events, num_bins=1, tile=8, candidates=coarse)
    assert not (found.abs() == 2.0).any()
    refined = tile_search(events, 1, 8, coarse, refine=[flow_grid(0.5, 0.5)])
    assert refined[:, 0, 0].tolist() == [2.0, 0.0] and refined[:, 0, 1].tolist() == [0.0, -2.0]


def test_neighbour_spread_singles_out_the_tile_that_disagrees():
    tiles = torch.zeros(2, 3, 4)
    tiles[0] = 1.0
    tiles[:, 1, 2] = torch.tensor([1.0, 3.0])  # 3 px off in v from all around it
    spread = neighbour_spread(tiles)
    assert spread[1, 2] == pytest.approx(3.0)
    others = torch.ones_like(spread, dtype=torch.bool)
    others[1, 2] = False
    assert spread[others].max() == 0.0  # the median of its neighbours ignores the odd one


def test_signed_images_cancel_on_and_off_and_refuse_an_unknown_polarity():
    events = torch.zeros(2, 2, 1, 3)
    events[0, 0, 0, 0] = 2.0  # two ON events
    events[1, 0, 0, 1], events[1, 1, 0, 1] = 1.0, 1.0  # an ON and an OFF in one pixel and bin
    events[1, 1, 0, 2] = 1.0
    assert event_values(events, "summed")[:, 0].tolist() == [[2.0, 0.0, 0.0], [0.0, 2.0, 1.0]]
    assert event_values(events, "signed")[:, 0].tolist() == [[2.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    with pytest.raises(ValueError, match="polarity must be one of summed, signed"):
        event_values(events, "absolute")
    with pytest.raises(ValueError, match="polarity"):
        TileLabelling(polarity="absolute")


def _generated_scene(root, seed: int):
    """One generated 64x64 training sequence of 3 windows, and its flow [N, H, W, 2]."""
    generate_dataset(
        root, SyntheticConfig(height=64, width=64, num_frames=4), 1, 1, 1, seed=seed, workers=1, progress=False
    )
    seq = build_dataset(root, "train", num_bins=5).datasets[0]
    return seq, np.stack([seq[i]["flow"].permute(1, 2, 0).numpy() for i in range(len(seq))])


def _label_error(seq, truth, **options) -> tuple[float, float]:
    """The 8-px labels' error on the pixels they keep, over zero flow's there, and the fraction kept."""
    flow, valid = label_sequence(seq, TileLabelling(tile=8, limit=4.0, step=1.0, windows=3, **options))
    error = np.linalg.norm(flow - truth, axis=-1)[valid].sum()
    return error / np.linalg.norm(truth, axis=-1)[valid].sum(), valid.mean()


def test_signed_images_find_the_flow_of_generated_scenes_that_summed_ones_miss(tmp_path):
    # Textures sliding over pixels fire ON and OFF in turn; with both polarities added, their pile-up
    # at zero flow outscores the true flow on most small tiles of our generated scenes.
    seq, truth = _generated_scene(tmp_path / "scene", seed=0)
    ratios = {}
    for polarity in ("summed", "signed"):
        ratios[polarity], kept = _label_error(seq, truth, polarity=polarity)
        assert kept > 0.2
    assert ratios["signed"] < 0.7 * ratios["summed"], ratios


def test_blur_and_events_kept_beyond_the_frame_bring_the_labels_closer_to_the_hidden_flow(tmp_path):
    # Splatting favours no flow and dropping what leaves the frame favours short flows; pooled over
    # three generated scenes, the default search (both remedies) errs less than the search without.
    errors = {"default": 0.0, "before": 0.0}
    for seed in (0, 1, 2):
        seq, truth = _generated_scene(tmp_path / f"scene{seed}", seed)
        errors["default"] += _label_error(seq, truth)[0]
        errors["before"] += _label_error(seq, truth, blur=0, beyond_frame="drop")[0]
    assert errors["default"] < 0.9 * errors["before"], errors


def test_span_ends_cover_every_window():
    assert span_ends(15, 3) == [2, 5, 8, 11, 14]
    assert span_ends(7, 3) == [2, 5, 6]
    assert span_ends(1, 1) == [0]


def test_labels_are_kept_where_the_tile_holds_events_and_agrees_with_its_neighbours():
    flows = [[(2.0, 0.0)] * 3 for _ in range(3)]
    flows[1][1] = None  # the centre tile holds no event: nothing to label it by
    events = _moving_dots(flows, num_bins=1, dots=12)
    labelling = TileLabelling(tile=8, limit=3.0, step=1.0, min_density=0.05)
    dense, kept = label_span(events, num_bins=1, labelling=labelling)
    assert dense.shape == (2, 24, 24) and kept.shape == (24, 24)
    assert not kept[8:16, 8:16].any()
    border = kept.clone()
    border[8:16, 8:16] = True
    assert border.all()
    assert torch.equal(dense[:, kept], torch.tensor([[2.0], [0.0]]).expand(-1, int(kept.sum())))
    strict = TileLabelling(tile=8, limit=3.0, step=1.0, min_density=10.0)
    assert not label_span(events, 1, strict)[1].any()  # no tile that dense: none kept
    with pytest.raises(ValueError, match="max_spread"):
        TileLabelling(max_spread=0.0)


def test_the_fill_joins_the_kept_tiles_by_the_smoothest_flow():
    flows = torch.full((2, 3, 5), 7.0)  # what the search found in the tiles not kept: ignored
    kept = torch.zeros(3, 5, dtype=torch.bool)
    kept[:, 0], kept[:, 4] = True, True
    flows[:, :, 0], flows[0, :, 4], flows[1, :, 4] = 0.0, 4.0, -2.0
    filled = fill_tiles(flows, kept)
    torch.testing.assert_close(filled[0], torch.arange(5.0).expand(3, 5), atol=2e-3, rtol=0)
    torch.testing.assert_close(filled[1], -torch.arange(5.0).expand(3, 5) / 2, atol=2e-3, rtol=0)
    assert torch.equal(filled[:, kept], flows[:, kept])
    # The centre tile without events gets its neighbours' flow, and every pixel is labelled.
    grid = [[(2.0, 0.0)] * 3 for _ in range(3)]
    grid[1][1] = None
    labelling = TileLabelling(tile=8, limit=3.0, step=1.0, min_density=0.05, fill=True)
    dense, valid = label_span(_moving_dots(grid, num_bins=1, dots=12), num_bins=1, labelling=labelling)
    assert valid.all()
    torch.testing.assert_close(dense[:, 12, 12], torch.tensor([2.0, 0.0]), atol=2e-3, rtol=0)
    nothing = TileLabelling(tile=8, limit=3.0, step=1.0, min_density=10.0, fill=True)
    assert not label_span(_moving_dots(grid, num_bins=1), 1, nothing)[1].any()  # no tile kept: nothing to fill from


def test_label_sequence_labels_every_window_and_refuses_tiles_that_do_not_fit(tiny_synthetic_root):
    seq = build_dataset(tiny_synthetic_root, "train", num_bins=3).datasets[0]
    flow, valid = label_sequence(seq, TileLabelling(tile=16, limit=2.0, step=1.0, windows=2))
    assert flow.shape == (len(seq), 32, 32, 2) and flow.dtype == np.float32
    assert valid.shape == (len(seq), 32, 32) and valid.dtype == bool
    assert valid.any()
    with pytest.raises(ValueError, match="tiles of 7 px do not divide"):
        label_sequence(seq, TileLabelling(tile=7))


def test_the_tool_writes_a_labelled_copy_that_trains_and_never_overwrites(tiny_synthetic_root, tmp_path, capsys):
    tool = load_tool("pseudo_labels")
    out = tmp_path / "pseudo"
    args = ["--data-root", str(tiny_synthetic_root), "--out", str(out), "--tiles", "16", "--tile-limit", "2"]
    assert tool.main([*args, "--tile-step", "1", "--num-bins", "3"]) == 0
    assert "train: 3 sequences" in capsys.readouterr().out
    record = yaml.safe_load((out / "pseudo_labels.yaml").read_text())
    assert record["labelling"]["polarity"] == "signed" and record["labelling"]["tile"] == 16
    assert record["labelling"]["blur"] == 1 and record["labelling"]["beyond_frame"] == "keep"
    copy = build_dataset(out, "train", num_bins=3)
    original = build_dataset(tiny_synthetic_root, "train", num_bins=3)
    assert len(copy) == len(original)
    sample, source = copy[4], original[4]
    assert torch.equal(sample["events"], source["events"])  # the same events, in the same windows
    assert 0 < sample["valid"].mean() <= 1 and not torch.equal(sample["flow"], source["flow"])
    # The split not labelled is the source's own, for scoring.
    assert (out / "test").is_symlink() and (out / "test").resolve() == (tiny_synthetic_root / "test").resolve()
    (out / "marker").write_text("kept")
    assert tool.main(args) != 0
    assert "already exists" in capsys.readouterr().err and (out / "marker").read_text() == "kept"
    # A folder of events without any flow is labelled too.
    unlabeled = tmp_path / "unlabeled" / "train" / "seq_0000"
    unlabeled.mkdir(parents=True)
    for name in ("events.h5", "config.yaml"):
        shutil.copy(tiny_synthetic_root / "train" / "seq_0000" / name, unlabeled / name)
    labelled = tmp_path / "labelled"
    unlabeled_args = ["--data-root", str(tmp_path / "unlabeled"), "--out", str(labelled), "--splits", "train"]
    assert tool.main([*unlabeled_args, "--tiles", "16", "--tile-limit", "2"]) == 0
    with h5py.File(labelled / "train" / "seq_0000" / "flow.h5") as f:
        assert f["flow/forward"].shape[1:] == (32, 32, 2) and f["flow/valid"][:].any()
    assert tool.main([*unlabeled_args[:2], "--out", str(tmp_path / "bad"), "--tiles", "7"]) != 0
    assert "tiles of 7 px do not divide" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()


def test_the_tool_mixes_in_labelled_sequences_of_the_old_domain(tiny_synthetic_root, tmp_path, capsys):
    tool = load_tool("pseudo_labels")
    out = tmp_path / "mixed"
    args = ["--data-root", str(tiny_synthetic_root), "--tiles", "16", "--tile-limit", "2", "--splits", "train"]
    mix = ["--mix-labelled", str(tiny_synthetic_root), "--mix-sequences", "2"]
    assert tool.main([*args, "--out", str(out), *mix]) == 0
    train = build_dataset(out, "train", num_bins=5)
    names = sorted({seq.name for seq in train.datasets})
    assert names == ["labelled_seq_0000", "labelled_seq_0001", "seq_0000", "seq_0001", "seq_0002"]
    mixed = next(seq for seq in train.datasets if seq.name == "labelled_seq_0001")
    original = build_dataset(tiny_synthetic_root, "train", num_bins=5).datasets[1]
    assert torch.equal(mixed[3]["flow"], original[3]["flow"])  # their own labels
    assert "2 labelled sequences" in capsys.readouterr().out
    too_many = [*args, "--out", str(tmp_path / "bad"), "--mix-labelled", str(tiny_synthetic_root)]
    assert tool.main([*too_many, "--mix-sequences", "9"]) != 0
    assert "fewer than --mix-sequences 9" in capsys.readouterr().err and not (tmp_path / "bad").exists()

"""Write a copy of a dataset whose flow labels come from its events alone (no ground truth is read).

    python tools/pseudo_labels.py --data-root data/photo_motion --out data/photo_motion_pseudo

Every window of the chosen splits (default: train and val) gets the constant flow per --tiles tile
that sharpens the tile's own events most over a span of --windows windows, searched on a grid up to
--tile-limit px a window (steps of --tile-step, then two finer grids), the events imaged as ON minus
OFF (--polarity), each warped image blurred a little (--blur) and the events a candidate moves out of
the frame kept in it (--beyond-frame), so that neither favours short flows. A tile's flow is kept only
where the tile holds at least --min-density events per pixel and window and agrees with its
neighbours' median within --max-spread px; every other pixel is invalid, unless --fill gives the
other tiles the smoothest flow that joins the kept ones. The copy is in BlinkSim
layout C (each sequence's events file linked or copied as events.h5, the labels in flow.h5); the
splits not labelled (the test split, by default) are linked unchanged, so a supervised run learns
from the copy, and is scored on the source's own test split, with no other change:

    python finetune_quantized.py --config snn/configs/event_snn_lite_adapt_pseudo.yaml --pretrained pretrained:FP32

--mix-labelled ROOT links --mix-sequences training sequences of a labelled dataset (the one the model
was trained on) into the copy's train split beside the new ones, so that adapting keeps the old domain.

Sources: BlinkSim layouts and folders of events without flow. The source's own flow, if it has any,
is never used. An existing --out is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import fail, split_hint  # noqa: E402
from snn.data.loaders import sequences_of  # noqa: E402
from snn.data.provider import SPLIT_FOLDERS, build_dataset, list_sequences  # noqa: E402
from snn.data.sequence import EventFlowSequence  # noqa: E402
from snn.data.synthetic_io import write_flow_h5  # noqa: E402
from snn.evaluation.pseudo_labels import TileLabelling, label_sequence  # noqa: E402
from snn.evaluation.tile_search import BEYOND_FRAME, POLARITIES  # noqa: E402
from snn.utils.runtime import setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    defaults = TileLabelling()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True, help="dataset folder (BlinkSim layout or events only)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the labelled copy (must not exist)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to label (default: train val)")
    p.add_argument("--num-bins", type=int, default=5, help="time bins per window (default: 5)")
    p.add_argument("--windows", type=int, default=defaults.windows, help="windows per span (default: %(default)s)")
    p.add_argument("--tiles", type=int, default=defaults.tile, help="tile size, px (default: %(default)s)")
    p.add_argument("--tile-limit", type=float, default=defaults.limit, help="largest flow component searched, px")
    p.add_argument("--tile-step", type=float, default=defaults.step, help="coarse grid step, px (default: %(default)s)")
    p.add_argument(
        "--min-density", type=float, default=defaults.min_density, help="events per px and window to keep a tile"
    )
    p.add_argument(
        "--max-spread", type=float, default=defaults.max_spread, help="px from the neighbours' median to keep a tile"
    )
    p.add_argument(
        "--polarity",
        choices=POLARITIES,
        default=defaults.polarity,
        help="how the search images the events: ON minus OFF (signed, the default) or counts with both "
        "polarities added (summed; the labels before signed images, and for thin lines that flash on and off)",
    )
    p.add_argument(
        "--blur",
        type=int,
        default=defaults.blur,
        help="passes of a [1, 2, 1] / 4 filter over each warped image before its sharpness is scored "
        "(default: %(default)s; each about 0.7 px; 0 scores the images as they are)",
    )
    p.add_argument(
        "--beyond-frame",
        choices=BEYOND_FRAME,
        default=defaults.beyond_frame,
        help="the events a candidate flow moves out of the frame: kept in the tile's image (keep, the "
        "default) or lost as in a full-frame image (drop, the search before)",
    )
    p.add_argument(
        "--fill",
        action="store_true",
        help="label the tiles not kept too, by the smoothest flow joining the kept ones (for a camera "
        "moving over a static scene; wrong where an untextured region moves on its own)",
    )
    p.add_argument(
        "--mix-labelled",
        type=Path,
        help="also link training sequences of this labelled dataset into the copy's train split, so that "
        "adapting to the new data keeps training on the old (BlinkSim layout; their own flow is used)",
    )
    p.add_argument("--mix-sequences", type=int, default=32, help="how many of --mix-labelled's sequences (default: 32)")
    return p.parse_args(argv)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (the events are not copied), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def label_split(args, labelling: TileLabelling, split: str, staging: Path) -> tuple[int, int, float]:
    """Label one split into ``staging``/split: (sequences, windows, fraction of pixels labelled)."""
    data = build_dataset(args.data_root, split, num_bins=args.num_bins)
    sequences = sequences_of(data)
    windows = labelled = pixels = 0
    for seq in tqdm(sequences, desc=f"labelling {split}", dynamic_ncols=True):
        if not isinstance(seq, EventFlowSequence):
            raise ValueError(f"{seq.seq_dir}: only BlinkSim layouts and events-only folders can be labelled")
        flow, valid = label_sequence(seq, labelling)
        target = staging / split / seq.name
        target.mkdir(parents=True)
        link_or_copy(seq.events_path, target / "events.h5")
        times = seq.window_times
        write_flow_h5(target / "flow.h5", flow, valid, times[:, 0], times[:, 1])
        windows += len(seq)
        labelled += int(valid.sum())
        pixels += valid.size
    return len(sequences), windows, labelled / max(pixels, 1)


def link_other_splits(data_root: Path, labelled: list[str], staging: Path) -> list[str]:
    """Link the source's splits that were not labelled (a test split, say) into the copy unchanged,
    so that a run on the copy is scored on them; returns their folder names."""
    linked = []
    for split, names in SPLIT_FOLDERS.items():
        found = [name for name in names if (data_root / name).is_dir()]
        if split not in labelled and found:
            (staging / found[0]).symlink_to((data_root / found[0]).resolve(), target_is_directory=True)
            linked.append(found[0])
    return linked


def mix_labelled(root: Path, count: int, staging: Path) -> int:
    """Link the first ``count`` training sequences of the labelled dataset ``root`` into the copy's
    train split, as labelled_<name>; returns how many."""
    if count < 1:
        raise ValueError(f"--mix-sequences must be >= 1, got {count}")
    found = list_sequences(root, "train")[:count]
    if len(found) < count:
        raise ValueError(f"{root}: has {len(found)} training sequences, fewer than --mix-sequences {count}")
    (staging / "train").mkdir(exist_ok=True)
    for seq_dir in found:
        (staging / "train" / f"labelled_{seq_dir.name}").symlink_to(seq_dir.resolve(), target_is_directory=True)
    return len(found)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    staging = args.out.with_name(f".{args.out.name}.partial")
    try:
        if args.num_bins < 1:
            raise ValueError(f"--num-bins must be >= 1, got {args.num_bins}")
        labelling = TileLabelling(
            tile=args.tiles,
            limit=args.tile_limit,
            step=args.tile_step,
            windows=args.windows,
            min_density=args.min_density,
            max_spread=args.max_spread,
            fill=args.fill,
            polarity=args.polarity,
            blur=args.blur,
            beyond_frame=args.beyond_frame,
        )
        if args.out.exists():
            raise ValueError(f"{args.out}: already exists; give a new folder (nothing was written)")
        if args.out.resolve() == args.data_root.resolve():
            raise ValueError(f"{args.out}: is the source itself")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
        staging.mkdir(parents=True)
        # Mixed in first: a bad --mix-labelled fails before the long labelling.
        mixed = mix_labelled(args.mix_labelled, args.mix_sequences, staging) if args.mix_labelled else 0
        summary = {split: label_split(args, labelling, split, staging) for split in args.splits}
        linked = link_other_splits(args.data_root, args.splits, staging)
        record = {
            "source": str(args.data_root),
            "labelling": vars(labelling),
            "num_bins": args.num_bins,
            "linked_unchanged": linked,
            "mixed_in": {"from": str(args.mix_labelled), "sequences": mixed} if mixed else None,
            "labelled": {
                s: {"sequences": n, "windows": w, "pixels_labelled": round(f, 4)} for s, (n, w, f) in summary.items()
            },
        }
        (staging / "pseudo_labels.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        staging.rename(args.out)
    except (ValueError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        return fail(split_hint(exc))
    for split, (n, w, fraction) in summary.items():
        print(f"{split}: {n} sequences, {w} windows, {fraction:.1%} of pixels labelled")
    if mixed:
        print(f"train: {mixed} labelled sequences of {args.mix_labelled} linked in beside them")
    for name in linked:
        print(f"{name}: linked unchanged from {args.data_root / name} (its own flow, if any, for scoring)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

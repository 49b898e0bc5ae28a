"""Train a full-precision recipe over several seeds and score it on the test, unseen and natural-image sets.

    python tools/flow_quality.py --output-dir results/flow/default --seeds 0 1 2
    python tools/flow_quality.py --output-dir results/flow/crop64 --seeds 0 1 2 --set crop_size=64

Each seed trains as ``python train.py`` would (config, then --set), into OUTPUT/seed_<S>/; the
report, OUTPUT/flow_quality.md and .csv, gives each seed's AEE ratio to zero flow on every test
set, dense and sparse, and the mean ± std. A finished seed is reused and an interrupted one is
resumed, so the seeds can be run one session at a time. Never run two of these at once on a
small machine: each training slows the other several times.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.benchmarks.flow_quality import DEFAULT_TEST_ROOTS, run_flow_quality  # noqa: E402
from snn.cli import add_set_flag, fail, parse_overrides  # noqa: E402
from snn.config import DEFAULT_CONFIG, load_config  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"recipe's YAML config (default: {DEFAULT_CONFIG})"
    )
    add_set_flag(p, "override a config key of the recipe (a YAML value; repeatable), e.g. --set crop_size=64")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--output-dir", type=Path, required=True, help="runs and reports go here")
    p.add_argument(
        "--yardstick-root",
        type=Path,
        default=DEFAULT_TEST_ROOTS["yardstick"],
        help="the built-in synthetic set at the generator's own settings (scale 1, the previous defaults' data), "
        "whose test split every recipe is scored on (generated on first use)",
    )
    p.add_argument(
        "--unseen-root",
        type=Path,
        default=DEFAULT_TEST_ROOTS["unseen"],
        help="unseen test set (generated on first use)",
    )
    p.add_argument(
        "--natural-root",
        type=Path,
        default=DEFAULT_TEST_ROOTS["natural"],
        help="natural-image test set (generated on first use)",
    )
    p.add_argument("--title", default=None, help="report title (default: the --set overrides)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        # --set values are explicit (null is a value, as in train.py); --device wins over them
        cfg = load_config(args.config, {"device": args.device}, settings=parse_overrides(args.settings))
        title = args.title or (", ".join(args.settings) if args.settings else f"{args.config.name} as shipped")
        run_flow_quality(
            cfg,
            args.seeds,
            args.output_dir,
            resolve_device(cfg.device),
            {"yardstick": args.yardstick_root, "unseen": args.unseen_root, "natural": args.natural_root},
            title,
        )
    except (ValueError, OSError) as exc:
        return fail(exc)
    report = args.output_dir / "flow_quality.md"
    print(report.read_text())
    print(f"wrote {report} and {report.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

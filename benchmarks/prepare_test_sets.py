"""Generate the built-in test sets (yardstick, unseen, natural images) and, optionally, a recipe's
own synthetic set, before several processes start that would each generate them on first use.

    python benchmarks/prepare_test_sets.py --workers 12 [--config snn/configs/event_snn_lite_full.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.benchmarks.flow_quality import DEFAULT_TEST_ROOTS, TEST_SETS  # noqa: E402
from snn.config import load_config  # noqa: E402
from snn.data.loaders import prepare_data_root, prepare_synthetic_set  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="generator processes per set")
    p.add_argument("--config", type=Path, action="append", default=[], help="also generate this recipe's data root")
    args = p.parse_args(argv)
    for name, spec in TEST_SETS.items():
        t0 = time.time()
        prepare_synthetic_set(DEFAULT_TEST_ROOTS[name], dataclasses.replace(spec, workers=args.workers))
        print(f"{name}: {DEFAULT_TEST_ROOTS[name]} ready in {time.time() - t0:.1f} s", flush=True)
    for path in args.config:
        cfg = load_config(path)
        if cfg.dataset == "synthetic":
            cfg = dataclasses.replace(cfg, synthetic=dataclasses.replace(cfg.synthetic, workers=args.workers))
        t0 = time.time()
        print(f"{path}: {prepare_data_root(cfg)} ready in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

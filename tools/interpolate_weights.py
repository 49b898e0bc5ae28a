"""Average the weights of a model and its adapted copy, to keep what the model knew before adapting.

    # fixed fraction: 0.6 of the way from the start to the adapted model
    python tools/interpolate_weights.py --start pretrained:FP32 \\
        --end checkpoints/V2_adapt_pseudo/best_model.pth --alpha 0.6 --out checkpoints/V2_adapt_pseudo/interp.pth

    # the largest fraction that keeps the old domain's validation AEE within 5 % of the start's
    python tools/interpolate_weights.py --start pretrained:FP32 \\
        --end checkpoints/V2_adapt_pseudo/best_model.pth --data-root data/synthetic --max-loss 0.05 \\
        --out checkpoints/V2_adapt_pseudo/interp.pth

With --data-root (labelled data of the start model's domain), every fraction of --alpha
(default 0.1, 0.2, ..., 1.0) is evaluated on its --split (default val; never choose on test),
and the largest whose AEE stays within --max-loss of the start's is written (the new domain's
gain grows with alpha, and its labels are what adapting without labels lacks). The output is
an ordinary checkpoint: evaluate it, export it, fine-tune it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Let the tool run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn.cli import add_device_flag, checkpoint_arg, fail, split_hint  # noqa: E402
from snn.config import config_from_checkpoint  # noqa: E402
from snn.data.loaders import make_dataset, make_loader  # noqa: E402
from snn.evaluation.evaluate import evaluate_model  # noqa: E402
from snn.evaluation.report import check_writable  # noqa: E402
from snn.models.checkpoint import save_checkpoint  # noqa: E402
from snn.models.interpolate import Interpolation, largest_within  # noqa: E402
from snn.utils.runtime import resolve_device, setup_logging  # noqa: E402

DEFAULT_ALPHAS = [round(0.1 * i, 1) for i in range(1, 11)]


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a fraction between 0 and 1")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", type=checkpoint_arg, required=True, help="the model before adapting (or pretrained:NAME)")
    p.add_argument("--end", type=checkpoint_arg, required=True, help="the same model after adapting")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (never overwritten)")
    p.add_argument(
        "--alpha",
        type=fraction,
        nargs="+",
        default=None,
        help="fraction of the way from start (0) to end (1); several with --data-root to choose among "
        "(default there: 0.1 to 1.0 in steps of 0.1)",
    )
    p.add_argument(
        "--data-root", type=Path, default=None, help="labelled data of the start's domain: choose alpha on it"
    )
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to choose on (default: val)")
    p.add_argument(
        "--max-loss",
        type=float,
        default=0.05,
        help="largest relative AEE increase over the start's allowed on --data-root (default: 0.05)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: the end checkpoint's config batch_size")
    add_device_flag(p)
    args = p.parse_args(argv)
    if args.data_root is None and (args.alpha is None or len(args.alpha) != 1):
        p.error("without --data-root, give exactly one --alpha")
    if args.max_loss < 0:
        p.error(f"--max-loss {args.max_loss}: must be at least 0")
    return args


def choose_alpha(interp: Interpolation, args, device) -> tuple[float, dict]:
    """Evaluate the start and every alpha on the old domain, print the table, pick;
    returns the alpha and what it was chosen on, for the checkpoint."""
    cfg = config_from_checkpoint(interp.end, interp.end_path)
    loader = make_loader(cfg, make_dataset(cfg, args.data_root, args.split), batch_size=args.batch_size)
    alphas = sorted(set(args.alpha or DEFAULT_ALPHAS))
    print(f"choosing alpha on {args.data_root} ({args.split}): the largest within {args.max_loss:.1%} of the start")
    print(f"{'alpha':>5}  {'AEE':>7}  {'change':>7}")
    rows = []  # (alpha, AEE), the start (alpha 0) first
    for alpha in [0.0, *alphas]:
        # Only the AEE is read: the one-window FWL, not the span's chained warps.
        model = interp.model(alpha, device)
        metrics = evaluate_model(model, loader, device, progress=False, stateful=cfg.state_windows > 1, fwl_windows=1)
        rows.append((alpha, metrics["dense"]["overall"]["aee"]))
    start_aee = rows[0][1]
    chosen = largest_within(alphas, [aee for _, aee in rows[1:]], start_aee, args.max_loss)
    for alpha, aee in rows:
        print(f"{alpha:5.2f}  {aee:7.3f}  {aee / start_aee - 1:+7.1%}" + ("  <- chosen" if alpha == chosen else ""))
    basis = {"data_root": str(args.data_root), "split": args.split, "max_loss": args.max_loss,
             "aee": [[alpha, aee] for alpha, aee in rows]}  # fmt: skip
    return chosen, basis


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.out.exists():
            raise FileExistsError(f"{args.out}: exists; choose another --out (nothing is overwritten)")
        check_writable(args.out)
        device = resolve_device(args.device)
        interp = Interpolation(args.start, args.end)
        alpha, basis = (args.alpha[0], None) if args.data_root is None else choose_alpha(interp, args, device)
        ckpt = interp.checkpoint(alpha)
        if basis is not None:
            ckpt["interpolation"]["chosen_on"] = basis
        save_checkpoint(ckpt, args.out)
        print(f"wrote {args.out} (alpha {alpha:g}: {1 - alpha:g} x {args.start} + {alpha:g} x {args.end})")
    except (ValueError, OSError) as exc:
        return fail(split_hint(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

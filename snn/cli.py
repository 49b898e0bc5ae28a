"""Flags shared by the training scripts, the one-line error exit and the interrupted-run message."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import shlex
import sys
from pathlib import Path

import yaml

from snn.config import AMP_MODES, DEFAULT_CONFIG, Config, data_root_overrides, load_config
from snn.data.errors import MissingSplitError
from snn.data.mvsec import PROTOCOLS
from snn.data.provider import FORMATS
from snn.evaluation.contrast import FWL_WINDOWS
from snn.models.checkpoint import CheckpointError
from snn.models.zoo import PREFIX, pretrained_path
from snn.training.interrupt import TrainingInterrupted

logger = logging.getLogger(__name__)


def add_common_flags(parser: argparse.ArgumentParser, default_config: Path | None = DEFAULT_CONFIG):
    """--config plus the flags that override config keys (None = keep the YAML value), --resume and
    --allow-config-change."""
    fallback = f"else {default_config}" if default_config is not None else "else it is required"
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML config (default: with --resume, the resumed run's own config.yaml; {fallback})",
    )
    parser.add_argument("--checkpoint-dir", help="where checkpoints go (config: checkpoint_dir)")
    parser.add_argument("--log-dir", help="TensorBoard and CSV logs (config: log_dir)")
    parser.add_argument("--data-root", help="dataset folder (config: data_root)")
    add_format_flags(parser)
    parser.add_argument("--epochs", type=int, help="number of epochs (config: num_epochs)")
    parser.add_argument("--batch-size", type=int, help="batch size (config: batch_size)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (config: device)")
    parser.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=None,
        help="mixed precision: bf16 (CPU or GPU) or fp16 (CUDA); neurons and quantizers stay float32 (config: amp)",
    )
    parser.add_argument("--seed", type=int, help="random seed (config: seed)")
    add_set_flag(
        parser,
        "set any config key (a YAML value; repeatable), e.g. --set learning_rate=3e-3 --set crop_size=null; "
        "applied on top of the YAML, and a named flag (--epochs, --batch-size, ...) wins over --set of its key",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue a run from its own last.pth (exactly, with its own settings); another run's "
        "checkpoint starts a new run from its weights at epoch 1",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="let --resume continue a run with settings other than its own (by default only --epochs, "
        "--device, logging and the folders may change)",
    )


def add_set_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--set KEY=VALUE (repeatable), collected in ``args.settings``; read them with ``parse_overrides``."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def parse_overrides(items: list[str], flag: str = "--set") -> dict:
    """``["distill_weight=1.0"]`` -> ``{"distill_weight": 1.0}``, each value read as YAML (``null``: None).

    A malformed item, a value that is not YAML or a key the config does not have is a ValueError
    naming the item (as given with ``flag``); the values themselves are checked where the config is validated.
    """
    known = [f.name for f in dataclasses.fields(Config)]
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (the keys are those of snn/config.py's Config)"
            raise ValueError(f"{flag} {item!r}: unknown config key {key!r}{hint}")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{flag} {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return overrides


def add_format_flags(parser: argparse.ArgumentParser) -> None:
    """--format and --mvsec-dt: how a data root is read (None = the config's)."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the data root's format; auto tells BlinkSim, DSEC and MVSEC apart by their files (config: data_format)",
    )
    parser.add_argument(
        "--mvsec-dt",
        type=int,
        choices=PROTOCOLS,
        default=None,
        help="MVSEC protocol: windows of 1 or 4 grayscale frames (config: mvsec_dt)",
    )


def format_overrides(args: argparse.Namespace) -> dict:
    """The config keys --format and --mvsec-dt set (none when not given)."""
    given = {"data_format": args.format, "mvsec_dt": args.mvsec_dt}
    return {key: value for key, value in given.items() if value is not None}


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device for the tools that take no config: auto picks CUDA when present."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def add_fwl_windows_flag(parser: argparse.ArgumentParser) -> None:
    """--fwl-windows: how many consecutive windows the flow warp loss warps together."""
    parser.add_argument(
        "--fwl-windows",
        type=int,
        default=FWL_WINDOWS,
        metavar="N",
        help="score the flow warp loss (FWL) of each window over it and the N - 1 windows before it, each "
        "moved along its own predicted flow; the first N - 1 windows of each sequence are not scored. "
        "1 is the FWL of one window alone, which tells good models apart less well (default: %(default)s)",
    )


def check_positive(flag: str, value: int | None) -> None:
    """An integer flag override (None: the config's) must be at least 1."""
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1 (got {value})")


def check_batch_size(batch_size: int | None) -> None:
    check_positive("--batch-size", batch_size)


def config_from_args(args: argparse.Namespace, default_config: Path | None = DEFAULT_CONFIG) -> Config:
    """The config of --config (or of the resumed run, or ``default_config``), --set on top of it and the
    named flags (--epochs, ...) on top of that."""
    check_positive("--epochs", args.epochs)
    check_batch_size(args.batch_size)
    settings = parse_overrides(args.settings)
    path, own = args.config, False
    if path is None and args.resume is not None and (Path(args.resume).parent / "config.yaml").is_file():
        path, own = Path(args.resume).parent / "config.yaml", True
    if path is None:
        if default_config is None:
            raise ValueError("--config is required unless --resume names a run's own checkpoint")
        path = default_config
    checkpoint_dir = args.checkpoint_dir
    if own and checkpoint_dir is None:
        # The run lives where its checkpoint is now: its config.yaml still names the folder it was
        # written in, which is stale once the run has been moved (e.g. off a full disk).
        checkpoint_dir = str(Path(args.resume).parent)
    overrides = {
        "checkpoint_dir": checkpoint_dir,
        "log_dir": args.log_dir,
        "num_epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "amp": args.amp,
        "seed": args.seed,
        **data_root_overrides(args.data_root),
        **format_overrides(args),
    }
    # Errors name the --set items too: a bad value may come from them rather than from the file.
    source = f"{path} with --set {', '.join(args.settings)}" if settings else str(path)
    # A resumed run keeps its own schedule; a new, shorter run gets it scaled.
    return load_config(path, overrides, scale_schedule=not own, settings=settings, source=source)


def checkpoint_arg(value: str) -> Path:
    """argparse type for a checkpoint: a path, or ``pretrained:<variant>`` for a shipped model."""
    if not value.lower().startswith(PREFIX):
        return Path(value)
    try:
        return pretrained_path(value[len(PREFIX) :])
    except (ValueError, CheckpointError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_hint(exc: BaseException) -> BaseException:
    """``exc`` as a tool with --split reports it: a missing split's error suggests one the data root has
    (val before train: a model is better judged on data it did not train on)."""
    if not isinstance(exc, MissingSplitError) or not exc.available:
        return exc
    pick = next(s for s in ("val", "train", "test", *exc.available) if s in exc.available)
    return MissingSplitError(f"{exc}: use --split {pick}", available=exc.available)


def fail(exc: BaseException) -> int:
    """Print a one-line error and return the exit status for it."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"error: {msg}", file=sys.stderr)
    return 2


def resume_command(script: str, argv: list[str], checkpoint: Path) -> str:
    """The command line that continues an interrupted run: the same flags, ``--resume checkpoint``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--resume", "--pretrained"):
            skip = True
            continue
        if arg.startswith(("--resume=", "--pretrained=")):
            continue
        kept.append(arg)
    return shlex.join(["python", script, *kept, "--resume", str(checkpoint)])


def interrupted(stop: TrainingInterrupted, script: str, argv: list[str] | None) -> int:
    """Print the one line that says what was saved and how to go on; return the shell's exit status."""
    argv = sys.argv[1:] if argv is None else argv
    print(f"interrupted: {stop}; resume with: {resume_command(script, argv, stop.checkpoint)}", file=sys.stderr)
    return stop.exit_code

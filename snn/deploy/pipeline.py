"""From a checkpoint to a checked export: what tools/export.py runs."""

from __future__ import annotations

import os
import stat
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from snn.config import Config, config_from_checkpoint
from snn.data.loaders import check_frame_sizes, make_dataset, make_loader, sequences_of
from snn.deploy.export import INDEX, Export, load_export, write_export
from snn.deploy.fold import FoldError, fold_network, forward_bytes
from snn.deploy.resources import resource_table
from snn.deploy.vectors import write_vectors
from snn.deploy.verify import Agreement, compare
from snn.models.checkpoint import load_checkpoint, load_model
from snn.models.flownet import float_fake_quant
from snn.quantization.control import model_widths, widths_tag
from snn.utils.runtime import available_memory


def frame_size(cfg: Config, data_root: str | Path, split: str) -> tuple[int, int]:
    """The one frame size of a split's sequences; a ValueError when they differ."""
    sizes = sorted({(seq.height, seq.width) for seq in sequences_of(make_dataset(cfg, data_root, split))})
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ValueError(f"{data_root}: the {split} split's frames have several sizes ({listed}): pass --input-size")
    return sizes[0]


def export_input_size(
    cfg: Config,
    checkpoint: str | Path,
    input_size: tuple[int, int] | None = None,
    data_root: str | Path | None = None,
    split: str = "test",
) -> tuple[int, int, str]:
    """(height, width, where they come from) of the input an export describes: ``input_size``, else the
    frames of ``data_root`` (what --verify runs), else those of the data the checkpoint was trained on (its
    config's data root, read here, or the synthetic settings it was generated from). A size that nothing
    tells is an error: the network takes any multiple of 8, so no default would be honest."""
    root = Path(data_root if data_root is not None else cfg.data_root)
    if input_size is not None:
        height, width = input_size
        source = "--input-size"
    elif data_root is None and not root.exists() and cfg.dataset == "synthetic":
        height, width = cfg.synthetic.scene.height, cfg.synthetic.scene.width  # what its generator makes
        source = f"the checkpoint's synthetic data settings ({root} is not here)"
    elif data_root is None and not root.exists():
        raise ValueError(
            f"{checkpoint}: was trained on {root}, which is not here to read its frame size from: pass "
            f"--input-size H W (the sensor's frame size) or --data-root"
        )
    else:
        height, width = frame_size(cfg, root, split)
        source = f"the frames of {root} ({split} split)"
    if height % 8 or width % 8 or height < 8 or width < 8:
        raise ValueError(
            f"input size {height}x{width} (from {source}): the integer network takes positive multiples of 8; "
            f"pass --input-size H W"
        )
    return height, width, source


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
             (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "a file")


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work, saying why, when ``out_dir`` cannot be a folder to write in."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --output-dir is {_kind(out_dir)}, not a folder")
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{out_dir}: --output-dir cannot be made: {existing} is {_kind(existing)}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{out_dir}: --output-dir cannot be written: no permission to write in {existing}")


def check_memory(model: nn.Module, height: int, width: int, source: str) -> None:
    """Refuse a size whose forward pass would not fit in the memory here, before allocating it."""
    need, have = forward_bytes(model, height, width), available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"input size {height}x{width} (from {source}): its forward pass needs about {need / 2**30:,.1f} GiB, "
            f"more than the {have / 2**30:,.1f} GiB of memory available here"
        )


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    input_size: tuple[int, int] | None = None,
    force: bool = False,
    data_root: str | Path | None = None,
    split: str = "test",
    onnx: bool = False,
) -> tuple[Export, nn.Module, Config]:
    """Fold and write the checkpoint's quantized model for the input size ``export_input_size`` gives;
    print what was written and its size. Everything that can be checked (the folder, the model, the
    size, its memory, with ``onnx`` what step.onnx needs) is checked before anything is written."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    if (out_dir / INDEX).exists() and not force:
        raise ValueError(f"{out_dir / INDEX} already exists: another export is there (pass --force to replace it)")
    cfg = config_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    model = load_model(checkpoint)
    if cfg.representation != "counts":
        raise ValueError(
            f"{checkpoint}: its input is a {cfg.representation} representation, not integer event counts, "
            "so the integer network cannot reproduce it"
        )
    if not getattr(model, "quantize", False):
        raise ValueError(f"{checkpoint}: a full-precision model; export a QAT checkpoint (finetune_quantized.py)")
    height, width, source = export_input_size(cfg, checkpoint, input_size, data_root, split)
    try:
        if onnx:
            from snn.deploy.onnx_step import check_step_export

            check_step_export(model)
        check_memory(model, height, width, source)
    except FoldError as exc:
        raise FoldError(f"{checkpoint}: {exc}") from None
    print(f"input size {height}x{width}, from {source}")
    try:
        description, tensors = fold_network(model, height, width)
    except (RuntimeError, MemoryError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        # The estimate of check_memory fell short (other processes took memory meanwhile?).
        raise ValueError(f"input size {height}x{width} (from {source}): out of memory in the shape pass") from None
    export = write_export(description, tensors, out_dir)
    widths = model_widths(model)
    parameters = sum(p.numel() for p in model.parameters() if p.dim() > 0)
    estimate = parameters * widths[0] / 8
    constants = sum(2 * len(layer["current"]["multiplier"]) for layer in description["layers"])
    print(f"{checkpoint} ({widths_tag(*widths)}) -> {out_dir}")
    print(
        f"payload: {export.payload_bytes:,} bytes of packed weights (weights.bin) + {constants:,} folded per-channel "
        f"constants (network.json; {4 * constants:,} bytes at 32 bits); "
        f"parameters x bits / 8 = {parameters:,} x {widths[0]} / 8 = {estimate:,.0f} bytes"
    )
    print(resource_table(description))
    return load_export(out_dir), model, cfg  # read back: --verify checks the files, not what we meant to write


def first_windows(cfg: Config, data_root: str | Path, split: str, windows: int, model: nn.Module):
    """Batches [N, T, C, H, W] of the first ``windows`` windows of a split, in order."""
    dataset = make_dataset(cfg, data_root, split)
    check_frame_sizes(dataset, split, model.downsample_factor)  # the integer network does not pad
    loader = make_loader(cfg, dataset, batch_size=min(windows, cfg.batch_size))
    needed = -(-windows // loader.batch_size)
    batches = (b["events"][: windows - i * loader.batch_size] for i, b in enumerate(islice(loader, needed)))
    return batches, needed


def verify_export(
    model: nn.Module, export: Export, cfg: Config, data_root: str | Path, split: str, windows: int
) -> Agreement:
    """The integer reference against the PyTorch model (evaluating in its integer arithmetic) on the
    first ``windows`` windows of a split: every spike and flow code must be equal."""
    batches, needed = first_windows(cfg, data_root, split, windows, model)
    with torch.no_grad():
        return compare(model.cpu().eval(), export, tqdm(batches, total=needed, desc="verify", leave=False))


def export_vectors(
    model: nn.Module, export: Export, cfg: Config, data_root: str | Path, split: str, windows: int, out_dir: Path
) -> dict:
    """Golden vectors of the first ``windows`` windows of a split into ``out_dir`` (see ``write_vectors``)."""
    batches, needed = first_windows(cfg, data_root, split, windows, model)
    each = (w.numpy() for batch in batches for w in batch)
    manifest = write_vectors(export, tqdm(each, total=windows, desc="vectors", leave=False), out_dir)
    print(f"wrote golden vectors of {manifest['windows']} windows to {out_dir} ({len(manifest['arrays'])} arrays each)")
    return manifest


def export_step_onnx(model: nn.Module, export: Export, path: Path) -> float:
    """Write the one-step ONNX graph and check it with onnxruntime against PyTorch on one window of the
    export's input size (Poisson events, seed 0); returns and prints the largest flow difference."""
    from snn.deploy.onnx_step import export_onnx, run_onnx

    size = export.description["input"]
    step = export_onnx(model, path, size["height"], size["width"])
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print(f"wrote {path}; not checked: onnxruntime is not installed")
        return float("nan")
    generator = torch.Generator().manual_seed(0)
    shape = (1, model.num_bins, model.in_channels, size["height"], size["width"])
    events = torch.poisson(torch.full(shape, 0.5), generator=generator)
    with torch.no_grad(), float_fake_quant(model):  # the graph follows the float fake-quant arithmetic
        want = model.cpu().eval()(events)
    difference = float((run_onnx(path, step, events) - want).abs().max())
    steps = getattr(model, "time_steps", model.num_bins)
    print(
        f"wrote {path}; onnxruntime over {steps} steps against PyTorch's float fake-quant arithmetic: "
        f"flow max |diff| {difference:.2e} px"
    )
    return difference

"""The training loop: optimisation, validation, checkpoints and logs."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from snn.config import Config
from snn.evaluation.contrast import FlowWarpLoss, multiscale_contrast_loss
from snn.evaluation.flow_viz import render_panels
from snn.evaluation.metrics import FlowMetrics, evaluation_mask
from snn.models.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    checkpoint_widths,
    keep_best_of_other_width,
    load_weights,
    phase_name,
    save_checkpoint,
)
from snn.models.state import forward_with_history, set_stateful, stream_windows, window_keys
from snn.quantization import control
from snn.quantization.control import model_widths, widths_tag
from snn.training.activity import firing_rate_penalty, recording_firing_rates
from snn.training.epoch_csv import append_epoch_row, truncate_epoch_rows
from snn.training.interrupt import StopRequests, TrainingInterrupted
from snn.training.losses import distillation_loss, multiscale_epe_loss
from snn.training.optim import freeze_norm_statistics, lr_lambda_factory, param_groups, schedule_change_note
from snn.training.precision import Precision
from snn.training.resume import check_precision_fits, rng_state, set_rng_state
from snn.training.weight_ema import make_weight_ema
from snn.utils.distributed import SILENT_WRITER, global_share, is_main, sum_over_ranks, wrap_for_training

logger = logging.getLogger(__name__)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """Trains a flow model; one instance per run.

    ``fit()`` runs epochs ``start_epoch .. num_epochs-1``; each begins with
    ``update_quantization(epoch)``, then trains, validates, and writes
    ``last.pth`` and (on a new best validation AEE) ``best_model.pth``.

    With ``weight_ema > 0`` an exponential moving average of the weights is what
    gets validated and saved as ``state_dict``; the raw weights travel along as
    ``train_state_dict`` so that resuming continues the optimisation exactly.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        model_name: str,
        model_args: dict[str, Any],
        train_loader: DataLoader,
        val_loader: DataLoader,
        device: torch.device,
        checkpoint_dir: Path,
        log_dir: Path,
    ) -> None:
        self.cfg = cfg
        self.model = model.to(device)
        self.model_name = model_name
        self.model_args = model_args
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir)
        self.log_dir = Path(log_dir)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda_factory(cfg, len(train_loader)))
        self.start_epoch = 0
        self.global_step = 0
        self.best_val_aee = float("inf")
        self.best_val_fwl = -float("inf")  # what picks the best model where AEE does not (see improves)
        self._observers_frozen = False
        self._writer: SummaryWriter | None = None
        self.ema = None  # made at the start of fit(), after any resume or calibration
        self._stop: StopRequests | None = None
        self.teacher: nn.Module | None = None  # with distill_weight > 0: the model this run started from
        self._resume_progress: dict = {}  # how far a mid-epoch checkpoint got into its epoch
        self._last_val: dict[str, float] = {}
        self.precision = Precision(cfg.amp, device)
        self._forward_multiscale = wrap_for_training(self.model, device)  # through DDP under torchrun

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA copy when there is one."""
        return self.model if self.ema is None else self.ema.module

    def _models(self) -> list[nn.Module]:
        return [self.model] if self.ema is None else [self.model, self.ema.module]

    # ---------------------------------------------------------- quantization
    @property
    def quantized(self) -> bool:
        return self.cfg.quantization_enabled and control.is_quantized(self.model)

    def update_quantization(self, epoch: int, log: bool = True) -> None:
        """Apply ``quantization_schedule`` (and observer freezing) for ``epoch``.

        Called at the start of every epoch; does nothing in full-precision runs. ``log=False``
        writes no TensorBoard scalars (a warm start, before the run's folders exist).
        """
        if not self.quantized:
            return
        widths = self.cfg.widths_at(epoch)
        current = model_widths(self.model)
        if widths != current:
            logger.info(
                "epoch %d: %s -> %s; best_model.pth now tracks the %s phase",
                epoch + 1,
                widths_tag(*current),
                widths_tag(*widths),
                widths_tag(*widths),
            )
            self.model.set_bit_width(*widths)  # re-seeds learned steps from the training ranges
            if self.ema is not None:
                self.ema.adopt_quantizer_state(self.model)  # not an average across two grids
            # A lower bit width is judged against itself, not against the easier earlier phase.
            self.best_val_aee, self.best_val_fwl = float("inf"), -float("inf")
        frozen_from = self.cfg.freeze_observers_epoch
        freeze = frozen_from is not None and epoch >= frozen_from
        if freeze and not self._observers_frozen:
            logger.info("epoch %d: range observers frozen", epoch + 1)
        self._observers_frozen = freeze
        for m in self._models():
            m.freeze_observers(freeze)
        if log:
            self.writer.add_scalar("quant/bit_width", widths[0], epoch)
            self.writer.add_scalar("quant/current_bits", widths[1], epoch)

    def norm_stats_frozen(self, epoch: int) -> bool:
        """Whether the batch norms keep their running statistics through ``epoch`` (see
        ``freeze_norm_stats`` and ``freeze_norm_stats_epoch``)."""
        frozen_from = 0 if self.cfg.freeze_norm_stats else self.cfg.freeze_norm_stats_epoch
        frozen = frozen_from is not None and epoch >= frozen_from
        if frozen and epoch == frozen_from and frozen_from > 0:
            logger.info("epoch %d: batch-norm statistics frozen", epoch + 1)
        return frozen

    def extra_loss(self) -> dict[str, torch.Tensor]:
        """Loss terms added to the flow loss: the quantization penalty when quantizing."""
        if not self.quantized or self.cfg.quant_weight == 0:
            return {}
        return {"quant_loss": self.cfg.quant_weight * control.weight_quantization_error(self.model)}

    # ---------------------------------------------------------------- resume
    def _check_model_name(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt["model_name"] != self.model_name:
            raise CheckpointError(f"{path}: holds a {ckpt['model_name']}, this run trains a {self.model_name}")

    def continue_from(self, ckpt: dict[str, Any], path: str | Path, strict: bool = False) -> None:
        """Continue this run from its own checkpoint ``ckpt`` (read from ``path``).

        Restores the raw weights, optimizer, scheduler, epoch, step, best AEE,
        bit width, quantizer ranges, RNG state and the weight EMA.
        """
        path = Path(path)
        self._check_model_name(ckpt, path)
        check_precision_fits(self.model, ckpt, path)
        if self.quantized:
            # The widths first: switching widths re-seeds learned steps, so after the load it would
            # replace the saved ones.
            saved = checkpoint_widths(ckpt)
            if saved[0] < 32:
                self.model.set_bit_width(*saved)
        load_weights(self.model, ckpt.get("train_state_dict", ckpt["state_dict"]), path, strict=strict)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError:
            raise CheckpointError(
                f"{path}: its optimizer state does not fit this config's parameters (quantization switched "
                f"on or off?); to start a new run from its weights use finetune_quantized.py --pretrained"
            ) from None
        lr_before = self.optimizer.param_groups[0]["lr"]  # as saved
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        # The LR factor is a function of this config's num_epochs, not stored: a new budget refits it.
        lr_after = self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        note = schedule_change_note(
            self.cfg, int(ckpt["config"].get("num_epochs", self.cfg.num_epochs)), self.start_epoch, lr_before, lr_after
        )
        if note:
            logger.warning("%s", note)
        self.global_step = int(ckpt.get("global_step", 0))
        self.best_val_aee = float(ckpt.get("best_val_aee", float("inf")))
        self.best_val_fwl = float(ckpt.get("best_val_fwl", -float("inf")))
        if ckpt.get("rng"):
            set_rng_state(ckpt["rng"])
        self.precision.load_state_dict(ckpt.get("grad_scaler") or {})
        if self.cfg.weight_ema > 0 and "train_state_dict" in ckpt:
            self.start_weight_ema()
            self.ema.module.load_state_dict(ckpt["state_dict"])
            self.ema.n_averaged = self.global_step
        self._last_val = dict(ckpt.get("val_metrics") or {})
        self._resume_progress = dict(ckpt.get("epoch_progress") or {})
        truncate_epoch_rows(self.log_dir / "metrics.csv", self.start_epoch)
        where = f"epoch {self.start_epoch + 1}"
        if self._resume_progress:
            where += f", after its first {self._resume_progress['batches']} batches"
        logger.info("resuming this run from %s at %s", path, where)

    def warm_start_from(self, ckpt: dict[str, Any], path: str | Path, strict: bool = False) -> None:
        """Start this run from another run's checkpoint: the weights it was judged by, nothing else.

        The schedule starts at epoch 1; when quantizing, a calibration pass sets the ranges.
        """
        path = Path(path)
        self._check_model_name(ckpt, path)
        check_precision_fits(self.model, ckpt, path)
        missing_quant = load_weights(self.model, ckpt["state_dict"], path, strict=strict)
        if missing_quant:
            logger.info(
                "%s has no quantizer state (%d quant_layer.* entries, expected for a "
                "full-precision checkpoint): calibration initialises them",
                path,
                len(missing_quant),
            )
        logger.info("warm start from %s (another run's checkpoint): weights only, schedule starts at epoch 1", path)
        if self.quantized:
            self.update_quantization(0, log=False)  # fit() logs epoch 0's widths; no writer before then
            if self.cfg.calibration_batches == 0 and checkpoint_widths(ckpt) == model_widths(self.model):
                # An adaptation at the start model's widths: recalibrating on the new data alone cost
                # the shipped W4A4 model 2.8 % on its own test split (README, Learning without labels).
                logger.info("calibration_batches: 0: the quantizer ranges and steps of %s are kept", path)
            self.calibrate()

    @torch.no_grad()
    def calibrate(self, num_batches: int | None = None) -> None:
        """Initialise every quantizer range from a few training batches (model in eval mode)."""
        n = self.cfg.calibration_batches if num_batches is None else num_batches
        if n <= 0:
            return
        seen = 0
        with control.calibrating(self.model):
            for batch in self.train_loader:
                if seen >= n:
                    break
                self._forward_history(self.model, self.model, batch["events"].to(self.device))
                seen += 1
        logger.info("calibrated quantizer ranges on %d training batches", seen)

    # ------------------------------------------------------------------ loop
    @property
    def writer(self) -> SummaryWriter:
        if not is_main():
            return SILENT_WRITER  # one writer: rank 0
        if self._writer is None:
            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def start_weight_ema(self) -> None:
        self.ema = make_weight_ema(self.model, self.cfg.weight_ema)

    def fit(self) -> float:
        """Train to ``num_epochs``; returns the best validation AEE.

        SIGINT/SIGTERM save a resumable ``last.pth`` and raise ``TrainingInterrupted``.
        """
        cfg = self.cfg
        if cfg.weight_ema > 0 and self.ema is None:
            self.start_weight_ema()
        with StopRequests() as self._stop:
            for epoch in range(self.start_epoch, cfg.num_epochs):
                self.update_quantization(epoch)
                t0 = time.time()
                train_loss = self.train_one_epoch(epoch)
                val = self.validate(epoch)
                elapsed = time.time() - t0
                is_best = self.improves(val)
                if is_best:
                    self.best_val_aee, self.best_val_fwl = val["aee"], val["fwl"]
                lr = self.optimizer.param_groups[0]["lr"]
                # The CSV row first and last.pth last: whatever a kill interrupts, the resume
                # from last.pth redoes it (and drops CSV rows past last.pth's epoch).
                self._log_epoch(epoch, train_loss, val, lr, elapsed)
                if is_best:
                    self.save("best_model.pth", epoch, val)
                    if self.quantized and self.cfg.quantization_schedule:
                        self.save(f"best_model_{phase_name(*model_widths(self.model))}.pth", epoch, val)
                self.save("last.pth", epoch, val)
                self._last_val = val
                logger.info(
                    "epoch %d/%d  loss %.3f  val AEE %.3f (zero-flow %.3f)  FWL %.3f%s  %.0f s",
                    epoch + 1,
                    cfg.num_epochs,
                    train_loss,
                    val["aee"],
                    val["zero_flow_aee"],
                    val["fwl"],
                    "  best" if is_best else "",
                    elapsed,
                )
                if self._stop.signum is not None and epoch + 1 < cfg.num_epochs:
                    raise TrainingInterrupted(self._stop.signum, self.checkpoint_dir / "last.pth", epoch + 1, 0)
        if self._writer is not None:
            self._writer.close()
        return self.best_val_aee

    def train_one_epoch(self, epoch: int) -> float:
        """One pass over the training batches of ``epoch`` (the rest of it, when resuming mid-epoch)."""
        self.model.train()
        if self.norm_stats_frozen(epoch):
            freeze_norm_statistics(self.model)
        progress = self._resume_progress if self._resume_progress.get("epoch") == epoch else {}
        self._resume_progress = {}
        done = int(progress.get("batches", 0))
        count = int(progress.get("count", 0))
        # The loss sum stays on the device: reading a loss on the host each step would make the
        # host wait for the GPU every step. It is read every log_every steps, and at the end.
        total = torch.tensor(float(progress.get("loss_sum", 0.0)), dtype=torch.float64, device=self.device)
        sampler = self.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, skip=done * self.train_loader.batch_size)
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.cfg.num_epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=not is_main(),  # one progress bar, rank 0's
        )
        loss = None
        for batch in bar:
            batch = move_batch(batch, self.device)
            with self.precision.autocast():
                with recording_firing_rates(self.model) if self.cfg.firing_rate_weight > 0 else nullcontext() as rates:
                    if self.cfg.contrast_flow == "chained":
                        window_preds = self._forward_windows(batch["events"])
                        preds = [p[:, -1] for p in window_preds]
                    else:
                        window_preds = None
                        preds = [
                            p.float()
                            for p in self._forward_history(self._forward_multiscale, self.model, batch["events"])
                        ]
                learning_loss, flow_loss, terms = self.learning_loss(preds, batch, window_preds)
                extras = self.extra_loss()
                if rates is not None:
                    extras["rate_loss"] = self.cfg.firing_rate_weight * firing_rate_penalty(
                        rates, *self.cfg.firing_rate_band
                    )
                if self.teacher is not None:
                    with torch.no_grad():
                        teacher = self.teacher
                        taught = self._forward_history(teacher.forward_multiscale, teacher, batch["events"])
                        taught = [p.float() for p in taught]
                    extras["distill_loss"] = self.cfg.distill_weight * distillation_loss(
                        preds, taught, self.cfg.scale_weights
                    )
            loss = learning_loss + sum(extras.values())
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.step(loss, self.optimizer, self.model, self.cfg.grad_clip)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += flow_loss.detach() * len(batch["events"])
            count += len(batch["events"])
            done += 1
            if self.global_step % max(1, self.cfg.log_every) == 0:
                self._check_finite(loss, epoch)
                bar.set_postfix(loss=f"{flow_loss.item():.3f}")
                self._log_step(loss, {**terms, **extras})
            self.global_step += 1
            if self._stop is not None and self._stop.signum is not None:
                bar.close()
                self._check_finite(loss, epoch)  # never save weights that a non-finite step has spoiled
                progress = {"epoch": epoch, "batches": done, "loss_sum": float(total), "count": count}
                self.save("last.pth", epoch - 1, self._last_val, progress)
                raise TrainingInterrupted(self._stop.signum, self.checkpoint_dir / "last.pth", epoch + 1, done)
        if loss is not None:
            self._check_finite(loss, epoch)
        total, count = sum_over_ranks(float(total), count)  # every rank's batches count
        return total / max(1, count)

    def learning_loss(
        self, preds: list[torch.Tensor], batch: dict[str, Any], window_preds: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(what backpropagates, its value for the logs, its weighted terms) of the configured loss (key ``loss``).

        With ``loss: contrast`` the batch's flow labels are never read. Under DDP each term backpropagates
        weighted by this rank's share of the global batch's valid pixels (labels) or windows (contrast).
        ``window_preds`` (``contrast_flow: chained``): every window's flow at each scale, [B, w, 2, h, w],
        which the contrast loss warps along instead of ``preds``, the last window's.
        """
        cfg = self.cfg
        terms, shares = {}, {}
        if cfg.loss != "contrast":
            epe = multiscale_epe_loss(preds, batch["flow"], batch["valid"], cfg.scale_weights)
            terms["flow_loss"] = cfg.flow_loss_weight * epe  # at the default 1.0, exactly the EPE
            shares["flow_loss"] = global_share(batch["valid"].sum())
        if cfg.loss != "supervised":
            # the window the flow is of (the sample's last) and the contrast_windows - 1 before it
            events = batch["events"][:, -cfg.contrast_windows * cfg.num_bins :]
            contrast = multiscale_contrast_loss(
                preds if window_preds is None else window_preds,
                events,
                cfg.scale_weights,
                cfg.smoothness_weight,
                divergence_weight=cfg.divergence_weight,
                num_bins=cfg.num_bins,
            )
            terms["contrast_loss"] = cfg.contrast_loss_weight * contrast
            shares["contrast_loss"] = global_share(torch.tensor(len(events), device=events.device))
        backward = sum(terms[k] * shares[k] for k in terms)
        return backward, sum(t.detach() for t in terms.values()), terms

    def improves(self, val: dict[str, float]) -> bool:
        """Whether ``val`` beats the best validation so far: by AEE, or by the flow warp loss (higher is
        better) where the run learns from the events alone (its labels are never read, for the choice of
        the best model neither) or the validation split has no ground truth."""
        if self.cfg.loss == "contrast" or not math.isfinite(val["aee"]):
            return val["fwl"] > self.best_val_fwl
        return val["aee"] < self.best_val_aee

    def _forward_history(self, forward, model: nn.Module, events: torch.Tensor):
        """``forward`` on the last window of ``events``, its membranes warmed up on the windows before
        it (``state_windows`` > 1; see ``forward_with_history``). Windows that a sample holds only for
        the contrast loss (``contrast_windows``) are not read."""
        events = events[:, -self.cfg.state_windows * self.cfg.num_bins :]
        return forward_with_history(forward, model, events, self.cfg.num_bins)

    def _forward_windows(self, events: torch.Tensor) -> list[torch.Tensor]:
        """The flow of each of the last ``contrast_windows`` windows of ``events``, each from rest, at every
        scale: [B, w, 2, h, w], oldest first. One forward pass over the B x w windows."""
        windows, bins = self.cfg.contrast_windows, self.cfg.num_bins
        events = events[:, -windows * bins :]
        preds = self._forward_multiscale(events.unflatten(1, (windows, bins)).flatten(0, 1))
        return [p.float().unflatten(0, (len(events), windows)) for p in preds]

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        """FloatingPointError once the loss is NaN or infinite (checked at log steps and epoch ends, so
        it may have turned a few steps earlier: a NaN step makes every later loss NaN too)."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} by epoch {epoch + 1}, step {self.global_step} (checked every "
                f"log_every = {self.cfg.log_every} steps); lower learning_rate or grad_clip"
            )

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float]:
        model = self.eval_model
        model.eval()
        metrics = FlowMetrics()
        fwl = FlowWarpLoss()
        first = None
        stateful = self.cfg.state_windows > 1
        previous = None  # the window whose membranes are carried (stateful validation)
        set_stateful(model, stateful)
        try:
            for batch in tqdm(self.val_loader, desc="validate", leave=False, dynamic_ncols=True, disable=not is_main()):
                batch = move_batch(batch, self.device)
                with self.precision.autocast():
                    if stateful:  # each sequence in order, as the final test and tools/evaluate.py --stateful run it
                        pred, previous = stream_windows(model, batch["events"], window_keys(batch), previous)
                        pred = pred.float()
                    else:
                        pred = model(batch["events"]).float()
                metrics.update(pred, batch["flow"], evaluation_mask(batch["flow"], batch["valid"]))
                fwl.update(batch["events"][:, -self.cfg.num_bins :], pred)
                if first is None:
                    first = (batch, pred)
        finally:
            set_stateful(model, False)
        every = self.cfg.image_every
        if every and first is not None and is_main() and (epoch % every == 0 or epoch + 1 == self.cfg.num_epochs):
            batch, pred = first
            panel = render_panels(batch["events"][0], batch["flow"][0], pred[0], batch["valid"][0])
            self.writer.add_image("val/flow_gt_vs_pred", panel, epoch, dataformats="HWC")
        return {**metrics.compute(), "fwl": fwl.compute()}

    # ------------------------------------------------------------ persisting
    def checkpoint_payload(self, epoch: int, val: dict[str, float], progress: dict | None = None) -> dict[str, Any]:
        """Everything that rebuilds the model and continues the run; ``epoch`` is the last finished one,
        ``progress`` how far the next one got (batches done, loss so far) when saved mid-epoch."""
        model_args = dict(self.model_args)
        if self.quantized:
            # A progressive run's current widths.
            model_args["bit_width"], model_args["current_bits"] = model_widths(self.model)
        payload = {
            "model_name": self.model_name,
            "model_args": model_args,
            "config": self.cfg.to_dict(),
            "state_dict": self.eval_model.state_dict(),
            "epoch": epoch,
            "global_step": self.global_step,
            "best_val_aee": self.best_val_aee,
            "best_val_fwl": self.best_val_fwl,
            "val_metrics": {k: float(v) for k, v in val.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "epoch_progress": progress or {},
            "grad_scaler": self.precision.state_dict(),
        }
        if self.ema is not None:
            payload["train_state_dict"] = self.model.state_dict()
        return payload

    def save(self, name: str, epoch: int, val: dict[str, float], progress: dict | None = None) -> None:
        if not is_main():
            return  # one writer: rank 0
        path = self.checkpoint_dir / name
        if name == "best_model.pth":
            keep_best_of_other_width(path, model_widths(self.model))
        try:
            save_checkpoint(self.checkpoint_payload(epoch, val, progress), path)
        except CheckpointWriteError as exc:
            raise CheckpointWriteError(f"{exc}; {self._resume_hint()}") from None

    def _resume_hint(self) -> str:
        """How to go on after a failed save: this run's own checkpoints continue it (snn.training.resume)."""
        for name in ("last.pth", "best_model.pth"):
            if (self.checkpoint_dir / name).exists():
                return f"once it is fixed, continue the run with --resume {self.checkpoint_dir / name}"
        return "once it is fixed, start the run again"

    def _log_step(self, loss, terms) -> None:
        """TensorBoard at a log step: the total loss and each of its terms under its own name (``flow_loss``
        for the supervised EPE, ``contrast_loss``, ``distill_loss``, ...)."""
        if not is_main():
            return
        w, step = self.writer, self.global_step
        w.add_scalar("train/total_loss", loss.item(), step)
        for name, value in terms.items():
            w.add_scalar(f"train/{name}", value.item(), step)
        w.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
        for name, rate in self.model.spike_rates().items():
            w.add_scalar(f"spike_rate/{name}", rate, step)
        if self.quantized:
            for name, stats in control.range_statistics(self.model).items():
                w.add_scalar(f"quant_range/{name}/max", stats["max"], step)
                w.add_scalar(f"quant_range/{name}/min", stats["min"], step)
                w.add_scalar(f"quant_scale/{name}", stats["scale"], step)

    def _log_epoch(self, epoch, train_loss, val, lr, elapsed) -> None:
        if not is_main():
            return
        for key in ("aee", "outliers", "1pe", "3pe", "zero_flow_aee", "fwl"):
            self.writer.add_scalar(f"val/{key}", val[key], epoch)
        if self.cfg.learn_leak:  # the validated model's learned leaks, as tau (2, 4, 8 or 16 steps)
            for name, layer in self.eval_model.spiking_layers().items():
                self.writer.add_scalar(f"leak_tau/{name}", 1 / (1 - layer.neuron.decay), epoch)
        self.writer.flush()
        append_epoch_row(
            self.log_dir / "metrics.csv",
            [
                epoch + 1,
                f"{train_loss:.5f}",
                f"{val['aee']:.5f}",
                f"{val['outliers']:.3f}",
                f"{val['1pe']:.3f}",
                f"{val['3pe']:.3f}",
                f"{val['zero_flow_aee']:.5f}",
                f"{lr:.3e}",
                f"{elapsed:.1f}",
                f"{val['fwl']:.5f}",
            ],
        )

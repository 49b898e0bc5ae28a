"""Leaky integrate-and-fire neuron with a surrogate gradient.

The neuron follows the usual charge / fire / reset template:

    charge:  v[t] = beta * v[t-1] + x[t],      beta = 1 - 1 / tau
    fire:    s[t] = H(v[t] - threshold * (1 - FIRE_MARGIN))
    reset:   v[t] -= s[t] * threshold           ("subtract")
             v[t] *= 1 - s[t]                   ("zero")

The Heaviside step has no useful gradient, so the backward pass uses the
derivative of a smooth arctan step whose sharpness is ``alpha``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from snn.utils.runtime import at_least_float32

RESET_MODES = ("subtract", "zero")
# A neuron fires at v >= threshold * (1 - FIRE_MARGIN). With integer current codes and a leak
# of 1/2 the membrane often lands exactly on the threshold (e.g. codes that cancel plus one
# residual spike), and float rounding would then decide at random; the margin makes such ties
# fire, as exact integer arithmetic does (see snn.deploy.fold), and is far too small to matter
# otherwise (1e-5 of the threshold).
FIRE_MARGIN = 1e-5


def atan_surrogate_primitive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The smooth step whose derivative is the surrogate gradient (for tests and plots)."""
    return torch.atan(0.5 * math.pi * alpha * x) / math.pi + 0.5


class AtanSpike(torch.autograd.Function):
    """Heaviside forward, arctan-derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        grad = alpha / 2.0 / (1.0 + (0.5 * math.pi * alpha * x) ** 2)
        return grad_out * grad, None


def spike_fn(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    return AtanSpike.apply(x, alpha)


class LIFSequence(torch.autograd.Function):
    """LIF over a whole [T, ...] current as one autograd node.

    Autograd through a Python loop records some ten tensors per step; this keeps only the
    membrane before firing, ``h[t] = decay * v[t-1] + x[t]``, and runs the recurrence of the
    gradient by hand:

        dL/dh[t] = dL/ds[t] * surrogate'(h[t] - fire_at) + decay * dL/dh[t+1] * dv[t]/dh[t]
        dL/dx[t] = dL/dh[t]

    with ``dv/dh`` = 1 (subtract) or 1 - s (zero) when the reset is detached, and the reset's
    own surrogate term when it is not. Same results as ``LIFNeuron.forward_stepwise``.
    """

    @staticmethod
    def forward(ctx, x_seq, v0, decay: float, threshold: float, alpha: float, reset: str, detach_reset: bool):
        """Returns the spikes and the membrane after the last step (``v0``: the starting membrane, None
        for rest; no gradient flows into it or out of the final membrane: truncation at the window)."""
        fire_at = threshold * (1 - FIRE_MARGIN)
        spikes = torch.empty_like(x_seq)
        v = torch.zeros_like(x_seq[0]) if v0 is None else v0.detach().to(x_seq.dtype).clone()
        learned = torch.is_tensor(decay)  # a learned leak: a 0-dim tensor that wants its gradient
        # h[t], before firing and reset, one tensor per step: glibc serves blocks under 32 MB from
        # its heap but maps and faults in every larger one afresh, which cost a quarter of the time
        # at [5, 4, 32, 160, 160] when h was one [T, ...] tensor.
        membranes = []
        for t in range(x_seq.shape[0]):
            h = torch.addcmul(x_seq[t], v, decay) if learned else torch.add(x_seq[t], v, alpha=decay)
            torch.ge(h, fire_at, out=spikes[t])  # written as 0/1 floats, no boolean temporary
            if reset == "subtract":
                torch.sub(h, spikes[t], alpha=threshold, out=v)
            else:
                torch.mul(h, spikes[t].neg().add_(1), out=v)
            membranes.append(h)
        ctx.save_for_backward(*membranes)
        ctx.settings = (decay, threshold, alpha, reset, detach_reset, fire_at)
        ctx.v0 = v0.detach() if learned and v0 is not None else None
        ctx.mark_non_differentiable(v)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_final_membrane):
        membranes = ctx.saved_tensors
        decay, threshold, alpha, reset, detach_reset, fire_at = ctx.settings
        learned = torch.is_tensor(decay)
        grad_decay = torch.zeros((), dtype=membranes[0].dtype, device=membranes[0].device)
        grad_x = membranes[0].new_empty((len(membranes), *membranes[0].shape))
        # One step at a time, so that the temporaries are one step's size.
        denominator = torch.empty_like(membranes[0])
        steps = len(membranes)
        for t in range(steps - 1, -1, -1):
            # The arctan surrogate: alpha/2 / (1 + (pi/2 * alpha * (h - fire_at))^2).
            torch.sub(membranes[t], fire_at, out=denominator)
            denominator.mul_(0.5 * math.pi * alpha).square_().add_(1)
            torch.div(grad_spikes[t], denominator, out=grad_x[t]).mul_(alpha / 2)
            if t < steps - 1:
                if reset == "subtract" and detach_reset:  # dv/dh = 1
                    carry = None
                else:
                    surrogate = denominator.reciprocal_().mul_(alpha / 2)
                    if reset == "subtract":  # v = h - threshold * s(h)
                        carry = surrogate.mul_(-threshold).add_(1)
                    else:  # v = h * (1 - s): 1 - s when the reset is detached, minus h * s'(h) when not
                        kept = (membranes[t] < fire_at).to(membranes[t].dtype)
                        carry = kept if detach_reset else kept.sub_(surrogate.mul_(membranes[t]))
                _add_carried(grad_x[t], grad_x[t + 1], carry, decay)
            if learned:  # h[t] = decay * v[t-1] + x[t]: dL/d decay gathers dL/dh[t] * v[t-1]
                before = _membrane_after_reset(membranes[t - 1], threshold, fire_at, reset) if t else ctx.v0
                if before is not None:
                    grad_decay = grad_decay + (grad_x[t] * before).sum()
        return grad_x, None, grad_decay if learned else None, None, None, None, None


def _add_carried(out: torch.Tensor, later: torch.Tensor, carry: torch.Tensor | None, decay) -> None:
    """``out += decay * carry * later`` in place (``carry`` None: 1); ``decay`` a float, or a 0-dim
    tensor for a learned leak (``carry`` is then scaled in place)."""
    if torch.is_tensor(decay):
        if carry is None:
            out.addcmul_(later, decay)
        else:
            out.addcmul_(later, carry.mul_(decay))
    elif carry is None:
        out.add_(later, alpha=decay)
    else:
        out.addcmul_(later, carry, value=decay)


def _membrane_after_reset(h: torch.Tensor, threshold: float, fire_at: float, reset: str) -> torch.Tensor:
    """The membrane a step leaves, from its value ``h`` before firing."""
    fired = (h >= fire_at).to(h.dtype)
    return h - threshold * fired if reset == "subtract" else h * (1 - fired)


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


# A learned leak is one of decay = 1 - 2**-k for these shifts k (tau = 2, 4, 8, 16): a membrane
# update v - (v >> k) + x that integer hardware does with one shift and two additions.
LEAK_SHIFTS = (1, 4)


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire neuron, single-step or over a [T, B, ...] sequence.

    Args:
        tau: membrane time constant in time steps (> 1); the decay is ``1 - 1/tau``.
        threshold: firing threshold.
        reset: ``"subtract"`` (keep the overshoot) or ``"zero"``.
        alpha: sharpness of the arctan surrogate gradient.
        detach_reset: stop the gradient through the reset term (cheaper, often as good).
        learn_leak: learn the leak with the weights, as ``leak_log2`` = log2(tau), rounded in the
            forward pass to a shift k in ``LEAK_SHIFTS`` (decay 1 - 2**-k; the gradient passes the
            rounding straight through). ``tau`` is the start and must be a power of two there.
    """

    def __init__(
        self,
        tau: float = 2.0,
        threshold: float = 1.0,
        reset: str = "subtract",
        alpha: float = 4.0,
        detach_reset: bool = True,
        learn_leak: bool = False,
    ) -> None:
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1 (got {tau}): the decay 1 - 1/tau must lie in (0, 1)")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0 (got {threshold})")
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES} (got {reset!r})")
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.reset = reset
        self.alpha = float(alpha)
        self.detach_reset = detach_reset
        # Mean firing rate of the last forward pass, for logging and SynOps counts.
        self.register_buffer("last_spike_rate", torch.zeros(()), persistent=False)
        self.learn_leak = learn_leak
        if learn_leak:
            shift = math.log2(tau)
            if shift != round(shift) or not LEAK_SHIFTS[0] <= shift <= LEAK_SHIFTS[1]:
                raise ValueError(f"a learned leak starts from tau = 2, 4, 8 or 16 (got {tau})")
            self.leak_log2 = nn.Parameter(torch.tensor(float(shift)))
        # Membranes carried from one input window to the next (see snn.models.state); not saved.
        self.stateful = False
        self.state: torch.Tensor | None = None
        # The integer neuron (snn.models.integer.FoldedNeuron) during an integer evaluation pass:
        # the input is then the integer membrane increment, and so is the carried state.
        self.folded = None

    @property
    def decay(self) -> float:
        """The leak factor per time step (the learned one, rounded to its shift, with ``learn_leak``)."""
        if self.learn_leak:
            return 1.0 - 2.0 ** -float(self.leak_shift().detach())
        return 1.0 - 1.0 / self.tau

    def leak_shift(self) -> torch.Tensor:
        """The learned leak's shift k (decay 1 - 2**-k), rounded straight-through."""
        return _RoundSTE.apply(self.leak_log2.clamp(*LEAK_SHIFTS))

    def _decay_for_forward(self) -> float | torch.Tensor:
        if not self.learn_leak:
            return self.decay
        return 1.0 - torch.pow(2.0, -self.leak_shift())

    def least_firing_input(self, steps: int) -> float:
        """The smallest constant input current that makes the neuron fire within ``steps`` steps
        from rest: ``threshold * (1 - decay) / (1 - decay**steps)``."""
        d = self.decay
        return self.threshold * (1.0 - d) / (1.0 - d**steps)

    def single_step(self, x: torch.Tensor, v: torch.Tensor | None = None):
        """One time step: returns ``(spikes, new_membrane)``."""
        v = x if v is None else self._decay_for_forward() * v + x
        spikes = spike_fn(v - self.threshold * (1 - FIRE_MARGIN), self.alpha)
        s = spikes.detach() if self.detach_reset else spikes
        if self.reset == "subtract":
            v = v - s * self.threshold
        else:
            v = v * (1.0 - s)
        return spikes, v

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Run over a [T, B, ...] input current; the membrane starts at zero, or, when ``stateful``,
        where the previous call left it (``state``; None: at zero).

        One fused autograd node for the whole sequence (``LIFSequence``); ``forward_stepwise``
        is the same arithmetic step by step. The membrane is float32 even under autocast (mixed
        precision): thresholds are crossed in full precision."""
        v0 = self.state if self.stateful else None
        if v0 is not None and v0.shape != x_seq.shape[1:]:
            raise ValueError(
                f"the carried membrane is {list(v0.shape)} but this input gives {list(x_seq.shape[1:])}: "
                "reset the state (snn.models.state.reset_state) when the batch or frame size changes"
            )
        if self.folded is not None:
            spikes, v = self.folded.run(x_seq, v0)
            if self.stateful:
                self.state = v
            self.last_spike_rate = spikes.mean().to(self.last_spike_rate.dtype)  # a buffer: keep its dtype
            return spikes
        with torch.autocast(x_seq.device.type, enabled=False):
            x_seq = at_least_float32(x_seq)
            decay = self._decay_for_forward()
            if torch.is_tensor(decay):
                decay = decay.to(x_seq.dtype)
            spikes, v = LIFSequence.apply(x_seq, v0, decay, self.threshold, self.alpha, self.reset, self.detach_reset)
        if self.stateful:
            self.state = v
        self.last_spike_rate = spikes.detach().mean()
        return spikes

    def forward_stepwise(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``forward`` as a plain loop of ``single_step`` (autograd records every step's ops)."""
        with torch.autocast(x_seq.device.type, enabled=False):
            v = None
            out = []
            for x in at_least_float32(x_seq):
                spikes, v = self.single_step(x, v)
                out.append(spikes)
            spikes = torch.stack(out)
        self.last_spike_rate = spikes.detach().mean()
        return spikes

    def extra_repr(self) -> str:
        leak = ", learned leak" if self.learn_leak else ""
        return f"tau={self.tau}, threshold={self.threshold}, reset={self.reset}, alpha={self.alpha}{leak}"


class NonSpikingIntegrator(nn.Module):
    """Leaky integrator without firing, used to read analog flow out of spikes.

    ``tau=None`` integrates without leak. The readout is the membrane after the
    last step divided by the number of steps, i.e. the time-averaged input
    current for a non-leaky integrator.
    """

    def __init__(self, tau: float | None = None) -> None:
        super().__init__()
        self.tau = tau

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x_seq.device.type, enabled=False):  # float32 under mixed precision too
            x_seq = at_least_float32(x_seq)
            if self.tau is None:
                return x_seq.mean(dim=0)
            decay = 1.0 - 1.0 / self.tau
            v = torch.zeros_like(x_seq[0])
            for x in x_seq:
                v = decay * v + x
            return v / x_seq.shape[0]

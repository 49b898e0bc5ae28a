"""The private PyTorch kernels behind snn.quantization.torch_ops against their plain formulas."""

import pytest
import torch

from snn.quantization import torch_ops


@pytest.mark.parametrize("qmax", [1, 7, 127])
def test_learnable_fake_quantize_matches_the_lsq_formula(qmax):
    torch.manual_seed(0)
    x = (torch.randn(4000) * 2).requires_grad_()
    step = torch.tensor(0.8 / qmax, requires_grad=True)
    x2, step2 = x.detach().clone().requires_grad_(), step.detach().clone().requires_grad_()
    weight = torch.randn(4000)
    y = torch_ops.learnable_fake_quantize(x, step, qmax, grad_factor=0.01)
    ref = torch_ops.lsq_reference(x2, step2, qmax, grad_factor=0.01)
    torch.testing.assert_close(y, ref)
    (y * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(step.grad, step2.grad, rtol=1e-4, atol=1e-4)
    assert step.grad.abs() > 0
    assert x.grad[x.detach().abs() > 0.8 * (qmax + 0.5) / qmax].abs().max() == 0  # clipped inputs: no gradient


@pytest.mark.parametrize("qmax", [1, 7, 127])
def test_our_lsq_equals_pytorchs_private_kernel(qmax):
    """We use our own on every device (the kernel reads its step on the host); it must agree with it."""
    kernel = getattr(torch, "_fake_quantize_learnable_per_tensor_affine", None)
    if kernel is None:
        pytest.skip("this torch has no fused LSQ kernel to compare with")
    x = torch.randn(3, 5, 16, 16, generator=torch.Generator().manual_seed(qmax)) * 2
    upstream = torch.randn_like(x)
    results = []
    for quantize in (
        lambda v, s: kernel(v, s.reshape(1), torch.zeros(1), -qmax, qmax, 0.01),
        lambda v, s: torch_ops.LearnedStepRounding.apply(v, s, qmax, 0.01),
    ):
        v, s = x.clone().requires_grad_(True), torch.tensor(0.8 / qmax, requires_grad=True)
        out = quantize(v, s)
        (out * upstream).sum().backward()
        results.append((out.detach(), v.grad, s.grad))
    (out_k, gx_k, gs_k), (out_c, gx_c, gs_c) = results
    assert torch.equal(out_k, out_c) and torch.equal(gx_k, gx_c)
    torch.testing.assert_close(gs_k.reshape(()), gs_c, rtol=1e-5, atol=1e-4)  # sums in another order
    assert 0 < int((gx_c == 0).sum()) < x.numel()


@pytest.mark.parametrize("fused", [True, False])
def test_lerp_all_moves_each_tensor_towards_its_target(fused, monkeypatch):
    if fused:
        assert hasattr(torch, "_foreach_lerp_"), "torch dropped _foreach_lerp_"
    else:
        monkeypatch.delattr(torch, "_foreach_lerp_")
    ends = [torch.tensor([0.0, 10.0]), torch.tensor([[4.0]])]
    targets = [torch.tensor([10.0, 0.0]), torch.tensor([[0.0]])]
    torch_ops.lerp_all_(ends, targets, 0.25)
    assert ends[0].tolist() == [2.5, 7.5] and ends[1].item() == 3.0


@pytest.mark.parametrize("qmax", [1, 7, 127])
@pytest.mark.parametrize("scale", [0.05, 0.0371, 1 / 3])
def test_clipped_rounding_equals_pytorchs_fake_quantize_in_values_and_gradients(qmax, scale):
    from snn.quantization.torch_ops import fake_quantize

    x = torch.randn(4, 3, 17, 9, generator=torch.Generator().manual_seed(qmax)) * 3 * scale * qmax
    x[0, 0, 0, :3] = torch.tensor([qmax + 0.5, -qmax - 0.5, 0.5]) * scale  # rounding ties at the range's edges
    s = torch.tensor(scale)
    grads, outs = [], []
    for quantize in (
        lambda v: torch.fake_quantize_per_tensor_affine(v, s, torch.zeros((), dtype=torch.int32), -qmax, qmax),
        lambda v: fake_quantize(v, s, qmax),
    ):
        v = x.clone().requires_grad_(True)
        out = quantize(v)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape))
        outs.append(out.detach())
        grads.append(v.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert 0 < int((grads[1] == 0).sum()) < x.numel()  # some inputs clip, most pass

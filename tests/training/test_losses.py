import pytest
import torch

from snn.training.losses import masked_epe, multiscale_epe_loss


def test_masked_epe_ignores_invalid_pixels_and_upsamples_coarse_scales():
    gt = torch.zeros(1, 2, 4, 4)
    pred = torch.zeros(1, 2, 4, 4)
    pred[0, 0, 0, 0] = 10.0  # error only on an invalid pixel
    valid = torch.ones(1, 1, 4, 4)
    valid[0, 0, 0, 0] = 0
    assert float(masked_epe(pred, gt, valid)) == pytest.approx(0.0, abs=1e-3)
    coarse = torch.full((1, 2, 2, 2), 1.0)  # a constant flow stays constant when upsampled
    loss = multiscale_epe_loss([pred, coarse], gt, valid, [1.0, 0.5])
    assert float(loss) == pytest.approx(0.5 * 2**0.5, rel=1e-3)


def test_distillation_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    from snn.training.losses import distillation_loss

    torch.manual_seed(0)
    teacher = [torch.randn(2, 2, 8, 8), torch.randn(2, 2, 4, 4)]
    assert float(distillation_loss([t.clone() for t in teacher], teacher, [1.0, 0.5])) == pytest.approx(0.0, abs=1e-3)
    student = [(t + 1.0).requires_grad_() for t in teacher]  # off by (1, 1) everywhere: EPE sqrt(2)
    loss = distillation_loss(student, teacher, [1.0, 0.5])
    assert float(loss.detach()) == pytest.approx(1.5 * 2**0.5, rel=1e-3)
    loss.backward()
    assert student[0].grad.abs().sum() > 0 and teacher[0].grad is None  # the teacher is only a label

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

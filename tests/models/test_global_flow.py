"""The global-flow head: one flow vector per frame from the bottleneck's rates (full precision only)."""

import pytest
import torch

from snn.config import DEFAULT_CONFIG, ConfigError, load_config
from snn.deploy.fold import FoldError, fold_network
from snn.models.flownet import EventSNNFlowNetLiteV2, GlobalFlow


def test_the_global_flow_is_a_rate_weighted_vote_that_does_not_shrink_with_fewer_events():
    torch.manual_seed(0)
    head = GlobalFlow(3)
    with torch.no_grad():
        head.votes.copy_(torch.tensor([[4.0, 0.0], [0.0, -2.0], [1.0, 1.0]]))
    busy = torch.zeros(1, 1, 3, 8, 8)
    busy[0, 0, 0] = 1.0  # channel 0 fires everywhere: its vote, whatever the share of the frame
    sparse = torch.zeros_like(busy)
    sparse[0, 0, 0, :2, :2] = 1.0  # the same channel at 4 of 64 pixels
    for spikes in (busy, sparse):
        torch.testing.assert_close(
            head(spikes).flatten(), torch.tensor([4.0, 0.0]), atol=0.1, rtol=0
        )  # a sum would give 0.25
    mixed = busy.clone()
    mixed[0, 0, 1] = 1.0  # two channels equally: the mean of their votes
    torch.testing.assert_close(head(mixed).flatten(), torch.tensor([2.0, -1.0]), atol=0.01, rtol=0)
    assert head(torch.zeros_like(busy)).abs().max() == 0  # no events, no motion


def test_the_head_starts_as_the_network_without_it_and_then_moves_every_pixel():
    torch.manual_seed(0)
    with_head = EventSNNFlowNetLiteV2(base_ch=4, global_flow=True)
    plain = EventSNNFlowNetLiteV2(base_ch=4)
    plain.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("global_flow")})
    x = torch.randint(0, 3, (1, 5, 2, 32, 32)).float()
    x[..., 16:, :] = 0  # half the frame without events
    with torch.no_grad():
        torch.testing.assert_close(with_head(x), plain(x))
        with_head.global_flow.votes.fill_(1.0)
        moved = with_head(x) - plain(x)
    assert moved[:, :, 24:, :].abs().min() > 0.5  # pixels far from every event get the frame's motion
    assert sum(p.numel() for p in with_head.parameters()) - sum(p.numel() for p in plain.parameters()) == 16 * 2


def test_the_global_flow_has_no_quantized_form_and_says_so():
    with pytest.raises(ValueError, match="global_flow"):
        EventSNNFlowNetLiteV2(base_ch=4, global_flow=True, quantize=True)
    with pytest.raises(ConfigError, match="global_flow"):
        load_config(DEFAULT_CONFIG, {"global_flow": True, "quantization_enabled": True})
    quantized = EventSNNFlowNetLiteV2(base_ch=4, quantize=True)
    quantized.global_flow = GlobalFlow(16)  # however it got there, the fold does not describe it
    with pytest.raises(FoldError, match="global_flow"):
        fold_network(quantized, 16, 16)
    assert load_config(DEFAULT_CONFIG, {"global_flow": True}).model_args()["global_flow"] is True

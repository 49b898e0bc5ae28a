import pytest
import torch

from snn.models import EventSNNFlowNetLiteV2
from snn.models.layers import SpikingConv2d, SpikingConvBlock, SpikingConvTranspose2d


def test_layer_shapes_and_binary_spikes():
    x = torch.rand(3, 2, 4, 16, 16) * 3  # [T, B, C, H, W]
    for layer, shape in [
        (SpikingConv2d(4, 8), (3, 2, 8, 16, 16)),
        (SpikingConvBlock(4, 8, stride=2), (3, 2, 8, 8, 8)),
        (SpikingConvTranspose2d(4, 8), (3, 2, 8, 32, 32)),
    ]:
        out = layer(x)
        assert out.shape == shape
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        assert isinstance(layer.quant_layer, torch.nn.Identity)


def test_residual_block_needs_matching_shapes():
    with pytest.raises(ValueError, match="residual"):
        SpikingConvBlock(4, 8, residual=True)


def test_model_output_shapes():
    model = EventSNNFlowNetLiteV2(base_ch=8, num_bins=3, bins_per_step=1)
    x = torch.rand(2, 3, 2, 32, 48)
    flows = model.forward_multiscale(x)
    assert [tuple(f.shape) for f in flows] == [(2, 2, 32, 48), (2, 2, 16, 24), (2, 2, 8, 12)]
    assert model(x).shape == (2, 2, 32, 48)
    rates = model.spike_rates()
    assert set(rates) >= {"stem", "enc1", "enc3", "dec1"}
    assert all(0.0 <= r <= 1.0 for r in rates.values())


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_at_base_ch_32_and_scaling():
    n32 = _parameters(EventSNNFlowNetLiteV2(base_ch=32))
    assert 1.0e6 <= n32 <= 1.4e6
    n16 = _parameters(EventSNNFlowNetLiteV2(base_ch=16))
    assert n32 / n16 == pytest.approx(4.0, rel=0.05)  # convolutions dominate: ~ base_ch^2


def test_any_frame_size_is_padded_with_empty_input_and_cropped_back():
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1).eval()
    x = (torch.rand(1, 2, 2, 60, 58) > 0.7).float()
    flow = model(x)
    assert flow.shape == (1, 2, 60, 58)
    padded = torch.zeros(1, 2, 2, 64, 64)
    padded[..., :60, :58] = x
    assert torch.equal(flow, model(padded)[..., :60, :58])  # the same as padding by hand
    # Training's multi-scale pass takes only multiples of 8, and says which sizes.
    with pytest.raises(ValueError, match=r"60x58.*multiples of 8.*56x56"):
        model.forward_multiscale(x)
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        model(torch.rand(2, 2, 64, 64))


def test_gradients_reach_the_first_layer():
    model = EventSNNFlowNetLiteV2(base_ch=8, num_bins=3, bins_per_step=1)
    # Heads start at zero: give them weights so a gradient flows back.
    for head in (model.head1, model.head2, model.head3):
        torch.nn.init.normal_(head.conv.weight, std=0.1)
    flows = model.forward_multiscale(torch.rand(2, 3, 2, 16, 16) * 3)
    sum(f.pow(2).mean() for f in flows).backward()
    assert model.stem.conv.weight.grad is not None
    assert model.stem.conv.weight.grad.abs().sum() > 0


def test_input_norm_makes_the_flow_independent_of_the_event_count_scale():
    torch.manual_seed(0)
    x = torch.poisson(torch.full((2, 3, 2, 16, 16), 0.4))
    plain = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1).eval()
    normed = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, input_norm=True).eval()
    normed.load_state_dict(plain.state_dict())
    for model in (plain, normed):
        for head in (model.head1, model.head2, model.head3):  # heads start at zero flow
            torch.nn.init.normal_(head.conv.weight, std=0.3)
    with torch.no_grad():
        assert torch.allclose(normed(x), normed(3 * x), atol=1e-5)
        assert not torch.allclose(plain(x), plain(3 * x), atol=1e-3)
        assert torch.equal(normed(torch.zeros_like(x)), plain(torch.zeros_like(x)))


def test_the_integer_export_refuses_a_model_with_normalized_input():
    from snn.deploy.fold import FoldError, fold_network

    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, quantize=True, input_norm=True)
    with pytest.raises(FoldError, match="input_norm"):
        fold_network(model, 16, 16)


def test_each_step_reads_its_bin_and_the_ones_before_it():
    from snn.models.flownet import stack_recent_bins

    x = torch.arange(1.0, 5.0).view(1, 4, 1, 1, 1).expand(1, 4, 2, 1, 1)  # bin t holds t + 1 in both channels
    stacked = stack_recent_bins(x, 3)[0, :, :, 0, 0]
    assert stacked.tolist() == [[1, 1, 0, 0, 0, 0], [2, 2, 1, 1, 0, 0], [3, 3, 2, 2, 1, 1], [4, 4, 3, 3, 2, 2]]
    assert torch.equal(stack_recent_bins(x, 1), x)


def test_input_bins_widens_the_stem_and_only_the_stem():
    plain = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1)
    stacked = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, input_bins=3)
    assert stacked.stem.conv.in_channels == 3 * plain.stem.conv.in_channels
    widened = {k for k, v in stacked.state_dict().items() if v.shape != plain.state_dict()[k].shape}
    assert widened == {"stem.conv.weight"}
    assert stacked(torch.rand(1, 3, 2, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="input_bins"):
        EventSNNFlowNetLiteV2(num_bins=3, bins_per_step=1, input_bins=4)


def test_with_input_bins_the_first_step_sees_the_later_bins_only_at_later_steps():
    """Causal within the window: changing the last bin leaves the stem's first steps as they were."""
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=3, bins_per_step=1, input_bins=2).eval()
    x = torch.poisson(torch.full((1, 3, 2, 16, 16), 1.0))
    y = x.clone()
    y[:, 2] += 3
    with torch.no_grad():
        a, b = model.stem(stack_steps(model, x)), model.stem(stack_steps(model, y))
    assert torch.equal(a[:2], b[:2]) and not torch.equal(a[2], b[2])


def test_bins_per_step_groups_consecutive_bins_into_one_step():
    from snn.models.flownet import step_inputs

    x = torch.arange(1.0, 5.0).view(1, 4, 1, 1, 1).expand(1, 4, 2, 1, 1)  # bin t holds t + 1 in both channels
    assert step_inputs(x, 2)[0, :, :, 0, 0].tolist() == [[1, 1, 2, 2], [3, 3, 4, 4]]  # oldest bin first
    assert step_inputs(x, 2, 2)[0, :, :, 0, 0].tolist() == [[1, 1, 2, 2, 0, 0, 0, 0], [3, 3, 4, 4, 1, 1, 2, 2]]
    assert torch.equal(step_inputs(x), x)


def test_bins_per_step_runs_fewer_steps_through_a_wider_stem():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, num_bins=4, bins_per_step=4)
    assert model.time_steps == 1 and model.stem.conv.in_channels == 4 * 2
    steps = []
    model.stem.register_forward_hook(lambda _m, _i, out: steps.append(out.shape[0]))
    assert model(torch.rand(1, 4, 2, 16, 16)).shape == (1, 2, 16, 16)
    assert steps == [1]
    with pytest.raises(ValueError, match="bins_per_step must divide num_bins = 5"):
        EventSNNFlowNetLiteV2(num_bins=5, bins_per_step=2)
    with pytest.raises(ValueError, match="input_bins"):
        EventSNNFlowNetLiteV2(num_bins=4, bins_per_step=2, input_bins=3)


def stack_steps(model, x):
    from snn.models.flownet import stack_recent_bins

    return stack_recent_bins(x, model.input_bins).transpose(0, 1)


def _reach(model: EventSNNFlowNetLiteV2, size: int = 192) -> int:
    """How far from the centre pixel's flow an input still has a gradient (pixels, Chebyshev)."""
    torch.manual_seed(0)
    for head in (model.head1, model.head2, model.head3):  # zero at the start: no gradient would flow
        torch.nn.init.normal_(head.conv.weight, std=0.1)
    x = (torch.rand(1, 5, 2, size, size) * 3).requires_grad_()
    model.eval()(x)[0, :, size // 2, size // 2].sum().backward()  # eval: batch norm mixes no pixels
    ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0, as_tuple=True)
    return int(torch.maximum((ys - size // 2).abs(), (xs - size // 2).abs()).max())


def test_bottleneck_dilation_widens_the_view_with_the_same_weights():
    plain = EventSNNFlowNetLiteV2(base_ch=4, global_context=False)
    dilated = EventSNNFlowNetLiteV2(base_ch=4, bottleneck_dilation=[2, 4], global_context=False)
    assert dilated.res1.conv.dilation == (2, 2) and dilated.res2.conv.dilation == (4, 4)
    assert sum(p.numel() for p in dilated.parameters()) == sum(p.numel() for p in plain.parameters())
    assert _reach(dilated) >= _reach(plain) + 32  # (1 + 3) x 8 px more at 1/8 resolution
    with pytest.raises(ValueError, match="bottleneck_dilation"):
        EventSNNFlowNetLiteV2(bottleneck_dilation=[0, 1])


def _head_inputs(model: EventSNNFlowNetLiteV2, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0]))
        for name, module in (("head1", model.head1), ("dec2", model.dec2.conv))
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_heads_can_read_the_decoders_current_and_the_decoder_still_reads_spikes():
    torch.manual_seed(0)
    spikes = EventSNNFlowNetLiteV2(base_ch=4)
    current = EventSNNFlowNetLiteV2(base_ch=4, head_input="current")
    current.load_state_dict(spikes.state_dict())  # the same weights: the key adds none
    x = torch.rand(2, 5, 2, 16, 16) * 3
    a, b = _head_inputs(spikes, x), _head_inputs(current, x)  # training: batch norm makes every layer fire
    assert torch.equal(a["dec2"], b["dec2"])  # the decoder chain runs on spikes either way
    assert set(a["head1"].unique().tolist()) <= {0.0, 1.0}
    c = 4  # dec1 has base_ch channels, then the stem's skip
    assert torch.equal(a["head1"][:, :, c:], b["head1"][:, :, c:])  # the skip stays spikes
    assert not set(b["head1"][:, :, :c].unique().tolist()) <= {0.0, 1.0}  # the decoder's part is multi-bit
    with pytest.raises(ValueError, match="head_input"):
        EventSNNFlowNetLiteV2(head_input="membrane")


def test_the_context_path_tells_every_pixel_of_motion_anywhere_in_the_frame():
    torch.manual_seed(0)
    model = EventSNNFlowNetLiteV2(base_ch=4, global_context=True)
    assert _reach(model) < 64  # zero at the start: the network without it
    torch.nn.init.normal_(model.context.weight, std=0.5)
    assert _reach(model) >= 95  # a 192-px frame: every event reaches the centre pixel
    plain = EventSNNFlowNetLiteV2(base_ch=4, global_context=False)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters()) == 16 * 16 + 16

"""The context path (``global_context``) in integer arithmetic: the frame rates, the fold into dec3's
current, and the numpy reference against the model, exactly."""

import numpy as np
import pytest
import torch

from snn.deploy import reference
from snn.deploy.export import load_export, write_export
from snn.deploy.fold import fold_network
from snn.deploy.resources import layer_resources
from snn.deploy.vectors import write_vectors
from snn.deploy.verify import compare, torch_spikes_and_flow
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.integer import RATE_BITS, frame_rates
from tests.deploy.lively import lively_model


def _context_model(weights, currents, **kwargs):
    model, events = lively_model(weights, currents, global_context=True, **kwargs)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a trained path, not the zeros it starts from
        model.context.weight.copy_(torch.randn(model.context.weight.shape, generator=generator) * 0.5)
        model.context.bias.copy_(torch.randn(model.context.bias.shape, generator=generator) * 0.3)
    return model, events


def _export(model, path, size=16):
    write_export(*fold_network(model, size, size), path)
    return load_export(path)


def test_frame_rates_round_down_to_rate_bits():
    spikes = torch.zeros(1, 3, 3, 3)
    spikes[0, 0, 0, 0] = 1  # 1 of 9 pixels: 256 / 9 = 28.4
    spikes[0, 1] = 1  # all of them: 256
    spikes[0, 2, :2] = 1  # 6 of 9: 170.7
    assert frame_rates(spikes).tolist() == [[28.0, 256.0, 170.0]]
    assert RATE_BITS == 8


WIDTHS = [(8, 8, False), (4, 4, False), (1, 1, False), (2, 2, True)]


@pytest.mark.parametrize(("weights", "currents", "progressive"), WIDTHS)
def test_the_reference_gives_the_model_spikes_and_flow_codes_with_the_context_path(
    weights, currents, progressive, tmp_path
):
    model, events = _context_model(weights, currents, progressive=progressive)
    export = _export(model, tmp_path)
    dec3 = next(layer for layer in export.description["layers"] if layer["name"] == "dec3")
    assert dec3["context"]["input"] == "res2" and dec3["widths"]["product_sum"] <= 32
    assert "context.weight" in export.weights
    sparse = torch.poisson(torch.full(events.shape, 0.3), generator=torch.Generator().manual_seed(2))
    for window in (events, sparse, torch.full(events.shape, 300.0)):
        agreement = compare(model, export, [window])
        assert agreement.passed, agreement.summary()


def test_the_context_path_changes_dec3_in_the_integer_model_and_the_reference(tmp_path):
    model, events = _context_model(8, 8)
    _, spikes = torch_spikes_and_flow(model, events)
    trace = {}
    export = _export(model, tmp_path / "on")
    reference.run(export.description, export.weights, events.numpy(), trace=trace)
    assert np.abs(trace["dec3"]["context"]).max() > 0
    assert trace["dec3"]["context_rate"].max() <= 2**RATE_BITS
    with torch.no_grad():
        model.context.weight.zero_()
        model.context.bias.zero_()
    _, without = torch_spikes_and_flow(model, events)
    assert not np.array_equal(spikes["dec3"], without["dec3"])  # so the equality above is about the path
    assert compare(model, _export(model, tmp_path / "off"), [events]).passed


def test_a_context_accumulator_beyond_its_stated_bound_is_refused(tmp_path):
    model, events = _context_model(4, 4)
    export = _export(model, tmp_path)
    dec3 = next(layer for layer in export.description["layers"] if layer["name"] == "dec3")
    dec3["context"]["accumulator_bound"] = [0] * len(dec3["context"]["accumulator_bound"])
    with pytest.raises(reference.IntegerOverflowError, match="dec3: a context accumulator"):
        reference.run(export.description, export.weights, events.numpy())


def test_golden_vectors_and_resources_include_the_context_path(tmp_path):
    model, events = _context_model(4, 4)
    export = _export(model, tmp_path)
    manifest = write_vectors(export, [events[0]], tmp_path / "vectors")
    names = [array["name"] for array in manifest["arrays"]]
    assert names.index("dec3.context_rate") < names.index("dec3.context") < names.index("dec3.current")
    assert (tmp_path / "vectors" / "window_000" / "dec3.context.hex").is_file()
    dec3 = next(layer for layer in export.description["layers"] if layer["name"] == "dec3")
    plain = {k: v for k, v in dec3.items() if k != "context"}
    assert layer_resources(dec3, 1)["weights"] - layer_resources(plain, 1)["weights"] == 16 * 16


def test_a_quantized_model_trains_on_rates_rounded_down_with_a_straight_through_gradient():
    model = EventSNNFlowNetLiteV2(base_ch=2, quantize=True, global_context=True)
    torch.nn.init.normal_(model.context.weight)
    spikes = (torch.rand(1, 2, 8, 3, 3) > 0.5).float().requires_grad_()
    captured = {}
    model.context.register_forward_hook(lambda _m, inputs, _out: captured.setdefault("rates", inputs[0]))
    model._context(spikes).sum().backward()
    rates, means = captured["rates"], spikes.mean(dim=(-2, -1), keepdim=True).flatten(0, 1)  # [T*B, C, 1, 1]
    assert rates.shape == means.shape
    assert torch.equal(rates * 2**RATE_BITS, torch.floor(rates * 2**RATE_BITS))  # on the 2**-8 grid
    assert torch.all(rates <= means) and torch.all(means - rates < 2.0**-RATE_BITS)  # rounded down
    assert not torch.equal(rates, means)  # ninths are not on the grid
    assert spikes.grad.abs().min() > 0  # the rounding passes the gradient straight through
    fp = EventSNNFlowNetLiteV2(base_ch=2, global_context=True)
    fp.context.register_forward_hook(lambda _m, inputs, _out: captured.__setitem__("fp", inputs[0]))
    fp._context(spikes)
    assert torch.equal(captured["fp"], means)  # full precision: no rounding

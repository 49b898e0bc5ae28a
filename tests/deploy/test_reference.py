"""The folded integer network against the PyTorch model it came from: exact equality, no tolerance.

A quantized model evaluates in the integer arithmetic it exports (``snn.models.integer``), so
the numpy reference must give the same spikes in every layer at every step and the same flow codes.
"""

import copy

import numpy as np
import pytest
import torch

from snn.deploy import reference
from snn.deploy.export import ExportError, load_export, write_export
from snn.deploy.fold import WIRING, FoldError, fold_network
from snn.deploy.verify import compare, torch_spikes_and_flow
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.integer import INPUT_MAX
from snn.models.state import carrying_state
from snn.quantization import control
from tests.deploy.lively import lively_model


def _export(model, tmp_path, size=16):
    write_export(*fold_network(model, size, size), tmp_path)
    return load_export(tmp_path)


def _windows(events):
    """All-zero, saturated (over the input's maximum) and random windows of ``events``' shape."""
    shape = tuple(events.shape)
    generator = torch.Generator().manual_seed(1)
    return {
        "zero": torch.zeros(shape),
        "saturated": torch.full(shape, float(INPUT_MAX + 45)),
        "random": torch.poisson(torch.full(shape, 1.5), generator=generator),
        "calibration": events,
    }


def test_the_reference_gives_the_model_spikes_and_flow_codes_exactly(lively, tmp_path):
    model, events = lively
    export = _export(model, tmp_path)
    for kind, window in _windows(events).items():
        agreement = compare(model, export, [window])
        assert agreement.passed, f"{kind}: {agreement.summary()}"
        assert agreement.code_total == sum(2 * s * s for s in (16, 8, 4)) * len(window)
    _, spikes = torch_spikes_and_flow(model, events)
    assert all(s.mean() > 0 for s in spikes.values()), "every layer must fire for the comparison to mean much"


def test_an_input_beyond_the_maximum_count_saturates_in_the_model_and_the_reference(lively, tmp_path):
    model, events = lively
    export = _export(model, tmp_path)
    at_max, beyond = torch.full(events.shape, float(INPUT_MAX)), torch.full(events.shape, 1000.0)
    with torch.no_grad():
        assert torch.equal(model.eval()(at_max), model(beyond))
    flow_max = reference.run(export.description, export.weights, at_max.numpy())[0]
    flow_beyond = reference.run(export.description, export.weights, beyond.numpy())[0]
    assert np.array_equal(flow_max, flow_beyond)


def test_every_value_fits_the_widths_the_description_states(lively):
    model, _ = lively
    description, _ = fold_network(model, 16, 16)
    for layer in description["layers"]:
        widths = layer["widths"]
        assert max(widths.values()) <= 32, (layer["name"], widths)
        assert widths["product_sum"] >= widths["accumulator"]
        if "neuron" in layer:
            assert 1 <= layer["neuron"]["threshold"] < 2 ** (widths["membrane"] - 1)


def test_the_reference_fails_loudly_when_a_value_leaves_its_stated_width(tmp_path):
    model, events = lively_model(4, 4)
    export = _export(model, tmp_path)
    enc1 = next(layer for layer in export.description["layers"] if layer["name"] == "enc1")
    enc1["widths"]["membrane"] = 4  # a membrane of 4 bits cannot hold what enc1 integrates
    with pytest.raises(reference.IntegerOverflowError, match="enc1 membrane"):
        reference.run(export.description, export.weights, events.numpy())
    enc1["widths"]["membrane"] = 32
    enc1["current"]["multiplier"] = [2**30] * len(enc1["current"]["multiplier"])
    with pytest.raises(reference.IntegerOverflowError, match="enc1 acc\\*M\\+B"):
        reference.run(export.description, export.weights, events.numpy())


def test_folding_refuses_what_it_cannot_make_exact(tmp_path):
    model, _ = lively_model(4, 4)
    unset = copy.deepcopy(model)
    unset.enc2.quant_layer.step_initialized.fill_(False)
    with pytest.raises(FoldError, match="no range or step"):
        fold_network(unset, 16, 16)
    leaky = copy.deepcopy(model)
    leaky.enc1.neuron.tau = 3.0
    with pytest.raises(FoldError, match="enc1: .*tau = 3"):
        fold_network(leaky, 16, 16)
    extra = copy.deepcopy(model)
    extra.side_branch = torch.nn.Conv2d(2, 2, 1)
    with pytest.raises(FoldError, match="does not know: side_branch"):
        fold_network(extra, 16, 16)
    currents = copy.deepcopy(model)
    currents.head_input = "current"
    with pytest.raises(FoldError, match="head_input"):
        fold_network(currents, 16, 16)
    assert currents.eval().integer_plan() is None  # and it evaluates in float
    unquantized_context, _ = lively_model(4, 4, global_context=True)
    unquantized_context.context = torch.nn.Conv2d(16, 16, 1)
    with pytest.raises(FoldError, match="dec3: the context path must be a weight-quantized 1x1 convolution"):
        fold_network(unquantized_context, 16, 16)


def test_folding_leaves_the_callers_model_as_it_was():
    model, _ = lively_model(4, 4)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_network(model, 16, 16)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_that_cannot_be_folded_evaluates_in_float_and_says_so(caplog):
    model, events = lively_model(4, 4)
    model.enc1.neuron.tau = 3.0
    with torch.no_grad():
        model.eval()(events)
    assert model.integer_plan() is None
    assert "evaluating in float fake-quant arithmetic" in caplog.text and "tau = 3" in caplog.text


def test_description_matches_the_model(lively):
    model, _ = lively
    description, tensors = fold_network(model, 24, 32)
    layers = {entry["name"]: entry for entry in description["layers"]}
    assert [entry["name"] for entry in description["layers"]] == [name for name, _, _ in WIRING]
    assert description["time_bins"] == model.num_bins and description["input"]["height"] == 24
    for name, entry in layers.items():
        conv = getattr(model, name).conv
        assert tensors[entry["weight"]["tensor"]][0].shape == tuple(conv.weight.shape)
        assert entry["weight"]["bits"] == conv.weight_bits
        assert entry["stride"] == list(conv.stride) and entry["padding"] == list(conv.padding)
        assert entry["out_channels"] == conv.out_channels and entry["in_channels"] == conv.in_channels
        assert entry["current"]["bits"] == (1 if getattr(model, name).quant_layer.is_binary else
                                            getattr(model, name).quant_layer.bit_width)  # fmt: skip
        assert len(entry["current"]["multiplier"]) == conv.out_channels
        # codes x per-channel scales rebuild the weights the fake-quant model uses
        codes = torch.tensor(tensors[entry["weight"]["tensor"]][0], dtype=torch.float64)
        scales = torch.tensor(entry["weight"]["scales"]).view([-1 if d == conv.channel_axis else 1 for d in range(4)])
        torch.testing.assert_close(codes * scales, conv.quantized_weight().detach().double(), rtol=1e-5, atol=1e-7)
    assert layers["enc3"]["output_shape"] == [16, 3, 4] and layers["head1"]["output_shape"] == [2, 24, 32]
    assert layers["res1"]["residual"] and not layers["enc3"]["residual"]
    assert layers["dec2"]["inputs"] == ["dec3", "enc2"] and layers["dec3"]["type"] == "spiking_conv_transpose"
    assert layers["enc1"]["neuron"]["leak_shift"] == 1 and layers["enc1"]["neuron"]["tau"] == 2  # tau 2: one shift
    assert layers["stem"]["weight"]["bits"] == 8  # pinned edge layer


def test_a_full_precision_model_cannot_be_folded():
    with pytest.raises(FoldError, match="not quantized"):
        fold_network(EventSNNFlowNetLiteV2(base_ch=4, num_bins=2, bins_per_step=1), 16, 16)


def test_corrupt_or_truncated_exports_are_refused(tmp_path):
    model, _ = lively_model(4, 4)
    write_export(*fold_network(model, 16, 16), tmp_path)
    blob = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(blob[:-3])
    with pytest.raises(ExportError, match="weights.bin: .* bytes, the index says"):
        load_export(tmp_path)
    (tmp_path / "weights.bin").write_bytes(bytes([blob[0] ^ 1]) + blob[1:])
    with pytest.raises(ExportError, match="sha256"):
        load_export(tmp_path)
    (tmp_path / "weights.bin").write_bytes(blob)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ExportError, match="index.json: unreadable JSON"):
        load_export(tmp_path)
    (tmp_path / "index.json").unlink()
    with pytest.raises(ExportError, match="index.json: not found"):
        load_export(tmp_path)


def test_integer_reference_follows_a_positive_current_range(tmp_path):
    model, events = lively_model(4, 4, current_range="positive")
    write_export(*fold_network(model, 16, 16), tmp_path)
    agreement = compare(model, load_export(tmp_path), [events])
    assert agreement.passed, agreement.summary()


@pytest.mark.parametrize("bins_per_step", [1, 3], ids=["three steps", "one step"])
@pytest.mark.parametrize("widths", [(4, 4), (1, 4)], ids=["W4A4", "W1A4"])
def test_integer_reference_follows_current_steps_aligned_to_the_threshold(widths, bins_per_step, tmp_path):
    model, events = lively_model(*widths, current_range="positive", bins_per_step=bins_per_step,
                                 align_current_steps=True)  # fmt: skip
    assert all(layer.quant_layer.align_to == 1.0 for layer in model.spiking_layers().values())
    write_export(*fold_network(model, 16, 16), tmp_path)
    agreement = compare(model, load_export(tmp_path), [events])
    assert agreement.passed, agreement.summary()


@pytest.mark.parametrize("bins_per_step", [1, 3], ids=["three steps", "one step"])
@pytest.mark.parametrize("widths", [(1, 1), (2, 2)], ids=["W1A1", "W2A2"])
def test_integer_reference_follows_binary_thresholds_and_the_shortcut_before_the_quantizer(
    widths, bins_per_step, tmp_path
):
    model, events = lively_model(*widths, bins_per_step=bins_per_step, align_current_steps=True,
                                 binary_threshold=True, shortcut_before_quant=True)  # fmt: skip
    generator = torch.Generator().manual_seed(2)
    for layer in model.spiking_layers().values():
        layer.norm.bias.data.uniform_(0.6, 1.2, generator=generator)  # currents at the aligned threshold too
        t = layer.quant_layer.binary_threshold
        if t is not None:  # thresholds that differ per channel, as training leaves them
            t.data.copy_(torch.rand(t.shape, generator=generator) * 1.2 - 0.2)
    with control.calibrating(model):
        model(events)
    description, tensors = fold_network(model, 16, 16)
    shortcuts = {layer["name"]: layer["current"]["shortcut"] for layer in description["layers"]}
    assert shortcuts["res1"] > 0 and shortcuts["res2"] > 0 and shortcuts["enc1"] == 0
    assert all(layer["neuron"]["residual_current"] == 0 for layer in description["layers"] if "neuron" in layer)
    write_export(description, tensors, tmp_path)
    agreement = compare(model, load_export(tmp_path), [events, torch.poisson(torch.full(events.shape, 0.7))])
    assert agreement.passed, agreement.summary()
    _, spikes = torch_spikes_and_flow(model, events)
    assert spikes["enc3"].mean() > 0 and 0 < spikes["res1"].mean() < 1  # the shortcut had spikes to carry


def test_a_model_with_synchronised_batch_norms_folds_as_the_plain_one():
    """DDP on CUDA turns batch norms into SyncBatchNorm; their statistics must fold all the same."""
    model, _ = lively_model(4, 4)
    plain, tensors = fold_network(model, 16, 16)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert isinstance(synced.enc1.norm, torch.nn.SyncBatchNorm)
    described, synced_tensors = fold_network(synced, 16, 16)
    assert described == plain
    assert synced_tensors.keys() == tensors.keys()
    assert all(np.array_equal(synced_tensors[k][0], tensors[k][0]) for k in tensors)


def test_the_reference_streams_membranes_across_windows_as_the_stateful_model_does(lively, tmp_path):
    model, events = lively
    export = _export(model, tmp_path)
    windows = [events, torch.poisson(torch.full((2, 3, 2, 16, 16), 1.5))]
    membranes, traces, codes = {}, [{}, {}], [{}, {}]
    streamed = [
        reference.run(export.description, export.weights, w.numpy(), membranes, trace)
        for w, trace in zip(windows, traces, strict=True)
    ]
    assert set(membranes) == set(model.spiking_layers())
    with torch.no_grad(), carrying_state(model.eval()):
        expected = [torch_spikes_and_flow(model, w, c) for w, c in zip(windows, codes, strict=True)]
    for i, ((_, spikes_r), (_, spikes_t)) in enumerate(zip(streamed, expected, strict=True)):
        assert all(np.array_equal(spikes_r[name], spikes_t[name]) for name in spikes_t)
        assert all(np.array_equal(traces[i][head]["code_sum"], codes[i][head]) for head in codes[i])
    fresh = {}
    reference.run(export.description, export.weights, windows[1].numpy(), trace=fresh)
    # The carried membranes change the second window.
    assert not np.array_equal(fresh["head1"]["code_sum"], traces[1]["head1"]["code_sum"])


# input_bins 3: step t reads bins t, t-1, t-2. bins_per_step 2 with input_bins 2: 4 bins run 2 steps,
# each stem input holding 2 steps x 2 bins. The reference must build the same stem input.
STEM_INPUTS = {
    "input_bins3": ({"input_bins": 3}, {"time_bins": 3, "time_steps": 3, "stacked": 3}),
    "bins_per_step2": (
        {"num_bins": 4, "bins_per_step": 2, "input_bins": 2},
        {"time_bins": 4, "time_steps": 2, "stacked": 4},
    ),
}


@pytest.mark.parametrize("widths", [(8, 8), (1, 1)], ids=["W8A8", "W1A1"])
@pytest.mark.parametrize("case", list(STEM_INPUTS))
def test_integer_reference_builds_the_stem_input_as_the_model_does(case, widths, tmp_path):
    kwargs, want = STEM_INPUTS[case]
    model, events = lively_model(*widths, **kwargs)
    description, tensors = fold_network(model, 16, 16)
    assert (description["time_bins"], description["time_steps"]) == (want["time_bins"], want["time_steps"])
    assert description["input"]["input_bins"] == kwargs["input_bins"]
    assert description["input"]["bins_per_step"] == kwargs.get("bins_per_step", 1)
    assert description["layers"][0]["in_channels"] == want["stacked"] * model.in_channels
    write_export(description, tensors, tmp_path)
    export = load_export(tmp_path)
    other = torch.poisson(torch.full(tuple(events.shape), 1.5))
    agreement = compare(model, export, [events, other])
    assert agreement.passed, agreement.summary()
    _, spikes = reference.run(description, export.weights, events.numpy())
    assert spikes["stem"].shape[0] == want["time_steps"]


def test_step_inputs_in_numpy_match_the_model():
    from snn.models.flownet import step_inputs

    x = torch.poisson(torch.full((2, 6, 2, 3, 3), 1.0))
    want = step_inputs(x, 3, 2).transpose(0, 1).numpy()
    got = reference.step_inputs(np.moveaxis(x.numpy(), 1, 0), 3, 2)
    assert np.array_equal(got, want)


def test_stacking_recent_bins_in_numpy_matches_the_model():
    from snn.models.flownet import stack_recent_bins

    x = torch.poisson(torch.full((2, 4, 2, 3, 3), 1.0))
    want = stack_recent_bins(x, 3).transpose(0, 1).numpy()
    got = reference.stack_recent_bins(np.moveaxis(x.numpy(), 1, 0), 3)
    assert np.array_equal(got, want)


def test_the_reference_convolves_a_dilated_bottleneck_as_the_model_does(tmp_path):
    model, events = lively_model(4, 4, size=32, bottleneck_dilation=[2, 3])
    description, tensors = fold_network(model, 32, 32)
    dilations = {layer["name"]: layer["dilation"] for layer in description["layers"]}
    assert dilations["res1"] == [2, 2] and dilations["res2"] == [3, 3] and dilations["enc3"] == [1, 1]
    write_export(description, tensors, tmp_path)
    agreement = compare(model, load_export(tmp_path), [events])
    assert agreement.passed, agreement.summary()

"""The folded integer network against the PyTorch fake-quant model it came from."""

import copy

import numpy as np
import pytest
import torch

from snn.deploy import reference
from snn.deploy.export import ExportError, load_export, write_export
from snn.deploy.fold import WIRING, FoldError, fold_network
from snn.deploy.verify import compare, torch_spikes_and_flow
from snn.models.flownet import EventSNNFlowNetLiteV2
from snn.models.layers import seq_apply
from snn.models.state import carrying_state
from tests.deploy.lively import lively_model


def test_integer_reference_reproduces_pytorch_at_every_width(lively, tmp_path):
    model, events = lively
    description, tensors = fold_network(model, 16, 16)
    write_export(description, tensors, tmp_path)
    export = load_export(tmp_path)
    other = torch.poisson(torch.full((2, 3, 2, 16, 16), 1.5))  # windows it was not calibrated on
    agreement = compare({"float64": copy.deepcopy(model).double()}, export, [events, other])["float64"]
    _, spikes = torch_spikes_and_flow(model, other)
    assert all(s.mean() > 0 for s in spikes.values()), "every layer must fire for the comparison to mean much"
    assert agreement.spike_agreement >= 0.999, agreement.summary()
    assert agreement.flow_max_abs <= 0.01, agreement.summary()
    assert agreement.passed


def test_folded_currents_match_the_fake_quant_currents(lively):
    """Before rounding: acc x M / 2^S + B / 2^S is the float current over the step."""
    model, events = lively
    description, tensors = fold_network(model, 16, 16)
    layer = next(entry for entry in description["layers"] if entry["name"] == "enc1")
    spikes = model.stem(events.transpose(0, 1)).detach()
    with torch.no_grad():
        want = seq_apply(lambda x: model.enc1.norm(model.enc1.conv(x)), spikes).flatten(0, 1).double().numpy()
    acc = reference.conv2d_int(spikes.flatten(0, 1).numpy().astype(np.int64), tensors["enc1.weight"][0], 2, 1)
    current = layer["current"]
    mult = np.asarray(current["multiplier"], dtype=np.float64)[None, :, None, None]
    add = np.asarray(current["offset"], dtype=np.float64)[None, :, None, None]
    got = (acc * mult + add) / 2 ** current["shift"] * current["step"]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


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
    assert layers["enc1"]["neuron"]["decay"] == {"multiplier": 2**15, "shift": 16, "tau": 2.0}  # tau 2: a shift
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
    agreement = compare({"float64": copy.deepcopy(model).double()}, load_export(tmp_path), [events])["float64"]
    assert agreement.passed, agreement.summary()


@pytest.mark.parametrize("bins_per_step", [1, 3], ids=["three steps", "one step"])
@pytest.mark.parametrize("widths", [(4, 4), (1, 4)], ids=["W4A4", "W1A4"])
def test_integer_reference_follows_current_steps_aligned_to_the_threshold(widths, bins_per_step, tmp_path):
    model, events = lively_model(*widths, current_range="positive", bins_per_step=bins_per_step,
                                 align_current_steps=True)  # fmt: skip
    assert all(layer.quant_layer.align_to == 1.0 for layer in model.spiking_layers().values())
    write_export(*fold_network(model, 16, 16), tmp_path)
    agreement = compare({"float64": copy.deepcopy(model).double()}, load_export(tmp_path), [events])["float64"]
    assert agreement.passed, agreement.summary()


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
    write_export(*fold_network(model, 16, 16), tmp_path)
    export = load_export(tmp_path)
    windows = [events, torch.poisson(torch.full((2, 3, 2, 16, 16), 1.5))]
    membranes = {}
    streamed = [reference.run(export.description, export.weights, w.numpy(), membranes)[0] for w in windows]
    assert set(membranes) == set(model.spiking_layers())
    twin = copy.deepcopy(model).double()
    with torch.no_grad(), carrying_state(twin):
        expected = [twin(w.double()).numpy() for w in windows]
    assert np.abs(streamed[0] - expected[0]).max() <= 0.01
    assert np.abs(streamed[1] - expected[1]).max() <= 0.01
    fresh = reference.run(export.description, export.weights, windows[1].numpy())[0]
    assert np.abs(fresh - streamed[1]).max() > 0.01  # the carried membranes change the second window


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
    agreement = compare({"float64": copy.deepcopy(model).double()}, export, [events, other])["float64"]
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

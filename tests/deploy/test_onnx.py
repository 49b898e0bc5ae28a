"""The one-step ONNX graph of a W8A8 model against PyTorch, stepped over all time bins by onnxruntime."""

import pytest
import torch

from snn.deploy.fold import FoldError
from snn.deploy.onnx_step import OneStepNetwork, export_onnx, run_onnx
from snn.models.flownet import float_fake_quant
from tests.deploy.lively import lively_model


@pytest.mark.parametrize("context", [False, True], ids=["plain", "context path"])
def test_stepping_the_one_step_module_gives_the_model_flow(context):
    model, events = lively_model(8, 8, global_context=context)
    if context:  # a trained path, not the zeros it starts from
        torch.nn.init.normal_(model.context.weight, std=0.5)
        torch.nn.init.normal_(model.context.bias, std=0.3)
    step = OneStepNetwork(model)
    state = step.initial_state(len(events), *events.shape[-2:])
    with torch.no_grad():
        for t in range(events.shape[1]):
            *state, flow = step(events[:, t], *state)
        with float_fake_quant(model):
            want = model(events)
    assert float((flow - want).abs().max()) < 1e-5 * max(1.0, float(want.abs().max()))


def test_onnxruntime_matches_pytorch_over_all_time_bins(tmp_path):
    pytest.importorskip("onnx", reason="the optional onnx package is not installed (python -m pip install onnx)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (python -m pip install onnxruntime)")
    import onnx

    model, events = lively_model(8, 8)
    path = tmp_path / "step.onnx"
    step = export_onnx(model, path, 16, 16)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    # weights and currents of 12 layers, and the context path's weights
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 25
    assert [i.name for i in graph.input][:2] == ["events_t", "v_stem"] and graph.output[-1].name == "flow"
    with torch.no_grad(), float_fake_quant(model):
        want = model(events[:1])
    got = run_onnx(path, step, events[:1])
    assert want.abs().max() > 0.1  # a flow worth comparing
    assert float((got - want).abs().max()) < 1e-4


def test_only_w8a8_models_get_a_step_graph():
    model, _ = lively_model(4, 4)
    with pytest.raises(FoldError, match="W8A8"):
        OneStepNetwork(model)
    model, _ = lively_model(8, 8, shortcut_before_quant=True)
    with pytest.raises(FoldError, match="shortcut_before_quant"):
        OneStepNetwork(model)


def test_the_step_graph_takes_the_grouped_and_stacked_bins_of_its_model(tmp_path):
    pytest.importorskip("onnx", reason="the optional onnx package is not installed (python -m pip install onnx)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (python -m pip install onnxruntime)")
    import onnx

    model, events = lively_model(8, 8, input_bins=2, num_bins=4, bins_per_step=2)
    path = tmp_path / "step.onnx"
    step = export_onnx(model, path, 16, 16)
    events_t = onnx.load(str(path)).graph.input[0]
    assert events_t.type.tensor_type.shape.dim[1].dim_value == 2 * 2 * model.in_channels
    with torch.no_grad(), float_fake_quant(model):
        want = model(events[:1])
    assert float((run_onnx(path, step, events[:1]) - want).abs().max()) < 1e-4

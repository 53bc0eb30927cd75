"""Tests for `keras_mtl.architectures.PLE` and its levels, `ExtractionNetwork`
(CGC / PLE, Tang et al. 2020)."""

import numpy as np
import pytest

from keras_mtl import weighting as W
from keras_mtl.architectures import PLE
from keras_mtl.architectures import ExtractionNetwork

from conftest import random_images
from test_architectures_mmoe import NAMES
from test_architectures_mmoe import fit_and_round_trip
from test_architectures_mmoe import numpy
from test_architectures_mmoe import numpy_experts
from test_architectures_mmoe import softmax
from test_architectures_mmoe import tiny_backbone


def numpy_level(layer, inputs):
    """Reference of one `ExtractionNetwork` level from its weights and the
    paper's equations, in the layer's input/output formats."""
    if isinstance(inputs, list):
        task_inputs, shared_input = inputs[:-1], inputs[-1]
    else:
        task_inputs, shared_input = [inputs] * len(layer.task_names), inputs
    shared = numpy_experts(layer.shared_expert_group, shared_input)
    own = [numpy_experts(g, x) for g, x in zip(layer.task_expert_groups, task_inputs)]
    outputs = []
    for gate, x, own_k in zip(layer.task_gates, task_inputs, own):
        weights = softmax(x @ numpy(gate.kernel))  # own experts first, then shared
        outputs.append(np.einsum("be,beu->bu", weights, np.concatenate([own_k, shared], 1)))
    if not layer.shared_gate:
        return dict(zip(layer.task_names, outputs))
    weights = softmax(shared_input @ numpy(layer.shared_gate_layer.kernel))
    every = np.concatenate([*own, shared], axis=1)
    return [*outputs, np.einsum("be,beu->bu", weights, every)]


def x_data(n=3, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


# --- CGC: one level without a shared gate ---------------------------------------
def test_cgc_outputs_a_dict_of_task_vectors():
    layer = ExtractionNetwork(
        ["a", "b", "c"], shared_experts=2, task_experts=3, expert_units=(5, 4)
    )
    outputs = layer(x_data())
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "a": (3, 4), "b": (3, 4), "c": (3, 4)
    }
    # each task gate covers its own 3 experts and the 2 shared ones
    assert all(tuple(g.kernel.shape) == (6, 5) for g in layer.task_gates)
    assert layer.shared_gate_layer is None


def test_cgc_zero_gates_average_own_and_shared_experts_only():
    layer = ExtractionNetwork(NAMES, shared_experts=2, task_experts=1, expert_units=(4,))
    x = x_data()
    layer(x)
    for gate in layer.task_gates:
        gate.kernel.assign(np.zeros((6, 3)))
    outputs = layer(x)
    shared = numpy_experts(layer.shared_expert_group, x)
    for name, group in zip(NAMES, layer.task_expert_groups):
        own = numpy_experts(group, x)
        expected = (own[:, 0] + shared[:, 0] + shared[:, 1]) / 3
        np.testing.assert_allclose(numpy(outputs[name]), expected, rtol=1e-5, atol=1e-6)
    # the two tasks' own experts differ, so their outputs do too
    assert not np.allclose(numpy(outputs["a"]), numpy(outputs["b"]))


def test_task_gate_lists_own_experts_first():
    layer = ExtractionNetwork(NAMES, shared_experts=1, task_experts=1, expert_units=(4,))
    x = np.ones((2, 3), "float32")
    layer(x)
    # logits [60, 0]: all weight on gate slot 0, which is the task's own expert
    for gate in layer.task_gates:
        gate.kernel.assign([[20.0, 0.0]] * 3)
    outputs = layer(x)
    for name, group in zip(NAMES, layer.task_expert_groups):
        np.testing.assert_allclose(
            numpy(outputs[name]), numpy_experts(group, x)[:, 0], rtol=1e-5, atol=1e-6
        )


def test_gate_rows_are_distributions():
    layer = ExtractionNetwork(
        NAMES, shared_experts=2, task_experts=2, expert_units=(3,), shared_gate=True
    )
    values = {k: numpy(v) for k, v in layer.gate_values(x_data()).items()}
    assert {k: v.shape for k, v in values.items()} == {"a": (3, 4), "b": (3, 4), "shared": (3, 6)}
    for v in values.values():
        np.testing.assert_allclose(v.sum(axis=1), 1.0, rtol=1e-6)


# --- PLE: levels with a shared gate ---------------------------------------------
def test_shared_gate_mixes_every_expert_of_the_level():
    layer = ExtractionNetwork(
        NAMES, shared_experts=2, task_experts=2, expert_units=(4,), shared_gate=True
    )
    x = x_data()
    outputs = layer(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    layer.shared_gate_layer.kernel.assign(np.zeros((6, 6)))
    shared_output = numpy(layer(x)[-1])
    every = np.concatenate(
        [numpy_experts(g, x) for g in layer.task_expert_groups]
        + [numpy_experts(layer.shared_expert_group, x)],
        axis=1,
    )
    np.testing.assert_allclose(shared_output, every.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_two_levels_match_the_papers_equations():
    backbone = tiny_backbone()
    arch = PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=(5,))
    trunk = arch.build_trunk(backbone, NAMES)
    images = random_images(3)
    first, last = trunk.get_layer("extraction_0"), trunk.get_layer("extraction_1")
    assert first.shared_gate and not last.shared_gate
    pooled = numpy(backbone(images)).mean(axis=(1, 2))
    expected = numpy_level(last, numpy_level(first, pooled))
    outputs = trunk(images)
    for name in NAMES:
        np.testing.assert_allclose(numpy(outputs[name]), expected[name], rtol=1e-4, atol=1e-6)


def test_one_level_is_cgc():
    trunk = PLE(num_levels=1, expert_units=(4,)).build_trunk(tiny_backbone(), NAMES)
    levels = [layer for layer in trunk.layers if isinstance(layer, ExtractionNetwork)]
    assert len(levels) == 1 and not levels[0].shared_gate
    assert {k: tuple(v.shape) for k, v in trunk.output.items()} == {"a": (None, 4), "b": (None, 4)}


def test_configs_round_trip():
    layer = ExtractionNetwork(
        NAMES, shared_experts=3, task_experts=2, expert_units=(4,), shared_gate=True
    )
    config = layer.get_config()
    assert ExtractionNetwork.from_config(config).get_config() == config
    arch = PLE(num_levels=3, shared_experts=1, task_experts=2, expert_units=(8, 4))
    assert PLE.from_config(arch.get_config()).get_config() == arch.get_config()


@pytest.mark.parametrize(
    "weighting",
    # make test keeps one fit (under 10 minutes): PCGrad's, in params mode.
    [pytest.param(lambda: W.Uncertainty(), marks=pytest.mark.slow), lambda: W.get("pcgrad")],
    ids=["uncertainty", "pcgrad-params"],
)
def test_fit_and_keras_round_trip(weighting, tmp_path):
    arch = PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=(8,))
    model, _ = fit_and_round_trip(arch, weighting(), tmp_path)
    assert model.trunk.get_layer("extraction_0").shared_gate


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"num_levels": 0},
            r"argument `num_levels`. Expected an integer >= 1. Received: num_levels=0",
        ),
        ({"shared_experts": 0}, r"argument `shared_experts`. Expected an integer >= 1"),
        ({"task_experts": -1}, r"Received: task_experts=-1"),
        ({"expert_units": [4, "8"]}, r"argument `expert_units`.*Received: expert_units=\[4, '8'\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PLE(**kwargs)


def test_bad_level_inputs():
    layer = ExtractionNetwork(NAMES, shared_gate=True)
    with pytest.raises(ValueError, match=r"expects a vector or a list of 3 vectors"):
        layer([x_data(), x_data()])
    with pytest.raises(ValueError, match=r"argument `shared_gate`. Expected True or False"):
        ExtractionNetwork(NAMES, shared_gate="yes")

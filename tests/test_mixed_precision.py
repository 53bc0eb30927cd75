"""Every weighting method trains under Keras' mixed precision policies.

`mixed_float16` (the optimizer is wrapped in a `LossScaleOptimizer`; the
gradient-level step scales its backward passes and unscales the per-task
gradients before the method combines them) and `mixed_bfloat16` (no loss
scaling): the variables, the weighting's state included, stay float32, and
two epochs end within a stated tolerance of the same run in float32. On TF
and JAX (this module is in the Makefile's JAX_MORE).

Tolerance: each task's mean training loss in the last epoch within 1 %
(float16) / 3 % (bfloat16, 8 bits of mantissa) of float32's, plus 1e-3
absolute: eight steps of a tiny model, where half precision moves each
activation by ~1e-3 / ~1e-2 relative (measured: the task losses agree to
~0.1 %). The task *weights* are not compared: the solvers of UPGrad, CAGrad
or Nash-MTL on nearly parallel gradients move them by 10 % and more in
either precision's rounding, as they would between two float32 machines.
"""

import functools

import keras
import numpy as np
import pytest

from keras_mtl import tasks as T

from conftest import make_weighting, random_images, registered_methods, tiny_model

TASKS = [T.Regression("size"), T.BinaryClassification("round"),
         T.MulticlassClassification("shape", num_classes=3)]
TOLERANCE = {"mixed_float16": 0.01, "mixed_bfloat16": 0.03}
# `make test` runs these; `make test-slow` every registered method.
CORE = ("uncertainty", "pcgrad")
#: The float16 loss scale a method starts from, where Keras' default (2^15)
#: overflows: ScaleInvariant's weights 1 / L_t (3 to 6 here) make a step's
#: gradients overflow there, and the LossScaleOptimizer skips that step (and
#: halves the scale), as dynamic loss scaling should: a run a step behind
#: float32's. With no step skipped, the losses agree to 1e-4. STCH's warm-up
#: is ScaleInvariant's objective.
INITIAL_SCALE = {"scale_invariant": 2.0**13, "stch": 2.0**13}


def data(n=32):
    rng = np.random.default_rng(0)
    x = random_images(n) / 255.0
    y = {"size": rng.random((n, 1)).astype("float32"),
         "round": rng.integers(0, 2, (n, 1)).astype("float32"),
         "shape": rng.integers(0, 3, (n,))}
    return x, y


def train(method, policy, **weighting_kwargs):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = tiny_model(TASKS)
        optimizer = keras.optimizers.SGD(0.01)
        if policy == "mixed_float16" and method in INITIAL_SCALE:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=INITIAL_SCALE[method])
        model.compile(optimizer=optimizer,
                      weighting=make_weighting(method, TASKS, **weighting_kwargs))
        x, y = data()
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return model, history.history


@functools.lru_cache(maxsize=None)
def float32_task_losses(method, mode=None):
    kwargs = {"mode": mode} if mode else {}
    logs = train(method, "float32", **kwargs)[1]
    return {t.name: logs[f"{t.name}_loss"][-1] for t in TASKS}


def check(method, policy, mode=None):
    kwargs = {"mode": mode} if mode else {}
    model, logs = train(method, policy, **kwargs)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.compute_dtype == policy.split("_")[1]
    for key, values in logs.items():
        assert np.all(np.isfinite(values)), (key, values)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    # (Integer state, a seed or a step counter, stays as it is.)
    assert all(v.dtype == "float32" for v in model.weighting.variables if "float" in v.dtype)
    mixed = {t.name: logs[f"{t.name}_loss"][-1] for t in TASKS}
    assert mixed == pytest.approx(float32_task_losses(method, mode), rel=TOLERANCE[policy],
                                  abs=1e-3)


def _params(methods):
    return [pytest.param(m, marks=() if m in CORE else pytest.mark.slow) for m in methods]


@pytest.mark.parametrize("policy", sorted(TOLERANCE))
@pytest.mark.parametrize("method", _params(registered_methods()))
def test_every_method_trains_under_mixed_precision(method, policy):
    check(method, policy)


@pytest.mark.parametrize("policy", sorted(TOLERANCE))
@pytest.mark.parametrize("method, mode", [
    ("pcgrad", "representation"),  # make test: PCGrad's default is params
    pytest.param("mgda", "params", marks=pytest.mark.slow),
])
def test_both_gradient_modes_under_mixed_precision(method, mode, policy):
    check(method, policy, mode)


def test_a_policy_with_half_precision_variables_is_refused_for_gradient_methods():
    keras.mixed_precision.set_dtype_policy("bfloat16")
    try:
        model = tiny_model(TASKS)
        with pytest.raises(ValueError, match=r"'bfloat16', whose variables are bfloat16.*"
                           r"'mixed_float16' or 'mixed_bfloat16'"):
            model.compile(weighting="pcgrad")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("policy", sorted(TOLERANCE))
def test_a_keras_applications_backbone_builds_under_mixed_precision(policy):
    # Its preprocessing convention is recognised on a float32 probe
    # whatever the policy (a float16 probe once failed to match any).
    import keras_mtl

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = keras_mtl.build_model("MobileNetV3Small", TASKS[:1], input_shape=(32, 32, 3),
                                      head_units=(8,))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.compute_dtype == policy.split("_")[1]

"""Child process for tests/test_distributed_jax.py: JAX `keras.distribution.DataParallel`
on 2 host devices vs no distribution, same global batches.

Usage: KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python jax_distribution_check.py [--model-parallel] METHOD [METHOD ...]
(a registry name; "name:mode" picks a gradient-level method's mode).
`--model-parallel`: `keras.distribution.ModelParallel` instead, on a 1 x 2
mesh whose "model" axis splits the trunk's convolutions by output channel. Trains each method as
`distributed_check.py` does (`distribution_cases`) and prints the max
difference (`distribution_cases.difference`) of the trained variables and of
the weighting's state as `MAXDIFF <method> <value>`.
"""

import sys

import jax
import keras
import numpy as np

from distribution_cases import EPOCHS, data, difference, model


def train(method, mode, x, y, distribution):
    keras.distribution.set_distribution(distribution)
    try:
        built = model(method, mode)
        if distribution is not None:  # the variables live on both devices
            assert all(len(v.value.sharding.device_set) == 2 for v in built.variables)
            if isinstance(distribution, keras.distribution.ModelParallel):  # and are split
                kernel = built.trunk.trainable_variables[0]
                assert "model" in str(kernel.value.sharding.spec), kernel.value.sharding
        built.fit(x, y, batch_size=8, epochs=EPOCHS.get(mode, 1), shuffle=False, verbose=0)
        return [np.asarray(v) for v in built.trainable_variables + built.weighting.variables]
    finally:
        keras.distribution.set_distribution(None)


def model_parallel(devices):
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*conv2d.*kernel"] = (None, None, None, "model")
    layout[".*conv2d.*bias"] = ("model",)
    return keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")


def main(*cases):
    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = jax.devices("cpu")
    assert len(devices) == 2, devices
    x, y = data()
    split = cases[0] == "--model-parallel"
    cases = cases[1:] if split else cases
    for case in cases:
        method, _, mode = case.partition(":")
        if not mode:
            mode = "loss"
        one = train(method, mode, x, y, None)
        distribution = (model_parallel(devices) if split
                        else keras.distribution.DataParallel(devices=devices))
        two = train(method, mode, x, y, distribution)
        diff = max(difference(a, b) for a, b in zip(one, two))
        print("MAXDIFF", case, diff, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

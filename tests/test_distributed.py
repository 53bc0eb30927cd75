"""Every weighting method is exact under tf.distribute (2 replicas == 1)
(JAX's keras.distribution: tests/test_distributed_jax.py):
the trained variables, and the method's state on each replica.

Each method runs in its own child process (logical devices must be set
before TensorFlow starts), training it with 2 replicas and with 1
on the same global batches, with uneven partial labels across replicas.

oneDNN is off in the child: its convolution kernels, run at the same time by
two logical devices of one CPU, now and then returned wrong filter gradients
on one replica (the same run gave different results from one process to the
next; with TF_ENABLE_ONEDNN_OPTS=0 every run is identical). Real replicas are
separate devices.
"""

import os
import subprocess
import sys

import pytest

from conftest import registered_methods
from keras_mtl import weighting as W

HERE = os.path.dirname(__file__)
#: Every registered gradient-level method in each of its modes, and two
#: checks of distributed_check.py: a Gram-dependent test method and Nash-MTL's
#: reuse steps.
CASES = [
    (mode, name) for name in registered_methods("gradient")
    for mode in W.get_class(name).supported_modes
] + [(mode, m) for m in ("normalised", "nash_mtl_every2") for mode in ("params", "representation")]


def run_check(mode, methods):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_check.py"), mode, *methods],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0",
             "PYTHONPATH": HERE},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("MAXDIFF"):
            _, method, value = line.split()
            found[method] = float(value)
    assert set(found) == set(methods), result.stdout
    return found


@pytest.mark.slow
def test_every_loss_level_method_two_replicas_match_one():
    # One child for all of them (their models trained one after another):
    # it also shows the documented way round TensorFlow's collective clash
    # between two MirroredStrategy objects of one process, one strategy
    # reused (docs/reliability.md).
    found = run_check("loss", registered_methods("loss"))
    assert max(found.values()) < 1e-5, found


@pytest.mark.slow
@pytest.mark.parametrize("mode, method", CASES)
def test_two_replicas_match_one(mode, method):
    assert run_check(mode, [method])[method] < 1e-5

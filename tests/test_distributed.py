"""Gradient-level methods are exact under tf.distribute (2 replicas == 1).

Each mode runs in one child process (logical devices must be set before
TensorFlow starts), training every method with 2 replicas and with 1 on the
same global batches, with uneven partial labels across replicas.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
BOTH_MODES = ["normalised", "mgda", "pcgrad", "cagrad", "imtl", "aligned_mtl",
              "grad_norm", "nash_mtl", "grad_vac", "upgrad"]
METHODS = {"params": BOTH_MODES, "representation": BOTH_MODES + ["grad_drop"]}


def run_check(mode, methods):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_check.py"), mode, *methods],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": HERE},
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
@pytest.mark.parametrize("mode", ["params", "representation"])
def test_two_replicas_match_one(mode):
    diffs = run_check(mode, METHODS[mode])
    assert all(d < 1e-5 for d in diffs.values()), diffs

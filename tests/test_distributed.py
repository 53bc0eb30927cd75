"""Gradient-level methods are exact under tf.distribute (2 replicas == 1)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)


def run_check(mode, method):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_check.py"), mode, method],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": HERE},
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("MAXDIFF")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return float(lines[-1].split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["params", "representation"])
def test_two_replicas_match_one(mode):
    assert run_check(mode, "normalised") < 1e-5

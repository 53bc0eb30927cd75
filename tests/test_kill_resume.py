"""Kill and resume: a run SIGKILLed mid-epoch and resumed through
`keras.callbacks.BackupAndRestore` ends with the same variables (model,
optimizer-free state of the weighting, seed generators) as a run that was
never interrupted, for every weighting method (on JAX, for a subset that
has every kind of state), and for `interleave`d sources drawn by sampling
schedules (the same sources in the same order).

The runs happen in child processes (tests/kill_resume_check.py): SIGKILL
gives the process no chance to clean up, as a preempted machine would not.
"""

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest

from conftest import registered_methods

HERE = os.path.dirname(__file__)
#: Every method keras_mtl registers (a new one is covered without edits here).
METHODS = registered_methods()
#: On JAX (`make test-slow`) a subset, one of each kind of state: trainable
#: weights (uncertainty), loss history (DWA), an inner optimizer (FAMO), a
#: seed generator (RLW), and gradient-level methods with a seeded task order
#: (PCGrad) and a stored solution (Nash-MTL).
JAX_METHODS = ["uncertainty", "dwa", "famo", "rlw", "pcgrad", "nash_mtl"]
#: Trained on two sources mixed by `interleave` with a sampling schedule
#: (each epoch draws other sources): the resumed run must draw what the
#: uninterrupted run drew, in the same order.
INTERLEAVED = ["uncertainty@temperature", "uncertainty@annealed"]
RUN = (JAX_METHODS if keras.backend.backend() == "jax" else METHODS) + INTERLEAVED
# Killed after the third step of the second epoch: the backup holds epoch 1.
KILL_AT = ("1", "2")


def child(workdir, *args, module=None):
    """Runs kill_resume_check.py; `module` is imported first (a plugin)."""
    imports = ["--import", module] if module else []
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "kill_resume_check.py"), *imports, str(workdir), *args],
        capture_output=True, text=True, timeout=900,
        # oneDNN's CPU kernels are not deterministic from process to process
        # (see tests/test_distributed.py): off, runs compare exactly.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"},
    )


def load(path):
    with np.load(path) as values:
        return [values[f"arr_{i}"] for i in range(len(values.files))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = child(workdir, *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def kill_and_resume(workdir, method, module=None):
    killed = child(workdir, method, "--kill-at", *KILL_AT, module=module)
    backed_up = os.path.isdir(workdir / f"{method}_backup")
    resumed = None
    if killed.returncode == -signal.SIGKILL:
        resumed = child(workdir, "--resume", method, module=module)
    return killed, backed_up, resumed


def check_resumed(workdir, method, uninterrupted_dir, runs):
    """The resumed run's variables equal the uninterrupted run's."""
    killed, backed_up, resumed = runs
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert backed_up, "no backup was written before the kill"
    assert resumed is not None and resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load(uninterrupted_dir / f"{method}.npz")
    actual = load(workdir / f"{method}.npz")
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    if "@" in method:
        # The epochs the killed run finished, then the resumed run's.
        order = sources(workdir / f"{method}.order")
        assert order == sources(uninterrupted_dir / f"{method}.order")
        assert [e["epoch"] for e in order] == [0, 1, 2]
        assert order[0]["sources"] != order[1]["sources"]  # epochs draw anew


def sources(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("killed")
    # Two at a time: each child is mostly TensorFlow start-up and tracing.
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(RUN, pool.map(lambda m: kill_and_resume(workdir, m), RUN)))
    return workdir, runs


@pytest.mark.slow
@pytest.mark.parametrize("method", RUN)
def test_sigkill_then_resume_equals_an_uninterrupted_run(method, uninterrupted, resumed_runs):
    workdir, runs = resumed_runs
    check_resumed(workdir, method, uninterrupted, runs[method])

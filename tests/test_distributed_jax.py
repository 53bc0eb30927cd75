"""Every weighting method is exact under JAX's `keras.distribution`:
`DataParallel` on 2 host devices equals one device, for every registered
method in each of its modes (the step is one SPMD program over the global
batch, XLA inserts the reductions), and so does `ModelParallel` with a layout
map that splits the trunk's kernels over a "model" mesh axis.

The checks run in child processes (tests/jax_distribution_check.py): the
host device count is fixed when JAX starts. A file of its own, so that
pytest-xdist runs it beside the TensorFlow checks of test_distributed.py.
"""

import os
import subprocess
import sys

import pytest

from conftest import registered_methods
from keras_mtl import weighting as W

pytestmark = pytest.mark.slow

HERE = os.path.dirname(__file__)

#: "name" (loss level) or "name:mode", grouped by level and mode: one child
#: process per group. The two test methods of distribution_cases: a
#: Gram-dependent one and Nash-MTL's reuse steps (a conditional).
GROUPS = {
    "loss": registered_methods("loss"),
    **{mode: [f"{name}:{mode}" for name in registered_methods("gradient")
              if mode in W.get_class(name).supported_modes]
       + [f"normalised:{mode}", f"nash_mtl_every2:{mode}"]
       for mode in ("params", "representation")},
}


def run_jax_check(*arguments):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "jax_distribution_check.py"), *arguments],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": HERE,
             "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2").strip()},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split()[1]: float(line.split()[2])
            for line in result.stdout.splitlines() if line.startswith("MAXDIFF")}


@pytest.mark.parametrize("group", list(GROUPS))
def test_data_parallel_matches_one_device(group):
    found = run_jax_check(*GROUPS[group])
    assert set(found) == set(GROUPS[group]), found
    assert max(found.values()) < 1e-5, found


def test_model_parallel_matches_one_device():
    # The trunk's kernels split over a "model" mesh axis (a layout map).
    cases = ["equal", "pcgrad:params", "mgda:representation"]
    found = run_jax_check("--model-parallel", *cases)
    assert set(found) == set(cases) and max(found.values()) < 1e-5, found

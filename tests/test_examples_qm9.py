"""examples/qm9_multitask.py at tiny sizes on a QM9-format file written here."""


import numpy as np
import pytest

from conftest import load_example
from test_bench_qm9 import write_molecules


@pytest.mark.slow  # `make test-slow`
def test_qm9_example_trains_eleven_heads_in_the_targets_units(tmp_path, capsys):
    example = load_example("qm9_multitask")
    data = write_molecules(str(tmp_path), 80)
    history, logs = example.main([
        "--path", data, "--split-sizes", "16", "--molecules", "48", "--held-out", "16",
        "--epochs", "2", "--batch-size", "16", "--features", "8", "--interactions", "1",
        "--weighting", "pcgrad", "--verbose", "0"])
    assert len(history.history["loss"]) == 2
    assert np.isfinite([logs[f"{t}_mae"] for t in example.qm9.TARGETS]).all()
    out = capsys.readouterr().out
    assert "| u0 | eV |" in out and "| mu | D |" in out

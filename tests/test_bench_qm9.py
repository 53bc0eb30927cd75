"""benchmarks/bench_qm9.py: the `--quick` run end to end on a QM9-format file
written here (the real data needs the `qm9` extra), and its bookkeeping
(Δm, ranks, the rank correlation with the published figures)."""

import csv
import json
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_qm9  # noqa: E402
from test_datasets_qm9 import HEADER, ROWS  # noqa: E402


def write_molecules(folder, count, seed=0):
    """`count` molecules in qm9pack's format: QM9's real rows with jittered
    coordinates and targets (a pipeline check, not chemistry)."""
    rng = np.random.default_rng(seed)
    columns = HEADER.split(",")
    targets = [c for c in columns if c.endswith(("_debye", "_bohr3", "_au", "_bohr2", "_K"))]
    real = [next(csv.reader([row])) for row in ROWS.values()]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qm9_part1.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in range(count):
            row = dict(zip(columns, real[i % len(real)]))
            row["Index"] = str(i + 1)
            xyz = np.array(re.findall(r"-?[\d.]+(?:[eE][-+]?\d+)?", row["XYZ_Ang"]), float)
            xyz = xyz.reshape(-1, 3)
            row["XYZ_Ang"] = json.dumps((xyz + rng.normal(0, 0.05, xyz.shape)).round(5).tolist())
            for column in targets:
                row[column] = repr(float(row[column]) * (1 + rng.normal(0, 0.02)))
            writer.writerow([row[c] for c in columns])
    return folder


@pytest.mark.slow  # about a minute: `make test-slow` runs it
def test_quick_run_writes_every_row(tmp_path):
    data = write_molecules(str(tmp_path / "data"), 200)
    payload = bench_qm9.main(["--quick", "--path", data, "--held-out", "48",
                              "--output", str(tmp_path)])
    summary = payload["summary"]
    assert set(summary) == {"equal", "pcgrad", "tuned_static"}
    assert summary["pcgrad"]["mode"] == "representation"
    assert summary["equal"]["published_delta_m"] == bench_qm9.PUBLISHED["equal"]
    assert len(payload["runs"]["single_task"]) == 11
    weights = payload["runs"]["tuned_static"]["weights"]
    assert len(weights) == 11 and all(0.1 <= w <= 10 for w in weights.values())
    for row in summary.values():
        assert np.isfinite(row["delta_m_mean"]) and len(row["test_mae_mean"]) == 11
    markdown = (tmp_path / "qm9.md").read_text(encoding="utf-8")
    assert "| tuned_static " in markdown and "| single-task " in markdown
    assert "| vs equal " in markdown and "too few seeds" in markdown


def test_rank_correlation_with_the_published_ordering():
    rows = {name: {"delta_m_mean": value, "published_delta_m": value}
            for name, value in [("equal", 3.0), ("pcgrad", 2.0), ("nash_mtl", 1.0)]}
    assert bench_qm9.spearman(rows) == (1.0, ["equal", "pcgrad", "nash_mtl"])
    rows["equal"]["delta_m_mean"], rows["nash_mtl"]["delta_m_mean"] = 1.0, 3.0
    assert bench_qm9.spearman(rows)[0] == -1.0
    rows["tuned_static"] = {"delta_m_mean": 0.0, "published_delta_m": None}
    assert bench_qm9.spearman(rows)[1] == ["equal", "pcgrad", "nash_mtl"]


def test_delta_m_and_mean_rank_by_hand():
    run = lambda maes, delta, rss=None: {  # noqa: E731
        "test_mae": maes, "delta_m": delta, "fit_s": 1.0, "epochs_run": 2,
        "model_peak_rss_mib": rss, "mode": None}
    results = {"methods": {
        "equal": [run({"a": 1.0, "b": 4.0}, 10.0), run({"a": 1.0, "b": 4.0}, 20.0, 7.0)],
        "pcgrad": [run({"a": 2.0, "b": 3.0}, 5.0), run({"a": 2.0, "b": 3.0}, 5.0)],
    }}
    rows = bench_qm9.summarise(results)
    # Peak memory from the seeds that measured it per model; none measured: None.
    assert rows["equal"]["peak_rss_mib"] == 7.0 and rows["pcgrad"]["peak_rss_mib"] is None
    assert list(rows) == ["pcgrad", "equal"]  # by mean Δm
    assert rows["equal"]["delta_m_mean"] == 15.0
    assert rows["equal"]["delta_m_std"] == pytest.approx(7.07, abs=0.01)
    assert rows["equal"]["mean_rank"] == 1.5 and rows["pcgrad"]["mean_rank"] == 1.5
    # Δm of MAEs 10 % and 30 % above the baselines: +20 %.
    assert bench_qm9.delta_m({"a": 1.1, "b": 1.3}, {"a": 1.0, "b": 1.0}) == pytest.approx(20.0)
    # Paired with Equal over the seeds: differences -5 and -15, mean -10,
    # half-width t(0.975, 1) * s / sqrt(2) = 12.706 * 7.071 / 1.414 = 63.53.
    paired = rows["pcgrad"]["vs_equal"]
    assert paired["mean"] == -10.0 and paired["verdict"] == "within seed noise"
    assert (paired["low"], paired["high"]) == pytest.approx((-73.53, 53.53), abs=0.01)
    assert "vs_equal" not in rows["equal"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_peak_memory_is_per_model():
    """The high-water mark restarts before each model, so a model after a
    larger one reports its own peak, not the larger one's."""
    assert bench_qm9._reset_peak_rss()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    high = bench_qm9._peak_rss_mib()
    del block
    assert bench_qm9._reset_peak_rss()
    assert bench_qm9._peak_rss_mib() < high - 32

"""Smoke tests of the inference benchmark (a tiny run) and of the gradient
benchmark's trunk timings and report (the quality benchmark's tests are in
test_bench_quality.py)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_inference  # noqa: E402


@pytest.mark.slow  # long: `make test-slow` runs it
def test_inference_tiny_run(tmp_path):
    # --threads 0: TensorFlow has started in this process; its pools are set.
    argv = ["--tasks", "2", "--repeats", "2", "--warmup", "0", "--image-size", "32",
            "--batch-size", "4", "--threads", "0", "--output", str(tmp_path)]
    assert bench_inference.main(argv) == 0
    report = json.loads((tmp_path / "inference.json").read_text(encoding="utf-8"))
    result = report["results"]["2"]
    assert result["goal"] == 1.8
    assert result["cpu"]["ratio"] > 0
    assert result["parameters"]["single-task models together"] > result["parameters"]["HydraNet"]
    assert "| 2 " in (tmp_path / "inference.md").read_text(encoding="utf-8")


def test_inference_tasks_mix_kinds():
    kinds = [type(t).__name__ for t in bench_inference.inference_tasks(4)]
    assert kinds == ["MulticlassClassification", "Regression", "BinaryClassification",
                     "MulticlassClassification"]


def test_gradient_overhead_times_the_params_mode_floor():
    import bench_gradient_overhead

    x, _ = bench_gradient_overhead.data(bench_gradient_overhead.reference_tasks(3), 4)
    times = bench_gradient_overhead.trunk_times(x, 2, [2, 3], backward_counts=[6, 9])
    assert sorted(times) == sorted([
        "forward", "forward_backward", "backward_T2", "stacked_T2", "backward_T3", "stacked_T3",
        "backward_T6", "backward_T9",
    ])
    assert bench_gradient_overhead.SAMPLES == [3]  # SDMGrad's and MoDo's
    assert all(t > 0 for t in times.values())


def test_gradient_overhead_report_reads_each_row_against_its_goal():
    import bench_gradient_overhead

    def row(method, mode, ratio, samples=1):
        return {"method": method, "mode": mode, "ratio": ratio, "libmtl": None,
                "vs_libmtl": None, "samples": samples}

    trunk = {"forward": 1.0, "forward_backward": 3.0, "stacked_T3": 9.0}
    results = {
        "settings": {"batch_size": 4, "repeats": 2, "clock": "cpu", "threads": 1},
        "trunk_ms": {"reference": trunk, "hydranet": trunk},
        "reference_T3": {
            "equal_step_ms": 10.0, "equal_vs_no_weighting": 1.0, "params_floor": 2.0,
            "sample_floors": {"3": 4.0},
            "ratios": [row("PCGrad", "params", 2.1), row("CAGrad", "params", 2.2),
                       row("SDMGrad", "params", 4.1, samples=3),
                       row("PCGrad", "representation", 1.06),
                       row("NashMTL, update_every=2", "params", 3.0)],
        },
    }
    lines = bench_gradient_overhead.markdown_report(results).splitlines()

    def cells(prefix):
        (line,) = [line for line in lines if line.startswith(prefix)]
        return [cell.strip() for cell in line.strip("|").split("|")]

    # 2.1 / 2.0 = 1.05 meets the params goal; 2.2 / 2.0 = 1.10 does not.
    assert cells("| PCGrad                  | params")[3:6] == ["1.050", "<= 1.05 x floor", "yes"]
    assert cells("| CAGrad")[3:6] == ["1.100", "<= 1.05 x floor", "NO"]
    # 3 samples per task: against the floor of 3T backward passes.
    assert cells("| SDMGrad")[3:6] == ["1.025", "<= 1.05 x floor", "yes"]
    assert "(3 samples per task: 4.00)" in "\n".join(lines)
    assert cells("| PCGrad                  | repr")[3:6] == ["", "<= 1.05", "NO"]
    assert cells("| NashMTL, update_every=2")[3:6] == ["", "", ""]

"""Smoke test of the memory benchmark (a quick run, one child per
configuration) and of its argument checks."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_memory  # noqa: E402


@pytest.mark.slow  # ~1 min: nine child processes, each importing TensorFlow
def test_memory_quick_run_gives_a_peak_per_configuration(tmp_path):
    assert bench_memory.main(["--quick", "--bfloat16", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "memory.json").read_text(encoding="utf-8"))
    results = {r["config"]: r for r in report["results"]}
    assert list(results) == bench_memory.DEFAULT_CONFIGS + bench_memory.BFLOAT16_CONFIGS
    for name in bench_memory.DEFAULT_CONFIGS:
        result = results[name]
        assert result["status"] == "ok", result.get("error")
        assert math.isfinite(result["peak_mib"]) and result["peak_mib"] > 0
        (run,) = result["runs"]  # --quick: one child per configuration
        # The child's own high-water mark and the one `wait4` gives agree.
        assert run["peak_mib_wait4"] == pytest.approx(run["peak_mib"], abs=16)
        # TensorFlow's own count of the bytes its tensors held.
        assert 0 < result["tensor_peak_mib"] < result["peak_mib"]
    assert results["no_training"]["step_s"] == []
    assert len(results["equal"]["step_s"]) == bench_memory.QUICK["steps"]
    assert results["equal"]["excess_over_equal_mib"] == 0.0
    assert results["pcgrad_params"]["goal_factor"] == 1.2
    assert isinstance(results["pcgrad_params"]["meets_goal"], bool)
    # The plain TensorFlow step trains too (its loss is a number), and its
    # params-mode floor is reported in units of T*P*4.
    assert results["plain_params"]["weighting"] == "plain TensorFlow step (params)"
    assert math.isfinite(results["plain_params"]["runs"][0]["loss"])
    # A library without a bfloat16 gradient matrix: a row with a note, no run.
    for name in bench_memory.BFLOAT16_CONFIGS:
        result = results[name]
        if result["status"] == "unsupported":
            assert "no `gradient_dtype` argument" in result["note"]
            assert "peak_mib" not in result
        else:
            assert result["status"] == "ok" and math.isfinite(result["peak_mib"])
    summary = report["summary"]
    assert summary["trunk_parameters"] > 0
    assert math.isfinite(summary["plain_params_floor"])
    assert summary["gradient_matrix_mib"] == pytest.approx(
        3 * summary["trunk_parameters"] * 4 / 2**20, abs=0.05)
    assert report["keras_mtl"]["file"].endswith(os.path.join("keras_mtl", "__init__.py"))
    markdown = (tmp_path / "memory.md").read_text(encoding="utf-8")
    assert "| pcgrad_params " in markdown and "Measured keras_mtl:" in markdown
    assert "Plain TensorFlow (the `plain_*` rows" in markdown


def test_memory_bad_arguments(capsys):
    with pytest.raises(SystemExit) as raised:
        bench_memory.main(["--configs", "equal,nope"])
    assert raised.value.code == 2
    assert "argument --configs: unknown ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_memory.main(["--tasks", "0"])
    assert "argument --tasks: Expected an integer >= 1. Received: 0" in capsys.readouterr().err


def test_memory_rows_are_medians_over_runs():
    def run(peak, wall):
        return {"status": "ok", "peak_mib": peak, "wall_s": wall, "step_s": [wall, 1.0],
                "stages": {"build_compile": {"peak_mib": peak / 2}}, "weighting": "Equal()"}

    row = bench_memory.aggregate("equal", [run(100.0, 3.0), run(130.0, 5.0), run(90.0, 4.0)])
    assert row["peak_mib"] == 100.0 and row["peak_mib_min_max"] == [90.0, 130.0]
    assert row["stage_peak_mib"] == {"build_compile": 50.0}
    assert row["wall_s"] == 4.0 and row["step_s"] == [4.0, 1.0]
    failed = {"status": "error", "error": "MemoryError: ", "wall_s": 1.0}
    row = bench_memory.aggregate("equal", [run(100.0, 3.0), failed])
    assert row["status"] == "error" and row["error"] == "MemoryError: "
    assert "peak_mib" not in row

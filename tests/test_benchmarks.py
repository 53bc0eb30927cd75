"""Smoke tests of the quality and inference benchmarks (tiny runs), of the
gradient benchmark's trunk timings, and of the quality benchmark's Δm
bookkeeping on results made up by hand."""

import argparse
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_inference  # noqa: E402
import bench_quality  # noqa: E402


@pytest.mark.slow  # long: `make test-slow` runs it
def test_quality_quick_run_writes_json_and_markdown(tmp_path, capsys):
    argv = ["--quick", "--workers", "0", "--datasets", "digit_pairs",
            "--methods", "equal", "pcgrad", "--output", str(tmp_path)]
    assert bench_quality.main(argv) == 0
    report = json.loads((tmp_path / "quality.json").read_text(encoding="utf-8"))
    found = report["summary"]["digit_pairs"]
    assert set(found["methods"]) == {"equal", "pcgrad"}
    assert found["methods"]["pcgrad"]["mode"] == "params"
    assert len(report["runs"]) == 4  # 2 methods + 2 single-task models, 1 seed
    assert report["settings"]["quick"] is True
    markdown = (tmp_path / "quality.md").read_text(encoding="utf-8")
    assert "| pcgrad " in markdown and "| single-task models " in markdown
    assert "Run time:" in capsys.readouterr().out


def _run(dataset, model, seed, metrics):
    return {"dataset": dataset, "model": model, "seed": seed, "metrics": metrics,
            "fit_wall_s": 1.0, "level": None if model.startswith("single") else "loss",
            "mode": None}


def test_delta_m_per_seed_then_mean_and_std():
    # Two seeds; accuracy is higher-is-better, so +10 % accuracy is Δm -10 %.
    results = []
    for seed, (stl_left, stl_right, mtl_left, mtl_right) in enumerate(
        [(0.5, 0.8, 0.55, 0.8), (0.5, 0.5, 0.5, 0.45)]
    ):
        results += [
            _run("digit_pairs", "single-task left", seed, {"left": {"accuracy": stl_left}}),
            _run("digit_pairs", "single-task right", seed, {"right": {"accuracy": stl_right}}),
            _run("digit_pairs", "equal", seed,
                 {"left": {"accuracy": mtl_left}, "right": {"accuracy": mtl_right}}),
        ]
    args = argparse.Namespace(datasets=["digit_pairs"], seeds=2)
    summary = bench_quality.summarise(results, args, ["equal", "static"], {"digit_pairs": {"static"}})
    equal = summary["digit_pairs"]["methods"]["equal"]
    # Seed 0: (-10 % + 0 %) / 2 = -5 %; seed 1: (0 % + 10 %) / 2 = +5 %.
    assert equal["delta_m_per_seed"] == [-5.0, 5.0]
    assert equal["delta_m_mean"] == 0.0
    assert equal["delta_m_std"] == pytest.approx(7.071, abs=1e-3)
    # A method with the same weights as equal reports equal's runs, marked.
    assert summary["digit_pairs"]["methods"]["static"]["same_as"] == "equal"
    assert summary["digit_pairs"]["best"] == "equal"
    assert summary["digit_pairs"]["meets_goal"] is False


def test_every_distinct_method_is_benchmarked_once():
    from keras_mtl import weighting as W

    classes = bench_quality.method_classes()
    assert len(set(classes.values())) == len(classes)
    assert set(classes.values()) == set(W.methods().values())


def test_static_and_inverse_size_are_equal_here_and_others_are_not():
    from keras_mtl.datasets import digit_pairs

    tasks = bench_quality.dataset_tasks("digit_pairs")
    _, y = digit_pairs.generate("train", 16)
    assert bench_quality.same_as_equal("static", tasks, y)
    assert bench_quality.same_as_equal("inverse_size", tasks, y)
    assert not bench_quality.same_as_equal("uncertainty", tasks, y)
    # Partial labels change InverseSize's weights: then it is run.
    y["left"][:8] = -1
    assert not bench_quality.same_as_equal("inverse_size", tasks, y)


def test_quality_bad_arguments(capsys):
    with pytest.raises(SystemExit) as raised:
        bench_quality.main(["--methods", "nope"])
    assert raised.value.code == 2
    assert "argument --methods: unknown ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_quality.main(["--epochs", "0"])
    assert "argument --epochs: Expected an integer >= 1. Received: 0" in capsys.readouterr().err


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
    times = bench_gradient_overhead.trunk_times(x, 2, [2, 3])
    assert sorted(times) == sorted([
        "forward", "forward_backward", "backward_T2", "stacked_T2", "backward_T3", "stacked_T3",
    ])
    assert all(t > 0 for t in times.values())


def test_gradient_overhead_report_reads_each_row_against_its_goal():
    import bench_gradient_overhead

    def row(method, mode, ratio):
        return {"method": method, "mode": mode, "ratio": ratio, "libmtl": None,
                "vs_libmtl": None}

    trunk = {"forward": 1.0, "forward_backward": 3.0, "stacked_T3": 9.0}
    results = {
        "settings": {"batch_size": 4, "repeats": 2, "clock": "cpu", "threads": 1},
        "trunk_ms": {"reference": trunk, "hydranet": trunk},
        "reference_T3": {
            "equal_step_ms": 10.0, "equal_vs_no_weighting": 1.0, "params_floor": 2.0,
            "ratios": [row("PCGrad", "params", 2.1), row("CAGrad", "params", 2.2),
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
    assert cells("| PCGrad                  | repr")[3:6] == ["", "<= 1.05", "NO"]
    assert cells("| NashMTL, update_every=2")[3:6] == ["", "", ""]

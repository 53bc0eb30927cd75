"""benchmarks/bench_quality.py and benchmarks/protocol.py: the paired
comparison by hand, the protocol's pieces on tiny data, the Δm bookkeeping and
report on results made up by hand, and the `--quick` run end to end."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_quality  # noqa: E402
import protocol  # noqa: E402


# --- protocol --------------------------------------------------------------------
def test_paired_comparison_by_hand():
    # Differences -3, -2, -4: mean -3, s = 1, t_{0.975, 2} = 4.303, so the
    # interval is -3 ± 4.303 / sqrt(3) = [-5.484, -0.516]: below 0.
    found = protocol.paired_comparison([-1.0, 0.0, -2.0], [2.0, 2.0, 2.0])
    assert found["n"] == 3 and found["mean"] == pytest.approx(-3.0)
    assert found["low"] == pytest.approx(-5.484, abs=1e-3)
    assert found["high"] == pytest.approx(-0.516, abs=1e-3)
    assert found["verdict"] == "better"
    # The same differences the other way round: above 0.
    worse = protocol.paired_comparison([2.0, 2.0, 2.0], [-1.0, 0.0, -2.0])
    assert (worse["low"], worse["high"]) == pytest.approx((0.516, 5.484), abs=1e-3)
    assert worse["verdict"] == "worse"
    # Differences -1, 1, -3: mean -1, s = 2, interval -1 ± 4.968: contains 0.
    noise = protocol.paired_comparison([-1.0, 1.0, -3.0], [0.0, 0.0, 0.0])
    assert (noise["low"], noise["high"]) == pytest.approx((-5.968, 3.968), abs=1e-3)
    assert noise["verdict"] == "within seed noise"
    # Identical runs: no difference, no verdict either way.
    assert protocol.paired_comparison([1.0, 2.0], [1.0, 2.0])["verdict"] == "within seed noise"
    one = protocol.paired_comparison([-5.0], [0.0])
    assert (one["mean"], one["low"], one["verdict"]) == (-5.0, None, "too few seeds")
    with pytest.raises(ValueError, match="two non-empty lists of the same length"):
        protocol.paired_comparison([1.0, 2.0], [1.0])


def test_t_table_matches_scipy(monkeypatch):
    stats = pytest.importorskip("scipy.stats")
    for df, value in enumerate(protocol.T_975, 1):
        assert value == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4)
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if SciPy were not installed
    assert protocol.t_quantile(2) == 4.303
    assert protocol.t_quantile(50) == protocol.T_975[-1]


def test_learning_curve_best_epoch_follows_the_mode():
    history = {"val_a_accuracy": [0.5, 0.7, 0.7, 0.6], "loss": [2.0, 1.5, 1.2, 1.1]}
    curve = protocol.learning_curve(history, "val_a_accuracy", "max", keys=("loss", "absent"))
    assert (curve["best_epoch"], curve["epochs_run"]) == (2, 4)  # the first best, from 1
    assert curve["loss"] == [2.0, 1.5, 1.2, 1.1] and "absent" not in curve
    assert protocol.learning_curve(history, "loss", "min")["best_epoch"] == 4


def test_seeded_batches_are_the_same_for_a_seed_and_cover_each_epoch():
    x = np.arange(10, dtype="float32")[:, None]
    y = {"a": np.arange(10), "b": np.arange(10) * 2}
    batches, steps = protocol.seeded_batches(x, y, 4, 2, seed=3)
    assert steps == 3
    seen = [(bx[:, 0].numpy(), by) for bx, by in batches]
    assert [len(bx) for bx, _ in seen] == [4, 4, 2, 4, 4, 2]
    first = np.concatenate([bx for bx, _ in seen[:3]])
    assert sorted(first) == list(range(10))  # one epoch: every example once
    np.testing.assert_array_equal(first, np.random.default_rng([3, 0]).permutation(10))
    for bx, by in seen:  # labels travel with their examples
        np.testing.assert_array_equal(by["b"].numpy(), 2 * bx)
    again = [bx[:, 0].numpy() for bx, _ in protocol.seeded_batches(x, y, 4, 2, seed=3)[0]]
    assert all(np.array_equal(a, b) for a, (b, _) in zip(again, seen))


@pytest.mark.slow  # a KerasTuner search (about 15 s): make test stays under 10 minutes
def test_tune_static_searches_the_static_weights(tmp_path):
    import keras

    from keras_mtl import objectives
    from keras_mtl import tasks as T
    from conftest import random_images, random_labels, tiny_trunk

    tasks = [T.Regression("a"), T.MulticlassClassification("b", 3)]
    x, y = random_images(16), random_labels(tasks, 16)
    objective = objectives.DeltaM(tasks, {"a": {"mae": 1.0}, "b": {"accuracy": 0.5}})
    found = protocol.tune_static(
        tasks, tiny_trunk, objective, (x, y), (x, y), epochs=2, trials=2, seed=0,
        directory=str(tmp_path), batch_size=8, input_shape=(16, 16, 3), head_units=(4,),
        callbacks=protocol.callbacks(objective.key, patience=1))
    assert set(found["weights"]) == {"a", "b"}
    assert all(0.1 <= w <= 10 for w in found["weights"].values())
    assert found["trials"] == 2 and found["seconds"] > 0 and found["cpu_seconds"] > 0
    assert np.isfinite(found["best_score"])
    with pytest.raises(ValueError, match="Expected equal widths"):
        protocol.tune_static(tasks, tiny_trunk, objective, (x, y), (x, y), epochs=1, trials=1,
                             seed=0, directory=str(tmp_path), head_units=(8, 4))
    assert isinstance(protocol.callbacks("val_a_mae", 3)[1], keras.callbacks.EarlyStopping)


# --- bench_quality on results made up by hand --------------------------------------
def _curve(monitor, values):
    best = int(np.argmax(values) if "accuracy" in monitor else np.argmin(values))
    return {"monitor": monitor, "values": values, "best_epoch": best + 1,
            "epochs_run": len(values), "loss": [1.0] * len(values)}


def _runs(mtl_accuracy):
    """Digit pairs, 3 seeds: single-task accuracies 0.5 (so Δm = -200 (a - 0.5) %
    for a multi-task accuracy a on both tasks), and one row per method."""
    common = {"dataset": "digit_pairs", "fit_wall_s": 1.0}
    runs = [{**common, "kind": "search", "seed": 0, "model": "search",
             "tuned": {"weights": {"left": 2.0, "right": 0.5}, "seconds": 9.0,
                       "cpu_seconds": 8.0, "trials": 6,
                       "best_score": -1.5}}]
    for seed in range(3):
        for task in ("left", "right"):
            runs.append({**common, "kind": "single", "seed": seed, "model": f"single-task {task}",
                         "metrics": {task: {"accuracy": 0.5}},
                         "validation_metrics": {task: {"accuracy": 0.5}},
                         "curve": _curve(f"val_{task}_accuracy", [0.3, 0.5, 0.4][:2 + seed % 2]),
                         "level": None, "mode": None})
        for name, accuracies in mtl_accuracy.items():
            a = accuracies[seed]
            runs.append({**common, "kind": "method", "seed": seed, "model": name,
                         "metrics": {"left": {"accuracy": a}, "right": {"accuracy": a}},
                         "curve": _curve("val_delta_m", [1.0, -1.0, 0.0]),
                         "level": "gradient" if name == "pcgrad" else "loss",
                         "mode": "params" if name == "pcgrad" else None})
    return runs


SETTINGS = {"seeds": 3, "train": 8, "validation": 8, "test": 8, "image_size": 32,
            "filters": [32, 64, 96], "digit_pairs_features": 256, "head_units": [32],
            "max_epochs": 3, "patience": 1, "workers": 0, "tensorflow_threads": 1,
            "cpu_count": 2, "command": "python benchmarks/bench_quality.py"}
TIMING = {"wall_min": 1.0, "cpu_min": 2.0, "load_start": 0.1, "load_end": 0.2}


def test_delta_m_per_seed_and_the_paired_comparisons():
    # Δm per seed: equal 0, 0, 0; pcgrad -3, -2, -4; tuned_static -2, -3, -1.
    runs = _runs({"equal": [0.5, 0.5, 0.5], "pcgrad": [0.515, 0.51, 0.52],
                  "tuned_static": [0.51, 0.515, 0.505]})
    summary = bench_quality.summarise(runs, 3, ["digit_pairs"], ["equal", "static", "pcgrad"],
                                      {"digit_pairs": {"static"}})["digit_pairs"]
    rows = summary["methods"]
    assert list(rows) == ["pcgrad", "tuned_static", "equal", "static"]  # by mean Δm
    assert rows["pcgrad"]["delta_m_per_seed"] == [-3.0, -2.0, -4.0]
    assert rows["pcgrad"]["delta_m_std"] == pytest.approx(1.0)
    assert rows["pcgrad"]["vs_equal"] == {"n": 3, "mean": -3.0, "low": -5.484, "high": -0.516,
                                          "verdict": "better"}
    # pcgrad - tuned_static: -1, 1, -3 (mean -1, s = 2): within seed noise.
    assert rows["pcgrad"]["vs_tuned_static"]["verdict"] == "within seed noise"
    assert rows["pcgrad"]["vs_tuned_static"]["low"] == pytest.approx(-5.968, abs=1e-3)
    assert rows["tuned_static"]["vs_equal"]["mean"] == pytest.approx(-2.0)
    assert rows["equal"]["vs_equal"] is None and rows["tuned_static"]["vs_tuned_static"] is None
    # A method with the same weights as equal reports equal's runs, marked.
    assert rows["static"]["same_as"] == "equal"
    assert rows["static"]["delta_m_per_seed"] == rows["equal"]["delta_m_per_seed"]
    assert rows["equal"]["epochs_run_per_seed"] == [3, 3, 3]
    assert rows["equal"]["validation_delta_m_per_seed"] == [-1.0, -1.0, -1.0]
    assert summary["tuned_static"] == {"weights": {"left": 2.0, "right": 0.5}, "trials": 6,
                                       "search_s": 9.0, "search_cpu_s": 8.0,
                                       "validation_delta_m": -1.5}
    left = summary["single_task"]["left"]
    assert left["monitor"] == "val_left_accuracy" and len(left["curves"]) == 3
    assert [c["epochs_run"] for c in left["curves"]] == [2, 3, 2]
    assert (summary["best"], summary["meets_goal"]) == ("pcgrad", True)

    text = bench_quality.markdown({"digit_pairs": summary}, SETTINGS, TIMING)
    lines = text.splitlines()

    def cells(prefix):
        (line,) = [line for line in lines if line.startswith(prefix)]
        return [cell.strip() for cell in line.strip("|").split("|")]

    assert cells("| method ")[4:8] == ["Δm - equal [95 % CI]", "vs equal",
                                       "Δm - tuned_static [95 % CI]", "vs tuned_static"]
    assert cells("| pcgrad       | gradient")[4:8] == [
        "-3.00 [-5.48, -0.52]", "better", "-1.00 [-5.97, +3.97]", "within seed noise"]
    assert cells("| equal        | loss")[4:6] == ["-", "-"]
    # The single-task learning curves: epochs 1 and 3 (the last), best and run.
    assert cells("| single-task model ") == [
        "single-task model", "validation metric", "epoch 1", "epoch 3", "best epoch per seed",
        "epochs run per seed"]
    assert cells("| left ") == ["left", "left_accuracy", "0.3000", "0.4000 (1)", "2, 2, 2",
                                "2, 3, 2"]
    assert "Tuned static weights (tuned_static): 6 random-search trials on seed 0, 9 s " \
           "(8 CPU s); " \
           "weights left 2.00, right 0.50; validation Δm -1.50 %." in text


def test_jobs_wait_for_the_single_task_models_and_the_search():
    args = type("Args", (), {k: 1 for k in bench_quality.SIZES})()
    args.datasets, args.seeds = ["digit_pairs"], 2
    jobs = bench_quality.make_jobs(args, ["equal", "static"], {"digit_pairs": {"static"}})
    kinds = sorted((j["kind"], j["seed"], j["model"]) for j in jobs)
    assert kinds == sorted(
        [("search", 0, "search")]
        + [(k, s, m) for s in (0, 1) for k, m in [
            ("single", "single-task left"), ("single", "single-task right"),
            ("method", "equal"), ("tuned", "tuned_static")]])
    done = {}
    waiting = [j for j in jobs if bench_quality.prepare(j, done) is None]
    assert {j["kind"] for j in waiting} == {"search", "method", "tuned"}
    for run in _runs({"equal": [0.5] * 3}):
        if run["kind"] == "single" and run["seed"] == 0:
            done[(run["dataset"], run["seed"], run["model"])] = run
    ready = [bench_quality.prepare(j, done) for j in jobs]
    ready = {(j["kind"], j["seed"]): j for j in ready if j is not None}
    assert set(ready) == {("single", 0), ("single", 1), ("search", 0), ("method", 0)}
    assert ready[("method", 0)]["baselines"] == {"left": {"accuracy": 0.5},
                                                 "right": {"accuracy": 0.5}}
    done[("digit_pairs", 0, "search")] = {"tuned": {"weights": {"left": 2.0, "right": 0.5}}}
    tuned = [bench_quality.prepare(j, done) for j in jobs if j["kind"] == "tuned"]
    assert tuned[0]["weights"] == {"left": 2.0, "right": 0.5} and tuned[1] is None


def test_an_interrupted_run_resumes_from_its_cache_without_training_again(monkeypatch, tmp_path):
    args = type("Args", (), {k: 1 for k in bench_quality.SIZES})()
    args.datasets, args.seeds = ["digit_pairs"], 2
    jobs = bench_quality.make_jobs(args, ["equal"], {"digit_pairs": set()})
    trained = []

    def fake_run_job(job, fail_after=None):
        if fail_after is not None and len(trained) == fail_after:
            raise KeyboardInterrupt  # the run is killed here
        trained.append(job["model"] + f" {job['seed']}")
        result = {**job, "validation_metrics": {"left": {"accuracy": 0.5},
                                                "right": {"accuracy": 0.5}}}
        return {**result, "tuned": {"weights": {"left": 1.0, "right": 1.0}}}

    cache = str(tmp_path / "quality.cache.jsonl")
    monkeypatch.setattr(bench_quality, "run_job", lambda job: fake_run_job(job, 3))
    with pytest.raises(KeyboardInterrupt):
        bench_quality.run_jobs(jobs, 0, 0, lambda *a: None, cache=cache)
    assert len(trained) == 3
    with open(cache, "a", encoding="utf-8") as f:
        f.write('{"cut short by the kill')
    finished = bench_quality.load_finished([cache])
    assert len(finished) == 3
    first = list(trained)
    monkeypatch.setattr(bench_quality, "run_job", fake_run_job)
    results = bench_quality.run_jobs(jobs, 0, 0, lambda *a: None, finished, cache)
    assert sorted(first + trained[3:]) == sorted(trained)
    assert len(trained) == len(jobs)  # nothing trained twice
    assert sorted(bench_quality.job_key(r) for r in results) == sorted(
        bench_quality.job_key(j) for j in jobs)
    # A report's runs are reused the same way; other sizes are not.
    report = tmp_path / "quality.json"
    report.write_text(json.dumps({"runs": results}))
    assert len(bench_quality.load_finished([str(report)])) == len(jobs)
    args.max_epochs = 2
    other = bench_quality.make_jobs(args, ["equal"], {"digit_pairs": set()})
    assert not set(map(bench_quality.job_key, other)) & set(bench_quality.load_finished(
        [str(report)]))


def test_single_task_models_stop_on_their_headline_metric():
    from keras_mtl import demo

    found = {t.name: bench_quality.monitored_metric(t) for t in demo.demo_tasks()}
    assert found == {"shape": ("accuracy", "max"), "size": ("mae", "min"),
                     "segmentation": ("miou", "max"), "depth": ("mae", "min")}


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
        bench_quality.main(["--max-epochs", "0"])
    assert "argument --max-epochs: Expected an integer >= 1. Received: 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_quality.main(["--head-units", "32", "16"])
    assert "argument --head-units: Expected one width" in capsys.readouterr().err


# --- the --quick run ---------------------------------------------------------------
@pytest.mark.slow  # about a minute and a half: `make test-slow` runs it
def test_quality_quick_run_writes_curves_tuned_weights_and_verdicts(tmp_path, capsys):
    argv = ["--quick", "--workers", "0", "--datasets", "digit_pairs",
            "--methods", "equal", "pcgrad", "--output", str(tmp_path)]
    assert bench_quality.main(argv) == 0
    report = json.loads((tmp_path / "quality.json").read_text(encoding="utf-8"))
    assert report["settings"]["quick"] is True and report["settings"]["seeds"] == 2
    # 2 seeds x (2 single-task models + 2 methods + tuned_static) + 1 search.
    assert len(report["runs"]) == 11
    found = report["summary"]["digit_pairs"]
    max_epochs = report["settings"]["max_epochs"]
    for task in ("left", "right"):
        single = found["single_task"][task]
        assert single["monitor"] == f"val_{task}_accuracy" and len(single["curves"]) == 2
        for curve in single["curves"]:
            assert 1 <= curve["best_epoch"] <= curve["epochs_run"] <= max_epochs
            assert len(curve["values"]) == len(curve["loss"]) == curve["epochs_run"]
    assert set(found["methods"]) == {"equal", "pcgrad", "tuned_static"}
    assert found["methods"]["pcgrad"]["mode"] == "params"
    weights = found["tuned_static"]["weights"]
    assert set(weights) == {"left", "right"} and all(0.1 <= w <= 10 for w in weights.values())
    for name, row in found["methods"].items():
        assert len(row["delta_m_per_seed"]) == 2 and np.isfinite(row["delta_m_mean"])
        for reference in ("equal", "tuned_static"):
            comparison = row[f"vs_{reference}"]
            if name == reference:
                assert comparison is None
                continue
            assert comparison["verdict"] in ("better", "worse", "within seed noise")
            assert comparison["low"] <= comparison["mean"] <= comparison["high"]
    markdown = (tmp_path / "quality.md").read_text(encoding="utf-8")
    for text in ("| pcgrad ", "| tuned_static ", "| single-task models ", "vs tuned_static",
                 "best epoch per seed", "Tuned static weights"):
        assert text in markdown
    assert (tmp_path / "quality_digit_pairs_curves.png").stat().st_size > 0
    assert "Run time:" in capsys.readouterr().out


def test_a_diverged_run_is_flagged_in_its_row():
    runs = _runs({"equal": [0.5, 0.5, 0.5], "pcgrad": [0.515, 0.51, 0.52],
                  "tuned_static": [0.51, 0.515, 0.505]})
    (diverged,) = [r for r in runs if (r["model"], r["seed"]) == ("pcgrad", 1)]
    diverged["diverged"] = "non-finite step in epoch 3"
    summary = bench_quality.summarise(runs, 3, ["digit_pairs"], ["equal", "pcgrad"],
                                      {"digit_pairs": set()})
    row = summary["digit_pairs"]["methods"]["pcgrad"]
    assert row["diverged_per_seed"] == [None, "non-finite step in epoch 3", None]
    text = bench_quality.markdown(summary, SETTINGS, TIMING)
    assert "gradient (params), diverged: seed 1 non-finite step in epoch 3 |" in text


@pytest.mark.slow  # trains a model; make test-slow
def test_a_step_that_turns_non_finite_ends_the_run_at_its_best_epoch(monkeypatch):
    # fit runs 2 epochs, then stops as keras_mtl's non-finite check stops it:
    # the model is evaluated with early stopping's best weights, flagged.
    import keras_mtl
    from keras_mtl import tasks as T

    original = keras_mtl.MultiTaskModel.fit

    def fit_then_stop(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "epochs": 2})
        raise FloatingPointError("Training stopped at epoch 3: the loss is nan")

    monkeypatch.setattr(keras_mtl.MultiTaskModel, "fit", fit_then_stop)
    job = {**bench_quality.QUICK, "dataset": "digit_pairs", "seed": 0, "filters": [4, 4, 4],
           "features": 8, "head_units": [4], "max_epochs": 5, "patience": 3}
    tasks = [t for t in bench_quality.dataset_tasks("digit_pairs") if t.name == "left"]
    assert isinstance(tasks[0], T.MulticlassClassification)
    result = bench_quality.fit_model(job, tasks, None, "val_left_accuracy", "max")
    assert result["diverged"] == "non-finite step in epoch 3"
    assert result["curve"]["epochs_run"] == 2
    assert 0.0 <= result["metrics"]["left"]["accuracy"] <= 1.0

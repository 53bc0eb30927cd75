"""QM9: every weighting method against single-task models and tuned static weights.

The peers' QM9 benchmark (Nash-MTL, Navon et al. ICML 2022; FAMO, Liu et al.
NeurIPS 2023; both run Nash-MTL's `experiments/quantum_chemistry`): 11
molecular properties (`keras_mtl.datasets.qm9.TARGETS`), one graph network
shared by 11 regression heads, targets standardised on the training split,
110,831 / 10,000 / 10,000 molecules, 300 epochs, batch 120, Adam 1e-3 with
ReduceLROnPlateau(0.7, patience 5), and Δm (`keras_mtl.metrics.delta_m`) of
the test MAEs against single-task models, each model's epoch chosen on
validation (single-task: its target's MAE; multi-task: Δm).

Here, the same protocol at a size a CPU finishes, per seed:
1. one single-task model per target (same trunk, head and budget), each
   stopped early on its validation MAE;
2. every registered weighting method (each distinct class; gradient-level
   methods in representation mode where they support it, else params mode:
   the table says which), stopped early on validation Δm against the
   single-task models of the seed (`keras_mtl.objectives.DeltaM`);
3. **tuned static weights**: a KerasTuner random search over the 11 per-task
   `Static` weights (`static/weight_<task>`, 0.1 to 10, log scale; the
   `MultiTaskHyperModel` space) on validation Δm, run on seed 0 with
   `--trials` trials; the best weights are then trained on every seed like a
   method. Its cost (trials x one model) is in the table.

Model: `keras_mtl.backbones.schnet` (SchNet, Schütt et al. 2017), heads with
one hidden layer; `Regression(normalize=(mean, std))` from the training split,
so losses are on standardised targets and MAEs in the targets' units.
Every model of a seed starts from the same data order (`seed`), Adam 1e-3,
`ReduceLROnPlateau` as the peers, `EarlyStopping(restore_best_weights=True)`.

Settings:
- default (CPU, about 3 hours on 2 cores, an hour a seed: measured): see `DEFAULTS`;
- `--quick` (CI smoke, under 3 minutes): tiny subsets, 2 methods, 1 seed;
- `--full` (a GPU): the peers' sizes and epochs (`FULL`).

Published Δm (%, QM9, lower is better) of the same methods: `PUBLISHED`,
from FAMO's Table 2 (Liu et al. 2023; its rows for the earlier methods are
Nash-MTL's Table 1, Navon et al. 2022, 3 seeds each); the table gives the
Spearman rank correlation between their ordering and ours over the methods
both have.

Paired comparison (`protocol.paired_comparison`): each method's per-seed Δm
minus Equal's and minus tuned static weights' (same seed, same baselines),
with a 95 % Student's t interval over the seeds; "better" / "worse" only
when the interval excludes 0.

Run: `python benchmarks/bench_qm9.py` (writes `benchmarks/results/qm9.json`
and `qm9.md`); it needs `pip install "keras_mtl[qm9]"` for the data, or
`--path` to CSVs in qm9pack's format. Exits 0: it measures.
"""

import argparse
import inspect
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import protocol  # noqa: E402
from bench_overhead import _table, write_results  # noqa: E402

#: Sizes of the default CPU run, `--quick` and `--full` (the peers').
#: Default: one SchNet step (batch 64, 11 heads) takes ~75 ms on 2 CPU cores,
#: so a model is ~75 s plus evaluation; measured: about an hour per seed
#: (seed 0 with the 8 trials: 61 min), 3 hours for the 3 seeds.
DEFAULTS = {"seeds": 3, "train": 2000, "validation": 1000, "test": 1000, "epochs": 25,
            "patience": 6, "batch": 64, "features": 64, "interactions": 3, "trials": 8}
QUICK = {"seeds": 1, "train": 96, "validation": 48, "test": 48, "epochs": 2,
         "patience": 2, "batch": 32, "features": 16, "interactions": 1, "trials": 2}
FULL = {"seeds": 3, "train": None, "validation": None, "test": None, "epochs": 300,
        "patience": 300, "batch": 120, "features": 64, "interactions": 3, "trials": 20}
QUICK_METHODS = ("equal", "pcgrad")

#: Published QM9 Δm (%, mean of 3 seeds) by our registry name: FAMO (Liu et
#: al., NeurIPS 2023), Table 2; its rows before FAMO are Nash-MTL's (Navon et
#: al., ICML 2022), Table 1 (per-task figures in its Table 6), the same
#: values. "LS" (linear scalarisation) is our `equal`, "SI" our
#: `scale_invariant`.
PUBLISHED = {
    "equal": 177.6, "random_loss_weighting": 203.8, "dynamic_weight_average": 175.3,
    "uncertainty": 108.0, "mgda": 120.5, "pcgrad": 125.7, "cagrad": 112.8,
    "imtl": 77.2, "nash_mtl": 62.0, "famo": 58.5, "scale_invariant": 77.8,
}
PUBLISHED_SOURCE = ("FAMO (Liu et al., NeurIPS 2023) Table 2; rows before FAMO from "
                    "Nash-MTL (Navon et al., ICML 2022) Table 1")


# --- data and models ------------------------------------------------------------
def data(settings, seed, path=None, held_out=None):
    """`{split: (x, y)}` numpy arrays and the training split's statistics:
    the first `settings[split]` molecules of each of the peers' splits
    (seeded); `held_out` shrinks the validation and test splits for a small
    file (`--path`)."""
    from keras_mtl.datasets import qm9

    sizes = None if held_out is None else {"validation": held_out, "test": held_out}
    arrays = {
        split: qm9.arrays(split, settings[split], seed=seed, path=path, split_sizes=sizes)
        for split in ("train", "validation", "test")
    }
    statistics = qm9.target_statistics(settings["train"], seed=seed, path=path,
                                       split_sizes=sizes)
    return arrays, statistics


def make_tasks(statistics, names=None):
    from keras_mtl import tasks as T
    from keras_mtl.datasets import qm9

    return [T.Regression(t, normalize=statistics[t]) for t in (names or qm9.TARGETS)]


def make_trunk(settings):
    from keras_mtl.backbones import schnet

    return schnet(num_features=settings["features"], num_interactions=settings["interactions"])


def make_weighting(name, tasks, seed, y_train=None):
    """Default hyperparameters; representation mode where the method has it."""
    from keras_mtl import weighting as W

    cls = W.methods()[name]
    if cls is W.InverseSize:
        return W.InverseSize(counts=W.count_labels(y_train, tasks))
    if cls is W.Static:
        return W.Static({t.name: 1.0 for t in tasks})
    arguments = cls.arguments_from_tasks(tasks)
    parameters = inspect.signature(cls).parameters
    if "seed" in parameters:
        arguments["seed"] = seed
    if "representation" in getattr(cls, "supported_modes", ()):
        arguments["mode"] = "representation"
    return cls(**arguments)


def callbacks(settings, monitor):
    """The peers' schedule: ReduceLROnPlateau(0.7, patience 5), and early stopping."""
    return protocol.callbacks(monitor, settings["patience"], lr_factor=0.7, lr_patience=5)


def _reset_peak_rss():
    """Starts a new resident-memory high-water mark (Linux: writing 5 to
    /proc/self/clear_refs resets VmHWM), so each model's peak is its own and
    not the largest of every model trained before it in this process."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib():
    """The high-water mark since `_reset_peak_rss`; None where it cannot be reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def train(settings, arrays, tasks, weighting, seed, baselines=None, head_units=None):
    """Trains one model; `(test MAEs {task: mae}, validation MAEs, info)`."""
    import keras

    import keras_mtl
    from keras_mtl import objectives

    names = [t.name for t in tasks]
    (x, y), (xv, yv), (xt, yt) = arrays["train"], arrays["validation"], arrays["test"]
    keras.utils.set_random_seed(seed)
    model = keras_mtl.build_model(make_trunk(settings), tasks,
                                  head_units=head_units or (settings["features"],))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=weighting)
    if baselines is None:  # single-task: its own validation MAE
        monitor, extra = f"val_{names[0]}_mae", []
    else:
        monitor = "val_delta_m"
        extra = [objectives.DeltaM(tasks, {n: {"mae": baselines[n]} for n in names})]
    started = time.perf_counter()
    history = model.fit(
        x, {n: y[n] for n in names}, validation_data=(xv, {n: yv[n] for n in names}),
        batch_size=settings["batch"], epochs=settings["epochs"], shuffle=True, verbose=0,
        callbacks=extra + callbacks(settings, monitor),
    )
    fit_s = time.perf_counter() - started

    def maes(inputs, labels):
        logs = model.evaluate(inputs, {n: labels[n] for n in names}, batch_size=256,
                              return_dict=True, verbose=0)
        return {n: float(logs[f"{n}_mae"]) for n in names}

    return maes(xt, yt), maes(xv, yv), {
        "epochs_run": len(history.history["loss"]),
        "fit_s": round(fit_s, 1),
        "mode": getattr(weighting, "mode", None),
    }


def delta_m(maes, baselines):
    from keras_mtl import metrics as metrics_lib

    return metrics_lib.delta_m(maes, {n: baselines[n] for n in maes},
                               {n: False for n in maes})


def tune_static(settings, arrays, tasks, baselines, seed, directory):
    """Random search over per-task static weights on validation Δm."""
    from keras_mtl import objectives

    names = [t.name for t in tasks]
    (x, y), (xv, yv) = arrays["train"], arrays["validation"]
    found = protocol.tune_static(
        tasks, lambda _: make_trunk(settings),
        objectives.DeltaM(tasks, {n: {"mae": baselines[n]} for n in names}),
        (x, {n: y[n] for n in names}), (xv, {n: yv[n] for n in names}),
        epochs=settings["epochs"], trials=settings["trials"], seed=seed, directory=directory,
        callbacks=callbacks(settings, "val_delta_m"), batch_size=settings["batch"],
        head_units=(settings["features"],), project_name="qm9_static")
    return {"weights": found["weights"], "search_s": found["seconds"], "trials": found["trials"]}


# --- the run -------------------------------------------------------------------
def run(settings, methods, path, directory, held_out=None, cache=None):
    from keras_mtl import weighting as W
    from keras_mtl.datasets import qm9

    cache = cache or Cache(None, False)
    results = {"single_task": {}, "methods": {}, "tuned_static": None, "same_as_equal": []}
    tuned = cache.get("tuned_static")
    for seed in range(settings["seeds"]):
        arrays, statistics = data(settings, seed, path, held_out)
        tasks = make_tasks(statistics)
        stl_test, stl_val = {}, {}
        for target in qm9.TARGETS:
            key = f"{seed}/single-task {target}"
            row = cache.get(key)
            if row is None:
                one = make_tasks(statistics, [target])
                test, val, info = train(settings, arrays, one, None, seed)
                row = {**info, "mae": test[target], "validation_mae": val[target]}
                cache.put(key, row)
            stl_test[target], stl_val[target] = row["mae"], row["validation_mae"]
            results["single_task"].setdefault(target, []).append(row)
            print(f"seed {seed} single-task {target}: test MAE {row['mae']:.4g}", flush=True)
        if tuned is None:
            tuned = tune_static(settings, arrays, tasks, stl_val, seed, directory)
            cache.put("tuned_static", tuned)
        results["tuned_static"] = tuned
        y_train = arrays["train"][1]
        runs = [(name, lambda name=name: make_weighting(name, tasks, seed, y_train))
                for name in methods]
        runs.append(("tuned_static", lambda: W.Static(tuned["weights"])))
        for name, factory in runs:
            weighting = factory()
            if name != "equal" and "equal" in methods and same_as_equal(weighting, tasks):
                # Every molecule has every label: `Static` without weights and
                # `InverseSize` weight every task 1 and would train as Equal.
                results["same_as_equal"].append(name)
                continue
            key = f"{seed}/{name}"
            row = cache.get(key)
            if row is None:
                measured = _reset_peak_rss()
                test, _, info = train(settings, arrays, tasks, weighting, seed,
                                      baselines=stl_val)
                row = {**info, "test_mae": test, "delta_m": delta_m(test, stl_test),
                       "model_peak_rss_mib": _peak_rss_mib() if measured else None}
                cache.put(key, row)
            results["methods"].setdefault(name, []).append(row)
            print(f"seed {seed} {name}: Δm {row['delta_m']:+.1f} % ({row['fit_s']} s)",
                  flush=True)
    results["same_as_equal"] = sorted(set(results["same_as_equal"]))
    return results


def same_as_equal(weighting, tasks):
    """Whether a fixed weighting gives every task weight 1 (trains as Equal)."""
    from keras_mtl import weighting as W

    if not isinstance(weighting, (W.Static, W.InverseSize)):
        return False
    weighting.build({t.name: () for t in tasks})
    _, weights = weighting({t.name: 1.0 for t in tasks})
    return all(abs(float(w) - 1.0) < 1e-7 for w in weights.values())


class Cache:
    """Finished models' results in a JSON file beside the output, so an
    interrupted run resumes (`--resume`) instead of training them again."""

    def __init__(self, path, resume):
        self.path = path
        self.rows = {}
        if resume and path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.rows = json.load(f)

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, row):
        self.rows[key] = row
        if self.path:
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.rows, f)


def summarise(results):
    rows = {}
    for name, runs in results["methods"].items():
        deltas = [r["delta_m"] for r in runs]
        rows[name] = {
            "delta_m_mean": round(float(np.mean(deltas)), 2),
            "delta_m_std": round(float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0, 2),
            "delta_m_per_seed": [round(d, 2) for d in deltas],
            "test_mae_mean": {t: round(float(np.mean([r["test_mae"][t] for r in runs])), 5)
                              for t in runs[0]["test_mae"]},
            "fit_s_mean": round(float(np.mean([r["fit_s"] for r in runs])), 1),
            "epochs_run_mean": round(float(np.mean([r["epochs_run"] for r in runs])), 1),
            # Runs cached before the per-model measurement have only the
            # process's high-water mark ("peak_rss_mib"), which is not per model.
            "peak_rss_mib": max((r["model_peak_rss_mib"] for r in runs
                                 if r.get("model_peak_rss_mib") is not None), default=None),
            "mode": runs[0]["mode"],
            "published_delta_m": PUBLISHED.get(name),
        }
    # Mean rank over tasks of each method's test MAE (1 = best), per seed then averaged.
    names = list(rows)
    seeds = len(next(iter(results["methods"].values())))
    targets = list(next(iter(rows.values()))["test_mae_mean"])
    ranks = {n: [] for n in names}
    for s in range(seeds):
        for t in targets:
            order = sorted(names, key=lambda n: results["methods"][n][s]["test_mae"][t])
            for position, n in enumerate(order, 1):
                ranks[n].append(position)
    for n in names:
        rows[n]["mean_rank"] = round(float(np.mean(ranks[n])), 2)
        for reference in ("equal", "tuned_static"):
            if reference in rows and reference != n:
                rows[n][f"vs_{reference}"] = protocol.paired_comparison(
                    rows[n]["delta_m_per_seed"], rows[reference]["delta_m_per_seed"])
    return dict(sorted(rows.items(), key=lambda kv: kv[1]["delta_m_mean"]))


def spearman(rows):
    """Rank correlation of our Δm and the published Δm over shared methods."""
    shared = [n for n, r in rows.items() if r["published_delta_m"] is not None]
    if len(shared) < 3:
        return None, shared
    ours = np.argsort(np.argsort([rows[n]["delta_m_mean"] for n in shared]))
    theirs = np.argsort(np.argsort([rows[n]["published_delta_m"] for n in shared]))
    return round(float(np.corrcoef(ours, theirs)[0, 1]), 3), shared


def markdown(rows, results, settings, label, wall_s):
    from keras_mtl.datasets import qm9

    rho, shared = spearman(rows)
    stl = results["single_task"]
    compute_s = results["tuned_static"]["search_s"] + sum(
        r["fit_s"] for runs in [*stl.values(), *results["methods"].values()] for r in runs)
    lines = [
        "# QM9: weighting methods against single-task models and tuned static weights",
        "",
        f"Run: {label}. {settings['seeds']} seed(s); molecules train / validation / test "
        f"{settings['train'] or 'all'} / {settings['validation'] or '10,000'} / "
        f"{settings['test'] or '10,000'}; SchNet {settings['features']} features x "
        f"{settings['interactions']} interactions; up to {settings['epochs']} epochs, batch "
        f"{settings['batch']}, Adam 1e-3 with ReduceLROnPlateau(0.7, 5) and early stopping "
        f"(patience {settings['patience']}; single-task models on their validation MAE, "
        "multi-task ones on validation Δm against them). Δm in percent of the test MAEs "
        "against the single-task models of the same seed (lower is better; the peers' "
        "models are larger and trained 300 epochs on 110k molecules, so their Δm and "
        f"ours measure different regimes). Training time, all models: {compute_s / 60:.0f} "
        f"min (this invocation's wall time: {wall_s / 60:.0f} min; `--resume` reuses "
        "finished models).",
        "",
        f"Tuned static weights: {results['tuned_static']['trials']} random-search trials on "
        f"seed 0, {results['tuned_static']['search_s']:.0f} s; weights "
        + ", ".join(f"{t} {w:.2f}" for t, w in results["tuned_static"]["weights"].items())
        + ".",
        "",
        ("Trained as Equal, so reported as its row: " + ", ".join(results["same_as_equal"])
         + " (every molecule has every label, so they weight every task 1). "
         if results["same_as_equal"] else "")
        + "Published Δm: " + PUBLISHED_SOURCE + "."
        + (f" Spearman rank correlation with ours over {len(shared)} shared methods: "
           f"{rho:+.2f}." if rho is not None else ""),
        "",
    ]
    header = ["method", "mode", "Δm % (ours)", "Δm % (published)", "mean rank",
              "vs equal", "vs tuned static", "fit s", "epochs", "peak RSS MiB per model"]
    table = [[n, r["mode"] or "-", f"{r['delta_m_mean']:+.1f} ± {r['delta_m_std']:.1f}",
              "-" if r["published_delta_m"] is None else f"{r['published_delta_m']:.1f}",
              f"{r['mean_rank']:.2f}", _paired(r.get("vs_equal")),
              _paired(r.get("vs_tuned_static")), f"{r['fit_s_mean']:.0f}",
              f"{r['epochs_run_mean']:.0f}", _mib(r["peak_rss_mib"])]
             for n, r in rows.items()]
    lines += _table(header, table).splitlines()
    lines += ["", "vs equal / vs tuned static: the mean over seeds of this method's Δm minus "
              "the other's (same seed), its 95 % t interval, and whether it is better or worse "
              "beyond seed noise (the interval excludes 0). Peak RSS: the process's resident "
              "memory high-water mark, reset before each model (Linux); the largest over "
              "seeds, and \"-\" where no seed measured it (runs cached before this measure "
              "recorded the process's mark since start, which is not per model)."]
    lines += ["", "Test MAE per target (mean over seeds; units: "
              + ", ".join(f"{t} {qm9.UNITS[t]}" for t in qm9.TARGETS) + "):", ""]
    header = ["model", *qm9.TARGETS]
    table = [["single-task", *[f"{np.mean([r['mae'] for r in stl[t]]):.4g}" for t in qm9.TARGETS]]]
    table += [[n, *[f"{r['test_mae_mean'][t]:.4g}" for t in qm9.TARGETS]] for n, r in rows.items()]
    lines += _table(header, table).splitlines()
    return "\n".join(lines) + "\n"


def _mib(value):
    return "-" if value is None else f"{value:.0f}"


def _paired(found):
    if found is None:
        return "-"
    if found["low"] is None:
        return f"{found['mean']:+.1f} ({found['verdict']})"
    return (f"{found['mean']:+.1f} [{found['low']:+.1f}, {found['high']:+.1f}] "
            f"{found['verdict']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="CI smoke run (< 3 minutes)")
    group.add_argument("--full", action="store_true", help="the peers' sizes (a GPU)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=None,
                        help="registry names (default: every registered method)")
    parser.add_argument("--path", default=None, help="CSVs in qm9pack's format")
    parser.add_argument("--held-out", type=int, default=None,
                        help="validation and test split sizes for a small --path file")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--stem", default="qm9")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished models of an interrupted run (<stem>.cache.json)")
    args = parser.parse_args(argv)

    from keras_mtl import weighting as W

    settings = dict(QUICK if args.quick else FULL if args.full else DEFAULTS)
    if args.seeds:
        settings["seeds"] = args.seeds
    methods = args.methods or (list(QUICK_METHODS) if args.quick else list(W.methods()))
    unknown = sorted(set(methods) - set(W.methods()))
    if unknown:
        parser.error(f"unknown methods {unknown}; registered: {list(W.methods())}")
    label = "--quick" if args.quick else "--full" if args.full else "default (CPU)"
    import tempfile

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        os.makedirs(args.output, exist_ok=True)
        cache = Cache(os.path.join(args.output, f"{args.stem}.cache.json"), args.resume)
        results = run(settings, methods, args.path, directory, args.held_out, cache)
    wall_s = time.perf_counter() - started
    rows = summarise(results)
    report = markdown(rows, results, settings, label, wall_s)
    payload = {"settings": settings, "label": label, "wall_s": round(wall_s, 1),
               "summary": rows, "runs": results,
               "published": {"source": PUBLISHED_SOURCE, "delta_m": PUBLISHED}}
    write_results(args.output, args.stem, payload, report)
    return payload


if __name__ == "__main__":
    main()

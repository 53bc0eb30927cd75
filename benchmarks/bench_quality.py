"""Quality: Δm of every weighting method against single-task models and tuned static weights.

Datasets (embedded, offline; the data are the same for every seed):
- shapes: 32 px scenes, four tasks of four kinds: `shape` (3 classes:
  accuracy), `size` (regression: MAE, RMSE), `segmentation` (4 classes:
  pixel accuracy, mIoU), `depth` (dense regression: MAE, RMSE);
- digit_pairs: 32 px MultiMNIST-style pairs of real handwritten digits,
  `left` and `right` (10 classes each: accuracy).
Each has three disjoint splits: train (1024 examples), validation (256:
shapes draws it from its own random stream, digit pairs from their own
source digits) and test (512), the judge.

Protocol, per dataset and seed (the same as `bench_qm9.py`'s; the shared
pieces are in `protocol.py`):
1. one single-task model per task, trained up to `max_epochs` with
   `ReduceLROnPlateau` (x0.5 after 2 flat epochs) and `EarlyStopping`
   (`patience` epochs, best weights restored) on its own validation metric
   (accuracy; mIoU for segmentation; MAE for regression); its learning curve
   (validation metric and training loss per epoch) is in the JSON, a summary
   in the markdown, and, with matplotlib, `quality_<dataset>_curves.png`
   draws seed 0's single-task curves beside Equal's;
2. one multi-task model per weighting method of `keras_mtl.weighting` (each
   distinct class of the registry, gradient methods in their default mode),
   with the same budget rule on validation Δm (`keras_mtl.objectives.DeltaM`)
   against the validation metrics of the seed's single-task models;
3. `tuned_static`: a KerasTuner random search over the per-task `Static`
   weights (`protocol.tune_static`: 0.1 to 10, log scale, `trials` trials,
   each trained as in 2 and scored by its best validation Δm), run on seed 0;
   the best weights are then trained on every seed like a method (so seed 0's
   row was selected on seed 0's validation split, never on a test split).
   Every weight is drawn at random: the search need not try Equal's.
A model whose training step turns non-finite (keras_mtl stops `fit` on it)
ends there as early stopping would end it, with its best validation epoch's
weights, and its row says "diverged" with the epoch.
Δm (`keras_mtl.metrics.delta_m`: the mean over tasks of the signed relative
change of their test metrics, in percent; negative: the multi-task model is
better) compares each model with the single-task models of its seed.

Paired comparison: for each method, the per-seed differences Δm(method) -
Δm(equal) and Δm(method) - Δm(tuned_static) (same seed: same single-task
baselines, initial trunk and batches, so what the seeds share cancels), their
mean and 95 % Student's t interval (n - 1 degrees of freedom,
`protocol.paired_comparison`). "better": the interval lies below 0 (the method
beats that reference beyond what the seeds scatter); "worse": above 0; "within
seed noise": it contains 0. With 3 seeds t = 4.30, so only differences that
are large and consistent across seeds get a verdict.

Model: the trunk is `keras_mtl.demo.demo_trunk` (three stride-2 stages of two
3x3 convolutions with batch norm; 32, 64 and 96 channels); for digit pairs it
is followed, as in the MultiMNIST literature (Sener & Koltun 2018), by a
shared fully connected layer of 256 units (vector heads average-pool a
feature map, which loses which digit is left and which right). Heads have
one hidden layer of 32 units (dense heads: an upsampling decoder). Adam
1e-3, batch 32; every model of a seed starts from the same initial trunk and
sees the same batches in the same order (`protocol.seeded_batches`).

`Static` and `InverseSize` give every task weight 1 here (every task has
every label; `Static` without weights): they would train exactly as `Equal`
does, so they are reported as such, not run again; the script checks that
their weights are all 1 and runs them otherwise.

Budget: the default run (2 datasets x 3 seeds x (16 methods + tuned_static +
6 single-task models) = 138 models, plus 2 searches of 6 trials) is sized for
about 40 minutes on an idle 2-core CPU (estimate: 43), in two worker
processes of one TensorFlow thread each; a job starts as soon as what it
needs is known (single-task models first, then the searches and the
methods). How it was estimated: the CPU time per epoch of each kind of model
in the last run of the former 10-epoch protocol (shapes: 1.1 s for a
single-task model, 2.2 for a loss-level method, 3.7 for a params-mode
gradient method; digit pairs: 0.9, 0.9, 1.5), plus 8 % for the validation
pass, plus a fixed cost per model for tracing and setup (4-9 CPU seconds,
measured in a `--quick` run), times the epochs early stopping is expected to
run, assumed (the former protocol stopped every model at 10 epochs, so no
run has measured them yet): a best epoch near 12 for multi-task models and 15
for single-task ones, plus `patience` (4). That is ~79 CPU-minutes for the 138 models and ~7 for
the 12 trials: ~43 minutes on 2 idle cores. The epochs are the uncertain
part: one epoch more per model costs ~4.4 CPU-minutes (~2 minutes of wall
time); the results give every model's epochs and the run's wall and CPU time
and load average, to correct the estimate. Measured since (27 methods):
digit pairs, 85 models, 38 CPU-minutes (25 min on 2 cores); shapes, 91
models, 133 CPU-minutes (122 min on 2 cores shared with other work): its
multi-task models run 20-30 epochs, several times the assumed cost. `--max-epochs` (30: no model runs
longer), `--seeds` and `--trials` size the run.

Run: `python benchmarks/bench_quality.py` (writes
`benchmarks/results/quality.json`, `quality.md` and, with matplotlib,
`quality_<dataset>_curves.png`); `--quick` is a smoke run of a few seconds
per model (2 methods, 64 examples per split, 2 epochs, 2 seeds, 2 trials:
2-4 minutes in all). Each finished model is appended to
`<output>/quality.cache.jsonl` (removed once the report is written):
`--reuse <output>/quality.cache.jsonl` resumes an interrupted run, and
`--reuse benchmarks/results/quality.json` keeps an earlier run's models
(say, one dataset's) while the others are trained.
Exits 0 whether or not the goal is met: it measures.
"""

import argparse
import concurrent.futures
import functools
import importlib.util
import inspect
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import protocol  # noqa: E402
from bench_overhead import _table, write_results  # noqa: E402

#: Δm the best method should reach on every dataset (percent).
GOAL = -2.0
FILTERS = (32, 64, 96)
HEAD_UNITS = (32,)
FEATURES = 256
DATASETS = ("shapes", "digit_pairs")
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
#: Sizes of the default run and of `--quick`.
DEFAULTS = {"seeds": 3, "max_epochs": 30, "patience": 4, "trials": 6, "train": 1024,
            "validation": 256, "test": 512, "image_size": 32}
QUICK = {"seeds": 2, "max_epochs": 2, "patience": 1, "trials": 2, "train": 64,
         "validation": 64, "test": 64, "image_size": 32}
QUICK_METHODS = ("equal", "pcgrad")
TUNED = "tuned_static"
#: Epochs at which the markdown shows the single-task validation curves.
CURVE_EPOCHS = (1, 5, 10, 20, 30, 40, 60, 80, 100)


# --- what is trained ------------------------------------------------------------
def dataset_tasks(dataset):
    from keras_mtl import demo
    from keras_mtl import tasks as T

    if dataset == "shapes":
        return demo.demo_tasks()
    return [T.MulticlassClassification("left", 10), T.MulticlassClassification("right", 10)]


@functools.lru_cache(maxsize=4)
def dataset_arrays(dataset, train, validation, test, image_size):
    """`{split: (x, y)}` for train, validation and test, the same in every process."""
    from keras_mtl.datasets import digit_pairs, shapes

    sizes = {"train": train, "validation": validation, "test": test}
    if dataset == "shapes":
        names = [t.name for t in dataset_tasks(dataset)]
        return {s: shapes.generate(s, n, image_size, tasks=names, seed=0) for s, n in sizes.items()}
    return {s: digit_pairs.generate(s, n, image_size, channels=1, seed=0) for s, n in sizes.items()}


def monitored_metric(task):
    """`(metric, mode)` a single-task model is stopped on: its task's first
    metric (accuracy, MAE), but mIoU for segmentation (pixel accuracy is
    mostly background)."""
    metric = "miou" if "miou" in task.higher_is_better else next(iter(task.higher_is_better))
    return metric, "max" if task.higher_is_better[metric] else "min"


def method_classes():
    """`{registry name: class}` of every registered method (a method
    registered by a plugin included), in registration order."""
    from keras_mtl import weighting as W

    return W.methods()


def make_weighting(name, seed, tasks, y_train):
    """A fresh instance: default hyperparameters, the seed for random ones."""
    from keras_mtl import weighting as W

    cls = method_classes()[name]
    if cls is W.InverseSize:
        return W.InverseSize(counts=W.count_labels(y_train, tasks))
    if cls is W.Static:
        return W.Static({t.name: 1.0 for t in tasks})
    arguments = cls.arguments_from_tasks(tasks)
    if "seed" in inspect.signature(cls).parameters:
        arguments["seed"] = seed
    return cls(**arguments)


def same_as_equal(name, tasks, y_train):
    """True when `name` gives every task weight 1 on this data (so it would
    train exactly as Equal)."""
    from keras_mtl import weighting as W

    if method_classes()[name] not in (W.InverseSize, W.Static):
        return False
    weighting = make_weighting(name, 0, tasks, y_train)
    weighting.build({t.name: () for t in tasks})
    _, weights = weighting({t.name: 1.0 for t in tasks})
    return all(abs(float(w) - 1.0) < 1e-7 for w in weights.values())


def trunk(dataset, image_shape, filters, features):
    """The shared trunk: `demo_trunk`'s feature map for shapes (dense heads
    need one); for digit pairs, as in the MultiMNIST literature (Sener &
    Koltun 2018), a shared vector from a fully connected layer, which keeps
    where each digit is (vector heads average-pool a feature map, losing
    left from right)."""
    import keras

    from keras_mtl import demo

    cnn = demo.demo_trunk(image_shape, filters=tuple(filters))
    if dataset == "shapes":
        return cnn
    x = keras.layers.Flatten(name="flatten")(cnn.output)
    if features:
        x = keras.layers.Dense(features, activation="relu", name="shared_features")(x)
    return keras.Model(cnn.input, x, name="small_cnn_fc")


def _init_worker(threads):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _arrays(job):
    return dataset_arrays(job["dataset"], job["train"], job["validation"], job["test"],
                          job["image_size"])


def _labels(y, tasks):
    return {t.name: y[t.name] for t in tasks}


def _trunk_factory(job):
    return functools.partial(trunk, job["dataset"], filters=job["filters"],
                             features=job["features"])


def fit_model(job, tasks, weighting, monitor, mode, objective=None):
    """Trains one model under the budget rule; its validation and test
    metrics, learning curve and timings."""
    import keras

    import keras_mtl
    from keras_mtl import metrics as metrics_lib

    data = _arrays(job)
    (x, y), (xv, yv), (xt, yt) = data["train"], data["validation"], data["test"]
    keras.utils.set_random_seed(job["seed"])
    model = keras_mtl.build_model(
        _trunk_factory(job)(x.shape[1:]), tasks, input_shape=x.shape[1:],
        head_units=tuple(job["head_units"]),
    )
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), weighting=weighting)
    batches, steps = protocol.seeded_batches(x, _labels(y, tasks), BATCH_SIZE,
                                             job["max_epochs"], job["seed"])
    wall, cpu = time.perf_counter(), time.process_time()
    stopping = protocol.callbacks(monitor, job["patience"], mode)
    diverged = None
    try:
        history = model.fit(
            batches, steps_per_epoch=steps, epochs=job["max_epochs"],
            validation_data=(xv, _labels(yv, tasks)), validation_batch_size=128,
            shuffle=False, verbose=0, callbacks=([objective] if objective else []) + stopping,
        )
    except FloatingPointError:
        # A step turned non-finite and fit stopped there (keras_mtl's check):
        # the run ends as early stopping would have ended it, with the best
        # validation epoch's weights, and is flagged in the results.
        early = stopping[-1]
        if early.best_weights is None:
            raise
        model.set_weights(early.best_weights)
        history = model.history
        diverged = f"non-finite step in epoch {len(history.epoch) + 1}"
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    keys = ["loss", "val_loss"]
    if weighting is None or job["model"] == "equal":  # what `plot_curves` draws
        keys += [f"{p}{t.name}_loss" for t in tasks for p in ("", "val_")]

    def metrics(inputs, labels):
        logs = model.evaluate(inputs, _labels(labels, tasks), batch_size=128,
                              return_dict=True, verbose=0)
        return metrics_lib.task_metrics(logs, tasks)

    return {
        "metrics": metrics(xt, yt),
        "validation_metrics": metrics(xv, yv),
        "curve": protocol.learning_curve(history, monitor, mode, keys=keys),
        "fit_wall_s": round(fit_wall, 2),
        "fit_cpu_s": round(fit_cpu, 2),
        "diverged": diverged,
        "level": getattr(weighting, "level", None),
        "mode": getattr(weighting, "mode", None),
    }


def run_job(job):
    """Trains one model (or runs one search); the job with its results."""
    from keras_mtl import objectives
    from keras_mtl import weighting as W

    tasks = dataset_tasks(job["dataset"])
    if job["kind"] == "single":
        tasks = [t for t in tasks if t.name == job["model"][len("single-task "):]]
        metric, mode = monitored_metric(tasks[0])
        return {**job, **fit_model(job, tasks, None, f"val_{tasks[0].name}_{metric}", mode)}
    objective = objectives.DeltaM(tasks, job["baselines"])
    if job["kind"] == "search":
        x, y = _arrays(job)["train"]
        xv, yv = _arrays(job)["validation"]
        batches, steps = protocol.seeded_batches(x, _labels(y, tasks), BATCH_SIZE,
                                                 job["max_epochs"], job["seed"])
        with tempfile.TemporaryDirectory() as directory:
            found = protocol.tune_static(
                tasks, _trunk_factory(job), objective, batches, (xv, _labels(yv, tasks)),
                epochs=job["max_epochs"], trials=job["trials"], seed=job["seed"],
                directory=directory, callbacks=protocol.callbacks(objective.key, job["patience"]),
                input_shape=x.shape[1:], head_units=job["head_units"],
                learning_rate=LEARNING_RATE, project_name=f"{job['dataset']}_static",
                fit_kwargs={"steps_per_epoch": steps, "validation_batch_size": 128,
                            "shuffle": False})
        return {**job, "tuned": found}
    if job["kind"] == "tuned":
        weighting = W.Static(job["weights"])
    else:
        weighting = make_weighting(job["model"], job["seed"], tasks, _arrays(job)["train"][1])
    return {**job, **fit_model(job, tasks, weighting, objective.key, "min", objective)}


# --- the run -------------------------------------------------------------------
SIZES = ("max_epochs", "patience", "trials", "train", "validation", "test", "image_size",
         "filters", "head_units", "features")


def make_jobs(args, methods, skipped):
    """Every model (and search) of the run; `prepare` fills in what they need."""
    jobs = []
    base = {k: getattr(args, k) for k in SIZES}
    for dataset in args.datasets:
        tasks = dataset_tasks(dataset)
        jobs.append({**base, "kind": "search", "dataset": dataset, "seed": 0, "model": "search"})
        for seed in range(args.seeds):
            one = {**base, "dataset": dataset, "seed": seed}
            jobs += [{**one, "kind": "single", "model": f"single-task {t.name}"} for t in tasks]
            jobs += [{**one, "kind": "method", "model": name}
                     for name in methods if name not in skipped[dataset]]
            jobs.append({**one, "kind": "tuned", "model": TUNED})
    return jobs


def prepare(job, done):
    """The job with its inputs (the seed's single-task validation metrics;
    the tuned weights), or None while they are not known. `done` maps
    `(dataset, seed, model)` to finished results."""
    if job["kind"] == "single":
        return job
    dataset, seed = job["dataset"], job["seed"]
    singles = [done.get((dataset, seed, f"single-task {t.name}")) for t in dataset_tasks(dataset)]
    if None in singles:
        return None
    job = {**job, "baselines": {k: v for r in singles for k, v in r["validation_metrics"].items()}}
    if job["kind"] == "tuned":
        search = done.get((dataset, 0, "search"))
        if search is None:
            return None
        job["weights"] = search["tuned"]["weights"]
    return job


def _priority(job):
    """Single-task models first (everything waits for them), then the
    searches (the longest jobs), then the most expensive methods."""
    order = {"single": 0, "search": 1, "method": 2, "tuned": 3}[job["kind"]]
    cost = 1.0
    if job["kind"] == "method":
        cls = method_classes()[job["model"]]
        params_mode = getattr(cls, "level", "loss") == "gradient" and cls().mode == "params"
        cost = len(dataset_tasks(job["dataset"])) * (2.0 if params_mode else 1.0)
    return order, job["seed"], -cost


class _InThisProcess:
    """An executor that runs each job when it is submitted (`--workers 0`)."""

    def __init__(self, threads):
        if threads:
            _init_worker(threads)

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        future.set_result(function(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def job_key(job):
    """What identifies a model: its dataset, seed, name, kind and sizes (not
    the inputs `prepare` adds), as a string."""
    return json.dumps({k: job[k] for k in (*SIZES, "dataset", "seed", "kind", "model")},
                      sort_keys=True)


def load_finished(paths):
    """Finished results of earlier runs, by `job_key`: from a report
    (`quality.json`, its "runs") or a cache (`quality.cache.jsonl`, one
    result per line, as `run_jobs` appends them; a last line cut short by a
    kill is skipped)."""
    finished = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                lines = f.read().splitlines()
                results = []
                for number, line in enumerate(lines, 1):
                    try:
                        results.append(json.loads(line))
                    except json.JSONDecodeError:
                        if number < len(lines):
                            raise ValueError(f"{path}, line {number}: not a JSON result.")
            else:
                results = json.load(f)["runs"]
        finished.update((job_key(r), r) for r in results)
    return finished


def run_jobs(jobs, workers, threads, report=None, finished=None, cache=None):
    """Runs `jobs` on `workers` processes, each job once its inputs are
    known; returns the results in the order they finished (first those found
    in `finished`, a dict of `job_key` to result, which are not run again).
    Each new result is appended to the file `cache` (JSON lines) as it
    finishes, so an interrupted run can be resumed from it."""
    finished = finished or {}
    reused = [finished[job_key(j)] for j in jobs if job_key(j) in finished]
    if workers == 0:
        executor = _InThisProcess(threads)
    else:
        executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(threads,))
    pending = [j for j in jobs if job_key(j) not in finished]
    running, results = {}, list(reused)
    done = {(r["dataset"], r["seed"], r["model"]): r for r in reused}
    with executor:
        while pending or running:
            ready = [(j, p) for j, p in ((j, prepare(j, done)) for j in pending) if p]
            ready.sort(key=lambda pair: _priority(pair[1]))
            for job, prepared in ready[:max(workers, 1) - len(running)]:
                pending.remove(job)
                running[executor.submit(run_job, prepared)] = prepared
            if not running:
                raise RuntimeError(f"No job can start: {[j['model'] for j in pending]}")
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                result = future.result()
                done[(result["dataset"], result["seed"], result["model"])] = result
                results.append(result)
                if cache:
                    with open(cache, "a", encoding="utf-8") as f:
                        f.write(json.dumps(result) + "\n")
                (report or _report_progress)(result, len(results), len(jobs))
    return results


def _report_progress(result, count, total):
    what = (f"search {result['tuned']['seconds']:.0f} s" if result["kind"] == "search" else
            f"fit {result['fit_wall_s']:.0f} s, {result['curve']['epochs_run']} epochs "
            f"(best {result['curve']['best_epoch']})")
    print(f"[{count}/{total}] {result['dataset']} {result['model']} seed {result['seed']}: "
          f"{what}", flush=True)


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _mean_metrics(metric_dicts):
    return {
        task: {
            metric: round(float(np.mean([m[task][metric] for m in metric_dicts])), 4)
            for metric in metric_dicts[0][task]
        }
        for task in metric_dicts[0]
    }


def _rounded(comparison):
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in comparison.items()}


def summarise(results, seeds, datasets, methods, skipped):
    """Per dataset: the single-task models' curves, Δm per method and seed
    (with its mean ± std), and each method paired with Equal and tuned static
    weights over the seeds."""
    from keras_mtl import metrics as metrics_lib

    summary = {}
    for dataset in datasets:
        tasks = dataset_tasks(dataset)
        higher = metrics_lib.higher_is_better(tasks)
        runs = {(r["model"], r["seed"]): r for r in results if r["dataset"] == dataset}
        singles = {t.name: [runs[(f"single-task {t.name}", s)] for s in range(seeds)]
                   for t in tasks}
        stl = [{t.name: singles[t.name][s]["metrics"][t.name] for t in tasks} for s in range(seeds)]
        rows = {}
        for name in [*methods, TUNED]:
            source = "equal" if name in skipped[dataset] else name
            mine = [runs[(source, s)] for s in range(seeds)]
            deltas = [metrics_lib.delta_m(r["metrics"], stl[s], higher) for s, r in enumerate(mine)]
            mean, std = _mean_std(deltas)
            rows[name] = {
                "delta_m_mean": round(mean, 3),
                "delta_m_std": round(std, 3),
                "delta_m_per_seed": [round(d, 3) for d in deltas],
                "validation_delta_m_per_seed": [
                    round(min(r["curve"]["values"]), 3) for r in mine],
                "epochs_run_per_seed": [r["curve"]["epochs_run"] for r in mine],
                "best_epoch_per_seed": [r["curve"]["best_epoch"] for r in mine],
                "diverged_per_seed": [r.get("diverged") for r in mine],
                "metrics_mean": _mean_metrics([r["metrics"] for r in mine]),
                "fit_wall_s_mean": round(float(np.mean([r["fit_wall_s"] for r in mine])), 1),
                "level": mine[0]["level"],
                "mode": mine[0]["mode"],
                "same_as": "equal" if name in skipped[dataset] else None,
            }
        for name, row in rows.items():
            for reference in ("equal", TUNED):
                row[f"vs_{reference}"] = None if name == reference else _rounded(
                    protocol.paired_comparison(row["delta_m_per_seed"],
                                               rows[reference]["delta_m_per_seed"]))
        search = runs[("search", 0)]["tuned"]
        best = min((n for n in rows if rows[n]["same_as"] is None),
                   key=lambda n: rows[n]["delta_m_mean"])
        summary[dataset] = {
            "tasks": [f"{t.name} ({type(t).__name__})" for t in tasks],
            "single_task": {
                t.name: {
                    "monitor": singles[t.name][0]["curve"]["monitor"],
                    "curves": [r["curve"] for r in singles[t.name]],
                    "metrics_mean": _mean_metrics([r["metrics"] for r in singles[t.name]]),
                    "validation_metrics_mean": _mean_metrics(
                        [r["validation_metrics"] for r in singles[t.name]]),
                    "fit_wall_s_mean": round(
                        float(np.mean([r["fit_wall_s"] for r in singles[t.name]])), 1),
                }
                for t in tasks
            },
            "tuned_static": {
                "weights": {k: round(v, 4) for k, v in search["weights"].items()},
                "trials": search["trials"], "search_s": search["seconds"],
                "search_cpu_s": search["cpu_seconds"],
                "validation_delta_m": round(search["best_score"], 3),
            },
            "methods": dict(sorted(rows.items(), key=lambda kv: kv[1]["delta_m_mean"])),
            "best": best,
            "best_delta_m": rows[best]["delta_m_mean"],
            "goal": GOAL,
            "meets_goal": bool(rows[best]["delta_m_mean"] <= GOAL),
        }
    return summary


# --- the report ----------------------------------------------------------------
def _curve_table(single_task, max_epochs):
    epochs = sorted({e for e in CURVE_EPOCHS if e <= max_epochs} | {max_epochs})
    headers = ["single-task model", "validation metric"]
    headers += [f"epoch {e}" for e in epochs] + ["best epoch per seed", "epochs run per seed"]
    rows = []
    for task, found in single_task.items():
        curves = found["curves"]
        cells = []
        for e in epochs:
            values = [c["values"][e - 1] for c in curves if c["epochs_run"] >= e]
            cell = f"{np.mean(values):.4f}" if values else "-"
            if values and len(values) < len(curves):
                cell += f" ({len(values)})"
            cells.append(cell)
        rows.append([task, found["monitor"][len("val_"):], *cells,
                     ", ".join(str(c["best_epoch"]) for c in curves),
                     ", ".join(str(c["epochs_run"]) for c in curves)])
    return _table(headers, rows)


def _comparison_cells(comparison):
    if comparison is None:
        return ["-", "-"]
    if comparison["low"] is None:
        return [f"{comparison['mean']:+.2f}", comparison["verdict"]]
    return [f"{comparison['mean']:+.2f} [{comparison['low']:+.2f}, {comparison['high']:+.2f}]",
            comparison["verdict"]]


def markdown(summary, settings, timing):
    lines = [
        "# keras_mtl quality benchmark: Δm against single-task models and tuned static weights",
        "",
        f"{settings['seeds']} seed(s); {settings['train']} training / {settings['validation']} "
        f"validation / {settings['test']} test examples at {settings['image_size']} px; trunk "
        f"`small_cnn` {settings['filters']} (digit pairs: then a shared dense layer of "
        f"{settings['digit_pairs_features']} units), heads {settings['head_units']}, Adam 1e-3 "
        f"with ReduceLROnPlateau(0.5, 2), batch 32; up to {settings['max_epochs']} epochs with "
        f"early stopping (patience {settings['patience']}, best weights restored): single-task "
        "models on their validation metric, multi-task models on validation Δm against the "
        "single-task models of their seed. Δm in percent on the test split (negative: the "
        "multi-task model beats the single-task models of the same seed), mean ± std over "
        "seeds. Gradient methods in their default mode. Goal: the best method's Δm <= "
        f"{GOAL:g} %.",
        "",
        "Paired comparison: per seed, Δm(method) - Δm(reference) (same seed: same baselines, "
        "initial trunk and batches); mean and 95 % Student's t interval over the seeds "
        f"(t with {max(settings['seeds'] - 1, 1)} degree(s) of freedom). better: the interval "
        "is below 0; worse: above 0; within seed noise: it contains 0.",
        "",
    ]
    for dataset, found in summary.items():
        tuned = found["tuned_static"]
        tasks = list(found["single_task"])
        metric_keys = [(t, m) for t in tasks for m in found["single_task"][t]["metrics_mean"][t]]
        headers = ["method", "level (mode)", "Δm % (mean ± std)", "Δm per seed",
                   "Δm - equal [95 % CI]", "vs equal", f"Δm - {TUNED} [95 % CI]",
                   f"vs {TUNED}", "epochs run per seed", "fit s"]
        rows, metric_rows = [], []
        for name, row in found["methods"].items():
            level = row["level"] + (f" ({row['mode']})" if row["mode"] else "")
            if row["same_as"]:
                level += ", = equal"
            if any(row["diverged_per_seed"]):
                level += ", diverged: " + "; ".join(
                    f"seed {s} {d}" for s, d in enumerate(row["diverged_per_seed"]) if d)
            rows.append(
                [name, level, f"{row['delta_m_mean']:+.2f} ± {row['delta_m_std']:.2f}",
                 ", ".join(f"{d:+.1f}" for d in row["delta_m_per_seed"]),
                 *_comparison_cells(row["vs_equal"]), *_comparison_cells(row[f"vs_{TUNED}"]),
                 ", ".join(str(e) for e in row["epochs_run_per_seed"]),
                 f"{row['fit_wall_s_mean']:.0f}"])
            metric_rows.append([name] + [f"{row['metrics_mean'][t][m]:.4f}"
                                         for t, m in metric_keys])
        metric_rows.append(["single-task models"] + [
            f"{found['single_task'][t]['metrics_mean'][t][m]:.4f}" for t, m in metric_keys])
        verdict = "met" if found["meets_goal"] else "NOT met"
        lines += [
            f"## {dataset}: {', '.join(found['tasks'])}",
            "",
            "Single-task baselines: validation metric per epoch (mean over the seeds that "
            "ran that epoch; their number in parentheses when some had stopped):",
            "",
            _curve_table(found["single_task"], settings["max_epochs"]),
            "",
            f"Tuned static weights ({TUNED}): {tuned['trials']} random-search trials on "
            f"seed 0, {tuned['search_s']:.0f} s ({tuned['search_cpu_s']:.0f} CPU s); weights "
            + ", ".join(f"{t} {w:.2f}" for t, w in tuned["weights"].items())
            + f"; validation Δm {tuned['validation_delta_m']:+.2f} %.",
            "",
            _table(headers, rows),
            "",
            "Test metrics (mean over seeds):",
            "",
            _table(["model"] + [f"{t} {m}" for t, m in metric_keys], metric_rows),
            "",
            f"Best: `{found['best']}`, Δm {found['best_delta_m']:+.2f} % "
            f"(goal <= {GOAL:g} %: {verdict}).",
            "",
        ]
    skipped = sorted({n for f in summary.values() for n, r in f["methods"].items() if r["same_as"]})
    if skipped:
        lines += [
            f"{', '.join(f'`{n}`' for n in skipped)}: every task weight is 1 here, "
            "so they train exactly as `equal`; its runs are reported for them.",
            "",
        ]
    lines += [
        f"Run time: {timing['wall_min']:.1f} min wall, {timing['cpu_min']:.1f} min "
        f"CPU in all ({settings['workers']} worker process(es) x "
        f"{settings['tensorflow_threads']} TensorFlow thread(s)), on "
        f"{settings['cpu_count']} CPU core(s); load average at the start "
        f"{timing['load_start']}, at the end {timing['load_end']}."
        + (f" {timing['reused']} of the {timing['jobs']} models and searches were "
           "reused from an earlier run (`--reuse`), not trained again: the times are this "
           "invocation's; each model's own are in its row." if timing.get("reused") else ""),
        "",
        f"Written by `{settings['command']}`.",
        "",
    ]
    return "\n".join(lines)


def plot_curves(summary, results, output):
    """Seed 0's single-task losses (dashed) beside Equal's per-task losses,
    one PNG per dataset; nothing without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    from keras_mtl import plots

    def per_epoch(curve):  # the curve's lists: losses per epoch
        return {k: v for k, v in curve.items() if isinstance(v, list)}

    paths = []
    for dataset, found in summary.items():
        runs = {r["model"]: r for r in results if r["dataset"] == dataset and r["seed"] == 0}
        baselines = {t: per_epoch(runs[f"single-task {t}"]["curve"]) for t in found["single_task"]}
        path = os.path.join(output, f"quality_{dataset}_curves.png")
        paths.append(plots.plot_learning_curves(per_epoch(runs["equal"]["curve"]), path,
                                                tasks=list(baselines), baselines=baselines))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK}, methods {list(QUICK_METHODS)}")
    parser.add_argument("--seeds", type=int, help=f"default {DEFAULTS['seeds']}")
    parser.add_argument("--max-epochs", type=int, help=f"default {DEFAULTS['max_epochs']}")
    parser.add_argument("--patience", type=int,
                        help=f"early-stopping patience in epochs (default {DEFAULTS['patience']})")
    parser.add_argument("--trials", type=int,
                        help=f"random-search trials of tuned static weights (default "
                             f"{DEFAULTS['trials']})")
    parser.add_argument("--train", type=int,
                        help=f"training examples (default {DEFAULTS['train']})")
    parser.add_argument("--validation", type=int,
                        help=f"validation examples (default {DEFAULTS['validation']})")
    parser.add_argument("--test", type=int, help=f"test examples (default {DEFAULTS['test']})")
    parser.add_argument("--image-size", type=int, help=f"default {DEFAULTS['image_size']}")
    parser.add_argument("--filters", type=int, nargs=3, default=list(FILTERS),
                        help=f"trunk channels per stage (default {' '.join(map(str, FILTERS))})")
    parser.add_argument("--features", type=int, default=FEATURES,
                        help="digit pairs: width of the shared fully connected layer "
                             f"(default {FEATURES}; 0: none, the flattened feature map)")
    parser.add_argument("--head-units", type=int, nargs="+", default=list(HEAD_UNITS),
                        help="hidden units of each head (default "
                             f"{' '.join(map(str, HEAD_UNITS))})")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="registry names (default: every distinct method)")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel processes (default 2; 0: train in this process)")
    parser.add_argument("--threads", type=int,
                        help="TensorFlow threads per worker process (default 1; 0: "
                             "TensorFlow's default, which --workers 0 keeps unless given)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--reuse", nargs="+", default=[], metavar="FILE",
                        help="finished models of earlier runs, not trained again where "
                             "dataset, seed, model and sizes match: a report (quality.json) "
                             "or the cache an interrupted run leaves (<output>/"
                             "quality.cache.jsonl)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        if getattr(args, key) < 1:
            parser.error(f"argument --{key.replace('_', '-')}: Expected an integer >= 1. "
                         f"Received: {getattr(args, key)}")
    if len(set(args.head_units)) > 1:
        parser.error("argument --head-units: Expected one width (the tuned static search "
                     f"builds heads of equal layers). Received: {args.head_units}")
    if args.threads is None:
        args.threads = 0 if args.workers == 0 else 1
    if args.workers < 0:
        parser.error(f"argument --workers: Expected an integer >= 0. Received: {args.workers}")

    all_methods = list(method_classes())
    if args.methods is None:
        methods = list(QUICK_METHODS) if args.quick else all_methods
    else:
        from keras_mtl import weighting as W

        unknown = [m for m in args.methods if W.get_class(m) is None]
        if unknown:
            parser.error(f"argument --methods: unknown {unknown}; expected names among "
                         f"{all_methods}")
        chosen = {W.get_class(m) for m in args.methods}
        methods = [n for n, c in method_classes().items() if c in chosen]
    if "equal" not in methods:
        methods.insert(0, "equal")  # the reference of the paired comparison
    skipped = {}
    for dataset in args.datasets:
        y = _arrays({"dataset": dataset, **vars(args)})["train"][1]
        skipped[dataset] = {n for n in methods if same_as_equal(n, dataset_tasks(dataset), y)}

    jobs = make_jobs(args, methods, skipped)
    missing = [path for path in args.reuse if not os.path.isfile(path)]
    if missing:
        parser.error(f"argument --reuse: Expected existing files. Received: {missing}")
    finished = load_finished(args.reuse)
    finished = {job_key(j): finished[job_key(j)] for j in jobs if job_key(j) in finished}
    # The cache starts with what is reused, so a second interruption loses
    # nothing; it is removed once the report is written.
    os.makedirs(args.output, exist_ok=True)
    cache = os.path.join(args.output, "quality.cache.jsonl")
    with open(cache, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in finished.values())
    print(f"{len(jobs)} models and searches ({len(finished)} reused, {args.workers} "
          f"worker(s)); methods: {', '.join(methods)}, {TUNED}", flush=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    wall, cpu_self = time.perf_counter(), time.process_time()
    results = run_jobs(jobs, args.workers, args.threads, _report_progress, finished, cache)
    wall = time.perf_counter() - wall
    children = os.times()
    cpu = time.process_time() - cpu_self + children.children_user + children.children_system
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    import keras

    import keras_mtl

    settings = {
        **{k: getattr(args, k) for k in ("seeds", *SIZES)},
        "datasets": args.datasets,
        "methods": methods,
        "digit_pairs_features": args.features,
        "optimizer": "Adam(1e-3), ReduceLROnPlateau(factor=0.5, patience=2, min_lr=1e-5)",
        "batch_size": BATCH_SIZE,
        "workers": args.workers,
        "tensorflow_threads": args.threads or "default",
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "command": " ".join(
            ["python benchmarks/bench_quality.py", *(sys.argv[1:] if argv is None else argv)]
        ),
    }
    timing = {
        "wall_min": round(wall / 60, 2),
        "cpu_min": round(cpu / 60, 2),
        "load_start": None if load_start is None else round(load_start, 1),
        "load_end": None if load_end is None else round(load_end, 1),
        "reused": len(finished),
        "jobs": len(jobs),
    }
    summary = summarise(results, args.seeds, args.datasets, methods, skipped)
    report = {
        "benchmark": "quality",
        "settings": settings,
        "environment": {
            "keras_mtl": keras_mtl.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "timing": timing,
        "summary": summary,
        "runs": sorted(results, key=lambda r: (r["dataset"], r["model"], r["seed"])),
    }
    text = markdown(summary, settings, timing)
    write_results(args.output, "quality", report, text)
    os.remove(cache)
    for path in plot_curves(summary, results, args.output):
        print(f"Learning curves: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality: Δm of every weighting method against single-task baselines.

For each dataset and seed, one multi-task model per weighting method of
`keras_mtl.weighting` (each distinct class of the registry, gradient methods
in their default mode) and one single-task model per task are trained with
the same trunk, heads, optimizer, data and number of epochs, and evaluated
on the test split. Δm (`keras_mtl.metrics.delta_m`: the mean over tasks of
the signed relative change of their metrics, in percent; negative: the
multi-task model is better) compares each method with the single-task models
of the same seed; the table gives its mean ± standard deviation over seeds
(sample standard deviation).

Datasets (embedded, offline):
- shapes: 32 px scenes, four tasks of four kinds: `shape` (3 classes:
  accuracy), `size` (regression: MAE, RMSE), `segmentation` (4 classes:
  pixel accuracy, mIoU), `depth` (dense regression: MAE, RMSE);
- digit_pairs: 32 px MultiMNIST-style pairs of real handwritten digits,
  `left` and `right` (10 classes each: accuracy).

Model: the trunk is `keras_mtl.demo.demo_trunk` (three stride-2 stages of two
3x3 convolutions with batch norm; 32, 64 and 96 channels); for digit pairs it
is followed, as in the MultiMNIST literature (Sener & Koltun 2018), by a
shared fully connected layer of 256 units (vector heads average-pool a
feature map, which loses which digit is left and which right). Heads have
one hidden layer of 32 units (dense heads: an upsampling decoder). Adam
1e-3, batch 32, 1024 training examples, 10 epochs; every model of a seed
starts from the same initial trunk and sees the same batches in the same
order.

Budget: the default run (2 datasets x 3 seeds x (16 methods + 6 single-task
models) = 114 models) is sized for <= 30 minutes on an idle 2-core CPU: two
worker processes, each with one TensorFlow thread (small models use one core
better than two threads do); about 47 CPU-minutes in all, of which tracing
each model's train function is a good part. On a machine shared with other
work, wall time grows with the load (the results give both times and the
load average).

`Static` and `InverseSize` give every task weight 1 here (every task has
every label; `Static` without weights): they would train exactly as `Equal`
does, so they are reported as such, not run again; the script checks that
their weights are all 1 and runs them otherwise.

Run: `python benchmarks/bench_quality.py` (writes
`benchmarks/results/quality.json` and `quality.md`); `--quick` is a smoke
run of a few seconds per model (fewer methods, data and steps, one seed).
Exits 0 whether or not the goal is met: it measures.
"""

import argparse
import concurrent.futures
import functools
import inspect
import multiprocessing
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_overhead import _table, write_results  # noqa: E402

#: Δm the best method should reach on every dataset (percent).
GOAL = -2.0
FILTERS = (32, 64, 96)
HEAD_UNITS = (32,)
FEATURES = 256
DATASETS = ("shapes", "digit_pairs")
#: Sizes of the default run and of `--quick`.
DEFAULTS = {"seeds": 3, "epochs": 10, "train": 1024, "test": 512, "image_size": 32}
QUICK = {"seeds": 1, "epochs": 1, "train": 64, "test": 32, "image_size": 32}
QUICK_METHODS = ("equal", "pcgrad")


# --- what is trained ------------------------------------------------------------
def dataset_tasks(dataset):
    from keras_mtl import demo
    from keras_mtl import tasks as T

    if dataset == "shapes":
        return demo.demo_tasks()
    return [T.MulticlassClassification("left", 10), T.MulticlassClassification("right", 10)]


@functools.lru_cache(maxsize=4)
def dataset_arrays(dataset, train, test, image_size):
    """`(x_train, y_train, x_test, y_test)`, the same in every process."""
    from keras_mtl.datasets import digit_pairs, shapes

    if dataset == "shapes":
        names = [t.name for t in dataset_tasks(dataset)]
        x, y = shapes.generate("train", train, image_size, tasks=names, seed=0)
        xt, yt = shapes.generate("test", test, image_size, tasks=names, seed=0)
    else:
        x, y = digit_pairs.generate("train", train, image_size, channels=1, seed=0)
        xt, yt = digit_pairs.generate("test", test, image_size, channels=1, seed=0)
    return x, y, xt, yt


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


def run_job(job):
    """Trains and evaluates one model; returns its metrics and timings."""
    import keras

    import keras_mtl
    from keras_mtl import metrics as metrics_lib

    dataset, model_name, seed = job["dataset"], job["model"], job["seed"]
    x, y, xt, yt = dataset_arrays(dataset, job["train"], job["test"], job["image_size"])
    tasks = dataset_tasks(dataset)
    if model_name.startswith("single-task "):
        tasks = [t for t in tasks if t.name == model_name[len("single-task "):]]
        weighting = None
    else:
        weighting = make_weighting(model_name, seed, tasks, y)
    names = [t.name for t in tasks]
    image_shape = x.shape[1:]

    keras.utils.set_random_seed(seed)
    model = keras_mtl.build_model(
        trunk(dataset, image_shape, job["filters"], job["features"]), tasks,
        input_shape=image_shape, head_units=tuple(job["head_units"]),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=weighting)
    # The same batches in the same order for every model of a seed.
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(job["epochs"]):
        index = np.random.default_rng([seed, epoch]).permutation(len(x))
        model.fit(
            x[index], {n: y[n][index] for n in names}, batch_size=32,
            epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0,
        )
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    logs = model.evaluate(
        xt, {n: yt[n] for n in names}, batch_size=128, return_dict=True, verbose=0
    )
    return {
        **job,
        "metrics": metrics_lib.task_metrics(logs, tasks),
        "fit_wall_s": round(fit_wall, 2),
        "fit_cpu_s": round(fit_cpu, 2),
        "level": getattr(weighting, "level", None),
        "mode": getattr(weighting, "mode", None),
    }


# --- the run -------------------------------------------------------------------
def _jobs(args, methods, skipped):
    jobs = []
    base = {k: getattr(args, k) for k in
            ("epochs", "train", "test", "image_size", "filters", "head_units", "features")}
    for dataset in args.datasets:
        tasks = dataset_tasks(dataset)
        for seed in range(args.seeds):
            for task in tasks:
                jobs.append({**base, "dataset": dataset, "seed": seed,
                             "model": f"single-task {task.name}"})
            for name in methods:
                if name not in skipped[dataset]:
                    jobs.append({**base, "dataset": dataset, "seed": seed, "model": name})
    return jobs


def _expected_cost(job):
    """Rough relative cost, to start the longest jobs first."""
    tasks = len(dataset_tasks(job["dataset"]))
    if job["model"].startswith("single-task "):
        return 1.0
    cls = method_classes()[job["model"]]
    params_mode = getattr(cls, "level", "loss") == "gradient" and cls().mode == "params"
    return tasks * (2.0 if params_mode else 1.0)


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def summarise(results, args, methods, skipped):
    """Δm per method and seed, then mean ± std, per dataset."""
    from keras_mtl import metrics as metrics_lib

    summary = {}
    for dataset in args.datasets:
        tasks = dataset_tasks(dataset)
        higher = metrics_lib.higher_is_better(tasks)
        runs = [r for r in results if r["dataset"] == dataset]
        stl = {
            seed: {
                t.name: next(
                    r["metrics"][t.name] for r in runs
                    if r["seed"] == seed and r["model"] == f"single-task {t.name}"
                )
                for t in tasks
            }
            for seed in range(args.seeds)
        }
        rows = {}
        for name in methods:
            source = "equal" if name in skipped[dataset] else name
            mine = sorted(
                (r for r in runs if r["model"] == source), key=lambda r: r["seed"]
            )
            deltas = [metrics_lib.delta_m(r["metrics"], stl[r["seed"]], higher) for r in mine]
            mean, std = _mean_std(deltas)
            rows[name] = {
                "delta_m_mean": round(mean, 3),
                "delta_m_std": round(std, 3),
                "delta_m_per_seed": [round(d, 3) for d in deltas],
                "metrics_mean": _mean_metrics([r["metrics"] for r in mine]),
                "fit_wall_s_mean": round(float(np.mean([r["fit_wall_s"] for r in mine])), 1),
                "level": mine[0]["level"],
                "mode": mine[0]["mode"],
                "same_as": "equal" if name in skipped[dataset] else None,
            }
        stl_runs = [r for r in runs if r["model"].startswith("single-task ")]
        best = min(
            (n for n in rows if rows[n]["same_as"] is None),
            key=lambda n: rows[n]["delta_m_mean"],
        )
        summary[dataset] = {
            "tasks": [f"{t.name} ({type(t).__name__})" for t in tasks],
            "single_task": {
                "metrics_mean": _mean_metrics([stl[s] for s in range(args.seeds)]),
                "fit_wall_s_mean": round(float(np.mean([r["fit_wall_s"] for r in stl_runs])), 1),
            },
            "methods": dict(sorted(rows.items(), key=lambda kv: kv[1]["delta_m_mean"])),
            "best": best,
            "best_delta_m": rows[best]["delta_m_mean"],
            "goal": GOAL,
            "meets_goal": bool(rows[best]["delta_m_mean"] <= GOAL),
        }
    return summary


def _mean_metrics(metric_dicts):
    return {
        task: {
            metric: round(float(np.mean([m[task][metric] for m in metric_dicts])), 4)
            for metric in metric_dicts[0][task]
        }
        for task in metric_dicts[0]
    }


def markdown(summary, settings, timing):
    lines = [
        "# keras_mtl quality benchmark: Δm against single-task baselines",
        "",
        f"{settings['seeds']} seed(s) x {settings['epochs']} epochs, "
        f"{settings['train']} training / {settings['test']} test examples at "
        f"{settings['image_size']} px; trunk `small_cnn` {settings['filters']} "
        f"(digit pairs: then a shared dense layer of {settings['digit_pairs_features']} "
        f"units), heads {settings['head_units']}, Adam 1e-3, batch 32. Δm in percent, "
        "test split, mean ± std over seeds (negative: the multi-task model beats "
        "the single-task models of the same seed). Gradient methods in their "
        f"default mode. Goal: the best method's Δm <= {GOAL:g} %.",
        "",
    ]
    for dataset, found in summary.items():
        tasks = list(found["single_task"]["metrics_mean"])
        metric_keys = [
            (t, m) for t in tasks for m in found["single_task"]["metrics_mean"][t]
        ]
        headers = ["method", "level (mode)", "Δm % (mean ± std)", "Δm per seed"]
        headers += [f"{t} {m}" for t, m in metric_keys] + ["fit s"]
        rows = []
        for name, row in found["methods"].items():
            level = row["level"] + (f" ({row['mode']})" if row["mode"] else "")
            if row["same_as"]:
                level += ", = equal"
            rows.append(
                [name, level, f"{row['delta_m_mean']:+.2f} ± {row['delta_m_std']:.2f}",
                 ", ".join(f"{d:+.1f}" for d in row["delta_m_per_seed"])]
                + [f"{row['metrics_mean'][t][m]:.4f}" for t, m in metric_keys]
                + [f"{row['fit_wall_s_mean']:.0f}"]
            )
        single = found["single_task"]
        rows.append(
            ["single-task models", "-", "0 (reference)", "-"]
            + [f"{single['metrics_mean'][t][m]:.4f}" for t, m in metric_keys]
            + [f"{single['fit_wall_s_mean']:.0f} each"]
        )
        verdict = "met" if found["meets_goal"] else "NOT met"
        lines += [
            f"## {dataset}: {', '.join(found['tasks'])}",
            "",
            _table(headers, rows),
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
        f"{timing['load_start']}, at the end {timing['load_end']}.",
        "",
        f"Written by `{settings['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK}, methods {list(QUICK_METHODS)}")
    parser.add_argument("--seeds", type=int, help=f"default {DEFAULTS['seeds']}")
    parser.add_argument("--epochs", type=int, help=f"default {DEFAULTS['epochs']}")
    parser.add_argument("--train", type=int, help=f"training examples (default {DEFAULTS['train']})")
    parser.add_argument("--test", type=int, help=f"test examples (default {DEFAULTS['test']})")
    parser.add_argument("--image-size", type=int, help=f"default {DEFAULTS['image_size']}")
    parser.add_argument("--filters", type=int, nargs=3, default=list(FILTERS),
                        help=f"trunk channels per stage (default {' '.join(map(str, FILTERS))})")
    parser.add_argument("--features", type=int, default=FEATURES,
                        help="digit pairs: width of the shared fully connected layer "
                             f"(default {FEATURES}; 0: none, the flattened feature map)")
    parser.add_argument("--head-units", type=int, nargs="+", default=list(HEAD_UNITS),
                        help=f"hidden units of each head (default {' '.join(map(str, HEAD_UNITS))})")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="registry names (default: every distinct method)")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel processes (default 2; 0: train in this process)")
    parser.add_argument("--threads", type=int,
                        help="TensorFlow threads per worker process (default 1; 0: "
                             "TensorFlow's default, which --workers 0 keeps unless given)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        if getattr(args, key) < 1:
            parser.error(f"argument --{key.replace('_', '-')}: Expected an integer >= 1. "
                         f"Received: {getattr(args, key)}")
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
            parser.error(f"argument --methods: unknown {unknown}; expected names among {all_methods}")
        chosen = {W.get_class(m) for m in args.methods}
        methods = [n for n, c in method_classes().items() if c in chosen]
    if "equal" not in methods:
        methods.insert(0, "equal")
    skipped = {}
    for dataset in args.datasets:
        y = dataset_arrays(dataset, args.train, args.test, args.image_size)[1]
        skipped[dataset] = {
            n for n in methods if same_as_equal(n, dataset_tasks(dataset), y)
        }

    jobs = sorted(_jobs(args, methods, skipped), key=_expected_cost, reverse=True)
    print(f"{len(jobs)} models to train ({args.workers} worker(s)); methods: "
          f"{', '.join(methods)}", flush=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    wall, cpu_self = time.perf_counter(), time.process_time()
    results = []

    def report_progress(result):
        results.append(result)
        print(f"[{len(results)}/{len(jobs)}] {result['dataset']} {result['model']} "
              f"seed {result['seed']}: fit {result['fit_wall_s']:.0f} s", flush=True)

    if args.workers == 0:  # in this process (tests, debugging)
        if args.threads:
            _init_worker(args.threads)
        for job in jobs:
            report_progress(run_job(job))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            args.workers, mp_context=context, initializer=_init_worker,
            initargs=(args.threads,),
        ) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            for future in concurrent.futures.as_completed(futures):
                report_progress(future.result())
    wall = time.perf_counter() - wall
    children = os.times()
    cpu = time.process_time() - cpu_self + children.children_user + children.children_system
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    import keras

    import keras_mtl

    settings = {
        **{k: getattr(args, k) for k in ("seeds", "epochs", "train", "test", "image_size")},
        "datasets": args.datasets,
        "methods": methods,
        "filters": list(args.filters),
        "head_units": list(args.head_units),
        "digit_pairs_features": args.features,
        "optimizer": "Adam(1e-3)",
        "batch_size": 32,
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
    }
    summary = summarise(results, args, methods, skipped)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

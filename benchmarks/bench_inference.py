"""Inference: a HydraNet with T heads against T single-task models.

What sharing the trunk buys at serving time. For T = 3 and T = 10 vector
tasks, one `keras_mtl.build_model` HydraNet (one backbone, T heads) and T
single-task models (the same backbone architecture, one head each: what you
would serve without multi-task learning) predict the same batch. The
HydraNet answers all T tasks in one forward pass, the single-task models
need T passes, so the HydraNet's throughput (images/s, all tasks answered)
over the single-task models' should approach T. Goal: >= 0.9 * T.

Method (as in `bench_overhead.py`, whose helpers it uses): every model is
built and its first `predict_on_batch` (tracing) and a few warm-up calls
are excluded; then, in each round, the HydraNet and each single-task model
predict the batch once, in an order rotated each round. The ratio is the
median over rounds of (sum of the single-task models' times) / (HydraNet
time), with its quartiles. By default TensorFlow runs one thread and the
CPU time of this process is the clock (`--threads`, `--clock`; see
`bench_overhead.py` for why); wall times are reported too.

Run: `python benchmarks/bench_inference.py` (writes
`benchmarks/results/inference.json` and `.md`; a few minutes on a 2-core
CPU, most of it building and tracing 15 models). Exits 0 whether or not the
goal is met: it measures.
"""

import argparse
import gc
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import tasks as T  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_overhead import HEAD_UNITS, _quartiles, _table, write_results  # noqa: E402

GOAL_FRACTION = 0.9


def inference_tasks(num_tasks):
    """`num_tasks` vector tasks, alternating the kinds a HydraNet mixes."""
    kinds = [
        lambda i: T.MulticlassClassification(f"class_{i}", num_classes=5),
        lambda i: T.Regression(f"value_{i}"),
        lambda i: T.BinaryClassification(f"flag_{i}"),
    ]
    return [kinds[i % len(kinds)](i) for i in range(num_tasks)]


def _predict_times(model, x, calls):
    """`(wall, cpu)` seconds per `predict_on_batch` over `calls` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        model.predict_on_batch(x)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def measure(num_tasks, args, x):
    """Times the HydraNet and its single-task models; returns a result dict."""
    tasks = inference_tasks(num_tasks)
    image_shape = x.shape[1:]

    def build(model_tasks):
        return keras_mtl.build_model(
            args.backbone, model_tasks, input_shape=image_shape, weights=None,
            head_units=HEAD_UNITS,
        )

    keras.utils.set_random_seed(0)
    models = {"HydraNet": build(tasks)}
    for task in tasks:
        models[f"single-task {task.name}"] = build([task])
    first_call = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.predict_on_batch(x)
        first_call[name] = time.perf_counter() - start
        for _ in range(args.warmup):
            model.predict_on_batch(x)
    print(f"T={num_tasks}: built and traced {len(models)} models "
          f"({sum(first_call.values()):.0f} s of first calls)", flush=True)

    names = list(models)
    clocks = ("cpu", "wall")
    times = {clock: {name: [] for name in names} for clock in clocks}
    gc.collect()
    gc.disable()  # a collection inside one model's call would bias it
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = _predict_times(models[name], x, args.calls)
                times["wall"][name].append(wall)
                times["cpu"][name].append(cpu)
    finally:
        gc.enable()

    singles = names[1:]
    result = {
        "tasks": [f"{t.name} ({type(t).__name__})" for t in tasks],
        "parameters": {
            "HydraNet": models["HydraNet"].count_params(),
            "single-task models together": sum(models[n].count_params() for n in singles),
        },
        "first_call_s": {n: round(v, 2) for n, v in first_call.items()},
        "goal": round(GOAL_FRACTION * num_tasks, 2),
    }
    for clock in clocks:
        hydra = np.asarray(times[clock]["HydraNet"])
        single_sum = np.sum([times[clock][n] for n in singles], axis=0)
        q1, ratio, q3 = _quartiles(single_sum / hydra)
        result[clock] = {
            "ratio": round(ratio, 3),
            "ratio_q1_q3": [round(q1, 3), round(q3, 3)],
            "hydranet_ms": round(1000 * float(np.median(hydra)), 2),
            "single_task_models_ms": round(1000 * float(np.median(single_sum)), 2),
            "single_task_model_ms_each": round(
                1000 * float(np.median([np.median(times[clock][n]) for n in singles])), 2
            ),
            "hydranet_images_per_s": round(len(x) / float(np.median(hydra)), 1),
            "single_task_images_per_s": round(len(x) / float(np.median(single_sum)), 1),
        }
    result["meets_goal"] = bool(result[args.clock]["ratio"] >= result["goal"])
    del models
    keras.backend.clear_session()
    return result


def _command(argv):
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python benchmarks/bench_inference.py", *args])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="MobileNetV3Small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 10], metavar="T",
                        help="numbers of tasks to compare (default: 3 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model")
    parser.add_argument("--calls", type=int, default=1, help="calls per model and round")
    parser.add_argument("--repeats", type=int, default=30, help="rounds")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="clock the goal is checked on (both are reported)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default)",
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"argument --warmup: Expected an integer >= 0. Received: {args.warmup}")
    for key in ("image_size", "batch_size", "calls", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"argument --{key.replace('_', '-')}: Expected an integer >= 1. "
                         f"Received: {getattr(args, key)}")
    if any(t < 1 for t in args.tasks):
        parser.error(f"argument --tasks: Expected integers >= 1. Received: {args.tasks}")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    x = np.random.default_rng(0).uniform(
        0, 255, (args.batch_size, args.image_size, args.image_size, 3)
    ).astype("float32")
    results = {str(t): measure(t, args, x) for t in args.tasks}

    settings = {
        "backbone": args.backbone,
        "weights": None,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "head_units": list(HEAD_UNITS),
        "call": "predict_on_batch",
        "warmup_calls": args.warmup,
        "calls_per_model_and_round": args.calls,
        "rounds": args.repeats,
        "goal_clock": args.clock,
        "tensorflow_threads": args.threads or "default",
    }
    report = {
        "benchmark": "inference",
        "settings": settings,
        "environment": {
            "keras_mtl": keras_mtl.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "results": results,
    }

    rows = []
    for t, r in results.items():
        c, w = r["cpu"], r["wall"]
        rows.append([
            t, f"{c['ratio']:.2f}", f"{c['ratio_q1_q3'][0]:.2f} - {c['ratio_q1_q3'][1]:.2f}",
            f"{w['ratio']:.2f}", f">= {r['goal']:g} ({args.clock})",
            "yes" if r["meets_goal"] else "NO",
            f"{c['hydranet_ms']:.1f}", f"{c['single_task_model_ms_each']:.1f}",
            f"{c['hydranet_images_per_s']:.0f}", f"{c['single_task_images_per_s']:.0f}",
            f"{r['parameters']['HydraNet']:,}", f"{r['parameters']['single-task models together']:,}",
        ])
    text = "\n".join([
        "# keras_mtl inference benchmark: HydraNet vs single-task models",
        "",
        f"{args.backbone} (random weights) at {args.image_size} px, batch "
        f"{args.batch_size}, vector heads of {HEAD_UNITS[0]} hidden units "
        "(classification, regression, binary, in turn); `predict_on_batch`; "
        f"{args.repeats} rounds of {args.calls} call(s) per model, models "
        f"interleaved, after {args.warmup} warm-up calls; keras {keras.__version__} "
        f"({keras.backend.backend()}), {os.cpu_count()} CPU core(s), TensorFlow "
        f"threads: {args.threads or 'default'}. Ratio: median over rounds of "
        "(sum of the T single-task models' times) / (HydraNet's time), i.e. the "
        "HydraNet's throughput (images/s with every task answered) over the "
        "single-task models'; CPU: this process's CPU time, wall: wall time.",
        "",
        _table(["T", "ratio (CPU)", "quartiles (CPU)", "ratio (wall)", "goal", "met",
                "HydraNet CPU ms/batch", "one single-task model CPU ms/batch",
                "HydraNet images/s (CPU)", "T single-task models images/s (CPU)",
                "HydraNet parameters", "single-task parameters"], rows),
        "",
        f"Written by `{_command(argv)}`.",
        "",
    ])
    write_results(args.output, "inference", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dense shapes: segmentation + depth + shape class, weighting methods vs single-task.

The researcher's story (DESIGN.md): one HydraNet per loss-weighting method,
all on the same data, trunk, heads, epochs and initial seed, read against
single-task baselines with Δm (Maninis et al. 2019; negative: the multi-task
model is better). The tasks are the three kinds of the shapes scenes that pull
a trunk in different directions: `shape` (class of the largest shape, a
vector head), `segmentation` (4 classes per pixel) and `depth` (per-pixel
regression), decoded from the same feature map.

Methods (`--methods`, comma-separated):

- `equal`: the plain sum of the losses;
- `uncertainty`: Kendall, Gal & Cipolla 2018 (classification form for
  `shape` and `segmentation`, regression form for `depth`);
- `dwa`: Dynamic Weight Average, Liu, Johns & Davison 2019;
- `pcgrad`: gradient surgery, Yu et al. 2020, on the trunk's variables;
- `mgda`: MGDA-UB, Sener & Koltun 2018: MGDA at the shared
  representation (`MGDA(mode="representation")`).

The trunk and the quick/full sizes are those of `keras-mtl demo`
(`keras_mtl.demo`): a 6-convolution CNN on 32 px scenes.

    python examples/shapes_dense.py              # 8 models, 8 to 13 min on 2 CPU cores
    python examples/shapes_dense.py --quick      # smoke run: 1 epoch on 64 scenes
    python examples/shapes_dense.py --methods equal,mgda --epochs 10

No download: the scenes are generated (`keras_mtl.datasets.shapes`).
"""

import argparse
import logging
import sys
import time

import keras

import keras_mtl
from keras_mtl import cli
from keras_mtl import demo
from keras_mtl._validation import non_negative_int_argument
from keras_mtl._validation import positive_int_argument
from keras_mtl import metrics as metrics_lib
from keras_mtl import weighting
from keras_mtl.datasets import shapes

TASK_NAMES = ("shape", "segmentation", "depth")

#: name -> factory(task names, seed): each run gets a fresh method.
METHODS = {
    "equal": lambda names, seed: weighting.Equal(),
    "uncertainty": lambda names, seed: weighting.Uncertainty(task_kinds={
        n: "regression" if n == "depth" else "classification" for n in names
    }),
    "dwa": lambda names, seed: weighting.DynamicWeightAverage(),
    "pcgrad": lambda names, seed: weighting.PCGrad(seed=seed),
    # MGDA-UB: the registry's "mgda" in representation mode.
    "mgda": lambda names, seed: weighting.MGDA(mode="representation"),
}


def make_tasks(names=TASK_NAMES):
    """The demo's tasks named in `names` (by default all but `size`)."""
    return [t for t in demo.demo_tasks() if t.name in names]


def _names_argument(choices):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in choices for n in names) or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(
                f"Expected a comma-separated list of distinct names from "
                f"{list(choices)}. Received: {text!r}"
            )
        return names

    return parse


def train_and_evaluate(tasks, method, data, args):
    """Trains one model (`method=None`: plain sum, for single-task models)
    and returns `({task: {metric: value}}, fit seconds)` on the test split."""
    (x_train, y_train), (x_test, y_test) = data
    names = [t.name for t in tasks]
    keras.utils.set_random_seed(args.seed)  # every trunk starts the same
    image_shape = x_train.shape[1:]
    model = keras_mtl.build_model(
        demo.demo_trunk(image_shape), tasks, input_shape=image_shape, head_units=(64,)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        weighting=None if method is None else METHODS[method](names, args.seed),
    )
    tick = time.perf_counter()
    model.fit(
        x_train, {n: y_train[n] for n in names},
        epochs=args.epochs, batch_size=args.batch_size, shuffle=True, verbose=args.verbose,
    )
    seconds = time.perf_counter() - tick
    logs = model.evaluate(
        x_test, {n: y_test[n] for n in names},
        batch_size=args.batch_size, return_dict=True, verbose=0,
    )
    return metrics_lib.task_metrics(logs, tasks), seconds


def _percent(delta):
    return "n/a" if delta is None else f"{delta:+.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults, quick = demo.DEMO_DEFAULTS, demo.QUICK_DEFAULTS
    parser.add_argument("--methods", type=_names_argument(METHODS), default=list(METHODS),
                        help=f"comma-separated, from {list(METHODS)} (default: all)")
    parser.add_argument("--tasks", type=_names_argument(TASK_NAMES), default=list(TASK_NAMES),
                        help=f"comma-separated, at least 2 of {list(TASK_NAMES)} (default: all)")
    parser.add_argument("--epochs", type=positive_int_argument,
                        help=f"default {defaults['epochs']} ({quick['epochs']} with --quick)")
    parser.add_argument("--examples", type=positive_int_argument,
                        help=f"training scenes, default {defaults['examples']} "
                             f"({quick['examples']} with --quick)")
    parser.add_argument("--test-examples", type=positive_int_argument,
                        help=f"test scenes, default {defaults['validation_examples']} "
                             f"({quick['validation_examples']} with --quick)")
    parser.add_argument("--image-size", type=cli.image_size_argument,
                        default=defaults["image_size"])
    parser.add_argument("--batch-size", type=positive_int_argument,
                        default=defaults["batch_size"])
    parser.add_argument("--seed", type=non_negative_int_argument, default=defaults["seed"])
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (tests, CI): 1 epoch on 64 scenes unless given")
    args = parser.parse_args(argv)
    if len(args.tasks) < 2:
        parser.error(f"argument --tasks: Expected at least 2 tasks. Received: {args.tasks}")
    sizes = quick if args.quick else defaults
    args.epochs = args.epochs or sizes["epochs"]
    args.examples = args.examples or sizes["examples"]
    args.test_examples = args.test_examples or sizes["validation_examples"]
    # Each model traces its own tf.functions; TensorFlow calls that retracing.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    started, cpu_started = time.perf_counter(), time.process_time()
    tasks = make_tasks(args.tasks)
    names = [t.name for t in tasks]
    data = [
        shapes.generate(split, n, args.image_size, tasks=names, seed=args.seed)
        for split, n in (("train", args.examples), ("test", args.test_examples))
    ]
    print(f"shapes_dense: tasks {names}, {args.examples} training / "
          f"{args.test_examples} test scenes of {args.image_size} px, "
          f"{args.epochs} epoch(s), methods {args.methods}", flush=True)

    stl, seconds = {}, {}
    for task in tasks:
        print(f"\n--- single-task baseline: {task.name}", flush=True)
        found, seconds[f"single-task {task.name}"] = train_and_evaluate([task], None, data, args)
        stl[task.name] = found[task.name]
    higher = metrics_lib.higher_is_better(tasks)
    results = {}
    for method in args.methods:
        print(f"\n--- multi-task, weighting {method}", flush=True)
        mtl, seconds[method] = train_and_evaluate(tasks, method, data, args)
        try:
            delta = metrics_lib.delta_m(mtl, stl, higher)
        except ValueError:  # a baseline metric of exactly 0 (possible in tiny runs)
            delta = None
        results[method] = {"metrics": mtl, "delta_m": delta}

    columns = [(t, m) for t in names for m in higher[t]]
    headers = ["model", *(f"{t} {m} ({'↑' if higher[t][m] else '↓'})" for t, m in columns),
               "Δm %", "fit s"]
    stl_seconds = sum(seconds[f"single-task {t}"] for t in names)
    rows = [[f"single-task ({len(names)} models)", *(f"{stl[t][m]:.4f}" for t, m in columns),
             "0 (ref.)", f"{stl_seconds:.0f}"]]
    for method, result in results.items():
        rows.append([method, *(f"{result['metrics'][t][m]:.4f}" for t, m in columns),
                     _percent(result["delta_m"]), f"{seconds[method]:.0f}"])
    print("\nTest split; Δm: mean over tasks of the signed relative change against the "
          "single-task baselines (negative: better).\n")
    print(demo.markdown_table(headers, rows))
    total = time.perf_counter() - started
    # CPU time too: on a shared machine, wall time depends on the other jobs.
    cpu = time.process_time() - cpu_started
    print(f"\n{len(results) + len(names)} models in {total:.0f} s "
          f"({cpu:.0f} s of CPU time)", flush=True)
    return {"single_task": stl, "multi_task": results, "seconds": seconds, "total_s": total,
            "cpu_s": cpu}


if __name__ == "__main__":
    main(sys.argv[1:])

"""Digit pairs: the MultiMNIST-style two-task benchmark, multi-task vs single-task.

Sener & Koltun (2018) popularised MultiMNIST as the small MTL benchmark: two
overlapping handwritten digits per image, one task for the top-left digit and
one for the bottom-right digit, a LeNet-style shared encoder and one head per
digit. `keras_mtl.datasets.digit_pairs` builds such pairs offline from the
1,797 real 8x8 digits that ship with scikit-learn (train, validation and test
pairs use disjoint source digits).

Each model has the same encoder (two 5x5 convolutions with max-pooling, then
a 50-unit dense layer, as the MultiLeNet of Sener & Koltun), heads, data,
epochs and initial seed. One single-task model per digit gives the baselines;
each method in `--methods` trains one multi-task model; Δm (negative: better)
reads them against the baselines on the test pairs.

    python examples/digit_pairs.py                  # 7 models, a few minutes on 2 CPU cores
    python examples/digit_pairs.py --quick          # smoke run
    python examples/digit_pairs.py --methods equal,mgda --epochs 20

The encoder ends in a vector (not a feature map that a head would pool):
which digit sits where is spatial information that global pooling would
blur.
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
from keras_mtl.datasets import digit_pairs

#: name -> factory(seed): each run gets a fresh method.
METHODS = {
    "equal": lambda seed: weighting.Equal(),
    "uncertainty": lambda seed: weighting.Uncertainty(
        task_kinds=dict.fromkeys(digit_pairs.TASKS, "classification")
    ),
    "dwa": lambda seed: weighting.DynamicWeightAverage(),
    "pcgrad": lambda seed: weighting.PCGrad(seed=seed),
    # MGDA-UB: the registry's "mgda" in representation mode.
    "mgda": lambda seed: weighting.MGDA(mode="representation"),
}
DEFAULTS = {"epochs": 10, "examples": 10000, "test_examples": 2000}
QUICK = {"epochs": 1, "examples": 128, "test_examples": 64}


def make_tasks():
    return [
        keras_mtl.tasks.MulticlassClassification(name, num_classes=digit_pairs.NUM_CLASSES)
        for name in digit_pairs.TASKS
    ]


def multi_lenet(input_shape, units=50):
    """The shared encoder of Sener & Koltun's MultiLeNet, for 0-255 images."""
    images = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(images)
    for filters in (10, 20):
        x = keras.layers.Conv2D(filters, 5, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(images, x, name="multi_lenet")


def methods_argument(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in METHODS for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"Expected a comma-separated list of distinct names from {list(METHODS)}. "
            f"Received: {text!r}"
        )
    return names


def train_and_evaluate(tasks, method, data, args):
    """Trains one model (`method=None`: a single-task model) and returns
    `({task: {metric: value}}, fit seconds)` on the test pairs."""
    (x_train, y_train), (x_test, y_test) = data
    names = [t.name for t in tasks]
    keras.utils.set_random_seed(args.seed)  # every encoder starts the same
    model = keras_mtl.build_model(
        multi_lenet(x_train.shape[1:]), tasks, input_shape=x_train.shape[1:], head_units=(50,)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        weighting=None if method is None else METHODS[method](args.seed),
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
    parser.add_argument("--methods", type=methods_argument, default=list(METHODS),
                        help=f"comma-separated, from {list(METHODS)} (default: all)")
    parser.add_argument("--epochs", type=positive_int_argument,
                        help=f"default {DEFAULTS['epochs']} ({QUICK['epochs']} with --quick)")
    parser.add_argument("--examples", type=positive_int_argument,
                        help=f"training pairs, default {DEFAULTS['examples']} "
                             f"({QUICK['examples']} with --quick)")
    parser.add_argument("--test-examples", type=positive_int_argument,
                        help=f"test pairs, default {DEFAULTS['test_examples']} "
                             f"({QUICK['test_examples']} with --quick)")
    parser.add_argument("--image-size", type=cli.image_size_argument, default=32)
    parser.add_argument("--batch-size", type=positive_int_argument, default=64)
    parser.add_argument("--seed", type=non_negative_int_argument, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (tests, CI): 1 epoch on 128 pairs unless given")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # Each model traces its own tf.functions; TensorFlow calls that retracing.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    started, cpu_started = time.perf_counter(), time.process_time()
    tasks = make_tasks()
    # Pairs may reuse a source digit (1,258 train digits make 10,000 pairs),
    # but never across splits.
    data = [
        digit_pairs.generate(split, n, args.image_size, seed=args.seed)
        for split, n in (("train", args.examples), ("test", args.test_examples))
    ]
    print(f"digit_pairs: {args.examples} training / {args.test_examples} test pairs of "
          f"{args.image_size} px, {args.epochs} epoch(s), methods {args.methods}", flush=True)

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

    headers = ["model", "left accuracy", "right accuracy", "Δm %", "fit s"]
    stl_seconds = sum(seconds[f"single-task {t.name}"] for t in tasks)
    rows = [["single-task (2 models)", f"{stl['left']['accuracy']:.4f}",
             f"{stl['right']['accuracy']:.4f}", "0 (ref.)", f"{stl_seconds:.0f}"]]
    for method, result in results.items():
        found = result["metrics"]
        rows.append([method, f"{found['left']['accuracy']:.4f}",
                     f"{found['right']['accuracy']:.4f}", _percent(result["delta_m"]),
                     f"{seconds[method]:.0f}"])
    print("\nTest pairs; Δm: mean over tasks of the signed relative change against the "
          "single-task baselines (negative: better).\n")
    print(demo.markdown_table(headers, rows))
    total = time.perf_counter() - started
    # CPU time too: on a shared machine, wall time depends on the other jobs.
    cpu = time.process_time() - cpu_started
    print(f"\n{len(results) + len(tasks)} models in {total:.0f} s "
          f"({cpu:.0f} s of CPU time)", flush=True)
    return {"single_task": stl, "multi_task": results, "seconds": seconds, "total_s": total,
            "cpu_s": cpu}


if __name__ == "__main__":
    main(sys.argv[1:])

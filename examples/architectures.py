"""Architectures on shapes: hard sharing vs MMoE, PLE, MTAN and cross-stitch.

Beyond one shared trunk (issue 8, seed 000's answers to task interference):
the same four vector tasks of the shapes scenes -- `shape` (class of the
largest shape), `count` (1 to 3), `size` and `position` of the largest shape
-- learnt by one model per architecture, all from the demo's 6-convolution CNN
(`keras_mtl.demo.demo_trunk`), read against single-task baselines with Δm
(Maninis et al. 2019; negative: the multi-task model is better):

- `hard`: hard parameter sharing, every head reads the trunk's output;
- `mmoe`: Multi-gate Mixture-of-Experts (Ma et al. 2018) on the pooled map;
- `ple`: Progressive Layered Extraction (Tang et al. 2020), 2 levels;
- `mtan`: task attention modules over the shared trunk (Liu et al. 2019);
- `cross_stitch`: one trunk copy per task, mixed by cross-stitch units
  between blocks (Misra et al. 2016).

Every model has the same heads, optimizer, epochs and initial seed, and the
plain sum of the task losses (pass `--weighting` for another method).

    python examples/architectures.py              # 9 models, ~10 min on 2 CPU cores
    python examples/architectures.py --quick      # smoke run: 1 epoch on 64 scenes

No download: the scenes are generated (`keras_mtl.datasets.shapes`).
"""

import argparse
import logging
import sys
import time

import keras

import keras_mtl
from keras_mtl import architectures
from keras_mtl import cli
from keras_mtl import demo
from keras_mtl._validation import non_negative_int_argument
from keras_mtl._validation import positive_int_argument
from keras_mtl import metrics as metrics_lib
from keras_mtl.datasets import shapes

#: name -> factory: each run gets a fresh architecture.
ARCHITECTURES = {
    "hard": lambda: None,
    "mmoe": lambda: architectures.MMoE(num_experts=4, expert_units=(64,)),
    "ple": lambda: architectures.PLE(num_levels=2, shared_experts=2, task_experts=1,
                                     expert_units=(64,)),
    "mtan": lambda: architectures.MTAN(),
    "cross_stitch": lambda: architectures.CrossStitchNetwork(),
}


def make_tasks():
    return [
        keras_mtl.tasks.MulticlassClassification(
            "shape", num_classes=shapes.NUM_CLASSES, class_names=list(shapes.CLASS_NAMES)),
        keras_mtl.tasks.Regression("count", loss="mae"),
        keras_mtl.tasks.Regression("size"),
        keras_mtl.tasks.Regression("position", units=2),
    ]


def train_and_evaluate(tasks, architecture, data, args):
    """Trains one model and returns `({task: {metric: value}}, parameters,
    fit seconds)` on the test split (`architecture=None`: hard sharing, also
    the single-task baselines)."""
    (x_train, y_train), (x_test, y_test) = data
    names = [t.name for t in tasks]
    keras.utils.set_random_seed(args.seed)  # every trunk starts the same
    image_shape = x_train.shape[1:]
    model = keras_mtl.build_model(
        demo.demo_trunk(image_shape), tasks, input_shape=image_shape, head_units=(64,),
        architecture=architecture,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  weighting=args.weighting if len(tasks) > 1 else None)
    tick = time.perf_counter()
    model.fit(x_train, {n: y_train[n] for n in names}, epochs=args.epochs,
              batch_size=args.batch_size, shuffle=True, verbose=args.verbose)
    seconds = time.perf_counter() - tick
    logs = model.evaluate(x_test, {n: y_test[n] for n in names},
                          batch_size=args.batch_size, return_dict=True, verbose=0)
    return metrics_lib.task_metrics(logs, tasks), model.count_params(), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults, quick = demo.DEMO_DEFAULTS, demo.QUICK_DEFAULTS
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES),
                        help=f"comma-separated, from {list(ARCHITECTURES)} (default: all)")
    parser.add_argument("--weighting", type=cli.weighting_argument, default="equal",
                        help="a keras_mtl.weighting name (default: equal)")
    parser.add_argument("--epochs", type=positive_int_argument,
                        help=f"default {defaults['epochs']} ({quick['epochs']} with --quick)")
    parser.add_argument("--examples", type=positive_int_argument,
                        help=f"training scenes, default {defaults['examples']} "
                             f"({quick['examples']} with --quick)")
    parser.add_argument("--test-examples", type=positive_int_argument,
                        help=f"test scenes, default {defaults['validation_examples']} "
                             f"({quick['validation_examples']} with --quick)")
    parser.add_argument("--batch-size", type=positive_int_argument, default=defaults["batch_size"])
    parser.add_argument("--seed", type=non_negative_int_argument, default=defaults["seed"])
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (tests, CI): 1 epoch on 64 scenes unless given")
    args = parser.parse_args(argv)
    chosen = [a.strip() for a in args.architectures.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ARCHITECTURES]
    if not chosen or unknown:
        parser.error(f"argument --architectures: Expected names from {list(ARCHITECTURES)}. "
                     f"Received: {args.architectures!r}")
    sizes = quick if args.quick else defaults
    args.epochs = args.epochs or sizes["epochs"]
    args.examples = args.examples or sizes["examples"]
    args.test_examples = args.test_examples or sizes["validation_examples"]
    # Each model traces its own tf.functions; TensorFlow calls that retracing.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    started, cpu_started = time.perf_counter(), time.process_time()
    tasks = make_tasks()
    names = [t.name for t in tasks]
    data = [
        shapes.generate(split, n, defaults["image_size"], tasks=names, seed=args.seed)
        for split, n in (("train", args.examples), ("test", args.test_examples))
    ]
    print(f"architectures: tasks {names}, {args.examples} training / {args.test_examples} "
          f"test scenes, {args.epochs} epoch(s), weighting {args.weighting}", flush=True)

    stl, stl_parameters, stl_seconds = {}, 0, 0.0
    for task in tasks:
        print(f"\n--- single-task baseline: {task.name}", flush=True)
        found, parameters, seconds = train_and_evaluate([task], None, data, args)
        stl[task.name] = found[task.name]
        stl_parameters += parameters
        stl_seconds += seconds
    higher = metrics_lib.higher_is_better(tasks)
    results = {}
    for name in chosen:
        print(f"\n--- multi-task, architecture {name}", flush=True)
        mtl, parameters, seconds = train_and_evaluate(tasks, ARCHITECTURES[name](), data, args)
        try:
            delta = metrics_lib.delta_m(mtl, stl, higher)
        except ValueError:  # a baseline metric of exactly 0 (possible in tiny runs)
            delta = None
        results[name] = {"metrics": mtl, "delta_m": delta, "parameters": parameters,
                         "seconds": seconds}

    columns = [(t, m) for t in names for m in higher[t]]
    headers = ["model", *(f"{t} {m} ({'↑' if higher[t][m] else '↓'})" for t, m in columns),
               "Δm %", "parameters", "fit s"]
    rows = [[f"single-task ({len(names)} models)", *(f"{stl[t][m]:.4f}" for t, m in columns),
             "0 (ref.)", f"{stl_parameters:,}", f"{stl_seconds:.0f}"]]
    for name, result in results.items():
        delta = "n/a" if result["delta_m"] is None else f"{result['delta_m']:+.2f}"
        rows.append([name, *(f"{result['metrics'][t][m]:.4f}" for t, m in columns), delta,
                     f"{result['parameters']:,}", f"{result['seconds']:.0f}"])
    print("\nTest split; Δm: mean over tasks of the signed relative change against the "
          "single-task baselines (negative: better).\n")
    print(demo.markdown_table(headers, rows))
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"\n{len(results) + len(names)} models in {total:.0f} s ({cpu:.0f} s of CPU time)",
          flush=True)
    return {"single_task": stl, "multi_task": results, "total_s": total, "cpu_s": cpu}


if __name__ == "__main__":
    main(sys.argv[1:])

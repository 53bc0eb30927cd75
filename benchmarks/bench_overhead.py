"""What does keras_mtl cost per training step? Ratios measured in one process.

(a) Framework overhead: a `keras_mtl.MultiTaskModel` (no weighting, i.e. the
    plain sum of task losses, and `weighting="equal"`) against a hand-built
    plain Keras Functional model with the same layers (the same trunk, the same
    head models from `keras_mtl.heads.build_head`, the same preprocessing
    layer), compiled with a loss dict. Goal: <= 1.03. Measured twice: with
    each task's metrics on both models (what users run), and with none.
(b) Cost of the heads: the multi-task train step against a backbone-only
    step (the same trunk, global average pooling, one Dense(1) regression with
    MSE). Goal: <= 1.10, without metrics; the row with metrics is for
    information.

Method: all models are built and compiled first; each one's first
`train_on_batch` (tracing) and a few warm-up steps are excluded. Then, in each
round, every model runs `--steps` steps on the same fixed batch, one model
after the other, in an order rotated each round so that no model always
follows the same one; a round lasts about a second, so slow drift falls on all
models alike. Each step is timed twice: wall time, and this process's CPU
time (all its threads; `train_on_batch` returns numpy logs, so the step has
finished). The ratio of two models is the median over rounds of their
per-round ratio, with its quartiles as spread, and the ratio of their median
step times as a cross-check.

Which clock, how many threads: on a dedicated machine wall time is the
measure. On a machine shared with other work (ours: 2 cores, other test
suites running, load 4-6) wall time also counts the moments other processes
held the cores, and single steps spread from 1x to 2x. CPU time counts only
this process's work, but with TensorFlow's default thread pools it also
counts threads spinning while they wait for each other (on 2 loaded cores,
half the CPU time of a MobileNetV3Small step, and very variable). With one
TensorFlow thread (`--threads 1`, the default) the CPU time of a step is its
work, and its spread falls to a few percent, so the goals are checked on it
(`--clock cpu`); wall times are reported too. Caveat: on many cores the
convolutions run in parallel while keras_mtl's extra ops (label masks,
per-task trackers) are small serial ops, so there the relative overhead is
larger than here; the per-step difference in milliseconds is given to
scale it.

Run: `python benchmarks/bench_overhead.py` (writes
`benchmarks/results/overhead.json` and `overhead.md`; a few minutes on a
2-core CPU). Exits 0 whether or not the goals are met: it measures.
"""

import argparse
import gc
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl.backbones import resolve_backbone  # noqa: E402
from keras_mtl.datasets import shapes  # noqa: E402
from keras_mtl.heads import build_head  # noqa: E402
from keras_mtl.preprocessing import ImagePreprocessing  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
HEAD_UNITS = (256,)


def bench_tasks():
    """Three vector heads, one per kind a HydraNet usually mixes."""
    return [
        keras_mtl.tasks.MulticlassClassification("shape", num_classes=shapes.NUM_CLASSES),
        keras_mtl.tasks.Regression("size"),
        keras_mtl.tasks.Regression("position", units=2),
    ]


def set_threads(threads):
    """TensorFlow's intra- and inter-op thread pools (0: its default)."""
    if threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def bench_batch(image_size, batch_size):
    """`(tasks, image_shape, x, y)`: `bench_tasks` and one fixed, seeded
    batch of shapes scenes labelled for them."""
    keras.utils.set_random_seed(0)
    tasks = bench_tasks()
    x, labels = shapes.generate("train", batch_size, image_size, tasks=[t.name for t in tasks])
    y = {"shape": labels["shape"], "size": labels["size"][:, None],
         "position": labels["position"]}
    return tasks, (image_size, image_size, 3), x, y


def rotated(names, rounds):
    """The order of `names` in each round, rotated by one every round, so
    that no model always follows the same one."""
    for round_ in range(rounds):
        shift = round_ % len(names)
        yield names[shift:] + names[:shift]


def _mtl_model(backbone, tasks, image_shape, weighting, with_metrics):
    model = keras_mtl.build_model(
        backbone, tasks, input_shape=image_shape, head_units=HEAD_UNITS
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics="auto" if with_metrics else {t.name: [] for t in tasks},
        weighting=weighting,
    )
    return model


def _plain_model(backbone, tasks, image_shape, with_metrics):
    """The same layers as `build_model`, wired and compiled the stock way."""
    trunk, image_shape, mode = resolve_backbone(backbone, image_shape)
    feature_shape = tuple(trunk.output.shape[1:])
    images = keras.Input(shape=image_shape, name="image")
    z = trunk(ImagePreprocessing(mode, name="preprocessing")(images))
    outputs = {
        t.name: build_head(t, feature_shape, image_shape, HEAD_UNITS)(z) for t in tasks
    }
    model = keras.Model(images, outputs, name="plain_multi_output")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={t.name: t.loss for t in tasks},
        metrics={t.name: t.metrics() for t in tasks} if with_metrics else None,
    )
    return model


def _backbone_model(backbone, image_shape):
    """The trunk alone, with the smallest head that gives it a gradient."""
    trunk, image_shape, mode = resolve_backbone(backbone, image_shape)
    images = keras.Input(shape=image_shape, name="image")
    z = trunk(ImagePreprocessing(mode, name="preprocessing")(images))
    if len(z.shape) == 4:
        z = keras.layers.GlobalAveragePooling2D()(z)
    output = keras.layers.Dense(1, name="size")(z)
    model = keras.Model(images, output, name="backbone_only")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _step_times(model, x, y, steps):
    """`(wall, cpu)` seconds per step over `steps` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _quartiles(values):
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(median), float(q3)


def _table(headers, rows):
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def write_results(output, stem, results, markdown, echo=True):
    """Writes `<output>/<stem>.json` and `<stem>.md` (and prints the table)."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output, f"{stem}.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    if echo:
        print()
        print(markdown)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="MobileNetV3Small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=1, help="steps per model and round")
    parser.add_argument("--repeats", type=int, default=100, help="rounds")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="clock the goals are checked on (both are reported)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default)",
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    tasks, image_shape, x, y = bench_batch(args.image_size, args.batch_size)

    builders = {
        "plain Keras multi-output, task metrics":
            lambda: _plain_model(args.backbone, tasks, image_shape, True),
        "keras_mtl weighting=None, task metrics":
            lambda: _mtl_model(args.backbone, tasks, image_shape, None, True),
        "keras_mtl weighting='equal', task metrics":
            lambda: _mtl_model(args.backbone, tasks, image_shape, "equal", True),
        "plain Keras multi-output, no metrics":
            lambda: _plain_model(args.backbone, tasks, image_shape, False),
        "keras_mtl weighting=None, no metrics":
            lambda: _mtl_model(args.backbone, tasks, image_shape, None, False),
        "backbone only (GAP + Dense(1), MSE)":
            lambda: _backbone_model(args.backbone, image_shape),
    }
    models, targets, first_step = {}, {}, {}
    for name, build in builders.items():
        models[name] = build()
        targets[name] = y["size"] if name.startswith("backbone") else y
        start = time.perf_counter()
        models[name].train_on_batch(x, targets[name])
        first_step[name] = time.perf_counter() - start
        for _ in range(args.warmup):
            models[name].train_on_batch(x, targets[name])
        print(f"built and traced {name}: first step {first_step[name]:.1f} s", flush=True)

    plain = models["plain Keras multi-output, task metrics"]
    mtl = models["keras_mtl weighting=None, task metrics"]
    if plain.count_params() != mtl.count_params():
        raise RuntimeError(
            "The plain model should have exactly the layers of the keras_mtl "
            f"model: {plain.count_params()} vs {mtl.count_params()} parameters."
        )

    names = list(models)
    clocks = ("cpu", "wall")
    times = {clock: {name: [] for name in names} for clock in clocks}
    gc.collect()
    gc.disable()  # a collection inside one model's step would bias it
    try:
        for order in rotated(names, args.repeats):
            for name in order:
                wall, cpu = _step_times(models[name], x, targets[name], args.steps)
                times["wall"][name].append(wall)
                times["cpu"][name].append(cpu)
    finally:
        gc.enable()
    stats = {
        clock: {name: _quartiles(values) for name, values in times[clock].items()}
        for clock in clocks
    }

    comparisons = [
        ("(a) keras_mtl / plain Keras", "keras_mtl weighting=None, task metrics",
         "plain Keras multi-output, task metrics", 1.03),
        ("(a) keras_mtl / plain Keras", "keras_mtl weighting='equal', task metrics",
         "plain Keras multi-output, task metrics", 1.03),
        ("(a) keras_mtl / plain Keras", "keras_mtl weighting=None, no metrics",
         "plain Keras multi-output, no metrics", 1.03),
        ("(b) with heads / backbone only", "keras_mtl weighting=None, no metrics",
         "backbone only (GAP + Dense(1), MSE)", 1.10),
        ("(b) with heads / backbone only", "keras_mtl weighting=None, task metrics",
         "backbone only (GAP + Dense(1), MSE)", None),
        ("(b) with heads / backbone only", "plain Keras multi-output, no metrics",
         "backbone only (GAP + Dense(1), MSE)", None),
    ]
    ratios = []
    for group, numerator, denominator, goal in comparisons:
        entry = {"group": group, "numerator": numerator, "denominator": denominator}
        for clock in clocks:
            paired = [
                a / b for a, b in zip(times[clock][numerator], times[clock][denominator])
            ]
            q1, ratio, q3 = _quartiles(paired)
            entry[clock] = {
                "ratio": round(ratio, 4),
                "ratio_q1_q3": [round(q1, 4), round(q3, 4)],
                "ratio_of_medians": round(
                    stats[clock][numerator][1] / stats[clock][denominator][1], 4
                ),
                "extra_ms_per_step": round(
                    1000 * (stats[clock][numerator][1] - stats[clock][denominator][1]), 2
                ),
            }
        entry["goal"] = goal
        entry["goal_clock"] = args.clock
        entry["meets_goal"] = (
            None if goal is None else bool(entry[args.clock]["ratio"] <= goal)
        )
        ratios.append(entry)

    settings = {
        "backbone": args.backbone,
        "weights": None,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "tasks": [f"{t.name} ({type(t).__name__})" for t in tasks],
        "head_units": list(HEAD_UNITS),
        "optimizer": "Adam(1e-3)",
        "warmup_steps": args.warmup,
        "steps_per_model_and_round": args.steps,
        "rounds": args.repeats,
        "goal_clock": args.clock,
        "tensorflow_threads": args.threads or "default",
    }
    environment = {
        "keras_mtl": keras_mtl.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    results = {
        "benchmark": "overhead",
        "settings": settings,
        "environment": environment,
        "models": {
            name: {
                **{
                    f"{clock}_step_ms": {
                        "median": round(1000 * stats[clock][name][1], 2),
                        "q1_q3": [
                            round(1000 * stats[clock][name][0], 2),
                            round(1000 * stats[clock][name][2], 2),
                        ],
                    }
                    for clock in clocks
                },
                "first_step_s": round(first_step[name], 2),
                "parameters": models[name].count_params(),
            }
            for name in names
        },
        "ratios": ratios,
    }

    def spread(low_high, scale=1.0, digits=3):
        return f"{scale * low_high[0]:.{digits}f} - {scale * low_high[1]:.{digits}f}"

    ratio_rows = [
        [r["group"], r["numerator"], r["denominator"],
         f"{r['cpu']['ratio']:.3f}", spread(r["cpu"]["ratio_q1_q3"]),
         f"{r['cpu']['extra_ms_per_step']:+.1f}",
         f"{r['wall']['ratio']:.3f}", spread(r["wall"]["ratio_q1_q3"]),
         "-" if r["goal"] is None else f"<= {r['goal']:.2f} ({args.clock})",
         "-" if r["meets_goal"] is None else ("yes" if r["meets_goal"] else "NO")]
        for r in ratios
    ]
    model_rows = [
        [name,
         f"{m['cpu_step_ms']['median']:.1f}", spread(m["cpu_step_ms"]["q1_q3"], digits=1),
         f"{m['wall_step_ms']['median']:.1f}", spread(m["wall_step_ms"]["q1_q3"], digits=1),
         f"{m['first_step_s']:.1f}", f"{m['parameters']:,}"]
        for name, m in results["models"].items()
    ]
    markdown = "\n".join([
        "# keras_mtl overhead benchmark",
        "",
        f"{args.backbone} (random weights) at {args.image_size} px, batch "
        f"{args.batch_size}, heads: {', '.join(settings['tasks'])}; "
        f"{args.repeats} rounds of {args.steps} `train_on_batch` step(s) per "
        f"model, models interleaved, after {args.warmup} warm-up steps; keras "
        f"{keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPU "
        f"core(s), TensorFlow threads: {args.threads or 'default'}. Ratio: "
        "median over rounds of the per-round ratio of step times, with its "
        "quartiles; CPU: this process's CPU time, wall: wall time (see the "
        "module docstring for why both).",
        "",
        _table(["comparison", "numerator", "denominator", "ratio (CPU)",
                "quartiles (CPU)", "CPU ms/step more", "ratio (wall)",
                "quartiles (wall)", "goal", "met"], ratio_rows),
        "",
        _table(["model", "CPU ms/step", "quartiles", "wall ms/step", "quartiles",
                "first step, tracing (s)", "parameters"], model_rows),
        "",
        "Written by `python benchmarks/bench_overhead.py`.",
        "",
    ])
    write_results(args.output, "overhead", results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

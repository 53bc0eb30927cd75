"""The demo behind `keras-mtl demo`, the project's end-to-end check (what
`make demo` runs): on the embedded shapes scenes it trains a HydraNet (one shared trunk; heads for
the class of the largest shape, its size, a segmentation map and a depth map;
its losses combined by a `keras_mtl.weighting` method) and one single-task
baseline per task from the same builder, evaluates all of them on the
validation split, prints a per-task table with Δm (Maninis et al. 2019, as in
LibMTL), and writes to `--output`:

- `hydranet.keras`: the multi-task model (reloaded once to check it);
- `report.md`: the table, Δm, the diagnostics, the settings and the timings,
  with the plots below shown inline;
- `learning_curves.png`: per-task train/validation losses, multi-task solid,
  single-task dashed;
- `task_weights.png`: the weight the weighting method gave each task, per
  epoch (`keras_mtl.callbacks.WeightHistory`);
- `gradient_conflict.png`: cosine similarity of the task gradients at the
  shared representation, measured on a validation batch a few times per
  epoch (`keras_mtl.callbacks.GradientConflict`);
- `results.json`: the same numbers, for scripts.
"""

import json
import os
import platform
import time

import keras
import numpy as np

import keras_mtl
from keras_mtl import backbones
from keras_mtl import callbacks as callbacks_lib
from keras_mtl import metrics as metrics_lib
from keras_mtl import plots
from keras_mtl.datasets import shapes

SMALL_CNN = "small_cnn"
#: Channels of the demo trunk's blocks (`demo_trunk`).
TRUNK_FILTERS = (32, 64, 96)

#: Defaults of `keras-mtl demo`, chosen to train something meaningful (shape
#: accuracy well above chance, segmentation mIoU well above background-only)
#: on a 2-core CPU in about 5 minutes, 5 models in all (measured: 4.8 to 5.3
#: min with the 2 cores shared with other jobs, load average 5 to 6). 32 px
#: keeps the shapes legible and the dense heads cheap; 3072 scenes overfit
#: less than 2048 for the same number of steps. The multi-task model uses
#: Nash-MTL, one of the two best methods of `benchmarks/bench_quality.py` on
#: these scenes (Δm -31.2 ± 3.4 % there, FairGrad -32.1 ± 4.5 %; -26.4 % in a
#: default demo run, which took 4.3 min, 3.5 min CPU, with Nash-MTL and the
#: diagnostics).
DEMO_DEFAULTS = {
    "output": os.path.join("runs", "demo"),
    "epochs": 6,
    "examples": 3072,
    "validation_examples": 512,
    "image_size": 32,
    "batch_size": 32,
    "backbone": SMALL_CNN,
    "weighting": "nash_mtl",
    "seed": 0,
}
#: Gradient-conflict measurements per epoch in the demo.
CONFLICT_MEASUREMENTS_PER_EPOCH = 4
#: What `--quick` changes: a smoke run (tests, CI) of a few seconds per model.
QUICK_DEFAULTS = {
    "epochs": 1,
    "examples": 64,
    "validation_examples": 32,
    "image_size": 32,
}
#: The smallest image side the demo's data and trunk take.
MIN_IMAGE_SIZE = 32


def demo_tasks():
    """The tasks of the demo: one of each kind the shapes scenes label.

    Example:

    >>> [t.name for t in demo_tasks()]
    ['shape', 'size', 'segmentation', 'depth']
    """
    return [
        keras_mtl.tasks.MulticlassClassification(
            "shape", num_classes=shapes.NUM_CLASSES, class_names=list(shapes.CLASS_NAMES)
        ),
        keras_mtl.tasks.Regression("size"),
        keras_mtl.tasks.Segmentation(
            "segmentation",
            num_classes=shapes.NUM_SEGMENTATION_CLASSES,
            class_names=["background", *shapes.CLASS_NAMES],
        ),
        keras_mtl.tasks.DenseRegression("depth"),
    ]


def demo_trunk(input_shape, filters=TRUNK_FILTERS):
    """The demo's default trunk, `keras_mtl.backbones.small_cnn` with three
    blocks of two convolutions and batch norm (six convolutions).

    It takes raw 0-255 images and gives a feature map 8 times smaller than
    the image. The examples and `benchmarks/bench_quality.py` use it too.

    Args:
        input_shape: `(height, width, channels)` of the images.
        filters: Channels of each block.

    Returns:
        A Functional `keras.Model`.

    Example:

    >>> demo_trunk((32, 32, 3)).output.shape
    (None, 4, 4, 96)
    """
    return backbones.small_cnn(
        input_shape, filters, convs_per_block=2, batch_norm=True, name=SMALL_CNN
    )

# --- the demo -----------------------------------------------------------------
def run_demo(
    output=DEMO_DEFAULTS["output"],
    epochs=DEMO_DEFAULTS["epochs"],
    examples=DEMO_DEFAULTS["examples"],
    validation_examples=DEMO_DEFAULTS["validation_examples"],
    image_size=DEMO_DEFAULTS["image_size"],
    batch_size=DEMO_DEFAULTS["batch_size"],
    backbone=DEMO_DEFAULTS["backbone"],
    weighting=DEMO_DEFAULTS["weighting"],
    seed=DEMO_DEFAULTS["seed"],
    quick=False,
    verbose="auto",
):
    """Trains the demo's multi-task model and baselines; writes the report.

    Args:
        output: Folder for `hydranet.keras`, `report.md`,
            `learning_curves.png`, `task_weights.png`,
            `gradient_conflict.png` and `results.json`.
        epochs: Epochs for every model.
        examples: Number of training scenes.
        validation_examples: Number of validation scenes.
        image_size: Image side in pixels.
        batch_size: Batch size.
        backbone: `"small_cnn"` or a `keras.applications` name (random
            initialisation).
        weighting: A `keras_mtl.weighting` name: how the multi-task model
            combines its task losses (single-task models have one loss).
        seed: Seed of the data and of each model's initialisation (each model
            starts from the same seed, so the trunks start equal).
        quick: Only recorded in the report (the caller picks the sizes).
        verbose: `verbose` of `fit`: 1 (progress bars), 2 (a line per
            epoch) or 0.

    Returns:
        A dict with the per-task metrics (`"mtl"`, `"stl"`), `"delta_m"`,
        the file paths and the timings.
    """
    if not isinstance(weighting, str) or keras_mtl.weighting.get_class(weighting) is None:
        raise ValueError(
            "Invalid value received for argument `weighting`. Expected a "
            f"keras_mtl.weighting name, one of {keras_mtl.weighting.names()}. "
            f"Received: weighting={weighting!r}"
        )
    weighting = weighting.lower()
    started = time.perf_counter()
    timings = {}
    tasks = demo_tasks()
    names = [t.name for t in tasks]
    image_shape = (image_size, image_size, 3)
    os.makedirs(output, exist_ok=True)

    _say(
        f"keras-mtl demo: {len(tasks)} tasks ({', '.join(names)}), backbone "
        f"{backbone}, {examples} training / {validation_examples} validation "
        f"scenes of {image_size}x{image_size} px, {epochs} epoch(s), batch {batch_size}"
    )
    tick = time.perf_counter()
    x_train, y_train = shapes.generate("train", examples, image_size, tasks=names, seed=seed)
    x_val, y_val = shapes.generate(
        "validation", validation_examples, image_size, tasks=names, seed=seed
    )
    timings["data"] = time.perf_counter() - tick

    def train(model_tasks, label, weighting_name=None, diagnostics=()):
        keras.utils.set_random_seed(seed)
        trunk = demo_trunk(image_shape) if backbone == SMALL_CNN else backbone
        model = keras_mtl.build_model(
            trunk, model_tasks, input_shape=image_shape, head_units=(64,),
            name=label.replace("-", "_").replace(" ", "_"),
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            weighting=_weighting(weighting_name, model_tasks, y_train),
        )
        task_names = [t.name for t in model_tasks]
        tick = time.perf_counter()
        history = model.fit(
            x_train, {n: y_train[n] for n in task_names},
            validation_data=(x_val, {n: y_val[n] for n in task_names}),
            epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose,
            callbacks=list(diagnostics),
        )
        fit_seconds = time.perf_counter() - tick
        logs = model.evaluate(
            x_val, {n: y_val[n] for n in task_names},
            batch_size=batch_size, return_dict=True, verbose=0,
        )
        timings[f"fit {label}"] = fit_seconds
        return model, history, metrics_lib.task_metrics(logs, model_tasks)

    total = len(tasks) + 1
    _say(f"\n[1/{total}] multi-task model: shared {backbone} trunk, heads {names}, "
         f"weighting {weighting}")
    steps_per_epoch = -(-examples // batch_size)
    weight_history = callbacks_lib.WeightHistory()
    # A fixed validation batch, measured a few times per epoch.
    conflict = callbacks_lib.GradientConflict(
        (x_val[:batch_size], {n: y_val[n][:batch_size] for n in names}),
        every_n_steps=max(1, steps_per_epoch // CONFLICT_MEASUREMENTS_PER_EPOCH),
    )
    model, history, mtl = train(
        tasks, "multi-task", weighting, diagnostics=(weight_history, conflict)
    )

    tick = time.perf_counter()
    model_path = os.path.join(output, "hydranet.keras")
    model.save(model_path)
    reload_error = _check_reload(model, model_path, x_val[:batch_size])
    timings["save and reload"] = time.perf_counter() - tick
    _say(f"saved {model_path}; reloaded with keras.models.load_model: "
         f"predictions match (max abs difference {reload_error:.1e})")

    stl, baseline_histories, stl_parameters = {}, {}, 0
    for i, task in enumerate(tasks, start=2):
        _say(f"\n[{i}/{total}] single-task baseline: {task.name}")
        baseline, baseline_history, found = train([task], f"single-task {task.name}")
        stl[task.name] = found[task.name]
        baseline_histories[task.name] = baseline_history
        stl_parameters += baseline.count_params()

    higher = metrics_lib.higher_is_better(tasks)
    try:
        delta = metrics_lib.delta_m(mtl, stl, higher)
        delta_note = None
    except ValueError as error:  # e.g. a baseline metric of exactly 0
        delta, delta_note = None, str(error)

    tick = time.perf_counter()
    plot_path = plots.plot_learning_curves(
        history, os.path.join(output, "learning_curves.png"), tasks=names,
        baselines=baseline_histories,
    )
    weights_path = plots.plot_task_weights(
        weight_history, os.path.join(output, "task_weights.png"),
        title=f"Task weights per epoch ({weighting})",
    )
    conflict_path = plots.plot_gradient_conflict(
        conflict, os.path.join(output, "gradient_conflict.png"),
    )
    timings["plots"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    diagnostics = _diagnostics(
        weight_history, conflict, last_epoch_after=steps_per_epoch * (epochs - 1)
    )

    rows = _result_rows(tasks, mtl, stl, higher)
    table = markdown_table(
        ["task", "metric", "goal", "multi-task", "single-task", "relative change"], rows
    )
    delta_line = _delta_line(delta, delta_note)
    _say("\nValidation results (multi-task model vs single-task baselines):\n")
    _say(table)
    _say(f"\n{delta_line}")

    settings = {
        "backbone": backbone,
        "weighting (multi-task model)": weighting,
        "tasks": ", ".join(f"{t.name} ({type(t).__name__})" for t in tasks),
        "image size": f"{image_size} x {image_size}",
        "training scenes": examples,
        "validation scenes": validation_examples,
        "epochs": epochs,
        "batch size": batch_size,
        "optimizer": "Adam, learning rate 1e-3",
        "seed": seed,
        "quick": quick,
        "parameters": f"multi-task {model.count_params():,}; "
                      f"single-task models together {stl_parameters:,}",
        "versions": f"keras_mtl {keras_mtl.__version__}, keras {keras.__version__}, "
                    f"backend {keras.backend.backend()}, Python {platform.python_version()}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU core(s)",
    }
    command = (
        f"keras-mtl demo --output {output} --epochs {epochs} --examples {examples} "
        f"--validation-examples {validation_examples} --image-size {image_size} "
        f"--batch-size {batch_size} --backbone {backbone} --weighting {weighting} "
        f"--seed {seed}"
    )
    report_path = os.path.join(output, "report.md")
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(_report(
            table, delta_line, settings, command, timings, reload_error, diagnostics
        ))
    results = {
        "mtl": mtl,
        "stl": stl,
        "higher_is_better": higher,
        "delta_m": delta,
        "task_weights": diagnostics["task_weights"],
        "gradient_cosine": diagnostics["gradient_cosine"],
        "settings": {k: v for k, v in settings.items()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "files": {
            "model": model_path,
            "report": report_path,
            "learning_curves": plot_path,
            "task_weights": weights_path,
            "gradient_conflict": conflict_path,
        },
    }
    json_path = os.path.join(output, "results.json")
    results["files"]["results"] = json_path
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    _say(f"\nwrote {report_path}, {plot_path}, {weights_path}, {conflict_path}, {json_path} "
         f"({timings['total']:.0f} s in all)")
    return results


def _say(text):
    print(text, flush=True)


def _weighting(name, tasks, y_train):
    """The multi-task model's weighting; None for a single-task model."""
    if name is None or len(tasks) == 1:
        return None
    weighting_class = keras_mtl.weighting.get_class(name)
    if weighting_class is keras_mtl.weighting.InverseSize:
        counts = keras_mtl.weighting.count_labels(
            {t.name: y_train[t.name] for t in tasks}, tasks
        )
        return keras_mtl.weighting.InverseSize(counts=counts)
    return keras_mtl.weighting.get(name)


def _diagnostics(weight_history, conflict, last_epoch_after):
    """What the report and results.json say about weights and gradients.

    `last_epoch_after`: the optimizer step after which the last epoch's
    measurements were taken.
    """
    names = conflict.task_names
    pairs = [(a, b, i, j) for i, a in enumerate(names) for j, b in enumerate(names) if i < j]
    mean = conflict.mean_matrix()
    first_of_last = next(
        (k for k, step in enumerate(conflict.steps) if step > last_epoch_after),
        len(conflict.steps) - 1,
    )
    last_epoch = conflict.mean_matrix(first_of_last)
    return {
        "task_weights": {
            "epochs": [e + 1 for e in weight_history.epochs],
            **weight_history.history,
        },
        "gradient_cosine": {
            "steps": conflict.steps,
            "pairs": {
                f"{a}/{b}": {
                    "mean": round(float(mean[i, j]), 4),
                    "last_epoch": round(float(last_epoch[i, j]), 4),
                    "per_measurement": [round(float(m[i, j]), 4) for m in conflict.matrices],
                }
                for a, b, i, j in pairs
            },
        },
    }


def _check_reload(model, path, images):
    """Reloads `path` and returns the largest prediction difference."""
    # Safe mode (Keras' default, stated): no Python code from the file runs.
    reloaded = keras.models.load_model(path, safe_mode=True)
    expected = model.predict(images, verbose=0)
    received = reloaded.predict(images, verbose=0)
    error = max(
        float(np.max(np.abs(expected[name] - received[name]))) for name in expected
    )
    if not error <= 1e-4:
        raise RuntimeError(
            f"{path} does not reload to the same model: predictions differ by "
            f"up to {error:g}."
        )
    return error


def _result_rows(tasks, mtl, stl, higher):
    rows = []
    for task in tasks:
        for metric, is_higher in higher[task.name].items():
            new, base = mtl[task.name][metric], stl[task.name][metric]
            change = f"{100 * (new - base) / abs(base):+.1f} %" if base else "n/a"
            rows.append([
                task.name, metric, "higher" if is_higher else "lower",
                f"{new:.4f}", f"{base:.4f}", change,
            ])
    return rows


def _delta_line(delta, note):
    if delta is None:
        return f"Δm = n/a ({note})"
    verdict = "better" if delta < 0 else "worse"
    return (
        f"Δm = {delta:+.2f} % (mean over tasks of the signed relative change "
        f"against the single-task baselines; negative means the multi-task "
        f"model is better: here it is {verdict})"
    )


def markdown_table(headers, rows):
    """A Markdown table of `rows` under `headers`, columns padded to align.

    Example:

    >>> print(markdown_table(["task", "Δ"], [["age", "+1.0"]]))
    | task | Δ    |
    |------|------|
    | age  | +1.0 |
    """
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _signed(value):
    # `+ 0.0` turns a rounded -0.0 into 0.0, so no "-0.000".
    return f"{round(value, 3) + 0.0:+.3f}"


def _diagnostics_section(diagnostics):
    weights = diagnostics["task_weights"]
    task_names = [k for k in weights if k != "epochs"]
    weight_rows = [
        [name, f"{values[0]:.3f}", f"{values[-1]:.3f}"]
        for name, values in ((n, weights[n]) for n in task_names)
    ]
    cosine = diagnostics["gradient_cosine"]
    cosine_rows = [
        [pair, _signed(v["mean"]), _signed(v["last_epoch"]),
         _signed(min(v["per_measurement"])), _signed(max(v["per_measurement"]))]
        for pair, v in cosine["pairs"].items()
    ]
    return [
        "## Diagnostics (multi-task model)",
        "",
        "Per-task learning curves (multi-task solid, single-task dashed):",
        "",
        "![Per-task learning curves](learning_curves.png)",
        "",
        "Task weights given by the weighting method (epoch means):",
        "",
        markdown_table(
            ["task", "first epoch", f"last epoch ({weights['epochs'][-1]})"], weight_rows
        ),
        "",
        "![Task weights per epoch](task_weights.png)",
        "",
        "Cosine similarity of the task gradients at the shared representation, "
        f"measured {len(cosine['steps'])} times on a fixed validation batch "
        "(negative: the tasks pull the shared features in opposite directions, "
        "the signal of negative transfer):",
        "",
        markdown_table(["tasks", "mean", "last epoch", "lowest", "highest"], cosine_rows),
        "",
        "![Gradient cosine similarity](gradient_conflict.png)",
        "",
    ]


def _report(table, delta_line, settings, command, timings, reload_error, diagnostics):
    settings_rows = [[k, v] for k, v in settings.items()]
    timing_rows = [[k, f"{v:.1f}"] for k, v in timings.items()]
    return "\n".join([
        "# keras-mtl demo: multi-task vs single-task on shapes scenes",
        "",
        "A HydraNet (one shared trunk, one head per task) and one single-task "
        "model per task, built by `keras_mtl.build_model` with the same trunk, "
        "head sizes, data, epochs and initial seed, evaluated on the "
        "validation split; the multi-task model combines its task losses with "
        f"the `{settings['weighting (multi-task model)']}` weighting. Short runs "
        "on small data are noisy: read Δm as a smoke signal, not as a "
        "benchmark (`benchmarks/bench_quality.py` compares every weighting "
        "method over several seeds).",
        "",
        "## Results (validation split)",
        "",
        table,
        "",
        delta_line,
        "",
        "Relative change is (multi-task - single-task) / single-task; the "
        "goal column says which direction is better.",
        "",
        "## Files",
        "",
        "- `hydranet.keras`: the multi-task model; reloaded with "
        "`keras.models.load_model` (safe mode), predictions equal to "
        f"{reload_error:.1e}.",
        "- `learning_curves.png`: per-task losses per epoch, multi-task solid, "
        "single-task dashed.",
        "- `task_weights.png`: the multi-task model's task weights per epoch.",
        "- `gradient_conflict.png`: gradient cosine similarity between tasks "
        "(heatmap of the mean, and over training).",
        "- `results.json`: these numbers.",
        "",
        *_diagnostics_section(diagnostics),
        "## Settings",
        "",
        markdown_table(["setting", "value"], settings_rows),
        "",
        f"To run it again: `{command}`",
        "",
        "## Timings (seconds)",
        "",
        markdown_table(["step", "seconds"], timing_rows),
        "",
    ])


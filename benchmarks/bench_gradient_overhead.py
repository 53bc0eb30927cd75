"""Gradient-level methods: train-step time / Equal's, T=3 and T=10, both modes.

Two models, batch 32, Adam:

- the reference model of the gradient-methods issue, so the figures compare
  with the PyTorch peers measured on this machine (LibMTL 1.1.5): input
  32x32x3; trunk Conv2D(32)-ReLU-MaxPool -> Conv2D(64)-ReLU-MaxPool ->
  Conv2D(64)-ReLU -> global average pool (64-d); heads Dense(3)
  cross-entropy + two Dense(1) MSE (T=3), or ten Dense(1) MSE (T=10);
- the shapes HydraNet: 32 px shapes scenes, the same convolutions without the
  pooling (z is an 8x8x64 map), `build_model` heads (one hidden layer of 32):
  shape classification + size regression + segmentation (T=3), or all six
  shapes labels (T=6: the data set has no more).

Equal is `keras_mtl.weighting.Equal` (as in bench_weighting_overhead.py,
and LibMTL's "equal weighting"); a model without weighting (fixed loss
weights, no `weight_<task>` metrics) is timed too, and each setting reports
Equal's step over its step. Every model of one setting is built, traced and
warmed up, then timed in interleaved rounds (order rotated per round); a
ratio is the median over rounds of the per-round ratio to Equal. A model whose steps differ
periodically (Nash-MTL with `update_every=N`) runs N steps per round and
counts their mean. CPU time of one TensorFlow thread by default (see
bench_overhead.py for why). Also reports each trunk's forward and
forward+backward times. Writes `benchmarks/results/gradient_overhead.json`
and `.md`.

Params mode has a floor that no implementation of exact per-task gradients
goes below: T backward passes through the trunk. The script times the bare
trunk (plain TensorFlow, no keras_mtl) doing one forward pass and T backward
passes from one persistent tape, and reports, per setting,

    floor = (Equal + that time - the trunk's forward+backward) / Equal,

Equal's step with its one trunk backward pass replaced by T of them. It also
times one forward+backward pass over T copies of the batch stacked into one,
the best case for vectorising the T backward passes (as `tape.jacobian`'s
pfor or `vmap` would): on a CPU whose convolutions are compute-bound, it
costs T times one batch's pass, so vectorising cannot get under the floor.
"""

import argparse
import gc
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import tasks as T  # noqa: E402
from keras_mtl import weighting as W  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_overhead import _quartiles, _step_times, _table, write_results  # noqa: E402

#: Every registered gradient-level method (a plugin's too), by class name.
METHODS = {cls.__name__: cls for cls in W.methods("gradient").values()}
# LibMTL 1.1.5 (PyTorch 2.13 CPU) on the same model, step time / equal
# weighting, as measured on this machine and quoted in the issue.
LIBMTL = {
    (3, "params"): {"PCGrad": 2.12, "MGDA": 2.22, "CAGrad": 2.18, "IMTL": 2.12,
                    "NashMTL": 3.91, "GradVac": 2.14, "GradNorm": 2.14},
    (3, "representation"): {"MGDA": 1.14, "GradNorm": 1.06, "IMTL": 1.06},
    (10, "params"): {"PCGrad": 5.20, "MGDA": 6.43, "CAGrad": 5.21, "NashMTL": 8.35,
                     "IMTL": 5.04, "GradVac": 5.98, "GradNorm": 4.95},
    (10, "representation"): {"MGDA": 1.99, "GradNorm": 1.27, "IMTL": 1.27},
}


def reference_trunk(pool=True):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    if pool:
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="reference_trunk")


def reference_tasks(num_tasks):
    if num_tasks == 3:
        return [T.MulticlassClassification("c", 3), T.Regression("r0"), T.Regression("r1")]
    return [T.Regression(f"r{i}") for i in range(num_tasks)]


SHAPES_TASKS = {
    3: ["shape", "size", "segmentation"],
    6: ["shape", "count", "size", "position", "segmentation", "depth"],
}


def hydranet_tasks(num_tasks):
    from keras_mtl.datasets import shapes

    kinds = {
        "shape": lambda: T.MulticlassClassification("shape", shapes.NUM_CLASSES),
        "count": lambda: T.Regression("count"),
        "size": lambda: T.Regression("size"),
        "position": lambda: T.Regression("position", units=2),
        "segmentation": lambda: T.Segmentation("segmentation", shapes.NUM_SEGMENTATION_CLASSES),
        "depth": lambda: T.DenseRegression("depth"),
    }
    return [kinds[name]() for name in SHAPES_TASKS[num_tasks]]


def hydranet_data(tasks, batch_size):
    from keras_mtl.datasets import shapes

    images, labels = shapes.generate(
        "train", batch_size, image_size=32, tasks=[t.name for t in tasks]
    )
    return images, labels


def data(tasks, batch_size):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype("float32")
    y = {
        t.name: rng.integers(0, 3, (batch_size,)) if t.sparse_labels
        else rng.normal(size=(batch_size, 1)).astype("float32")
        for t in tasks
    }
    return x, y


def build(tasks, weighting, setup="reference"):
    keras.utils.set_random_seed(0)
    if setup == "reference":
        model = keras_mtl.build_model(reference_trunk(), tasks, head_units=())
    else:
        model = keras_mtl.build_model(reference_trunk(pool=False), tasks, head_units=(32,))
    model.compile(optimizer="adam", metrics={t.name: [] for t in tasks}, weighting=weighting)
    return model


def trunk_times(x, repeats, task_counts, pool=True, backward_counts=()):
    """Median CPU ms of the bare trunk: forward, forward+backward, forward +
    T backward passes (`backward_T<T>`: the exact per-task gradients'
    floor), and forward+backward of T copies of the batch stacked into one
    (`stacked_T<T>`: the best case for vectorising the T backward passes,
    one pass over a T times larger batch). `backward_counts`: more numbers
    of backward passes to time (S·T for methods that take S gradient
    samples per task)."""
    import tensorflow as tf

    trunk = reference_trunk(pool)
    variables = trunk.trainable_variables

    @tf.function
    def forward(x):
        return trunk(x, training=True)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(trunk(x, training=True))
        return tape.gradient(loss, variables)

    def per_task_backward(num_tasks):
        @tf.function
        def fn(x):
            with tf.GradientTape(persistent=True) as tape:
                z = trunk(x, training=True)
            # Distinct output gradients, as T tasks would give.
            return [
                tape.gradient(z, variables, output_gradients=tf.fill(tf.shape(z), t + 1.0))
                for t in range(num_tasks)
            ]

        return fn

    x = tf.convert_to_tensor(x / 255.0)
    result = {}
    functions = [("forward", forward, x), ("forward_backward", forward_backward, x)]
    for t in task_counts:
        functions += [
            (f"backward_T{t}", per_task_backward(t), x),
            (f"stacked_T{t}", forward_backward, tf.tile(x, [t, 1, 1, 1])),
        ]
    for t in sorted(set(backward_counts) - set(task_counts)):
        functions.append((f"backward_T{t}", per_task_backward(t), x))
    for name, fn, inputs in functions:
        fn(inputs)
        samples = []
        for _ in range(repeats):
            start = time.process_time()
            fn(inputs)
            samples.append(time.process_time() - start)
        result[name] = 1000 * _quartiles(samples)[1]
    return result


#: The numbers of gradient samples per task the methods take (SDMGrad's
#: and MoDo's 3: S·T backward passes through the trunk, their floor).
SAMPLES = sorted({cls.gradient_samples for cls in METHODS.values()} - {1})


#: Extra rows: Nash-MTL solving every 2nd step (LibMTL's default, and ours,
#: is every step).
VARIANTS = {"NashMTL, update_every=2": (W.NashMTL, {"update_every": 2})}


def run(setup, num_tasks, args, trunk_ms):
    if setup == "reference":
        tasks = reference_tasks(num_tasks)
        x, y = data(tasks, args.batch_size)
    else:
        tasks = hydranet_tasks(num_tasks)
        x, y = hydranet_data(tasks, args.batch_size)
    # The baseline is the Equal method, as in bench_weighting_overhead.py and
    # LibMTL's "equal weighting"; a model without weighting (fixed loss
    # weights, no `weight_<task>` metrics) is timed too, for reference.
    models = {"Equal": build(tasks, W.Equal(), setup), "no weighting": build(tasks, None, setup)}
    steps = {}
    for name, cls in METHODS.items():
        for mode in cls.supported_modes:
            models[f"{name} ({mode})"] = build(tasks, cls(mode=mode), setup)
    for name, (cls, kwargs) in VARIANTS.items():
        models[f"{name} (params)"] = build(tasks, cls(mode="params", **kwargs), setup)
    for name, model in models.items():
        steps[name] = getattr(model.weighting, "update_every", 1)
        for _ in range(1 + args.warmup * steps[name]):
            model.train_on_batch(x, y)
        print(f"{setup} T={num_tasks}: traced {name}", flush=True)
    names = list(models)
    times = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = _step_times(models[name], x, y, steps[name])
                times[name].append(cpu if args.clock == "cpu" else wall)
    finally:
        gc.enable()
    rows = []
    for name in names[2:]:
        method, mode = name.split(" (")
        mode = mode.rstrip(")")
        ratio = _quartiles([a / b for a, b in zip(times[name], times["Equal"])])[1]
        peer = None
        if setup == "reference":
            peer = LIBMTL.get((num_tasks, mode), {}).get(method)
        weighting = models[name].weighting
        rows.append({
            "method": method, "mode": mode, "ratio": round(ratio, 3),
            "samples": weighting.gradient_samples if mode == "params" else 1,
            "libmtl": peer, "vs_libmtl": None if peer is None else round(ratio / peer, 3),
        })
    equal_ms = 1000 * _quartiles(times["Equal"])[1]
    trunk = trunk_ms[setup]
    def floor(passes):  # Equal's step with `passes` trunk backward passes instead of one
        return (equal_ms + trunk[f"backward_T{passes}"] - trunk["forward_backward"]) / equal_ms

    unweighted = _quartiles([a / b for a, b in zip(times["Equal"], times["no weighting"])])[1]
    return {
        "equal_step_ms": round(equal_ms, 2), "equal_vs_no_weighting": round(unweighted, 3),
        "params_floor": round(floor(num_tasks), 3),
        "sample_floors": {str(s): round(floor(s * num_tasks), 3) for s in SAMPLES},
        "ratios": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30, help="rounds")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (0: default)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    x, _ = data(reference_tasks(3), args.batch_size)
    results = {"settings": vars(args)}
    settings = [("reference", 3), ("reference", 10), ("hydranet", 3), ("hydranet", 6)]
    results["trunk_ms"] = {
        setup: {
            k: round(v, 2)
            for k, v in trunk_times(
                x, 50, [t for s, t in settings if s == setup], pool=setup == "reference",
                backward_counts=[n * t for s, t in settings if s == setup for n in SAMPLES],
            ).items()
        }
        for setup in ("reference", "hydranet")
    }
    for setup, num_tasks in settings:
        results[f"{setup}_T{num_tasks}"] = run(setup, num_tasks, args, results["trunk_ms"])
    markdown = markdown_report(results)
    print(markdown)
    write_results(args.output, "gradient_overhead", results, markdown, echo=False)


#: The issue's goals: representation-mode step / Equal's (by T), and a
#: params-mode step / the params-mode floor.
REPRESENTATION_GOALS = {3: 1.05, 10: 1.10}
PARAMS_GOAL = 1.05


def markdown_report(results):
    """The report of `results` (this benchmark's JSON)."""
    args = argparse.Namespace(**results["settings"])
    settings = [tuple(key.rsplit("_T", 1)) for key in results if "_T" in key]
    settings = [(setup, int(num_tasks)) for setup, num_tasks in settings]
    trunk = results["trunk_ms"]
    lines = [
        "# Gradient-level methods: step time / Equal's",
        "",
        f"Batch {args.batch_size}, {args.repeats} interleaved rounds, {args.clock} time, "
        f"{args.threads or 'default'} TensorFlow thread(s). Trunk forward / forward+backward: "
        f"reference {trunk['reference']['forward']:.2f} / "
        f"{trunk['reference']['forward_backward']:.2f} ms, HydraNet (no pooling) "
        f"{trunk['hydranet']['forward']:.2f} / {trunk['hydranet']['forward_backward']:.2f} ms. "
        "LibMTL: its figure on this machine (reference model only); 'vs LibMTL' = ours / "
        "theirs. Nash-MTL's default, like LibMTL's, solves every step; the "
        "`update_every=2` row solves every 2nd step (mean over both). Params-mode "
        "floor: Equal's step with T trunk backward passes instead of one (the bare "
        "trunk's forward + T backward passes, plain TensorFlow); exact per-task "
        "gradients back-propagated through the trunk cannot cost less. 'Stacked': the "
        "trunk's forward+backward over T copies of the batch in one pass / over one "
        "batch (T would mean that vectorising the T backward passes saves nothing). "
        f"Goals: representation mode <= {REPRESENTATION_GOALS[3]} (T=3) / "
        f"{REPRESENTATION_GOALS[10]} (T=10) x Equal; params mode <= {PARAMS_GOAL} x the "
        "floor ('/ floor'); Nash-MTL with `update_every` is not held to them. "
        "Methods that take S independent gradient samples per task (SDMGrad, MoDo: "
        "S = 3) need S·T backward passes: their floor is Equal's step with S·T.",
        "",
    ]
    for setup, num_tasks in settings:
        result = results[f"{setup}_T{num_tasks}"]
        lines += [
            f"## {'Reference model' if setup == 'reference' else 'Shapes HydraNet'}, "
            f"T={num_tasks} (Equal: {result['equal_step_ms']:.1f} ms)",
            "",
            f"Equal / no weighting: {result['equal_vs_no_weighting']:.2f}. "
            f"Params-mode floor: {result['params_floor']:.2f}"
            + "".join(f" ({s} samples per task: {v:.2f})"
                      for s, v in result.get("sample_floors", {}).items())
            + ". Stacked: "
            f"{trunk[setup][f'stacked_T{num_tasks}'] / trunk[setup]['forward_backward']:.2f}.",
            "",
            _table(
                ["method", "mode", "ratio", "/ floor", "goal", "met", "LibMTL", "vs LibMTL"],
                [[r["method"], r["mode"], f"{r['ratio']:.2f}", *_goal(r, result, num_tasks),
                  "" if r["libmtl"] is None else f"{r['libmtl']:.2f}",
                  "" if r["vs_libmtl"] is None else f"{r['vs_libmtl']:.2f}"]
                 for r in result["ratios"]],
            ),
            "",
        ]
    lines.append("Written by `python benchmarks/bench_gradient_overhead.py`.\n")
    return "\n".join(lines)


def _goal(row, result, num_tasks):
    """`(/ floor, goal, met)` cells of a row."""
    if "update_every" in row["method"]:
        return ["", "", ""]
    if row["mode"] == "params":
        samples = row.get("samples", 1)
        floor = result["params_floor"] if samples == 1 else result["sample_floors"][str(samples)]
        over = row["ratio"] / floor
        return [f"{over:.3f}", f"<= {PARAMS_GOAL} x floor", "yes" if over <= PARAMS_GOAL else "NO"]
    goal = REPRESENTATION_GOALS.get(num_tasks)
    if goal is None:
        return ["", "", ""]
    return ["", f"<= {goal}", "yes" if row["ratio"] <= goal else "NO"]


if __name__ == "__main__":
    main()

"""Benchmark: the cost of multi-dataset interleaving (`keras_mtl.data`).

Two ratios (issue 5), measured in one run on the embedded shapes data:

1. step time: `model.fit` seconds per step on a two-source interleaved
   dataset / on one dataset of the same batch shape (every task labelled,
   prefetched the same way). Goal <= 1.05: interleaving costs the model
   nothing it can see.
2. throughput: batches per second the interleaved pipeline yields on its own
   / steps per second the model trains. Goal >= 10: the pipeline never
   starves the model.

The two sources are halves of the same scenes, one labelled for `shape` and
`count`, the other for `size` and `position`; the single dataset holds all the
scenes with all four labels. Every configuration gets its own model of the
same architecture; fits alternate between configurations (round after round)
so that a slow spell of a shared machine hits them all, and each ratio uses
medians over rounds. The first epoch of each model (tracing) is left out.

    python benchmarks/bench_data.py                 # writes benchmarks/results/
    python benchmarks/bench_data.py --rounds 3 --steps 16 --image-size 32   # quick
    python benchmarks/bench_data.py --threads 1 --out /tmp/one_thread   # as bench_overhead

Results: `benchmarks/results/bench_data.json` and `bench_data.md`.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import data  # noqa: E402
from keras_mtl.datasets import shapes  # noqa: E402

SOURCES = {"classes": ["shape", "count"], "geometry": ["size", "position"]}
TASKS = [t for tasks in SOURCES.values() for t in tasks]
GOALS = {"step_time_ratio": 1.05, "throughput_ratio": 10.0}


def make_tasks():
    return [
        keras_mtl.tasks.MulticlassClassification("shape", num_classes=shapes.NUM_CLASSES),
        keras_mtl.tasks.Regression("count"),
        keras_mtl.tasks.Regression("size"),
        keras_mtl.tasks.Regression("position", units=2),
    ]


def make_model(image_size, filters, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for i in range(3):
        x = keras.layers.Conv2D(filters * 2**i, 3, strides=2, padding="same", activation="relu")(x)
    model = keras_mtl.MultiTaskModel(keras.Model(inputs, x), make_tasks(), head_units=(64,))
    model.compile(optimizer="adam")
    return model


def make_datasets(steps, batch_size, image_size, seed):
    """`{configuration: dataset}`, each `steps` batches of the same shape."""
    images, labels = shapes.generate("train", steps * batch_size, image_size, TASKS, seed)
    half = steps * batch_size // 2
    single = tf.data.Dataset.from_tensor_slices((images, labels))
    single = single.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    sources = {}
    for i, (name, tasks) in enumerate(SOURCES.items()):
        part = slice(i * half, (i + 1) * half)
        sources[name] = tf.data.Dataset.from_tensor_slices(
            (images[part], {t: labels[t][part] for t in tasks})
        ).batch(batch_size)
    # The single dataset again, with the per-task sample weights (all 1) that
    # interleaved batches carry: separates the masking's cost from the mixing's.
    weights = {t: tf.ones(len(images)) for t in TASKS}
    single_weighted = tf.data.Dataset.from_tensor_slices((images, labels, weights))
    single_weighted = single_weighted.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return {
        "single": single,
        "single_weighted": single_weighted,
        "round_robin": data.interleave(sources, "round_robin"),
        "temperature": data.interleave(
            sources, "temperature", temperature=2.0, steps_per_epoch=steps, seed=seed
        ),
    }


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and CPU seconds (all threads of this process) per epoch."""

    def __init__(self):
        super().__init__()
        self.seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start[0])
        self.cpu_seconds.append(time.process_time() - self._start[1])


def iterator_cpu_seconds(ds, repeats=5):
    """CPU seconds to start an iteration and get its first batch: a fixed
    cost per epoch, paid twice (Keras starts one iterator at each epoch start
    and one more, unused, at each epoch end)."""
    start = time.process_time()
    for _ in range(repeats):
        iterator = iter(ds)
        next(iterator)
        del iterator
    return (time.process_time() - start) / repeats


def pipeline_seconds(ds):
    """Wall and CPU seconds to pull one epoch of batches, as `fit` pulls them
    (`next`), and the number of batches."""
    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    for _ in ds:
        count += 1
    return time.perf_counter() - start, time.process_time() - cpu, count


def run(args):
    datasets = make_datasets(args.steps, args.batch_size, args.image_size, args.seed)
    for name, ds in datasets.items():
        assert int(ds.cardinality()) == args.steps, (name, int(ds.cardinality()))
    models = {
        name: make_model(args.image_size, args.filters, args.seed) for name in datasets
    }
    timers = {name: EpochTimer() for name in datasets}
    for name, model in models.items():  # tracing and warm-up, not timed
        model.fit(datasets[name], epochs=1, verbose=0)
        pipeline_seconds(datasets[name])
    pipeline = {name: [] for name in datasets}
    pipeline_cpu = {name: [] for name in datasets}
    for _ in range(args.rounds):
        for name, model in models.items():
            model.fit(datasets[name], epochs=1, verbose=0, callbacks=[timers[name]])
        for name, ds in datasets.items():
            seconds, cpu_seconds, count = pipeline_seconds(ds)
            pipeline[name].append(count / seconds)
            pipeline_cpu[name].append(cpu_seconds / count)

    def paired(values, reference):
        # Epochs of one round ran back to back: their ratio cancels the slow
        # spells of a shared machine better than a ratio of medians does.
        return statistics.median(v / r for v, r in zip(values, reference))

    results = {}
    for name in datasets:
        seconds, cpu = timers[name].seconds, timers[name].cpu_seconds
        step = statistics.median(seconds) / args.steps
        cpu_step = statistics.median(cpu) / args.steps
        batches_per_second = statistics.median(pipeline[name])
        cpu_per_batch = statistics.median(pipeline_cpu[name])
        results[name] = {
            "step_ms_median": 1e3 * step,
            "step_ms_min": 1e3 * min(seconds) / args.steps,
            "step_cpu_ms_median": 1e3 * cpu_step,
            "model_steps_per_s": 1 / step,
            "pipeline_batches_per_s": batches_per_second,
            "pipeline_cpu_ms_per_batch": 1e3 * cpu_per_batch,
            "step_time_ratio": paired(seconds, timers["single"].seconds),
            "step_time_ratio_of_minima": min(seconds) / min(timers["single"].seconds),
            "step_cpu_ratio": paired(cpu, timers["single"].cpu_seconds),
            "throughput_ratio": batches_per_second * step,
            "throughput_ratio_cpu": cpu_step / cpu_per_batch,
            "iterator_start_cpu_ms": 1e3 * iterator_cpu_seconds(datasets[name]),
            "epoch_seconds": seconds,
            "epoch_cpu_seconds": cpu,
            "pipeline_batches_per_s_per_round": pipeline[name],
        }
    return results


def write(results, args, out):
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "bench_data",
        "goals": GOALS,
        "config": vars(args) | {"out": str(args.out), "threads": args.threads or "default"},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": os.getloadavg()[0],
            "devices": [d.device_type for d in tf.config.list_physical_devices()],
        },
        "results": results,
    }
    (out / "bench_data.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# bench_data: multi-dataset interleaving",
        "",
        f"shapes {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{args.steps} steps per epoch, {args.rounds} rounds of one epoch per dataset, "
        f"CNN trunk ({args.filters}-{2 * args.filters}-{4 * args.filters} filters) "
        f"+ 4 heads; {record['machine']['cpus']} CPUs, load average "
        f"{record['machine']['load_average_1m_at_end']:.1f} at the end; "
        f"TensorFlow threads: {args.threads or 'default'}; "
        f"TF {tf.__version__}, Keras {keras.__version__}.",
        "",
        "| dataset | step ms: wall median / min, CPU | step / single (goal <= 1.05): "
        "wall paired, wall of minima, CPU paired | pipeline: batches/s, CPU ms/batch | "
        "model steps/s | pipeline / model (goal >= 10): wall, CPU | iterator start, "
        "CPU ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['step_ms_median']:.1f} / {r['step_ms_min']:.1f}, "
            f"{r['step_cpu_ms_median']:.1f} | {r['step_time_ratio']:.3f}, "
            f"{r['step_time_ratio_of_minima']:.3f}, {r['step_cpu_ratio']:.3f} | "
            f"{r['pipeline_batches_per_s']:.0f}, {r['pipeline_cpu_ms_per_batch']:.2f} | "
            f"{r['model_steps_per_s']:.1f} | {r['throughput_ratio']:.1f}, "
            f"{r['throughput_ratio_cpu']:.1f} | {r['iterator_start_cpu_ms']:.0f} |"
        )
    lines += [
        "",
        "`single`: one dataset, every task labelled, `(x, y)`. `single_weighted`: the same "
        "with `sample_weight` dicts of ones (what the masking costs). `round_robin`, "
        "`temperature` (T = 2): `keras_mtl.data.interleave` of two sources labelled for "
        "disjoint task pairs. Pipeline: batches per second pulled from the dataset alone "
        "(Python `next`, as `fit` pulls them). CPU: process time of all threads (the "
        "pipeline's included in a step), the measure that a machine shared with other "
        "jobs distorts least; wall ratios are paired per round.",
    ]
    (out / "bench_data.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch (even)")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="timed epochs per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="TensorFlow intra- and inter-op threads for the model (0: TensorFlow's "
        "default); tf.data keeps its own pool",
    )
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.steps % 2:
        parser.error("--steps must be even (two sources of steps / 2 batches)")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    results = run(args)
    print(write(results, args, args.out))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

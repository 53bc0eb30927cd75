"""Step time under Keras' mixed precision policies, over float32's.

For a few weighting methods (loss-level, and gradient-level in both modes),
and for the same layers as a stock Keras multi-output model (the reference:
what mixed precision costs Keras itself), one model per method and policy (`float32`, `mixed_float16`,
`mixed_bfloat16`), each built and compiled under its policy. The models
step in interleaved rounds on one fixed batch, as in `bench_overhead.py`
(rotated order, CPU and wall clocks, one TensorFlow thread by default); the
ratio of a method's mixed step to its float32 step is the median of the
per-round ratios.

On a CPU mixed precision is not expected to be faster (float16 matmuls have
no fast path; bfloat16 has one only where oneDNN finds AVX512-BF16 / AMX):
the figures say what the casts and, for float16, the loss scaling cost. On a
GPU with tensor cores it is how people train; run it there when one is at
hand (`--threads 0`, `--clock wall`).

Run: `python benchmarks/bench_mixed_precision.py` (writes
`benchmarks/results/mixed_precision.json` and `.md`; a few minutes on a
2-core CPU).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_overhead import HERE  # noqa: E402
from bench_overhead import _plain_model  # noqa: E402
from bench_overhead import HEAD_UNITS  # noqa: E402
from bench_overhead import _quartiles  # noqa: E402
from bench_overhead import _table  # noqa: E402
from bench_overhead import bench_batch  # noqa: E402
from bench_overhead import rotated  # noqa: E402
from bench_overhead import set_threads  # noqa: E402
from bench_overhead import write_results  # noqa: E402

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# "plain Keras": the same layers as a stock multi-output model (no
# keras_mtl): what mixed precision costs Keras itself here, the reference for
# the methods' ratios.
PLAIN = "plain Keras (reference)"
METHODS = {
    PLAIN: None,
    "equal": {},
    "uncertainty": {},
    "pcgrad (params)": {"name": "pcgrad", "mode": "params"},
    "mgda (representation)": {"name": "mgda", "mode": "representation"},
}


def _weighting(spec, label):
    spec = dict(spec)
    name = spec.pop("name", label)
    return keras_mtl.weighting.get_class(name)(**spec)


def _model(backbone, tasks, image_shape, label, spec, policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        if spec is None:
            return _plain_model(backbone, tasks, image_shape, with_metrics=False)
        model = keras_mtl.build_model(
            backbone, tasks, input_shape=image_shape, head_units=HEAD_UNITS
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=_weighting(spec, label),
                      metrics={t.name: [] for t in tasks})
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="MobileNetV3Small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30, help="rounds")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra- and inter-op threads (0: default)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    tasks, image_shape, x, y = bench_batch(args.image_size, args.batch_size)

    models = {}
    for label, spec in METHODS.items():
        for policy in POLICIES:
            model = _model(args.backbone, tasks, image_shape, label, spec, policy)
            for _ in range(1 + args.warmup):
                model.train_on_batch(x, y)
            models[(label, policy)] = model
            print(f"built and traced {label} / {policy}", flush=True)

    keys = list(models)
    times = {clock: {key: [] for key in keys} for clock in ("cpu", "wall")}
    gc.collect()
    gc.disable()
    try:
        for order in rotated(keys, args.repeats):
            for key in order:
                wall, cpu = time.perf_counter(), time.process_time()
                logs = models[key].train_on_batch(x, y, return_dict=True)
                times["wall"][key].append(time.perf_counter() - wall)
                times["cpu"][key].append(time.process_time() - cpu)
                if not np.isfinite(float(logs["loss"])):
                    raise RuntimeError(f"{key}: non-finite loss {logs['loss']}")
    finally:
        gc.enable()

    rows, entries = [], []
    for label in METHODS:
        base = (label, "float32")
        for policy in POLICIES:
            key = (label, policy)
            entry = {"method": label, "policy": policy}
            for clock in ("cpu", "wall"):
                q1, median, q3 = _quartiles(times[clock][key])
                paired = [a / b for a, b in zip(times[clock][key], times[clock][base])]
                r1, ratio, r3 = _quartiles(paired)
                entry[clock] = {"step_ms": round(1000 * median, 2),
                                "step_ms_q1_q3": [round(1000 * q1, 2), round(1000 * q3, 2)],
                                "ratio_to_float32": round(ratio, 3),
                                "ratio_q1_q3": [round(r1, 3), round(r3, 3)]}
            entries.append(entry)
            c = entry[args.clock]
            rows.append([label, policy, f"{c['step_ms']:.1f}", f"{c['ratio_to_float32']:.3f}",
                         f"{c['ratio_q1_q3'][0]:.3f} - {c['ratio_q1_q3'][1]:.3f}"])

    environment = {
        "keras_mtl": keras_mtl.__version__, "keras": keras.__version__,
        "backend": keras.backend.backend(), "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
    }
    settings = {"backbone": args.backbone, "image_size": args.image_size,
                "batch_size": args.batch_size, "rounds": args.repeats,
                "clock": args.clock, "tensorflow_threads": args.threads or "default"}
    markdown = "\n".join([
        "# Mixed precision: step time over float32's",
        "",
        f"{args.backbone} (random weights) at {args.image_size} px, batch {args.batch_size}, "
        f"3 tasks (`bench_overhead.bench_tasks`), Adam; {args.repeats} interleaved rounds; "
        f"keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPU core(s), "
        f"TensorFlow threads: {args.threads or 'default'}; clock: {args.clock}. Ratio: median "
        "of the per-round ratios to the same method's float32 step, with quartiles. No GPU "
        "was used: see the module docstring for what a CPU measures.",
        "",
        _table(["method", "policy", f"{args.clock} ms/step", "ratio to float32", "quartiles"],
               rows),
        "",
        "Written by `python benchmarks/bench_mixed_precision.py`.",
        "",
    ])
    write_results(args.output, "mixed_precision",
                  {"benchmark": "mixed_precision", "settings": settings,
                   "environment": environment, "results": entries}, markdown)


if __name__ == "__main__":
    main()

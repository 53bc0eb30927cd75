"""What does a loss-level weighting method cost per training step?

Each loss-level method of `keras_mtl.weighting` against `Equal` on the same
model (the shapes HydraNet of `bench_overhead.py`: its backbone, its three
heads) and the same batch. Goal: train-step time ratio <= 1.02 for every
method (LibMTL's uncertainty and DWA measure 1.00 - 1.01).

Method (as in `bench_overhead.py`, whose helpers it uses): every model is
built and compiled first, its first `train_on_batch` (tracing) and a few
warm-up steps are excluded; then in each round every model runs `--steps`
steps on the same batch, in an order rotated each round. The ratio of a
method to Equal is the median over rounds of the per-round ratio, with its
quartiles. Goals are checked on this process's CPU time (`--clock`), which a
machine shared with other work does not inflate; wall time is reported too.

DWA's epoch hook (`on_epoch_end`, once an epoch, outside the step) is not in
`train_on_batch`; its per-step cost is the loss accumulation, which is.

Run: `python benchmarks/bench_weighting_overhead.py` (writes
`benchmarks/results/weighting_overhead.json` and `.md`; a few minutes on a
2-core CPU). Exits 0 whether or not the goal is met: it measures.
"""

import argparse
import gc
import inspect
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl import weighting as W  # noqa: E402
from keras_mtl.datasets import shapes  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_overhead import HEAD_UNITS, _quartiles, _step_times, _table, bench_tasks, write_results  # noqa: E402

GOAL = 1.02


def methods(tasks, y):
    """Class name -> factory of every registered loss-level method (a
    plugin's too), Equal first: defaults, the arguments the tasks
    determine, seed 0 for random ones."""
    names = [t.name for t in tasks]
    special = {
        W.Static: lambda: {"weights": {n: 1.0 for n in names}},
        W.InverseSize: lambda: {"counts": W.count_labels(y, tasks)},
    }

    def factory(cls):
        def make():
            arguments = {**cls.arguments_from_tasks(tasks), **special.get(cls, dict)()}
            if "seed" in inspect.signature(cls).parameters:
                arguments["seed"] = 0
            return cls(**arguments)

        return make

    classes = sorted(W.methods("loss").values(), key=lambda c: c is not W.Equal)
    return {cls.__name__: factory(cls) for cls in classes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="MobileNetV3Small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=1, help="steps per model and round")
    parser.add_argument("--repeats", type=int, default=60, help="rounds")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    tasks = bench_tasks()
    image_shape = (args.image_size, args.image_size, 3)
    x, labels = shapes.generate(
        "train", args.batch_size, args.image_size, tasks=[t.name for t in tasks]
    )
    y = {"shape": labels["shape"], "size": labels["size"][:, None], "position": labels["position"]}

    models, first_step = {}, {}
    for name, make in methods(tasks, y).items():
        keras.utils.set_random_seed(0)  # same initial weights for every model
        model = keras_mtl.build_model(
            args.backbone, tasks, input_shape=image_shape, head_units=HEAD_UNITS
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            metrics={t.name: [] for t in tasks},
            weighting=make(),
        )
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first_step[name] = time.perf_counter() - start
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        models[name] = model
        print(f"built and traced {name}: first step {first_step[name]:.1f} s", flush=True)

    names = list(models)
    clocks = ("cpu", "wall")
    times = {clock: {name: [] for name in names} for clock in clocks}
    gc.collect()
    gc.disable()  # a collection inside one model's step would bias it
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = _step_times(models[name], x, y, args.steps)
                times["wall"][name].append(wall)
                times["cpu"][name].append(cpu)
    finally:
        gc.enable()
    stats = {c: {n: _quartiles(v) for n, v in times[c].items()} for c in clocks}

    ratios = []
    for name in names[1:]:
        entry = {"method": name}
        for clock in clocks:
            paired = [a / b for a, b in zip(times[clock][name], times[clock]["Equal"])]
            q1, ratio, q3 = _quartiles(paired)
            entry[clock] = {
                "ratio": round(ratio, 4),
                "ratio_q1_q3": [round(q1, 4), round(q3, 4)],
                "ratio_of_medians": round(stats[clock][name][1] / stats[clock]["Equal"][1], 4),
            }
        entry["meets_goal"] = bool(entry[args.clock]["ratio"] <= GOAL)
        ratios.append(entry)

    results = {
        "benchmark": "weighting_overhead",
        "settings": {
            "backbone": args.backbone,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "tasks": [f"{t.name} ({type(t).__name__})" for t in tasks],
            "head_units": list(HEAD_UNITS),
            "warmup_steps": args.warmup,
            "steps_per_model_and_round": args.steps,
            "rounds": args.repeats,
            "goal": GOAL,
            "goal_clock": args.clock,
        },
        "environment": {
            "keras_mtl": keras_mtl.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "models": {
            name: {
                **{
                    f"{clock}_step_ms": round(1000 * stats[clock][name][1], 2)
                    for clock in clocks
                },
                "first_step_s": round(first_step[name], 2),
            }
            for name in names
        },
        "ratios": ratios,
    }

    def spread(pair):
        return f"{pair[0]:.3f} - {pair[1]:.3f}"

    rows = [
        [r["method"], f"{r['cpu']['ratio']:.3f}", spread(r["cpu"]["ratio_q1_q3"]),
         f"{r['wall']['ratio']:.3f}", spread(r["wall"]["ratio_q1_q3"]),
         "yes" if r["meets_goal"] else "NO"]
        for r in ratios
    ]
    model_rows = [
        [name, f"{m['cpu_step_ms']:.1f}", f"{m['wall_step_ms']:.1f}", f"{m['first_step_s']:.1f}"]
        for name, m in results["models"].items()
    ]
    markdown = "\n".join([
        "# Loss-level weighting overhead",
        "",
        f"Train-step time of each method / Equal's: {args.backbone} (random "
        f"weights) at {args.image_size} px, batch {args.batch_size}, heads: "
        f"{', '.join(results['settings']['tasks'])}; {args.repeats} interleaved "
        f"rounds of {args.steps} `train_on_batch` step(s); keras {keras.__version__} "
        f"({keras.backend.backend()}), {os.cpu_count()} CPU core(s). Goal: <= "
        f"{GOAL} on {args.clock} time.",
        "",
        _table(["method", "ratio (CPU)", "quartiles (CPU)", "ratio (wall)",
                "quartiles (wall)", f"<= {GOAL}"], rows),
        "",
        _table(["model", "CPU ms/step", "wall ms/step", "first step (s)"], model_rows),
        "",
        "Written by `python benchmarks/bench_weighting_overhead.py`.",
        "",
    ])
    write_results(args.output, "weighting_overhead", results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

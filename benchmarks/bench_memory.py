"""Peak resident memory of a training process, one process per configuration.

What holding T per-task gradients costs in memory. In params mode a
gradient-level method (PCGrad, MGDA, ...) combines the T exact gradients of
the shared trunk's P trainable parameters: a (T, P) float32 matrix of
T*P*4 bytes, which nothing else in the step needs. Representation mode and
loss-level methods (Equal) never hold it. Goals (the memory issue):

- params mode: peak <= Equal's peak + 1.2 * T*P*4 bytes (the gradient
  matrix and little else);
- a bfloat16 gradient matrix, where the library offers one: peak <=
  Equal's peak + 0.6 * T*P*4 bytes.

Method: each configuration runs in its own child process (this file with
`--child <json>`), so one configuration's peak cannot hide another's: the
child imports keras_mtl, builds `build_model(backbone, T regression tasks)`
with random weights, compiles it with Adam and the configuration's
weighting, and runs `--steps` `train_on_batch` steps on one random batch.
Its peak resident set size is the kernel's high-water mark of the process,
read by the child (`getrusage(RUSAGE_SELF).ru_maxrss`, checked against
`VmHWM` in /proc/self/status) after import, after build + compile, after the
first step (tracing) and after the last; the parent also reads the child's
`ru_maxrss` from `os.wait4`, which covers the whole life of the child,
even one that failed or was killed. The resident set also holds what
TensorFlow builds for a step (graphs, their optimised copies, kernels),
which grows with the number of backward passes in the graph; the children
run TensorFlow's BFC allocator on the CPU, whose count of the bytes held by
tensors (`get_memory_info`) gives a second peak, of tensors alone, on which
the goals are read as well. Children run one at a time, so that
they do not compete for memory; `--repeats` children per configuration (3 by
default: two runs of one configuration can differ by 100 MiB or more), in
rounds, and a row gives the median peak and the range. A `no_training`
child builds and compiles the Equal model but runs no step: the footprint
of TensorFlow and the model itself (Adam's two moment slots, 2*P*4 bytes,
appear at the first step).

The parent process imports neither TensorFlow nor keras_mtl: a child that
cannot import or build (a broken checkout, an unknown backbone, a method
without the asked-for argument) becomes a row with its error, and the
benchmark still writes its results.

Two `plain_*` configurations train the same model with a hand-written
TensorFlow step instead of keras_mtl's (`plain_step`): one backward pass,
and T per-task backward passes held, their Gram matrix and combination.
Their difference is what TensorFlow itself needs for params mode, the
floor keras_mtl's rows are read against. One TensorFlow thread by default, as
in the timing benchmarks: ops then run one at a time, so the peak does not
depend on which of them happened to overlap.

Run: `python benchmarks/bench_memory.py` (writes
`benchmarks/results/memory.json` and `memory.md`; ResNet50 at 64 px, batch
16, T=10, 3 runs: ~12 minutes on a 2-core CPU, most of it tracing).
`--quick`: a small CNN at 32 px, T=3, for a smoke run. Exits 0 whether or
not the goals are met: it measures.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 2**20

#: Configurations: the weighting method (a `keras_mtl.weighting` registry
#: name), its constructor arguments, whether to train, and the goal as a
#: factor of T*P*4 bytes over Equal's peak (None: reported, no goal).
#: `"bfloat16": True` adds `--bfloat16-argument` to the constructor
#: arguments. Add a row here to measure another method or option.
CONFIGS = {
    "no_training": {"method": "equal", "kwargs": {}, "train": False, "goal": None},
    "equal": {"method": "equal", "kwargs": {}, "goal": None},
    "pcgrad_params": {"method": "pcgrad", "kwargs": {"mode": "params"}, "goal": 1.2},
    "mgda_params": {"method": "mgda", "kwargs": {"mode": "params"}, "goal": 1.2},
    "pcgrad_representation": {
        "method": "pcgrad", "kwargs": {"mode": "representation"}, "goal": None,
    },
    "pcgrad_params_bfloat16": {
        "method": "pcgrad", "kwargs": {"mode": "params"}, "bfloat16": True, "goal": 0.6,
    },
    "mgda_params_bfloat16": {
        "method": "mgda", "kwargs": {"mode": "params"}, "bfloat16": True, "goal": 0.6,
    },
    # The same model trained by a hand-written TensorFlow step, no keras_mtl
    # step (`plain_step`): what TensorFlow itself needs for one backward pass
    # (`plain_equal`) and for T exact trunk gradients held, their Gram matrix
    # and their combination (`plain_params`). Their difference, in units of
    # T*P*4, is the floor the params-mode goal is measured against.
    "plain_equal": {"method": "equal", "kwargs": {}, "plain": "equal", "goal": None},
    "plain_params": {"method": "equal", "kwargs": {}, "plain": "params", "goal": None},
}
DEFAULT_CONFIGS = [name for name, c in CONFIGS.items() if not c.get("bfloat16")]
BFLOAT16_CONFIGS = [name for name, c in CONFIGS.items() if c.get("bfloat16")]
#: The constructor argument that asks for a bfloat16 gradient matrix
#: (`GradientWeighting(gradient_dtype=...)`).
BFLOAT16_ARGUMENT = "gradient_dtype=bfloat16"

FULL = {"backbone": "ResNet50", "image_size": 64, "batch_size": 16, "tasks": 10, "steps": 3,
        "repeats": 3}
QUICK = {"backbone": "small_cnn", "image_size": 32, "batch_size": 8, "tasks": 3, "steps": 2,
         "repeats": 1}
#: Printed before the child's one result line, so that nothing else a
#: library prints on stdout can be taken for it.
RESULT_MARKER = "BENCH_MEMORY_RESULT "


# --- child --------------------------------------------------------------------
def _peaks_mib():
    """`(ru_maxrss, VmHWM, VmRSS)` of this process, MiB."""
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    status = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    status[key] = int(value.split()[0]) / 1024
    except OSError:  # not Linux: ru_maxrss alone
        pass
    return rusage, status.get("VmHWM"), status.get("VmRSS")


def _stage(stages, name, started):
    rusage, hwm, rss = _peaks_mib()
    stages[name] = {
        "peak_mib": round(rusage, 1),
        "vmhwm_mib": None if hwm is None else round(hwm, 1),
        "rss_mib": None if rss is None else round(rss, 1),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _constructor_arguments(cls):
    """Named arguments of `cls` and of the `__init__`s it forwards to."""
    import inspect

    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "args", "kwargs"}


def _trunk(backbone, image_size):
    if backbone == "small_cnn":
        from keras_mtl.tuning import small_cnn

        return small_cnn((image_size, image_size, 3))
    return backbone


def plain_step(model, x, y, mode):
    """A `tf.function` training step of `model` with no keras_mtl step: mean
    squared errors, Adam. `mode="equal"`: one backward pass of their sum.
    `mode="params"`: a persistent tape, one backward pass per task for the
    trunk's variables (the T gradients held as per-variable lists), their
    Gram matrix summed variable by variable, weights from it (a softmax of
    minus its diagonal: any function of the Gram matrix needs all of it),
    and each variable's combination formed on its own: what a params-mode
    method must do, written directly in TensorFlow."""
    import tensorflow as tf

    names = model.task_names
    trunk_variables = model.trunk.trainable_variables
    head_variables = [v for n in names for v in model.heads[n].trainable_variables]
    variables = trunk_variables + head_variables
    model.optimizer.build(variables)
    x = tf.constant(x)
    y = {n: tf.constant(v) for n, v in y.items()}

    @tf.function
    def step():
        with tf.GradientTape(persistent=mode == "params") as tape:
            z = model.representation(x, training=True)
            losses = [tf.reduce_mean(tf.square(model.heads[n](z, training=True) - y[n]))
                      for n in names]
            total = tf.add_n(losses)
        if mode == "equal":
            grads = tape.gradient(total, variables)
        else:
            parts = [tape.gradient(loss, trunk_variables) for loss in losses]
            gram = tf.zeros((len(names), len(names)))
            for k in range(len(trunk_variables)):
                with tf.control_dependencies([gram]):  # one variable's block at a time
                    block = tf.stack([tf.reshape(p[k], [-1]) for p in parts])
                    gram = gram + tf.matmul(block, block, transpose_b=True)
            weights = tf.nn.softmax(-tf.linalg.diag_part(gram))
            grads, previous = [], weights
            for k in range(len(trunk_variables)):
                with tf.control_dependencies([previous]):
                    previous = tf.add_n([weights[t] * p[k] for t, p in enumerate(parts)])
                grads.append(previous)
            grads += tape.gradient(total, head_variables)
        model.optimizer.apply(grads, variables)
        return total

    return step


def run_child(config):
    """Runs one configuration in this process; returns its result dict."""
    started = time.perf_counter()
    stages = {}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    if config["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    import keras_mtl
    from keras_mtl import weighting as W

    result = {"keras_mtl_file": keras_mtl.__file__, "keras_mtl_version": keras_mtl.__version__,
              "keras": keras.__version__, "tensorflow": tf.__version__,
              "backend": keras.backend.backend()}
    _stage(stages, "import", started)

    weighting = W.get(config["method"])
    cls = type(weighting)
    kwargs = dict(config["kwargs"])
    if config.get("bfloat16"):
        name, _, value = config["bfloat16_argument"].partition("=")
        if name not in _constructor_arguments(cls):
            result.update(stages=stages, status="unsupported", note=(
                f"keras_mtl.weighting.{cls.__name__} has no `{name}` argument (keras_mtl "
                f"in {os.path.dirname(keras_mtl.__file__)}): no bfloat16 gradient matrix "
                "there yet; not run"))
            return result
        kwargs[name] = value
    if kwargs:
        weighting = cls(**kwargs)

    keras.utils.set_random_seed(0)
    tasks = [keras_mtl.tasks.Regression(f"t{i}") for i in range(config["tasks"])]
    shape = (config["image_size"], config["image_size"], 3)
    model = keras_mtl.build_model(
        _trunk(config["backbone"], config["image_size"]), tasks, input_shape=shape,
        weights=None, head_units=tuple(config["head_units"]),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  metrics={t.name: [] for t in tasks}, weighting=weighting)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (config["batch_size"], *shape)).astype("float32")
    y = {t.name: rng.normal(size=(config["batch_size"], 1)).astype("float32") for t in tasks}
    trunk = model.trunk
    result.update(
        trunk_parameters=sum(int(np.prod(v.shape)) for v in trunk.trainable_variables),
        trunk_parameters_all=trunk.count_params(),
        model_parameters=model.count_params(),
        weighting=f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})",
        mode=getattr(weighting, "mode", None),
    )
    _stage(stages, "build_compile", started)

    step_s = []
    if config.get("plain"):
        train = plain_step(model, x, y, config["plain"])
        result["weighting"] = f"plain TensorFlow step ({config['plain']})"
    if config.get("train", True):
        for step in range(config["steps"]):
            start = time.perf_counter()
            if config.get("plain"):
                logs = {"loss": train()}
            else:
                logs = model.train_on_batch(x, y, return_dict=True)
            step_s.append(round(time.perf_counter() - start, 3))
            if step == 0:
                _stage(stages, "first_step", started)
        _stage(stages, "last_step", started)
        result["loss"] = float(logs["loss"])
    result.update(stages=stages, step_s=step_s, status="ok",
                  jit_compile=bool(getattr(model, "jit_compile", False)),
                  tensor_peak_mib=_tensor_peak_mib(tf))
    return result


def _tensor_peak_mib(tf):
    """The most bytes TensorFlow's tensors held at once on the CPU (its BFC
    allocator's count, which the parent turns on), MiB; None where that
    allocator is not in use."""
    try:
        return round(tf.config.experimental.get_memory_info("CPU:0")["peak"] / MIB, 1)
    except ValueError:
        return None


def child_main(config_json):
    config = json.loads(config_json)
    try:
        result = run_child(config)
    except Exception as error:  # reported as the configuration's row
        import traceback

        traceback.print_exc()
        result = {"status": "error", "error": f"{type(error).__name__}: {error}"}
    rusage, hwm, _ = _peaks_mib()
    result["peak_mib"] = round(rusage, 1)
    result["vmhwm_mib"] = None if hwm is None else round(hwm, 1)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# --- parent -------------------------------------------------------------------
def run_config(name, config, timeout):
    """Runs one configuration in a child; its result, never an exception."""
    # TensorFlow's BFC allocator on the CPU counts the bytes its tensors
    # hold (the `tensors` columns), apart from the graphs, kernels and
    # libraries that the resident set also holds.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CPU_ALLOCATOR_USE_BFC="true")
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)]
    started = time.perf_counter()
    # Files, not pipes: the parent then only waits, with `os.wait4`, which
    # returns the child's own rusage (its peak RSS seen from outside).
    with open(os.devnull, "rb") as stdin, _temporary() as out, _temporary() as err:
        process = subprocess.Popen(command, stdin=stdin, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    wall = time.perf_counter() - started
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if lines:
        result = json.loads(lines[-1][len(RESULT_MARKER):])
    else:
        why = (f"killed after the {timeout} s timeout" if wall >= timeout
               else f"exited with status {process.returncode} without a result")
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        result = {"status": "error", "error": f"{why}: {tail}" if tail else why}
    result.update(
        config=name, returncode=process.returncode, wall_s=round(wall, 1),
        # ru_maxrss of a waited-for child: KiB on Linux.
        peak_mib_wait4=round(usage.ru_maxrss / 1024, 1),
    )
    if result["status"] == "error":
        result["stderr_tail"] = stderr.strip().splitlines()[-15:]
    return result


def _temporary():
    import tempfile

    return tempfile.TemporaryFile()


def _table(headers, rows):
    # The markdown table of bench_overhead.py, here so that the parent
    # imports neither TensorFlow nor keras_mtl.
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def write_results(output, stem, results, markdown, echo=True):
    """Writes `<output>/<stem>.json` and `<stem>.md`, as bench_overhead.py's
    helper of that name does (that module imports keras_mtl)."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output, f"{stem}.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    if echo:
        print()
        print(markdown)


def _git(directory, *args):
    try:
        done = subprocess.run(["git", "-C", directory, *args], capture_output=True,
                              text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def measured_library(results):
    """Which keras_mtl the children imported: its path, commit, changes."""
    files = {r["keras_mtl_file"] for r in results if r.get("keras_mtl_file")}
    if not files:
        return {"file": None}
    file = sorted(files)[0]
    package = os.path.dirname(file)
    root = os.path.dirname(package)
    changed = _git(root, "status", "--porcelain", "--", os.path.basename(package))
    return {
        "file": file,
        "files_differ_between_children": len(files) > 1,
        "commit": _git(root, "rev-parse", "HEAD"),
        "commit_subject": _git(root, "log", "-1", "--format=%s"),
        "uncommitted_changes": None if changed is None else changed.splitlines(),
    }


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def aggregate(name, runs):
    """One row per configuration: medians over its runs (each run a child)."""
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] != "ok"]
    row = {"config": name, "status": failed[0]["status"] if failed else "ok", "runs": runs}
    for key in ("weighting", "mode", "trunk_parameters", "trunk_parameters_all",
                "model_parameters", "keras_mtl_file", "keras_mtl_version", "note", "error"):
        source = next((r for r in (failed or ok) if key in r), None)
        if source is not None:
            row[key] = source[key]
    if failed:
        return row
    peaks = [r["peak_mib"] for r in ok]
    row["peak_mib"] = round(_median(peaks), 1)
    row["peak_mib_min_max"] = [min(peaks), max(peaks)]
    row["stage_peak_mib"] = {
        stage: round(_median([r["stages"][stage]["peak_mib"] for r in ok]), 1)
        for stage in ok[0]["stages"]
    }
    tensors = [r.get("tensor_peak_mib") for r in ok]
    row["tensor_peak_mib"] = None if None in tensors else round(_median(tensors), 1)
    row["wall_s"] = round(_median([r["wall_s"] for r in ok]), 1)
    row["step_s"] = [round(_median(times), 3) for times in zip(*(r["step_s"] for r in ok))]
    return row


def summarise(results, tasks):
    """Adds T*P*4 and each configuration's excess over Equal, in units of it."""
    by_name = {r["config"]: r for r in results}
    equal = by_name.get("equal", {})
    equal_peak = equal.get("peak_mib") if equal.get("status") == "ok" else None
    equal_tensors = equal.get("tensor_peak_mib") if equal.get("status") == "ok" else None
    parameters = next((r["trunk_parameters"] for r in results if r.get("trunk_parameters")), None)
    matrix_mib = None if parameters is None else tasks * parameters * 4 / MIB
    for r in results:
        goal = CONFIGS[r["config"]]["goal"]
        r["goal_factor"] = goal
        r["excess_over_equal_mib"] = r["excess_over_matrix"] = r["meets_goal"] = None
        r["tensor_excess_over_matrix"] = r["tensors_meet_goal"] = None
        if r["status"] != "ok" or equal_peak is None or not matrix_mib:
            continue
        if equal_tensors is not None and r.get("tensor_peak_mib") is not None:
            excess = (r["tensor_peak_mib"] - equal_tensors) / matrix_mib
            r["tensor_excess_over_matrix"] = round(excess, 3)
            if goal is not None:
                r["tensors_meet_goal"] = bool(excess <= goal)
        excess = r["peak_mib"] - equal_peak
        r["excess_over_equal_mib"] = round(excess, 1)
        r["excess_over_matrix"] = round(excess / matrix_mib, 3)
        if goal is not None:
            r["goal_mib"] = round(equal_peak + goal * matrix_mib, 1)
            r["meets_goal"] = bool(r["peak_mib"] <= r["goal_mib"])
    plain = [by_name.get(n, {}) for n in ("plain_params", "plain_equal")]
    floors = {"peak_mib": None, "tensor_peak_mib": None}
    if matrix_mib and all(r.get("status") == "ok" for r in plain):
        for key in floors:
            if None not in (plain[0].get(key), plain[1].get(key)):
                floors[key] = round((plain[0][key] - plain[1][key]) / matrix_mib, 3)
    return {"trunk_parameters": parameters, "gradient_matrix_mib": (
        None if matrix_mib is None else round(matrix_mib, 1)), "equal_peak_mib": equal_peak,
        "equal_tensor_peak_mib": equal_tensors, "plain_params_floor": floors["peak_mib"],
        "plain_params_tensor_floor": floors["tensor_peak_mib"]}


def _describe(name, settings):
    config = CONFIGS[name]
    arguments = [f"{k}={v!r}" for k, v in config["kwargs"].items()]
    if config.get("bfloat16"):
        arguments.append(settings["bfloat16_argument"])
    return f"{config['method']}({', '.join(arguments)})"


def markdown_report(settings, summary, library, results, run_s):
    rows = []
    for r in results:
        stages = r.get("stage_peak_mib", {})
        goal = r["goal_factor"]
        ok = r["status"] == "ok"
        rows.append([
            r["config"], r.get("weighting", _describe(r["config"], settings)),
            f"{r['peak_mib']:.0f}" if ok else "-",
            "{:.0f} - {:.0f}".format(*r["peak_mib_min_max"]) if ok else "-",
            f"{stages['build_compile']:.0f}" if "build_compile" in stages else "-",
            f"{stages['first_step']:.0f}" if "first_step" in stages else "-",
            "-" if r["excess_over_equal_mib"] is None else f"{r['excess_over_equal_mib']:+.0f}",
            "-" if r["excess_over_matrix"] is None else f"{r['excess_over_matrix']:.2f}",
            "-" if goal is None else f"<= {goal:g}" + (
                f" ({r['goal_mib']:.0f} MiB)" if "goal_mib" in r else ""),
            "-" if r["meets_goal"] is None else ("yes" if r["meets_goal"] else "NO"),
            "-" if r.get("tensor_peak_mib") is None else f"{r['tensor_peak_mib']:.0f}",
            "-" if r["tensor_excess_over_matrix"] is None
            else f"{r['tensor_excess_over_matrix']:.2f}",
            "-" if r["tensors_meet_goal"] is None else (
                "yes" if r["tensors_meet_goal"] else "NO"),
            f"{r['wall_s']:.0f}" if ok else "-",
            " ".join(f"{s:.2f}" for s in r.get("step_s", [])) or "-",
        ])
    notes = [f"- `{r['config']}`: {r.get('note') or r.get('error')}"
             for r in results if r["status"] != "ok"]
    changes = library.get("uncommitted_changes")
    measured = (
        f"`{library['file']}` at commit `{(library.get('commit') or '?')[:7]}` "
        f"({library.get('commit_subject')}), "
        + ("no uncommitted changes under keras_mtl/" if not changes
           else f"with uncommitted changes: {', '.join(changes)}")
        if library.get("file") else "no child imported keras_mtl"
    )
    p = summary["trunk_parameters"]
    lines = [
        "# Peak resident memory of a training process",
        "",
        f"{settings['backbone']} (random weights) at {settings['image_size']} px, batch "
        f"{settings['batch_size']}, T={settings['tasks']} regression tasks (heads "
        f"{tuple(settings['head_units'])}), Adam, {settings['steps']} `train_on_batch` steps, "
        f"{settings['tensorflow_threads']} TensorFlow thread(s); one child process per "
        f"configuration and run, {settings['repeats']} run(s) per configuration, in rounds, "
        "one child at a time. Peak: the child's `ru_maxrss` (kernel high-water mark of its "
        "resident set) after its last step, median over runs, and its range; 'built': after "
        "build + compile; 'step 1': after the first step (tracing included); times: medians.",
        "",
        "Trunk trainable parameters P = "
        + ("?" if p is None else f"{p:,}")
        + ", T*P*4 bytes (the float32 gradient matrix of params mode) = "
        + ("?" if summary["gradient_matrix_mib"] is None
           else f"{summary['gradient_matrix_mib']:.1f} MiB")
        + ". 'x T*P*4': (peak - Equal's peak) / T*P*4. Goals: params mode <= Equal + 1.2 "
        "x T*P*4; a bfloat16 gradient matrix <= Equal + 0.6 x T*P*4.",
        "",
        "'tensors': the peak of the bytes TensorFlow's tensors held at once (its BFC "
        "allocator's count, `tf.config.experimental.get_memory_info('CPU:0')['peak']`), "
        "without the graphs, kernels and libraries the resident set also holds; the same "
        "goals read on it.",
        "",
        "Plain TensorFlow (the `plain_*` rows, the same model trained by a hand-written "
        "`tf.function` step): T exact trunk gradients held, their Gram matrix and "
        "combination cost (plain_params - plain_equal) "
        + _factor(summary.get("plain_params_floor"))
        + " x T*P*4 of resident memory and "
        + _factor(summary.get("plain_params_tensor_floor"))
        + " x T*P*4 of tensors over one backward pass.",
        "",
        f"Measured keras_mtl: {measured}.",
        "",
    ]
    if settings["quick"]:
        lines += [
            "Quick run (a smoke test): with so small a trunk the gradient matrix is a "
            "fraction of a MiB and the differences are tracing and TensorFlow's own "
            "allocations, so 'x T*P*4' and the goals mean nothing here.",
            "",
        ]
    lines += [
        _table(["config", "weighting", "peak MiB", "range", "built MiB", "step 1 MiB",
                "vs Equal MiB", "x T*P*4", "goal", "met", "tensors MiB", "tensors x T*P*4",
                "tensors met", "child s", "steps s"], rows),
        "",
    ]
    if notes:
        lines += ["Rows not measured:", "", *notes, ""]
    lines += [
        f"{settings['platform']}, {settings['cpu_count']} CPUs, "
        f"{settings['memory_gib']} GiB RAM; the whole run took {run_s / 60:.1f} min.",
        "",
        "Written by `python benchmarks/bench_memory.py"
        + (" " + " ".join(settings["argv"]) if settings["argv"] else "") + "`.",
        "",
    ]
    return "\n".join(lines)


def _factor(value):
    return "?" if value is None else f"{value:.2f}"


def _memory_gib():
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", help=f"default {FULL['backbone']} ('small_cnn': "
                        "keras_mtl.tuning.small_cnn)")
    parser.add_argument("--image-size", type=int, help=f"default {FULL['image_size']}")
    parser.add_argument("--batch-size", type=int, help=f"default {FULL['batch_size']}")
    parser.add_argument("--tasks", type=int, help=f"T, default {FULL['tasks']}")
    parser.add_argument("--steps", type=int, help=f"training steps, default {FULL['steps']}")
    parser.add_argument("--head-units", default="256",
                        help="comma list of head widths (default 256, build_model's)")
    parser.add_argument("--configs", help="comma list of " + ", ".join(CONFIGS)
                        + f" (default: {', '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--bfloat16", action="store_true",
                        help="also the bfloat16 gradient-matrix rows: "
                        + ", ".join(BFLOAT16_CONFIGS))
    parser.add_argument("--bfloat16-argument", default=BFLOAT16_ARGUMENT,
                        help="NAME=VALUE, the weighting's constructor argument for a bfloat16 "
                        "gradient matrix; a method without that argument is reported as "
                        f"unsupported (default {BFLOAT16_ARGUMENT})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--repeats", type=int,
                        help=f"child processes per configuration, default {FULL['repeats']}")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds before a child is killed (its row reports it)")
    parser.add_argument("--output", "--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return args
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("image_size", "batch_size", "tasks", "steps", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"argument --{key.replace('_', '-')}: Expected an integer >= 1. "
                         f"Received: {getattr(args, key)}")
    if args.threads < 0:
        parser.error(f"argument --threads: Expected an integer >= 0. Received: {args.threads}")
    try:
        args.head_units = [int(u) for u in args.head_units.split(",") if u.strip()]
    except ValueError:
        parser.error("argument --head-units: Expected a comma list of integers. "
                     f"Received: {args.head_units!r}")
    if "=" not in args.bfloat16_argument:
        parser.error("argument --bfloat16-argument: Expected NAME=VALUE. "
                     f"Received: {args.bfloat16_argument!r}")
    if args.configs is None:
        configs = list(DEFAULT_CONFIGS)
    else:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown or not configs:
            parser.error(f"argument --configs: unknown {unknown}; expected names among "
                         f"{list(CONFIGS)}. Received: {args.configs!r}")
    if args.bfloat16:
        configs += [c for c in BFLOAT16_CONFIGS if c not in configs]
    args.configs = configs
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    started = time.perf_counter()
    common = {k: getattr(args, k) for k in (
        "backbone", "image_size", "batch_size", "tasks", "steps", "head_units", "threads",
        "bfloat16_argument")}
    runs = {name: [] for name in args.configs}
    # Rounds: every configuration once per round, so that repeats of one
    # configuration are not back to back.
    for repeat in range(args.repeats):
        for name in args.configs:
            if runs[name] and runs[name][0]["status"] == "unsupported":
                continue  # the same library answers the same way
            config = {**common, **CONFIGS[name], "name": name}
            print(f"{name} ({repeat + 1}/{args.repeats}): running ...", flush=True)
            run = run_config(name, config, args.timeout)
            runs[name].append(run)
            peak = f"peak {run['peak_mib']:.0f} MiB" if run["status"] == "ok" else (
                run.get("note") or run.get("error"))
            print(f"{name} ({repeat + 1}/{args.repeats}): {run['status']}, {peak}, "
                  f"{run['wall_s']:.0f} s", flush=True)
    run_s = time.perf_counter() - started
    results = [aggregate(name, runs[name]) for name in args.configs]

    summary = summarise(results, args.tasks)
    library = measured_library(results)
    settings = {
        **{k: v for k, v in common.items() if k != "threads"},
        "weights": None, "optimizer": "Adam(1e-3)", "configs": args.configs,
        "quick": args.quick, "repeats": args.repeats,
        "tensorflow_threads": args.threads or "default",
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "memory_gib": _memory_gib(), "argv": argv,
    }
    report = {
        "benchmark": "memory",
        "settings": settings,
        "keras_mtl": library,
        "summary": summary,
        "run_s": round(run_s, 1),
        "results": results,
    }
    write_results(args.output, "memory", report,
                  markdown_report(settings, summary, library, results, run_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())

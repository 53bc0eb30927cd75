"""User-mistakes benchmark (issue 16): a fresh catalogue of mistakes a new
user makes, each run in-process and classified by what the user sees.

Issue 16 tried 67 mistakes "as a new user would" and counted clear errors,
unclear errors, silent outcomes and correctly handled cases. Its
done-criterion: "a fresh set of mistakes of the same kinds ... gives no
silent outcome and at least 95 % clear errors". This script is that fresh
set: about 65 mistakes of the issue's kinds (categories below) that neither
the issue's examples nor `tests/test_bad_inputs.py` contain, across tasks,
`build_model`, `compile`, `fit` / `evaluate` / `predict`, `interleave`,
export and serving, tuning objectives, callbacks, datasets and the CLI.

Categories (the issue's kinds):

- `domain`: values outside their domain (labels of each task kind, sample
  weights, inputs and images of the wrong size or with NaN);
- `naming`: order and naming (label / weight keys and order, task names that
  collide with layer names or option keys, task names in export and serving);
- `absent`: absent tasks and absent data (a task with no labelled example in
  `evaluate`, in an epoch, in a source or in validation);
- `idioms`: Keras idioms (loss and optimizer forms, `from_logits`,
  reductions, `class_weight`, `sample_weight`, `run_eagerly`, NumPy values
  as hyperparameters, callbacks monitoring plain Keras metric names);
- `resume`: resuming and state (`BackupAndRestore`, `load_weights`,
  `.keras` files, non-finite steps and where they are reported);
- `history`: what `evaluate`, `predict` and `History` report.

Each case declares an id, a category, a zero-argument callable and what is
correct:

- `expect_error(*names, ok=None)`: the call is a mistake and must raise a
  clear error naming every one of `names` (the task, the argument, the
  received value, ...). `ok`, if given, is a check of the return value that
  also counts as correct (the library accepted the input and did the right
  thing with it, e.g. honoured a loss's reduction).
- `expect_ok(check=None, or_error=None)`: the input is valid but unusual and
  the call must simply work: `check(return_value)` raises `AssertionError`
  when the numbers or keys are wrong. `or_error`, if given, lists names with
  which a clear error is also accepted (a design may refuse the input, e.g. a
  task name that collides with a layer name, as long as it says so).

Classification rule (`classify`), applied to what the call did:

- **clear**: an exception was raised, and
  1. its type is `ValueError`, `TypeError`, `FileNotFoundError`,
     `FloatingPointError` (or a subclass, e.g. KerasTuner-free
     `keras_mtl.objectives.ObjectiveError`), or `SystemExit` with a non-zero
     code from `argparse` (the message is then what it printed on stderr);
     TensorFlow's `tf.errors.*` (InvalidArgumentError, ...), `KeyError`,
     `IndexError`, `AttributeError`, `AssertionError`, `RuntimeError`, ...
     are never clear;
  2. it was raised by keras_mtl, Keras or argparse: the innermost traceback
     frame (traceback filtering off) is not inside `tensorflow`, `numpy`,
     `jax` or `h5py`;
  3. its message (type name excluded) contains every declared name,
     compared case-insensitively as plain substrings;
  and the case declared an error (`expect_error`, or `expect_ok(or_error=)`).
- **unclear**: an exception that fails any of 1-3 (a TensorFlow trace, a
  bare `KeyError`, a message that does not name what to fix), an exception
  on a valid input that declares no acceptable error, or a case whose
  isolated process crashed or hung.
- **silent**: no exception although the case is a mistake (and its `ok`
  check, if any, did not pass), or a valid case whose `check` failed (wrong
  numbers or keys, no error). Warnings do not count as errors: a case that
  only warns is silent (the warning is shown in the table).
- **handled**: no exception and the case's check passed (a valid-but-unusual
  input that works, or a mistake whose `ok` alternative was honoured).

The clear-error percentage is clear / (clear + unclear + silent): handled
cases are correct but are not errors.

Cases run in one process, one after the other, on the TensorFlow backend
(export, `interleave` and serving need it), each after
`keras.utils.set_random_seed(0)` and `keras.backend.clear_session()`, in its
own temporary directory, with stderr captured. A case marked `isolate=True`
(one that could hang) runs in a child process with a timeout; `--isolate`
runs every case that way (slower: each child imports TensorFlow).

    python benchmarks/user_mistakes.py                  # all cases, writes results
    python benchmarks/user_mistakes.py --only binary_labels_one_and_two
    python benchmarks/user_mistakes.py --list
    python benchmarks/user_mistakes.py --output /tmp/um   # elsewhere

Results: `benchmarks/results/user_mistakes.md` (a table of every case, the
totals per outcome and the clear-error percentage). Exits 0: it measures.
About 2-4 minutes on 2 CPU cores.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if __name__ == "__main__":  # not when a test imports it: its children inherit this
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUTCOMES = ("clear", "unclear", "silent", "handled")
CATEGORIES = ("domain", "naming", "absent", "idioms", "resume", "history")
CLEAR_TYPES = (ValueError, TypeError, FileNotFoundError, FloatingPointError)
#: Libraries whose own raise is not an answer to the user: their messages
#: describe tensors and arrays, not tasks and arguments.
FOREIGN = ("/tensorflow/", "/numpy/", "/jax/", "/jaxlib/", "/h5py/", "/tf_keras/")
MESSAGE_CHARS = 120


# --- expectations, cases, results ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Expect:
    """What is correct for a case (see the module docstring)."""

    kind: str  # "error" or "ok"
    names: tuple = ()  # an error must name these ("error"; "ok" with or_error)
    check: object = None  # check(value) raises AssertionError when wrong
    error_accepted: bool = False  # for "ok": whether a clear error is also correct


def expect_error(*names, ok=None):
    """The call is a mistake: it must raise a clear error naming `names`.

    `ok(value)`, if given, is an alternative: it passes when the library
    accepted the input and honoured it."""
    if not names:
        raise ValueError("expect_error needs at least one name the message must contain")
    return Expect("error", tuple(str(n) for n in names), ok, True)


def expect_ok(check=None, or_error=None):
    """The input is valid: the call must work and `check(value)` pass.
    `or_error`: names with which a clear error is accepted instead."""
    names = tuple(str(n) for n in or_error) if or_error else ()
    return Expect("ok", names, check, bool(or_error))


@dataclasses.dataclass
class Case:
    id: str
    category: str
    call: object
    expect: Expect
    isolate: bool = False
    timeout: int = 180
    doc: str = ""


@dataclasses.dataclass
class Result:
    id: str
    category: str
    expected: str
    outcome: str
    error_type: str = ""
    message: str = ""
    seconds: float = 0.0

    def row(self):
        return dataclasses.asdict(self)


def _origin(exc):
    """The file of the innermost traceback frame of `exc` (or "")."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return frames[-1].filename if frames else ""


def _message(exc, stderr=""):
    if isinstance(exc, SystemExit):
        # argparse prints its usage, then "prog: error: ..."; the error first.
        lines = stderr.strip().splitlines()
        errors = [line for line in lines if "error:" in line]
        return " ".join(errors + [line for line in lines if line not in errors]) or (
            f"SystemExit({exc.code!r})")
    return str(exc)


def clear_error(exc, names, stderr=""):
    """`(is_clear, why_not)`: whether `exc` is a clear error naming `names`."""
    if isinstance(exc, SystemExit):
        if exc.code in (0, None):
            return False, "exited with status 0"
    elif not isinstance(exc, CLEAR_TYPES) or _is_tf_error(exc):
        return False, f"{type(exc).__name__} is not a clear error type"
    origin = _origin(exc).replace(os.sep, "/")
    foreign = [lib.strip("/") for lib in FOREIGN if lib in origin]
    if foreign:
        return False, f"raised inside {foreign[0]}"
    text = _message(exc, stderr).lower()
    missing = [n for n in names if n.lower() not in text]
    if missing:
        return False, f"message does not name {missing}"
    return True, ""


def _is_tf_error(exc):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(exc, tf.errors.OpError)


def classify(expect, exc=None, value=None, stderr=""):
    """`(outcome, note)` of a call that raised `exc` (or returned `value`).

    The rule is the module docstring's; `note` says what failed."""
    if exc is not None:
        if not expect.error_accepted:
            return "unclear", f"a valid input was refused ({type(exc).__name__})"
        ok, why = clear_error(exc, expect.names, stderr)
        return ("clear", "") if ok else ("unclear", why)
    if expect.check is None:
        if expect.kind == "ok":
            return "handled", ""
        return "silent", "no error"
    try:
        expect.check(value)
    except AssertionError as failure:
        note = str(failure) or "the check failed"
        return "silent", ("no error; " if expect.kind == "error" else "") + note
    return "handled", ""


def _warnings_text(caught):
    seen = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}".splitlines()[0]
        if text not in seen and "shuffle=True" not in text:
            seen.append(text)
    return seen


def run_case(case):
    """Runs `case` in this process; returns its `Result`."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    stderr = io.StringIO()
    exc = value = None
    start = time.perf_counter()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=f"um_{case.id[:20]}_") as tmp, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.chdir(tmp)
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                value = case.call()
        except (Exception, SystemExit) as error:  # noqa: BLE001 -- classified below
            exc = error
        finally:
            os.chdir(cwd)
        outcome, note = classify(case.expect, exc, value, stderr.getvalue())
        warned = _warnings_text(caught)
    seconds = time.perf_counter() - start
    if exc is not None:
        message = _message(exc, stderr.getvalue())
        if "user_mistakes.py" in _origin(exc) and not isinstance(exc, SystemExit):
            note = (note + "; " if note else "") + "raised by the benchmark itself"
    else:
        message = "ok" if outcome == "handled" else ""
    if outcome in ("unclear", "silent") and note:
        message = f"[{note}] {message}".strip()
    if outcome == "silent" and warned:
        message = f"{message} (warned: {warned[0]})"
    return Result(
        case.id, case.category, case.expect.kind, outcome,
        type(exc).__name__ if exc is not None else "", _one_line(message), round(seconds, 2),
    )


def run_isolated(case, timeout=None):
    """Runs `case` in a child process (a crash or hang is then 'unclear')."""
    timeout = timeout or case.timeout
    command = [sys.executable, os.path.abspath(__file__), "--run-case", case.id]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(case.id, case.category, case.expect.kind, "unclear", "",
                      f"[hung: no answer after {timeout} s] (process killed)",
                      round(time.perf_counter() - start, 2))
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return Result(**json.loads(line[len("RESULT "):]))
    how = (f"killed by signal {-done.returncode}" if done.returncode < 0
           else f"exit status {done.returncode}")
    tail = _one_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    return Result(case.id, case.category, case.expect.kind, "unclear", "",
                  f"[the process crashed: {how}] {tail}", round(time.perf_counter() - start, 2))


def _one_line(text):
    return " ".join(str(text).split())


# --- small models and data (as tests/conftest.py) -------------------------------------
IMAGE = (16, 16, 3)
T = keras_mtl.tasks


def trunk(name="tiny_trunk"):
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name=name)


def model(tasks, **kwargs):
    kwargs.setdefault("head_units", (8,))
    return keras_mtl.build_model(trunk(), tasks, **kwargs)


def compiled(tasks, model_kwargs=None, **compile_kwargs):
    m = model(tasks, **(model_kwargs or {}))
    m.compile(**compile_kwargs)
    return m


def images(n=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *IMAGE)).astype("float32")


def labels(tasks, n=8, seed=0):
    rng = np.random.default_rng(seed + 1)
    y = {}
    for task in tasks:
        shape = task.label_shape(n, IMAGE)
        if task.sparse_labels:
            y[task.name] = rng.integers(0, task.num_classes, shape).astype("int32")
        elif task.activation == "sigmoid":
            y[task.name] = rng.integers(0, 2, shape).astype("float32")
        else:
            y[task.name] = rng.normal(size=shape).astype("float32")
    return y


def fit(m, x, y, **kwargs):
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("batch_size", 4)
    return m.fit(x, y, **kwargs)


def age():
    return T.Regression("age")


def height():
    return T.Regression("height")


def species():
    return T.MulticlassClassification("species", 3)


def smiling():
    return T.BinaryClassification("smiling")


def attrs():
    return T.MultilabelClassification("attrs", 4)


def road():
    return T.Segmentation("road", 3)


def depth():
    return T.DenseRegression("depth")


def pair():
    return [age(), species()]


def tf_dataset(x, y, batch=4):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def last(history, key):
    return history.history[key][-1]


def absent_or_nan(values, prefix, what):
    """Check: every logged `prefix*` value is NaN (or not logged at all)."""
    zero = {k: v for k, v in values.items() if k.startswith(prefix) and not math.isnan(v)}
    assert not zero, f"{what}, yet logged {zero}"


def all_finite(values, what="History"):
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    assert not bad, f"{what} holds non-finite values {bad}"


def require(condition, message):
    """A check's assertion, usable inside a lambda."""
    if not condition:
        raise AssertionError(message)
    return True


def close(a, b, what, tol=1e-4):
    assert abs(a - b) <= tol * max(1.0, abs(b)), f"{what}: {a} != {b}"


def history_last(h):
    return {k: v[-1] for k, v in h.history.items()}


def interrupted_backup(m, backup_dir, x, y):
    """Fits one epoch with BackupAndRestore, then stops as a crash would
    (the backup is kept)."""

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    try:
        fit(m, x, y, epochs=3, callbacks=[
            keras.callbacks.BackupAndRestore(backup_dir), Crash()])
    except KeyboardInterrupt:
        pass


# --- the catalogue ----------------------------------------------------------------
CASES = []


def case(id, category, expect, isolate=False, timeout=180):
    """Registers the decorated zero-argument function as a case."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")

    def register(fn):
        CASES.append(Case(id, category, fn, expect, isolate, timeout,
                          " ".join((fn.__doc__ or "").split())))
        return fn

    return register


# === domain: values outside the task's domain =========================================
@case("seg_class_id_equals_num_classes", "domain", expect_error("road", "3"))
def _():
    """Segmentation masks holding class 3 for a 3-class task (a forgotten 'border' class)."""
    m = compiled([road(), age()])
    y = labels([road(), age()])
    y["road"] = np.random.default_rng(3).integers(0, 4, (8, 16, 16)).astype("int32")
    return fit(m, images(), y)


@case("multiclass_one_based_ids_tf_data", "domain", expect_error("species"))
def _():
    """Class ids 1..3 (1-based, from a CSV) through a tf.data pipeline."""
    m = compiled(pair())
    y = labels(pair())
    y["species"] = y["species"] + 1
    return m.fit(tf_dataset(images(), y), epochs=1, verbose=0)


@case("multilabel_counts_not_multi_hot", "domain", expect_error("attrs"))
def _():
    """Multi-label rows holding counts (0, 1, 2) instead of a multi-hot 0/1 row."""
    m = compiled([attrs(), age()])
    y = labels([attrs(), age()])
    y["attrs"] = np.random.default_rng(4).integers(0, 3, (8, 4)).astype("float32")
    return fit(m, images(), y)


@case("binary_labels_one_and_two", "domain", expect_error("smiling"))
def _():
    """Binary labels coded 1 (no) / 2 (yes), as in many survey data sets."""
    m = compiled([smiling(), age()])
    y = labels([smiling(), age()])
    y["smiling"] = y["smiling"] + 1.0
    return fit(m, images(), y)


@case("regression_inf_label", "domain", expect_error("age"))
def _():
    """One regression label is +inf (a division by zero in preprocessing)."""
    m = compiled(pair())
    y = labels(pair())
    y["age"][5] = np.inf
    return fit(m, images(), y, shuffle=False)


@case("seg_mask_bilinear_resized", "domain", expect_error("road"))
def _():
    """Masks resized with bilinear interpolation: fractional class ids at edges."""
    import tensorflow as tf

    m = compiled([road(), age()])
    y = labels([road(), age()])
    small = np.random.default_rng(5).integers(0, 3, (8, 8, 8, 1)).astype("float32")
    y["road"] = tf.image.resize(small, (16, 16), "bilinear").numpy()[..., 0]
    return fit(m, images(), y)


@case("multiclass_one_hot_labels", "domain", expect_error("species"))
def _():
    """One-hot labels (keras.utils.to_categorical) for a class-id task."""
    m = compiled(pair())
    y = labels(pair())
    y["species"] = keras.utils.to_categorical(y["species"], 3)
    return fit(m, images(), y)


@case("class_names_as_labels", "domain", expect_error("species"))
def _():
    """Class names ("cat", "dog", "owl") given as labels instead of class ids."""
    m = compiled(pair())
    y = labels(pair())
    y["species"] = np.array(["cat", "dog", "owl"])[y["species"]]
    return fit(m, images(), y)


@case("regression_labels_as_strings", "domain", expect_error("age"))
def _():
    """Regression targets read from a CSV as strings ("23", "41", ...)."""
    m = compiled(pair())
    y = labels(pair())
    y["age"] = np.array([f"{20 + i}" for i in range(8)])
    return fit(m, images(), y)


@case("sample_weight_nan", "domain", expect_error("sample_weight", "age"))
def _():
    """A per-task sample weight is NaN (a missing value in a weights column)."""
    m = compiled(pair())
    w = np.ones(8, "float32")
    w[2] = np.nan
    return fit(m, images(), labels(pair()), sample_weight={"age": w, "species": np.ones(8)})


@case("seg_mask_rgb_colour_coded", "domain", expect_error("road"))
def _():
    """Colour-coded RGB masks (as some data sets ship them) instead of class-id maps."""
    m = compiled([road(), age()])
    y = labels([road(), age()])
    palette = np.array([[0, 0, 0], [128, 64, 128], [244, 35, 232]], "uint8")
    y["road"] = palette[y["road"]]
    return fit(m, images(), y)


@case("class_ids_as_integral_floats", "domain",
      expect_ok(lambda r: close(r[0], r[1], "species_loss, float ids vs int ids")))
def _():
    """Valid: class ids stored as floats 0.0, 1.0, 2.0 (as pandas gives them)."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    as_int = m.evaluate(x, y, verbose=0, return_dict=True)["species_loss"]
    as_float = m.evaluate(x, {**y, "species": y["species"].astype("float32")},
                          verbose=0, return_dict=True)["species_loss"]
    return as_float, as_int


@case("binary_labels_bool", "domain",
      expect_ok(lambda r: close(r[0], r[1], "smiling_loss, bool vs 0/1 labels")))
def _():
    """Valid: binary labels as a boolean array."""
    m = compiled([smiling(), age()])
    x, y = images(), labels([smiling(), age()])
    as_float = m.evaluate(x, y, verbose=0, return_dict=True)["smiling_loss"]
    as_bool = m.evaluate(x, {**y, "smiling": y["smiling"] > 0.5},
                         verbose=0, return_dict=True)["smiling_loss"]
    return as_bool, as_float


@case("rest_predict_image_wrong_size", "domain", expect_error("image", "16"))
def _():
    """A REST request with 32x32 images for a 16x16 model."""
    import tensorflow as tf

    m = model(pair())
    path = keras_mtl.export_saved_model(m, "serving")
    image = np.zeros((32, 32, 3)).tolist()
    return keras_mtl.export.rest_predict(tf.saved_model.load(path), {"instances": [image]})


@case("tflite_int8_calibration_wrong_size", "domain",
      expect_error("representative_data", "16"))
def _():
    """int8 calibration images at another size than the model's input."""
    m = model(pair())
    return keras_mtl.export_tflite(m, "m.tflite", quantization="int8",
                                   representative_data=np.zeros((4, 32, 32, 3), "float32"))


@case("cli_image_size_too_small", "domain", expect_error("image-size", "8"))
def _():
    """`keras-mtl demo --image-size 8`."""
    from keras_mtl import cli

    return cli.main(["demo", "--image-size", "8", "--output", "out"])


# === naming: order and naming ==========================================================
def _roundtrip_check(result):
    m, x = result
    m.save("m.keras")
    loaded = keras.models.load_model("m.keras")
    a, b = m.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert sorted(a) == sorted(b) == sorted(m.task_names), f"predict keys {sorted(b)}"
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-5), f"predictions of {k!r} differ after load"


@case("task_named_like_preprocessing_layer", "naming",
      expect_ok(_roundtrip_check, or_error=["preprocessing"]))
def _():
    """A task named "preprocessing" (the model's own image-preprocessing layer)."""
    tasks = [T.Regression("preprocessing"), species()]
    m = compiled(tasks)
    x = images()
    y = labels(tasks)
    fit(m, x, y)
    return m, x


@case("task_named_trunk_with_multipliers", "naming", expect_error("trunk"))
def _():
    """A task named "trunk" and LearningRateMultipliers({"trunk": 0.0}): which one is frozen?"""
    from keras_mtl.optimizers import LearningRateMultipliers

    tasks = [T.Regression("trunk"), species()]
    m = compiled(tasks, optimizer=LearningRateMultipliers("adam", {"trunk": 0.0}))
    return fit(m, images(), labels(tasks))


@case("task_names_differ_in_case", "naming", expect_ok(_roundtrip_check, or_error=["Age"]))
def _():
    """Two tasks "Age" (a class) and "age" (a value)."""
    tasks = [T.MulticlassClassification("Age", 3), age()]
    m = compiled(tasks)
    x = images()
    fit(m, x, labels(tasks))
    return m, x


def _hyphen_export_check(outputs):
    assert "hair-colour_class_names" in outputs, f"serving outputs {sorted(outputs)}"


@case("hyphenated_task_name_export", "naming",
      expect_ok(_hyphen_export_check, or_error=["hair-colour"]))
def _():
    """A task named "hair-colour" served through TF Serving's signatures."""
    import tensorflow as tf

    task = T.MulticlassClassification("hair-colour", 3, class_names=["dark", "fair", "red"])
    m = compiled([task, age()])
    fit(m, images(), labels([task, age()]))
    served = tf.saved_model.load(keras_mtl.export_saved_model(m, "serving"))
    out = served.signatures["serving_default"](image=tf.zeros((2, *IMAGE)))
    served.signatures["serve_hair-colour"](image=tf.zeros((2, *IMAGE)))
    return dict(out)


@case("labels_keyed_by_output_layer_names", "naming", expect_error("age_output", "age"))
def _():
    """Labels keyed "age_output", "species_output" (tf.keras output-layer habit)."""
    m = compiled(pair())
    y = labels(pair())
    return fit(m, images(), {f"{k}_output": v for k, v in y.items()})


def _list_weights_check(r):
    got, expected = r
    for key in expected:
        close(got[key], expected[key], f"{key} with list sample weights vs dict")


@case("sample_weight_list_in_task_order", "naming",
      expect_ok(_list_weights_check, or_error=["sample_weight"]))
def _():
    """sample_weight as a list [w_age, w_species] (Keras' multi-output form)."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    w_age = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32")
    w_species = np.ones(8, "float32")
    as_list = m.evaluate(x, y, sample_weight=[w_age, w_species], batch_size=8, verbose=0,
                         return_dict=True)
    as_dict = m.evaluate(x, y, sample_weight={"age": w_age, "species": w_species},
                         batch_size=8, verbose=0, return_dict=True)
    return as_list, {k: as_dict[k] for k in ("age_loss", "species_loss")}


@case("loss_weights_as_list", "naming", expect_error("loss_weights"))
def _():
    """compile(loss_weights=[1.0, 0.2]) in the order the tasks were listed."""
    return compiled(pair(), loss_weights=[1.0, 0.2])


@case("interleave_label_key_typo", "naming", expect_error("ages"))
def _():
    """A source labels "ages" while the model's task is "age"."""
    from keras_mtl import data

    x = images()
    faces = tf_dataset(x, {"ages": labels([age()])["age"]})
    zoo = tf_dataset(x, {"species": labels([species()])["species"]})
    m = compiled(pair())
    return m.fit(data.interleave({"faces": faces, "zoo": zoo}), epochs=1, verbose=0)


@case("validation_source_label_typo", "naming", expect_error("agee"))
def _():
    """A validation source labelled "agee" (typo) in fit(validation_data={...})."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    val = tf_dataset(x, {"agee": y["age"]})
    return fit(m, x, y, validation_data={"faces": val})


@case("rest_signature_without_prefix", "naming", expect_error("age", "serve_age"))
def _():
    """A REST request naming signature "age" instead of "serve_age"."""
    import tensorflow as tf

    m = model(pair())
    served = tf.saved_model.load(keras_mtl.export_saved_model(m, "serving"))
    body = {"signature_name": "age", "instances": [np.zeros(IMAGE).tolist()]}
    return keras_mtl.export.rest_predict(served, body)


def _reordered_check(r):
    before, after = r
    for k in before:
        assert np.allclose(before[k], after[k], atol=1e-5), (
            f"task {k!r} predicts other values after load_weights into the reordered model"
        )


@case("load_weights_tasks_reordered", "naming",
      expect_ok(_reordered_check, or_error=["age", "height"]))
def _():
    """Weights saved from tasks [age, height] loaded into a model built with [height, age]."""
    x = images()
    m1 = model([age(), height()])
    m1.save_weights("w.weights.h5")
    m2 = model([height(), age()])
    m2.load_weights("w.weights.h5")
    return m1.predict(x, verbose=0), m2.predict(x, verbose=0)


@case("delta_m_baseline_val_prefixed", "naming", expect_error("val_accuracy"))
def _():
    """DeltaM baselines keyed by History names ("val_accuracy") instead of metric names."""
    from keras_mtl import objectives

    return objectives.DeltaM(pair(), {"species": {"val_accuracy": 0.9}})


@case("shapes_load_unknown_task", "naming", expect_error("colour"))
def _():
    """shapes.load(tasks=["shape", "colour"]): no such label."""
    from keras_mtl.datasets import shapes

    return shapes.load("train", 8, image_size=16, tasks=["shape", "colour"])


@case("cli_weighting_typo", "naming", expect_error("uncertanty"))
def _():
    """`keras-mtl demo --weighting uncertanty`."""
    from keras_mtl import cli

    return cli.main(["demo", "--weighting", "uncertanty", "--output", "out"])


@case("export_task_signatures_prefixed", "naming", expect_error("serve_age"))
def _():
    """export_saved_model(task_signatures=["serve_age"]): signature names, not task names."""
    return keras_mtl.export_saved_model(model(pair()), "serving", task_signatures=["serve_age"])


# === absent: tasks (or data) with no labelled example =================================
@case("evaluate_task_without_labels", "absent",
      expect_ok(lambda r: absent_or_nan(r, "species_", "no species label was given"),
                or_error=["species"]))
def _():
    """evaluate() on a test set labelled for age only (species all -1)."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    y["species"] = np.full(8, -1, "int32")
    return m.evaluate(x, y, verbose=0, return_dict=True)


@case("fit_task_zero_sample_weights", "absent",
      expect_ok(lambda r: absent_or_nan(r, "species_", "every species weight was 0"),
                or_error=["species"]))
def _():
    """fit with sample_weight 0 for every species example (task switched off by weights)."""
    m = compiled(pair())
    h = fit(m, images(), labels(pair()),
            sample_weight={"age": np.ones(8), "species": np.zeros(8)})
    return history_last(h)


@case("single_task_all_labels_nan", "absent", expect_error("age"))
def _():
    """Every label NaN (a CSV column parsed wrongly): the model trains on nothing."""
    m = compiled([age()])
    return fit(m, images(), {"age": np.full((8, 1), np.nan, "float32")}, epochs=2)


@case("multilabel_one_unknown_attribute_per_row", "absent",
      expect_ok(lambda r: require(r["attrs_loss"] > 0,
                                  f"attrs_loss={r['attrs_loss']}: no attribute was trained on"),
                or_error=["attrs"]))
def _():
    """Each multi-label row has one unknown attribute (-1): every row is dropped."""
    m = compiled([attrs(), age()])
    y = labels([attrs(), age()])
    y["attrs"][np.arange(8), np.arange(8) % 4] = -1
    return history_last(fit(m, images(), y))


@case("interleave_empty_source", "absent", expect_error("faces"), isolate=True, timeout=150)
def _():
    """A source filtered down to nothing, with round_robin and steps_per_epoch."""
    from keras_mtl import data

    x = images()
    faces = tf_dataset(x, {"age": labels([age()])["age"]}).filter(lambda a, b: False)
    zoo = tf_dataset(x, {"species": labels([species()])["species"]})
    m = compiled(pair())
    ds = data.interleave({"faces": faces, "zoo": zoo}, steps_per_epoch=4)
    return m.fit(ds, epochs=1, verbose=0)


def _dwa_absent_check(logs):
    absent_or_nan(logs, "species_", "species was never labelled")  # NaN or not logged: fine
    all_finite({k: v for k, v in logs.items() if not k.startswith("species_")})


@case("dwa_task_never_labelled", "absent", expect_ok(_dwa_absent_check, or_error=["species"]))
def _():
    """weighting="dwa" for three epochs in which species is never labelled."""
    m = compiled(pair(), weighting="dwa")
    y = labels(pair())
    y["species"] = np.full(8, -1, "int32")
    return history_last(fit(m, images(), y, epochs=3))


@case("delta_m_task_never_validated", "absent", expect_error("species"))
def _():
    """DeltaM with a species baseline, but the validation set has no species label."""
    from keras_mtl import objectives

    m = compiled(pair())
    x, y = images(), labels(pair())
    yv = labels(pair(), seed=1)
    yv["species"] = np.full(8, -1, "int32")
    objective = objectives.DeltaM(pair(), {"age": {"mae": 1.0}, "species": {"accuracy": 0.5}})
    return fit(m, x, y, validation_data=(x, yv), callbacks=[objective])


def _source_keys_check(logs):
    cross = [k for k in logs if k.startswith(("val_faces_species", "val_zoo_age"))]
    assert not cross, f"per-source validation logs tasks the source does not label: {cross}"
    all_finite({k: v for k, v in logs.items() if k.startswith("val_")}, "validation logs")


@case("validation_sources_label_different_tasks", "absent", expect_ok(_source_keys_check))
def _():
    """Valid: validation sources each labelled for one task."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    val = {"faces": tf_dataset(x, {"age": y["age"]}),
           "zoo": tf_dataset(x, {"species": y["species"]})}
    return history_last(fit(m, x, y, validation_data=val))


@case("mgda_on_interleaved_sources", "absent", expect_ok(all_finite))
def _():
    """Valid: MGDA (gradient level) where each batch labels one task only."""
    from keras_mtl import data

    x, y = images(), labels(pair())
    ds = data.interleave({"faces": tf_dataset(x, {"age": y["age"]}),
                          "zoo": tf_dataset(x, {"species": y["species"]})})
    m = compiled(pair(), weighting="mgda")
    return history_last(m.fit(ds, epochs=1, verbose=0))


@case("utkface_empty_directory", "absent", expect_error("utk_empty"))
def _():
    """utkface.load on a folder that holds no images (wrong folder)."""
    from keras_mtl.datasets import utkface

    os.makedirs("utk_empty")
    return utkface.load("utk_empty", 32)


# === idioms: Keras idioms ================================================================
@case("compile_single_loss_string", "idioms", expect_error("loss"))
def _():
    """compile(loss="mae"): one loss for every output, as plain Keras allows."""
    return compiled(pair(), loss="mae")


@case("from_logits_on_softmax_head", "idioms", expect_error("from_logits", "species"))
def _():
    """SparseCategoricalCrossentropy(from_logits=True) on a softmax head (softmax twice)."""
    m = compiled(pair(), loss={
        "species": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return fit(m, images(), labels(pair()))


@case("categorical_crossentropy_with_class_ids", "idioms",
      expect_error("species", "categorical_crossentropy"))
def _():
    """loss "categorical_crossentropy" for a task whose labels are class ids."""
    m = compiled(pair(), loss={"species": "categorical_crossentropy"})
    return fit(m, images(), labels(pair()))


def _sum_reduction_check(r):
    got, expected = r
    close(got, expected, "age_loss with reduction='sum' (the sum over the batch)")


@case("loss_reduction_sum_ignored", "idioms",
      expect_error("reduction", ok=_sum_reduction_check))
def _():
    """MeanSquaredError(reduction="sum"): is the sum used, or silently the mean?"""
    m = compiled(pair(), loss={"age": keras.losses.MeanSquaredError(reduction="sum")})
    x, y = images(), labels(pair())
    got = m.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["age_loss"]
    pred = m.predict(x, verbose=0)["age"]
    return got, float(np.sum((pred - y["age"]) ** 2))


@case("optimizer_class_not_instance", "idioms", expect_error("optimizer"))
def _():
    """compile(optimizer=keras.optimizers.Adam): the class, not an instance."""
    return compiled(pair(), optimizer=keras.optimizers.Adam)


@case("weighting_class_not_instance", "idioms", expect_error("weighting"))
def _():
    """compile(weighting=keras_mtl.weighting.Uncertainty): the class, not an instance."""
    m = compiled(pair(), weighting=keras_mtl.weighting.Uncertainty)
    return fit(m, images(), labels(pair()))


@case("validation_split", "idioms",
      expect_ok(lambda logs: require("val_age_mae" in logs, f"no val_age_mae in {sorted(logs)}")
                and all_finite({k: v for k, v in logs.items() if k.startswith("val_")})))
def _():
    """Valid: fit(validation_split=0.25) with dict labels."""
    m = compiled(pair())
    return history_last(fit(m, images(), labels(pair()), validation_split=0.25))


def _one_weight_check(r):
    got, expected = r
    for key in ("age_loss", "species_loss"):
        close(got[key], expected[key], f"{key} with one sample_weight array for all tasks")


@case("one_sample_weight_array_for_all_tasks", "idioms", expect_ok(_one_weight_check))
def _():
    """Valid: one sample_weight array (0 for the last half) applied to every task."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    w = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32")
    got = m.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    first = m.evaluate(x[:4], {k: v[:4] for k, v in y.items()}, batch_size=8, verbose=0,
                       return_dict=True)
    return got, first


def _class_weight_check(r):
    got, expected = r
    close(got, expected, "smiling_loss under class_weight={0: 0, 1: 1}")


@case("class_weight_single_task", "idioms",
      expect_ok(_class_weight_check, or_error=["class_weight", "smiling"]))
def _():
    """class_weight={0: 0.0, 1: 1.0} on a one-task (binary) model."""
    m = compiled([smiling()])
    x, y = images(), labels([smiling()])
    positive = (y["smiling"][:, 0] == 1).astype("float32")
    expected = m.evaluate(x, y, sample_weight=positive, batch_size=8, verbose=0,
                          return_dict=True)["smiling_loss"]
    h = m.fit(x, y, batch_size=8, epochs=1, verbose=0, class_weight={0: 0.0, 1: 1.0})
    return last(h, "smiling_loss"), expected


@case("run_eagerly_matches_graph", "idioms",
      expect_ok(lambda r: close(r[0], r[1], "epoch loss, run_eagerly vs graph")))
def _():
    """Valid: compile(run_eagerly=True) (to debug) trains as the graph does."""
    x, y = images(), labels(pair())
    losses = []
    for eager in (True, False):
        keras.utils.set_random_seed(1)
        m = compiled(pair(), run_eagerly=eager)
        losses.append(last(fit(m, x, y, epochs=2, shuffle=False), "loss"))
    return losses


@case("numpy_head_units_array", "idioms", expect_ok(all_finite))
def _():
    """Valid: head_units=np.array([8, 4]) (from a config array)."""
    m = compiled(pair(), model_kwargs={"head_units": np.array([8, 4])})
    return history_last(fit(m, images(), labels(pair())))


@case("numpy_export_threshold", "idioms",
      expect_ok(lambda path: require(os.path.isdir(path), f"no export directory {path!r}")))
def _():
    """Valid: export_saved_model(threshold=np.float32(0.7)) (a tuned threshold)."""
    return keras_mtl.export_saved_model(model([smiling(), age()]), "serving",
                                        threshold=np.float32(0.7))


@case("numpy_num_classes_and_class_names", "idioms", expect_ok(_roundtrip_check))
def _():
    """Valid: num_classes=y.max() + 1 (np.int64) and class_names=np.unique(...) (array)."""
    names = np.unique(np.array(["owl", "cat", "dog", "cat"]))
    task = T.MulticlassClassification("species", np.int64(2) + 1, class_names=names)
    m = compiled([task, age()])
    x = images()
    fit(m, x, labels([task, age()]))
    keras_mtl.export_saved_model(m, "serving")
    return m, x


@case("numpy_scheduler_weights", "idioms",
      expect_ok(lambda w: close(w, 0.5, "weight_age set by the scheduler")))
def _():
    """Valid: a LossWeightScheduler returning NumPy floats."""
    from keras_mtl.callbacks import LossWeightScheduler

    m = compiled(pair(), weighting=keras_mtl.weighting.Static({"age": 1.0, "species": 1.0}))
    schedule = LossWeightScheduler(lambda epoch, w: {"age": np.float32(0.5)})
    return last(fit(m, images(), labels(pair()), callbacks=[schedule]), "weight_age")


@case("checkpoint_monitor_plain_keras_name", "idioms", expect_error("val_accuracy"))
def _():
    """ModelCheckpoint(monitor="val_accuracy", mode="max", save_best_only=True): no such key."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    best = keras.callbacks.ModelCheckpoint("best.keras", monitor="val_accuracy", mode="max",
                                           save_best_only=True)
    return fit(m, x, y, epochs=2, validation_data=(x, y), callbacks=[best])


@case("early_stopping_monitor_plain_keras_name", "idioms", expect_error("val_mae"))
def _():
    """EarlyStopping(monitor="val_mae", mode="min"): the key is val_age_mae; it never stops."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    stop = keras.callbacks.EarlyStopping(monitor="val_mae", mode="min", patience=0)
    return fit(m, x, y, epochs=2, validation_data=(x, y), callbacks=[stop])


@case("interleave_sources_as_list", "idioms", expect_error("datasets"))
def _():
    """interleave([faces, zoo]): a list, as tf.data.Dataset.sample_from_datasets takes."""
    from keras_mtl import data

    x, y = images(), labels(pair())
    return data.interleave([tf_dataset(x, {"age": y["age"]}),
                            tf_dataset(x, {"species": y["species"]})])


@case("predict_one_image_without_batch_axis", "idioms", expect_error("16, 16, 3"))
def _():
    """model.predict(image) on one (16, 16, 3) image, without the batch axis."""
    return model(pair()).predict(images(1)[0], verbose=0)


# === resume: resuming and state ==========================================================
@case("backup_restore_after_head_units_change", "resume", expect_error("backup"))
def _():
    """BackupAndRestore resumed after changing head_units from (8,) to (16,)."""
    x, y = images(), labels(pair())
    interrupted_backup(compiled(pair()), "backup", x, y)
    m = compiled(pair(), model_kwargs={"head_units": (16,)})
    return fit(m, x, y, epochs=3, callbacks=[keras.callbacks.BackupAndRestore("backup")])


@case("backup_restore_with_other_weighting", "resume", expect_error("uncertainty"))
def _():
    """A run backed up under weighting="uncertainty" resumed with weighting="dwa"."""
    x, y = images(), labels(pair())
    interrupted_backup(compiled(pair(), weighting="uncertainty"), "backup", x, y)
    m = compiled(pair(), weighting="dwa")
    return fit(m, x, y, epochs=3, callbacks=[keras.callbacks.BackupAndRestore("backup")])


@case("load_weights_with_extra_task", "resume", expect_error("smiling"))
def _():
    """Weights of a [age, species] model loaded into one with a new task "smiling"."""
    model(pair()).save_weights("w.weights.h5")
    m = model(pair() + [smiling()])
    m.load_weights("w.weights.h5")
    return m


@case("nan_image_reported_at_its_step", "resume", expect_error("step 3"))
def _():
    """A NaN pixel in image 4 of a tf.data pipeline batched by 2: step 3."""
    m = compiled(pair())
    x = images()
    x[4, 0, 0, 0] = np.nan
    return m.fit(tf_dataset(x, labels(pair()), batch=2), epochs=1, verbose=0)


@case("nan_image_in_validation_data", "resume", expect_error("validation"))
def _():
    """A NaN pixel in the validation images: val_loss is NaN for the whole run."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    xv = x.copy()
    xv[1, 3, 3, 0] = np.nan
    return fit(m, x, y, epochs=2, validation_data=(xv, y))


@case("inf_label_under_steps_per_execution", "resume", expect_error("step 5"))
def _():
    """An inf label in example 8 of a tf.data pipeline batched by 2 (step 5), with
    steps_per_execution=3."""
    m = compiled(pair(), steps_per_execution=3)
    y = labels(pair(), 12)
    y["age"][8] = np.inf
    return m.fit(tf_dataset(images(12), y, batch=2), epochs=1, verbose=0)


@case("scheduler_on_uncertainty_weighting", "resume", expect_error("Static"))
def _():
    """LossWeightScheduler on a model compiled with weighting="uncertainty"."""
    from keras_mtl.callbacks import LossWeightScheduler

    m = compiled(pair(), weighting="uncertainty")
    return fit(m, images(), labels(pair()),
               callbacks=[LossWeightScheduler(lambda epoch, w: {"age": 0.5})])


@case("scheduler_unknown_task", "resume", expect_error("agee"))
def _():
    """A LossWeightScheduler schedule returning a weight for "agee" (typo)."""
    from keras_mtl.callbacks import LossWeightScheduler

    m = compiled(pair(), weighting=keras_mtl.weighting.Static({"age": 1.0, "species": 1.0}))
    return fit(m, images(), labels(pair()),
               callbacks=[LossWeightScheduler(lambda epoch, w: {"agee": 0.5})])


def _resumed_state_check(r):
    before, after = r
    assert len(before) == len(after) and before, "weighting state lost"
    for a, b in zip(before, after):
        assert np.allclose(a, b), "weighting state differs after load_model"


@case("load_model_keeps_uncertainty_state", "resume", expect_ok(_resumed_state_check))
def _():
    """Valid: save .keras after training with "uncertainty", load, keep training."""
    m = compiled(pair(), weighting="uncertainty")
    x, y = images(), labels(pair())
    fit(m, x, y, epochs=2)
    m.save("m.keras")
    loaded = keras.models.load_model("m.keras")
    before = [np.asarray(v) for v in m.weighting.variables]
    after = [np.asarray(v) for v in loaded.weighting.variables]
    fit(loaded, x, y)
    return before, after


# === history: evaluate / predict / History ============================================
def _metrics_names_check(r):
    names, values, as_dict = r
    assert len(names) == len(values), f"{len(names)} metrics_names for {len(values)} values"
    for n, v in zip(names, values):
        assert n in as_dict, f"metrics_names holds {n!r}, not in evaluate(return_dict=True)"
        close(v, as_dict[n], f"evaluate()[{n!r}]")


@case("evaluate_list_matches_metrics_names", "history", expect_ok(_metrics_names_check))
def _():
    """Valid: zip(model.metrics_names, model.evaluate(...)) as Keras users do."""
    m = compiled(pair())
    x, y = images(), labels(pair())
    fit(m, x, y)
    values = m.evaluate(x, y, verbose=0)
    return m.metrics_names, values, m.evaluate(x, y, verbose=0, return_dict=True)


@case("history_no_validation_task_weights", "history",
      expect_ok(lambda logs: require(not [k for k in logs if k.startswith("val_weight_")],
                                     f"History holds {[k for k in logs if 'val_weight_' in k]}")))
def _():
    """History with a weighting and validation: no val_weight_<task> clutter."""
    m = compiled(pair(), weighting="uncertainty")
    x, y = images(), labels(pair())
    return history_last(fit(m, x, y, validation_data=(x, y)))


@case("recompile_without_weighting_drops_weights", "history",
      expect_ok(lambda logs: require(not [k for k in logs if "weight_" in k],
                                     f"History after recompiling without weighting: "
                                     f"{sorted(logs)}")))
def _():
    """compile(weighting="dwa"), fit, compile() again, fit: no weight_<task> left."""
    m = compiled(pair(), weighting="dwa")
    x, y = images(), labels(pair())
    fit(m, x, y)
    m.compile()
    return history_last(fit(m, x, y))


@case("evaluate_loss_is_weighted_sum", "history",
      expect_ok(lambda r: close(r["loss"], 0.5 * r["age_loss"] + 2.0 * r["species_loss"],
                                "loss vs 0.5 age_loss + 2 species_loss")))
def _():
    """evaluate() loss under loss_weights {age: 0.5, species: 2}."""
    m = compiled(pair(), loss_weights={"age": 0.5, "species": 2.0})
    return m.evaluate(images(), labels(pair()), batch_size=8, verbose=0, return_dict=True)


@case("predict_returns_only_task_keys", "history",
      expect_ok(lambda p: require(sorted(p) == ["age", "species"], f"predict keys {sorted(p)}")))
def _():
    """predict() on a tf.data dataset of (images, labels), after training with a weighting."""
    m = compiled(pair(), weighting="uncertainty")
    x, y = images(), labels(pair())
    fit(m, x, y)
    return m.predict(tf_dataset(x, y), verbose=0)


# --- running and reporting ----------------------------------------------------------
def find(case_id):
    for c in CASES:
        if c.id == case_id:
            return c
    raise SystemExit(f"user_mistakes.py: no case {case_id!r} (see --list)")


def totals(results):
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    errors = counts["clear"] + counts["unclear"] + counts["silent"]
    counts["clear_percent"] = round(100.0 * counts["clear"] / errors, 1) if errors else None
    return counts


def provenance():
    """Which keras_mtl was measured: its folder, commit and uncommitted changes."""
    package = os.path.dirname(os.path.abspath(keras_mtl.__file__))
    try:
        def git(*args):
            return subprocess.run(["git", "-C", package, *args], capture_output=True,
                                  text=True, timeout=30, check=True).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return f"keras_mtl from {package}"
    state = "with uncommitted changes in keras_mtl/" if dirty else "clean"
    return f"keras_mtl from {package} at commit {commit} ({state})"


def markdown(results, elapsed, note=""):
    counts = totals(results)
    lines = [
        "# User mistakes (issue 16): what a new user sees",
        "",
        "`python benchmarks/user_mistakes.py`: each case is a mistake (or a valid but "
        "unusual input) tried as a new user would; the outcome rule is in the script's "
        "docstring (clear: a ValueError/TypeError/FileNotFoundError/FloatingPointError "
        "raised by keras_mtl or Keras whose message names what the case declares; "
        "unclear: another type, a TensorFlow/NumPy trace or a message that does not "
        "name it; silent: no error, or wrong numbers; handled: a valid input that "
        "works).",
        "",
        f"Backend {keras.backend.backend()}, Keras {keras.__version__}, keras_mtl "
        f"{keras_mtl.__version__}, Python {platform.python_version()}; "
        f"{len(results)} cases in {elapsed:.0f} s; {provenance()}." + (f" {note}" if note else ""),
        "",
        "| outcome | cases |",
        "| --- | --- |",
    ]
    lines += [f"| {o} | {counts[o]} |" for o in OUTCOMES]
    percent = counts["clear_percent"]
    lines += [
        "",
        f"Clear errors: {counts['clear']} / "
        f"{counts['clear'] + counts['unclear'] + counts['silent']} = "
        f"{'-' if percent is None else f'{percent} %'} (clear / (clear + unclear + silent); "
        "goal: >= 95 % and no silent outcome).",
        "",
        "Per category:",
        "",
        "| category | " + " | ".join(OUTCOMES) + " |",
        "| --- | " + " | ".join("---" for _ in OUTCOMES) + " |",
    ]
    for cat in CATEGORIES:
        rows = [r for r in results if r.category == cat]
        if rows:
            lines.append(f"| {cat} | " + " | ".join(
                str(sum(r.outcome == o for r in rows)) for o in OUTCOMES) + " |")
    lines += [
        "",
        "| case | category | expects | outcome | message (first 120 characters) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        text = r.message[:MESSAGE_CHARS].replace("|", "\\|")
        if r.error_type:
            text = f"{r.error_type}: {text}"
        lines.append(f"| `{r.id}` | {r.category} | {r.expected} | **{r.outcome}** | {text} |")
    docs = {c.id: c.doc for c in CASES}
    lines += ["", "What each case does:", ""]
    lines += [f"- `{r.id}`: {docs.get(r.id, '')}" for r in results]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(HERE, "results"),
                        help="folder for user_mistakes.md (default: benchmarks/results)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these cases only")
    parser.add_argument("--isolate", action="store_true",
                        help="run every case in its own process (slower)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--note", default="", help="a sentence added to the report's header")
    parser.add_argument("--run-case", metavar="ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.list:
        for c in CASES:
            print(f"{c.id:45s} {c.category:8s} {c.expect.kind:5s} {c.doc}")
        return 0
    keras.config.disable_traceback_filtering()
    try:
        import tensorflow as tf

        tf.debugging.disable_traceback_filtering()
    except ImportError:
        pass
    if args.run_case:  # a child of run_isolated
        result = run_case(find(args.run_case))
        print("RESULT " + json.dumps(result.row()), flush=True)
        return 0

    selected = [find(i) for i in args.only] if args.only else CASES
    start = time.perf_counter()
    results = []
    for c in selected:
        result = run_isolated(c) if (args.isolate or c.isolate) else run_case(c)
        results.append(result)
        print(f"{result.outcome:8s} {result.seconds:6.1f}s  {c.id}: {result.message[:100]}",
              flush=True)
    elapsed = time.perf_counter() - start
    text = markdown(results, elapsed, args.note)
    print()
    print(text)
    if not args.no_write:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "user_mistakes.md"), "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The bad-input catalogue: user mistakes across the public API, each
answered early by a clear error that names the argument, what was expected
and what arrived -- never a stack trace from deep inside TensorFlow.

Each case is `(id, call, error type, regex the message must match)`. The
calls are lambdas so that nothing runs at collection time.

The rule, for the next contributor: every user mistake either raises early --
a `ValueError`/`TypeError` whose message names the argument or task, what was
expected and what was received -- or is handled correctly and documented.
In-memory data are checked whole before the first step; a dataset's values
are checked inside each step, on the device, and the first unclean step stops
`fit` (`StepGuard`) before any later callback can save, naming the step.
Nothing that looks like data is guessed: a value outside its task's domain is
never read as "missing" nor trained on. A task with nothing to score logs NaN,
never a perfect 0. New mistakes go into the category they belong to (one
parametrised test per category, below the catalogue).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import architectures as A
from keras_mtl import cli
from keras_mtl import data
from keras_mtl import metrics
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.callbacks import LossWeightScheduler
from keras_mtl.datasets import digit_pairs, shapes, utkface
from keras_mtl.distillation import Distiller
from keras_mtl.optimizers import LearningRateMultipliers, fine_tuning
from keras_mtl.tuning import MultiTaskHyperModel

from conftest import random_images, random_labels, tiny_model, tiny_trunk

TASKS = [T.Regression("a"), T.BinaryClassification("b")]


def export_error(message):
    """Export is TensorFlow-only: on other backends that is the error."""
    if keras.backend.backend() == "tensorflow":
        return message
    return r"Export needs the TensorFlow backend.*Current backend: '\w+'"


def compiled(**kwargs):
    model = tiny_model(TASKS)
    model.compile(**kwargs)
    return model


def fit_with(x=None, y=None, **kwargs):
    model = compiled()
    x = random_images(4) if x is None else x
    y = random_labels(TASKS, 4) if y is None else y
    model.fit(x, y, epochs=1, verbose=0, **kwargs)


def sources():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2), "float32"), {"a": np.zeros(4)}))
    return {"one": ds.batch(2), "two": ds.batch(2)}


def shared_layer_trunk():
    """A trunk whose convolution `shared` is called twice."""
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    return keras.Model(inputs, conv(conv(inputs)), name="shared_trunk")


def architecture_model(architecture, tasks=TASKS):
    return keras_mtl.build_model(tiny_trunk(), tasks, head_units=(8,), architecture=architecture)


def fit_plain_model(optimizer):
    """A plain `keras.Model` (no `MultiTaskModel.compile` to bind the optimizer)."""
    model = tiny_trunk()
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(random_images(4), np.zeros((4, 4, 4, 4), "float32"), epochs=1, verbose=0)


def distiller(teachers, **kwargs):
    return Distiller(tiny_model(TASKS), teachers, **kwargs)


def teacher(task, input_shape=(16, 16, 3)):
    return tiny_model([task], input_shape=input_shape)


CASES = [
    # --- tasks -------------------------------------------------------------
    ("task name empty", lambda: T.Regression(""), ValueError, r"`name`.*Received"),
    ("task name not str", lambda: T.Regression(3), ValueError, r"`name`.*Received: name=3"),
    ("classes < 2", lambda: T.MulticlassClassification("c", 1), ValueError,
     r"`num_classes`.*Received: num_classes=1"),
    ("classes not int", lambda: T.MulticlassClassification("c", 2.5), ValueError,
     r"`num_classes`.*Received"),
    ("class names wrong length", lambda: T.MulticlassClassification("c", 3, class_names=["x"]),
     ValueError, r"`class_names`.*Received"),
    ("unknown loss", lambda: T.Regression("a", loss="not_a_loss"), ValueError, r"`loss`.*Received"),
    ("regression units 0", lambda: T.Regression("a", units=0), ValueError, r"`units`.*Received"),
    ("segmentation classes 1", lambda: T.Segmentation("s", 1), ValueError,
     r"`num_classes`.*Received"),
    ("duplicate task names", lambda: keras_mtl.build_model(tiny_trunk(), [T.Regression("a")] * 2),
     ValueError, r"`tasks`.*Received"),
    ("tasks empty", lambda: keras_mtl.build_model(tiny_trunk(), []), ValueError,
     r"`tasks`.*Received"),
    ("task not a Task", lambda: keras_mtl.build_model(tiny_trunk(), ["age"]), ValueError,
     r"`tasks`.*Received"),
    # --- builder and backbones --------------------------------------------
    ("unknown backbone", lambda: keras_mtl.build_model("ResNet51", TASKS, input_shape=(32, 32, 3)),
     ValueError, r"`backbone`.*ResNet50"),
    ("backbone not a model", lambda: keras_mtl.build_model(3.0, TASKS), ValueError,
     r"`backbone`.*Received"),
    ("input shape rank", lambda: keras_mtl.build_model("MobileNetV3Small", TASKS,
                                                       input_shape=(32, 32)),
     ValueError, r"`input_shape`.*Received"),
    ("weights unknown", lambda: keras_mtl.build_model("MobileNetV3Small", TASKS,
                                                      input_shape=(32, 32, 3), weights="coco"),
     FileNotFoundError, r"`weights`. Expected None, 'imagenet' or the path.*Received: weights='coco'"),
    ("weights file missing", lambda: keras_mtl.build_model(
        "MobileNetV3Small", TASKS, input_shape=(32, 32, 3), weights="/no/such.weights.h5"),
     FileNotFoundError, r"`weights`.*no such file"),
    ("head units negative", lambda: tiny_model(TASKS, head_units=(-1,)), ValueError,
     r"`head_units`.*Received"),
    ("dropout 1", lambda: tiny_model(TASKS, dropout=1.0), ValueError, r"`dropout`.*Received"),
    ("trainable_backbone str", lambda: tiny_model(TASKS, trainable_backbone="yes"), ValueError,
     r"`trainable_backbone`.*Received"),
    # --- compile -----------------------------------------------------------
    ("loss for unknown task", lambda: compiled(loss={"z": "mse"}), ValueError,
     r"`loss`.*'z'"),
    ("metrics for unknown task", lambda: compiled(metrics={"z": ["mae"]}), ValueError,
     r"`metrics`.*'z'"),
    ("loss weight negative", lambda: compiled(loss_weights={"a": -1.0}), ValueError,
     r"`loss_weights`.*Received"),
    ("unknown weighting", lambda: compiled(weighting="magic"), ValueError,
     r"`weighting`.*Received: weighting='magic'"),
    ("weighting and loss_weights", lambda: compiled(weighting="equal", loss_weights={"a": 2.0}),
     ValueError, r"`loss_weights`|`weighting`"),
    # --- fit: labels ---------------------------------------------------------
    ("labels for unknown task", lambda: fit_with(y={**random_labels(TASKS, 4), "z": np.zeros(4)}),
     ValueError, r"'z'"),
    ("label shape", lambda: fit_with(y={"a": np.zeros((4, 3), "float32"),
                                        "b": np.zeros((4, 1), "float32")}),
     ValueError, r"'a'.*shape"),
    # --- weighting methods -------------------------------------------------------
    ("static weights not dict", lambda: W.Static([1.0, 2.0]), ValueError, r"`weights`.*Received"),
    ("static weight negative", lambda: W.Static({"a": -1.0}), ValueError,
     r"`weights\['a'\]`.*Received: weights\['a'\]=-1.0"),
    ("inverse size counts 0", lambda: W.InverseSize(counts={"a": 0}), ValueError,
     r"`counts\['a'\]`.*Received: counts\['a'\]=0"),
    ("uncertainty kind", lambda: W.Uncertainty(task_kinds={"a": "ranking"}), ValueError,
     r"`task_kinds`.*Received"),
    ("dwa temperature 0", lambda: W.DynamicWeightAverage(temperature=0), ValueError,
     r"`temperature`.*Received"),
    ("rlw seed negative", lambda: W.RandomLossWeighting(seed=-1), ValueError,
     r"`seed`.*Received: seed=-1"),
    ("famo learning rate", lambda: W.FAMO(learning_rate=-0.1), ValueError,
     r"`learning_rate`.*Received"),
    ("gradient mode unknown", lambda: W.MGDA(mode="layers"), ValueError, r"`mode`.*Received"),
    ("graddrop params mode", lambda: W.GradDrop(mode="params"), ValueError, r"`mode`.*Received"),
    ("cagrad c negative", lambda: W.CAGrad(c=-0.4), ValueError, r"`c`.*Received"),
    ("gradnorm alpha negative", lambda: W.GradNorm(alpha=-1.0), ValueError,
     r"`alpha`.*Received"),
    ("nash update_every 0", lambda: W.NashMTL(update_every=0), ValueError,
     r"`update_every`.*Received"),
    ("gradvac beta > 1", lambda: W.GradVac(beta=2.0), ValueError, r"`beta`.*Received"),
    ("scheduler not callable", lambda: LossWeightScheduler(0.5), ValueError,
     r"`schedule`.*Received"),
    # --- several datasets ------------------------------------------------------------
    ("interleave empty", lambda: data.interleave({}), ValueError, r"`datasets`.*Received"),
    ("interleave not datasets", lambda: data.interleave({"one": [1, 2]}), ValueError,
     r"`datasets`.*Received"),
    ("interleave schedule", lambda: data.interleave(sources(), schedule="random"), ValueError,
     r"`schedule`.*Received"),
    ("temperature without it", lambda: data.interleave(sources(), schedule="temperature",
                                                       temperature=0),
     ValueError, r"`temperature`.*Received"),
    ("sizes for unknown source", lambda: data.interleave(sources(), schedule="proportional",
                                                         sizes={"three": 3}),
     ValueError, r"`sizes`.*Received"),
    # --- metrics -----------------------------------------------------------------------
    ("delta_m missing baseline", lambda: metrics.delta_m({"a": {"mae": 1.0}}, {},
                                                         {"a": {"mae": False}}),
     ValueError, r"`stl`. Expected a dict with the task keys \['a'\]. Received: stl=\{\}"),
    ("delta_m empty", lambda: metrics.delta_m({}, {}, {}), ValueError, r"`mtl`.*Received: mtl=\{\}"),
    # --- datasets --------------------------------------------------------------------
    ("shapes split", lambda: shapes.load("dev"), ValueError, r"`split`.*Received: split='dev'"),
    ("shapes image size", lambda: shapes.load("train", 8, image_size=4), ValueError,
     r"`image_size`.*Received"),
    ("shapes examples", lambda: shapes.load("train", num_examples=0), ValueError,
     r"`num_examples`.*Received"),
    ("digit pairs channels", lambda: digit_pairs.load("train", 8, channels=2), ValueError,
     r"`channels`.*Received"),
    # --- tuning and export ----------------------------------------------------------------
    ("tuning unknown weighting", lambda: MultiTaskHyperModel(TASKS, (16, 16, 3),
                                                            weightings=("magic",)),
     ValueError, r"`weightings`.*Received"),
    ("tuning branch point 0", lambda: MultiTaskHyperModel(TASKS, (16, 16, 3), branch_points=(0.0,)),
     ValueError, r"`branch_points`.*Received: branch_points=0.0"),
    ("export not a MultiTaskModel", lambda: keras_mtl.export_saved_model(tiny_trunk(), "/tmp/x"),
     ValueError, export_error(r"`model`.*Received: model of type Functional")),
    ("tflite quantization", lambda: keras_mtl.export_tflite(tiny_model(TASKS), "/tmp/m.tflite",
                                                           quantization="int4"),
     ValueError, export_error(r"`quantization`.*Received")),
    ("utkface folder missing", lambda: utkface.load("/no/such/dir", 32), ValueError,
     r"`directory`.*Received: directory='/no/such/dir'"),
    # --- architectures and attach_at ------------------------------------------------------
    ("mmoe experts 0", lambda: A.MMoE(num_experts=0), ValueError,
     r"`num_experts`.*Received: num_experts=0"),
    ("mmoe expert units int", lambda: A.MMoE(expert_units=8), ValueError,
     r"`expert_units`. Expected a non-empty tuple.*Received: expert_units=8"),
    ("ple activation unknown", lambda: A.PLE(expert_activation="relux"), ValueError,
     r"`expert_activation`.*Received: expert_activation='relux'"),
    ("cross-stitch init > 1", lambda: A.CrossStitch(init=1.5), ValueError,
     r"`init`.*'paper', 'identity' or a float in \[0, 1\].*Received: init=1.5"),
    ("cross-stitch too many blocks", lambda: architecture_model(A.CrossStitchNetwork(blocks=5)),
     ValueError, r"`blocks`. Expected at most 1 .*'tiny_trunk'.*Received: blocks=5"),
    ("mtan unknown block", lambda: architecture_model(A.MTAN(blocks=["conv9"])), ValueError,
     r"`blocks`.*block boundaries of 'tiny_trunk'.*Received: blocks=\['conv9'\] "
     r"\(unknown: \['conv9'\]\)"),
    ("task batch norm without batch norm", lambda: architecture_model(A.TaskSpecificBatchNorm()),
     ValueError, r"`backbone`.*BatchNormalization layers; 'tiny_trunk' has none"),
    ("soft sharing strength inf", lambda: A.SoftSharing(strength=float("inf")), ValueError,
     r"`strength`.*Received: strength=inf"),
    ("architecture not an architecture", lambda: architecture_model("mmoe"), ValueError,
     r"`architecture`. Expected None or an instance with a `build_trunk.*"
     r"Received: architecture='mmoe'"),
    ("architecture class, not instance", lambda: architecture_model(A.MMoE), ValueError,
     r"`architecture`.*e.g. `MMoE\(\)`.*Received: architecture=<class"),
    ("subclassed backbone", lambda: keras_mtl.build_model(
        type("Sub", (keras.Model,), {"call": lambda self, x: x})(), TASKS, input_shape=(16, 16, 3)),
     ValueError, r"`backbone`.*subclassed model has no symbolic inputs.*Received: backbone="),
    ("attach_at with architecture", lambda: architecture_model(
        A.MMoE(num_experts=2, expert_units=(4,)), [T.Regression("a", attach_at="conv2d")]),
     ValueError,
     r"`architecture`.*`attach_at` \(\{'a': 'conv2d'\}\).*Received: architecture=MMoE\("),
    ("freeze_blocks too many", lambda: tiny_model(TASKS, freeze_blocks=3), ValueError,
     r"`freeze_blocks`. Expected an integer from 0 to 2.*Received: freeze_blocks=3"),
    ("attach_at empty", lambda: T.Regression("a", attach_at=""), ValueError,
     r"`attach_at`.*Received: attach_at=''"),
    ("gradient_reversal negative", lambda: T.BinaryClassification("a", gradient_reversal=-1.0),
     ValueError, r"`gradient_reversal`. Expected a finite number >= 0. Received: gradient_reversal=-1.0"),
    ("gradient_reversal not a number", lambda: T.Regression("a", gradient_reversal="yes"),
     ValueError, r"`gradient_reversal`.*Received: gradient_reversal='yes'"),
    ("attach_at unknown layer", lambda: tiny_model([T.Regression("a", attach_at="conv9")]),
     ValueError,
     r"`attach_at` of task 'a'.*one of \['input_layer.*'\]. Received: attach_at='conv9'"),
    ("attach_at shared layer", lambda: keras_mtl.build_model(
        shared_layer_trunk(), [T.Regression("a", attach_at="shared")], head_units=(8,)),
     ValueError, r"`attach_at` of task 'a'.*called once.*'shared' is called 2 times"),
    ("representation mode, per-task trunk", lambda: architecture_model(
        A.MMoE(num_experts=2, expert_units=(4,))).compile(weighting=W.MGDA(mode="representation")),
     ValueError, r"`weighting`.*MGDA.*mode='representation' on a trunk with per-task"),
    # --- optimizers --------------------------------------------------------------------------
    ("multiplier negative", lambda: LearningRateMultipliers("adam", {"trunk": -0.1}), ValueError,
     r"`multipliers\['trunk'\]`.*Received: multipliers\['trunk'\]=-0.1"),
    ("multipliers wrap a wrapper", lambda: LearningRateMultipliers(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()), {"trunk": 0.1}),
     ValueError, r"`optimizer`.*not a wrapper.*Received: optimizer=.*LossScaleOptimizer"),
    ("multipliers unknown layer", lambda: compiled(
        optimizer=LearningRateMultipliers("adam", {"heads": 0.1})),
     ValueError, r"`multipliers`.*one of \[.*'trunk'.*\]. Received unknown keys \['heads'\]"),
    ("multipliers unbound, unknown path", lambda: fit_plain_model(
        LearningRateMultipliers("sgd", {"nope": 0.5})),
     ValueError, r"`multipliers`.*not bound.*Received unknown keys \['nope'\]"),
    ("fine_tuning trunk in head_factors", lambda: fine_tuning(head_factors={"trunk": 0.5}),
     ValueError, r"`head_factors`.*`backbone_factor`.*Received: head_factors=\{'trunk': 0.5\}"),
    # --- distillation ------------------------------------------------------------------------
    ("distiller student not a MultiTaskModel", lambda: Distiller(tiny_trunk(), {"b": tiny_trunk()}),
     ValueError, r"`student`.*Received: student=<Functional name=tiny_trunk"),
    ("distiller teacher for unknown task", lambda: distiller({"z": teacher(T.Regression("z"))}),
     ValueError, r"`teachers`.*\['a', 'b'\]. Received unknown keys \['z'\]"),
    ("distiller teacher output shape", lambda: distiller(
        {"b": teacher(T.MulticlassClassification("b", 3))}),
     ValueError,
     r"`teachers`.*task 'b'.*\(None, 1\). Received a teacher output of shape \(None, 3\)"),
    ("distiller teacher input shape", lambda: distiller(
        {"b": teacher(T.BinaryClassification("b"), input_shape=(32, 32, 3))}),
     ValueError, r"`teachers`.*task 'b' cannot take the student's inputs \(None, 16, 16, 3\)"
     r".*32, 32, 3"),
    ("distiller temperature 0", lambda: distiller({"b": teacher(T.BinaryClassification("b"))},
                                                  temperature=0),
     ValueError, r"`temperature`.*Received: temperature=0"),
    ("distiller alpha > 1", lambda: distiller({"b": teacher(T.BinaryClassification("b"))},
                                              alpha=1.5),
     ValueError, r"`alpha`.*Received: alpha=1.5"),
    ("distiller gradient weighting", lambda: distiller(
        {"b": teacher(T.BinaryClassification("b"))}).compile(weighting="mgda"),
     ValueError, r"`weighting`.*loss-level weightings only.*Received: weighting=<MGDA"),
    # --- CLI -----------------------------------------------------------------------------
    ("cli unknown command", lambda: cli.main(["train-everything"]), SystemExit, r"2"),
    ("cli bad epochs", lambda: cli.main(["demo", "--epochs", "0"]), SystemExit, r"2"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    # Raised by keras_mtl (or argparse) itself, not from inside TensorFlow.
    frames = [f.name for f in info.traceback]
    assert not any("tensorflow" in str(f.path) for f in info.traceback[-1:]), frames


def test_the_catalogue_has_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# =====================================================================================
# Mistakes by category (issue 16), under the rule of the module docstring. One
# parametrised test per category; each case is (id, call, regex) or as noted.
# =====================================================================================
SEG = [T.Regression("a"), T.BinaryClassification("b"), T.MulticlassClassification("c", 3),
       T.Segmentation("s", 3), T.MultilabelClassification("m", 2)]


def bad_labels(task, value, index=1):
    """Valid labels for SEG with `value` written into task `task` at `index`."""
    y = random_labels(SEG, 4)
    y[task] = y[task].astype("float32")
    y[task][index] = value
    return y


def as_dataset(y, sample_weight=None, batch_size=2):
    x = random_images(4)
    element = (x, y) if sample_weight is None else (x, y, sample_weight)
    return tf.data.Dataset.from_tensor_slices(element).batch(batch_size)


LABEL_DOMAIN = [
    ("class id = num_classes", "c", 3, r"task 'c' \(MulticlassClassification\): expected class "
     r"ids: integers in \[0, 3\).*received 1 example outside it, value 3"),
    ("255 ignore pixels", "s", 255, r"task 's' \(Segmentation\).*pixels outside it, value 255\. "
     r"255 is a common \"ignore\" marker: mark unlabelled values with -1"),
    ("non-integral class id", "c", 1.7, r"task 'c'.*value 1\.7\. Class ids must be integers"),
    ("binary label 255", "b", 255, r"task 'b' \(BinaryClassification\): expected 0 or 1.*"
     r"value 255\. Scale 0/255 labels to 0/1"),
    ("class id -2", "c", -2, r"task 'c'.*value -2\. Only -1 \(or NaN\) marks a missing label"),
    ("binary label -0.5", "b", -0.5, r"task 'b'.*value -0\.5"),
    ("multi-label value 2", "m", 2, r"task 'm' \(MultilabelClassification\).*value 2"),
    ("infinite regression target", "a", np.inf, r"task 'a' \(Regression\): expected finite "
     r"numbers.*value inf"),
]


@pytest.mark.parametrize("task, value, message", [c[1:] for c in LABEL_DOMAIN],
                         ids=[c[0] for c in LABEL_DOMAIN])
def test_labels_outside_the_task_domain(task, value, message):
    model = tiny_model(SEG)
    model.compile()
    before = [w.copy() for w in model.get_weights()]
    # In memory: refused before any step, naming the first bad example.
    with pytest.raises(ValueError, match=rf"in the `y` passed to `fit` \(labels of '{task}' at "
                                         rf"index 1\): labels of {message}"):
        model.fit(random_images(4), bad_labels(task, value), epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # In a dataset: the step leaves the value out, and fit stops at that step.
    with pytest.raises(ValueError, match=rf"epoch 1, step 1 of the training data: labels of "
                                         rf"{message}.*nothing was trained on them"):
        model.fit(as_dataset(bad_labels(task, value)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=rf"step 1 of the evaluation data: labels of {message}"):
        model.evaluate(as_dataset(bad_labels(task, value)), verbose=0)


SAMPLE_WEIGHTS = [
    ("negative", -1.0, r"value -1"),
    ("NaN", np.nan, r"value nan"),
    ("infinite", np.inf, r"value inf"),
]


@pytest.mark.parametrize("value, message", [c[1:] for c in SAMPLE_WEIGHTS],
                         ids=[c[0] for c in SAMPLE_WEIGHTS])
def test_invalid_sample_weights(value, message):
    model = tiny_model(TASKS)
    model.compile()
    weights = np.ones(4, "float32")
    weights[3] = value
    expected = (r"`sample_weight` of task 'a': expected finite values >= 0 \(0 leaves an "
                rf"example out.*received 1 example with other weights, {message}")
    with pytest.raises(ValueError, match=rf"epoch 1, step 2 of the training data: {expected}"):
        model.fit(as_dataset(random_labels(TASKS, 4), {"a": weights, "b": np.ones(4, "float32")}),
                  epochs=1, verbose=0)


def test_valid_unusual_labels_train():
    """Soft binary labels, -1 / NaN markers, an `ignore_class` of the loss, and one
    unknown value per multi-label row (the row's other values still train)."""
    tasks = [T.BinaryClassification("b"),
             T.Segmentation("s", 3, loss=keras.losses.SparseCategoricalCrossentropy(
                 ignore_class=255)),
             T.MultilabelClassification("m", 2)]
    y = random_labels(tasks, 4)
    y["b"] = np.array([0.0, 0.3, -1.0, np.nan], "float32")
    y["s"][:, :3] = 255
    y["m"] = np.array([[1, -1], [-1, 0], [0, 1], [1, np.nan]], "float32")
    model = tiny_model(tasks)
    model.compile()
    history = model.fit(random_images(4), y, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    _, missing, invalid, _ = tasks[2].prepare_labels(y["m"])
    assert np.asarray(missing).tolist() == [[False, True], [True, False], [False, False],
                                            [False, True]]
    assert not np.asarray(invalid).any()


def expect_names_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


NAMING = [
    ("task named val", lambda: T.Regression("val"),
     r"`name`.*other than 'val'.*`val_loss`.*Received: name='val'"),
    ("task named val_*", lambda: T.BinaryClassification("val_age"),
     r"`name`.*not starting with 'val_'.*Received: name='val_age'"),
    ("non-ASCII task name", lambda: T.Regression("âge"),
     r"`name`.*ASCII letters, digits.*SavedModel outputs. Received: name='âge'"),
    ("task named like the input", lambda: tiny_model([T.Regression("image")]),
     r"`tasks`. Task 'image' has the name of the model's input"),
    ("task named like the trunk", lambda: tiny_model([T.Regression("tiny_trunk")]),
     r"`tasks`. Task 'tiny_trunk' has the name of the trunk"),
    ("task named trunk", lambda: tiny_model([T.Regression("trunk")]),
     r"`tasks`. Task 'trunk' has the name of the trunk in `LearningRateMultipliers`"),
    ("export output collision", lambda: tiny_model(
        [T.MulticlassClassification("c", 3), T.MulticlassClassification("c_class_ids", 2)]),
     r"`tasks`. Task names 'c' and 'c_class_ids' collide.*output named 'c_class_ids'"),
    ("log key collision", lambda: tiny_model(
        [T.Regression("loss"), T.Regression("weight")]).compile(weighting="dwa"),
     r"two values would be logged as 'weight_loss'"),
    ("labels as a list, tasks not sorted", lambda: tiny_model(
        [T.Regression("z"), T.Regression("a")]).compile() or fit_list(["z", "a"], labels=True),
     r"Invalid labels: received a list of 2 arrays for the tasks \['z', 'a'\], whose order "
     r"differs from the model's sorted output names \['a', 'z'\]"),
    ("sample weights as a list, tasks not sorted", lambda: fit_list(["z", "a"], labels=False),
     r"Invalid sample weights: received a list of 2 arrays for the tasks \['z', 'a'\]"),
]


def fit_list(names, labels):
    model = tiny_model([T.Regression(n) for n in names])
    model.compile()
    y = {n: np.zeros(4, "float32") for n in names}
    if labels:
        y = [y[n] for n in names]
        return model.fit(random_images(4), y, verbose=0)
    return model.fit(random_images(4), y, sample_weight=[np.ones(4, "float32")] * 2, verbose=0)


@pytest.mark.parametrize("call, message", [c[1:] for c in NAMING], ids=[c[0] for c in NAMING])
def test_order_and_naming(call, message):
    expect_names_error(call, message)


def test_labels_as_a_list_in_sorted_task_order_are_read_in_that_order():
    model = tiny_model([T.Regression("a"), T.Regression("b")])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    y = [np.zeros(4, "float32"), np.full(4, 1000.0, "float32")]
    logs = model.evaluate(random_images(4), y, verbose=0, return_dict=True)
    assert logs["b_loss"] > 10 * logs["a_loss"]  # b got the labels of 1000


def test_export_outputs_are_the_declared_serving_outputs():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("export is TensorFlow-only")
    from keras_mtl.export.saved_model import task_outputs

    for task in [T.Regression("a"), T.BinaryClassification("b"),
                 T.MulticlassClassification("c", 2, class_names=["x", "y"]),
                 T.MultilabelClassification("m", 2, label_names=["p", "q"]),
                 T.Segmentation("s", 2)]:
        shape = (1, 4, 4, 2) if task.kind == "dense" else (1, task.output_channels)
        assert sorted(task_outputs(task, tf.zeros(shape))) == sorted(task.serving_outputs())


def test_a_task_absent_from_an_epoch_logs_nan_and_cannot_be_monitored(tmp_path):
    """A task with no labelled example logs NaN, not 0.0 (a perfect score). A
    callback monitoring it is refused at that epoch's end, before it acts: Keras'
    monitors keep a first NaN as the best value, so the checkpoint would hold it."""
    model = tiny_model(TASKS)
    model.compile()
    x, y = random_images(4), random_labels(TASKS, 4)
    absent = dict(y, a=np.full(4, np.nan, "float32"))
    history = model.fit(x, y, validation_data=(x, absent), epochs=2, verbose=0)
    assert np.isnan(history.history["val_a_loss"]).all()
    assert np.isnan(history.history["val_a_mae"]).all()
    assert np.isfinite(history.history["val_b_loss"]).all()
    checkpoint = str(tmp_path / "best.keras")
    for callback in (keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_a_loss",
                                                     save_best_only=True),
                     keras.callbacks.EarlyStopping(monitor="val_a_mae", patience=1)):
        name = type(callback).__name__
        with pytest.raises(ValueError, match=rf"`callbacks`: {name}\(monitor='val_a_\w+'\) "
                                             r"monitors .* NaN at the end of epoch 1: the "
                                             r"validation data of that epoch hold no labelled"):
            model.fit(x, y, validation_data=(x, absent), epochs=2, verbose=0,
                      callbacks=[callback])
    assert not (tmp_path / "best.keras").exists()


def test_task_monitors_need_no_mode():
    """Keras' monitors cannot tell a task metric's direction (`mode="auto"` raises
    for `val_a_mae`); `fit` sets it from the metric."""
    model = tiny_model(TASKS)
    model.compile()
    x, y = random_images(4), random_labels(TASKS, 4)
    monitors = {"val_a_loss": "min", "val_a_mae": "min", "val_b_accuracy": "max",
                "b_auc": "max"}
    callbacks = [keras.callbacks.EarlyStopping(monitor=key) for key in monitors]
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=callbacks)
    assert [c.mode for c in callbacks] == list(monitors.values())


@pytest.mark.parametrize("validation", [False, True])
def test_an_epoch_without_any_label_is_an_error(validation):
    model = tiny_model(TASKS)
    model.compile()
    x, y = random_images(4), random_labels(TASKS, 4)
    nothing = {"a": np.full(4, np.nan, "float32"), "b": np.full((4, 1), -1.0, "float32")}
    data = "validation" if validation else "training"
    with pytest.raises(ValueError, match=rf"the {data} data of epoch 1 hold no labelled example "
                                         r"for any of the tasks \['a', 'b'\]"):
        model.fit(x, y if validation else nothing, validation_data=(x, nothing) if validation
                  else None, epochs=1, verbose=0)


KERAS_IDIOMS = [
    ("one-hot metric", lambda: compiled(metrics=["categorical_accuracy"]),
     r"`metrics`. Metric 'categorical_accuracy' fits none of the tasks.*one-hot"),
    ("metric that does not fit its task", lambda: compiled(metrics={"b": ["mae"]}),
     r"`metrics`. Metric 'mae' does not fit task 'b' \(BinaryClassification"),
    ("unknown metric name", lambda: compiled(metrics=["f2"]),
     r"`metrics`. Expected Keras metric names.*Received: 'f2'"),
    ("one-hot loss for class ids", lambda: T.MulticlassClassification(
        "c", 3, loss="categorical_crossentropy"),
     r"`loss`. categorical_crossentropy reads one-hot labels.*'sparse_categorical_crossentropy'"),
    ("regression loss for class ids", lambda: T.Segmentation("s", 3, loss="mae"),
     r"`loss`. mean_absolute_error reads regression labels, and task 's' has class-id labels"),
    ("from_logits on a softmax head", lambda: T.MulticlassClassification(
        "c", 3, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
     r"`loss`. from_logits=True, but the head of task 'c' already applies a softmax"),
    ("reduction sum", lambda: T.Regression("a", loss=keras.losses.MeanSquaredError(
        reduction="sum")), r"`loss`. reduction='sum'.*`compile\(loss_weights=...\)`"),
    ("class_weight", lambda: fit_with(class_weight={0: 1.0, 1: 2.0}),
     r"`class_weight`.*`sample_weight=\{task: weights\}`.*Received: class_weight="),
    ("plain Keras monitor", lambda: fit_with(callbacks=[keras.callbacks.EarlyStopping(
        monitor="val_mae")], validation_data=(random_images(4), random_labels(TASKS, 4))),
     r"`callbacks`: EarlyStopping\(monitor='val_mae'\).*Did you mean one of \['val_a_mae'\]"),
    ("string class labels", lambda: fit_with(y={"a": np.zeros(4, "float32"),
                                                "b": np.array(["yes", "no"] * 2)}),
     r"Invalid labels for task 'b': expected numbers.*Received labels of dtype <U3"),
    ("interleave batch_size on batched sources", lambda: data.interleave(sources(),
                                                                        batch_size=2),
     r"`batch_size`.*source 'one' of `datasets` looks batched already"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in KERAS_IDIOMS],
                         ids=[c[0] for c in KERAS_IDIOMS])
def test_keras_idioms_that_do_not_carry_over(call, message):
    expect_names_error(call, message)


def test_keras_idioms_that_carry_over():
    """A metrics list goes to every task it fits, as Keras gives it to every output
    ("accuracy" resolved per task); a dict adds to the task's own metrics; NumPy
    scalars are numbers."""
    model = tiny_model(TASKS, head_units=np.array([8]), dropout=np.float32(0.1))
    model.compile(metrics=["accuracy", "mse"])
    logs = model.evaluate(random_images(4), random_labels(TASKS, 4), verbose=0, return_dict=True)
    assert sorted(logs) == ["a_loss", "a_mae", "a_mse", "a_rmse", "b_accuracy", "b_auc",
                            "b_loss", "loss"]
    accuracy = {m.name: m for m in model._compiled_state.metrics["b"]}["b_accuracy"]
    assert type(accuracy).__name__ == "BinaryAccuracy"
    assert model.head_units == (8,) and model.dropout == pytest.approx(0.1)


def test_resume_after_changing_the_tasks_is_refused(tmp_path):
    saved = tiny_model([T.Regression("a"), T.Regression("b")])
    saved.save_weights(tmp_path / "w.weights.h5")
    for tasks in ([T.Regression("b"), T.Regression("a")], [T.Regression("a"), T.Regression("c")]):
        with pytest.raises(ValueError, match=r"saved from a model with other tasks or heads.*"
                                             r"\['a', 'Regression', 1\], \['b'"):
            tiny_model(tasks).load_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match=r"other tasks or heads.*'head_units': \[8\]"):
        tiny_model([T.Regression("a"), T.Regression("b")], head_units=(4,)).load_weights(
            tmp_path / "w.weights.h5")


def test_a_nonfinite_step_is_named_under_steps_per_execution():
    model = tiny_model(TASKS)
    model.compile(steps_per_execution=4)
    x, y = random_images(8), random_labels(TASKS, 8)
    x[2] = np.nan  # the 3rd example: step 3 at batch size 1
    with pytest.raises(ValueError, match=r"epoch 1, step 3 of the training data: the inputs"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(1), epochs=1, verbose=0)


def test_evaluate_and_history_hold_metrics_only():
    model = tiny_model(TASKS)
    model.compile(weighting="dwa")
    x, y = random_images(4), random_labels(TASKS, 4)
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert {"weight_a", "weight_b"} <= set(history.history)
    assert not [k for k in history.history if k.startswith("val_weight")]
    values = model.evaluate(x, y, verbose=0)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert model.metrics_names == ["loss", "a_loss", "a_mae", "a_rmse", "b_loss",
                                   "b_accuracy", "b_auc"]
    assert dict(zip(model.metrics_names, values)) == pytest.approx(logs)


def nan_images(n=4, index=2):
    x = random_images(n)
    x[index, 1, 1, 0] = np.nan
    return x


def source(n, label="a"):
    return tf.data.Dataset.from_tensor_slices(
        (random_images(n), {label: np.zeros(n, "float32")})).batch(2)


INPUTS_AND_SOURCES = [
    ("NaN image in x", lambda: fit_with(x=nan_images()),
     r"in the `x` passed to `fit` \(index 2\): the inputs \(`x`\) hold NaN or inf values in 1 "
     r"example"),
    ("NaN image in validation_data", lambda: fit_with(validation_data=(
        nan_images(index=1), random_labels(TASKS, 4))),
     r"in `validation_data` \(index 1\): the inputs \(`x`\) hold NaN"),
    ("NaN image in a dataset", lambda: compiled().fit(tf.data.Dataset.from_tensor_slices(
        (nan_images(), random_labels(TASKS, 4))).batch(1), verbose=0),
     r"at epoch 1, step 3 of the training data: the inputs \(`x`\) hold NaN"),
    ("empty source", lambda: data.interleave({"one": source(4), "two": source(4).take(0)}),
     r"`datasets`. Source 'two' holds no element"),
    ("source filtered to nothing", lambda: compiled().fit(data.interleave(
        {"one": source(4), "two": source(4, "b").filter(lambda x, y: False)},
        steps_per_epoch=4), verbose=0),
     r"`datasets`. Source 'two' holds no element \(e.g. a `filter` that keeps nothing"),
    ("Δm over a task never validated", lambda: fit_with(
        validation_data=(random_images(4), dict(random_labels(TASKS, 4),
                                                b=np.full((4, 1), -1.0, "float32"))),
        callbacks=[keras_mtl.objectives.DeltaM(TASKS, {"a": {"mae": 1.0},
                                                       "b": {"accuracy": 0.5}})]),
     r"`val_delta_m` \(DeltaM\) cannot be computed at epoch 1: the metrics of tasks \['b'\] "
     r"are NaN"),
    ("evaluate on data without any label", lambda: compiled().evaluate(
        random_images(4), {"a": np.full(4, np.nan, "float32"),
                           "b": np.full((4, 1), -1.0, "float32")}, verbose=0),
     r"the evaluation data hold no labelled example for any of the tasks \['a', 'b'\]"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in INPUTS_AND_SOURCES],
                         ids=[c[0] for c in INPUTS_AND_SOURCES])
def test_inputs_and_sources(call, message):
    expect_names_error(call, message)


def test_a_model_that_imputes_nan_inputs_trains_with_the_check_off():
    inputs = keras.Input((16, 16, 3))
    filled = keras.layers.Lambda(lambda x: keras.ops.where(keras.ops.isnan(x), 0.0, x))(inputs)
    model = keras_mtl.build_model(keras.Model(inputs, tiny_trunk()(filled)), TASKS,
                                  head_units=(8,))
    model.compile(stop_on_nonfinite=False)
    history = model.fit(nan_images(), random_labels(TASKS, 4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

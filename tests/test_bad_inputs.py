"""The bad-input catalogue: user mistakes across the public API, each
answered early by a clear error that names the argument, what was expected
and what arrived -- never a stack trace from deep inside TensorFlow.

Each case is `(id, call, error type, regex the message must match)`. The
calls are lambdas so that nothing runs at collection time.
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

"""A feature whose optional dependency is missing names the extra to install
(`keras_mtl._optional`)."""

import importlib
import sys

import pytest

from keras_mtl._optional import require


@pytest.mark.parametrize("module, dependency, extra", [
    ("keras_mtl.data.sources", "tensorflow", "tensorflow"),
    ("keras_mtl.export.saved_model", "tensorflow", "tensorflow"),
    ("keras_mtl.tuning.hypermodel", "keras_tuner", "tuner"),
    ("keras_mtl.datasets.shapes_tfds", "tensorflow_datasets", "tfds"),
])
def test_a_module_without_its_dependency_names_the_extra(monkeypatch, module, dependency, extra):
    # Import it afresh with the dependency missing; monkeypatch puts the
    # modules back afterwards.
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, dependency, None)
    with pytest.raises(ImportError) as info:
        importlib.import_module(module)
    message = str(info.value)
    assert f"needs the {dependency!r} package, which is not installed" in message
    assert f'pip install "keras_mtl[{extra}]"' in message


def test_the_dataset_loaders_name_tensorflow(monkeypatch):
    from keras_mtl.datasets import shapes

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"shapes.load \(a tf.data dataset\) needs the "
                       r"'tensorflow' package.*\(or tensorflow-cpu"):
        shapes.load("train", 4)


def test_another_missing_module_is_not_disguised(monkeypatch, tmp_path):
    # The module exists but something it imports does not: that error is
    # the user's to see as it is.
    (tmp_path / "kmtl_present.py").write_text("import kmtl_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="kmtl_absent_dependency"):
        require("kmtl_present", "a feature")

"""The README's ten-line example runs as written; the generated tables of the
site's pages (docs/weighting.md, docs/datasets.md) match the package."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WEIGHTING_PAGE = ROOT / "docs" / "weighting.md"
DATASETS_PAGE = ROOT / "docs" / "datasets.md"


@pytest.mark.slow
def test_ten_line_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "build_model" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {})
    assert (tmp_path / "hydra.keras").exists()


@pytest.mark.parametrize("level", ["loss", "gradient"])
def test_method_tables_list_every_registered_method(level):
    from keras_mtl import weighting

    text = WEIGHTING_PAGE.read_text()
    start = text.index(f"<!-- weighting table: {level} ")
    table = text[text.index("\n", start) + 1:text.index("\n<!-- end of table -->", start)]
    assert table == weighting.markdown_table(level, "keras_mtl"), (
        "docs/weighting.md's table is out of date; paste keras_mtl.weighting.markdown_table("
        f"{level!r}, 'keras_mtl'):\n" + weighting.markdown_table(level, "keras_mtl"))


@pytest.mark.parametrize("loader", ["shapes", "digit_pairs", "utkface", "cifar10_animal", "qm9"])
def test_the_dataset_table_lists_each_loaders_label_keys(loader):
    import importlib

    module = importlib.import_module(f"keras_mtl.datasets.{loader}")
    keys = getattr(module, "TASKS", None) or module.TARGETS  # QM9: its regression targets
    row = next(line for line in DATASETS_PAGE.read_text().splitlines()
               if line.startswith(f"| `datasets.{loader}.load("))
    listed = re.findall(r"`(\w+)`", row.split("|")[2])
    assert tuple(listed) == tuple(keys), (loader, listed, keys)

"""The serving example, offline: train briefly, export, answer REST bodies."""

import json
import os

import numpy as np
import pytest

from conftest import load_example


@pytest.mark.slow  # long: `make test-slow` runs it
def test_serve_example_exports_and_answers_the_client_request(tmp_path, capsys):
    example = load_example("serve_savedmodel")
    result = example.main(["--quick", "--output", str(tmp_path), "--model-name", "hydra",
                           "--instances", "3", "--verbose", "0"])
    out = capsys.readouterr().out

    # TF Serving's layout: <base>/<version>/, the first export is version 1.
    assert result["version_dir"] == str(tmp_path / "hydra" / "1")
    assert (tmp_path / "hydra" / "1" / "saved_model.pb").is_file()
    assert f"-v {tmp_path / 'hydra'}:/models/hydra -e MODEL_NAME=hydra tensorflow/serving" in out
    assert ("curl -s -X POST http://localhost:8501/v1/models/hydra:predict "
            f"-H 'Content-Type: application/json' -d @{tmp_path / 'request.json'}") in out

    # The request bodies the curl commands send.
    pixels = json.loads((tmp_path / "request.json").read_text())
    png = json.loads((tmp_path / "request_png.json").read_text())
    assert np.shape(pixels["instances"][0]["image"]) == (32, 32, 3)
    assert png["signature_name"] == "serving_bytes"
    assert set(png["instances"][0]["image_bytes"]) == {"b64"}

    # The answers, as TF Serving's REST API gives them, match Keras.
    model = result["model"]
    images = np.asarray([row["image"] for row in pixels["instances"]], np.float32)
    expected = model.predict(images, verbose=0)
    for name in ("request.json", "request_png.json"):
        predictions = result["responses"][name]["predictions"]
        assert len(predictions) == 3
        for i, row in enumerate(predictions):
            assert row["shape_class_names"] in ("circle", "square", "triangle")
            assert row["shape_class_names"] == ("circle", "square", "triangle")[
                int(np.argmax(expected["shape"][i]))]
            assert np.max(np.abs(np.asarray(row["size"]) - expected["size"][i])) <= 1e-5
            assert np.shape(row["segmentation_class_ids"]) == (32, 32)
            assert set(np.unique(row["segmentation_class_names"])) <= {
                "background", "circle", "square", "triangle"}
    assert "instance 2: " in out and '"shape_class_names": ' in out


def test_serve_example_rejects_bad_arguments(tmp_path):
    example = load_example("serve_savedmodel")
    with pytest.raises(SystemExit):
        example.main(["--instances", "0", "--output", str(tmp_path)])
    assert os.listdir(tmp_path) == []

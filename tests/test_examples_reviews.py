"""The movie + yelp round-robin example, offline on tfds' mock data."""


import pytest

from conftest import load_example

tfds = pytest.importorskip("tensorflow_datasets")


def test_the_datasets_exist_in_tfds():
    names = set(tfds.list_builders())
    assert {"imdb_reviews", "yelp_polarity_reviews"} <= names


def test_reviews_round_robin_trains_offline_on_mock_data(capsys):
    example = load_example("reviews_round_robin")
    with tfds.testing.mock_data(num_examples=48):
        history = example.main([
            "--epochs", "2", "--batch-size", "16", "--max-examples", "0",
            "--vocabulary-size", "64", "--sequence-length", "12",
            "--embedding-dim", "8", "--units", "8", "--verbose", "0",
        ])
    keys = set(history.history)
    # One head per corpus, trained together; each source validated on its own task.
    assert {"sentiment_accuracy", "polarity_accuracy", "sentiment_loss", "polarity_loss"} <= keys
    assert {"val_movie_sentiment_accuracy", "val_movie_sentiment_auc",
            "val_yelp_polarity_accuracy", "val_yelp_polarity_auc"} <= keys
    # A source is validated only on the task it labels.
    assert not any(k.startswith(("val_movie_polarity", "val_yelp_sentiment")) for k in keys)
    assert len(history.history["loss"]) == 2
    out = capsys.readouterr().out
    # 48 examples per source, batches of 16: 3 batches each, alternated.
    assert "round_robin: 6 batches per epoch" in out
    assert "| movie | sentiment |" in out and "| yelp | polarity |" in out


@pytest.mark.slow
def test_reviews_with_a_keras_hub_bert_encoder():
    # The same story with a keras-hub text backbone built from its config:
    # three inputs made in the tf.data pipeline, heads on `pooled_output`.
    example = load_example("reviews_round_robin")
    with tfds.testing.mock_data(num_examples=32):
        history = example.main([
            "--epochs", "1", "--batch-size", "16", "--max-examples", "0",
            "--vocabulary-size", "64", "--sequence-length", "12", "--encoder", "bert",
            "--embedding-dim", "8", "--units", "16", "--verbose", "0",
        ])
    assert {"val_movie_sentiment_accuracy", "val_yelp_polarity_auc"} <= set(history.history)
    assert all(v[-1] == v[-1] for v in history.history.values())  # no NaN

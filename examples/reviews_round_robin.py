"""Movie + Yelp reviews, round-robin: two corpora, one shared text encoder.

The seed story (seed 003): two review datasets, each labelled for its own
task, one shared encoder, and batches interleaved round-robin so that the
model does not forget one task while it learns the other.

- source `movie`: `imdb_reviews` (tensorflow-datasets), task `sentiment`;
- source `yelp`: `yelp_polarity_reviews`, task `polarity`;
- encoder: a `TextVectorization` adapted on both corpora + an `Embedding`,
  average-pooled, then a dense layer: the shared trunk;
- two `BinaryClassification` heads; `keras_mtl.data.interleave` alternates the
  sources (every batch carries both label keys, the other source's masked);
- History shows `sentiment_accuracy`, `polarity_accuracy` and, per source,
  `val_movie_sentiment_accuracy`, `val_yelp_polarity_accuracy`.

Text is vectorised in the tf.data pipeline (the fast path Keras recommends
for training), so the trunk takes int token ids `(sequence_length,)`.
`MultiTaskModel` currently builds a float32 `"image"` input and casts it in
`ImagePreprocessing`: ids pass through float32 exactly (< 2^24), and
`Embedding` casts them back to int32, but under a `mixed_float16` policy ids
above 2048 would be rounded, so keep the float32 policy with this example.

    python examples/reviews_round_robin.py --epochs 3 --max-examples 20000

The datasets are downloaded by tensorflow-datasets on first use (`--data-dir`);
the test runs this script offline on `tfds.testing.mock_data`.
"""

import argparse
import sys

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_mtl
from keras_mtl import data

#: source name -> (tfds name, task name)
SOURCES = {
    "movie": ("imdb_reviews", "sentiment"),
    "yelp": ("yelp_polarity_reviews", "polarity"),
}


def load_text(split, max_examples, data_dir=None):
    """`{source: unbatched (text, label)}` from tensorflow-datasets."""
    sources = {}
    for source, (tfds_name, _) in SOURCES.items():
        ds = tfds.load(tfds_name, split=split, as_supervised=True, data_dir=data_dir)
        sources[source] = ds.take(max_examples) if max_examples else ds
    return sources


def make_vectorizer(texts, vocabulary_size, sequence_length):
    """One vocabulary for both corpora (the shared encoder's first half)."""
    vectorizer = keras.layers.TextVectorization(
        max_tokens=vocabulary_size, output_sequence_length=sequence_length
    )
    corpus = None
    for ds in texts.values():
        text = ds.map(lambda t, _: t)
        corpus = text if corpus is None else corpus.concatenate(text)
    vectorizer.adapt(corpus.batch(1024))
    return vectorizer


def to_source(ds, task, vectorizer, batch_size, shuffle_seed=None):
    """Batches, vectorises and keys the labels by task: `(ids, {task: label})`."""
    if shuffle_seed is not None:
        ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return ds.map(
        lambda text, label: (vectorizer(text), {task: tf.cast(label, tf.float32)}),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def make_trunk(vocabulary_size, sequence_length, embedding_dim, units):
    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(units, activation="relu", name="shared")(x)
    return keras.Model(ids, x, name="text_encoder")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-examples", type=int, default=20000,
                        help="examples per source and split (0: all)")
    parser.add_argument("--vocabulary-size", type=int, default=20000)
    parser.add_argument("--sequence-length", type=int, default=200)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--schedule", default="round_robin", choices=data.SCHEDULES)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--epoch", default="longest", choices=data.EPOCHS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train_text = load_text("train", args.max_examples, args.data_dir)
    test_text = load_text("test", args.max_examples, args.data_dir)
    vectorizer = make_vectorizer(train_text, args.vocabulary_size, args.sequence_length)
    vocabulary_size = vectorizer.vocabulary_size()

    def sources(texts, shuffle):
        return {
            source: to_source(ds, SOURCES[source][1], vectorizer, args.batch_size,
                              args.seed + i if shuffle else None)
            for i, (source, ds) in enumerate(texts.items())
        }

    train = data.interleave(
        sources(train_text, shuffle=True),
        args.schedule,
        temperature=args.temperature if args.schedule == "temperature" else None,
        num_epochs=args.epochs if args.schedule == "annealed" else None,
        epoch=args.epoch,
        seed=args.seed,
    )
    tasks = [keras_mtl.tasks.BinaryClassification(task) for _, task in SOURCES.values()]
    trunk = make_trunk(vocabulary_size, args.sequence_length, args.embedding_dim, args.units)
    model = keras_mtl.MultiTaskModel(
        trunk, tasks, input_shape=(args.sequence_length,), preprocessing="none",
        head_units=(args.units // 2,), name="reviews",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(
        train,
        epochs=args.epochs,
        callbacks=[data.SourceValidation(sources(test_text, shuffle=False))],
        verbose=args.verbose,
    )

    print(f"\n{args.schedule}: {int(train.cardinality())} batches per epoch")
    print("| source | task | test accuracy | test AUC |")
    print("| --- | --- | --- | --- |")
    for source, (_, task) in SOURCES.items():
        accuracy = history.history[f"val_{source}_{task}_accuracy"][-1]
        auc = history.history[f"val_{source}_{task}_auc"][-1]
        print(f"| {source} | {task} | {accuracy:.4f} | {auc:.4f} |")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])

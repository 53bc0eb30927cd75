"""Movie + Yelp reviews, round-robin: two corpora, one shared text encoder.

The seed story (seed 003): two review datasets, each labelled for its own
task, one shared encoder, and batches interleaved round-robin so that the
model does not forget one task while it learns the other.

- source `movie`: `imdb_reviews` (tensorflow-datasets), task `sentiment`;
- source `yelp`: `yelp_polarity_reviews`, task `polarity`;
- encoder: a `TextVectorization` adapted on both corpora, then the shared
  trunk: an `Embedding`, average-pooled, then a dense layer (`--encoder bag`),
  or a keras-hub `BertBackbone` built from its config, random weights, no
  preset download (`--encoder bert`, needs `keras_mtl[hub]`): its three
  inputs (token ids, segment ids, padding mask) become the model's inputs
  and the heads read its `pooled_output`;
- two `BinaryClassification` heads; `keras_mtl.data.interleave` alternates the
  sources (every batch carries both label keys, the other source's masked);
- History shows `sentiment_accuracy`, `polarity_accuracy` and, per source,
  `val_movie_sentiment_accuracy`, `val_yelp_polarity_accuracy`.

Text is vectorised in the tf.data pipeline (the fast path Keras recommends
for training), so the trunk takes int32 token ids `(sequence_length,)` (and
for BERT, the segment ids and padding mask made from them there too).

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


def bert_inputs(ids):
    """BertBackbone's inputs for vectorised texts (one segment; id 0 pads)."""
    return {"token_ids": ids, "segment_ids": tf.zeros_like(ids),
            "padding_mask": tf.cast(ids != 0, "int32")}


def to_source(ds, task, vectorizer, batch_size, shuffle_seed=None, encoder="bag"):
    """Batches, vectorises and keys the labels by task: `(x, {task: label})`."""
    if shuffle_seed is not None:
        ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def prepare(text, label):
        ids = tf.cast(vectorizer(text), "int32")
        x = bert_inputs(ids) if encoder == "bert" else ids
        return x, {task: tf.cast(label, tf.float32)}

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


def make_trunk(vocabulary_size, sequence_length, embedding_dim, units):
    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(units, activation="relu", name="shared")(x)
    return keras.Model(ids, x, name="text_encoder")


def make_bert(vocabulary_size, sequence_length, embedding_dim, units):
    """A small BERT from its config (random weights: nothing downloaded)."""
    from keras_mtl._optional import require

    keras_hub = require("keras_hub", "--encoder bert (keras-hub backbones)")
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2,
        hidden_dim=embedding_dim, intermediate_dim=units,
        max_sequence_length=sequence_length, name="bert")


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
    parser.add_argument("--encoder", default="bag", choices=("bag", "bert"),
                        help="the shared trunk: averaged embeddings, or a small BERT")
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
                              args.seed + i if shuffle else None, args.encoder)
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
    if args.encoder == "bert":
        trunk = make_bert(vocabulary_size, args.sequence_length, args.embedding_dim, args.units)
    else:
        trunk = make_trunk(vocabulary_size, args.sequence_length, args.embedding_dim, args.units)
    model = keras_mtl.build_model(trunk, tasks, head_units=(args.units // 2,), name="reviews")
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

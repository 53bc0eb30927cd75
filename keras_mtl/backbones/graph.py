"""The graph of a backbone: its operations in order, and where it can be cut.

A trunk can be cut after a layer whose output is the only tensor the rest of
the graph reads from the part before it (`cut_points`): the model builder
freezes blocks up to such a point, the tuner and the branched architectures
(MTAN, cross-stitch) share a backbone up to one.
"""

import keras


def _keras_tensor_sources(value, found):
    """Names of the operations whose outputs appear in a node's config."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.add(value["config"]["keras_history"][0])
        else:
            for v in value.values():
                _keras_tensor_sources(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _keras_tensor_sources(v, found)
    return found


def operations(model):
    """`[(name, is_candidate, parents)]` of a model's operations, in
    topological order, or None when the model has no inspectable graph
    (subclassed). `is_candidate`: a layer of the model called once (a
    possible cut point); `parents`: the names of the operations it reads.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> operations(model)
    [('input', False, set()), ('d', True, {'input'})]
    """
    if isinstance(model, keras.Sequential):
        # A chain; its input layer is not in `layers`, so it is added as
        # operation 0, as in a Functional config.
        names = ["input"] + [layer.name for layer in model.layers]
        return [(n, i > 0, {names[i - 1]} if i else set()) for i, n in enumerate(names)]
    try:
        config = model.get_config()
    except NotImplementedError:
        return None
    if "layers" not in (config or {}) and getattr(model, "outputs", None):
        # A Functional subclass whose config holds its constructor's
        # arguments (keras-hub backbones): the same graph as a plain
        # Functional model, which describes its layers.
        config = keras.Model(model.inputs, model.outputs).get_config()
    entries = (config or {}).get("layers")
    if not entries or any("inbound_nodes" not in e for e in entries):
        return None
    layer_names = {layer.name for layer in model.layers}
    graph = []
    for entry in entries:
        nodes = entry["inbound_nodes"]
        # A layer called more than once (shared) is never a boundary.
        is_candidate = entry["name"] in layer_names and len(nodes) <= 1
        graph.append((entry["name"], is_candidate, _keras_tensor_sources(nodes, set())))
    return graph


def cut_points(model):
    """The layers after which `model` can be cut into a trunk.

    A cut point is a layer called once, with a single 4-d output (a feature
    map), that the rest of the graph reaches only through that output: no
    later operation reads a tensor from before it (so a cut never splits a
    residual block), and the part up to it holds weights. Sequential models
    can be cut after any such layer.

    Args:
        model: A Functional or Sequential `keras.Model` with one input.

    Returns:
        `[(index, name)]` in topological order, `index` counting the model's
        operations (the input layer included); `[]` for a model without an
        inspectable graph (subclassed models).

    Example:

    >>> model = keras.Sequential([keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(4, 3, name="a"), keras.layers.Conv2D(4, 3, name="b")])
    >>> [name for _, name in cut_points(model)]
    ['a', 'b']
    """
    graph = operations(model)
    if graph is None:
        return []
    index = {name: i for i, (name, _, _) in enumerate(graph)}
    # earliest[i]: the earliest operation any operation after i reads from.
    earliest = [len(graph)] * (len(graph) + 1)
    for i in range(len(graph) - 1, -1, -1):
        parents = [index[p] for p in graph[i][2] if p in index]
        earliest[i] = min([earliest[i + 1], *parents])
    points, has_weights = [], False
    for i, (name, is_layer, _) in enumerate(graph):
        if not is_layer:
            continue
        layer = model.get_layer(name)
        has_weights = has_weights or bool(layer.weights)
        output = getattr(layer, "output", None)
        if (
            has_weights
            # A nested model's `output` is its inner tensor, not this graph's.
            and not isinstance(layer, keras.Model)
            and earliest[i + 1] >= i
            and isinstance(output, keras.KerasTensor)
            and len(output.shape) == 4
            and all(d is None or d > 0 for d in output.shape[1:])
        ):
            points.append((i, name))
    return points

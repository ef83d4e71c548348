"""Parameters and multiply-adds of an ONNX model, counted from its graph.

:func:`count` walks the graph after ``onnx.shape_inference``:

* parameters: the elements of the initializers that are a ``Conv``, ``Gemm`` or ``MatMul``
  node's weight or bias (inputs 1 and 2), each initializer once even when several nodes
  share it (RetinaNet's heads run on five levels with one set of weights);
* constants: the elements of every other initializer (normalisation, anchors, shapes);
* MACs: ``Conv``: output elements x (input channels / groups) x kernel area (the bias add
  is not counted); ``Gemm`` and ``MatMul``: output elements x the inner dimension. Other
  operators (pooling, activations, post-processing) are not counted. A node whose output
  shape is not known statically raises :class:`ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

COUNTED = (
    "parameters: elements of Conv/Gemm/MatMul weight and bias initializers (shared ones once); "
    "MACs: Conv output elements x in-channels/groups x kernel area, Gemm/MatMul output "
    "elements x inner dimension, for one inference; other operators not counted"
)
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
SMALL = 64  # initializers up to this many elements stay constants for shape inference


def _elements(init: Any) -> int:
    return int(np.prod(init.dims, dtype=np.int64))


@dataclass(frozen=True)
class Cost:
    """What :func:`count` found."""

    parameters: int
    macs: int
    constants: int
    macs_by_op: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The record written to ``cost.json`` (format 1)."""
        return {
            "format": 1,
            "parameters": self.parameters,
            "macs": self.macs,
            "constants": self.constants,
            "macs_by_op": dict(sorted(self.macs_by_op.items())),
            "counted": COUNTED,
        }


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Static shapes of every value (inputs, outputs, intermediates, initializers).

    Shape inference runs on a copy of the graph whose large initializers (more than
    :data:`SMALL` elements) are declared inputs of their shape and type, so that a large
    model's weights are neither copied nor serialised; the small ones (shapes, scales) stay
    constants that inference may read."""
    from onnx import helper, shape_inference  # type: ignore[import-untyped,unused-ignore]

    g = model.graph
    large = [i for i in g.initializer if _elements(i) > SMALL]
    weights = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in large]
    graph = helper.make_graph(list(g.node), g.name, [*g.input, *weights], list(g.output))
    graph.initializer.extend(i for i in g.initializer if _elements(i) <= SMALL)
    light = helper.make_model(graph, opset_imports=list(model.opset_import))
    light.ir_version = model.ir_version
    inferred = shape_inference.infer_shapes(light).graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    out = shapes.get(node.output[0])
    w = shapes.get(node.input[1])
    if out is None or w is None:
        raise ValueError(f"{node.op_type} node {node.output[0]!r} has no static shape")
    if node.op_type == "Conv":
        return int(np.prod(out)) * int(np.prod(w[1:]))  # w: [Cout, Cin/groups, kH, kW]
    trans_a = any(a.name == "transA" and a.i for a in node.attribute)
    a = shapes.get(node.input[0])
    if a is None:
        raise ValueError(f"{node.op_type} node {node.output[0]!r} has no static shape")
    inner = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
    return int(np.prod(out)) * int(inner)


def count(model: Any) -> Cost:
    """Count ``model``'s (an ``onnx.ModelProto``) parameters, MACs and constants."""
    shapes = _shapes(model)
    sizes = {i.name: _elements(i) for i in model.graph.initializer}
    weights: set[str] = set()
    by_op: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weights.update(name for name in node.input[1:3] if name in sizes)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + _node_macs(node, shapes)
    params = sum(sizes[n] for n in weights)
    return Cost(
        parameters=params,
        macs=sum(by_op.values()),
        constants=sum(sizes.values()) - params,
        macs_by_op=by_op,
    )

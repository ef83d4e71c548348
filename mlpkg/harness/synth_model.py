"""Synthetic RetinaNet: an analytic ONNX detector for the synthetic OpenImages set.

Usage: ``python -m mlpkg_harness.synth_model OUT/model.onnx``

Documented choice: "analytic, ONNX ops over colour masks". The model is built with
``onnx.helper`` only (no training, no randomness) and has the real model's interface:
input ``images`` float32 [1, 3, 800, 800] (RGB in 0..1); outputs ``boxes`` float32 [N, 4]
(xmin, ymin, xmax, ymax in 800-px coordinates), ``scores`` float32 [N] sorted descending,
``labels`` int64 [N] (category ids); opset 13, like the upstream ONNX export.

Design (K = number of colour classes in :data:`.synth_spec.COLOUR_CLASSES`, P = 800 * 800):

1. Colour distance. ``|x - c_k|^2 - tol^2 = |x|^2 - 2 c_k.x + |c_k|^2 - tol^2`` for every
   pixel x and class k as one ``Gemm``: the pixels [3, P] (a ``Reshape`` of ``images``) are
   stacked with their squares (``Mul``, ``Concat``) into [6, P]; weights
   ``[-2 c_k, 1, 1, 1]`` and bias ``|c_k|^2 - tol^2``, all scaled by ``MASK_GAIN`` (2^20).
2. Mask. ``Clip(d, -1, 0)`` turns the scaled distance into a (negated) mask: -1 where the
   pixel has class k's colour (within ``COLOUR_TOLERANCE``), 0 elsewhere (fractional only
   within 2^-20 of the tolerance boundary, which is harmless). ``Reshape`` to [1, K, 800, 800].
3. Cleaning: a morphological opening with a square kernel of side ``OPENING_KERNEL`` (3).
   The erosion is ``MaxPool`` on the negated mask (max of -m = -(min of m)), so its output is
   the negated eroded mask. Isolated pixels and strips thinner than the kernel vanish;
   a rectangle shrinks by the radius r on each side. The dilation back is analytic: dilating
   by the same square grows a bounding box by exactly r on each side (clipped to the image),
   so it is applied to the box coordinates instead of the 800x800 planes.
4. Box. Row counts (``ReduceSum`` over W, negated) and column occupancy (``ReduceMin`` over
   H) of the eroded mask; the first / last occupied row and column come from ``ArgMin``
   with ``select_last_index`` 0 / 1. With g = r + ``BOX_OUTSET`` (0.25 px: the mask keeps an
   edge pixel only when it is mostly object colour, so mask edges sit about a quarter pixel
   inside the true edge), box = ``[x0 - g, y0 - g, x1 + 1 + g, y1 + 1 + g]`` clipped to
   [0, 800]: pixel edges, so an object covering input pixels ``a..b`` maps to about
   ``[a, b + 1)``, the extent convention of the annotations' ``[x, y, w, h]``.
5. Presence and score. ``count`` = pixels of the eroded mask; present when
   ``count > MIN_MASK_PIXELS``; score = ``min(count / eroded box area, 1)``, the fill ratio
   (about 1 for a clean rectangle, always in (0, 1]).
6. Output. ``Compress`` keeps present classes (boxes, scores and a constant tensor of
   category ids), ``TopK`` with k = the number kept (``Shape``) sorts scores descending,
   and ``Gather`` orders boxes and labels alike. N = 0 when nothing is found.

The data make this exact: each category occurs at most once per image, objects do not
overlap, backgrounds are low-saturation, and object edges survive JPEG (see
:mod:`.synth_dataset`). Serialisation is bit-stable: fixed ``ir_version``, producer fields
and node order, no metadata that changes between builds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import synth_spec as spec

IR_VERSION = 7  # ONNX 1.8 era, matching opset 13
OPSET = 13
PRODUCER_NAME = "mlpkg-synthetic-retinanet"
PRODUCER_VERSION = "1"
MASK_GAIN = 2.0**20  # scales squared distances so that Clip(-1, 0) yields a 0/-1 mask


def _constants(helper: Any, tensor: Any) -> list[Any]:
    """Return the initializers: colour-distance weights/bias, thresholds, ids, shapes."""
    colours = np.array([rgb for _, rgb in spec.COLOUR_CLASSES], dtype=np.float64) / 255.0
    k = colours.shape[0]
    # rows [-2 c_k, 1, 1, 1] and bias |c_k|^2 - tol^2, scaled so that Clip makes a 0/-1 mask
    weight = np.concatenate([-2.0 * colours, np.ones((k, 3))], axis=1) * MASK_GAIN
    bias = ((colours * colours).sum(axis=1) - spec.COLOUR_TOLERANCE**2) * MASK_GAIN
    flt, i64 = tensor.FLOAT, tensor.INT64
    grow = float(spec.OPENING_KERNEL // 2) + spec.BOX_OUTSET

    def make(name: str, dtype: int, dims: list[int], vals: Any) -> Any:
        if dtype == flt:
            vals = np.asarray(vals, dtype=np.float32)
        return helper.make_tensor(name, dtype, dims, np.asarray(vals).ravel().tolist())

    size = spec.INPUT_SIZE
    return [
        make("colour_weight", flt, [k, 6], weight),
        make("colour_bias", flt, [k, 1], bias),
        make("minus_one", flt, [], [-1.0]),
        make("zero", flt, [], [0.0]),
        make("one", flt, [], [1.0]),
        make("grow", flt, [], [grow]),
        make("side", flt, [], [float(size)]),
        make("min_pixels", flt, [], [float(spec.MIN_MASK_PIXELS)]),
        make("category_ids", i64, [k], spec.colour_category_ids()),
        make("pixels_shape", i64, [2], [3, size * size]),
        make("mask_shape", i64, [4], [1, k, size, size]),
        make("flat", i64, [1], [-1]),
    ]


def _mask_nodes(helper: Any) -> list[Any]:
    """Nodes from ``images`` to ``neg_eroded`` [1, K, 800, 800]: -1 on the eroded masks."""
    n = helper.make_node
    half = spec.OPENING_KERNEL // 2
    return [
        n("Reshape", ["images", "pixels_shape"], ["pixels"]),
        n("Mul", ["pixels", "pixels"], ["squares"]),
        n("Concat", ["pixels", "squares"], ["pixels_sq"], axis=0),
        n("Gemm", ["colour_weight", "pixels_sq", "colour_bias"], ["dist"]),
        n("Clip", ["dist", "minus_one", "zero"], ["neg_mask_flat"]),
        n("Reshape", ["neg_mask_flat", "mask_shape"], ["neg_mask"]),
        n(
            "MaxPool",
            ["neg_mask"],
            ["neg_eroded"],
            kernel_shape=[spec.OPENING_KERNEL] * 2,
            pads=[half] * 4,
            strides=[1, 1],
        ),
    ]


def _box_nodes(helper: Any) -> list[Any]:
    """Nodes from ``neg_eroded`` to per-class ``all_boxes`` [K, 4], ``all_scores``, ``present``."""
    n = helper.make_node
    nodes = [
        n("ReduceSum", ["neg_eroded", "flat"], ["neg_row_count"], keepdims=0),  # axis -1: W
        n("Max", ["neg_row_count", "minus_one"], ["rows"]),  # -1 on occupied rows
        n("ReduceMin", ["neg_eroded"], ["cols"], axes=[2], keepdims=0),  # -1 on occupied cols
    ]
    for axis_name, src in (("y", "rows"), ("x", "cols")):
        for edge, last in (("0", 0), ("1", 1)):
            idx = f"{axis_name}{edge}_i"
            nodes.append(n("ArgMin", [src], [idx], axis=2, keepdims=0, select_last_index=last))
            nodes.append(n("Cast", [idx], [f"{axis_name}{edge}_c"], to=1))
    for axis_name in ("x", "y"):  # dilation (radius) and BOX_OUTSET grow the eroded box
        nodes += [
            n("Sub", [f"{axis_name}0_c", "grow"], [f"{axis_name}0_r"]),
            n("Clip", [f"{axis_name}0_r", "zero", "side"], [f"{axis_name}0_f"]),
            n("Add", [f"{axis_name}1_c", "one"], [f"{axis_name}1_e"]),
            n("Add", [f"{axis_name}1_e", "grow"], [f"{axis_name}1_r"]),
            n("Clip", [f"{axis_name}1_r", "zero", "side"], [f"{axis_name}1_f"]),
            n("Sub", [f"{axis_name}1_e", f"{axis_name}0_c"], [f"eroded_{axis_name}"]),
        ]
    nodes += [
        n("Mul", ["eroded_x", "eroded_y"], ["eroded_area"]),
        n("ReduceSum", ["neg_row_count", "flat"], ["neg_count"], keepdims=0),  # [1, K]
        n("Neg", ["neg_count"], ["count"]),
        n("Div", ["count", "eroded_area"], ["fill"]),
        n("Min", ["fill", "one"], ["score_1k"]),
        n("Reshape", ["score_1k", "flat"], ["all_scores"]),
        n("Greater", ["count", "min_pixels"], ["present_1k"]),
        n("Reshape", ["present_1k", "flat"], ["present"]),
        n("Concat", ["x0_f", "y0_f", "x1_f", "y1_f"], ["box_4k"], axis=0),
        n("Transpose", ["box_4k"], ["all_boxes"], perm=[1, 0]),
    ]
    return nodes


def _select_nodes(helper: Any) -> list[Any]:
    """Nodes keeping present classes and sorting them by score, descending."""
    n = helper.make_node
    return [
        n("Compress", ["all_boxes", "present"], ["kept_boxes"], axis=0),
        n("Compress", ["all_scores", "present"], ["kept_scores"], axis=0),
        n("Compress", ["category_ids", "present"], ["kept_labels"], axis=0),
        n("Shape", ["kept_scores"], ["kept_n"]),
        n("TopK", ["kept_scores", "kept_n"], ["scores", "order"], axis=0, largest=1, sorted=1),
        n("Gather", ["kept_boxes", "order"], ["boxes"], axis=0),
        n("Gather", ["kept_labels", "order"], ["labels"], axis=0),
    ]


def build_model() -> Any:
    """Return the synthetic detector as an ``onnx.ModelProto`` (checked, deterministic)."""
    import onnx  # type: ignore[import-untyped,unused-ignore]
    from onnx import TensorProto, helper

    size = spec.INPUT_SIZE
    graph = helper.make_graph(
        _mask_nodes(helper) + _box_nodes(helper) + _select_nodes(helper),
        "synthetic_retinanet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
        ],
        initializer=_constants(helper, TensorProto),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string="Analytic colour-mask detector for the synthetic OpenImages set (mlpkg).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def model_bytes() -> bytes:
    """Return the serialised model (identical bytes on every call and build)."""
    data: bytes = build_model().SerializeToString(deterministic=True)
    return data


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: write the model to the given path; returns the exit status."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out, never guessed from a prefix
        prog="python -m mlpkg_harness.synth_model",
        description="Write the synthetic RetinaNet ONNX model (analytic colour-mask detector).",
    )
    parser.add_argument("out", type=Path, help="output file, e.g. OUT/model.onnx")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model_bytes())
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RetinaNet anchors and detection post-processing as ONNX nodes (torchvision's rules).

Used by :mod:`.random_model`. Everything here reproduces torchvision's ``RetinaNet`` (v1,
as the MLPerf model was exported) for one image of ``IMAGE_SIZE`` x ``IMAGE_SIZE``:

* :func:`anchors` is ``AnchorGenerator`` with sizes ``(x, int(x * 2**(1/3)),
  int(x * 2**(2/3)))`` for x in 32..512 (one triple per level) and aspect ratios 0.5, 1, 2:
  base anchors ``round([-w, -h, w, h] / 2)`` (ratio-major, then scale), strides
  ``IMAGE_SIZE // feature_size`` (so 61 and 114 on P6 and P7), anchors ordered (y, x,
  anchor) like the head outputs. Computed at build time; the graph holds them as constants.
* :class:`Ops` is the small node/initializer collector the model builder shares.
* :func:`level_candidates` is ``postprocess_detections`` for one level: the top
  ``TOPK_CANDIDATES`` class scores (``TopK`` on the logits: sigmoid is monotonic, and the
  top-k of the scores above the threshold are the top-k scores that are above it), sigmoid,
  keep ``> SCORE_THRESH``, anchor = index // classes, label = index % classes,
  ``BoxCoder(weights 1, 1, 1, 1)`` decoding with dw/dh clamped at ``log(1000 / 16)``, and
  boxes clipped to the image.
* :func:`select` is ``batched_nms`` (per class, IoU ``NMS_THRESH``) over all levels, then
  the ``DETECTIONS`` best by score, sorted descending. ONNX ``NonMaxSuppression`` takes
  scores [1, C, N]: a candidate's score sits in its own class's row (``Equal`` of its label
  and the class ids; not ``OneHot``, which kills ONNX Runtime 1.22 with SIGFPE when no
  candidate is left), zeros elsewhere, and the score threshold drops the zeros.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

IMAGE_SIZE = 800
ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one per level, P3..P7
ASPECT_RATIOS = (0.5, 1.0, 2.0)
ANCHORS_PER_LOCATION = len(ASPECT_RATIOS) * 3
SCORE_THRESH = 0.05
TOPK_CANDIDATES = 1000
NMS_THRESH = 0.5
DETECTIONS = 300
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class Ops:
    """Collects nodes and initializers; names are unique and given in creation order."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper  # type: ignore[import-untyped,unused-ignore]

        self._helper: Any = helper
        self._numpy_helper: Any = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        """A new tensor name ``prefix_N``."""
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, name: str, array: Any) -> str:
        """Add ``array`` (numpy) as an initializer named ``name``; returns the name."""
        arr = np.asarray(array)  # (np.ascontiguousarray would make a scalar 1-D)
        arr = np.ascontiguousarray(arr) if arr.ndim else arr
        self.initializers.append(self._numpy_helper.from_array(arr, name))
        return name

    def i64(self, values: list[int]) -> str:
        """A fresh int64 1-D constant."""
        return self.const(self.fresh("i64"), np.array(values, dtype=np.int64))

    def f32(self, value: float) -> str:
        """A fresh float32 scalar constant."""
        return self.const(self.fresh("f32"), np.array(value, dtype=np.float32))

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        """Add one single-output node; returns its output name."""
        name = out or self.fresh(op_type.lower())
        self.nodes.append(self._helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def multi(self, op_type: str, inputs: list[str], n: int, **attrs: Any) -> list[str]:
        """Add a node with ``n`` outputs; returns their names."""
        names = [self.fresh(op_type.lower()) for _ in range(n)]
        self.nodes.append(self._helper.make_node(op_type, inputs, names, name=names[0], **attrs))
        return names


def _base_anchors(size: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    scales = np.array([size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))], np.float32)
    ratios = np.array(ASPECT_RATIOS, dtype=np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base: np.ndarray[Any, np.dtype[np.float32]] = np.round(np.stack([-ws, -hs, ws, hs], 1) / 2)
    return base.astype(np.float32)


def anchors(feature_sizes: list[int]) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """Per level, the anchors [H * W * 9, 4] (x1, y1, x2, y2) for square feature maps."""
    out = []
    for size, side in zip(ANCHOR_SIZES, feature_sizes):
        stride = IMAGE_SIZE // side
        shifts = np.arange(side, dtype=np.float32) * np.float32(stride)
        shift_y, shift_x = np.meshgrid(shifts, shifts, indexing="ij")
        sx, sy = shift_x.reshape(-1), shift_y.reshape(-1)
        grid = np.stack([sx, sy, sx, sy], axis=1)
        out.append((grid[:, None, :] + _base_anchors(size)[None]).reshape(-1, 4))
    return out


def _anchor_geometry(ops: Ops, level: int, anc: np.ndarray[Any, Any]) -> tuple[str, str]:
    """Constants for decoding: centres [N, 2] and sizes [N, 2], as BoxCoder computes them."""
    wh = anc[:, 2:] - anc[:, :2]
    ctr = anc[:, :2] + np.float32(0.5) * wh
    return ops.const(f"anchor_ctr_p{level}", ctr), ops.const(f"anchor_wh_p{level}", wh)


def level_candidates(
    ops: Ops, level: int, heads: tuple[str, str], anc: np.ndarray[Any, Any], classes: int
) -> tuple[str, str, str]:
    """Nodes from one level's head outputs (``heads``: classification [1, 9 * classes, H, W]
    and regression [1, 9 * 4, H, W]) and its anchors (:func:`anchors`) to its candidates:
    boxes [n, 4], scores [n], labels [n] int64."""
    a = ANCHORS_PER_LOCATION
    cls, reg = heads
    side = math.isqrt(anc.shape[0] // a)
    ctr, wh = _anchor_geometry(ops, level, anc)
    logits = ops.op("Reshape", [cls, ops.i64([1, a, classes, side, side])])
    logits = ops.op("Transpose", [logits], perm=[0, 3, 4, 1, 2])
    logits = ops.op("Reshape", [logits, ops.i64([-1])])
    top, idx = ops.multi("TopK", [logits, ops.i64([TOPK_CANDIDATES])], 2, axis=0)
    scores = ops.op("Sigmoid", [top])
    keep = ops.op("Greater", [scores, ops.f32(SCORE_THRESH)])
    scores = ops.op("Compress", [scores, keep], axis=0)
    idx = ops.op("Compress", [idx, keep], axis=0)
    n_classes = ops.const(ops.fresh("classes"), np.array(classes, dtype=np.int64))
    anchor_idx = ops.op("Div", [idx, n_classes])
    labels = ops.op("Mod", [idx, n_classes])
    deltas = ops.op("Reshape", [reg, ops.i64([1, a, 4, side, side])])
    deltas = ops.op("Transpose", [deltas], perm=[0, 3, 4, 1, 2])
    deltas = ops.op("Reshape", [deltas, ops.i64([-1, 4])])
    deltas = ops.op("Gather", [deltas, anchor_idx], axis=0)
    d_xy, d_wh = ops.multi("Split", [deltas, ops.i64([2, 2])], 2, axis=1)
    a_ctr = ops.op("Gather", [ctr, anchor_idx], axis=0)
    a_wh = ops.op("Gather", [wh, anchor_idx], axis=0)
    p_ctr = ops.op("Add", [ops.op("Mul", [d_xy, a_wh]), a_ctr])
    d_wh = ops.op("Min", [d_wh, ops.f32(BBOX_XFORM_CLIP)])
    half = ops.op("Mul", [ops.op("Mul", [ops.op("Exp", [d_wh]), a_wh]), ops.f32(0.5)])
    xy1 = ops.op("Sub", [p_ctr, half])
    xy2 = ops.op("Add", [p_ctr, half])
    boxes = ops.op("Concat", [xy1, xy2], axis=1)
    boxes = ops.op("Clip", [boxes, ops.f32(0.0), ops.f32(float(IMAGE_SIZE))])
    return boxes, scores, labels


def select(ops: Ops, candidates: list[tuple[str, str, str]], classes: int) -> tuple[str, str, str]:
    """Per-class NMS over all levels' candidates, then the best ``DETECTIONS`` sorted by
    score; writes the graph outputs ``boxes``, ``scores``, ``labels``."""
    boxes = ops.op("Concat", [c[0] for c in candidates], axis=0)
    scores = ops.op("Concat", [c[1] for c in candidates], axis=0)
    labels = ops.op("Concat", [c[2] for c in candidates], axis=0)
    ids = ops.const(ops.fresh("class_ids"), np.arange(classes, dtype=np.int64).reshape(-1, 1))
    own = ops.op("Equal", [ids, ops.op("Unsqueeze", [labels, ops.i64([0])])])  # [C, n]
    own = ops.op("Cast", [own], to=1)  # float
    class_scores = ops.op("Mul", [own, ops.op("Unsqueeze", [scores, ops.i64([0])])])
    class_scores = ops.op("Unsqueeze", [class_scores, ops.i64([0])])  # [1, C, n]
    batch_boxes = ops.op("Unsqueeze", [boxes, ops.i64([0])])  # [1, n, 4]
    selected = ops.op(
        "NonMaxSuppression",
        [
            batch_boxes,
            class_scores,
            ops.i64([DETECTIONS]),
            ops.f32(NMS_THRESH),
            ops.f32(SCORE_THRESH),
        ],
        center_point_box=0,
    )
    box_idx = ops.op("Gather", [selected, ops.const(ops.fresh("col"), np.array(2))], axis=1)
    kept_scores = ops.op("Gather", [scores, box_idx], axis=0)
    k = ops.op("Min", [ops.op("Shape", [kept_scores]), ops.i64([DETECTIONS])])
    out_scores, order = ops.multi("TopK", [kept_scores, k], 2, axis=0, largest=1, sorted=1)
    final = ops.op("Gather", [box_idx, order], axis=0)
    ops.op("Identity", [out_scores], out="scores")
    ops.op("Gather", [boxes, final], out="boxes", axis=0)
    ops.op("Gather", [labels, final], out="labels", axis=0)
    return "boxes", "scores", "labels"

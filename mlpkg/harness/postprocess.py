"""Model outputs -> the float32 payload LoadGen writes to ``mlperf_log_accuracy.json``.

Like the reference's ``PostProcessOpenImagesRetinanet`` (ONNX, ``dict_format=False``): walk
the detections in model order (scores descending) and stop at the first score below
:data:`SCORE_THRESHOLD`; each kept detection becomes 7 float32 values
``[qsl_idx, ymin/800, xmin/800, ymax/800, xmax/800, score, label]`` (the model's boxes are
``xmin, ymin, xmax, ymax`` in 800-pixel coordinates). A float32 division gives the same bits as
the reference's (it divides numpy float32 scalars by Python ints, then stores as float32).

:class:`LabelHits` reproduces the reference's ``good``/``total`` counters behind its
``acc=`` figure: ``total`` counts the detections kept, ``good`` those whose label is one of
the ground-truth categories of that image. It is a label-precision figure (not mAP), printed
by the reference in accuracy mode only.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import numpy as np
import numpy.typing as npt

SCORE_THRESHOLD = 0.05
INPUT_SIZE = 800  # the model's input is 800 x 800; boxes are in its pixel coordinates
VALUES_PER_DETECTION = 7


def _flat(a: npt.ArrayLike, inner: int | None = None) -> npt.NDArray[np.generic]:
    """``a`` without a leading batch axis of size 1 (the real model has none)."""
    arr = np.asarray(a)
    want = 1 if inner is None else 2
    if arr.ndim == want + 1 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def kept_count(scores: npt.NDArray[np.generic], threshold: float = SCORE_THRESHOLD) -> int:
    """How many leading detections the reference keeps: up to the first score < threshold."""
    below = np.flatnonzero(np.asarray(scores) < np.float32(threshold))
    return int(below[0]) if below.size else int(np.asarray(scores).shape[0])


def to_payload(
    qsl_idx: int,
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    threshold: float = SCORE_THRESHOLD,
) -> npt.NDArray[np.float32]:
    """The float32 payload for one sample: shape ``[n * 7]`` (``n`` may be 0).

    Raises ValueError when the outputs do not have the model interface's shapes
    (boxes [N, 4], scores [N], labels [N])."""
    b = _flat(boxes, 4).astype(np.float32, copy=False)
    s = _flat(scores).astype(np.float32, copy=False)
    lab = _flat(labels)
    if b.ndim != 2 or b.shape[1:] != (4,) or s.ndim != 1 or lab.ndim != 1:
        raise ValueError(
            f"unexpected output shapes boxes {b.shape}, scores {s.shape}, labels {lab.shape}"
        )
    if not (b.shape[0] == s.shape[0] == lab.shape[0]):
        raise ValueError(
            f"output lengths differ: boxes {b.shape[0]}, scores {s.shape[0]}, labels {lab.shape[0]}"
        )
    n = kept_count(s, threshold)
    out = np.empty((n, VALUES_PER_DETECTION), dtype=np.float32)
    size = np.float32(INPUT_SIZE)
    out[:, 0] = np.float32(qsl_idx)
    out[:, 1] = b[:n, 1] / size
    out[:, 2] = b[:n, 0] / size
    out[:, 3] = b[:n, 3] / size
    out[:, 4] = b[:n, 2] / size
    out[:, 5] = s[:n]
    # the reference stores float(int(label)): truncate first, then to float32
    out[:, 6] = lab[:n].astype(np.int64).astype(np.float32)
    return out.reshape(-1)


class LabelHits:
    """Thread-safe ``good``/``total`` counters of the reference's post-processor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.good = 0
        self.total = 0

    def add(self, payload: npt.NDArray[np.float32], expected: Collection[int]) -> None:
        """Count one sample's kept detections against its ground-truth categories."""
        labels = payload.reshape(-1, VALUES_PER_DETECTION)[:, 6].astype(np.int64)
        good = sum(1 for label in labels.tolist() if label in expected)
        with self._lock:
            self.good += good
            self.total += int(labels.shape[0])

    def percent(self, fallback_total: int) -> float | None:
        """``100 * good / total``; like the reference, a zero ``total`` is replaced by
        ``fallback_total`` (the number of timed queries). None if both are zero."""
        total = self.total or fallback_total
        return None if total == 0 else 100.0 * self.good / total

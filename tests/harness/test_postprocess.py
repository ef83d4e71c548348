"""Model outputs -> LoadGen payload (mlpkg/harness/postprocess.py), as the reference's
``PostProcessOpenImagesRetinanet``: stop at the first score below 0.05, groups of 7 float32
``[qsl_idx, ymin/800, xmin/800, ymax/800, xmax/800, score, label]``; and the reference's
good/total counters behind ``acc=``."""

from __future__ import annotations

import numpy as np
import pytest

from mlpkg.harness.postprocess import LabelHits, kept_count, to_payload

BOXES = np.array(
    [[10, 20, 110, 220], [400, 0, 800, 800], [1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32
)
SCORES = np.array([0.9, 0.05, 0.0499, 0.7], dtype=np.float32)
LABELS = np.array([3, 263, 7, 1], dtype=np.int64)


def reference_payload(
    idx: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """The reference's loop, written out (numpy scalars, then float32)."""
    out = []
    for d in range(len(scores)):
        if scores[d] < 0.05:
            break
        box = boxes[d]
        out.append(
            [
                float(idx),
                box[1] / 800,
                box[0] / 800,
                box[3] / 800,
                box[2] / 800,
                scores[d],
                float(int(labels[d])),
            ]
        )
    return np.array(out, np.float32).reshape(-1)


def test_stops_at_the_first_score_below_threshold() -> None:
    """0.05 itself is kept; 0.0499 stops the walk even though 0.7 follows."""
    assert kept_count(SCORES) == 2
    payload = to_payload(5, BOXES, SCORES, LABELS)
    assert payload.dtype == np.float32 and payload.shape == (14,)
    rows = payload.reshape(-1, 7)
    assert rows[:, 0].tolist() == [5.0, 5.0]
    assert rows[0, 1:5].tolist() == pytest.approx([20 / 800, 10 / 800, 220 / 800, 110 / 800])
    assert rows[:, 6].tolist() == [3.0, 263.0]


def test_bits_equal_the_reference_loop() -> None:
    rng = np.random.default_rng(1)
    boxes = (rng.random((300, 4)) * 800).astype(np.float32)
    scores = np.sort(rng.random(300).astype(np.float32))[::-1]
    labels = rng.integers(0, 264, 300)
    got = to_payload(1234, boxes, scores, labels)
    want = reference_payload(1234, boxes, scores, labels)
    assert got.tobytes() == want.tobytes()


def test_no_detection_gives_an_empty_payload() -> None:
    assert (
        to_payload(
            0, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        ).size
        == 0
    )
    assert to_payload(0, BOXES, np.full(4, 0.01, np.float32), LABELS).size == 0


def test_a_leading_batch_axis_is_accepted() -> None:
    got = to_payload(2, BOXES[None], SCORES[None], LABELS[None])
    assert got.tobytes() == to_payload(2, BOXES, SCORES, LABELS).tobytes()


@pytest.mark.parametrize(
    ("boxes", "scores", "labels"),
    [
        (np.zeros((4, 5), np.float32), SCORES, LABELS),
        (BOXES, SCORES[:3], LABELS),
        (BOXES, SCORES, LABELS[:, None]),
    ],
)
def test_outputs_without_the_interface_shapes_raise(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> None:
    with pytest.raises(ValueError):
        to_payload(0, boxes, scores, labels)


def test_label_hits_count_like_the_reference() -> None:
    """good: kept detections whose label is among the image's ground-truth categories;
    total: kept detections; a zero total falls back to the number of queries."""
    hits = LabelHits()
    hits.add(to_payload(0, BOXES, SCORES, LABELS), {3, 5})  # labels kept: 3 (yes), 263 (no)
    hits.add(to_payload(1, BOXES, SCORES, np.array([263, 263, 0, 0])), {263})  # 2 of 2
    hits.add(to_payload(2, BOXES, np.zeros(4, np.float32), LABELS), {3})  # nothing kept
    assert (hits.good, hits.total) == (3, 4)
    assert hits.percent(fallback_total=99) == pytest.approx(75.0)
    empty = LabelHits()
    assert empty.percent(fallback_total=4) == 0.0
    assert empty.percent(fallback_total=0) is None

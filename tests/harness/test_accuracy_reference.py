"""Independent check of the harness's RetinaNet accuracy tool (issue 6).

``reference_map`` re-implements the MLPerf reference ``tools/accuracy-openimages.py`` from its
description (/work/shared/reference/mlperf-retinanet.md, "Post-processing into the accuracy
log" and "Accuracy"), using pycocotools directly and nothing from ``mlpkg.harness``:

* the accuracy log is a JSON array of ``{"seq_id", "qsl_idx", "data"}``; entries are
  de-duplicated by ``qsl_idx`` keeping the first occurrence in file order;
* ``data`` is the hex of float32 bytes, groups of 7
  ``[qsl_idx, ymin, xmin, ymax, xmax, score, label]`` normalised to 0..1; fewer than 7 values
  means no detections, but the image still counts;
* sample ``qsl_idx`` is ``cocoGt.dataset["images"][qsl_idx]`` (list order, not the image id);
  coordinates are scaled by that image's width/height (in float32, as the reference does:
  ``ymin *= height`` on a numpy float32), then the COCO box is
  ``[xmin, ymin, xmax - xmin, ymax - ymin]``, ``category_id = int(label)``;
* ``loadRes`` + ``COCOeval(.., "bbox")`` restricted to the images seen, and the line
  ``mAP={:.3f}%`` of ``100 * stats[0]``.

With no detection at all the reference crashes inside ``loadRes`` (``anns[0]`` on an empty
list), so the all-empty case expects the harness to fail too and print no mAP line.

The test writes seeded synthetic annotations and LoadGen-style accuracy logs (jittered ground
truth, wrong labels, false positives, misses, empty entries, duplicate ``qsl_idx`` entries
with different data, shuffled order), runs ``python -m mlpkg.harness.accuracy`` on them and
requires its ``mAP=`` line, and its COCOeval summary lines if it prints them, to equal the
reference's text exactly."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_CATEGORIES = 264
MAP_LINE = re.compile(r"mAP=(\d+\.\d{3})%")
SUMMARY_LINE = re.compile(r"^\s*Average (Precision|Recall)\b.*$")


# ----------------------------------------------------------------------------- reference


def _detections_from_log(
    results: list[dict[str, Any]], images: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], set[int]]:
    """COCO result dicts and the set of image ids seen, per the reference procedure."""
    detections: list[dict[str, Any]] = []
    image_ids: set[int] = set()
    seen: set[int] = set()
    for entry in results:
        idx = entry["qsl_idx"]
        if idx in seen:  # de-dupe: the first occurrence in file order wins
            continue
        seen.add(idx)
        image = images[idx]
        image_ids.add(image["id"])  # the image counts even without detections
        data = np.frombuffer(bytes.fromhex(entry["data"]), np.float32)
        if len(data) < 7:
            continue
        height, width = image["height"], image["width"]
        for i in range(0, len(data), 7):
            _payload_idx, ymin, xmin, ymax, xmax, score, label = data[i : i + 7]
            # float32 arithmetic, exactly as the reference (numpy scalar times Python int)
            ymin = ymin * height
            xmin = xmin * width
            ymax = ymax * height
            xmax = xmax * width
            detections.append(
                {
                    "image_id": image["id"],
                    "category_id": int(label),
                    "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
                    "score": float(score),
                }
            )
    return detections, image_ids


def reference_eval(
    accuracy_json_path: str | os.PathLike[str], annotations_path: str | os.PathLike[str]
) -> tuple[list[float], str, list[str]]:
    """Evaluate an accuracy log like the MLPerf reference.

    Returns ``(stats, printed_line, summary_lines)``: the 12 COCOeval stats, the line
    ``mAP=NN.NNN%`` and the 12 "Average Precision/Recall" lines COCOeval printed. Raises
    (IndexError from pycocotools' ``loadRes``) when the log holds no detection at all, as
    the reference does."""
    from pycocotools.coco import COCO  # type: ignore[import-untyped]
    from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = COCO(str(annotations_path))
        with open(accuracy_json_path, encoding="utf-8") as f:
            results = json.load(f)
        detections, image_ids = _detections_from_log(results, coco_gt.dataset["images"])
        # round-trip through JSON like the reference (it loads the results from a file)
        detections = json.loads(json.dumps(detections))
        coco_dt = coco_gt.loadRes(detections)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in coco_eval.stats]
    line = f"mAP={100.0 * coco_eval.stats[0]:.3f}%"  # the reference: "mAP={:.3f}%".format(..)
    summary = [ln.strip() for ln in buf.getvalue().splitlines() if SUMMARY_LINE.match(ln)]
    return stats, line, summary


def reference_map(
    accuracy_json_path: str | os.PathLike[str], annotations_path: str | os.PathLike[str]
) -> tuple[list[float], str]:
    """``(stats, printed_line)`` of :func:`reference_eval`."""
    stats, line, _summary = reference_eval(accuracy_json_path, annotations_path)
    return stats, line


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Case:
    """One synthetic data set: knobs for the generator."""

    name: str
    seed: int
    n_images: int
    logged_frac: float = 0.85  # images present in the log (the rest are not evaluated)
    empty_frac: float = 0.1  # logged images whose (first) entry has data ""
    dup_frac: float = 0.1  # logged images that get a second entry with other data
    permute_images: bool = False  # list the images out of id order in the annotations
    crowded_image: bool = False  # one image with > 100 detections (maxDets=100)
    only_with_detections: int | None = None  # keep detections on this many images only


CASES = [
    Case("basic", seed=11, n_images=60),
    Case("permuted-image-list", seed=22, n_images=70, permute_images=True),
    Case(
        "dups-empties-crowded",
        seed=33,
        n_images=50,
        empty_frac=0.2,
        dup_frac=0.3,
        crowded_image=True,
    ),
    Case("mostly-empty", seed=44, n_images=40, only_with_detections=3),
]
ALL_EMPTY = Case("all-empty", seed=55, n_images=20, empty_frac=1.0)


def _gt_boxes(rng: np.random.Generator, w: int, h: int, cats: np.ndarray) -> list[dict[str, Any]]:
    """A few ground-truth boxes (pixel xywh) for one image of size w x h."""
    boxes = []
    for _ in range(int(rng.integers(0, 7))):
        bw = float(rng.uniform(0.04, 0.7)) * w
        bh = float(rng.uniform(0.04, 0.7)) * h
        x = float(rng.uniform(0, w - bw))
        y = float(rng.uniform(0, h - bh))
        boxes.append(
            {
                "category_id": int(rng.choice(cats)),
                "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                "iscrowd": int(rng.random() < 0.06),
            }
        )
    return boxes


def _noisy_detections(
    rng: np.random.Generator,
    gts: list[dict[str, Any]],
    w: int,
    h: int,
    cats: np.ndarray,
    n_fp: int,
    fp_cat: int | None = None,
) -> list[tuple[float, float, float, float, float, int]]:
    """Detections (normalised ymin, xmin, ymax, xmax, score, label) from the ground truth,
    plus ``n_fp`` false positives (all of class ``fp_cat`` if given)."""
    dets = []
    for gt in gts:
        if rng.random() < 0.15:  # missed
            continue
        x, y, bw, bh = gt["bbox"]
        sigma = float(rng.uniform(0.02, 0.2))
        x0 = x + rng.normal(0, sigma) * bw
        y0 = y + rng.normal(0, sigma) * bh
        x1 = x + bw + rng.normal(0, sigma) * bw
        y1 = y + bh + rng.normal(0, sigma) * bh
        label = gt["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        score = float(rng.uniform(0.05, 1.0)) if sigma > 0.1 else float(rng.uniform(0.3, 1.0))
        dets.append((x0, y0, x1, y1, score, label))
    for _ in range(n_fp):
        bw, bh = float(rng.uniform(0.05, 0.5)) * w, float(rng.uniform(0.05, 0.5)) * h
        x0, y0 = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
        label = int(rng.choice(cats)) if fp_cat is None else fp_cat
        dets.append((x0, y0, x0 + bw, y0 + bh, float(rng.uniform(0.05, 0.6)), label))
    out = []
    for x0, y0, x1, y1, score, label in dets:
        xa, xb = sorted((min(max(x0 / w, 0.0), 1.0), min(max(x1 / w, 0.0), 1.0)))
        ya, yb = sorted((min(max(y0 / h, 0.0), 1.0), min(max(y1 / h, 0.0), 1.0)))
        if xb - xa < 1e-3 or yb - ya < 1e-3:
            continue
        out.append((ya, xa, yb, xb, max(score, 0.0501), label))
    out.sort(key=lambda d: -d[4])  # the model's scores are descending
    return out


def _pack(qsl_idx: int, dets: list[tuple[float, float, float, float, float, int]]) -> str:
    """LoadGen's ``data``: uppercase hex of float32 groups of 7."""
    if not dets:
        return ""
    arr = np.array([[qsl_idx, *d] for d in dets], dtype=np.float32)
    return arr.astype("<f4").tobytes().hex().upper()


def make_dataset(case: Case, root: Path) -> tuple[Path, Path, Path]:
    """Write ``root/openimages/annotations/openimages-mlperf.json`` and
    ``root/mlperf_log_accuracy.json`` for a case; return (log, dataset dir, annotations)."""
    rng = np.random.default_rng(case.seed)
    cats = np.unique(np.concatenate([[0, NUM_CATEGORIES - 1], rng.choice(NUM_CATEGORIES, 18)]))
    images, anns, gts_by_id = [], [], {}
    for image_id in range(1, case.n_images + 1):
        w, h = int(rng.integers(160, 1600)), int(rng.integers(120, 1200))
        images.append(
            {"id": image_id, "file_name": f"{image_id:016x}.jpg", "width": w, "height": h}
        )
        gts_by_id[image_id] = _gt_boxes(rng, w, h, cats)
        for gt in gts_by_id[image_id]:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    **gt,
                    "area": round(gt["bbox"][2] * gt["bbox"][3], 4),
                }
            )
    if case.permute_images:
        images = [images[i] for i in rng.permutation(len(images))]
    categories = [{"id": i, "name": f"class-{i:03d}"} for i in range(NUM_CATEGORIES)]
    ds_dir = root / "openimages"
    ann_path = ds_dir / "annotations" / "openimages-mlperf.json"
    ann_path.parent.mkdir(parents=True)
    ann_path.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories}),
        encoding="utf-8",
    )

    logged = sorted(
        rng.choice(len(images), round(case.logged_frac * len(images)), replace=False).tolist()
    )
    keep_dets = set(
        logged
        if case.only_with_detections is None
        else rng.choice(logged, case.only_with_detections, replace=False).tolist()
    )
    crowded = int(rng.choice(logged)) if case.crowded_image else -1
    entries = []
    for idx in logged:
        img = images[idx]
        gts = gts_by_id[img["id"]]
        if idx == crowded:  # > 100 detections of one class on one image (maxDets=100)
            fp_cat = gts[0]["category_id"] if gts else int(cats[0])
            dets = _noisy_detections(rng, gts, img["width"], img["height"], cats, 130, fp_cat)
        else:
            dets = _noisy_detections(
                rng, gts, img["width"], img["height"], cats, int(rng.poisson(1.5))
            )
            if idx not in keep_dets or rng.random() < case.empty_frac:
                dets = []
        entries.append({"qsl_idx": idx, "data": _pack(idx, dets)})
        if rng.random() < case.dup_frac:  # a repeat with other data (perfect, empty or noisy)
            kind = int(rng.integers(0, 3))
            other = (
                []
                if kind == 1
                else _noisy_detections(
                    rng, gts_by_id[img["id"]], img["width"], img["height"], cats, 3
                )
            )
            if kind == 0:
                other = [
                    (
                        g["bbox"][1] / img["height"],
                        g["bbox"][0] / img["width"],
                        (g["bbox"][1] + g["bbox"][3]) / img["height"],
                        (g["bbox"][0] + g["bbox"][2]) / img["width"],
                        0.99,
                        g["category_id"],
                    )
                    for g in gts_by_id[img["id"]]
                ]
            entries.append({"qsl_idx": idx, "data": _pack(idx, other)})
    order = rng.permutation(len(entries))
    log = [
        {"seq_id": int(s), "qsl_idx": entries[i]["qsl_idx"], "data": entries[i]["data"]}
        for s, i in enumerate(order)
    ]
    log_path = root / "mlperf_log_accuracy.json"
    log_path.write_text(json.dumps(log, indent=0), encoding="utf-8")
    return log_path, ds_dir, ann_path


# ----------------------------------------------------------------------------- harness


def run_harness(log_path: Path, ds_dir: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the harness's accuracy CLI from the repository root."""
    env = dict(os.environ)
    env.pop("DATASET_ANNOTATIONS_FILE_PATH", None)  # the reference honours this override
    cmd = [
        sys.executable,
        "-m",
        "mlpkg.harness.accuracy",
        "--mlperf-accuracy-file",
        str(log_path),
        "--openimages-dir",
        str(ds_dir),
        "--output-file",
        str(tmp / "openimages-results.json"),
    ]
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _map_lines(stdout: str) -> list[str]:
    return [f"mAP={m.group(1)}%" for m in MAP_LINE.finditer(stdout)]


def _summary_lines(stdout: str) -> list[str]:
    return [ln.strip() for ln in stdout.splitlines() if SUMMARY_LINE.match(ln)]


# ----------------------------------------------------------------------------- tests


def _read_log(path: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return result


def test_reference_perfect_log_scores_100(tmp_path: Path) -> None:
    """Sanity of the reference itself: the ground truth as detections gives mAP 100 %."""
    _log, _ds, ann_path = make_dataset(CASES[0], tmp_path)
    gt = json.loads(ann_path.read_text(encoding="utf-8"))
    entries = []
    for idx, img in enumerate(gt["images"]):
        w, h = img["width"], img["height"]
        dets = [
            (
                a["bbox"][1] / h,
                a["bbox"][0] / w,
                (a["bbox"][1] + a["bbox"][3]) / h,
                (a["bbox"][0] + a["bbox"][2]) / w,
                0.9,
                a["category_id"],
            )
            for a in gt["annotations"]
            if a["image_id"] == img["id"]
        ]
        entries.append({"seq_id": idx, "qsl_idx": idx, "data": _pack(idx, dets)})
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps(entries), encoding="utf-8")
    _stats, line, summary = reference_eval(perfect, ann_path)
    assert line == "mAP=100.000%", line
    assert len(summary) == 12


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reference_is_sensitive_to_the_rules(case: Case, tmp_path: Path) -> None:
    """The generated logs exercise the rules: keeping the last duplicate instead of the first,
    or dropping the empty entries, changes the reference's answer."""
    log_path, _ds, ann_path = make_dataset(case, tmp_path)
    _stats, line = reference_map(log_path, ann_path)
    assert 0.0 < float(MAP_LINE.fullmatch(line).group(1)) < 100.0  # type: ignore[union-attr]
    log = _read_log(log_path)
    variants = {
        "last-duplicate-wins": list(reversed(log)),
        "empty-entries-dropped": [e for e in log if e["data"]],
    }
    for name, variant in variants.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(variant), encoding="utf-8")
        _s, other = reference_map(path, ann_path)
        assert other != line, (name, line, other)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_harness_map_matches_reference(case: Case, tmp_path: Path) -> None:
    """The harness's ``mAP=`` line (last one printed) equals the reference's, to the last
    digit; its COCOeval summary lines, if printed, equal the reference's text."""
    log_path, ds_dir, ann_path = make_dataset(case, tmp_path)
    _stats, want_line, want_summary = reference_eval(log_path, ann_path)
    proc = run_harness(log_path, ds_dir, tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    got = _map_lines(proc.stdout)
    assert got, f"no mAP= line in stdout:\n{proc.stdout}\n{proc.stderr}"
    assert got[-1] == want_line, f"{case.name}: harness {got[-1]} != reference {want_line}"
    got_summary = _summary_lines(proc.stdout)
    if got_summary:
        assert got_summary == want_summary


def test_harness_all_empty_log_fails_like_reference(tmp_path: Path) -> None:
    """No detection at all: pycocotools' ``loadRes`` cannot load an empty result list, so the
    reference dies before printing a mAP; the harness must not print one either."""
    log_path, ds_dir, ann_path = make_dataset(ALL_EMPTY, tmp_path)
    assert all(e["data"] == "" for e in _read_log(log_path))
    with pytest.raises(IndexError):
        reference_map(log_path, ann_path)
    proc = run_harness(log_path, ds_dir, tmp_path)
    assert proc.returncode != 0, f"harness exited 0:\n{proc.stdout}\n{proc.stderr}"
    assert not _map_lines(proc.stdout), proc.stdout

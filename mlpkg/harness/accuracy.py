"""mAP of a LoadGen accuracy log, as the MLPerf reference ``tools/accuracy-openimages.py``.

Usage::

    python -m mlpkg_harness.accuracy --mlperf-accuracy-file mlperf_log_accuracy.json \\
        --openimages-dir DIR [--output-file results.json] [--verbose] [--use-inv-map]

prints pycocotools' output (the COCOeval summary table) and then ``mAP=NN.NNN%``
(``100 * stats[0]``, 3 decimals). The annotations are ``DIR/annotations/openimages-mlperf.json``
unless the environment variable ``DATASET_ANNOTATIONS_FILE_PATH`` names another file (as in
the reference). Exit status: 0; 2 for a missing or unreadable accuracy log or annotations
file (one sentence naming it); 1 when the log holds no detection at all (the reference
crashes there, in pycocotools' ``loadRes``; no mAP line is printed).

Procedure (the reference's): entries are taken in file order, de-duplicated by ``qsl_idx``
(the first one wins); ``data`` is hex of float32 groups of 7
``[qsl_idx, ymin, xmin, ymax, xmax, score, label]``; fewer than 7 values means no detection,
but the image still counts. Sample ``qsl_idx`` is ``cocoGt.dataset["images"][qsl_idx]``;
coordinates are scaled by its width/height with the reference's numpy arithmetic (a float32
scalar times a Python int: float32 under numpy 2, float64 under numpy 1; the vectorised code
here uses the same dtype, found by probing), boxes become ``[xmin, ymin, xmax - xmin,
ymax - ymin]``, ``category_id = int(label)``; then ``loadRes`` (detections in log order),
``COCOeval(.., "bbox")`` with ``params.imgIds`` = the images seen, evaluate, accumulate,
summarize.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import BadInput

ANNOTATIONS = "annotations/openimages-mlperf.json"
# the dtype numpy gives a float32 scalar times a Python int (the reference's arithmetic)
_SCALE_DTYPE = (np.float32(1) * 1).dtype


class NoDetections(Exception):
    """The log holds no detection at all: pycocotools cannot evaluate it."""


@dataclass
class AccuracyResult:
    """What one evaluation found."""

    map: float  # COCOeval stats[0] (a fraction)
    stats: list[float]
    line: str  # "mAP=NN.NNN%"
    images: int  # images evaluated (the distinct qsl_idx of the log)
    detections: int
    no_results: int  # images without detections
    entries: int  # entries in the log (duplicates included)
    table: list[str] = field(default_factory=list)  # COCOeval's "Average ..." lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "mAP": self.map,
            "line": self.line,
            "stats": self.stats,
            "images": self.images,
            "detections": self.detections,
            "images_without_detections": self.no_results,
            "log_entries": self.entries,
        }


def annotations_path(openimages_dir: Path) -> Path:
    """The annotations file: $DATASET_ANNOTATIONS_FILE_PATH, else DIR/annotations/..."""
    override = os.environ.get("DATASET_ANNOTATIONS_FILE_PATH")
    return Path(override) if override else openimages_dir / ANNOTATIONS


def _load_log(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except FileNotFoundError:
        raise BadInput(f"accuracy log {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"accuracy log {path} cannot be read as JSON ({e}).") from None
    if not isinstance(results, list):
        raise BadInput(f"accuracy log {path} is not a JSON array of LoadGen entries.")
    return results


def _image_detections(
    data: np.ndarray[Any, np.dtype[np.float32]],
    idx: int,
    image: dict[str, Any],
    loc: str,
    inv_map: list[int] | None,
    out: TextIO,
    log: Path,
) -> list[dict[str, Any]]:
    """COCO result dicts for one image's float32 groups of 7 (BadInput naming ``log`` for a
    label outside ``inv_map``)."""
    groups = data.reshape(-1, 7)
    for payload_idx in groups[:, 0].astype(np.int64).tolist():
        if payload_idx != idx:
            print(
                f"ERROR: loadgen({idx}) and payload({payload_idx}) disagree on image_idx",
                file=out,
            )
    height, width = image["height"], image["width"]
    ymin = groups[:, 1].astype(_SCALE_DTYPE) * _SCALE_DTYPE.type(height)
    xmin = groups[:, 2].astype(_SCALE_DTYPE) * _SCALE_DTYPE.type(width)
    ymax = groups[:, 3].astype(_SCALE_DTYPE) * _SCALE_DTYPE.type(height)
    xmax = groups[:, 4].astype(_SCALE_DTYPE) * _SCALE_DTYPE.type(width)
    w, h = (xmax - xmin).tolist(), (ymax - ymin).tolist()
    labels = groups[:, 6].astype(np.int64).tolist()
    if inv_map is not None:
        bad = next((label for label in labels if not 0 <= label < len(inv_map)), None)
        if bad is not None:
            raise BadInput(
                f"accuracy log {log}: sample {idx} has the category label {bad}, outside the "
                f"{len(inv_map)} labels of the annotations' category map."
            )
        labels = [inv_map[label] for label in labels]
    return [
        {
            "image_id": image["id"],
            "image_loc": loc,
            "category_id": label,
            "bbox": [x, y, bw, bh],
            "score": score,
        }
        for x, y, bw, bh, score, label in zip(
            xmin.tolist(), ymin.tolist(), w, h, groups[:, 5].tolist(), labels
        )
    ]


def detections_from_log(
    results: list[dict[str, Any]],
    images: list[dict[str, Any]],
    openimages_dir: Path,
    log: Path,
    inv_map: list[int] | None = None,
    out: TextIO | None = None,
) -> tuple[list[dict[str, Any]], set[int], int, int]:
    """(detections, image ids seen, images without detections, distinct entries); payload
    index mismatches are reported on ``out`` (stdout) as the reference does."""
    detections: list[dict[str, Any]] = []
    image_ids: set[int] = set()
    seen: set[int] = set()
    no_results = 0
    for j in results:
        try:
            idx = int(j["qsl_idx"])
            data = np.frombuffer(bytes.fromhex(j["data"]), np.float32)
        except (KeyError, TypeError, ValueError, OverflowError) as e:  # "qsl_idx": 1e999
            raise BadInput(f"accuracy log {log} has a malformed entry ({e}).") from None
        if idx in seen:  # de-dupe in case LoadGen sends the same image twice
            continue
        seen.add(idx)
        if not 0 <= idx < len(images):
            raise BadInput(
                f"accuracy log {log} names sample {idx}, which the annotations "
                f"(with {len(images)} images) do not have."
            )
        image = images[idx]
        image_ids.add(image["id"])
        if len(data) < 7:
            no_results += 1
            continue
        if len(data) % 7:
            raise BadInput(
                f"accuracy log {log}: sample {idx} has {len(data)} values, not groups of 7."
            )
        loc = os.path.join(openimages_dir, "validation/data", str(image.get("file_name", "")))
        detections += _image_detections(data, idx, image, loc, inv_map, out or sys.stdout, log)
    return detections, image_ids, no_results, len(seen)


def _coco(annotations: Path) -> Any:
    if not annotations.is_file():
        raise BadInput(f"annotations file {annotations} does not exist.")
    coco = importlib.import_module("pycocotools.coco")
    try:
        return coco.COCO(str(annotations))
    except Exception as e:
        raise BadInput(f"annotations file {annotations} cannot be loaded ({e}).") from None


def evaluate(
    accuracy_file: Path,
    openimages_dir: Path,
    output_file: Path | None = None,
    use_inv_map: bool = False,
    chatter: bool = True,
    annotations: Path | None = None,
) -> AccuracyResult:
    """Evaluate ``accuracy_file``; pycocotools' messages go to stdout when ``chatter``
    (otherwise only its summary table). ``annotations`` overrides :func:`annotations_path`
    (the harness passes its dataset's file). Raises BadInput, NoDetections."""
    buf, stdout = io.StringIO(), sys.stdout
    with contextlib.redirect_stdout(stdout if chatter else buf):
        coco_gt = _coco(annotations or annotations_path(openimages_dir))
        results = _load_log(accuracy_file)
        inv_map = [0, *coco_gt.getCatIds()] if use_inv_map else None
        detections, image_ids, no_results, _ = detections_from_log(
            results, coco_gt.dataset["images"], openimages_dir, accuracy_file, inv_map, stdout
        )
        if output_file is not None:
            with open(output_file, "w", encoding="utf-8") as fp:
                json.dump(detections, fp, sort_keys=True, indent=4)
        if not detections:
            raise NoDetections(
                f"accuracy log {accuracy_file} holds no detection at all: there is nothing "
                "to evaluate (the reference fails here too)."
            )
        cocoeval = importlib.import_module("pycocotools.cocoeval")
        coco_dt = coco_gt.loadRes(detections)
        coco_eval = cocoeval.COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        table_buf = io.StringIO()
        with contextlib.redirect_stdout(table_buf):
            coco_eval.summarize()
    table = table_buf.getvalue()
    sys.stdout.write(table)
    stats = [float(s) for s in coco_eval.stats]
    return AccuracyResult(
        map=stats[0],
        stats=stats,
        line=f"mAP={100.0 * stats[0]:.3f}%",
        images=len(image_ids),
        detections=len(detections),
        no_results=no_results,
        entries=len(results),
        table=[ln for ln in table.splitlines() if ln.strip()],
    )


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out, never guessed from a prefix
        prog="python -m mlpkg_harness.accuracy",
        description="mAP of a LoadGen accuracy log (as MLPerf's accuracy-openimages.py).",
    )
    p.add_argument(
        "--mlperf-accuracy-file", required=True, type=Path, help="path to mlperf_log_accuracy.json"
    )
    p.add_argument(
        "--openimages-dir",
        required=True,
        type=Path,
        help="dataset directory (with annotations/openimages-mlperf.json)",
    )
    p.add_argument("--output-file", type=Path, help="write the COCO detections here (JSON)")
    p.add_argument("--verbose", action="store_true", help="print counts")
    p.add_argument("--use-inv-map", action="store_true", help="use inverse label map")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The accuracy command line (see the module doc)."""
    args = _args(argv)
    try:
        result = evaluate(
            args.mlperf_accuracy_file, args.openimages_dir, args.output_file, args.use_inv_map
        )
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NoDetections as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.line)
    if args.verbose:
        print(f"found {result.entries} results")
        print(f"found {result.images} images")
        print(f"found {result.no_results} images with no results")
        print(f"ignored {result.entries - result.images} dupes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

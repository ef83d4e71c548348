"""The MLCommons procedure that assembles the OpenImages MLPerf subset, standard library only.

Run by the ``openimages-mlperf`` recipe (a build that needs the network)::

    python3 -S -m mlpkg_harness.openimages_download OUT [--max-images N] [--classes FILE]

What it does, in the order of the MLCommons tools (vision/classification_and_detection/
tools/openimages*.py), which download through FiftyOne:

1. read the class descriptions (``class-descriptions-boxable.csv``: LabelName, DisplayName)
   and the validation boxes (``validation-annotations-bbox.csv``);
2. keep the boxes of the 264 MLPerf classes (:data:`.openimages_classes.MLPERF_CLASSES`,
   whose order gives category ids 0..263; ``--classes FILE``, one display name per line,
   replaces the list);
3. keep the images with at least one such box, sorted by ImageID; with ``--max-images N``
   a seeded (42) random choice of N of them, again sorted;
4. download each image from the open-images-dataset bucket to ``validation/data/``
   (:data:`WORKERS` downloads at a time), read its width and height from the JPEG header;
5. write ``annotations/openimages-mlperf.json`` in COCO form: image ids 1..N in ImageID
   order, annotations in the order of the boxes file, ``bbox`` [x, y, w, h] in pixels with
   the reference's arithmetic (``XMin * width``, ``YMin * height``, ``(XMax - XMin) *
   width``, ``(YMax - YMin) * height``; ``area`` = w * h), ``iscrowd`` = IsGroupOf,
   ``category_id`` the class's MLPerf index.

The output does not depend on the order in which the parallel downloads finish: the same
files, and an annotations file that is the same byte for byte.

The base URLs can be changed (``--annotations-url``, ``--images-url``) for a mirror. A
failed download ends the build with a sentence naming the URL (exit 1; the first failure in
ImageID order; downloads not yet started are cancelled); nothing is
resumed here: the store discards a failed build and the next attempt starts again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .openimages_classes import MLPERF_CLASSES

ANNOTATIONS_URL = "https://storage.googleapis.com/openimages/v5"
IMAGES_URL = "https://s3.amazonaws.com/open-images-dataset/validation"
SEED = 42
WORKERS = 10  # parallel image downloads


class DownloadError(Exception):
    """A download failed; the message names the URL."""


def fetch(url: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read()
            return data
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason}") from None


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise ValueError("no frame header in the JPEG file")


def select(
    boxes: list[dict[str, str]], label_ids: dict[str, int], max_images: int | None
) -> list[str]:
    """The ImageIDs of the subset, sorted (see the module docstring, step 3)."""
    ids = sorted({b["ImageID"] for b in boxes if b["LabelName"] in label_ids})
    if max_images is not None and max_images < len(ids):
        ids = sorted(random.Random(SEED).sample(ids, max_images))
    return ids


def coco(
    ids: Sequence[str],
    sizes: dict[str, tuple[int, int]],
    boxes: list[dict[str, str]],
    classes: list[str],
    label_ids: dict[str, int],
) -> dict[str, Any]:
    """The COCO document of the subset (step 5)."""
    number = {image_id: n for n, image_id in enumerate(ids, 1)}
    images = [
        {"id": number[i], "file_name": f"{i}.jpg", "width": sizes[i][0], "height": sizes[i][1]}
        for i in ids
    ]
    annotations: list[dict[str, Any]] = []
    for b in boxes:
        if b["ImageID"] not in number or b["LabelName"] not in label_ids:
            continue
        w, h = sizes[b["ImageID"]]
        x_min, x_max = float(b["XMin"]), float(b["XMax"])
        y_min, y_max = float(b["YMin"]), float(b["YMax"])
        bbox = [x_min * w, y_min * h, (x_max - x_min) * w, (y_max - y_min) * h]  # reference
        annotations.append({
            "id": len(annotations) + 1, "image_id": number[b["ImageID"]],
            "category_id": label_ids[b["LabelName"]], "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": int(b.get("IsGroupOf") or 0),
        })  # fmt: skip
    categories = [{"id": i, "name": name} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _classes(descriptions: bytes, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """The class names in MLPerf order and LabelName -> category id."""
    rows = list(csv.reader(io.StringIO(descriptions.decode("utf-8"))))
    by_name = {name: label for label, name in (r[:2] for r in rows if len(r) >= 2)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"classes not in class-descriptions-boxable.csv: {', '.join(missing)}")
    return names, {by_name[n]: i for i, n in enumerate(names)}


def _fetch_image(url: str, path: Path) -> tuple[int, int]:
    """Download one image to ``path``; its (width, height)."""
    data = fetch(url)
    try:
        size = jpeg_size(data)
    except ValueError as e:
        raise DownloadError(f"{url} is not a usable JPEG: {e}") from None
    path.write_bytes(data)
    return size


def fetch_images(
    ids: Sequence[str], images_url: str, data_dir: Path, quiet: bool = False
) -> dict[str, tuple[int, int]]:
    """Download the images (:data:`WORKERS` at a time) into ``data_dir``; their sizes by
    ImageID. Results are taken in ImageID order, so the first failure in that order is the
    one raised; the downloads not yet started are then cancelled."""
    sizes: dict[str, tuple[int, int]] = {}
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="download")
    try:
        futures = [
            pool.submit(_fetch_image, f"{images_url}/{i}.jpg", data_dir / f"{i}.jpg") for i in ids
        ]
        for n, (image_id, future) in enumerate(zip(ids, futures), 1):
            sizes[image_id] = future.result()
            if not quiet and (n % 100 == 0 or n == len(ids)):
                print(f"images: {n}/{len(ids)}", file=sys.stderr, flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return sizes


def download(out: Path, args: argparse.Namespace) -> int:
    wanted = list(MLPERF_CLASSES)
    if args.classes:
        wanted = [ln.strip() for ln in Path(args.classes).read_text().splitlines() if ln.strip()]
    names, label_ids = _classes(fetch(f"{args.annotations_url}/class-descriptions-boxable.csv"),
                                wanted)  # fmt: skip
    text = fetch(f"{args.annotations_url}/validation-annotations-bbox.csv").decode("utf-8")
    boxes = list(csv.DictReader(io.StringIO(text)))
    ids = select(boxes, label_ids, args.max_images)
    data_dir = out / "validation" / "data"
    data_dir.mkdir(parents=True)
    sizes = fetch_images(ids, args.images_url, data_dir, args.quiet)
    (out / "annotations").mkdir()
    doc = coco(ids, sizes, boxes, names, label_ids)
    with open(out / "annotations" / "openimages-mlperf.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, sort_keys=True, separators=(",", ":"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="openimages_download", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--classes", help="a file of class display names, one per line")
    parser.add_argument("--annotations-url", default=ANNOTATIONS_URL)
    parser.add_argument("--images-url", default=IMAGES_URL)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        os.makedirs(args.out, exist_ok=True)
        return download(args.out, args)
    except (DownloadError, ValueError, OSError) as e:
        print(f"openimages_download: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Deterministic synthetic OpenImages dataset in the real MLPerf layout.

Usage: ``python -m mlpkg_harness.synth_dataset OUT [--images N] [--quiet]``

Writes, under ``OUT``::

    validation/data/<16 hex chars>.jpg      N images (default 64)
    annotations/openimages-mlperf.json       COCO annotations, shaped like the real file

Contract (what the synthetic model and the tests rely on):

* The annotations mirror the MLCommons export (``tools/openimages.py`` of
  mlcommons/inference): ``info``, ``licenses``, 264 ``categories`` with ids 0..263 in list
  order (the real MLPerf class names, see :mod:`.synth_spec`), ``images`` with ids 1..N in
  file-name order (file names look like OpenImages ImageIDs: 16 lowercase hex chars), and
  ``annotations`` with ``bbox`` ``[x, y, w, h]``, ``area = w * h``, ``iscrowd`` 0.
* Every image has a smooth, low-saturation background (a grey linear gradient plus a
  vignette and a faint tint) and 4..8 objects. An object is a solid axis-aligned rectangle
  whose colour (jittered by a few levels) identifies its category (``COLOUR_CLASSES``).
  Objects never overlap (16 px margin), stay 8 px inside the image, have each side at least
  8% of the image side and at least 40 px, and edges on the 8-px JPEG block grid. A
  category occurs at most once per image. The bbox covers exactly the drawn pixels.
* Image sizes vary: long side 480..1024, short side 320..long side, landscape or portrait.
* Deterministic: only ``numpy.random.default_rng(SEED)`` integer draws and integer pixel
  arithmetic; JPEG via OpenCV (quality 95, 4:4:4, baseline); JSON with fixed formatting.
  Two runs give bit-identical files. Exit status 0, or 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import synth_spec as spec

ANNOTATIONS_PATH = "annotations/openimages-mlperf.json"
IMAGES_DIR = "validation/data"

_MARGIN = 16  # minimum gap between two objects (px)
_BORDER = 8  # minimum gap between an object and the image border (px)
_ATTEMPTS = 60  # placement attempts per object before it is dropped


@dataclass(frozen=True)
class SynthObject:
    """One drawn rectangle: pixels ``[x0, x1) x [y0, y1)`` of colour ``rgb``."""

    category_id: int
    x0: int
    y0: int
    x1: int
    y1: int
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class ImagePlan:
    """Everything needed to draw one image (all integers, so drawing is exact)."""

    file_name: str
    width: int
    height: int
    base: int  # background grey level at the centre
    grad_x: int  # grey change across the width
    grad_y: int  # grey change across the height
    vignette: int  # grey darkening at the corners
    tint: tuple[int, int, int]  # per-channel offsets, each in [-TINT, TINT]
    objects: tuple[SynthObject, ...]


def _image_names(rng: np.random.Generator, count: int) -> list[str]:
    """Draw ``count`` distinct ImageID-like names and return them sorted."""
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.bytes(8).hex())
    return sorted(names)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """Draw (width, height): long side 480..1024, short side 320..long, 70% landscape."""
    long_side = int(rng.integers(480, 1025))
    short_side = int(rng.integers(max(320, long_side // 2), long_side + 1))
    if int(rng.integers(0, 10)) < 7:
        return long_side, short_side
    return short_side, long_side


def _span(rng: np.random.Generator, side: int) -> tuple[int, int]:
    """Draw an object extent ``[a, b)`` along an image side of ``side`` px, on the grid."""
    g = spec.GRID
    min_len = -(-max(40, -(-side * 8 // 100)) // g)  # in grid cells, rounded up
    max_len = max(min_len, side * 35 // 100 // g)
    length = int(rng.integers(min_len, max_len + 1)) * g
    last_start = (side - _BORDER - length) // g
    start = int(rng.integers(1, max(1, last_start) + 1)) * g
    return start, start + length


def _apart(a: SynthObject, x0: int, y0: int, x1: int, y1: int) -> bool:
    """True when the box ``[x0, x1) x [y0, y1)`` keeps the margin from object ``a``."""
    return (
        x0 >= a.x1 + _MARGIN or a.x0 >= x1 + _MARGIN or y0 >= a.y1 + _MARGIN or a.y0 >= y1 + _MARGIN
    )


def _place_objects(rng: np.random.Generator, width: int, height: int) -> tuple[SynthObject, ...]:
    """Place 4..8 objects of distinct colour classes without overlap."""
    count = int(rng.integers(4, 9))
    classes = rng.permutation(len(spec.COLOUR_CLASSES))[:count]
    placed: list[SynthObject] = []
    for cls in classes:
        category_id, (r, g, b) = spec.COLOUR_CLASSES[int(cls)]
        jitter = rng.integers(-spec.COLOUR_JITTER, spec.COLOUR_JITTER + 1, size=3)
        rgb = (r + int(jitter[0]), g + int(jitter[1]), b + int(jitter[2]))
        for _ in range(_ATTEMPTS):
            x0, x1 = _span(rng, width)
            y0, y1 = _span(rng, height)
            if x1 > width - _BORDER or y1 > height - _BORDER:
                continue
            if all(_apart(o, x0, y0, x1, y1) for o in placed):
                placed.append(SynthObject(category_id, x0, y0, x1, y1, rgb))
                break
    return tuple(placed)


def plan_images(count: int, seed: int = spec.SEED) -> list[ImagePlan]:
    """Return the plans of ``count`` images, sorted by file name (= image id order)."""
    rng = np.random.default_rng(seed)
    plans = []
    for name in _image_names(rng, count):
        width, height = _image_size(rng)
        lo = spec.BACKGROUND_MIN + spec.BACKGROUND_TINT
        hi = spec.BACKGROUND_MAX - spec.BACKGROUND_TINT
        tint = rng.integers(-spec.BACKGROUND_TINT, spec.BACKGROUND_TINT + 1, size=3)
        plans.append(
            ImagePlan(
                file_name=f"{name}.jpg",
                width=width,
                height=height,
                base=int(rng.integers(lo + 30, hi - 29)),
                grad_x=int(rng.integers(-50, 51)),
                grad_y=int(rng.integers(-50, 51)),
                vignette=int(rng.integers(0, 31)),
                tint=(int(tint[0]), int(tint[1]), int(tint[2])),
                objects=_place_objects(rng, width, height),
            )
        )
    return plans


def draw_image(plan: ImagePlan) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Return the image of ``plan`` as an RGB uint8 array of shape (height, width, 3)."""
    w, h = plan.width, plan.height
    xs = np.arange(w, dtype=np.int64)[None, :]
    ys = np.arange(h, dtype=np.int64)[:, None]
    # squared distance from the centre, times (w * h)^2: 0 at the centre, 2 (w * h)^2 at corners
    radial = (2 * xs - w) ** 2 * h * h + (2 * ys - h) ** 2 * w * w
    grey = (
        plan.base
        + plan.grad_x * (2 * xs - w) // (2 * w)
        + plan.grad_y * (2 * ys - h) // (2 * h)
        - plan.vignette * radial // (2 * w * w * h * h)
    )
    lo = spec.BACKGROUND_MIN + spec.BACKGROUND_TINT
    hi = spec.BACKGROUND_MAX - spec.BACKGROUND_TINT
    grey = np.clip(grey, lo, hi)
    img = np.stack([grey + t for t in plan.tint], axis=2).astype(np.uint8)
    for o in plan.objects:
        img[o.y0 : o.y1, o.x0 : o.x1] = np.array(o.rgb, dtype=np.uint8)
    return img


def encode_jpeg(rgb: np.ndarray[Any, np.dtype[np.uint8]]) -> bytes:
    """Encode an RGB image as baseline JPEG (quality ``JPEG_QUALITY``, 4:4:4) with OpenCV."""
    import cv2  # type: ignore[import-untyped,unused-ignore]

    params = [
        cv2.IMWRITE_JPEG_QUALITY, spec.JPEG_QUALITY,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        cv2.IMWRITE_JPEG_OPTIMIZE, 0,
        cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
    ]  # fmt: skip
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return bytes(buf.tobytes())


def build_annotations(plans: list[ImagePlan]) -> dict[str, Any]:
    """Return the COCO annotations dict for ``plans`` (image id = position + 1)."""
    categories = [
        {"id": i, "name": name, "supercategory": None} for i, name in enumerate(spec.MLPERF_CLASSES)
    ]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, plan in enumerate(plans, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": plan.file_name,
                "height": plan.height,
                "width": plan.width,
                "license": None,
                "coco_url": None,
            }
        )
        for o in plan.objects:
            w, h = o.x1 - o.x0, o.y1 - o.y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": o.category_id,
                    "bbox": [float(o.x0), float(o.y0), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                    "IsOccluded": 0,
                    "IsInside": 0,
                    "IsDepiction": 0,
                    "IsTruncated": 0,
                    "IsGroupOf": 0,
                }
            )
    return {
        "info": {"dataset": "openimages_mlperf", "version": "synthetic-1"},
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_dataset(out: Path, count: int = spec.DEFAULT_IMAGES, quiet: bool = True) -> None:
    """Generate ``count`` images and their annotations under ``out`` (created if needed)."""
    plans = plan_images(count)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / ANNOTATIONS_PATH).parent.mkdir(parents=True, exist_ok=True)
    for i, plan in enumerate(plans, start=1):
        _write(out / IMAGES_DIR / plan.file_name, encode_jpeg(draw_image(plan)))
        if not quiet and (i % 16 == 0 or i == len(plans)):
            print(f"synth_dataset: {i}/{len(plans)} images", file=sys.stderr)
    text = json.dumps(build_annotations(plans))
    _write(out / ANNOTATIONS_PATH, text.encode("ascii"))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out, never guessed from a prefix
        prog="python -m mlpkg_harness.synth_dataset",
        description="Write the deterministic synthetic OpenImages (MLPerf layout) to OUT.",
    )
    parser.add_argument("out", type=Path, help="output directory (created)")
    parser.add_argument("--images", type=int, default=spec.DEFAULT_IMAGES, help="image count")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.images < 1:
        print(f"synth_dataset: --images must be at least 1, not {args.images}.", file=sys.stderr)
        return 2
    write_dataset(args.out, args.images, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference RetinaNet pre-processing of an OpenImages (MLPerf layout) dataset.

Usage: ``python -m mlpkg_harness.preprocess SRC_DIR OUT_DIR [--count N] [--quiet]``

Reads ``SRC_DIR/annotations/openimages-mlperf.json`` and, for every entry of its ``images``
list in list order (the first ``N`` with ``--count``), ``SRC_DIR/validation/data/<file_name>``.
Writes under ``OUT_DIR`` (created):

* ``preprocessed/<stem>.npy``: float32 [3, 800, 800], C order, written with ``np.save``;
* ``annotations/openimages-mlperf.json``: byte-identical copy of the source annotations;
* ``manifest.json``: ``{"format": 1, "preprocessing": "mlperf-retinanet-onnx-v1",
  "shape": [3, 800, 800], "dtype": "float32", "images": [{"index", "id", "file_name",
  "width", "height", "npy"}, ...]}`` with sorted keys, 2-space indent, trailing newline,
  written last. Width and height come from the annotations. A change of this layout must
  bump ``format`` (the harness's :mod:`.dataset` reads format 1 only; the test suite
  compares the manifest of a small dataset with a golden file).

The transformation follows the MLCommons reference exactly (mlcommons/inference,
``vision/classification_and_detection/python/dataset.py``: ``pre_process_openimages_retinanet``
calls ``maybe_resize`` then divides; ``openimages.py`` reads with ``cv2.imread(src)`` and
caches with ``np.save``; the RetinaNet callers pass ``image_size=[800, 800, 3]`` and
``image_format="NCHW"``). In that code the order is: ``np.array(img, dtype=np.float32)``;
if not 3-channel, ``cv2.cvtColor(GRAY2RGB)``; ``cv2.cvtColor(BGR2RGB)``;
``cv2.resize(img, (800, 800), interpolation=cv2.INTER_LINEAR)`` (aspect not kept, no crop);
``img /= 255.`` in place, so float32 throughout, after the resize; ``img.transpose([2, 0, 1])``.
Only the cache file name differs: the reference writes ``<file_name>.npy`` (``x.jpg.npy``),
the harness contract ``preprocessed/<stem>.npy``.

Errors: a missing or unreadable annotations file, or an image listed there that is missing
or cannot be decoded, prints one sentence naming the file on stderr and exits with 2.
Files are only ever written inside OUT_DIR, each through a temporary name and a rename, so
none is half-written. Progress goes to stderr every 100 images unless ``--quiet``.
Output is deterministic: no timestamps, fixed formatting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ANNOTATIONS_PATH = "annotations/openimages-mlperf.json"
IMAGES_DIR = "validation/data"
PREPROCESSED_DIR = "preprocessed"
MANIFEST = "manifest.json"
PREPROCESSING_ID = "mlperf-retinanet-onnx-v1"
SIZE = 800
PROGRESS_EVERY = 100


class InputError(Exception):
    """Bad input; the message is one sentence that names the file."""


def preprocess_image(bgr: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Apply the reference pre-processing to a ``cv2.imread`` image; return float32 CHW.

    Same operations, same order and dtypes as the reference ``maybe_resize`` +
    ``pre_process_openimages_retinanet`` with ``dims = (800, 800, 3)`` and NCHW.
    """
    import cv2  # type: ignore[import-untyped,unused-ignore]

    img: Any = np.array(bgr, dtype=np.float32)
    if len(img.shape) < 3 or img.shape[2] != 3:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)  # reference: "some images might be grayscale"
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    img /= 255.0
    chw: np.ndarray[Any, np.dtype[np.float32]] = np.ascontiguousarray(img.transpose([2, 0, 1]))
    return chw


def _image_entry(entry: Any) -> dict[str, Any]:
    """Check one ``images`` entry; return its id, file name and integral width/height."""
    if not isinstance(entry["id"], int) or not isinstance(entry["file_name"], str):
        raise TypeError("an image needs an integer id and a string file_name")
    dims = {}
    for key in ("width", "height"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise TypeError(f"image {key} {value!r} is not a whole number")
        dims[key] = int(value)
    return {"id": entry["id"], "file_name": entry["file_name"], **dims}


def load_annotations(src: Path) -> tuple[bytes, list[dict[str, Any]]]:
    """Return the raw bytes of the source annotations and their checked ``images`` list."""
    path = src / ANNOTATIONS_PATH
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read annotations file {path}: {exc.strerror}.") from None
    try:
        images = [_image_entry(entry) for entry in json.loads(raw)["images"]]
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise InputError(
            f"annotations file {path} is not MLPerf OpenImages COCO JSON ({exc!r})."
        ) from None
    stems = [Path(image["file_name"]).stem for image in images]
    if len(set(stems)) != len(stems):
        raise InputError(f"annotations file {path} lists two images with the same file stem.")
    return raw, images


def read_image(path: Path) -> np.ndarray[Any, Any]:
    """Read an image with ``cv2.imread`` (BGR, as the reference does) or raise InputError."""
    import cv2

    if not path.is_file():
        raise InputError(f"image file {path} listed in the annotations does not exist.")
    img = cv2.imread(str(path))
    if img is None:
        raise InputError(f"image file {path} cannot be decoded as an image.")
    result: np.ndarray[Any, Any] = img
    return result


def _save_npy(path: Path, array: np.ndarray[Any, Any]) -> None:
    """``np.save`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def manifest_text(entries: list[dict[str, Any]]) -> str:
    """Return the manifest.json text for the given image entries (fixed formatting)."""
    doc = {
        "format": 1,
        "preprocessing": PREPROCESSING_ID,
        "shape": [3, SIZE, SIZE],
        "dtype": "float32",
        "images": entries,
    }
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def preprocess_dataset(src: Path, out: Path, count: int | None = None, quiet: bool = False) -> int:
    """Pre-process ``src`` into ``out``; return the number of images written.

    Raises InputError on bad input (after which ``out`` may hold complete files only).
    """
    raw, images = load_annotations(src)
    if count is not None:
        images = images[:count]
    (out / PREPROCESSED_DIR).mkdir(parents=True, exist_ok=True)
    entries = []
    for index, image in enumerate(images):
        file_name = image["file_name"]
        npy = f"{PREPROCESSED_DIR}/{Path(file_name).stem}.npy"
        _save_npy(out / npy, preprocess_image(read_image(src / IMAGES_DIR / file_name)))
        entries.append(
            {
                "index": index,
                "id": image["id"],
                "file_name": file_name,
                "width": image["width"],
                "height": image["height"],
                "npy": npy,
            }
        )
        done = index + 1
        if not quiet and (done % PROGRESS_EVERY == 0 or done == len(images)):
            print(f"preprocess: {done}/{len(images)} images", file=sys.stderr)
    (out / ANNOTATIONS_PATH).parent.mkdir(parents=True, exist_ok=True)
    tmp = out / (ANNOTATIONS_PATH + ".tmp")
    tmp.write_bytes(raw)  # the very bytes that were parsed: a byte-identical copy
    os.replace(tmp, out / ANNOTATIONS_PATH)
    manifest_tmp = out / (MANIFEST + ".tmp")
    manifest_tmp.write_text(manifest_text(entries), encoding="utf-8")
    os.replace(manifest_tmp, out / MANIFEST)
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out, never guessed from a prefix
        prog="python -m mlpkg_harness.preprocess",
        description="Pre-process OpenImages (MLPerf layout) for RetinaNet as the reference does.",
    )
    parser.add_argument("src", type=Path, help="dataset directory (validation/data, annotations)")
    parser.add_argument("out", type=Path, help="output directory (created)")
    parser.add_argument("--count", type=int, default=None, help="only the first N images")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        print(f"preprocess: --count must be at least 1, not {args.count}.", file=sys.stderr)
        return 2
    try:
        preprocess_dataset(args.src, args.out, count=args.count, quiet=args.quiet)
    except InputError as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

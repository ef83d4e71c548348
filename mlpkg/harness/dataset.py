"""The preprocessed OpenImages dataset, as LoadGen's query sample library (QSL).

Layout (written by :mod:`.preprocess`)::

    DIR/manifest.json                      {"format": 1, "shape": [3,800,800], "dtype":
                                            "float32", "images": [{"index", "id", "file_name",
                                            "width", "height", "npy"}, ...]}
    DIR/annotations/openimages-mlperf.json the COCO annotations; sample i is its images[i]
    DIR/preprocessed/<stem>.npy            float32 [3,800,800]

:func:`open_dataset` checks everything it can before LoadGen starts and raises
:class:`.errors.BadInput` (one sentence naming the file) for a missing or unreadable
manifest or annotations file, a manifest whose ``format`` is not 1 (a preprocessing that
changes the layout must bump ``format``), a manifest that disagrees with the annotations,
and a missing or corrupt ``.npy`` (bad header, or a file shorter or longer than its header
says). A ``.npy`` whose shape differs from the model's input is *not* rejected here: its
inference fails, and the SUT answers that sample with an empty response and reports it.

Samples are held in memory between LoadGen's load and unload callbacks
(:meth:`PreprocessedDataset.load`, :meth:`PreprocessedDataset.unload`): each is read with
``np.load``, given a batch axis and kept as C-contiguous float32 ``[1, 3, 800, 800]``. The
callbacks never raise into LoadGen: a sample that cannot be read is remembered as failed and
its inference raises later (an empty response, counted as an error).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BadInput

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1  # the only manifest format this harness reads
ANNOTATIONS = "annotations/openimages-mlperf.json"
Sample = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ImageEntry:
    """One sample of the dataset (QSL index ``index``)."""

    index: int
    image_id: int
    file_name: str
    width: int
    height: int
    npy: Path
    categories: frozenset[int]  # ground-truth category ids (for the reference's acc=)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise BadInput(f"{what} {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{what} {path} cannot be read as JSON ({e}).") from None


def check_npy(path: Path) -> tuple[int, ...]:
    """The shape in ``path``'s header; BadInput unless it is a readable, complete float32
    ``.npy`` file (the data itself is not read)."""
    if not path.is_file():
        raise BadInput(f"preprocessed sample {path} does not exist.")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError) as e:
        raise BadInput(f"preprocessed sample {path} is not a valid .npy file ({e}).") from None
    if dtype != np.dtype(np.float32) or fortran:
        raise BadInput(f"preprocessed sample {path} is not C-ordered float32 ({dtype}).")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * 4
    if size != expected:
        raise BadInput(
            f"preprocessed sample {path} is corrupt: {size} bytes where its header "
            f"needs {expected}."
        )
    return tuple(int(d) for d in shape)


def _entries(root: Path, manifest: Any, annotations: Any) -> list[ImageEntry]:
    """The manifest's images, checked against the annotations' image list."""
    where = root / MANIFEST
    try:
        images = manifest["images"]
        ann_images = annotations["images"]
        cats: dict[int, set[int]] = {int(img["id"]): set() for img in ann_images}
        for ann in annotations.get("annotations", []):
            cats.setdefault(int(ann["image_id"]), set()).add(int(ann["category_id"]))
        out = []
        for i, img in enumerate(images):
            if int(img["index"]) != i or int(img["id"]) != int(ann_images[i]["id"]):
                raise BadInput(
                    f"manifest {where} does not match annotations {root / ANNOTATIONS} "
                    f"at sample {i}."
                )
            out.append(
                ImageEntry(
                    i,
                    int(img["id"]),
                    str(img["file_name"]),
                    int(img["width"]),
                    int(img["height"]),
                    root / str(img["npy"]),
                    frozenset(cats.get(int(img["id"]), ())),
                )
            )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise BadInput(f"manifest {where} is malformed ({type(e).__name__}: {e}).") from None
    if not out:
        raise BadInput(f"manifest {where} lists no images.")
    return out


class PreprocessedDataset:
    """The first ``count`` samples of a preprocessed dataset; LoadGen's QSL callbacks."""

    def __init__(
        self, root: Path, entries: list[ImageEntry], total: int, shape: tuple[int, ...]
    ) -> None:
        self.root = root
        self.entries = entries
        self.total_images = total  # in the manifest, before --count
        self.shape = shape
        self.annotations = root / ANNOTATIONS
        self._samples: dict[int, Sample | None] = {}
        self._lock = threading.Lock()
        self.loaded = 0  # samples read by the current load call (for progress)
        self.to_load = 0
        self.last_loaded = time.time()  # when LoadGen last asked for samples (reference)
        self.cancelled = threading.Event()  # set on Ctrl-C: stop reading

    @property
    def count(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> Sample:
        """Sample ``index`` from disk as contiguous float32 ``[1, *shape]``."""
        arr = np.load(self.entries[index].npy, allow_pickle=False)
        return np.ascontiguousarray(arr[np.newaxis], dtype=np.float32)

    def _read_or_none(self, index: int) -> Sample | None:
        if self.cancelled.is_set():
            return None
        try:
            sample: Sample | None = self.read(index)
        except Exception:  # reported when the sample is used
            sample = None
        with self._lock:
            self.loaded += 1
        return sample

    def load(self, indices: Sequence[int]) -> None:
        """LoadGen's load callback: read ``indices`` into memory (in parallel)."""
        todo = [int(i) for i in indices if int(i) not in self._samples]
        with self._lock:
            self.loaded, self.to_load = 0, len(todo)
        workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
        with ThreadPoolExecutor(workers) as pool:
            for i, sample in zip(todo, pool.map(self._read_or_none, todo)):
                self._samples[i] = sample
        self.last_loaded = time.time()

    def unload(self, indices: Sequence[int] | None) -> None:
        """LoadGen's unload callback: drop ``indices`` (all samples if None)."""
        if indices is None:
            self._samples.clear()
            return
        for i in indices:
            self._samples.pop(int(i), None)

    def get(self, index: int) -> Sample:
        """A loaded sample; raises RuntimeError (naming the file) if it could not be read."""
        sample = self._samples.get(index)
        if sample is None:
            if index in self._samples:
                raise RuntimeError(f"could not read {self.entries[index].npy}")
            sample = self.read(index)  # not loaded by LoadGen (warm-up): read it now
        return sample


def open_dataset(root: Path, count: int | None) -> PreprocessedDataset:
    """Open and check the dataset at ``root``, limited to the first ``count`` samples."""
    if not root.is_dir():
        raise BadInput(f"dataset directory {root} does not exist.")
    manifest = _read_json(root / MANIFEST, "dataset manifest")
    annotations = _read_json(root / ANNOTATIONS, "annotations file")
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise BadInput(f"manifest {root / MANIFEST} is not a format-1 dataset manifest.")
    if manifest["format"] != MANIFEST_FORMAT:
        raise BadInput(
            f"manifest {root / MANIFEST} has format {manifest['format']!r}, but this harness "
            f"reads format {MANIFEST_FORMAT} only (preprocess the dataset again)."
        )
    if manifest.get("dtype", "float32") != "float32":
        raise BadInput(f"manifest {root / MANIFEST} has dtype {manifest.get('dtype')}.")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("images"), list):
        raise BadInput(f"annotations file {root / ANNOTATIONS} has no image list.")
    entries = _entries(root, manifest, annotations)
    total = len(entries)
    if count is not None:
        entries = entries[:count]
    shape = tuple(int(d) for d in manifest.get("shape", (3, 800, 800)))
    for e in entries:
        check_npy(e.npy)
    return PreprocessedDataset(root, entries, total, shape)

"""Fixtures for the RetinaNet harness tests: a tiny ONNX model with the real interface, a
tiny preprocessed dataset in the contract's layout, and a runner for
``python -m mlpkg.harness`` as a real subprocess.

The model (``onnx.helper``, opset 13): input ``images`` float32 [1, 3, 800, 800]; outputs
``boxes`` [5, 4] = :data:`BASE_BOXES` + mean(images) * :data:`SHIFT` (so every image gets its
own boxes), ``scores`` [5] = :data:`SCORES` (descending; the last two below 0.05) and
``labels`` [5] int64 = :data:`LABELS`. Image ``i`` of the dataset is the constant
``(i + 1) / 10``; its annotations hold the model's boxes of labels 1 and 2 (scaled to the
image's width/height), so a correct harness scores mAP 100 % and the reference's ``acc``
(labels found in the ground truth / detections kept) is 2/3.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 8
SIZES = [
    (640, 480),
    (800, 600),
    (1024, 768),
    (500, 375),
    (320, 240),
    (1280, 720),
    (400, 400),
    (600, 800),
]
BASE_BOXES = np.array(
    [
        [50, 60, 250, 300],
        [300, 100, 500, 400],
        [100, 500, 300, 700],
        [0, 0, 10, 10],
        [5, 5, 20, 20],
    ],
    dtype=np.float32,
)
SHIFT = np.float32(100.0)
SCORES = np.array([0.9, 0.8, 0.3, 0.04, 0.01], dtype=np.float32)
LABELS = np.array([1, 2, 3, 4, 5], dtype=np.int64)


def image_value(i: int) -> float:
    return float(np.float32((i + 1) / 10))


def build_model(path: Path, *, shift: float = float(SHIFT)) -> Path:
    """Write the tiny detector (see module doc) to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(BASE_BOXES, "base"),
        numpy_helper.from_array(np.full((5, 4), shift, dtype=np.float32), "shift"),
        numpy_helper.from_array(SCORES, "scores_c"),
        numpy_helper.from_array(LABELS, "labels_c"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "shift"], ["offset"]),
        helper.make_node("Add", ["base", "offset"], ["boxes"]),
        helper.make_node("Identity", ["scores_c"], ["scores"]),
        helper.make_node("Identity", ["labels_c"], ["labels"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-retinanet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 800, 800])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [5, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [5]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [5]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_boxes(i: int) -> np.ndarray:
    """The model's boxes (800-px xyxy) for dataset image ``i``."""
    return BASE_BOXES + np.float32(image_value(i)) * SHIFT


def build_dataset(root: Path, n: int = N_IMAGES) -> Path:
    """Write a preprocessed dataset (contract layout) of ``n`` constant images."""
    (root / "preprocessed").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns, manifest_images = [], [], []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        stem = f"{i:016x}"
        images.append({"id": i + 1, "file_name": f"{stem}.jpg", "width": w, "height": h})
        np.save(
            root / "preprocessed" / f"{stem}.npy",
            np.full((3, 800, 800), image_value(i), dtype=np.float32),
        )
        manifest_images.append(
            {
                "index": i,
                "id": i + 1,
                "file_name": f"{stem}.jpg",
                "width": w,
                "height": h,
                "npy": f"preprocessed/{stem}.npy",
            }
        )
        for k in (0, 1):  # labels 1 and 2 are right; label 3 is a false positive
            x0, y0, x1, y1 = (expected_boxes(i)[k] / 800.0 * [w, h, w, h]).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(LABELS[k]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"class-{c}"} for c in range(264)]
    (root / "annotations" / "openimages-mlperf.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "format": 1,
                "preprocessing": "mlperf-retinanet-onnx-v1",
                "shape": [3, 800, 800],
                "dtype": "float32",
                "images": manifest_images,
            }
        )
    )
    return root


def variant_dataset(base: Path, root: Path) -> Path:
    """A copy of ``base`` whose .npy files are symlinks (cheap), to be modified."""
    shutil.copytree(base, root, ignore=shutil.ignore_patterns("*.npy"))
    for f in (base / "preprocessed").iterdir():
        (root / "preprocessed" / f.name).symlink_to(f)
    return root


@dataclass
class HarnessResult:
    """One harness subprocess: exit code, output, and the output directory."""

    code: int
    out: str
    err: str
    output: Path

    def json(self) -> Any:
        return json.loads((self.output / "harness.json").read_text())

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class Harness:
    """Runs ``python -m mlpkg.harness`` (cwd: the repository) on the fixture model/data."""

    def __init__(self, model: Path, dataset: Path, tmp: Path) -> None:
        self.model, self.dataset, self.tmp = model, dataset, tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.n = 0

    def argv(
        self,
        *args: str,
        output: Path | None = None,
        model: Path | None = None,
        dataset: Path | None = None,
    ) -> tuple[list[str], Path]:
        self.n += 1
        out = output or self.tmp / f"out-{self.n}"
        argv = [
            sys.executable,
            "-m",
            "mlpkg.harness",
            "--model",
            str(model or self.model),
            "--dataset",
            str(dataset or self.dataset),
            "--output",
            str(out),
            *args,
        ]
        return argv, out

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> HarnessResult:
        argv, out = self.argv(*args, **kw)
        r = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return HarnessResult(r.returncode, r.stdout, r.stderr, out)

    def popen(
        self, *args: str, popen: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[subprocess.Popen[str], Path]:
        """Start the harness; ``popen`` overrides :class:`subprocess.Popen` arguments
        (e.g. ``stdout``, ``preexec_fn``)."""
        argv, out = self.argv(*args, **kw)
        options: dict[str, Any] = {
            "cwd": REPO_ROOT,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "stdin": subprocess.DEVNULL,
            "text": True,
            **(popen or {}),
        }
        proc = subprocess.Popen(argv, **options)
        self.procs.append(proc)
        return proc, out

    def interrupt_when_running(
        self,
        proc: subprocess.Popen[str],
        out: Path,
        after: float = 0.5,
        timeout: float = 30,
        sig: int = signal.SIGINT,
    ) -> HarnessResult:
        """Send ``sig`` (SIGINT) once LoadGen has started (its detail log exists) plus
        ``after`` s."""
        deadline = time.monotonic() + timeout
        while not (out / "mlperf_log_detail.txt").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                o, e = proc.communicate()
                pytest.fail(f"harness ended before LoadGen started: {proc.returncode}\n{o}\n{e}")
            time.sleep(0.05)
        time.sleep(after)
        proc.send_signal(sig)
        o, e = proc.communicate(timeout=timeout)
        return HarnessResult(proc.returncode, o, e, out)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(Exception):
                p.communicate(timeout=10)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny detector (see module doc), built once per session."""
    return build_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 8-image preprocessed dataset (see module doc), written once per session."""
    return build_dataset(tmp_path_factory.mktemp("dataset") / "prep")


@pytest.fixture
def harness(tiny_model: Path, tiny_dataset: Path, tmp_path: Path) -> Iterator[Harness]:
    """Runs the harness on the tiny model and dataset (see :class:`Harness`)."""
    h = Harness(tiny_model, tiny_dataset, tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def make_variant(tiny_dataset: Path, tmp_path: Path) -> Any:
    """``make_variant(name) -> Path``: a modifiable copy of the tiny dataset (symlinked
    .npy files)."""
    return lambda name: variant_dataset(tiny_dataset, tmp_path / name)


@pytest.fixture
def fixture_data() -> Any:
    """Constants and builders of this conftest, for tests (importlib mode cannot import it)."""
    return {
        "expected_boxes": expected_boxes,
        "image_value": image_value,
        "LABELS": LABELS,
        "SCORES": SCORES,
        "N_IMAGES": N_IMAGES,
        "SIZES": SIZES,
        "build_model": build_model,
        "env": dict(os.environ),
    }

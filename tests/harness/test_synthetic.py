"""Synthetic OpenImages set and synthetic RetinaNet model (issue 6).

* the generated dataset has the real layout and annotation structure, exact boxes, varied
  sizes, and is bit-identical when rebuilt (also through ``python -m mlpkg_harness.*`` from a
  copy of the package installed as the store installs it);
* the ONNX model has the real interface, identical bytes on rebuild, and detects the
  synthetic objects: the MLPerf accuracy procedure (COCO detections built as the reference
  ``accuracy-openimages.py`` does, COCOeval bbox) gives mAP (stats[0]) >= 0.90.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpkg.harness import preprocess, synth_dataset, synth_model, synth_spec

REPO = Path(__file__).resolve().parents[2]
SIZE = synth_spec.INPUT_SIZE


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default synthetic dataset (64 images)."""
    out = tmp_path_factory.mktemp("synth64")
    synth_dataset.write_dataset(out)
    return out


@pytest.fixture(scope="module")
def annotations(synth64: Path) -> dict[str, Any]:
    """The parsed annotations of ``synth64``."""
    doc: dict[str, Any] = json.loads((synth64 / synth_dataset.ANNOTATIONS_PATH).read_text())
    return doc


@pytest.fixture(scope="module")
def preprocessed64(synth64: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``synth64`` preprocessed (about 490 MB; removed after the module)."""
    out = tmp_path_factory.mktemp("pre64")
    assert preprocess.main([str(synth64), str(out), "--quiet"]) == 0
    yield out
    shutil.rmtree(out)


def test_colour_table_is_separable() -> None:
    """No pixel of another class (jittered colour), of any background, or of any blend of
    another class colour with a background (edge pixels) is within the tolerance of a class
    colour; backgrounds keep twice that distance."""
    ids = synth_spec.colour_category_ids()
    assert len(ids) == len(set(ids)) >= 10 and all(0 <= i < 264 for i in ids)
    colours = np.array([rgb for _, rgb in synth_spec.COLOUR_CLASSES], float) / 255
    reach = synth_spec.COLOUR_TOLERANCE + np.sqrt(3) * synth_spec.COLOUR_JITTER / 255
    t = synth_spec.BACKGROUND_TINT
    levels = np.arange(synth_spec.BACKGROUND_MIN, synth_spec.BACKGROUND_MAX + 1, 5)
    tints = np.array(np.meshgrid([-t, t], [-t, t], [-t, t])).reshape(3, -1).T
    backgrounds = (levels[:, None, None] + tints[None]).reshape(-1, 3) / 255
    blend = np.linspace(0, 1, 41)[:, None, None]
    for k, c in enumerate(colours):
        others = np.delete(colours, k, axis=0)
        assert np.linalg.norm(others - c, axis=1).min() > reach
        assert np.linalg.norm(backgrounds - c, axis=1).min() > 2 * reach
        edges = (1 - blend) * others[None] + blend * backgrounds[:, None, None, :].reshape(
            -1, 1, 1, 3
        )
        assert np.linalg.norm(edges - c, axis=-1).min() > reach


def test_annotation_structure(annotations: dict[str, Any]) -> None:
    cats = annotations["categories"]
    assert len(cats) == 264
    assert [c["id"] for c in cats] == list(range(264))
    assert cats[0]["name"] == "Airplane" and cats[-1]["name"] == "Zucchini"
    assert len({c["name"] for c in cats}) == 264
    images = annotations["images"]
    assert len(images) == synth_spec.DEFAULT_IMAGES >= 50
    assert [i["id"] for i in images] == list(range(1, len(images) + 1))
    names = [i["file_name"] for i in images]
    assert names == sorted(names)
    assert all(re.fullmatch(r"[0-9a-f]{16}\.jpg", n) for n in names)
    widths = {i["width"] for i in images}
    heights = {i["height"] for i in images}
    assert len(widths) > 20 and len(heights) > 20
    assert min(widths | heights) >= 320 and max(widths | heights) <= 1024
    assert any(i["width"] > i["height"] for i in images)
    assert any(i["width"] < i["height"] for i in images)
    assert len(annotations["annotations"]) >= 300
    assert [a["id"] for a in annotations["annotations"]] == list(
        range(1, len(annotations["annotations"]) + 1)
    )


def test_objects_are_exact_separate_and_large(annotations: dict[str, Any]) -> None:
    colour_ids = set(synth_spec.colour_category_ids())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in annotations["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    assert set(by_image) == {i["id"] for i in annotations["images"]}
    for image in annotations["images"]:
        objs = by_image[image["id"]]
        cats = [a["category_id"] for a in objs]
        assert len(cats) == len(set(cats)) and set(cats) <= colour_ids
        for a in objs:
            x, y, w, h = a["bbox"]
            assert a["area"] == w * h and a["iscrowd"] == 0
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
            assert w >= max(40, 0.08 * image["width"]) and h >= max(40, 0.08 * image["height"])
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay


def test_boxes_cover_the_drawn_pixels(synth64: Path, annotations: dict[str, Any]) -> None:
    """After JPEG decoding, every bbox is filled with its colour and its 1-px ring is not."""
    import cv2

    colours = {cat: np.array(rgb, float) for cat, rgb in synth_spec.COLOUR_CLASSES}
    tol = 255 * synth_spec.COLOUR_TOLERANCE
    for image in annotations["images"][:8]:
        rgb = cv2.imread(str(synth64 / synth_dataset.IMAGES_DIR / image["file_name"]))[:, :, ::-1]
        assert rgb.shape == (image["height"], image["width"], 3)
        for a in (a for a in annotations["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = (int(v) for v in a["bbox"])
            dist = np.linalg.norm(rgb.astype(float) - colours[a["category_id"]], axis=2)
            assert (dist[y : y + h, x : x + w] < tol).all()
            ring = np.concatenate(
                [
                    dist[y - 1, x : x + w],
                    dist[y + h, x : x + w],
                    dist[y : y + h, x - 1],
                    dist[y : y + h, x + w],
                ]
            )
            assert (ring > tol).all()


def test_dataset_rebuild_is_bit_identical(synth64: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth_dataset.write_dataset(again)
    assert tree_digest(again) == tree_digest(synth64)
    assert len(tree_digest(synth64)) == synth_spec.DEFAULT_IMAGES + 1


def test_store_style_entry_points(tmp_path: Path) -> None:
    """``python -m mlpkg_harness.<module>`` from a copy of the package, twice: same bytes."""
    pkg = tmp_path / "site" / "mlpkg_harness"
    shutil.copytree(REPO / "mlpkg" / "harness", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "SOURCE_DATE_EPOCH": "0"}
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        for args in (
            ["synth_dataset", str(out / "raw"), "--images", "3", "--quiet"],
            ["synth_model", str(out / "model" / "model.onnx")],
            ["preprocess", str(out / "raw"), str(out / "pre"), "--quiet"],
        ):
            subprocess.run(
                [sys.executable, "-m", f"mlpkg_harness.{args[0]}", *args[1:]],
                cwd=tmp_path,
                env=env,
                check=True,
            )
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert len(digests[0]) == 3 + 1 + 1 + 3 + 2  # jpgs, annotations, model, npys, copy+manifest
    model = (tmp_path / "a" / "model" / "model.onnx").read_bytes()
    assert model == synth_model.model_bytes() == synth_model.model_bytes()


def test_model_interface() -> None:
    import onnx

    model = onnx.load_from_string(synth_model.model_bytes())
    assert model.ir_version == synth_model.IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert model.producer_name == synth_model.PRODUCER_NAME
    [inp] = model.graph.input
    assert inp.name == "images"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, SIZE, SIZE]
    outs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outs == {
        "boxes": onnx.TensorProto.FLOAT,
        "scores": onnx.TensorProto.FLOAT,
        "labels": onnx.TensorProto.INT64,
    }


def _session() -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(synth_model.model_bytes(), opts, providers=["CPUExecutionProvider"])


def test_model_finds_nothing_on_a_plain_background() -> None:
    sess = _session()
    grey = np.full((1, 3, SIZE, SIZE), 0.5, dtype=np.float32)
    grey[:, 0] += np.linspace(-0.2, 0.2, SIZE, dtype=np.float32)  # a reddish-to-cyan drift
    boxes, scores, labels = sess.run(["boxes", "scores", "labels"], {"images": grey})
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    assert labels.dtype == np.int64


def reference_detections(
    sess: Any, pre: Path, gt_images: list[dict[str, Any]]
) -> tuple[list[list[float]], list[int]]:
    """Run the model over every preprocessed sample and build COCO detections the way the
    MLPerf reference does: post-processing to the 7-float records (normalised by 800,
    float32, stop at score < 0.05), then accuracy-openimages.py's scaling by the image's
    width/height into ``[image_id, x, y, w, h, score, label]``."""
    manifest = json.loads((pre / preprocess.MANIFEST).read_text())
    dets: list[list[float]] = []
    seen: list[int] = []
    for entry in manifest["images"]:
        qsl_idx = entry["index"]
        sample = np.load(pre / entry["npy"])[np.newaxis]
        boxes, scores, labels = sess.run(["boxes", "scores", "labels"], {"images": sample})
        assert boxes.shape == (len(scores), 4) and labels.dtype == np.int64
        assert (np.diff(scores) <= 0).all() and ((scores > 0.05) & (scores <= 1)).all()
        seen.append(gt_images[qsl_idx]["id"])
        for box, score, label in zip(boxes, scores, labels, strict=True):
            if score < 0.05:
                break
            rec = np.array(
                [qsl_idx, box[1] / SIZE, box[0] / SIZE, box[3] / SIZE, box[2] / SIZE, score, label],
                dtype=np.float32,
            )
            image = gt_images[int(rec[0])]
            ymin, xmin = rec[1] * image["height"], rec[2] * image["width"]
            ymax, xmax = rec[3] * image["height"], rec[4] * image["width"]
            dets.append(
                [image["id"], xmin, ymin, xmax - xmin, ymax - ymin, float(rec[5]), int(rec[6])]
            )
    return dets, seen


def test_model_map_on_the_synthetic_set(preprocessed64: Path, capsys: Any) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = preprocessed64 / preprocess.ANNOTATIONS_PATH
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    dets, seen = reference_detections(_session(), preprocessed64, gt.dataset["images"])
    assert len(seen) == synth_spec.DEFAULT_IMAGES
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(np.array(dets))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = seen
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    with capsys.disabled():
        print(f"\nsynthetic model on synthetic OpenImages (64 images): mAP={ev.stats[0]:.4f}")
    assert len(dets) == len(gt.dataset["annotations"])
    assert ev.stats[0] >= 0.90

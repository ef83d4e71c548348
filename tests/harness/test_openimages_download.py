"""The OpenImages MLPerf download procedure, against OpenImages-shaped files on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[2]
DESCRIPTIONS = b"/m/01,Apple\n/m/02,Banana\n/m/03,Cherry\n"
# Three images have boxes; image c has only a class the subset does not want.
BOXES = (
    b"ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,"
    b"IsGroupOf,IsDepiction,IsInside\n"
    b"bbb,xclick,/m/02,1,0.5,1.0,0.0,0.5,0,0,1,0,0\n"
    b"aaa,xclick,/m/01,1,0.1,0.6,0.2,0.7,0,0,0,0,0\n"
    b"ccc,xclick,/m/03,1,0.0,1.0,0.0,1.0,0,0,0,0,0\n"
    b"aaa,xclick,/m/02,1,0.0,0.5,0.5,1.0,0,0,0,0,0\n"
)


def _jpeg(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(data)


def _run(out: Path, server, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlpkg.harness.openimages_download", str(out), "--quiet",
         "--annotations-url", server.url("/v5"), "--images-url", server.url("/img"), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def served(http_server, tmp_path):
    http_server.route("/v5/class-descriptions-boxable.csv", body=DESCRIPTIONS)
    http_server.route("/v5/validation-annotations-bbox.csv", body=BOXES)
    http_server.route("/img/aaa.jpg", body=_jpeg(200, 100))
    http_server.route("/img/bbb.jpg", body=_jpeg(64, 48))
    classes = tmp_path / "classes.txt"
    classes.write_text("Apple\nBanana\n")
    return http_server, classes


def test_assembles_the_coco_layout(served, tmp_path):
    server, classes = served
    out = tmp_path / "out"
    done = _run(out, server, "--classes", str(classes))
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "annotations" / "openimages-mlperf.json").read_text())
    assert doc["categories"] == [{"id": 0, "name": "Apple"}, {"id": 1, "name": "Banana"}]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in doc["images"]] == [
        (1, "aaa.jpg", 200, 100), (2, "bbb.jpg", 64, 48)]  # fmt: skip
    by_image = sorted((a["image_id"], a["category_id"], a["bbox"], a["iscrowd"])
                      for a in doc["annotations"])  # fmt: skip
    assert by_image[0] == (1, 0, pytest.approx([20.0, 20.0, 100.0, 50.0]), 0)
    assert by_image[1] == (1, 1, pytest.approx([0.0, 50.0, 100.0, 50.0]), 0)
    assert by_image[2] == (2, 1, pytest.approx([32.0, 0.0, 32.0, 24.0]), 1)
    assert sorted(p.name for p in (out / "validation" / "data").iterdir()) == ["aaa.jpg", "bbb.jpg"]
    assert not server.requests_for("/img/ccc.jpg")


def test_max_images_is_a_seeded_choice(served, tmp_path):
    server, classes = served
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert _run(out, server, "--classes", str(classes), "--max-images", "1").returncode == 0
    a = (first / "annotations" / "openimages-mlperf.json").read_bytes()
    assert a == (second / "annotations" / "openimages-mlperf.json").read_bytes()
    assert len(json.loads(a)["images"]) == 1


def test_unreachable_source_names_the_url(served, tmp_path):
    server, classes = served
    server.route("/img/bbb.jpg", status=404)
    done = _run(tmp_path / "out", server, "--classes", str(classes))
    assert done.returncode == 1
    assert "/img/bbb.jpg" in done.stderr and "cannot download" in done.stderr


def test_unknown_class_is_named(served, tmp_path):
    server, _ = served
    classes = tmp_path / "bad.txt"
    classes.write_text("Apple\nDurian\n")
    done = _run(tmp_path / "out", server, "--classes", str(classes))
    assert done.returncode == 1 and "Durian" in done.stderr

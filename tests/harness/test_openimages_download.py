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


def test_box_sizes_use_the_reference_arithmetic(served, tmp_path):
    """The reference computes (XMax - XMin) * width, not XMax * width - XMin * width: the
    two differ in the last bit (here (0.7 - 0.2) * 100 = 49.99999999999999)."""
    server, classes = served
    out = tmp_path / "out"
    assert _run(out, server, "--classes", str(classes)).returncode == 0
    doc = json.loads((out / "annotations" / "openimages-mlperf.json").read_text())
    first = doc["annotations"][1]  # the boxes file's order: bbb, then aaa/Apple
    assert (first["image_id"], first["category_id"]) == (1, 0)
    w, h = 200, 100
    bbox = [0.1 * w, 0.2 * h, (0.6 - 0.1) * w, (0.7 - 0.2) * h]
    assert first["bbox"] == bbox and bbox[3] != 0.7 * h - 0.2 * h
    assert first["area"] == bbox[2] * bbox[3]
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3]


def test_images_download_in_parallel_with_a_deterministic_result(tmp_path, monkeypatch, capsys):
    """Ten downloads at a time; the files and the annotations do not depend on the order in
    which they finish, and a failure names the first failing URL in ImageID order."""
    import random
    import threading
    import time

    from mlpkg.harness import openimages_download as od

    ids = [f"img{i:02d}" for i in range(25)]
    boxes = (
        BOXES.split(b"\n")[0]
        + b"\n"
        + b"".join(
            f"{i},xclick,/m/01,1,0.1,0.6,0.2,0.7,0,0,0,0,0\n".encode() for i in reversed(ids)
        )
    )
    jpeg = _jpeg(32, 16)
    active, peak, turn = [0], [0], threading.Condition()
    failing: set[str] = set()

    def fetch(url: str, timeout: float = 60.0) -> bytes:
        if url.endswith("class-descriptions-boxable.csv"):
            return DESCRIPTIONS
        if url.endswith("validation-annotations-bbox.csv"):
            return boxes
        with turn:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            turn.notify_all()
            turn.wait_for(lambda: peak[0] >= od.WORKERS, timeout=0.5)  # all ten at once
        time.sleep(random.uniform(0.0, 0.02))  # then finish in any order
        with turn:
            active[0] -= 1
        if url in failing:
            raise od.DownloadError(f"cannot download {url}: HTTP Error 404: Not Found")
        return jpeg

    monkeypatch.setattr(od, "fetch", fetch)
    classes = tmp_path / "classes.txt"
    classes.write_text("Apple\n")
    docs = []
    for name in ("a", "b"):
        out, peak[0] = tmp_path / name, 0
        assert od.main([str(out), "--quiet", "--classes", str(classes)]) == 0
        files = sorted(p.name for p in (out / "validation" / "data").iterdir())
        assert files == [f"{i}.jpg" for i in ids]
        docs.append((out / "annotations" / "openimages-mlperf.json").read_bytes())
    assert peak[0] == od.WORKERS == 10
    assert docs[0] == docs[1]
    doc = json.loads(docs[0])
    assert [i["file_name"] for i in doc["images"]] == [f"{i}.jpg" for i in ids]
    assert [a["image_id"] for a in doc["annotations"]] == list(range(25, 0, -1))
    failing.update({"http://mirror/img/img07.jpg", "http://mirror/img/img03.jpg"})
    argv = [str(tmp_path / "c"), "--quiet", "--classes", str(classes)]
    capsys.readouterr()
    assert od.main([*argv, "--images-url", "http://mirror/img"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "openimages_download: cannot download http://mirror/img/img03.jpg: "
        "HTTP Error 404: Not Found\n"
    )

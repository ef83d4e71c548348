"""Reference RetinaNet pre-processing (``mlpkg.harness.preprocess``, issue 6).

Checks the output against a plain re-implementation of the MLPerf reference steps, the
manifest and annotations copy against the contract, determinism, progress output, and that
bad input exits with 2 and one sentence naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpkg.harness import preprocess, synth_dataset


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-image synthetic dataset (raw layout)."""
    out = tmp_path_factory.mktemp("raw3")
    synth_dataset.write_dataset(out, 3)
    return out


def copy_raw(src: Path, dst: Path) -> Path:
    """Copy a raw dataset so that a test may damage it."""
    for p in src.rglob("*"):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())
    return dst


def plain_reference(jpg: Path) -> np.ndarray[Any, Any]:
    """The reference steps written out: imread (BGR) -> float32 -> RGB -> resize 800x800
    INTER_LINEAR -> / 255 -> CHW."""
    import cv2

    img = cv2.imread(str(jpg)).astype(np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (800, 800), interpolation=cv2.INTER_LINEAR)
    img = img / np.float32(255.0)
    return img.transpose(2, 0, 1)


def test_output_matches_reference_steps(small_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    assert preprocess.main([str(small_raw), str(out), "--quiet"]) == 0
    ann = json.loads((small_raw / preprocess.ANNOTATIONS_PATH).read_text())
    first = ann["images"][0]
    stem = first["file_name"][: -len(".jpg")]
    got = np.load(out / "preprocessed" / f"{stem}.npy")
    want = plain_reference(small_raw / preprocess.IMAGES_DIR / first["file_name"])
    assert got.dtype == np.float32 and got.shape == (3, 800, 800) and got.flags.c_contiguous
    assert np.array_equal(got, want)
    assert got.min() >= 0.0 and got.max() <= 1.0
    # RGB order: channel 0 is red, i.e. the last channel of OpenCV's BGR
    assert not np.array_equal(got[0], got[2])


def test_manifest_and_annotations_copy(small_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    assert preprocess.main([str(small_raw), str(out), "--quiet"]) == 0
    src_ann = (small_raw / preprocess.ANNOTATIONS_PATH).read_bytes()
    assert (out / preprocess.ANNOTATIONS_PATH).read_bytes() == src_ann
    images = json.loads(src_ann)["images"]
    expected = {
        "format": 1,
        "preprocessing": "mlperf-retinanet-onnx-v1",
        "shape": [3, 800, 800],
        "dtype": "float32",
        "images": [
            {
                "index": i,
                "id": img["id"],
                "file_name": img["file_name"],
                "width": img["width"],
                "height": img["height"],
                "npy": f"preprocessed/{img['file_name'][:-4]}.npy",
            }
            for i, img in enumerate(images)
        ],
    }
    text = (out / "manifest.json").read_text()
    assert json.loads(text) == expected
    assert text == json.dumps(expected, sort_keys=True, indent=2) + "\n"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        ["manifest.json", preprocess.ANNOTATIONS_PATH] + [e["npy"] for e in expected["images"]]
    )


def test_count_takes_a_prefix(small_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    assert preprocess.main([str(small_raw), str(out), "--count", "2", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["index"] for e in manifest["images"]] == [0, 1]
    assert len(list((out / "preprocessed").iterdir())) == 2


def test_deterministic_and_progress(
    small_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digests = []
    for name, extra in (("a", []), ("b", ["--quiet"])):
        out = tmp_path / name
        assert preprocess.main([str(small_raw), str(out), *extra]) == 0
        digests.append(
            {
                p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in out.rglob("*")
                if p.is_file()
            }
        )
        err = capsys.readouterr().err
        assert ("3/3 images" in err) == (name == "a")
    assert digests[0] == digests[1]


def run_bad(src: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run preprocess expecting exit 2 and one sentence on stderr; return stderr."""
    assert preprocess.main([str(src), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(".")
    return err


def test_missing_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    err = run_bad(src, tmp_path / "out", capsys)
    assert str(src / preprocess.ANNOTATIONS_PATH) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_malformed_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    dup = {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}
    for body in (
        "{not json",
        '{"images": [{"id": 1}]}',
        "[]",
        json.dumps({"images": [{**dup, "width": 10.5}]}),
        json.dumps({"images": [dup, {**dup, "id": 2}]}),
    ):
        (src / preprocess.ANNOTATIONS_PATH).write_text(body)
        err = run_bad(src, tmp_path / "out", capsys)
        assert str(src / preprocess.ANNOTATIONS_PATH) in err


@pytest.mark.parametrize("damage", ["missing", "corrupt", "empty"])
def test_bad_image(
    damage: str, small_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = copy_raw(small_raw, tmp_path / "src")
    name = json.loads((src / preprocess.ANNOTATIONS_PATH).read_text())["images"][1]["file_name"]
    jpg = src / preprocess.IMAGES_DIR / name
    if damage == "missing":
        jpg.unlink()
    elif damage == "corrupt":
        jpg.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    else:
        jpg.write_bytes(b"")
    out = tmp_path / "out"
    err = run_bad(src, out, capsys)
    assert str(jpg) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.rglob("*.tmp")]


def test_whole_float_sizes_are_accepted(small_raw: Path, tmp_path: Path) -> None:
    """A size written as 1024.0 is read as 1024 (the manifest always holds integers)."""
    src = copy_raw(small_raw, tmp_path / "src")
    ann_path = src / preprocess.ANNOTATIONS_PATH
    doc = json.loads(ann_path.read_text())
    doc["images"] = [{**img, "width": float(img["width"])} for img in doc["images"]]
    ann_path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert preprocess.main([str(src), str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [type(e["width"]) for e in manifest["images"]] == [int] * 3
    assert (out / preprocess.ANNOTATIONS_PATH).read_bytes() == ann_path.read_bytes()

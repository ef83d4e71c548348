"""The accuracy tool (mlpkg/harness/accuracy.py) on hand-made LoadGen accuracy logs over the
tiny dataset's annotations (see conftest.py): the reference's rules (first entry per
``qsl_idx`` wins, short entries count as images without detections, the image is found by
list position), the command line, and its failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpkg.harness.accuracy import NoDetections, evaluate
from mlpkg.harness.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parents[2]


def pack(idx: int, rows: list[list[float]]) -> str:
    return np.array(rows, np.float32).reshape(-1).tobytes().hex().upper()


def truth_rows(ds: Path, idx: int) -> list[list[float]]:
    """The ground truth of sample ``idx`` as detections (normalised), score 0.9."""
    ann = json.loads((ds / "annotations" / "openimages-mlperf.json").read_text())
    img = ann["images"][idx]
    w, h = img["width"], img["height"]
    return [
        [
            idx,
            a["bbox"][1] / h,
            a["bbox"][0] / w,
            (a["bbox"][1] + a["bbox"][3]) / h,
            (a["bbox"][0] + a["bbox"][2]) / w,
            0.9,
            a["category_id"],
        ]
        for a in ann["annotations"]
        if a["image_id"] == img["id"]
    ]


def write_log(path: Path, entries: list[tuple[int, str]]) -> Path:
    path.write_text(
        json.dumps([{"seq_id": s, "qsl_idx": i, "data": d} for s, (i, d) in enumerate(entries)])
    )
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "DATASET_ANNOTATIONS_FILE_PATH"}
    return subprocess.run(
        [sys.executable, "-m", "mlpkg.harness.accuracy", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**full_env, **(env or {})},
    )


def test_perfect_log_scores_100_on_the_command_line(tiny_dataset: Path, tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "acc.json", [(i, pack(i, truth_rows(tiny_dataset, i))) for i in range(8)]
    )
    out = tmp_path / "results.json"
    r = cli(
        "--mlperf-accuracy-file",
        str(log),
        "--openimages-dir",
        str(tiny_dataset),
        "--output-file",
        str(out),
        "--verbose",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "mAP=100.000%" in lines
    assert lines.index("mAP=100.000%") > max(
        i for i, ln in enumerate(lines) if "Average Precision" in ln
    )
    assert "found 8 images" in lines and "ignored 0 dupes" in lines
    dets = json.loads(out.read_text())
    assert len(dets) == 16
    assert set(dets[0]) == {"image_id", "image_loc", "category_id", "bbox", "score"}
    assert dets[0]["image_loc"].endswith(os.path.join("validation/data", "0000000000000000.jpg"))


def test_first_entry_per_sample_wins(tiny_dataset: Path, tmp_path: Path, capsys: Any) -> None:
    perfect = [(i, pack(i, truth_rows(tiny_dataset, i))) for i in range(8)]
    log = write_log(tmp_path / "a.json", [(0, ""), *perfect])  # sample 0 first: no detection
    worse = evaluate(log, tiny_dataset, chatter=False)
    assert worse.images == 8 and worse.no_results == 1 and worse.entries == 9
    assert worse.map < 1.0
    log = write_log(tmp_path / "b.json", [*perfect, (0, "")])  # the later empty one is ignored
    assert evaluate(log, tiny_dataset, chatter=False).map == 1.0
    table = capsys.readouterr().out.splitlines()
    assert len([ln for ln in table if ln.lstrip().startswith("Average")]) == 24


def test_images_without_an_entry_are_not_evaluated(tiny_dataset: Path, tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "a.json", [(i, pack(i, truth_rows(tiny_dataset, i))) for i in (1, 4)]
    )
    result = evaluate(log, tiny_dataset, chatter=False)
    assert result.images == 2 and result.map == 1.0 and result.line == "mAP=100.000%"


def test_payload_index_mismatch_is_reported(
    tiny_dataset: Path, tmp_path: Path, capsys: Any
) -> None:
    rows = truth_rows(tiny_dataset, 2)
    for r in rows:
        r[0] = 7
    log = write_log(tmp_path / "a.json", [(2, pack(2, rows))])
    evaluate(log, tiny_dataset, chatter=False)
    assert "ERROR: loadgen(2) and payload(7) disagree on image_idx" in capsys.readouterr().out


def test_scaling_uses_the_reference_arithmetic(tiny_dataset: Path, tmp_path: Path) -> None:
    """Coordinates as the reference computes them: a float32 scalar times a Python int."""
    rows = [[3, 0.123456789, 0.2345678, 0.7654321, 0.87654321, 0.5, 1]]
    log = write_log(tmp_path / "a.json", [(3, pack(3, rows))])
    out = tmp_path / "dets.json"
    evaluate(log, tiny_dataset, out, chatter=False)
    det = json.loads(out.read_text())[0]
    ymin, xmin, ymax, xmax = np.array(rows[0][1:5], np.float32)
    w, h = 500, 375  # image 3 of the fixture
    assert det["bbox"] == [
        float(xmin * w),
        float(ymin * h),
        float(xmax * w - xmin * w),
        float(ymax * h - ymin * h),
    ]
    assert det["score"] == float(np.float32(0.5)) and det["category_id"] == 1


def test_no_detection_at_all_fails_without_a_map_line(tiny_dataset: Path, tmp_path: Path) -> None:
    log = write_log(tmp_path / "a.json", [(i, "") for i in range(8)])
    with pytest.raises(NoDetections):
        evaluate(log, tiny_dataset, chatter=False)
    r = cli("--mlperf-accuracy-file", str(log), "--openimages-dir", str(tiny_dataset))
    assert r.returncode == 1
    assert "mAP=" not in r.stdout and "no detection" in r.stderr


def test_missing_inputs_exit_2(tiny_dataset: Path, tmp_path: Path) -> None:
    log = write_log(tmp_path / "a.json", [(0, pack(0, truth_rows(tiny_dataset, 0)))])
    r = cli("--mlperf-accuracy-file", str(log), "--openimages-dir", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"error: annotations file {tmp_path / 'none' / 'annotations/openimages-mlperf.json'} "
        "does not exist."
    ]
    missing = tmp_path / "missing.json"
    r = cli("--mlperf-accuracy-file", str(missing), "--openimages-dir", str(tiny_dataset))
    assert r.returncode == 2 and str(missing) in r.stderr
    bad = write_log(tmp_path / "bad.json", [(42, "")])
    with pytest.raises(BadInput, match="sample 42"):
        evaluate(bad, tiny_dataset, chatter=False)


def test_annotations_override_from_the_environment(tiny_dataset: Path, tmp_path: Path) -> None:
    """DATASET_ANNOTATIONS_FILE_PATH replaces DIR/annotations/... (as in the reference)."""
    log = write_log(tmp_path / "a.json", [(0, pack(0, truth_rows(tiny_dataset, 0)))])
    ann = tiny_dataset / "annotations" / "openimages-mlperf.json"
    r = cli(
        "--mlperf-accuracy-file",
        str(log),
        "--openimages-dir",
        str(tmp_path),
        env={"DATASET_ANNOTATIONS_FILE_PATH": str(ann)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "mAP=100.000%"

"""The harness's command line (mlpkg/harness/main.py ``parse_args``): no prefix matching
(``--qp`` is not ``--qps``), and CM's ``--mode accuracy|performance`` beside ``--accuracy``."""

from __future__ import annotations

import pytest

from mlpkg.harness import main as harness_main

BASE = ["--model", "m.onnx", "--dataset", "d"]


def parse(*args: str) -> object:
    return harness_main.parse_args([*BASE, *args])


@pytest.mark.parametrize("prefix", [["--qp", "5"], ["--acc"], ["--model-n", "x"], ["--thr", "2"]])
def test_a_prefix_of_an_option_is_refused(
    prefix: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*prefix)
    assert e.value.code == 2
    assert f"unrecognized arguments: {prefix[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "accuracy"),
    [
        ([], False),
        (["--accuracy"], True),
        (["--mode", "accuracy"], True),
        (["--mode=accuracy"], True),
        (["--mode", "performance"], False),
        (["--mode", "accuracy", "--accuracy"], True),
    ],
)
def test_mode_as_cm_spells_it(args: list[str], accuracy: bool) -> None:
    ns = parse(*args)
    assert ns.accuracy is accuracy  # type: ignore[attr-defined]
    assert ns.mode == ("accuracy" if accuracy else "performance")  # type: ignore[attr-defined]


def test_contradicting_modes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("--accuracy", "--mode", "performance")
    assert e.value.code == 2
    assert "--accuracy contradicts --mode performance" in capsys.readouterr().err


def test_an_unknown_mode_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("--mode", "AccuracyOnly-ish")
    assert e.value.code == 2
    assert "--mode" in capsys.readouterr().err


def test_help_says_both_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        harness_main.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--mode {accuracy,performance}" in out
    assert "same as --mode accuracy" in out

"""LoadGen TestSettings of the RetinaNet harness (mlpkg/harness/settings.py).

The configuration-file decision is a pure function of the LoadGen version (tested for 4.0,
4.1.x and 6.x without installing them); the real LoadGen (6.0.17 here) is then driven in a
fresh subprocess per check, because LoadGen applies its built-in mlperf.conf only on the
first ``FromConfig`` call of a process. The effective values are read from the harness's own
record (``build_settings``'s second result, the ``settings`` of harness.json).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlpkg.harness import settings as hs

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_CONF = Path("/tmp/lgsd/mlcommons_loadgen-4.1.30/mlperf.conf")

_SCRIPT = """
import json, sys
from pathlib import Path
import mlperf_loadgen as lg
from mlpkg.harness import settings as hs
a = json.loads(sys.argv[1])
opts = hs.Options(a["scenario"], a.get("accuracy", False), a.get("count"), a.get("time"),
                  a.get("qps"), a.get("max_latency"), a.get("samples_per_query"),
                  a.get("performance_sample_count"), a.get("qsl_samples"))
steps = hs.conf_plan(a["version"], a.get("mlperf_conf") and Path(a["mlperf_conf"]),
                     a.get("user_conf") and Path(a["user_conf"]))
est = hs.Estimates(a.get("est_qps"), a.get("est_latency"), a.get("workers", 1))
_, record = hs.build_settings(lg, opts, "retinanet", steps, est)
print(json.dumps(record))
"""


def record(**kw: Any) -> dict[str, Any]:
    """The harness's settings record, built in a fresh process with the real LoadGen."""
    kw.setdefault("version", hs.loadgen_version())
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(kw)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


# -- the configuration-file decision ---------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "builtin"),
    [
        ("4.0", False),
        ("4.0.1", False),
        ("4.1.6", False),
        ("4.1.7", True),
        ("4.1.30", True),
        ("5.0.25", True),
        ("6.0.17", True),
        ("unknown", False),
        ("", False),
    ],
)
def test_builtin_conf_since_4_1_7(version: str, builtin: bool) -> None:
    assert hs.has_builtin_conf(version) is builtin


def test_old_loadgen_loads_the_bundled_mlperf_conf_then_user_conf(tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    assert hs.conf_plan("4.0", None, None) == [hs.ConfStep("mlperf", hs.BUNDLED_CONF)]
    assert hs.conf_plan("4.0", None, user) == [
        hs.ConfStep("mlperf", hs.BUNDLED_CONF),
        hs.ConfStep("user", user),
    ]
    mine = tmp_path / "mlperf.conf"
    assert hs.conf_plan("4.0.1", mine, user) == [
        hs.ConfStep("mlperf", mine),
        hs.ConfStep("user", user),
    ]


def test_new_loadgen_makes_one_call_that_applies_the_builtin_conf(tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    assert hs.conf_plan("6.0.17", None, user) == [hs.ConfStep("user", user, True)]
    # no user.conf: an empty temporary one, so that LoadGen still applies its own rules
    assert hs.conf_plan("4.1.7", None, None) == [hs.ConfStep("user", None, True)]
    mine = tmp_path / "mlperf.conf"
    assert hs.conf_plan("5.1.0", mine, user) == [
        hs.ConfStep("mlperf", mine, True),
        hs.ConfStep("user", user),
    ]
    assert hs.conf_plan("6.0.17", mine, None) == [hs.ConfStep("mlperf", mine, True)]


def test_bundled_conf_is_the_retinanet_subset_of_the_official_one() -> None:
    text = hs.BUNDLED_CONF.read_text()
    assert hs.conf_syntax_error(text) is None
    lines = {
        ln.split("=")[0].strip(): ln.split("=")[1].strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert all(k.split(".")[0] in ("*", "retinanet") for k in lines)
    assert lines["retinanet.*.performance_sample_count_override"] == "64"
    assert lines["retinanet.Offline.min_query_count"] == "24576"
    assert lines["retinanet.MultiStream.target_latency"] == "528"
    assert lines["retinanet.Server.target_latency"] == "100"
    assert not any("token" in k or "ttft" in k or "tpot" in k for k in lines)
    if OFFICIAL_CONF.exists():  # every kept line is verbatim in the official file
        official = {
            ln.split("=")[0].strip(): ln.split("=")[1].strip()
            for ln in OFFICIAL_CONF.read_text().splitlines()
            if "=" in ln and not ln.startswith("#")
        }
        assert all(official[k] == v for k, v in lines.items())


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("# comment\n\nretinanet.Offline.target_qps = 12.5\n", None),
        ("*.*.qsl_rng_seed = 0x1F\n", None),
        ("*.*.qsl_rng_seed = 0x1F # LoadGen rejects comments after a value\n", 1),
        ("retinanet.Offline.target_qps 12\n", 1),
        ("# ok\nretinanet.Offline.target_qps = fast\n", 2),
        ("#\n*.Server.target_latency = 10 ms\n", 2),
    ],
)
def test_conf_syntax_mirrors_loadgen(text: str, line: int | None) -> None:
    assert hs.conf_syntax_error(text) == line


# -- the real LoadGen: files and overrides ---------------------------------------------------


def test_builtin_rules_apply_without_user_conf() -> None:
    """LoadGen's own mlperf.conf (64 performance samples, 24576 Offline queries, 10 min)."""
    values = record(scenario="Offline")["values"]
    assert values["performance_sample_count_override"] == 64
    assert values["min_query_count"] == 24576
    assert values["min_duration_ms"] == 600000


def test_bundled_conf_gives_the_same_rules_as_old_loadgen_would() -> None:
    """Forcing the 4.0 path on the installed LoadGen: the bundled file alone sets the rules."""
    rec = record(scenario="MultiStream", version="4.0")
    assert rec["conf_files"][0]["path"].endswith("mlperf-retinanet.conf")
    values = rec["values"]
    assert values["multi_stream_expected_latency_ns"] == 528_000_000
    assert values["min_query_count"] == 662
    assert values["multi_stream_samples_per_query"] == 8
    assert values["performance_sample_count_override"] == 64


def test_user_conf_overrides_the_rules(tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    user.write_text(
        "retinanet.Offline.target_qps = 12.5\n"
        "retinanet.*.performance_sample_count_override = 7\n"
        "*.Offline.min_duration = 1234\n"
    )
    rec = record(scenario="Offline", user_conf=str(user), est_qps=999.0)
    values = rec["values"]
    assert values["offline_expected_qps"] == 12.5  # not the estimate: user.conf set it
    assert values["performance_sample_count_override"] == 7
    assert values["min_duration_ms"] == 1234
    assert rec["conf_files"] == [
        {"role": "user", "path": str(user), "applies_builtin_mlperf_conf": True}
    ]


def test_command_line_overrides() -> None:
    rec = record(scenario="Server", count=5, time=2.5, qps=3.5, max_latency=0.25)
    v, o = rec["values"], rec["overrides"]
    assert v["min_duration_ms"] == v["max_duration_ms"] == 2500
    assert v["min_query_count"] == v["max_query_count"] == 5  # --count wins over --time's 1
    assert v["server_target_qps"] == v["offline_expected_qps"] == 3.5
    assert v["server_target_latency_ns"] == 250_000_000
    assert v["multi_stream_expected_latency_ns"] == 250_000_000
    assert v["single_stream_expected_latency_ns"] == 250_000_000
    assert set(o) == {
        "min_duration_ms",
        "max_duration_ms",
        "min_query_count",
        "max_query_count",
        "server_target_qps",
        "offline_expected_qps",
        "server_target_latency_ns",
        "multi_stream_expected_latency_ns",
        "single_stream_expected_latency_ns",
    }


def test_short_runs_lower_the_query_minimum_and_use_the_estimates() -> None:
    rec = record(scenario="Offline", time=1, est_qps=321.0)
    assert rec["values"]["min_query_count"] == 1
    assert rec["values"]["max_query_count"] == 0
    assert rec["values"]["offline_expected_qps"] == 321.0
    assert any("estimated" in n for n in rec["notes"])
    ms = record(scenario="MultiStream", time=1, samples_per_query=4, est_latency=0.002, workers=2)[
        "values"
    ]
    assert ms["multi_stream_samples_per_query"] == 4
    assert ms["multi_stream_expected_latency_ns"] == 4_000_000  # 2 ms x ceil(4 / 2)
    ss = record(scenario="SingleStream", time=1, est_latency=0.001)["values"]
    assert ss["single_stream_expected_latency_ns"] == 1_000_000
    full = record(scenario="SingleStream", est_latency=0.001)["values"]  # no --time: as is
    assert full["single_stream_expected_latency_ns"] == 10_000_000
    assert full["min_duration_ms"] == 600000


def test_performance_sample_count_is_capped_at_the_qsl_size() -> None:
    rec = record(scenario="Offline", qsl_samples=8)
    assert rec["values"]["performance_sample_count_override"] == 8
    assert rec["overrides"]["performance_sample_count_override"] == 8
    assert (
        record(scenario="Offline", qsl_samples=500)["values"]["performance_sample_count_override"]
        == 64
    )


def test_accuracy_mode_and_scenario_are_set() -> None:
    rec = record(scenario="SingleStream", accuracy=True)
    assert rec["mode"] == "AccuracyOnly" and rec["scenario"] == "SingleStream"


def test_performance_sample_count() -> None:
    assert hs.performance_sample_count(8, None) == 8
    assert hs.performance_sample_count(24781, None) == 500
    assert hs.performance_sample_count(8, 3) == 3
    rec = record(scenario="Offline", performance_sample_count=3)
    assert rec["values"]["performance_sample_count_override"] == 3


def test_unparseable_user_conf_is_bad_input(tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    user.write_text("retinanet.Offline.target_qps: 12\n")
    with pytest.raises(hs.BadInput, match=re.escape(str(user))):
        hs.check_readable(user, "LoadGen user configuration file")
    with pytest.raises(hs.BadInput, match="cannot read"):
        hs.check_readable(tmp_path / "missing.conf", "LoadGen user configuration file")

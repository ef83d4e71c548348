"""Build sandboxes (invariant 4): clean environment, private HOME/TMPDIR, fixed
SOURCE_DATE_EPOCH, no network, and (with bubblewrap) only the declared inputs visible."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from mlpkg.errors import BuildError
from mlpkg.store import sandbox

KINDS = [k for k in ("bubblewrap", "unshare") if k == "none" or subprocess.run(
    {"bubblewrap": ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"],
     "unshare": ["unshare", "-n" if os.geteuid() == 0 else "-rn", "true"]}[k],
    capture_output=True).returncode == 0] + ["none"]  # fmt: skip


def request(tmp_path: Path, script: str, **kw: object) -> sandbox.BuildRequest:
    dep = tmp_path / "store" / "dep"
    dep.mkdir(parents=True, exist_ok=True)
    (dep / "data").write_text("from the input\n")
    return sandbox.BuildRequest(
        script=script, inputs={"dep": dep}, build_dir=tmp_path / "build",
        log=tmp_path / "log", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_environment_is_clean_and_fixed(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPKG_TEST_LEAK", "secret")
    script = (
        'mkdir "$out"; env | sort > "$out/env"; cat "$dep/data" > "$out/data"; pwd > "$out/pwd"'
    )
    out = sandbox.run(request(tmp_path, script), kind)
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line)
    assert "MLPKG_TEST_LEAK" not in env
    assert env["SOURCE_DATE_EPOCH"] == sandbox.SOURCE_DATE_EPOCH
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C"
    assert env["HOME"] != os.environ.get("HOME") and env["HOME"].endswith("/home")
    assert env["TMPDIR"].endswith("/tmp") and env["TMPDIR"] != "/tmp"
    assert (out / "data").read_text() == "from the input\n"
    if kind == "bubblewrap":
        assert env["out"] == "/build/out"  # a fixed build directory name
        assert (out / "pwd").read_text().strip() == "/build/src"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
def test_no_network(tmp_path: Path, kind: str) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    script = f'mkdir "$out"; if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo open > "$out/r"; else echo closed > "$out/r"; fi'
    try:
        out = sandbox.run(request(tmp_path, script), kind)
        assert (out / "r").read_text().strip() == "closed"
        # Fixed-output work may use the network: the same probe then connects.
        out2 = sandbox.run(request(tmp_path / "n", script, network=True), kind)
        if kind == "bubblewrap":
            assert (out2 / "r").read_text().strip() == "open"
    finally:
        server.close()


@pytest.mark.skipif("bubblewrap" not in KINDS, reason="bubblewrap is not usable here")
def test_bubblewrap_hides_the_rest_of_the_store_and_home(tmp_path: Path) -> None:
    secret = tmp_path / "store" / "undeclared"
    secret.mkdir(parents=True)
    (secret / "f").write_text("x")
    script = f'mkdir "$out"; ls {secret} > "$out/ls" 2>&1 || echo hidden > "$out/r"; ls /root > "$out/root" 2>&1 || true'
    out = sandbox.run(request(tmp_path, script), "bubblewrap")
    assert (out / "r").read_text().strip() == "hidden"


@pytest.mark.parametrize("kind", KINDS)
def test_failure_names_the_log_and_keeps_it(tmp_path: Path, kind: str) -> None:
    script = 'echo "compiling..."; echo "error: it broke" >&2; exit 3'
    with pytest.raises(BuildError, match=r"exit code 3; its log is .*log") as e:
        sandbox.run(request(tmp_path, script), kind)
    log = (tmp_path / "log").read_text()
    assert "compiling..." in log and "error: it broke" in log
    assert any("error: it broke" in d for d in e.value.details)


def test_a_script_that_makes_no_output_fails(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"did not create \$out"):
        sandbox.run(request(tmp_path, "true"), KINDS[0])


def test_forced_kind_must_be_known(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.detect.cache_clear()
    monkeypatch.setenv("MLPKG_SANDBOX", "chroot")
    try:
        with pytest.raises(Exception, match="MLPKG_SANDBOX must be one of"):
            sandbox.detect()
    finally:
        sandbox.detect.cache_clear()

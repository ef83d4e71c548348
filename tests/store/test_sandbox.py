"""Build sandboxes (invariant 4): clean environment, private HOME/TMPDIR, fixed
SOURCE_DATE_EPOCH, no network, only the declared inputs visible and read-only (even to
root), no process left behind; and a refusal where no sandbox can be made."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpkg.errors import BadInput, BuildError
from mlpkg.store import archive, sandbox

KINDS = sandbox.available()  # best first; "none" always
SANDBOXES = [k for k in KINDS if k != "none"]


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
    assert "MLPKG_BUILD_CORES" not in env  # the machine's core count is not an input
    if kind != "none":
        assert env["out"] == "/build/out"  # a fixed build directory name
        assert (out / "pwd").read_text().strip() == "/build/src"


@pytest.mark.parametrize("kind", SANDBOXES)
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
        assert (out2 / "r").read_text().strip() == "open"
    finally:
        server.close()


HOSTILE = """
mkdir -p "$out"
ls {secret} > "$out/secret" 2>&1 || echo hidden >> "$out/r"
ls /root > "$out/root" 2>&1 || echo no-root >> "$out/r"
echo pwned > {host_tmp}/pwned 2>/dev/null || echo no-host-tmp >> "$out/r"
echo pwned >> $dep/data 2>/dev/null || echo input-unwritable >> "$out/r"
chmod 0755 $dep 2>/dev/null || echo no-chmod >> "$out/r"
mount -o remount,rw $dep 2>/dev/null || echo no-remount >> "$out/r"
mount -o remount,rw,bind $dep 2>/dev/null || echo no-bind-remount >> "$out/r"
swappiness=$(cat /proc/sys/vm/swappiness)  # written back unchanged, were it writable
echo "$swappiness" > /proc/sys/vm/swappiness 2>/dev/null || echo no-sysctl >> "$out/r"
cp /bin/true "$out/t"; setcap cap_dac_override+ep "$out/t" 2>/dev/null || echo no-setcap >> "$out/r"
touch /etc/pwned 2>/dev/null || echo etc-read-only >> "$out/r"
touch /usr/pwned 2>/dev/null || echo usr-read-only >> "$out/r"
"""


@pytest.mark.parametrize("kind", SANDBOXES)
def test_a_hostile_script_cannot_touch_the_host(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "store" / "undeclared"
    secret.mkdir(parents=True)
    (secret / "f").write_text("x")
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    req = request(tmp_path, HOSTILE.format(secret=secret, host_tmp=host_tmp))
    dep = req.inputs["dep"]
    os.chmod(dep / "data", 0o444)
    os.chmod(dep, 0o555)
    before = archive.scan(dep).hash
    try:
        out = sandbox.run(req, kind)
    finally:
        os.chmod(dep, 0o755)
    said = (out / "r").read_text().split()
    assert said == [
        "hidden", "no-root", "no-host-tmp", "input-unwritable", "no-chmod", "no-remount",
        "no-bind-remount", "no-sysctl", "no-setcap", "etc-read-only", "usr-read-only",
    ]  # fmt: skip
    assert not (host_tmp / "pwned").exists() and archive.scan(dep).hash == before
    assert not Path("/etc/pwned").exists() and not Path("/usr/pwned").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the point is that root cannot write either")
@pytest.mark.parametrize("kind", SANDBOXES)
def test_inputs_are_read_only_mounts_even_for_root(tmp_path: Path, kind: str) -> None:
    req = request(tmp_path, 'mkdir "$out"; { echo x >> "$dep/data"; } 2> "$out/err" || true')
    os.chmod(req.inputs["dep"] / "data", 0o644)  # modes do not stop root: the mount must
    before = archive.scan(req.inputs["dep"]).hash
    out = sandbox.run(req, kind)
    assert "Read-only file system" in (out / "err").read_text()
    assert archive.scan(req.inputs["dep"]).hash == before


@pytest.mark.parametrize("kind", KINDS)
def test_background_children_die_with_the_build(tmp_path: Path, kind: str) -> None:
    marker = f"mlpkg-orphan-{os.getpid()}-{kind}"
    script = f'mkdir "$out"; (exec -a {marker} sleep 60 &) ; (exec -a {marker} sleep 60) & true'
    sandbox.run(request(tmp_path, script), kind)
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == "", f"processes outlived the build: {left}"


KILLER = """
import sys
from pathlib import Path
from mlpkg.store import sandbox
t = Path(sys.argv[1])
req = sandbox.BuildRequest(script="mkdir $out; exec -a {marker} sleep 60", inputs={{}},
                           build_dir=t / "build", log=t / "log")
sandbox.run(req, sys.argv[2])
"""


@pytest.mark.parametrize("kind", SANDBOXES)
def test_a_killed_mlpkg_takes_its_build_along(tmp_path: Path, kind: str) -> None:
    marker = f"mlpkg-kill-{os.getpid()}-{kind}"
    proc = subprocess.Popen([sys.executable, "-c", KILLER.format(marker=marker),
                             str(tmp_path), kind])  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
        if found:
            break
        time.sleep(0.05)
    assert found, "the build never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", marker]).returncode == 0:
        time.sleep(0.05)
    left = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    assert left == "", f"the build outlived a SIGKILLed mlpkg: {left}"


@pytest.mark.parametrize("kind", SANDBOXES)
def test_an_input_that_is_a_link_does_not_expose_its_target(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE")
    link = tmp_path / "store" / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)  # a store path that is a link to the host
    req = request(tmp_path, 'mkdir "$out"; cat "$a/id_rsa" > "$out/stolen" 2>/dev/null || true')
    req.inputs = {"a": link}
    out = sandbox.run(req, kind)
    assert (out / "stolen").read_text() == ""


def test_inputs_cannot_override_the_fixed_variables(tmp_path: Path) -> None:
    req = request(tmp_path, 'mkdir "$out"')
    req.inputs = {"TZ": req.inputs["dep"]}
    with pytest.raises(BadInput, match="'TZ' has the name of a variable the build sandbox sets"):
        sandbox.run(req, KINDS[0])


def test_no_sandbox_is_refused_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPKG_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "available", lambda: ["none"])
    sandbox.detect.cache_clear()
    try:
        with pytest.raises(BadInput, match="No build sandbox works") as e:
            sandbox.detect()
        assert e.value.hint is not None and "--no-sandbox" in e.value.hint
        monkeypatch.setenv("MLPKG_SANDBOX", "none")
        sandbox.detect.cache_clear()
        assert sandbox.detect() == "none"
    finally:
        sandbox.detect.cache_clear()


def test_the_log_says_which_sandbox(tmp_path: Path) -> None:
    sandbox.run(request(tmp_path, 'mkdir "$out"'), "none")
    assert "sandbox none" in (tmp_path / "log").read_text().splitlines()[0]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_unwritable_log_stops_the_build_with_one_sentence(tmp_path: Path) -> None:
    req = request(tmp_path, 'mkdir "$out"; head -c 5000000 /dev/zero | tr "\\0" x')
    req.log = Path("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(Exception, match="could not be written: no space is left"):
        sandbox.run(req, KINDS[0])


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


def test_the_recipe_model_reserves_the_same_names() -> None:
    from mlpkg.recipes.model import RESERVED_INPUT_KEYS

    assert RESERVED_INPUT_KEYS == sandbox.RESERVED_NAMES


@pytest.mark.parametrize("kind", KINDS)
def test_the_build_ignores_no_signal(tmp_path: Path, kind: str) -> None:
    """Python ignores SIGPIPE; a build started through Python must not inherit that."""
    out = sandbox.run(
        request(tmp_path, 'mkdir "$out"; grep SigIgn /proc/self/status > "$out/s"'), kind
    )
    mask = int((out / "s").read_text().split()[1], 16)
    assert mask & (1 << (signal.SIGPIPE - 1)) == 0 and mask & (1 << (signal.SIGXFSZ - 1)) == 0

"""Fault tests of the mlpkg CLI: bad input (exit 2), failed fetches and builds (exit 1),
hostile archives, processes killed with SIGKILL, concurrent builds, gc during a build and a
tampered store. Each test has its own MLPKG_HOME and recipe directory (tests/conftest.py);
sources are tarballs made here, served as file:// URLs or from the loopback servers."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.recipe_text import build_toml, fetch_toml

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.cli_support import CliResult
    from tests.conftest import LoopbackServer, MlpkgCli, SlowServer

# A build held at a gate: it creates <build dir>/started, then waits (up to 20 s) for the
# test to create <build dir>/go. The build directory is <home>/builds/<hash>-<random>,
# which is also $TMPDIR/.. inside every sandbox kind, so the test can see and release it.
# A build whose directory disappears (gc after a kill) gives up at once.
GATE = """
ctl="$TMPDIR/.."
mkdir -p "$out"
echo "BUILD-RAN $name"
touch "$ctl/started"
for i in $(seq 400); do
  [ -e "$ctl/go" ] && break
  [ -e "$ctl/started" ] || exit 1
  sleep 0.05
done
[ -e "$ctl/go" ]
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_source(cli: MlpkgCli, name: str, data: bytes) -> Path:
    file = cli.home.parent / "sources" / name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    return file


def add_src(
    cli: MlpkgCli,
    tarball: Callable[..., bytes],
    *,
    name: str = "src",
    urls: list[str] | None = None,
) -> bytes:
    """A fetch recipe NAME@1.0 for a small tarball (file:// unless ``urls``); its bytes."""
    data = tarball(
        {"data.txt": f"data of {name}\n", "run.sh*": "#!/bin/sh\necho run\n"}, top=f"{name}-1.0"
    )
    file = write_source(cli, f"{name}-1.0.tar.gz", data)
    cli.recipes.add(name, "1.0", fetch_toml(name, "1.0", urls or [file.as_uri()], sha256(data)))
    return data


def add_app(cli: MlpkgCli, script: str = 'mkdir "$out"; cp "$src/data.txt" "$out/"\n') -> None:
    """app@1.0: a build of src@1.0."""
    cli.recipes.add("app", "1.0", build_toml("app", "1.0", script, {"src": "src@1.0"}))


def error_sentence(result: CliResult, code: int) -> str:
    """Check the exit code and that stderr has exactly one ``error: ...`` sentence and no
    traceback; return that sentence."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    sentence = errors[0].removeprefix("error: ")
    assert sentence.endswith((".", "?")) and "internal error" not in sentence, sentence
    return sentence


def verify_clean(cli: MlpkgCli) -> None:
    r = cli.run("verify", "--check-contents").ok()
    assert r.out == "", r.out
    assert "0 problems" in r.err, r.err


# -- bad input: exit 2 ------------------------------------------------------------------------


def test_unknown_package_suggests_the_nearest_name(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball, name="greeter")
    r = mlpkg_cli.run("build", "greeterr")
    sentence = error_sentence(r, 2)
    assert "'greeterr'" in sentence
    assert "Did you mean greeter" in r.err, r.err


def test_unknown_version_lists_the_available_ones(mlpkg_cli: MlpkgCli) -> None:
    for v in ("1.0", "1.2", "2.0"):
        mlpkg_cli.recipes.add("tool", v, build_toml("tool", v, 'mkdir "$out"\n'))
    r = mlpkg_cli.run("build", "tool@3.1")
    sentence = error_sentence(r, 2)
    assert "tool" in sentence and "3.1" in sentence
    assert "2.0, 1.2, 1.0" in sentence, sentence


def test_malformed_toml_names_the_file(mlpkg_cli: MlpkgCli) -> None:
    file = mlpkg_cli.recipes.add("broken", "1.0", 'name = "broken"\nversion = "1.0\nkind = build\n')
    r = mlpkg_cli.run("build", "broken")
    sentence = error_sentence(r, 2)
    assert str(file) in sentence and "TOML" in sentence, sentence


@pytest.mark.parametrize("missing", ["kind", "version"])
def test_recipe_missing_a_field_names_file_and_field(mlpkg_cli: MlpkgCli, missing: str) -> None:
    text = build_toml("partial", "1.0", 'mkdir "$out"\n')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{missing} ="))
    file = mlpkg_cli.recipes.add("partial", "1.0", text)
    r = mlpkg_cli.run("build", "partial")
    sentence = error_sentence(r, 2)
    assert str(file) in sentence and f"field {missing}" in sentence, sentence
    assert f"{file}: field {missing}: Field required" in r.err, r.err


def test_input_cycle_is_named(mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("aa", "1.0", build_toml("aa", "1.0", 'mkdir "$out"\n', {"b": "bb"}))
    mlpkg_cli.recipes.add("bb", "1.0", build_toml("bb", "1.0", 'mkdir "$out"\n', {"a": "aa"}))
    r = mlpkg_cli.run("build", "aa")
    sentence = error_sentence(r, 2)
    assert "cycle" in sentence and "aa@1.0 -> bb@1.0 -> aa@1.0" in sentence, sentence
    assert mlpkg_cli.store_entries() == []


def test_version_conflict_names_both_requesters(mlpkg_cli: MlpkgCli) -> None:
    mk = 'mkdir "$out"\n'
    for v in ("1.0", "2.0"):
        mlpkg_cli.recipes.add("base", v, build_toml("base", v, mk))
    mlpkg_cli.recipes.add("left", "1.0", build_toml("left", "1.0", mk, {"b": "base@1.0"}))
    mlpkg_cli.recipes.add("right", "1.0", build_toml("right", "1.0", mk, {"b": "base@2.0"}))
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", mk, {"l": "left", "r": "right"}))
    r = mlpkg_cli.run("build", "top")
    sentence = error_sentence(r, 2)
    assert "base" in sentence, sentence
    assert "left@1.0 (input b) needs base@1.0" in sentence, sentence
    assert "right@1.0 (input b) needs base@2.0" in sentence, sentence
    assert mlpkg_cli.store_entries() == []


# -- fetch failures -----------------------------------------------------------------------------


def test_download_with_the_wrong_hash_fails_and_stores_nothing(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], http_server: LoopbackServer
) -> None:
    good = tarball({"data.txt": "what the recipe expects\n"}, top="src-1.0")
    evil = tarball({"data.txt": "what the server sends\n"}, top="src-1.0")
    http_server.route("/src.tar.gz", body=evil)
    url = http_server.url("/src.tar.gz")
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", [url], sha256(good)))
    add_app(mlpkg_cli)
    r = mlpkg_cli.run("build", "app")
    sentence = error_sentence(r, 1)
    assert "src@1.0" in sentence
    assert sha256(good) in sentence and sha256(evil) in sentence, sentence
    assert mlpkg_cli.valid_paths() == []
    assert mlpkg_cli.store_entries() == []
    assert os.listdir(mlpkg_cli.home / "partial") == []


def test_a_dead_mirror_is_skipped_for_a_good_one(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], http_server: LoopbackServer
) -> None:
    data = tarball({"data.txt": "from the good mirror\n"}, top="src-1.0")
    http_server.route("/dead/src.tar.gz", status=404)
    http_server.route("/good/src.tar.gz", body=data)
    urls = [http_server.url("/dead/src.tar.gz"), http_server.url("/good/src.tar.gz")]
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", urls, sha256(data)))
    add_app(mlpkg_cli)
    r = mlpkg_cli.run("build", "app").ok()
    assert (Path(r.out.strip()) / "data.txt").read_text() == "from the good mirror\n"
    assert len(http_server.requests_for("/dead/src.tar.gz")) == 1
    assert len(http_server.requests_for("/good/src.tar.gz")) == 1


def _hostile(kind: str) -> tuple[bytes, str]:
    """A .tar.gz with one bad member (built by hand); the member's name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        top = tarfile.TarInfo("pkg-1.0")
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(top)
        ok_file = tarfile.TarInfo("pkg-1.0/fine.txt")
        ok_file.size = 5
        tf.addfile(ok_file, io.BytesIO(b"fine\n"))
        bad = tarfile.TarInfo(
            {
                "dotdot": "pkg-1.0/../x",
                "absolute": "/tmp/mlpkg-evil-x",
                "symlink": "pkg-1.0/escape",
                "device": "pkg-1.0/null",
            }[kind]
        )
        payload = None
        if kind in ("dotdot", "absolute"):
            bad.size = 4
            payload = io.BytesIO(b"bad\n")
        elif kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
        else:
            bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(bad, payload)
    return buf.getvalue(), bad.name


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "device"])
def test_hostile_archive_is_refused(mlpkg_cli: MlpkgCli, kind: str) -> None:
    data, member = _hostile(kind)
    file = write_source(mlpkg_cli, f"{kind}.tar.gz", data)
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", [file.as_uri()], sha256(data)))
    add_app(mlpkg_cli)
    r = mlpkg_cli.run("build", "app")
    sentence = error_sentence(r, 1)
    assert "Refusing archive" in sentence and "src@1.0" in sentence, sentence
    assert f"'{member}'" in sentence, sentence
    assert mlpkg_cli.valid_paths() == []
    assert mlpkg_cli.store_entries() == []
    assert not Path("/tmp/mlpkg-evil-x").exists()


# -- build failures ---------------------------------------------------------------------------


def test_failing_build_script_names_its_log(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball)
    add_app(mlpkg_cli, 'mkdir "$out"\necho "about to fail: 7c1e"\necho "to stderr" >&2\nexit 3\n')
    app = mlpkg_cli.path_of("app")
    r = mlpkg_cli.run("build", "app")
    sentence = error_sentence(r, 1)
    log = mlpkg_cli.home / "logs" / f"{app.name}.log"
    assert str(log) in sentence and "exit code 3" in sentence and "app" in sentence, sentence
    text = log.read_text()
    assert "about to fail: 7c1e" in text and "to stderr" in text
    assert mlpkg_cli.valid_paths() == [mlpkg_cli.path_of("src").name]
    assert mlpkg_cli.store_entries() == [mlpkg_cli.path_of("src").name]
    assert os.listdir(mlpkg_cli.home / "builds") == []


# -- SIGKILL ----------------------------------------------------------------------------------


def test_kill_during_fetch_then_build_again(
    mlpkg_cli: MlpkgCli,
    tarball: Callable[..., bytes],
    http_server: LoopbackServer,
    slow_http_server: SlowServer,
) -> None:
    big = {"data.txt": "big\n", "blob.bin": os.urandom(512 * 1024)}
    data = tarball(big, top="src-1.0")
    slow_url = slow_http_server.route("/src.tar.gz", data, chunk=16 * 1024, delay=0.05)
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", [slow_url], sha256(data)))
    add_app(mlpkg_cli)
    proc = mlpkg_cli.popen("build", "app")
    part = mlpkg_cli.wait_for("partial/*.part", proc=proc, nonempty=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial_size = part.stat().st_size
    assert 0 < partial_size < len(data)
    assert mlpkg_cli.valid_paths() == []
    assert mlpkg_cli.store_entries() == []

    # A mirror that honours Range: the rerun resumes the partial file.
    http_server.route("/fast/src.tar.gz", body=data)
    fast = http_server.url("/fast/src.tar.gz")
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", [fast], sha256(data)))
    r = mlpkg_cli.sub("build", "app", timeout=60).ok()
    assert (Path(r.out.strip()) / "data.txt").read_text() == "big\n"
    first = http_server.requests_for("/fast/src.tar.gz")[0]
    assert first.headers.get("range", "").startswith("bytes="), first.headers
    assert os.listdir(mlpkg_cli.home / "partial") == []
    verify_clean(mlpkg_cli)


def test_kill_during_build_then_build_again(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball)
    add_app(mlpkg_cli, GATE + 'cp "$src/data.txt" "$out/"\n')
    mlpkg_cli.run("build", "src").ok()
    proc = mlpkg_cli.popen("build", "app")
    started = mlpkg_cli.wait_for("builds/*/started", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    app = mlpkg_cli.path_of("app")
    assert app.name not in mlpkg_cli.valid_paths()
    assert not app.exists()

    again = mlpkg_cli.popen("build", "app")
    second = mlpkg_cli.wait_for("builds/*/started", proc=again, exclude=frozenset([started]))
    (second.parent / "go").touch()
    r = mlpkg_cli.finish(again, timeout=30)
    assert r.code == 0, str(r)
    assert r.out.strip() == str(app)
    assert (app / "data.txt").read_text() == "data of src\n"
    verify_clean(mlpkg_cli)

    mlpkg_cli.run("build", "--root", "app", "app").ok()
    mlpkg_cli.run("gc").ok()
    assert not [e for e in mlpkg_cli.store_entries() if e.startswith(".")]
    assert mlpkg_cli.store_entries() == mlpkg_cli.valid_paths()
    assert os.listdir(mlpkg_cli.home / "builds") == []
    verify_clean(mlpkg_cli)


# -- concurrency ------------------------------------------------------------------------------


def test_two_builds_of_the_same_spec_build_once(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball)
    add_app(mlpkg_cli, GATE + 'cp "$src/data.txt" "$out/"\n')
    mlpkg_cli.run("build", "src").ok()
    app = mlpkg_cli.path_of("app")
    first = mlpkg_cli.popen("build", "-v", "app")
    second = mlpkg_cli.popen("build", "-v", "app")
    started = mlpkg_cli.wait_for("builds/*/started", proc=first)
    # Both processes have protected the plan (temproots/<pid>) before taking the path lock;
    # give the other a moment to reach the lock, then check it is not building beside us.
    for proc in (first, second):
        mlpkg_cli.wait_for(f"temproots/{proc.pid}", proc=proc, nonempty=True)
    time.sleep(0.3)
    assert len(list((mlpkg_cli.home / "builds").iterdir())) == 1
    (started.parent / "go").touch()
    results = [mlpkg_cli.finish(p, timeout=30) for p in (first, second)]
    for r in results:
        assert r.code == 0, str(r)
        assert r.out.strip() == str(app)
    stderr = results[0].err + results[1].err
    assert stderr.count("BUILD-RAN app") == 1, stderr  # the script ran once
    assert stderr.count("in sandbox:") == 1, stderr  # the builder was started once
    assert mlpkg_cli.valid_paths().count(app.name) == 1
    verify_clean(mlpkg_cli)


def test_gc_during_a_build_keeps_its_inputs(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball)
    add_src(mlpkg_cli, tarball, name="junk")
    add_app(mlpkg_cli, GATE + 'cp "$src/data.txt" "$out/"\n')
    mlpkg_cli.run("build", "src").ok()
    mlpkg_cli.run("build", "junk").ok()
    src, junk, app = (mlpkg_cli.path_of(s) for s in ("src", "junk", "app"))
    assert not list((mlpkg_cli.home / "gcroots").iterdir())  # nothing is rooted

    proc = mlpkg_cli.popen("build", "app")
    started = mlpkg_cli.wait_for("builds/*/started", proc=proc)
    gc = mlpkg_cli.sub("gc", "--json", timeout=30).ok().json()
    assert junk.name in gc["deleted"]  # the collector did run
    assert src.name not in gc["deleted"] and app.name not in gc["deleted"]
    assert src.is_dir() and src.name in mlpkg_cli.valid_paths()
    assert started.exists()  # the running build's directory was left alone

    (started.parent / "go").touch()
    r = mlpkg_cli.finish(proc, timeout=30)
    assert r.code == 0, str(r)
    assert (app / "data.txt").read_text() == "data of src\n"
    assert mlpkg_cli.valid_paths() == sorted([app.name, src.name])
    verify_clean(mlpkg_cli)


# -- a tampered store -------------------------------------------------------------------------


def _tamper(file: Path) -> None:
    os.chmod(file, 0o644)
    file.write_text("tampered\n")


def test_tampered_build_path_is_found_and_repaired(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_src(mlpkg_cli, tarball)
    add_app(mlpkg_cli)
    app = Path(mlpkg_cli.run("build", "app").ok().out.strip())
    verify_clean(mlpkg_cli)
    _tamper(app / "data.txt")

    r = mlpkg_cli.run("verify", "--check-contents")
    sentence = error_sentence(r, 1)
    assert app.name in sentence and "data.txt" in sentence, sentence
    assert app.name in r.out and "(data.txt)" in r.out, r.out

    fixed = mlpkg_cli.run("verify", "--repair").ok()
    assert "repaired:" in fixed.out and app.name in fixed.out, fixed.out
    assert (app / "data.txt").read_text() == "data of src\n"
    assert os.stat(app / "data.txt").st_mode & 0o222 == 0
    verify_clean(mlpkg_cli)
    assert not [e for e in mlpkg_cli.store_entries() if e.startswith(".")]


def test_tampered_fetch_path_is_found_and_repaired(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], http_server: LoopbackServer
) -> None:
    data = tarball({"data.txt": "served\n"}, top="src-1.0")
    http_server.route("/src.tar.gz", body=data)
    url = http_server.url("/src.tar.gz")
    mlpkg_cli.recipes.add("src", "1.0", fetch_toml("src", "1.0", [url], sha256(data)))
    src = Path(mlpkg_cli.run("build", "src").ok().out.strip())
    assert len(http_server.requests_for("/src.tar.gz")) == 1
    _tamper(src / "data.txt")

    r = mlpkg_cli.run("verify", "--check-contents")
    sentence = error_sentence(r, 1)
    assert src.name in sentence and "data.txt" in sentence, sentence

    # The download cache holds the verified tarball: repair needs no network.
    mlpkg_cli.run("verify", "--repair").ok()
    assert len(http_server.requests_for("/src.tar.gz")) == 1
    assert (src / "data.txt").read_text() == "served\n"
    verify_clean(mlpkg_cli)
    # Without the cache, repair downloads again.
    _tamper(src / "data.txt")
    shutil.rmtree(mlpkg_cli.home / "cache" / "downloads")
    mlpkg_cli.run("verify", "--repair").ok()
    assert len(http_server.requests_for("/src.tar.gz")) == 2  # fetched again
    assert (src / "data.txt").read_text() == "served\n"
    verify_clean(mlpkg_cli)

"""env/launch.py: what the app prints is copied as it comes, with bounded memory, and the
error line of a failure is remembered."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from mlpkg.env import launch


def _tee(data: bytes) -> tuple[launch._Tee, bytes]:
    read, write = os.pipe()
    log = io.BytesIO()
    tee = launch._Tee(os.fdopen(read, "rb"), log, None)  # type: ignore[arg-type]
    tee.start()

    def feed() -> None:
        with os.fdopen(write, "wb") as w:
            for i in range(0, len(data), 65536):
                w.write(data[i : i + 65536])

    feeder = threading.Thread(target=feed)
    feeder.start()
    feeder.join()
    tee.join(timeout=30)
    return tee, log.getvalue()


def test_output_without_newlines_is_kept_in_bounded_memory() -> None:
    bar = b"".join(b"\r[%-50s] %3d%%" % (b"#" * (i % 50), i % 100) for i in range(200_000))
    tee, logged = _tee(bar + b"\nerror: the end\n")
    assert logged == bar + b"\nerror: the end\n"  # the log has everything
    assert len(tee._partial) <= launch._KEEP  # memory does not grow with the line
    assert tee.error == "error: the end"


def test_an_error_line_split_across_reads_is_found(tmp_path: Path) -> None:
    tee, _ = _tee(b"x" * 100_000 + b"\nerror: " + b"y" * 70_000 + b"\n")
    assert tee.error is not None and tee.error.startswith("error: yyy")


def test_a_full_disk_under_the_run_directory_never_blocks_the_app(tmp_path: Path) -> None:
    import pytest

    from mlpkg.errors import StoreError

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (tmp_path / "stdout.txt").symlink_to("/dev/full")  # every write fails with ENOSPC
    env = {"PATH": "/usr/bin:/bin"}
    argv = ["sh", "-c", "head -c 5000000 /dev/zero; echo done >&2"]
    with pytest.raises(StoreError, match="is full: no space left for the app's output"):
        launch.launch(argv, env, tmp_path, show=False)


def test_an_isolated_app_ignores_no_signal(tmp_path: Path) -> None:
    import signal

    store = tmp_path / "store"
    store.mkdir()
    argv = ["sh", "-c", "grep SigIgn /proc/self/status"]
    launch.launch(argv, {"PATH": "/usr/bin:/bin"}, tmp_path, show=False, readonly=[store])
    mask = int((tmp_path / "stdout.txt").read_text().split()[1], 16)
    assert mask & (1 << (signal.SIGPIPE - 1)) == 0

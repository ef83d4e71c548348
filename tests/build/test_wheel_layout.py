"""The one-pass wheel installer (issue 15): what :func:`mlpkg.build.wheel.install_wheel`
lays out is what pypa's installer writes with its own destination (files, bytes,
executable bits, RECORD, scripts, ``.data`` directories), and the scan it feeds while
writing is what :func:`mlpkg.store.archive.scan` of the written tree gives."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest

from mlpkg.build.wheel import SHEBANG, SHEBANG_INTERPRETER, install_wheel
from mlpkg.errors import BuildError
from mlpkg.store.archive import StreamScan, scan

PYTHON = {"version": "3.11.7"}
BIG = os.urandom(200_000) + b"/fake/store/root" + os.urandom(100_000)
FILES: dict[str, tuple[bytes, int]] = {
    "demo/__init__.py": (b"def main():\n    print('hi')\n", 0o644),
    "demo/big.bin": (BIG, 0o644),
    "demo/tool.sh": (b"#!/bin/sh\necho tool\n", 0o755),
    "demo/__pycache__/x.cpython-311.pyc": (b"skipped", 0o644),
    "demo-1.0.data/scripts/run-demo": (b"#!python\nimport demo\ndemo.main()\n", 0o755),
    "demo-1.0.data/headers/demo.h": (b"int demo(void);\n", 0o644),
    "demo-1.0.data/data/share/demo/readme.txt": (b"data\n", 0o644),
    "demo-1.0.dist-info/METADATA": (b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n", 0o644),
    "demo-1.0.dist-info/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        0o644,
    ),
    "demo-1.0.dist-info/entry_points.txt": (b"[console_scripts]\ndemo-cli = demo:main\n", 0o644),
}


def make_wheel(directory: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    wheel = directory / "demo-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
        record.append("demo-1.0.dist-info/RECORD,,")
        z.writestr("demo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def stock_install(wheel: Path, out: Path) -> None:
    """What mlpkg did before issue 15: pypa's installer with its own destination."""
    import warnings

    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.records import RecordEntry
    from installer.scripts import Script
    from installer.sources import WheelFile
    from installer.utils import Scheme

    class Destination(SchemeDictionaryDestination):
        def write_script(self, name: str, module: str, attr: str, section: Any) -> RecordEntry:
            script_name, data = Script(name, module, attr, section).generate("python3", "posix")
            data = SHEBANG + data.split(b"\n", 1)[1]
            with io.BytesIO(data) as stream:
                entry: RecordEntry = self.write_to_fs(
                    Scheme("scripts"), script_name, stream, is_executable=True
                )
            return entry

    site = out / "lib" / "python3.11" / "site-packages"
    scheme = {"purelib": str(site), "platlib": str(site), "scripts": str(out / "bin"),
              "headers": str(out / "include" / "python3.11"), "data": str(out)}  # fmt: skip
    destination = Destination(scheme, interpreter=SHEBANG_INTERPRETER, script_kind="posix")
    with WheelFile.open(wheel) as source, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        install(source, destination, additional_metadata={"INSTALLER": b"mlpkg\n"})


def tree_of(root: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), os.access(p, os.X_OK))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_layout_is_pypa_installers_and_the_scan_is_the_trees(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, FILES)
    stock_install(wheel, tmp_path / "stock")
    forbid = [b"/fake/store/root", b"/elsewhere"]
    stream = StreamScan(forbid)
    install_wheel(wheel, tmp_path / "out", PYTHON, stream)
    written = tree_of(tmp_path / "out")
    assert written == tree_of(tmp_path / "stock")
    site = "lib/python3.11/site-packages"
    assert f"{site}/demo/__pycache__/x.cpython-311.pyc" not in written
    assert written["bin/demo-cli"][0].startswith(SHEBANG) and written["bin/demo-cli"][1]
    assert written[f"{site}/demo/tool.sh"][1] and not written[f"{site}/demo/big.bin"][1]
    assert "include/python3.11/demo.h" in written and "share/demo/readme.txt" in written
    got, want = stream.result(), scan(tmp_path / "out", manifest=True, forbid=forbid)
    assert (got.sha256, got.size, got.forbidden_in) == (want.sha256, want.size, want.forbidden_in)
    assert [astuple(e) for e in got.manifest] == [astuple(e) for e in want.manifest]
    assert got.forbidden_in == [f"{site}/demo/big.bin"]


def test_without_a_scan_the_same_tree_is_written(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, FILES)
    install_wheel(wheel, tmp_path / "a", PYTHON)
    install_wheel(wheel, tmp_path / "b", PYTHON, StreamScan())
    assert tree_of(tmp_path / "a") == tree_of(tmp_path / "b")


@pytest.mark.parametrize("name", ["../evil.py", "demo-1.0.data/data/../../../evil.py"])
def test_a_file_outside_the_prefix_is_refused_before_anything_is_written(
    tmp_path: Path, name: str
) -> None:
    wheel = make_wheel(tmp_path, {**FILES, name: (b"x", 0o644)})
    with pytest.raises(BuildError, match="outside of the target directory"):
        install_wheel(wheel, tmp_path / "out", PYTHON, StreamScan())
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


def test_a_file_written_twice_is_refused(tmp_path: Path) -> None:
    # The wheel's own script and a console script of the same name both go to bin/.
    files = {**FILES, "demo-1.0.data/scripts/demo-cli": (b"#!python\n", 0o755)}
    with pytest.raises(BuildError, match="already exists"):
        install_wheel(make_wheel(tmp_path, files), tmp_path / "out", PYTHON, StreamScan())
    assert not (tmp_path / "out").exists()


def test_the_preloaded_source_gives_what_installers_gives(tmp_path: Path) -> None:
    from installer.sources import WheelFile

    from mlpkg.build.wheel_layout import source_class

    wheel = make_wheel(tmp_path, FILES)

    def contents(cls: Any) -> list[tuple[Any, bytes, bool]]:
        with cls.open(wheel) as source:
            return [(r, s.read(), x) for r, s, x in source.get_contents()]

    assert contents(source_class()) == contents(WheelFile)

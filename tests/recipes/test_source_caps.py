"""The [source] caps on unpacking (max_unpacked_size, max_unpack_ratio, max_unpacked_files):
validated in the recipe model, left out of every hash, and passed to unpack by fetches and
``add-file``."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from mlpkg.build.fetch import unpack_local
from mlpkg.errors import FetchError
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation
from tests.recipe_text import fetch_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli

SHA = "a" * 64


def fetch(**source: Any) -> Recipe:
    table = {"urls": ["https://example.org/d.tgz"], "sha256": SHA, "unpack": True, **source}
    return Recipe.model_validate({"name": "d", "version": "1.0", "kind": "fetch", "source": table})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("200GiB", 200 * 1024**3),
        ("1.5 TB", 1_500_000_000_000),
        ("512MiB", 512 * 1024**2),
        ("10kb", 10_000),
        ("123", 123),
        (4096, 4096),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    source = fetch(max_unpacked_size=text).source
    assert source is not None and source.max_unpacked_size == size


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_unpacked_size", "lots"),
        ("max_unpacked_size", "10 GB extra"),
        ("max_unpacked_size", 0),
        ("max_unpacked_size", 1.5),
        ("max_unpacked_size", True),
        ("max_unpack_ratio", 0),
        ("max_unpack_ratio", -3),
        ("max_unpack_ratio", "200"),
        ("max_unpack_ratio", float("inf")),
        ("max_unpacked_files", 0),
        ("max_unpacked_files", "many"),
    ],
)
def test_bad_caps_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        fetch(**{field: value})


@pytest.mark.parametrize("field", ["max_unpacked_size", "max_unpack_ratio", "max_unpacked_files"])
def test_caps_need_unpack(field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field} needs unpack = true"):
        fetch(unpack=False, **{field: 10})


def test_caps_are_not_hashed() -> None:
    """A cap decides whether a path can be made, not what it is: absent, it is not in the
    hashed content at all (existing paths keep their hash); present, it changes no path."""
    plain = fetch()
    capped = fetch(max_unpacked_size="200GiB", max_unpack_ratio=1000, max_unpacked_files=10)
    assert "max_unpacked_size" not in plain.hashed_content()["source"]
    paths = {Derivation(r, {}, "x86_64-linux").path for r in (plain, capped)}
    assert len(paths) == 1


def zeros_tgz(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("pkg/zeros")
        info.size = size
        tf.addfile(info, io.BytesIO(bytes(size)))
    return gzip.compress(buf.getvalue())


def test_add_file_honours_the_recipe_caps(tmp_path: Path) -> None:
    file = tmp_path / "d.tgz"
    file.write_bytes(zeros_tgz(2_000_000))
    with pytest.raises(FetchError, match=r"member 'pkg/zeros'.*max_unpacked_size"):
        unpack_local(fetch(max_unpacked_size="1MB"), file, tmp_path / "capped", SHA)
    assert not (tmp_path / "capped").exists()
    unpack_local(fetch(), file, tmp_path / "default", SHA)
    assert (tmp_path / "default/pkg/zeros").stat().st_size == 2_000_000


def test_fetch_honours_the_recipe_caps(mlpkg_cli: MlpkgCli) -> None:
    data = zeros_tgz(2_000_000)
    file = mlpkg_cli.home.parent / "zeros-1.0.tar.gz"
    file.write_bytes(data)
    text = fetch_toml("zeros", "1.0", [file.as_uri()], hashlib.sha256(data).hexdigest())
    mlpkg_cli.recipes.add("zeros", "1.0", text + 'max_unpacked_size = "1MB"\n')
    r = mlpkg_cli.run("build", "zeros")
    assert r.code == 1, str(r)
    error = [line for line in r.err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, r.err
    assert "Refusing archive 'zeros@1.0': member 'pkg/zeros'" in error[0], r.err
    assert "past the cap of 976.6 KiB (max_unpacked_size)" in error[0], r.err
    assert [p.name for p in mlpkg_cli.store.iterdir() if not p.name.startswith(".")] == []
    mlpkg_cli.recipes.add("zeros", "1.0", text + 'max_unpacked_size = "3MB"\n')
    out = Path(mlpkg_cli.run("build", "zeros").ok().out.strip())
    assert (out / "zeros").stat().st_size == 2_000_000

"""The download cache: a cold store realises from it without the network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from mlpkg.store.dlcache import DownloadCache


def test_get_put_and_damage(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "cache")
    src = tmp_path / "file"
    src.write_bytes(b"payload")
    sha = hashlib.sha256(b"payload").hexdigest()
    assert not cache.get(sha, tmp_path / "out")
    cache.put(src, sha)
    assert cache.get(sha, tmp_path / "out") and (tmp_path / "out").read_bytes() == b"payload"
    entry = tmp_path / "cache" / "sha256" / sha
    entry.write_bytes(b"damaged")
    assert not cache.get(sha, tmp_path / "again")  # re-hashed, refused, forgotten
    assert not entry.exists() and not (tmp_path / "again").exists()
    cache.put(src, sha)
    assert cache.clear() == len(b"payload") and not entry.exists()


def test_a_cold_store_builds_from_the_cache_offline(tmp_path: Path) -> None:
    data = tmp_path / "model.bin"
    data.write_bytes(os.urandom(4096))
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    recipes = tmp_path / "recipes" / "model"
    recipes.mkdir(parents=True)
    (recipes / "1.0.toml").write_text(
        f'name = "model"\nversion = "1.0"\nkind = "fetch"\n[source]\n'
        f'urls = ["{data.as_uri()}"]\nsha256 = "{sha}"\n'
    )
    env = {**os.environ, "MLPKG_HOME": str(tmp_path / "home"),
           "MLPKG_RECIPES_PATH": str(tmp_path / "recipes")}  # fmt: skip

    def mlpkg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    first = mlpkg("build", "model")
    assert first.returncode == 0, first.stderr
    assert mlpkg("gc").returncode == 0 and not Path(first.stdout.strip()).exists()
    data.unlink()  # the source is gone: only the cache can help
    again = mlpkg("build", "-v", "model")
    assert again.returncode == 0, again.stderr
    assert "from the download cache" in again.stderr
    assert Path(again.stdout.strip()).read_bytes() != b""
    assert mlpkg("gc", "--downloads").returncode == 0
    assert mlpkg("gc").returncode == 0
    assert mlpkg("build", "model").returncode == 1  # now nothing has it

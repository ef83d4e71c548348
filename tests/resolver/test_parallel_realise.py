"""Wheels are realised in worker threads (issue 15): several independent wheel paths of a
plan are made at once, while the thread that owns the store takes their locks, renames
and registers them in plan order. The result is what a serial realisation gives; a
failure stops new work and leaves no temporary directory and no lock behind."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mlpkg.store.locks import is_locked

NAMES = [f"pkg{i}" for i in range(6)]


def make_wheel(directory: Path, name: str) -> Path:
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f"VALUE = {name!r}\n" + "# padding\n" * 2000,
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for member, text in files.items():
            data = text.encode()
            z.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{member},sha256={digest.decode()},{len(data)}")
        record.append(f"{name}-1.0.dist-info/RECORD,,")
        z.writestr(f"{name}-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def recipes(tmp_path: Path, bad: str | None = None) -> Path:
    """One wheel recipe per name; ``bad``'s declared sha256 is not its file's."""
    root = tmp_path / "recipes"
    for name in NAMES:
        wheel = make_wheel(tmp_path, name)
        sha = "0" * 64 if name == bad else hashlib.sha256(wheel.read_bytes()).hexdigest()
        (root / name).mkdir(parents=True)
        (root / name / "1.0.toml").write_text(
            f'name = "{name}"\nversion = "1.0"\nkind = "wheel"\n[inputs]\npython = "python"\n'
            f'[source]\nurls = ["{wheel.as_uri()}"]\nsha256 = "{sha}"\n'
            f'[wheel]\nfilename = "{wheel.name}"\n'
        )
    return root


def mlpkg(tmp_path: Path, recipe_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLPKG_HOME": str(tmp_path / "home"),
           "MLPKG_CACHE_DIR": str(tmp_path / "downloads"), "MLPKG_RECIPES_PATH": str(recipe_dir)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def leftovers(tmp_path: Path) -> list[str]:
    store = tmp_path / "home" / "store"
    return sorted(p.name for p in store.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_independent_wheels_are_all_made_and_reported_once(tmp_path: Path, cache: str) -> None:
    recipe_dir = recipes(tmp_path)
    if cache == "warm":  # the second install reads every wheel from the download cache
        assert mlpkg(tmp_path, recipe_dir, "build", *NAMES).returncode == 0
        subprocess.run(["rm", "-rf", str(tmp_path / "home")], check=True)
    r = mlpkg(tmp_path, recipe_dir, "build", *NAMES)
    assert r.returncode == 0, r.stderr
    starts = [line.split()[0] for line in r.stderr.splitlines() if line.startswith("[")]
    assert sorted(starts) == sorted(set(starts)) and len(starts) == len(NAMES) + 1
    assert len(r.stdout.split()) == len(NAMES)
    for out in r.stdout.split():
        name = Path(out).name.split("-")[1]
        site = next((Path(out) / "lib").glob("python*/site-packages"))
        assert (site / name / "__init__.py").read_text().startswith(f"VALUE = {name!r}")
    check = mlpkg(tmp_path, recipe_dir, "verify", "--check-contents")
    assert check.returncode == 0, check.stderr
    assert leftovers(tmp_path) == []


def test_a_failing_wheel_stops_the_others_and_leaves_nothing_behind(tmp_path: Path) -> None:
    recipe_dir = recipes(tmp_path, bad="pkg2")
    r = mlpkg(tmp_path, recipe_dir, "build", *NAMES)
    assert r.returncode == 1
    assert "pkg2" in r.stderr and "sha256" in r.stderr.lower()
    assert leftovers(tmp_path) == []
    home = tmp_path / "home"
    assert not any(is_locked(lock) for lock in (home / "locks").iterdir())
    assert mlpkg(tmp_path, recipe_dir, "verify", "--check-contents").returncode == 0
    # What was not made is made by the next run, once the recipe is right.
    (tmp_path / "fixed").mkdir()
    good = recipes(tmp_path / "fixed")
    r = mlpkg(tmp_path, good, "build", *NAMES)
    assert r.returncode == 0, r.stderr


def test_keep_going_makes_every_wheel_but_the_failing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpkg.errors import FetchError
    from mlpkg.resolver.realise import realise_plan
    from mlpkg.session import Session

    monkeypatch.setenv("MLPKG_CACHE_DIR", str(tmp_path / "downloads"))
    session = Session(recipe_dirs=[recipes(tmp_path, bad="pkg2")], home=tmp_path / "home")
    try:
        plan = session.plan(NAMES)
        with pytest.raises(FetchError) as caught:
            realise_plan(plan, session.store, keep_going=True)
        assert "pkg2" in caught.value.message
        made = {p.name for p in session.store.valid_among(n.path for n in plan.nodes)}
        assert {f"{name}-1.0" for name in NAMES if name != "pkg2"} <= made
        assert "pkg2-1.0" not in made
    finally:
        session.close()
    assert leftovers(tmp_path) == []

"""Issue 13's "done when": the main job's closure shared through caches and a bundle.

Home A builds `retinanet-offline+synthetic` (its wheels from the Python package index,
hence ``pypi``) and pushes it, signed; an empty home B, whose registries are unreachable
(every proxy variable points at a closed port, only 127.0.0.1 is exempt), gets every path
from nginx, from S3 (moto), and from a bundle file, with no fetch and no build, and the
same archive hashes; then runs the benchmark. CI runs this module (.ci/run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import CliResult

pytestmark = pytest.mark.pypi

REPO = Path(__file__).resolve().parents[2]
APP = "retinanet-offline+synthetic"
OFFLINE = {  # registries unreachable: every proxy is a closed port, loopback exempt
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def mlpkg(home: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
    full = {k: v for k, v in full.items() if k.lower() not in {n.lower() for n in OFFLINE}}
    full["MLPKG_HOME"] = str(home)
    full.update(env or {})
    p = subprocess.run([sys.executable, "-m", "mlpkg", *args], env=full, cwd=REPO,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    return CliResult(p.returncode, p.stdout, p.stderr, args)


class Team:
    """Home A, with the closure built and a signing key; B homes are made per test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.a = root / "a"
        mlpkg(self.a, "build", APP).ok()
        self.public = mlpkg(self.a, "key", "generate", "team").ok().out.strip()
        self.hashes = self.archive_hashes(self.a)

    def archive_hashes(self, home: Path) -> dict[str, str]:
        docs = mlpkg(home, "path-info", "--closure", "--json", APP).ok().json()
        return {Path(d["path"]).name: d["archive_hash"] for d in docs}

    def home_b(self, name: str) -> Path:
        return self.root / name

    def b(self, home: Path, *args: str) -> CliResult:
        return mlpkg(home, *args, env={**OFFLINE, "MLPKG_TRUSTED_KEYS": self.public})


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    return Team(tmp_path_factory.mktemp("team"))


def _substitutes_everything(team: Team, home: Path, url: str) -> None:
    plan = team.b(home, "build", "--dry-run", "--json", "--substituter", url, APP).ok().json()
    actions = {n["name"]: n["action"] for n in plan["plan"]["nodes"]}
    assert not {k: a for k, a in actions.items() if a in ("fetch", "build", "install")}, actions
    assert "substitute" in actions.values()
    r = team.b(home, "run", APP, "--accuracy", "--substituter", url).ok()
    assert "mAP=" in r.out
    assert not list((home / "logs").glob("*.log")), "something was built in B"
    hashes = team.archive_hashes(home)
    assert hashes == {p: team.hashes[p] for p in hashes}
    assert set(hashes) == set(team.hashes)
    team.b(home, "verify", "--check-contents").ok()  # the recorded hashes are the content's


def test_nginx_cache_gives_the_whole_closure(team: Team, nginx_cache) -> None:
    mlpkg(team.a, "push", "--to", nginx_cache.url, "--key", "team", APP).ok()
    _substitutes_everything(team, team.home_b("b-nginx"), nginx_cache.url)


def test_s3_cache_gives_the_whole_closure(team: Team, s3_cache) -> None:
    mlpkg(team.a, "push", "--to", s3_cache.url, "--key", "team", APP).ok()
    _substitutes_everything(team, team.home_b("b-s3"), s3_cache.url)


def test_bundle_gives_the_whole_closure(team: Team, tmp_path: Path) -> None:
    lock = tmp_path / "mlpkg.lock"
    bundle = tmp_path / "closure.bundle"
    mlpkg(team.a, "lock", APP, "--realise", "-o", str(lock)).ok()
    mlpkg(team.a, "bundle", "create", "--lock", str(lock), "-o", str(bundle), "--key", "team").ok()
    home = team.home_b("b-bundle")
    team.b(home, "bundle", "import", str(bundle)).ok()
    plan = team.b(home, "build", "--dry-run", "--json", "--lock", str(lock)).ok().json()
    pending = [n for n in plan["plan"]["nodes"] if n["action"] in ("fetch", "build", "install")]
    assert not pending
    r = team.b(home, "run", "--lock", str(lock), "--accuracy").ok()
    assert "mAP=" in r.out
    assert not list((home / "logs").glob("*.log"))
    hashes = team.archive_hashes(home)
    assert hashes == {p: team.hashes[p] for p in hashes}
    assert json.loads(json.dumps(hashes))  # a closure, not nothing

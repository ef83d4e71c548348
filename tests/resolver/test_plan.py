"""Hashing recipes into store paths (invariant 1), plans, and the plan cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mlpkg.errors import RecipeError, UnknownPackage
from mlpkg.recipes.index import RecipeIndex
from mlpkg.resolver import plancache
from mlpkg.resolver.plan import make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.store import Store

SHA = "a" * 64


def fetch(name: str, version: str, url: str = "https://example.org/x.tar.gz", sha: str = SHA,
          unpack: bool = True) -> str:  # fmt: skip
    return (f'name = "{name}"\nversion = "{version}"\nkind = "fetch"\n[source]\n'
            f'urls = ["{url}"]\nsha256 = "{sha}"\nunpack = {str(unpack).lower()}\n')  # fmt: skip


def build(name: str, version: str, inputs: dict[str, str], script: str = "mkdir $out",
          extra: str = "") -> str:  # fmt: skip
    ins = "".join(f'{k} = "{v}"\n' for k, v in inputs.items())
    return (f'name = "{name}"\nversion = "{version}"\nkind = "build"\n{extra}[inputs]\n{ins}'
            f'[build]\nscript = "{script}"\n')  # fmt: skip


def write(root: Path, name: str, version: str, text: str) -> Path:
    f = root / name / f"{version}.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "recipes"
    write(root, "src", "1.0", fetch("src", "1.0"))
    write(root, "lib", "1.0", build("lib", "1.0", {"src": "src@1.0"}))
    write(root, "lib", "2.0", build("lib", "2.0", {"src": "src@1.0"}))
    write(root, "app", "1.0", build("app", "1.0", {"lib": "lib@1", "src": "src"},
                                    extra='aliases = ["application"]\n'))  # fmt: skip
    return root


def plan_paths(recipes: list[Path], home: Path, *specs: str) -> dict[str, str]:
    with Store(home) as store:
        plan = make_plan(IndexProvider(RecipeIndex(recipes)), [parse_spec(s) for s in specs], store)
        return {n.drv.name: str(n.path) for n in plan.nodes}


def test_paths_do_not_depend_on_store_root_or_time(repo: Path, tmp_path: Path) -> None:
    a = plan_paths([repo], tmp_path / "home-a", "app")
    time.sleep(0.01)
    b = plan_paths([repo], tmp_path / "elsewhere" / "home-b", "app")
    assert a == b
    assert a["lib"].endswith("-lib-1.0")  # @1 picks 1.0, not 2.0


def test_fixed_output_path_ignores_urls_but_not_hash_or_unpack(repo: Path, tmp_path: Path) -> None:
    before = plan_paths([repo], tmp_path / "h", "app")
    write(repo, "src", "1.0", fetch("src", "1.0", url="https://mirror.example.net/other.tgz"))
    after = plan_paths([repo], tmp_path / "h", "app")
    assert after == before
    write(repo, "src", "1.0", fetch("src", "1.0", unpack=False))
    assert plan_paths([repo], tmp_path / "h", "src")["src"] != before["src"]
    write(repo, "src", "1.0", fetch("src", "1.0", sha="b" * 64))
    changed = plan_paths([repo], tmp_path / "h", "app")
    # A changed input changes every path above it, bottom-up.
    assert all(changed[n] != before[n] for n in ("src", "lib", "app"))


def test_summary_does_not_change_a_path_but_the_script_does(repo: Path, tmp_path: Path) -> None:
    before = plan_paths([repo], tmp_path / "h", "lib@1.0")["lib"]
    text = build("lib", "1.0", {"src": "src@1.0"}, extra='summary = "now documented"\n')
    write(repo, "lib", "1.0", text)
    assert plan_paths([repo], tmp_path / "h", "lib@1.0")["lib"] == before
    write(repo, "lib", "1.0", build("lib", "1.0", {"src": "src@1.0"}, script="mkdir -p $out"))
    assert plan_paths([repo], tmp_path / "h", "lib@1.0")["lib"] != before


def test_plan_says_what_it_will_do(repo: Path, tmp_path: Path) -> None:
    with Store(tmp_path / "h") as store:
        plan = make_plan(IndexProvider(RecipeIndex([repo])), [parse_spec("application")], store)
        assert [n.drv.name for n in plan.nodes] == ["src", "lib", "app"]
        assert plan.counts() == {"valid": 0, "fetch": 1, "build": 2, "link": 0, "install": 0}
        assert plan.roots == [plan.nodes[-1].path]


def test_earlier_directory_shadows_a_package(repo: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write(mine, "lib", "1.5", build("lib", "1.5", {"src": "src@1.0"}))
    index = RecipeIndex([mine, repo])
    assert [f.version for f in index.files("lib")] == ["1.5"]
    assert index.canonical_name("Application") == "app"


def test_unknown_names_get_suggestions(repo: Path) -> None:
    with pytest.raises(UnknownPackage) as e:
        RecipeIndex([repo]).canonical_name("lbi")
    assert "lib" in (e.value.hint or "")


def test_an_alias_claimed_twice_is_an_error(repo: Path) -> None:
    write(repo, "other", "1.0", build("other", "1.0", {}, extra='aliases = ["application"]\n'))
    with pytest.raises(RecipeError, match="already an alias"):
        RecipeIndex([repo]).canonical_name("application")


def cached(repo: Path, home: Path, specs: list[str]) -> bool:
    key = plancache.cache_key(specs, [repo], "test")
    return plancache.load(home, key) is not None


def fill_cache(repo: Path, home: Path, specs: list[str]) -> None:
    index = RecipeIndex([repo])
    provider = IndexProvider(index)
    with Store(home) as store:
        plan = make_plan(provider, [parse_spec(s) for s in specs], store)
    key = plancache.cache_key(specs, [repo], "test")
    plancache.save(home, key, plan.to_json(), index.stamps, provider.detector.stamps)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: write(r, "lib", "1.0", build("lib", "1.0", {"src": "src@1.0"}, "true")),
        lambda r: write(r, "lib", "1.9", build("lib", "1.9", {"src": "src@1.0"})),
        lambda r: os.unlink(r / "lib" / "1.0.toml"),
        lambda r: write(r, "new", "1.0", build("new", "1.0", {})),
    ],
    ids=["edited-recipe", "new-version", "removed-version", "new-package"],
)
def test_plan_cache_notices_changes(repo: Path, tmp_path: Path, change: object) -> None:
    fill_cache(repo, tmp_path / "h", ["app"])
    assert cached(repo, tmp_path / "h", ["app"])
    time.sleep(0.01)  # a different mtime even on coarse clocks
    change(repo)  # type: ignore[operator]
    assert not cached(repo, tmp_path / "h", ["app"])


def test_plan_cache_notices_a_changed_external(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho mytool 1.2.3\n")
    tool.chmod(0o755)
    repo = tmp_path / "recipes"
    write(repo, "mytool", "external", 'name = "mytool"\nversion = "external"\nkind = "external"\n'
          '[external]\ndetect = "mytool"\nexecutables = ["mytool"]\n')  # fmt: skip
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{old_path}"
    try:
        fill_cache(repo, tmp_path / "h", ["mytool"])
        assert cached(repo, tmp_path / "h", ["mytool"])
        time.sleep(0.01)
        tool.write_text("#!/bin/sh\necho mytool 1.2.4\n")
        assert not cached(repo, tmp_path / "h", ["mytool"])
    finally:
        os.environ["PATH"] = old_path


def test_external_hash_covers_version_not_location(tmp_path: Path) -> None:
    repo = tmp_path / "recipes"
    write(repo, "mytool", "external", 'name = "mytool"\nversion = "external"\nkind = "external"\n'
          '[external]\ndetect = "mytool"\nexecutables = ["mytool"]\n')  # fmt: skip
    paths = []
    for where, version in (("a", "1.2.3"), ("b", "1.2.3"), ("c", "1.3.0")):
        bindir = tmp_path / where
        bindir.mkdir()
        (bindir / "mytool").write_text(f"#!/bin/sh\necho mytool {version}\n")
        (bindir / "mytool").chmod(0o755)
        old = os.environ["PATH"]
        os.environ["PATH"] = f"{bindir}:{old}"
        try:
            paths.append(plan_paths([repo], tmp_path / "h", "mytool")["mytool"])
        finally:
            os.environ["PATH"] = old
    assert paths[0] == paths[1] != paths[2]
    assert paths[0].endswith("-mytool-1.2.3")


def test_a_tool_found_through_a_shim_is_not_cached(tmp_path: Path) -> None:
    """pyenv-style shims choose what they run from the environment: never cache such plans."""
    bindir = tmp_path / "shims"
    bindir.mkdir()
    shim = bindir / "mytool"
    shim.write_text('#!/bin/sh\necho "mytool ${MYTOOL_VERSION:-1.0.0}"\n')
    shim.chmod(0o755)
    repo = tmp_path / "recipes"
    write(repo, "mytool", "external", 'name = "mytool"\nversion = "external"\nkind = "external"\n'
          '[external]\ndetect = "mytool"\nexecutables = ["mytool"]\n')  # fmt: skip
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{old}"
    try:
        index = RecipeIndex([repo])
        provider = IndexProvider(index)
        with Store(tmp_path / "h") as store:
            make_plan(provider, [parse_spec("mytool")], store)
        assert provider.detector.volatile
    finally:
        os.environ["PATH"] = old

"""Resolution with backtracking (:mod:`mlpkg.importer.resolve`), against a fake index on
loopback: a newer release whose requirements cannot hold is given up for an older one, and
when nothing fits, the error names the package, its requirers and its usable versions."""

from __future__ import annotations

import re

import pytest

from mlpkg.errors import ResolutionError, UnknownPackage


def metadata_reads(index, name: str, version: str) -> int:
    """How many requests went to one pure-Python wheel of ``name`` (its METADATA reads)."""
    return len(index.requests_to(f"/files/{name}-{version}-py3-none-any.whl"))


def test_an_older_requirer_is_chosen_when_the_newest_conflicts(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("a", "3.0", requires_dist=("b<2",))  # newest a: clashes with the root's b>=2
    index.publish("a", "2.0", requires_dist=("b>=2",))
    index.publish("a", "1.0", requires_dist=("b>=2",))
    index.publish("b", "1.0")
    index.publish("b", "2.0")
    said: list[str] = []
    recipes = run_import(index, target311, client, tmp_path, "a", "b>=2", on_progress=said.append)
    assert set(recipes) == {"a@2.0", "b@2.0"}
    assert recipes["a@2.0"]["inputs"] == {"python": "python@3.11", "b": "b@>=2"}
    assert (
        "a 3.0 cannot be used: no version of b satisfies b>=2 (required by the command line) and b<2 (required by a 3.0)"
        in said
    )
    assert metadata_reads(index, "a", "1.0") == 0  # never looked at: 2.0 fitted
    assert metadata_reads(index, "b", "1.0") == 0


def test_backtracking_reaches_through_a_transitive_requirement(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("app", "1.0", requires_dist=("mid", "leaf>=2"))
    index.publish("mid", "2.0", requires_dist=("deep",))
    index.publish("mid", "1.0")
    index.publish("deep", "1.0", requires_dist=("leaf<2",))  # mid 2.0 cannot be used
    index.publish("leaf", "1.0")
    index.publish("leaf", "2.0")
    recipes = run_import(index, target311, client, tmp_path, "app")
    assert set(recipes) == {"app@1.0", "mid@1.0", "leaf@2.0"}  # deep left no trace


def test_an_extra_of_the_newest_release_can_force_an_older_one(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("lib", "2.0", requires_dist=("core", "fast<1; extra == 'speed'"))
    index.publish("lib", "1.0", requires_dist=("core", "fast>=1; extra == 'speed'"))
    index.publish("core", "1.0")
    index.publish("fast", "0.5")
    index.publish("fast", "1.5")
    recipes = run_import(index, target311, client, tmp_path / "x", "lib[speed]", "fast>=1")
    assert set(recipes) == {"lib@1.0", "core@1.0", "fast@1.5"}
    recipes = run_import(index, target311, client, tmp_path / "y", "lib", "fast>=1")
    assert set(recipes) == {"lib@2.0", "core@1.0", "fast@1.5"}  # the extra is not wanted


def test_when_every_version_conflicts_the_error_names_requirers_and_versions(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("a", "2.0", requires_dist=("b<2",))
    index.publish("a", "1.0", requires_dist=("b<1.5",))
    index.publish("b", "1.0")
    index.publish("b", "2.0")
    with pytest.raises(ResolutionError) as info:
        run_import(index, target311, client, tmp_path / "out", "a", "b>=2")
    err = info.value
    assert err.package == "b"
    assert re.fullmatch(
        r"No version of b satisfies both b>=2 \(required by the command line\) and "
        r"b<(2|1\.5) \(required by a (2|1)\.0\); versions of b with a wheel for "
        r"cp311 manylinux x86_64: 1\.0, 2\.0\.",
        err.message,
    ), err.message
    assert "b<2 is required by a 2.0" in err.details
    assert "b<1.5 is required by a 1.0" in err.details
    assert err.details[-2:] == [  # every version given up, and why
        "a 2.0 cannot be used: no version of b satisfies b>=2 (required by the command line) "
        "and b<2 (required by a 2.0)",
        "a 1.0 cannot be used: no version of b satisfies b>=2 (required by the command line) "
        "and b<1.5 (required by a 1.0)",
    ]
    assert not (tmp_path / "out").exists()


def test_a_conflict_through_an_extra_names_the_extra(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("lib", "1.0", requires_dist=("fast<1; extra == 'speed'",))
    index.publish("fast", "0.5")
    index.publish("fast", "1.5")
    with pytest.raises(ResolutionError) as info:
        run_import(index, target311, client, tmp_path, "lib[speed]", "fast>=1")
    assert info.value.package == "fast"
    assert "fast<1 (required by lib[speed] 1.0)" in info.value.message
    assert "fast>=1 (required by the command line)" in info.value.message


def test_a_dependency_no_version_fits_sends_the_search_to_an_older_requirer(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("app", "3.0", requires_dist=("lib==9",))  # lib has no 9
    index.publish("app", "2.0", requires_dist=("lib>=2",))  # lib 2.0's METADATA wants 3.13
    index.publish("app", "1.0", requires_dist=("lib",))
    index.publish("lib", "1.0")
    index.publish("lib", "2.0", requires_python=">=3.13")
    recipes = run_import(index, target311, client, tmp_path, "app")
    assert set(recipes) == {"app@1.0", "lib@1.0"}


def test_with_one_requirer_the_unusable_pin_is_reported_as_before(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("app", "1.0", requires_dist=("lib==9",))
    index.publish("lib", "1.0")
    with pytest.raises(UnknownPackage) as info:
        run_import(index, target311, client, tmp_path, "app")
    err = info.value
    assert (err.message, err.package) == ("lib has no version 9 on the index.", "lib")
    assert err.details == [
        "required by app 1.0 (lib==9)",
        "nearest versions with a wheel for cp311 manylinux x86_64: 1.0",
    ]
    assert err.hint == "Ask for one of those, e.g. lib==1.0."


def test_a_search_that_does_not_settle_is_a_resolution_error(
    fake_index, run_import, client, target311, tmp_path, monkeypatch
):
    from mlpkg.importer import resolve

    index = fake_index()
    index.publish("a", "1.0", requires_dist=("b",))
    index.publish("b", "1.0")
    monkeypatch.setattr(resolve, "MAX_ROUNDS", 1)
    with pytest.raises(ResolutionError, match=r"did not settle after 1 rounds"):
        run_import(index, target311, client, tmp_path, "a")

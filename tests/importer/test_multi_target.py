"""``import_packages`` for several interpreters at once (issue 12): one resolution per
target, one recipe per release chosen by any of them, listing a wheel per interpreter in
``[[wheel.files]]``, merged with the recipe already there. Real wheels, a fake index on
loopback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import mlpkg.resolver  # noqa: F401  (registers every recipe kind)
from mlpkg.importer import Target, import_packages
from mlpkg.importer.recipe import HAND_WRITTEN
from mlpkg.recipes.loader import load

PLATFORM = "manylinux_2_17_x86_64"


def binary(py: str) -> str:
    return f"cp{py}-cp{py}-{PLATFORM}"


def entry(index: Any, wheel: Any) -> dict[str, Any]:
    return {"filename": wheel.filename, "urls": [index.file_url(wheel.filename)],
            "sha256": wheel.sha256}  # fmt: skip


def valid(into: Path) -> None:
    """Every recipe written is one the recipe loader accepts."""
    for path in into.glob("*/*.toml"):
        load(path)


def test_two_targets_give_one_recipe_with_a_wheel_for_each(
    fake_index, run_import, client, target39, target311, tmp_path
):
    index = fake_index()
    deps = ("dep>=1",)
    w39 = index.publish("fast", "1.0", tags=binary("39"), requires_dist=deps,
                        requires_python=">=3.8")  # fmt: skip
    w311 = index.publish("fast", "1.0", tags=binary("311"), requires_dist=deps,
                         requires_python=">=3.8")  # fmt: skip
    index.publish("fast", "1.0", tags=binary("310"), requires_dist=deps)
    index.publish("dep", "1.0")
    recipes = run_import(index, [target39, target311], client, tmp_path, "fast")
    assert set(recipes) == {"fast@1.0", "dep@1.0"}
    assert recipes["fast@1.0"] == {
        "name": "fast",
        "version": "1.0",
        "summary": "The fast package",
        "kind": "wheel",
        "inputs": {"python": "python@3.9,3.11", "dep": "dep@>=1"},
        "wheel": {"requires_python": ">=3.8", "files": [entry(index, w39), entry(index, w311)]},
    }
    valid(tmp_path)


def test_a_pure_wheel_chosen_by_both_is_one_file(
    fake_index, run_import, client, target39, target311, tmp_path
):
    index = fake_index()
    pure = index.publish("pure", "2.0", tags="py3-none-any")
    recipes = run_import(index, [target311, target39], client, tmp_path, "pure")
    assert recipes["pure@2.0"]["inputs"] == {"python": "python@3.9,3.11"}
    assert recipes["pure@2.0"]["wheel"] == {"files": [entry(index, pure)]}
    assert "source" not in recipes["pure@2.0"]
    valid(tmp_path)


def test_a_dependency_chosen_differently_per_target_gets_a_recipe_per_version(
    fake_index, run_import, client, target39, target311, tmp_path
):
    """dep 2.0 needs Python 3.10: 3.9 takes dep 1.0, 3.11 dep 2.0; each of those serves
    one interpreter, in the one-file form. The backport only 3.9 needs is an input of the
    release both chose (a recipe has one set of inputs)."""
    index = fake_index()
    index.publish("app", "1.0", requires_dist=("dep>=1", "backport; python_version < '3.10'"))
    index.publish("dep", "1.0")
    index.publish("dep", "2.0", index_attrs={"requires_python": ">=3.10"})
    index.publish("backport", "1.0")
    recipes = run_import(index, [target39, target311], client, tmp_path, "app")
    assert set(recipes) == {"app@1.0", "dep@1.0", "dep@2.0", "backport@1.0"}
    assert recipes["app@1.0"]["inputs"] == {
        "python": "python@3.9,3.11",
        "backport": "backport",
        "dep": "dep@>=1",
    }
    assert recipes["dep@1.0"]["inputs"] == {"python": "python@3.9"}
    assert recipes["dep@1.0"]["wheel"] == {"filename": "dep-1.0-py3-none-any.whl"}
    assert recipes["dep@2.0"]["inputs"] == {"python": "python@3.11"}
    assert recipes["dep@2.0"]["wheel"]["requires_python"] == ">=3.10"
    assert recipes["backport@1.0"]["inputs"] == {"python": "python@3.9"}
    valid(tmp_path)


def test_specifiers_that_differ_per_target_keep_the_wider(
    fake_index, run_import, client, target39, target311, tmp_path
):
    index = fake_index()
    index.publish("app", "1.0", tags=binary("39"),
                  requires_dist=("dep>=1", "other>=1", "third>=1,<3"))  # fmt: skip
    index.publish("app", "1.0", tags=binary("311"),
                  requires_dist=("dep>=1,<3", "other>=2", "third>=2,<4"))  # fmt: skip
    for version in ("1.0", "2.0", "3.0"):
        for name in ("dep", "other", "third"):
            index.publish(name, version)
    recipes = run_import(index, [target39, target311], client, tmp_path, "app")
    assert recipes["app@1.0"]["inputs"] == {
        "python": "python@3.9,3.11",
        "dep": "dep@>=1",  # fewer clauses: admits all the other admits
        "other": "other@>=1",  # admits a superset of the index's versions
        "third": "third",  # neither: unconstrained
    }


def test_importing_another_interpreter_merges_into_a_one_file_recipe(
    fake_index, client, target39, target311, tmp_path
):
    index = fake_index()
    w39 = index.publish("fast", "1.0", tags=binary("39"), requires_python=">=3.8")
    w311 = index.publish("fast", "1.0", tags=binary("311"), requires_python=">=3.8")

    def run(*targets: Target) -> list[Path]:
        return import_packages(["fast"], list(targets), index_url=index.index_url,
                               client=client, into=tmp_path)  # fmt: skip

    path = tmp_path / "fast" / "1.0.toml"
    assert run(target311) == [path]
    one = tomllib.loads(path.read_text())
    assert one["wheel"]["filename"] == w311.filename and "files" not in one["wheel"]
    assert run(target39) == [path]  # the 3.11 wheel is kept, the 3.9 one added
    both = tomllib.loads(path.read_text())
    assert "source" not in both and "filename" not in both["wheel"]
    assert both["inputs"] == {"python": "python@3.9,3.11"}
    assert both["wheel"]["files"] == [entry(index, w39), entry(index, w311)]
    assert both["wheel"]["requires_python"] == ">=3.8"
    text = path.read_text()
    assert run(target311) == [] and run(target39) == [] and run(target39, target311) == []
    assert path.read_text() == text
    valid(tmp_path)


def test_hand_edits_survive_the_conversion_and_later_imports(
    fake_index, client, target39, target311, tmp_path
):
    index = fake_index()
    index.publish("fast", "1.0", tags=binary("39"))
    w311 = index.publish("fast", "1.0", tags=binary("311"))
    kw: dict[str, Any] = {"index_url": index.index_url, "client": client, "into": tmp_path}
    import_packages(["fast"], target311, **kw)
    path = tmp_path / "fast" / "1.0.toml"
    tail = HAND_WRITTEN + '[variants.source]\nkind = "build"\nremove = ["source", "wheel"]\n'
    tail += '[variants.source.build]\nscript = "mkdir $out"\n'
    hand = '\n[env]\nFAST_MODE = { set = "1" }  # ours\n\n' + tail
    edited = path.read_text().replace("# Imported", "# Kept. Imported")
    path.write_text(edited.replace('kind = "wheel"', 'kind = "wheel"  # a wheel') + hand)
    import_packages(["fast"], [target39, target311], **kw)
    text = path.read_text()
    assert text.startswith("# Kept. Imported") and 'kind = "wheel"  # a wheel\n' in text
    assert text.endswith(hand)
    recipe = tomllib.loads(text)
    assert recipe["env"] == {"FAST_MODE": {"set": "1"}}
    assert [f["filename"] for f in recipe["wheel"]["files"]][1] == w311.filename
    # A comment in a file entry stays when that entry's hash changes upstream.
    path.write_text(text.replace("[[wheel.files]]\n", "[[wheel.files]]\n# mirror me\n", 1))
    again = fake_index()
    again.publish("fast", "1.0", tags=binary("39"), summary="Changed")
    import_packages(["fast"], target39, **{**kw, "index_url": again.index_url})
    final = path.read_text()
    assert "[[wheel.files]]\n# mirror me\n" in final and final.endswith(hand)
    recipe = tomllib.loads(final)
    assert recipe["summary"] == "Changed"
    assert recipe["wheel"]["files"][1]["filename"] == w311.filename
    assert recipe["wheel"]["files"][0]["urls"] == [again.file_url(f"fast-1.0-{binary('39')}.whl")]
    valid(tmp_path)


def test_one_target_in_a_list_writes_what_one_target_always_did(
    fake_index, client, target311, tmp_path
):
    index = fake_index()
    index.publish("fast", "1.0", tags=binary("311"), requires_dist=("dep",))
    index.publish("dep", "1.0")
    kw: dict[str, Any] = {"index_url": index.index_url, "client": client}
    import_packages(["fast"], target311, into=tmp_path / "a", **kw)
    import_packages(["fast"], [target311, target311], into=tmp_path / "b", **kw)
    for rel in ("fast/1.0.toml", "dep/1.0.toml"):
        text = (tmp_path / "a" / rel).read_text()
        assert text == (tmp_path / "b" / rel).read_text()
        assert "[source]" in text and "[[wheel.files]]" not in text


def test_a_failure_for_one_target_writes_nothing(fake_index, client, target39, target311, tmp_path):
    index = fake_index()
    index.publish("new", "1.0", tags=binary("311"))
    try:
        import_packages(["new"], [target311, target39], index_url=index.index_url,
                        client=client, into=tmp_path / "out")  # fmt: skip
    except Exception as exc:
        assert "cp39" in str(getattr(exc, "message", exc))
    else:
        raise AssertionError("expected the 3.9 resolution to fail")
    assert not (tmp_path / "out").exists()


def test_project_pages_are_read_once_for_all_targets(
    fake_index, client, target39, target311, tmp_path
):
    index = fake_index()
    index.publish("pure", "1.0")
    import_packages(["pure"], [target39, target311], index_url=index.index_url,
                    client=client, into=tmp_path)  # fmt: skip
    assert len(index.requests_to("/simple/pure/")) == 1

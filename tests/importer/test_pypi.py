"""``import_packages``: recipes for a dependency tree, from a fake index on loopback."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import httpx
import pytest

from mlpkg.errors import ResolutionError, UnknownPackage
from mlpkg.importer import Overrides, Target, import_packages

MB = 1024 * 1024
LINUX = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
ORT_DEPS = (
    "numpy>=1.21.6",
    "coloredlogs",
    "Flat.Buffers",
    "old-backport; python_version < '3.10'",
    "linux-helper>=2; sys_platform == 'linux'",
    "win-helper; sys_platform == 'win32'",
    "cuda-only; extra == 'gpu'",
)
WORSE_TAGS = (  # other wheels of the same release, each ranked below the chosen one
    LINUX,
    "cp311-cp311-win_amd64",
    "cp310-cp310-manylinux_2_28_x86_64",
    "cp311-abi3-manylinux_2_28_x86_64",
)


def test_recipe_fields_tag_choice_and_markers(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    best = index.publish(
        "ortlike",
        "1.17.3",
        tags="cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64",
        requires_dist=ORT_DEPS,
        requires_python=">=3.8",
        summary="ORT-like runtime",
        index_attrs={"requires_python": ">=3.8"},
    )
    for tags in WORSE_TAGS:
        index.publish("ortlike", "1.17.3", tags=tags, requires_dist=ORT_DEPS)
    index.publish("numpy", "2.0.0", tags=LINUX)
    index.publish("numpy", "2.0.0", tags="py3-none-any")
    index.publish("coloredlogs", "15.0", tags="py2.py3-none-any")
    index.publish("flat_buffers", "24.3")
    index.publish("linux-helper", "2.1")
    recipes = run_import(index, target311, client, tmp_path, "ortlike")
    assert set(recipes) == {
        "ortlike@1.17.3",
        "numpy@2.0.0",
        "coloredlogs@15.0",
        "flat-buffers@24.3",
        "linux-helper@2.1",
    }
    assert recipes["ortlike@1.17.3"] == {
        "name": "ortlike",
        "version": "1.17.3",
        "summary": "ORT-like runtime",
        "kind": "wheel",
        "inputs": {
            "python": "python@3.11",
            "coloredlogs": "coloredlogs",
            "flat_buffers": "flat-buffers",
            "linux_helper": "linux-helper@>=2",
            "numpy": "numpy@>=1.21.6",
        },
        "source": {"urls": [index.file_url(best.filename)], "sha256": best.sha256},
        "wheel": {"filename": best.filename, "requires_python": ">=3.8"},
    }
    numpy = recipes["numpy@2.0.0"]
    assert numpy["wheel"] == {"filename": f"numpy-2.0.0-{LINUX}.whl"}
    assert numpy["inputs"] == {"python": "python@3.11"} and numpy["summary"] == "The numpy package"
    assert (
        recipes["coloredlogs@15.0"]["wheel"]["filename"] == "coloredlogs-15.0-py2.py3-none-any.whl"
    )


@pytest.mark.parametrize(
    ("python", "platform", "expected"),
    [
        ("3.11", "linux", {"linux_helper"}),
        ("3.9", "linux", {"linux_helper", "old_backport"}),
        ("3.11", "win32", set()),
    ],
)
def test_markers_are_evaluated_for_the_target(
    fake_index, run_import, client, target311, tmp_path, python, platform, expected
):
    index = fake_index()
    index.publish(
        "app",
        "1.0",
        requires_dist=(
            "old-backport; python_version < '3.10'",
            "linux-helper; sys_platform == 'linux'",
        ),
    )
    index.publish("old-backport", "1.0")
    index.publish("linux-helper", "1.0")
    markers = {
        **target311.markers,
        "python_version": python,
        "python_full_version": f"{python}.1",
        "sys_platform": platform,
    }
    target = dataclasses.replace(target311, markers=markers)
    recipes = run_import(index, target, client, tmp_path, "app")
    assert set(recipes["app@1.0"]["inputs"]) - {"python"} == expected
    assert {k.split("@")[0].replace("-", "_") for k in recipes} == expected | {"app"}


def test_extras_become_the_requesters_inputs(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    index.publish("app", "1.0", requires_dist=("lib[fast]>=1",))
    index.publish(
        "lib",
        "1.0",
        requires_dist=(
            "core",
            "speedup>=2; extra == 'fast'",
            "lib[gpu]; extra == 'fast'",
            "cuda-thing; extra == 'gpu'",
            "slowdown; extra == 'slow'",
        ),
    )
    for name in ("core", "speedup", "cuda-thing", "slowdown"):
        index.publish(name, "2.0")
    recipes = run_import(index, target311, client, tmp_path / "a", "app")
    assert set(recipes) == {"app@1.0", "lib@1.0", "core@2.0", "speedup@2.0", "cuda-thing@2.0"}
    assert recipes["app@1.0"]["inputs"] == {
        "python": "python@3.11",
        "lib": "lib@>=1",
        "speedup": "speedup@>=2",
        "cuda_thing": "cuda-thing",
    }
    assert recipes["lib@1.0"]["inputs"] == {"python": "python@3.11", "core": "core"}
    recipes = run_import(index, target311, client, tmp_path / "b", "lib[slow]")
    assert set(recipes) == {"lib@1.0", "core@2.0", "slowdown@2.0"}


def test_overrides_apply_in_their_version_range(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("ovr-pkg", "1.5", requires_dist=("six",))
    index.publish("ovr-pkg", "2.0", requires_dist=("six",))
    index.publish("six", "1.16.0")
    index.publish("numpy", "1.26.4")
    index.publish("numpy", "2.0.0")
    path = tmp_path / "overrides.toml"
    path.write_text(
        '[Ovr_Pkg]\naliases = ["ovr"]\n[[Ovr_Pkg.requires]]\nversions = "<2"\nadd = ["numpy<2"]\n'
    )
    overrides = Overrides.load(path)
    old = run_import(
        index, target311, client, tmp_path / "old", "ovr-pkg==1.5", overrides=overrides
    )
    assert set(old) == {"ovr-pkg@1.5", "six@1.16.0", "numpy@1.26.4"}
    assert old["ovr-pkg@1.5"]["inputs"] == {
        "python": "python@3.11",
        "six": "six",
        "numpy": "numpy@<2",
    }
    assert old["ovr-pkg@1.5"]["aliases"] == ["ovr"] and "aliases" not in old["six@1.16.0"]
    new = run_import(index, target311, client, tmp_path / "new", "ovr-pkg", overrides=overrides)
    assert set(new) == {"ovr-pkg@2.0", "six@1.16.0"}
    assert new["ovr-pkg@2.0"]["aliases"] == ["ovr"]


def test_versions_narrow_across_requirers_and_are_rewalked(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("a", "1.0", requires_dist=("c>=1",))
    index.publish("x", "1.0", requires_dist=("b",))  # b's requirement arrives late
    index.publish("b", "1.0", requires_dist=("c<2", "g<2"))
    index.publish("c", "1.0")
    index.publish("c", "1.5", requires_dist=("e",))
    index.publish("c", "2.0", requires_dist=("d",))
    index.publish("d", "1.0", requires_dist=("g>=2",))  # withdrawn with d, so no conflict
    index.publish("g", "1.0")
    index.publish("g", "2.0")
    index.publish("e", "1.0")
    said: list[str] = []
    recipes = run_import(index, target311, client, tmp_path, "a", "x", on_progress=said.append)
    # d (needed by c 2.0 only) is gone, and so is its requirement g>=2, which clashed with b's
    assert set(recipes) == {"a@1.0", "x@1.0", "b@1.0", "c@1.5", "e@1.0", "g@1.0"}
    assert recipes["a@1.0"]["inputs"]["c"] == "c@>=1" and recipes["b@1.0"]["inputs"]["c"] == "c@<2"
    assert recipes["c@1.5"]["inputs"] == {"python": "python@3.11", "e": "e"}
    c_pins = [s for s in said if s.startswith("c: 1") or s.startswith("c: 2")]
    assert c_pins[0].startswith("c: 2.0 ") and c_pins[-1].startswith("c: 1.5 ")  # 2.0 given up


def test_a_real_conflict_names_both_requirers(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    index.publish("a", "1.0", requires_dist=("c>=2",))
    index.publish("b", "3.1", requires_dist=("c<2",))
    index.publish("c", "1.0")
    index.publish("c", "2.0")
    with pytest.raises(ResolutionError) as info:
        run_import(index, target311, client, tmp_path / "out", "a", "b")
    assert info.value.package == "c"
    assert re.search(r"c>=2 \(required by a 1\.0\).*c<2 \(required by b 3\.1\)", info.value.message)
    assert not (tmp_path / "out").exists()


def test_no_compatible_wheel_lists_the_nearest_installable_versions(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    for py in ("37", "38", "39", "310"):
        index.publish("ort", "1.12.1", tags=f"cp{py}-cp{py}-manylinux_2_27_x86_64")
    index.publish("ort", "1.13.1", tags="cp310-cp310-manylinux_2_27_x86_64")
    for version in ("1.14.0", "1.14.1", "1.15.0", "1.17.0"):
        index.publish("ort", version, tags="cp311-cp311-manylinux_2_27_x86_64")
    index.publish(
        "ort",
        "1.16.0",
        tags="cp311-cp311-manylinux_2_27_x86_64",
        index_attrs={"requires_python": ">=3.12"},
    )
    index.add_sdist("ort", "1.18.0")
    cases = {
        "1.12.1": (
            "ort 1.12.1 has no wheel for cp311 manylinux x86_64 (its wheels are for cp37, cp38, cp39, cp310).",
            "1.14.0, 1.14.1, 1.15.0",
        ),
        "1.16.0": ("ort 1.16.0 requires Python >=3.12.", "1.14.0, 1.14.1, 1.15.0, 1.17.0"),
        "1.18.0": (
            "ort 1.18.0 has no wheels (only a source distribution).",
            "1.14.1, 1.15.0, 1.17.0",
        ),
        "9.9": ("ort has no version 9.9 on the index.", "1.14.1, 1.15.0, 1.17.0"),
    }
    for pin, (message, nearest) in cases.items():
        with pytest.raises(UnknownPackage) as info:
            run_import(index, target311, client, tmp_path, f"ort=={pin}")
        assert info.value.message == message and info.value.package == "ort"
        assert (
            info.value.details[-1]
            == f"nearest versions with a wheel for cp311 manylinux x86_64: {nearest}"
        )
        suggest = "1.17.0" if pin in ("1.16.0", "1.18.0", "9.9") else "1.14.0"
        assert info.value.hint == f"Ask for one of those, e.g. ort=={suggest}."
    assert (
        run_import(index, target311, client, tmp_path, "ort")["ort@1.17.0"]["version"] == "1.17.0"
    )


def test_yanked_and_prereleases_need_a_pin(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    index.publish("yk", "1.0")
    index.publish("yk", "2.0", index_attrs={"yanked": "broken"})
    index.publish("yk", "3.0rc1")
    assert set(run_import(index, target311, client, tmp_path / "a", "yk")) == {"yk@1.0"}
    assert set(run_import(index, target311, client, tmp_path / "b", "yk==2.0")) == {"yk@2.0"}
    assert set(run_import(index, target311, client, tmp_path / "c", "yk==3.0rc1")) == {"yk@3.0rc1"}


def test_requires_python_from_index_or_metadata_skips_versions(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    index.publish("rp", "1.0", requires_python=">=3.8")
    index.publish("rp", "2.0", index_attrs={"requires_python": ">=3.12"})
    index.publish("rp", "3.0", requires_python=">=3.13")  # only the METADATA says so
    recipes = run_import(index, target311, client, tmp_path, "rp")
    assert set(recipes) == {"rp@1.0"}
    assert recipes["rp@1.0"]["wheel"]["requires_python"] == ">=3.8"  # from the metadata


def test_identical_recipes_are_left_alone(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    index.publish("same", "1.0", requires_dist=("other",))
    index.publish("other", "1.0")
    first = import_packages(
        ["same"], target311, index_url=index.index_url, client=client, into=tmp_path
    )
    assert first == [tmp_path / "other" / "1.0.toml", tmp_path / "same" / "1.0.toml"]
    stamp = first[1].stat().st_mtime_ns
    first[0].write_text("# edited\n")
    again = import_packages(
        ["same"], target311, index_url=index.index_url, client=client, into=tmp_path
    )
    assert again == [first[0]] and first[1].stat().st_mtime_ns == stamp
    assert tomllib.loads(first[0].read_text())["name"] == "other"


@pytest.mark.pypi
def test_import_six_from_the_real_index(tmp_path):
    from mlpkg.importer import index_url_from_environment

    with httpx.Client(trust_env=True, timeout=60) as real:
        written = import_packages(
            ["six"],
            Target.current(),
            index_url=index_url_from_environment(),
            client=real,
            into=tmp_path,
        )
    assert len(written) == 1 and written[0].parent.name == "six"
    recipe = tomllib.loads(written[0].read_text())
    assert recipe["name"] == "six" and recipe["kind"] == "wheel" and recipe["summary"]
    assert recipe["inputs"] == {"python": f"python@{Target.current().python_version}"}
    assert recipe["wheel"]["filename"] == f"six-{recipe['version']}-py2.py3-none-any.whl"
    assert re.fullmatch(r"[0-9a-f]{64}", recipe["source"]["sha256"])
    assert recipe["source"]["urls"][0].endswith(recipe["wheel"]["filename"])

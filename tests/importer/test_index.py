"""Index pages, the user's index URL, overrides files, targets and recipe spellings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mlpkg.errors import BadInput
from mlpkg.importer import Overrides, Target, index_url_from_environment, probe_interpreter
from mlpkg.importer.index import DEFAULT_INDEX, DistFile, parse_html_page, parse_json_page
from mlpkg.importer.recipe import input_key, spec_text

PAGE = "https://example.org/simple/foo/"


def test_html_page_attributes_and_fragments():
    html = """<html><body>
    <a href="../../files/foo-1.0-py3-none-any.whl#sha256=ABCDEF" data-requires-python="&gt;=3.8"
       data-core-metadata="sha256=1234">foo-1.0-py3-none-any.whl</a>
    <a href="https://cdn.example.net/foo-0.9-py3-none-any.whl#md5=abc" data-yanked=""
       data-dist-info-metadata="true">foo-0.9-py3-none-any.whl</a>
    <a href="foo-0.8.tar.gz">foo-0.8.tar.gz</a>
    <a>no href</a></body></html>"""
    assert parse_html_page(html, PAGE) == [
        DistFile(
            "foo-1.0-py3-none-any.whl",
            "https://example.org/files/foo-1.0-py3-none-any.whl",
            sha256="abcdef",
            requires_python=">=3.8",
            has_metadata=True,
            metadata_sha256="1234",
        ),
        DistFile(
            "foo-0.9-py3-none-any.whl",
            "https://cdn.example.net/foo-0.9-py3-none-any.whl",
            md5="abc",
            yanked=True,
            has_metadata=True,
        ),
        DistFile("foo-0.8.tar.gz", "https://example.org/simple/foo/foo-0.8.tar.gz"),
    ]


def test_json_page_keys_old_and_new():
    data = {
        "meta": {"api-version": "1.0"},
        "name": "foo",
        "files": [
            {
                "filename": "a.whl",
                "url": "/f/a.whl",
                "hashes": {"sha256": "AA"},
                "core-metadata": {"sha256": "BB"},
                "yanked": "bad build",
                "requires-python": ">=3.9",
            },
            {
                "filename": "b.whl",
                "url": "b.whl",
                "hashes": {},
                "dist-info-metadata": True,
                "yanked": False,
            },
            {
                "filename": "c.whl",
                "url": "c.whl",
                "hashes": {"sha256": "cc"},
                "core-metadata": False,
            },
            {"filename": "", "url": "ignored"},
        ],
    }
    a, b, c = parse_json_page(data, PAGE)
    assert a == DistFile(
        "a.whl",
        "https://example.org/f/a.whl",
        sha256="aa",
        requires_python=">=3.9",
        yanked=True,
        has_metadata=True,
        metadata_sha256="bb",
    )
    assert (b.url, b.sha256, b.has_metadata, b.metadata_sha256, b.yanked) == (
        PAGE + "b.whl",
        None,
        True,
        None,
        False,
    )
    assert not c.has_metadata
    with pytest.raises(ValueError):
        parse_json_page({"nofiles": 1}, PAGE)


def test_index_url_precedence(tmp_path):
    user, system = tmp_path / "user.conf", tmp_path / "system.conf"
    user.write_text("[global]\nindex-url = https://user.example/simple/\n")
    system.write_text("[global]\nindex-url = https://system.example/simple\n")
    files = [user, system]
    assert index_url_from_environment({}, files) == "https://user.example/simple"
    assert (
        index_url_from_environment({}, [tmp_path / "missing.conf", system])
        == "https://system.example/simple"
    )
    assert (
        index_url_from_environment({"UV_INDEX_URL": "https://uv.example/simple"}, files)
        == "https://uv.example/simple"
    )
    env = {
        "PIP_INDEX_URL": "https://pip.example/simple/",
        "UV_INDEX_URL": "https://uv.example/simple",
    }
    assert index_url_from_environment(env, files) == "https://pip.example/simple"
    assert index_url_from_environment({}, []) == DEFAULT_INDEX


def test_pip_config_files_are_found_under_home(tmp_path):
    conf = tmp_path / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "[global]\nextra-index-url = https://extra.example\n[install]\nindex-url = https://home.example/simple\n"
    )
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    assert index_url_from_environment(env) == "https://home.example/simple"
    env["PIP_CONFIG_FILE"] = str(tmp_path / "explicit.conf")
    Path(env["PIP_CONFIG_FILE"]).write_text(
        "[global]\nindex-url = https://explicit.example/simple\n"
    )
    assert index_url_from_environment(env) == "https://explicit.example/simple"


def test_overrides_load(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text(
        '[Onnx_Runtime]\naliases = ["ort"]\n[[Onnx_Runtime.requires]]\nversions = "<1.19"\n'
        'add = ["numpy<2"]\n[[Onnx_Runtime.requires]]\nadd = ["packaging"]\n'
    )
    o = Overrides.load(path)
    assert o.aliases == {"onnx-runtime": ["ort"]}
    assert o.extra_requires == {
        "onnx-runtime": [(SpecifierSet("<1.19"), ["numpy<2"]), (SpecifierSet(""), ["packaging"])]
    }
    assert o.requirements_for("onnx_runtime", Version("1.18")) == ["numpy<2", "packaging"]
    assert o.requirements_for("onnx-runtime", Version("1.19")) == ["packaging"]
    assert o.aliases_for("ONNX.runtime") == ["ort"] and o.aliases_for("other") == []


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[a]\ncolour = "red"\n', "a.colour"),
        ('[[a.requires]]\nversions = "<<1"\nadd = []\n', "a.requires[0].versions"),
        ('[[a.requires]]\nadd = ["not a requirement!"]\n', "a.requires[0].add"),
        ('[a]\naliases = "x"\n', "a.aliases"),
        ("a = 1\n", "a"),
    ],
)
def test_overrides_errors_name_the_field(tmp_path, text, field):
    path = tmp_path / "o.toml"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        Overrides.load(path)
    assert info.value.field == field and str(path) in info.value.message
    path.write_text("[a\n")
    with pytest.raises(BadInput, match="not valid TOML"):
        Overrides.load(path)


def test_target_probe_and_description():
    here = probe_interpreter(sys.executable)
    assert here == Target.current()
    assert here.python_version == "{}.{}".format(*sys.version_info[:2])
    assert here.python_ok(">=3.8") and not here.python_ok(">=4") and here.python_ok("junk!!")
    linux = Target("3.11", ["cp311-cp311-manylinux_2_35_x86_64", "py3-none-any"], {})
    assert linux.describe() == "cp311 manylinux x86_64"
    assert Target("3.12", ["cp312-cp312-win_amd64"], {}).describe() == "cp312 win_amd64"
    assert Target.for_interpreter("3.11.4", linux.tags, {"os_name": "posix"}) == Target(
        "3.11", linux.tags, {"os_name": "posix"}
    )
    with pytest.raises(BadInput):
        probe_interpreter(str(Path(sys.executable).parent / "no-such-python"))


def test_target_probe_is_the_safe_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The importer's probe is mlpkg.resolver.pyprobe's: it imports nothing from the working
    directory, and finds a bare name through absolute ``PATH`` entries only."""
    marker = tmp_path / "PWNED"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "mypython").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert probe_interpreter("./mypython") == Target.current()
    assert not marker.exists()
    monkeypatch.setenv("PATH", f".:{Path(sys.executable).parent}")
    with pytest.raises(BadInput, match="not on PATH"):
        probe_interpreter("mypython")
    assert probe_interpreter(Path(sys.executable).name) == Target.current()


def test_input_keys_and_specs():
    assert (
        input_key("Flat.Buffers") == "flat_buffers"
        and input_key("typing_extensions") == "typing_extensions"
    )
    assert (
        input_key("3to2") == "_3to2"
        and input_key("out") == "out_pkg"
        and input_key("python") == "python_pkg"
    )
    assert spec_text("numpy", SpecifierSet("<2,>=1.21.6")) == "numpy@>=1.21.6,<2"
    assert spec_text("numpy", SpecifierSet("")) == "numpy"
    assert spec_text("torch", SpecifierSet("==2.1.0+cu118")) == "torch"  # a spec cannot say '+'
    assert spec_text("x", SpecifierSet("~=1.4,!=1.4.2")) == "x@~=1.4,!=1.4.2"

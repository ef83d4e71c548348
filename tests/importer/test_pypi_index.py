"""``import_packages`` and the index: JSON and HTML pages, metadata files, range requests,
servers that ignore Range, errors, proxies and the user's configured index."""

from __future__ import annotations

import tomllib

import httpx
import pytest

from mlpkg.errors import BadInput, FetchError, UnknownPackage
from mlpkg.importer import import_packages

MB = 1024 * 1024


def test_range_requests_never_download_a_whole_wheel(
    fake_index, run_import, client, target311, tmp_path
):
    index = fake_index()
    big = index.publish("big", "1.0", padding=5 * MB, requires_dist=("small",))
    small = index.publish("small", "1.0", padding=2 * MB, metadata_first=True)
    unused = index.publish("small", "0.9", padding=2 * MB)
    assert set(run_import(index, target311, client, tmp_path, "big")) == {"big@1.0", "small@1.0"}
    for whl in (big, small):
        path = f"/files/{whl.filename}"
        assert index.requests_to(path) and all(
            "range" in r.headers for r in index.requests_to(path)
        )
        assert index.sent(path) < len(whl.data) // 20
    assert index.requests_to(f"/files/{unused.filename}") == []


def test_a_server_ignoring_range_still_works(fake_index, run_import, client, target311, tmp_path):
    index = fake_index(ranges=False)
    whl = index.publish("plain", "1.0", padding=100_000)
    said: list[str] = []
    assert set(
        run_import(index, target311, client, tmp_path, "plain", on_progress=said.append)
    ) == {"plain@1.0"}
    assert index.sent(f"/files/{whl.filename}") == len(whl.data)
    assert any("ignores HTTP Range" in s for s in said)


@pytest.mark.parametrize("metadata_files", [True, False])
def test_html_only_index(fake_index, run_import, client, target311, tmp_path, metadata_files):
    index = fake_index(api="html", metadata_files=metadata_files)
    top = index.publish(
        "html-pkg",
        "1.0",
        requires_dist=("dep1>=0.5",),
        requires_python=">=3.8",
        index_attrs={"requires_python": ">=3.8"},
    )
    index.publish("dep1", "0.5")
    index.publish("dep1", "0.6", index_attrs={"yanked": True})
    recipes = run_import(index, target311, client, tmp_path, "html_pkg")
    assert set(recipes) == {"html-pkg@1.0", "dep1@0.5"}
    assert recipes["html-pkg@1.0"]["source"] == {
        "urls": [index.file_url(top.filename)],
        "sha256": top.sha256,
    }
    assert recipes["html-pkg@1.0"]["wheel"]["requires_python"] == ">=3.8"
    assert recipes["html-pkg@1.0"]["inputs"]["dep1"] == "dep1@>=0.5"
    page = index.requests_to("/simple/html-pkg/")[0]
    assert page.headers["accept"].startswith("application/vnd.pypi.simple.v1+json")
    wheel_requests = index.requests_to(f"/files/{top.filename}")
    assert (wheel_requests == []) == metadata_files
    assert bool(index.requests_to(f"/files/{top.filename}.metadata")) == metadata_files


def test_a_metadata_file_with_the_wrong_hash_is_refused(
    fake_index, run_import, client, target311, tmp_path
):

    index = fake_index(metadata_files=True)
    index.publish("meta", "1.0", index_attrs={"metadata_sha256": "0" * 64})
    with pytest.raises(FetchError, match=r"meta-1\.0-py3-none-any\.whl\.metadata does not match"):
        run_import(index, target311, client, tmp_path, "meta")


def test_unknown_projects_and_bad_requirements(fake_index, run_import, client, target311, tmp_path):
    index = fake_index()
    index.publish("needy", "1.0", requires_dist=("Ghost-Dep>=1",))
    with pytest.raises(UnknownPackage, match="has no project 'nope'") as info:
        run_import(index, target311, client, tmp_path, "Nope")
    assert info.value.package == "nope"
    with pytest.raises(UnknownPackage, match="has no project 'ghost-dep'") as info:
        run_import(index, target311, client, tmp_path, "needy")
    assert "required by needy 1.0 (Ghost-Dep>=1)" in info.value.details
    with pytest.raises(BadInput, match="Invalid requirement"):
        run_import(index, target311, client, tmp_path, "needy==")


def test_network_failures_name_the_url(client, target311, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    with pytest.raises(FetchError) as info:
        import_packages(
            ["x"],
            target311,
            index_url=f"http://127.0.0.1:{port}/simple",
            client=client,
            into=tmp_path,
        )
    assert f"http://127.0.0.1:{port}/simple/x/" in info.value.message


def test_the_callers_client_and_its_proxy_are_used(fake_index, run_import, target311, tmp_path):
    from mlpkg import __version__

    index = fake_index()
    whl = index.publish("proxied", "1.0")
    with httpx.Client(proxy=f"http://127.0.0.1:{index.port}", trust_env=False) as via_proxy:
        import_packages(
            ["proxied"],
            target311,
            index_url="http://pypi.example.invalid/simple/",
            client=via_proxy,
            into=tmp_path,
        )
    recipe = tomllib.loads((tmp_path / "proxied" / "1.0.toml").read_text())
    assert recipe["source"]["urls"] == [f"http://pypi.example.invalid/files/{whl.filename}"]
    assert index.log and all(r.proxied for r in index.log)
    assert {r.headers["user-agent"] for r in index.log} == {f"mlpkg/{__version__}"}


def test_the_users_index_url_is_honoured(
    fake_index, run_import, client, target311, tmp_path, monkeypatch
):
    from mlpkg.importer import index_url_from_environment

    index = fake_index()
    index.publish("envpkg", "1.0")
    monkeypatch.setenv("PIP_INDEX_URL", index.index_url + "/")
    assert index_url_from_environment() == index.index_url
    import_packages(
        ["envpkg"], target311, index_url=index_url_from_environment(), client=client, into=tmp_path
    )
    assert (tmp_path / "envpkg" / "1.0.toml").is_file()

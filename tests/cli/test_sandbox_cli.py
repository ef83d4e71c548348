"""The sandbox through the command line: the build log names it, --no-sandbox is an
explicit, recorded opt-out, and a recipe cannot name an input after a fixed variable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.recipe_text import build_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli


def test_the_build_log_names_the_sandbox(mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("plain", "1.0", build_toml("plain", "1.0", 'mkdir "$out"; echo hi'))
    out = Path(mlpkg_cli.sub("build", "plain", timeout=60).ok().out.strip())
    log = (mlpkg_cli.home / "logs" / f"{out.name}.log").read_text().splitlines()
    assert log[0].startswith("mlpkg: sandbox ") and "none" not in log[0], log[0]


def test_no_sandbox_is_an_explicit_opt_out_recorded_in_the_log(mlpkg_cli: MlpkgCli) -> None:
    script = (
        'mkdir "$out"; case "$(pwd)" in /build/*) echo sandboxed ;; *) echo host ;; esac > "$out/r"'
    )
    mlpkg_cli.recipes.add("where", "1.0", build_toml("where", "1.0", script))
    r = mlpkg_cli.sub("build", "--no-sandbox", "where", timeout=60).ok()
    out = Path(r.out.strip())
    log = (mlpkg_cli.home / "logs" / f"{out.name}.log").read_text().splitlines()
    assert "sandbox none (--no-sandbox" in log[0], log[0]
    assert (out / "r").read_text() == "host\n"  # the build ran in the host's directories


def test_an_input_named_after_a_fixed_variable_is_refused(mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("dep", "1.0", build_toml("dep", "1.0", 'mkdir "$out"'))
    mlpkg_cli.recipes.add(
        "tz", "1.0", build_toml("tz", "1.0", 'mkdir "$out"; echo "$TZ" > "$out/tz"', {"TZ": "dep"})
    )
    r = mlpkg_cli.sub("build", "tz", timeout=60)
    assert r.code == 2 and "inputs.TZ" in r.err and "reserved" in r.err, str(r)


def test_a_dry_run_marks_builds_that_reach_the_network(mlpkg_cli: MlpkgCli) -> None:
    text = build_toml("online", "1.0", 'mkdir "$out"').replace("[build]", "[build]\nnetwork = true")
    mlpkg_cli.recipes.add("online", "1.0", text)
    r = mlpkg_cli.run("build", "--dry-run", "online").ok()
    assert "(network = true" in r.out, r.out
    doc = __import__("json").loads(mlpkg_cli.run("build", "--dry-run", "--json", "online").ok().out)
    assert [n.get("network") for n in doc["plan"]["nodes"]] == [True]

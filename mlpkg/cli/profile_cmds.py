"""``mlpkg profile``: generations of a profile (list, history, rollback, switch, remove,
wipe-history, export)."""

from __future__ import annotations

import time

import click

from mlpkg.cli.context import App, common
from mlpkg.env.profiles import BrokenGeneration, Profile, parse_age, profiles

PROFILE = click.option("--profile", "profile_name", default="default", show_default=True,
                       help="The profile.")  # fmt: skip


@click.group("profile")
def profile_group() -> None:
    """Profiles: named sets of installed packages, one generation per change."""


@profile_group.command("list")
@common
def list_cmd(app: App) -> None:
    """The profiles and their current generations (a broken one is a warning)."""
    rows: list[dict[str, object]] = []
    for name in profiles(app.store):
        profile = Profile(app.store, name)
        try:
            current = profile.current()
        except BrokenGeneration as e:
            _warn(app, e.message)
            rows.append({"profile": name, "generation": e.number, "specs": []})
            continue
        rows.append({"profile": name, "generation": current.number if current else None,
                     "specs": current.specs if current else []})  # fmt: skip
    if app.json:
        app.emit(rows)
        return
    for row in rows:
        specs = " ".join(str(s) for s in row["specs"])  # type: ignore[attr-defined]
        app.out(f"{row['profile']}  generation {row['generation']}: {specs}")


def _warn(app: App, message: str) -> None:
    """A warning on stderr (in --json mode too: the data is short of something)."""
    if not app.quiet:
        click.echo(f"warning: {message}", err=True)


@profile_group.command("history")
@PROFILE
@common
def history_cmd(app: App, profile_name: str) -> None:
    """Every generation of a profile (the current one is marked). A generation that cannot
    be read is a warning saying what to do; the others are listed."""
    profile = Profile(app.store, profile_name)
    current = profile.current_number()
    gens, broken = profile.scan()
    for b in broken:
        _warn(app, b.message)
    if app.json:
        app.emit([{**g.to_json(), "current": g.number == current} for g in gens])
        return
    for g in gens:
        mark = "*" if g.number == current else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created))
        app.out(f"{mark} {g.number:>4}  {when}  {' '.join(g.specs)}")


@profile_group.command("rollback")
@PROFILE
@common
def rollback_cmd(app: App, profile_name: str) -> None:
    """Switch to the generation before the current one."""
    profile = Profile(app.store, profile_name)
    with profile.locked():
        gen = profile.rollback()
    app.info(f"profile {profile.name}: now generation {gen.number} ({' '.join(gen.specs)})")


@profile_group.command("switch")
@click.argument("generation", type=int)
@PROFILE
@common
def switch_cmd(app: App, generation: int, profile_name: str) -> None:
    """Switch to GENERATION."""
    profile = Profile(app.store, profile_name)
    with profile.locked():
        gen = profile.switch(generation)
    app.info(f"profile {profile.name}: now generation {gen.number} ({' '.join(gen.specs)})")


@profile_group.command("remove")
@click.argument("names", nargs=-1, required=True)
@PROFILE
@common
def remove_cmd(app: App, names: tuple[str, ...], profile_name: str) -> None:
    """Remove packages from a profile (a new generation without them)."""
    from mlpkg.errors import BadInput
    from mlpkg.store.path import StorePath

    profile = Profile(app.store, profile_name)
    with profile.locked():
        current = profile.current()
        old = current.specs if current else []
        drop = {app.package_of(n) for n in names}
        kept = [s for s in old if app.package_of(s) not in drop]
        if len(kept) == len(old):
            raise BadInput(f"Profile {profile.name} has none of {', '.join(names)}.")
        doc = app.realise(kept) if kept else {"roots": []}
        gen = profile.add_generation(kept, [StorePath.parse(r) for r in doc["roots"]])
    app.info(f"profile {profile.name}: generation {gen.number} ({' '.join(gen.specs) or 'empty'})")


@profile_group.command("wipe-history")
@click.option("--older-than", help="Only generations older than this (30d, 12h, ...).")
@PROFILE
@common
def wipe_cmd(app: App, older_than: str | None, profile_name: str) -> None:
    """Delete old generations (never the current one); gc can then free their paths."""
    profile = Profile(app.store, profile_name)
    with profile.locked():
        wiped = profile.wipe_history(parse_age(older_than) if older_than else None)
    if app.json:
        app.emit({"profile": profile.name, "wiped": wiped})
        return
    app.info(f"profile {profile.name}: wiped generations {', '.join(map(str, wiped)) or 'none'}")


@profile_group.command("export")
@PROFILE
@common
def export_cmd(app: App, profile_name: str) -> None:
    """Print the lock of the current generation: mlpkg profile export > mlpkg.lock"""
    from mlpkg.resolver.lockmake import lock_of_generation

    current = Profile(app.store, profile_name).require_current()
    click.echo(lock_of_generation(app.store, current.specs, current.roots).dumps(), nl=False)


COMMANDS = [profile_group]

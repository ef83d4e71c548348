"""``mlpkg cache``: checking and collecting a binary cache (verify, gc; docs/caches.md)."""

from __future__ import annotations

import click

from mlpkg.cli.context import App, common
from mlpkg.cli.store_cmds import human
from mlpkg.errors import BadInput, VerifyError

TRUE = ("1", "true", "yes")


@click.group("cache")
def cache_group() -> None:
    """Check a binary cache, and remove what no path of it needs."""


@cache_group.command("verify", short_help="Check a cache: signatures, references, objects.")
@click.argument("url")
@click.option("--full", is_flag=True,
              help="Download, decompress and hash every object (default: a sample).")  # fmt: skip
@click.option("--sample", "count", type=click.IntRange(min=0), default=None, metavar="N",
              help="Chunk objects whose content is checked (default 32; listings always "
              "are).")  # fmt: skip
@common
def verify_cmd(app: App, url: str, full: bool, count: int | None) -> None:
    """Check the cache at URL: every info file parses and is signed by a trusted key (not
    required with ?trusted=true), its references have info files, its listing and every
    object it names are there, and the contents of a sample of objects (all with --full)
    match their names. Prints one line per broken thing; exit 1 when there is any."""
    from mlpkg.cache.check import SAMPLE, verify
    from mlpkg.cache.keys import trusted_keys
    from mlpkg.cache.transport import open_transport, split_url

    if full and count is not None:
        raise BadInput("Give --full or --sample N, not both.")
    trusted = split_url(url)[1].get("trusted", "false").lower() in TRUE
    keys = trusted_keys(app.config)
    if not keys and not trusted:
        app.warn(
            "no trusted keys (mlpkg key trust KEY): every entry will be reported as untrusted."
        )
    with open_transport(url) as transport:
        report = verify(
            transport, keys, trusted=trusted, full=full, count=SAMPLE if count is None else count
        )
    if app.json:
        app.emit(report.to_json())
    else:
        for problem in report.problems:
            app.out(problem.line())
    what = "every object" if full else "the listings and a sample"
    summary = (
        f"{report.paths} paths, {report.objects} chunk objects; the contents of "
        f"{report.objects_checked} objects checked ({what})"
    )
    if report.problems:
        n = len(report.problems)
        raise VerifyError(
            f"The cache {report.cache} has {n} problem{'s' * (n != 1)}: {summary}.",
            reported=app.json,
        )
    app.out(f"The cache {report.cache} is sound: {summary}.")


@cache_group.command("gc", short_help="Remove the objects no info file names.")
@click.argument("url")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep unnamed objects younger than this (default 3600: a push under way "
              "uploads objects before the info file naming them).")  # fmt: skip
@common
def gc_cmd(app: App, url: str, dry_run: bool, grace: float | None) -> None:
    """Remove from the cache at URL the objects no info file names, directly or through
    its listing, that are older than the grace period. Only on a cache you own, and best
    when no push to it runs (docs/caches.md)."""
    from mlpkg.cache.collect import DEFAULT_GRACE, gc
    from mlpkg.cache.transport import open_transport

    with open_transport(url) as transport:
        report = gc(transport, grace=DEFAULT_GRACE if grace is None else grace, dry_run=dry_run)
    if app.json:
        app.emit(report.to_json())
        return
    for key, size in report.removed:
        app.debug(f"{'would remove' if dry_run else 'removed'} {key} ({human(size)})")
    verb = "would remove" if dry_run else "removed"
    app.out(
        f"{verb} {len(report.removed)} objects ({human(report.removed_bytes)}) from "
        f"{report.cache}; {report.named} objects are named by {report.paths} info files; "
        f"kept {report.recent} unnamed objects ({human(report.recent_bytes)}) younger than "
        f"{report.grace:g} s."
    )
    if report.temporaries:
        size = sum(n for _, n in report.temporaries)
        app.out(
            f"{verb} {len(report.temporaries)} temporary files of interrupted writes "
            f"({human(size)})."
        )


@cache_group.command("forget", short_help="Forget the paths caches were found not to have.")
@common
def forget_cmd(app: App) -> None:
    """Forget every path a substituter answered it did not have (remembered for
    substituter-negative-ttl seconds, docs/caches.md), so the next command asks again:
    after a colleague pushed what you asked for a moment ago."""
    from mlpkg.cache.substitute import forget_misses

    n = forget_misses(app.home)
    if app.json:
        app.emit({"forgotten_caches": n})
        return
    app.out(f"forgot the misses remembered for {n} caches.")


COMMANDS = [cache_group]

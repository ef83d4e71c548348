"""Installing a wheel into a store path (recipe kind ``wheel``), with pypa's installer.

The wheel is fetched like any fixed-output source (verified by its sha256), checked
against the interpreter it is for (the recipe's ``python`` input: its probe recorded the
tags it accepts and its version), and laid out as a prefix::

    $out/lib/python3.X/site-packages/   the package and its .dist-info
    $out/bin/                           scripts and console scripts
    $out/include/python3.X/<name>/      headers, $out/... for other data

Content stays relocatable: console scripts start with ``#!/usr/bin/env python3``, so they
run with the ``python3`` that activation puts first on ``PATH`` (the closure's
interpreter), and nothing names the store. No byte-code is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.build import BuildContext, Builder, add_file_hint, register
from mlpkg.build.fetch import download
from mlpkg.build.wheel_layout import MemoryTree, destination_class, source_class
from mlpkg.errors import BadInput, BuildError
from mlpkg.store.archive import ArchiveInfo, StreamScan
from mlpkg.store.fs import remove_tree

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from mlpkg.recipes.model import Recipe, WheelFile
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.interpreters import Interpreter
    from mlpkg.store.store import Maker, Store

SHEBANG_INTERPRETER = "/usr/bin/env python3"


class Wheel(Builder):
    kind = "wheel"
    action = "install"
    relocatable = True
    threadable = True  # its maker's prepare() reads the store; then it runs in any thread

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        return WheelMaker(drv, ctx)

    def offline_hint(self, drv: Derivation) -> str:
        return add_file_hint(drv, "FILE")

    def specialise(self, recipe: Recipe, inputs: Mapping[str, Derivation]) -> Recipe:
        """A release with ``[[wheel.files]]`` becomes the recipe of the one file the
        closure's interpreter takes best (by its tag order): that file's ``[source]`` and
        ``filename``, and as ``python`` input ``python@X.Y`` of that interpreter: what a
        one-interpreter import writes. So adding a wheel for another interpreter to a
        recipe changes no existing path, and a release re-imported for more interpreters
        keeps the paths it had."""
        from mlpkg.recipes.model import Wheel as WheelRecipe
        from mlpkg.resolver.interpreters import interpreter_of

        wheel = recipe.wheel
        if wheel is None or not wheel.files:
            return recipe
        python = inputs.get("python")
        interp = interpreter_of(python) if python is not None else None
        if interp is None:
            raise BadInput(
                f"{recipe.spec}: its python input is not a Python interpreter.",
                package=recipe.name,
            )
        file = choose_file(recipe, interp)
        spec = f"python@{interp.major_minor}"
        return recipe.model_copy(
            update={
                "source": file.source(),
                "wheel": WheelRecipe(filename=file.filename, requires_python=wheel.requires_python),
                "inputs": {**recipe.inputs, "python": spec},
            }
        )


class WheelMaker:
    """The maker of a wheel's path (a :data:`~mlpkg.store.store.Maker`) that also learns
    the path's scan while it writes: after :meth:`scanning` (called before the maker, with
    the strings the store forbids), :meth:`__call__` feeds a
    :class:`~mlpkg.store.archive.StreamScan` every byte it writes, in archive order, and
    the function :meth:`scanning` returned gives its result (what
    :meth:`mlpkg.store.store.Store.realise` takes as ``scanned``)."""

    def __init__(self, drv: Derivation, ctx: BuildContext) -> None:
        self.drv = drv
        self.ctx = ctx
        self.scan: StreamScan | None = None
        self.result: ArchiveInfo | None = None
        self.python: dict[str, Any] | None = None

    def prepare(self) -> None:
        """Read what the maker needs of the store's database (the interpreter's facts) and
        check the wheel fits it; after this, :meth:`__call__` uses no database, so it may
        run in another thread than the store's."""
        self.python = python_of(self.drv, self.ctx.store)
        check_compatible(self.drv, self.python)

    def scanning(self, forbid: Sequence[bytes]) -> Callable[[], ArchiveInfo]:
        self.scan = StreamScan(forbid)

        def scanned() -> ArchiveInfo:
            if self.result is None:
                raise BuildError(f"{self.drv.name}: the wheel's scan is missing.")
            return self.result

        return scanned

    def __call__(self, tmp: Path) -> dict[str, object]:
        drv, ctx = self.drv, self.ctx
        wheel = drv.recipe.wheel
        assert wheel is not None
        if self.python is None:
            self.prepare()
        python = self.python
        assert python is not None
        # The installer reads the distribution's name from the file name: keep it exact.
        assert wheel.filename is not None  # specialised: one file
        src = drv.recipe.source
        sha256 = (src.sha256 if src is not None else None) or drv.source_sha256
        data = ctx.store.downloads.read(sha256) if sha256 else None
        try:
            if data is not None:  # verified in memory: read from the cache once, no copy
                ctx.reporter.note(f"{drv.name}-{drv.version}: from the download cache")
                install_wheel(Path(wheel.filename), tmp, python, self.scan, data=data)
                self.result = self.scan.result() if self.scan is not None else None
                return {"sha256": sha256, "url": "cache"}
            dest = ctx.store.partial_file(ctx.node.path) / wheel.filename
            dest.parent.mkdir(exist_ok=True)
            try:
                facts = download(drv, dest, ctx)
                install_wheel(dest, tmp, python, self.scan)
                self.result = self.scan.result() if self.scan is not None else None
            finally:
                remove_tree(dest.parent)
        finally:
            if self.scan is not None:
                self.scan.close()
        return facts


def choose_file(recipe: Recipe, interp: Interpreter) -> WheelFile:
    """The file of ``recipe``'s ``[[wheel.files]]`` that ``interp`` takes best; BadInput
    naming the interpreters the release has wheels for when it takes none."""
    from packaging.utils import parse_wheel_filename

    assert recipe.wheel is not None
    rank = {tag: i for i, tag in enumerate(interp.tags)}
    best: tuple[int, WheelFile] | None = None
    for file in recipe.wheel.files:
        ranks = [rank[str(t)] for t in parse_wheel_filename(file.filename)[3] if str(t) in rank]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), file)
    if best is None:
        has = sorted({v for f in recipe.wheel.files if (v := f.python_versions())}, key=str)
        listed = ", ".join(f"{v}{'+' if abi3 else ''}" for v, abi3 in has) or "none"
        raise BadInput(
            f"{recipe.spec} has no wheel for Python {interp.version} on this machine "
            f"(it has wheels for Python {listed}).",
            package=recipe.name,
        )
    return best[1]


def python_of(drv: Derivation, store: Store) -> dict[str, Any]:
    """The facts of the wheel's ``python`` input (version, tags): an interpreter of
    :func:`mlpkg.resolver.interpreters.interpreter_of`, from its stored derivation."""
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.interpreters import interpreter_of

    path = drv.inputs["python"]
    info = store.info(path)
    interp = interpreter_of(Derivation.from_json(info.deriver)) if info else None
    if interp is None:
        raise BuildError(
            f"{drv.name}-{drv.version}: its python input {path} is not a Python "
            'interpreter (an external recipe with probe = "python", or python built from '
            "source).",
            package=drv.name,
        )
    return {**interp.info, "tags": interp.tags}


def check_compatible(drv: Derivation, python: dict[str, Any]) -> None:
    """Refuse a wheel whose tags or Requires-Python the interpreter does not accept."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.utils import parse_wheel_filename

    assert drv.recipe.wheel is not None
    filename = drv.recipe.wheel.filename
    assert filename is not None
    _, _, _, wheel_tags = parse_wheel_filename(filename)
    accepted = set(python["tags"])
    if not any(str(t) in accepted for t in wheel_tags):
        raise BuildError(
            f"{filename} does not fit the Python {python['version']} interpreter "
            f"({python['tags'][0]}, ...): no tag of the wheel is one it accepts.",
            package=drv.name,
        )
    requires = drv.recipe.wheel.requires_python
    if requires:
        try:
            ok = SpecifierSet(requires).contains(python["version"], prereleases=True)
        except InvalidSpecifier:
            ok = True  # an unreadable Requires-Python is not ours to enforce
        if not ok:
            raise BuildError(
                f"{drv.name}-{drv.version} requires Python {requires}; the interpreter is "
                f"{python['version']}.",
                package=drv.name,
            )


SHEBANG = b"#!" + SHEBANG_INTERPRETER.encode() + b"\n"


def install_wheel(
    wheel: Path,
    out: Path,
    python: dict[str, Any],
    scan: StreamScan | None = None,
    *,
    data: bytes | None = None,
) -> None:
    """Lay out ``wheel`` under the prefix ``out`` (which must not exist), feeding ``scan``
    (when given) every entry written, in archive order (:mod:`mlpkg.build.wheel_layout`).
    With ``data``, that is the wheel's content (verified by the caller) and ``wheel`` only
    names it. Files are read from the wheel once and written once; nothing is on disk
    until the whole wheel has been read and checked."""
    import io
    import zipfile

    from installer import install

    major_minor = ".".join(str(python["version"]).split(".")[:2])
    site = out / "lib" / f"python{major_minor}" / "site-packages"
    scheme = {
        "purelib": str(site),
        "platlib": str(site),
        "scripts": str(out / "bin"),
        "headers": str(out / "include" / f"python{major_minor}"),
        "data": str(out),
    }
    tree = MemoryTree(out)
    destination = destination_class(SHEBANG)(
        scheme, interpreter=SHEBANG_INTERPRETER, script_kind="posix",
        bytecode_optimization_levels=(), tree=tree,
    )  # fmt: skip
    _quiet_pycache_warning()
    try:
        with zipfile.ZipFile(io.BytesIO(data) if data is not None else wheel) as zf:
            zf.filename = str(wheel)  # installer reads the distribution's name from it
            install(source_class()(zf), destination, additional_metadata={"INSTALLER": b"mlpkg\n"})
    except Exception as e:  # installer raises plain exceptions for broken wheels
        raise BuildError(f"Installing {wheel.name} failed: {e}.") from None
    tree.write(scan)


def _quiet_pycache_warning() -> None:
    """Silence installer's warning about the ``__pycache__`` files some wheels ship (it
    skips them). A filter (adding it again replaces it), not ``warnings.catch_warnings``:
    wheels are installed in several threads at once, and that is not thread-safe."""
    warnings.filterwarnings(
        "ignore", message="Skip installing .*__pycache__", category=RuntimeWarning
    )


register(Wheel())

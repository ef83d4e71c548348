"""Re-importing a recipe keeps what a maintainer wrote below the marker (variants)."""

from __future__ import annotations

from pathlib import Path

from mlpkg.importer.recipe import HAND_WRITTEN, write_recipe


def test_reimport_keeps_the_hand_written_tail(tmp_path: Path) -> None:
    generated = 'name = "x"\nversion = "1.0"\n'
    path, written = write_recipe(tmp_path, "x", "1.0", generated)
    assert written and path.read_text() == generated
    tail = HAND_WRITTEN + '[variants.fast]\nkind = "build"\n'
    path.write_text(generated + "\n" + tail)
    again, written = write_recipe(tmp_path, "x", "1.0", generated)
    assert not written and again.read_text() == generated + "\n" + tail
    newer = 'name = "x"\nversion = "1.0"\nsummary = "new"\n'
    _, written = write_recipe(tmp_path, "x", "1.0", newer)
    assert written and path.read_text() == newer + "\n" + tail

"""The one shape every benchmark reports in, so that ``bench/run.py`` can print one table.

Contract: every script in ``bench/`` accepts ``--json`` (print one JSON document on stdout
and nothing else there) and ``--quick`` (small sizes and few runs, a smoke pass: its rows
have ``passed`` set to None, since timings at small sizes say nothing about the target).
The document has a ``"rows"`` key holding a list of :func:`row` dictionaries, beside
whatever else the script reports. A script may give several rows (one per target).

Exit status under ``--json``: 0 whenever the document with its rows was printed, whether
or not the targets were met (the verdict lives in the rows' ``passed``; ``bench/run.py``
reads a non-zero status as "the script failed" and adds an error row). A non-zero status
means the measurement could not be made, or is not one: a tool missing, a command that
failed, or a check that the timed thing did what it should (``noop_build``: the build was
a no-op; ``resolve``: every package resolved, the same root each run) failing, which makes
the timing meaningless. Without ``--json`` a script may exit 1 on a missed target.

A row compares mlpkg with a peer measured in the same run:

- ``what``: what is measured, one line ("cold install of the ORT+LoadGen closure");
- ``mlpkg`` and ``peer``: the two medians, in ``unit`` ("s", "samples/s", "ms", ...);
  ``peer`` is None for a row with an absolute target (no peer);
- ``peer_name``: the peer ("uv pip install", "openssl dgst -sha256", "bare ORT loop");
- ``ratio``: mlpkg / peer as the target reads it (times: mlpkg's time over the peer's,
  lower is better; rates: mlpkg's rate over the peer's, higher is better), None if no peer;
- ``target``: the target as text ("≤ 1.0 ×", "≥ 0.97 ×", "< 1 s"), "" for information;
- ``passed``: whether the target was met, None for information rows and ``--quick``;
- ``runs``: how many timed runs each median is of.
"""

from __future__ import annotations

from typing import Any


def row(
    what: str,
    *,
    mlpkg: float,
    unit: str,
    runs: int,
    peer: float | None = None,
    peer_name: str = "",
    ratio: float | None = None,
    target: str = "",
    passed: bool | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """One row of the table (see the module docstring); ``quick`` clears ``passed``."""
    return {
        "what": what,
        "mlpkg": mlpkg,
        "peer": peer,
        "peer_name": peer_name,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "passed": None if quick else passed,
        "runs": runs,
    }

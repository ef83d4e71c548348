"""Reliability (cross-cutting): ``mlpkg`` killed with SIGKILL at random moments of fetch,
unpack, build, registration, a profile switch, gc and run, then checked (issue 15).

Each trial picks an operation (round robin), measures it once uninterrupted (the first
time it comes up), starts it again as a real ``python -m mlpkg`` process, and kills it
after a delay drawn uniformly over that measured duration: in three trials of four over
the part after the command's first step on the store (its temporary roots written, or
gc's lock taken), counted from that step in the trial's own run; in one of four over the
whole command from its start (imports and resolving, which take most of a short command's
time). The kill goes to the whole process group (a power cut of the command), or, in half
the trials of a command with children (a sandboxed build, an app), only to mlpkg itself. Then ``mlpkg verify --check-contents --json`` must be clean (no invalid path
registered, no valid path damaged, nothing but debris), the same command must succeed
within a timeout (no stale lock blocks it) and give the same store paths with the same
content hashes as the uninterrupted run, and ``gc`` must leave no debris behind.

The draws come from ``random.Random(f"{seed}:{trial}")``; the seed is ``MLPKG_FAULT_SEED``
or a fixed default and every assertion message names it with the command that replays the
trial. 20 trials run by default; the ``slow`` campaign runs 200 more (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.reliability.lab import wait_active, wait_group_gone, wait_stragglers_gone

if TYPE_CHECKING:
    from tests.cli_support import CliResult
    from tests.reliability.lab import Lab

DEFAULT_TRIALS = 20
SLOW_TRIALS = 200
WHOLE = 0.25  # the share of trials whose delay counts from the start (imports, resolving)
RERUN_TIMEOUT = 60.0  # a lock left held by a dead process would make the rerun wait forever


@dataclass(frozen=True)
class Op:
    """One operation of the campaign: the command, what must be true before it (prepare),
    whether it has children a kill of only mlpkg leaves behind, and the spec whose store
    path it prints (None: it prints none)."""

    name: str
    command: Callable[[int], tuple[str, ...]]
    spec: str | None = None
    children: bool = False
    prepare: Callable[[Lab], None] | None = None


def _build_junk(lab: Lab) -> None:
    lab("build", "junk").ok()


OPS = [
    Op("fetch", lambda t: ("build", "blob"), spec="blob"),
    Op("unpack", lambda t: ("build", "pack"), spec="pack"),
    Op("build", lambda t: ("build", "tree"), spec="tree", children=True),
    Op("register", lambda t: ("build", "heavy"), spec="heavy", children=True),
    Op("install", lambda t: ("install", "--profile", f"t{t}", "tool")),
    Op("gc", lambda t: ("gc",), prepare=_build_junk),
    Op("run", lambda t: ("run", "toyapp"), children=True),
]


@dataclass
class Trial:
    seed: int
    number: int
    op: Op
    mode: str = "group"
    whole: bool = False
    delay: float = 0.0
    duration: float = 0.0

    def __str__(self) -> str:
        since = "its start" if self.whole else "its first step on the store"
        return (
            f"[seed {self.seed}, trial {self.number}: {self.op.name}, SIGKILL to the "
            f"{'process group' if self.mode == 'group' else 'mlpkg process only'} "
            f"{self.delay:.3f} s after {since} (of {self.duration:.3f} s); replay with MLPKG_FAULT_SEED="
            f"{self.seed} python -m pytest {Path(__file__).relative_to(Path.cwd())} "
            f"-m 'slow or not slow' -k 'trial{self.number:03d}']"
        )


def settle(lab: Lab, why: str) -> None:
    """``gc --downloads``: every unrooted path, download and piece of debris goes; then
    nothing but valid paths is left in the store, and builds/ and partial/ are empty."""
    r = lab("gc", "--downloads")
    assert r.code == 0, f"{why}: {r}"
    debris = [e for e in lab.entries("store") if e not in lab.valid()]
    assert debris == [], f"{why}: gc left {debris} in the store"
    assert lab.entries("builds") == [], f"{why}: gc left builds/{lab.entries('builds')}"
    assert lab.entries("partial") == [], f"{why}: gc left partial/{lab.entries('partial')}"


def measure(lab: Lab, op: Op, seed: int) -> tuple[float, float]:
    """Run ``op`` once uninterrupted; remember its duration, the part of it after it began
    working on the store (:func:`wait_active`), and the hashes it registered."""
    if op.name not in lab.durations:
        if not lab.reference:
            lab.reference.update(lab.valid())
        if op.prepare:
            op.prepare(lab)
        started = time.monotonic()
        proc = lab.start(*op.command(-1))
        active = wait_active(lab, proc)
        r = lab.finish(proc, timeout=RERUN_TIMEOUT)
        duration = time.monotonic() - started
        assert r.code == 0, f"[seed {seed}] the uninterrupted {op.name} failed: {r}"
        assert active is not None, f"[seed {seed}] {op.name} never began working on the store"
        lab.durations[op.name] = duration
        lab.durations[f"{op.name}/active"] = duration - active
        lab.reference.update(lab.valid())
        settle(lab, f"[seed {seed}] after the uninterrupted {op.name}")
    return lab.durations[op.name], lab.durations[f"{op.name}/active"]


def check_store(lab: Lab, trial: Trial, when: str) -> None:
    """verify --check-contents --json is clean, and no path changed its content hash."""
    doc = lab.verify()
    bad = [p for p in doc.get("problems", []) if p["kind"] != "debris"]  # type: ignore[attr-defined]
    assert doc["code"] == 0 and doc.get("ok") is True and not bad, (
        f"{trial} {when}: verify found {json.dumps(bad or doc)}"
    )
    for name, hash_ in lab.valid().items():
        want = lab.reference.get(name)
        assert want in (None, hash_), f"{trial} {when}: {name} has {hash_}, not {want}"


def check_result(lab: Lab, trial: Trial, r: CliResult) -> None:
    """What the rerun must have done, beyond exiting 0."""
    op = trial.op
    valid = lab.valid()
    if op.spec is not None:
        path = lab.path_of(op.spec)
        assert r.out.strip() == str(path), f"{trial}: the rerun printed {r.out!r}, not {path}"
        assert valid.get(path.name) == lab.reference[path.name], f"{trial}: {path.name} differs"
    if op.name == "install":
        listing = lab("profile", "list", "--json")
        rows = {row["profile"]: row for row in listing.ok().json()}
        row = rows.get(f"t{trial.number}")
        assert row and row["generation"] is not None and row["specs"], f"{trial}: {rows}"
        assert "warning" not in listing.err, f"{trial}: {listing.err}"
    if op.name == "gc":
        junk = lab.path_of("junk")
        assert junk.name not in valid and not junk.exists(), f"{trial}: junk survived gc"
    if op.name == "run":
        assert "toyapp: done" in r.out, f"{trial}: {r}"
    for spec in ("tool", "toyapp", "data"):  # rooted before the campaign: never lost
        assert lab.path_of(spec).name in valid, f"{trial}: {spec} is no longer valid"


def aftermath(lab: Lab, op: Op) -> str:
    """What the kill left, in words (printed with each trial, to show where kills land)."""
    valid = lab.valid()
    left = [f"{len(lab.entries(d))} in {d}/" for d in ("partial", "builds") if lab.entries(d)]
    scratch = [e for e in lab.entries("store") if e.startswith(".")]
    unregistered = [e for e in lab.entries("store") if e[0] != "." and e not in valid]
    left += [f"{len(scratch)} scratch in store/"] if scratch else []
    left += [f"unregistered {unregistered}"] if unregistered else []
    if op.spec is not None:
        left.append(f"{op.spec} {'valid' if lab.path_of(op.spec).name in valid else 'not valid'}")
    return "; left: " + (", ".join(left) or "nothing")


def run_trial(lab: Lab, seed: int, number: int) -> None:
    op = OPS[number % len(OPS)]
    rng = random.Random(f"{seed}:{number}")
    trial = Trial(seed, number, op)
    whole, active = measure(lab, op, seed)
    trial.mode = "parent" if op.children and rng.random() < 0.5 else "group"
    trial.whole = rng.random() < WHOLE
    trial.duration = whole if trial.whole else active
    trial.delay = rng.uniform(0.0, trial.duration)
    if op.prepare:
        op.prepare(lab)

    proc = lab.start(*op.command(number))
    if not trial.whole:
        wait_active(lab, proc)  # the delay counts from here
    deadline = time.monotonic() + trial.delay
    while (left := deadline - time.monotonic()) > 0 and proc.poll() is None:
        time.sleep(min(left, 0.005))
    with contextlib.suppress(ProcessLookupError):  # it may have finished just before
        if trial.mode == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
    killed = lab.finish(proc, timeout=30)
    assert killed.code in (0, -signal.SIGKILL), f"{trial}: the killed command said {killed}"
    print(trial, "killed" if killed.code else "finished before the kill", aftermath(lab, op))
    assert wait_group_gone(proc.pid, 10), f"{trial}: processes of mlpkg's group outlived it"
    left = wait_stragglers_gone(lab.home, 10)
    for line in left:  # they fail this trial, not every later one
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert not left, f"{trial}: processes outlived the killed mlpkg by 10 s: {left}"
    check_store(lab, trial, "after the kill")

    started = time.monotonic()
    again = lab.finish(lab.start(*op.command(number)), timeout=RERUN_TIMEOUT)
    assert again.code == 0, f"{trial}: the command after the kill failed: {again}"
    assert time.monotonic() - started < RERUN_TIMEOUT
    check_result(lab, trial, again)
    check_store(lab, trial, "after the rerun")
    settle(lab, f"{trial} gc after the rerun")


@pytest.mark.parametrize("number", range(DEFAULT_TRIALS), ids=lambda n: f"trial{n:03d}")
def test_kill_at_a_random_moment(lab: Lab, fault_seed: int, number: int) -> None:
    run_trial(lab, fault_seed, number)


@pytest.mark.slow
@pytest.mark.parametrize(
    "number", range(DEFAULT_TRIALS, DEFAULT_TRIALS + SLOW_TRIALS), ids=lambda n: f"trial{n:03d}"
)
def test_kill_at_a_random_moment_slow(lab: Lab, fault_seed: int, number: int) -> None:
    run_trial(lab, fault_seed, number)

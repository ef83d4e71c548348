"""The system under test: LoadGen's ``issue_queries`` over the ONNX Runtime backend.

As the reference: SingleStream runs each inference synchronously inside ``issue_queries``;
the other scenarios put one item per sample on a queue of size 4 x workers, served by worker
threads; five warm-up predictions run before the test (:func:`warm_up`).

Each answer is the float32 payload of :mod:`.postprocess`, handed to LoadGen as
``QuerySampleResponse(id, pointer, nbytes)`` + ``QuerySamplesComplete`` (LoadGen copies the
bytes during the call). An exception during a sample's inference is answered with an empty
response (never a hang), counted, and reported: a warning on stderr naming the sample index
and the error (the first :data:`MAX_WARNINGS`), and ``errors`` in harness.json.

Accuracy mode answers in issue order, from a single thread. LoadGen writes
``mlperf_log_accuracy.json`` in the order responses arrive, as gathered from one log buffer
per calling thread (so completions from several threads interleave unpredictably, even when
they are serialised), while its issue order is fixed by its seeds. So in accuracy mode the
workers still compute in parallel, but hand their results to one completer thread that
answers in issue order (SingleStream answers in ``issue_queries``, one thread anyway): two
accuracy runs write byte-identical logs. Performance mode answers as soon as possible, from
the workers.

Draining (Ctrl-C): :meth:`SUT.drain` cancels inferences in flight, and every sample not yet
answered, or issued later, gets an empty response at once, so LoadGen can wind down.
:func:`start_loadgen` runs LoadGen's test in a thread and :func:`wait_for_loadgen` waits
for it, draining on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from .backend import Backend
from .dataset import PreprocessedDataset
from .errors import BadInput
from .postprocess import LabelHits, to_payload

WARMUP = 5
MAX_WARNINGS = 10
MAX_ERROR_SAMPLES = 1000
DRAIN_SECONDS = 3.0  # LoadGen's time to finish after an interrupt
_EMPTY = np.zeros(1, dtype=np.float32)  # a valid pointer for empty responses (size 0)


@dataclass
class Stats:
    """Counters of one run (thread-safe through ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: int = 0
    answered: int = 0
    errors: int = 0
    drained: int = 0
    first_error: str | None = None
    error_samples: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # hand-over -> answer, successes

    def failed(self) -> int:
        with self.lock:
            return self.errors

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "issued": self.issued,
                "answered": self.answered,
                "succeeded": len(self.latencies),
                "failed": self.errors,
                "drained": self.drained,
            }


@dataclass
class Item:
    """One sample to answer."""

    query_id: int
    index: int
    issued: float
    ticket: int


class SUT:
    """LoadGen callbacks and worker threads (see module doc)."""

    def __init__(
        self,
        lg: Any,
        backend: Backend,
        dataset: PreprocessedDataset,
        scenario: str,
        accuracy: bool,
        warn: Callable[[str], None],
    ) -> None:
        self.lg = lg
        self.backend = backend
        self.dataset = dataset
        self.synchronous = scenario == "SingleStream"
        self.accuracy = accuracy  # answers in issue order, acc= counters
        self.warn = warn
        self.stats = Stats()
        self.hits = LabelHits()
        self.draining = threading.Event()
        self.workers = 1 if self.synchronous else backend.plan.workers
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=4 * self.workers)
        self._threads: list[threading.Thread] = []
        self._completer: threading.Thread | None = None
        self._turn = threading.Condition()
        self._pending: dict[int, tuple[Item, npt.NDArray[np.float32] | None]] = {}
        self._closing = False
        self._next_ticket = 0
        self._tickets = 0

    def reset(self) -> None:
        """Forget what was counted (before LoadGen's test is run again, :mod:`.duration`),
        except failures: the errors, the first one and the failed samples stay, so that the
        run's result and exit status count every attempt's. Only between tests, when every
        sample issued has been answered (and counted: :meth:`_complete` counts before it
        answers)."""
        old = self.stats
        with old.lock:
            kept = Stats(
                errors=old.errors,
                first_error=old.first_error,
                error_samples=list(old.error_samples),
            )
        self.stats = kept
        self.hits = LabelHits()

    # -- LoadGen callbacks -----------------------------------------------------------------

    def issue_queries(self, samples: Sequence[Any]) -> None:
        """One item per sample, timed from its hand-over to the workers (as the reference's
        ``Item``: an Offline sample waits here until the queue has room)."""
        for s in samples:
            with self.stats.lock:
                ticket = self._tickets
                self._tickets += 1
                self.stats.issued += 1
            item = Item(s.id, s.index, time.perf_counter(), ticket)
            if self.synchronous:
                self._process(item, 0)
            else:
                self._queue.put(item)

    def flush_queries(self) -> None:
        pass

    # -- workers ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (none in SingleStream)."""
        if self.synchronous:
            return
        if self.accuracy:
            t = threading.Thread(target=self._complete_in_order, name="sut-completer", daemon=True)
            t.start()
            self._completer = t
        for w in range(self.workers):
            t = threading.Thread(target=self._work, args=(w,), name=f"sut-worker-{w}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the workers once the queue is empty."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        with self._turn:
            self._closing = True
            self._turn.notify_all()
        if self._completer is not None:
            self._completer.join(timeout)

    def drain(self) -> None:
        """Answer everything left at once with empty responses (Ctrl-C)."""
        self.draining.set()
        self.dataset.cancelled.set()
        self.backend.cancel()

    def _work(self, worker: int) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._process(item, worker)

    def _process(self, item: Item, worker: int) -> None:
        payload: npt.NDArray[np.float32] | None = None
        try:
            if not self.draining.is_set():
                payload = self._infer(item.index, worker)
        except Exception as e:
            if not self.draining.is_set():
                self._record_error(item.index, e)
        finally:
            self._answer(item, payload)

    def _infer(self, index: int, worker: int) -> npt.NDArray[np.float32]:
        x = self.dataset.get(index)
        boxes, scores, labels = self.backend.predict(x, worker)
        payload = to_payload(index, boxes, scores, labels)
        if self.accuracy:  # the reference's acc= counters
            self.hits.add(payload, self.dataset.entries[index].categories)
        return payload

    def _record_error(self, index: int, e: Exception) -> None:
        message = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        with self.stats.lock:
            self.stats.errors += 1
            n = self.stats.errors
            if self.stats.first_error is None:
                self.stats.first_error = f"sample {index}: {message}"
            if len(self.stats.error_samples) < MAX_ERROR_SAMPLES:
                self.stats.error_samples.append(index)
        if n <= MAX_WARNINGS:
            self.warn(
                f"warning: inference failed for sample {index} "
                f"({self.dataset.entries[index].npy.name}): {message}"
            )
        if n == MAX_WARNINGS:
            self.warn("warning: further failures are only counted (see harness.json)")

    def _answer(self, item: Item, payload: npt.NDArray[np.float32] | None) -> None:
        if self.accuracy and not self.synchronous:
            with self._turn:
                self._pending[item.ticket] = (item, payload)
                self._turn.notify_all()
        else:
            self._complete(item, payload)

    def _complete_in_order(self) -> None:
        """The completer thread (accuracy mode): answer in ticket order, from one thread,
        because LoadGen's logger keeps one buffer per calling thread and interleaves them."""
        while True:
            with self._turn:
                self._turn.wait_for(lambda: self._next_ticket in self._pending or self._closing)
                if self._next_ticket not in self._pending:
                    return
                item, payload = self._pending.pop(self._next_ticket)
                self._next_ticket += 1
            self._complete(item, payload)

    def _complete(self, item: Item, payload: npt.NDArray[np.float32] | None) -> None:
        data = payload if payload is not None and payload.size else _EMPTY
        nbytes = data.nbytes if data is not _EMPTY else 0
        response = self.lg.QuerySampleResponse(item.query_id, data.ctypes.data, nbytes)
        # counted before LoadGen hears of it: once the last answer is in, LoadGen's test may
        # return and the SUT be reset for the next one (:meth:`reset`)
        done = time.perf_counter()
        with self.stats.lock:
            self.stats.answered += 1
            if payload is not None:
                self.stats.latencies.append(done - item.issued)
            elif self.draining.is_set():
                self.stats.drained += 1
        self.lg.QuerySamplesComplete([response])


def warm_up(backend: Backend, dataset: PreprocessedDataset, n: int = WARMUP) -> list[float]:
    """Run ``n`` predictions on sample 0 (as the reference; on zeros of the manifest's shape
    if sample 0 cannot be run), then one on every other session, those in parallel threads
    (each single-threaded run of the real model takes seconds); return the ``n`` latencies
    (s). BadInput if the model cannot run at all or its outputs are not RetinaNet's."""
    times: list[float] = []
    try:
        x = dataset.read(0)
        start = time.perf_counter()
        outputs = backend.predict(x)
        times.append(time.perf_counter() - start)
    except Exception:
        x = np.zeros((1, *dataset.shape), dtype=np.float32)
    try:
        while len(times) < n:
            start = time.perf_counter()
            outputs = backend.predict(x)
            times.append(time.perf_counter() - start)
        to_payload(0, *outputs)
        extra = range(1, len(backend.sessions))
        if extra:
            with ThreadPoolExecutor(len(extra)) as pool:
                list(pool.map(lambda w: backend.predict(x, w), extra))
    except Exception as e:
        reason = " ".join(str(e).split())[:300]
        raise BadInput(
            f"model file {backend.model} cannot run on a float32 {list(x.shape)} input "
            f"({type(e).__name__}: {reason})."
        ) from None
    return times


def calibrate(
    backend: Backend, dataset: PreprocessedDataset, min_seconds: float = 0.3
) -> dict[str, Any]:
    """Estimate the throughput: every worker predicts concurrently, on its own samples (up
    to 16 distinct ones, so that caches flatter less than the repeated warm-up sample), for
    at least ``min_seconds`` and at least once after an untimed first prediction; qps = the
    sum of the workers' rates (each: predictions / time to its last one). Returns
    ``{"qps", "predictions", "seconds"}``; qps is None if nothing could be run."""
    workers = backend.plan.workers
    samples = []
    for i in range(max(1, min(dataset.count, 2 * workers, 16))):
        with contextlib.suppress(Exception):
            samples.append(dataset.read(i))
    if not samples:
        return {"qps": None, "predictions": 0, "seconds": 0.0}
    counts, spent = [0] * workers, [0.0] * workers
    barrier = threading.Barrier(workers)

    def loop(w: int) -> None:
        with contextlib.suppress(Exception):  # untimed: a thread's first run costs more
            backend.predict(samples[w % len(samples)], w)
        barrier.wait()
        start = time.perf_counter()
        k = w
        while counts[w] == 0 or spent[w] < min_seconds:
            with contextlib.suppress(Exception):
                backend.predict(samples[k % len(samples)], w)
            counts[w] += 1
            spent[w] = time.perf_counter() - start
            k += workers

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = [c / t for c, t in zip(counts, spent) if t > 0]
    return {"qps": sum(rates) if rates else None, "predictions": sum(counts), "seconds": max(spent)}


def start_loadgen(
    lg: Any, sut_h: Any, qsl_h: Any, settings: Any, log_settings: Any, audit: str
) -> tuple[threading.Event, list[BaseException]]:
    """Run LoadGen's test in a daemon thread; the event is set when it returns."""
    failures: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            lg.StartTestWithLogSettings(sut_h, qsl_h, settings, log_settings, audit)
        except BaseException as e:  # reported by the main thread
            failures.append(e)
        finally:
            done.set()

    threading.Thread(target=target, name="loadgen", daemon=True).start()
    return done, failures


def wait_for_loadgen(done: threading.Event, sut: SUT) -> bool:
    """Wait for LoadGen in a way that sees Ctrl-C (and the other stop signals, which the
    command turns into KeyboardInterrupt); True if interrupted. After an interrupt the SUT
    drains and LoadGen gets :data:`DRAIN_SECONDS` to finish (a second one stops waiting).

    Waits on an Event, not ``Thread.join``: in Python 3.11 a KeyboardInterrupt inside
    ``join`` releases the running thread's state lock and marks it stopped (bpo-45274), so
    ``is_alive()`` would then wrongly say False and LoadGen's objects would be destroyed
    under it."""
    try:
        while not done.wait(0.2):
            pass
        return False
    except KeyboardInterrupt:
        sut.drain()
    deadline = time.monotonic() + DRAIN_SECONDS
    with contextlib.suppress(KeyboardInterrupt):
        while not done.is_set() and time.monotonic() < deadline:
            done.wait(0.1)
    return True


class Progress:
    """A progress display on stderr: one updating line on a terminal, otherwise a line
    every :attr:`interval` seconds when something changed; nothing when quiet. Warnings
    (:meth:`message`) go through it too. A stream that cannot be written any more is left
    alone (never an exception in a worker thread, which would stall the SUT)."""

    def __init__(self, sut: SUT, quiet: bool, stream: TextIO | None = None) -> None:
        self.sut = sut
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 10.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty = False  # a partial line is on the terminal
        self._gone = False  # the stream cannot be written any more
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> None:
        if not self.quiet:
            self._thread.start()

    def message(self, text: str) -> None:
        """Print a full line (warnings), clearing the progress line first."""
        with self._lock:
            self._write(("\r\033[K" if self._dirty else "") + text + "\n")
            self._dirty = False

    def line(self) -> str:
        ds, st = self.sut.dataset, self.sut.stats
        if ds.loaded < ds.to_load:
            return f"loading samples {ds.loaded}/{ds.to_load}"
        with st.lock:
            done, failed, issued = st.answered, st.errors, st.issued
        rate = done / max(1e-9, time.perf_counter() - self._started)
        text = f"samples answered {done}/{issued} ({rate:.1f}/s)"
        return text + (f", {failed} failed" if failed else "")

    def _run(self) -> None:
        last = ""
        while not self._stop.wait(self.interval):
            text = self.line()
            if text == last:
                continue
            last = text
            with self._lock:
                self._write(("\r\033[K" + text) if self.tty else text + "\n")
                self._dirty = self.tty and not self._gone

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            if self._dirty:
                self._write("\r\033[K")
                self._dirty = False

    def _write(self, text: str) -> None:
        """Write and flush; once the stream's reader is gone (a closed pipe, a terminal
        hung up), nothing more is written: the run goes on without a display."""
        if self._gone:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._gone = True

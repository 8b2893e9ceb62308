"""Storing rendered chunks beside the rendering: ``ChunkSink`` (one chunk in hand at most) and
``ChunkClock`` (an attempt's ETA from its measured chunk times). See ``worker.runner``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from core.logs import in_job_context
from models.engine import ChunkCarry, ChunkOutputs, ChunkSpec

log = logging.getLogger(__name__)

StoreChunk = Callable[[ChunkSpec, npt.NDArray[np.uint8], ChunkCarry, ChunkOutputs], None]
"""Checkpoints one chunk (``ChunkRunner.store_chunk`` with the attempt's arguments bound)."""


class ChunkClock:
    """The ETA of an attempt: its mean time per stored chunk so far, times the chunks left."""

    def __init__(self, first: int, total: int) -> None:
        self.first, self.total = first, total
        self.started = time.monotonic()

    def eta_s(self, done: int) -> float | None:
        """Seconds until the last chunk is stored, once ``done`` chunks are (None before any)."""
        stored_here = done - self.first
        if stored_here <= 0:
            return None
        per_chunk = (time.monotonic() - self.started) / stored_here
        return round(per_chunk * (self.total - done), 2)


class ChunkSink:
    """Checkpoints rendered chunks in order with ``store``, on its own thread if ``threaded``.

    ``put`` hands a chunk over and returns at once, after waiting for the previous chunk to be
    stored: one chunk is stored while the next renders, never more. The first error of the sink
    is raised in the rendering thread by the next ``put``, ``raise_if_failed`` or ``close``; no
    chunk is stored after it. Not threaded, ``put`` stores the chunk itself.
    """

    def __init__(self, store: StoreChunk, job_id: str, *, threaded: bool) -> None:
        self._store = store
        self._job_id = job_id
        self._threaded = threaded
        self._idle = threading.Semaphore(1)  # held from a hand-over until that chunk is stored
        self._ready = threading.Event()
        self._handed: tuple[ChunkSpec, npt.NDArray[np.uint8], ChunkCarry, ChunkOutputs] | None = None
        self._closing = False
        self._failed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def raise_if_failed(self) -> None:
        """Raise the sink's error in the calling (rendering) thread, once."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(
        self, chunk: ChunkSpec, frames: npt.NDArray[np.uint8], carry: ChunkCarry, outputs: ChunkOutputs
    ) -> None:
        if not self._threaded:
            self._store(chunk, frames, carry, outputs)
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=in_job_context(self._loop), name=f"parla-sink-{self._job_id}", daemon=True
            )
            self._thread.start()
        self._idle.acquire()  # the previous chunk is stored, or failed
        if self._failed:
            self._idle.release()
            self.raise_if_failed()
            raise RuntimeError("the chunk sink failed earlier")  # its error was raised already
        self._handed = (chunk, frames, carry, outputs)
        self._ready.set()

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every chunk handed over is stored (or the sink failed); raise its error.

        ``raise_error=False`` when the rendering thread is failing already: the sink's error is
        logged instead of replacing that one.
        """
        if self._thread is not None:
            self._idle.acquire()
            self._closing = True
            self._ready.set()
            self._thread.join()
            self._thread = None
            self._idle.release()
        if raise_error:
            self.raise_if_failed()
        elif self._error is not None:
            log.error("job %s: storing a chunk failed too: %s", self._job_id, self._error)

    def _loop(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            item, self._handed = self._handed, None
            if item is not None and not self._failed:
                try:
                    self._store(*item)
                except BaseException as exc:  # handed to the rendering thread, which sorts it
                    self._error, self._failed = exc, True
            del item
            if self._closing:
                return
            self._idle.release()

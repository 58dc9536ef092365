"""Threads: one gate shared by many threads (a lane each), holds settled on other threads,
and the GIL released while a dry lane waits for the sidecar."""

from __future__ import annotations

import gc
import os
import queue
import signal
import threading
import time

import tollgate
from harness import MODEL, TENANT, region_totals, wait_until


def test_threads_share_one_gate_and_the_ledger_gets_every_call(pod) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    model = gate.model(MODEL)
    per_thread = 200
    totals = []
    errors = []
    handoff: "queue.Queue[tuple[tollgate.Hold, threading.Semaphore]]" = queue.Queue()

    def agent(i: int) -> None:
        # A lane has a bounded number of reservation slots: at most 4 of this thread's
        # holds wait in the committer's queue (under load the committer lags behind).
        in_flight = threading.Semaphore(4)
        try:
            spent = 0
            for n in range(per_thread):
                if n % 10 == 0:
                    in_flight.acquire()
                hold = gate.reserve(model, input_tokens=10 + i, max_output_tokens=50)
                if n % 10 == 0:
                    handoff.put((hold, in_flight))  # settled by the committer thread
                    continue
                spent += hold.commit(input_tokens=10 + i, output_tokens=n % 50)
            # One lane per thread, whatever the other threads do.
            assert gate._thread_lanes() == 1
            totals.append(spent)
        except BaseException as e:  # reported to the test thread
            errors.append(e)

    remote = []

    def committer() -> None:
        while True:
            item = handoff.get()
            if item is None:
                return
            hold, in_flight = item
            remote.append(hold.commit(input_tokens=1, output_tokens=1))
            in_flight.release()

    c = threading.Thread(target=committer)
    c.start()
    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handoff.put(None)  # type: ignore[arg-type]
    c.join()
    assert not errors, errors
    assert len(remote) == 8 * per_thread // 10 and all(r == 2 for r in remote)
    spent = sum(totals) + sum(remote)
    assert gate._thread_lanes() == 0, "the test thread itself never reserved"
    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (8 * per_thread, spent)
    r = region_totals(sc.region)
    assert r["consumed"] == spent and r["held"] == 0 and r["left"] == 0


def test_the_gil_is_released_while_a_dry_lane_waits(pod) -> None:
    """With the sidecar paused, a thread's fresh lane stays dry: each reserve waits
    ``max_wait`` and is denied. Another thread keeps running Python meanwhile: its clock
    samples land inside the waits, which is impossible if the wait held the GIL."""
    _, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT, max_wait=0.1)
    waits = []
    samples = []
    stop = threading.Event()

    def reserver() -> None:
        for _ in range(3):
            start = time.perf_counter()
            try:
                gate.reserve(MODEL, input_tokens=1, max_output_tokens=1).cancel()
                raise AssertionError("a paused sidecar topped a lane up")
            except tollgate.Denied as d:
                assert d.limit is None, "the sidecar never named a limit"
                assert d.retry_after > 0
            waits.append((start, time.perf_counter()))
        stop.set()

    def ticker() -> None:
        while not stop.is_set():
            samples.append(time.perf_counter())

    os.kill(sc.proc.pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=ticker), threading.Thread(target=reserver)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        os.kill(sc.proc.pid, signal.SIGCONT)
    assert len(waits) == 3
    for start, end in waits:
        assert end - start >= 0.1, "the dry lane was not waited for"
        inside = sum(1 for s in samples if start < s < end)
        assert inside > 100, f"only {inside} samples of the other thread during a {end - start:.3f} s wait"
    # Resumed, the sidecar tops the lane up and the same thread's next call passes.
    wait_until(lambda: _reserves(gate), 10, "a call after the sidecar resumed")


def _reserves(gate: tollgate.Gate) -> bool:
    try:
        gate.reserve(MODEL, input_tokens=1, max_output_tokens=1).commit(1, 1)
        return True
    except tollgate.Denied:
        return False

"""A Python agent that forks (run by test_fork.py as its own interpreter, so the child
exits the normal way: finalization and thread-local destructors included).

The parent makes calls on its main thread and keeps one hold open, then forks. The child
finds the parent's hold unusable (HoldClosed "forked"), makes its own calls with the very
same Gate object (which attaches again) and exits normally. The parent, meanwhile and
after, keeps calling on the lanes it had, commits the hold it kept, and then runs a
multiprocessing pool (fork start method) whose workers use the inherited gate. Every
process writes what it was charged to ``OUT.<who>``: the test checks the ledger against it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import tollgate
import tollgate._native as native

MODEL = "unit-model"
gate: tollgate.Gate


def calls(n: int, seed: int) -> int:
    spent = 0
    for i in range(n):
        with gate.reserve(MODEL, input_tokens=20 + seed, max_output_tokens=80) as hold:
            spent += hold.commit(input_tokens=20 + seed, output_tokens=i % 80)
    return spent


def worker(seed: int) -> int:
    assert native._fork_generation() == 1
    return calls(30, seed)


def main() -> None:
    global gate
    out = Path(sys.argv[1])
    gate = tollgate.Gate(tenant="acme")
    before = calls(50, 0)
    kept = gate.reserve(MODEL, input_tokens=100, max_output_tokens=100)
    pid = os.fork()
    if pid == 0:
        assert native._fork_generation() == 1
        assert not kept.open
        try:
            kept.commit(input_tokens=1, output_tokens=1)
            raise AssertionError("a child settled its parent's hold")
        except tollgate.HoldClosed as e:
            assert e.reason == "forked"
        kept.cancel()  # a no-op in the child
        out.with_suffix(".child").write_text(str(calls(50, 1)))
        return  # normal interpreter exit
    during = calls(50, 2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    after = kept.commit(input_tokens=100, output_tokens=10) + calls(50, 3)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        workers = sum(pool.map(worker, range(4)))
    out.with_suffix(".parent").write_text(str(before + during + after))
    out.with_suffix(".pool").write_text(str(workers))


if __name__ == "__main__":
    main()

"""A Python agent process for the suite (started by ``harness.Agent``).

Loop mode (default): ``--threads`` threads share one ``tollgate.Gate`` (TOLLGATE_REGION);
each reserves a call of the test model, "calls the model" (sleeps ``--pause-ms``) and
commits a usage below the reservation, until the ``--stop`` file exists; denied calls back
off ``retry_after`` (at most 50 ms). Every commit is journaled (``OUT.journal``: ``+ THREAD
MOST`` before, ``= THREAD CHARGE`` after, one ``write`` each) so a killed agent's spending is known to
within its last call; a clean exit writes ``OUT.report``.

Hold mode (``--hold N``): reserves N calls, writes their total to ``OUT.held`` and waits
to be killed, holding them.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import tollgate

MODEL = "unit-model"
TENANT = "acme"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--tier", default="interactive")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pause-ms", type=int, default=1)
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--task-budget", type=int, default=0)
    p.add_argument("--go", default="", help="start the loop once this file exists")
    a = p.parse_args()
    out = Path(a.out)
    gate = tollgate.Gate(tenant=TENANT)
    model = gate.model(MODEL)
    if a.hold:
        hold_and_wait(gate, model, a, out)
        return
    journal = os.open(out.with_suffix(".journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    task = gate.open_task("agent-task", budget=a.task_budget) if a.task_budget else None
    while a.go and not Path(a.go).exists():
        time.sleep(0.005)
    totals = []
    threads = [
        threading.Thread(target=loop, args=(gate, model, a, Path(a.stop), journal, task, totals))
        for _ in range(a.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = sum(t[0] for t in totals)
    spent = sum(t[1] for t in totals)
    denied = sum(t[2] for t in totals)
    limits: dict = {}
    for t in totals:
        for k, v in t[3].items():
            limits[k] = limits.get(k, 0) + v
    words = [f"calls={calls}", f"spent={spent}", f"denied={denied}"]
    words += [f"limit:{k}={v}" for k, v in sorted(limits.items())]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(" ".join(words) + "\n")
    tmp.rename(out.with_suffix(".report"))


def loop(gate, model, a, stop: Path, journal: int, task, totals: list) -> None:
    calls = spent = denied = 0
    limits: dict = {}
    n = 0
    me = threading.get_ident()
    while not stop.exists():
        n += 1
        inp = 200 + (n * 37) % 300
        try:
            hold = gate.reserve(model, input_tokens=inp, max_output_tokens=300, tier=a.tier, task=task)
        except tollgate.Denied as d:
            denied += 1
            key = d.limit or "none"
            limits[key] = limits.get(key, 0) + 1
            time.sleep(min(d.retry_after, 0.05))
            continue
        except tollgate.TaskExhausted:
            denied += 1
            limits["task"] = limits.get("task", 0) + 1
            time.sleep(0.01)
            continue
        time.sleep(a.pause_ms / 1000)
        os.write(journal, f"+ {me} {hold.amount}\n".encode())
        charge = hold.commit(input_tokens=inp, output_tokens=50 + (n * 13) % 250)
        os.write(journal, f"= {me} {charge}\n".encode())
        calls += 1
        spent += charge
    totals.append((calls, spent, denied, limits))


def hold_and_wait(gate, model, a, out: Path) -> None:
    holds = []
    while len(holds) < a.hold:
        try:
            holds.append(gate.reserve(model, input_tokens=500, max_output_tokens=500, tier=a.tier))
        except tollgate.Denied:
            time.sleep(0.02)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(str(sum(h.amount for h in holds)))
    tmp.rename(out.with_suffix(".held"))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()

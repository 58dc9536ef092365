"""Fork: a child never uses (or releases) its parent's lanes or holds; its own calls, the
parent's and a fork pool's are all posted, and the region balances."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import region_totals, wait_until

SCRIPT = Path(__file__).with_name("fork_agent.py")


def test_a_fork_child_attaches_again_and_every_credit_is_accounted(pod, tmp_path: Path) -> None:
    auth, sc = pod
    out = tmp_path / "fork"
    env = dict(os.environ, TOLLGATE_REGION=str(sc.region))
    subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, check=True, timeout=120)
    parent = int(out.with_suffix(".parent").read_text())
    child = int(out.with_suffix(".child").read_text())
    pool = int(out.with_suffix(".pool").read_text())
    # 50 + 50 + 1 + 50 calls in the parent, 50 in the child, 4 x 30 in the pool.
    calls = 151 + 50 + 120
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (calls, parent + child + pool)
    r = region_totals(sc.region)
    assert r["consumed"] == st.total and r["held"] == 0 and r["left"] == 0
    wait_until(lambda: auth.balance()["held_micro"] == 0, 10, "the leases to settle")

"""Fixtures: a real authority and sidecars (see ``harness.py``), stopped after each test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness  # noqa: E402
from harness import CREDIT, Authority, Proc, Sidecar, Upstream  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    for b in (harness.BIN, harness.UPSTREAM_BIN):
        if not b.exists():
            raise pytest.UsageError(
                f"{b} is missing: run `cargo build --bin tollgate --bin llm-upstream` (run.sh does)"
            )


@pytest.fixture
def procs() -> List[Proc]:
    """Processes a test starts: whatever is still running at its end is killed."""
    started: List[Proc] = []
    yield started
    for p in started:
        if p.alive():
            p.kill9()


System = Tuple[Authority, List[Sidecar]]


@pytest.fixture
def system(tmp_path: Path, procs: List[Proc]) -> Callable[..., System]:
    """``system(grant=, cap=, pods=, sidecar_args=)``: an authority with the tenant set up
    (a purchased grant, a hard cap, the price book) and one ready sidecar per pod."""

    def start(grant: int = 1_000 * CREDIT, cap: int = 0, pods: Sequence[str] = ("pod-a",),
              sidecar_args: Sequence[str] = ()) -> System:
        auth = Authority(tmp_path / "authority")
        procs.append(auth.proc)
        auth.setup_tenant(grant, cap, tmp_path)
        sidecars = []
        for pod in pods:
            sc = Sidecar(tmp_path, pod, auth, sidecar_args)
            procs.append(sc.proc)
            sidecars.append(sc)
        for sc in sidecars:
            sc.wait_ready(funded=grant > 0 or cap > 0)
        return auth, sidecars

    return start


@pytest.fixture
def pod(system: Callable[..., System]) -> Tuple[Authority, Sidecar]:
    """One authority (1,000 credits) and one ready sidecar."""
    auth, (sc,) = system()
    return auth, sc


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "agents"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _no_region_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their region; an inherited TOLLGATE_REGION must not leak in."""
    monkeypatch.delenv("TOLLGATE_REGION", raising=False)
    monkeypatch.delenv("TOLLGATE_AGENT", raising=False)


@pytest.fixture
def upstream(tmp_path: Path, procs: List[Proc]) -> Upstream:
    """A local server speaking the OpenAI and Anthropic wire formats."""
    up = Upstream(tmp_path)
    procs.append(up.proc)
    return up

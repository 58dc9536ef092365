"""Fixtures for the gateway's SDK suite: processes started per test session, stopped at
the end. Binaries come from the environment that run.sh sets."""

import os
import subprocess
import tempfile
import time

import pytest


def wait_for_file(path, proc, what, timeout=30.0):
    """The content of `path` once `proc` wrote it, or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {timeout} s")


class Process:
    """A child process stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, args, log, env=None):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tollgate-gw-") as d:
        yield d


def start_upstream(workdir, name, *extra):
    port_file = os.path.join(workdir, f"{name}.port")
    p = Process(
        [os.environ["LLM_UPSTREAM_BIN"], "--port-file", port_file, *extra],
        os.path.join(workdir, f"{name}.log"),
    )
    port = wait_for_file(port_file, p.proc, "llm-upstream")
    return p, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def upstream(workdir):
    """llm-upstream on its own (no key required), as `http://127.0.0.1:PORT`."""
    p, url = start_upstream(workdir, "upstream-plain")
    yield url
    p.stop()

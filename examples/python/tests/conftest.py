"""A real `entra-callout dev` environment (nats-server + the callout + the dev token issuer) for the
Python example tests. The binary is ENTRA_CALLOUT_BIN, default target/debug/entra-callout (what
`cargo test` builds); nats-server comes from NATS_SERVER_BIN as for the Rust tests."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

STARTUP_TIMEOUT = 60.0


def entra_callout_bin() -> str:
    return os.environ.get("ENTRA_CALLOUT_BIN", str(ROOT / "target" / "debug" / "entra-callout"))


class Dev:
    def __init__(self, banner: str, log: pathlib.Path) -> None:
        self.nats_url = re.search(r"NATS\s+(nats://\S+)", banner).group(1)
        self.ws_url = re.search(r"WebSocket\s+(ws://\S+)", banner).group(1)
        self.issuer_url = re.search(r"token issuer\s+(http://\S+)", banner).group(1)
        self.log = log

    def output(self) -> str:
        """What `dev` printed so far: the banner, then the service's log with its audit lines."""
        return self.log.read_text(errors="replace")

    def token_command(self, *args: str) -> str:
        return " ".join([entra_callout_bin(), "dev", "token", *args])


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Dev:
    log = tmp_path_factory.mktemp("dev") / "dev.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [entra_callout_bin(), "dev", "--policies", str(ROOT / "policies"),
             "--nats-port", "0", "--websocket-port", "0", "--monitor-port", "0", "--issuer-port", "0",
             "--admin-port", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        banner = None
        while banner is None:
            text = log.read_text(errors="replace")
            # The banner is printed once the service answers authorization requests.
            if "Tokens for made-up identities" in text:
                banner = text
            elif proc.poll() is not None:
                pytest.fail(f"entra-callout dev exited with {proc.returncode}:\n{text}")
            elif time.monotonic() > deadline:
                pytest.fail(f"entra-callout dev did not start within {STARTUP_TIMEOUT}s:\n{text}")
            else:
                time.sleep(0.1)
        yield Dev(banner, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

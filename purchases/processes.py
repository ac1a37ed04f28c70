"""Stopping a child process the same way everywhere (tests, benchmarks): ask, wait, then insist."""
from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, up to `timeout` seconds for a clean exit, then SIGKILL. A process already gone is left be."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

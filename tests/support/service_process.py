"""`onevoice run` as a real subprocess for tests that start, kill and stop it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`onevoice run` as a subprocess; its log accumulates across incarnations."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts + 1} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "consumers.cli", "run"], cwd=REPO_ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """A clean stop (SIGTERM) once the process is up; a signal during interpreter start-up would just kill it."""
        deadline = time.monotonic() + timeout
        while "consuming" not in self.log_path.read_text(errors="replace").split("===== start #")[-1]:
            if not self.alive() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"service ignored SIGTERM for {timeout}s; log: {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

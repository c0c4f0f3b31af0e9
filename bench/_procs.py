"""Subprocesses of the benchmark: servers (canned, fake, gateway) and contender workers.

Everything listens on 127.0.0.1 only, every wait has a timeout, and :class:`Processes`
stops whatever it started (SIGTERM, then SIGKILL) when the run ends, fails or is
interrupted. Servers write to log files, never to pipes, so a chatty server cannot block.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def clean_env() -> dict[str, str]:
    """The environment for child interpreters: no PYTHON* settings (no PYTHONDEVMODE from
    tox, no PYTHONDONTWRITEBYTECODE that would make every import compile from source)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_kib(pid: int) -> int:
    """The peak RSS (VmHWM) of a running process, in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Server:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, url: str) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.url = url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


class Worker:
    """A contender's worker process (bench/_workers.py), driven line by line."""

    def __init__(self, label: str, argv: list[str], cwd: Path, timeout: float, *, ours: bool = True) -> None:
        self.label = label
        env = clean_env()
        if ours:
            # This checkout's lorax, not whichever one the venv has installed (an editable
            # install of another worktree would be measured instead).
            env["PYTHONPATH"] = str(ROOT)
        self.timeout = timeout
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(cwd),
            env=env,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._expect("ready")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self._stderr) < 200:
                self._stderr.append(line)

    def _expect(self, key: str | None = None) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"{self.label}: no answer within {self.timeout:.0f} s") from None
        if not line:
            self.proc.wait(timeout=10)
            err = b"".join(self._stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"{self.label}: worker exited ({self.proc.returncode})\n{err}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            self.kill()
            raise RuntimeError(f"{self.label}: {answer['error']}")
        if key is not None and key not in answer:
            raise RuntimeError(f"{self.label}: unexpected answer {answer}")
        return answer

    def command(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._expect()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._close_pipes()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        # The pumps end at EOF, once the process is gone; then the pipes can be closed.
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class Processes:
    """Starts servers and workers; :meth:`stop_all` ends every one of them."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.workers: list[Worker] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="lorax-bench-"))

    # -- servers -------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], pattern: str, timeout: float = 30.0) -> Server:
        log = self.tmp / f"{name}-{len(self.servers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT), env=clean_env()
            )
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            text = log.read_text(encoding="utf-8", errors="replace")
            match = regex.search(text)
            if match:
                server = Server(name, proc, log, match.group(1))
                self.servers.append(server)
                return server
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
                raise RuntimeError(f"{name} did not start ({proc.returncode}):\n{text[-2000:]}")
            time.sleep(0.05)

    def canned(self) -> Server:
        server = self._start(
            "canned",
            [sys.executable, str(BENCH / "canned_server.py"), "--host", "127.0.0.1", "--port", "0"],
            r"listening on (\d+)",
        )
        server.url = f"http://127.0.0.1:{server.url}"
        return server

    def fake(self, *extra: str) -> Server:
        return self._start(
            "fake",
            [sys.executable, "-m", "lorax.testing", "--host", "127.0.0.1", "--port", "0", *extra],
            r"listening on (http://\S+)",
        )

    def gateway(self, upstream: str, *extra: str) -> Server:
        return self._start(
            "gateway",
            [
                sys.executable,
                "-m",
                "lorax.gateway",
                "--upstream",
                upstream,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "warning",
                *extra,
            ],
            r"lorax gateway on (ws://\S+)",
        )

    def stop(self, server: Server) -> None:
        proc = server.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if server in self.servers:
            self.servers.remove(server)

    # -- workers -------------------------------------------------------------------

    def worker(
        self, label: str, python: Path | str, contender: str, case: str, params: dict[str, Any], timeout: float
    ) -> Worker:
        script = str(BENCH / "_workers.py")
        if contender == "official":
            # Isolated mode, from inside the official venv: this checkout's lorax is not on the path.
            argv = [str(python), "-I", script, contender, case, json.dumps(params)]
            cwd = Path(python).parent.parent
        else:
            argv = [str(python), script, contender, case, json.dumps(params)]
            cwd = ROOT
        worker = Worker(label, argv, cwd, timeout, ours=contender != "official")
        self.workers.append(worker)
        return worker

    def close_worker(self, worker: Worker) -> None:
        worker.close()
        if worker in self.workers:
            self.workers.remove(worker)

    def stop_all(self) -> None:
        for worker in list(self.workers):
            try:
                worker.kill()
            except Exception:
                pass
        self.workers.clear()
        for server in list(self.servers):
            try:
                self.stop(server)
            except Exception:
                pass

"""Worker processes for tests and benchmarks: ``actorsource run`` in a process of its own,
which a test can kill (SIGKILL), pause (SIGSTOP), resume and stop (SIGTERM), and whose JSON
log lines it can read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """``actorsource run TARGETS --nats URLS --data-dir DATA_DIR [ARGS]`` as a child process.

    ``pythonpath``: directories the child imports TARGETS from (prepended to ``PYTHONPATH``).
    Its log (JSON lines) goes to ``<data_dir>.log``. Guarantees: :meth:`stop` ends the process
    whatever state it is in (a paused one is resumed first, a stuck one killed), and is
    idempotent.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        urls: Sequence[str],
        data_dir: Path,
        args: Sequence[str] = (),
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.with_suffix(".log")
        self.command = [
            sys.executable,
            "-m",
            "actorsource",
            "run",
            *targets,
            "--nats",
            ",".join(urls),
            "--data-dir",
            str(self.data_dir),
            "--log-format",
            "json",
            *args,
        ]
        self._pythonpath = [str(p) for p in pythonpath]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the process (its log file is appended to)."""
        env = dict(os.environ)
        if self._pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                [*self._pythonpath, *filter(None, [env.get("PYTHONPATH")])]
            )
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=log, env=env, start_new_session=True
            )

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL it, as a crash would."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP it: its connections stay open, it does nothing (a long GC pause)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused process."""
        self._signal(signal.SIGCONT)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; its exit status."""
        process = self.process
        if process is None:
            return None
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return process.returncode

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def logs(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far (other lines are skipped)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    async def __aenter__(self) -> WorkerProcess:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

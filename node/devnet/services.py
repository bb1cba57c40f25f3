"""Managed child processes: start, wait until ready by polling, stop gracefully then by force.

Every long-lived external component that fedchain starts (anvil, the IPFS daemon, node processes in the
devnet harness and in tests) runs as a :class:`ManagedProcess`. Readiness is always decided by polling a
probe (never by sleeping a fixed time), and a stop escalates SIGINT -> SIGTERM -> SIGKILL, so a hung child
never outlives its parent's cleanup. Only processes started here are ever signalled, by their own PID.

:class:`ManagedProcess` starts its child with :class:`subprocess.Popen`; the start, poll, signal and wait
steps are methods of their own, so :class:`node.devnet.launcher.ForkedProcess` can start the same kind of
child by forking a pre-imported launcher and keep everything else (readiness, stop, log tail).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A managed process failed to start, exited early, or did not become ready in time."""


class ManagedProcess:
    """A child process with a log file, a readiness probe and an escalating stop.

    Parameters
    ----------
    name
        Short name used in log lines and error messages (``"anvil"``, ``"ipfs"``).
    argv
        The command line to run.
    log_path
        File that receives the child's stdout and stderr (appended to).
    ready
        Probe called repeatedly by :meth:`wait_until_ready`; returns ``True`` once the service answers.
        It may read :meth:`log_text` (e.g. to find the port the child printed).
    env
        Extra environment variables (merged over ``os.environ``).
    cwd
        Working directory of the child.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[ManagedProcess], bool],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self._ready = ready
        self._env = dict(env or {})
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running child, or ``None`` before :meth:`start`."""
        return self._proc.pid if self._proc is not None else None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has started the child."""
        return self._proc is not None

    @property
    def returncode(self) -> int | None:
        """The child's exit code once it has exited (``-N`` for signal N), else ``None``."""
        return self._poll() if self.started else None

    def _popen(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ServiceError(f"{self.name}: not started")
        return self._proc

    def _poll(self) -> int | None:
        """Return the exit code if the (started) child has exited, else ``None``."""
        return self._popen().poll()

    def _send(self, sig: int) -> None:
        """Send ``sig`` to the (started) child; ``ProcessLookupError`` when it is gone."""
        self._popen().send_signal(sig)

    def _wait(self, timeout: float | None) -> int:
        """Wait for the (started) child to exit; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        return self._popen().wait(timeout=timeout)

    def start(self) -> None:
        """Start the child process (non-blocking); see :meth:`wait_until_ready`."""
        if self._proc is not None:
            raise ServiceError(f"{self.name}: already started (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._env}
        with open(self.log_path, "ab") as log_file:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self._cwd,
                    start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not the child's
                )
            except OSError as exc:
                raise ServiceError(f"{self.name}: cannot start {self.argv[0]!r}: {exc}") from exc
        log.info("%s started (pid %d), log %s", self.name, self._proc.pid, self.log_path)

    def log_text(self) -> str:
        """Return everything the child has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_running(self) -> bool:
        """Whether the child has been started and has not exited."""
        return self.started and self._poll() is None

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.05) -> None:
        """Poll the readiness probe until it passes.

        Raises
        ------
        ServiceError
            If the child exits first or ``timeout`` seconds pass; the message ends with the log's tail.
        """
        if not self.started:
            raise ServiceError(f"{self.name}: not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self._poll()
            if code is not None:
                raise ServiceError(f"{self.name} exited with code {code} before it was ready\n" + self.tail())
            try:
                if self._ready(self):
                    return
            except Exception as exc:  # a probe that raises just means "not yet"
                log.debug("%s readiness probe: %s", self.name, exc)
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} not ready after {timeout:.0f} s\n" + self.tail())
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the child: SIGINT, then SIGTERM, then SIGKILL, each after ``timeout / 3`` seconds.

        Returns the exit code, or ``None`` if the child was never started.
        """
        if not self.started:
            return None
        step = max(timeout / 3, 0.1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self._poll() is not None:
                break
            try:
                self._send(sig)
            except ProcessLookupError:
                break
            try:
                self._wait(step)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit on %s", self.name, signal.Signals(sig).name)
        code = self._wait(None)
        log.info("%s stopped (exit code %s)", self.name, code)
        return code

    def tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the child's log, framed for an error message."""
        text = self.log_text().splitlines()[-lines:]
        return f"--- last {len(text)} lines of {self.log_path} ---\n" + "\n".join(text)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (signal 0 probe)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process that this tool started earlier (e.g. recorded in a devnet state file), by PID.

    Escalates SIGINT -> SIGTERM -> SIGKILL; returns once the process is gone.
    """
    step = max(timeout / 3, 0.1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + step
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            with contextlib.suppress(ChildProcessError):  # reap our own child, so it leaves no zombie
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)

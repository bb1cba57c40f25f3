"""A pre-imported launcher: ``fedchain`` commands forked from one process that has imported them already.

Every ``fedchain`` child of the devnet harness (``node start``, ``init``, ``run create``, ``status``,
``audit``, ``export``) started as a fresh interpreter imports torch, transformers, web3 and libp2p before it
does anything (10-35 s each on a loaded machine). The launcher, a fork server like multiprocessing's
forkserver, pays that once. Started as ``python -m node.devnet.launcher --socket PATH``, it imports every
module of the ``node``, ``ledger``, ``p2p`` and ``training`` packages (and with them torch, transformers,
peft, web3, trio and libp2p), runs no torch operation and starts no thread or event loop, then listens on the
Unix socket. Each request (argv, environment, working directory, output files) forks a child that

* starts a session of its own (as ``Popen(start_new_session=True)`` does), reads /dev/null as stdin and
  writes stdout and stderr to the request's files;
* takes the request's environment and working directory, ``torch.set_num_threads`` from
  ``OMP_NUM_THREADS`` (torch's intra-op pool is created lazily, in the child), and fresh OS-entropy seeds for
  Python's ``random``, numpy's and torch's global generators, as a fresh interpreter has (forked children
  would otherwise draw the same numbers; the node seeds every generator its results depend on itself);
* runs the ``fedchain`` Typer app with the argv, runs the ``atexit`` handlers and ``os._exit`` s with the
  app's exit code.

The launcher reaps its children and writes each exit code (Popen's convention: ``-N`` for signal N) to
``exits/<pid>`` next to the socket. A child is an OS process of its own (its own PID, session, libp2p host,
keys, state and log), so SIGKILL, SIGSTOP and SIGCONT by PID act on it as on a Popen'd one;
:class:`ForkedProcess` is the :class:`~node.devnet.services.ManagedProcess` of such a child.
:class:`Launcher` starts and stops a launcher and runs CLI commands through it (:meth:`Launcher.run`). A
request may name a network namespace (``ip netns add NS``): the child enters it (``setns``, which needs
root) before it does anything else, as under ``ip netns exec NS``, so one launcher serves the members of
every namespace.
Stopping the launcher stops its remaining children (SIGINT, SIGTERM, SIGKILL) and records their codes.

What a fork cannot change is refused rather than inherited: a request whose environment differs from the
launcher's in a variable read at import time (:data:`IMPORT_TIME_ENV`) gets an error. The children share
the launcher's string-hash seed (``PYTHONHASHSEED`` is fixed when an interpreter starts).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import itertools
import json
import os
import pkgutil
import random
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from node.devnet.services import ManagedProcess, ServiceError, pid_alive

PRELOAD_PACKAGES = ("node", "ledger", "p2p", "training")
"""Packages whose every module the launcher imports before it serves (the commands import lazily)."""
PRELOAD_MODULES = (
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.llama.modeling_llama",
    "transformers.tokenization_utils_fast",
    "peft.tuners.lora",
    "safetensors.torch",
)
"""Modules behind transformers' and peft's lazy attributes that loading the tiny Llama model imports."""
IMPORT_TIME_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "ATEN_CPU_CAPABILITY",
)
"""Variables read while importing: a request must have the launcher's values."""
MAX_REQUEST_BYTES = 1 << 20
LOST_EXIT_CODE = 255
"""Exit code reported for a child whose launcher died before it could record the child's own."""
_SOCKET_PATH_MAX = 107
_CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
"""Where ``ip netns add`` keeps the namespaces a request may name."""


# ---- the launcher process ---------------------------------------------------------------------------------


def preload(
    packages: Sequence[str] = PRELOAD_PACKAGES, modules: Sequence[str] = PRELOAD_MODULES
) -> list[str]:
    """Import ``modules`` and every module of ``packages``; return ``"module: error"`` for each failure."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # reported in the launcher's log; the child imports it again, and fails
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # reported in the launcher's log; the child imports it again, and fails
                failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
    return failed


def native_threads() -> int:
    """Threads of this process, native ones included (``/proc/self/task``)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _exit_status(code: object) -> int:
    """Return the process exit status of ``SystemExit(code)``, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run_cli(argv: Sequence[str]) -> int:
    """Run the ``fedchain`` app as ``python -c 'from node.cli import main; main()' ARGV`` would."""
    sys.argv = ["fedchain", *argv]
    from node.cli import main

    code = 0
    try:
        main()
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except KeyboardInterrupt:  # the interpreter's own end: traceback, then death by SIGINT
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 120
    return code


def _fresh_state(env: Mapping[str, str]) -> None:
    """Seed the global generators from the OS and size torch's thread pool, as in a fresh interpreter."""
    import numpy
    import torch

    random.seed()
    numpy.random.seed()
    torch.seed()
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace ``name``, as ``ip netns exec`` does.

    Raises
    ------
    OSError
        When the namespace does not exist or ``setns`` is refused (it needs CAP_SYS_ADMIN).
    """
    import ctypes

    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(request: Mapping[str, Any], close: Sequence[int], handlers: Mapping[int, Any]) -> NoReturn:
    """Set up the forked child (session, files, environment, seeds) and run the CLI in it; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], flags, 0o644)
        err = os.open(request["stderr"], flags, 0o644) if request.get("stderr") else out
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        for fd in {null, out, err}:
            os.close(fd)
        if request.get("netns"):
            enter_netns(str(request["netns"]))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _fresh_state(request["env"])
        code = _run_cli(request["argv"])
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        if code < 0:  # die by the signal, as the interpreter does after an uncaught KeyboardInterrupt
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


class _Server:
    """The launcher's loop: accept requests, fork children, reap them and record their exit codes."""

    def __init__(self, socket_path: Path) -> None:  # before the imports: their variables as they were
        self.socket_path = socket_path
        self.exits = socket_path.parent / "exits"
        self.children: set[int] = set()
        self.stopping: list[int] = []
        self.baseline = {name: os.environ.get(name) for name in IMPORT_TIME_ENV}
        self.handlers: dict[int, Any] = {
            int(sig): signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
        }

    def serve(self) -> int:
        started = time.monotonic()
        failed = preload()
        for line in failed:
            print(f"launcher: cannot preload {line}", file=sys.stderr)
        self.exits.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only wakes select (wakeup fd)
        took = time.monotonic() - started
        print(
            f"launcher ready: pid {os.getpid()}, {len(sys.modules)} modules in {took:.1f} s, "
            f"{native_threads()} thread(s), socket {self.socket_path}",
            flush=True,
        )
        close = [listener.fileno(), wake_r, wake_w]
        try:
            while not self.stopping:
                ready, _, _ = select.select([listener.fileno(), wake_r], [], [], 1.0)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 4096):
                            pass
                self._reap()
                if listener.fileno() in ready and not self.stopping:
                    conn, _ = listener.accept()
                    with conn:
                        self._handle(conn, close)
        finally:
            listener.close()
            self.socket_path.unlink(missing_ok=True)
            self._stop_children()
        print(f"launcher stopped on signal {self.stopping[0] if self.stopping else '-'}", flush=True)
        return 0

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping.append(signum)

    def _handle(self, conn: socket.socket, close: list[int]) -> None:
        conn.settimeout(10.0)
        try:
            request = json.loads(_read_line(conn))
            reply = self._answer(request, [*close, conn.fileno()])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reply = {"error": f"bad request: {type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def _answer(self, request: dict[str, Any], close: list[int]) -> dict[str, Any]:
        if request.get("op") == "ping":
            return {"ok": True, "pid": os.getpid(), "children": sorted(self.children)}
        if request.get("op") != "spawn":
            return {"error": f"unknown op {request.get('op')!r}"}
        argv, env = request["argv"], request["env"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return {"error": "`argv` must be a list of strings"}
        if not isinstance(env, dict):
            return {"error": "`env` must be an object"}
        differ = [name for name in IMPORT_TIME_ENV if env.get(name) != self.baseline[name]]
        if differ:
            return {
                "error": "the environment differs from the launcher's in variables read at import time: "
                + ", ".join(f"{n}={env.get(n)!r} (launcher {self.baseline[n]!r})" for n in differ)
            }
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, close, self.handlers)
        self.children.add(pid)
        (self.exits / str(pid)).unlink(missing_ok=True)  # a reused PID's old record
        return {"pid": pid}

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            record = self.exits / str(pid)
            tmp = record.with_suffix(".tmp")
            tmp.write_text(str(os.waitstatus_to_exitcode(status)))
            tmp.replace(record)

    def _stop_children(self, step: float = 2.0) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + step
            while self.children and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.02)
            if not self.children:
                return


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m node.devnet.launcher --socket PATH``: preload, then serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    args = parser.parse_args(argv)
    # numpy's OpenBLAS starts its thread pool when imported (OMP_NUM_THREADS sizes it when set): one thread
    # keeps the launcher single-threaded, and the children's environment is the request's own
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return _Server(args.socket.resolve()).serve()


# ---- the harness side -------------------------------------------------------------------------------------


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return pid_alive(pid)
    return stat.rpartition(")")[2].split()[0] != "Z"


class Launcher:
    """A launcher process (started with ``python -m node.devnet.launcher``) and its client side.

    Parameters
    ----------
    folder
        Holds the socket, the ``exits/`` records, the launcher's log and CLI output files.
    env
        Extra environment of the launcher (merged over ``os.environ``); requests must agree with it in
        :data:`IMPORT_TIME_ENV`.
    prefix
        Command prefix of the launcher, e.g. ``["ip", "netns", "exec", NS]``: its children run there too.
    name
        Name in log lines and errors.
    """

    def __init__(
        self,
        folder: Path,
        *,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        name: str = "launcher",
    ) -> None:
        self.folder = Path(folder).resolve()
        self.socket_path = self.folder / "launcher.sock"
        if len(str(self.socket_path)) > _SOCKET_PATH_MAX:
            raise ValueError(f"`folder` path too long for a Unix socket: {self.socket_path}")
        self.exits = self.folder / "exits"
        self.name = name
        argv = [*prefix, sys.executable, "-m", "node.devnet.launcher", "--socket", str(self.socket_path)]
        self.service = ManagedProcess(name, argv, self.folder / "launcher.log", self._probe, env=env)
        self._outputs = itertools.count()
        self._timeout = 300.0
        self._ready = False

    @property
    def pid(self) -> int | None:
        """PID of the launcher process (its :class:`ManagedProcess` is ``service``)."""
        return self.service.pid

    def start(self, timeout: float = 300.0, *, wait: bool = True) -> None:
        """Start the launcher; ``wait``: until it has imported everything and answers on its socket.

        Without ``wait`` its imports overlap the caller's own start-up; the first request (or
        :meth:`wait_until_ready`) then waits for it, up to ``timeout`` seconds.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self.service.start()
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self) -> None:
        """Wait until the started launcher answers; a ServiceError with its log's tail if it does not."""
        if not self._ready:
            self.service.wait_until_ready(timeout=self._timeout, interval=0.2)
            self._ready = True

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the launcher (it stops its remaining children first); return its exit code."""
        return self.service.stop(timeout=timeout)

    def is_running(self) -> bool:
        """Whether the launcher process runs."""
        return self.service.is_running()

    def _request(self, request: Mapping[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.socket_path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = json.loads(_read_line(conn) or b"{}")
        if not isinstance(reply, dict):
            raise ServiceError(f"{self.name}: unexpected reply {reply!r}")
        return reply

    def _probe(self, _: ManagedProcess) -> bool:
        return bool(self._request({"op": "ping"}, timeout=5.0).get("ok"))

    def children(self) -> list[int]:
        """PIDs of the launcher's children that it has not reaped yet."""
        return [int(pid) for pid in self._request({"op": "ping"}).get("children", [])]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdout: Path,
        stderr: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        netns: str | None = None,
    ) -> int:
        """Fork ``fedchain ARGV`` with exactly ``env`` (default: this process's environment); return its PID.

        ``stderr`` defaults to ``stdout``; ``netns`` names a network namespace for the child to run in.
        Raises :class:`ServiceError` when the launcher refuses.
        """
        self.wait_until_ready()
        request = {
            "op": "spawn",
            "argv": list(argv),
            "env": dict(os.environ if env is None else env),
            "cwd": str(Path(cwd or Path.cwd()).resolve()),
            "stdout": str(Path(stdout).resolve()),
            "stderr": str(Path(stderr).resolve()) if stderr is not None else None,
            "netns": netns,
        }
        try:
            reply = self._request(request)
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{self.name}: cannot reach {self.socket_path}: {exc}") from exc
        if "pid" not in reply:
            raise ServiceError(f"{self.name} refused to start {' '.join(argv[:2])}: {reply.get('error')}")
        return int(reply["pid"])

    def exit_code(self, pid: int) -> int | None:
        """Return child ``pid``'s exit code once the launcher has reaped it, else ``None``.

        A child of a launcher that died before recording it reports :data:`LOST_EXIT_CODE` once gone.
        """
        try:
            return int((self.exits / str(pid)).read_text())
        except FileNotFoundError:
            pass
        if not self.is_running() and not _running(pid):
            with contextlib.suppress(FileNotFoundError):  # recorded while the launcher stopped
                return int((self.exits / str(pid)).read_text())
            return LOST_EXIT_CODE
        return None

    def wait(self, pid: int, timeout: float | None = None) -> int:
        """Wait for child ``pid`` to exit; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.01
        while (code := self.exit_code(pid)) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([f"pid {pid}"], timeout or 0.0)
            time.sleep(interval)
            interval = min(interval * 1.5, 0.1)
        return code

    def process(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[ManagedProcess], bool],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        netns: str | None = None,
    ) -> ForkedProcess:
        """Return a (not yet started) :class:`ForkedProcess` running ``fedchain ARGV``."""
        return ForkedProcess(self, name, argv, log_path, ready, env=env, cwd=cwd, netns=netns)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        netns: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``fedchain ARGV`` to its end, as ``subprocess.run(capture_output=True, text=True)`` would.

        Raises ``subprocess.TimeoutExpired`` (the child killed) after ``timeout`` seconds.
        """
        outputs = self.folder / "cli"
        outputs.mkdir(parents=True, exist_ok=True)
        n = next(self._outputs)
        out, err = outputs / f"{os.getpid()}-{n}.out", outputs / f"{os.getpid()}-{n}.err"
        env = {**os.environ, **(env or {})}
        pid = self.spawn(argv, stdout=out, stderr=err, env=env, cwd=cwd, netns=netns)
        try:
            try:
                code = self.wait(pid, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.wait(pid, 10.0)
                raise subprocess.TimeoutExpired(
                    list(argv), timeout, output=_read(out), stderr=_read(err)
                ) from None
            return subprocess.CompletedProcess(list(argv), code, _read(out), _read(err))
        finally:
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class ForkedProcess(ManagedProcess):
    """A :class:`ManagedProcess` whose child ``fedchain ARGV`` is forked by a :class:`Launcher`.

    Same interface (``start``, ``pid``, ``is_running``, ``wait_until_ready``, ``stop`` with SIGINT ->
    SIGTERM -> SIGKILL by PID, ``returncode``, ``tail``); ``argv`` is the CLI's arguments, the environment
    is ``os.environ`` with ``env`` over it, as for a Popen'd child; ``netns`` is the network namespace it
    runs in.
    """

    def __init__(
        self,
        launcher: Launcher,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[ManagedProcess], bool],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        netns: str | None = None,
    ) -> None:
        super().__init__(name, argv, log_path, ready, env=env, cwd=cwd)
        self.launcher = launcher
        self.netns = netns
        self._pid: int | None = None
        self._code: int | None = None

    @property
    def pid(self) -> int | None:
        """PID of the forked child, or ``None`` before :meth:`start`."""
        return self._pid

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has forked the child."""
        return self._pid is not None

    def start(self) -> None:
        """Fork the child through the launcher (non-blocking); see :meth:`wait_until_ready`."""
        if self._pid is not None:
            raise ServiceError(f"{self.name}: already started (pid {self._pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._env}
        self._pid = self.launcher.spawn(
            self.argv, stdout=self.log_path, env=env, cwd=self._cwd, netns=self.netns
        )

    def _started_pid(self) -> int:
        if self._pid is None:
            raise ServiceError(f"{self.name}: not started")
        return self._pid

    def _poll(self) -> int | None:
        if self._code is None:
            self._code = self.launcher.exit_code(self._started_pid())
        return self._code

    def _send(self, sig: int) -> None:
        if self._poll() is not None:  # reaped: the PID may name another process by now
            raise ProcessLookupError(self._pid)
        os.kill(self._started_pid(), sig)

    def _wait(self, timeout: float | None) -> int:
        if self._code is None:
            self._code = self.launcher.wait(self._started_pid(), timeout)
        return self._code


if __name__ == "__main__":
    sys.exit(main())

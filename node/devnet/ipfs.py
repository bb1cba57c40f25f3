"""The local IPFS daemon of the devnet: npm ``ipfs@0.66.1`` (js-ipfs), offline, on loopback only.

:class:`IpfsDaemon` initialises a repository with ``jsipfs init --profile test --empty-repo``, rewrites
its addresses to ``127.0.0.1`` port 0 (the OS picks free ports; the daemon writes the API address it
got to ``<repo>/api``), clears the bootstrap list, and runs ``jsipfs daemon --offline
--enable-preload=false``. Readiness is ``POST /api/v0/id`` answering 200. Cold start (init + daemon) takes
about 5 s on a 2-core machine, a warm restart of an existing repository about 2.5 s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from node.devnet.services import ManagedProcess, ServiceError

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK_ANY_PORT = "/ip4/127.0.0.1/tcp/0"
_MULTIADDR_RE = re.compile(r"^/ip4/(?P<host>[0-9.]+)/tcp/(?P<port>[0-9]+)(/http)?$")


def find_jsipfs() -> Path:
    """Locate the ``jsipfs`` executable.

    Looks at ``$FEDCHAIN_JSIPFS``, then ``node_modules/.bin/jsipfs`` in the repository and the current
    directory, then ``$PATH``.

    Raises
    ------
    ServiceError
        If none is found (install it with ``make setup``, which runs ``npm ci``).
    """
    candidates = [os.environ.get("FEDCHAIN_JSIPFS", "")]
    candidates += [str(base / "node_modules" / ".bin" / "jsipfs") for base in (_REPO_ROOT, Path.cwd())]
    candidates.append(shutil.which("jsipfs") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServiceError("jsipfs not found: run `make setup` (npm ci) or set FEDCHAIN_JSIPFS")


def multiaddr_to_url(addr: str) -> str:
    """Turn ``/ip4/H/tcp/P[/http]`` into ``http://H:P``.

    Raises
    ------
    ValueError
        For any other form of multiaddr.
    """
    match = _MULTIADDR_RE.match(addr.strip())
    if match is None:
        raise ValueError(f"expected a multiaddr like /ip4/127.0.0.1/tcp/5001/http, got {addr!r}")
    return f"http://{match['host']}:{match['port']}"


class IpfsDaemon:
    """A js-ipfs daemon with its own repository, on loopback, offline.

    Parameters
    ----------
    repo_dir
        The IPFS repository (``IPFS_PATH``); initialised on first start, reused afterwards.
    log_path
        File receiving the output of ``init`` and of the daemon.
    jsipfs
        The ``jsipfs`` executable (default: :func:`find_jsipfs`).
    prefix
        Command prefix of the daemon, e.g. ``["ip", "netns", "exec", NS]`` to run it inside a network
        namespace (:mod:`node.devnet.wan`).

    Examples
    --------
    >>> with IpfsDaemon(Path("/tmp/ipfs-repo"), Path("/tmp/ipfs.log")) as daemon:  # doctest: +SKIP
    ...     print(daemon.api_addr)
    /ip4/127.0.0.1/tcp/41235/http
    """

    def __init__(
        self, repo_dir: Path, log_path: Path, jsipfs: Path | None = None, *, prefix: Sequence[str] = ()
    ) -> None:
        self.repo_dir = Path(repo_dir)
        self.prefix = list(prefix)
        self.log_path = Path(log_path)
        self._jsipfs = jsipfs
        self._proc: ManagedProcess | None = None

    @property
    def api_addr(self) -> str:
        """The HTTP RPC API multiaddr (``/ip4/127.0.0.1/tcp/PORT/http``), once the daemon is listening.

        Raises
        ------
        ServiceError
            If the daemon has not written its API address yet.
        """
        try:
            return (self.repo_dir / "api").read_text().strip()
        except FileNotFoundError:
            raise ServiceError(
                f"ipfs: no API address in {self.repo_dir}/api; is the daemon running?"
            ) from None

    @property
    def api_url(self) -> str:
        """The API as an ``http://127.0.0.1:PORT`` URL."""
        return multiaddr_to_url(self.api_addr)

    @property
    def gateway_url(self) -> str | None:
        """The read-only HTTP gateway's URL, as the daemon printed it (``None`` before it did)."""
        text = self._proc.log_text() if self._proc is not None else ""
        found = re.findall(r"Gateway \(read only\) listening on (\S+)", text)
        return multiaddr_to_url(found[-1]) if found else None

    @property
    def pid(self) -> int | None:
        """PID of the daemon process, or ``None`` when not started."""
        return self._proc.pid if self._proc is not None else None

    def _env(self) -> dict[str, str]:
        return {"IPFS_PATH": str(self.repo_dir), "NODE_NO_WARNINGS": "1"}

    def init(self) -> None:
        """Create and configure the repository if it does not exist yet (idempotent)."""
        if (self.repo_dir / "config").exists():
            return
        self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(self._jsipfs or find_jsipfs()), "init", "--profile", "test", "--empty-repo"]
        with open(self.log_path, "ab") as log_file:
            result = subprocess.run(
                argv,
                env={**os.environ, **self._env()},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise ServiceError(f"ipfs init exited with code {result.returncode}; see {self.log_path}")
        self._configure()

    def _configure(self) -> None:
        """Loopback-only listeners on OS-chosen ports, no bootstrap peers, no local discovery."""
        path = self.repo_dir / "config"
        config = json.loads(path.read_text())
        addresses = config.setdefault("Addresses", {})
        addresses.update(
            {
                "API": _LOOPBACK_ANY_PORT,
                "Gateway": _LOOPBACK_ANY_PORT,
                "RPC": _LOOPBACK_ANY_PORT,  # js-ipfs's gRPC-over-websocket API; 5003 by default
                "Swarm": [_LOOPBACK_ANY_PORT],
                "Announce": [],
                "Delegates": [],
            }
        )
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery["MDNS"] = {"Enabled": False, "Interval": 10}
        discovery["webRTCStar"] = {"Enabled": False}
        path.write_text(json.dumps(config, indent=2))

    def _responds(self) -> bool:
        request = urllib.request.Request(self.api_url + "/api/v0/id", method="POST")
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return bool(response.status == 200)

    def start(self, timeout: float = 60.0) -> None:
        """Initialise the repository if needed, start the daemon and wait until its API answers.

        Raises
        ------
        ServiceError
            If ``jsipfs`` is missing, the repository is in use by a running daemon, or the daemon exits
            or does not answer within ``timeout`` seconds (the message ends with its log).
        """
        if self._proc is not None:
            raise ServiceError(f"ipfs: already started (pid {self._proc.pid})")
        started = time.monotonic()
        self.init()
        self._clear_stale_state()
        argv = [
            *self.prefix,
            str(self._jsipfs or find_jsipfs()),
            "daemon",
            "--offline",
            "--enable-preload=false",
        ]
        self._proc = ManagedProcess(
            "ipfs", argv, self.log_path, ready=lambda _proc: self._responds(), env=self._env()
        )
        self._proc.start()
        self._proc.wait_until_ready(timeout=timeout)
        log.info("ipfs daemon ready at %s in %.1f s", self.api_addr, time.monotonic() - started)

    def _clear_stale_state(self) -> None:
        """Remove the API address and lock a killed daemon left behind, unless one still answers."""
        api_file = self.repo_dir / "api"
        if api_file.exists():
            try:
                alive = self._responds()
            except (OSError, ValueError):
                alive = False
            if alive:
                raise ServiceError(f"ipfs: a daemon already serves {self.repo_dir} at {self.api_addr}")
            api_file.unlink(missing_ok=True)
        lock = self.repo_dir / "repo.lock"
        if lock.is_dir():
            shutil.rmtree(lock, ignore_errors=True)
        else:
            lock.unlink(missing_ok=True)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Poll the API until it answers (see :meth:`ManagedProcess.wait_until_ready`)."""
        if self._proc is None:
            raise ServiceError("ipfs: not started")
        self._proc.wait_until_ready(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the daemon (SIGINT, then SIGTERM, then SIGKILL); return its exit code."""
        if self._proc is None:
            return None
        code = self._proc.stop(timeout=timeout)
        self._proc = None
        return code

    def tail(self, lines: int = 40) -> str:
        """Return the end of the daemon's log, framed for an error message."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def __enter__(self) -> IpfsDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

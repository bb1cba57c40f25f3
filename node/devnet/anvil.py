"""anvil as a managed service: ``anvil --host 127.0.0.1 --port 0``, port read from its log, polled ready."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from node.devnet.services import ManagedProcess, ServiceError

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
_LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")


def find_anvil(repo: Path = REPO_ROOT) -> Path:
    """Locate the pinned anvil binary (``node_modules``), else one on ``PATH``.

    Raises
    ------
    ServiceError
        If there is none (run ``make setup``).
    """
    for candidate in (
        repo / "node_modules" / ".bin" / "anvil",
        repo / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
    ):
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ServiceError(f"anvil not found under {repo / 'node_modules'} or on PATH; run `make setup`")


@dataclass(frozen=True)
class AnvilConfig:
    """How anvil is started."""

    accounts: int = 10  # funded mnemonic accounts: a cluster of N members needs N + 1 (0 deploys)
    block_time: float | None = None  # None: mine one block per transaction
    chain_id: int = 31337

    def __post_init__(self) -> None:
        if self.accounts < 1:
            raise ValueError(f"`accounts` must be >= 1, got {self.accounts}")
        if self.block_time is not None and self.block_time <= 0:
            raise ValueError(f"`block_time` must be > 0 or None, got {self.block_time}")


class AnvilService:
    """One anvil process on 127.0.0.1 and a free port.

    Parameters
    ----------
    log_path
        File that receives anvil's output (it also tells the port).
    config
        Start options.
    """

    def __init__(self, log_path: Path, config: AnvilConfig = AnvilConfig()) -> None:
        self.config = config
        argv = [
            str(find_anvil()),
            "--host", "127.0.0.1",
            "--port", "0",
            "--accounts", str(config.accounts),
            "--mnemonic", ANVIL_MNEMONIC,
            "--chain-id", str(config.chain_id),
        ]  # fmt: skip
        if config.block_time is not None:
            argv += ["--block-time", str(config.block_time)]
        self.process = ManagedProcess("anvil", argv, log_path, ready=self._probe)
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port anvil listens on (known once ready)."""
        if self._port is None:
            raise ServiceError("anvil: port not known before wait_until_ready()")
        return self._port

    @property
    def rpc_url(self) -> str:
        """The JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start anvil (non-blocking)."""
        self.process.start()

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Poll until anvil printed its port and answers ``eth_chainId``."""
        self.process.wait_until_ready(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop anvil: SIGINT, then SIGTERM, then SIGKILL."""
        return self.process.stop(timeout)

    def _probe(self, proc: ManagedProcess) -> bool:
        if self._port is None:
            match = _LISTENING.search(proc.log_text())
            if match is None:
                return False
            self._port = int(match.group(1))
        return rpc_answers(f"http://127.0.0.1:{self._port}")


def rpc_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC endpoint answers ``eth_chainId``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "result" in json.loads(response.read())
    except OSError:
        return False

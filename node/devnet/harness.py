"""``fedchain devnet up/down``: anvil and an IPFS daemon on loopback, contracts deployed, in a state folder.

:class:`Devnet` runs in-process (the demo and the pytest fixtures use it as a context manager);
:func:`devnet_up` leaves anvil running in the background and writes ``state.json`` into the devnet folder,
which :func:`devnet_down` reads to stop it by PID.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from node.devnet.anvil import ANVIL_MNEMONIC, AnvilConfig, AnvilService
from node.devnet.ipfs import IpfsDaemon
from node.devnet.services import ServiceError, pid_alive, stop_pid

log = logging.getLogger(__name__)
STATE_FILE = "state.json"


@dataclass(frozen=True)
class DevnetState:
    """What a running devnet offers: RPC URL, chain id, contract addresses and funded dev accounts."""

    rpc_url: str
    chain_id: int
    anvil_pid: int
    runs_address: str
    deploy_block: int
    accounts: list[str]
    mnemonic: str
    log_path: str
    ipfs_pid: int | None = None
    ipfs_api: str | None = None
    ipfs_log_path: str | None = None

    def to_json(self) -> dict[str, object]:
        """Return the state as a JSON-ready dict."""
        return asdict(self)


class Devnet:
    """anvil plus a ``Runs`` deployment, and an IPFS daemon; a context manager that stops both on exit.

    Parameters
    ----------
    folder
        The devnet folder (the services' logs and the IPFS repository go here).
    config
        anvil options.
    ipfs
        Whether to start the IPFS daemon too (chain-only users, e.g. the gas benchmark, skip it).
    """

    def __init__(self, folder: Path, config: AnvilConfig = AnvilConfig(), *, ipfs: bool = True) -> None:
        self.folder = Path(folder)
        self.anvil = AnvilService(self.folder / "anvil.log", config)
        self.ipfs = IpfsDaemon(self.folder / "ipfs", self.folder / "ipfs.log") if ipfs else None
        self.state: DevnetState | None = None

    def start(self, timeout: float = 30.0) -> DevnetState:
        """Start anvil (and IPFS), wait until they answer, deploy the contracts; return the state."""
        from ledger.chain import connect, dev_accounts
        from ledger.deploy import deploy

        self.folder.mkdir(parents=True, exist_ok=True)
        self.anvil.start()
        try:
            if self.ipfs is not None:  # starts while anvil boots; it is the slower of the two
                self.ipfs.start(timeout=max(timeout, 60.0))
            self.anvil.wait_until_ready(timeout)
            w3 = connect(self.anvil.rpc_url)
            accounts = dev_accounts("anvil", self.anvil.config.accounts)
            deployment = deploy(w3, accounts[0])
        except BaseException:
            self.stop()
            raise
        pid = self.anvil.process.pid
        if pid is None:  # pragma: no cover - start() succeeded
            raise ServiceError("anvil has no pid after start")
        self.state = DevnetState(
            rpc_url=self.anvil.rpc_url,
            chain_id=deployment.chain_id,
            anvil_pid=pid,
            runs_address=deployment.runs,
            deploy_block=deployment.block_number,
            accounts=[a.address for a in accounts],
            mnemonic=ANVIL_MNEMONIC,
            log_path=str(self.anvil.process.log_path),
            ipfs_pid=self.ipfs.pid if self.ipfs is not None else None,
            ipfs_api=self.ipfs.api_addr if self.ipfs is not None else None,
            ipfs_log_path=str(self.ipfs.log_path) if self.ipfs is not None else None,
        )
        log.info("devnet up: %s, Runs at %s", self.state.rpc_url, self.state.runs_address)
        return self.state

    def stop(self) -> None:
        """Stop the IPFS daemon and anvil (each SIGINT, then SIGTERM, then SIGKILL)."""
        if self.ipfs is not None:
            self.ipfs.stop()
        self.anvil.stop()

    def __enter__(self) -> DevnetState:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def read_state(folder: Path) -> DevnetState | None:
    """Return the recorded state of the devnet in ``folder``, or ``None`` if none is recorded."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return DevnetState(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ServiceError(
            f"devnet state {path} is corrupt ({exc}); remove it and run `devnet up` again"
        ) from exc


def devnet_up(folder: Path, config: AnvilConfig = AnvilConfig(), *, ipfs: bool = True) -> DevnetState:
    """Start a background devnet recorded in ``folder``.

    Raises
    ------
    ServiceError
        If a devnet recorded there is still running, or anvil fails to start.
    """
    existing = read_state(folder)
    if existing is not None and pid_alive(existing.anvil_pid):
        raise ServiceError(
            f"a devnet is already running from {folder} (anvil pid {existing.anvil_pid}, "
            f"{existing.rpc_url}); run `fedchain devnet down` first"
        )
    devnet = Devnet(folder, config, ipfs=ipfs)
    state = devnet.start()
    (Path(folder) / STATE_FILE).write_text(json.dumps(state.to_json(), indent=2) + "\n")
    return state


def devnet_down(folder: Path, timeout: float = 10.0) -> DevnetState | None:
    """Stop the devnet recorded in ``folder`` and forget its state; return what was stopped (or ``None``)."""
    state = read_state(folder)
    if state is None:
        return None
    if state.ipfs_pid is not None:
        stop_pid(state.ipfs_pid, timeout)
    stop_pid(state.anvil_pid, timeout)
    (Path(folder) / STATE_FILE).unlink(missing_ok=True)
    return state

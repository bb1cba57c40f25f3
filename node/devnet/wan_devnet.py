"""A devnet behind emulated WAN links: anvil and the IPFS daemon in a services namespace of a WanNetwork.

:class:`WanDevnet` runs anvil (``--host <svc address> --port 8545``) and the js-ipfs daemon (API on
``<svc address>:5001``) inside the network namespace ``label`` of a running
:class:`node.devnet.wan.WanNetwork` (fixed ports: that namespace holds nothing else), forwards one
``127.0.0.1`` port of the harness's namespace to each (readiness probes, the contract deployment, the
test's own chain and IPFS reads), and deploys the contracts. It returns two views of one devnet:
``host`` (the forwarded loopback URLs, for the harness) and ``nodes`` (the namespace URLs, for node
processes in the other namespaces, whose traffic to the services crosses the emulated links).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from pathlib import Path
from types import TracebackType

from node.devnet.anvil import ANVIL_MNEMONIC, AnvilConfig, find_anvil, rpc_answers
from node.devnet.harness import DevnetState
from node.devnet.ipfs import IpfsDaemon
from node.devnet.services import ManagedProcess, ServiceError
from node.devnet.wan import WanNetwork

log = logging.getLogger(__name__)
ANVIL_PORT = 8545
IPFS_API_PORT = 5001


class _NamespacedIpfs(IpfsDaemon):
    """The devnet's js-ipfs daemon listening on a namespace address, probed through a forward."""

    def __init__(self, repo_dir: Path, log_path: Path, net: WanNetwork, label: str, probe_url: str) -> None:
        super().__init__(repo_dir, log_path, prefix=net.prefix(label))
        self._host = net.address(label)
        self._probe_url = probe_url

    def _configure(self) -> None:
        super()._configure()
        path = self.repo_dir / "config"
        config = json.loads(path.read_text())
        config["Addresses"].update(
            {
                "API": f"/ip4/{self._host}/tcp/{IPFS_API_PORT}",
                "Gateway": f"/ip4/{self._host}/tcp/8080",
                "RPC": f"/ip4/{self._host}/tcp/5003",
                "Swarm": [f"/ip4/{self._host}/tcp/4001"],
            }
        )
        path.write_text(json.dumps(config, indent=2))

    def _responds(self) -> bool:
        if not (self.repo_dir / "api").exists():  # it answers a moment before it writes its address
            return False
        request = urllib.request.Request(self._probe_url + "/api/v0/id", method="POST")
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return bool(response.status == 200)


class WanDevnet:
    """anvil + ``Runs`` + an IPFS daemon inside namespace ``label`` of ``net``; a context manager.

    Parameters
    ----------
    folder
        Logs and the IPFS repository.
    net
        A started :class:`WanNetwork` that has a namespace ``label``.
    config
        anvil options.
    label
        The services namespace.
    """

    def __init__(
        self, folder: Path, net: WanNetwork, config: AnvilConfig = AnvilConfig(), *, label: str = "svc"
    ) -> None:
        self.folder = Path(folder)
        self.net = net
        self.config = config
        self.label = label
        self.anvil: ManagedProcess | None = None
        self.ipfs: IpfsDaemon | None = None
        self.host: DevnetState | None = None
        self.nodes: DevnetState | None = None

    def start(self, timeout: float = 120.0) -> tuple[DevnetState, DevnetState]:
        """Start both services, deploy the contracts; return the ``(host, nodes)`` views."""
        from ledger.chain import connect, dev_accounts
        from ledger.deploy import deploy

        self.folder.mkdir(parents=True, exist_ok=True)
        address = self.net.address(self.label)
        try:
            rpc_local = f"http://127.0.0.1:{self.net.forward(self.label, ANVIL_PORT)}"
            ipfs_local = self.net.forward(self.label, IPFS_API_PORT)
            argv = [*self.net.prefix(self.label), str(find_anvil())]
            argv += ["--host", address, "--port", str(ANVIL_PORT), "--accounts", str(self.config.accounts)]
            argv += ["--mnemonic", ANVIL_MNEMONIC, "--chain-id", str(self.config.chain_id)]
            if self.config.block_time is not None:
                argv += ["--block-time", str(self.config.block_time)]
            self.anvil = ManagedProcess(
                "anvil", argv, self.folder / "anvil.log", lambda _: rpc_answers(rpc_local)
            )
            self.anvil.start()
            self.ipfs = _NamespacedIpfs(
                self.folder / "ipfs",
                self.folder / "ipfs.log",
                self.net,
                self.label,
                f"http://127.0.0.1:{ipfs_local}",
            )
            self.ipfs.start(timeout=timeout)
            self.anvil.wait_until_ready(timeout)
            accounts = dev_accounts("anvil", self.config.accounts)
            deployment = deploy(connect(rpc_local), accounts[0])
        except BaseException:
            self.stop()
            raise
        if self.anvil.pid is None or self.ipfs.pid is None:  # pragma: no cover - both started
            raise ServiceError("WAN devnet: a service has no pid after start")
        self.host = DevnetState(
            rpc_url=rpc_local,
            chain_id=deployment.chain_id,
            anvil_pid=self.anvil.pid,
            runs_address=deployment.runs,
            deploy_block=deployment.block_number,
            accounts=[a.address for a in accounts],
            mnemonic=ANVIL_MNEMONIC,
            log_path=str(self.anvil.log_path),
            ipfs_pid=self.ipfs.pid,
            ipfs_api=f"/ip4/127.0.0.1/tcp/{ipfs_local}/http",
            ipfs_log_path=str(self.ipfs.log_path),
        )
        self.nodes = dataclasses.replace(
            self.host,
            rpc_url=f"http://{address}:{ANVIL_PORT}",
            ipfs_api=f"/ip4/{address}/tcp/{IPFS_API_PORT}/http",
        )
        log.info(
            "WAN devnet up in %s: %s, Runs at %s",
            self.net.netns(self.label),
            self.nodes.rpc_url,
            deployment.runs,
        )
        return self.host, self.nodes

    def stop(self) -> None:
        """Stop the IPFS daemon and anvil (the namespace and forwards belong to the network)."""
        if self.ipfs is not None:
            self.ipfs.stop()
        if self.anvil is not None:
            self.anvil.stop()

    def __enter__(self) -> tuple[DevnetState, DevnetState]:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

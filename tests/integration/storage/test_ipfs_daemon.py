"""The devnet's IPFS daemon service: loopback only, gateway, clean stop, restart on the same repository."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from node.devnet.ipfs import IpfsDaemon, multiaddr_to_url
from node.devnet.services import ServiceError
from p2p.storage.ipfs import IpfsStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


def test_daemon_lifecycle(tmp_path: Path) -> None:
    daemon = IpfsDaemon(tmp_path / "repo", tmp_path / "ipfs.log")
    daemon.start(timeout=90.0)
    try:
        assert daemon.api_addr.startswith("/ip4/127.0.0.1/tcp/")
        with IpfsStore(daemon.api_addr) as store:
            cid = store.put(b"served by the gateway")
            store.pin(cid)
        gateway = daemon.gateway_url
        assert gateway is not None and gateway.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{gateway}/ipfs/{cid}", timeout=10) as response:
            assert response.read() == b"served by the gateway"

        second = IpfsDaemon(tmp_path / "repo", tmp_path / "second.log")
        with pytest.raises(ServiceError, match="already serves"):
            second.start(timeout=30.0)
    finally:
        api_url = daemon.api_url
        assert daemon.stop() == 0
    assert not _port_open(api_url)
    assert daemon.stop() is None  # stopping twice is harmless

    daemon.start(timeout=90.0)  # the same repository, new ports; pinned content survives
    try:
        with IpfsStore(daemon.api_addr) as store:
            assert cid in list(store.list())
            assert store.get(cid) == b"served by the gateway"
    finally:
        daemon.stop()


def test_multiaddr_to_url() -> None:
    assert multiaddr_to_url("/ip4/127.0.0.1/tcp/5001/http") == "http://127.0.0.1:5001"
    assert multiaddr_to_url("/ip4/10.0.0.2/tcp/80") == "http://10.0.0.2:80"
    with pytest.raises(ValueError, match="multiaddr"):
        multiaddr_to_url("/dns4/example.com/tcp/5001")

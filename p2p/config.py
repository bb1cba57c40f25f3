"""Configuration of a p2p node (frozen, validated on construction)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import multiaddr

if TYPE_CHECKING:
    from p2p.gossip import GossipConfig


def _gossip_defaults() -> GossipConfig:
    # imported on first use: p2p.gossip loads libp2p (seconds), and reading a node's config needs only
    # the field names, defaults and help of this class
    from p2p.gossip import GossipConfig

    return GossipConfig()


@dataclass(frozen=True)
class P2PConfig:
    """Where a node listens, whom it keeps connected to, and its timeouts.

    Attributes
    ----------
    listen_host
        IPv4 address to listen on; loopback unless the operator opts in to a routable one.
    listen_port
        TCP port; 0 picks a free one (read it back from :attr:`P2PNode.listen_addrs`).
    bootstrap
        Multiaddrs (with ``/p2p/<peer id>``) of the run's members to dial at start and to keep connected.
        There are no public bootstrap peers and no mDNS.
    gossip
        Gossipsub and validator settings.
    fetch_timeout_s
        Per-provider time limit for one blob fetch.
    fetch_parallelism
        Artifacts fetched concurrently by :meth:`P2PNode.fetch_many`.
    serve_parallelism
        Blob requests served at once; further requests wait (each one holds its artifact in memory).
    max_blob_size
        Default cap on a fetched artifact's size.
    reconnect_min_s, reconnect_max_s
        Bounds of the exponential backoff between redials of a disconnected bootstrap peer.
    call_timeout_s
        Limit on one synchronous call into the node's event loop (other than fetches).
    """

    listen_host: str = field(default="127.0.0.1", metadata={"help": "IPv4 address to listen on"})
    listen_port: int = field(default=0, metadata={"help": "TCP port (0: any free port)"})
    bootstrap: tuple[str, ...] = field(
        default=(), metadata={"help": "multiaddrs (/ip4/../tcp/../p2p/<peer id>) of members to dial"}
    )
    gossip: GossipConfig = field(default_factory=_gossip_defaults)
    fetch_timeout_s: float = field(default=60.0, metadata={"help": "per-peer limit on one artifact fetch"})
    fetch_parallelism: int = 4
    serve_parallelism: int = 8
    max_blob_size: int = 1 << 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    call_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Address(self.listen_host)
        except ValueError as exc:
            raise ValueError(f"`listen_host` must be an IPv4 address, got {self.listen_host!r}") from exc
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"`listen_port` must be in [0, 65535], got {self.listen_port}")
        for addr in self.bootstrap:
            try:
                ma = multiaddr.Multiaddr(addr)
                ok = ma.value_for_protocol("p2p") is not None
            except Exception as exc:  # multiaddr raises several unrelated types for bad input
                raise ValueError(f"`bootstrap` entry {addr!r} is not a multiaddr: {exc}") from exc
            if not ok:
                raise ValueError(f"`bootstrap` entry {addr!r} must end with /p2p/<peer id>")
        if self.fetch_timeout_s <= 0:
            raise ValueError(f"`fetch_timeout_s` must be > 0, got {self.fetch_timeout_s}")
        if self.fetch_parallelism < 1:
            raise ValueError(f"`fetch_parallelism` must be >= 1, got {self.fetch_parallelism}")
        if self.serve_parallelism < 1:
            raise ValueError(f"`serve_parallelism` must be >= 1, got {self.serve_parallelism}")
        if self.max_blob_size < 1:
            raise ValueError(f"`max_blob_size` must be >= 1, got {self.max_blob_size}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                "`reconnect_min_s` must be > 0 and <= `reconnect_max_s`, got "
                f"{self.reconnect_min_s}, {self.reconnect_max_s}"
            )
        if self.call_timeout_s <= 0:
            raise ValueError(f"`call_timeout_s` must be > 0, got {self.call_timeout_s}")

    @property
    def listen_multiaddr(self) -> str:
        """The TCP listen multiaddr."""
        return f"/ip4/{self.listen_host}/tcp/{self.listen_port}"

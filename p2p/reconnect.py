"""Keeps a node connected to its bootstrap members, redialling with bounded exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p.config import P2PConfig

log = logging.getLogger(__name__)
CHECK_INTERVAL_S = 0.5


async def keep_connected(host: IHost, keep: Mapping[str, None], config: P2PConfig) -> None:
    """Redial every address in ``keep`` whose peer is not connected, until the caller cancels this task.

    ``keep`` is read afresh on every pass, so addresses added later (``P2PNode.connect``) are kept too.

    Each address has its own backoff, doubling from ``reconnect_min_s`` to ``reconnect_max_s`` after
    each failed dial and reset by a success, so a restarted peer is back within ``reconnect_max_s``.
    """
    backoff: dict[str, float] = {}
    next_try: dict[str, float] = {}
    while True:
        connected = set(host.get_connected_peers())
        now = time.monotonic()
        for addr in list(keep):
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            if info.peer_id in connected or info.peer_id == host.get_id() or next_try.get(addr, 0.0) > now:
                continue
            # py-libp2p refuses for 60 s to dial a peer whose every address failed once (its "negative
            # cache"); a restarting member is exactly that, and our own backoff already bounds the rate.
            unblock = getattr(host.get_network(), "unblock_peer", None)
            if unblock is not None:
                unblock(info.peer_id)
            try:
                with trio.fail_after(max(config.reconnect_max_s, 5.0)):
                    await host.connect(info)
            except Exception as exc:  # unreachable peer (restarting, gone): back off and retry later
                delay = min(backoff.get(addr, config.reconnect_min_s / 2) * 2, config.reconnect_max_s)
                backoff[addr], next_try[addr] = delay, time.monotonic() + delay
                log.debug("redial of %s failed (%r); next try in %.1f s", addr, exc, delay)
            else:
                backoff.pop(addr, None)
                next_try.pop(addr, None)
                log.info("connected to %s", info.peer_id)
        await trio.sleep(CHECK_INTERVAL_S)

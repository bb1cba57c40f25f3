"""The p2p node: a libp2p host (Noise, yamux, TCP), gossipsub, and the blob protocol, behind a sync API.

py-libp2p runs on trio; the fedchain node is ordinary synchronous Python. :class:`P2PNode` therefore runs
the trio event loop in one background thread and exposes blocking methods that enter it with
``trio.from_thread.run`` (each bounded by a timeout). Subscription handlers are called in a worker thread
(``trio.to_thread.run_sync``), one message at a time per topic, so a handler may block or call back into
the node without stalling the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.tools.anyio_service import background_trio_service

from p2p import blob, direct
from p2p.config import P2PConfig
from p2p.errors import HostError, IdentityError, P2PError
from p2p.fetch import FetchRequest, fetch_many, fetch_many_to_files, fetch_one
from p2p.gossip import CurrentRound, IsMember, TopicValidator, build_router, message_id, topic_for
from p2p.guard import PeerGuard
from p2p.identity import NodeIdentity, address_from_peer_id
from p2p.messages import AnyMessage, decode, encode
from p2p.noise import NoiseTransport
from p2p.reconnect import keep_connected
from p2p.router import GuardedPubsub
from p2p.storage.base import Cid, Store
from p2p.yamux import FastYamux, use_fast_yamux

log = logging.getLogger(__name__)
T = TypeVar("T")
DELIVERY_QUEUE = 4096
"""Validated messages of one run that may wait for its handlers (py-libp2p's own queue holds only 32)."""
DELIVERY_BATCH = 256
"""At most this many waiting messages are handed to the handler thread at once."""
Handler = Callable[[AnyMessage], None]


def build_host(key_pair: KeyPair, listen_multiaddr: str) -> IHost:
    """Build a libp2p host speaking only Noise and yamux over TCP, tuned for bulk transfers.

    The wire protocols are the standard ones (any libp2p implementation interoperates); the sessions
    are :class:`p2p.noise.NoiseSession` and the muxer :class:`p2p.yamux.FastYamux`, which move blobs
    an order of magnitude faster than py-libp2p's own (see those modules).
    """
    host = new_host(
        key_pair=key_pair,
        # Noise only: no plaintext, secio or TLS fallback can ever be negotiated.
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, create_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): FastYamux},
        listen_addrs=[multiaddr.Multiaddr(listen_multiaddr)],
        enable_mDNS=False,
    )
    use_fast_yamux(host)
    return host


def ensure_port_free(host: str, port: int) -> None:
    """Raise :class:`HostError` if another socket already listens on ``host:port``.

    py-libp2p listens with ``SO_REUSEPORT`` (for hole punching), so a second node started on a busy port
    would not fail: the kernel would silently split incoming connections between the two. A plain bind
    (``SO_REUSEADDR`` only, which tolerates the TIME_WAIT left by a restarted node) detects it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise HostError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class P2PNode:
    """A fedchain peer on the libp2p network.

    Parameters
    ----------
    config
        Listen address, bootstrap peers, gossip and fetch settings.
    private_key
        The participant's 32-byte secp256k1 (Ethereum) private key; it is also the libp2p identity.
    store
        Content-addressed store served to members over the blob protocol (``None`` serves nothing).
    is_member
        ``is_member(run_id, address)``: who may publish on a run's topic and fetch blobs.
    current_round
        ``current_round(run_id)``: used to drop messages about stale rounds.

        Both callables run on the network event loop for every message: they must answer from memory
        (e.g. the node's indexed chain state), never by a blocking RPC call.
    cid_of
        CID function used to verify fetched blobs (defaults to the storage layer's UnixFS CID).
    """

    def __init__(
        self,
        config: P2PConfig,
        private_key: bytes,
        store: Store | None,
        is_member: IsMember,
        current_round: CurrentRound,
        cid_of: blob.CidOf = blob.default_cid_of,
    ) -> None:
        self.config = config
        self.identity = NodeIdentity.from_private_key(private_key)
        self._store = store
        self._is_member = is_member
        self._current_round = current_round
        self._cid_of = cid_of
        self.validators: dict[str, TopicValidator] = {}
        self.guard = PeerGuard(config.gossip.guard, is_member, self_id=self.identity.peer_id)
        self._handlers: dict[str, list[Handler]] = {}
        self._sinks: dict[str, Callable[[rpc_pb2.Message], None]] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._serve_limiter: trio.CapacityLimiter | None = None
        self._host: IHost | None = None
        self._pubsub: GuardedPubsub | None = None
        self._nursery: trio.Nursery | None = None
        self._keep: dict[str, None] = dict.fromkeys(config.bootstrap)

    # ---- lifecycle -------------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """Peer id of this node (base58)."""
        return self.identity.peer_id.to_base58()

    @property
    def address(self) -> str:
        """Ethereum address of this node."""
        return self.identity.address

    def start(self) -> None:
        """Start the event-loop thread (non-blocking); see :meth:`wait_until_ready`."""
        if self._thread is not None:
            raise HostError("node already started")
        self._thread = threading.Thread(
            target=self._thread_main, name=f"p2p-{self.peer_id[-6:]}", daemon=True
        )
        self._thread.start()

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Block until the host listens and pubsub runs; raises :class:`HostError` on failure or timeout."""
        if self._thread is None:
            raise HostError("node not started")
        if not self._ready.wait(timeout):
            raise HostError(f"p2p node not ready after {timeout:g} s")
        if self._failure is not None:
            raise HostError(f"p2p node failed to start: {self._failure!r}") from self._failure

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop the event-loop thread (waits at most ``timeout`` seconds)."""
        thread, token, stop = self._thread, self._token, self._stop
        if thread is None:
            return
        if token is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("p2p event loop did not stop within %g s; abandoning its daemon thread", timeout)
        self._thread = None

    def __enter__(self) -> P2PNode:
        self.start()
        self.wait_until_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- synchronous API ---------------------------------------------------------------------------------

    @property
    def listen_addrs(self) -> list[str]:
        """Multiaddrs (with ``/p2p/<peer id>``) at which other members can dial this node."""
        host = self._require_host()
        return [
            f"{addr}/p2p/{self.peer_id}" if "/p2p/" not in str(addr) else str(addr)
            for addr in host.get_addrs()
        ]

    def peers(self) -> list[str]:
        """Peer ids of currently connected peers."""
        return [pid.to_base58() for pid in self._require_host().get_connected_peers()]

    def connect(self, addr: str) -> None:
        """Dial a member at ``addr`` now and keep the connection (redialled after it drops)."""
        self._call(self._connect, addr, keep=True)

    def subscribe(self, run_id: str, handler: Handler) -> None:
        """Join ``run_id``'s topic; ``handler`` receives every message that passes the validator.

        Subscribing again to the same run adds another handler; each message goes to every handler.
        """
        self._call(self._subscribe, run_id, handler)

    def publish(self, message: AnyMessage) -> None:
        """Publish a message on its run's topic (the node must be subscribed to that run)."""
        self._call(self._publish, encode(message), message.run)

    def send(
        self, message: AnyMessage, peers: Sequence[str], attempts: int = 2, timeout_s: float = 5.0
    ) -> dict[str, str | None]:
        """Send ``message`` to each of ``peers`` (peer ids) over the direct protocol, in parallel.

        Each peer runs the gossip checks on it and hands it to its handlers of the run, as if it had
        arrived by gossip; nobody else sees it. Each peer is tried at most ``attempts`` times (a refusal is
        not retried), each try bounded by ``timeout_s``. Returns, per peer, ``None`` if it accepted the
        message, else why not.
        """
        if attempts < 1 or timeout_s <= 0:
            raise ValueError(f"`attempts` must be >= 1 and `timeout_s` > 0, got {attempts}, {timeout_s}")
        data = encode(message)
        targets = tuple(dict.fromkeys(peers))
        return dict(
            self._call(self._send, data, targets, attempts, timeout_s, timeout=timeout_s * attempts + 5)
        )

    def peer_ids(self) -> dict[str, str]:
        """Peer ids of the members this node is connected to or keeps dialling, by checksummed address."""
        host = self._require_host()
        ids = {pid.to_base58() for pid in host.get_connected_peers()}
        for addr in list(self._keep):
            with contextlib.suppress(Exception):  # a malformed bootstrap address names nobody
                ids.add(info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id.to_base58())
        found: dict[str, str] = {}
        for peer in sorted(ids):
            with contextlib.suppress(IdentityError):
                found[address_from_peer_id(peer)] = peer
        return found

    def fetch(self, cid: Cid, providers: Sequence[str], max_size: int | None = None) -> bytes:
        """Fetch ``cid`` from the first provider that delivers bytes matching it, and store them locally.

        Raises
        ------
        FetchError
            If every provider failed (timeout, refusal, corrupt bytes); the message says why for each.
        """
        request = FetchRequest(cid, tuple(providers), max_size or self.config.max_blob_size)
        timeout = self.config.fetch_timeout_s * len(request.providers) + 5
        data: bytes = self._call(
            fetch_one,
            self._require_host(),
            request,
            self._cid_of,
            self.config.fetch_timeout_s,
            timeout=timeout,
        )
        self._keep_local(cid, data)
        return data

    def fetch_many(self, requests: Sequence[FetchRequest]) -> dict[Cid, bytes | P2PError]:
        """Fetch a round's artifacts in parallel, each from its providers in turn; see :func:`fetch_many`."""
        most = max((len(r.providers) for r in requests), default=1)
        timeout = (
            self.config.fetch_timeout_s * most * (len(requests) // self.config.fetch_parallelism + 1) + 5
        )
        results: dict[Cid, bytes | P2PError] = dict(
            self._call(
                fetch_many,
                self._require_host(),
                list(requests),
                self._cid_of,
                self.config.fetch_timeout_s,
                self.config.fetch_parallelism,
                timeout=timeout,
            )
        )
        for cid, value in results.items():
            if isinstance(value, bytes):
                self._keep_local(cid, value)
        return results

    def fetch_to_files(self, requests: Sequence[FetchRequest], dest_dir: Path) -> dict[Cid, Path | P2PError]:
        """Fetch a round's artifacts in parallel as :meth:`fetch_many` does, each into ``dest_dir/<cid>``.

        Nothing is held whole in memory: each transfer goes through one 1 MiB buffer into a temporary file
        in ``dest_dir``, renamed to ``<cid>`` once its bytes hashed to the CID (a refused, truncated,
        oversized or corrupt transfer leaves no file). The files are the caller's: they are not put into the
        served store (the caller checks them further and keeps them, e.g. ``LocalStore.put_file(path,
        move=True)``).
        Returns, per CID, the file or the :class:`FetchError` saying why no provider delivered it.
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        most = max((len(r.providers) for r in requests), default=1)
        timeout = (
            self.config.fetch_timeout_s * most * (len(requests) // self.config.fetch_parallelism + 1) + 5
        )
        sizes: dict[Cid, int | P2PError] = dict(
            self._call(
                fetch_many_to_files,
                self._require_host(),
                list(requests),
                lambda cid: dest_dir / cid,
                self.config.fetch_timeout_s,
                self.config.fetch_parallelism,
                dest_dir,
                timeout=timeout,
            )
        )
        return {cid: dest_dir / cid if isinstance(v, int) else v for cid, v in sizes.items()}

    def serve_store(self, store: Store | None) -> None:
        """Serve ``store``'s content to members over the blob protocol (``None`` stops serving)."""
        self._store = store

    # ---- event loop --------------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # recorded for wait_until_ready; the thread must not die silently
            self._failure = exc
            log.exception("p2p event loop ended with an error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        if self.config.listen_port:
            ensure_port_free(self.config.listen_host, self.config.listen_port)
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._serve_limiter = trio.CapacityLimiter(self.config.serve_parallelism)
        host = build_host(self.identity.key_pair, self.config.listen_multiaddr)
        router = build_router(self.config.gossip, self.guard)
        pubsub = GuardedPubsub(host, router, self.guard, strict_signing=True, msg_id_constructor=message_id)
        host.set_stream_handler(blob.BLOB_PROTOCOL, self._serve_blob)
        host.set_stream_handler(direct.DIRECT_PROTOCOL, self._serve_direct)
        self._host, self._pubsub = host, pubsub
        async with (
            host.run(listen_addrs=[multiaddr.Multiaddr(self.config.listen_multiaddr)]),
            background_trio_service(pubsub),
            background_trio_service(router),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            await pubsub.wait_until_ready()
            nursery.start_soon(keep_connected, host, self._keep, self.config)
            self._ready.set()
            log.info("p2p node %s (%s) listening on %s", self.peer_id, self.address, self.listen_addrs)
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        log.info("p2p node %s stopped", self.peer_id)

    def _call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kw: Any
    ) -> T:
        token = self._token
        if token is None or not self._ready.is_set() or self._failure is not None:
            raise HostError("p2p node is not running")
        limit = timeout if timeout is not None else self.config.call_timeout_s

        async def bounded() -> T:
            try:
                with trio.fail_after(limit):
                    return await fn(*args, **kw)
            except trio.TooSlowError as exc:
                raise HostError(f"{getattr(fn, '__name__', fn)} did not finish within {limit:g} s") from exc

        try:
            return trio.from_thread.run(bounded, trio_token=token)
        except trio.RunFinishedError as exc:
            raise HostError("p2p node stopped") from exc

    def _require_host(self) -> IHost:
        if self._host is None:
            raise HostError("p2p node is not running")
        return self._host

    def _keep_local(self, cid: Cid, data: bytes) -> None:
        if self._store is not None:
            try:
                self._store.put(data)
            except P2PError as exc:
                log.warning("could not store fetched %s locally: %s", cid, exc)

    async def _connect(self, addr: str, keep: bool = False) -> None:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        if keep:
            self._keep[addr] = None
        await self._require_host().connect(info)

    async def _subscribe(self, run_id: str, handler: Handler) -> None:
        pubsub, nursery = self._pubsub, self._nursery
        if pubsub is None or nursery is None:
            raise HostError("p2p node is not running")
        if run_id in self._handlers:
            self._handlers[run_id].append(handler)
            return
        topic = topic_for(run_id)
        validator = TopicValidator(
            run_id, self._is_member, self._current_round, self.config.gossip, guard=self.guard
        )
        pubsub.set_topic_validator(topic, validator, is_async_validator=False)
        self.guard.add_topic(topic, run_id)
        pubsub.sync_admission()  # drop non-members that subscribed before we did, before we pick a mesh
        self.validators[run_id] = validator
        self._handlers[run_id] = [handler]
        # py-libp2p hands validated messages over through a 32-message queue that drops when full (a burst
        # fills it while handlers run in a worker thread); ours holds DELIVERY_QUEUE of them.
        send, receive = trio.open_memory_channel[rpc_pb2.Message](DELIVERY_QUEUE)

        def enqueue(raw: rpc_pb2.Message) -> None:
            try:
                send.send_nowait(raw)
            except trio.WouldBlock:
                log.warning("run %s: %d messages await the handlers; dropping one", run_id, DELIVERY_QUEUE)

        pubsub.sinks[topic] = enqueue
        self._sinks[run_id] = enqueue
        await pubsub.subscribe(topic)
        nursery.start_soon(self._deliver, run_id, receive)

    async def _deliver(self, run_id: str, queue: trio.MemoryReceiveChannel[rpc_pb2.Message]) -> None:
        # Handlers run in a worker thread; every waiting message goes over in one hand-off, not one each (a
        # hand-off costs two thread wake-ups, tens of ms each on a loaded machine, so one per message capped
        # delivery at ~10 messages/s there while the queue grew).
        async for first in queue:
            batch = [first]
            while len(batch) < DELIVERY_BATCH:
                try:
                    batch.append(queue.receive_nowait())
                except trio.WouldBlock:
                    break
            messages: list[AnyMessage] = []
            for raw in batch:
                try:
                    messages.append(decode(raw.data))  # already validated; decoding again is cheap and typed
                except P2PError:
                    log.exception("validated message on run %s does not decode", run_id)
            if messages:
                await trio.to_thread.run_sync(self._run_handlers, run_id, messages)

    def _run_handlers(self, run_id: str, messages: list[AnyMessage]) -> None:
        for message in messages:  # one message at a time, in order
            for handler in list(self._handlers[run_id]):
                try:
                    handler(message)
                except Exception:  # a failing handler must not end delivery of later messages
                    log.exception("handler for run %s failed", run_id)

    async def _publish(self, data: bytes, run_id: str) -> None:
        if self._pubsub is None or run_id not in self.validators:
            raise HostError(f"subscribe to run {run_id!r} before publishing on it")
        await self._pubsub.publish(topic_for(run_id), data)

    async def _send(
        self, data: bytes, peers: tuple[str, ...], attempts: int, timeout_s: float
    ) -> dict[str, str | None]:
        host = self._require_host()
        results: dict[str, str | None] = {}

        async def one(peer: str) -> None:
            why = "not tried"
            for _ in range(attempts):
                try:
                    with trio.fail_after(timeout_s):
                        await direct.send_to_peer(host, peer, data)
                    results[peer] = None
                    return
                except direct.DirectRefusedError as exc:
                    why = str(exc)
                    break  # the peer checked it and said no: sending it again cannot change that
                except direct.DirectError as exc:
                    why = str(exc)
                except trio.TooSlowError:
                    why = f"{peer} did not answer within {timeout_s:g} s"
            results[peer] = why[:300]

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return results

    def _take_direct(self, peer: ID, data: bytes) -> direct.DirectStatus:
        """Check a direct message as the gossip validator would and queue it for the run's handlers."""
        if self.guard.is_graylisted(peer):
            return direct.DirectStatus.REFUSED
        try:
            run_id = decode(data).run
        except P2PError:
            self.guard.rejected(peer, "malformed")
            return direct.DirectStatus.REFUSED
        validator, sink = self.validators.get(run_id), self._sinks.get(run_id)
        if validator is None or sink is None or not validator.admit(peer, peer, data):
            return direct.DirectStatus.REFUSED
        sink(rpc_pb2.Message(data=data, from_id=peer.to_bytes()))
        return direct.DirectStatus.OK

    async def _serve_direct(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(self.config.fetch_timeout_s):
                data = await direct.read_request(stream)
                await stream.write(bytes([self._take_direct(peer, data)]))
        except (P2PError, trio.TooSlowError) as exc:
            log.warning("direct message from %s failed: %r", peer, exc)
        except Exception as exc:  # a peer resetting the stream, among others
            log.warning("direct stream with %s broke: %r", peer, exc)
        finally:
            with trio.move_on_after(2):
                try:
                    await stream.close()
                except Exception as exc:
                    log.debug("closing direct stream with %s: %r", peer, exc)

    def _may_serve(self, peer: ID) -> bool:
        try:
            address = address_from_peer_id(peer)
        except IdentityError:
            return False
        return any(self._is_member(run_id, address) for run_id in list(self.validators))

    async def _serve_blob(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            store, limiter = self._store, self._serve_limiter
            if limiter is None:
                raise HostError("p2p node is not running")
            async with limiter:
                with trio.fail_after(self.config.fetch_timeout_s):
                    if store is None:
                        await blob.read_request(stream)
                        await stream.write(blob.encode_response_header(blob.Status.NOT_FOUND))
                    else:
                        status = await blob.serve_request(stream, store, self._may_serve(peer))
                        log.debug("blob request from %s answered %s", peer, status.name)
        except (P2PError, trio.TooSlowError) as exc:
            log.warning("blob request from %s failed: %r", peer, exc)
        except Exception as exc:  # a peer resetting the stream mid-transfer, among others
            log.warning("blob stream with %s broke: %r", peer, exc)
        finally:
            with trio.move_on_after(2):
                try:
                    await stream.close()
                except Exception as exc:
                    log.debug("closing blob stream with %s: %r", peer, exc)

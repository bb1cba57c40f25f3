"""The synchronous P2PNode facade with two real libp2p hosts in one process (and real local stores)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p.config import P2PConfig
from p2p.errors import FetchError, HostError
from p2p.host import P2PNode
from p2p.messages import AnyMessage, Heartbeat
from p2p.storage.local import LocalStore
from tests.fixtures.p2p import member_address, member_key

pytestmark = pytest.mark.integration
MEMBERS = {member_address(0), member_address(1)}


def is_member(run: str, address: str) -> bool:
    return run == "run-1" and address in MEMBERS


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[P2PNode, P2PNode]]:
    first = P2PNode(P2PConfig(), member_key(0), LocalStore(tmp_path / "a"), is_member, lambda run: 0)
    first.start()
    first.wait_until_ready(30)
    second = P2PNode(
        P2PConfig(bootstrap=tuple(first.listen_addrs)),
        member_key(1),
        LocalStore(tmp_path / "b"),
        is_member,
        lambda run: 0,
    )
    second.start()
    second.wait_until_ready(30)
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[AnyMessage] = []
        self.event = threading.Event()

    def __call__(self, message: AnyMessage) -> None:
        self.messages.append(message)
        self.event.set()


def publish_until(node: P2PNode, inboxes: list[Inbox], attempts: int = 20) -> Heartbeat:
    for _ in range(attempts):
        message = Heartbeat(run="run-1", round=0, sender=node.address, phase="voting")
        node.publish(message)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            if all(message in inbox.messages for inbox in inboxes):
                return message
            time.sleep(0.02)
    raise AssertionError("message never delivered")


def test_every_handler_of_a_run_receives_validated_messages(pair: tuple[P2PNode, P2PNode]) -> None:
    first, second = pair
    first.subscribe("run-1", Inbox())
    inboxes = [Inbox(), Inbox()]
    for inbox in inboxes:
        second.subscribe("run-1", inbox)

    def failing(message: AnyMessage) -> None:
        raise RuntimeError("handler bug")

    second.subscribe("run-1", failing)

    message = publish_until(first, inboxes)
    later = publish_until(first, inboxes)  # a handler that raises does not stop delivery

    assert inboxes[0].messages[-1].sender == first.address
    assert {message, later} <= set(inboxes[1].messages)


def test_publishing_needs_a_subscription(pair: tuple[P2PNode, P2PNode]) -> None:
    first, _ = pair

    with pytest.raises(HostError, match="subscribe to run"):
        first.publish(Heartbeat(run="run-1", round=0, sender=first.address, phase="idle"))


def test_fetch_verifies_and_keeps_a_local_copy(pair: tuple[P2PNode, P2PNode], tmp_path: Path) -> None:
    first, second = pair
    first.subscribe("run-1", Inbox())
    second.subscribe("run-1", Inbox())
    data = bytes(range(256)) * 4096  # 1 MiB
    cid = LocalStore(tmp_path / "a").put(data)

    fetched = second.fetch(cid, [first.peer_id], max_size=len(data))

    assert fetched == data
    assert LocalStore(tmp_path / "b").has(cid)
    with pytest.raises(FetchError, match="TOO_LARGE"):
        second.fetch(cid, [first.peer_id], max_size=len(data) - 1)


def test_fetch_to_files_streams_verified_files_and_leaves_none_for_a_corrupt_blob(
    pair: tuple[P2PNode, P2PNode], tmp_path: Path
) -> None:
    from p2p.fetch import FetchRequest

    first, second = pair
    first.subscribe("run-1", Inbox())
    second.subscribe("run-1", Inbox())
    served = LocalStore(tmp_path / "a")
    good = bytes(range(256)) * 20_000  # ~5 MB: several 1 MiB pieces
    bad = bytes(range(255, -1, -1)) * 20_000
    good_cid, bad_cid = served.put(good), served.put(bad)
    raw = bytearray(served.blob_path(bad_cid).read_bytes())
    raw[3_000_000] ^= 0xFF  # on-disk corruption of the served copy
    served.blob_path(bad_cid).write_bytes(bytes(raw))
    dest = tmp_path / "fetched"
    requests = [FetchRequest(c, (first.peer_id,), len(good)) for c in (good_cid, bad_cid)]

    out = second.fetch_to_files(requests, dest)

    assert out[good_cid] == dest / good_cid and (dest / good_cid).read_bytes() == good
    assert isinstance(out[bad_cid], FetchError) and "ERROR" in str(out[bad_cid])
    assert sorted(p.name for p in dest.iterdir()) == [good_cid]  # no partial or corrupt file
    assert not LocalStore(tmp_path / "b").has(good_cid)  # the caller keeps it, not the host
    small = second.fetch_to_files([FetchRequest(good_cid, (first.peer_id,), len(good) - 1)], tmp_path / "x")
    assert "TOO_LARGE" in str(small[good_cid]) and list((tmp_path / "x").iterdir()) == []


def test_a_node_that_cannot_listen_fails_clearly(pair: tuple[P2PNode, P2PNode]) -> None:
    first, _ = pair
    port = int(first.listen_addrs[0].split("/tcp/")[1].split("/")[0])
    clash = P2PNode(P2PConfig(listen_port=port), member_key(2), None, is_member, lambda run: 0)

    clash.start()
    with pytest.raises(HostError, match="cannot listen on 127.0.0.1"):
        clash.wait_until_ready(30)
    clash.stop()
    with pytest.raises(HostError, match="not running"):
        clash.peers()


def test_a_direct_message_reaches_only_its_peer_after_the_gossip_checks(
    pair: tuple[P2PNode, P2PNode],
) -> None:
    first, second = pair
    got, ignored = Inbox(), Inbox()
    first.subscribe("run-1", ignored)
    second.subscribe("run-1", got)
    deadline = time.monotonic() + 10
    while second.peer_id not in first.peers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.peer_ids()[second.address] == second.peer_id  # connected: known by address
    assert second.peer_ids()[first.address] == first.peer_id  # dialled (bootstrap): known by address
    message = Heartbeat(run="run-1", round=0, sender=first.address, phase="committing")

    sent = first.send(message, [second.peer_id])
    replayed = first.send(message, [second.peer_id])  # the same nonce again: the replay check refuses it
    stale = first.send(message.model_copy(update={"round": 5, "nonce": "00112233aabbccdd"}), [second.peer_id])

    assert sent == {second.peer_id: None}
    assert got.event.wait(5)
    assert got.messages == [message]
    assert ignored.messages == []  # no gossip: the sender's own handlers saw nothing either
    assert "refused" in str(replayed[second.peer_id])
    assert "refused" in str(stale[second.peer_id])
    assert second.validators["run-1"].dropped["replay"] == 1
    assert second.validators["run-1"].dropped["stale round"] == 1

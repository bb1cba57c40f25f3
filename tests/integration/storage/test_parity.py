"""CID parity: the embedded scheme and a real js-ipfs daemon name the same bytes identically.

The daemon is driven through ipfshttpclient directly here (not through IpfsStore, which checks parity
itself), so this test compares two independent computations.
"""

from __future__ import annotations

import io
import random

import ipfshttpclient
import pytest

from p2p.storage.cid import CHUNK_SIZE, MAX_LINKS, compute_cid, normalize_cid
from p2p.storage.local import LocalStore

pytestmark = pytest.mark.integration

SIZES = [
    0,
    1,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    2 * CHUNK_SIZE,
    MAX_LINKS * CHUNK_SIZE - 1,
    MAX_LINKS * CHUNK_SIZE,  # exactly one full node: still one level
    MAX_LINKS * CHUNK_SIZE + 1,  # a second level of the balanced tree
    random.Random(0).randrange(2, 4 * CHUNK_SIZE),
    random.Random(1).randrange(4 * CHUNK_SIZE, 40 * CHUNK_SIZE),
]
SLOW_SIZES = [64 << 20]  # 256 leaves: two levels, the second node partly filled


def _daemon_cid(client: ipfshttpclient.Client, data: bytes) -> str:
    response = client.add(io.BytesIO(data), cid_version=1, raw_leaves=True, pin=False)
    return normalize_cid(str(response["Hash"]))


def _check_parity(ipfs_daemon: str, local_store: LocalStore, size: int) -> None:
    data = random.Random(size).randbytes(size)
    with ipfshttpclient.Client(ipfs_daemon, timeout=120) as client:
        daemon_cid = _daemon_cid(client, data)
        assert compute_cid(data) == daemon_cid
        assert local_store.put(data) == daemon_cid
        # the daemon serves our CID's content back byte for byte
        assert client.cat(daemon_cid) == data


@pytest.mark.parametrize("size", SIZES)
def test_cid_parity(ipfs_daemon: str, local_store: LocalStore, size: int) -> None:
    _check_parity(ipfs_daemon, local_store, size)


@pytest.mark.slow
@pytest.mark.parametrize("size", SLOW_SIZES)
def test_cid_parity_large(ipfs_daemon: str, local_store: LocalStore, size: int) -> None:
    _check_parity(ipfs_daemon, local_store, size)

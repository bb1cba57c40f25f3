from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ledger.chain import mine
from ledger.errors import IndexerError
from ledger.indexer import EventIndexer
from ledger.types import RoundId
from tests.fixtures.chain import ChainEnv


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_indexer_mirrors_events_respects_confirmations_and_resumes(
    pyevm_chain: ChainEnv, tmp_path: Path
) -> None:
    chain = pyevm_chain
    db = tmp_path / "index.sqlite"
    run = chain.new_run(members=2)
    chain.client(1).submit_update(run, RoundId(0), _sha("a"), "cid-a", 10)

    indexer = EventIndexer(chain.w3, chain.runs_address, db, confirmations=3)
    indexer.sync()
    assert indexer.last_block == chain.head() - 3
    assert indexer.query('SELECT COUNT(*) FROM "UpdateSubmitted"') == [(0,)]  # not yet confirmed
    joins = chain.client(0).contract.events.MemberJoined.get_logs(from_block=0)
    confirmed = [(e["args"]["member"],) for e in joins if e["blockNumber"] <= indexer.last_block]
    assert indexer.query('SELECT "member" FROM "MemberJoined" ORDER BY "index"') == confirmed
    indexer.close()

    mine(chain.w3, 3)
    restarted = EventIndexer(chain.w3, chain.runs_address, db, confirmations=3)
    stored = restarted.sync()

    rows = restarted.query(
        'SELECT "runId", "round", "member", "sha256", "cid", "numSamples" FROM "UpdateSubmitted"'
    )
    assert rows == [(run, 0, chain.address(1), "0x" + _sha("a").hex(), "cid-a", 10)]
    assert stored >= 1
    assert restarted.sync() == 0  # nothing new: no duplicates
    assert restarted.query('SELECT COUNT(*) FROM "RunCreated"') == [(1,)]


def test_indexer_refuses_a_database_of_another_contract(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    EventIndexer(pyevm_chain.w3, pyevm_chain.runs_address, db).close()

    with pytest.raises(IndexerError, match="belongs to contract"):
        EventIndexer(pyevm_chain.w3, "0x" + "12" * 20, db)
    with pytest.raises(IndexerError, match="`confirmations`"):
        EventIndexer(pyevm_chain.w3, pyevm_chain.runs_address, db, confirmations=-1)

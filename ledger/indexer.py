"""Mirror the ``Runs`` contract's events into SQLite, resumably, only from confirmed blocks.

:class:`EventIndexer` keeps one table per event (columns named after the event's fields, plus
``block_number``, ``tx_hash``, ``log_index``) and a cursor: the last block indexed. Each
:meth:`~EventIndexer.sync` indexes ``(cursor, head - confirmations]``, so blocks that a reorg may still
replace are never acted on, and a restart resumes from the cursor. Rows are keyed by
``(block_number, log_index)``, so a re-run of the same range cannot duplicate them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak
from web3 import Web3

from contracts import load_artifact
from ledger.errors import IndexerError
from ledger.tx import RetryPolicy, with_retry

log = logging.getLogger(__name__)

EVENTS = (
    "RunCreated",
    "AllowlistUpdated",
    "MemberJoined",
    "RoundOpened",
    "UpdateSubmitted",
    "MergeVoted",
    "RoundFinalized",
    "CommitteeFinalized",
    "RoundFailed",
    "LateVoteCast",
    "RunCompleted",
    "ContributionAccepted",
    "UnlearningRequested",
    "UnlearningVoted",
    "UnlearningFulfilled",
)


def _sql_type(abi_type: str) -> str:
    if abi_type.endswith("]"):
        return "TEXT"  # arrays (a committee round's bitmap and signers) are stored as JSON lists
    return "INTEGER" if abi_type.startswith(("uint", "int", "bool")) else "TEXT"


def _sql_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return json.dumps([int(v) for v in value])
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**63:
        return str(value)  # SQLite integers are 64-bit signed
    return value


class EventIndexer:
    """Index one ``Runs`` contract's events into a SQLite file.

    Parameters
    ----------
    w3
        A connected web3 instance.
    address
        The ``Runs`` contract.
    db_path
        SQLite file (created if missing).
    confirmations
        Blocks behind the head that are indexed; 0 indexes the head itself (devnets).
    start_block
        First block to index on a fresh database (the deployment block).
    batch_blocks
        Blocks per ``eth_getLogs`` request.
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        db_path: Path,
        *,
        confirmations: int = 6,
        start_block: int = 0,
        batch_blocks: int = 2_000,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        if confirmations < 0:
            raise IndexerError(f"`confirmations` must be >= 0, got {confirmations}")
        if batch_blocks < 1:
            raise IndexerError(f"`batch_blocks` must be >= 1, got {batch_blocks}")
        self.w3 = w3
        self.contract = w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=load_artifact("Runs").abi
        )
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.retry = retry
        self._fields = {
            e["name"]: [(i["name"], i["type"]) for i in e["inputs"]]
            for e in load_artifact("Runs").abi
            if e["type"] == "event" and e["name"] in EVENTS
        }
        self._topics = {
            keccak(text=f"{name}({','.join(t for _, t in fields)})"): name
            for name, fields in self._fields.items()
        }
        try:
            self.db = sqlite3.connect(db_path)
        except sqlite3.Error as exc:
            raise IndexerError(f"cannot open index database {db_path}: {exc}") from exc
        self._create_schema(start_block)

    def _create_schema(self, start_block: int) -> None:
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cursor "
                "(id INTEGER PRIMARY KEY CHECK (id = 0), contract TEXT, last_block INTEGER)"
            )
            for name, fields in self._fields.items():
                cols = ", ".join(f'"{f}" {_sql_type(t)}' for f, t in fields)
                db.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" '
                    f"(block_number INTEGER, log_index INTEGER, tx_hash TEXT, {cols}, "
                    "PRIMARY KEY (block_number, log_index))"
                )
            row = db.execute("SELECT contract FROM cursor WHERE id = 0").fetchone()
            if row is None:
                db.execute("INSERT INTO cursor VALUES (0, ?, ?)", (self.contract.address, start_block - 1))
            elif row[0] != self.contract.address:
                raise IndexerError(
                    f"index database belongs to contract {row[0]}, not {self.contract.address}"
                )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.db:
                yield self.db
        except sqlite3.Error as exc:
            raise IndexerError(f"index database error: {exc}") from exc

    @property
    def last_block(self) -> int:
        """The last block indexed (-1 before the first)."""
        return int(self.db.execute("SELECT last_block FROM cursor WHERE id = 0").fetchone()[0])

    def sync(self) -> int:
        """Index every confirmed block after the cursor; return the number of events stored."""
        head = int(with_retry(lambda: self.w3.eth.block_number, self.retry, "eth_blockNumber"))
        target = head - self.confirmations
        stored = 0
        while self.last_block < target:
            start = self.last_block + 1
            end = min(target, start + self.batch_blocks - 1)
            logs = with_retry(
                lambda s=start, e=end: self.w3.eth.get_logs(  # type: ignore[misc]
                    {"address": self.contract.address, "fromBlock": s, "toBlock": e}
                ),
                self.retry,
                "eth_getLogs",
            )
            rows = [self._decode(entry) for entry in logs]
            with self._tx() as db:
                for decoded in rows:
                    if decoded is None:
                        continue
                    name, values = decoded
                    marks = ", ".join("?" for _ in values)
                    db.execute(f'INSERT OR IGNORE INTO "{name}" VALUES ({marks})', values)
                    stored += 1
                db.execute("UPDATE cursor SET last_block = ? WHERE id = 0", (end,))
            log.debug("indexed blocks %d..%d (%d events)", start, end, len(rows))
        return stored

    def _decode(self, entry: Any) -> tuple[str, list[Any]] | None:
        topics = entry["topics"]
        name = self._topics.get(bytes(topics[0])) if topics else None
        if name is None:
            log.warning("unknown log at block %s index %s skipped", entry["blockNumber"], entry["logIndex"])
            return None
        args = self.contract.events[name]().process_log(entry)["args"]
        values = [entry["blockNumber"], entry["logIndex"], "0x" + bytes(entry["transactionHash"]).hex()]
        values += [_sql_value(args[f]) for f, _ in self._fields[name]]
        return name, values

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query against the index."""
        return list(self.db.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the database."""
        self.db.close()

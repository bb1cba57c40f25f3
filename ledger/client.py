"""The typed client of the ``Runs`` registry: every transaction, every view, and the round's events.

>>> client = RunsClient(w3, deployment.runs, account)
>>> run = client.create_run(RunConfig(spec_sha256=..., spec_cid="bafy..."))
>>> client.join(run)
>>> client.submit_update(run, 0, sha256, cid, num_samples=1200)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD

from contracts import load_artifact
from ledger.activity import RunActivity, activity_filter, decode_activity
from ledger.errors import LedgerConfigError, TransactionError
from ledger.rpc import ChainReads, JsonRpc
from ledger.tx import RetryPolicy, TxSender, call_view, with_retry
from ledger.types import (
    Admission,
    CommitteeFinalization,
    CommitteeResult,
    LateVote,
    MemberInfo,
    MergeVote,
    Phase,
    RequestId,
    RequestStatus,
    RoundId,
    RoundInfo,
    RoundResult,
    RoundStatus,
    RunCompletion,
    RunConfig,
    RunId,
    RunInfo,
    RunStatus,
    Submission,
    TxResult,
    UnlearningRequest,
    sorted_included,
)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEFAULT_JOIN_BLOCKS = 10
DECIDING_VOTE_GAS = 300_000
"""Gas limit floor for votes. A vote estimated while it would not decide can become the deciding one when
another member's vote lands first in the same block; deciding costs more (finalise the round, open the
next). Unused gas is refunded, so the floor costs nothing but the balance it must cover."""

_LOG_FIELDS = frozenset({"run_id", "round", "block_number"})  # event records' fields not taken from args
E = TypeVar("E", Submission, MergeVote, RoundResult, LateVote)  # the records of a round's events


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytes) else value  # HexBytes -> bytes


def _hash32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise LedgerConfigError(f"`{name}` must be 32 bytes, got {value!r:.80}")
    return value


class RunsClient:
    """Typed access to one deployed ``Runs`` contract, optionally signing as one account.

    Parameters
    ----------
    w3
        A connected web3 instance (:func:`ledger.chain.connect`).
    address
        Address of the deployed ``Runs`` contract.
    account
        The account that signs transactions; ``None`` gives a read-only client.
    retry
        Retry policy for transient RPC failures.
    confirmations
        How deep chain state must be before this client reports it: views are read at block
        ``head - confirmations`` and event logs up to that block (0: the latest block). Transactions
        always go to the latest state, and :meth:`block_number` is the head (windows are judged there).
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        *,
        retry: RetryPolicy = RetryPolicy(),
        confirmations: int = 0,
    ) -> None:
        if confirmations < 0:
            raise LedgerConfigError(f"`confirmations` must be >= 0, got {confirmations}")
        self.confirmations = confirmations
        self.w3 = w3
        self.address = to_checksum_address(address)
        abi = load_artifact("Runs").abi
        self.contract: Contract = w3.eth.contract(address=self.address, abi=abi)
        self.retry = retry
        # Views and the head over an HTTP endpoint skip web3's per-call machinery (ledger.rpc says why).
        provider = w3.provider
        self._reads = (
            ChainReads(JsonRpc(str(provider.endpoint_uri)), self.address, abi)
            if isinstance(provider, HTTPProvider)
            else None
        )
        self._sender = TxSender(w3, account, retry=retry) if account is not None else None
        self._chain_id: int | None = None

    @property
    def account_address(self) -> str:
        """Address of the signing account."""
        return self._tx().address

    def _tx(self) -> TxSender:
        if self._sender is None:
            raise LedgerConfigError("this RunsClient is read-only: pass `account` to send transactions")
        return self._sender

    def _view(self, name: str, *args: Any, latest: bool = False) -> Any:
        block: int | str = self.confirmed_block() if self.confirmations and not latest else "latest"
        reads = self._reads
        if reads is not None:
            tag = block if isinstance(block, str) else hex(block)
            return with_retry(lambda: reads.call(name, *args, block=tag), self.retry, f"eth_call {name}")
        return call_view(self.contract.functions[name](*args), self.retry, block)

    def confirmed_block(self) -> int:
        """Return the newest block ``confirmations`` deep (``head - confirmations``, at least 0)."""
        return max(0, self.block_number() - self.confirmations)

    def transaction_state(self, tx_hash: bytes) -> str:
        """Return where a transaction sent earlier stands: ``"mined"``, ``"pending"`` or ``"dropped"``.

        ``"dropped"``: the endpoint knows it neither in a block nor in its pool (a reorganisation removed
        its block and the pool did not take it back), so it must be sent again.
        """
        from web3.exceptions import TransactionNotFound

        try:
            tx = with_retry(
                lambda: self.w3.eth.get_transaction(HexBytes(tx_hash)), self.retry, "eth_getTransactionByHash"
            )
        except TransactionNotFound:
            return "dropped"
        if tx is None:
            return "dropped"
        return "pending" if tx.get("blockNumber") is None else "mined"

    def resync_nonce(self) -> None:
        """Make the next transaction take its nonce from the chain (after a dropped transaction)."""
        self._tx().resync_nonce()

    def block_number(self) -> int:
        """Return the current head block number."""
        reads = self._reads
        if reads is not None:
            return with_retry(reads.block_number, self.retry, "eth_blockNumber")
        return int(with_retry(lambda: self.w3.eth.block_number, self.retry, "eth_blockNumber"))

    def block_hash(self, number: int) -> bytes | None:
        """Return the 32-byte hash of block ``number``, or ``None`` until it is ``confirmations`` deep."""
        if number < 0:
            raise LedgerConfigError(f"`number` must be >= 0, got {number}")
        if number > self.confirmed_block():
            return None
        block = with_retry(lambda: self.w3.eth.get_block(number), self.retry, "eth_getBlockByNumber")
        return bytes(block["hash"])

    # ----- transactions -------------------------------------------------------------------------------

    def create_run(self, config: RunConfig, join_blocks: int = DEFAULT_JOIN_BLOCKS) -> RunId:
        """Create a run and return its id.

        ``config.start_block == 0`` starts round 0 ``join_blocks`` blocks from now, leaving time to join.
        """
        start = config.start_block or self.block_number() + join_blocks
        params = (
            config.spec_sha256,
            config.spec_cid,
            to_checksum_address(config.governance) if config.governance else ZERO_ADDRESS,
            config.quorum_bps,
            config.submit_blocks,
            config.vote_blocks,
            config.min_updates,
            start,
            int(config.admission),
            config.committee_size,
            config.rounds,
        )
        result = self._tx().send(self.contract.functions.createRun(params))
        events = self._events_in(result, "RunCreated")
        if not events:
            raise TransactionError("createRun mined without a RunCreated event")
        return RunId(int(events[0]["args"]["runId"]))

    def set_allowed(self, run: RunId, accounts: Sequence[str], allowed: bool = True) -> TxResult:
        """Allow (or disallow) accounts to join an allowlisted run (governance only)."""
        checked = [to_checksum_address(a) for a in accounts]
        return self._tx().send(self.contract.functions.setAllowed(run, checked, allowed))

    def join(self, run: RunId) -> TxResult:
        """Join a run as the signing account."""
        return self._tx().send(self.contract.functions.join(run))

    def submit_update(
        self, run: RunId, round: RoundId, sha256: bytes, cid: str, num_samples: int
    ) -> TxResult:
        """Commit this member's update for the open round."""
        if not 0 <= num_samples < 2**64:
            raise LedgerConfigError(f"`num_samples` must be in [0, 2**64), got {num_samples}")
        fn = self.contract.functions.submitUpdate(run, round, _hash32("sha256", sha256), cid, num_samples)
        return self._tx().send(fn)

    def vote(
        self, run: RunId, round: RoundId, merged_sha256: bytes, merged_cid: str, included_set_hash: bytes
    ) -> TxResult:
        """Vote the merged model of the open round (finalises it when this vote reaches quorum).

        On a round that is already finalised the vote is late: the contract records it as a ``LateVoteCast``
        event (agreeing or not) until :attr:`~ledger.types.RoundInfo.late_vote_end`, changing nothing else.
        """
        fn = self.contract.functions.vote(
            run,
            round,
            _hash32("merged_sha256", merged_sha256),
            merged_cid,
            _hash32("included_set_hash", included_set_hash),
        )
        return self._send_vote(fn)

    def finalize_committee_round(
        self, result: CommitteeResult, signers: Sequence[int], signatures: Sequence[bytes]
    ) -> TxResult:
        """Finalise a committee run's open round with its committee's ``CommitteeVote`` signatures.

        ``signers`` are committee member indices, strictly ascending; ``signatures[j]`` is the 65-byte
        signature of ``signers[j]`` over :func:`ledger.eip712.vote_digest` of ``result``. Reverts are raised
        as their typed errors (:mod:`ledger.reverts`).
        """
        if len(signers) != len(signatures):
            raise LedgerConfigError(
                f"`signers` and `signatures` differ in length: {len(signers)} and {len(signatures)}"
            )
        fn = self.contract.functions.finalizeCommitteeRound(
            result.as_tuple(), [int(i) for i in signers], [bytes(sig) for sig in signatures]
        )
        return self._tx().send(fn)

    def close_failed(self, run: RunId, round: RoundId) -> TxResult:
        """Close the open round as failed (allowed once it can no longer finalise)."""
        return self._tx().send(self.contract.functions.closeFailedRound(run, round))

    def record_contributions(
        self, run: RunId, round: RoundId, included: Iterable[tuple[str, bytes]]
    ) -> TxResult:
        """Record a finalised round's accepted contributions from its included ``(member, sha256)`` set."""
        pairs = sorted_included(included)
        fn = self.contract.functions.recordContributions(
            run, round, [m for m, _ in pairs], [h for _, h in pairs]
        )
        return self._tx().send(fn)

    def request_unlearning(
        self, run: RunId, subject: str, from_round: RoundId, reason_hash: bytes
    ) -> RequestId:
        """File an unlearning request (as the subject or governance) and return its id."""
        fn = self.contract.functions.requestUnlearning(
            run, to_checksum_address(subject), from_round, _hash32("reason_hash", reason_hash)
        )
        result = self._tx().send(fn)
        events = self._events_in(result, "UnlearningRequested")
        if not events:
            raise TransactionError("requestUnlearning mined without an UnlearningRequested event")
        return RequestId(int(events[0]["args"]["requestId"]))

    def vote_unlearning(self, request: RequestId, model_sha256: bytes, model_cid: str) -> TxResult:
        """Vote the recomputed model of a pending unlearning request (fulfils it on quorum)."""
        fn = self.contract.functions.voteUnlearning(request, _hash32("model_sha256", model_sha256), model_cid)
        return self._send_vote(fn)

    def _send_vote(self, fn: Any) -> TxResult:
        sender = self._tx()
        estimate = int(sender.estimate_gas(fn) * sender.gas_margin)
        return sender.send(fn, gas=max(estimate, DECIDING_VOTE_GAS))

    # ----- views --------------------------------------------------------------------------------------

    def run_count(self, *, latest: bool = False) -> int:
        """Return the number of runs created so far (``latest``: at the head, not ``confirmations`` deep)."""
        return int(self._view("runCount", latest=latest))

    def request_count(self) -> int:
        """Return the number of unlearning requests filed so far (ids are 1..count)."""
        return int(self._view("requestCount"))

    def run_info(self, run: RunId) -> RunInfo:
        """Return a run's configuration and state."""
        v = self._view("runInfo", run)
        return RunInfo(
            run_id=run,
            spec_sha256=bytes(v[0]),
            spec_cid=v[1],
            creator=v[2],
            governance=v[3],
            quorum_bps=v[4],
            submit_blocks=v[5],
            vote_blocks=v[6],
            min_updates=v[7],
            admission=Admission(v[8]),
            current_round=RoundId(v[9]),
            member_count=v[10],
            banned_count=v[11],
            committee_size=v[12],
            rounds=v[13],
            finalized_rounds=v[14],
            status=RunStatus(v[15]),
        )

    def round_info(self, run: RunId, round: RoundId) -> RoundInfo:
        """Return a round's windows, eligible set, quorum, status and result."""
        v = self._view("roundInfo", run, round)
        return RoundInfo(
            run_id=run,
            round=round,
            start_block=v[0],
            submit_end=v[1],
            vote_end=v[2],
            member_snapshot=v[3],
            eligible=v[4],
            quorum=v[5],
            submissions=v[6],
            status=RoundStatus(v[7]),
            closed_block=v[8],
            merged_sha256=bytes(v[9]),
            included_set_hash=bytes(v[10]),
            contributions_recorded=bool(v[11]),
        )

    def current_round(self, run: RunId) -> tuple[RoundInfo, Phase]:
        """Return the run's open round and its phase for a transaction sent now (mined in head + 1)."""
        info = self.round_info(run, self.run_info(run).current_round)
        return info, info.phase(self.block_number() + 1)

    def member_info(self, run: RunId, account: str) -> MemberInfo:
        """Return a member's record (``is_member`` is ``False`` for strangers)."""
        v = self._view("memberInfo", run, to_checksum_address(account))
        return MemberInfo(
            is_member=bool(v[0]),
            index=v[1],
            join_block=v[2],
            banned=bool(v[3]),
            submitted_rounds=v[4],
            accepted_contributions=v[5],
            last_submitted_round=v[6] if v[7] else None,
        )

    def members(self, run: RunId) -> list[str]:
        """All members in join (index) order."""
        return [str(a) for a in self._view("members", run)]

    def is_allowed(self, run: RunId, account: str) -> bool:
        """Whether ``account`` may join the run."""
        return bool(self._view("isAllowed", run, to_checksum_address(account)))

    def votes_for(
        self, run: RunId, round: RoundId, merged_sha256: bytes, merged_cid: str, included_set_hash: bytes
    ) -> int:
        """Votes so far for one merged result of a round."""
        return int(self._view("votesFor", run, round, merged_sha256, merged_cid, included_set_hash))

    def unlearning_request(self, request: RequestId) -> UnlearningRequest:
        """Return an unlearning request and its status."""
        v = self._view("unlearningRequest", request)
        return UnlearningRequest(
            request_id=request,
            run_id=RunId(v[0]),
            subject=v[1],
            requester=v[2],
            from_round=RoundId(v[3]),
            status=RequestStatus(v[4]),
            member_snapshot=v[5],
            eligible=v[6],
            quorum=v[7],
            request_block=v[8],
            fulfilled_block=v[9],
            reason_hash=bytes(v[10]),
            result_sha256=bytes(v[11]),
        )

    def quorum_of(self, eligible: int, quorum_bps: int) -> int:
        """Evaluate the contract's quorum rule on chain."""
        return int(self._view("quorumOf", eligible, quorum_bps))

    @property
    def chain_id(self) -> int:
        """The chain id, read once (the EIP-712 domain of :mod:`ledger.eip712` needs it)."""
        if self._chain_id is None:
            self._chain_id = int(with_retry(lambda: self.w3.eth.chain_id, self.retry, "eth_chainId"))
        return self._chain_id

    def committee_of(self, run: RunId, round: RoundId) -> list[int]:
        """Return a committee run's committee for ``round``: member indices, ascending (``committeeOf``).

        Raises ``CommitteeNotDrawnError`` until the round's start block is mined (and once its hash is older
        than 256 blocks); :func:`ledger.committee.select_committee` computes it from any block hash.
        """
        return [int(i) for i in self._view("committeeOf", run, round)]

    def commit_digest(self, run: RunId, round: RoundId, sha256: bytes, cid: str, num_samples: int) -> bytes:
        """Return the contract's EIP-712 ``UpdateCommit`` digest (cross-checks :mod:`ledger.eip712`)."""
        cid_hash = Web3.keccak(text=cid)
        return bytes(self._view("commitDigest", run, round, _hash32("sha256", sha256), cid_hash, num_samples))

    def committee_vote_digest(self, result: CommitteeResult) -> bytes:
        """Return the contract's EIP-712 ``CommitteeVote`` digest of ``result``."""
        return bytes(self._view("committeeVoteDigest", result.as_tuple()))

    # ----- events -------------------------------------------------------------------------------------

    def submissions(self, run: RunId, round: RoundId, from_block: int = 0) -> list[Submission]:
        """Return the round's committed updates (its ``UpdateSubmitted`` events), in chain order."""
        return self._round_events("UpdateSubmitted", Submission, run, round, from_block)

    def votes(self, run: RunId, round: RoundId, from_block: int = 0) -> list[MergeVote]:
        """Return the round's merge votes (its ``MergeVoted`` events), in chain order."""
        return self._round_events("MergeVoted", MergeVote, run, round, from_block)

    def late_votes(self, run: RunId, round: RoundId, from_block: int = 0) -> list[LateVote]:
        """Return the votes cast on the round after it finalised (``LateVoteCast`` events), in chain order."""
        return self._round_events("LateVoteCast", LateVote, run, round, from_block)

    def late_vote_in(self, result: TxResult) -> LateVote | None:
        """Return the ``LateVoteCast`` of a mined ``vote`` transaction (``None``: the vote was on time)."""
        events = self._events_in(result, "LateVoteCast")
        if not events:
            return None
        args = events[0]["args"]
        return LateVote(
            run_id=RunId(int(args["runId"])),
            round=RoundId(int(args["round"])),
            voter=str(args["voter"]),
            merged_sha256=bytes(args["mergedSha256"]),
            merged_cid=str(args["mergedCid"]),
            included_set_hash=bytes(args["includedSetHash"]),
            agrees=bool(args["agrees"]),
            block_number=int(events[0]["blockNumber"]),
        )

    def run_completion(self, run: RunId, from_block: int = 0) -> RunCompletion | None:
        """Return the run's ``RunCompleted`` event, or ``None`` while the run is active."""
        logs = self.logs("RunCompleted", {"runId": run}, from_block)
        if not logs:
            return None
        args = logs[0]["args"]
        return RunCompletion(
            run_id=run,
            rounds=int(args["rounds"]),
            last_round=RoundId(int(args["lastRound"])),
            final_merged_sha256=bytes(args["finalMergedSha256"]),
            block_number=int(logs[0]["blockNumber"]),
        )

    def round_result(self, run: RunId, round: RoundId) -> RoundResult | None:
        """Return a round's finalised result (``None`` unless finalised), read from its finalising block."""
        info = self.round_info(run, round)
        if info.status != RoundStatus.FINALIZED:
            return None
        results = self._round_events(
            "RoundFinalized", RoundResult, run, round, info.closed_block, info.closed_block
        )
        if not results:
            raise TransactionError(f"round {round} of run {run} is finalised but its event is missing")
        return results[0]

    def committee_finalized(self, run: RunId, round: RoundId) -> CommitteeFinalization | None:
        """Return a committee round's ``CommitteeFinalized`` event (``None`` unless it finalised that way)."""
        info = self.round_info(run, round)
        if info.status != RoundStatus.FINALIZED:
            return None
        logs = self.logs(
            "CommitteeFinalized", {"runId": run, "round": round}, info.closed_block, info.closed_block
        )
        if not logs:
            return None
        args = logs[0]["args"]
        return CommitteeFinalization(
            run_id=run,
            round=round,
            manifest_cid=str(args["manifestCid"]),
            included_bitmap=[int(w) for w in args["includedBitmap"]],
            signers=[int(i) for i in args["signers"]],
            block_number=int(logs[0]["blockNumber"]),
        )

    def _round_events(
        self,
        event: str,
        record: type[E],
        run: RunId,
        round: RoundId,
        from_block: int,
        to_block: int | str = "latest",
    ) -> list[E]:
        """Return one round's ``event`` logs in chain order, each decoded into the dataclass ``record``.

        ``record`` has the fields ``run_id``, ``round`` and ``block_number`` (from the query and the log);
        each of its other fields is the event argument of the same name in camelCase (``num_samples`` from
        ``numSamples``), ``bytes32`` arguments as plain ``bytes``.
        """
        names = [f.name for f in dataclasses.fields(record) if f.name not in _LOG_FIELDS]
        logs = self.logs(event, {"runId": run, "round": round}, from_block, to_block)
        return [
            record(
                run_id=run,
                round=round,
                block_number=e["blockNumber"],
                **{name: _plain(e["args"][_camel(name)]) for name in names},
            )
            for e in logs
        ]

    def logs(
        self, event: str, filters: dict[str, Any], from_block: int, to_block: int | str = "latest"
    ) -> list[Any]:
        """Return ``event``'s logs matching ``filters`` (indexed arguments by name), in chain order.

        ``to_block="latest"`` means the confirmed block (see ``confirmations``). Each is
        ``{"blockNumber": int, "args": {name: value}}``, as web3's ``get_logs`` gives.
        """
        if self.confirmations and to_block == "latest":
            to_block = self.confirmed_block()
        if isinstance(to_block, int) and from_block > to_block:
            return []  # nothing that deep yet (endpoints refuse fromBlock > toBlock)
        reads = self._reads
        if reads is not None:
            return with_retry(
                lambda: reads.logs(event, filters, from_block, to_block), self.retry, f"eth_getLogs {event}"
            )
        ev = self.contract.events[event]
        return list(
            with_retry(
                lambda: ev.get_logs(argument_filters=filters, from_block=from_block, to_block=to_block),
                self.retry,
                f"eth_getLogs {event}",
            )
        )

    def run_activity(self, run: RunId, from_block: int, head: int) -> tuple[int, list[RunActivity]]:
        """Return the run's :data:`~ledger.activity.ACTIVITY_EVENTS` logs from ``from_block`` on, in one call.

        Logs are read up to the block ``confirmations`` deep below ``head``; returns that block (where the
        next call starts, plus one) and the logs in chain order. Nothing is asked when that block lies
        before ``from_block``.
        """
        to_block = head - self.confirmations
        if to_block < from_block:
            return from_block - 1, []
        params = activity_filter(self.address, run, from_block, to_block)
        reads = self._reads
        if reads is not None:
            request = reads.rpc.request
            entries = with_retry(lambda: request("eth_getLogs", [params]), self.retry, "eth_getLogs")
            if not isinstance(entries, list):
                raise TransactionError("eth_getLogs run activity: result is not a list")
        else:
            entries = list(with_retry(lambda: self.w3.eth.get_logs(params), self.retry, "eth_getLogs"))  # type: ignore[arg-type]
        return to_block, decode_activity(entries, run)

    def _events_in(self, result: TxResult, event: str) -> list[Any]:
        receipt = with_retry(
            lambda: self.w3.eth.get_transaction_receipt(HexBytes(result.tx_hash)),
            self.retry,
            "eth_getTransactionReceipt",
        )
        return list(self.contract.events[event]().process_receipt(receipt, errors=DISCARD))

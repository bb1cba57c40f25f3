"""Committee runs on a real anvil: Python's committee selection and EIP-712 digests equal the contract's,
signatures made by ``ledger.eip712`` finalise rounds, and every refusal comes back as its typed error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ledger.chain import connect
from ledger.committee import bitmap, bitmap_indices, committee_seed, quorum, select_committee
from ledger.deploy import deploy
from ledger.eip712 import commit_digest, sign_digest, vote_digest
from ledger.errors import LedgerConfigError
from ledger.indexer import EventIndexer
from ledger.reverts import (
    BadSignatureError,
    CommitteeRunError,
    MemberBannedError,
    NoQuorumError,
    NotCommitteeError,
    NotCommitteeRunError,
    SignersMalformedError,
)
from ledger.types import CommitteeResult, RoundId, RoundStatus, RunConfig, RunId
from tests.fixtures.chain import SPEC_SHA, AnvilChain, ChainEnv

pytestmark = pytest.mark.integration

MEMBERS = 9  # dev accounts 1..9; member index i is account i + 1
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


@pytest.fixture
def anvil_env(anvil: AnvilChain) -> ChainEnv:
    """A fresh ``Runs`` deployment on the session's anvil."""
    w3 = connect(anvil.rpc_url)
    return ChainEnv("anvil", w3, anvil.accounts, deploy(w3, anvil.accounts[0]).runs)


def _result(run: RunId, round: int, included: list[int], tag: str = "merged") -> CommitteeResult:
    return CommitteeResult(
        run_id=run,
        round=round,
        merged_sha256=hashlib.sha256(f"{tag} {run} {round}".encode()).digest(),
        merged_cid=CID,
        included_set_hash=hashlib.sha256(f"set {included}".encode()).digest(),
        manifest_cid=f"bafymanifest{run}x{round}",
        included_bitmap=bitmap(included),
    )


def _sign(env: ChainEnv, result: CommitteeResult, signers: list[int]) -> list[bytes]:
    digest = vote_digest(env.client(0).chain_id, env.runs_address, result)
    return [sign_digest(bytes(env.accounts[i + 1].key), digest) for i in signers]


def _python_committee(env: ChainEnv, run: RunId, round: RoundId, k: int) -> list[int]:
    client = env.client(0)
    info = client.round_info(run, round)
    block_hash = client.block_hash(info.start_block)
    assert block_hash is not None
    return select_committee(committee_seed(block_hash, run, round), info.member_snapshot, k)


def _committee_run(env: ChainEnv, k: int, **overrides: object) -> RunId:
    run = env.new_run(members=MEMBERS, committee_size=k, **overrides)
    # committeeOf is read at the head: blockhash(startBlock) is known once a later block is the head
    env.mine_to(env.client(0).round_info(run, RoundId(0)).start_block + 2)
    return run


def test_committee_rounds_match_python_and_finalise_with_ledger_signatures(anvil_env: ChainEnv) -> None:
    env = anvil_env
    client = env.client(0)
    for k in (1, 4, 9, 12):
        run = _committee_run(env, k)
        assert client.run_info(run).committee_size == k
        for r in range(3):
            rnd = RoundId(r)
            committee = client.committee_of(run, rnd)
            assert committee == _python_committee(env, run, rnd, k), f"k={k} round {r}"
            assert len(committee) == min(k, MEMBERS)
            info = client.round_info(run, rnd)
            needed = quorum(k, info.member_snapshot, 6_666)
            assert info.quorum == needed
            included = [i for i in range(MEMBERS) if (i + r) % 3]  # not everyone: wait for the window
            result = _result(run, r, included)
            expected_digest = vote_digest(client.chain_id, env.runs_address, result)
            assert client.committee_vote_digest(result) == expected_digest
            env.mine_to(info.submit_end)
            signers = committee[:needed]
            sender = env.client(committee[0] + 1)  # the leader posts it

            sender.finalize_committee_round(result, signers, _sign(env, result, signers))

            final = client.round_result(run, rnd)
            assert final is not None
            assert (final.merged_sha256, final.votes) == (result.merged_sha256, needed)
            assert final.eligible == len(committee)
            event = client.committee_finalized(run, rnd)
            assert event is not None
            assert (event.manifest_cid, event.included_bitmap, event.signers) == (
                result.manifest_cid,
                result.included_bitmap,
                signers,
            )
            assert client.round_info(run, rnd).submissions == len(included)
            env.mine_to(client.round_info(run, RoundId(r + 1)).start_block + 2)
        counted = [client.member_info(run, env.address(i + 1)).accepted_contributions for i in range(MEMBERS)]
        assert counted == [sum(1 for r in range(3) if (i + r) % 3) for i in range(MEMBERS)]


def test_commit_digest_matches_the_contract(anvil_env: ChainEnv) -> None:
    client = anvil_env.client(0)
    sha = hashlib.sha256(b"update").digest()
    assert client.commit_digest(RunId(3), RoundId(5), sha, CID, 48) == commit_digest(
        client.chain_id, anvil_env.runs_address, 3, 5, sha, CID, 48
    )


def test_finalize_committee_round_refusals_are_typed(anvil_env: ChainEnv) -> None:
    env = anvil_env
    client = env.client(0)
    run = _committee_run(env, 4, quorum_bps=7_500)  # quorum 3 of 4
    rnd = RoundId(0)
    committee = client.committee_of(run, rnd)
    outsider = next(i for i in range(MEMBERS) if i not in committee)
    env.mine_to(client.round_info(run, rnd).submit_end)
    result = _result(run, 0, list(range(MEMBERS)))
    signatures = _sign(env, result, committee)

    wrong = list(signatures)
    wrong[1] = _sign(env, _result(run, 0, list(range(MEMBERS)), tag="other"), [committee[1]])[0]
    with pytest.raises(BadSignatureError) as bad:
        client.finalize_committee_round(result, committee, wrong)
    assert bad.value.error_args == {"runId": run, "round": 0, "index": committee[1]}

    mixed = sorted([*committee[:2], outsider])
    with pytest.raises(NotCommitteeError) as outside:
        client.finalize_committee_round(result, mixed, _sign(env, result, mixed))
    assert outside.value.error_args["index"] == outsider

    with pytest.raises(NoQuorumError) as few:
        client.finalize_committee_round(result, committee[:2], signatures[:2])
    assert (few.value.error_args["votes"], few.value.error_args["quorum"]) == (2, 3)

    with pytest.raises(SignersMalformedError):
        client.finalize_committee_round(result, committee[::-1], signatures[::-1])
    with pytest.raises(LedgerConfigError, match="differ in length"):
        client.finalize_committee_round(result, committee, signatures[:1])

    with pytest.raises(CommitteeRunError):
        env.client(1).vote(run, rnd, result.merged_sha256, CID, result.included_set_hash)

    banned = next(i for i in range(MEMBERS) if i not in committee)
    env.client(banned + 1).request_unlearning(run, env.address(banned + 1), rnd, b"\x01" * 32)
    with pytest.raises(MemberBannedError) as ban:
        client.finalize_committee_round(result, committee, signatures)
    assert ban.value.error_args["account"].lower() == env.address(banned + 1).lower()

    without = _result(run, 0, [i for i in range(MEMBERS) if i != banned])
    client.finalize_committee_round(without, committee, _sign(env, without, committee))
    assert client.round_info(run, rnd).status == RoundStatus.FINALIZED


def test_committee_of_refuses_an_ordinary_run(anvil_env: ChainEnv) -> None:
    run = anvil_env.new_run(members=2)
    with pytest.raises(NotCommitteeRunError):
        anvil_env.client(0).committee_of(run, RoundId(0))
    with pytest.raises(LedgerConfigError, match="<= 255"):
        RunConfig(spec_sha256=SPEC_SHA, spec_cid="c", committee_size=3, submit_blocks=200, vote_blocks=56)


def test_indexer_stores_committee_finalized_arrays_as_json(anvil_env: ChainEnv, tmp_path: Path) -> None:
    env = anvil_env
    client = env.client(0)
    run = _committee_run(env, 3)
    committee = client.committee_of(run, RoundId(0))
    env.mine_to(client.round_info(run, RoundId(0)).submit_end)
    included = [0, 2, 3, 8]
    result = _result(run, 0, included)
    client.finalize_committee_round(result, committee, _sign(env, result, committee))
    indexer = EventIndexer(env.w3, env.runs_address, tmp_path / "index.db", confirmations=0)

    indexer.sync()

    columns = '"runId", "manifestCid", "includedBitmap", "signers"'
    rows = indexer.query(f'SELECT {columns} FROM "CommitteeFinalized"')
    assert len(rows) == 1
    run_id, manifest, words, signers = rows[0]
    assert (run_id, manifest) == (run, result.manifest_cid)
    assert bitmap_indices(json.loads(words)) == included
    assert json.loads(signers) == committee
    indexer.close()

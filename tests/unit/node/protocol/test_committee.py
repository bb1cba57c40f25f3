"""node.protocol.committee: commits, the manifest's canonical strict form, leaders, proposals, votes."""

from __future__ import annotations

import json

import pytest
from eth_keys import keys
from eth_utils.address import to_checksum_address

from ledger.committee import bitmap, committee_seed, select_committee, ticket
from ledger.types import CommitteeResult
from node.protocol.committee import (
    Commit,
    CommitteeError,
    Eligibility,
    Manifest,
    Proposal,
    SignedVote,
    VoteBook,
    best_proposal,
    bitmap_from_hex,
    bitmap_to_hex,
    build_manifest,
    check_commit,
    check_vote,
    finalizer_due,
    finalizer_order,
    leader_order,
    proposer_due,
    sign_commit,
    sign_vote,
)

CHAIN = 31337
REGISTRY = to_checksum_address("0x" + "ab" * 20)
KEYS = [bytes([i + 1]) * 32 for i in range(6)]
MEMBERS = tuple(to_checksum_address(keys.PrivateKey(k).public_key.to_canonical_address()) for k in KEYS)
CID = "b" + "a" * 58


def _commit(i: int, rnd: int = 0, sha: str = "ab" * 32, key: bytes | None = None) -> Commit:
    return sign_commit(
        key or KEYS[i],
        chain_id=CHAIN,
        registry=REGISTRY,
        run=1,
        round=rnd,
        index=i,
        sha256=sha,
        cid=CID,
        num_samples=48,
    )


def _manifest(indices: list[int]) -> Manifest:
    return build_manifest([_commit(i) for i in indices], run=1, round=0, registry=REGISTRY, chain_id=CHAIN)


ELIGIBLE = Eligibility(MEMBERS, snapshot=5)


def test_commit_verifies_for_its_member_and_round() -> None:
    commit = _commit(2)
    check_commit(commit, ELIGIBLE, chain_id=CHAIN, registry=REGISTRY, run=1, round=0)
    assert commit.member == MEMBERS[2]


@pytest.mark.parametrize(
    ("commit", "why"),
    [
        (_commit(2, rnd=1), "signed by"),  # a commit of another round replayed into round 0
        (Commit(2, MEMBERS[2], "ab" * 32, CID, 48, _commit(3).signature), "signed by"),
        (Commit(2, MEMBERS[3], "ab" * 32, CID, 48, _commit(3).signature), "names"),
        (_commit(5), "not an eligible member"),  # joined after the snapshot
        (Commit(2, MEMBERS[2], "ab" * 32, CID, 48, "00" * 65), "bad signature"),
    ],
)
def test_bad_commits_are_refused(commit: Commit, why: str) -> None:
    with pytest.raises(CommitteeError, match=why):
        check_commit(commit, ELIGIBLE, chain_id=CHAIN, registry=REGISTRY, run=1, round=0)


def test_banned_member_cannot_commit() -> None:
    eligibility = Eligibility(MEMBERS, 5, frozenset({MEMBERS[1].lower()}))
    with pytest.raises(CommitteeError, match="not an eligible member"):
        check_commit(_commit(1), eligibility, chain_id=CHAIN, registry=REGISTRY, run=1, round=0)


def test_manifest_round_trips_canonically_and_verifies() -> None:
    manifest = _manifest([3, 0, 2])
    data = manifest.canonical_bytes()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    parsed = Manifest.from_bytes(data)
    assert parsed == manifest and parsed.indices == [0, 2, 3]
    parsed.check_for(run=1, round=0, registry=REGISTRY.lower(), chain_id=CHAIN)
    parsed.verify(ELIGIBLE)


def test_manifest_keeps_one_commit_per_member() -> None:
    commits = [_commit(1, sha="cd" * 32), _commit(1, sha="ab" * 32), _commit(0)]
    manifest = build_manifest(commits, run=1, round=0, registry=REGISTRY, chain_id=CHAIN)
    assert manifest.indices == [0, 1] and manifest.commits[1].sha256 == "ab" * 32


def _mutate(change: object) -> bytes:
    doc = json.loads(_manifest([0, 1]).canonical_bytes())
    change(doc)  # type: ignore[operator]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff", "not UTF-8 JSON"),
        (b"[]", "must be an object"),
        (_mutate(lambda d: d.update(format="other/1")), "format"),
        (_mutate(lambda d: d.update(extra=1)), "keys"),
        (_mutate(lambda d: d.update(run="1")), "`run`"),
        (_mutate(lambda d: d.update(run=True)), "`run`"),
        (_mutate(lambda d: d["commits"].reverse()), "strictly ascending"),
        (_mutate(lambda d: d["commits"].append(d["commits"][0])), "strictly ascending"),
        (_mutate(lambda d: d["commits"][0].pop("cid")), r"commits\[0\]"),
        (_mutate(lambda d: d["commits"][0].update(num_samples=-1)), "num_samples"),
        (_mutate(lambda d: d["commits"][0].update(signature="zz")), "signature"),
        (_mutate(lambda d: d.update(registry=REGISTRY.lower())), "checksummed"),
        (_manifest([0]).canonical_bytes().replace(b",", b", ", 1), "canonical"),
        (b" " * (1 << 20 + 1), "cap"),
    ],
)
def test_malformed_manifests_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(CommitteeError, match=why):
        Manifest.from_bytes(data)


def test_manifest_of_another_round_or_with_a_forged_signature_is_refused() -> None:
    manifest = _manifest([0, 1])
    with pytest.raises(CommitteeError, match="round 0, expected 1"):
        manifest.check_for(run=1, round=1, registry=REGISTRY, chain_id=CHAIN)
    forged = Commit(1, MEMBERS[1], "ef" * 32, CID, 48, manifest.commits[1].signature)  # other sha, old sig
    bad = Manifest(1, 0, REGISTRY, CHAIN, (manifest.commits[0], forged))
    with pytest.raises(CommitteeError, match="index 1: signed by"):
        Manifest.from_bytes(bad.canonical_bytes()).verify(ELIGIBLE)


def test_leader_order_is_the_ticket_order_of_the_committee() -> None:
    seed = committee_seed(b"\x07" * 32, 1, 0)
    committee = select_committee(seed, 6, 3)
    order = leader_order(seed, committee)
    assert sorted(order) == committee
    assert [ticket(seed, i) for i in order] == sorted(ticket(seed, i) for i in committee)
    outsiders = set(range(6)) - set(committee)
    assert all(ticket(seed, i) > ticket(seed, order[-1]) for i in outsiders)


def test_fallback_leaders_wait_one_timeout_per_rank() -> None:
    assert proposer_due(0, 100, 100, 2) and not proposer_due(1, 100, 101, 2) and proposer_due(1, 100, 102, 2)
    assert not proposer_due(2, 100, 103, 2) and proposer_due(2, 100, 104, 2)


def test_best_proposal_prefers_the_leader_then_the_smaller_manifest_hash() -> None:
    late = Proposal(1, 4, CID, "00" * 32)
    a, b = Proposal(0, 2, CID, "bb" * 32), Proposal(0, 2, CID, "aa" * 32)
    assert best_proposal([late, a, b]) == b
    assert best_proposal([late]) == late and best_proposal([]) is None


def _result(sha: bytes = b"\x01" * 32, rnd: int = 0) -> CommitteeResult:
    return CommitteeResult(1, rnd, sha, CID, b"\x02" * 32, CID, bitmap([0, 2, 3]))


def test_votes_reach_quorum_only_with_equal_results_from_the_committee() -> None:
    committee = [0, 2, 4]
    book = VoteBook()
    for i, result in ((0, _result()), (2, _result(b"\x09" * 32)), (4, _result())):
        vote = sign_vote(KEYS[i], i, result, chain_id=CHAIN, registry=REGISTRY)
        check_vote(
            vote, committee=committee, members=MEMBERS, chain_id=CHAIN, registry=REGISTRY, run=1, round=0
        )
        assert book.add(vote)
    assert not book.add(sign_vote(KEYS[0], 0, _result(), chain_id=CHAIN, registry=REGISTRY))  # one each
    assert book.quorum(3) is None
    got = book.quorum(2)
    assert got is not None
    result, signers, signatures = got
    assert result == _result() and signers == [0, 4] and len(signatures) == 2


@pytest.mark.parametrize(
    ("vote", "why"),
    [
        (sign_vote(KEYS[1], 1, _result(), chain_id=CHAIN, registry=REGISTRY), "not in the committee"),
        (
            SignedVote(
                2, _result(), sign_vote(KEYS[0], 0, _result(), chain_id=CHAIN, registry=REGISTRY).signature
            ),
            "signed by",
        ),
        (sign_vote(KEYS[2], 2, _result(rnd=1), chain_id=CHAIN, registry=REGISTRY), "round 1"),
        (SignedVote(2, _result(), b"\x00" * 65), "bad signature"),
    ],
)
def test_bad_votes_are_refused(vote: SignedVote, why: str) -> None:
    with pytest.raises(CommitteeError, match=why):
        check_vote(
            vote, committee=[0, 2, 4], members=MEMBERS, chain_id=CHAIN, registry=REGISTRY, run=1, round=0
        )


def test_the_proposer_finalises_first_then_the_others_after_a_grace() -> None:
    order = finalizer_order([4, 0, 2], proposer=2)
    assert order == [2, 4, 0]
    assert finalizer_due(0, 50, 50, 2) and not finalizer_due(1, 50, 51, 2) and finalizer_due(1, 50, 52, 2)


def test_bitmap_hex_round_trip_and_trailing_zero_refused() -> None:
    words = bitmap([0, 300])
    assert bitmap_from_hex(bitmap_to_hex(words)) == words
    with pytest.raises(CommitteeError, match="trailing zero"):
        bitmap_from_hex(bitmap_to_hex([1, 0]))


def test_audit_bitmap_must_name_exactly_the_included_members() -> None:
    from node.audit.committee import bitmap_matches

    assert bitmap_matches(bitmap([0, 3]), MEMBERS, [MEMBERS[3].lower(), MEMBERS[0]])
    assert not bitmap_matches(bitmap([0, 3]), MEMBERS, [MEMBERS[0]])
    assert not bitmap_matches(bitmap([0]), MEMBERS, [MEMBERS[0], MEMBERS[1]])

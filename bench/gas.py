"""Gas per Runs operation on a real anvil, and gas per member per round of both round designs.

    python bench/gas.py [--members 4] [--sizes 4,8,16,32] [--committee-size 5] [--rounds 2] [--json]

Deploys ``Runs`` and ``EventFloor`` (an event-only contract that emits ``UpdateSubmitted`` with the same
fields and no checks or storage) on a fresh anvil, and measures ``gasUsed`` from receipts in the same run:
``submitUpdate`` (every member; the first one in a round pays for the round's fresh counter), a
non-finalising ``vote``, the finalising ``vote``, ``recordContributions`` and ``requestUnlearning``.
Targets (issue #2): ``submitUpdate`` at most 2x the floor and at most 60,000 gas.

Then, for each N in ``--sizes`` and on the same anvil, ``--rounds`` rounds of each design with every member
contributing, everything a round costs divided by N (joins and run creation excluded: once per run):

- today's design (``committeeSize = 0``): N ``submitUpdate``, the ``vote``s up to the finalising one (quorum
  two thirds, so ceil(2N/3) votes) and one ``recordContributions`` of the N members;
- the committee design (``committeeSize = k``): one ``finalizeCommitteeRound`` with a quorum of committee
  signatures (ceil(2k/3) of the min(k, N) members: what a finaliser sends), and beside it the same
  transaction with every committee member's signature.

Target (issue #14): at most 10,000 gas per member per round at N = 16 in the committee design.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain import connect, dev_accounts, mine
from ledger.client import RunsClient
from ledger.committee import bitmap
from ledger.deploy import deploy, deploy_contract
from ledger.eip712 import sign_digest, vote_digest
from ledger.tx import TxSender
from ledger.types import CommitteeResult, RoundId, RoundStatus, RunConfig, RunId, included_set_hash
from node.devnet.anvil import AnvilConfig
from node.devnet.harness import Devnet

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # a CIDv1 (59 chars)
MAX_RATIO = 2.0
MAX_GAS = 60_000
DEFAULT_COMMITTEE = 5
QUORUM_BPS = 6_666
MEMBER_TARGET = 10_000  # gas per member per round at N = 16, committee design (issue #14)
TARGET_MEMBERS = 16


def measure(members: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="fedchain-gas-") as tmp,
        Devnet(Path(tmp), AnvilConfig(accounts=members + 1), ipfs=False) as state,
    ):
        w3 = connect(state.rpc_url)
        accounts = dev_accounts("anvil", members + 1)
        runs = deploy(w3, accounts[0]).runs
        floor_address, _ = deploy_contract(w3, accounts[0], "EventFloor")
        from contracts import load_artifact

        floor = w3.eth.contract(address=floor_address, abi=load_artifact("EventFloor").abi)
        gov = RunsClient(w3, runs, accounts[0])
        clients = [RunsClient(w3, runs, a) for a in accounts[1:]]
        run = gov.create_run(
            RunConfig(spec_sha256=hashlib.sha256(b"spec").digest(), spec_cid=CID, quorum_bps=10_000),
            join_blocks=members + 3,
        )
        for c in clients:
            c.join(run)
        mine(w3, max(0, gov.round_info(run, RoundId(0)).start_block - 1 - w3.eth.block_number))

        submit, floor_gas, included = [], [], []
        for i, c in enumerate(clients):
            digest = hashlib.sha256(f"update {i}".encode()).digest()
            submit.append(c.submit_update(run, RoundId(0), digest, CID, 1_000 + i).gas_used)
            sender = TxSender(w3, accounts[i + 1])
            floor_gas.append(
                sender.send(floor.functions.submitUpdate(run, 0, digest, CID, 1_000 + i)).gas_used
            )
            included.append((c.account_address, digest))
        set_hash = included_set_hash(included)
        merged = hashlib.sha256(b"merged").digest()
        votes = [c.vote(run, RoundId(0), merged, CID, set_hash).gas_used for c in clients]
        record = gov.record_contributions(run, RoundId(0), included).gas_used
        unlearning_tx = clients[0].contract.functions.requestUnlearning(
            run, clients[0].account_address, 0, hashlib.sha256(b"reason").digest()
        )
        unlearning = TxSender(w3, accounts[1]).send(unlearning_tx).gas_used

    worst_submit, worst_floor = max(submit), max(floor_gas)
    ratio = worst_submit / statistics.mean(floor_gas)
    return {
        "backend": "anvil",
        "members": members,
        "cid_chars": len(CID),
        "submitUpdate": {
            "first": submit[0],
            "later_mean": statistics.mean(submit[1:] or submit),
            "max": worst_submit,
        },
        "event_floor": {"mean": statistics.mean(floor_gas), "max": worst_floor},
        "submit_to_floor_ratio": round(ratio, 3),
        "vote": {"first": votes[0], "non_finalising_mean": statistics.mean(votes[:-1] or votes)},
        "finalising_vote": votes[-1],
        "recordContributions": {"gas": record, "per_member": round(record / members)},
        "requestUnlearning": unlearning,
        "targets": {"max_ratio": MAX_RATIO, "max_submit_gas": MAX_GAS},
        "meets_targets": ratio <= MAX_RATIO and worst_submit <= MAX_GAS,
    }


def _new_run(gov: RunsClient, clients: list[RunsClient], committee_size: int) -> RunId:
    window = max(20, len(clients) + 5)  # every member's transaction mines a block on anvil
    config = RunConfig(
        spec_sha256=hashlib.sha256(b"spec").digest(),
        spec_cid=CID,
        quorum_bps=QUORUM_BPS,
        submit_blocks=window,
        vote_blocks=window,
        committee_size=committee_size,
    )
    run = gov.create_run(config, join_blocks=len(clients) + 3)
    for c in clients:
        c.join(run)
    return run


def _mine_to(w3: Web3, block: int) -> None:
    """Mine until the head is at least ``block``."""
    mine(w3, max(0, block - int(w3.eth.block_number)))


def _ordinary_rounds(w3: Web3, gov: RunsClient, clients: list[RunsClient], rounds: int) -> list[int]:
    run = _new_run(gov, clients, 0)
    totals = []
    for r in range(rounds):
        rnd = RoundId(r)
        _mine_to(w3, gov.round_info(run, rnd).start_block)
        gas, included = 0, []
        for i, c in enumerate(clients):
            digest = hashlib.sha256(f"update {r} {i}".encode()).digest()
            gas += c.submit_update(run, rnd, digest, CID, 1_000 + i).gas_used
            included.append((c.account_address, digest))
        set_hash = included_set_hash(included)
        merged = hashlib.sha256(f"merged {r}".encode()).digest()
        for c in clients:
            gas += c.vote(run, rnd, merged, CID, set_hash).gas_used
            if gov.round_info(run, rnd).status == RoundStatus.FINALIZED:
                break
        gas += gov.record_contributions(run, rnd, included).gas_used
        totals.append(gas)
    return totals


def _committee_rounds(
    w3: Web3,
    gov: RunsClient,
    clients: list[RunsClient],
    accounts: list[LocalAccount],
    k: int,
    rounds: int,
    all_signatures: bool,
) -> list[int]:
    run = _new_run(gov, clients, k)
    totals = []
    for r in range(rounds):
        rnd = RoundId(r)
        info = gov.round_info(run, rnd)
        _mine_to(w3, max(info.start_block + 1, info.submit_end - 1))  # the next tx lands at submit_end
        committee = gov.committee_of(run, rnd)
        if not all_signatures:
            committee = committee[: gov.round_info(run, rnd).quorum]
        result = CommitteeResult(
            run_id=run,
            round=r,
            merged_sha256=hashlib.sha256(f"merged {r}".encode()).digest(),
            merged_cid=CID,
            included_set_hash=hashlib.sha256(f"set {r}".encode()).digest(),
            manifest_cid=CID,
            included_bitmap=bitmap(range(len(clients))),
        )
        digest = vote_digest(gov.chain_id, gov.address, result)
        signatures = [sign_digest(bytes(accounts[i].key), digest) for i in committee]
        leader = clients[committee[0]]
        totals.append(leader.finalize_committee_round(result, committee, signatures).gas_used)
    return totals


def compare(sizes: list[int], committee_size: int, rounds: int) -> dict[str, Any]:
    """Gas per member per round of both designs for each N in ``sizes``, on one anvil."""
    most = max(sizes)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="fedchain-gas-") as tmp,
        Devnet(Path(tmp), AnvilConfig(accounts=most + 1), ipfs=False) as state,
    ):
        w3 = connect(state.rpc_url)
        accounts = dev_accounts("anvil", most + 1)
        runs = deploy(w3, accounts[0]).runs
        gov = RunsClient(w3, runs, accounts[0])
        every = [RunsClient(w3, runs, a) for a in accounts[1:]]
        for n in sizes:
            clients = every[:n]
            ordinary = _ordinary_rounds(w3, gov, clients, rounds)
            committee = _committee_rounds(w3, gov, clients, accounts[1:], committee_size, rounds, False)
            every_signature = _committee_rounds(w3, gov, clients, accounts[1:], committee_size, rounds, True)
            today, ours = statistics.mean(ordinary) / n, statistics.mean(committee) / n
            rows.append(
                {
                    "members": n,
                    "committee": min(committee_size, n),
                    "quorum": max(1, -(-min(committee_size, n) * QUORUM_BPS // 10_000)),
                    "today_round_gas": ordinary,
                    "committee_round_gas": committee,
                    "today_per_member": round(today),
                    "committee_per_member": round(ours),
                    "committee_all_signatures_round_gas": every_signature,
                    "committee_all_signatures_per_member": round(statistics.mean(every_signature) / n),
                    "ratio": round(today / ours, 2),
                }
            )
    at_target = [row for row in rows if row["members"] == TARGET_MEMBERS]
    met = bool(at_target) and all(row["committee_per_member"] <= MEMBER_TARGET for row in at_target)
    return {
        "committee_size": committee_size,
        "quorum_bps": QUORUM_BPS,
        "rounds": rounds,
        "rows": rows,
        "target": {"members": TARGET_MEMBERS, "max_gas_per_member_per_round": MEMBER_TARGET},
        "meets_target": met if at_target else None,
    }


def _sizes(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be comma-separated member counts >= 1, got {text!r}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description="Gas per Runs operation and per member per round (anvil).")
    parser.add_argument("--members", type=int, default=4, help="members in the per-operation run (>= 1)")
    parser.add_argument(
        "--sizes", type=_sizes, default=[4, 8, 16, 32], help="member counts of the per-round comparison"
    )
    parser.add_argument(
        "--committee-size", type=int, default=DEFAULT_COMMITTEE, help="k of the committee design (>= 1)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds measured per design and size (>= 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.members < 1:
        parser.error(f"--members must be >= 1, got {args.members}")
    if args.committee_size < 1:
        parser.error(f"--committee-size must be >= 1, got {args.committee_size}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    result = measure(args.members)
    rounds = compare(args.sizes, args.committee_size, args.rounds)
    result["per_round"] = rounds
    ok = result["meets_targets"] and rounds["meets_target"] is not False
    if args.json:
        print(json.dumps(result))
    else:
        s, f = result["submitUpdate"], result["event_floor"]
        print(f"submitUpdate       first {s['first']:>7}  later {s['later_mean']:>9.0f}  max {s['max']:>7}")
        print(f"event-only floor   mean  {f['mean']:>7.0f}")
        print(
            f"ratio (max/floor)  {result['submit_to_floor_ratio']:.2f}x  "
            f"(target <= {MAX_RATIO}x, <= {MAX_GAS} gas)"
        )
        print(
            f"vote               first {result['vote']['first']:>7}  non-finalising mean "
            f"{result['vote']['non_finalising_mean']:.0f}"
        )
        print(f"finalising vote    {result['finalising_vote']:>7}")
        print(
            f"recordContributions {result['recordContributions']['gas']:>6} "
            f"({result['recordContributions']['per_member']} per member)"
        )
        print(f"requestUnlearning  {result['requestUnlearning']:>7}")
        print("meets targets" if result["meets_targets"] else "MISSES targets")
        print()
        print(
            f"gas per member per round (mean of {rounds['rounds']} rounds; committee k = "
            f"{rounds['committee_size']}, quorum {rounds['quorum_bps']} bps of the committee)"
        )
        print(
            f"{'N':>4} {'today':>9} {'committee':>10} {'k':>3} {'quorum':>6} {'ratio':>7} {'all k sigs':>11}"
        )
        for row in rounds["rows"]:
            print(
                f"{row['members']:>4} {row['today_per_member']:>9,} {row['committee_per_member']:>10,} "
                f"{row['committee']:>3} {row['quorum']:>6} {row['ratio']:>6.2f}x "
                f"{row['committee_all_signatures_per_member']:>11,}"
            )
        verdict = {True: "met", False: "MISSED", None: "not measured"}[rounds["meets_target"]]
        print(f"target <= {MEMBER_TARGET:,} gas per member per round at N = {TARGET_MEMBERS}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

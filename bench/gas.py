"""Gas per Runs operation on a real anvil, next to the cheapest event-only log of the same fields.

    python bench/gas.py [--members 4] [--json]

Deploys ``Runs`` and ``EventFloor`` (an event-only contract that emits ``UpdateSubmitted`` with the same
fields and no checks or storage) on a fresh anvil, and measures ``gasUsed`` from receipts in the same run:
``submitUpdate`` (every member; the first one in a round pays for the round's fresh counter), a
non-finalising ``vote``, the finalising ``vote``, ``recordContributions`` and ``requestUnlearning``.
Targets (issue #2): ``submitUpdate`` at most 2x the floor and at most 60,000 gas.
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

from ledger.chain import connect, dev_accounts, mine
from ledger.client import RunsClient
from ledger.deploy import deploy, deploy_contract
from ledger.tx import TxSender
from ledger.types import RoundId, RunConfig, included_set_hash
from node.devnet.anvil import AnvilConfig
from node.devnet.harness import Devnet

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # a CIDv1 (59 chars)
MAX_RATIO = 2.0
MAX_GAS = 60_000


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


def main() -> int:
    parser = argparse.ArgumentParser(description="Gas per Runs operation vs an event-only floor (anvil).")
    parser.add_argument("--members", type=int, default=4, help="members in the measured run (>= 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.members < 1:
        parser.error(f"--members must be >= 1, got {args.members}")
    result = measure(args.members)
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
    return 0 if result["meets_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

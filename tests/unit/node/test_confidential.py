"""Members-only artifacts in the node: the run spec's keys, encrypted rounds, and an unreadable update.

Two honest members and one that commits an envelope only it can open drive a real round on in-process py-evm
with the tiny model (the members share one content store, like nodes sharing an IPFS daemon).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import coincurve
import pytest

from node.audit.auditor import audit_run, runspec_setup_loader
from node.confidential import open_artifact, update_label
from node.config import NodeConfig
from node.console.eventlog import EventLog, read_events
from node.home import NodeHome
from node.protocol.context import NodeContext
from node.protocol.model import LocalData, ModelRuntime
from node.protocol.retrieval import Fetcher
from node.protocol.round import step
from node.protocol.state import NodeState
from node.runspec import ChainParams, RunSpec, RunSpecError
from p2p.envelope import MissingWrapError, is_envelope, open_envelope, parse, public_key_of, seal
from training.config import AdapterConfig, ModelConfig, TrainConfig
from training.data import Example

AUDITOR_KEY = hashlib.sha256(b"auditor").digest()


def test_spec_confidentiality_keys_are_checked_and_kept_out_of_public_specs(tmp_path: Path) -> None:
    pub = public_key_of(AUDITOR_KEY)
    spec = RunSpec(artifacts="members", encrypt_merged=True, auditors=["0x" + pub.hex()])
    assert spec.auditors == (pub.hex(),)
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec
    assert b"artifacts" not in RunSpec().canonical_bytes()  # public runs keep their bytes
    (tmp_path / "run.toml").write_text(f'[run]\nartifacts = "members"\nauditors = ["{pub.hex()}"]\n')
    assert RunSpec.from_toml(tmp_path / "run.toml").auditors == (pub.hex(),)
    for bad, message in [
        ({"artifacts": "secret"}, "`artifacts` must be 'public' or 'members'"),
        ({"encrypt_merged": True}, "`encrypt_merged` needs"),
        ({"auditors": [pub.hex()]}, "set `artifacts"),
        ({"artifacts": "members", "auditors": ["0x" + "ab" * 20]}, r"`auditors\[0\]` is an address"),
        ({"artifacts": "members", "auditors": ["02" + "00" * 32]}, r"`auditors\[0\]`: not a secp256k1"),
        ({"artifacts": "members", "auditors": "02ab"}, "must be a list"),
    ]:
        with pytest.raises(RunSpecError, match=message):
            RunSpec(**bad)


def test_open_artifact_names_what_failed() -> None:
    env = seal(b"update", [public_key_of(AUDITOR_KEY)], label=update_label("1", 0))
    assert open_artifact(env, AUDITOR_KEY, update_label("1", 0), what="u") == b"update"
    for data, key, label, message in [
        (b"\x08" + bytes(20), AUDITOR_KEY, None, "is not encrypted"),
        (env, None, None, "no view key"),
        (env, hashlib.sha256(b"x").digest(), None, "no wrapped key"),
        (env, AUDITOR_KEY, update_label("1", 1), "labelled"),
    ]:
        with pytest.raises(ValueError, match=message):
            open_artifact(data, key, label, what="u")


@pytest.fixture
def chain() -> Any:
    from ledger.chain import connect, dev_accounts
    from ledger.deploy import deploy

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 4)
    return w3, accounts, deploy(w3, accounts[0]).runs


def _examples(tag: str) -> list[Example]:
    return [Example(prompt=f"{tag} question {i}", response=f"{tag} answer {i}") for i in range(6)]


@pytest.mark.slow
def test_members_run_encrypts_everything_and_excludes_an_unreadable_update(
    tmp_path: Path, chain: Any, tiny_model_dir: Path
) -> None:
    from ledger.chain import mine
    from ledger.client import RunsClient
    from ledger.types import RunConfig, included_set_hash
    from p2p.storage import LocalStore

    w3, accounts, registry = chain
    spec = RunSpec(
        rounds=1,
        seed=3,
        max_norm=1000.0,
        artifacts="members",
        encrypt_merged=True,
        auditors=[public_key_of(AUDITOR_KEY).hex()],
        chain=ChainParams(submit_blocks=30, vote_blocks=30, join_blocks=8),
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        adapter=AdapterConfig(r=2),
        train=TrainConfig(local_steps=2, batch_size=2, max_len=32, lr=0.01),
    )
    store = LocalStore(tmp_path / "shared-store")
    creator = RunsClient(w3, registry, accounts[0])
    run = int(
        creator.create_run(
            RunConfig(
                spec_sha256=spec.sha256(),
                spec_cid=store.put(spec.canonical_bytes()),
                quorum_bps=6_666,
                submit_blocks=30,
                vote_blocks=30,
            ),
            join_blocks=spec.chain.join_blocks,
        )
    )
    for account in accounts[1:]:
        RunsClient(w3, registry, account).join(run)
    mine(w3, max(0, creator.round_info(run, 0).start_block - int(w3.eth.block_number)))
    # Member 3 commits an envelope only it can open: the others must leave it out, say why, and go on.
    rogue = RunsClient(w3, registry, accounts[3])
    rogue_pub = coincurve.PrivateKey(bytes(accounts[3].key)).public_key.format(compressed=True)
    bad = seal(b"not for you", [rogue_pub], label=update_label(str(run), 0))
    rogue.submit_update(run, 0, hashlib.sha256(bad).digest(), str(store.put(bad)), 5)

    ctxs = []
    for i in (1, 2):
        home = tmp_path / f"node{i}"
        state = NodeState(home / "state.db")
        ctxs.append(
            NodeContext(
                run_id=run,
                spec=spec,
                client=RunsClient(w3, registry, accounts[i]),
                address=str(accounts[i].address),
                fetcher=Fetcher(store, state),
                p2p=None,
                runtime=ModelRuntime(spec, threads=1),
                data=LocalData("test", _examples(home.name), _examples(home.name)[:2]),
                state=state,
                log=EventLog(home / "node.jsonl", console="none"),
                home=NodeHome(home),
                config=NodeConfig(),
                view_key=bytes(accounts[i].key),
            )
        )
    try:
        for _ in range(200):
            if creator.round_result(run, 0) is not None:
                break
            for ctx in ctxs:
                step(ctx)
            mine(w3, 1)
        result = creator.round_result(run, 0)
        assert result is not None and result.votes == 2
        subs = {s.member: s for s in creator.submissions(run, 0)}
        honest = [str(a.address) for a in accounts[1:3]]
        pairs = sorted(((m, subs[m].sha256) for m in honest), key=lambda p: int(p[0], 16))
        assert result.included_set_hash == included_set_hash(pairs)
        for ctx in ctxs:
            rejected = json.loads(ctx.state.round(run, 0).rejected or "{}")
            assert "no wrapped key" in rejected[str(accounts[3].address)]
            events = [
                e for e in read_events(ctx.home.root / "node.jsonl") if e["event"] == "round.update_excluded"
            ]
            assert [e["member"] for e in events] == [str(accounts[3].address)]
        readers = {public_key_of(bytes(a.key)) for a in accounts[1:]} | {public_key_of(AUDITOR_KEY)}
        for member in honest:
            data = bytes(store.get(subs[member].cid))
            assert hashlib.sha256(data).digest() == subs[member].sha256  # the chain names the ciphertext
            assert set(parse(data).readers) == readers
            plain = open_envelope(data, AUDITOR_KEY, label=update_label(str(run), 0))
            assert parse(data).plaintext_sha256 == hashlib.sha256(plain).digest()
            with pytest.raises(MissingWrapError):  # the run's creator is no member: it cannot read
                open_envelope(data, bytes(accounts[0].key))
        merged = bytes(store.get(result.merged_cid))
        assert is_envelope(merged) and set(parse(merged).readers) == readers
        # The audit: complete with the auditor's key; without one, what needs plaintext is listed unchecked.
        full = audit_run(creator, run, store, runspec_setup_loader(AUDITOR_KEY))
        assert full.ok and full.complete and full.rounds[0].recomputed_sha256 == result.merged_sha256.hex()
        keyless = audit_run(creator, run, store, runspec_setup_loader())
        assert keyless.ok and not keyless.complete
        assert any("not recomputed" in u for u in keyless.unchecked)
        assert keyless.rounds[0].included == sorted(honest, key=lambda m: int(m, 16))
        stranger = audit_run(creator, run, store, runspec_setup_loader(bytes(accounts[0].key)))
        assert not stranger.ok and "no wrapped key" in stranger.mismatches[0].detail
    finally:
        for ctx in ctxs:
            ctx.state.close()
            ctx.log.close()


def test_view_key_from_a_keystore_or_a_hex_file_and_clear_errors(tmp_path: Path) -> None:
    from eth_account import Account

    from ledger.keys import PassphraseSource, save_keystore
    from node.confidential import ConfidentialError, load_view_key

    (tmp_path / "passphrase").write_text("pw\n")
    account = Account.from_key(AUDITOR_KEY)
    save_keystore(
        account, tmp_path / "key.json", PassphraseSource(file=tmp_path / "passphrase"), kdf_iterations=2
    )
    assert load_view_key(tmp_path / "key.json") == AUDITOR_KEY  # passphrase beside the keystore
    (tmp_path / "other").write_text("wrong")
    with pytest.raises(ConfidentialError, match="wrong passphrase"):
        load_view_key(tmp_path / "key.json", passphrase_file=tmp_path / "other")
    (tmp_path / "hex.key").write_text("0x" + AUDITOR_KEY.hex() + "\n")
    assert load_view_key(tmp_path / "hex.key") == AUDITOR_KEY
    for name, text, message in [
        ("short.key", "abcd", "64 hex digits"),
        ("nothex.key", "zz" * 32, "not hex"),
        ("bad.json", "{not json", "not a keystore"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfidentialError, match=message):
            load_view_key(tmp_path / name)
    with pytest.raises(ConfidentialError, match="cannot read view key"):
        load_view_key(tmp_path / "missing.key")

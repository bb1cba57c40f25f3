from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledger.errors import KeystoreError
from ledger.keys import PassphraseSource, load_account, new_keystore

FAST_KDF = 2  # scrypt cost parameter kept tiny in tests


def test_new_keystore_round_trips_and_never_stores_the_key_in_clear(tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\n")
    source = PassphraseSource(file=secret)
    path = tmp_path / "keys" / "node.json"

    address = new_keystore(path, source, kdf_iterations=FAST_KDF)
    account = load_account(path, source)

    assert account.address == address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert account.key.hex() not in path.read_text()
    assert account.key.hex() not in repr(account)


def test_passphrase_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDCHAIN_TEST_PASS", "s3cret")
    source = PassphraseSource(env="FEDCHAIN_TEST_PASS")
    address = new_keystore(tmp_path / "k.json", source, kdf_iterations=FAST_KDF)

    assert load_account(tmp_path / "k.json", source).address == address


def test_keystore_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOD", "a")
    monkeypatch.setenv("BAD", "b")
    new_keystore(tmp_path / "k.json", PassphraseSource(env="GOOD"), kdf_iterations=FAST_KDF)

    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_account(tmp_path / "k.json", PassphraseSource(env="BAD"))
    with pytest.raises(KeystoreError, match="already exists"):
        new_keystore(tmp_path / "k.json", PassphraseSource(env="GOOD"))
    with pytest.raises(KeystoreError, match="missing or empty"):
        PassphraseSource(env="FEDCHAIN_UNSET_VARIABLE").read()
    with pytest.raises(KeystoreError, match="exactly one"):
        PassphraseSource()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KeystoreError, match="not JSON"):
        load_account(tmp_path / "bad.json", PassphraseSource(env="GOOD"))
    with pytest.raises(KeystoreError, match="cannot read keystore"):
        load_account(tmp_path / "missing.json", PassphraseSource(env="GOOD"))

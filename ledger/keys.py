"""Keys in eth-account encrypted keystores (v3); passphrases only from a file or an environment variable.

A private key is never logged, printed or written in clear: :func:`new_keystore` writes only the encrypted
JSON (mode 0600), and :func:`load_account` decrypts it into an in-memory ``LocalAccount``. The node derives
its libp2p identity from the same secp256k1 key (``account.key``), which it passes to the p2p layer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.errors import KeystoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassphraseSource:
    """Where a keystore passphrase comes from: exactly one of a file path or an environment variable."""

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise KeystoreError("give exactly one of `file` or `env` for the keystore passphrase")

    def read(self) -> str:
        """Return the passphrase (a file's trailing newline is dropped).

        Raises
        ------
        KeystoreError
            If the file or variable is missing or empty.
        """
        if self.file is not None:
            try:
                value = self.file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise KeystoreError(f"cannot read passphrase file {self.file}: {exc.strerror}") from exc
            where = f"passphrase file {self.file}"
        else:
            value = os.environ.get(str(self.env), "")
            where = f"environment variable {self.env}"
        if not value:
            raise KeystoreError(f"{where} is missing or empty")
        return value


def new_keystore(path: Path, passphrase: PassphraseSource, *, kdf_iterations: int | None = None) -> str:
    """Generate a new key, write it encrypted to ``path`` (mode 0600) and return its address.

    Raises
    ------
    KeystoreError
        If ``path`` already exists (keys are never overwritten).
    """
    if path.exists():
        raise KeystoreError(f"keystore {path} already exists; refusing to overwrite a key")
    account = Account.create()
    return save_keystore(account, path, passphrase, kdf_iterations=kdf_iterations)


def save_keystore(
    account: LocalAccount, path: Path, passphrase: PassphraseSource, *, kdf_iterations: int | None = None
) -> str:
    """Encrypt ``account``'s key into a v3 keystore at ``path`` (mode 0600); return the address."""
    data = Account.encrypt(account.key, passphrase.read(), iterations=kdf_iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    log.info("wrote keystore for %s to %s", account.address, path)
    return str(account.address)


def load_account(path: Path, passphrase: PassphraseSource) -> LocalAccount:
    """Decrypt the keystore at ``path``.

    Raises
    ------
    KeystoreError
        If the file is missing or malformed, or the passphrase is wrong.
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise KeystoreError(f"keystore {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    try:
        key = Account.decrypt(data, passphrase.read())
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt keystore {path}: wrong passphrase or corrupt file") from exc
    account: LocalAccount = Account.from_key(key)
    return account

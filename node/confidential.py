"""Confidential artifacts of an ``artifacts = "members"`` run: who reads them, sealing and opening.

The envelope format is :mod:`p2p.envelope`; this module supplies the run's facts to it. A round's readers
are the run's members that are not banned (their public keys recovered from their signed ``join``
transactions, :mod:`ledger.pubkeys`, and cached in the state database: they never change) plus the spec's
``auditors``. An update is sealed with a fresh content key; a merged state with ``encrypt_merged`` is
sealed deterministically over the same reader set, so every honest member stores the same bytes and votes
the same CID. The sha256 and CID on chain are of the envelope; the envelope commits to the plaintext's
sha256, which :func:`open_artifact` checks after decrypting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ledger.errors import LedgerError
from node.errors import NodeError
from p2p.errors import EnvelopeError, StorageError


class ConfidentialError(NodeError, ValueError):
    """An artifact of a members-only run cannot be opened: not an envelope, not for us, or tampered."""


def update_label(run: str, round: int) -> str:
    """Return the label sealed into a member's update envelope (one for another round is refused)."""
    return f"fedchain update run {run} round {round}"


def merged_label(run: str, round: int) -> str:
    """Return the label sealed into a merged-state envelope."""
    return f"fedchain merged run {run} round {round}"


def reader_keys(ctx: Any) -> list[bytes]:
    """Return the compressed public keys of the run's current readers: unbanned members, then auditors.

    Members left out of every merge (``ctx.loop.excluded``, e.g. forgotten subjects) are not readers either.

    Raises
    ------
    ConfidentialError
        If a member's key cannot be recovered from the chain.
    """
    from ledger.pubkeys import PublicKeyError, member_public_key
    from p2p.envelope import public_key_bytes

    excluded = {m.lower() for m in ctx.loop.excluded}
    keys: list[bytes] = []
    for member in ctx.client.members(ctx.run_id):
        if member.lower() in excluded:
            continue
        known = ctx.state.member_public_key(ctx.run_id, member)
        if ctx.client.member_info(ctx.run_id, member).banned:
            continue
        if known is None:
            try:
                known = member_public_key(ctx.client, ctx.run_id, member)
            except PublicKeyError as exc:
                raise ConfidentialError(f"cannot encrypt to member {member}: {exc}") from exc
            ctx.state.set_member_public_key(ctx.run_id, member, known)
        keys.append(known)
    keys.extend(public_key_bytes(k) for k in ctx.spec.auditors)
    return keys


def seal_for(readers: Iterable[bytes], data: bytes, label: str, *, deterministic: bool = False) -> bytes:
    """Seal ``data`` for ``readers`` (:func:`p2p.envelope.seal`); errors become ``ConfidentialError``."""
    from p2p.envelope import seal

    try:
        return seal(data, list(readers), label=label, deterministic=deterministic)
    except EnvelopeError as exc:
        raise ConfidentialError(f"cannot seal {label}: {exc}") from exc


def open_artifact(data: bytes, key: bytes | None, label: str | None, *, what: str) -> bytes:
    """Return the plaintext of an envelope opened with ``key``; every failure is a ``ConfidentialError``.

    Parameters
    ----------
    data
        The artifact's bytes, already checked against the sha256 on chain.
    key
        This reader's 32-byte private key (``None``: no key, so nothing can be opened).
    label
        The label the envelope must carry (:func:`update_label`, :func:`merged_label`; ``None``: any).
    what
        Names the artifact in the error (e.g. ``"update of 0xAb… in round 3"``).
    """
    from p2p.envelope import is_envelope, open_envelope

    if not is_envelope(data):
        raise ConfidentialError(f"{what} is not encrypted, but the run's artifacts are members-only")
    if key is None:
        raise ConfidentialError(f"{what} is encrypted and no view key was given")
    try:
        return open_envelope(data, key, label=label)
    except EnvelopeError as exc:
        raise ConfidentialError(f"{what} cannot be opened: {exc}") from exc


def opener(key: bytes | None, run: str) -> Callable[[bytes, int | None, str, str], bytes]:
    """Return ``open(data, round, kind, what) -> plaintext`` for a run's envelopes (``kind``: update/merged).

    ``round`` names the label the envelope must carry; ``None`` (an unlearning result) accepts any label.
    """

    def open_(data: bytes, round: int | None, kind: str, what: str) -> bytes:
        label = None
        if round is not None:
            label = update_label(run, round) if kind == "update" else merged_label(run, round)
        return open_artifact(data, key, label, what=what)

    return open_


def resealed_like(store: Any, cid: str, plaintext: bytes, label: str) -> bytes:
    """Return ``plaintext`` sealed deterministically for the readers of the envelope stored at ``cid``.

    An auditor that recomputed a merged state rebuilds the envelope every honest member wrote (same
    plaintext, label and reader set: same bytes), so the CID on chain can be checked. When the stored
    artifact is unavailable or not an envelope, ``plaintext`` is returned as is.
    """
    from p2p.envelope import is_envelope, parse

    try:
        stored = bytes(store.get(cid, max_size=len(plaintext) + (1 << 20)))
        if not is_envelope(stored):
            return plaintext
        return seal_for(parse(stored).readers, plaintext, label, deterministic=True)
    except (StorageError, EnvelopeError, ConfidentialError, ValueError):
        return plaintext


def load_view_key(
    path: Path, passphrase_file: Path | None = None, passphrase_env: str | None = None
) -> bytes:
    """Read a reader's private key: an eth-account keystore (JSON) or a file of 64 hex digits.

    A keystore's passphrase comes from ``passphrase_file`` or ``passphrase_env``; with neither, from a
    ``passphrase`` file beside the keystore (what ``fedchain init`` writes for development use).

    Raises
    ------
    ConfidentialError
        Naming the file when it cannot be read, decrypted or parsed.
    """
    from ledger.keys import PassphraseSource, load_account

    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfidentialError(f"cannot read view key {path}: {exc}") from exc
    if text.startswith("{"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfidentialError(f"view key {path} is not a keystore: {exc.msg}") from exc
        if passphrase_file is None and passphrase_env is None:
            passphrase_file = path.parent / "passphrase"
        try:
            source = PassphraseSource(file=passphrase_file, env=passphrase_env)
            return bytes(load_account(path, source).key)
        except LedgerError as exc:
            raise ConfidentialError(f"view key {path}: {exc}") from exc
    raw = text[2:] if text.lower().startswith("0x") else text
    if len(raw) != 64:
        raise ConfidentialError(f"view key {path} must be a keystore or 64 hex digits, got {len(raw)} chars")
    try:
        return bytes.fromhex(raw)
    except ValueError as exc:
        raise ConfidentialError(f"view key {path} is not hex: {exc}") from exc

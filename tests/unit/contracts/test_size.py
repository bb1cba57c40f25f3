"""The committed ``Runs`` runtime code fits the EIP-170 limit, so every EVM chain accepts its deployment."""

from __future__ import annotations

from contracts import load_artifact

EIP170_LIMIT = 24_576


def test_runs_deployed_code_is_under_the_eip170_limit() -> None:
    code = load_artifact("Runs").deployed_bytecode
    size = len(bytes.fromhex(code.removeprefix("0x")))
    assert 0 < size <= EIP170_LIMIT, f"Runs runtime code is {size} bytes"

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from ledger.errors import ContractRevertError, LedgerConfigError
from ledger.reverts import ERROR_CLASSES, NotMemberError, decode_revert, revert_data_of
from ledger.types import RoundId, RoundInfo, RoundStatus, RunConfig, RunId, included_set_hash, quorum_of

A = "0x00000000000000000000000000000000000000aa"
B = "0x0000000000000000000000000000000000000Bb0"


def test_included_set_hash_is_order_free_and_matches_the_documented_encoding() -> None:
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    expected = keccak(encode(["address[]", "bytes32[]"], [[A, B], [h1, h2]]))

    assert included_set_hash([(B, h2), (A, h1)]) == expected
    assert included_set_hash([(A, h1), (B, h2)]) == expected
    assert included_set_hash([]) == keccak(encode(["address[]", "bytes32[]"], [[], []]))
    with pytest.raises(LedgerConfigError, match="twice"):
        included_set_hash([(A, h1), (A.upper().replace("0X", "0x"), h2)])
    with pytest.raises(LedgerConfigError, match="32 bytes"):
        included_set_hash([(A, b"short")])


@pytest.mark.parametrize(
    ("eligible", "bps", "needed"),
    [(0, 5000, 1), (3, 6666, 2), (3, 6667, 3), (4, 7500, 3), (10, 1, 1), (10, 10_000, 10)],
)
def test_quorum_rule_examples(eligible: int, bps: int, needed: int) -> None:
    assert quorum_of(eligible, bps) == needed


def test_run_config_validation_names_the_field() -> None:
    with pytest.raises(LedgerConfigError, match="`quorum_bps` must be in \\[1, 10000\\], got 0"):
        RunConfig(spec_sha256=b"\0" * 32, spec_cid="c", quorum_bps=0)
    with pytest.raises(LedgerConfigError, match="`submit_blocks`"):
        RunConfig(spec_sha256=b"\0" * 32, spec_cid="c", submit_blocks=0)
    with pytest.raises(LedgerConfigError, match="`spec_sha256` must be 32 bytes"):
        RunConfig(spec_sha256=b"\0", spec_cid="c")
    with pytest.raises(LedgerConfigError, match="`rounds` must be in \\[0, 2\\*\\*32\\), got -1"):
        RunConfig(spec_sha256=b"\0" * 32, spec_cid="c", rounds=-1)


def test_late_vote_end_is_the_later_of_vote_end_and_vote_blocks_after_finalisation() -> None:
    def info(closed: int) -> RoundInfo:
        return RoundInfo(
            RunId(1), RoundId(0), 100, 110, 130, 3, 3, 2, 3, RoundStatus.FINALIZED, closed, b"", b"", False
        )

    assert info(105).late_vote_end == 130  # finalised early: the vote window's end
    assert info(125).late_vote_end == 145  # closed_block + voteBlocks (20)


def test_decode_revert_maps_selectors_to_typed_errors() -> None:
    data = keccak(text="RunsNotMember(uint256,address)")[:4] + encode(["uint256", "address"], [7, A])

    err = decode_revert(data)

    assert isinstance(err, NotMemberError) and isinstance(err, PermissionError)
    assert err.error_args == {"runId": 7, "account": A.lower()}
    assert "RunsNotMember(runId=7" in str(err)
    assert decode_revert("0x" + data.hex()).error == "RunsNotMember"


def test_decode_revert_handles_strings_panics_and_garbage() -> None:
    reason = bytes.fromhex("08c379a0") + encode(["string"], ["nope"])
    assert decode_revert(reason).error_args == {"reason": "nope"}
    assert decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11])).error == "Panic"
    unknown = decode_revert(b"\xde\xad\xbe\xef\x00")
    assert type(unknown) is ContractRevertError and "deadbeef" in str(unknown)
    assert decode_revert(None).error == ""
    truncated = decode_revert(keccak(text="RunsNotMember(uint256,address)")[:4] + b"\x01")
    assert truncated.error == "RunsNotMember" and truncated.error_args == {}


def test_every_abi_error_has_a_typed_class() -> None:
    from contracts import load_artifact

    names = {e["name"] for e in load_artifact("Runs").abi if e["type"] == "error"}
    assert names == set(ERROR_CLASSES)


def test_revert_data_is_found_in_rpc_and_py_evm_exception_shapes() -> None:
    class RpcLikeError(Exception):
        data = "0x" + "ab" * 8

    assert revert_data_of(RpcLikeError()) == b"\xab" * 8
    inner = ValueError(b"\x01\x02\x03\x04")
    outer = RuntimeError("execution reverted")
    outer.__cause__ = inner
    assert revert_data_of(outer) == b"\x01\x02\x03\x04"
    assert revert_data_of(RuntimeError("execution reverted: b'\\x01\\x02\\x03\\x04'")) == b"\x01\x02\x03\x04"
    assert revert_data_of(RuntimeError("nothing here")) is None

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../../src/interfaces/IRuns.sol";
import {Test} from "./Test.sol";

/// @notice A deployed `Runs`, dev accounts and helpers to create a run and drive its rounds.
/// @dev `Runs` is deployed from the committed artifact (`artifacts/Runs.json`), so these tests run the very
/// bytecode that the ledger deploys, not a recompilation with other settings.
abstract contract RunsFixture is Test {
    IRuns internal runs;
    address internal governance;
    bytes32 internal constant SPEC = keccak256("spec");
    bytes32 internal constant MERGED = keccak256("merged");
    string internal constant MERGED_CID = "bafymerged";
    uint32 internal constant SUBMIT_BLOCKS = 10;
    uint32 internal constant VOTE_BLOCKS = 10;

    function setUp() public virtual {
        vm.roll(100);
        runs = IRuns(vm.deployCode("artifacts/Runs.json"));
        governance = member(1000);
    }

    function member(uint256 i) internal pure returns (address) {
        return vm.addr(i + 1);
    }

    function params(uint16 quorumBps, uint32 minUpdates, IRuns.Admission admission)
        internal
        view
        returns (IRuns.RunParams memory)
    {
        return IRuns.RunParams({
            specSha256: SPEC,
            specCid: "bafyspec",
            governance: governance,
            quorumBps: quorumBps,
            submitBlocks: SUBMIT_BLOCKS,
            voteBlocks: VOTE_BLOCKS,
            minUpdates: minUpdates,
            startBlock: uint64(block.number + 5),
            admission: admission,
            committeeSize: 0,
            rounds: 0
        });
    }

    /// @dev An open run joined by members 0..n-1, at the first block of round 0.
    function openRun(uint256 n, uint16 quorumBps, uint32 minUpdates) internal returns (uint256 runId) {
        runId = runs.createRun(params(quorumBps, minUpdates, IRuns.Admission.Open));
        for (uint256 i = 0; i < n; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        vm.roll(block.number + 5);
    }

    function submit(uint256 runId, uint256 round, uint256 i) internal {
        vm.prank(member(i));
        runs.submitUpdate(runId, round, keccak256(abi.encode("update", round, i)), "bafyupdate", 10);
    }

    function vote(uint256 runId, uint256 round, uint256 i, bytes32 merged, bytes32 setHash) internal {
        vm.prank(member(i));
        runs.vote(runId, round, merged, MERGED_CID, setHash);
    }

    function status(uint256 runId, uint256 round) internal view returns (IRuns.RoundStatus) {
        return runs.roundInfo(runId, round).status;
    }

    /// @dev includedSetHash of members 0..n-1's round-`round` updates (addresses sorted ascending).
    function includedSet(uint256 round, uint256 n)
        internal
        pure
        returns (address[] memory accounts, bytes32[] memory hashes, bytes32 setHash)
    {
        accounts = new address[](n);
        uint256[] memory index = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            accounts[i] = member(i);
            index[i] = i;
        }
        for (uint256 i = 1; i < n; ++i) {
            for (uint256 j = i; j > 0 && accounts[j - 1] > accounts[j]; --j) {
                (accounts[j - 1], accounts[j]) = (accounts[j], accounts[j - 1]);
                (index[j - 1], index[j]) = (index[j], index[j - 1]);
            }
        }
        hashes = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            hashes[i] = keccak256(abi.encode("update", round, index[i]));
        }
        setHash = keccak256(abi.encode(accounts, hashes));
    }
}

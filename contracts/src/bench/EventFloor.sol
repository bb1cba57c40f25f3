// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title EventFloor - the cheapest possible on-chain log of an update commit (gas baseline only)
/// @notice Emits the same event with the same fields as `Runs.submitUpdate`, with no checks and no
/// storage; `bench/gas.py` compares the two in one run.
contract EventFloor {
    /// @notice Same signature and indexing as `IRuns.UpdateSubmitted`.
    event UpdateSubmitted(
        uint256 indexed runId,
        uint256 indexed round,
        address indexed member,
        bytes32 sha256,
        string cid,
        uint64 numSamples
    );

    /// @notice Log an update commit without any state.
    /// @param runId The run.
    /// @param round The round.
    /// @param sha256Hash sha256 of the update artifact.
    /// @param cid IPFS CID of the update artifact.
    /// @param numSamples Number of local training samples behind the update.
    function submitUpdate(uint256 runId, uint256 round, bytes32 sha256Hash, string calldata cid, uint64 numSamples)
        external
    {
        emit UpdateSubmitted(runId, round, msg.sender, sha256Hash, cid, numSamples);
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../src/interfaces/IRuns.sol";
import {RunsFixture} from "./utils/RunsFixture.sol";

/// @notice Fuzz tests of `Runs` (fixed seed in foundry.toml): quorum arithmetic, windows, eligibility.
contract RunsFuzzTest is RunsFixture {
    function testFuzz_quorumOf_IsTheCeilingOfTheShareAndAtLeastOne(uint32 eligible, uint16 bpsSeed) public view {
        uint16 bps = uint16(bound(bpsSeed, 1, 10_000));
        uint256 q = runs.quorumOf(eligible, bps);
        uint256 share = uint256(eligible) * bps; // the quorum is ceil(share / 10000), at least 1
        assertTrue(q >= 1, "at least one vote");
        assertTrue(q * 10_000 >= share, "reaches the share");
        if (q > 1) assertTrue((q - 1) * 10_000 < share, "the smallest count that reaches it");
        assertLe(q, eligible == 0 ? 1 : eligible, "never more than the eligible members");
    }

    function testFuzz_vote_FinalisesExactlyWhenEqualVotesReachQuorum(uint8 nSeed, uint16 bpsSeed, uint8 yesSeed)
        public
    {
        uint256 n = bound(nSeed, 1, 12);
        uint16 bps = uint16(bound(bpsSeed, 1, 10_000));
        uint256 yes = bound(yesSeed, 0, n);
        uint256 runId = openRun(n, bps, 1);
        for (uint256 i = 0; i < n; ++i) submit(runId, 0, i);
        uint256 quorum = runs.quorumOf(uint32(n), bps);
        for (uint256 i = 0; i < yes && i < quorum; ++i) vote(runId, 0, i, MERGED, bytes32(0));
        // the others each vote a model of their own while the round is open: one vote per result
        for (uint256 i = yes; i < n && status(runId, 0) == IRuns.RoundStatus.Open; ++i) {
            vote(runId, 0, i, keccak256(abi.encode(i)), bytes32(0));
        }
        bool finalised = status(runId, 0) == IRuns.RoundStatus.Finalized;
        assertTrue(finalised == (yes >= quorum || quorum == 1), "finalised iff a result has quorum");
        if (yes >= quorum) assertEq(runs.roundInfo(runId, 0).mergedSha256, MERGED, "the quorum's result");
    }

    function testFuzz_submitUpdate_AcceptedExactlyInsideTheSubmitWindow(uint8 offsetSeed) public {
        uint256 offset = bound(offsetSeed, 0, 2 * SUBMIT_BLOCKS);
        uint256 runId = runs.createRun(params(6_666, 1, IRuns.Admission.Open));
        vm.prank(member(0));
        runs.join(runId);
        vm.prank(member(1));
        runs.join(runId);
        uint64 start = runs.roundInfo(runId, 0).startBlock;
        vm.roll(start - 2 + offset); // two blocks before the window up to well past it
        bool inside = block.number >= start && block.number < start + SUBMIT_BLOCKS;
        if (!inside) {
            bytes memory reason = block.number < start
                ? abi.encodeWithSelector(IRuns.RunsSubmitWindowNotOpen.selector, runId, uint256(0), start)
                : abi.encodeWithSelector(
                    IRuns.RunsSubmitWindowClosed.selector, runId, uint256(0), uint64(start + SUBMIT_BLOCKS)
                );
            vm.expectRevert(reason);
        }
        submit(runId, 0, 0);
        assertEq(runs.roundInfo(runId, 0).submissions, inside ? 1 : 0, "submissions");
    }

    function testFuzz_join_OnlyMembersBeforeTheRoundOpenedAreEligible(uint8 earlySeed, uint8 lateSeed) public {
        uint256 early = bound(earlySeed, 1, 8);
        uint256 late = bound(lateSeed, 0, 8);
        uint256 runId = openRun(early, 10_000, 1);
        for (uint256 i = early; i < early + late; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        assertEq(runs.roundInfo(runId, 0).eligible, early, "round 0: the members at its start");
        for (uint256 i = early; i < early + late; ++i) {
            vm.prank(member(i));
            vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotEligible.selector, runId, uint256(0), member(i)));
            runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
        }
        for (uint256 i = 0; i < early; ++i) submit(runId, 0, i);
        for (uint256 i = 0; i < early; ++i) vote(runId, 0, i, MERGED, bytes32(0));
        assertEq(runs.roundInfo(runId, 1).eligible, early + late, "round 1: everyone who joined before it");
        submit(runId, 1, early + late - 1);
    }

    function testFuzz_requestUnlearning_ExcludesTheSubjectFromLaterQuorums(uint8 nSeed, uint8 subjectSeed) public {
        uint256 n = bound(nSeed, 2, 10);
        uint256 subject = bound(subjectSeed, 0, n - 1);
        uint256 runId = openRun(n, 10_000, 1);
        vm.prank(governance);
        runs.requestUnlearning(runId, member(subject), 0, bytes32(0));
        for (uint256 i = 0; i < n; ++i) {
            if (i != subject) submit(runId, 0, i);
        }
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        for (uint256 i = 0; i < n; ++i) {
            if (i != subject) vote(runId, 0, i, MERGED, bytes32(0));
        }
        // round 0's eligible set was fixed before the ban: n - 1 of n votes do not reach a 100 % quorum
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Open, "round 0 needs all n");
        vm.roll(runs.roundInfo(runId, 0).voteEnd);
        runs.closeFailedRound(runId, 0);
        assertEq(runs.roundInfo(runId, 1).eligible, n - 1, "round 1 leaves the subject out");
        for (uint256 i = 0; i < n; ++i) {
            if (i != subject) submit(runId, 1, i);
        }
        for (uint256 i = 0; i < n; ++i) {
            if (i != subject) vote(runId, 1, i, MERGED, bytes32(0));
        }
        assertTrue(status(runId, 1) == IRuns.RoundStatus.Finalized, "n - 1 votes are all of round 1");
    }
}

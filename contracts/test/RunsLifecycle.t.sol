// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../src/interfaces/IRuns.sol";
import {RunsFixture} from "./utils/RunsFixture.sol";
import {Vm} from "./utils/Test.sol";

/// @notice Late votes (a vote on a finalised round is recorded, counted nowhere) and run completion (the
/// `rounds`-th finalised round completes the run; nothing opens after it).
contract RunsLifecycleTest is RunsFixture {
    bytes32 internal constant OTHER = keccak256("other merge");

    /// @dev An open run of n members with `rounds` rounds, at the first block of round 0.
    function boundedRun(uint256 n, uint32 rounds) internal returns (uint256 runId) {
        IRuns.RunParams memory p = params(6_666, 1, IRuns.Admission.Open);
        p.rounds = rounds;
        runId = runs.createRun(p);
        for (uint256 i = 0; i < n; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        vm.roll(block.number + 5);
    }

    /// @dev Every one of n members submits `round`; members 0..quorum-1 vote MERGED (finalising it).
    function finaliseRound(uint256 runId, uint256 round, uint256 n, uint256 voters) internal {
        for (uint256 i = 0; i < n; ++i) {
            submit(runId, round, i);
        }
        for (uint256 i = 0; i < voters; ++i) {
            vote(runId, round, i, MERGED, bytes32(0));
        }
    }

    // ---- late votes ----

    function test_vote_LateVoteIsRecordedWithoutChangingTheRound() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        IRuns.RoundView memory before = runs.roundInfo(runId, 0);
        assertTrue(before.status == IRuns.RoundStatus.Finalized, "finalised by 2 of 3");

        vm.recordLogs();
        vote(runId, 0, 2, OTHER, bytes32(0));

        Vm.Log[] memory late = vm.getRecordedLogs();
        assertEq(late.length, 1, "one event");
        assertEq(late[0].topics[0], IRuns.LateVoteCast.selector, "LateVoteCast");
        assertEq(late[0].topics.length, 4, "runId, round and voter indexed");
        assertEq(late[0].topics[3], bytes32(uint256(uint160(member(2)))), "voter");
        (bytes32 merged,, bytes32 setHash, bool agrees) = abi.decode(late[0].data, (bytes32, string, bytes32, bool));
        assertEq(merged, OTHER, "the late vote's merged hash");
        assertEq(setHash, bytes32(0), "its included set");
        assertTrue(!agrees, "disagrees with the finalised result");
        IRuns.RoundView memory afterwards = runs.roundInfo(runId, 0);
        assertTrue(afterwards.status == IRuns.RoundStatus.Finalized, "status unchanged");
        assertEq(afterwards.mergedSha256, MERGED, "result unchanged");
        assertEq(afterwards.closedBlock, before.closedBlock, "closed block unchanged");
        assertEq(runs.votesFor(runId, 0, OTHER, MERGED_CID, bytes32(0)), 0, "a late vote is not tallied");
        assertEq(runs.votesFor(runId, 0, MERGED, MERGED_CID, bytes32(0)), 2, "the quorum's tally unchanged");
        assertEq(runs.runInfo(runId).currentRound, 1, "the next round stays open");
        assertEq(runs.roundInfo(runId, 1).submissions, 0, "nothing counted in the next round");
    }

    function test_vote_LateVoteAgreesWithTheFinalisedResult() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.expectEmit(true, true, true, true, address(runs));
        emit IRuns.LateVoteCast(runId, 0, member(2), MERGED, "bafyothercid", bytes32(0), true);
        vm.prank(member(2));
        runs.vote(runId, 0, MERGED, "bafyothercid", bytes32(0)); // same state, another CID: agrees
    }

    function test_vote_LateVoteThenTheNextRoundsVote() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        vote(runId, 0, 2, OTHER, bytes32(0));
        finaliseRound(runId, 1, 3, 0);
        vote(runId, 1, 2, MERGED, bytes32(0)); // the late vote on round 0 does not count as a round-1 vote
        assertEq(runs.votesFor(runId, 1, MERGED, MERGED_CID, bytes32(0)), 1, "round 1 vote counted");
    }

    function test_vote_LateVoteAcceptedForVoteBlocksAfterFinalisation() public {
        uint256 runId = openRun(3, 6_666, 1);
        submit(runId, 0, 0);
        vm.roll(runs.roundInfo(runId, 0).voteEnd - 1); // quorum in the vote window's last block
        vote(runId, 0, 0, MERGED, bytes32(0));
        vote(runId, 0, 1, MERGED, bytes32(0));
        uint64 closed = runs.roundInfo(runId, 0).closedBlock;
        vm.roll(closed + VOTE_BLOCKS - 1); // past voteEnd, inside closedBlock + voteBlocks
        vote(runId, 0, 2, OTHER, bytes32(0));
        assertTrue(runs.roundInfo(runId, 0).status == IRuns.RoundStatus.Finalized, "still finalised");
    }

    function test_vote_RevertWhen_LateVoteAfterTheLateWindow() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2); // finalised early, before the submit window ended
        uint64 lateEnd = runs.roundInfo(runId, 0).voteEnd; // > closedBlock + voteBlocks here
        vm.roll(lateEnd);
        vm.prank(member(2));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsVoteWindowClosed.selector, runId, uint256(0), lateEnd));
        runs.vote(runId, 0, OTHER, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_LateVoteTwice() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        vote(runId, 0, 2, OTHER, bytes32(0));
        vm.prank(member(2));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadyVoted.selector, runId, uint256(0), member(2)));
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_LateVoteByAQuorumVoter() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadyVoted.selector, runId, uint256(0), member(0)));
        runs.vote(runId, 0, OTHER, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_LateVoteAfterVotingInALaterRound() public {
        uint256 runId = openRun(3, 6_666, 1);
        finaliseRound(runId, 0, 3, 2);
        submit(runId, 1, 0);
        submit(runId, 1, 1);
        submit(runId, 1, 2);
        vote(runId, 1, 2, OTHER, bytes32(0)); // round 1's vote first
        vm.prank(member(2));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsLaterRoundVoted.selector, runId, uint256(0), member(2), uint256(1))
        );
        runs.vote(runId, 0, OTHER, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_LateVoteByAMemberOutsideTheEligibleSet() public {
        uint256 runId = openRun(3, 6_666, 1);
        vm.prank(member(5));
        runs.join(runId); // after round 0 opened
        finaliseRound(runId, 0, 3, 2);
        vm.prank(member(5));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotEligible.selector, runId, uint256(0), member(5)));
        runs.vote(runId, 0, OTHER, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_LateVoteOnAFailedRound() public {
        uint256 runId = openRun(3, 6_666, 1);
        vm.roll(runs.roundInfo(runId, 0).voteEnd);
        runs.closeFailedRound(runId, 0);
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsRoundClosed.selector, runId, uint256(0), IRuns.RoundStatus.Failed)
        );
        runs.vote(runId, 0, OTHER, MERGED_CID, bytes32(0));
    }

    // ---- run completion ----

    function test_finalise_LastRoundCompletesTheRun() public {
        uint256 runId = boundedRun(3, 2);
        finaliseRound(runId, 0, 3, 2);
        IRuns.RunView memory active = runs.runInfo(runId);
        assertTrue(active.status == IRuns.RunStatus.Active, "active after round 0 of 2");
        assertEq(active.rounds, 2, "rounds");
        assertEq(active.finalizedRounds, 1, "one finalised");

        for (uint256 i = 0; i < 3; ++i) {
            submit(runId, 1, i);
        }
        vote(runId, 1, 0, OTHER, bytes32(0));
        vm.expectEmit(true, false, false, true, address(runs));
        emit IRuns.RunCompleted(runId, 2, 1, OTHER);
        vote(runId, 1, 1, OTHER, bytes32(0));

        IRuns.RunView memory done = runs.runInfo(runId);
        assertTrue(done.status == IRuns.RunStatus.Completed, "completed");
        assertEq(done.finalizedRounds, 2, "two finalised");
        assertEq(done.currentRound, 1, "currentRound stays on the last round");
        assertTrue(status(runId, 1) == IRuns.RoundStatus.Finalized, "last round finalised");
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundNotOpen.selector, runId, uint256(2), uint256(1)));
        runs.roundInfo(runId, 2); // no round 2 was opened
    }

    function test_finalise_FailedRoundsAreRetriedUntilTheLastFinalises() public {
        uint256 runId = boundedRun(3, 1);
        vm.roll(runs.roundInfo(runId, 0).voteEnd);
        runs.closeFailedRound(runId, 0);
        assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Active, "a failed round does not count");
        assertEq(runs.runInfo(runId).currentRound, 1, "round 1 retries");
        finaliseRound(runId, 1, 3, 1);
        vm.expectEmit(true, false, false, true, address(runs));
        emit IRuns.RunCompleted(runId, 1, 1, MERGED);
        vote(runId, 1, 1, MERGED, bytes32(0));
        assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Completed, "completed by round 1");
    }

    function test_openEndedRun_NeverCompletes() public {
        uint256 runId = openRun(1, 6_666, 1);
        for (uint256 r = 0; r < 3; ++r) {
            finaliseRound(runId, r, 1, 1);
        }
        IRuns.RunView memory info = runs.runInfo(runId);
        assertTrue(info.status == IRuns.RunStatus.Active, "rounds = 0: open-ended");
        assertEq(info.finalizedRounds, 3, "finalised rounds counted");
        assertEq(info.currentRound, 3, "round 3 open");
    }

    function test_lateVote_OnTheLastRoundOfACompletedRun() public {
        uint256 runId = boundedRun(3, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.expectEmit(true, true, true, true, address(runs));
        emit IRuns.LateVoteCast(runId, 0, member(2), OTHER, MERGED_CID, bytes32(0), false);
        vote(runId, 0, 2, OTHER, bytes32(0));
        assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Completed, "still completed");
    }

    function test_submitUpdate_RevertWhen_RunCompleted() public {
        uint256 runId = boundedRun(3, 1);
        finaliseRound(runId, 0, 3, 2);
        bytes memory reason = abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, uint32(1), uint256(0));
        vm.prank(member(0));
        vm.expectRevert(reason);
        runs.submitUpdate(runId, 1, MERGED, "bafy", 1); // the round past the last
        vm.prank(member(0));
        vm.expectRevert(reason);
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1); // the finalised last round itself
    }

    function test_vote_RevertWhen_RunCompleted() public {
        uint256 runId = boundedRun(3, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.prank(member(2));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, uint32(1), uint256(0)));
        runs.vote(runId, 1, MERGED, MERGED_CID, bytes32(0));
    }

    function test_closeFailedRound_RevertWhen_RunCompleted() public {
        uint256 runId = boundedRun(3, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.roll(block.number + 100);
        bytes memory reason = abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, uint32(1), uint256(0));
        vm.expectRevert(reason);
        runs.closeFailedRound(runId, 0);
        vm.expectRevert(reason);
        runs.closeFailedRound(runId, 1);
    }

    function test_join_RevertWhen_RunCompleted() public {
        uint256 runId = boundedRun(3, 1);
        finaliseRound(runId, 0, 3, 2);
        vm.prank(member(7));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, uint32(1), uint256(0)));
        runs.join(runId);
    }

    function test_completedRun_StillRecordsContributionsAndTakesUnlearningRequests() public {
        uint256 runId = boundedRun(3, 1);
        (address[] memory accounts, bytes32[] memory hashes, bytes32 setHash) = includedSet(0, 3);
        for (uint256 i = 0; i < 3; ++i) {
            submit(runId, 0, i);
        }
        vote(runId, 0, 0, MERGED, setHash);
        vote(runId, 0, 1, MERGED, setHash);
        assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Completed, "completed");
        runs.recordContributions(runId, 0, accounts, hashes);
        assertEq(runs.memberInfo(runId, member(2)).acceptedContributions, 1, "contributions recorded");
        vm.prank(member(1));
        uint256 requestId = runs.requestUnlearning(runId, member(1), 0, bytes32(0));
        assertTrue(runs.unlearningRequest(requestId).status == IRuns.RequestStatus.Pending, "request filed");
    }

    function testFuzz_completion_AfterExactlyRoundsFinalisations(uint8 roundsSeed, uint8 failSeed) public {
        uint32 rounds = uint32(1 + roundsSeed % 4);
        uint256 runId = boundedRun(1, rounds);
        uint256 round = 0;
        for (uint32 done = 0; done < rounds; ++round) {
            assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Active, "active before the last");
            if ((failSeed >> (round % 8)) & 1 == 1 && round < 8) {
                vm.roll(runs.roundInfo(runId, round).voteEnd);
                runs.closeFailedRound(runId, round);
            } else {
                finaliseRound(runId, round, 1, 1);
                ++done;
            }
        }
        IRuns.RunView memory info = runs.runInfo(runId);
        assertTrue(info.status == IRuns.RunStatus.Completed, "completed");
        assertEq(info.finalizedRounds, rounds, "finalised rounds");
        assertEq(info.currentRound, round - 1, "the last round is current");
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, rounds, uint256(round - 1))
        );
        runs.submitUpdate(runId, round, MERGED, "bafy", 1);
    }
}

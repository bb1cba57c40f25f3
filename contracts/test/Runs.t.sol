// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../src/interfaces/IRuns.sol";
import {RunsFixture} from "./utils/RunsFixture.sol";

/// @notice Unit tests of `Runs`: the round life cycle and every custom error.
contract RunsTest is RunsFixture {
    // ---- createRun ----

    function test_createRun_OpensRoundZeroAtStartBlock() public {
        IRuns.RunParams memory p = params(6_666, 1, IRuns.Admission.Open);
        uint256 runId = runs.createRun(p);
        assertEq(runId, 1, "first run id");
        assertEq(runs.runCount(), 1, "runCount");
        IRuns.RoundView memory r0 = runs.roundInfo(runId, 0);
        assertEq(r0.startBlock, p.startBlock, "round 0 start");
        assertEq(r0.submitEnd, p.startBlock + SUBMIT_BLOCKS, "submit end");
        assertEq(r0.voteEnd, p.startBlock + SUBMIT_BLOCKS + VOTE_BLOCKS, "vote end");
        assertTrue(runs.runInfo(runId).governance == governance, "governance");
    }

    function test_createRun_RevertWhen_QuorumZero() public {
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsInvalidQuorum.selector, uint16(0)));
        runs.createRun(params(0, 1, IRuns.Admission.Open));
    }

    function test_createRun_RevertWhen_QuorumAboveAll() public {
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsInvalidQuorum.selector, uint16(10_001)));
        runs.createRun(params(10_001, 1, IRuns.Admission.Open));
    }

    function test_createRun_RevertWhen_WindowEmpty() public {
        IRuns.RunParams memory p = params(6_666, 1, IRuns.Admission.Open);
        p.voteBlocks = 0;
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsInvalidWindow.selector, SUBMIT_BLOCKS, uint32(0)));
        runs.createRun(p);
    }

    function test_createRun_RevertWhen_StartInPast() public {
        IRuns.RunParams memory p = params(6_666, 1, IRuns.Admission.Open);
        p.startBlock = uint64(block.number - 1);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsStartInPast.selector, p.startBlock, block.number));
        runs.createRun(p);
    }

    function test_createRun_RevertWhen_SpecHashZero() public {
        IRuns.RunParams memory p = params(6_666, 1, IRuns.Admission.Open);
        p.specSha256 = bytes32(0);
        vm.expectRevert(IRuns.RunsZeroHash.selector);
        runs.createRun(p);
    }

    function test_runInfo_RevertWhen_UnknownRun() public {
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsUnknownRun.selector, uint256(7)));
        runs.runInfo(7);
    }

    // ---- admission ----

    function test_setAllowed_RevertWhen_NotGovernance() public {
        uint256 runId = runs.createRun(params(6_666, 1, IRuns.Admission.Allowlist));
        address[] memory accounts = new address[](1);
        accounts[0] = member(0);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotGovernance.selector, runId, member(0)));
        runs.setAllowed(runId, accounts, true);
    }

    function test_join_RevertWhen_NotAllowed() public {
        uint256 runId = runs.createRun(params(6_666, 1, IRuns.Admission.Allowlist));
        address[] memory accounts = new address[](1);
        accounts[0] = member(0);
        vm.prank(governance);
        runs.setAllowed(runId, accounts, true);
        vm.prank(member(0));
        runs.join(runId);
        vm.prank(member(1));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotAllowed.selector, runId, member(1)));
        runs.join(runId);
    }

    function test_join_RevertWhen_AlreadyMember() public {
        uint256 runId = openRun(1, 6_666, 1);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadyMember.selector, runId, member(0)));
        runs.join(runId);
    }

    // ---- submit ----

    function test_submitUpdate_RevertWhen_NotMember() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(member(9));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotMember.selector, runId, member(9)));
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_JoinedAfterTheRoundOpened() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(member(2));
        runs.join(runId); // after round 0's start: not in its eligible set
        vm.prank(member(2));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotEligible.selector, runId, uint256(0), member(2)));
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
        assertEq(runs.roundInfo(runId, 0).eligible, 2, "eligible stays the snapshot");
    }

    function test_submitUpdate_RevertWhen_MemberBanned() public {
        uint256 runId = openRun(3, 6_666, 1);
        vm.prank(member(0));
        runs.requestUnlearning(runId, member(0), 0, bytes32(0));
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsMemberBanned.selector, runId, member(0)));
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_RoundNotOpenYet() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundNotOpen.selector, runId, uint256(3), uint256(0)));
        runs.submitUpdate(runId, 3, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_RoundClosed() public {
        uint256 runId = openRun(1, 6_666, 1);
        submit(runId, 0, 0);
        vote(runId, 0, 0, MERGED, bytes32(0));
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsRoundClosed.selector, runId, uint256(0), IRuns.RoundStatus.Finalized)
        );
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_WindowNotOpen() public {
        uint256 runId = runs.createRun(params(6_666, 1, IRuns.Admission.Open));
        vm.prank(member(0));
        runs.join(runId);
        uint64 start = runs.roundInfo(runId, 0).startBlock;
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsSubmitWindowNotOpen.selector, runId, uint256(0), start));
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_WindowClosed() public {
        uint256 runId = openRun(2, 6_666, 1);
        uint64 submitEnd = runs.roundInfo(runId, 0).submitEnd;
        vm.roll(submitEnd);
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsSubmitWindowClosed.selector, runId, uint256(0), submitEnd)
        );
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_AlreadySubmitted() public {
        uint256 runId = openRun(2, 6_666, 1);
        submit(runId, 0, 0);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadySubmitted.selector, runId, uint256(0), member(0)));
        runs.submitUpdate(runId, 0, MERGED, "bafy", 1);
    }

    function test_submitUpdate_RevertWhen_HashZero() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(member(0));
        vm.expectRevert(IRuns.RunsZeroHash.selector);
        runs.submitUpdate(runId, 0, bytes32(0), "bafy", 1);
    }

    // ---- vote ----

    function test_vote_FinalisesAtQuorumAndOpensTheNextRound() public {
        uint256 runId = openRun(3, 6_666, 1);
        for (uint256 i = 0; i < 3; ++i) submit(runId, 0, i);
        // every eligible member submitted: voting opens early
        vote(runId, 0, 0, MERGED, bytes32(uint256(1)));
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Open, "one vote of a quorum of two");
        vote(runId, 0, 1, MERGED, bytes32(uint256(1)));
        IRuns.RoundView memory r0 = runs.roundInfo(runId, 0);
        assertTrue(r0.status == IRuns.RoundStatus.Finalized, "finalised at quorum");
        assertEq(r0.mergedSha256, MERGED, "merged hash");
        assertEq(runs.runInfo(runId).currentRound, 1, "next round opened");
        assertEq(runs.roundInfo(runId, 1).startBlock, block.number, "round 1 opens in the finalising block");
    }

    function test_vote_RevertWhen_WindowNotOpen() public {
        uint256 runId = openRun(3, 6_666, 1);
        submit(runId, 0, 0); // two members have not submitted: no early vote
        uint64 submitEnd = runs.roundInfo(runId, 0).submitEnd;
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsVoteWindowNotOpen.selector, runId, uint256(0), submitEnd));
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_WindowClosed() public {
        uint256 runId = openRun(3, 6_666, 1);
        submit(runId, 0, 0);
        uint64 voteEnd = runs.roundInfo(runId, 0).voteEnd;
        vm.roll(voteEnd);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsVoteWindowClosed.selector, runId, uint256(0), voteEnd));
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_TooFewUpdates() public {
        uint256 runId = openRun(3, 6_666, 2);
        submit(runId, 0, 0);
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsTooFewUpdates.selector, runId, uint256(0), uint32(1), uint32(2))
        );
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_AlreadyVoted() public {
        uint256 runId = openRun(3, 10_000, 1);
        for (uint256 i = 0; i < 3; ++i) submit(runId, 0, i);
        vote(runId, 0, 0, MERGED, bytes32(0));
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadyVoted.selector, runId, uint256(0), member(0)));
        runs.vote(runId, 0, keccak256("other"), MERGED_CID, bytes32(0));
    }

    function test_vote_RevertWhen_HashZero() public {
        uint256 runId = openRun(1, 6_666, 1);
        submit(runId, 0, 0);
        vm.prank(member(0));
        vm.expectRevert(IRuns.RunsZeroHash.selector);
        runs.vote(runId, 0, bytes32(0), MERGED_CID, bytes32(0));
    }

    function test_vote_SplitVotesDoNotFinalise() public {
        uint256 runId = openRun(3, 6_666, 1);
        for (uint256 i = 0; i < 3; ++i) submit(runId, 0, i);
        vote(runId, 0, 0, MERGED, bytes32(0));
        vote(runId, 0, 1, keccak256("other"), bytes32(0));
        vote(runId, 0, 2, MERGED, bytes32(uint256(1))); // same model, other included set: a third result
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Open, "no result reached quorum");
        assertEq(runs.votesFor(runId, 0, MERGED, MERGED_CID, bytes32(0)), 1, "tally of the first result");
    }

    // ---- closeFailedRound ----

    function test_closeFailedRound_RevertWhen_RoundStillOpen() public {
        uint256 runId = openRun(2, 6_666, 1);
        submit(runId, 0, 0);
        uint64 voteEnd = runs.roundInfo(runId, 0).voteEnd;
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundStillOpen.selector, runId, uint256(0), voteEnd));
        runs.closeFailedRound(runId, 0);
    }

    function test_closeFailedRound_EarlyWhenTooFewUpdatesAtSubmitEnd() public {
        uint256 runId = openRun(2, 6_666, 2);
        submit(runId, 0, 0);
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        runs.closeFailedRound(runId, 0);
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Failed, "failed");
        assertEq(runs.runInfo(runId).currentRound, 1, "next round opened");
    }

    // ---- recordContributions ----

    function _finalisedWithSet(uint256 n) internal returns (uint256 runId, address[] memory a, bytes32[] memory h) {
        runId = openRun(n, 10_000, 1);
        bytes32 setHash;
        (a, h, setHash) = includedSet(0, n);
        for (uint256 i = 0; i < n; ++i) submit(runId, 0, i);
        for (uint256 i = 0; i < n; ++i) vote(runId, 0, i, MERGED, setHash);
    }

    function test_recordContributions_CountsEachIncludedMember() public {
        (uint256 runId, address[] memory a, bytes32[] memory h) = _finalisedWithSet(3);
        runs.recordContributions(runId, 0, a, h);
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(runs.memberInfo(runId, member(i)).acceptedContributions, 1, "accepted");
        }
        assertTrue(runs.roundInfo(runId, 0).contributionsRecorded, "recorded");
    }

    function test_recordContributions_RevertWhen_RoundNotFinalized() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundNotFinalized.selector, runId, uint256(0)));
        runs.recordContributions(runId, 0, new address[](0), new bytes32[](0));
    }

    function test_recordContributions_RevertWhen_AlreadyRecorded() public {
        (uint256 runId, address[] memory a, bytes32[] memory h) = _finalisedWithSet(2);
        runs.recordContributions(runId, 0, a, h);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsContributionsAlreadyRecorded.selector, runId, uint256(0)));
        runs.recordContributions(runId, 0, a, h);
    }

    function test_recordContributions_RevertWhen_SetMismatch() public {
        (uint256 runId, address[] memory a, bytes32[] memory h) = _finalisedWithSet(2);
        bytes32 expected = keccak256(abi.encode(a, h));
        h[0] = keccak256("tampered");
        bytes32 actual = keccak256(abi.encode(a, h));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsIncludedSetMismatch.selector, runId, uint256(0), expected, actual)
        );
        runs.recordContributions(runId, 0, a, h);
    }

    function test_recordContributions_RevertWhen_LengthsDiffer() public {
        (uint256 runId, address[] memory a,) = _finalisedWithSet(2);
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsIncludedSetMalformed.selector, runId, uint256(0), uint256(2))
        );
        runs.recordContributions(runId, 0, a, new bytes32[](1));
    }

    function test_recordContributions_RevertWhen_NotAscending() public {
        uint256 runId = openRun(2, 10_000, 1);
        (address[] memory a, bytes32[] memory h,) = includedSet(0, 2);
        (a[0], a[1]) = (a[1], a[0]);
        (h[0], h[1]) = (h[1], h[0]);
        bytes32 setHash = keccak256(abi.encode(a, h));
        for (uint256 i = 0; i < 2; ++i) submit(runId, 0, i);
        for (uint256 i = 0; i < 2; ++i) vote(runId, 0, i, MERGED, setHash);
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsIncludedSetMalformed.selector, runId, uint256(0), uint256(1))
        );
        runs.recordContributions(runId, 0, a, h);
    }

    function test_recordContributions_RevertWhen_IncludedMemberDidNotSubmit() public {
        uint256 runId = openRun(3, 6_666, 1);
        (address[] memory a, bytes32[] memory h, bytes32 setHash) = includedSet(0, 3);
        submit(runId, 0, 0);
        submit(runId, 0, 1); // member 2 never submits, yet a colluding quorum votes a set naming it
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        vote(runId, 0, 0, MERGED, setHash);
        vote(runId, 0, 1, MERGED, setHash);
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsIncludedNotSubmitter.selector, runId, uint256(0), member(2))
        );
        runs.recordContributions(runId, 0, a, h);
    }

    // ---- unlearning ----

    function test_requestUnlearning_BansTheSubjectAndShrinksLaterQuorums() public {
        uint256 runId = openRun(3, 10_000, 1);
        vm.prank(member(2));
        uint256 requestId = runs.requestUnlearning(runId, member(2), 0, keccak256("gdpr"));
        assertTrue(runs.memberInfo(runId, member(2)).banned, "banned");
        assertEq(runs.unlearningRequest(requestId).eligible, 2, "request eligible excludes the subject");
        assertEq(runs.runInfo(runId).bannedCount, 1, "bannedCount");
    }

    function test_requestUnlearning_RevertWhen_NotSubjectOrGovernance() public {
        uint256 runId = openRun(3, 6_666, 1);
        vm.prank(member(0));
        vm.expectRevert(
            abi.encodeWithSelector(IRuns.RunsNotSubjectOrGovernance.selector, runId, member(1), member(0))
        );
        runs.requestUnlearning(runId, member(1), 0, bytes32(0));
    }

    function test_requestUnlearning_RevertWhen_SubjectNotMember() public {
        uint256 runId = openRun(1, 6_666, 1);
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotMember.selector, runId, member(5)));
        runs.requestUnlearning(runId, member(5), 0, bytes32(0));
    }

    function test_requestUnlearning_RevertWhen_FromRoundInFuture() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsInvalidFromRound.selector, runId, uint32(4), uint32(0)));
        runs.requestUnlearning(runId, member(0), 4, bytes32(0));
    }

    function test_requestUnlearning_RevertWhen_AlreadyBanned() public {
        uint256 runId = openRun(2, 6_666, 1);
        vm.prank(governance);
        runs.requestUnlearning(runId, member(0), 0, bytes32(0));
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsMemberBanned.selector, runId, member(0)));
        runs.requestUnlearning(runId, member(0), 0, bytes32(0));
    }

    function _request(uint256 n) internal returns (uint256 runId, uint256 requestId) {
        runId = openRun(n, 6_666, 1);
        vm.prank(governance);
        requestId = runs.requestUnlearning(runId, member(n - 1), 0, bytes32(0));
    }

    function test_voteUnlearning_FulfilsAtQuorum() public {
        (, uint256 requestId) = _request(4); // 3 eligible, quorum 2
        vm.prank(member(0));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
        vm.prank(member(1));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
        IRuns.RequestView memory req = runs.unlearningRequest(requestId);
        assertTrue(req.status == IRuns.RequestStatus.Fulfilled, "fulfilled");
        assertEq(req.resultSha256, MERGED, "result");
    }

    function test_voteUnlearning_RevertWhen_UnknownRequest() public {
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsUnknownRequest.selector, uint256(9)));
        runs.voteUnlearning(9, MERGED, MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_NotPending() public {
        (, uint256 requestId) = _request(2); // 1 eligible, quorum 1
        vm.prank(member(0));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRequestNotPending.selector, requestId));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_SubjectVotes() public {
        (uint256 runId, uint256 requestId) = _request(3);
        vm.prank(member(2));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsMemberBanned.selector, runId, member(2)));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_JoinedAfterTheRequest() public {
        (uint256 runId, uint256 requestId) = _request(3);
        vm.prank(member(7));
        runs.join(runId);
        vm.prank(member(7));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotEligibleForRequest.selector, requestId, member(7)));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_AlreadyVoted() public {
        (, uint256 requestId) = _request(4);
        vm.prank(member(0));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
        vm.prank(member(0));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsAlreadyVotedUnlearning.selector, requestId, member(0)));
        runs.voteUnlearning(requestId, keccak256("other"), MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_NotMember() public {
        (uint256 runId, uint256 requestId) = _request(3);
        vm.prank(member(8));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotMember.selector, runId, member(8)));
        runs.voteUnlearning(requestId, MERGED, MERGED_CID);
    }

    function test_voteUnlearning_RevertWhen_HashZero() public {
        (, uint256 requestId) = _request(3);
        vm.prank(member(0));
        vm.expectRevert(IRuns.RunsZeroHash.selector);
        runs.voteUnlearning(requestId, bytes32(0), MERGED_CID);
    }
}

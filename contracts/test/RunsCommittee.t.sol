// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../src/interfaces/IRuns.sol";
import {RunsFixture} from "./utils/RunsFixture.sol";

/// @notice Committee runs: `committeeOf`, `finalizeCommitteeRound` and every one of its custom errors, the
/// EIP-712 digest views, and the old paths refused on committee runs.
contract RunsCommitteeTest is RunsFixture {
    uint256 internal constant N_HALF = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    string internal constant MANIFEST_CID = "bafymanifest";

    // ---- helpers ----

    function committeeParams(uint32 k, uint16 quorumBps, uint32 minUpdates)
        internal
        view
        returns (IRuns.RunParams memory p)
    {
        p = params(quorumBps, minUpdates, IRuns.Admission.Open);
        p.committeeSize = k;
    }

    /// @dev A committee run joined by members 0..n-1, at the first block of round 0's vote window.
    function openCommitteeRun(uint256 n, uint32 k, uint16 quorumBps, uint32 minUpdates)
        internal
        returns (uint256 runId)
    {
        runId = runs.createRun(committeeParams(k, quorumBps, minUpdates));
        for (uint256 i = 0; i < n; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
    }

    function bitmapOf(uint256[] memory indices) internal pure returns (uint256[] memory words) {
        uint256 count = 0;
        for (uint256 j = 0; j < indices.length; ++j) {
            if ((indices[j] >> 8) + 1 > count) count = (indices[j] >> 8) + 1;
        }
        words = new uint256[](count);
        for (uint256 j = 0; j < indices.length; ++j) {
            words[indices[j] >> 8] |= uint256(1) << (indices[j] & 255);
        }
    }

    function firstN(uint256 n) internal pure returns (uint256[] memory indices) {
        indices = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            indices[i] = i;
        }
    }

    function resultOf(uint256 runId, uint256 round, uint256[] memory bitmap)
        internal
        pure
        returns (IRuns.CommitteeResult memory)
    {
        return IRuns.CommitteeResult({
            runId: runId,
            round: round,
            mergedSha256: MERGED,
            mergedCid: MERGED_CID,
            includedSetHash: keccak256(abi.encode("set", round)),
            manifestCid: MANIFEST_CID,
            includedBitmap: bitmap
        });
    }

    function signature(IRuns.CommitteeResult memory result, uint256 index) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(index + 1, runs.committeeVoteDigest(result));
        return abi.encodePacked(r, s, v);
    }

    /// @dev Signatures of the first `count` committee members (all of them when count exceeds the committee).
    function committeeVotes(IRuns.CommitteeResult memory result, uint256 count)
        internal
        view
        returns (uint32[] memory signers, bytes[] memory signatures)
    {
        uint32[] memory committee = runs.committeeOf(result.runId, result.round);
        if (count > committee.length) count = committee.length;
        signers = new uint32[](count);
        signatures = new bytes[](count);
        for (uint256 j = 0; j < count; ++j) {
            signers[j] = committee[j];
            signatures[j] = signature(result, committee[j]);
        }
    }

    function finalize(IRuns.CommitteeResult memory result, uint256 count) internal {
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, count);
        runs.finalizeCommitteeRound(result, signers, signatures);
    }

    function notOnCommittee(uint256 runId, uint256 round, uint256 n) internal view returns (uint32) {
        uint32[] memory committee = runs.committeeOf(runId, round);
        for (uint32 i = 0; i < n; ++i) {
            bool found = false;
            for (uint256 j = 0; j < committee.length; ++j) {
                if (committee[j] == i) found = true;
            }
            if (!found) return i;
        }
        revert("everyone is on the committee");
    }

    function expectFinalizeRevert(
        IRuns.CommitteeResult memory result,
        uint32[] memory signers,
        bytes[] memory signatures,
        bytes memory reason
    ) internal {
        vm.expectRevert(reason);
        runs.finalizeCommitteeRound(result, signers, signatures);
    }

    // ---- happy paths ----

    function test_finalizeCommitteeRound_FinalisesCountsContributionsAndOpensTheNextRound() public {
        uint256 runId = openCommitteeRun(8, 4, 6_666, 1);
        uint256[] memory included = new uint256[](5);
        (included[0], included[1], included[2], included[3], included[4]) = (0, 1, 2, 5, 7);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(included));
        assertEq(runs.roundInfo(runId, 0).quorum, 3, "committee quorum: ceil(0.6666 * 4)");
        assertEq(runs.runInfo(runId).committeeSize, 4, "runInfo.committeeSize");

        finalize(result, 3);

        IRuns.RoundView memory r0 = runs.roundInfo(runId, 0);
        assertTrue(r0.status == IRuns.RoundStatus.Finalized, "finalised");
        assertEq(r0.submissions, 5, "submissions = included count");
        assertEq(r0.closedBlock, block.number, "closed now");
        assertEq(runs.runInfo(runId).currentRound, 1, "next round open");
        assertEq(runs.roundInfo(runId, 1).startBlock, block.number, "round 1 starts in the finalising block");
        assertEq(runs.memberInfo(runId, member(5)).acceptedContributions, 1, "included member counted");
        assertEq(runs.memberInfo(runId, member(3)).acceptedContributions, 0, "excluded member not counted");

        vm.roll(runs.roundInfo(runId, 1).submitEnd);
        finalize(resultOf(runId, 1, bitmapOf(firstN(6))), 4);
        IRuns.MemberView memory m5 = runs.memberInfo(runId, member(5));
        assertEq(m5.acceptedContributions, 2, "two rounds counted");
        assertEq(m5.submittedRounds, 2, "submittedRounds follows the included rounds");
        assertEq(m5.lastSubmittedRound, 1, "last included round");
        assertTrue(m5.hasSubmittedEver, "hasSubmittedEver");
        IRuns.MemberView memory m7 = runs.memberInfo(runId, member(7));
        assertEq(m7.acceptedContributions, 1, "member 7: round 0 only");
        assertEq(m7.lastSubmittedRound, 0, "member 7's last included round");
    }

    function test_finalizeCommitteeRound_EarlyWhenEveryEligibleMemberIsIncluded() public {
        uint256 runId = runs.createRun(committeeParams(3, 6_666, 1));
        for (uint256 i = 0; i < 5; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        vm.roll(runs.roundInfo(runId, 0).startBlock + 1);
        finalize(resultOf(runId, 0, bitmapOf(firstN(5))), 3);
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Finalized, "finalised before the submit window closed");
    }

    function test_committeeOf_IsEveryoneWhenTheCommitteeIsAtLeastTheMembers() public {
        uint256 runId = openCommitteeRun(3, 5, 6_666, 1);
        uint32[] memory committee = runs.committeeOf(runId, 0);
        assertEq(committee.length, 3, "min(k, snapshot)");
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(committee[i], i, "index order");
        }
        assertEq(runs.roundInfo(runId, 0).quorum, 2, "quorum of min(k, snapshot)");
    }

    function test_commitDigest_IsTheEip712DigestOfUpdateCommit() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("fedchain Runs"),
                keccak256("1"),
                block.chainid,
                address(runs)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("UpdateCommit(uint256 runId,uint256 round,bytes32 sha256,bytes32 cidHash,uint64 numSamples)"),
                uint256(1),
                uint256(2),
                bytes32(uint256(3)),
                keccak256("bafyupdate"),
                uint64(48)
            )
        );
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", domain, structHash));
        assertEq(runs.commitDigest(1, 2, bytes32(uint256(3)), keccak256("bafyupdate"), 48), expected, "digest");
    }

    function test_committeeVoteDigest_BindsEveryField() public view {
        IRuns.CommitteeResult memory a = resultOf(1, 0, bitmapOf(firstN(3)));
        bytes32 base = runs.committeeVoteDigest(a);
        IRuns.CommitteeResult memory b = resultOf(1, 0, bitmapOf(firstN(3)));
        b.manifestCid = "bafyother";
        assertTrue(runs.committeeVoteDigest(b) != base, "manifest");
        b = resultOf(1, 0, bitmapOf(firstN(2)));
        assertTrue(runs.committeeVoteDigest(b) != base, "bitmap");
        b = resultOf(1, 0, bitmapOf(firstN(3)));
        b.mergedCid = "bafyx";
        assertTrue(runs.committeeVoteDigest(b) != base, "merged cid");
        b = resultOf(1, 1, bitmapOf(firstN(3)));
        assertTrue(runs.committeeVoteDigest(b) != base, "round");
    }

    function test_closeFailedRound_CommitteeRunClosesOnlyAfterTheVoteWindow() public {
        uint256 runId = openCommitteeRun(4, 2, 6_666, 1);
        IRuns.RoundView memory r0 = runs.roundInfo(runId, 0);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundStillOpen.selector, runId, uint256(0), r0.voteEnd));
        runs.closeFailedRound(runId, 0);
        vm.roll(r0.voteEnd);
        runs.closeFailedRound(runId, 0);
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Failed, "failed after the vote window");
    }

    // ---- reverts ----

    function test_createRun_RevertWhen_CommitteeWindowsTooLong() public {
        IRuns.RunParams memory p = committeeParams(3, 6_666, 1);
        p.submitBlocks = 200;
        p.voteBlocks = 56;
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsInvalidWindow.selector, uint32(200), uint32(56)));
        runs.createRun(p);
        p.voteBlocks = 55;
        runs.createRun(p); // 255 blocks: blockhash(startBlock) is still readable at the last vote block
    }

    function test_finalizeCommitteeRound_RevertWhen_OrdinaryRun() public {
        uint256 runId = openRun(3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(3)));
        expectFinalizeRevert(
            result, new uint32[](0), new bytes[](0), abi.encodeWithSelector(IRuns.RunsNotCommitteeRun.selector, runId)
        );
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsNotCommitteeRun.selector, runId));
        runs.committeeOf(runId, 0);
    }

    function test_oldPaths_RevertWhen_CommitteeRun() public {
        uint256 runId = runs.createRun(committeeParams(3, 6_666, 1));
        vm.prank(member(0));
        runs.join(runId);
        vm.roll(runs.roundInfo(runId, 0).startBlock);
        bytes memory reason = abi.encodeWithSelector(IRuns.RunsCommitteeRun.selector, runId);
        vm.prank(member(0));
        vm.expectRevert(reason);
        runs.submitUpdate(runId, 0, keccak256("u"), "bafyupdate", 10);
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        vm.prank(member(0));
        vm.expectRevert(reason);
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
        vm.expectRevert(reason);
        runs.recordContributions(runId, 0, new address[](0), new bytes32[](0));
    }

    function test_finalizeCommitteeRound_LastRoundCompletesTheRun() public {
        IRuns.RunParams memory p = committeeParams(3, 6_666, 1);
        p.rounds = 1;
        uint256 runId = runs.createRun(p);
        for (uint256 i = 0; i < 4; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(4)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 2);
        vm.expectEmit(true, false, false, true, address(runs));
        emit IRuns.RunCompleted(runId, 1, 0, MERGED);
        runs.finalizeCommitteeRound(result, signers, signatures);
        assertTrue(runs.runInfo(runId).status == IRuns.RunStatus.Completed, "completed");
        assertEq(runs.runInfo(runId).finalizedRounds, 1, "one finalised round");
        // the last round's included members are counted although no round opens after it
        assertEq(runs.memberInfo(runId, member(2)).acceptedContributions, 1, "last round counted");
        assertEq(runs.memberInfo(runId, member(2)).submittedRounds, 1, "last round submitted");

        bytes memory completed = abi.encodeWithSelector(IRuns.RunsRunCompleted.selector, runId, uint32(1), uint256(0));
        expectFinalizeRevert(result, signers, signatures, completed);
        expectFinalizeRevert(resultOf(runId, 1, bitmapOf(firstN(4))), signers, signatures, completed);
        // no late votes in a committee run: `vote` stays refused after finalisation too
        vm.prank(member(3));
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsCommitteeRun.selector, runId));
        runs.vote(runId, 0, MERGED, MERGED_CID, bytes32(0));
    }

    function test_committeeOf_RevertWhen_NotDrawn() public {
        uint256 runId = runs.createRun(committeeParams(2, 6_666, 1));
        vm.prank(member(0));
        runs.join(runId);
        uint64 start = runs.roundInfo(runId, 0).startBlock;
        bytes memory reason = abi.encodeWithSelector(IRuns.RunsCommitteeNotDrawn.selector, runId, uint256(0));
        vm.expectRevert(reason); // before the start block
        runs.committeeOf(runId, 0);
        vm.roll(start);
        vm.expectRevert(reason); // in the start block: its hash is not known yet
        runs.committeeOf(runId, 0);
        vm.roll(start + 1);
        assertEq(runs.committeeOf(runId, 0).length, 1, "drawn once the start block is mined");
        vm.roll(start + 300);
        vm.expectRevert(reason); // hash no longer available
        runs.committeeOf(runId, 0);
        vm.expectRevert(abi.encodeWithSelector(IRuns.RunsRoundNotOpen.selector, runId, uint256(1), uint256(0)));
        runs.committeeOf(runId, 1);
    }

    function test_finalizeCommitteeRound_RevertWhen_VoteWindowClosed() public {
        uint256 runId = openCommitteeRun(4, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(4)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        uint64 voteEnd = runs.roundInfo(runId, 0).voteEnd;
        vm.roll(voteEnd);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsVoteWindowClosed.selector, runId, uint256(0), voteEnd)
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_VoteWindowNotOpen() public {
        uint256 runId = runs.createRun(committeeParams(3, 6_666, 1));
        for (uint256 i = 0; i < 4; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        IRuns.RoundView memory r0 = runs.roundInfo(runId, 0);
        vm.roll(r0.startBlock + 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(3))); // 3 of 4: not everyone
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsVoteWindowNotOpen.selector, runId, uint256(0), r0.submitEnd)
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_BitAtOrAboveSnapshot() public {
        uint256 runId = openCommitteeRun(4, 3, 6_666, 1);
        uint256[] memory included = new uint256[](2);
        (included[0], included[1]) = (1, 4); // index 4 does not exist (snapshot 4)
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(included));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsIncludedSetMalformed.selector, runId, uint256(0), uint256(4))
        );
        uint256[] memory far = new uint256[](2);
        (far[0], far[1]) = (0, 300); // a second word for a 4-member run
        result = resultOf(runId, 0, bitmapOf(far));
        (signers, signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsIncludedSetMalformed.selector, runId, uint256(0), uint256(300))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_TrailingZeroWord() public {
        uint256 runId = openCommitteeRun(4, 3, 6_666, 1);
        uint256[] memory bitmap = new uint256[](2);
        bitmap[0] = 0xF;
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmap);
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsIncludedSetMalformed.selector, runId, uint256(0), uint256(256))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_BannedMemberIncluded() public {
        uint256 runId = openCommitteeRun(5, 5, 6_000, 1);
        vm.prank(member(2));
        runs.requestUnlearning(runId, member(2), 0, keccak256("reason"));
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(4)));
        uint32[] memory signers = new uint32[](3);
        bytes[] memory signatures = new bytes[](3);
        (signers[0], signers[1], signers[2]) = (0, 1, 3);
        for (uint256 j = 0; j < 3; ++j) {
            signatures[j] = signature(result, signers[j]);
        }
        expectFinalizeRevert(
            result, signers, signatures, abi.encodeWithSelector(IRuns.RunsMemberBanned.selector, runId, member(2))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_BannedSigner() public {
        uint256 runId = openCommitteeRun(5, 5, 6_000, 1);
        vm.prank(member(2));
        runs.requestUnlearning(runId, member(2), 0, keccak256("reason"));
        uint256[] memory included = new uint256[](3);
        (included[0], included[1], included[2]) = (0, 1, 3);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(included));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 5);
        expectFinalizeRevert(
            result, signers, signatures, abi.encodeWithSelector(IRuns.RunsMemberBanned.selector, runId, member(2))
        );
        // without the banned member's signature the other four reach the quorum of 3 (60 % of 5)
        uint32[] memory others = new uint32[](4);
        bytes[] memory otherSignatures = new bytes[](4);
        (others[0], others[1], others[2], others[3]) = (0, 1, 3, 4);
        for (uint256 j = 0; j < 4; ++j) {
            otherSignatures[j] = signature(result, others[j]);
        }
        runs.finalizeCommitteeRound(result, others, otherSignatures);
        assertTrue(status(runId, 0) == IRuns.RoundStatus.Finalized, "finalised without the banned signer");
    }

    function test_finalizeCommitteeRound_RevertWhen_TooFewUpdates() public {
        uint256 runId = openCommitteeRun(5, 3, 6_666, 3);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(2)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsTooFewUpdates.selector, runId, uint256(0), uint32(2), uint32(3))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_SignersMalformed() public {
        uint256 runId = openCommitteeRun(6, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(6)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        // descending
        (signers[0], signers[1]) = (signers[1], signers[0]);
        (signatures[0], signatures[1]) = (signatures[1], signatures[0]);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsSignersMalformed.selector, runId, uint256(0), uint256(1))
        );
        // the same signer twice
        (signers, signatures) = committeeVotes(result, 3);
        signers[2] = signers[1];
        signatures[2] = signatures[1];
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsSignersMalformed.selector, runId, uint256(0), uint256(2))
        );
        // one signature short
        (signers, signatures) = committeeVotes(result, 3);
        bytes[] memory fewer = new bytes[](2);
        (fewer[0], fewer[1]) = (signatures[0], signatures[1]);
        expectFinalizeRevert(
            result,
            signers,
            fewer,
            abi.encodeWithSelector(IRuns.RunsSignersMalformed.selector, runId, uint256(0), uint256(2))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_SignerNotOnCommittee() public {
        uint256 runId = openCommitteeRun(8, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(8)));
        uint32 outsider = notOnCommittee(runId, 0, 8);
        uint32[] memory signers = new uint32[](1);
        bytes[] memory signatures = new bytes[](1);
        signers[0] = outsider;
        signatures[0] = signature(result, outsider);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsNotCommittee.selector, runId, uint256(0), outsider)
        );
        signers[0] = 8; // not even a member
        expectFinalizeRevert(
            result, signers, signatures, abi.encodeWithSelector(IRuns.RunsNotCommittee.selector, runId, uint256(0), 8)
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_BadSignature() public {
        uint256 runId = openCommitteeRun(6, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(6)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        bytes memory reason = abi.encodeWithSelector(IRuns.RunsBadSignature.selector, runId, uint256(0), signers[1]);
        bytes memory good = signatures[1];
        (bytes32 r, bytes32 s) = abi.decode(good, (bytes32, bytes32));
        uint8 v = uint8(good[64]);

        signatures[1] = signature(result, signers[0]); // another member's key
        expectFinalizeRevert(result, signers, signatures, reason);
        IRuns.CommitteeResult memory other = resultOf(runId, 0, bitmapOf(firstN(5)));
        signatures[1] = signature(other, signers[1]); // the right key over another result
        expectFinalizeRevert(result, signers, signatures, reason);
        signatures[1] = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27)); // high s
        assertTrue(N - uint256(s) > N_HALF, "the twin is high-s");
        expectFinalizeRevert(result, signers, signatures, reason);
        signatures[1] = abi.encodePacked(r, s, v - 27); // v 0/1
        expectFinalizeRevert(result, signers, signatures, reason);
        signatures[1] = abi.encodePacked(r, s); // 64 bytes
        expectFinalizeRevert(result, signers, signatures, reason);
        signatures[1] = abi.encodePacked(bytes32(0), s, v); // no key recovers
        expectFinalizeRevert(result, signers, signatures, reason);
        signatures[1] = good;
        runs.finalizeCommitteeRound(result, signers, signatures);
    }

    function test_finalizeCommitteeRound_RevertWhen_NoQuorum() public {
        uint256 runId = openCommitteeRun(8, 4, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(8)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 2);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsNoQuorum.selector, runId, uint256(0), uint256(2), uint32(3))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_ZeroMergedHash() public {
        uint256 runId = openCommitteeRun(3, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(3)));
        result.mergedSha256 = bytes32(0);
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        expectFinalizeRevert(result, signers, signatures, abi.encodeWithSelector(IRuns.RunsZeroHash.selector));
    }

    function test_finalizeCommitteeRound_RevertWhen_RoundClosedOrNotOpen() public {
        uint256 runId = openCommitteeRun(3, 3, 6_666, 1);
        IRuns.CommitteeResult memory result = resultOf(runId, 0, bitmapOf(firstN(3)));
        (uint32[] memory signers, bytes[] memory signatures) = committeeVotes(result, 3);
        runs.finalizeCommitteeRound(result, signers, signatures);
        expectFinalizeRevert(
            result,
            signers,
            signatures,
            abi.encodeWithSelector(
                IRuns.RunsRoundClosed.selector, runId, uint256(0), uint8(IRuns.RoundStatus.Finalized)
            )
        );
        IRuns.CommitteeResult memory later = resultOf(runId, 2, bitmapOf(firstN(3)));
        expectFinalizeRevert(
            later,
            signers,
            signatures,
            abi.encodeWithSelector(IRuns.RunsRoundNotOpen.selector, runId, uint256(2), uint256(1))
        );
    }

    function test_finalizeCommitteeRound_RevertWhen_CommitteeNotDrawn() public {
        uint256 runId = openCommitteeRun(3, 2, 6_666, 1);
        IRuns.CommitteeResult memory r0 = resultOf(runId, 0, bitmapOf(firstN(3)));
        finalize(r0, 2);
        // round 1 opened in this block: its start block's hash is not known until the next one
        IRuns.CommitteeResult memory r1 = resultOf(runId, 1, bitmapOf(firstN(3)));
        expectFinalizeRevert(
            r1,
            new uint32[](0),
            new bytes[](0),
            abi.encodeWithSelector(IRuns.RunsCommitteeNotDrawn.selector, runId, uint256(1))
        );
    }

    // ---- fuzz ----

    /// @dev committeeOf returns exactly the min(k, n) smallest tickets (ties to the smaller index), by index.
    function testFuzz_committeeOf_ReturnsTheKSmallestTickets(uint8 nSeed, uint8 kSeed, uint8 roundSeed) public {
        uint256 n = bound(nSeed, 1, 40);
        uint32 k = uint32(bound(kSeed, 1, 45));
        uint256 runId = runs.createRun(committeeParams(k, 6_666, 0));
        for (uint256 i = 0; i < n; ++i) {
            vm.prank(member(i));
            runs.join(runId);
        }
        uint256 rounds = bound(roundSeed, 0, 2);
        vm.roll(runs.roundInfo(runId, 0).submitEnd);
        for (uint256 r = 0; r < rounds; ++r) {
            finalize(resultOf(runId, r, new uint256[](0)), k);
            vm.roll(block.number + SUBMIT_BLOCKS);
        }
        uint64 start = runs.roundInfo(runId, rounds).startBlock;
        bytes32 seed = keccak256(abi.encode(blockhash(start), runId, rounds));

        uint32[] memory committee = runs.committeeOf(runId, rounds);

        assertEq(committee.length, k < n ? k : n, "min(k, n) members");
        bool[] memory chosen = new bool[](n);
        for (uint256 j = 0; j < committee.length; ++j) {
            if (j > 0) assertTrue(committee[j] > committee[j - 1], "strictly ascending indices");
            assertTrue(committee[j] < n, "a member index");
            chosen[committee[j]] = true;
        }
        for (uint256 a = 0; a < n; ++a) {
            if (!chosen[a]) continue;
            uint256 ta = uint256(keccak256(abi.encode(seed, a)));
            for (uint256 b = 0; b < n; ++b) {
                if (chosen[b]) continue;
                uint256 tb = uint256(keccak256(abi.encode(seed, b)));
                assertTrue(ta < tb || (ta == tb && a < b), "every chosen ticket beats every other");
            }
        }
    }
}

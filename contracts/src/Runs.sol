// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "./interfaces/IRuns.sol";

/// @title Runs - the fedchain run registry
/// @notice Federated training runs: members, rounds of update commits and merge votes finalised by a quorum
/// of equal votes, accepted contributions, and unlearning requests.
/// @dev Design, chosen for gas (see README `chain`):
/// - Run ids and request ids are counters starting at 1.
/// - Rounds are timed in blocks. Round 0's submit window starts at `startBlock`; round r > 0 opens in the
///   block whose transaction finalised or failed round r - 1. A round's submit window is
///   [start, start + submitBlocks), its vote window [start + submitBlocks, start + submitBlocks + voteBlocks);
///   voting may start early once every eligible member has submitted.
/// - The eligible set of a round is fixed when it opens: members with `index < memberSnapshot`, i.e. who
///   joined before the round opened; `eligible` (the quorum base) is that count minus banned members.
///   Round 0 takes its snapshot lazily, at the first transaction touching the run at or after `startBlock`.
/// - Quorum is max(1, ceil(quorumBps * eligible / 10000)) equal votes over
///   (mergedSha256, keccak256(mergedCid), includedSetHash).
/// - Update hashes and CIDs live in events only; storage keeps what the logic needs: one packed slot per
///   member (index, last submitted/voted round, counters, ban flag) and one per round.
/// - includedSetHash = keccak256(abi.encode(address[] members, bytes32[] sha256s)), members strictly
///   ascending. `recordContributions` checks a set against the finalised hash and counts each member's
///   accepted contributions on chain.
contract Runs is IRuns {
    struct Run {
        uint32 currentRound;
        uint32 submitBlocks;
        uint32 voteBlocks;
        uint32 memberCount;
        uint32 bannedCount;
        uint32 minUpdates;
        uint16 quorumBps;
        Admission admission;
        bool exists;
    }

    struct RunMeta {
        address creator;
        address governance;
        bytes32 specSha256;
        string specCid;
    }

    struct Round {
        uint64 startBlock;
        uint32 memberSnapshot;
        uint32 eligible;
        uint32 submissions;
        RoundStatus status;
        bool snapshotTaken;
        bool contributionsRecorded;
        uint64 closedBlock;
    }

    struct RoundResult {
        bytes32 mergedSha256;
        bytes32 includedSetHash;
    }

    struct Member {
        bool exists;
        bool banned;
        uint32 index;
        uint64 joinBlock;
        uint32 lastSubmitted; // round + 1 of the last submission, 0 if none
        uint32 lastVoted; // round + 1 of the last vote, 0 if none
        uint32 submittedRounds;
        uint32 accepted;
    }

    struct Request {
        uint256 runId;
        address subject;
        uint32 fromRound;
        RequestStatus status;
        uint32 memberSnapshot;
        address requester;
        uint32 eligible;
        uint64 requestBlock;
        uint64 fulfilledBlock;
        bytes32 reasonHash;
        bytes32 resultSha256;
    }

    uint16 private constant _BPS = 10_000;

    uint256 private _runCount;
    uint256 private _requestCount;
    mapping(uint256 runId => Run) private _runs;
    mapping(uint256 runId => RunMeta) private _meta;
    mapping(uint256 runId => mapping(uint256 round => Round)) private _rounds;
    mapping(uint256 runId => mapping(uint256 round => RoundResult)) private _results;
    mapping(uint256 runId => mapping(address account => Member)) private _members;
    mapping(uint256 runId => address[]) private _memberList;
    mapping(uint256 runId => mapping(address account => bool)) private _allowed;
    mapping(bytes32 resultKey => uint32) private _tally;
    mapping(uint256 requestId => Request) private _requests;
    mapping(uint256 requestId => mapping(address account => bool)) private _unlearningVoted;

    /// @inheritdoc IRuns
    function createRun(RunParams calldata params) external returns (uint256 runId) {
        if (params.quorumBps == 0 || params.quorumBps > _BPS) revert RunsInvalidQuorum(params.quorumBps);
        if (params.submitBlocks == 0 || params.voteBlocks == 0) {
            revert RunsInvalidWindow(params.submitBlocks, params.voteBlocks);
        }
        if (params.startBlock < block.number) revert RunsStartInPast(params.startBlock, block.number);
        if (params.specSha256 == bytes32(0)) revert RunsZeroHash();
        runId = ++_runCount;
        address governance = params.governance == address(0) ? msg.sender : params.governance;
        _runs[runId] = Run({
            currentRound: 0,
            submitBlocks: params.submitBlocks,
            voteBlocks: params.voteBlocks,
            memberCount: 0,
            bannedCount: 0,
            minUpdates: params.minUpdates,
            quorumBps: params.quorumBps,
            admission: params.admission,
            exists: true
        });
        _meta[runId] = RunMeta({
            creator: msg.sender, governance: governance, specSha256: params.specSha256, specCid: params.specCid
        });
        _rounds[runId][0].startBlock = params.startBlock;
        emit RunCreated(
            runId,
            msg.sender,
            governance,
            params.specSha256,
            params.specCid,
            params.quorumBps,
            params.submitBlocks,
            params.voteBlocks,
            params.minUpdates,
            params.startBlock,
            params.admission
        );
        emit RoundOpened(runId, 0, params.startBlock);
    }

    /// @inheritdoc IRuns
    function setAllowed(uint256 runId, address[] calldata accounts, bool allowed) external {
        _existingRun(runId);
        if (msg.sender != _meta[runId].governance) revert RunsNotGovernance(runId, msg.sender);
        for (uint256 i = 0; i < accounts.length; ++i) {
            _allowed[runId][accounts[i]] = allowed;
            emit AllowlistUpdated(runId, accounts[i], allowed);
        }
    }

    /// @inheritdoc IRuns
    function join(uint256 runId) external {
        Run storage run = _existingRun(runId);
        if (run.admission == Admission.Allowlist && !_allowed[runId][msg.sender]) {
            revert RunsNotAllowed(runId, msg.sender);
        }
        Member storage member = _members[runId][msg.sender];
        if (member.exists) revert RunsAlreadyMember(runId, msg.sender);
        // Take round 0's snapshot first, so that a join at or after its start is not counted in it.
        _touchRound(run, _rounds[runId][run.currentRound]);
        uint32 index = run.memberCount;
        run.memberCount = index + 1;
        member.exists = true;
        member.index = index;
        member.joinBlock = uint64(block.number);
        _memberList[runId].push(msg.sender);
        emit MemberJoined(runId, msg.sender, index);
    }

    /// @inheritdoc IRuns
    function submitUpdate(uint256 runId, uint256 round, bytes32 sha256Hash, string calldata cid, uint64 numSamples)
        external
    {
        if (sha256Hash == bytes32(0)) revert RunsZeroHash();
        Run storage run = _existingRun(runId);
        Round storage rd = _currentRound(runId, run, round);
        uint64 start = rd.startBlock;
        if (block.number < start) revert RunsSubmitWindowNotOpen(runId, round, start);
        uint64 submitEnd = start + run.submitBlocks;
        if (block.number >= submitEnd) revert RunsSubmitWindowClosed(runId, round, submitEnd);
        Member storage member = _eligibleMember(runId, round, rd.memberSnapshot);
        if (member.lastSubmitted == round + 1) revert RunsAlreadySubmitted(runId, round, msg.sender);
        member.lastSubmitted = uint32(round + 1);
        member.submittedRounds += 1;
        rd.submissions += 1;
        emit UpdateSubmitted(runId, round, msg.sender, sha256Hash, cid, numSamples);
    }

    /// @inheritdoc IRuns
    function vote(
        uint256 runId,
        uint256 round,
        bytes32 mergedSha256,
        string calldata mergedCid,
        bytes32 includedSetHash
    ) external {
        if (mergedSha256 == bytes32(0)) revert RunsZeroHash();
        Run storage run = _existingRun(runId);
        Round storage rd = _currentRound(runId, run, round);
        uint64 submitEnd = rd.startBlock + run.submitBlocks;
        uint32 submissions = rd.submissions;
        uint32 eligible = rd.eligible;
        if (block.number < submitEnd && !(rd.snapshotTaken && submissions == eligible && eligible > 0)) {
            revert RunsVoteWindowNotOpen(runId, round, submitEnd);
        }
        uint64 voteEnd = submitEnd + run.voteBlocks;
        if (block.number >= voteEnd) revert RunsVoteWindowClosed(runId, round, voteEnd);
        if (submissions < run.minUpdates) revert RunsTooFewUpdates(runId, round, submissions, run.minUpdates);
        Member storage member = _eligibleMember(runId, round, rd.memberSnapshot);
        if (member.lastVoted == round + 1) revert RunsAlreadyVoted(runId, round, msg.sender);
        member.lastVoted = uint32(round + 1);
        bytes32 key = keccak256(
            abi.encode(runId, round, mergedSha256, keccak256(bytes(mergedCid)), includedSetHash)
        );
        uint32 votes = _tally[key] + 1;
        _tally[key] = votes;
        emit MergeVoted(runId, round, msg.sender, mergedSha256, mergedCid, includedSetHash, votes);
        if (votes >= _quorum(eligible, run.quorumBps)) {
            rd.status = RoundStatus.Finalized;
            rd.closedBlock = uint64(block.number);
            _results[runId][round] = RoundResult({mergedSha256: mergedSha256, includedSetHash: includedSetHash});
            emit RoundFinalized(runId, round, mergedSha256, mergedCid, includedSetHash, votes, eligible);
            _openNextRound(runId, run, round);
        }
    }

    /// @inheritdoc IRuns
    function closeFailedRound(uint256 runId, uint256 round) external {
        Run storage run = _existingRun(runId);
        Round storage rd = _currentRound(runId, run, round);
        uint64 submitEnd = rd.startBlock + run.submitBlocks;
        uint64 voteEnd = submitEnd + run.voteBlocks;
        bool tooFew = rd.submissions < run.minUpdates;
        if (block.number < voteEnd && !(tooFew && block.number >= submitEnd)) {
            revert RunsRoundStillOpen(runId, round, tooFew ? submitEnd : voteEnd);
        }
        rd.status = RoundStatus.Failed;
        rd.closedBlock = uint64(block.number);
        emit RoundFailed(runId, round, rd.submissions, msg.sender);
        _openNextRound(runId, run, round);
    }

    /// @inheritdoc IRuns
    function recordContributions(
        uint256 runId,
        uint256 round,
        address[] calldata included,
        bytes32[] calldata sha256s
    ) external {
        _existingRun(runId);
        Round storage rd = _rounds[runId][round];
        if (rd.status != RoundStatus.Finalized) revert RunsRoundNotFinalized(runId, round);
        if (rd.contributionsRecorded) revert RunsContributionsAlreadyRecorded(runId, round);
        if (included.length != sha256s.length) revert RunsIncludedSetMalformed(runId, round, included.length);
        bytes32 expected = _results[runId][round].includedSetHash;
        bytes32 actual = keccak256(abi.encode(included, sha256s));
        if (actual != expected) revert RunsIncludedSetMismatch(runId, round, expected, actual);
        rd.contributionsRecorded = true;
        uint32 snapshot = rd.memberSnapshot;
        for (uint256 i = 0; i < included.length; ++i) {
            address account = included[i];
            if (i > 0 && account <= included[i - 1]) revert RunsIncludedSetMalformed(runId, round, i);
            Member storage member = _members[runId][account];
            // lastSubmitted > round: the member submitted in this round or later (the round's commit itself
            // is in the UpdateSubmitted events that the quorum checked before voting this set).
            if (!member.exists || member.index >= snapshot || member.lastSubmitted <= round) {
                revert RunsIncludedNotSubmitter(runId, round, account);
            }
            member.accepted += 1;
            emit ContributionAccepted(runId, round, account, sha256s[i]);
        }
    }

    /// @inheritdoc IRuns
    function requestUnlearning(uint256 runId, address subject, uint32 fromRound, bytes32 reasonHash)
        external
        returns (uint256 requestId)
    {
        Run storage run = _existingRun(runId);
        Member storage member = _members[runId][subject];
        if (!member.exists) revert RunsNotMember(runId, subject);
        if (msg.sender != subject && msg.sender != _meta[runId].governance) {
            revert RunsNotSubjectOrGovernance(runId, subject, msg.sender);
        }
        if (member.banned) revert RunsMemberBanned(runId, subject);
        if (fromRound > run.currentRound) revert RunsInvalidFromRound(runId, fromRound, run.currentRound);
        _touchRound(run, _rounds[runId][run.currentRound]);
        member.banned = true;
        run.bannedCount += 1;
        requestId = ++_requestCount;
        _requests[requestId] = Request({
            runId: runId,
            subject: subject,
            fromRound: fromRound,
            status: RequestStatus.Pending,
            memberSnapshot: run.memberCount,
            requester: msg.sender,
            eligible: run.memberCount - run.bannedCount,
            requestBlock: uint64(block.number),
            fulfilledBlock: 0,
            reasonHash: reasonHash,
            resultSha256: bytes32(0)
        });
        emit UnlearningRequested(requestId, runId, subject, fromRound, reasonHash, msg.sender);
    }

    /// @inheritdoc IRuns
    function voteUnlearning(uint256 requestId, bytes32 modelSha256, string calldata modelCid) external {
        if (modelSha256 == bytes32(0)) revert RunsZeroHash();
        Request storage req = _requests[requestId];
        if (req.status == RequestStatus.None) revert RunsUnknownRequest(requestId);
        if (req.status != RequestStatus.Pending) revert RunsRequestNotPending(requestId);
        uint256 runId = req.runId;
        Member storage member = _members[runId][msg.sender];
        if (!member.exists) revert RunsNotMember(runId, msg.sender);
        if (member.banned) revert RunsMemberBanned(runId, msg.sender);
        if (member.index >= req.memberSnapshot) revert RunsNotEligibleForRequest(requestId, msg.sender);
        if (_unlearningVoted[requestId][msg.sender]) revert RunsAlreadyVotedUnlearning(requestId, msg.sender);
        _unlearningVoted[requestId][msg.sender] = true;
        bytes32 key = keccak256(abi.encode(requestId, modelSha256, keccak256(bytes(modelCid))));
        uint32 votes = _tally[key] + 1;
        _tally[key] = votes;
        emit UnlearningVoted(requestId, msg.sender, modelSha256, modelCid, votes);
        if (votes >= _quorum(req.eligible, _runs[runId].quorumBps)) {
            req.status = RequestStatus.Fulfilled;
            req.fulfilledBlock = uint64(block.number);
            req.resultSha256 = modelSha256;
            emit UnlearningFulfilled(requestId, runId, modelSha256, modelCid, votes);
        }
    }

    /// @inheritdoc IRuns
    function runInfo(uint256 runId) external view returns (RunView memory info) {
        Run storage run = _existingRun(runId);
        RunMeta storage meta = _meta[runId];
        info = RunView({
            specSha256: meta.specSha256,
            specCid: meta.specCid,
            creator: meta.creator,
            governance: meta.governance,
            quorumBps: run.quorumBps,
            submitBlocks: run.submitBlocks,
            voteBlocks: run.voteBlocks,
            minUpdates: run.minUpdates,
            admission: run.admission,
            currentRound: run.currentRound,
            memberCount: run.memberCount,
            bannedCount: run.bannedCount
        });
    }

    /// @inheritdoc IRuns
    function roundInfo(uint256 runId, uint256 round) external view returns (RoundView memory info) {
        Run storage run = _existingRun(runId);
        if (round > run.currentRound) revert RunsRoundNotOpen(runId, round, run.currentRound);
        Round storage rd = _rounds[runId][round];
        RoundResult storage result = _results[runId][round];
        uint32 snapshot = rd.snapshotTaken ? rd.memberSnapshot : run.memberCount;
        uint32 eligible = rd.snapshotTaken ? rd.eligible : run.memberCount - run.bannedCount;
        uint64 submitEnd = rd.startBlock + run.submitBlocks;
        info = RoundView({
            startBlock: rd.startBlock,
            submitEnd: submitEnd,
            voteEnd: submitEnd + run.voteBlocks,
            memberSnapshot: snapshot,
            eligible: eligible,
            quorum: _quorum(eligible, run.quorumBps),
            submissions: rd.submissions,
            status: rd.status,
            closedBlock: rd.closedBlock,
            mergedSha256: result.mergedSha256,
            includedSetHash: result.includedSetHash,
            contributionsRecorded: rd.contributionsRecorded
        });
    }

    /// @inheritdoc IRuns
    function memberInfo(uint256 runId, address account) external view returns (MemberView memory info) {
        _existingRun(runId);
        Member storage member = _members[runId][account];
        info = MemberView({
            isMember: member.exists,
            index: member.index,
            joinBlock: member.joinBlock,
            banned: member.banned,
            submittedRounds: member.submittedRounds,
            acceptedContributions: member.accepted,
            lastSubmittedRound: member.lastSubmitted == 0 ? 0 : member.lastSubmitted - 1,
            hasSubmittedEver: member.lastSubmitted != 0
        });
    }

    /// @inheritdoc IRuns
    function members(uint256 runId) external view returns (address[] memory) {
        _existingRun(runId);
        return _memberList[runId];
    }

    /// @inheritdoc IRuns
    function isAllowed(uint256 runId, address account) external view returns (bool) {
        _existingRun(runId);
        return _runs[runId].admission == Admission.Open || _allowed[runId][account];
    }

    /// @inheritdoc IRuns
    function votesFor(
        uint256 runId,
        uint256 round,
        bytes32 mergedSha256,
        string calldata mergedCid,
        bytes32 includedSetHash
    ) external view returns (uint32) {
        return _tally[keccak256(abi.encode(runId, round, mergedSha256, keccak256(bytes(mergedCid)), includedSetHash))];
    }

    /// @inheritdoc IRuns
    function unlearningRequest(uint256 requestId) external view returns (RequestView memory info) {
        Request storage req = _requests[requestId];
        if (req.status == RequestStatus.None) revert RunsUnknownRequest(requestId);
        info = RequestView({
            runId: req.runId,
            subject: req.subject,
            requester: req.requester,
            fromRound: req.fromRound,
            status: req.status,
            memberSnapshot: req.memberSnapshot,
            eligible: req.eligible,
            quorum: _quorum(req.eligible, _runs[req.runId].quorumBps),
            requestBlock: req.requestBlock,
            fulfilledBlock: req.fulfilledBlock,
            reasonHash: req.reasonHash,
            resultSha256: req.resultSha256
        });
    }

    /// @inheritdoc IRuns
    function runCount() external view returns (uint256) {
        return _runCount;
    }

    /// @inheritdoc IRuns
    function requestCount() external view returns (uint256) {
        return _requestCount;
    }

    /// @inheritdoc IRuns
    function quorumOf(uint32 eligible, uint16 quorumBps) external pure returns (uint32) {
        return _quorum(eligible, quorumBps);
    }

    function _quorum(uint32 eligible, uint16 quorumBps) private pure returns (uint32) {
        uint256 needed = (uint256(eligible) * quorumBps + _BPS - 1) / _BPS;
        return needed == 0 ? 1 : uint32(needed);
    }

    function _existingRun(uint256 runId) private view returns (Run storage run) {
        run = _runs[runId];
        if (!run.exists) revert RunsUnknownRun(runId);
    }

    /// @dev The open round `round` of the run, with its eligible-set snapshot taken if it has started.
    function _currentRound(uint256 runId, Run storage run, uint256 round) private returns (Round storage rd) {
        uint256 current = run.currentRound;
        if (round > current) revert RunsRoundNotOpen(runId, round, current);
        rd = _rounds[runId][round];
        if (round < current) revert RunsRoundClosed(runId, round, rd.status);
        _touchRound(run, rd);
    }

    function _touchRound(Run storage run, Round storage rd) private {
        if (!rd.snapshotTaken && block.number >= rd.startBlock) {
            uint32 count = run.memberCount;
            rd.memberSnapshot = count;
            rd.eligible = count - run.bannedCount;
            rd.snapshotTaken = true;
        }
    }

    /// @dev The caller's member record, checked to be an unbanned member of the round's eligible set.
    function _eligibleMember(uint256 runId, uint256 round, uint32 snapshot) private view returns (Member storage m) {
        m = _members[runId][msg.sender];
        if (!m.exists) revert RunsNotMember(runId, msg.sender);
        if (m.banned) revert RunsMemberBanned(runId, msg.sender);
        if (m.index >= snapshot) revert RunsNotEligible(runId, round, msg.sender);
    }

    function _openNextRound(uint256 runId, Run storage run, uint256 round) private {
        uint32 next = uint32(round + 1);
        run.currentRound = next;
        uint32 count = run.memberCount;
        _rounds[runId][next] = Round({
            startBlock: uint64(block.number),
            memberSnapshot: count,
            eligible: count - run.bannedCount,
            submissions: 0,
            status: RoundStatus.Open,
            snapshotTaken: true,
            contributionsRecorded: false,
            closedBlock: 0
        });
        emit RoundOpened(runId, next, uint64(block.number));
    }
}

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
///   (mergedSha256, keccak256(mergedCid), includedSetHash). A vote on a finalised round is late: recorded as a
///   `LateVoteCast` event until max(voteEnd, closedBlock + voteBlocks), counted nowhere.
/// - A run with `rounds` > 0 completes when its `rounds`-th round finalises (failed rounds are retried by the
///   next round): no round opens after it and `currentRound` stays on it; a current round that is not Open
///   therefore means Completed.
/// - Update hashes and CIDs live in events only; storage keeps what the logic needs: one packed slot per
///   member (index, last submitted/voted round, counters, ban flag) and one per round.
/// - includedSetHash = keccak256(abi.encode(address[] members, bytes32[] sha256s)), members strictly
///   ascending. `recordContributions` checks a set against the finalised hash and counts each member's
///   accepted contributions on chain.
/// - Committee runs (`committeeSize` k > 0): members sign EIP-712 `UpdateCommit`s off chain; the round's
///   committee (the k smallest tickets of blockhash(startBlock)) signs a `CommitteeVote` on the result, and
///   one `finalizeCommitteeRound` checks the signatures, stores the included bitmap (the contributions) and
///   opens the next round. The result hashes live in events only (gas: docs/contract.md).
/// - In committee runs bans are also a bitmap per run (bit = member index), so a bitmap of included members
///   is checked against them one word at a time.
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
        uint32 committeeSize;
    }

    struct RunMeta {
        address creator;
        uint32 rounds; // 0: open-ended
        uint32 finalizedRounds;
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
    uint256 private constant _HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 private constant _MAX_COMMITTEE_WINDOW = 255; // blockhash(startBlock) is readable for 256 blocks
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("fedchain Runs");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    bytes32 private constant _COMMIT_TYPEHASH =
        keccak256("UpdateCommit(uint256 runId,uint256 round,bytes32 sha256,bytes32 cidHash,uint64 numSamples)");
    bytes32 private constant _VOTE_TYPEHASH = keccak256(
        "CommitteeVote(uint256 runId,uint256 round,bytes32 mergedSha256,bytes32 mergedCidHash,"
        "bytes32 includedSetHash,bytes32 manifestCidHash,bytes32 includedBitmapHash)"
    );

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
    mapping(uint256 runId => mapping(uint256 word => uint256 bits)) private _bans;
    mapping(uint256 runId => mapping(uint256 round => mapping(uint256 word => uint256 bits))) private _included;

    /// @inheritdoc IRuns
    function createRun(RunParams calldata params) external returns (uint256 runId) {
        if (params.quorumBps == 0 || params.quorumBps > _BPS) revert RunsInvalidQuorum(params.quorumBps);
        if (params.submitBlocks == 0 || params.voteBlocks == 0) {
            revert RunsInvalidWindow(params.submitBlocks, params.voteBlocks);
        }
        if (params.startBlock < block.number) revert RunsStartInPast(params.startBlock, block.number);
        if (params.specSha256 == bytes32(0)) revert RunsZeroHash();
        if (params.committeeSize != 0 && uint256(params.submitBlocks) + params.voteBlocks > _MAX_COMMITTEE_WINDOW) {
            revert RunsInvalidWindow(params.submitBlocks, params.voteBlocks);
        }
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
            exists: true,
            committeeSize: params.committeeSize
        });
        _meta[runId] = RunMeta({
            creator: msg.sender,
            rounds: params.rounds,
            finalizedRounds: 0,
            governance: governance,
            specSha256: params.specSha256,
            specCid: params.specCid
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
        Round storage rd = _rounds[runId][run.currentRound];
        if (rd.status != RoundStatus.Open) _revertCompleted(runId, run.currentRound);
        _touchRound(run, rd);
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
        Run storage run = _ordinaryRun(runId);
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
        Run storage run = _ordinaryRun(runId);
        if (round <= run.currentRound && _rounds[runId][round].status == RoundStatus.Finalized) {
            _lateVote(runId, run, round, mergedSha256, mergedCid, includedSetHash);
            return;
        }
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
            _afterFinalized(runId, run, round, mergedSha256);
        }
    }

    /// @inheritdoc IRuns
    function finalizeCommitteeRound(
        CommitteeResult calldata result,
        uint32[] calldata signers,
        bytes[] calldata signatures
    ) external {
        if (result.mergedSha256 == bytes32(0)) revert RunsZeroHash();
        uint256 runId = result.runId;
        uint256 round = result.round;
        Run storage run = _committeeRun(runId);
        Round storage rd = _currentRound(runId, run, round);
        {
            uint64 submitEnd = rd.startBlock + run.submitBlocks;
            uint64 voteEnd = submitEnd + run.voteBlocks;
            if (block.number >= voteEnd) revert RunsVoteWindowClosed(runId, round, voteEnd);
            if (block.number < submitEnd && !(rd.snapshotTaken && _popcount(result.includedBitmap) == rd.eligible)) {
                revert RunsVoteWindowNotOpen(runId, round, submitEnd);
            }
        }
        uint32 included = _checkIncluded(runId, round, rd.memberSnapshot, run.bannedCount != 0, result.includedBitmap);
        if (included < run.minUpdates) revert RunsTooFewUpdates(runId, round, included, run.minUpdates);
        uint32 committeeSize = _checkVotes(runId, round, run, rd, result, signers, signatures);

        rd.status = RoundStatus.Finalized;
        rd.closedBlock = uint64(block.number);
        rd.submissions = included;
        mapping(uint256 word => uint256 bits) storage words = _included[runId][round];
        for (uint256 w = 0; w < result.includedBitmap.length; ++w) {
            words[w] = result.includedBitmap[w];
        }
        emit RoundFinalized(
            runId,
            round,
            result.mergedSha256,
            result.mergedCid,
            result.includedSetHash,
            uint32(signers.length),
            committeeSize
        );
        emit CommitteeFinalized(runId, round, result.manifestCid, result.includedBitmap, signers);
        _afterFinalized(runId, run, round, result.mergedSha256);
    }

    /// @inheritdoc IRuns
    function closeFailedRound(uint256 runId, uint256 round) external {
        Run storage run = _existingRun(runId);
        Round storage rd = _currentRound(runId, run, round);
        uint64 submitEnd = rd.startBlock + run.submitBlocks;
        uint64 voteEnd = submitEnd + run.voteBlocks;
        // A committee run's submissions are off chain until finalisation: no early close for too few.
        bool tooFew = run.committeeSize == 0 && rd.submissions < run.minUpdates;
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
        _ordinaryRun(runId);
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
        if (run.committeeSize != 0) _bans[runId][member.index >> 8] |= uint256(1) << (member.index & 255);
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
            bannedCount: run.bannedCount,
            committeeSize: run.committeeSize,
            rounds: meta.rounds,
            finalizedRounds: meta.finalizedRounds,
            status: _rounds[runId][run.currentRound].status == RoundStatus.Open ? RunStatus.Active : RunStatus.Completed
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
            quorum: _quorum(run.committeeSize == 0 ? eligible : uint32(_min(run.committeeSize, snapshot)), run.quorumBps),
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
        Run storage run = _existingRun(runId);
        Member storage member = _members[runId][account];
        if (run.committeeSize != 0 && member.exists) return _committeeMemberInfo(runId, run, member);
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

    /// @inheritdoc IRuns
    function committeeOf(uint256 runId, uint256 round) external view returns (uint32[] memory indices) {
        Run storage run = _committeeRun(runId);
        if (round > run.currentRound) revert RunsRoundNotOpen(runId, round, run.currentRound);
        Round storage rd = _rounds[runId][round];
        uint32 snapshot = rd.snapshotTaken ? rd.memberSnapshot : run.memberCount;
        uint256[] memory committee = _committee(runId, round, rd.startBlock, snapshot, run.committeeSize);
        indices = new uint32[](committee.length);
        for (uint256 j = 0; j < committee.length; ++j) {
            indices[j] = uint32(committee[j]);
        }
    }

    /// @inheritdoc IRuns
    function commitDigest(uint256 runId, uint256 round, bytes32 sha256Hash, bytes32 cidHash, uint64 numSamples)
        external
        view
        returns (bytes32)
    {
        return _typedDigest(keccak256(abi.encode(_COMMIT_TYPEHASH, runId, round, sha256Hash, cidHash, numSamples)));
    }

    /// @inheritdoc IRuns
    function committeeVoteDigest(CommitteeResult calldata result) external view returns (bytes32) {
        return _voteDigest(result);
    }

    function _voteDigest(CommitteeResult calldata result) private view returns (bytes32) {
        return _typedDigest(
            keccak256(
                abi.encode(
                    _VOTE_TYPEHASH,
                    result.runId,
                    result.round,
                    result.mergedSha256,
                    keccak256(bytes(result.mergedCid)),
                    result.includedSetHash,
                    keccak256(bytes(result.manifestCid)),
                    keccak256(abi.encodePacked(result.includedBitmap))
                )
            )
        );
    }

    function _typedDigest(bytes32 structHash) private view returns (bytes32) {
        bytes32 domain =
            keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    /// @dev The committee of a round, ascending by index: the min(k, snapshot) smallest tickets
    /// keccak256(abi.encode(seed, i)), ties to the smaller index (a later index replaces only a larger ticket).
    function _committee(uint256 runId, uint256 round, uint64 startBlock, uint32 snapshot, uint32 k)
        private
        view
        returns (uint256[] memory committee)
    {
        bytes32 blockHash = blockhash(startBlock);
        if (blockHash == bytes32(0)) revert RunsCommitteeNotDrawn(runId, round);
        uint256 size = _min(k, snapshot);
        committee = new uint256[](size);
        if (size == snapshot) {
            for (uint256 i = 0; i < size; ++i) {
                committee[i] = i;
            }
            return committee;
        }
        bytes32 seed = keccak256(abi.encode(blockHash, runId, round));
        uint256[] memory tickets = new uint256[](size); // ascending; committee[j] holds tickets[j]'s index
        // Insertion into the k best so far, then by index; in assembly because the checked, bounds-checked
        // version costs about three times as much gas (the loop runs over every member).
        assembly ("memory-safe") {
            let t0 := add(tickets, 0x20)
            let c0 := add(committee, 0x20)
            let filled := 0
            for { let i := 0 } lt(i, snapshot) { i := add(i, 1) } {
                mstore(0, seed)
                mstore(0x20, i)
                let t := keccak256(0, 0x40)
                let j := filled
                switch eq(filled, size)
                case 1 {
                    j := sub(size, 1)
                    if iszero(lt(t, mload(add(t0, shl(5, j))))) { continue }
                }
                default { filled := add(filled, 1) }
                for {} gt(j, 0) { j := sub(j, 1) } {
                    let prev := mload(add(t0, shl(5, sub(j, 1))))
                    if iszero(gt(prev, t)) { break }
                    mstore(add(t0, shl(5, j)), prev)
                    mstore(add(c0, shl(5, j)), mload(add(c0, shl(5, sub(j, 1)))))
                }
                mstore(add(t0, shl(5, j)), t)
                mstore(add(c0, shl(5, j)), i)
            }
            for { let a := 1 } lt(a, size) { a := add(a, 1) } {
                let v := mload(add(c0, shl(5, a)))
                let b := a
                for {} gt(b, 0) { b := sub(b, 1) } {
                    let prev := mload(add(c0, shl(5, sub(b, 1))))
                    if iszero(gt(prev, v)) { break }
                    mstore(add(c0, shl(5, b)), prev)
                }
                mstore(add(c0, shl(5, b)), v)
            }
        }
    }

    /// @dev The number of included members, after checking the bitmap's shape and that no banned one is in it.
    function _checkIncluded(uint256 runId, uint256 round, uint32 snapshot, bool bans, uint256[] calldata bitmap)
        private
        view
        returns (uint32)
    {
        uint256 words = bitmap.length;
        if (words != 0 && bitmap[words - 1] == 0) revert RunsIncludedSetMalformed(runId, round, (words - 1) << 8);
        for (uint256 w = 0; w < words; ++w) {
            uint256 bits = bitmap[w];
            uint256 base = w << 8;
            if (base + 256 > snapshot && bits >> (snapshot > base ? snapshot - base : 0) != 0) {
                revert RunsIncludedSetMalformed(runId, round, base + _highestBit(bits));
            }
            uint256 banned = bans ? bits & _bans[runId][w] : 0;
            if (banned != 0) revert RunsMemberBanned(runId, _memberList[runId][base + _lowestBit(banned)]);
        }
        return _popcount(bitmap);
    }

    function _popcount(uint256[] calldata bitmap) private pure returns (uint32 count) {
        unchecked {
            for (uint256 w = 0; w < bitmap.length; ++w) {
                uint256 bits = bitmap[w];
                while (bits != 0) {
                    bits &= bits - 1;
                    ++count;
                }
            }
        }
    }

    /// @dev Checks the committee signatures; returns the committee size.
    function _checkVotes(
        uint256 runId,
        uint256 round,
        Run storage run,
        Round storage rd,
        CommitteeResult calldata result,
        uint32[] calldata signers,
        bytes[] calldata signatures
    ) private view returns (uint32) {
        if (signers.length != signatures.length) {
            revert RunsSignersMalformed(runId, round, _min(signers.length, signatures.length));
        }
        uint256[] memory committee = _committee(runId, round, rd.startBlock, rd.memberSnapshot, run.committeeSize);
        bytes32 digest = _voteDigest(result);
        uint256 listData = _arrayData(_memberList[runId]);
        bool bans = run.bannedCount != 0;
        uint256 c = 0;
        for (uint256 j = 0; j < signers.length; ++j) {
            uint32 index = signers[j];
            if (j > 0 && index <= signers[j - 1]) revert RunsSignersMalformed(runId, round, j);
            while (c < committee.length && committee[c] < index) ++c;
            if (c == committee.length || committee[c] != index) revert RunsNotCommittee(runId, round, index);
            address account = _memberAt(listData, index); // index < memberSnapshot <= the list's length
            if (!_validSignature(digest, signatures[j], account)) revert RunsBadSignature(runId, round, index);
            if (bans && _bans[runId][index >> 8] >> (index & 255) & 1 != 0) revert RunsMemberBanned(runId, account);
        }
        uint32 quorum = _quorum(uint32(committee.length), run.quorumBps);
        if (signers.length < quorum) revert RunsNoQuorum(runId, round, signers.length, quorum);
        return uint32(committee.length);
    }

    function _validSignature(bytes32 digest, bytes calldata signature, address account) private view returns (bool ok) {
        if (signature.length != 65) return false;
        assembly ("memory-safe") {
            let r := calldataload(signature.offset)
            let s := calldataload(add(signature.offset, 0x20))
            let v := byte(0, calldataload(add(signature.offset, 0x40)))
            if and(or(eq(v, 27), eq(v, 28)), iszero(gt(s, _HALF_N))) {
                // ecrecover precompile: input digest || v || r || s in scratch memory, output over word 0
                let free := mload(0x40)
                mstore(free, digest)
                mstore(add(free, 0x20), v)
                mstore(add(free, 0x40), r)
                mstore(add(free, 0x60), s)
                mstore(0, 0)
                if staticcall(gas(), 0x01, free, 0x80, 0, 0x20) {
                    let signer := mload(0)
                    ok := and(iszero(iszero(signer)), eq(signer, account))
                }
            }
        }
    }

    /// @dev A committee run's member record: its submissions are the finalised rounds that included it.
    function _committeeMemberInfo(uint256 runId, Run storage run, Member storage member)
        private
        view
        returns (MemberView memory info)
    {
        uint256 index = member.index;
        uint256 word = index >> 8;
        uint256 bit = index & 255;
        uint32 count = 0;
        uint32 last = 0;
        // the current round too: a completed run's current round is its last finalised one, and an open
        // round's bitmap is still empty
        uint256 current = run.currentRound;
        for (uint256 r = 0; r <= current; ++r) {
            if (_included[runId][r][word] >> bit & 1 != 0) {
                ++count;
                last = uint32(r);
            }
        }
        info = MemberView({
            isMember: true,
            index: member.index,
            joinBlock: member.joinBlock,
            banned: member.banned,
            submittedRounds: count,
            acceptedContributions: count,
            lastSubmittedRound: last,
            hasSubmittedEver: count != 0
        });
    }

    /// @dev The storage slot of element 0 of a dynamic storage array.
    function _arrayData(address[] storage list) private pure returns (uint256 data) {
        assembly ("memory-safe") {
            mstore(0, list.slot)
            data := keccak256(0, 0x20)
        }
    }

    /// @dev Element `index` of the member list whose element 0 is at slot `data` (unchecked: callers pass
    /// committee indices, which are below the round's snapshot and so below the list's length).
    function _memberAt(uint256 data, uint256 index) private view returns (address account) {
        assembly ("memory-safe") {
            account := and(sload(add(data, index)), 0xffffffffffffffffffffffffffffffffffffffff)
        }
    }

    function _lowestBit(uint256 bits) private pure returns (uint256 i) {
        while (bits >> i & 1 == 0) ++i;
    }

    function _highestBit(uint256 bits) private pure returns (uint256 i) {
        i = 255;
        while (bits >> i == 0) --i;
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function _quorum(uint32 eligible, uint16 quorumBps) private pure returns (uint32) {
        uint256 needed = (uint256(eligible) * quorumBps + _BPS - 1) / _BPS;
        return needed == 0 ? 1 : uint32(needed);
    }

    function _existingRun(uint256 runId) private view returns (Run storage run) {
        run = _runs[runId];
        if (!run.exists) revert RunsUnknownRun(runId);
    }

    function _ordinaryRun(uint256 runId) private view returns (Run storage run) {
        run = _existingRun(runId);
        if (run.committeeSize != 0) revert RunsCommitteeRun(runId);
    }

    function _committeeRun(uint256 runId) private view returns (Run storage run) {
        run = _existingRun(runId);
        if (run.committeeSize == 0) revert RunsNotCommitteeRun(runId);
    }

    /// @dev The open round `round` of the run, with its eligible-set snapshot taken if it has started.
    function _currentRound(uint256 runId, Run storage run, uint256 round) private returns (Round storage rd) {
        uint256 current = run.currentRound;
        if (round > current) {
            if (_rounds[runId][current].status != RoundStatus.Open) _revertCompleted(runId, current);
            revert RunsRoundNotOpen(runId, round, current);
        }
        rd = _rounds[runId][round];
        if (round < current) revert RunsRoundClosed(runId, round, rd.status);
        if (rd.status != RoundStatus.Open) _revertCompleted(runId, current); // the current round closes only last
        _touchRound(run, rd);
    }

    function _revertCompleted(uint256 runId, uint256 lastRound) private view {
        revert RunsRunCompleted(runId, _meta[runId].rounds, lastRound);
    }

    /// @dev A late vote on the finalised round `round`: checked like a vote (eligible, once), emitted, not counted.
    function _lateVote(
        uint256 runId,
        Run storage run,
        uint256 round,
        bytes32 mergedSha256,
        string calldata mergedCid,
        bytes32 includedSetHash
    ) private {
        Round storage rd = _rounds[runId][round];
        uint64 voteEnd = rd.startBlock + run.submitBlocks + run.voteBlocks;
        uint64 lateEnd = rd.closedBlock + run.voteBlocks;
        if (lateEnd < voteEnd) lateEnd = voteEnd;
        if (block.number >= lateEnd) revert RunsVoteWindowClosed(runId, round, lateEnd);
        Member storage member = _eligibleMember(runId, round, rd.memberSnapshot);
        uint32 last = member.lastVoted;
        if (last == round + 1) revert RunsAlreadyVoted(runId, round, msg.sender);
        if (last > round + 1) revert RunsLaterRoundVoted(runId, round, msg.sender, last - 1);
        member.lastVoted = uint32(round + 1);
        RoundResult storage result = _results[runId][round];
        bool agrees = mergedSha256 == result.mergedSha256 && includedSetHash == result.includedSetHash;
        emit LateVoteCast(runId, round, msg.sender, mergedSha256, mergedCid, includedSetHash, agrees);
    }

    /// @dev Counts the finalised round; the run's `rounds`-th completes it, any other opens the next round.
    function _afterFinalized(uint256 runId, Run storage run, uint256 round, bytes32 mergedSha256) private {
        RunMeta storage meta = _meta[runId];
        uint32 finalized = meta.finalizedRounds + 1;
        meta.finalizedRounds = finalized;
        uint32 rounds = meta.rounds;
        if (finalized == rounds) {
            emit RunCompleted(runId, rounds, round, mergedSha256);
        } else {
            _openNextRound(runId, run, round);
        }
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

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IRuns - federated training runs, rounds, merge votes, committee rounds, contributions and unlearning
/// @notice Events and custom errors of the fedchain run registry. Every state change emits exactly one
/// event (plus `ContributionAccepted` per member), right after the change; the fields an explorer filters
/// on (run, round, member, subject, merged hash) are indexed.
interface IRuns {
    /// @notice How members are admitted to a run.
    enum Admission {
        Open,
        Allowlist
    }

    /// @notice Life cycle of a round.
    enum RoundStatus {
        Open,
        Finalized,
        Failed
    }

    /// @notice Life cycle of a run: Active until its `rounds`-th round finalises, then Completed.
    enum RunStatus {
        Active,
        Completed
    }

    /// @notice Life cycle of an unlearning request.
    enum RequestStatus {
        None,
        Pending,
        Fulfilled
    }

    /// @notice Parameters of a new run.
    /// @param specSha256 sha256 of the run specification file (model, data schema, algorithms).
    /// @param specCid IPFS CID of the run specification file.
    /// @param governance Address allowed to manage the allowlist and file unlearning requests for subjects;
    /// zero means the creator.
    /// @param quorumBps Quorum in basis points (1..10000) of the round's eligible members, rounded up.
    /// @param submitBlocks Length of a round's submit window in blocks (> 0).
    /// @param voteBlocks Length of a round's vote window in blocks (> 0), right after the submit window.
    /// @param minUpdates Fewest submitted updates a round needs before it can be voted on.
    /// @param startBlock First block of round 0's submit window (>= the creation block).
    /// @param admission Open (anyone joins) or Allowlist (governance allows accounts).
    /// @param committeeSize 0 for an ordinary run (every member submits and votes on chain); k > 0 for a
    /// committee run: each round a committee of min(k, memberSnapshot) members drawn from
    /// blockhash(startBlock) signs the result off chain and one `finalizeCommitteeRound` closes the round
    /// (needs submitBlocks + voteBlocks <= 255).
    /// @param rounds Finalised rounds the run has: the round whose finalisation is the `rounds`-th completes the
    /// run (failed rounds do not count; the next round retries); 0 for an open-ended run that never completes.
    struct RunParams {
        bytes32 specSha256;
        string specCid;
        address governance;
        uint16 quorumBps;
        uint32 submitBlocks;
        uint32 voteBlocks;
        uint32 minUpdates;
        uint64 startBlock;
        Admission admission;
        uint32 committeeSize;
        uint32 rounds;
    }

    /// @notice The result of a committee round, signed by its committee (EIP-712 `CommitteeVote`).
    /// @param runId The run.
    /// @param round The open round.
    /// @param mergedSha256 The merged model's state hash (docs/specification.md: a hash over the tensors,
    /// not the sha256 of the artifact file).
    /// @param mergedCid IPFS CID of the merged model artifact.
    /// @param includedSetHash keccak256(abi.encode(address[] members, bytes32[] sha256s)), members ascending.
    /// @param manifestCid IPFS CID of the round's manifest (the signed member commits it includes).
    /// @param includedBitmap Bit (i % 256) of word (i / 256) is set iff member index i is included; no
    /// trailing zero words.
    struct CommitteeResult {
        uint256 runId;
        uint256 round;
        bytes32 mergedSha256;
        string mergedCid;
        bytes32 includedSetHash;
        string manifestCid;
        uint256[] includedBitmap;
    }

    /// @notice A run as returned by `runInfo`. `currentRound` is the open round, or the last round once the
    /// run is Completed; `finalizedRounds` counts the finalised rounds so far.
    struct RunView {
        bytes32 specSha256;
        string specCid;
        address creator;
        address governance;
        uint16 quorumBps;
        uint32 submitBlocks;
        uint32 voteBlocks;
        uint32 minUpdates;
        Admission admission;
        uint32 currentRound;
        uint32 memberCount;
        uint32 bannedCount;
        uint32 committeeSize;
        uint32 rounds;
        uint32 finalizedRounds;
        RunStatus status;
    }

    /// @notice A round as returned by `roundInfo`. In a committee run `quorum` is the committee's quorum,
    /// `submissions` the included count once finalised, and `mergedSha256`/`includedSetHash` are zero (the
    /// result is in the round's `RoundFinalized` event).
    struct RoundView {
        uint64 startBlock;
        uint64 submitEnd;
        uint64 voteEnd;
        uint32 memberSnapshot;
        uint32 eligible;
        uint32 quorum;
        uint32 submissions;
        RoundStatus status;
        uint64 closedBlock;
        bytes32 mergedSha256;
        bytes32 includedSetHash;
        bool contributionsRecorded;
    }

    /// @notice A member as returned by `memberInfo`.
    struct MemberView {
        bool isMember;
        uint32 index;
        uint64 joinBlock;
        bool banned;
        uint32 submittedRounds;
        uint32 acceptedContributions;
        uint32 lastSubmittedRound;
        bool hasSubmittedEver;
    }

    /// @notice An unlearning request as returned by `unlearningRequest`.
    struct RequestView {
        uint256 runId;
        address subject;
        address requester;
        uint32 fromRound;
        RequestStatus status;
        uint32 memberSnapshot;
        uint32 eligible;
        uint32 quorum;
        uint64 requestBlock;
        uint64 fulfilledBlock;
        bytes32 reasonHash;
        bytes32 resultSha256;
    }

    /// @notice A run was created; round 0 opens at `startBlock`.
    event RunCreated(
        uint256 indexed runId,
        address indexed creator,
        address indexed governance,
        bytes32 specSha256,
        string specCid,
        uint16 quorumBps,
        uint32 submitBlocks,
        uint32 voteBlocks,
        uint32 minUpdates,
        uint64 startBlock,
        Admission admission
    );
    /// @notice Governance allowed or disallowed an account to join an allowlisted run.
    event AllowlistUpdated(uint256 indexed runId, address indexed account, bool allowed);
    /// @notice An account joined a run with member index `index`.
    event MemberJoined(uint256 indexed runId, address indexed member, uint32 index);
    /// @notice A round opened (its submit window starts at `startBlock`).
    event RoundOpened(uint256 indexed runId, uint256 indexed round, uint64 startBlock);
    /// @notice A member committed its update for a round.
    event UpdateSubmitted(
        uint256 indexed runId,
        uint256 indexed round,
        address indexed member,
        bytes32 sha256,
        string cid,
        uint64 numSamples
    );
    /// @notice A member voted the merged model (state hash `mergedSha256`) of a round; `votes` counts equal
    /// votes so far.
    event MergeVoted(
        uint256 indexed runId,
        uint256 indexed round,
        address indexed member,
        bytes32 mergedSha256,
        string mergedCid,
        bytes32 includedSetHash,
        uint32 votes
    );
    /// @notice A member voted on a round after it was finalised (a late vote): recorded, the round's status,
    /// result and contributions unchanged. `agrees` is whether (`mergedSha256`, `includedSetHash`) equal the
    /// finalised result's.
    event LateVoteCast(
        uint256 indexed runId,
        uint256 indexed round,
        address indexed voter,
        bytes32 mergedSha256,
        string mergedCid,
        bytes32 includedSetHash,
        bool agrees
    );
    /// @notice A quorum voted the same merged model (state hash `mergedSha256`); the round is final. In a
    /// committee run `votes` is the number of committee signatures and `eligible` the committee size.
    event RoundFinalized(
        uint256 indexed runId,
        uint256 indexed round,
        bytes32 indexed mergedSha256,
        string mergedCid,
        bytes32 includedSetHash,
        uint32 votes,
        uint32 eligible
    );
    /// @notice A committee finalised a round: its manifest, included members and signing committee members.
    event CommitteeFinalized(
        uint256 indexed runId, uint256 indexed round, string manifestCid, uint256[] includedBitmap, uint32[] signers
    );
    /// @notice A round was closed without a result (too few updates or no quorum in its windows).
    event RoundFailed(uint256 indexed runId, uint256 indexed round, uint32 submissions, address closedBy);
    /// @notice The run's `rounds`-th round finalised (round id `lastRound`, state hash `finalMergedSha256`):
    /// the run is Completed and no further round opens.
    event RunCompleted(uint256 indexed runId, uint32 rounds, uint256 lastRound, bytes32 finalMergedSha256);
    /// @notice A member's update was part of a finalised round's included set.
    event ContributionAccepted(
        uint256 indexed runId, uint256 indexed round, address indexed member, bytes32 sha256
    );
    /// @notice An unlearning request was filed; the subject can no longer submit or vote in the run.
    event UnlearningRequested(
        uint256 indexed requestId,
        uint256 indexed runId,
        address indexed subject,
        uint32 fromRound,
        bytes32 reasonHash,
        address requester
    );
    /// @notice A member voted the recomputed model of an unlearning request.
    event UnlearningVoted(
        uint256 indexed requestId, address indexed member, bytes32 modelSha256, string modelCid, uint32 votes
    );
    /// @notice A quorum agreed on the recomputed model; the request is fulfilled.
    event UnlearningFulfilled(
        uint256 indexed requestId,
        uint256 indexed runId,
        bytes32 indexed modelSha256,
        string modelCid,
        uint32 votes
    );

    /// @notice No run has this id.
    error RunsUnknownRun(uint256 runId);
    /// @notice `quorumBps` is outside 1..10000.
    error RunsInvalidQuorum(uint16 quorumBps);
    /// @notice A window length is zero.
    error RunsInvalidWindow(uint32 submitBlocks, uint32 voteBlocks);
    /// @notice `startBlock` lies before the current block.
    error RunsStartInPast(uint64 startBlock, uint256 currentBlock);
    /// @notice A hash argument is zero.
    error RunsZeroHash();
    /// @notice The caller is not the run's governance.
    error RunsNotGovernance(uint256 runId, address account);
    /// @notice The run is allowlisted and the account is not on the allowlist.
    error RunsNotAllowed(uint256 runId, address account);
    /// @notice The account is already a member.
    error RunsAlreadyMember(uint256 runId, address account);
    /// @notice The account is not a member of the run.
    error RunsNotMember(uint256 runId, address account);
    /// @notice The member joined after the round started, so it is not in the round's eligible set.
    error RunsNotEligible(uint256 runId, uint256 round, address account);
    /// @notice The member is the subject of an unlearning request and may no longer take part.
    error RunsMemberBanned(uint256 runId, address account);
    /// @notice The round is already closed (finalised or failed).
    error RunsRoundClosed(uint256 runId, uint256 round, RoundStatus status);
    /// @notice The round has not opened yet (`currentRound` is the open one).
    error RunsRoundNotOpen(uint256 runId, uint256 round, uint256 currentRound);
    /// @notice The submit window opens at block `opensAt`.
    error RunsSubmitWindowNotOpen(uint256 runId, uint256 round, uint64 opensAt);
    /// @notice The submit window closed at block `closedAt` (exclusive end).
    error RunsSubmitWindowClosed(uint256 runId, uint256 round, uint64 closedAt);
    /// @notice The member already submitted an update in this round.
    error RunsAlreadySubmitted(uint256 runId, uint256 round, address account);
    /// @notice The vote window opens at block `opensAt`.
    error RunsVoteWindowNotOpen(uint256 runId, uint256 round, uint64 opensAt);
    /// @notice The vote window closed at block `closedAt` (exclusive end).
    error RunsVoteWindowClosed(uint256 runId, uint256 round, uint64 closedAt);
    /// @notice The member already voted in this round.
    error RunsAlreadyVoted(uint256 runId, uint256 round, address account);
    /// @notice A late vote on `round` from a member that already voted in the later round `votedRound`.
    error RunsLaterRoundVoted(uint256 runId, uint256 round, address account, uint256 votedRound);
    /// @notice The run is Completed after `rounds` finalised rounds (the last one `lastRound`): no round opens,
    /// and no update, vote (other than a late one), finalisation, close or join is taken.
    error RunsRunCompleted(uint256 runId, uint32 rounds, uint256 lastRound);
    /// @notice The round has fewer updates than the run's minimum.
    error RunsTooFewUpdates(uint256 runId, uint256 round, uint32 submissions, uint32 minUpdates);
    /// @notice The round can still finalise until block `closesAt`.
    error RunsRoundStillOpen(uint256 runId, uint256 round, uint64 closesAt);
    /// @notice The round is not finalised.
    error RunsRoundNotFinalized(uint256 runId, uint256 round);
    /// @notice The round's contributions were already recorded.
    error RunsContributionsAlreadyRecorded(uint256 runId, uint256 round);
    /// @notice The given included set does not hash to the finalised `includedSetHash`.
    error RunsIncludedSetMismatch(uint256 runId, uint256 round, bytes32 expected, bytes32 actual);
    /// @notice The included set is not strictly ascending by address or its arrays differ in length; for a
    /// committee bitmap: a bit at `index` >= memberSnapshot, or a trailing zero word (`index` = its first bit).
    error RunsIncludedSetMalformed(uint256 runId, uint256 round, uint256 index);
    /// @notice An included account did not submit in this round as an eligible member.
    error RunsIncludedNotSubmitter(uint256 runId, uint256 round, address account);
    /// @notice Only the subject itself or the run's governance may request unlearning.
    error RunsNotSubjectOrGovernance(uint256 runId, address subject, address account);
    /// @notice `fromRound` lies after the current round.
    error RunsInvalidFromRound(uint256 runId, uint32 fromRound, uint32 currentRound);
    /// @notice No unlearning request has this id.
    error RunsUnknownRequest(uint256 requestId);
    /// @notice The unlearning request is already fulfilled.
    error RunsRequestNotPending(uint256 requestId);
    /// @notice The member joined after the unlearning request was filed, so it is not in its eligible set.
    error RunsNotEligibleForRequest(uint256 requestId, address account);
    /// @notice The member already voted on this unlearning request.
    error RunsAlreadyVotedUnlearning(uint256 requestId, address account);
    /// @notice The call needs a committee run and the run is an ordinary one.
    error RunsNotCommitteeRun(uint256 runId);
    /// @notice The run is a committee run: rounds close only with `finalizeCommitteeRound`.
    error RunsCommitteeRun(uint256 runId);
    /// @notice The round's committee is not drawn: its start block is not mined yet or its hash is no
    /// longer available (older than 256 blocks).
    error RunsCommitteeNotDrawn(uint256 runId, uint256 round);
    /// @notice `signers` is not strictly ascending or its length differs from `signatures` at `position`.
    error RunsSignersMalformed(uint256 runId, uint256 round, uint256 position);
    /// @notice Member index `index` is not on the round's committee.
    error RunsNotCommittee(uint256 runId, uint256 round, uint32 index);
    /// @notice The signature of committee member `index` is malformed, high-s, or not by that member.
    error RunsBadSignature(uint256 runId, uint256 round, uint32 index);
    /// @notice Fewer committee signatures than the committee's quorum.
    error RunsNoQuorum(uint256 runId, uint256 round, uint256 votes, uint32 quorum);

    /// @notice Create a run; returns its id (a counter starting at 1).
    /// @param params The run's specification hash/CID and consensus parameters.
    function createRun(RunParams calldata params) external returns (uint256 runId);

    /// @notice Allow or disallow accounts to join an allowlisted run (governance only).
    /// @param runId The run.
    /// @param accounts Accounts to update.
    /// @param allowed New allowlist state.
    function setAllowed(uint256 runId, address[] calldata accounts, bool allowed) external;

    /// @notice Join a run as the caller; eligible from the first round that opens after this block (an Active
    /// run only).
    /// @param runId The run.
    function join(uint256 runId) external;

    /// @notice Commit the caller's update for the open round, inside its submit window, once.
    /// @param runId The run.
    /// @param round The open round.
    /// @param sha256Hash sha256 of the update artifact (safetensors bytes).
    /// @param cid IPFS CID of the update artifact.
    /// @param numSamples Number of local training samples behind the update.
    function submitUpdate(uint256 runId, uint256 round, bytes32 sha256Hash, string calldata cid, uint64 numSamples)
        external;

    /// @notice Vote the merged model of the open round, inside its vote window, once; finalises on quorum.
    /// On a finalised round of an ordinary run the vote is late: taken from an eligible member that has not
    /// voted in it (nor in a later round) until max(voteEnd, closedBlock + voteBlocks), it emits
    /// `LateVoteCast` and changes nothing else.
    /// @param runId The run.
    /// @param round The open round.
    /// @param mergedSha256 State hash of the merged model (docs/specification.md: a hash over the tensors, not
    /// the sha256 of the artifact file).
    /// @param mergedCid IPFS CID of the merged model artifact.
    /// @param includedSetHash keccak256(abi.encode(address[] members, bytes32[] sha256s)), members ascending.
    function vote(uint256 runId, uint256 round, bytes32 mergedSha256, string calldata mergedCid, bytes32 includedSetHash)
        external;

    /// @notice Finalise the open round of a committee run with its committee's EIP-712 `CommitteeVote`
    /// signatures (anyone may send it; committee members do). Counts each included member's contribution.
    /// @param result The round's result; every signature is over `committeeVoteDigest(result)`.
    /// @param signers Committee member indices, strictly ascending.
    /// @param signatures 65-byte r || s || v (v 27 or 28, s in the lower half) of each signer.
    function finalizeCommitteeRound(
        CommitteeResult calldata result,
        uint32[] calldata signers,
        bytes[] calldata signatures
    ) external;

    /// @notice Close the open round as failed once it can no longer finalise (anyone).
    /// @param runId The run.
    /// @param round The open round.
    function closeFailedRound(uint256 runId, uint256 round) external;

    /// @notice Record the accepted contributions of a finalised round from its included set (anyone, once).
    /// @param runId The run.
    /// @param round A finalised round.
    /// @param included Included members, strictly ascending.
    /// @param sha256s The included update hash of each member.
    function recordContributions(
        uint256 runId,
        uint256 round,
        address[] calldata included,
        bytes32[] calldata sha256s
    ) external;

    /// @notice File an unlearning request for `subject` (the subject itself or governance); bans the subject.
    /// @param runId The run.
    /// @param subject The member whose data is to be forgotten.
    /// @param fromRound First round whose updates from the subject are to be removed.
    /// @param reasonHash Hash of an off-chain reason document.
    function requestUnlearning(uint256 runId, address subject, uint32 fromRound, bytes32 reasonHash)
        external
        returns (uint256 requestId);

    /// @notice Vote the recomputed model of a pending unlearning request, once; fulfils it on quorum.
    /// @param requestId The request.
    /// @param modelSha256 State hash of the recomputed model (docs/specification.md), not the file's sha256.
    /// @param modelCid IPFS CID of the recomputed model artifact.
    function voteUnlearning(uint256 requestId, bytes32 modelSha256, string calldata modelCid) external;

    /// @notice The run's configuration and state.
    function runInfo(uint256 runId) external view returns (RunView memory);
    /// @notice A round's windows, eligible set, tally target, status and result.
    function roundInfo(uint256 runId, uint256 round) external view returns (RoundView memory);
    /// @notice A member's record in a run.
    function memberInfo(uint256 runId, address account) external view returns (MemberView memory);
    /// @notice All members of a run, in join order (index order).
    function members(uint256 runId) external view returns (address[] memory);
    /// @notice Whether an account may join an allowlisted run.
    function isAllowed(uint256 runId, address account) external view returns (bool);
    /// @notice Votes so far for one merged result of a round.
    function votesFor(uint256 runId, uint256 round, bytes32 mergedSha256, string calldata mergedCid, bytes32 includedSetHash)
        external
        view
        returns (uint32);
    /// @notice An unlearning request.
    function unlearningRequest(uint256 requestId) external view returns (RequestView memory);
    /// @notice Number of runs created so far (ids are 1..runCount).
    function runCount() external view returns (uint256);
    /// @notice Number of unlearning requests so far (ids are 1..requestCount).
    function requestCount() external view returns (uint256);
    /// @notice Votes needed for quorum: max(1, ceil(quorumBps * eligible / 10000)).
    function quorumOf(uint32 eligible, uint16 quorumBps) external pure returns (uint32);
    /// @notice The committee of a committee run's round: the min(committeeSize, memberSnapshot) member
    /// indices with the smallest tickets uint256(keccak256(abi.encode(seed, i))), ties to the smaller index,
    /// seed = keccak256(abi.encode(blockhash(startBlock), runId, round)); returned in ascending index order.
    function committeeOf(uint256 runId, uint256 round) external view returns (uint32[] memory indices);
    /// @notice The EIP-712 digest of an `UpdateCommit` (cidHash = keccak256(bytes(cid))) in this registry.
    function commitDigest(uint256 runId, uint256 round, bytes32 sha256Hash, bytes32 cidHash, uint64 numSamples)
        external
        view
        returns (bytes32);
    /// @notice The EIP-712 digest of a `CommitteeVote` on `result` in this registry (what committee members sign).
    function committeeVoteDigest(CommitteeResult calldata result) external view returns (bytes32);
}

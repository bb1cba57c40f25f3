// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRuns} from "../src/interfaces/IRuns.sol";
import {RunsFixture} from "./utils/RunsFixture.sol";
import {Vm} from "./utils/Test.sol";

/// @notice Drives one run with random members, submissions, votes, failures, unlearning requests and time,
/// and keeps ghost counts of what the contract accepted (forge calls its functions in random sequences).
contract RunsHandler {
    Vm private constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 public constant ACTORS = 6;
    string public constant CID = "bafymerged";

    IRuns public immutable runs;
    uint256 public immutable runId;
    uint256 public joins;
    uint256 public bans;
    mapping(uint256 round => mapping(address account => uint256)) public acceptedSubmits;
    mapping(uint256 round => mapping(address account => uint256)) public acceptedVotes;
    mapping(uint256 round => uint256) public submitsInRound;
    uint256 public lateVotes;
    uint256 public maxDoubleCount; // the most accepted submits or votes of one member in one round

    constructor(IRuns runs_, uint256 runId_) {
        runs = runs_;
        runId = runId_;
    }

    function actor(uint256 seed) public pure returns (address) {
        return vm.addr(1 + seed % ACTORS);
    }

    function result(uint256 choice) public pure returns (bytes32) {
        return keccak256(abi.encode("model", choice % 2)); // two competing results
    }

    function join(uint256 seed) external {
        vm.prank(actor(seed));
        try runs.join(runId) {
            joins += 1;
        } catch {}
    }

    function submit(uint256 seed) external {
        address who = actor(seed);
        uint256 round = runs.runInfo(runId).currentRound;
        vm.prank(who);
        try runs.submitUpdate(runId, round, keccak256(abi.encode(round, who)), "bafyupdate", 1) {
            _count(acceptedSubmits[round][who] += 1);
            submitsInRound[round] += 1;
        } catch {}
    }

    function vote(uint256 seed, uint256 choice) external {
        address who = actor(seed);
        uint256 round = runs.runInfo(runId).currentRound;
        vm.prank(who);
        try runs.vote(runId, round, result(choice), CID, bytes32(0)) {
            _count(acceptedVotes[round][who] += 1);
        } catch {}
    }

    /// @dev A vote on the round before the current one (late when it finalised) by the first actor from
    /// `seed` on that the contract takes: counted as that round's vote.
    function lateVote(uint256 seed, uint256 choice) external {
        uint256 current = runs.runInfo(runId).currentRound;
        if (current == 0) return;
        for (uint256 j = 0; j < ACTORS; ++j) {
            address who = actor(seed % ACTORS + j);
            vm.prank(who);
            try runs.vote(runId, current - 1, result(choice), CID, bytes32(0)) {
                _count(acceptedVotes[current - 1][who] += 1);
                lateVotes += 1;
                return;
            } catch {}
        }
    }

    function closeFailed() external {
        try runs.closeFailedRound(runId, runs.runInfo(runId).currentRound) {} catch {}
    }

    function requestUnlearning(uint256 seed) external {
        address who = actor(seed);
        vm.prank(who);
        try runs.requestUnlearning(runId, who, 0, bytes32(0)) {
            bans += 1;
        } catch {}
    }

    function advance(uint256 blocks) external {
        vm.roll(block.number + 1 + blocks % 12);
    }

    function _count(uint256 count) private {
        if (count > maxDoubleCount) maxDoubleCount = count;
    }
}

/// @notice Invariants of `Runs` over random call sequences of :contract:`RunsHandler`.
contract RunsInvariantTest is RunsFixture {
    RunsHandler internal handler;

    function setUp() public override {
        super.setUp();
        uint256 runId = runs.createRun(params(6_666, 1, IRuns.Admission.Open));
        handler = new RunsHandler(runs, runId);
    }

    /// @dev forge reads the fuzzed targets from this function (forge-std's StdInvariant protocol).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_noMemberSubmitsOrVotesTwiceInARound() public view {
        assertLe(handler.maxDoubleCount(), 1, "accepted submits or votes of one member in one round");
    }

    function invariant_membersAndBansMatchTheAcceptedCalls() public view {
        IRuns.RunView memory info = runs.runInfo(handler.runId());
        assertEq(info.memberCount, handler.joins(), "memberCount");
        assertEq(info.bannedCount, handler.bans(), "bannedCount");
        assertEq(runs.members(handler.runId()).length, handler.joins(), "member list");
    }

    function invariant_everyRoundIsConsistentWithItsEligibleSet() public view {
        uint256 runId = handler.runId();
        uint256 current = runs.runInfo(runId).currentRound;
        for (uint256 r = 0; r <= current; ++r) {
            IRuns.RoundView memory rd = runs.roundInfo(runId, r);
            assertEq(rd.submissions, handler.submitsInRound(r), "submissions counted once each");
            assertLe(rd.submissions, rd.memberSnapshot, "no more submissions than members in the snapshot");
            assertLe(rd.eligible, rd.memberSnapshot, "eligible within the snapshot");
            assertTrue((r < current) == (rd.status != IRuns.RoundStatus.Open), "closed exactly the past rounds");
            if (rd.status == IRuns.RoundStatus.Finalized) {
                uint32 votes = runs.votesFor(runId, r, rd.mergedSha256, handler.CID(), bytes32(0));
                assertTrue(votes >= rd.quorum, "a finalised result has its quorum of equal votes");
                assertTrue(
                    rd.mergedSha256 == handler.result(0) || rd.mergedSha256 == handler.result(1), "a voted result"
                );
            } else {
                assertEq(rd.mergedSha256, bytes32(0), "no result without finalisation");
            }
        }
    }
}

"""``ledger.activity.BlockClock``: the head is polled rarely while no block can be due, often once one may."""

from __future__ import annotations

import pytest

from ledger.activity import BlockClock
from ledger.errors import LedgerError


def _clock_on_one_second_blocks() -> BlockClock:
    clock = BlockClock(0.1)
    for head, t in ((10, 0.05), (11, 1.0), (12, 2.0), (13, 3.0)):
        clock.seen(head, t)
    return clock


def test_it_polls_fast_until_it_has_timed_two_head_changes() -> None:
    clock = BlockClock(0.1)
    clock.seen(10, 0.05)  # the first head: when it appeared is unknown
    assert clock.delay(0.06) == 0.1
    clock.seen(11, 1.0)
    assert clock.interval is None
    assert clock.delay(1.01) == 0.1
    clock.seen(12, 2.0)
    assert clock.interval == pytest.approx(1.0)


def test_after_a_new_head_it_waits_until_shortly_before_the_next_is_due() -> None:
    clock = _clock_on_one_second_blocks()

    assert clock.delay(3.0) == pytest.approx(0.8)  # due at 4.0; polling speeds up a fifth early
    assert clock.delay(3.5) == pytest.approx(0.3)
    assert clock.delay(3.9) == 0.1  # due now or late: every fast_s
    clock.seen(13, 3.9)  # the same head: nothing learned
    assert clock.delay(4.2) == 0.1


def test_polls_per_block_fall_from_ten_to_about_three() -> None:
    clock = _clock_on_one_second_blocks()  # block 10 + n is mined at n seconds
    now, polls = 3.0, 0
    while now < 13.0:  # ten more blocks
        now += clock.delay(now)
        polls += 1
        clock.seen(10 + int(now), now)
    assert 20 <= polls <= 35  # against 100 at a flat 0.1 s


def test_skipped_heads_divide_the_interval_and_the_median_ignores_one_stall() -> None:
    clock = _clock_on_one_second_blocks()
    clock.seen(15, 5.0)  # two blocks in two seconds
    clock.seen(16, 26.0)  # one block after a 21 s stall
    assert clock.interval == pytest.approx(1.0)


def test_slow_or_irregular_blocks_are_polled_at_least_every_max_delay() -> None:
    clock = BlockClock(0.1, max_delay_s=2.0)
    for head, t in ((1, 0.0), (2, 12.0), (3, 24.0), (4, 36.0)):
        clock.seen(head, t)
    assert clock.interval == pytest.approx(12.0)
    assert clock.delay(36.0) == 2.0
    assert clock.delay(46.5) == pytest.approx(0.5)  # due at 48, lead capped at 1 s: fast from 47 on
    assert clock.delay(47.5) == 0.1


def test_a_shorter_chain_after_a_reorganisation_restarts_the_timing() -> None:
    clock = _clock_on_one_second_blocks()
    clock.seen(11, 3.5)
    assert clock.delay(3.6) == 0.1
    clock.seen(12, 4.5)
    assert clock.delay(4.5) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "kwargs", [{"fast_s": 0.0}, {"fast_s": 0.1, "lead": 1.0}, {"fast_s": 0.5, "max_delay_s": 0.2}]
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LedgerError, match="BlockClock needs fast_s > 0"):
        BlockClock(**kwargs)

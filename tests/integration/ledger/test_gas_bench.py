"""bench/gas.py's per-round comparison on a real anvil, small: both designs measured, committee cheaper."""

from __future__ import annotations

import pytest

from bench.gas import compare

pytestmark = pytest.mark.integration


def test_compare_measures_both_designs_per_member_per_round() -> None:
    result = compare([3, 6], committee_size=3, rounds=1)

    rows = {row["members"]: row for row in result["rows"]}
    assert set(rows) == {3, 6}
    for n, row in rows.items():
        assert (row["committee"], row["quorum"]) == (3, 2)
        assert len(row["today_round_gas"]) == len(row["committee_round_gas"]) == 1
        assert row["today_per_member"] == round(row["today_round_gas"][0] / n)
        assert row["committee_per_member"] < row["today_per_member"]
        # a third signature (one more ecrecover and 65 calldata bytes) costs more than the two a quorum needs;
        # with k == quorum the two variants send the same signatures and differ only by calldata noise
        assert row["committee_all_signatures_per_member"] > row["committee_per_member"]
    # one transaction per committee round whatever N is, so its share per member halves from 3 to 6
    assert rows[6]["committee_per_member"] < 0.6 * rows[3]["committee_per_member"]
    assert result["meets_target"] is None  # N = 16 not measured

"""Any number of members: dev accounts past 10, the cluster's and the demo's size checks (no chain needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger.chain import dev_accounts
from ledger.errors import LedgerConfigError
from node.devnet.anvil import AnvilConfig
from node.devnet.cluster import LocalCluster, available_memory_mib, check_capacity
from node.devnet.demo import CATEGORIES, DemoConfig


def test_dev_accounts_past_ten_are_the_mnemonic_accounts_anvil_funds() -> None:
    accounts = dev_accounts("anvil", 40)

    assert len({a.address for a in accounts}) == 40
    # anvil's documented first account of the `test … junk` mnemonic, and index 39 derived on the same path
    assert accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert dev_accounts("anvil", 10) == accounts[:10]


def test_dev_accounts_refuses_bad_counts() -> None:
    with pytest.raises(LedgerConfigError, match="`count` must be >= 1, got 0"):
        dev_accounts("anvil", 0)
    with pytest.raises(LedgerConfigError, match="`count` must be <= 10 on py-evm, got 11"):
        dev_accounts("py-evm", 11)


def test_anvil_config_takes_any_positive_account_count() -> None:
    assert AnvilConfig(accounts=65).accounts == 65
    with pytest.raises(ValueError, match="`accounts` must be >= 1, got 0"):
        AnvilConfig(accounts=0)


def test_cluster_needs_one_funded_account_per_member_plus_the_deployer(tmp_path: Path) -> None:
    devnet = SimpleNamespace(accounts=["0x"] * 17)

    assert LocalCluster(tmp_path, devnet, 16).size == 16
    with pytest.raises(ValueError, match=r"`size` 17 needs 18 funded dev accounts .*\(accounts=18\)"):
        LocalCluster(tmp_path, devnet, 17)
    with pytest.raises(ValueError, match="`size` must be >= 1, got 0"):
        LocalCluster(tmp_path, devnet, 0)


def test_capacity_check_names_need_and_availability() -> None:
    check_capacity(16, 350, available_mib=16 * 350)  # fits exactly
    with pytest.raises(ValueError, match=r"`size` 64 cannot run .* about 22400 MiB \(350 MiB each\), 8000"):
        check_capacity(64, 350, available_mib=8000)
    with pytest.raises(ValueError, match="`node_memory_mib` must be >= 1"):
        check_capacity(1, 0, available_mib=8000)


def test_available_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    2097152 kB\n")

    assert available_memory_mib(meminfo) == 2048
    meminfo.write_text("MemTotal: 1 kB\n")
    assert available_memory_mib(meminfo) is None
    assert available_memory_mib(tmp_path / "missing") is None


def test_demo_takes_more_nodes_than_categories() -> None:
    config = DemoConfig(nodes=len(CATEGORIES) + 2, model="tiny")

    assert config.sources[: len(CATEGORIES)] == [f"chatterbot:{c}" for c in CATEGORIES]
    assert config.sources[len(CATEGORIES) :] == [f"chatterbot:{c}" for c in CATEGORIES[:2]]
    assert DemoConfig(nodes=3).sources == ["chatterbot:computers", "chatterbot:humor", "chatterbot:money"]
    with pytest.raises(ValueError, match="`nodes` must be >= 1, got 0"):
        DemoConfig(nodes=0)

"""Tests for node.config: the documented template, loading and overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.config import NodeConfig, NodeConfigError, load_config, render_toml


def test_rendered_template_documents_every_field_and_loads_back(tmp_path: Path) -> None:
    config = NodeConfig().replace(
        **{"chain.registry": "0x" + "ab" * 20, "p2p.bootstrap": ["/ip4/1.2.3.4/tcp/1/p2p/x"]}
    )
    text = render_toml(config)
    path = tmp_path / "config.toml"
    path.write_text(text)

    loaded = load_config(path)

    assert loaded == config
    for section in dataclasses.fields(config):
        for f in dataclasses.fields(getattr(config, section.name)):
            assert f"# {f.metadata['help']}\n{f.name} = " in text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[chain]\nrpc_url = "ftp://x"\n', r"\[chain\].*rpc_url"),
        ('[chain]\nregistry = "0x12"\n', "registry"),
        ("[p2p]\nlisten_port = 70000\n", "listen_port"),
        ("[training]\nheld_out_fraction = 1.5\n", "held_out_fraction"),
        ("[nodes]\n", "unknown table"),
        ("[p2p]\nport = 1\n", "unknown key"),
        ('[training]\neval_sources = "chatterbot:humor"\n', r"\[training\].*eval_sources.*list"),
        ('[training]\neval_sources = ["chatterbot:humor", ""]\n', r"\[training\].*eval_sources"),
        ("[training]\neval_sources = [3]\n", r"\[training\].*eval_sources"),
        ("[training]\neval_max_examples = -1\n", r"\[training\].*eval_max_examples"),
        ("[training]\neval_answers = -2\n", r"\[training\].*eval_answers"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)

    with pytest.raises(NodeConfigError, match=message):
        load_config(path)


def test_replace_rejects_unknown_keys() -> None:
    with pytest.raises(NodeConfigError, match="unknown config key"):
        NodeConfig().replace(**{"chain.colour": "red"})


def test_eval_sources_parse_to_a_tuple_and_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[training]\neval_sources = ["chatterbot:humor", "others/money.jsonl"]\n'
        "eval_max_examples = 4\neval_answers = 0\n"
    )

    training = load_config(path).training

    assert training.eval_sources == ("chatterbot:humor", "others/money.jsonl")
    assert (training.eval_max_examples, training.eval_answers) == (4, 0)
    assert NodeConfig().training.eval_sources == ()
    overridden = NodeConfig().replace(**{"training.eval_sources": ["/data/a.jsonl"]})
    assert overridden.training.eval_sources == ("/data/a.jsonl",)


def test_the_p2p_section_is_p2p_configs_fields_with_the_nodes_defaults() -> None:
    from node.config import NODE_P2P_DEFAULTS, P2PSection
    from p2p.config import P2PConfig

    host = {f.name: f for f in dataclasses.fields(P2PConfig)}
    section = dataclasses.fields(P2PSection)

    for f in section:
        assert f.name in host, f.name
        assert f.metadata["help"] == host[f.name].metadata["help"]
        assert f.default == NODE_P2P_DEFAULTS.get(f.name, host[f.name].default), f.name
    assert set(NODE_P2P_DEFAULTS) <= {f.name for f in section}


def test_the_p2p_section_gives_the_host_configuration() -> None:
    from p2p.config import P2PConfig

    peer = "/ip4/127.0.0.1/tcp/4001/p2p/16Uiu2HAm4Ms862Gnqafssgvik4JJ1LuqWMcKNipq4nm2UaoLRbeP"
    config = NodeConfig().replace(**{"p2p.listen_port": 4002, "p2p.bootstrap": (peer,)})

    host = config.p2p.p2p_config()

    assert host == P2PConfig(listen_port=4002, bootstrap=(peer,), fetch_timeout_s=30.0)
    assert host.fetch_parallelism == P2PConfig().fetch_parallelism

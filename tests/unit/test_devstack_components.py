"""The component table of devstack: start order, and what supervisord is told."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from devstack.common import DevstackError
from devstack.components import Component, in_start_order
from devstack.supervisor import render_config


def _component(name: str, *depends_on: str, group: str | None = None) -> Component:
    return Component(name, ["run", name, "--flag=100%"], ready=lambda: True,
                     log=Path(f"/logs/{name}.log"), depends_on=depends_on, group=group,
                     env={"MODE": "a,b"})


def test_components_start_after_their_dependencies() -> None:
    table = [_component("gateway", "api-1", "api-2"), _component("api-1", "db"),
             _component("api-2", "db"), _component("db")]
    assert [c.name for c in in_start_order(table)] == ["db", "api-1", "api-2", "gateway"]


def test_unknown_dependencies_and_cycles_are_refused() -> None:
    with pytest.raises(DevstackError, match="unknown"):
        in_start_order([_component("a", "b")])
    with pytest.raises(DevstackError, match="cycle"):
        in_start_order([_component("a", "b"), _component("b", "a")])


def test_supervisord_config_starts_nothing_itself_and_stops_in_reverse_order() -> None:
    table = [_component("api", "kafka-1", "kafka-2"), _component("kafka-2", group="kafka"),
             _component("kafka-1", group="kafka")]
    text = render_config(Path("/stack"), Path("/stack/s.sock"), table)
    config = configparser.RawConfigParser()
    config.read_string(text)
    api = config["program:api"]
    assert api["autostart"] == "false"
    assert api["autorestart"] == "false"  # a killed process stays down until `restart`
    assert api["command"] == "run api --flag=100%%"  # supervisord expands %(...)s
    assert api["environment"] == 'MODE="a,b"'
    assert api["stdout_logfile"] == "/logs/api.log"
    # supervisord stops groups in reverse priority: the service before the brokers, and the
    # brokers of one group together.
    assert int(api["priority"]) > int(config["group:kafka"]["priority"])
    assert config["group:kafka"]["programs"] == "kafka-2,kafka-1"
    assert "group:api" not in config

"""The HA PostgreSQL of devstack: ports kept with the data, Patroni's settings, HAProxy's
routing rules, what ``status --json`` shows, and one shape of PostgreSQL per directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from devstack import haproxy
from devstack.common import DevstackError, find_command
from devstack.patroni import HaPostgres
from devstack.stack import _check_postgres_shape


def test_ports_are_chosen_once_and_kept_with_the_data(tmp_path: Path) -> None:
    first = HaPostgres.open(tmp_path / "ha", avoid={1})
    ports = first.state["ports"]
    flat = [ports["etcd_client"], ports["etcd_peer"], ports["haproxy_primary"],
            ports["haproxy_replicas"], ports["haproxy_stats"],
            *(p for member in ports["members"] for p in member)]
    assert len(set(flat)) == len(flat) == 11
    again = HaPostgres.open(tmp_path / "ha", avoid=set(flat))
    assert again.state == first.state


def test_members_fail_over_fast_and_never_to_an_unsynchronised_standby(tmp_path: Path) -> None:
    ha = HaPostgres.open(tmp_path / "ha", avoid=set())
    config = ha.member_config(ha.members[1], Path("/usr/lib/postgresql/15/bin"))
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (10, 2, 4)
    assert dcs["ttl"] >= dcs["loop_wait"] + 2 * dcs["retry_timeout"]  # Patroni's own rule
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["use_slots"] is True
    member = ha.members[1]
    assert config["name"] == "patroni-2"
    assert config["restapi"]["listen"] == f"127.0.0.1:{member.rest_port}"
    assert config["postgresql"]["listen"] == f"127.0.0.1:{member.postgres_port}"
    assert config["postgresql"]["data_dir"] == str(ha.data_dir("patroni-2"))
    assert config["etcd3"]["hosts"] == f"127.0.0.1:{ha.etcd.client_port}"
    yaml.safe_dump(config)  # what write_files renders


def test_haproxy_sends_writes_to_the_leader_and_reads_to_replicas(tmp_path: Path) -> None:
    ha = HaPostgres.open(tmp_path / "ha", avoid=set())
    text = haproxy.render(ha.haproxy_ports, ha.members)
    primary, replicas = text.split("listen primary")[1].split("listen replicas")
    assert "option httpchk OPTIONS /primary" in primary
    assert "option httpchk OPTIONS /replica" in replicas
    for section in (primary, replicas):
        assert "on-marked-down shutdown-sessions" in section
        for m in ha.members:
            assert f"server {m.name} 127.0.0.1:{m.postgres_port} " in section
            assert f"check port {m.rest_port}" in section
    binary = find_command("haproxy")
    if binary is not None:  # the syntax, as HAProxy itself reads it
        config = tmp_path / "haproxy.cfg"
        config.write_text(text)
        checked = subprocess.run(haproxy.check_config(binary, config), capture_output=True,
                                 text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_status_shows_write_and_read_urls_and_each_members_api(tmp_path: Path) -> None:
    ha = HaPostgres.open(tmp_path / "ha", avoid=set())
    shown = ha.describe(["sso", "loyalty"])
    hp = ha.haproxy_ports
    assert shown["haproxy"]["urls"] == {
        "write": {db: f"postgresql://postgres@127.0.0.1:{hp.primary}/{db}"
                  for db in ("sso", "loyalty")},
        "read": {db: f"postgresql://postgres@127.0.0.1:{hp.replicas}/{db}"
                 for db in ("sso", "loyalty")}}
    for m in ha.members:
        assert shown[m.name]["urls"] == {"rest": f"http://127.0.0.1:{m.rest_port}"}
        assert shown[m.name]["data_dir"].endswith(f"{m.name}/data")
    assert shown["etcd"]["urls"] == {"client": f"http://127.0.0.1:{ha.etcd.client_port}"}


def test_a_directory_holds_one_shape_of_postgres(tmp_path: Path) -> None:
    _check_postgres_shape(tmp_path, "ha")  # nothing there yet
    (tmp_path / "primary").mkdir()
    _check_postgres_shape(tmp_path, "simple")
    with pytest.raises(DevstackError, match="--postgres simple"):
        _check_postgres_shape(tmp_path, "ha")

"""Renders amphora haproxy.cfg files with Octavia's own template code.

The controller's path: octavia.common.jinja.haproxy.combined_listeners's
JinjaTemplater.build_config, fed with Octavia's own sample object builders
(octavia/tests/unit/common/sample_configs/sample_configs_combined.py) and
the knobs below replaced on them. Run with the venv of
scripts/octavia/setup.sh:

    target/octavia-venv/bin/python scripts/octavia/render_haproxy_cfg.py OUT_DIR < cases.json

cases.json is a list of load balancers:

    [{"name": "case-1", "topology": "SINGLE" | "ACTIVE_STANDBY",
      "vip": "10.0.0.2",
      "lb_id": "...",                    # optional: the ids, e.g. the ones
      "listeners": [{"port": 80,         # a real Octavia API gave
                     "id": "...", "pool_id": "...",   # optional
                     "algorithm": "ROUND_ROBIN" | "LEAST_CONNECTIONS" | "SOURCE_IP",
                     "persistence": false,          # SOURCE_IP session persistence
                     "pool_protocol": "TCP" | "PROXY" | "PROXYV2",
                     "monitor": null | "TCP" | "HTTP" | "HTTPS" | "TLS-HELLO",
                     "monitor_ip_port": false,      # members' monitor_address/port
                     "connection_limit": -1,
                     "timeouts": [50000, 5000, 50000],   # client, connect, member data (ms)
                     "backup": false, "disabled": false, "weight0": false,
                     "members": [{"ip": "10.0.0.99", "port": 82, "weight": 13,
                                  "id": "...",       # optional
                                  "backup": false, "enabled": true,
                                  "monitor_address": null, "monitor_port": null}]  # optional
                    }]}]

Each case is written to OUT_DIR/<name>.cfg; for ACTIVE_STANDBY, the local
peer name (what the agent passes with -L) to OUT_DIR/<name>.peer.
"""

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

from octavia.common.jinja.haproxy.combined_listeners import jinja_cfg  # noqa: E402
from octavia.tests.unit.common.sample_configs import (  # noqa: E402
    sample_configs_combined as sc,
)
from octavia.common import constants as c  # noqa: E402
from octavia.common import utils as octavia_utils  # noqa: E402


def listener_tuple(lb_id, topology, vip, index, spec):
    monitor = spec.get("monitor")
    persistence = bool(spec.get("persistence"))
    client, connect, member = spec.get("timeouts", [50000, 5000, 50000])
    listener = sc.sample_listener_tuple(
        proto=c.PROTOCOL_TCP,
        monitor=monitor is not None,
        monitor_proto=monitor or c.HEALTH_MONITOR_TCP,
        monitor_ip_port=bool(spec.get("monitor_ip_port")),
        persistence=persistence,
        persistence_type=c.SESSION_PERSISTENCE_SOURCE_IP if persistence else None,
        be_proto=spec.get("pool_protocol", "TCP"),
        backup_member=bool(spec.get("backup")),
        disabled_member=bool(spec.get("disabled")),
        connection_limit=spec.get("connection_limit", -1),
        timeout_client_data=client,
        timeout_member_connect=connect,
        timeout_member_data=member,
        topology=topology,
        id=spec.get("id", "listener-%d" % index),
    )

    def pool(p):
        members = list(p.members)
        if spec.get("members") is not None:
            template = members[0]
            members = [
                template._replace(
                    id=m.get("id", "%s-member-%d" % (p.id, i + 1)),
                    ip_address=m["ip"],
                    protocol_port=m["port"],
                    weight=m.get("weight", 1),
                    backup=bool(m.get("backup", False)),
                    enabled=bool(m.get("enabled", True)),
                    monitor_address=m.get("monitor_address"),
                    monitor_port=m.get("monitor_port"),
                )
                for i, m in enumerate(spec["members"])
            ]
        if spec.get("weight0"):
            members[0] = members[0]._replace(weight=0)
        if spec.get("backup"):
            members[-1] = members[-1]._replace(backup=True)
        if spec.get("disabled"):
            members[-1] = members[-1]._replace(enabled=False)
        return p._replace(
            id=spec.get("pool_id", "pool-%d" % index),
            lb_algorithm=spec.get("algorithm", "ROUND_ROBIN"),
            members=members,
        )

    default_pool = pool(listener.default_pool)
    lb = listener.load_balancer._replace(
        id=lb_id,
        vip=listener.load_balancer.vip._replace(ip_address=vip),
        topology=topology,
    )
    return listener._replace(
        protocol_port=spec["port"],
        default_pool=default_pool,
        pools=[default_pool],
        load_balancer=lb,
    )


def render(case, out_dir):
    topology = (
        c.TOPOLOGY_ACTIVE_STANDBY
        if case.get("topology") == "ACTIVE_STANDBY"
        else c.TOPOLOGY_SINGLE
    )
    lb_id = case.get("lb_id", "lb-" + case["name"])
    listeners = [
        listener_tuple(lb_id, topology, case.get("vip", "10.0.0.2"), i + 1, spec)
        for i, spec in enumerate(case["listeners"])
    ]
    peer = None
    if topology == c.TOPOLOGY_ACTIVE_STANDBY:
        # The peers section lists the ALLOCATED amphorae; the agent passes
        # the local one's name with -L.
        amphorae = [
            a._replace(status=c.AMPHORA_ALLOCATED)
            for a in sc.sample_listener_loadbalancer_tuple(topology=topology).amphorae
        ]
        peer = octavia_utils.base64_sha1_string(amphorae[0].id).replace("=", "")
        listeners = [
            l._replace(load_balancer=l.load_balancer._replace(amphorae=amphorae))
            for l in listeners
        ]
    amp_dir = os.path.join(out_dir, "amp")
    # The amphora image has this directory (/var/lib/octavia); the stats
    # socket and state file the config names go into it.
    os.makedirs(amp_dir, exist_ok=True)
    templater = jinja_cfg.JinjaTemplater(
        base_amp_path=amp_dir,
        base_crt_dir=os.path.join(amp_dir, "certs"),
        haproxy_template=None,
        connection_logging=True,
    )
    text = templater.build_config(
        sc.sample_amphora_tuple(),
        listeners,
        tls_certs=None,
        haproxy_versions=("2", "6", "12"),
        amp_details=None,
    )
    return text, peer


def main():
    if len(sys.argv) != 2:
        print("usage: render_haproxy_cfg.py OUT_DIR < cases.json", file=sys.stderr)
        return 1
    out_dir = sys.argv[1]
    cases = json.load(sys.stdin)
    for case in cases:
        text, peer = render(case, out_dir)
        with open(os.path.join(out_dir, case["name"] + ".cfg"), "w") as f:
            f.write(text)
        if peer:
            with open(os.path.join(out_dir, case["name"] + ".peer"), "w") as f:
                f.write(peer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

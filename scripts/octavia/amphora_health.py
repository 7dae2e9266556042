"""The amphora health daemon's heartbeat, built and sent by Octavia's code.

Runs octavia.amphorae.backends.health_daemon.health_daemon's
build_stats_message() (which finds the load balancers under
[haproxy_amphora] base_path, checks each one's pid file, asks its stats
socket with HAProxyQuery and keeps the delta counters in
base_path/stats_counters.json) and sends the result with
health_sender.UDPStatusSender, the same two calls as the daemon's loop
(run_sender), one heartbeat per request instead of every
heartbeat_interval. Run with the venv of scripts/octavia/setup.sh:

    python amphora_health.py --base-path DIR --amphora-id ID \
        --controller 127.0.0.1:PORT --key KEY

Reads one command per line on stdin: "send" builds and sends a heartbeat
and prints the message as one JSON line; "build" only prints it; EOF
exits. Errors are printed as {"error": "..."} lines.
"""

import argparse
import json
import sys
import traceback

from amphora_common import CONF, load_conf

from octavia.amphorae.backends.health_daemon import health_daemon
from octavia.amphorae.backends.health_daemon import health_sender


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-path", required=True)
    parser.add_argument("--amphora-id", required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    load_conf(args.base_path, args.amphora_id)
    CONF.set_override("controller_ip_port_list", [args.controller],
                      group="health_manager")
    CONF.set_override("heartbeat_key", args.key, group="health_manager")
    sender = health_sender.UDPStatusSender()
    for line in sys.stdin:
        command = line.strip()
        try:
            message = health_daemon.build_stats_message()
            if command == "send":
                sender.dosend(message)
            print(json.dumps(message), flush=True)
        except Exception:  # noqa: BLE001 - report to the test, go on
            print(json.dumps({"error": traceback.format_exc()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Asks stats sockets what the amphora asks them, with Octavia's own reader.

octavia.amphorae.backends.utils.haproxy_query.HAProxyQuery is what the
amphora's health daemon (show_stat, get_pool_status) and agent (show_info's
Uptime_sec, save_state before a reload) use. Run with the venv of
scripts/octavia/setup.sh:

    python amphora_query.py NAME=SOCKET=STATE_FILE ...

prints one JSON object: {NAME: {"info": {...}, "stat": [rows],
"pools": {...}, "saved": bool, "state": "<the saved file>"}}. Each socket
is asked within a 10 s socket timeout; any failure is printed and exits 1.
"""

import json
import socket
import sys
import warnings

warnings.filterwarnings("ignore")

from octavia.amphorae.backends.utils import haproxy_query  # noqa: E402

TIMEOUT_S = 10


def ask(sock, state_path):
    query = haproxy_query.HAProxyQuery(sock)
    out = {
        "info": query.show_info(),
        "stat": query.show_stat(),
        "pools": query.get_pool_status(),
        "saved": query.save_state(state_path),
    }
    try:
        with open(state_path, encoding="utf-8") as f:
            out["state"] = f.read()
    except OSError:
        out["state"] = None
    return out


def main():
    # HAProxyQuery opens plain blocking sockets: bound every one of them.
    socket.setdefaulttimeout(TIMEOUT_S)
    result = {}
    for arg in sys.argv[1:]:
        name, sock, state_path = arg.split("=", 2)
        result[name] = ask(sock, state_path)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

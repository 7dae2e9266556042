"""The stock amphora agent's REST API, in process, for lbd's tests.

Builds octavia.amphorae.backends.agent.api_server.server.Server().app (the
Flask app the amphora-agent serves over TLS) and sends it requests with
Flask's test client. Run with the venv of scripts/octavia/setup.sh, with
PATH starting with a directory holding `haproxy` (lbd through a symlink)
and `systemctl` (amphora_systemctl.py's wrapper):

    python amphora_agent.py --base-path DIR --systemd-dir DIR \
        --network-dir DIR --user-group FILE --haproxy-cmd PATH --amphora-id ID

Reads one request per line on stdin as JSON: {"method": "PUT", "path":
"/1.0/...", "body": "..."}; prints one JSON line per request: {"status":
int, "json": <body as JSON or null>, "text": "<body>"}. EOF exits.

What is replaced, and only that (everything else is Octavia's code):
- constants.SYSTEMD_DIR (/usr/lib/systemd/system) and
  constants.HAPROXY_USER_GROUP_CFG (/var/lib/octavia/...): scratch paths,
  so the agent writes its units and reads the user/group file there;
- util.send_vip_advertisements: a no-op. It sends GARPs from the
  amphora-haproxy network namespace through pyroute2, which would create
  or enter a namespace on the test machine; the stock code swallows its
  errors anyway, so skipping it changes no answer.
systemctl itself is the stand-in on PATH; pyroute2, when the venv lacks
it, is the stand-in in amphora_stubs/ (import only).
"""

import argparse
import json
import sys
import traceback

from amphora_common import CONF, load_conf

from octavia.common import constants as consts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-path", required=True)
    parser.add_argument("--systemd-dir", required=True)
    parser.add_argument("--network-dir", required=True)
    parser.add_argument("--user-group", required=True)
    parser.add_argument("--haproxy-cmd", required=True)
    parser.add_argument("--amphora-id", required=True)
    args = parser.parse_args()
    load_conf(args.base_path, args.amphora_id)
    CONF.set_override("base_cert_dir", args.base_path + "/certs",
                      group="haproxy_amphora")
    CONF.set_override("haproxy_cmd", args.haproxy_cmd, group="haproxy_amphora")
    CONF.set_override("agent_server_network_dir", args.network_dir,
                      group="amphora_agent")
    consts.SYSTEMD_DIR = args.systemd_dir
    consts.HAPROXY_USER_GROUP_CFG = args.user_group

    from octavia.amphorae.backends.agent.api_server import server  # noqa
    from octavia.amphorae.backends.agent.api_server import util  # noqa

    util.send_vip_advertisements = lambda *a, **k: None
    client = server.Server(hm_queue=None).app.test_client()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            resp = client.open(req["path"], method=req["method"],
                               data=req.get("body", "").encode("utf-8"))
            text = resp.get_data(as_text=True)
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            print(json.dumps({"status": resp.status_code, "json": body,
                              "text": text}), flush=True)
        except Exception:  # noqa: BLE001 - report to the test, go on
            print(json.dumps({"status": 0, "json": None,
                              "text": traceback.format_exc()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

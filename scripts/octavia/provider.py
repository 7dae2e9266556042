#!/usr/bin/env python3
"""Stand-in Octavia provider for tests: finishes what the API asked for.

Octavia's no-op provider driver accepts every change but never reports it
done, so objects would stay PENDING_* and the load balancer immutable (409).
This process plays the provider: it polls the API and, for every load
balancer in PENDING_CREATE / PENDING_UPDATE / PENDING_DELETE, reports that
load balancer and its pending children ACTIVE (or DELETED) through the
driver agent's status socket, the way a real provider driver does.

Only provisioning_status is reported, never operating_status, so what the
health manager writes from heartbeats is not overwritten.

Standard library only; run by octavia_env.py with the venv's python.
"""

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request

HTTP_TIMEOUT_S = 10
SOCKET_TIMEOUT_S = 30

# The driver agent's status message keys, for each collection of the API.
CHILD_KINDS = ("listeners", "pools", "members", "healthmonitors",
               "l7policies", "l7rules")


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} provider: {msg}", flush=True)


class Api:
    """A minimal client of Octavia's v2 API (GET only)."""

    def __init__(self, url, project_id):
        self.url = url.rstrip("/")
        self.project_id = project_id

    def get(self, path):
        req = urllib.request.Request(
            f"{self.url}/v2/lbaas/{path}",
            headers={"X-Project-Id": self.project_id,
                     "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return json.load(resp)

    def collection(self, path, key):
        """Every object of a collection (pages are 1000 objects by default)."""
        return self.get(path)[key]


def final_status(current, parent_deleted):
    """The provisioning status to report for an object, or None to skip it."""
    if parent_deleted or current == "PENDING_DELETE":
        return "DELETED"
    if current in ("PENDING_CREATE", "PENDING_UPDATE"):
        return "ACTIVE"
    return None


def first_id(refs):
    return refs[0]["id"] if refs else None


def lb_children(api, lb_id):
    """Every child object of a load balancer, by status-message key."""
    children = {kind: [] for kind in CHILD_KINDS}
    children["listeners"] = [
        listener for listener in api.collection("listeners", "listeners")
        if first_id(listener["loadbalancers"]) == lb_id]
    children["pools"] = [
        p for p in api.collection("pools", "pools")
        if first_id(p["loadbalancers"]) == lb_id]
    pool_ids = {p["id"] for p in children["pools"]}
    listener_ids = {listener["id"] for listener in children["listeners"]}
    for pool in children["pools"]:
        members = api.collection(f"pools/{pool['id']}/members", "members")
        for member in members:
            # Members of a pool being deleted go with it.
            member["parent_deleted"] = (
                pool["provisioning_status"] == "PENDING_DELETE")
        children["members"] += members
    children["healthmonitors"] = [
        h for h in api.collection("healthmonitors", "healthmonitors")
        if first_id(h["pools"]) in pool_ids]
    children["l7policies"] = [
        p for p in api.collection("l7policies", "l7policies")
        if p["listener_id"] in listener_ids]
    for policy in children["l7policies"]:
        rules = api.collection(f"l7policies/{policy['id']}/rules", "rules")
        for rule in rules:
            rule["parent_deleted"] = (
                policy["provisioning_status"] == "PENDING_DELETE")
        children["l7rules"] += rules
    return children


def status_update(api, lb):
    """The status message that completes everything pending on one LB."""
    lb_deleted = lb["provisioning_status"] == "PENDING_DELETE"
    update = {"loadbalancers": [{
        "id": lb["id"],
        "provisioning_status": final_status(lb["provisioning_status"], False),
    }]}
    for kind, objects in lb_children(api, lb["id"]).items():
        entries = []
        for obj in objects:
            parent_deleted = lb_deleted or obj.get("parent_deleted", False)
            status = final_status(obj["provisioning_status"], parent_deleted)
            if status:
                entries.append({"id": obj["id"],
                                "provisioning_status": status})
        if entries:
            update[kind] = entries
    return update


def send_status(socket_path, update):
    """One request to the driver agent: b"<len>\\n" + json, same reply."""
    data = json.dumps(update).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(SOCKET_TIMEOUT_S)
        s.connect(socket_path)
        s.sendall(f"{len(data)}\n".encode() + data)
        size = b""
        while not size.endswith(b"\n"):
            char = s.recv(1)
            if not char:
                raise ConnectionError("driver agent closed the socket")
            size += char
        reply = b""
        while len(reply) < int(size):
            chunk = s.recv(int(size) - len(reply))
            if not chunk:
                raise ConnectionError("driver agent closed the socket")
            reply += chunk
    return json.loads(reply)


def poll_once(api, socket_path):
    """Completes every pending load balancer; returns how many there were."""
    pending = [lb for lb in api.collection("loadbalancers", "loadbalancers")
               if lb["provisioning_status"].startswith("PENDING_")]
    for lb in pending:
        update = status_update(api, lb)
        reply = send_status(socket_path, update)
        if reply.get("status_code") != 200:
            log(f"driver agent refused {update}: {reply}")
        else:
            log(f"reported {json.dumps(update)}")
    return len(pending)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--status-socket", required=True)
    parser.add_argument("--project-id", required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    api = Api(args.api_url, args.project_id)
    log(f"polling {args.api_url} every {args.interval} s")
    while True:
        try:
            poll_once(api, args.status_socket)
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            # The API or the driver agent may still be starting; try again.
            log(f"poll failed: {e!r}")
            time.sleep(1)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A real OpenStack Octavia 19 on loopback, for lb-agent's integration tests.

Run with the venv's python (scripts/octavia/setup.sh makes the venv):

  octavia_env.py prepare              build the schema template (setup.sh)
  octavia_env.py up --dir DIR          start everything, write DIR/env.json
  octavia_env.py down --dir DIR        stop everything `up` started
  octavia_env.py register-amphora --dir DIR --amphora-id UUID --lb-id UUID
  octavia_env.py send-heartbeat --dir DIR --json FILE [--amphora-id UUID]
  octavia_env.py run SERVICE --config-file FILE   (internal: the launcher)
  octavia_env.py watchdog --dir DIR --owner-pid PID (internal, see up)

`up` runs octavia-api, octavia-driver-agent and octavia-health-manager with
noauth, the no-op drivers and a SQLite database in DIR, everything bound on
127.0.0.1, plus provider.py (the stand-in provider that marks pending
objects ACTIVE/DELETED). Each process gets its own session, so `down` can
kill it with all of its children. Logs go to DIR/<name>.log.

SQLite: Octavia's migrations do not run on SQLite, so the schema comes from
the models (create_all), the lookup tables are seeded the way Octavia's own
functional tests do, and alembic is stamped at head. Every process opens its
SQLite transactions with BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe),
otherwise the health manager's concurrent writers hit "database is locked".
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

OCTAVIA_VERSION = "19.0.0"
HERE = os.path.dirname(os.path.abspath(__file__))
# The project id the tests send as X-Project-Id (POST needs one with noauth).
TEST_PROJECT_ID = "e3cd678b11784734bc366148aa37580e"
UP_TIMEOUT_S = 90
STOP_GRACE_S = 5
# Unix socket paths must fit in sun_path (108 bytes with the NUL).
MAX_SOCKET_PATH = 100

SERVICES = {
    # name -> (module with the real entry point, extra command-line args)
    "api": ("octavia.cmd.api", []),
    "driver-agent": ("octavia.cmd.driver_agent", []),
    # --debug logs every received heartbeat and status change.
    "health-manager": ("octavia.cmd.health_manager", ["--debug"]),
}


def log(msg):
    print(f"octavia_env: {msg}", flush=True)


# --- Configuration ------------------------------------------------------------


def free_port(kind):
    """A port on 127.0.0.1 that is free right now (TCP or UDP), below the
    kernel's ephemeral range: a port from bind(0) is an ephemeral one, which
    any outgoing connection may take before the service binds it (the same
    rule as free_port in lbd's test-support crate)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            top = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        top = 32768
    top = max(top, 11000)
    for _ in range(4000):
        port = 10000 + secrets.randbelow(top - 10000)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def run_dir_for(dir_):
    """Directory for the driver agent's unix sockets: DIR/run if short enough."""
    run_dir = os.path.join(dir_, "run")
    if len(os.path.join(run_dir, "status.sock")) > MAX_SOCKET_PATH:
        run_dir = tempfile.mkdtemp(prefix="octavia-run-")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def write_config(path, settings):
    """Writes octavia.conf from the chosen ports, paths and key."""
    conf = f"""\
[DEFAULT]
transport_url = fake:/
debug = false
use_stderr = true

[api_settings]
bind_host = 127.0.0.1
bind_port = {settings['api_port']}
auth_strategy = noauth
enabled_provider_drivers = noop_driver:The no-op driver.
default_provider_driver = noop_driver

[database]
connection = sqlite:///{settings['db']}?timeout=30
pool_timeout =

[controller_worker]
network_driver = network_noop_driver
compute_driver = compute_noop_driver
amphora_driver = amphora_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
statistics_drivers = stats_db

[certificates]
cert_manager = noop_cert_manager

[driver_agent]
status_socket_path = {settings['run_dir']}/status.sock
stats_socket_path = {settings['run_dir']}/stats.sock
get_socket_path = {settings['run_dir']}/get.sock
enabled_provider_agents =

[health_manager]
bind_ip = 127.0.0.1
bind_port = {settings['hm_port']}
heartbeat_key = {settings['heartbeat_key']}
heartbeat_timeout = 86400
health_update_threads = 1
stats_update_threads = 1

[house_keeping]
amphora_expiry_age = 86400

[oslo_messaging]
topic = octavia_prov
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(conf)


# --- SQLite -------------------------------------------------------------------


def install_sqlite_begin_immediate(db_path):
    """SQLAlchemy's pysqlite recipe, for every engine on Octavia's database.

    oslo.db already turns off pysqlite's own BEGIN (isolation_level = None)
    and emits a plain BEGIN on the engine's "begin" event unless
    conn.info["in_transaction"] is set. This listener runs first (insert=True)
    and takes the write lock at the start of each transaction instead, so two
    writers wait for each other (busy timeout) instead of failing with
    "database is locked" when one upgrades its read lock.

    Only engines on db_path: the no-op network driver keeps its own SQLite
    file (/tmp/octavia-network-noop.db) and emits BEGIN EXCLUSIVE itself.
    """
    import sqlalchemy
    from sqlalchemy.engine import Engine

    db_path = os.path.realpath(db_path)

    def begin_immediate(conn):
        url = conn.engine.url
        if (url.get_backend_name() != "sqlite" or not url.database
                or os.path.realpath(url.database) != db_path
                or "in_transaction" in conn.info):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info["in_transaction"] = True

    sqlalchemy.event.listen(Engine, "begin", begin_immediate, insert=True)


def create_schema(db_path):
    """create_all + lookup tables (as octavia/tests/functional/db/base.py)."""
    import sqlalchemy
    from sqlalchemy import orm

    from octavia.common import constants
    from octavia.db import base_models
    from octavia.db import models

    engine = sqlalchemy.create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        # WAL: readers (the API) do not block the writers (health manager).
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    base_models.BASE.metadata.create_all(engine)
    lookups = [
        (constants.SUPPORTED_PROVISIONING_STATUSES, models.ProvisioningStatus),
        (constants.SUPPORTED_HEALTH_MONITOR_TYPES, models.HealthMonitorType),
        (constants.SUPPORTED_LB_ALGORITHMS, models.Algorithm),
        (constants.SUPPORTED_PROTOCOLS, models.Protocol),
        (constants.SUPPORTED_OPERATING_STATUSES, models.OperatingStatus),
        (constants.SUPPORTED_SP_TYPES, models.SessionPersistenceType),
        (constants.SUPPORTED_AMPHORA_ROLES, models.AmphoraRoles),
        (constants.SUPPORTED_LB_TOPOLOGIES, models.LBTopology),
        (constants.SUPPORTED_VRRP_AUTH, models.VRRPAuthMethod),
        (constants.SUPPORTED_L7RULE_TYPES, models.L7RuleType),
        (constants.SUPPORTED_L7RULE_COMPARE_TYPES, models.L7RuleCompareType),
        (constants.SUPPORTED_L7POLICY_ACTIONS, models.L7PolicyAction),
        (constants.SUPPORTED_CLIENT_AUTH_MODES, models.ClientAuthenticationMode),
    ]
    nil = constants.NIL_UUID
    with orm.Session(engine) as session, session.begin():
        for names, model in lookups:
            session.add_all(model(name=name) for name in names)
        # The id='DELETED' placeholders Octavia's migrations insert.
        session.add(models.FlavorProfile(
            id=nil, name="DELETED-PLACEHOLDER",
            provider_name=constants.DELETED, flavor_data="{}"))
        session.flush()
        session.add(models.Flavor(
            id=nil, flavor_profile_id=nil, name="DELETED-PLACEHOLDER",
            enabled=False,
            description="Placeholder for DELETED LBs with DELETED flavors"))
        session.add(models.AvailabilityZoneProfile(
            id=nil, name="DELETED-PLACEHOLDER",
            provider_name=constants.DELETED, availability_zone_data="{}"))
        session.flush()
        session.add(models.AvailabilityZone(
            availability_zone_profile_id=nil, name=nil, enabled=False,
            description="Placeholder for DELETED LBs with DELETED "
                        "availability zones"))
    engine.dispose()


def stamp_head(config_path, dir_):
    """Marks the schema as at the newest migration (octavia-db-manage)."""
    manage = os.path.join(os.path.dirname(sys.executable), "octavia-db-manage")
    with open(os.path.join(dir_, "db-manage.log"), "wb") as out:
        subprocess.run([manage, "--config-file", config_path, "stamp", "head"],
                       stdout=out, stderr=subprocess.STDOUT, check=True,
                       timeout=60)


def build_schema(db_path):
    """A new database file with the full schema, seeded and stamped."""
    work = os.path.dirname(db_path)
    create_schema(db_path)
    config_path = os.path.join(work, "db-manage.conf")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(f"[database]\nconnection = sqlite:///{db_path}\n"
                "pool_timeout =\n")
    stamp_head(config_path, work)
    # Fold the write-ahead log into the file so a plain copy is complete.
    conn = db_connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def schema_template():
    """A ready database to copy: built once per venv (about 10 s), then kept.

    Importing Octavia's models and running alembic take most of the time of
    a fresh schema; the result never changes for one Octavia version.
    """
    path = os.path.join(sys.prefix, f"lbd-octavia-{OCTAVIA_VERSION}-schema.db")
    if os.path.exists(path):
        return path
    log(f"building the SQLite schema template {path}")
    work = tempfile.mkdtemp(prefix="octavia-schema-")
    try:
        build_schema(os.path.join(work, "octavia.db"))
        tmp = f"{path}.{os.getpid()}.tmp"
        shutil.copyfile(os.path.join(work, "octavia.db"), tmp)
        os.replace(tmp, path)  # atomic: concurrent builders are harmless
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def db_path_from_config(config_path):
    """The SQLite file named by [database] connection in octavia.conf."""
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_path)
    url = parser["database"]["connection"]
    return url.removeprefix("sqlite:///").split("?", 1)[0]


def db_connect(db_path):
    import sqlite3
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


# --- Processes ----------------------------------------------------------------


def process_start_time(pid):
    """The start time of a live (non-zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def pids_path(dir_):
    return os.path.join(dir_, "pids.json")


def save_pids(dir_, pids):
    """Records started processes at once, so `down` finds them after a crash.

    With each pid goes its start time, so that a stale file never makes
    `down` signal an unrelated process that got the same pid later.
    """
    records = [{"pid": pid, "start": process_start_time(pid)} for pid in pids]
    with open(pids_path(dir_), "w", encoding="utf-8") as f:
        json.dump(records, f)


def load_groups(dir_):
    """The process groups `up` started in DIR that may still be running."""
    try:
        with open(pids_path(dir_), encoding="utf-8") as f:
            records = json.load(f)
    except OSError:
        return None
    groups = []
    for record in records:
        # A leader that is gone may have left children in its group; a pid
        # still in use as a group id is never given to a new process.
        start = process_start_time(record["pid"])
        if start is None or start == record["start"]:
            groups.append(record["pid"])
    return groups


def start_process(dir_, name, argv, pids):
    """Starts argv in its own session, output to DIR/<name>.log."""
    out = open(os.path.join(dir_, f"{name}.log"), "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=dir_)
    out.close()
    pids.append(proc.pid)
    save_pids(dir_, pids)
    log(f"started {name} (pid {proc.pid})")
    return proc


def group_alive(pgid):
    """True while any non-zombie process is in process group pgid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[2] the process group.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def signal_groups(pgids, sig, whole_group):
    for pgid in pgids:
        try:
            if whole_group:
                os.killpg(pgid, sig)
            else:
                os.kill(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_groups_gone(pgids, timeout):
    """The groups still alive after waiting up to timeout for them to end."""
    deadline = time.monotonic() + timeout
    while True:
        pgids = [p for p in pgids if group_alive(p)]
        if not pgids or time.monotonic() > deadline:
            return pgids
        time.sleep(0.1)


def kill_groups(pgids):
    """Stops each process group: SIGTERM to its leader, SIGKILL to the rest.

    Only the leader gets SIGTERM: the health manager and the driver agent
    then stop their children themselves. SIGTERM to the whole group kills
    those children first and leaves the leaders hanging in their cleanup.
    """
    signal_groups(pgids, signal.SIGTERM, whole_group=False)
    left = wait_groups_gone(pgids, STOP_GRACE_S)
    if left:
        signal_groups(left, signal.SIGKILL, whole_group=True)
        left = wait_groups_gone(left, STOP_GRACE_S)
    if left:
        log(f"process groups still alive after SIGKILL: {left}")


def log_tail(dir_, name, lines=40):
    try:
        with open(os.path.join(dir_, f"{name}.log"), encoding="utf-8",
                  errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)\n"


# --- Readiness checks ---------------------------------------------------------


def api_ready(api_url):
    req = urllib.request.Request(f"{api_url}/v2/lbaas/loadbalancers",
                                 headers={"X-Project-Id": TEST_PROJECT_ID})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def udp_bound(port):
    """True when something has bound UDP 127.0.0.1:port (/proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp", encoding="ascii") as f:
        return any(line.split()[1] == want for line in list(f)[1:])


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


# --- Subcommands --------------------------------------------------------------


def cmd_up(args):
    dir_ = os.path.abspath(args.dir)
    os.makedirs(dir_, exist_ok=True)
    if [g for g in load_groups(dir_) or [] if group_alive(g)]:
        log(f"an env is already running in {dir_}: run down first")
        return 1
    started = time.monotonic()
    settings = {
        "api_port": free_port(socket.SOCK_STREAM),
        "hm_port": free_port(socket.SOCK_DGRAM),
        "heartbeat_key": secrets.token_hex(16),
        "db": os.path.join(dir_, "octavia.db"),
        "run_dir": run_dir_for(dir_),
    }
    config_path = os.path.join(dir_, "octavia.conf")
    write_config(config_path, settings)
    api_url = f"http://127.0.0.1:{settings['api_port']}"

    shutil.copyfile(schema_template(), settings["db"])

    pids = []
    procs = {}
    try:
        for name in SERVICES:
            argv = [sys.executable, os.path.abspath(__file__), "run", name,
                    "--config-file", config_path]
            procs[name] = start_process(dir_, name, argv, pids)
        status_socket = os.path.join(settings["run_dir"], "status.sock")
        procs["provider"] = start_process(dir_, "provider", [
            sys.executable, os.path.join(HERE, "provider.py"),
            "--api-url", api_url, "--status-socket", status_socket,
            "--project-id", TEST_PROJECT_ID], pids)
        if args.owner_pid:
            procs["watchdog"] = start_process(dir_, "watchdog", [
                sys.executable, os.path.abspath(__file__), "watchdog",
                "--dir", dir_, "--owner-pid", str(args.owner_pid)], pids)
        wait_ready(dir_, procs, api_url, settings["hm_port"], status_socket)
    except Exception as e:  # noqa: BLE001 - any failure: clean up, report
        log(f"up failed: {e}")
        kill_groups(pids)
        if not settings["run_dir"].startswith(dir_ + os.sep):
            shutil.rmtree(settings["run_dir"], ignore_errors=True)
        return 1

    env = {
        "api_url": api_url,
        "health_manager": f"127.0.0.1:{settings['hm_port']}",
        "heartbeat_key": settings["heartbeat_key"],
        "db": settings["db"],
        "pids": pids,
        "config": config_path,
        "status_socket": status_socket,
        "project_id": TEST_PROJECT_ID,
        "run_dir": settings["run_dir"],
    }
    with open(os.path.join(dir_, "env.json"), "w", encoding="utf-8") as f:
        json.dump(env, f, indent=2)
    log(f"up in {time.monotonic() - started:.1f} s: API {api_url}, "
        f"health manager {env['health_manager']}")
    return 0


class NotReady(Exception):
    pass


def wait_ready(dir_, procs, api_url, hm_port, status_socket):
    """Waits until every service answers; raises with the log of the culprit."""
    checks = {
        "api": lambda: api_ready(api_url),
        "health-manager": lambda: udp_bound(hm_port),
        "driver-agent": lambda: is_socket(status_socket),
        "provider": lambda: True,
        "watchdog": lambda: True,
    }
    deadline = time.monotonic() + UP_TIMEOUT_S
    pending = list(checks)
    while pending:
        for name, proc in procs.items():
            if proc.poll() is not None:
                sys.stderr.write(f"--- tail of {name}.log ---\n"
                                 + log_tail(dir_, name))
                raise NotReady(f"{name} exited with code {proc.returncode}")
        pending = [name for name in pending if not checks[name]()]
        if pending and time.monotonic() > deadline:
            for name in pending:
                sys.stderr.write(f"--- tail of {name}.log ---\n"
                                 + log_tail(dir_, name))
            raise NotReady(f"not ready after {UP_TIMEOUT_S} s: {pending}")
        if pending:
            time.sleep(0.2)


def read_env(dir_):
    with open(os.path.join(dir_, "env.json"), encoding="utf-8") as f:
        return json.load(f)


def cmd_prepare(_args):
    """Builds the schema template now (setup.sh calls this once)."""
    log(f"schema template ready: {schema_template()}")
    return 0


def cmd_down(args):
    dir_ = os.path.abspath(args.dir)
    groups = load_groups(dir_)
    if groups is None:
        log(f"nothing to stop in {dir_}")
        return 0
    kill_groups(groups)
    os.remove(pids_path(dir_))
    remove_private_run_dir(dir_)
    log(f"stopped {len(groups)} process groups")
    return 0


def remove_private_run_dir(dir_):
    """Removes the socket dir `up` made outside DIR when DIR's path was long."""
    try:
        run_dir = read_env(dir_)["run_dir"]
    except (OSError, KeyError, ValueError):
        return
    if not run_dir.startswith(dir_ + os.sep):
        shutil.rmtree(run_dir, ignore_errors=True)


def cmd_register_amphora(args):
    """Makes the health manager accept heartbeats from amphora_id.

    The health manager looks up the load balancer of a heartbeat through
    amphora.load_balancer_id (amphora.status != DELETED, LB not DELETED);
    that row is all it needs to apply statuses. The stats API counts
    active_connections only from ALLOCATED amphorae. amphora_health is what
    each accepted heartbeat refreshes (last_update); busy = 1 keeps the
    failover check off this amphora (which, with heartbeat_timeout = 86400,
    would not start within a day anyway).
    """
    import sqlite3

    env = read_env(args.dir)
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    conn = db_connect(env["db"])
    try:
        conn.execute("BEGIN IMMEDIATE")
        if not conn.execute("SELECT 1 FROM load_balancer WHERE id = ?",
                            (args.lb_id,)).fetchone():
            sys.stderr.write(f"no load balancer {args.lb_id}\n")
            conn.execute("ROLLBACK")
            return 1
        conn.execute(
            "INSERT OR REPLACE INTO amphora (id, load_balancer_id, compute_id, "
            "lb_network_ip, status, role, cert_busy, created_at, updated_at) "
            "VALUES (?, ?, ?, '127.0.0.1', 'ALLOCATED', 'STANDALONE', 0, ?, ?)",
            (args.amphora_id, args.lb_id, args.amphora_id, now, now))
        conn.execute(
            "INSERT OR REPLACE INTO amphora_health (amphora_id, last_update, "
            "busy) VALUES (?, ?, 1)", (args.amphora_id, now))
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        sys.stderr.write(f"cannot register amphora {args.amphora_id}: {e}\n")
        return 1
    finally:
        conn.close()
    log(f"registered amphora {args.amphora_id} for load balancer {args.lb_id}")
    return 0


def cmd_send_heartbeat(args):
    """Sends one heartbeat with Octavia's own envelope code (amphora agent's)."""
    from octavia.amphorae.backends.health_daemon import status_message

    env = read_env(args.dir)
    with open(args.json, encoding="utf-8") as f:
        message = json.load(f)
    if args.amphora_id:
        message["id"] = args.amphora_id
    host, port = env["health_manager"].rsplit(":", 1)
    packet = status_message.wrap_envelope(message, env["heartbeat_key"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, (host, int(port)))
    log(f"sent a {len(packet)}-byte heartbeat to {env['health_manager']}")
    return 0


def cmd_watchdog(args):
    """Stops the env when its owner (the test process) is gone.

    Drop in the tests runs `down`; this covers an owner that was killed
    (SIGKILL, a test runner's timeout) and so never ran it.
    """
    owner_started = process_start_time(args.owner_pid)
    while owner_started is not None:
        time.sleep(1)
        if process_start_time(args.owner_pid) != owner_started:
            break
    groups = load_groups(args.dir) or []
    log(f"owner {args.owner_pid} is gone: stopping the env")
    kill_groups([g for g in groups if g != os.getpgrp()])
    return 0


def cmd_run(args, rest):
    """The launcher: BEGIN IMMEDIATE for SQLite, then Octavia's entry point."""
    import importlib

    module_name, extra = SERVICES[args.service]
    install_sqlite_begin_immediate(db_path_from_config(args.config_file))
    module = importlib.import_module(module_name)
    sys.argv = [f"octavia-{args.service}", "--config-file",
                args.config_file] + extra + rest
    return module.main()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", required=True)
    up.add_argument("--owner-pid", type=int, default=os.getppid(),
                    help="stop the env when this process is gone (default: "
                         "the caller; 0: never)")
    sub.add_parser("down").add_argument("--dir", required=True)
    dog = sub.add_parser("watchdog")
    dog.add_argument("--dir", required=True)
    dog.add_argument("--owner-pid", type=int, required=True)
    sub.add_parser("prepare")
    reg = sub.add_parser("register-amphora")
    reg.add_argument("--dir", required=True)
    reg.add_argument("--amphora-id", required=True)
    reg.add_argument("--lb-id", required=True)
    hb = sub.add_parser("send-heartbeat")
    hb.add_argument("--dir", required=True)
    hb.add_argument("--json", required=True, help="file with the message")
    hb.add_argument("--amphora-id", help="overrides the message's id")
    run = sub.add_parser("run")
    run.add_argument("service", choices=sorted(SERVICES))
    run.add_argument("--config-file", required=True)
    args, rest = parser.parse_known_args()
    if args.command == "run":
        return cmd_run(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {
        "up": cmd_up,
        "prepare": cmd_prepare,
        "watchdog": cmd_watchdog,
        "down": cmd_down,
        "register-amphora": cmd_register_amphora,
        "send-heartbeat": cmd_send_heartbeat,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

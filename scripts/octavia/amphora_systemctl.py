"""A stand-in for `systemctl`, enough for the stock amphora agent.

The agent writes a unit per load balancer (haproxy-<lb>.service, from its
systemd.conf.j2) and runs `systemctl enable|start|reload|stop <unit>`.
This runs that unit's own lines: ExecStartPre, then ExecStart in its own
session (the `ip netns exec <ns>` prefix dropped: the test has no
amphora-haproxy namespace), the main pid kept in STATE_DIR/<unit>.pid; for
reload the ExecReload lines with $MAINPID (`haproxy -c ...`, then
`kill -USR2`); for stop SIGTERM to the main process's group, SIGKILL
after 5 s. enable/disable/daemon-reload succeed without doing anything.

    python amphora_systemctl.py COMMAND UNIT
    environment: AMPHORA_SYSTEMD_DIR (where the agent wrote the units),
                 AMPHORA_SYSTEMCTL_STATE (pids and logs)

Every command it runs is bounded (30 s); exits 1 with the command's
output when one fails, like systemctl does.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

LIMIT_S = 30
START_WAIT_S = 10


def parse_unit(path):
    env, lines = {}, {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", "[")) or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if key == "Environment":
                for item in shlex.split(value):
                    k, v = item.split("=", 1)
                    env[k] = v
            else:
                lines.setdefault(key, []).append(value)
    return env, lines


def expand(line, env):
    words = []
    for word in shlex.split(line):
        for k, v in env.items():
            word = word.replace("$" + k, v)
        words.append(word)
    if words[:3] == ["/sbin/ip", "netns", "exec"]:
        words = words[4:]
    return words


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main_pid(state, unit):
    try:
        with open(os.path.join(state, unit + ".pid"), encoding="utf-8") as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def run(words):
    proc = subprocess.run(words, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=LIMIT_S,
                          check=False)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout.decode("utf-8", "replace"))
        return False
    return True


def start(unit, env, lines, state):
    if main_pid(state, unit):
        return 0
    for line in lines.get("ExecStartPre", []):
        if not run(expand(line, env)):
            return 1
    words = expand(lines["ExecStart"][0], env)
    log = open(os.path.join(state, unit + ".log"), "ab")
    proc = subprocess.Popen(words, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(state, unit + ".pid"), "w", encoding="utf-8") as f:
        f.write(str(proc.pid))
    # Type=notify: systemd returns once the service is up; here, once the
    # pid file the unit names (-p) exists, or fails if the process died.
    pidfile = env.get("PIDFILE")
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"Job for {unit} failed (exit {proc.returncode}).")
            return 1
        if pidfile is None or os.path.exists(pidfile):
            return 0
        time.sleep(0.05)
    print(f"Job for {unit} did not start within {START_WAIT_S} s.")
    return 1


def stop(unit, state):
    pid = main_pid(state, unit)
    if pid is None:
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return 0


def main():
    if len(sys.argv) != 3:
        print("usage: systemctl COMMAND UNIT")
        return 2
    command, unit = sys.argv[1], sys.argv[2]
    state = os.environ["AMPHORA_SYSTEMCTL_STATE"]
    os.makedirs(state, exist_ok=True)
    if command in ("enable", "disable", "daemon-reload"):
        return 0
    env, lines = parse_unit(os.path.join(os.environ["AMPHORA_SYSTEMD_DIR"],
                                         unit))
    if command == "start":
        return start(unit, env, lines, state)
    if command == "stop":
        return stop(unit, state)
    if command == "reload":
        pid = main_pid(state, unit)
        if pid is None:
            print(f"Unit {unit} is not active, cannot reload.")
            return 1
        env = dict(env, MAINPID=str(pid))
        for line in lines.get("ExecReload", []):
            if not run(expand(line, env)):
                return 1
        return 0
    print(f"unsupported: {command}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

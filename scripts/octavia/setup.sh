#!/usr/bin/env bash
# Installs a real OpenStack Octavia 19.0.0 (API, driver agent, health
# manager) into a private Python venv, for lb-agent's integration tests
# (scripts/octavia/octavia_env.py runs it on loopback with SQLite, so no
# database server, keystone, neutron, nova or message queue is needed).
#
#   bash scripts/octavia/setup.sh
#
# The venv is target/octavia-venv under the repo root unless LBD_OCTAVIA_VENV
# names another directory (a relative one is taken from the repo root, as the
# tests do). Idempotent: a marker file in the venv records a
# finished install, and a second run only checks it. Exit code 0 on success;
# on failure a one-line reason on stderr and a nonzero exit code.
set -euo pipefail

OCTAVIA_VERSION=19.0.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${LBD_OCTAVIA_VENV:-$ROOT/target/octavia-venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac  # relative: to the repo root
MARKER=$VENV/.lbd-octavia-$OCTAVIA_VERSION

log() { printf '== octavia setup: %s\n' "$*"; }
die() { printf 'octavia setup failed: %s\n' "$*" >&2; exit 1; }

if [ -f "$MARKER" ] && "$VENV/bin/python" -c 'import octavia' >/dev/null 2>&1; then
  log "octavia $OCTAVIA_VERSION already installed in $VENV"
  exit 0
fi

# --- A Python 3 that can make venvs -------------------------------------------
PYTHON=${LBD_OCTAVIA_PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=/usr/bin/python3
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # No python3, or Debian's without venv's pip bootstrap (a separate package).
  if [ "$(id -u)" -ne 0 ]; then
    die "python3 cannot create venvs; install python3-venv (sudo apt-get install -y python3-venv)"
  fi
  log "installing python3 and python3-venv with apt"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null \
    || die "apt-get install python3 python3-venv failed"
  PYTHON=/usr/bin/python3
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die "$PYTHON still cannot create venvs after installing python3-venv"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$PYTHON is older than 3.10, which octavia $OCTAVIA_VERSION needs"

# --- The venv and the packages -----------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  # Missing, or left by a Python that is gone: make it anew.
  log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv --clear "$VENV" || die "python3 -m venv $VENV failed"
fi

# Every dependency pinned to the versions of a tested install (pip freeze of
# octavia 19.0.0 on Python 3.11), so a later release cannot break the tests.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<'EOF'
alembic==1.20.1
amqp==5.4.2
attrs==26.1.0
automaton==3.5.0
autopage==0.6.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.1
castellan==5.8.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cliff==4.17.0
cmd2==4.3.1
cotyledon==2.2.0
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
distro==1.9.0
dnspython==2.9.2
dogpile.cache==1.5.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
futurist==3.5.0
greenlet==3.5.6
gunicorn==27.0.1
idna==3.20
importlib_metadata==10.2.0
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jmespath==1.1.0
jsonpatch==1.47
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
lazy-importer==0.1.0
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
networkx==3.6.1
octavia-lib==3.12.0
openstacksdk==4.22.0
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.reports==3.9.0
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
packaging==26.3
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
pecan==1.8.0
platformdirs==4.14.7
prettytable==3.18.0
prometheus_client==0.26.0
prompt_toolkit==3.0.53
psutil==7.2.2
pyasn1==0.6.5
pyasn1_modules==0.4.2
pycadf==4.1.0
pycparser==3.12
pydot==4.0.1
Pygments==2.21.0
PyJWT==2.15.1
PyMySQL==1.2.4
pyOpenSSL==26.4.0
pyparsing==3.3.3
pyperclip==1.11.0
python-barbicanclient==7.6.0
python-cinderclient==9.10.0
python-dateutil==4.0.0
python-glanceclient==4.13.0
python-keystoneclient==6.0.0
python-novaclient==18.13.1
PyYAML==6.0.3
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
Routes==2.5.1
rpds-py==2026.9.1
setproctitle==1.3.8
simplegeneric==0.8.1
six==1.17.0
SQLAlchemy==2.1.9
SQLAlchemy-Utils==0.43.0
statsd==4.0.1
stevedore==5.10.0
taskflow==6.5.0
tenacity==9.2.1
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
warlock==2.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
WSME==0.13.0
yappi==1.7.6
zipp==4.1.2
EOF

log "pip install octavia==$OCTAVIA_VERSION into $VENV (about a minute)"
start=$(date +%s)
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "octavia==$OCTAVIA_VERSION" \
  || die "pip install octavia==$OCTAVIA_VERSION failed (see pip's output above)"
for cmd in octavia-api octavia-driver-agent octavia-health-manager octavia-db-manage; do
  [ -x "$VENV/bin/$cmd" ] || die "$VENV/bin/$cmd is missing after the install"
done
PYTHONWARNINGS=ignore "$VENV/bin/python" -c 'import octavia.db.models, octavia.api.app' \
  || die "octavia does not import in $VENV"
# Build the SQLite schema once now, so the first `up` does not have to.
PYTHONWARNINGS=ignore "$VENV/bin/python" "$ROOT/scripts/octavia/octavia_env.py" prepare \
  || die "could not build the SQLite schema template"
touch "$MARKER"
log "done in $(( $(date +%s) - start )) s: $VENV"

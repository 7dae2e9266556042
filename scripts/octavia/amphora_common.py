"""What the amphora scripts (amphora_agent.py, amphora_health.py) share.

Importing it, before any other Octavia module: silences Octavia's import
warnings, puts the import-only pyroute2 stand-in (amphora_stubs/) on the
path for venvs without pyroute2 (the amphora image has it; the agent's
modules import it at load time), and registers Octavia's options.
load_conf() then loads them with no config file and sets what every
script needs.
"""

import os
import socket
import sys
import warnings

warnings.filterwarnings("ignore")

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "amphora_stubs"))

from oslo_config import cfg  # noqa: E402

from octavia.common import config  # noqa: E402,F401 - registers the options

CONF = cfg.CONF
# Octavia's HAProxyQuery opens blocking sockets: every socket the script
# opens is bounded by this.
TIMEOUT_S = 10


def load_conf(base_path, amphora_id):
    """Octavia's options from no file, with the amphora's base path and id."""
    CONF([], project="octavia", default_config_files=[])
    CONF.set_override("base_path", base_path, group="haproxy_amphora")
    CONF.set_override("amphora_id", amphora_id, group="amphora_agent")
    socket.setdefaulttimeout(TIMEOUT_S)

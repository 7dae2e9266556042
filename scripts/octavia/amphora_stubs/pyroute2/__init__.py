"""A stand-in for pyroute2, only where the venv has none.

Octavia's amphora agent modules import pyroute2 at load time (the `octavia`
wheel does not depend on it: the amphora image installs it). lbd's tests
call no endpoint that touches interfaces or network namespaces, and
amphora_agent.py replaces the one such call on their path (VIP
advertisements); anything that still tries fails loudly here instead of
changing the test machine's network.
"""


class NetlinkError(Exception):
    pass


class _Refused:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "pyroute2 stand-in: lbd's amphora tests do not touch the network")


class IPRoute(_Refused):
    pass


class NetNS(_Refused):
    pass

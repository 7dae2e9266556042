"""Names interface.py reads from pyroute2.netlink.rtnl (see ../../__init__.py)."""

from . import ifaddrmsg  # noqa: F401

# pyroute2's rt_proto maps protocol names to numbers (rtnetlink.h).
rt_proto = {"unspec": 0, "redirect": 1, "kernel": 2, "boot": 3, "static": 4}

#!/bin/sh
# keepalived `notify` hook: logs each VRRP transition with lbd's view at
# that moment. Called as: lbd-notify.sh GROUP|INSTANCE <name> <state> <priority>
state="$3"
ready="$(/usr/bin/lbd ready --admin 127.0.0.1:8404 --timeout 1s 2>&1)"
logger -t lbd-vrrp "VRRP $2 is now $state (lbd: $ready)"
exit 0

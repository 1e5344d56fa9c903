#!/usr/bin/env bash
# A single-node SLURM on this Debian machine, for `make test-slurm` (root, no systemd needed):
#
#   tools/slurm/local-cluster.sh up       install (once) and start munge, MariaDB, slurmdbd,
#                                         slurmctld and slurmd on 127.0.0.1
#   tools/slurm/local-cluster.sh down     stop what `up` started, and nothing else
#   tools/slurm/local-cluster.sh status   what runs
#
# `up` is idempotent: a daemon already running is left as it is (and not stopped by `down`).
# The cluster is `blf`, its one partition `cpu` (every core of the machine, memory not a
# consumable resource), accounting through slurmdbd so that sacct (which submitit polls)
# answers. Configs go to /etc/slurm only where none exists.
set -euo pipefail

STATE=/run/blf-slurm          # the daemons `up` started: <name>.pid
CONF=/etc/slurm
LOGS=/var/log/slurm
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() { echo "error: $*" >&2; exit 2; }
running() { pgrep -x "$1" >/dev/null 2>&1; }

wait_for() {  # wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2; shift 2
    for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    die "$what did not come up within ${seconds}s; see $LOGS"
}

start() {  # start <name> <command...>: in the background, its pid kept for `down`
    local name=$1; shift
    if running "$name"; then echo "$name: already running (left alone)"; return; fi
    "$@" >>"$LOGS/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
    echo "$name: started (pid $!)"
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null \
        && command -v mariadbd >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null; }
}

write_configs() {
    local cpus memory
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$CONF"
    if [ ! -f "$CONF/slurm.conf" ]; then
        cat >"$CONF/slurm.conf" <<EOF
# Written by tools/slurm/local-cluster.sh: one node, this machine.
ClusterName=blf
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    fi
    if [ ! -f "$CONF/slurmdbd.conf" ]; then
        cat >"$CONF/slurmdbd.conf" <<EOF
# Written by tools/slurm/local-cluster.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
        chmod 600 "$CONF/slurmdbd.conf"
    fi
}

up() {
    [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons); allowed: sudo $0 up"
    [ -f /etc/debian_version ] || die "this script knows Debian's packages; allowed: a Debian or Ubuntu machine"
    install_packages
    mkdir -p "$STATE" "$LOGS" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
    chown munge:munge /run/munge
    chown mysql:mysql /run/mysqld
    write_configs

    start munged runuser -u munge -- munged --foreground
    wait_for 30 munge munge -n
    start mariadbd runuser -u mysql -- mariadbd --bind-address=127.0.0.1
    wait_for 60 MariaDB mariadb -e "SELECT 1"
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    start slurmdbd slurmdbd -D
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster blf >/dev/null 2>&1 || true
    sacctmgr -i add account blf cluster=blf >/dev/null 2>&1 || true
    sacctmgr -i add user root account=blf cluster=blf >/dev/null 2>&1 || true
    start slurmctld slurmctld -D
    wait_for 60 slurmctld scontrol ping
    start slurmd slurmd -D
    wait_for 60 "the node" sh -c 'sinfo -h -N -o %t | grep -Eq "^(idle|mix|alloc)"'
    sinfo
}

down() {
    local name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        [ -f "$STATE/$name.pid" ] || continue
        pid=$(cat "$STATE/$name.pid")
        # The pid is of the command `up` ran (runuser for munged and mariadbd): stop its children too.
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        rm -f "$STATE/$name.pid"
        echo "$name: stopped"
    done
}

status() {
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then echo "$name: running"; else echo "$name: not running"; fi
    done
    ! command -v sinfo >/dev/null || sinfo 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "unknown command '${1:-}'; allowed: up, down, status" ;;
esac

#!/usr/bin/env bash
# A one-node Slurm on this machine, from Debian's packages, for `pytest -m slurm` (tests/test_slurm.py) and for
# trying `vaebench run --executor slurm` without a cluster: munged, MariaDB + slurmdbd (so that sacct, which
# submitit asks for job states, answers), slurmctld and slurmd on localhost; proctrack/linuxproc, task/none, no
# cgroups. Needs root. Usage: scripts/local_slurm.sh start | stop | status
set -euo pipefail

CLUSTER=vaebench
LOGS=/var/log/slurm
DB_PASS=vaebench-local
CONF=/etc/slurm

install_packages() {
    if ! command -v sbatch >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
    fi
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 2))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "local_slurm: $what did not come up within ${seconds}s (logs: $LOGS)" >&2
    return 1
}

start_munge() {
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    wait_until 10 munged sh -c 'munge -n | unmunge'
}

start_database() {
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! pgrep -x mariadbd >/dev/null; then
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        runuser -u mysql -- /usr/sbin/mariadbd --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
            --bind-address=127.0.0.1 --skip-name-resolve >"$LOGS/mariadb.log" 2>&1 &
    fi
    wait_until 60 MariaDB mariadb -u root -e 'select 1'
    mariadb -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

write_configs() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//')  # this machine's CPUs and cores, as slurmd sees them
    mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd
    cat >"$CONF/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
    chmod 0600 "$CONF/slurmdbd.conf"
}

start() {
    install_packages
    mkdir -p "$LOGS"
    start_munge
    start_database
    write_configs
    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_until 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    wait_until 60 "the node" sh -c 'sinfo -h -o "%t" | grep -qx idle'
    status
}

stop() {
    for daemon in slurmd slurmctld slurmdbd; do
        [ -s "/run/$daemon.pid" ] && kill "$(cat "/run/$daemon.pid")" 2>/dev/null || true
    done
    pgrep -x mariadbd >/dev/null && mariadb-admin -u root shutdown || true
    [ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
}

status() {
    sinfo
    sacctmgr -n list cluster format=cluster,controlhost
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
esac

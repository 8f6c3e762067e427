#!/usr/bin/env bash
# local_cluster.sh - a real one-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
# Debian's own Slurm (22.05 on bookworm) + munge (+ MariaDB and slurmdbd for accounting, so
# that `sacct` works: it is the SLURM executor's default status command and what the test
# uses to prove that jobs went through sbatch). Needs root. There is no systemd on the test
# machines: daemons are started by hand and stopped by the PIDs in their pid files, never
# by name. Every wait is bounded, so a broken cluster makes this script fail, not hang.
#
# Usage (as root):
#   bash tests/slurm/local_cluster.sh start    # install if needed, configure, start (or reuse), smoke-test
#   bash tests/slurm/local_cluster.sh stop     # stop the daemons (by pid file)
#   bash tests/slurm/local_cluster.sh status
#
# `start` is idempotent: when the daemons are up, the written configuration is unchanged
# and the node is idle, the running cluster is reused (about 1 s).
#
# Environment knobs:
#   SLURM_ACCOUNTING=1  (default) MariaDB + slurmdbd, so sacct works. 0: no accounting
#                       (then snakemake needs `--slurm-status-command squeue`).
#   FAKE_GPUS=N         (default 1) advertise N gres/gpu backed by /dev/null, so jobs asking
#                       `--gpus=1` or `--gres=gpu:1` are scheduled (there is no real GPU).
#   PARTITION=debug     name of the (default) partition.
#   SKIP_APT_UPDATE=1   do not run `apt-get update` before installing missing packages.
#   NO_INSTALL=1        never install: exit 3 when a package is missing (the test's skip path).
#
# Exit codes: 0 ok, 1 cluster failed to come up, 2 usage, 3 packages missing/uninstallable.
# Adapted from ../shared/tools/local-slurm.sh; the project owns this copy.
set -euo pipefail

ACTION=${1:-start}
SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-1}
FAKE_GPUS=${FAKE_GPUS:-1}
PARTITION=${PARTITION:-debug}
CLUSTER=${CLUSTER:-emoprobe}
NODE=$(hostname -s)
CONF_DIR=/etc/slurm
RUN_DIR=/run/slurm
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
LOG_DIR=/var/log/slurm
DB_PASS=${SLURM_DB_PASS:-slurmpass}

T_START=$(date +%s.%N)
log() { printf '[local-slurm %5.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T_START" 'BEGIN{print a-b}')" "$*"; }
die() { log "ERROR: $*"; exit "${2:-1}"; }

# wait_for <seconds> <command...>: poll every 0.25 s until the command succeeds
wait_for() {
  local limit=$1; shift
  local n=$(( limit * 4 ))
  for ((i = 0; i < n; i++)); do
    if timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  return 1
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # stop_pidfile <name> <pidfile>
  local name=$1 pf=$2
  if pid_alive "$pf"; then
    local pid; pid=$(cat "$pf")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pf"
}

node_ready() { sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -Eqx 'idle|mixed|allocated'; }

do_stop() {
  stop_pidfile slurmd     "$RUN_DIR/slurmd.pid"
  stop_pidfile slurmctld  "$RUN_DIR/slurmctld.pid"
  stop_pidfile slurmdbd   "$RUN_DIR/slurmdbd.pid"
  stop_pidfile mariadbd   /run/mysqld/mysqld.pid
  stop_pidfile munged     /run/munge/munged.pid
}

do_status() {
  for pf in /run/munge/munged.pid /run/mysqld/mysqld.pid "$RUN_DIR/slurmdbd.pid" \
            "$RUN_DIR/slurmctld.pid" "$RUN_DIR/slurmd.pid"; do
    if pid_alive "$pf"; then echo "running: $pf ($(cat "$pf"))"; else echo "stopped: $pf"; fi
  done
  timeout 10 sinfo -N -o '%N %P %T %C %m %G %E' 2>&1 || true
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  [ "$SLURM_ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${NO_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]}" 3
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get" 3
  if [ "${SKIP_APT_UPDATE:-0}" != 1 ]; then
    log "apt-get update"
    timeout 300 apt-get update -qq || die "apt-get update failed" 3
  fi
  log "apt-get install ${missing[*]}"
  # policy-rc.d on these machines forbids service starts; that is fine, we start by hand.
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed" 3
}

write_config() {  # writes slurm.conf, gres.conf, slurmdbd.conf; echoes "changed" if any differs
  local cpus mem changed=""
  cpus=$(nproc)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  mem=$(( mem > 4096 ? mem - 1024 : mem ))   # under the real figure, else "Low RealMemory" drains the node
  local gres_node="" gres_types="" gres_conf=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_node="Gres=gpu:${FAKE_GPUS}"
    # A gpu GRES without File= is counted as 0 by slurmd and the node goes INVAL; /dev/null works.
    for ((g = 0; g < FAKE_GPUS; g++)); do
      gres_conf+="NodeName=$NODE Name=gpu Count=1 File=/dev/null"$'\n'
    done
  fi
  # accounting keeps the job comment (rule/group name) and the GPUs a job got (sacct AllocTRES)
  local acct_lines
  if [ "$SLURM_ACCOUNTING" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
${gres_types:+AccountingStorageTRES=gres/gpu}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct_lines="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  local conf
  conf=$(cat <<EOF
# generated by emoprobe tests/slurm/local_cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups: process tracking by /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job without --mem takes the whole node's memory (one job at a time)
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
$acct_lines
# finished jobs stay visible to squeue for 10 min (the executor's squeue mode needs >= 3x its first check)
MinJobAge=600
InactiveLimit=0
KillWait=5
Waittime=0
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
  if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" > "$CONF_DIR/slurm.conf"; changed=1
  fi
  if [ -n "$gres_conf" ]; then
    if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "${gres_conf%$'\n'}" ]; then
      printf '%s' "$gres_conf" > "$CONF_DIR/gres.conf"; changed=1
    fi
  elif [ -e "$CONF_DIR/gres.conf" ]; then
    rm -f "$CONF_DIR/gres.conf"; changed=1
  fi
  if [ "$SLURM_ACCOUNTING" = 1 ]; then
    cat > "$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$CONF_DIR/slurmdbd.conf"; chmod 600 "$CONF_DIR/slurmdbd.conf"
  fi
  log "config: node $NODE, $cpus CPUs, ${mem} MB, gpus=$FAKE_GPUS, accounting=$SLURM_ACCOUNTING${changed:+ (changed)}"
  [ -z "$changed" ] || echo changed > "$RUN_DIR/.config-changed"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  pid_alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  wait_for 10 bash -c 'munge -n | unmunge' || die "munged not working"
  log "munged up (pid $(cat /run/munge/munged.pid))"
}

start_accounting() {
  install -d -o mysql -g mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || timeout 120 mariadb-install-db --user=mysql >/dev/null
  if ! pid_alive /run/mysqld/mysqld.pid; then
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
      --pid-file=/run/mysqld/mysqld.pid >/var/log/mariadbd.out 2>&1 < /dev/null &
  fi
  wait_for 60 mariadb -e 'select 1' || die "mariadb did not start (see /var/log/mariadbd.out)"
  timeout 30 mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  log "mariadb up (pid $(cat /run/mysqld/mysqld.pid))"
  pid_alive "$RUN_DIR/slurmdbd.pid" || slurmdbd
  wait_for 60 sacctmgr -n show cluster || die "slurmdbd not answering (see $LOG_DIR/slurmdbd.log)"
  if ! timeout 20 sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  log "slurmdbd up (pid $(cat "$RUN_DIR/slurmdbd.pid")), cluster $CLUSTER registered"
}

smoke_test() {
  local out jid state=""
  out=$(mktemp -d)
  jid=$(timeout 20 sbatch --parsable -p "$PARTITION" -t 1 -o "$out/%j.out" --wrap 'hostname') \
    || die "sbatch smoke test: submission failed"
  # (sbatch --wait works too but polls slowly: ~10 s for a 0 s job)
  for ((i = 0; i < 240; i++)); do
    state=$(timeout 10 scontrol show job "$jid" -o 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) break ;; esac
    sleep 0.25
  done
  [ "$state" = COMPLETED ] || { timeout 10 scancel "$jid" 2>/dev/null || true; die "sbatch smoke test: job $jid state '$state'"; }
  grep -qx "$(hostname)" "$out/$jid.out" || die "sbatch smoke test: unexpected output"
  rm -rf "$out"
  log "smoke test ok: sbatch job $jid ran on $NODE"
}

do_start() {
  [ "$(id -u)" = 0 ] || die "run as root" 3
  install_packages
  log "packages ready: $(dpkg-query -W -f='${Package} ${Version}\n' slurmctld munge | tr '\n' ' ')"
  install -d -o slurm -g slurm "$RUN_DIR" "$STATE_DIR" "$LOG_DIR"
  install -d "$SPOOL_DIR"
  rm -f "$RUN_DIR/.config-changed"
  write_config
  start_munge
  [ "$SLURM_ACCOUNTING" = 1 ] && start_accounting

  if [ -e "$RUN_DIR/.config-changed" ] && { pid_alive "$RUN_DIR/slurmctld.pid" || pid_alive "$RUN_DIR/slurmd.pid"; }; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
    stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
  fi
  rm -f "$RUN_DIR/.config-changed"
  if pid_alive "$RUN_DIR/slurmctld.pid" && pid_alive "$RUN_DIR/slurmd.pid" && node_ready; then
    log "reusing running slurmctld (pid $(cat "$RUN_DIR/slurmctld.pid")) + slurmd (pid $(cat "$RUN_DIR/slurmd.pid"))"
  else
    if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
      # fresh state: an old drain/INVAL reason would otherwise survive a restart
      rm -rf "${STATE_DIR:?}"/*
      slurmctld
    fi
    pid_alive "$RUN_DIR/slurmd.pid" || slurmd
    if ! wait_for 60 bash -c node_ready; then
      timeout 10 scontrol update nodename="$NODE" state=resume 2>/dev/null || true
      wait_for 20 bash -c node_ready \
        || { timeout 10 sinfo -N -o '%N %T %E' || true; tail -20 "$LOG_DIR/slurmctld.log"; die "node $NODE not idle"; }
    fi
    log "slurmctld (pid $(cat "$RUN_DIR/slurmctld.pid")) + slurmd (pid $(cat "$RUN_DIR/slurmd.pid")) up; node ready"
  fi
  smoke_test
}

# node_ready is used through `timeout`/`bash -c` in wait_for, so export what it needs.
export -f node_ready
export NODE

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

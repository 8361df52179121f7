#!/usr/bin/env bash
# slurm-ci.sh - bring up / tear down a REAL Slurm 22.05 cluster on one Debian 12 machine
# (no systemd needed), so that tests can submit real jobs (sbatch/srun/submitit).
#
#   bash slurm-ci.sh start    # install if needed, write config, start daemons, wait until idle
#   bash slurm-ci.sh status
#   bash slurm-ci.sh stop     # cancel jobs, stop every daemon it started (by PID file)
#   bash slurm-ci.sh purge    # stop + delete Slurm state and the accounting DB (fresh job ids)
#
# Environment knobs:
#   SLURM_CI_NODES=1        number of slurmd "nodes" on this machine (Debian's build has
#                           MULTIPLE_SLURMD=Yes, so 2+ works: node names node1..nodeN)
#   SLURM_CI_CPUS=<n>       CPUs per node (default: nproc / NODES, at least 1). More than the
#                           hardware is allowed (SlurmdParameters=config_overrides).
#   SLURM_CI_ACCOUNTING=1   1: slurmdbd + MariaDB, so `sacct` works. submitit polls job state
#                           with sacct only; without it job.state is always UNKNOWN and a
#                           cancelled/killed job never counts as done (job.result() hangs).
#                           0: no accounting (faster, only for plain sbatch/srun tests).
#   SLURM_CI_PARTITION=debug
#
# Idempotent: re-running `start` re-uses running munged/mariadbd/slurmdbd and restarts
# slurmctld/slurmd only if the config changed or a daemon is not running.
set -euo pipefail

NODES=${SLURM_CI_NODES:-1}
ACCT=${SLURM_CI_ACCOUNTING:-1}
PARTITION=${SLURM_CI_PARTITION:-debug}
NPROC=$(nproc)
CPUS=${SLURM_CI_CPUS:-$(( NPROC / NODES > 0 ? NPROC / NODES : 1 ))}
HOST=$(hostname -s)
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
CTLD_STATE=/var/spool/slurmctld
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-ci-pass
HOSTS_TAG="# slurm-ci nodes"
T0=$EPOCHREALTIME

log() { printf '[slurm-ci %7ss] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{printf "%.2f", a-b}')" "$*" >&2; }
die() { log "ERROR: $*"; dump_logs; exit 1; }
dump_logs() {
  for f in "$LOG_DIR"/*.log /var/log/mariadbd-ci.log; do
    [ -f "$f" ] && { echo "----- tail $f" >&2; tail -n 25 "$f" >&2; }
  done
  return 0
}

node_names() {  # prints node names, one per line
  if [ "$NODES" -eq 1 ]; then echo "$HOST"; else for i in $(seq 1 "$NODES"); do echo "node$i"; done; fi
}

# --- PID helpers (PID 1 here may reap late: a killed daemon can linger as a zombie) -----
pid_of() { { [ -s "$1" ] && tr -dc '0-9' < "$1"; } 2>/dev/null || true; }
alive() {  # alive PIDFILE COMM  -> 0 if that pid runs that program and is not a zombie
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
stop_pidfile() {  # stop_pidfile PIDFILE COMM [SECONDS]
  local f=$1 comm=$2 secs=${3:-20} pid i
  if alive "$f" "$comm"; then
    pid=$(pid_of "$f"); log "stopping $comm (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $(( secs * 10 ))); do alive "$f" "$comm" || break; sleep 0.1; done
    if alive "$f" "$comm"; then log "$comm did not stop, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  fi
  rm -f "$f"   # slurmctld leaves a stale pid file behind
}
wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2 i; shift 2
  for i in $(seq 1 $(( secs * 5 ))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${secs}s waiting for: $what"
}

# --- install ---------------------------------------------------------------------------
install_pkgs() {
  local pkgs="munge slurmctld slurmd slurm-client" missing="" p
  [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "apt-get install:$missing"
    apt-get update -qq
    # --no-install-recommends: slurm-wlm's recommends pull ~35 more packages (hdf5, rrd, ...)
    # shellcheck disable=SC2086  # word splitting intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    log "install done"
  fi
  if [ ! -s /etc/munge/munge.key ]; then   # normally created by munge's postinst
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key
}

# --- config ----------------------------------------------------------------------------
write_if_changed() {  # write_if_changed FILE  (content on stdin); returns 0 if changed
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv "$tmp" "$1"; chmod 0644 "$1"; return 0
}

write_config() {
  local mem_total mem nodes_expr ports_expr acct_lines changed=1
  mem_total=$(slurmd -C | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)
  mem=$(( (mem_total - 1024) / NODES ))
  if [ "$NODES" -eq 1 ]; then nodes_expr=$HOST; ports_expr=6818
  else nodes_expr="node[1-$NODES]"; ports_expr="[17001-$(( 17000 + NODES ))]"; fi  # not 6819 (slurmdbd)
  if [ "$ACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  else
    acct_lines="AccountingStorageType=accounting_storage/none"
  fi
  mkdir -p "$CONF_DIR"
  if write_if_changed "$CONF_DIR/slurm.conf" <<EOF
# generated by slurm-ci.sh
ClusterName=ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits for its old credential to expire (default 120 s) before it may start
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
# no cgroups in this sandbox: track processes via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
KillWait=5
# sbatch jobs are otherwise scheduled up to 3 s after submission
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdSpoolDir=/var/spool/slurmd-%n
StateSaveLocation=${CTLD_STATE}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
${acct_lines}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=${nodes_expr} NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=${ports_expr} CPUs=${CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${CPUS} ThreadsPerCore=1 RealMemory=${mem} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  then log "wrote $CONF_DIR/slurm.conf"; else changed=0; fi

  if [ "$ACCT" = 1 ]; then
    write_if_changed "$CONF_DIR/slurmdbd.conf" <<EOF || true
# generated by slurm-ci.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=${LOG_DIR}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=${DB_USER}
StoragePass=${DB_PASS}
StorageLoc=${DB_NAME}
EOF
    chown slurm:slurm "$CONF_DIR/slurmdbd.conf"; chmod 0600 "$CONF_DIR/slurmdbd.conf"  # slurmdbd insists
    mkdir -p /etc/mysql/mariadb.conf.d
    write_if_changed /etc/mysql/mariadb.conf.d/99-slurm-ci.cnf <<'EOF' || true
# generated by slurm-ci.sh: values slurmdbd asks for; unix socket only
[mysqld]
innodb_buffer_pool_size=1G
innodb_lock_wait_timeout=900
skip-networking
EOF
  fi

  mkdir -p "$LOG_DIR" "$CTLD_STATE"
  chown slurm:slurm "$LOG_DIR" "$CTLD_STATE"
  local n
  for n in $(node_names); do mkdir -p "/var/spool/slurmd-$n"; done
  sed -i "/$HOSTS_TAG\$/d" /etc/hosts
  if [ "$NODES" -gt 1 ]; then   # node names must resolve (submitit hostnames, MASTER_ADDR, ...)
    echo "127.0.0.1 $(node_names | tr '\n' ' ')$HOSTS_TAG" >> /etc/hosts
  fi
  return $(( changed ? 0 : 1 ))
}

# --- daemons ---------------------------------------------------------------------------
start_munge() {
  if alive /run/munge/munged.pid munged && munge -n | unmunge >/dev/null 2>&1; then return 0; fi
  stop_pidfile /run/munge/munged.pid munged 5
  mkdir -p /run/munge; chown munge:munge /run/munge; chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged          # forks into the background itself
  wait_for 10 "munged" bash -c 'munge -n | unmunge'
  log "munged up (pid $(pid_of /run/munge/munged.pid))"
}

start_mariadb() {
  if alive /run/mysqld/mysqld.pid mariadbd && mariadb-admin --silent ping >/dev/null 2>&1; then return 0; fi
  stop_pidfile /run/mysqld/mysqld.pid mariadbd 30
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
    </dev/null >>/var/log/mariadbd-ci.log 2>&1 &
  wait_for 60 "mariadbd" mariadb-admin --silent ping
  mariadb -e "CREATE DATABASE IF NOT EXISTS ${DB_NAME};
              CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
              ALTER USER '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
              GRANT ALL ON ${DB_NAME}.* TO '${DB_USER}'@'localhost'; FLUSH PRIVILEGES;"
  log "mariadbd up (pid $(pid_of /run/mysqld/mysqld.pid))"
}

start_slurmdbd() {
  if alive /run/slurmdbd.pid slurmdbd; then return 0; fi
  stop_pidfile /run/slurmdbd.pid slurmdbd 10
  slurmdbd                                      # daemonizes, writes /run/slurmdbd.pid
  wait_for 60 "slurmdbd (sacctmgr list cluster)" sacctmgr -n -P list cluster
  log "slurmdbd up (pid $(pid_of /run/slurmdbd.pid))"
}

nodes_idle() {
  local want have
  want=$(node_names | sort | tr '\n' ' ')
  have=$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2=="idle"||$2=="mixed"||$2=="allocated"{print $1}' | sort -u | tr '\n' ' ')
  [ "$want" = "$have" ]
}

start_slurm() {  # start_slurm RESTART(0/1)
  local restart=$1 n all_up=1
  alive /run/slurmctld.pid slurmctld || all_up=0
  for n in $(node_names); do alive "/run/slurmd-$n.pid" slurmd || all_up=0; done
  if [ "$restart" = 0 ] && [ "$all_up" = 1 ] && nodes_idle; then log "slurm already running"; return 0; fi
  # stop old slurmd's (also ones from an earlier config with other node names)
  for f in /run/slurmd-*.pid /run/slurmd.pid; do [ -e "$f" ] && stop_pidfile "$f" slurmd 20; done
  stop_pidfile /run/slurmctld.pid slurmctld 20
  slurmctld                                     # daemonizes
  wait_for 30 "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
  for n in $(node_names); do slurmd -N "$n"; done
  wait_for 60 "all nodes idle" nodes_idle
  log "slurmctld pid $(pid_of /run/slurmctld.pid); slurmd: $(for n in $(node_names); do printf '%s=%s ' "$n" "$(pid_of "/run/slurmd-$n.pid")"; done)"
}

cmd_start() {
  install_pkgs
  local restart=0
  write_config && restart=1 || true
  start_munge
  if [ "$ACCT" = 1 ]; then start_mariadb; start_slurmdbd; fi
  start_slurm "$restart"
  if [ "$ACCT" = 1 ]; then
    wait_for 30 "cluster registered in slurmdbd" bash -c 'sacctmgr -n -P list cluster format=cluster,controlport | grep -q "^ci|6817"'
  fi
  # smoke test: a batch job (the main scheduler's first pass comes ~3 s after slurmctld
  # starts; until then batch jobs stay pending) that runs a step on every node
  # (sbatch --wait polls with 2..10 s sleeps, so poll scontrol ourselves)
  local jid st i
  jid=$(cd /tmp && sbatch --parsable -N "$NODES" -t 1 -o /dev/null -J slurm-ci-smoke \
        --wrap "srun -N $NODES --ntasks-per-node=1 true") || die "sbatch failed"
  for i in $(seq 1 300); do
    st=$(scontrol -o show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$st" in
      COMPLETED) break ;;
      PENDING|CONFIGURING|RUNNING|COMPLETING|"") sleep 0.2 ;;
      *) die "smoke job $jid ended in state $st" ;;
    esac
  done
  [ "$st" = COMPLETED ] || die "smoke job $jid not done after 60 s (state $st)"
  log "READY: $(sinfo -h -o '%P %a %D %T %N' | tr '\n' ' ')"
}

cmd_stop() {
  if command -v squeue >/dev/null && alive /run/slurmctld.pid slurmctld; then
    # slurmstepd (the running jobs) survives a slurmd kill, so cancel jobs first
    local jobs; jobs=$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086  # word splitting intended
      scancel $jobs || true
      for _ in $(seq 1 100); do [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  local f
  for f in /run/slurmd-*.pid /run/slurmd.pid; do [ -e "$f" ] && stop_pidfile "$f" slurmd 20; done
  stop_pidfile /run/slurmctld.pid slurmctld 20
  stop_pidfile /run/slurmdbd.pid slurmdbd 20
  stop_pidfile /run/mysqld/mysqld.pid mariadbd 60
  stop_pidfile /run/munge/munged.pid munged 10
  log "stopped"
}

cmd_purge() {
  cmd_stop
  rm -rf "$CTLD_STATE" /var/spool/slurmd-* "$LOG_DIR"/*.log
  if [ -d /var/lib/mysql/$DB_NAME ]; then
    start_mariadb; mariadb -e "DROP DATABASE IF EXISTS ${DB_NAME}"
    stop_pidfile /run/mysqld/mysqld.pid mariadbd 60
  fi
  sed -i "/$HOSTS_TAG\$/d" /etc/hosts
  log "purged state"
}

cmd_status() {
  local f comm
  for f in /run/munge/munged.pid /run/mysqld/mysqld.pid /run/slurmdbd.pid /run/slurmctld.pid /run/slurmd-*.pid; do
    [ -e "$f" ] || continue
    comm=$(basename "$f" .pid); comm=${comm%%-*}; [ "$comm" = mysqld ] && comm=mariadbd
    if alive "$f" "$comm"; then echo "$comm: running (pid $(pid_of "$f"))"; else echo "$comm: not running"; fi
  done
  sinfo -N 2>/dev/null || true
  squeue 2>/dev/null || true
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  purge) cmd_purge ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status|purge" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Install (Debian packages) and start a real single-node Slurm cluster on this machine, as root and
# without systemd: munge, MariaDB + slurmdbd (accounting, so `sacct` works), slurmctld and slurmd.
# Partitions `cpu` (default) and `gpu`; the node advertises a fake GPU GRES (no devices) and more
# CPUs and memory than it has (SlurmdParameters=config_overrides), like a compute node would.
#
#   sudo tests/slurm/start-local-slurm.sh          # idempotent: a running cluster is left as it is
#   tests/slurm/start-local-slurm.sh --stop        # stop the daemons
#
# Used by tests/test_slurm.py (and by .ci/run when it runs as root).
set -euo pipefail
CPUS=${EXPE_SLURM_CPUS:-16}
MEM=${EXPE_SLURM_MEM_MB:-64000}
GPUS=${EXPE_SLURM_GPUS:-2}
HOST=$(hostname -s)
CONF=/etc/slurm

if [ "${1:-}" = "--stop" ]; then
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x slurmdbd || true
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-local-slurm.sh: needs root (it installs Debian packages and starts daemons)" >&2
  exit 2
fi
node_usable() { sinfo -h -o %T -n "$HOST" 2>/dev/null | head -1 | grep -Eq '^(idle|mix|alloc)'; }
if sinfo -h >/dev/null 2>&1 && sacct -n -X -S now >/dev/null 2>&1 && node_usable; then
  echo "start-local-slurm.sh: a Slurm cluster with accounting is already running"; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
fi

# munge: the authentication every Slurm daemon and command uses
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# MariaDB for slurmdbd
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  (mysqld_safe --user=mysql >/dev/null 2>&1 &)
  for _ in $(seq 60); do mariadb -e "select 1" >/dev/null 2>&1 && break; sleep 1; done
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > "$CONF/slurmdbd.conf" <<CONFEOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONFEOF
chmod 600 "$CONF/slurmdbd.conf"

cat > "$CONF/slurm.conf" <<CONFEOF
ClusterName=expe
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
JobRequeue=1
KillWait=30
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
AccountingStoreFlags=job_comment   # sacct shows the comment in which the Snakemake plugin names the rule
AccountingStorageTRES=gres/gpu   # and the GPUs a job was given (AllocTRES gres/gpu=N)
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONFEOF
# The fake GPUs are device files: slurmd 22.05 reports a count of 0 for a `Count=` line without
# `File=` and the node goes INVAL ("gres/gpu count reported lower than configured"). Character
# devices 1:3 are /dev/null's, so nothing can touch real hardware through them.
GRES_OK=1
for i in $(seq 0 $((GPUS - 1))); do
  [ -e /dev/fakegpu$i ] || mknod /dev/fakegpu$i c 1 3 2>/dev/null || GRES_OK=0
done
if [ "$GRES_OK" = 1 ]; then
  echo "NodeName=$HOST Name=gpu File=/dev/fakegpu[0-$((GPUS - 1))]" > "$CONF/gres.conf"
else
  echo "NodeName=$HOST Name=gpu Count=$GPUS" > "$CONF/gres.conf"
fi

pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster expe >/dev/null 2>&1 || true
sacctmgr -i add account my_account Cluster=expe Description=expe Organization=expe >/dev/null 2>&1 || true
sacctmgr -i add user root Account=my_account Cluster=expe >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  node_usable && break
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
sinfo
if ! node_usable; then
  echo "start-local-slurm.sh: node $HOST is not usable: $(sinfo -h -R -o '%T: %E' -n "$HOST")" >&2; exit 1
fi
sacct -n -X -S now >/dev/null && echo "start-local-slurm.sh: cluster 'expe' up on $HOST ($CPUS CPUs, $MEM MB, $GPUS fake GPUs), accounting on"

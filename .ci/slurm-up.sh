#!/usr/bin/env bash
# A one-node Slurm on this machine, for the `submit slurm` tests: Debian's slurm-wlm and munge,
# daemons started directly (no systemd), no cgroups (proctrack/linuxproc, task/none), the
# node's real CPUs and memory (`slurmd -C`), one partition "debug".
#
#   .ci/slurm-up.sh            install (if missing) and start; waits until the node is idle
#   .ci/slurm-down.sh          stop the daemons this script started
#
# Needs root (CI runs as root).  Idempotent: if Slurm already answers with an idle node, it
# does nothing.  It never overwrites a slurm.conf it did not write.  On any failure it prints
# "slurm-up: FAILED: <reason>" and the daemons' last log lines, and exits 1.
set -uo pipefail

MARK="# written by clevr-remv .ci/slurm-up.sh"
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
SPOOL=/var/spool
WAIT_S=${SLURM_UP_WAIT_S:-60}

fail() {
    echo "slurm-up: FAILED: $*" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        [ -s "$f" ] && [ -r "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}

node_state() { timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n 1; }

if command -v sinfo >/dev/null 2>&1; then
    state=$(node_state)
    case "$state" in
        idle|mix|alloc|comp)
            echo "slurm-up: Slurm already running (node $state)"; exit 0 ;;
    esac
fi

[ "$(id -u)" = 0 ] || fail "needs root to install packages and start slurmctld/slurmd (run as root, as CI does)"

# pgrep (procps) decides below whether a daemon already runs: without it, a second munged or
# slurmctld would be started.  A minimal Debian may lack it.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 || ! command -v pgrep >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || fail "slurm-wlm/munge/procps are not all installed and there is no apt-get to install them"
    echo "slurm-up: installing slurm-wlm, munge and procps (apt-get)"
    # .ci/run sets CLEVR_REMV_APT_UPDATED after its own apt-get update; standalone, update here.
    ( { [ -n "${CLEVR_REMV_APT_UPDATED:-}" ] || apt-get update -qq; } \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge procps) >/tmp/slurm-up-apt.log 2>&1 \
        || fail "apt-get install slurm-wlm munge procps failed (see /tmp/slurm-up-apt.log: $(tail -n 1 /tmp/slurm-up-apt.log))"
fi

# --- munge: the authentication every Slurm call needs ------------------------------------------
if ! pgrep -x munged >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge fails)"

# --- slurm.conf for this one node ---------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script; refusing to replace a real cluster's configuration"
fi
NODE=$(hostname -s)
NODE_LINE=$(slurmd -C 2>/dev/null | head -n 1)
case "$NODE_LINE" in NodeName=*) ;; *) fail "'slurmd -C' could not describe this node: $NODE_LINE" ;; esac
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
# Leave a little memory to the system; jobs that ask for none get an even share per CPU.
MEM=$(( MEM > 2048 ? MEM - 512 : MEM ))
NODE_LINE=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$MEM/" -e 's/ UpTime=.*//' <<<"$NODE_LINE")
mkdir -p "$CONF_DIR" "$LOG_DIR" "$SPOOL/slurmctld" "$SPOOL/slurmd"
cat >"$CONF" <<EOF
$MARK
# A one-node cluster for tests: root runs the daemons, no cgroups, no accounting database.
ClusterName=clevrremv
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( MEM / CPUS ))
ReturnToService=2
MaxArraySize=100001
MaxJobCount=200000
KillWait=10
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# Debian's packages leave a cgroup.conf out; with the plugins above none is needed.

# --- the daemons ---------------------------------------------------------------------------------
if ! pgrep -x slurmctld >/dev/null 2>&1; then
    slurmctld || fail "slurmctld did not start"
fi
if ! pgrep -x slurmd >/dev/null 2>&1; then
    slurmd -N "$NODE" || fail "slurmd did not start"
fi

state=""
for _ in $(seq 1 "$WAIT_S"); do
    state=$(node_state)
    [ "$state" = idle ] && break
    case "$state" in down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;; esac
    sleep 1
done
[ "$state" = idle ] || fail "node $NODE is not idle after ${WAIT_S}s (state: '${state:-no answer from slurmctld}')"
echo "slurm-up: Slurm up: node $NODE idle, $CPUS CPUs, ${MEM} MB, partition debug (config $CONF)"

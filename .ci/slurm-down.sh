#!/usr/bin/env bash
# Stop the one-node Slurm that .ci/slurm-up.sh started (its daemons, by their pid files).
# Jobs still queued or running are cancelled first.  Leaves munged running unless --all.
set -uo pipefail
MARK="# written by clevr-remv .ci/slurm-up.sh"
if ! grep -qF "$MARK" /etc/slurm/slurm.conf 2>/dev/null; then
    echo "slurm-down: /etc/slurm/slurm.conf was not written by slurm-up.sh; leaving this Slurm alone" >&2
    exit 1
fi
# scancel needs a job id or a filter (without one it only says "No job identification
# provided"): every job in the one partition slurm-up.sh configures, pending or running.
timeout 10 scancel --quiet --partition=debug 2>/dev/null || true
stop() {  # stop NAME PIDFILE
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || { echo "slurm-down: stopped $1 ($pid)"; return 0; }; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null; echo "slurm-down: killed $1 ($pid)"
}
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
if [ "${1:-}" = --all ]; then stop munged /run/munge/munged.pid; fi

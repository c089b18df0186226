#!/usr/bin/env bash
# A single-node SLURM cluster (Debian's Slurm packages) for CI and local tests of the SLURM executor.
#
#   bash .ci/slurm.sh start    # install the packages if missing, (re)configure and start; idempotent
#   bash .ci/slurm.sh stop     # stop the daemons started by `start`; idempotent
#   bash .ci/slurm.sh status   # sinfo
#
# No accounting daemon (slurmdbd): run Snakemake with `--slurm-status-command squeue` (the plugin
# otherwise polls sacct forever). MinJobAge=300 keeps finished jobs visible to squeue long enough.
# The node advertises fake GPUs (GRES backed by files, no devices) so rules with a `gpu`
# resource can be submitted; jobs see CUDA_VISIBLE_DEVICES but no CUDA device exists.
# State, spool, logs and pid files live under $SLURM_CI_DIR (default /tmp/slurm-ci); the config goes
# to /etc/slurm where the client commands (sbatch, squeue, sinfo) look for it. Needs root.
set -euo pipefail

STATE="${SLURM_CI_DIR:-/tmp/slurm-ci}"
CONF_DIR=/etc/slurm
GPUS="${SLURM_CI_GPUS:-4}"

log() { echo "slurm.sh: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    log "installing slurmctld slurmd slurm-client munge from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
    local cpus mem_total mem
    cpus="$(nproc)"
    mem_total="$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
    # Leave room for the test process itself; jobs asking for more are rejected at submission.
    mem="${SLURM_CI_MEM_MB:-$(( mem_total > 20000 ? 16000 : mem_total * 2 / 3 ))}"
    mkdir -p "$STATE"/{ctld,spool,log,run,gpus} "$CONF_DIR"
    local gpu_files=()
    for ((i = 0; i < GPUS; i++)); do
        touch "$STATE/gpus/fake-gpu$i"
        gpu_files+=("$STATE/gpus/fake-gpu$i")
    done
    cat >"$CONF_DIR/slurm.conf" <<CONF
# Written by .ci/slurm.sh: single-node CI cluster.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName=localhost CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    local files
    files="$(IFS=,; echo "${gpu_files[*]}")"
    echo "NodeName=localhost Name=gpu File=$files" >"$CONF_DIR/gres.conf"
}

wait_for_node() {
    for _ in $(seq 60); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            return 0
        fi
        sleep 0.5
    done
    log "node did not become idle; logs in $STATE/log"
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    return 1
}

start() {
    install_packages
    if running "$STATE/run/slurmctld.pid" && running "$STATE/run/slurmd.pid" && wait_for_node; then
        log "already running"
        sinfo
        return
    fi
    stop_daemons
    write_config
    # munge: a key, then the daemon as user munge.
    mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /var/run/munge
    if ! pgrep -u munge -x munged >/dev/null; then
        runuser -u munge -- munged
    fi
    slurmctld
    slurmd -N localhost
    wait_for_node
    # A node left DOWN by an earlier unclean stop comes back with ReturnToService=2; make sure.
    scontrol update NodeName=localhost State=RESUME 2>/dev/null || true
    log "started (state in $STATE)"
    sinfo
}

stop_daemons() {
    local name
    for name in slurmd slurmctld; do
        if running "$STATE/run/$name.pid"; then
            kill "$(cat "$STATE/run/$name.pid")" || true
            for _ in $(seq 40); do
                running "$STATE/run/$name.pid" || break
                sleep 0.25
            done
        fi
        rm -f "$STATE/run/$name.pid"
    done
}

stop() {
    stop_daemons
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    install) install_packages ;;
    *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A small SLURM cluster on this one machine (Debian's Slurm packages) for CI and local tests of the
# SLURM executor with profiles/aws-g5.
#
#   bash .ci/slurm.sh start    # install the packages if missing, (re)configure and start; idempotent
#   bash .ci/slurm.sh stop     # stop the daemons started by `start`; idempotent
#   bash .ci/slurm.sh status   # sinfo per node, with partitions and GRES
#
# Like the ParallelCluster of resources/aws/pcluster.yaml, it has one queue (partition) per
# instance type, with the names profiles/aws-g5 uses, and one node in each, named the way
# ParallelCluster names its dynamic nodes, declaring the instance type's vCPUs, memory (about 95%
# of it, as ParallelCluster does) and GPUs: `cpu` (default; c6i.2xlarge: 8 vCPUs, 16 GiB),
# `g5-12xlarge` (48 vCPUs, 192 GiB, 4 GPUs like its 4 A10G) and `g5-2xlarge` (8 vCPUs, 32 GiB,
# 1 GPU). So the profile's own requests (e.g. 32 CPUs and 180 GB for vLLM) are accepted as they
# would be on AWS, and a request beyond an instance type is rejected at submission as it would be
# there. The three nodes are slurmd daemons on this host and share its real CPUs and memory
# (SlurmdParameters=config_overrides): nothing is enforced (TaskPlugin=task/none, no cgroups).
# The GPUs are fake: GRES backed by empty files, no devices.
# No accounting daemon (slurmdbd), as on ParallelCluster: run Snakemake with
# `--slurm-status-command squeue` (the plugin otherwise polls sacct forever). MinJobAge=3600 keeps
# finished jobs visible to squeue and `scontrol show job` for an hour.
# State, spool, logs and pid files live under $SLURM_CI_DIR (default /tmp/slurm-ci); the config goes
# to /etc/slurm where the client commands (sbatch, squeue, sinfo) look for it. Needs root.
set -euo pipefail

STATE="${SLURM_CI_DIR:-/tmp/slurm-ci}"
CONF_DIR=/etc/slurm
# node name, partition, GPUs, vCPUs, memory (MB), slurmd port
NODES=(
    "cpu-dy-c6i-2xlarge-1 cpu 0 8 15000 17001"
    "g5-12xlarge-dy-g5-12xlarge-1 g5-12xlarge 4 48 186000 17002"
    "g5-2xlarge-dy-g5-2xlarge-1 g5-2xlarge 1 8 31000 17003"
)

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

all_running() {
    local node
    running "$STATE/run/slurmctld.pid" || return 1
    for node in "${NODES[@]}"; do
        read -r name _ <<<"$node"
        running "$STATE/run/slurmd-$name.pid" || return 1
    done
}

write_config() {
    mkdir -p "$STATE"/{ctld,spool,log,run,gpus} "$CONF_DIR"
    cat >"$CONF_DIR/slurm.conf" <<CONF
# Written by .ci/slurm.sh: the CI cluster, one node per ParallelCluster queue, all on this host.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The nodes declare their instance types' sizes, not this host's: do not drain them for it.
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# Finished jobs stay visible to squeue and scontrol for an hour (tests read them after a run).
MinJobAge=3600
GresTypes=gpu
CONF
    : >"$CONF_DIR/gres.conf"
    local node name partition gpus cpus mem port default
    for node in "${NODES[@]}"; do
        read -r name partition gpus cpus mem port <<<"$node"
        mkdir -p "$STATE/spool/$name"
        local gres=""
        if (( gpus > 0 )); then
            gres=" Gres=gpu:$gpus"
            local files=()
            for ((i = 0; i < gpus; i++)); do
                touch "$STATE/gpus/$name-gpu$i"
                files+=("$STATE/gpus/$name-gpu$i")
            done
            echo "NodeName=$name Name=gpu File=$(IFS=,; echo "${files[*]}")" >>"$CONF_DIR/gres.conf"
        fi
        default="NO"
        [[ "$partition" == cpu ]] && default="YES"
        echo "NodeName=$name NodeHostname=localhost Port=$port CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN" \
            >>"$CONF_DIR/slurm.conf"
        echo "PartitionName=$partition Nodes=$name Default=$default MaxTime=INFINITE State=UP" >>"$CONF_DIR/slurm.conf"
    done
}

wait_for_controller() {
    for _ in $(seq 30); do
        if timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
            return 0
        fi
        sleep 0.5
    done
    log "slurmctld does not answer; log in $STATE/log/slurmctld.log"
    tail -n 20 "$STATE/log/slurmctld.log" >&2 || true
    return 1
}

wait_for_node() {
    for _ in $(seq 60); do
        local ready
        ready="$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated)$' || true)"
        if (( ready == ${#NODES[@]} )); then
            return 0
        fi
        sleep 0.5
    done
    log "the nodes did not all become idle; logs in $STATE/log"
    timeout 5 sinfo -N -l >&2 || true
    tail -n 20 "$STATE"/log/*.log >&2 || true
    return 1
}

start() {
    install_packages
    if all_running && wait_for_controller && [[ -f "$CONF_DIR/slurm.conf" ]] && grep -q "^NodeName=g5-12xlarge-dy-g5-12xlarge-1 .* CPUs=48 " "$CONF_DIR/slurm.conf" \
        && wait_for_node; then
        log "already running"
        status
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
    local node name
    for node in "${NODES[@]}"; do
        read -r name _ <<<"$node"
        slurmd -N "$name"
    done
    wait_for_controller
    # A node left DOWN by an earlier unclean stop comes back with ReturnToService=2; make sure.
    for node in "${NODES[@]}"; do
        read -r name _ <<<"$node"
        timeout 10 scontrol update NodeName="$name" State=RESUME 2>/dev/null || true
    done
    wait_for_node
    log "started (state in $STATE)"
    status
}

stop_daemons() {
    local name pidfile names=()
    # every slurmd this script started, also under node names of an earlier version of it
    for pidfile in "$STATE"/run/slurmd*.pid; do
        [[ -e "$pidfile" ]] && names+=("$(basename "$pidfile" .pid)")
    done
    for name in "${names[@]}" slurmctld; do
        if running "$STATE/run/$name.pid"; then
            kill "$(cat "$STATE/run/$name.pid")" || true
            for _ in $(seq 40); do
                running "$STATE/run/$name.pid" || break
                sleep 0.25
            done
            # a slurmd still retrying to register with a dead controller ignores SIGTERM
            running "$STATE/run/$name.pid" && kill -9 "$(cat "$STATE/run/$name.pid")" 2>/dev/null || true
        fi
        rm -f "$STATE/run/$name.pid"
    done
}

stop() {
    stop_daemons
    log "stopped"
}

status() { sinfo -N -o '%N %P %T %c %m %G'; }

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install_packages ;;
    *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac

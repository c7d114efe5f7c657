#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (munged + slurmctld + slurmd, no accounting, no
# cgroups, no systemd), to run the workflow's SLURM profile for real in tests and CI.
#
#   scripts/slurm_local.sh [start]   install if missing (apt-get, root only), configure, start,
#                                    wait for the node, srun smoke test; fast when already up
#   scripts/slurm_local.sh stop      shut the daemons down (munged too, if this script started it)
#   scripts/slurm_local.sh status    daemons, node state and the queue
#   scripts/slurm_local.sh env       print `export SLURM_CONF=...` for the SLURM clients
#
# Everything lives under $FORCEMATCH_SLURM_DIR (default /tmp/forcematch-slurm): slurm.conf,
# state, spool, pid and log files; /etc/slurm/slurm.conf becomes a link to that slurm.conf (the
# script refuses to replace a config it did not write), so the clients (sbatch, squeue, sinfo,
# srun, Snakemake's SLURM executor) need no SLURM_CONF. Root is needed: SlurmUser=root, and
# munged runs as the munge user.
#
# Exit status: 0 ready (or stopped); 1 failure (message on stderr, then the daemon log's tail);
# 3 SLURM cannot be had here (not root, no apt-get, or the packages failed to install), which
# the test suite reports as a skip.
set -euo pipefail

DIR=${FORCEMATCH_SLURM_DIR:-/tmp/forcematch-slurm}
export SLURM_CONF=$DIR/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
UNAVAILABLE=3

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }
unavailable() { log "unavailable: $*"; exit "$UNAVAILABLE"; }

# A pid file names a live process. Not `kill -0`: this sandbox's PID 1 does not reap orphans,
# so a stopped daemon lingers as a zombie that `kill -0` calls alive.
alive() {
    local pid state
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Poll a command until it succeeds: wait_for SECONDS DESCRIPTION CMD...
wait_for() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "timed out after ${seconds} s waiting for $what"
    return 1
}

show_log() {
    [[ -f $1 ]] || return 0
    log "last lines of $1:"
    tail -n 20 "$1" >&2 || true
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -N -o %T 2>/dev/null | head -n 1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || unavailable "missing ${missing[*]} and no apt-get to install them"
    log "installing ${PACKAGES[*]} with apt-get (log: $DIR/apt.log)"
    # Package scripts print "policy-rc.d denied execution of start": expected, the daemons are
    # started below, by hand.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1; then
        log "install failed; running apt-get update and trying again"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                   "${PACKAGES[@]}"; } >>"$DIR/apt.log" 2>&1; then
            tail -n 5 "$DIR/apt.log" >&2 || true
            unavailable "apt-get could not install ${PACKAGES[*]} (see $DIR/apt.log)"
        fi
    fi
    for bin in munged slurmctld slurmd sbatch srun sinfo scontrol; do
        command -v "$bin" >/dev/null || unavailable "$bin still missing after apt-get install"
    done
}

check_hostname() {
    HOST=$(hostname -s) || die "hostname -s failed"
    [[ -n $HOST ]] || die "empty short hostname"
    if ! getent hosts "$HOST" >/dev/null; then
        log "adding '127.0.0.1 $HOST' to /etc/hosts (SlurmctldHost must resolve)"
        echo "127.0.0.1 $HOST" >>/etc/hosts || die "cannot write /etc/hosts"
    fi
}

# Clients find the config through SLURM_CONF or at /etc/slurm/slurm.conf. SLURM_CONF is not
# enough: inside an sbatch job, Snakemake's jobstep executor drops every SLURM_* variable (but
# the job's id) before its nested srun, which then looks in /etc/slurm. So /etc/slurm/slurm.conf
# becomes a link to this script's config, unless a config of someone else's is there.
link_etc_conf() {
    local etc=/etc/slurm/slurm.conf
    if [[ -L $etc && $(readlink "$etc") == "$SLURM_CONF" ]]; then
        return 0
    fi
    # A dangling link serves no one; anything else must carry this script's header line.
    if [[ -e $etc ]] && ! head -n 1 "$etc" 2>/dev/null | grep -q 'slurm_local.sh'; then
        die "$etc exists and was not written by this script: a SLURM is configured on this" \
            "machine already; use it, or move $etc away"
    fi
    mkdir -p /etc/slurm
    ln -sfn "$SLURM_CONF" "$etc" || die "cannot link $etc to $SLURM_CONF"
}

write_conf() {
    local node tmp
    # The node as slurmd sees it (CPUs, sockets, cores, threads, RealMemory): slurmd drains a
    # node whose configuration promises more than the hardware has.
    node=$(slurmd -C 2>/dev/null | grep '^NodeName=') || die "slurmd -C did not describe this node"
    mkdir -p "$DIR"/{state,spool,run,log}
    tmp=$(mktemp "$DIR/slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by scripts/slurm_local.sh (forcematch): a single-node test cluster, no accounting,
# no cgroups. Regenerated on every start; edit the script, not this file.
ClusterName=forcematch
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# Finished jobs stay visible to squeue and scontrol for an hour: Snakemake's SLURM executor
# reads job states with squeue (there is no sacct database) and counts a job missing from
# squeue as a success.
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$node State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    link_etc_conf
    if cmp -s "$tmp" "$SLURM_CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$SLURM_CONF"
        chmod 644 "$SLURM_CONF"
        CONF_CHANGED=1
    fi
}

start_munge() {
    munge_ok && return 0
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        log "creating $key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of="$key" bs=1024 count=1 status=none || die "cannot write $key"
    fi
    chown -R munge:munge /etc/munge || die "no munge user (is the munge package installed?)"
    chmod 700 /etc/munge
    chmod 400 "$key"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    if alive /run/munge/munged.pid; then
        die "munged runs (pid $(</run/munge/munged.pid)) but 'munge -n | unmunge' fails"
    fi
    rm -f /run/munge/munged.pid
    log "starting munged"
    runuser -u munge -- munged </dev/null >>"$DIR/log/munged.stdio" 2>&1 ||
        { show_log /var/log/munge/munged.log; die "munged did not start"; }
    touch "$DIR/run/munged.ours"
    wait_for 10 "munge -n | unmunge" munge_ok ||
        { show_log /var/log/munge/munged.log; die "munge does not work"; }
}

start_slurmctld() {
    if ctld_up; then
        ((CONF_CHANGED == 0)) && return 0
        log "slurm.conf changed: reconfiguring"
        scontrol reconfigure >/dev/null 2>&1 || die "scontrol reconfigure failed"
        return 0
    fi
    alive "$DIR/run/slurmctld.pid" &&
        die "slurmctld runs (pid $(<"$DIR/run/slurmctld.pid")) but does not answer scontrol ping"
    log "starting slurmctld"
    # It forks; detached stdio keeps a caller that captures output (CI, pytest) from hanging.
    slurmctld -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmctld.stdio" 2>&1 ||
        { show_log "$DIR/log/slurmctld.log"; die "slurmctld did not start"; }
    wait_for 30 "slurmctld to answer scontrol ping" ctld_up ||
        { show_log "$DIR/log/slurmctld.log"; die "slurmctld is not up"; }
}

start_slurmd() {
    alive "$DIR/run/slurmd.pid" && return 0
    log "starting slurmd"
    slurmd -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmd.stdio" 2>&1 ||
        { show_log "$DIR/log/slurmd.log"; die "slurmd did not start"; }
    wait_for 10 "slurmd's pid file" alive "$DIR/run/slurmd.pid" ||
        { show_log "$DIR/log/slurmd.log"; die "slurmd is not running"; }
}

wait_for_node() {
    local state
    state=$(node_state)
    if [[ $state =~ ^(down|drain|drained|draining|fail)  ]]; then
        log "node $HOST is $state: resuming it"
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    fi
    wait_for 30 "node $HOST to become idle" node_ready || {
        sinfo -N -l >&2 || true
        show_log "$DIR/log/slurmd.log"
        die "node $HOST is not ready"
    }
}

smoke_test() {
    # Right after a restart the node can show idle before slurmd has registered: retry.
    local i
    for i in 1 2 3 4 5; do
        timeout 60 srun -N1 -n1 -t 1 true </dev/null >/dev/null 2>&1 && return 0
        sleep 1
    done
    timeout 60 srun -N1 -n1 -t 1 true </dev/null >&2 || true
    show_log "$DIR/log/slurmctld.log"
    show_log "$DIR/log/slurmd.log"
    die "the srun smoke test failed"
}

cmd_start() {
    [[ $(id -u) -eq 0 ]] || unavailable "must run as root (daemons run as root and munge)"
    mkdir -p "$DIR"/{state,spool,run,log} || die "cannot create $DIR"
    install_packages
    check_hostname
    write_conf
    start_munge
    start_slurmctld
    start_slurmd
    wait_for_node
    smoke_test
    log "ready: node $HOST ($(sinfo -h -N -o '%c CPUs, %m MB')), config $SLURM_CONF"
}

stop_pidfile() {
    local pidfile=$1 pid i
    alive "$pidfile" || return 0
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        alive "$pidfile" || return 0
        sleep 0.2
    done
    log "pid $pid (from $pidfile) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

cmd_stop() {
    if [[ -f $SLURM_CONF ]] && command -v scontrol >/dev/null && ctld_up; then
        log "scontrol shutdown"
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    # Whatever did not follow the shutdown (or a controller that never came up).
    stop_pidfile "$DIR/run/slurmd.pid"
    stop_pidfile "$DIR/run/slurmctld.pid"
    if [[ -f $DIR/run/munged.ours ]]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$DIR/run/munged.ours"
    fi
    if alive "$DIR/run/slurmd.pid" || alive "$DIR/run/slurmctld.pid"; then
        die "SLURM daemons still running"
    fi
    log "stopped"
}

cmd_status() {
    local name
    for name in slurmctld slurmd; do
        if alive "$DIR/run/$name.pid"; then
            echo "$name: running (pid $(<"$DIR/run/$name.pid"))"
        else
            echo "$name: not running"
        fi
    done
    if munge_ok; then echo "munge: ok"; else echo "munge: not working"; fi
    if ctld_up; then
        sinfo -N -l
        squeue
    fi
}

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    -h | --help | help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown command '$1' (start, stop, status, env)" ;;
esac

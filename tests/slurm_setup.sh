#!/usr/bin/env bash
# A single-node Slurm on this machine, for the live-Slurm test tier (pytest -m slurm) and for trying
# `pref-brl-sweep --executor slurm` by hand (docs/studies.md). Idempotent: when `sinfo` already answers,
# nothing is installed, written or started.
#
# What it does, as root on Debian/Ubuntu: apt-get install slurmctld slurmd slurm-client munge; write
# /etc/slurm/slurm.conf (this host with its cores and memory, one partition, no accounting) unless one
# exists; start munged, slurmctld and slurmd (no systemd needed); wait until the node is idle.
#
# Exit status: 0 Slurm is up; 77 Slurm cannot be set up here (not root, no apt-get, packages not
# installable), with the reason on the last line of stderr; 1 it was set up but did not come up (daemon logs
# are printed).
set -uo pipefail

skip() { echo "slurm_setup: skipped: $*" >&2; exit 77; }
fail() {
    echo "slurm_setup: error: $*" >&2
    for log in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/munge/munged.log; do
        [ -f "$log" ] && { echo "--- tail of $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}
node_ready() { timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
running() { ps -C "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }  # a live process of that name (not a zombie)

if command -v sinfo >/dev/null 2>&1 && node_ready; then
    echo "slurm_setup: Slurm is up: $(sinfo -h -o '%N %c CPUs %m MB %T' | head -n 1)"
    exit 0
fi

[ "$(id -u)" = 0 ] || skip "needs root to install and start Slurm (run: sudo $0)"

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
        || ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || skip "Slurm is not installed and there is no apt-get to install it"
    echo "slurm_setup: installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/tmp/slurm_setup_apt.log 2>&1; then
        apt-get update -q >>/tmp/slurm_setup_apt.log 2>&1
        apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >>/tmp/slurm_setup_apt.log 2>&1 \
            || skip "apt-get could not install the Slurm packages (offline?); see /tmp/slurm_setup_apt.log"
    fi
fi

host=$(hostname -s)
conf=/etc/slurm/slurm.conf
if [ ! -f "$conf" ]; then
    # slurmd -C prints this host's NodeName line (CPUs, sockets, cores, threads, RealMemory); keep 1 GB back.
    node=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(( mem > 2048 ? mem - 1024 : mem ))
    mkdir -p /etc/slurm
    cat >"$conf" <<EOF
# single-node Slurm written by tests/slurm_setup.sh (pref-brl); delete this file to let it write a new one
ClusterName=single
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# a requeued job may start again 10 s after its requeue (the default is 120 s)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    echo "slurm_setup: wrote $conf ($host, $cpus CPUs, $mem MB)"
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then  # munged is not answering: (re)start it
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --force || fail "munged did not start"
    munge_restarted=1
fi
running slurmctld || /usr/sbin/slurmctld || fail "slurmctld did not start"
if running slurmd; then
    # daemons that ran without munged retry only every minute or so: have them register now
    [ -n "${munge_restarted:-}" ] && timeout 20 scontrol reconfigure >/dev/null 2>&1
else
    /usr/sbin/slurmd || fail "slurmd did not start"
fi

deadline=$((SECONDS + 90))
while [ "$SECONDS" -lt "$deadline" ]; do
    if node_ready; then
        echo "slurm_setup: Slurm is up: $(sinfo -h -o '%N %c CPUs %m MB %T' | head -n 1)"
        exit 0
    fi
    # a node that was DOWN (e.g. after a restart of this machine) is brought back
    scontrol update nodename="$host" state=resume >/dev/null 2>&1
    sleep 1
done
fail "the node did not become idle within 90 s: $(timeout 10 sinfo -h 2>&1 | head -n 3)"

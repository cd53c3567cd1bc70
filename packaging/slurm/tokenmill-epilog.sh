#!/bin/bash
# Slurm Epilog: after the batch job released the node's GPUs, let tokenmill
# admit work again (the reverse of tokenmill-prolog.sh). Install as Epilog=
# in slurm.conf. Only undoes a drain while no other job runs on the node
# (a node shared by several jobs stays drained until the last one ends).
#
# Settings: TOKENMILL_SOCKET, TOKENMILL_CLI as for the prolog.
set -u
socket=${TOKENMILL_SOCKET:-/run/tokenmill/tokenmill.sock}
cli=${TOKENMILL_CLI:-tokenmill}
job=${SLURM_JOB_ID:-none}

log() { logger -t tokenmill-epilog "$*" 2>/dev/null || true; echo "tokenmill-epilog: $*" >&2; }

if [ ! -S "$socket" ]; then
  log "job=$job no tokenmilld socket at $socket: nothing to resume"
  exit 0
fi
# Other jobs of this node still running keep it drained (squeue may be
# absent or unreachable: then resume).
if command -v squeue >/dev/null 2>&1 && [ -n "${SLURMD_NODENAME:-}" ]; then
  others=$(squeue --noheader --nodelist="$SLURMD_NODENAME" --states=RUNNING --format=%A 2>/dev/null |
    grep -vx "$job" | grep -c . || true)
  if [ "${others:-0}" -gt 0 ]; then
    log "job=$job $others other job(s) on the node: tokenmill stays drained"
    exit 0
  fi
fi
# An epilog failure drains the Slurm node; a tokenmill that cannot be
# resumed is logged, not a reason to take the node out of Slurm.
"$cli" --socket "$socket" drain --cancel >/dev/null
status=$?
if [ "$status" -eq 0 ]; then
  log "job=$job tokenmill resumed"
else
  log "job=$job tokenmill did not resume (exit $status)"
fi
exit 0

#!/bin/bash
# Slurm Prolog for nodes that run tokenmilld next to batch jobs: before a job
# takes the node's GPUs, drain tokenmill (no new requests; /readyz turns 503
# so routers and the endpoint picker move away) and wait for its running
# and queued requests to finish. Install as Prolog= in slurm.conf (runs as
# root on the job's nodes, before the job starts); the epilog,
# tokenmill-epilog.sh, resumes the node.
#
# A prolog that exits non-zero drains the Slurm node and requeues the job:
# if tokenmill is still busy after TOKENMILL_DRAIN_WAIT seconds it gives up
# on waiting and exits 0 (the job gets the GPUs; tokenmill's remaining
# requests share them) unless TOKENMILL_DRAIN_STRICT=1. If tokenmilld is not
# running there is nothing to drain.
#
# Settings (environment, e.g. from a prolog wrapper):
#   TOKENMILL_SOCKET       control socket (default /run/tokenmill/tokenmill.sock)
#   TOKENMILL_CLI          the tokenmill CLI (default: tokenmill on PATH)
#   TOKENMILL_DRAIN_WAIT   seconds to wait for requests to finish (default 120)
#   TOKENMILL_DRAIN_STRICT 1: fail the prolog when they did not finish
set -u
socket=${TOKENMILL_SOCKET:-/run/tokenmill/tokenmill.sock}
cli=${TOKENMILL_CLI:-tokenmill}
wait_s=${TOKENMILL_DRAIN_WAIT:-120}
job=${SLURM_JOB_ID:-none}

log() { logger -t tokenmill-prolog "$*" 2>/dev/null || true; echo "tokenmill-prolog: $*" >&2; }

if [ ! -S "$socket" ]; then
  log "job=$job no tokenmilld socket at $socket: nothing to drain"
  exit 0
fi
"$cli" --socket "$socket" drain --wait "$wait_s" >/dev/null
status=$?
if [ "$status" -eq 0 ]; then
  log "job=$job tokenmill drained"
  exit 0
fi
if [ "${TOKENMILL_DRAIN_STRICT:-0}" = 1 ]; then
  log "job=$job tokenmill not drained after ${wait_s}s (exit $status): failing the prolog"
  exit 1
fi
log "job=$job tokenmill not drained after ${wait_s}s (exit $status): the job starts anyway"
exit 0

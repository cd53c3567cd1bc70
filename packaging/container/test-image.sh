#!/usr/bin/env bash
# Runs the image build-image.sh made and checks it as an operator and an
# attacker would see it: starts it with podman (non-root, read-only root, no
# capabilities, config, data and socket as volumes from this host), writes a
# synthetic model with the image's own CLI, serves one /v1/completions
# request through the published client port and one control call through the
# socket volume, checks who can open that socket and what runs as root, runs
# the DaemonSet's preStop drain in it, then stops it with SIGTERM and expects
# a clean exit. Exits non-zero on any
# failure. Needs root; not part of CI.
#
#   bash packaging/container/test-image.sh [--image REF] [--keep]
#   bash packaging/container/test-image.sh --chroot ROOTFS [--keep]
#
# --chroot is for hosts where podman cannot run containers: the same checks
# on build-image.sh's root filesystem (build/image/rootfs), the daemon started
# in it with chroot as the image's user, the volumes bind-mounted, the ports
# on 127.0.0.1 (any free port) instead of published ones.
#
# podman's defaults do not run everywhere (sandboxes without CAP_SYS_RESOURCE
# cannot raise RLIMIT_NOFILE; crun refuses hosts with controllers in both
# cgroup hierarchies): when a first try fails, the script says why and retries
# with smaller rlimits, then with runc. TOKENMILL_PODMAN_OPTS, when set, is
# used instead of that search (e.g. "--runtime runc").
set -uo pipefail

image=localhost/tokenmill:latest
rootfs=""
keep=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --image) image=$2; shift 2 ;;
    --chroot) rootfs=$(realpath "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed -e '/^set -uo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=SCRIPTDIR/../checks.sh
source "$(dirname "$0")/../checks.sh"
section() { printf '== %s\n' "$*"; }
die() {
  echo "FAIL: $*" >&2
  exit 1
}
not() { ! "$@"; }

[[ $(id -u) -eq 0 ]] || die "needs root (volumes owned by the image's user, podman or chroot)"
tools=(curl setpriv sha256sum)
[[ -n $rootfs ]] || tools+=(podman)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [[ -n $rootfs ]]; then
  [[ -x $rootfs/usr/bin/tokenmilld ]] || die "no usr/bin/tokenmilld in $rootfs"
else
  podman image exists "$image" || die "no image $image (run packaging/container/build-image.sh)"
fi

name=tokenmill-image-test-$$
# 0755 so that a host user's access to the socket is decided by the socket
# volume's own permissions, not by this scratch directory's.
tmp=$(mktemp -d /tmp/tokenmill-image-test.XXXXXX) || exit 1
chmod 0755 "$tmp"
image_mnt=""
daemon_pid=""
unmount_rootfs() {
  findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}
finish() {
  [[ -n $image_mnt ]] && podman image unmount "$image" >/dev/null 2>&1
  if ((keep)); then
    echo "kept: ${rootfs:+daemon pid $daemon_pid in $rootfs}${rootfs:-container $name}, volumes under $tmp"
    return
  fi
  if [[ -n $rootfs ]]; then
    if [[ -n $daemon_pid ]]; then
      kill -KILL "$daemon_pid" 2>/dev/null
      wait "$daemon_pid" 2>/dev/null
    fi
    unmount_rootfs
  else
    podman rm -f -t 0 "$name" >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap finish EXIT

# --- The image's metadata and files -----------------------------------------------------
if [[ -n $rootfs ]]; then
  section "root filesystem $rootfs"
  r=$rootfs
  user=$(awk -F: '$1 == "tokenmill" { print $3 ":" $4 }' "$r/etc/passwd")
  [[ -n $user ]] || die "no user tokenmill in $r/etc/passwd"
else
  section "image $image"
  inspect() { podman image inspect -f "$1" "$image"; }
  user=$(inspect '{{.Config.User}}')
  echo "  id $(inspect '{{.Id}}' | cut -c1-12), $(inspect '{{.Size}}') bytes," \
    "version $(inspect '{{index .Labels "org.opencontainers.image.version"}}')"
fi
uid=${user%%:*}
gid=${user#*:}
check "runs as a numeric non-root user and group ($user)" \
  test -n "$uid" -a "$uid" != 0 -a "$gid" != 0 -a "$uid" != "$user" -a -z "${uid//[0-9]/}"
if [[ -z $rootfs ]]; then
  check "entrypoint is tokenmilld --config /etc/tokenmill/tokenmill.toml" test \
    "$(inspect '{{json .Config.Entrypoint}}{{json .Config.Cmd}}')" = \
    '["/usr/bin/tokenmilld"]["--config","/etc/tokenmill/tokenmill.toml"]'
  # shellcheck disable=SC2016 # Go templates, not shell expansions.
  volumes=$(inspect '{{range $k, $v := .Config.Volumes}}{{$k}} {{end}}')
  for v in /etc/tokenmill /var/lib/tokenmill /run/tokenmill; do
    check "volume $v" grep -qw -- "$v" <<<"$volumes"
  done
  # shellcheck disable=SC2016
  ports=$(inspect '{{range $k, $v := .Config.ExposedPorts}}{{$k}} {{end}}')
  for p in 8000/tcp 9464/tcp; do
    check "exposes $p" grep -qw -- "$p" <<<"$ports"
  done
  check "no environment but PATH" \
    test -z "$(inspect '{{range .Config.Env}}{{println .}}{{end}}' | grep -v '^PATH=' | grep -v '^$')"
  image_mnt=$(podman image mount "$image") || die "podman image mount $image failed"
  r=$image_mnt
fi

check "passwd: tokenmill is $uid:$gid with no login shell" \
  grep -qx "tokenmill:x:$uid:$gid:tokenmill inference daemon:/var/lib/tokenmill:/usr/sbin/nologin" \
  "$r/etc/passwd"
check "shadow: no account has a password" \
  test -z "$(awk -F: '$2 !~ /^(\*|!.*)$/ { print $1 }' "$r/etc/shadow")"
setid=$(find "$r" -xdev -type f -perm /6000 | sed "s|^$r||")
check "no set-user-ID or set-group-ID file${setid:+: $setid}" test -z "$setid"
if command -v python3 >/dev/null; then
  # File capabilities (security.capability) would grant privileges as set-ID does.
  fcaps=$(python3 -c '
import os, sys
root = sys.argv[1]
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        if not os.path.islink(p) and "security.capability" in os.listxattr(p):
            print(p[len(root):])
' "$r")
  check "no file with file capabilities${fcaps:+: $fcaps}" test -z "$fcaps"
else
  echo "  skip: no python3 to read file capabilities"
fi
keys=$(grep -rlE 'PRIVATE KEY-----|^api_keys_sha256|^control_token_sha256 = "[0-9a-f]' \
  "$r/etc" "$r/root" "$r/var" "$r/home" "$r/opt" "$r/usr/local" 2>/dev/null | sed "s|^$r||")
check "no private key, API key hash or admin token hash baked in${keys:+: $keys}" test -z "$keys"
check "no resolver or host name of the build host" \
  test ! -s "$r/etc/resolv.conf" -a "$(cat "$r/etc/hostname")" = localhost
check "no apt lists or package caches" \
  test -z "$(find "$r/var/lib/apt/lists" "$r/var/cache/apt" -type f ! -name lock 2>/dev/null)"
check "config is root:$gid 0640" test "$(stat -c '%u:%g %a' "$r/etc/tokenmill/tokenmill.toml")" = "0:$gid 640"
check "/var/lib/tokenmill is $uid:$gid 0750" \
  test "$(stat -c '%u:%g %a' "$r/var/lib/tokenmill")" = "$uid:$gid 750"
check "/run/tokenmill is $uid:$gid 0750" test "$(stat -c '%u:%g %a' "$r/run/tokenmill")" = "$uid:$gid 750"
cp "$r/etc/tokenmill/tokenmill.toml" "$tmp/image.toml"
if [[ -n $image_mnt ]]; then
  podman image unmount "$image" >/dev/null
  image_mnt=""
fi

# --- How to run it here ---------------------------------------------------------------------
opts=()
if [[ -z $rootfs ]]; then
  section "podman run options"
  if [[ -n ${TOKENMILL_PODMAN_OPTS+x} ]]; then
    read -r -a opts <<<"$TOKENMILL_PODMAN_OPTS"
    podman run --rm "${opts[@]}" --entrypoint /usr/bin/tokenmilld "$image" --version ||
      die "podman run with TOKENMILL_PODMAN_OPTS=$TOKENMILL_PODMAN_OPTS failed"
  else
    candidates=("" "--ulimit nofile=16384:16384 --ulimit nproc=4096:4096")
    command -v runc >/dev/null &&
      candidates+=("--runtime runc --ulimit nofile=16384:16384 --ulimit nproc=4096:4096")
    found=0
    for c in "${candidates[@]}"; do
      read -r -a opts <<<"$c"
      if out=$(podman run --rm "${opts[@]}" --entrypoint /usr/bin/tokenmilld "$image" --version 2>&1); then
        echo "  $out"
        found=1
        break
      fi
      echo "  podman run ${c:-(defaults)}: $out"
    done
    ((found)) || die "podman cannot run a container here (try --chroot build/image/rootfs)"
  fi
  echo "  using: podman run ${opts[*]:-(defaults)}"
fi

# --- Volumes from this host -----------------------------------------------------------------
section "volumes under $tmp"
key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_hash=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
install -d -o 0 -g "$gid" -m 0750 "$tmp/etc"
install -d -o "$uid" -g "$gid" -m 0750 "$tmp/data" "$tmp/data/models" "$tmp/run"
# The image's config (the ConfigMap's) plus a CPU device, a model and a tenant.
# Under chroot the ports are the host's: loopback, any free port.
{
  if [[ -n $rootfs ]]; then
    sed -e 's/^tcp = .*/tcp = "127.0.0.1:0"/' -e 's/^listen = .*/listen = "127.0.0.1:0"/' "$tmp/image.toml"
  else
    cat "$tmp/image.toml"
  fi
  cat <<EOF

[[device]]
match = "cpu"
kv_memory = "256MiB"

[[model]]
id = "synth"
path = "/var/lib/tokenmill/models/synth.gguf"
max_seqs = 4

[[tenant]]
name = "image-test"
api_keys_sha256 = ["$key_hash"]
EOF
} >"$tmp/etc/tokenmill.toml"
chown "0:$gid" "$tmp/etc/tokenmill.toml"
chmod 0640 "$tmp/etc/tokenmill.toml"
if [[ -n $rootfs ]]; then
  { mount --bind "$tmp/etc" "$rootfs/etc/tokenmill" &&
    mount -o remount,bind,ro "$rootfs/etc/tokenmill" &&
    mount --bind "$tmp/data" "$rootfs/var/lib/tokenmill" &&
    mount --bind "$tmp/run" "$rootfs/run/tokenmill" &&
    mount -t proc proc "$rootfs/proc"; } || die "cannot mount the volumes into $rootfs"
  # in_image PROGRAM ARGS...: runs one of the image's programs as its user.
  in_image() { chroot --userspec="$uid:$gid" --groups="$gid" "$rootfs" "$@"; }
else
  in_image() {
    local program=$1
    shift
    podman run --rm "${opts[@]}" -v "$tmp/etc:/etc/tokenmill:ro" -v "$tmp/data:/var/lib/tokenmill" \
      --entrypoint "$program" "$image" "$@"
  }
fi
check "tokenmill model synth (the image's CLI, as $uid) writes the model" \
  in_image /usr/bin/tokenmill model synth --shape small --type q8_0 \
  --out /var/lib/tokenmill/models/synth.gguf
check "tokenmilld --check-config accepts the test config" \
  in_image /usr/bin/tokenmilld --check-config --config /etc/tokenmill/tokenmill.toml

# --- Run it --------------------------------------------------------------------------------
sock=$tmp/run/tokenmill.sock
if [[ -n $rootfs ]]; then
  section "chroot $rootfs as $uid:$gid"
  # Not through in_image: $! must be chroot's pid, which execs the daemon.
  chroot --userspec="$uid:$gid" --groups="$gid" "$rootfs" \
    /usr/bin/tokenmilld --config /etc/tokenmill/tokenmill.toml --log-target stderr \
    2>"$tmp/daemon.log" &
  daemon_pid=$!
  running() { kill -0 "$daemon_pid" 2>/dev/null; }
  logs() { cat "$tmp/daemon.log"; }
else
  section "podman run -d (read-only root, no capabilities, no new privileges)"
  # As the DaemonSet runs it: readOnlyRootFilesystem, drop ALL,
  # allowPrivilegeEscalation false. --read-only-tmpfs=false: Kubernetes adds
  # no tmpfs on /tmp, /run or /var/tmp either.
  if ! podman run -d --name "$name" "${opts[@]}" --read-only --read-only-tmpfs=false \
    --cap-drop=all --security-opt=no-new-privileges \
    -p 127.0.0.1::8000 -p 127.0.0.1::9464 \
    -v "$tmp/etc:/etc/tokenmill:ro" -v "$tmp/data:/var/lib/tokenmill" -v "$tmp/run:/run/tokenmill" \
    "$image" >/dev/null; then
    die "podman run failed"
  fi
  running() { test "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true; }
  logs() { podman logs "$name" 2>&1; }
fi
# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds, the deadline
# passes or the daemon exits.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    running || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}
# on_socket PATH [CURL ARGS...]: GET PATH on the socket.
on_socket() {
  local path=$1
  shift
  curl -sf --max-time 10 --unix-socket "$sock" "$@" "http://localhost$path"
}
model_ready() { on_socket /control/v1/models 2>/dev/null | grep -q '"state":"ready"'; }
if ! wait_for 120 on_socket /readyz -o /dev/null; then
  logs | tail -n 20
  die "tokenmilld did not become ready on $sock"
fi
pass "GET /readyz on the socket in the socket volume: 200"
if [[ -n $rootfs ]]; then
  node=$(on_socket /control/v1/node)
  api=$(sed -n 's/.*"api":{[^}]*"tcp":"\([^"]*\)".*/\1/p' <<<"$node")
  metrics=$(sed -n 's/.*"metrics":{"listen":"\([^"]*\)".*/\1/p' <<<"$node")
  [[ -n $api && -n $metrics ]] || die "no tcp or metrics address in /control/v1/node: $node"
else
  api=$(podman port "$name" 8000/tcp) || die "no host port for 8000"
  metrics=$(podman port "$name" 9464/tcp) || die "no host port for 9464"
fi
echo "  client port $api, metrics $metrics"
check "GET /readyz on the client port: 200" curl -sf --max-time 5 "http://$api/readyz" -o /dev/null
check "model synth is ready (GET /control/v1/models on the socket)" wait_for 120 model_ready

section "serve"
completion=$(curl -s --max-time 60 "http://$api/v1/completions" \
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
  -d '{"model":"synth","prompt":"Once upon a time","max_tokens":8,"seed":1}')
echo "  POST /v1/completions -> $completion"
has() { grep -qF -- "$1" <<<"$completion"; }
is_completion() { has '"object":"text_completion"' && has '"text":"' && has '"usage":{'; }
check "a text completion (object text_completion, a choice with text, usage)" is_completion
check "a wrong API key gets 401" test "$(curl -s -o /dev/null -w '%{http_code}' \
  "http://$api/v1/completions" -H 'Authorization: Bearer wrong' \
  -d '{"model":"synth","prompt":"x","max_tokens":1}')" = 401
node=$(on_socket /control/v1/node)
echo "  GET /control/v1/node on the socket -> ${node:0:300}..."
check "the control API answers on the socket with the node and its capacity" \
  grep -q '"capacity":' <<<"$node"
check "the control API is 404 on the client port" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "http://$api/control/v1/node")" = 404
scrape=$(curl -sf --max-time 10 "http://$metrics/metrics")
check "/metrics has tokenmill_node_info" grep -q '^tokenmill_node_info{' <<<"$scrape"
check "/metrics counts the completion" grep -qE '^tokenmill_requests_total\{.*\} [1-9]' <<<"$scrape"

section "who can reach the socket, who is root"
echo "  $(stat -c '%A %U(%u):%G(%g)' "$tmp/run") $tmp/run, $(stat -c '%A %u:%g' "$sock") tokenmill.sock"
as() {
  setpriv --reuid="$1" --regid="$2" --clear-groups curl -sf --max-time 5 --unix-socket "$sock" \
    http://localhost/control/v1/node -o /dev/null
}
check "a host user outside group $gid cannot open the socket" not as 65534 65534
check "a host user in group $gid can (the socket's group may use every API)" as 65534 "$gid"
if [[ -n $rootfs ]]; then
  pid=$daemon_pid # chroot execs the daemon: same pid
else
  pid=$(podman inspect -f '{{.State.Pid}}' "$name")
fi
status=$(cat "/proc/$pid/status")
check "tokenmilld (host pid $pid) runs as $uid:$gid" \
  grep -qE "^Uid:\s+$uid\s+$uid\s+$uid\s+$uid$" <<<"$status"
check "  with no capabilities" grep -qE '^CapEff:\s+0+$' <<<"$status"
if [[ -z $rootfs ]]; then
  check "  and no_new_privs" grep -qE '^NoNewPrivs:\s+1$' <<<"$status"
  check "  on a read-only root filesystem" grep -qE '^[^ ]+ / [^ ]+ ro[, ]' "/proc/$pid/mounts"
  pidns=$(readlink "/proc/$pid/ns/pid")
  root_procs=""
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$pidns" ]] || continue
    grep -qE '^Uid:\s+0\s' "$p/status" 2>/dev/null && root_procs+=" ${p#/proc/}"
  done
  check "no process in the container runs as root${root_procs:+:$root_procs}" test -z "$root_procs"
fi

# --- Stop ----------------------------------------------------------------------------------
section "stop: the DaemonSet's preStop, then SIGTERM"
# preStop exactly as packaging/kubernetes/daemonset.yaml runs it, with the
# image's CLI on the socket volume.
pre_stop=(tokenmill --socket /run/tokenmill/tokenmill.sock drain --wait 30)
if [[ -n $rootfs ]]; then
  check "preStop '${pre_stop[*]}' exits 0" in_image /usr/bin/env PATH=/usr/bin "${pre_stop[@]}"
else
  check "preStop '${pre_stop[*]}' exits 0" podman exec "$name" "${pre_stop[@]}"
fi
check "GET /readyz on the client port: 503 while draining" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "http://$api/readyz")" = 503
if [[ -n $rootfs ]]; then
  kill -TERM "$daemon_pid"
  wait "$daemon_pid"
  code=$?
  daemon_pid=""
else
  podman stop -t 150 "$name" >/dev/null
  code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
fi
logs | tail -n 4 | sed 's/^/  log: /'
check "tokenmilld exited with status 0 on SIGTERM" test "$code" = 0
check "the meter store is in the data volume" test -n "$(find "$tmp/data" -maxdepth 2 -name CURRENT)"

echo
if ((failures)); then
  echo "image test: $failures check(s) failed"
  exit 1
fi
echo "image test: all checks passed"

#!/usr/bin/env bash
# Builds the tokenmill container image from the project's own .deb on a
# Debian 12 (bookworm) root filesystem made with debootstrap, and commits it
# with buildah as localhost/tokenmill:latest and localhost/tokenmill:VERSION.
# Nothing is pulled from an image registry: every file comes from Debian's
# archive or the .deb. Needs root (debootstrap, chroot, buildah mount).
#
#   bash packaging/container/build-image.sh [options]
#
#   --deb FILE          install this .deb instead of building one from the checkout
#   --build-dir DIR     where the checkout's release build goes (default build/release)
#   --work DIR          scratch directory; the root filesystem stays in DIR/rootfs
#                       (default build/image)
#   --mirror URL        Debian mirror (default: the host's apt source for bookworm,
#                       else http://deb.debian.org/debian)
#   --security-mirror URL  bookworm-security source (default: the host's, else
#                       http://deb.debian.org/debian-security)
#   --uid N             uid and gid of user tokenmill in the image (default 999, the
#                       runAsUser of packaging/kubernetes/daemonset.yaml)
#   --rootfs-only       stop after the root filesystem (no buildah)
#   --oci-archive FILE  also write the image as an OCI archive (for `ctr images import`)
#
# Prints the wall time of every stage and the image size. The image's config
# is the one in packaging/kubernetes/configmap.yaml, so the image and the
# DaemonSet agree on ports, socket and data paths. packaging/container/README.md
# says how to run it; packaging/container/test-image.sh runs and checks it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)

deb=""
build_dir=$source_dir/build/release
work=$source_dir/build/image
mirror=""
security_mirror=""
uid=999
rootfs_only=0
oci_archive=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --deb) deb=$(realpath "$2"); shift 2 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift 2 ;;
    --work) work=$(realpath -m "$2"); shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --security-mirror) security_mirror=$2; shift 2 ;;
    --uid) uid=$2; shift 2 ;;
    --rootfs-only) rootfs_only=1; shift ;;
    --oci-archive) oci_archive=$(realpath -m "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
  esac
done
if [[ $(id -u) -ne 0 ]]; then
  echo "build-image.sh: needs root (debootstrap, chroot, buildah)" >&2
  exit 1
fi
if ! [[ $uid =~ ^[0-9]+$ ]] || ((uid < 1 || uid > 59999)); then
  echo "build-image.sh: --uid must be a number from 1 to 59999" >&2
  exit 2
fi

# stage NAME: prints the previous stage's wall time and starts timing NAME.
stage_name=""
stage_start=0
stage() {
  local now
  now=$(date +%s)
  if [[ -n $stage_name ]]; then
    printf '== %s: %ds\n' "$stage_name" $((now - stage_start))
  fi
  stage_name=$1
  stage_start=$now
  [[ -n $stage_name ]] && printf '\n== %s\n' "$stage_name"
  return 0
}
total_start=$(date +%s)

# host_source SUITE: the first URI the host's apt sources give for SUITE.
host_source() {
  local suite=$1
  {
    # One-line format: deb [options] URI SUITE COMPONENTS
    sed -n "s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) $suite .*/\2/p" /etc/apt/sources.list \
      /etc/apt/sources.list.d/*.list 2>/dev/null
    # deb822 format: the URIs: of a stanza whose Suites: names SUITE.
    awk -v suite="$suite" '
      /^$/ { if (found && uri != "") print uri; uri = ""; found = 0; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      END { if (found && uri != "") print uri }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null
  } | head -n 1
}
[[ -n $mirror ]] || mirror=$(host_source bookworm)
[[ -n $mirror ]] || mirror=http://deb.debian.org/debian
[[ -n $security_mirror ]] || security_mirror=$(host_source bookworm-security)
[[ -n $security_mirror ]] || security_mirror=http://deb.debian.org/debian-security

need=(debootstrap chroot dpkg-deb)
((rootfs_only)) || need+=(buildah)
for tool in "${need[@]}"; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-image.sh: $tool not found (apt-get install debootstrap buildah)" >&2
    exit 1
  fi
done

# --- The .deb --------------------------------------------------------------------
mkdir -p "$work"
if [[ -z $deb ]]; then
  stage "build the .deb from $source_dir into $build_dir"
  for tool in cmake ninja cpack; do
    command -v "$tool" >/dev/null || {
      echo "build-image.sh: $tool not found (bash packaging/install-build-deps.sh)" >&2
      exit 1
    }
  done
  cmake -S "$source_dir" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" >"$work/cmake.log"
  cmake --build "$build_dir" -j "$(nproc)" --target tokenmilld tokenmill
  rm -rf "$work/deb"
  deb=$(bash "$source_dir/packaging/build-deb.sh" "$build_dir" "$work/deb")
fi
package=$(dpkg-deb -f "$deb" Package)
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg-deb -f "$deb" Architecture)
if [[ $package != tokenmill ]]; then
  echo "build-image.sh: $deb is package '$package', not tokenmill" >&2
  exit 1
fi
echo "package: $(basename "$deb") (Version $version, Architecture $arch)"
echo "Depends: $(dpkg-deb -f "$deb" Depends)"

# --- Root filesystem -----------------------------------------------------------------
rootfs=$work/rootfs
cleanup() {
  # Whatever is still mounted under the root filesystem, innermost first.
  if [[ -d $rootfs ]]; then
    { findmnt -rn -o TARGET | grep -F "$rootfs/" || true; } | sort -r | while read -r m; do
      umount "$m" || umount -l "$m"
    done
  fi
  return 0
}
trap cleanup EXIT

stage "debootstrap bookworm (minbase, $arch) from $mirror"
cleanup
rm -rf "$rootfs"
debootstrap --variant=minbase --arch="$arch" bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  echo "build-image.sh: debootstrap failed (log: $work/debootstrap.log)" >&2
  exit 1
}
echo "base system: $(du -sh --apparent-size "$rootfs" | cut -f1)"

stage "install $(basename "$deb") with apt (Depends from Debian)"
in_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }
mount -t proc proc "$rootfs/proc"
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
EOF
# Nothing may start services inside the build root.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
# logged COMMAND...: runs it in the root with its output in apt.log, shown on failure.
logged() {
  if ! in_root "$@" >>"$work/apt.log" 2>&1; then
    tail -n 30 "$work/apt.log" >&2
    echo "build-image.sh: '$*' failed in the root filesystem (log: $work/apt.log)" >&2
    exit 1
  fi
}
: >"$work/apt.log"
logged apt-get -q update
logged apt-get -q -y upgrade
# The package's sysusers entry (g tokenmill, u tokenmill -:tokenmill) with a
# fixed id, so that host paths mounted into the pod and the DaemonSet's
# runAsUser name the same user on every node; the postinst then finds the
# user and only adds group render.
in_root groupadd --system --gid "$uid" tokenmill
in_root useradd --system --uid "$uid" --gid tokenmill --home-dir /var/lib/tokenmill \
  --no-create-home --shell /usr/sbin/nologin --comment "tokenmill inference daemon" tokenmill
cp "$deb" "$rootfs/tmp/tokenmill.deb"
logged apt-get -q -y install --no-install-recommends /tmp/tokenmill.deb
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's.
in_root dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' tokenmill

stage "configure the image"
# The container's config: the DaemonSet's ConfigMap (client port 8000,
# metrics 9464, the socket in /run/tokenmill, the data in /var/lib/tokenmill).
configmap=$source_dir/packaging/kubernetes/configmap.yaml
{
  echo "# tokenmilld's config in the container image, from"
  echo "# packaging/kubernetes/configmap.yaml. Mount your own on /etc/tokenmill;"
  echo "# every key and its default: /usr/share/doc/tokenmill or packaging/tokenmill.toml."
  awk '
    /^  tokenmill\.toml: \|$/ { inside = 1; next }
    inside && /^    / { print substr($0, 5); next }
    inside && /^$/ { print; next }
    inside { exit }
  ' "$configmap"
} >"$rootfs/etc/tokenmill/tokenmill.toml"
if ! grep -q '^socket = "/run/tokenmill/tokenmill.sock"$' "$rootfs/etc/tokenmill/tokenmill.toml"; then
  echo "build-image.sh: no config found in $configmap" >&2
  exit 1
fi
in_root /usr/bin/tokenmilld --check-config --config /etc/tokenmill/tokenmill.toml
chown "root:$uid" "$rootfs/etc/tokenmill/tokenmill.toml"
chmod 0640 "$rootfs/etc/tokenmill/tokenmill.toml"
# The socket's directory; the volume mounted there brings its own owner
# (a host path must be made uid $uid's, 0750, by the host).
install -d -o "$uid" -g "$uid" -m 0750 "$rootfs/run/tokenmill"
install -d -o "$uid" -g "$uid" -m 0750 "$rootfs/var/lib/tokenmill/models"

stage "strip the image"
logged apt-get -q clean
rm -f "$rootfs/tmp/tokenmill.deb" "$rootfs/usr/sbin/policy-rc.d"
umount "$rootfs/proc"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/usr/share/lintian "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# Documentation goes, the licences (copyright files) stay.
find "$rootfs/usr/share/doc" -mindepth 1 -depth ! -name copyright \
  ! -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
# Keep later `apt-get install`s in a derived image from bringing them back.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/tokenmill-image" <<'EOF'
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
EOF
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
# The build host's name and resolver are not the image's business: the
# runtime mounts its own.
: >"$rootfs/etc/resolv.conf"
echo localhost >"$rootfs/etc/hostname"
# No set-user-ID or set-group-ID programs: nothing in the container can
# become root (or another user) again once the daemon's user starts it.
find "$rootfs" -xdev -type f -perm /6000 -exec chmod ug-s {} +
rootfs_size=$(du -s --apparent-size --block-size=1M "$rootfs" | cut -f1)
echo "root filesystem: $rootfs, ${rootfs_size} MiB"

if ((rootfs_only)); then
  stage ""
  printf '== total: %ds\n' $(($(date +%s) - total_start))
  exit 0
fi

stage "commit the OCI image with buildah"
image=localhost/tokenmill
revision=$(git -C "$source_dir" rev-parse HEAD 2>/dev/null || echo unknown)
ctr=$(buildah from --name "tokenmill-image-build-$$" scratch)
remove_ctr() {
  buildah umount "$ctr" >/dev/null 2>&1 || true
  buildah rm "$ctr" >/dev/null 2>&1 || true
  cleanup
}
trap remove_ctr EXIT
mnt=$(buildah mount "$ctr")
# /dev is the runtime's (podman and Kubernetes mount their own); debootstrap's
# device nodes stay in the root filesystem for chroot only.
tar -C "$rootfs" --numeric-owner --xattrs --acls --exclude='./dev/*' -cf - . |
  tar -C "$mnt" --numeric-owner --xattrs --acls -xpf -
buildah umount "$ctr" >/dev/null
buildah config \
  --user "$uid:$uid" \
  --workingdir /var/lib/tokenmill \
  --entrypoint '["/usr/bin/tokenmilld"]' \
  --cmd '["--config", "/etc/tokenmill/tokenmill.toml"]' \
  --port 8000/tcp --port 9464/tcp \
  --volume /etc/tokenmill --volume /var/lib/tokenmill --volume /run/tokenmill \
  --stop-signal SIGTERM \
  --os linux --arch "$(dpkg --print-architecture 2>/dev/null || echo "$arch")" \
  --label org.opencontainers.image.title=tokenmill \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.base.name=debian:bookworm-debootstrap-minbase \
  "$ctr"
buildah commit -q --format oci --rm "$ctr" "$image:$version" >/dev/null
trap cleanup EXIT
buildah tag "$image:$version" "$image:latest"
if [[ -n $oci_archive ]]; then
  rm -f "$oci_archive"
  podman save --format oci-archive -o "$oci_archive" "$image:$version" 2>/dev/null ||
    buildah push "$image:$version" "oci-archive:$oci_archive:$image:$version" >/dev/null
  echo "OCI archive: $oci_archive ($(du -sh "$oci_archive" | cut -f1))"
fi
stage ""
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$image" | sed 's/^/image: /'
printf '== total: %ds\n' $(($(date +%s) - total_start))

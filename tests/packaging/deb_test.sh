#!/usr/bin/env bash
# Packaging test: builds the tokenmill .deb with cpack from an existing build
# directory and checks what an operator's machine would get from it.
#
#   bash tests/packaging/deb_test.sh BUILD_DIR SOURCE_DIR
#
# The binaries must already be built (cpack does not build). When the build
# has the OpenCL device plugin, ctest passes its path in
# TOKENMILL_OPENCL_PLUGIN: the library must be built and packed as
# tokenmill-opencl (checked at the end); without it, no such package. Nothing is
# installed on this machine: the package is unpacked with dpkg -x into a temp
# dir, and the maintainer scripts run against a DPKG_ROOT in that dir with the
# commands that touch users and services replaced by recording stubs.
set -uo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd) || exit 2
source_dir=$(cd "$2" && pwd) || exit 2

# shellcheck source=SCRIPTDIR/../../packaging/checks.sh
source "$(dirname "$0")/../../packaging/checks.sh"
section() { echo "== $*"; }
# quiet COMMAND...: runs the command with its output discarded.
quiet() { "$@" >/dev/null 2>&1; }
# not COMMAND...: succeeds when the command fails.
not() { ! "$@"; }

for tool in cpack dpkg-deb dpkg systemd-analyze lintian; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL: $tool not found" >&2
    exit 1
  fi
done

tmp=$(mktemp -d /tmp/tokenmill-deb-test.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT

# --- Build the package ---------------------------------------------------------
section "cpack in $build_dir"
deb=$(bash "$(dirname "$0")/../../packaging/build-deb.sh" "$build_dir" "$tmp/out") || {
  echo "FAIL: no .deb" >&2
  exit 1
}
pass "built $(basename "$deb")"

# --- lintian -------------------------------------------------------------------------
section "lintian"
lintian --tag-display-limit 0 "$deb" >"$tmp/lintian.log" 2>&1
# Accepted on purpose: the maintainer address is a placeholder
# (TOKENMILL_PACKAGE_MAINTAINER); the maintainer scripts call systemctl
# themselves (no debhelper); the config is 0640 because it holds key hashes.
grep -E '^[EW]: ' "$tmp/lintian.log" |
  grep -vE ': (bogus-mail-host|bogus-mail-host-in-debian-changelog|maintainer-script-calls-systemctl) ' |
  grep -vF 'non-standard-file-perm 0640 != 0644 [etc/tokenmill/tokenmill.toml]' >"$tmp/lintian.rest"
if [[ -s $tmp/lintian.rest ]]; then
  fail "lintian reports:"
  sed 's/^/          /' "$tmp/lintian.rest"
else
  pass "lintian: no error or warning beyond the accepted ones"
fi

# --- Control fields --------------------------------------------------------------
section "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build_dir/CPackConfig.cmake")
arch=$(dpkg --print-architecture)
check "Package is tokenmill" test "$(field Package)" = tokenmill
check "Version is the project's ($version)" test -n "$version" -a "$(field Version)" = "$version"
check "Architecture is $arch" test "$(field Architecture)" = "$arch"
check "file name is DEB-DEFAULT" test "$(basename "$deb")" = "tokenmill_${version}_${arch}.deb"
check "Maintainer is set" test -n "$(field Maintainer)"
check "Description is set" test -n "$(field Description)"
check "Section is set" test -n "$(field Section)"
depends=$(field Depends)
echo "  Depends: $depends"
check "Depends on adduser" grep -Eq '(^|, )adduser($|,| )' <<<"$depends"
# libc6 only appears when dpkg-shlibdeps ran over the binaries.
check "Depends has shlibdeps results (libc6)" grep -Eq '(^|, )libc6 ' <<<"$depends"
check "Depends has no -dev packages" not grep -q -- '-dev\b' <<<"$depends"

# --- Contents --------------------------------------------------------------------
section "contents (dpkg-deb -c)"
dpkg-deb -c "$deb" >"$tmp/contents"
# Plain files as "MODE OWNER PATH".
awk '$1 ~ /^-/ { print $1, $2, $6 }' "$tmp/contents" | sort >"$tmp/files"
cat >"$tmp/expected" <<'EOF'
-rw-r----- root/root ./etc/tokenmill/tokenmill.toml
-rw-r--r-- root/root ./usr/lib/systemd/system/tokenmilld.service
-rw-r--r-- root/root ./usr/lib/sysusers.d/tokenmill.conf
-rw-r--r-- root/root ./usr/lib/tmpfiles.d/tokenmill.conf
-rwxr-xr-x root/root ./usr/bin/tokenmill
-rwxr-xr-x root/root ./usr/bin/tokenmilld
-rw-r--r-- root/root ./usr/share/doc/tokenmill/copyright
-rw-r--r-- root/root ./usr/share/doc/tokenmill/changelog.gz
-rw-r--r-- root/root ./usr/share/man/man1/tokenmill.1.gz
-rw-r--r-- root/root ./usr/share/man/man8/tokenmilld.8.gz
EOF
sort -o "$tmp/expected" "$tmp/expected"
# Optional monitoring examples (packaging/prometheus, packaging/grafana).
grep -v ' ./usr/share/tokenmill/\(prometheus\|grafana\)/' "$tmp/files" >"$tmp/core_files"
if diff -u "$tmp/expected" "$tmp/core_files" >"$tmp/diff"; then
  pass "exactly the expected files, modes and owners:"
  sed 's/^/          /' "$tmp/expected"
else
  fail "files, modes or owners differ from expected (- expected, + packaged):"
  sed 's/^/          /' "$tmp/diff"
fi
for extra in prometheus grafana; do
  if [[ -d $source_dir/packaging/$extra ]]; then
    check "ships packaging/$extra" grep -q " ./usr/share/tokenmill/$extra/" "$tmp/files"
  fi
done
check "no file is owned by anyone but root" not grep -qv ' root/root ' "$tmp/contents"

# --- Control archive: conffiles and maintainer scripts --------------------------------
section "control archive (dpkg-deb -e)"
dpkg-deb -e "$deb" "$tmp/control"
check "conffiles lists exactly /etc/tokenmill/tokenmill.toml" \
  test "$(cat "$tmp/control/conffiles" 2>/dev/null)" = /etc/tokenmill/tokenmill.toml
if [[ -f $tmp/control/conffiles ]]; then
  while read -r conffile; do
    check "conffile $conffile is in the package" grep -q " \.$conffile\$" "$tmp/files"
  done <"$tmp/control/conffiles"
fi
for script in postinst prerm postrm; do
  f=$tmp/control/$script
  if [[ ! -f $f ]]; then
    fail "$script missing"
    continue
  fi
  check "$script has mode 0755" test "$(stat -c %a "$f")" = 755
  check "$script starts with #!/bin/sh" test "$(head -n1 "$f")" = "#!/bin/sh"
  check "$script parses (sh -n)" sh -n "$f"
  if command -v shellcheck >/dev/null; then
    check "$script is shellcheck-clean" shellcheck -s sh "$f"
  fi
  check "$script rejects an unknown action" not quiet env DPKG_ROOT=/nonexistent sh "$f" bogus
done

# --- Unpacked files -------------------------------------------------------------------
section "unpacked with dpkg -x"
root=$tmp/root
dpkg -x "$deb" "$root"
mode() { stat -c %a "$root/$1"; }
check "tokenmilld is 0755" test "$(mode usr/bin/tokenmilld)" = 755
check "tokenmill is 0755" test "$(mode usr/bin/tokenmill)" = 755
check "unit is 0644" test "$(mode usr/lib/systemd/system/tokenmilld.service)" = 644
check "config is 0640" test "$(mode etc/tokenmill/tokenmill.toml)" = 640
for bin in tokenmilld tokenmill; do
  check "$bin is an ELF executable" grep -q '^.ELF' <(head -c 4 "$root/usr/bin/$bin")
  check "$bin --help runs from the package" quiet timeout 10 "$root/usr/bin/$bin" --help
done
# Depends cannot name CUDA libraries, so the packaged binaries may not need one.
bash "$source_dir/tests/packaging/needed_test.sh" "$root/usr/bin/tokenmilld" \
  "$root/usr/bin/tokenmill" >"$tmp/needed.log" 2>&1
needed_rc=$?
sed 's/^/        /' "$tmp/needed.log"
check "packaged binaries need no CUDA/NVIDIA library" test "$needed_rc" -eq 0

# --- Documentation: copyright, changelog, man pages -------------------------------------
section "documentation"
doc=$root/usr/share/doc/tokenmill
check "copyright is machine-readable (DEP-5)" \
  grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' "$doc/copyright"
check "copyright has a Files: * stanza with a License" \
  grep -qx 'License: .*' <(sed -n '/^Files: \*$/,/^$/p' "$doc/copyright")
for gz in "$doc/changelog.gz" "$root/usr/share/man/man1/tokenmill.1.gz" \
  "$root/usr/share/man/man8/tokenmilld.8.gz"; do
  name=${gz#"$root"}
  check "$name is valid gzip" quiet gzip -t "$gz"
  # Bytes 4-7: mtime, 0 with gzip -n (reproducible, as lintian asks).
  check "$name has no timestamp in its gzip header" \
    test "$(od -An -tx1 -j4 -N4 "$gz" | tr -d ' ')" = 00000000
done
changelog_head=$(gzip -dc "$doc/changelog.gz" | head -n 1)
check "changelog's latest entry is this version ($version): $changelog_head" \
  grep -q "^tokenmill ($version) " <<<"$changelog_head"
if command -v dpkg-parsechangelog >/dev/null; then
  gzip -dc "$doc/changelog.gz" >"$tmp/changelog"
  check "changelog parses (dpkg-parsechangelog)" \
    quiet dpkg-parsechangelog -l "$tmp/changelog"
fi
# The man pages name every option and subcommand the binaries' --help shows
# (written by hand, they must follow when a flag is added). man_text PAGE:
# the roff source with "\-" as "-" and font escapes removed.
man_text() { gzip -dc "$root/usr/share/man/$1" | sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g'; }
# help_check PAGE_TEXT_FILE BIN [SUBCOMMAND...]: checks one command, then recurses.
help_check() {
  local text=$1 bin=$2
  shift 2
  local help
  help=$("$root/usr/bin/$bin" "$@" --help 2>&1) || {
    fail "$bin $* --help failed"
    return
  }
  local opt sub
  while read -r opt; do
    [[ -z $opt || $opt == --help ]] && continue
    check "$bin man page documents $bin${*:+ $*} $opt" grep -qF -- "$opt" "$text"
  done < <(sed -n '/^Options:/,/^$/p' <<<"$help" | grep -oE '^  (-[a-zA-Z],)?--[a-z0-9-]+' |
    sed 's/.*--/--/')
  while read -r sub; do
    [[ -z $sub ]] && continue
    check "$bin man page documents $bin${*:+ $*} $sub" grep -qF -- "${*:+$* }$sub" "$text"
    help_check "$text" "$bin" "$@" "$sub"
  done < <(sed -n '/^Subcommands:/,/^$/p' <<<"$help" | grep -oE '^  [a-z][a-z0-9-]*')
}
man_text man8/tokenmilld.8.gz >"$tmp/tokenmilld.8.txt"
man_text man1/tokenmill.1.gz >"$tmp/tokenmill.1.txt"
help_check "$tmp/tokenmilld.8.txt" tokenmilld
help_check "$tmp/tokenmill.1.txt" tokenmill
if command -v man >/dev/null; then
  for page in man1/tokenmill.1.gz man8/tokenmilld.8.gz; do
    # Warnings from troff go to stderr; the rendered page is thrown away.
    warnings=$(LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l "$root/usr/share/man/$page" 2>&1 >/dev/null)
    check "man renders $page without warnings${warnings:+: $warnings}" test -z "$warnings"
  done
else
  echo "  skip: no man (man-db) to render the pages"
fi

# --- systemd unit ------------------------------------------------------------------------
section "systemd unit"
unit=$root/usr/lib/systemd/system/tokenmilld.service
# shellcheck disable=SC2016 # $MAINPID is literal text in the unit.
for directive in Type=notify NotifyAccess=main User=tokenmill Group=tokenmill \
  WatchdogSec= Restart=on-failure TimeoutStopSec= 'ExecReload=/bin/kill -HUP $MAINPID' \
  StateDirectory=tokenmill RuntimeDirectory=tokenmill ConfigurationDirectory=tokenmill \
  ProtectSystem=strict NoNewPrivileges=yes DevicePolicy=closed PrivateMounts=yes \
  SystemCallFilter=@system-service SystemCallFilter=~@privileged SystemCallArchitectures=native \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' LockPersonality=yes RestrictNamespaces=yes \
  RestrictRealtime=yes ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes \
  ProtectClock=yes ProtectHostname=yes ProtectProc=invisible 'DeviceAllow=char-nvidia rw' \
  'DeviceAllow=char-nvidia-uvm rw'; do
  check "unit sets $directive" grep -qF -- "$directive" "$unit"
done
check "unit drops every capability" grep -qx 'CapabilityBoundingSet=' "$unit"
check "ExecStart runs the packaged daemon on the packaged config" \
  grep -qx 'ExecStart=/usr/bin/tokenmilld --config /etc/tokenmill/tokenmill.toml' "$unit"
# Not installed here, so verify may only complain that the binary is missing.
systemd-analyze verify --man=no "$unit" >"$tmp/verify.log" 2>&1
grep -v '^tokenmilld.service: Command /usr/bin/tokenmilld is not executable: No such file or directory$' \
  "$tmp/verify.log" | grep -v '^$' >"$tmp/verify.rest"
if [[ -s $tmp/verify.rest ]]; then
  fail "systemd-analyze verify reports:"
  sed 's/^/          /' "$tmp/verify.rest"
else
  pass "systemd-analyze verify: clean but for the daemon not being installed here"
fi
# Hardening must not regress: the unit scores 1.6 with systemd 252 (1.9
# before PrivateMounts= and SystemCallFilter=~@privileged); the threshold is
# that score times ten (0-100 scale, lower is better).
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
  exposure=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
    sed -n 's/.*exposure level for tokenmilld.service: \([0-9.]*\).*/\1/p')
  check "systemd-analyze security exposure ${exposure:-?} <= 1.6" \
    quiet systemd-analyze security --offline=true --threshold=16 "$unit"
else
  echo "  skip: systemd-analyze security has no --offline here"
fi

# --- sysusers -----------------------------------------------------------------------------
section "sysusers.d"
if command -v systemd-sysusers >/dev/null; then
  mkdir -p "$tmp/sysroot/etc"
  systemd-sysusers --dry-run --root="$tmp/sysroot" "$root/usr/lib/sysusers.d/tokenmill.conf" \
    >"$tmp/sysusers.log" 2>&1
  check "systemd-sysusers would create user tokenmill in group tokenmill" \
    grep -q "Creating user 'tokenmill' (tokenmill inference daemon)" "$tmp/sysusers.log"
  check "systemd-sysusers would create group render" \
    grep -q "Creating group 'render'" "$tmp/sysusers.log"
else
  echo "  skip: no systemd-sysusers"
fi
check "tmpfiles.d owns /var/lib/tokenmill 0750 to tokenmill" \
  grep -qE '^d /var/lib/tokenmill 0750 tokenmill tokenmill' "$root/usr/lib/tmpfiles.d/tokenmill.conf"

# --- Maintainer scripts, run against a scratch DPKG_ROOT ----------------------------------------
section "maintainer scripts (DPKG_ROOT, stubbed commands)"
# stubs DIR CMD...: each CMD appends "CMD ARGS" to $log and exits 0; getent
# and dpkg-statoverride exit 2/1 (no such user, no override). chmod, mkdir,
# rm and rmdir are the real ones; they only see paths under DPKG_ROOT.
log=$tmp/calls.log
stubs() {
  local dir=$1 cmd
  shift
  mkdir -p "$dir"
  for cmd in "$@"; do
    local rc=0
    case $cmd in getent) rc=2 ;; dpkg-statoverride) rc=1 ;; esac
    printf '#!/bin/sh\necho "%s $*" >>"%s"\nexit %s\n' "$cmd" "$log" "$rc" >"$dir/$cmd"
    chmod +x "$dir/$cmd"
  done
  for cmd in chmod mkdir rm rmdir; do ln -sf "$(command -v $cmd)" "$dir/$cmd"; done
}
common=(getent adduser addgroup dpkg-statoverride chown systemctl deb-systemd-invoke deb-systemd-helper)
stubs "$tmp/path-sysusers" systemd-sysusers "${common[@]}"
stubs "$tmp/path-adduser" "${common[@]}"

# run_script PATHDIR SCRIPT ARGS...: runs a maintainer script as dpkg would.
run_script() {
  local path=$1 script=$2
  shift 2
  : >"$log"
  env -i PATH="$path" DPKG_ROOT="$mroot" /bin/sh "$tmp/control/$script" "$@" >"$tmp/script.out" 2>&1
}

mroot=$tmp/mroot-sysusers
mkdir -p "$mroot/etc/tokenmill"
cp "$root/etc/tokenmill/tokenmill.toml" "$mroot/etc/tokenmill/"
check "postinst configure (fresh install, systemd-sysusers) exits 0" \
  run_script "$tmp/path-sysusers" postinst configure
check "  creates the user with systemd-sysusers in DPKG_ROOT" \
  grep -qx "systemd-sysusers --root=$mroot tokenmill.conf" "$log"
check "  does not fall back to adduser" not grep -q '^add' "$log"
check "  creates /var/lib/tokenmill 0750" test "$(stat -c %a "$mroot/var/lib/tokenmill")" = 750
check "  gives /var/lib/tokenmill to tokenmill" \
  grep -qx "chown tokenmill:tokenmill $mroot/var/lib/tokenmill" "$log"
check "  gives the config to group tokenmill, 0640" \
  grep -qx "chown root:tokenmill $mroot/etc/tokenmill/tokenmill.toml" "$log"
check "  never calls systemctl under DPKG_ROOT" not grep -q 'systemctl\|deb-systemd' "$log"

mroot=$tmp/mroot-adduser
mkdir -p "$mroot"
check "postinst configure (no systemd-sysusers) exits 0" \
  run_script "$tmp/path-adduser" postinst configure
check "  creates group tokenmill with addgroup" grep -qx "addgroup --system tokenmill" "$log"
check "  creates user tokenmill with adduser" \
  grep -q "^adduser --system --ingroup tokenmill --home /var/lib/tokenmill .* tokenmill$" "$log"
check "  creates group render with addgroup" grep -qx "addgroup --system render" "$log"

check "prerm remove exits 0" run_script "$tmp/path-sysusers" prerm remove
check "postrm remove exits 0" run_script "$tmp/path-sysusers" postrm remove
mkdir -p "$mroot/etc/systemd/system/multi-user.target.wants" "$mroot/etc/tokenmill"
ln -s /usr/lib/systemd/system/tokenmilld.service \
  "$mroot/etc/systemd/system/multi-user.target.wants/tokenmilld.service"
mkdir -p "$mroot/var/lib/tokenmill" && echo ledger >"$mroot/var/lib/tokenmill/ledger"
check "postrm purge exits 0" run_script "$tmp/path-sysusers" postrm purge
check "  removes the enable link" \
  test ! -L "$mroot/etc/systemd/system/multi-user.target.wants/tokenmilld.service"
check "  removes the empty /etc/tokenmill" test ! -d "$mroot/etc/tokenmill"
check "  keeps the meter store in /var/lib/tokenmill" test -f "$mroot/var/lib/tokenmill/ledger"
check "  keeps the tokenmill user" not grep -q 'deluser\|delgroup' "$log"

# --- tokenmill-opencl ------------------------------------------------------------------
section "tokenmill-opencl (the OpenCL device plugin)"
shopt -s nullglob
opencl_debs=("$(dirname "$deb")"/tokenmill-opencl_*.deb)
shopt -u nullglob
if [[ -z ${TOKENMILL_OPENCL_PLUGIN:-} ]]; then
  check "no tokenmill-opencl package from a build without the plugin" test ${#opencl_debs[@]} -eq 0
elif [[ ! -f $TOKENMILL_OPENCL_PLUGIN ]]; then
  fail "the build has the OpenCL plugin but $TOKENMILL_OPENCL_PLUGIN is not built"
elif [[ ${#opencl_debs[@]} -ne 1 ]]; then
  fail "expected one tokenmill-opencl .deb next to $(basename "$deb"), got ${#opencl_debs[@]}"
else
  cl_deb=${opencl_debs[0]}
  pass "built $(basename "$cl_deb")"
  lintian --tag-display-limit 0 "$cl_deb" >"$tmp/cl-lintian.log" 2>&1
  grep -E '^[EW]: ' "$tmp/cl-lintian.log" |
    grep -vE ': (bogus-mail-host|bogus-mail-host-in-debian-changelog) ' >"$tmp/cl-lintian.rest"
  if [[ -s $tmp/cl-lintian.rest ]]; then
    fail "lintian reports:"
    sed 's/^/          /' "$tmp/cl-lintian.rest"
  else
    pass "lintian: no error or warning beyond the accepted ones"
  fi
  cl_field() { dpkg-deb -f "$cl_deb" "$1"; }
  check "Package is tokenmill-opencl" test "$(cl_field Package)" = tokenmill-opencl
  check "Source is tokenmill" test "$(cl_field Source)" = tokenmill
  check "Version is the daemon's ($version)" test "$(cl_field Version)" = "$version"
  cl_depends=$(cl_field Depends)
  echo "  Depends: $cl_depends"
  check "Depends on the daemon of the same version (the plugin ABI is its)" \
    grep -Eq "(^|, )tokenmill \(= $version\)" <<<"$cl_depends"
  check "Depends on an OpenCL ICD loader (shlibdeps)" grep -q 'libopencl' <<<"$cl_depends"
  check "the daemon's package does not" not grep -qi 'opencl' <<<"$depends"
  check "Description's synopsis names the plugin" \
    grep -q 'OpenCL device plugin' <<<"$(cl_field Description | head -n 1)"
  dpkg-deb -c "$cl_deb" >"$tmp/cl-contents"
  awk '$1 ~ /^-/ { print $1, $2, $6 }' "$tmp/cl-contents" | sort >"$tmp/cl-files"
  printf '%s\n' \
    '-rw-r--r-- root/root ./usr/lib/tokenmill/plugins/libtokenmill_opencl_device.so' \
    '-rw-r--r-- root/root ./usr/share/doc/tokenmill-opencl/copyright' \
    '-rw-r--r-- root/root ./usr/share/doc/tokenmill-opencl/changelog.gz' |
    sort >"$tmp/cl-expected"
  if diff -u "$tmp/cl-expected" "$tmp/cl-files" >"$tmp/cl-diff"; then
    pass "exactly the plugin and its docs, 0644, root's"
  else
    fail "files, modes or owners differ from expected (- expected, + packaged):"
    sed 's/^/          /' "$tmp/cl-diff"
  fi
  check "no file is owned by anyone but root" not grep -qv ' root/root ' "$tmp/cl-contents"
  cl_root=$tmp/cl-root
  dpkg -x "$cl_deb" "$cl_root"
  so=$cl_root/usr/lib/tokenmill/plugins/libtokenmill_opencl_device.so
  if command -v nm >/dev/null; then
    check "the library exports one symbol, tokenmill_device_plugin" \
      test "$(nm -D --defined-only "$so" | awk '{print $3}')" = tokenmill_device_plugin
  fi
  # The directory the shipped config's device_plugins example names.
  check "the shipped config names /usr/lib/tokenmill/plugins" \
    grep -q '/usr/lib/tokenmill/plugins/' "$root/etc/tokenmill/tokenmill.toml"
fi

echo
if [[ $failures -ne 0 ]]; then
  echo "packaging test: $failures check(s) failed"
  exit 1
fi
echo "packaging test: all checks passed"

#!/usr/bin/env bash
# make check-aarch64: the lean runtime on arm64, emulated, against the x86_64 run (docs/aarch64.md).
#
#   1. an arm64 Debian root from Debian's packages (debootstrap through qemu-user-static and binfmt_misc),
#      the suite of this machine (bookworm here) from the mirror in this machine's apt sources;
#   2. in it, a venv with `pip install -c constraints.txt "<copy of the repo>[runtime]"` from real aarch64
#      wheels of the public package index (pip's default index: the host's pip configuration and local
#      wheel folders are not used inside the root);
#   3. `edgescene reconstruct edgescene/assets/sample/sample.mp4 --max-frames 8 --no-pipeline` in the root;
#      the frames the root decoded are saved as PNGs (scripts/check_aarch64.py frames);
#   4. with this machine's .venv (x86_64): the same command, and a reconstruction of those PNGs;
#   5. scripts/check_aarch64.py compares cameras (extrinsics, intrinsics) and per-frame depth. The gate:
#      from the same pixels, arm64 and x86_64 agree within 1e-4 ("same_pixels"). The two videos' runs
#      ("video") are compared and reported; they differ more because FFmpeg's YUV -> RGB conversion in the
#      av wheel rounds differently per architecture (decoded_frames in the result; docs/aarch64.md).
# The result (versions, times, the comparisons) goes to docs/bench/aarch64/result.json; the exit status is
# 0 only when the gated comparisons pass.
#
# Needs root (debootstrap, chroot, mount namespaces) and Debian's qemu-user-static, debootstrap and
# binfmt-support (apt-get install -y qemu-user-static debootstrap binfmt-support). Not run in CI: the first
# run takes 10 to 14 minutes (debootstrap 4-6, wheels 1-1.5, venv 1.5-2, the emulated reconstruction 2.5-3);
# later runs reuse the root, the wheels and the venv under build/aarch64/ (or --cache DIR) and take about 4.
# Every mount is made inside a private mount namespace (unshare -m), so it ends with the process even on
# failure or Ctrl-C; the trap also unmounts anything left below the cache and removes temporary files.
#
# Options:
#   --suite NAME        Debian suite of the root (default: this machine's VERSION_CODENAME)
#   --mirror URL        Debian mirror for debootstrap (default: the first deb source for the suite in
#                       /etc/apt/sources.list and /etc/apt/sources.list.d/)
#   --frames N          frames of the sample to reconstruct (default: 8)
#   --tolerance T       largest accepted |difference| of cameras and depth (default: 1e-4)
#   --qemu-cpu NAME     the emulated CPU (default: cortex-a76, ARMv8.2 with dotprod and fp16 like the
#                       Cortex-A78AE of a Jetson Orin; qemu's default 'max' has SVE, which Orin lacks)
#   --x86-python PATH   the x86_64 Python with edgescene and numpy (default: .venv/bin/python; make venv)
#   --cache DIR         where the root and the wheels are kept (default: build/aarch64)
#   --result PATH       the result JSON (default: docs/bench/aarch64/result.json)
#   --rebuild           drop the cached root, wheels and venv first
#   --no-gate-video     report, but do not gate on, the two machines' reconstructions of the video itself (each
#                       decoding it; gated by default since the runtime converts YUV -> RGB itself, core/color.py)
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo="$(cd "$(dirname "$self")/.." && pwd)"
venv_in_root=/opt/edgescene-venv
ca_in_root=/etc/ssl/certs/edgescene-host-ca.crt

die() { echo "check-aarch64: error: $*" >&2; exit 1; }
say() { echo "check-aarch64: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------------------
# Inside the private mount namespace (the script calls itself through unshare): mount what the root needs,
# then run the command in it with a clean environment.
if [ "${1:-}" = "--inside-namespace" ]; then
  shift
  : "${ES_ROOT:?}" "${ES_CPUINFO:?}" "${ES_WHEELS:?}" "${ES_QEMU_CPU:?}"
  mount -t proc proc "$ES_ROOT/proc"
  # qemu 7.2 passes /proc/cpuinfo and /sys through: onnxruntime's cpuinfo library would parse this
  # machine's x86 description and crash. An arm64 /proc/cpuinfo goes over it, and /sys is a tmpfs holding
  # only the CPU lists that library reads first (without them it gives up and onnxruntime warns).
  mount --bind "$ES_CPUINFO" "$ES_ROOT/proc/cpuinfo"
  mount -t tmpfs -o size=1m sysfs-stand-in "$ES_ROOT/sys"
  mkdir -p "$ES_ROOT/sys/devices/system/cpu"
  for f in possible present online; do echo "0-$(($(grep -c '^processor' "$ES_CPUINFO") - 1))" >"$ES_ROOT/sys/devices/system/cpu/$f"; done
  mount --rbind /dev "$ES_ROOT/dev"
  mount --make-rslave "$ES_ROOT/dev"
  mount -t tmpfs tmpfs "$ES_ROOT/tmp"
  mkdir -p "$ES_ROOT/wheels"
  mount --bind "$ES_WHEELS" "$ES_ROOT/wheels"
  exec chroot "$ES_ROOT" /usr/bin/env -i \
    HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
    PATH="$venv_in_root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    QEMU_CPU="$ES_QEMU_CPU" PIP_CERT="$ca_in_root" SSL_CERT_FILE="$ca_in_root" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
    "$@"
fi

# ---------------------------------------------------------------------------------------------------------
suite="" mirror="" frames=8 tolerance=1e-4 qemu_cpu=cortex-a76 rebuild=0 gate_video=1
x86_python="$repo/.venv/bin/python" cache="$repo/build/aarch64" result="$repo/docs/bench/aarch64/result.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite="${2:?--suite needs a value}"; shift 2 ;;
    --mirror) mirror="${2:?--mirror needs a value}"; shift 2 ;;
    --frames) frames="${2:?--frames needs a value}"; shift 2 ;;
    --tolerance) tolerance="${2:?--tolerance needs a value}"; shift 2 ;;
    --qemu-cpu) qemu_cpu="${2:?--qemu-cpu needs a value}"; shift 2 ;;
    --x86-python) x86_python="${2:?--x86-python needs a value}"; shift 2 ;;
    --cache) cache="${2:?--cache needs a value}"; shift 2 ;;
    --result) result="${2:?--result needs a value}"; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    --gate-video) gate_video=1; shift ;;
    --no-gate-video) gate_video=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see bash scripts/check_aarch64.sh --help)" ;;
  esac
done
[[ "$frames" =~ ^[1-9][0-9]*$ ]] || die "--frames must be a positive integer, got '$frames'"

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount namespaces); run it as root, e.g. sudo make check-aarch64"
[ "$(uname -s)" = Linux ] || die "needs Linux (binfmt_misc, mount namespaces), not $(uname -s)"
missing=()
for tool in debootstrap unshare chroot mount umount flock git tar awk sha256sum python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
qemu="$(command -v qemu-aarch64-static || true)"
[ -n "$qemu" ] || missing+=("qemu-aarch64-static")
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}; install Debian's packages: apt-get install -y qemu-user-static debootstrap binfmt-support (and util-linux, git, python3)"
[ -x "$x86_python" ] || die "no x86_64 Python at $x86_python for the reference run: run 'make venv' first, or pass --x86-python"
"$x86_python" -c "import numpy, edgescene" 2>/dev/null || die "$x86_python lacks numpy or edgescene: run 'make venv' first"

if [ -z "$suite" ]; then
  suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [ -n "$suite" ] || die "this machine's /etc/os-release names no VERSION_CODENAME: pass --suite (e.g. bookworm)"
fi
if [ -z "$mirror" ]; then
  mirror="$(python3 "$repo/scripts/check_aarch64.py" mirror --suite "$suite")" \
    || die "no Debian mirror for '$suite' in this machine's apt sources: pass --mirror URL"
fi

mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
root="$cache/root"
wheels="$cache/wheels"
tmp="$(mktemp -d)"

# Anything still mounted below the cache (nothing should be: every mount is made in a private namespace)
mounts_below() { awk -v c="$cache/" 'index($5, c) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
cleanup() {
  local m
  for m in $(mounts_below); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$tmp"
}
exec 8>&2
child=""  # the command running in the root: its own process group, so a signal can end all of it
on_signal() {
  [ -n "$child" ] && kill -KILL -- "-$child" 2>/dev/null
  echo "check-aarch64: interrupted" >&8  # the script's stderr, not the log a command's output goes to
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

exec 9>"$cache/.lock"
flock -n 9 || die "another check-aarch64 runs on $cache (lock $cache/.lock)"

# rm -rf that never follows a mount into this machine's own files
remove_tree() {
  local m
  for m in $(mounts_below); do umount -l "$m" 2>/dev/null || true; done
  [ -z "$(mounts_below)" ] || die "cannot unmount $(mounts_below | tr '\n' ' ')"
  rm -rf --one-file-system "$@"
}

if [ "$rebuild" = 1 ]; then
  say "--rebuild: removing the cached root (with its venv) and wheels"
  remove_tree "$root" "$root.partial" "$wheels"
fi

# --- binfmt_misc: the kernel runs arm64 ELF files through qemu --------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc (a container without it cannot run arm64 binaries)"
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  if command -v update-binfmts >/dev/null && [ -e /usr/share/binfmts/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 || true
  fi
  if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64
    # F: the kernel opens the interpreter now, so it need not exist inside the root
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu"':F' \
      >/proc/sys/fs/binfmt_misc/register
  fi
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "could not enable qemu-aarch64 in binfmt_misc"
fix_binary=0
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 && fix_binary=1
qemu_version="$("$qemu" --version | head -1)"
say "binfmt_misc: qemu-aarch64 enabled ($qemu_version, emulated CPU $qemu_cpu)"

started="$(now)"

# --- 1. the arm64 Debian root (cached) ---------------------------------------------------------------------
debootstrap_s=null
if [ -f "$cache/root.stamp" ] && [ -d "$root" ] && [ "$(sed -n 's/^suite=//p' "$cache/root.stamp")" = "$suite" ]; then
  say "arm64 $suite root: cached ($root)"
else
  remove_tree "$root" "$root.partial" "$cache/root.stamp"
  say "debootstrap: arm64 $suite (minbase + python3, python3-venv) from the mirror in this machine's apt sources; about 6 minutes"
  t="$(now)"
  if ! unshare --mount --propagation private -- debootstrap --arch=arm64 --variant=minbase \
      --include=python3,python3-venv "$suite" "$root.partial" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
    tail -30 "$tmp/debootstrap.log" >&2
    [ -f "$root.partial/debootstrap/debootstrap.log" ] && tail -30 "$root.partial/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above); the partial root is removed on the next run"
  fi
  debootstrap_s="$(since "$t")"
  mv "$root.partial" "$root"
  printf 'suite=%s\nmirror=%s\nseconds=%s\nbuilt=%s\n' "$suite" "$mirror" "$debootstrap_s" "$(date -u +%FT%TZ)" \
    >"$cache/root.stamp"
  say "debootstrap: done in ${debootstrap_s} s"
fi
debootstrap_built_s="$(sed -n 's/^seconds=//p' "$cache/root.stamp")"
if [ "$fix_binary" = 0 ]; then  # without F the interpreter is looked up inside the root
  interpreter="$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
  mkdir -p "$root$(dirname "$interpreter")" && cp -L "$interpreter" "$root$interpreter"
fi

# files the root needs from this machine, refreshed every run: DNS, the CA bundle (this network's TLS goes
# through it), an arm64 /proc/cpuinfo, and a copy of the repository's files (tracked and untracked, not
# ignored ones: no .venv, no build/)
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
ca=""
for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  [ -n "$f" ] && [ -s "$f" ] && { ca="$f"; break; }
done
[ -n "$ca" ] || die "no CA bundle on this machine (/etc/ssl/certs/ca-certificates.crt): apt-get install ca-certificates"
cp -L "$ca" "$root$ca_in_root"

cpu_part=0xd0b  # Cortex-A76
case "$qemu_cpu" in
  cortex-a53) cpu_part=0xd03 ;; cortex-a57) cpu_part=0xd07 ;; cortex-a72) cpu_part=0xd08 ;;
  neoverse-n1) cpu_part=0xd0c ;;
esac
ncpu="$(nproc)"
{
  for ((i = 0; i < ncpu; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$cpu_part"
  done
} >"$cache/cpuinfo"

remove_tree "$root/src"
mkdir -p "$root/src" "$wheels"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
   | tar --null --ignore-failed-read -cf - -T - 2>/dev/null) | tar -xf - -C "$root/src"
[ -f "$root/src/constraints.txt" ] && [ -f "$root/src/pyproject.toml" ] || die "copying the repository into the root failed"

export ES_ROOT="$root" ES_CPUINFO="$cache/cpuinfo" ES_WHEELS="$wheels" ES_QEMU_CPU="$qemu_cpu"
# bash runs a trap only once a foreground command ends, and an emulated model call takes minutes: the
# command runs in the background in a new session (setsid) and the INT/TERM trap kills that whole group
in_root() {
  local rc=0
  setsid unshare --mount --propagation private -- bash "$self" --inside-namespace "$@" 8>&- 9>&- </dev/null &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

in_root /bin/true || die "cannot run arm64 programs in the root (binfmt_misc / qemu)"

# --- 2. wheels and venv (cached, keyed by constraints.txt and pyproject.toml) ------------------------------
key="$(cat "$repo/constraints.txt" "$repo/pyproject.toml" | sha256sum | cut -c1-16)"
pip_args="-c /src/constraints.txt '/src[runtime]'"  # words for sh -c inside the root
venv_key="$root$venv_in_root/.edgescene-key"
if [ "$(cat "$venv_key" 2>/dev/null)" != "$key" ]; then
  say "venv: new $venv_in_root in the root (python3 -m venv)"
  in_root /bin/sh -ec "rm -rf $venv_in_root; python3 -m venv $venv_in_root" || die "python3 -m venv failed in the root"
fi
wheels_download_s=null
if [ -f "$wheels/.complete-$key" ]; then
  say "wheels: cached ($(find "$wheels" -name '*.whl' | wc -l) files in $wheels)"
else
  say "wheels: downloading the runtime extra's aarch64 wheels from the package index (about 2 minutes)"
  t="$(now)"
  # only binary wheels: a source build would hide a package that has no aarch64 wheel
  in_root python -m pip download -q -d /wheels --only-binary=:all: -c /src/constraints.txt '/src[runtime]' \
    'setuptools>=69' wheel || die "pip download of the aarch64 wheels failed (output above)"
  wheels_download_s="$(since "$t")"
  rm -f "$wheels"/.complete-*
  touch "$wheels/.complete-$key"
  say "wheels: downloaded in ${wheels_download_s} s"
fi
say "venv: pip install -c constraints.txt \"<copy of the repo>[runtime]\" from the cached wheels (no index)"
t="$(now)"
rm -f "$venv_key"
in_root /bin/sh -ec "
  python -m pip install -q --no-index --find-links /wheels $pip_args
  python -c \"import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)\"" \
  || die "installing the runtime extra in the root failed (output above); --rebuild downloads the wheels again"
echo "$key" >"$venv_key"
install_s="$(since "$t")"
say "venv: installed in ${install_s} s"

in_root python /src/scripts/check_aarch64.py env >"$tmp/env-aarch64.json" \
  || die "the root's Python could not import the runtime (onnxruntime, numpy, cv2, av)"
"$x86_python" "$repo/scripts/check_aarch64.py" env >"$tmp/env-x86_64.json"

# --- 3. the reconstruction, emulated arm64 and native x86_64 -----------------------------------------------
sample=edgescene/assets/sample/sample.mp4
recon_args=(--max-frames "$frames" --no-pipeline --overwrite)
say "reconstruct (arm64, emulated): edgescene reconstruct $sample ${recon_args[*]} (about 3 minutes)"
remove_tree "$root/srv/edgescene-check"
mkdir -p "$root/srv/edgescene-check"
t="$(now)"
in_root /bin/sh -ec "cd /src && edgescene reconstruct $sample ${recon_args[*]} --out /srv/edgescene-check/video" \
  >"$tmp/aarch64.log" 2>&1 || { cat "$tmp/aarch64.log" >&2; die "the emulated reconstruction failed (output above)"; }
recon_aarch64_s="$(since "$t")"
say "reconstruct (arm64, emulated): ${recon_aarch64_s} s"
t="$(now)"
in_root /bin/sh -ec "cd /src && python scripts/check_aarch64.py frames $sample /srv/edgescene-check/frames --max-frames $frames" \
  || die "decoding the sample in the root failed (output above)"
frames_aarch64_s="$(since "$t")"

x86() {  # the x86_64 Python in a clean environment, from the repository
  local passthrough=() v
  for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do [ -n "${!v:-}" ] && passthrough+=("$v=${!v}"); done
  (cd "$repo" && env -i HOME="$tmp" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HF_HUB_OFFLINE=1 \
     ${passthrough[@]+"${passthrough[@]}"} "$x86_python" "$@")
}
rm -rf "$cache/x86_64"
x86 scripts/check_aarch64.py frames "$sample" "$cache/x86_64/frames" --max-frames "$frames" >/dev/null
say "reconstruct (x86_64, $x86_python): the video, and the frames the arm64 root decoded (the same pixels)"
t="$(now)"
x86 -m edgescene reconstruct "$sample" "${recon_args[@]}" --out "$cache/x86_64/video" >"$tmp/x86_64.log" 2>&1 \
  || { cat "$tmp/x86_64.log" >&2; die "the x86_64 reconstruction failed (output above)"; }
recon_x86_s="$(since "$t")"
x86 -m edgescene reconstruct "$root/srv/edgescene-check/frames" "${recon_args[@]}" --out "$cache/x86_64/same-pixels" \
  >"$tmp/x86_64-png.log" 2>&1 || { cat "$tmp/x86_64-png.log" >&2; die "the x86_64 reconstruction of the PNG frames failed"; }
say "reconstruct (x86_64): ${recon_x86_s} s"

# --- 4. compare and record ----------------------------------------------------------------------------------
gates=(--gate same_pixels)
[ "$gate_video" = 1 ] && gates+=(--gate video)
mkdir -p "$(dirname "$result")"
set +e
x86 scripts/check_aarch64.py compare --tolerance "$tolerance" "${gates[@]}" \
  --pair same_pixels "$cache/x86_64/same-pixels" "$root/srv/edgescene-check/video" \
  --pair video "$cache/x86_64/video" "$root/srv/edgescene-check/video" \
  --decoded "$cache/x86_64/frames/decoded.npz" "$root/srv/edgescene-check/frames/decoded.npz" \
  --out "$result" --meta-json aarch64="$tmp/env-aarch64.json" --meta-json x86_64="$tmp/env-x86_64.json" \
  --meta command="edgescene reconstruct $sample ${recon_args[*]} --out OUT" \
  --meta pairs.same_pixels="x86_64 reconstructs the PNG frames the arm64 root decoded; arm64 the video" \
  --meta pairs.video="both reconstruct the video, each decoding it itself" \
  --meta debian.suite="$suite" --meta debian.mirror="the first deb source for $suite in the host's apt sources" \
  --meta qemu.version="$qemu_version" --meta qemu.cpu="$qemu_cpu" --meta host_cpus="$ncpu" \
  --meta timings_s.debootstrap="$debootstrap_s" --meta timings_s.debootstrap_when_built="$debootstrap_built_s" \
  --meta timings_s.wheels_download="$wheels_download_s" --meta timings_s.venv_install="$install_s" \
  --meta timings_s.reconstruct_aarch64="$recon_aarch64_s" --meta timings_s.decode_frames_aarch64="$frames_aarch64_s" \
  --meta timings_s.reconstruct_x86_64="$recon_x86_s" --meta timings_s.total="$(since "$started")"
status=$?
set -e
say "result: ${result#"$repo"/} (total $(since "$started") s)"
[ "$status" = 0 ] && say "passed: the same pixels give the same cameras and depth within $tolerance on arm64"
exit "$status"

# Sourced by qemu/snp.sh and qemu/tdx.sh: check the host before launching, so that a missing
# piece is named instead of ending in QEMU's own error.
#
#   host_check NAME QEMU_MAJOR QEMU_MINOR KVM_MODULE KVM_PARAMETER
#
# NAME is what the platform is called (SEV-SNP, TDX); the KVM module (kvm_amd, kvm_intel) must
# be loaded with its parameter (sev_snp, tdx) on. QEMU (default qemu-system-x86_64) and VEIL
# (default veil) name the binaries. Exits 1 with one line on stderr naming what is missing.
host_check() {
    name=$1 want_major=$2 want_minor=$3 module=$4 param=$5
    me=$(basename "$0")
    QEMU=${QEMU:-qemu-system-x86_64}
    version=$("$QEMU" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
    if [ -z "$version" ]; then
        echo "$me: $QEMU not found: $name needs QEMU $want_major.$want_minor or later (set QEMU=/path/to/qemu-system-x86_64)" >&2
        exit 1
    fi
    major=${version% *} minor=${version#* }
    if [ "$major" -lt "$want_major" ] || { [ "$major" -eq "$want_major" ] && [ "$minor" -lt "$want_minor" ]; }; then
        echo "$me: $QEMU is version $major.$minor: $name needs QEMU $want_major.$want_minor or later and KVM with $name (set QEMU=/path/to/a/newer/qemu-system-x86_64)" >&2
        exit 1
    fi
    if [ ! -c /dev/kvm ]; then
        echo "$me: no /dev/kvm: $name needs KVM on a host with $name enabled" >&2
        exit 1
    fi
    enabled=$(cat "/sys/module/$module/parameters/$param" 2>/dev/null || true)
    case "$enabled" in
    Y | y | 1) ;;
    *)
        echo "$me: KVM has no $name: /sys/module/$module/parameters/$param is '${enabled:-absent}' (load $module with $param=1 on a host whose firmware enables $name)" >&2
        exit 1
        ;;
    esac
    VEIL=${VEIL:-veil}
    if ! command -v "$VEIL" >/dev/null 2>&1; then
        echo "$me: $VEIL not found: cargo install --locked --path tools/veil, or set VEIL=target/release/veil" >&2
        exit 1
    fi
}

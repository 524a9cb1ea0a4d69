#!/bin/sh
# Launch veilboot as the firmware of an AMD SEV-SNP guest, with measured direct boot, on an
# SNP host: QEMU 9.1 or later, KVM with SEV-SNP enabled (kvm_amd sev_snp=1).
#
#   qemu/snp.sh ROM KERNEL INITRD "CMDLINE" [extra qemu arguments...]
#
# UNTESTED HERE: no machine this project runs on has SEV-SNP hardware. The firmware's SNP
# path is tested under TCG with a model of the AMD-SP and the hypervisor (the model ROM,
# `cargo xtask test snp`), and the launch digest printed below equals sev-snp-measure's.
#
# Environment: VCPUS (default 1), MEM (default 2G: this build validates RAM below 4 GiB only,
# so keep it at 2G or less), CPU (default EPYC-v4: QEMU's model, which also enters the launch
# digest), CBITPOS (51), REDUCED_PHYS_BITS (1), VEIL (the veil CLI, default `veil`), QEMU
# (default qemu-system-x86_64). QEMU's version, KVM's SEV-SNP and veil are checked first.
#
# kernel-hashes=on makes QEMU put the SHA-256 of the kernel, initrd and command line into the
# measured SEV hash table page (0x903000 in this ROM); the firmware refuses blobs that differ.
# The expected launch digest (the report's MEASUREMENT) is printed first, from the same files.
set -eu
if [ $# -lt 4 ]; then
    sed -n '2,18p' "$0" >&2
    exit 2
fi
. "$(dirname "$0")/host-check.sh"
host_check SEV-SNP 9 1 kvm_amd sev_snp
ROM=$1 KERNEL=$2 INITRD=$3 APPEND=$4
shift 4
VCPUS=${VCPUS:-1} MEM=${MEM:-2G} CPU=${CPU:-EPYC-v4}
CBITPOS=${CBITPOS:-51} REDUCED_PHYS_BITS=${REDUCED_PHYS_BITS:-1} VEIL=${VEIL:-veil}
printf 'expected launch digest: ' >&2
"$VEIL" measure --platform snp --rom "$ROM" --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND" \
    --vcpus "$VCPUS" --vcpu-type "$CPU" >&2
exec "$QEMU" \
    -machine q35,confidential-guest-support=sev0,memory-backend=ram0 \
    -accel kvm -cpu "$CPU" -smp "$VCPUS" -m "$MEM" \
    -object memory-backend-memfd,id=ram0,size="$MEM",share=true,prealloc=false \
    -object sev-snp-guest,id=sev0,cbitpos="$CBITPOS",reduced-phys-bits="$REDUCED_PHYS_BITS",kernel-hashes=on \
    -nodefaults -no-reboot -display none -monitor none -serial stdio \
    -bios "$ROM" -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "$@"

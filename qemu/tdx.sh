#!/bin/sh
# Launch veilboot as the firmware of an Intel TDX guest (a TD) with a direct boot, on a TDX
# host: QEMU 10.1 or later, KVM with TDX enabled (kvm_intel tdx=1).
#
#   qemu/tdx.sh ROM KERNEL INITRD "CMDLINE" [extra qemu arguments...]
#
# UNTESTED HERE: no machine this project runs on has TDX hardware. The firmware's TDX path is
# tested under TCG with a model of the TDX module and the VMM (the TDX model ROM,
# `cargo xtask test tdx`). This build runs Linux on one vCPU (the others stay parked in the
# firmware: the ACPI multiprocessor wakeup hand-off is not built yet), and accepts RAM below
# 4 GiB only: keep MEM at 2G or less.
#
# Environment: MEM (default 2G), VEIL (the veil CLI, default `veil`). The expected RTMR1 and
# RTMR2 (the boot target, as the firmware extends them) are printed first.
set -eu
if [ $# -lt 4 ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
ROM=$1 KERNEL=$2 INITRD=$3 APPEND=$4
shift 4
MEM=${MEM:-2G} VEIL=${VEIL:-veil}
"$VEIL" measure --platform tdx --rom "$ROM" --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND" >&2
exec qemu-system-x86_64 \
    -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0 \
    -accel kvm -cpu host -smp 1 -m "$MEM" \
    -object memory-backend-ram,id=ram0,size="$MEM" \
    -object tdx-guest,id=tdx0 \
    -nodefaults -no-reboot -display none -monitor none -serial stdio \
    -bios "$ROM" -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "$@"

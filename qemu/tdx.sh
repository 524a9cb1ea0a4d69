#!/bin/sh
# Launch veilboot as the firmware of an Intel TDX guest (a TD) with a direct boot, on a TDX
# host: QEMU 10.1 or later, KVM with TDX enabled (kvm_intel tdx=1).
#
#   qemu/tdx.sh ROM KERNEL INITRD "CMDLINE" [extra qemu arguments...]
#
# UNTESTED HERE: no machine this project runs on has TDX hardware. The firmware's TDX path is
# tested under TCG with a model of the TDX module and the VMM (the TDX model ROM,
# `cargo xtask test tdx`). The firmware accepts all of the TD's RAM before Linux runs (Linux
# learns of unaccepted memory only from UEFI), so a large MEM lengthens the boot; the APs
# reach Linux through the ACPI multiprocessor wakeup mailbox.
#
# Environment: MEM (default 2G), SMP (vCPUs, default 2), VEIL (the veil CLI, default `veil`), QEMU,
# MRCONFIGID (base64, `veil image build`'s tdx-mrconfigid: binds a disk boot's init-data).
# MRTD and the expected RTMR1-3 are printed first; RTMR0 needs the VMM's inputs (README,
# `veil measure --td-hob --vmm-config`).
set -eu
if [ $# -lt 4 ]; then
    sed -n '2,16p' "$0" >&2
    exit 2
fi
. "$(dirname "$0")/host-check.sh"
host_check TDX 10 1 kvm_intel tdx
ROM=$1 KERNEL=$2 INITRD=$3 APPEND=$4
shift 4
MEM=${MEM:-2G} SMP=${SMP:-2} VEIL=${VEIL:-veil}
"$VEIL" measure --platform tdx --rom "$ROM" --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND" >&2
exec "$QEMU" \
    -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0 \
    -accel kvm -cpu host -smp "$SMP" -m "$MEM" \
    -object memory-backend-ram,id=ram0,size="$MEM" \
    -object tdx-guest,id=tdx0${MRCONFIGID:+,mrconfigid=$MRCONFIGID} \
    -nodefaults -no-reboot -display none -monitor none -serial stdio \
    -bios "$ROM" -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "$@"

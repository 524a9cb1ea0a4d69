#!/bin/sh
# Boot veilboot as the firmware of a plain q35 VM under TCG (the recipe the tests use).
#
#   qemu/plain.sh [ROM] [extra qemu arguments...]
#
# ROM defaults to target/veilboot.fd (built by `cargo xtask build`). The serial console is on
# stdout; the firmware ends QEMU through isa-debug-exit: exit status 33 means success, 35 a
# reported failure. Add -accel kvm only for firmware-only measurements: this machine's
# nested KVM runs the firmware but not a Linux kernel.
set -eu
ROM=${1:-target/veilboot.fd}
[ $# -gt 0 ] && shift
exec qemu-system-x86_64 \
    -machine q35 -accel tcg -cpu max -m 256M -smp 1 \
    -nodefaults -no-reboot -display none -monitor none \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -bios "$ROM" -serial stdio "$@"

#!/bin/sh
# Boot veilboot on a plain q35 VM with a TPM 2.0 (swtpm, TIS interface) under TCG.
#
#   qemu/plain-tpm.sh STATE_DIR [ROM] [extra qemu arguments...]
#
# STATE_DIR holds the TPM's state; it is provisioned on first use (swtpm_setup with an EK
# certificate from swtpm's local CA, dictionary-attack lockout off so that VM stops without
# TPM2_Shutdown never lock it). Debian packages: swtpm swtpm-tools tpm2-tools.
set -eu
STATE=$(mkdir -p "$1" && cd "$1" && pwd)   # swtpm changes directory: absolute paths only
shift
ROM=${1:-target/veilboot.fd}
[ $# -gt 0 ] && shift
if [ ! -e "$STATE/tpm2-00.permall" ]; then
    swtpm_setup --tpm2 --create-ek-cert --create-platform-cert --lock-nvram --pcr-banks sha256,sha384 --tpmstate "$STATE" >/dev/null
    port=$((20000 + $$ % 20000))
    swtpm socket --tpm2 --tpmstate dir="$STATE" --server type=tcp,port=$port --ctrl type=tcp,port=$((port + 1)) --flags not-need-init,startup-clear &
    pid=$!
    # Wait until it answers (up to 30 s), rather than for a fixed time.
    tries=0
    until TPM2TOOLS_TCTI=swtpm:port=$port tpm2_getrandom 1 >/dev/null 2>&1; do
        tries=$((tries + 1)); [ $tries -lt 300 ] || { echo "plain-tpm.sh: swtpm did not answer on port $port" >&2; exit 1; }
        sleep 0.1
    done
    TPM2TOOLS_TCTI=swtpm:port=$port tpm2_dictionarylockout -s -n 3 -t 0 -l 0
    TPM2TOOLS_TCTI=swtpm:port=$port tpm2_shutdown
    kill $pid; wait $pid 2>/dev/null || true
fi
swtpm socket --tpm2 --tpmstate dir="$STATE" --ctrl type=unixio,path="$STATE/swtpm.sock" &
TPM_PID=$!
trap 'kill $TPM_PID 2>/dev/null || true' EXIT INT TERM
while [ ! -S "$STATE/swtpm.sock" ]; do sleep 0.1; done
set +e
qemu-system-x86_64 \
    -machine q35 -accel tcg -cpu max -m 256M -smp 1 \
    -nodefaults -no-reboot -display none -monitor none \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -chardev socket,id=chrtpm,path="$STATE/swtpm.sock" \
    -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0 \
    -bios "$ROM" -serial stdio "$@"
status=$?
exit $status

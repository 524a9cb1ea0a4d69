#!/bin/sh
# Regenerates the test PKI the host tests sign model evidence with (never trusted outside
# tests: the broker accepts these roots only as a policy's test root). The same recipes as
# tools/xtask (snp_test.rs test_chain, tdx_attest.rs test_pki), run once and committed so the
# host tests need no OpenSSL. Run from this directory: sh make.sh
set -eu
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
pss="-sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48"
printf 'basicConstraints=critical,CA:true\n' > "$t/ca.ext"
# An empty CRL (DER, NAME-crl.der) by the CA CERT/KEY, valid 20 years: crl NAME CERT KEY SIGOPTS...
crl() {
  n=$1; c=$2; k=$3; shift 3
  : > "$t/$n.index"; echo 01 > "$t/$n.crlnum"
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s\ncrlnumber=%s\ndefault_crl_days=7300\n' "$t/$n.index" "$t/$n.crlnum" > "$t/$n.cnf"
  openssl ca -gencrl -config "$t/$n.cnf" -cert "$c" -keyfile "$k" -out "$t/$n.crl.pem" "$@" 2>/dev/null
  openssl crl -in "$t/$n.crl.pem" -outform DER -out "$n-crl.der"
}
# SEV-SNP in AMD's shape: ARK and ASK "SEV-Milan" (RSA, RSASSA-PSS SHA-384 as AMD's; the ASK a
# CA of path length 0), a P-384 VCEK with the KDS extensions for the model AMD-SP's TCB
# (bootloader 3, TEE 0, SNP 0x18, microcode 0xDB) and hwID = CHIP_ID (0x5C, the extension's own
# bytes as AMD writes it), the ARK's CRL.
hwid=$(printf '5C:%.0s' $(seq 64) | sed 's/:$//')
cat > "$t/vcek.ext" <<EXT
1.3.6.1.4.1.3704.1.3.1=DER:02:01:03
1.3.6.1.4.1.3704.1.3.2=DER:02:01:00
1.3.6.1.4.1.3704.1.3.3=DER:02:01:18
1.3.6.1.4.1.3704.1.3.8=DER:02:02:00:DB
1.3.6.1.4.1.3704.1.4=DER:$hwid
EXT
for n in ark ask; do openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$t/$n.key" 2>/dev/null; done
openssl req -x509 -new -key "$t/ark.key" -subj /CN=ARK-Test -days 7300 -out "$t/ark.pem" $pss \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -new -key "$t/ask.key" -subj /CN=SEV-Milan -out "$t/ask.csr"
printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign\n' > "$t/ask.ext"
openssl x509 -req -in "$t/ask.csr" -CA "$t/ark.pem" -CAkey "$t/ark.key" -CAcreateserial -days 7300 \
  -extfile "$t/ask.ext" -out "$t/ask.pem" $pss 2>/dev/null
crl snp-ark "$t/ark.pem" "$t/ark.key" -md sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48
openssl ecparam -name secp384r1 -genkey -noout -out "$t/vcek.key"
openssl req -new -key "$t/vcek.key" -subj /CN=SEV-VCEK -out "$t/vcek.csr"
openssl x509 -req -in "$t/vcek.csr" -CA "$t/ask.pem" -CAkey "$t/ask.key" -CAcreateserial -days 7300 \
  -extfile "$t/vcek.ext" -outform DER -out snp-vcek.der $pss 2>/dev/null
openssl x509 -in "$t/ark.pem" -outform DER -out snp-ark.der
openssl x509 -in "$t/ask.pem" -outform DER -out snp-ask.der
openssl ec -in "$t/vcek.key" -outform DER 2>/dev/null > "$t/vcek.sec1"
# The private scalar: SEC1 `30 .. 02 01 01 04 30 <48 bytes>`.
od -An -tx1 -v "$t/vcek.sec1" | tr -d ' \n' | sed 's/.*020101043\(0\)//; s/^\(.\{96\}\).*/\1/' > snp-vcek.scalar.hex
# TDX in Intel's shape: a P-256 root (path length 1), "Intel SGX PCK Platform CA" (path length
# 0), a PCK certificate (no CA) with Intel's SGX extensions (DER written by tdx-pck-ext.hex's
# maker, tools/xtask tdx_attest.rs sgx_extensions: components 3,3,2,2,4,1,0,5, PCESVN 11, FMSPC
# 00A06F000000), "Intel SGX TCB Signing" (no CA) under the root, the root CA CRL and the PCK CRL.
for n in root platform pck tcb att; do openssl ecparam -name prime256v1 -genkey -noout -out "$t/$n.key"; done
openssl req -x509 -new -key "$t/root.key" -subj "/CN=Test SGX Root CA" -days 7300 \
  -addext basicConstraints=critical,CA:true,pathlen:1 -addext keyUsage=critical,keyCertSign,cRLSign -out tdx-root.pem
printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n1.2.840.113741.1.13.1=DER:%s\n' \
  "$(cat tdx-pck-ext.hex)" > "$t/pck.ext"
printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > "$t/platform.ext"
printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n' > "$t/tcb.ext"
for spec in "platform:Intel SGX PCK Platform CA:root" "pck:Intel SGX PCK Certificate:platform" "tcb:Intel SGX TCB Signing:root"; do
  n=${spec%%:*}; rest=${spec#*:}; cn=${rest%%:*}; ca=${rest#*:}
  openssl req -new -key "$t/$n.key" -subj "/CN=$cn" -out "$t/x.csr"
  openssl x509 -req -in "$t/x.csr" -CA tdx-$ca.pem -CAkey "$t/$ca.key" -CAserial "$t/$ca.srl" -CAcreateserial -days 7300 \
    -sha256 -extfile "$t/$n.ext" -out tdx-$n.pem 2>/dev/null
  openssl ec -in "$t/$n.key" -outform DER 2>/dev/null > "$t/$n.sec1"
done
crl tdx-root tdx-root.pem "$t/root.key" -md sha256
crl tdx-platform tdx-platform.pem "$t/platform.key" -md sha256
openssl ec -in "$t/att.key" -outform DER 2>/dev/null > "$t/att.sec1"
for n in pck tcb att; do
  od -An -tx1 -v "$t/$n.sec1" | tr -d ' \n' | sed 's/.*0201010420//; s/^\(.\{64\}\).*/\1/' > tdx-$n.scalar.hex
done
# TPM: an RSA-2048 key standing in for an attestation key (PKCS#1 DER), to sign quotes with.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$t/ak.pem" 2>/dev/null
openssl rsa -in "$t/ak.pem" -traditional -outform DER -out tpm-ak.pkcs1.der 2>/dev/null

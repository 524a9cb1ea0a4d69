//! XTS-AES with AES-NI, VAES-256 (AVX2) and VAES-512 (AVX-512): hand-written assembly behind a
//! C-ABI, as the Linux kernel's
//! arch/x86/crypto does it, because on x86_64-unknown-none the RustCrypto crates cannot use
//! AES-NI (their detection is off there and `target_feature(enable = "aes")` on that
//! soft-float target crashes LLVM). AES-NI interleaves 8 blocks (tweaks spilled to aligned
//! stack, the next batch's computed during the current batch's rounds), VAES-256 8 (4 ymm);
//! tweaks are multiplied by α lane-wise in registers (by α² to advance a vector of tweaks).
//! VAES-512 takes a whole run of sectors per call (dm-crypt's plain64 IVs) and keeps 32
//! blocks (8 zmm) in flight: VAESENC/VAESDEC on zmm have a 4-cycle latency and two issue
//! per cycle on current cores (Zen 5), so 4 zmm leave half the AES units idle. Its 8 tweak
//! vectors advance by α³² each (byte shifts and one carry-less multiply) during the rounds,
//! and the next sector's encrypted tweak is computed before the current sector's rounds (out-of-order
//! execution overlaps the two). Other
//! shapes on the VAES-512 backend (data units of any length: the published vectors' API,
//! nothing the firmware calls) run on the AES-NI code. The routines touch only what the
//! safe wrapper below hands them: pointers to checked, whole-block buffers and lengths in
//! blocks or whole sectors.
//!
//! Register contract (System V): arguments in rdi, rsi, rdx, rcx, r8, r9 (the VAES-512 sector
//! routines also one on the stack); the routines clobber rax, rdi, rsi, rdx, rcx, r8-r11,
//! xmm/ymm/zmm0-15 (VAES-512 also zmm16-31) and the flags, all caller-saved (the VAES
//! routines end with VZEROUPPER; the VAES-512 sector routines first zero zmm16-31, where
//! their round keys were, and their stack area); the AES-NI XTS routines use 256 bytes of stack and the
//! VAES-512 sector routines 640 (both with rbp, restored), the others none beyond the return
//! address; no memory other than the arguments' buffers and a read-only constant. The
//! firmware never runs them from its exception handlers.

use core::arch::global_asm;

use super::{BLOCK, XtsBackend, XtsError, check_key};

global_asm!(
    r#"
    .section .rodata.veil_aesni, "a"
    .p2align 4
veil_aesni_gf128mul_mask:
    .quad 0x87, 0x1

    .text

    /* 128-bit key schedule step: xmm1 = previous round key, xmm2 = aeskeygenassist output. */
    .macro VEIL_EXPAND128 rcon, off
    aeskeygenassist \rcon, %xmm1, %xmm2
    pshufd $0xff, %xmm2, %xmm2
    movdqa %xmm1, %xmm3
    pslldq $4, %xmm3
    pxor %xmm3, %xmm1
    pslldq $4, %xmm3
    pxor %xmm3, %xmm1
    pslldq $4, %xmm3
    pxor %xmm3, %xmm1
    pxor %xmm2, %xmm1
    movdqu %xmm1, \off(%rsi)
    .endm

    /* veil_aesni_expand_128(key rdi, enc_keys rsi [11 x 16]) */
    .globl veil_aesni_expand_128
veil_aesni_expand_128:
    movdqu (%rdi), %xmm1
    movdqu %xmm1, (%rsi)
    VEIL_EXPAND128 $0x01, 16
    VEIL_EXPAND128 $0x02, 32
    VEIL_EXPAND128 $0x04, 48
    VEIL_EXPAND128 $0x08, 64
    VEIL_EXPAND128 $0x10, 80
    VEIL_EXPAND128 $0x20, 96
    VEIL_EXPAND128 $0x40, 112
    VEIL_EXPAND128 $0x80, 128
    VEIL_EXPAND128 $0x1b, 144
    VEIL_EXPAND128 $0x36, 160
    ret

    /* 256-bit schedule: xmm1 = even key, xmm3 = odd key; xmm4 scratch. */
    .macro VEIL_EXPAND256_A rcon, off
    aeskeygenassist \rcon, %xmm3, %xmm2
    pshufd $0xff, %xmm2, %xmm2
    movdqa %xmm1, %xmm4
    pslldq $4, %xmm4
    pxor %xmm4, %xmm1
    pslldq $4, %xmm4
    pxor %xmm4, %xmm1
    pslldq $4, %xmm4
    pxor %xmm4, %xmm1
    pxor %xmm2, %xmm1
    movdqu %xmm1, \off(%rsi)
    .endm
    .macro VEIL_EXPAND256_B off
    aeskeygenassist $0, %xmm1, %xmm2
    pshufd $0xaa, %xmm2, %xmm2
    movdqa %xmm3, %xmm4
    pslldq $4, %xmm4
    pxor %xmm4, %xmm3
    pslldq $4, %xmm4
    pxor %xmm4, %xmm3
    pslldq $4, %xmm4
    pxor %xmm4, %xmm3
    pxor %xmm2, %xmm3
    movdqu %xmm3, \off(%rsi)
    .endm

    /* veil_aesni_expand_256(key rdi, enc_keys rsi [15 x 16]) */
    .globl veil_aesni_expand_256
veil_aesni_expand_256:
    movdqu (%rdi), %xmm1
    movdqu 16(%rdi), %xmm3
    movdqu %xmm1, (%rsi)
    movdqu %xmm3, 16(%rsi)
    VEIL_EXPAND256_A $0x01, 32
    VEIL_EXPAND256_B 48
    VEIL_EXPAND256_A $0x02, 64
    VEIL_EXPAND256_B 80
    VEIL_EXPAND256_A $0x04, 96
    VEIL_EXPAND256_B 112
    VEIL_EXPAND256_A $0x08, 128
    VEIL_EXPAND256_B 144
    VEIL_EXPAND256_A $0x10, 160
    VEIL_EXPAND256_B 176
    VEIL_EXPAND256_A $0x20, 192
    VEIL_EXPAND256_B 208
    VEIL_EXPAND256_A $0x40, 224
    ret

    /* veil_aesni_inverse_keys(enc rdi, dec rsi, rounds rdx): dec[0] = enc[n],
     * dec[i] = InvMixColumns(enc[n - i]), dec[n] = enc[0]. */
    .globl veil_aesni_inverse_keys
veil_aesni_inverse_keys:
    mov %rdx, %rax
    shl $4, %rax
    movdqu (%rdi,%rax), %xmm0
    movdqu %xmm0, (%rsi)
    mov $1, %r9
1:  cmp %rdx, %r9
    jae 2f
    mov %rdx, %rax
    sub %r9, %rax
    shl $4, %rax
    movdqu (%rdi,%rax), %xmm0   /* legacy-SSE memory operands must be aligned: load first */
    aesimc %xmm0, %xmm0
    mov %r9, %rax
    shl $4, %rax
    movdqu %xmm0, (%rsi,%rax)
    inc %r9
    jmp 1b
2:  movdqu (%rdi), %xmm0
    mov %rdx, %rax
    shl $4, %rax
    movdqu %xmm0, (%rsi,%rax)
    ret

    /* veil_aesni_encrypt_block(keys rdi, rounds rsi, block rdx): in place. */
    .globl veil_aesni_encrypt_block
veil_aesni_encrypt_block:
    movdqu (%rdx), %xmm0
    movdqu (%rdi), %xmm1
    pxor %xmm1, %xmm0
    lea 16(%rdi), %r9
    mov %rsi, %r10
    dec %r10
1:  movdqu (%r9), %xmm1
    aesenc %xmm1, %xmm0
    add $16, %r9
    dec %r10
    jnz 1b
    movdqu (%r9), %xmm1
    aesenclast %xmm1, %xmm0
    movdqu %xmm0, (%rdx)
    ret

    /* T = T * alpha in GF(2^128), little-endian (xmm15 = T, xmm14 = mask, xmm9 scratch). */
    .macro VEIL_NEXT_TWEAK
    pshufd $0x13, %xmm15, %xmm9
    paddq %xmm15, %xmm15
    psrad $31, %xmm9
    pand %xmm14, %xmm9
    pxor %xmm9, %xmm15
    .endm

    /* Rounds 1..n of 8 blocks (xmm0-7) with round keys from r10: during rounds 1-8 the
     * next batch's 8 tweaks are stored at rax (xmm15 advancing); after the last round each
     * block is XORed with its tweak at r11 and stored. xmm8, xmm9 scratch. */
    .macro VEIL_AESNI_ROUNDS8 op, oplast, n
    .irp r, 1,2,3,4,5,6,7,8,9,10,11,12,13
    .if \r < \n
    movdqu 16*\r(%r10), %xmm8
    .irp i, 0,1,2,3,4,5,6,7
    \op %xmm8, %xmm\i
    .endr
    .if \r <= 8
    movdqa %xmm15, 16*(\r-1)(%rax)
    VEIL_NEXT_TWEAK
    .endif
    .endif
    .endr
    movdqu 16*\n(%r10), %xmm8
    .irp i, 0,1,2,3,4,5,6,7
    \oplast %xmm8, %xmm\i
    pxor 16*\i(%r11), %xmm\i
    movdqu %xmm\i, 16*\i(%rdx)
    .endr
    .endm

    /* The XEX loop for `op` (aesenc/aesdec):
     * keys rdi, rounds rsi, data rdx, nblocks rcx, tweak r8 (in/out). */
    .macro VEIL_XTS op, oplast
    push %rbp
    mov %rsp, %rbp
    sub $256, %rsp
    and $-16, %rsp          /* two batches of 8 tweaks: 16 xmm registers are too few */
    movdqu (%r8), %xmm15
    movdqa veil_aesni_gf128mul_mask(%rip), %xmm14
    cmp $8, %rcx
    jb 10f
    .irp i, 0,1,2,3,4,5,6,7
    movdqa %xmm15, 16*\i(%rsp)
    VEIL_NEXT_TWEAK
    .endr
    /* 8 blocks per iteration, the rounds unrolled; the next batch's tweaks are computed
     * during rounds 1-8 into the other half of the stack area (r11 = this batch's tweaks,
     * rax = the next batch's; swapped after each batch). */
    mov %rsp, %r11
    lea 128(%rsp), %rax
62: movdqu (%rdi), %xmm8
    .irp i, 0,1,2,3,4,5,6,7
    movdqu 16*\i(%rdx), %xmm\i
    pxor 16*\i(%r11), %xmm\i
    pxor %xmm8, %xmm\i
    .endr
    /* AES-256 runs its first 4 rounds here, then the last 10 as AES-128 does (one copy
     * of the unrolled rounds, for the firmware's ROM). */
    mov %rdi, %r10
    cmp $10, %rsi
    je 64f
    .irp r, 1,2,3,4
    movdqu 16*\r(%rdi), %xmm8
    .irp i, 0,1,2,3,4,5,6,7
    \op %xmm8, %xmm\i
    .endr
    .endr
    add $64, %r10
64: VEIL_AESNI_ROUNDS8 \op, \oplast, 10
    mov %r11, %r9
    mov %rax, %r11
    mov %r9, %rax
    add $128, %rdx
    sub $8, %rcx
    cmp $8, %rcx
    jae 62b
    /* The batch computed ahead was not used: continue from its first tweak. */
    movdqa (%r11), %xmm15
10: cmp $4, %rcx
    jb 20f
    movdqa %xmm15, %xmm4
    VEIL_NEXT_TWEAK
    movdqa %xmm15, %xmm5
    VEIL_NEXT_TWEAK
    movdqa %xmm15, %xmm6
    VEIL_NEXT_TWEAK
    movdqa %xmm15, %xmm7
    VEIL_NEXT_TWEAK
    movdqu (%rdx), %xmm0
    movdqu 16(%rdx), %xmm1
    movdqu 32(%rdx), %xmm2
    movdqu 48(%rdx), %xmm3
    pxor %xmm4, %xmm0
    pxor %xmm5, %xmm1
    pxor %xmm6, %xmm2
    pxor %xmm7, %xmm3
    movdqu (%rdi), %xmm8
    pxor %xmm8, %xmm0
    pxor %xmm8, %xmm1
    pxor %xmm8, %xmm2
    pxor %xmm8, %xmm3
    lea 16(%rdi), %r9
    mov %rsi, %r10
    dec %r10
11: movdqu (%r9), %xmm8
    \op %xmm8, %xmm0
    \op %xmm8, %xmm1
    \op %xmm8, %xmm2
    \op %xmm8, %xmm3
    add $16, %r9
    dec %r10
    jnz 11b
    movdqu (%r9), %xmm8
    \oplast %xmm8, %xmm0
    \oplast %xmm8, %xmm1
    \oplast %xmm8, %xmm2
    \oplast %xmm8, %xmm3
    pxor %xmm4, %xmm0
    pxor %xmm5, %xmm1
    pxor %xmm6, %xmm2
    pxor %xmm7, %xmm3
    movdqu %xmm0, (%rdx)
    movdqu %xmm1, 16(%rdx)
    movdqu %xmm2, 32(%rdx)
    movdqu %xmm3, 48(%rdx)
    add $64, %rdx
    sub $4, %rcx
    jmp 10b
20: test %rcx, %rcx
    jz 30f
    movdqa %xmm15, %xmm4
    VEIL_NEXT_TWEAK
    movdqu (%rdx), %xmm0
    pxor %xmm4, %xmm0
    movdqu (%rdi), %xmm8
    pxor %xmm8, %xmm0
    lea 16(%rdi), %r9
    mov %rsi, %r10
    dec %r10
21: movdqu (%r9), %xmm8
    \op %xmm8, %xmm0
    add $16, %r9
    dec %r10
    jnz 21b
    movdqu (%r9), %xmm8
    \oplast %xmm8, %xmm0
    pxor %xmm4, %xmm0
    movdqu %xmm0, (%rdx)
    add $16, %rdx
    dec %rcx
    jmp 20b
30: movdqu %xmm15, (%r8)
    mov %rbp, %rsp
    pop %rbp
    ret
    .endm

    .globl veil_aesni_xts_encrypt
veil_aesni_xts_encrypt:
    VEIL_XTS aesenc, aesenclast

    .globl veil_aesni_xts_decrypt
veil_aesni_xts_decrypt:
    VEIL_XTS aesdec, aesdeclast

    /* ---------------- VAES: 2 blocks per ymm (AVX2) or 4 per zmm (AVX-512) ---------------- */

    /* Lane-wise T = T * alpha on a vector of tweaks (\t scratch, \m mask). */
    .macro VEIL_DOUBLE reg, t, m, and, xor
    vpshufd $0x13, \reg, \t
    vpaddq \reg, \reg, \reg
    vpsrad $31, \t, \t
    \and \m, \t, \t
    \xor \t, \reg, \reg
    .endm

    /* One block with a VEX xmm tweak in xmm15, for the tails (xmm9 scratch, xmm14 mask). */
    .macro VEIL_VEX_TAIL op, oplast
40: test %rcx, %rcx
    jz 50f
    vmovdqa %xmm15, %xmm4
    VEIL_DOUBLE %xmm15, %xmm9, %xmm14, vpand, vpxor
    vmovdqu (%rdx), %xmm0
    vpxor %xmm4, %xmm0, %xmm0
    vmovdqu (%rdi), %xmm8
    vpxor %xmm8, %xmm0, %xmm0
    lea 16(%rdi), %r9
    mov %rsi, %r10
    dec %r10
41: vmovdqu (%r9), %xmm8
    \op %xmm8, %xmm0, %xmm0
    add $16, %r9
    dec %r10
    jnz 41b
    vmovdqu (%r9), %xmm8
    \oplast %xmm8, %xmm0, %xmm0
    vpxor %xmm4, %xmm0, %xmm0
    vmovdqu %xmm0, (%rdx)
    add $16, %rdx
    dec %rcx
    jmp 40b
50: vmovdqu %xmm15, (%r8)
    vzeroupper
    ret
    .endm

    .macro VEIL_VAES256 op, oplast
    vmovdqu (%r8), %xmm15
    vbroadcasti128 veil_aesni_gf128mul_mask(%rip), %ymm14
    vmovdqa %xmm15, %xmm10
    VEIL_DOUBLE %xmm10, %xmm9, %xmm14, vpand, vpxor
    vinserti128 $1, %xmm10, %ymm15, %ymm15          /* ymm15 = [T0, T1] */
10: cmp $8, %rcx
    jb 40f
    vmovdqa %ymm15, %ymm4
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    vmovdqa %ymm15, %ymm5
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    vmovdqa %ymm15, %ymm6
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    vmovdqa %ymm15, %ymm7
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    VEIL_DOUBLE %ymm15, %ymm9, %ymm14, vpand, vpxor
    vpxor (%rdx), %ymm4, %ymm0
    vpxor 32(%rdx), %ymm5, %ymm1
    vpxor 64(%rdx), %ymm6, %ymm2
    vpxor 96(%rdx), %ymm7, %ymm3
    vbroadcasti128 (%rdi), %ymm8
    vpxor %ymm8, %ymm0, %ymm0
    vpxor %ymm8, %ymm1, %ymm1
    vpxor %ymm8, %ymm2, %ymm2
    vpxor %ymm8, %ymm3, %ymm3
    lea 16(%rdi), %r9
    mov %rsi, %r10
    dec %r10
11: vbroadcasti128 (%r9), %ymm8
    \op %ymm8, %ymm0, %ymm0
    \op %ymm8, %ymm1, %ymm1
    \op %ymm8, %ymm2, %ymm2
    \op %ymm8, %ymm3, %ymm3
    add $16, %r9
    dec %r10
    jnz 11b
    vbroadcasti128 (%r9), %ymm8
    \oplast %ymm8, %ymm0, %ymm0
    \oplast %ymm8, %ymm1, %ymm1
    \oplast %ymm8, %ymm2, %ymm2
    \oplast %ymm8, %ymm3, %ymm3
    vpxor %ymm4, %ymm0, %ymm0
    vpxor %ymm5, %ymm1, %ymm1
    vpxor %ymm6, %ymm2, %ymm2
    vpxor %ymm7, %ymm3, %ymm3
    vmovdqu %ymm0, (%rdx)
    vmovdqu %ymm1, 32(%rdx)
    vmovdqu %ymm2, 64(%rdx)
    vmovdqu %ymm3, 96(%rdx)
    add $128, %rdx
    sub $8, %rcx
    jmp 10b
    VEIL_VEX_TAIL \op, \oplast
    .endm

    /* \m i, i + 8 for the 8 (data, tweak) register pairs of VEIL_VAES512_SECTORS. */
    .macro VEIL_PAIRS8 m
    \m 0, 8
    \m 1, 9
    \m 2, 10
    \m 3, 11
    \m 4, 12
    \m 5, 13
    \m 6, 14
    \m 7, 15
    .endm
    .macro VEIL_S_LOAD i, t
    vmovdqu64 64*\i(%rdx), %zmm\i
    .endm
    .macro VEIL_S_WHITEN i, t
    vpternlogq $0x96, %zmm\t, %zmm16, %zmm\i
    .endm
    /* The last XOR with the iteration's tweak, kept on the stack (its register has advanced). */
    .macro VEIL_S_STORE i, t
    vpxorq 64*\i(%rsp), %zmm\i, %zmm\i
    vmovdqu64 %zmm\i, 64*\i(%rdx)
    .endm
    .macro VEIL_S_SPILL i, t
    vmovdqa64 %zmm\t, 64*\i(%rsp)
    .endm
    /* Tweak vector zmm\t advances by alpha^32 for the next iteration, during this one's
     * rounds: each lane shifted left by 4 bytes, its top 32 bits times 0x87 folded back
     * (zmm31 scratch). */
    .macro VEIL_S_ADVANCE t
    vpsrldq $12, %zmm\t, %zmm31
    vpclmulqdq $0x00, 512(%rsp), %zmm31, %zmm31
    vpslldq $4, %zmm\t, %zmm\t
    vpxorq %zmm31, %zmm\t, %zmm\t
    .endm

    /* zmm\dst = zmm\src * alpha^k per lane (0 < k < 64; zmm1, zmm2 scratch; 0x87 at 512(%rsp)). */
    .macro VEIL_S_MULK dst, src, k
    vpsllq $\k, %zmm\src, %zmm\dst
    vpsrlq $64-\k, %zmm\src, %zmm2
    vpclmulqdq $0x01, 512(%rsp), %zmm2, %zmm1
    vpslldq $8, %zmm2, %zmm2
    vpternlogq $0x96, %zmm1, %zmm2, %zmm\dst
    .endm

    /* One round on the 32 blocks of zmm0-7 with the round key zmm\k. */
    .macro VEIL_ROUND32 op, k
    .irp i, 0,1,2,3,4,5,6,7
    \op %zmm\k, %zmm\i, %zmm\i
    .endr
    .endm

    /* Whole sectors, 32 blocks (8 zmm: two per cycle on VAES's two ports, each 4 cycles
     * deep) per iteration: data keys rdi, tweak keys rsi (encryption schedule), data rdx,
     * nsectors rcx, first plain64 IV r8, rounds r9, blocks per sector at 8(%rsp) (a multiple
     * of 32; the IV advances by blocks / 32 per sector, dm-crypt's 512-byte units). The next
     * sector's T0 = AES-Enc(key2, IV) is computed while this sector's blocks run, and its 8
     * tweak vectors are made from it without a serial chain, so little sits between sectors.
     * zmm0-7 data, zmm8-15 the tweaks of the 32 blocks (advanced during the rounds; the
     * iteration's own are spilled to the stack for the last XOR), zmm16 key 0, zmm17-20
     * keys 1-4 (AES-256 only), zmm21-30 the last 10 keys, zmm31 scratch. Stack (64-byte
     * aligned): 0-511 the spilled tweaks, 512 0x87 per lane, 576 the next T0. */
    .macro VEIL_VAES512_SECTORS op, oplast
    test %rcx, %rcx
    jz 19f
    mov 8(%rsp), %r10
    shr $5, %r10                      /* iterations per sector = IV step */
    push %rbp
    mov %rsp, %rbp
    sub $640, %rsp
    and $-64, %rsp                    /* 8 tweak vectors, 0x87 per lane, the next T0 */
    vbroadcasti32x4 veil_aesni_gf128mul_mask(%rip), %zmm0
    vmovdqa64 %zmm0, 512(%rsp)
    vbroadcasti32x4 (%rdi), %zmm16
    cmp $10, %r9
    je 1f
    vbroadcasti32x4 16(%rdi), %zmm17
    vbroadcasti32x4 32(%rdi), %zmm18
    vbroadcasti32x4 48(%rdi), %zmm19
    vbroadcasti32x4 64(%rdi), %zmm20
    add $64, %rdi
1:  vbroadcasti32x4 16(%rdi), %zmm21
    vbroadcasti32x4 32(%rdi), %zmm22
    vbroadcasti32x4 48(%rdi), %zmm23
    vbroadcasti32x4 64(%rdi), %zmm24
    vbroadcasti32x4 80(%rdi), %zmm25
    vbroadcasti32x4 96(%rdi), %zmm26
    vbroadcasti32x4 112(%rdi), %zmm27
    vbroadcasti32x4 128(%rdi), %zmm28
    vbroadcasti32x4 144(%rdi), %zmm29
    vbroadcasti32x4 160(%rdi), %zmm30
    xor %edi, %edi                    /* 0 until the first sector's tweaks are made */
    /* xmm31 = AES-Enc(key2, plain64(r8)); r8 advances to the next sector. */
11: vmovq %r8, %xmm31
    vpxorq (%rsi), %xmm31, %xmm31
    lea 16(%rsi), %rax
    lea -1(%r9), %r11
2:  vaesenc (%rax), %xmm31, %xmm31
    add $16, %rax
    dec %r11
    jnz 2b
    vaesenclast (%rax), %xmm31, %xmm31
    vmovdqa64 %xmm31, 576(%rsp)       /* zmm31 is the rounds' scratch from here */
    add %r10, %r8
    test %edi, %edi
    jnz 13f
    inc %edi
    /* This sector's tweak vectors from its T0, straight into zmm8-15 with no serial chain:
     * V0 = [T0, T0 a, T0 a^2, T0 a^3] by per-qword shift counts, then Vj = V0 * a^4j for
     * j = 1..7, each from V0. X * a^k = (X << k) ^ 0x87 * (X >> (128 - k)), k < 64, per lane:
     * qword shifts, the high qword's overflow through a carry-less multiply, the low one's
     * moved up a qword. */
10: vbroadcasti32x4 576(%rsp), %zmm0
    mov $0x0303020201010000, %rax
    vmovq %rax, %xmm4
    vpmovzxbq %xmm4, %zmm4            /* k = 0,0,1,1,2,2,3,3 per qword */
    mov $64, %eax
    vpbroadcastq %rax, %zmm5
    vpsubq %zmm4, %zmm5, %zmm5        /* 64 - k */
    vpsllvq %zmm4, %zmm0, %zmm8
    vpsrlvq %zmm5, %zmm0, %zmm2
    vpclmulqdq $0x01, 512(%rsp), %zmm2, %zmm1
    vpslldq $8, %zmm2, %zmm2
    vpternlogq $0x96, %zmm1, %zmm2, %zmm8
    VEIL_S_MULK 9, 8, 4
    VEIL_S_MULK 10, 8, 8
    VEIL_S_MULK 11, 8, 12
    VEIL_S_MULK 12, 8, 16
    VEIL_S_MULK 13, 8, 20
    VEIL_S_MULK 14, 8, 24
    VEIL_S_MULK 15, 8, 28
    jmp 11b
13: mov %r10, %rax
14: VEIL_PAIRS8 VEIL_S_LOAD
    VEIL_PAIRS8 VEIL_S_WHITEN
    VEIL_PAIRS8 VEIL_S_SPILL
    cmp $10, %r9
    je 15f
    .irp k, 17,18,19,20
    VEIL_ROUND32 \op, \k
    .endr
    /* The next iteration's tweaks are made early, one vector per round, so that its
     * first round need not wait for them. */
15: VEIL_ROUND32 \op, 21
    VEIL_S_ADVANCE 8
    VEIL_ROUND32 \op, 22
    VEIL_S_ADVANCE 9
    VEIL_ROUND32 \op, 23
    VEIL_S_ADVANCE 10
    VEIL_ROUND32 \op, 24
    VEIL_S_ADVANCE 11
    VEIL_ROUND32 \op, 25
    VEIL_S_ADVANCE 12
    VEIL_ROUND32 \op, 26
    VEIL_S_ADVANCE 13
    VEIL_ROUND32 \op, 27
    VEIL_S_ADVANCE 14
    VEIL_ROUND32 \op, 28
    VEIL_S_ADVANCE 15
    VEIL_ROUND32 \op, 29
    VEIL_ROUND32 \oplast, 30
    VEIL_PAIRS8 VEIL_S_STORE
    add $512, %rdx
    dec %rax
    jnz 14b
    dec %rcx
    jnz 10b
    /* Nothing of the key or the tweaks is left behind: the stack area zeroed, zmm16-31 (the
       round keys; VZEROUPPER leaves them) cleared by 128-bit writes, which zero the rest. */
    vpxord %zmm0, %zmm0, %zmm0
    .irp i, 0,1,2,3,4,5,6,7,8,9
    vmovdqa64 %zmm0, 64*\i(%rsp)
    .endr
    .irp r, 16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    vpxord %xmm\r, %xmm\r, %xmm\r
    .endr
    vzeroupper
    mov %rbp, %rsp
    pop %rbp
19: ret
    .endm

    .globl veil_vaes256_xts_encrypt
veil_vaes256_xts_encrypt:
    VEIL_VAES256 vaesenc, vaesenclast
    .globl veil_vaes256_xts_decrypt
veil_vaes256_xts_decrypt:
    VEIL_VAES256 vaesdec, vaesdeclast
    .globl veil_vaes512_xts_encrypt_sectors
veil_vaes512_xts_encrypt_sectors:
    VEIL_VAES512_SECTORS vaesenc, vaesenclast
    .globl veil_vaes512_xts_decrypt_sectors
veil_vaes512_xts_decrypt_sectors:
    VEIL_VAES512_SECTORS vaesdec, vaesdeclast
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn veil_aesni_expand_128(key: *const u8, enc: *mut u8);
    fn veil_aesni_expand_256(key: *const u8, enc: *mut u8);
    fn veil_aesni_inverse_keys(enc: *const u8, dec: *mut u8, rounds: u64);
    fn veil_aesni_encrypt_block(keys: *const u8, rounds: u64, block: *mut u8);
    fn veil_aesni_xts_encrypt(keys: *const u8, rounds: u64, data: *mut u8, nblocks: u64, tweak: *mut u8);
    fn veil_aesni_xts_decrypt(keys: *const u8, rounds: u64, data: *mut u8, nblocks: u64, tweak: *mut u8);
    fn veil_vaes256_xts_encrypt(keys: *const u8, rounds: u64, data: *mut u8, nblocks: u64, tweak: *mut u8);
    fn veil_vaes256_xts_decrypt(keys: *const u8, rounds: u64, data: *mut u8, nblocks: u64, tweak: *mut u8);
    fn veil_vaes512_xts_encrypt_sectors(
        keys: *const u8,
        tweak_keys: *const u8,
        data: *mut u8,
        nsectors: u64,
        first_iv: u64,
        rounds: u64,
        sector_blocks: u64,
    );
    fn veil_vaes512_xts_decrypt_sectors(
        keys: *const u8,
        tweak_keys: *const u8,
        data: *mut u8,
        nsectors: u64,
        first_iv: u64,
        rounds: u64,
        sector_blocks: u64,
    );
}

/// XCR0 as the firmware set it (no_std builds cannot ask the OS; XGETBV is also missing from
/// some nested hypervisors' emulators). 0 until `set_xcr0` is called.
static FIRMWARE_XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Tell the XTS backends which vector state the firmware enabled (its XCR0).
pub fn set_xcr0(xcr0: u64) {
    FIRMWARE_XCR0.store(xcr0, core::sync::atomic::Ordering::Relaxed);
}

fn xcr0() -> u64 {
    #[cfg(feature = "std")]
    {
        // A hosted OS enables XSAVE state; OSXSAVE (CPUID.1:ECX bit 27) says XGETBV may run.
        if core::arch::x86_64::__cpuid(1).ecx & (1 << 27) != 0 {
            let (lo, hi): (u32, u32);
            // SAFETY: XGETBV with ECX = 0 reads XCR0; allowed because OSXSAVE is set.
            unsafe {
                core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
            };
            return (u64::from(hi) << 32) | u64::from(lo);
        }
        0
    }
    #[cfg(not(feature = "std"))]
    FIRMWARE_XCR0.load(core::sync::atomic::Ordering::Relaxed)
}

/// Which VAES widths this CPU and its enabled vector state allow: (256-bit, 512-bit).
pub fn vaes_available() -> (bool, bool) {
    if core::arch::x86_64::__cpuid(0).eax < 7 || !available() {
        return (false, false);
    }
    let l7 = core::arch::x86_64::__cpuid_count(7, 0);
    let x = xcr0();
    let vaes = l7.ecx & (1 << 9) != 0;
    let ymm = x & 0b110 == 0b110 && l7.ebx & (1 << 5) != 0; // AVX2
    let zmm = ymm
        && x & 0b1110_0000 == 0b1110_0000
        && l7.ebx & (1 << 16) != 0
        && l7.ebx & (1 << 17) != 0
        && l7.ebx & (1 << 30) != 0
        && l7.ebx & (1 << 31) != 0
        && l7.ecx & (1 << 10) != 0; // F, DQ, BW, VL, VPCLMULQDQ
    (vaes && ymm, vaes && zmm)
}

/// Does this CPU have AES-NI (and may it be used: SSE state enabled)?
pub fn available() -> bool {
    let l1 = core::arch::x86_64::__cpuid(1);
    // AES-NI (ECX bit 25) and SSE2 (EDX bit 26); the firmware enables the SSE state before
    // any cipher is built (kernel/src/arch/vector.rs), a hosted OS always has.
    l1.ecx & (1 << 25) != 0 && l1.edx & (1 << 26) != 0
}

/// Round keys for one AES key (encryption and the decryption schedule).
struct Schedule {
    enc: [u8; 15 * 16],
    dec: [u8; 15 * 16],
    rounds: u64,
}

impl Drop for Schedule {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.enc);
        zeroize::Zeroize::zeroize(&mut self.dec);
    }
}

impl Schedule {
    fn new(key: &[u8]) -> Self {
        let mut s = Schedule { enc: [0; 240], dec: [0; 240], rounds: if key.len() == 16 { 10 } else { 14 } };
        // SAFETY: `key` is 16 or 32 bytes (checked by the caller through check_key), the
        // schedules hold 15 round keys; AES-NI is present (checked by `available`).
        unsafe {
            if key.len() == 16 {
                veil_aesni_expand_128(key.as_ptr(), s.enc.as_mut_ptr());
            } else {
                veil_aesni_expand_256(key.as_ptr(), s.enc.as_mut_ptr());
            }
            veil_aesni_inverse_keys(s.enc.as_ptr(), s.dec.as_mut_ptr(), s.rounds);
        }
        s
    }
}

/// Which instructions drive the bulk blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// AES-NI on xmm registers, 8 blocks interleaved.
    AesNi,
    /// VAES on ymm registers (AVX2), 8 blocks per iteration.
    Vaes256,
    /// VAES on zmm registers (AVX-512), 32 blocks per iteration over whole sectors.
    Vaes512,
}

/// XTS-AES-128/256 on AES-NI or VAES (the tweak and the tails always use AES-NI forms).
pub struct AesNiXts {
    data: Schedule,
    tweak: Schedule,
    width: Width,
}

impl AesNiXts {
    /// Key from `key1 || key2` for `width`; None if the CPU cannot run that width.
    pub fn new(key: &[u8], width: Width) -> Result<Option<Self>, XtsError> {
        let half = check_key(key)?;
        let (v256, v512) = vaes_available();
        let ok = match width {
            Width::AesNi => available(),
            Width::Vaes256 => v256,
            Width::Vaes512 => v512,
        };
        if !ok {
            return Ok(None);
        }
        Ok(Some(AesNiXts { data: Schedule::new(&key[..half]), tweak: Schedule::new(&key[half..]), width }))
    }
}

impl XtsBackend for AesNiXts {
    fn name(&self) -> &'static str {
        match self.width {
            Width::AesNi => "aesni",
            Width::Vaes256 => "vaes256",
            Width::Vaes512 => "vaes512",
        }
    }

    fn encrypt_tweak(&self, iv: &[u8; BLOCK]) -> [u8; BLOCK] {
        let mut block = *iv;
        // SAFETY: a 16-byte block and a full key schedule.
        unsafe { veil_aesni_encrypt_block(self.tweak.enc.as_ptr(), self.tweak.rounds, block.as_mut_ptr()) };
        block
    }

    fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        let n = (data.len() / BLOCK) as u64;
        let f = match self.width {
            Width::AesNi => veil_aesni_xts_encrypt,
            Width::Vaes256 => veil_vaes256_xts_encrypt,
            // Whole sectors take the VAES-512 path (`encrypt_sectors`); what comes here (data
            // units of other shapes, the published vectors' API) runs on the AES-NI code,
            // which every VAES CPU has, to keep the firmware's ROM small.
            Width::Vaes512 => veil_aesni_xts_encrypt,
        };
        // SAFETY: the routine reads and writes exactly n whole blocks of `data` and the
        // 16-byte tweak; any partial trailing bytes (none from the safe wrappers) are left;
        // the CPU and its enabled state support the width (checked in `new`).
        unsafe { f(self.data.enc.as_ptr(), self.data.rounds, data.as_mut_ptr(), n, tweak.as_mut_ptr()) };
    }

    fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        let n = (data.len() / BLOCK) as u64;
        let f = match self.width {
            Width::AesNi => veil_aesni_xts_decrypt,
            Width::Vaes256 => veil_vaes256_xts_decrypt,
            Width::Vaes512 => veil_aesni_xts_decrypt,
        };
        // SAFETY: as for encrypt_blocks, with the decryption schedule.
        unsafe { f(self.data.dec.as_ptr(), self.data.rounds, data.as_mut_ptr(), n, tweak.as_mut_ptr()) };
    }

    fn encrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        if !self.vaes512_sectors(data, sector_size, first_iv, iv_step, true) {
            let mut iv = first_iv;
            for sector in data.chunks_exact_mut(sector_size) {
                let mut tweak = self.encrypt_tweak(&super::plain64_iv(iv));
                self.encrypt_blocks(sector, &mut tweak);
                iv = iv.wrapping_add(iv_step);
            }
        }
    }

    fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        if !self.vaes512_sectors(data, sector_size, first_iv, iv_step, false) {
            let mut iv = first_iv;
            for sector in data.chunks_exact_mut(sector_size) {
                let mut tweak = self.encrypt_tweak(&super::plain64_iv(iv));
                self.decrypt_blocks(sector, &mut tweak);
                iv = iv.wrapping_add(iv_step);
            }
        }
    }
}

impl AesNiXts {
    /// The multi-sector VAES-512 path: every whole sector of `data` in one call, when the
    /// sectors are whole 512-byte units and the IV advances by one per unit (dm-crypt's
    /// plain64, as [`super::SectorCipher`] calls it). False (nothing done) otherwise.
    fn vaes512_sectors(&self, data: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64, encrypt: bool) -> bool {
        if self.width != Width::Vaes512
            || sector_size == 0
            || !sector_size.is_multiple_of(512)
            || iv_step != (sector_size / 512) as u64
        {
            return false;
        }
        let n = (data.len() / sector_size) as u64;
        let (f, keys) = if encrypt {
            (veil_vaes512_xts_encrypt_sectors as unsafe extern "C" fn(_, _, _, _, _, _, _), &self.data.enc)
        } else {
            (veil_vaes512_xts_decrypt_sectors as unsafe extern "C" fn(_, _, _, _, _, _, _), &self.data.dec)
        };
        // SAFETY: the routine reads and writes exactly n whole sectors of `data` (n *
        // sector_size <= data.len(), sector_size a multiple of 512 bytes = 32 blocks) and
        // reads the two 15-key schedules; the CPU and its enabled state run VAES-512
        // (checked in `new`).
        unsafe {
            f(
                keys.as_ptr(),
                self.tweak.enc.as_ptr(),
                data.as_mut_ptr(),
                n,
                first_iv,
                self.data.rounds,
                (sector_size / BLOCK) as u64,
            )
        };
        true
    }
}

//! XTS-AES with AES-NI: hand-written assembly behind a C-ABI, as the Linux kernel's
//! arch/x86/crypto does it, because on x86_64-unknown-none the RustCrypto crates cannot use
//! AES-NI (their detection is off there and `target_feature(enable = "aes")` on that
//! soft-float target crashes LLVM). Four blocks are processed interleaved, the tweak is
//! multiplied by α in registers, and the routines touch only what the safe wrapper below
//! hands them: pointers to checked, whole-block buffers and lengths in blocks.
//!
//! Register contract (System V): arguments in rdi, rsi, rdx, rcx, r8; the routines clobber
//! rax, r9, r10, r11, xmm0-xmm15 and the flags, all caller-saved; no stack use beyond the
//! return address; no memory other than the arguments' buffers and a read-only constant.

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

    /* The XEX loop for `op` (aesenc/aesdec):
     * keys rdi, rounds rsi, data rdx, nblocks rcx, tweak r8 (in/out). */
    .macro VEIL_XTS op, oplast
    movdqu (%r8), %xmm15
    movdqa veil_aesni_gf128mul_mask(%rip), %xmm14
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
    ret
    .endm

    .globl veil_aesni_xts_encrypt
veil_aesni_xts_encrypt:
    VEIL_XTS aesenc, aesenclast

    .globl veil_aesni_xts_decrypt
veil_aesni_xts_decrypt:
    VEIL_XTS aesdec, aesdeclast
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
}

/// Does this CPU have AES-NI (and may it be used: SSE state enabled)?
pub fn available() -> bool {
    let l1 = core::arch::x86_64::__cpuid(1);
    // AES-NI (ECX bit 25) and SSE2 (EDX bit 26); the firmware enables the SSE state before
    // any cipher is built (kernel/src/vector.rs), a hosted OS always has.
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

/// XTS-AES-128/256 on AES-NI.
pub struct AesNiXts {
    data: Schedule,
    tweak: Schedule,
}

impl AesNiXts {
    /// Key from `key1 || key2`; None if the CPU has no AES-NI.
    pub fn new(key: &[u8]) -> Result<Option<Self>, XtsError> {
        let half = check_key(key)?;
        if !available() {
            return Ok(None);
        }
        Ok(Some(AesNiXts { data: Schedule::new(&key[..half]), tweak: Schedule::new(&key[half..]) }))
    }
}

impl XtsBackend for AesNiXts {
    fn name(&self) -> &'static str {
        "aesni"
    }

    fn encrypt_tweak(&self, iv: &[u8; BLOCK]) -> [u8; BLOCK] {
        let mut block = *iv;
        // SAFETY: a 16-byte block and a full key schedule.
        unsafe { veil_aesni_encrypt_block(self.tweak.enc.as_ptr(), self.tweak.rounds, block.as_mut_ptr()) };
        block
    }

    fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        let n = (data.len() / BLOCK) as u64;
        // SAFETY: the routine reads and writes exactly n whole blocks of `data` and the
        // 16-byte tweak; any partial trailing bytes (none from the safe wrappers) are left.
        unsafe { veil_aesni_xts_encrypt(self.data.enc.as_ptr(), self.data.rounds, data.as_mut_ptr(), n, tweak.as_mut_ptr()) };
    }

    fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        let n = (data.len() / BLOCK) as u64;
        // SAFETY: as for encrypt_blocks, with the decryption schedule.
        unsafe { veil_aesni_xts_decrypt(self.data.dec.as_ptr(), self.data.rounds, data.as_mut_ptr(), n, tweak.as_mut_ptr()) };
    }
}

# A stand-in Linux kernel for `cargo xtask test disk` (issue 35, the register scrub): its 64-bit
# entry (load address + 0x200, the boot protocol's) saves every register the firmware hands
# over before touching any, prints them on COM1 as one line
#     veil-regdump: <hex of the save area>
# and exits QEMU through isa-debug-exit with 0x10 (exit code 33). tools/xtask/src/regdump.rs
# wraps it in a bzImage setup header and reads the line back.
#
# The save area (bytes, little-endian as stored):
#     0     rax rcx rdx rbx rsp rbp rsi rdi r8 ... r15    16 x 8
#     128   xmm0 ... xmm15                                16 x 16
#     384   ymm0 ... ymm15, bits 128-255                  16 x 16 (zero unless XCR0 has AVX)
#     640   zmm0 ... zmm15, bits 256-511                  16 x 32 (zero unless XCR0 has AVX-512)
#     1152  zmm16 ... zmm31                               16 x 64 (the same)
#     2176  XCR0 (zero when CR4.OSXSAVE is clear)         8
#     2184  end
    .intel_syntax noprefix
    .code64
    .text
entry:
    mov [rip + area + 0 * 8], rax
    mov [rip + area + 1 * 8], rcx
    mov [rip + area + 2 * 8], rdx
    mov [rip + area + 3 * 8], rbx
    mov [rip + area + 4 * 8], rsp
    mov [rip + area + 5 * 8], rbp
    mov [rip + area + 6 * 8], rsi
    mov [rip + area + 7 * 8], rdi
    mov [rip + area + 8 * 8], r8
    mov [rip + area + 9 * 8], r9
    mov [rip + area + 10 * 8], r10
    mov [rip + area + 11 * 8], r11
    mov [rip + area + 12 * 8], r12
    mov [rip + area + 13 * 8], r13
    mov [rip + area + 14 * 8], r14
    mov [rip + area + 15 * 8], r15
    movdqu [rip + area + 128 + 0 * 16], xmm0
    movdqu [rip + area + 128 + 1 * 16], xmm1
    movdqu [rip + area + 128 + 2 * 16], xmm2
    movdqu [rip + area + 128 + 3 * 16], xmm3
    movdqu [rip + area + 128 + 4 * 16], xmm4
    movdqu [rip + area + 128 + 5 * 16], xmm5
    movdqu [rip + area + 128 + 6 * 16], xmm6
    movdqu [rip + area + 128 + 7 * 16], xmm7
    movdqu [rip + area + 128 + 8 * 16], xmm8
    movdqu [rip + area + 128 + 9 * 16], xmm9
    movdqu [rip + area + 128 + 10 * 16], xmm10
    movdqu [rip + area + 128 + 11 * 16], xmm11
    movdqu [rip + area + 128 + 12 * 16], xmm12
    movdqu [rip + area + 128 + 13 * 16], xmm13
    movdqu [rip + area + 128 + 14 * 16], xmm14
    movdqu [rip + area + 128 + 15 * 16], xmm15
    lea rsp, [rip + stack_top]
    mov rax, cr4
    bt rax, 18                      # CR4.OSXSAVE: XGETBV allowed
    jnc print
    xor ecx, ecx
    xgetbv
    mov [rip + area + 2176], eax
    mov [rip + area + 2180], edx
    mov ebx, eax
    and ebx, 0x6
    cmp ebx, 0x6                    # SSE and AVX state on
    jne print
    vextractf128 [rip + area + 384 + 0 * 16], ymm0, 1
    vextractf128 [rip + area + 384 + 1 * 16], ymm1, 1
    vextractf128 [rip + area + 384 + 2 * 16], ymm2, 1
    vextractf128 [rip + area + 384 + 3 * 16], ymm3, 1
    vextractf128 [rip + area + 384 + 4 * 16], ymm4, 1
    vextractf128 [rip + area + 384 + 5 * 16], ymm5, 1
    vextractf128 [rip + area + 384 + 6 * 16], ymm6, 1
    vextractf128 [rip + area + 384 + 7 * 16], ymm7, 1
    vextractf128 [rip + area + 384 + 8 * 16], ymm8, 1
    vextractf128 [rip + area + 384 + 9 * 16], ymm9, 1
    vextractf128 [rip + area + 384 + 10 * 16], ymm10, 1
    vextractf128 [rip + area + 384 + 11 * 16], ymm11, 1
    vextractf128 [rip + area + 384 + 12 * 16], ymm12, 1
    vextractf128 [rip + area + 384 + 13 * 16], ymm13, 1
    vextractf128 [rip + area + 384 + 14 * 16], ymm14, 1
    vextractf128 [rip + area + 384 + 15 * 16], ymm15, 1
    and eax, 0xe0
    cmp eax, 0xe0                   # opmask, ZMM_Hi256 and Hi16_ZMM state on
    jne print
    vextracti64x4 [rip + area + 640 + 0 * 32], zmm0, 1
    vextracti64x4 [rip + area + 640 + 1 * 32], zmm1, 1
    vextracti64x4 [rip + area + 640 + 2 * 32], zmm2, 1
    vextracti64x4 [rip + area + 640 + 3 * 32], zmm3, 1
    vextracti64x4 [rip + area + 640 + 4 * 32], zmm4, 1
    vextracti64x4 [rip + area + 640 + 5 * 32], zmm5, 1
    vextracti64x4 [rip + area + 640 + 6 * 32], zmm6, 1
    vextracti64x4 [rip + area + 640 + 7 * 32], zmm7, 1
    vextracti64x4 [rip + area + 640 + 8 * 32], zmm8, 1
    vextracti64x4 [rip + area + 640 + 9 * 32], zmm9, 1
    vextracti64x4 [rip + area + 640 + 10 * 32], zmm10, 1
    vextracti64x4 [rip + area + 640 + 11 * 32], zmm11, 1
    vextracti64x4 [rip + area + 640 + 12 * 32], zmm12, 1
    vextracti64x4 [rip + area + 640 + 13 * 32], zmm13, 1
    vextracti64x4 [rip + area + 640 + 14 * 32], zmm14, 1
    vextracti64x4 [rip + area + 640 + 15 * 32], zmm15, 1
    vmovdqu64 [rip + area + 1152 + 0 * 64], zmm16
    vmovdqu64 [rip + area + 1152 + 1 * 64], zmm17
    vmovdqu64 [rip + area + 1152 + 2 * 64], zmm18
    vmovdqu64 [rip + area + 1152 + 3 * 64], zmm19
    vmovdqu64 [rip + area + 1152 + 4 * 64], zmm20
    vmovdqu64 [rip + area + 1152 + 5 * 64], zmm21
    vmovdqu64 [rip + area + 1152 + 6 * 64], zmm22
    vmovdqu64 [rip + area + 1152 + 7 * 64], zmm23
    vmovdqu64 [rip + area + 1152 + 8 * 64], zmm24
    vmovdqu64 [rip + area + 1152 + 9 * 64], zmm25
    vmovdqu64 [rip + area + 1152 + 10 * 64], zmm26
    vmovdqu64 [rip + area + 1152 + 11 * 64], zmm27
    vmovdqu64 [rip + area + 1152 + 12 * 64], zmm28
    vmovdqu64 [rip + area + 1152 + 13 * 64], zmm29
    vmovdqu64 [rip + area + 1152 + 14 * 64], zmm30
    vmovdqu64 [rip + area + 1152 + 15 * 64], zmm31
print:
    lea rsi, [rip + prefix]
    mov ecx, prefix_end - prefix
1:
    mov al, [rsi]
    call putc
    inc rsi
    dec ecx
    jnz 1b
    lea rsi, [rip + area]
    mov ecx, area_end - area
2:
    movzx ebx, byte ptr [rsi]
    mov eax, ebx
    shr eax, 4
    call hexdigit
    mov eax, ebx
    and eax, 0xf
    call hexdigit
    inc rsi
    dec ecx
    jnz 2b
    mov al, 10
    call putc
    mov dx, 0xf4                    # isa-debug-exit: QEMU exits with (0x10 << 1) | 1 = 33
    mov al, 0x10
    out dx, al
3:
    cli
    hlt
    jmp 3b

# Print the hex digit in al (0-15).
hexdigit:
    add al, '0'
    cmp al, '9'
    jbe putc
    add al, 'a' - '9' - 1
# Print al on COM1.
putc:
    mov dx, 0x3f8
    out dx, al
    ret

prefix:
    .ascii "veil-regdump: "
prefix_end:
    .balign 64
area:
    .skip 2184
area_end:
    .balign 16
    .skip 4096
stack_top:

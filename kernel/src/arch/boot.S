/*
 * veilboot ROM tail: the last 4 KiB of the ROM, run in place from 0xFFFFF000.
 *
 * Reset (16-bit real mode, CS base 0xFFFF0000, IP 0xFFF0) or TDX start (32-bit protected
 * mode, flat) -> reset_vector (valid in both modes) -> protected32: copy the payload from
 * ROM to RAM, zero .bss, build identity page tables in RAM -> long mode -> long64 -> Rust
 * veil_main. No CPUID, RDTSC or port I/O here: under SEV-ES/SNP those raise #VC before a
 * handler exists; Rust detects the platform first (kernel/src/platform) and then sets up
 * the rest (NX, vector state, console).
 *
 * The tail also carries what VMMs and measurement tools read from an OVMF-style ROM: the SEV
 * metadata ("ASEV"), the TDX metadata ("TDVF"), and the edk2 GUID footer table that ends at
 * 4 GiB - 0x20 (QEMU's pc_system_ovmf_table_find, sev-snp-measure).
 *
 * RAM layout constants must match kernel/src/arch/layout.rs.
 */

    .set PT_BASE,    0x800000          /* 8 pages of page tables */
    .set PML4,       PT_BASE
    .set PDPT,       PT_BASE + 0x1000
    .set PD0,        PT_BASE + 0x2000  /* PD0..PD3: 0-4 GiB in 2 MiB pages */
    .set PD3,        PT_BASE + 0x5000
    .set PT_LOW,     PT_BASE + 0x6000  /* 4 KiB pages for 0x800000-0x9FFFFF */
    .set PT_IMG,     PT_BASE + 0x7000  /* 4 KiB pages for the RAM image 0xA00000-0xBFFFFF */
    .set GUARD_PAGE, 0x810000          /* not present: under the boot stack */
    .set STACK_TOP,  0x821000
    .set CPUID_PAGE, 0x901000          /* SEV-SNP CPUID page (SEV metadata below) */
    .set AP_PARK,    0x82F000          /* TDX: where parked APs learn their long-mode CR3 */

    .section .rom_tail, "ax"
rom_tail_start:

/* ---------------- 16-bit: from the reset vector ---------------- */
    .code16
    .globl reset16
reset16:
    cli
    cld
    lgdtl %cs:(gdt32_desc - rom_tail_start + 0xF000)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    /* Straight to the flat code: the GDT is loaded already (and a second LGDT here trips
     * some nested hypervisors' emulators). EBP = 0: a reset, not a TDX start. */
    xorl %ebp, %ebp
    ljmpl $0x08, $protected32_cs

/* ---------------- 32-bit protected mode, paging off ---------------- */
    .code32
protected32:
    /* TDX enters here directly, every vCPU at once, ESI = the vCPU index: only vCPU 0 boots;
     * the others wait in tdx_ap_park for the ACPI multiprocessor wakeup mailbox. */
    testl %esi, %esi
    jnz tdx_ap_park
    /* Reload our GDT either way. EBP = 1: a TDX start (no SEV probe: its RDMSR would be a
     * #VE there). */
    movl $1, %ebp
    lgdtl gdt32_desc
    ljmpl $0x08, $protected32_cs
protected32_cs:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    /* Copy the payload (.text .rodata .data) from ROM to where it was linked to run, and
     * zero .bss, a dword at a time: both are 16-byte multiples (linker script), and an
     * emulator (TCG) runs REP MOVSB/STOSB one byte per iteration (~25 ms for the 600 KiB
     * payload). */
    movl $__payload_load, %esi
    movl $__payload_start, %edi
    movl $__payload_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    rep movsl
    xorl %eax, %eax
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    rep stosl
    /* Zero the page tables. */
    movl $PT_BASE, %edi
    movl $(8 * 0x1000 / 4), %ecx
    rep stosl

    /* SEV-SNP? Read SEV_STATUS, which raises no #VC (CPUID would, and there is no #VC handler
     * yet). Where the MSR does not exist (Intel, older AMD, TCG) RDMSR raises #GP: the only gate
     * of a temporary IDT resumes after the RDMSR with EAX = EDX = 0. Paging is off, so under
     * SNP every access here is private. */
    xorl %ebx, %ebx                    /* EBX: high half of the C-bit mask of every entry */
    testl %ebp, %ebp
    jnz 20f
    movl $STACK_TOP, %esp
    lidtl boot_idt_desc
    movl $0xC0010131, %ecx
    rdmsr                              /* 2 bytes: the #GP gate skips exactly these */
    movl %eax, VEIL_BOOT_SEV_STATUS
    movl %edx, VEIL_BOOT_SEV_STATUS + 4
    testl $4, %eax
    jz 20f
    /* SNP: the C-bit position is leaf 0x8000001F EBX[5:0] of the PSP-validated CPUID page
     * (count at +0, 48-byte entries from +16: leaf at +0, EBX out at +28). Rust checks the
     * same page and the hypervisor's answer again. */
    movl $CPUID_PAGE, %esi
    movl (%esi), %ecx
    cmpl $64, %ecx
    ja 19f
    leal 16(%esi), %edi
11: testl %ecx, %ecx
    jz 19f
    cmpl $0x8000001F, (%edi)
    je 12f
    addl $48, %edi
    decl %ecx
    jmp 11b
12: movl 28(%edi), %eax
    andl $0x3F, %eax
    cmpl $32, %eax
    jb 19f
    cmpl $51, %eax
    ja 19f
    movl %eax, VEIL_BOOT_CBIT
    leal -32(%eax), %ecx
    movl $1, %ebx
    shll %cl, %ebx
    jmp 20f
    /* No usable C-bit: terminate through the GHCB MSR protocol (veilboot reason set 7,
     * code 2: CPUID page), and stay stopped. */
19: movl $0xC0010130, %ecx
    movl $(0x100 | (7 << 12) | (2 << 16)), %eax
    xorl %edx, %edx
    wrmsr
    .byte 0xf3, 0x0f, 0x01, 0xd9       /* VMGEXIT */
    hlt
    jmp 19b
20:

    /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3. NX bits are added from Rust once CPUID may
     * be used (EFER.NXE is off until then, so they would be reserved bits now). */
    movl $(PDPT + 3), PML4
    movl %ebx, PML4 + 4
    movl $(PD0 + 3), PDPT
    movl %ebx, PDPT + 4
    movl $(PD0 + 0x1000 + 3), PDPT + 8
    movl %ebx, PDPT + 12
    movl $(PD0 + 0x2000 + 3), PDPT + 16
    movl %ebx, PDPT + 20
    movl $(PD0 + 0x3000 + 3), PDPT + 24
    movl %ebx, PDPT + 28
    /* 0-4 GiB identity map with 2 MiB pages, present + writable. */
    movl $PD0, %edi
    movl $0x83, %eax
    movl $2048, %ecx
1:  movl %eax, (%edi)
    movl %ebx, 4(%edi)                 /* the C-bit: everything private until Rust shares */
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b
    /* The ROM's top 2 MiB: present, read-only (this code runs there until long64). */
    movl $(0xFFE00000 + 0x81), PD3 + 511 * 8
    /* 0x800000-0x9FFFFF in 4 KiB pages: page tables, stacks, SNP pages; guard page absent. */
    movl $(PT_LOW + 3), PD0 + 4 * 8
    movl $PT_LOW, %edi
    movl $(0x800000 + 3), %eax
    movl $512, %ecx
2:  cmpl $(GUARD_PAGE + 3), %eax
    je 3f
    movl %eax, (%edi)
    movl %ebx, 4(%edi)
3:  addl $0x1000, %eax
    addl $8, %edi
    loop 2b
    /* The RAM image in 4 KiB pages: text read-only, the rest writable. */
    movl $(PT_IMG + 3), PD0 + 5 * 8
    movl $PT_IMG, %edi
    movl $0xA00000, %eax
    movl $512, %ecx
4:  movl %eax, %edx
    cmpl $__text_end, %eax
    jae 5f
    orl $1, %edx              /* text: present, read-only */
    jmp 6f
5:  cmpl $__rodata_end, %eax
    jae 7f
    orl $1, %edx              /* rodata: present, read-only */
    jmp 6f
7:  orl $3, %edx              /* data, bss, spare: present, writable */
6:  movl %edx, (%edi)
    movl %ebx, 4(%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop 4b

    /* Long mode: CR3, PAE, EFER.LME, paging + write protect. */
    movl $PML4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    /* EFER.LME, unless it is set already: a TD starts with it set and does not write EFER
     * (as OVMF's and Linux's TDX paths avoid it; the APs below do the same). */
    movl $0xC0000080, %ecx
    rdmsr
    btl $8, %eax
    jc 9f
    orl $0x100, %eax
    wrmsr
9:  movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    ljmpl $0x18, $long64

/* ---------------- 64-bit long mode ---------------- */
    .code64
long64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $STACK_TOP, %rsp
    xorl %ebp, %ebp
    movabsq $veil_main, %rax
    callq *%rax
8:  hlt
    jmp 8b

/* ---------------- boot GDT (accessed bits preset: the ROM is read-only) ---------------- */
    .p2align 3
gdt32:
    .quad 0
    .quad 0x00CF9B000000FFFF    /* 0x08: 32-bit code */
    .quad 0x00CF93000000FFFF    /* 0x10: data */
    .quad 0x00AF9B000000FFFF    /* 0x18: 64-bit code */
gdt32_end:
gdt32_desc:
    .word gdt32_end - gdt32 - 1
    .long gdt32

/* ---------------- TDX application processors: the wakeup mailbox ---------------- */
/* ESI = the vCPU index (the TDX start state), kept throughout. The APs wait in 32-bit mode
 * until the BSP publishes, at AP_PARK, the address of the ACPI multiprocessor wakeup mailbox
 * (+4) and then page tables that identity-map 0-4 GiB from memory Linux keeps (+0, CR3);
 * each AP enters long mode on them, says it arrived (+8, counted), and from then on touches
 * only the mailbox (ACPI NVS) and this ROM: when Linux writes command 1 (wakeup) with this
 * AP's APIC ID (= the vCPU index, as OVMF's loop takes it), the AP reads the wakeup vector,
 * acknowledges by clearing the command, and jumps there in long mode, interrupts off
 * (ACPI 6.4, 5.2.12.19). No HLT anywhere: it would raise #VE with no handler. */
    .code32
tdx_ap_park:
    lgdtl gdt32_desc
    ljmpl $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
2:  pause
    movl AP_PARK, %eax
    testl %eax, %eax
    jz 2b
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    btl $8, %eax
    jc 3f
    orl $0x100, %eax
    wrmsr
3:  movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    ljmpl $0x18, $tdx_ap_mailbox
    .code64
tdx_ap_mailbox:
    movl AP_PARK + 4, %ebx
    lock incl AP_PARK + 8
4:  pause
    cmpw $1, (%rbx)
    jne 4b
    cmpl %esi, 4(%rbx)
    jne 4b
    movq 8(%rbx), %rax
    movw $0, (%rbx)
    cli
    jmp *%rax
    .code32

/* ---------------- the #GP gate of the SEV_STATUS probe ---------------- */
boot_gp:
    xorl %eax, %eax
    xorl %edx, %edx
    addl $2, 4(%esp)                   /* EIP past the RDMSR (0(%esp) is the error code) */
    addl $4, %esp
    iretl

    .p2align 3
boot_idt:
    .fill 13, 8, 0                     /* vectors 0-12: not present */
    .word (boot_gp - rom_tail_start) + 0xF000, 0x08
    .byte 0, 0x8E
    .word 0xFFFF                       /* boot_gp is at 0xFFFFFxxx */
boot_idt_end:
boot_idt_desc:
    .word boot_idt_end - boot_idt - 1
    .long boot_idt

/* ---------------- SEV metadata (OvmfSevMetadata layout) ---------------- */
    .p2align 4
sev_metadata:
    .ascii "ASEV"
    .long sev_metadata_end - sev_metadata
    .long 1                                  /* version */
    .long (sev_metadata_end - sev_metadata - 16) / 12
    .long 0x800000, 0x100000, 1              /* SNP_SEC_MEM: page tables, stacks */
    .long 0xA00000, 0x200000, 1              /* SNP_SEC_MEM: the RAM image */
    .long 0x900000, 0x1000, 2                /* SNP_SECRETS */
    .long 0x901000, 0x1000, 3                /* CPUID page */
    .long 0x903000, 0x1000, 0x10             /* SNP_KERNEL_HASHES: the SEV hash table page */
sev_metadata_end:

/* ---------------- TDX metadata (TDVF descriptor) ---------------- */
    .p2align 4
tdx_metadata_guid:
    .byte 0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, 0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae
tdx_metadata:
    .ascii "TDVF"
    .long tdx_metadata_end - tdx_metadata
    .long 1                                  /* version */
    .long (tdx_metadata_end - tdx_metadata - 16) / 32
    /* BFV: the whole ROM, measured into MRTD (ROM_BASE, ROM_SIZE: linker/veilboot.ld) */
    .long 0, ROM_SIZE
    .quad ROM_BASE, ROM_SIZE
    .long 0, 1                               /* type BFV, attribute MR.EXTEND */
    /* TempMem: page tables and stacks */
    .long 0, 0
    .quad 0x800000, 0x100000
    .long 3, 0
    /* TempMem: the RAM image */
    .long 0, 0
    .quad 0xA00000, 0x200000
    .long 3, 0
    /* TD HOB */
    .long 0, 0
    .quad 0x902000, 0x1000
    .long 2, 0
tdx_metadata_end:

/* ---------------- GUID footer table, ending at 4 GiB - 0x20 ---------------- */
    .org 0xFE0 - 110
footer_table:
    /* TDX metadata offset (from the end of the ROM to the descriptor) */
    .long rom_tail_end - tdx_metadata
    .word 22
    .byte 0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2
    /* SEV metadata offset (from the end of the ROM) */
    .long rom_tail_end - sev_metadata
    .word 22
    .byte 0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc
    /* SEV hash table block (measured direct boot, kernel-hashes=on): GPA, size */
    .long 0x903000, 0x1000
    .word 26
    .byte 0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54
    /* SEV-ES reset block: where application processors start (CS base 0xFFFF0000) */
    .long reset16
    .word 22
    .byte 0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e
    /* footer: total table size, footer GUID */
    .word 110
    .byte 0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d
footer_end:
    .org 0xFE0

/* ---------------- reset vector: 4 GiB - 0x10, valid as 16-bit and as 32-bit code ---------------- */
    .org 0xFF0
    .globl reset_vector
reset_vector:
    .byte 0x0f, 0x20, 0xc0            /* mov %cr0, %eax        (same in both modes) */
    .byte 0xa8, 0x01                  /* test $1, %al: protected mode means a TDX start */
    .byte 0x75, 0x03                  /* jnz +3 -> the 32-bit jump */
    .byte 0xe9                        /* 16-bit: jmp rel16 to reset16 */
    .word reset16 - (. + 2)
    .byte 0xe9                        /* 32-bit: jmp rel32 to protected32 */
    .long protected32 - (. + 4)
    .org 0x1000
rom_tail_end:

    /* Back to .text: module-level asm that LTO concatenates after this file must not land
     * in the ROM tail. */
    .text

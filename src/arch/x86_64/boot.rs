//! PVH entry: QEMU (`-kernel`) finds the Xen ELF note below, enters
//! `pvh_start32` in 32-bit protected mode with paging off and EBX pointing at
//! `hvm_start_info`. The stub zeroes .bss, identity-maps the first GiB with
//! 2 MiB pages, enables long mode (and NX when the CPU has it) and calls
//! [`super::kernel_entry`] on the guarded boot stack.

use super::stacks::{BOOT_STACK, BOOT_STACK_SIZE};

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .p2align 2
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .long pvh_start32
    .p2align 2

    .section .bss.boot_tables, "aw", @nobits
    .p2align 12
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096

    .section .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov esi, ebx

    /* QEMU loads the image whatever -m says. Unless a RAM entry of the PVH
       memmap holds all of it (.bss and the boot stack included), say so on
       COM1 and exit through the debug-exit device: running on would hang. */
    cmp dword ptr [esi + 4], 0          /* version 0: no memmap */
    je .Limage_fits
    mov ecx, dword ptr [esi + 48]       /* memmap_entries */
    test ecx, ecx
    je .Limage_fits
    mov edi, dword ptr [esi + 40]       /* memmap_paddr */
.Lmemmap_entry:
    cmp dword ptr [edi + 16], 1         /* type RAM */
    jne .Lmemmap_next
    cmp dword ptr [edi + 4], 0          /* starts above 4 GiB */
    jne .Lmemmap_next
    cmp dword ptr [edi], offset __kernel_start
    ja .Lmemmap_next
    cmp dword ptr [edi + 12], 0         /* 4 GiB or more */
    jne .Limage_fits
    mov eax, dword ptr [edi]
    add eax, dword ptr [edi + 8]
    jc .Limage_fits
    cmp eax, offset __kernel_end
    jae .Limage_fits
.Lmemmap_next:
    add edi, 24
    dec ecx
    jnz .Lmemmap_entry
    mov esp, 0x9f000                    /* conventional memory, always RAM */
    mov edi, offset boot_too_small_1
    call boot_puts
    mov eax, offset __kernel_end
    add eax, {need_beyond_image} + 0xfffff - 0x9fc00  /* less the RAM below 640 KiB */
    shr eax, 20
    call boot_putu
    mov edi, offset boot_too_small_2
    call boot_puts
    mov dx, 0xf4
    mov eax, 0x11                       /* ExitCode::Failure */
    out dx, eax
.Lstop:
    hlt
    jmp .Lstop

/* edi: a NUL-terminated string, written to COM1 */
boot_puts:
    mov dx, 0x3f8
.Lputs_next:
    mov al, byte ptr [edi]
    test al, al
    jz .Lputs_done
    out dx, al
    inc edi
    jmp .Lputs_next
.Lputs_done:
    ret

/* eax: a number, written to COM1 in decimal */
boot_putu:
    mov ecx, 10
    xor ebx, ebx
.Lputu_divide:
    xor edx, edx
    div ecx
    add dl, 0x30
    push edx
    inc ebx
    test eax, eax
    jnz .Lputu_divide
    mov dx, 0x3f8
.Lputu_write:
    pop eax
    out dx, al
    dec ebx
    jnz .Lputu_write
    ret

boot_too_small_1:
    .asciz "kreclaim needs at least "
boot_too_small_2:
    .asciz " MiB of RAM: QEMU gave less than the kernel image takes (KRECLAIM_MEM, QEMU -m)\n"

.Limage_fits:

    /* zero .bss (QEMU does, but do not depend on the loader) */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    mov dword ptr [{start_info}], esi

    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD = 512 x 2 MiB identity */
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    xor ecx, ecx
.Lfill_pd:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jne .Lfill_pd

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20            /* PAE */
    mov cr4, eax

    /* EFER.LME, and EFER.NXE when CPUID 0x80000001 EDX bit 20 says NX exists */
    mov eax, 0x80000001
    cpuid
    xor edi, edi
    bt edx, 20
    jnc .Lno_nx
    mov edi, 0x800
.Lno_nx:
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    or eax, edi
    wrmsr

    mov eax, cr0
    or eax, 0x80010001      /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, 0x08
    push eax
    mov eax, offset pvh_start64
    push eax
    retf

    .code64
pvh_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + {stack} + {stack_size}]
    xor ebp, ebp
    mov edi, dword ptr [rip + {start_info}]
    call {entry}
2:
    cli
    hlt
    jmp 2b
"#,
    start_info = sym START_INFO_PADDR,
    stack = sym BOOT_STACK,
    stack_size = const BOOT_STACK_SIZE,
    entry = sym super::kernel_entry,
    need_beyond_image = const super::EARLY_HEAP_BYTES + crate::mm::page_alloc::MEM_MIN as usize,
);

/// Physical address of `hvm_start_info`, saved by the stub from EBX.
#[unsafe(no_mangle)]
static mut START_INFO_PADDR: u32 = 0;

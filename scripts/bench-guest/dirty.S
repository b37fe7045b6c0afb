/*
 * dirty.S: the tiny guest QEMU runs in the benchmark's live scenario.
 * A multiboot kernel (QEMU's -kernel starts it in 32-bit protected mode
 * with flat segments), so it needs no boot sector mode switching: it
 * increments one byte in every page of [WSS_BASE, WSS_BASE + WSS) forever,
 * the same store pattern as ferry's `sweep` workload.
 * Build: as --32 --defsym WSS=0x4000000 dirty.S -o dirty.o
 *        ld -m elf_i386 -Ttext 0x100000 -o dirty.elf dirty.o
 */
    .text
    .align 4
    .long 0x1BADB002            /* multiboot magic */
    .long 0                     /* flags */
    .long -0x1BADB002           /* checksum */

    .globl _start
_start:
    cli
1:  mov $0x1000000, %edi        /* WSS_BASE: 16 MiB, above the kernel */
2:  incb (%edi)
    add $4096, %edi
    cmp $(0x1000000 + WSS), %edi
    jb 2b
    jmp 1b

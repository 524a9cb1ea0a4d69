//! The bzImage setup header and QEMU's ACPI table-loader commands (both from the host).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = veil_agent::linux::SetupHeader::parse(data) {
        let _ = hdr.load_address(0x100_0000);
        let _ = hdr.kernel_range(0x100_0000, u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])));
        let _ = hdr.check_cmdline(b"console=ttyS0");
        let _ = hdr.check_initrd(0x800_0000, 0x100_0000);
        let _ = veil_agent::linux::boot_params(&hdr, &Default::default());
    }
    // The same bytes as a loader command list, linked against blobs cut from the input.
    if let Ok(cmds) = veil_agent::acpi_loader::parse(data) {
        let mut next = 0x1000u64;
        let _ = veil_agent::acpi_loader::link(
            &cmds,
            &mut |name| Some(data.iter().take(name.len() * 7).copied().collect()),
            &mut |len, align| {
                let a = next.div_ceil(u64::from(align)) * u64::from(align);
                next = a.checked_add(len as u64)?;
                Some(a)
            },
        );
    }
});

//! The TD HOB parser against a list written byte by byte from the specifications, not by the
//! project's own builder (`hob::build`, which shares the parser's reading of the layout; issue
//! 37). The list is the one QEMU writes for a TD (qemu/qemu `hw/i386/tdvf-hob.c`,
//! `tdvf_hob_create` at 98721058: a phase hand-off information table with version 9, boot mode
//! 0, the memory fields zero and EfiEndOfHobList the guest address just past the list; one
//! resource descriptor per RAM entry, unaccepted RAM as type 7, RAM QEMU added as system memory
//! type 0, owner GUID zero, attributes from its tdvf-hob.h (added RAM PRESENT | INITIALIZED |
//! ENCRYPTED | TESTED, ENCRYPTED = 0x04000000 as in edk2 and td-shim; unaccepted RAM PRESENT |
//! INITIALIZED | TESTED as in its first version: the firmware reads no attribute); an
//! end-of-list HOB; every HOB 8-byte aligned) in the structures of the UEFI PI specification
//! 1.8, volume 3, "HOB Code Definitions":
//!
//! * EFI_HOB_GENERIC_HEADER: UINT16 HobType, UINT16 HobLength, UINT32 Reserved (8 bytes);
//!   HobType 0x0001 EFI_HOB_TYPE_HANDOFF, 0x0003 EFI_HOB_TYPE_RESOURCE_DESCRIPTOR,
//!   0x0004 EFI_HOB_TYPE_GUID_EXTENSION, 0xFFFF EFI_HOB_TYPE_END_OF_HOB_LIST;
//! * EFI_HOB_HANDOFF_INFO_TABLE: header, UINT32 Version, EFI_BOOT_MODE (UINT32) BootMode, then
//!   EfiMemoryTop, EfiMemoryBottom, EfiFreeMemoryTop, EfiFreeMemoryBottom, EfiEndOfHobList
//!   (EFI_PHYSICAL_ADDRESS each): 56 bytes;
//! * EFI_HOB_RESOURCE_DESCRIPTOR: header, EFI_GUID Owner (16 bytes), UINT32 ResourceType,
//!   UINT32 ResourceAttribute, EFI_PHYSICAL_ADDRESS PhysicalStart, UINT64 ResourceLength: 48
//!   bytes; EFI_RESOURCE_SYSTEM_MEMORY 0, EFI_RESOURCE_MEMORY_UNACCEPTED 7;
//! * EFI_HOB_GUID_TYPE: header, EFI_GUID Name, then the data (the firmware skips it).
//!
//! Then the malformed variants a hostile VMM can write, each refused with its reason.

use veil_agent::tdx::hob::{self, HobError, Resource, ResourceKind};

/// Where QEMU puts the TD HOB in this example (TDVF metadata's TD_HOB section).
const HOB_GPA: u64 = 0x80_9000;
/// PRESENT | INITIALIZED | TESTED.
const ATTRIBUTES: u32 = 0x1 | 0x2 | 0x4;
/// ENCRYPTED (private TD memory).
const ENCRYPTED: u32 = 0x0400_0000;

/// The bytes of a list, appended field by field in specification order.
#[derive(Default, Clone)]
struct List(Vec<u8>);

impl List {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// EFI_HOB_HANDOFF_INFO_TABLE as QEMU fills it; `end_of_list` is patched in by `finish`.
    fn phit(&mut self) -> &mut Self {
        self.u16(0x0001).u16(56).u32(0); // header: HANDOFF, 56 bytes
        self.u32(0x0009).u32(0); // Version (EFI_HOB_HANDOFF_TABLE_VERSION), BootMode
        self.u64(0).u64(0).u64(0).u64(0); // EfiMemoryTop/Bottom, EfiFreeMemoryTop/Bottom
        self.u64(0) // EfiEndOfHobList
    }

    /// EFI_HOB_RESOURCE_DESCRIPTOR.
    fn resource(&mut self, kind: u32, start: u64, len: u64) -> &mut Self {
        self.u16(0x0003).u16(48).u32(0); // header: RESOURCE_DESCRIPTOR, 48 bytes
        self.bytes(&[0; 16]); // Owner: EFI_HOB_OWNER_ZERO
        let attributes = if kind == 0 { ATTRIBUTES | ENCRYPTED } else { ATTRIBUTES };
        self.u32(kind).u32(attributes).u64(start).u64(len)
    }

    /// EFI_HOB_GUID_TYPE with `data` (padded to 8 bytes).
    fn guid_extension(&mut self, name: [u8; 16], data: &[u8]) -> &mut Self {
        let len = (8 + 16 + data.len()).next_multiple_of(8);
        self.u16(0x0004).u16(len as u16).u32(0).bytes(&name).bytes(data);
        self.bytes(&vec![0; len - 24 - data.len()])
    }

    /// The end-of-list HOB, and EfiEndOfHobList (PHIT offset 48) pointing just past it.
    fn finish(&mut self) -> Vec<u8> {
        self.u16(0xFFFF).u16(8).u32(0);
        let end = HOB_GPA + self.0.len() as u64;
        self.0[48..56].copy_from_slice(&end.to_le_bytes());
        self.0.clone()
    }
}

fn resource(kind: ResourceKind, start: u64, len: u64) -> Resource {
    Resource { kind, start, len }
}

/// A 2 GiB TD as QEMU describes it: RAM unaccepted except the TDVF sections it added (the
/// TD HOB page and the temporary memory), plus 1 GiB above 4 GiB.
fn qemu_list() -> List {
    let mut l = List::default();
    l.phit()
        .resource(7, 0, 0x80_9000)
        .resource(0, 0x80_9000, 0x1000) // TD_HOB
        .resource(0, 0x80_A000, 0x1_6000) // TEMP_MEM
        .resource(7, 0x82_0000, 0x7F7E_0000)
        .resource(7, 0x1_0000_0000, 0x4000_0000);
    l
}

fn qemu_resources() -> Vec<Resource> {
    vec![
        resource(ResourceKind::Unaccepted, 0, 0x80_9000),
        resource(ResourceKind::SystemMemory, 0x80_9000, 0x1000),
        resource(ResourceKind::SystemMemory, 0x80_A000, 0x1_6000),
        resource(ResourceKind::Unaccepted, 0x82_0000, 0x7F7E_0000),
        resource(ResourceKind::Unaccepted, 0x1_0000_0000, 0x4000_0000),
    ]
}

#[test]
fn the_list_qemu_writes_parses_to_its_resources() {
    let list = qemu_list().finish();
    assert_eq!(list.len(), 56 + 5 * 48 + 8, "the PI structures' sizes");
    assert_eq!(hob::parse(&list), Ok(qemu_resources()));
    // The list as it sits in the TD HOB page: the rest of the page is zero, and ignored.
    let mut page = list.clone();
    page.resize(4096, 0);
    assert_eq!(hob::parse(&page), Ok(qemu_resources()));
}

#[test]
fn hob_types_the_firmware_does_not_use_are_skipped() {
    let mut l = List::default();
    l.phit().resource(7, 0, 0x1000_0000);
    l.guid_extension(*b"veil-test-guid-1", b"seventeen bytes..");
    l.resource(0, 0x1000_0000, 0x10_0000);
    let list = l.finish();
    assert_eq!(
        hob::parse(&list),
        Ok(vec![
            resource(ResourceKind::Unaccepted, 0, 0x1000_0000),
            resource(ResourceKind::SystemMemory, 0x1000_0000, 0x10_0000)
        ])
    );
}

/// The offset of the n-th resource descriptor (0-based) of `qemu_list`.
fn descriptor(n: usize) -> usize {
    56 + 48 * n
}

#[test]
fn overlapping_memory_is_refused() {
    // A VMM that describes the TD HOB page twice: as added RAM and inside unaccepted RAM.
    let mut l = qemu_list();
    l.resource(7, 0x80_0000, 0x2000);
    assert_eq!(hob::parse(&l.finish()), Err(HobError::Overlap(0x80_0000)));
    // High RAM again, shifted by a page.
    let mut l = qemu_list();
    l.resource(0, 0x1_0000_1000, 0x1000);
    assert_eq!(hob::parse(&l.finish()), Err(HobError::Overlap(0x1_0000_1000)));
}

#[test]
fn truncated_lists_are_refused() {
    let list = qemu_list().finish();
    // Cut inside the third descriptor's body, inside its header, and before the end HOB.
    assert_eq!(hob::parse(&list[..descriptor(2) + 20]), Err(HobError::Truncated(descriptor(2))));
    assert_eq!(hob::parse(&list[..descriptor(2) + 4]), Err(HobError::Truncated(descriptor(2))));
    assert_eq!(hob::parse(&list[..list.len() - 8]), Err(HobError::NoEnd));
    assert_eq!(hob::parse(&list[..30]), Err(HobError::Truncated(0)));
    assert_eq!(hob::parse(&[]), Err(HobError::Truncated(0)));
}

#[test]
fn wrong_lengths_are_refused() {
    let list = qemu_list().finish();
    let with_length = |at: usize, len: u16| {
        let mut l = list.clone();
        l[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
        hob::parse(&l)
    };
    // A descriptor shorter than EFI_HOB_RESOURCE_DESCRIPTOR, one not a multiple of 8, one of
    // zero (which would never advance), one past the list.
    assert_eq!(with_length(descriptor(1), 40), Err(HobError::Length(descriptor(1))));
    assert_eq!(with_length(descriptor(1), 50), Err(HobError::Length(descriptor(1))));
    assert_eq!(with_length(descriptor(1), 0), Err(HobError::Length(descriptor(1))));
    assert_eq!(with_length(descriptor(4), 0x1000), Err(HobError::Truncated(descriptor(4))));
    // A hand-off table shorter than EFI_HOB_HANDOFF_INFO_TABLE.
    assert_eq!(with_length(0, 48), Err(HobError::NoPhit));
    // The end HOB's length: 16 reads the 8 bytes after the list (truncated).
    assert_eq!(with_length(list.len() - 8, 16), Err(HobError::Truncated(list.len() - 8)));
}

#[test]
fn a_list_without_the_handoff_table_or_with_bad_ranges_is_refused() {
    let mut no_phit = List::default();
    no_phit.resource(7, 0, 0x1000);
    assert_eq!(hob::parse(&no_phit.finish_without_phit()), Err(HobError::NoPhit));
    let mut unaligned = List::default();
    unaligned.phit().resource(7, 0x10_0800, 0x1000);
    assert_eq!(hob::parse(&unaligned.finish()), Err(HobError::Range(0x10_0800)));
    let mut empty = List::default();
    empty.phit().resource(0, 0x10_0000, 0);
    assert_eq!(hob::parse(&empty.finish()), Err(HobError::Range(0x10_0000)));
    let mut wraps = List::default();
    wraps.phit().resource(7, 0xFFFF_FFFF_FFFF_F000, 0x2000);
    assert_eq!(hob::parse(&wraps.finish()), Err(HobError::Range(0xFFFF_FFFF_FFFF_F000)));
}

impl List {
    /// The end-of-list HOB only (a list that does not start with a PHIT has no
    /// EfiEndOfHobList to patch).
    fn finish_without_phit(&mut self) -> Vec<u8> {
        self.u16(0xFFFF).u16(8).u32(0);
        self.0.clone()
    }
}

//! Guest-message responses from the host: any bytes in the response page, against an
//! outstanding request, must be refused or (only if genuinely encrypted) accepted, never
//! panic; a copy of the input with the request's expected header fields forced in reaches the
//! authentication check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::snp::guest_msg::{Channel, HEADER_LEN, MsgType};

fuzz_target!(|data: &[u8]| {
    let mut ch = Channel::new(&[7u8; 32], 0, 0);
    let req = ch.request(MsgType::ReportRequest, 1, &[0u8; 96]).unwrap();
    let _ = ch.response(&req, data);
    let mut ch = Channel::new(&[7u8; 32], 0, 0);
    let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
    let mut page = data.to_vec();
    page.resize(page.len().max(HEADER_LEN), 0);
    page[0x20..0x28].copy_from_slice(&2u64.to_le_bytes());
    page[0x30] = 1;
    page[0x31] = 1;
    page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
    page[0x34] = 4;
    page[0x35] = 1;
    page[0x3C] = 0;
    let _ = ch.response(&req, &page);
});

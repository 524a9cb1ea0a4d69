//! The relay's receive path below the frames: what a hostile virtio-console device returns in
//! its used ring (a length, and the bytes it wrote into the posted buffer), cut here from the
//! input as [used length: u32 LE][count: u16 LE][count bytes] records, through
//! `kbs::frame::Receiver` into the frame `Decoder`, as kernel/src/devices/relay.rs drives them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::kbs::frame::{Decoder, MAX_FRAME, RX_BUFFER, Receiver};

fuzz_target!(|data: &[u8]| {
    let mut rx = Receiver::new();
    let mut frames = Decoder::new();
    let mut rest = data;
    while rest.len() >= 6 {
        let used = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let count = usize::from(u16::from_le_bytes([rest[4], rest[5]])).min(RX_BUFFER).min(rest.len() - 6);
        rx.buffer()[..count].copy_from_slice(&rest[6..6 + count]);
        rest = &rest[6 + count..];
        match rx.filled(used) {
            Ok(()) => assert!(used as usize <= RX_BUFFER),
            Err(_) => {
                assert!(used as usize > RX_BUFFER);
                assert!(rx.drained());
                continue;
            }
        }
        let mut taken = 0;
        while let Some(b) = rx.next_byte() {
            taken += 1;
            if let Ok(Some(frame)) = frames.push(b) {
                assert!(!frame.is_empty() && frame.len() <= MAX_FRAME);
            }
        }
        assert_eq!(taken, used as usize);
    }
});

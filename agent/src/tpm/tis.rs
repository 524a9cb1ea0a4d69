//! The TPM Interface Specification (TIS) FIFO protocol of the TCG PC Client Platform TPM
//! Profile (PTP) spec, section 6.5: locality request, the commandReady / burstCount / Expect /
//! tpmGo / dataAvail state machine, and the PTP timeouts. Polled, locality 0.
//!
//! The registers are reached through [`TisRegisters`], so the firmware supplies MMIO at
//! 0xFED40000 and the tests a model of the device. Everything the device returns is checked:
//! a response is read only as far as its own size field says, never past `max_response`, and
//! a device that stops making progress ends in [`TisError::Timeout`] rather than a hang.

use alloc::vec::Vec;
use core::fmt;

/// TPM_ACCESS_x (8 bit).
pub const ACCESS: u32 = 0x00;
/// TPM_STS_x (32 bit; PTP: read it as one 32-bit access).
pub const STS: u32 = 0x18;
/// TPM_DATA_FIFO_x.
pub const DATA_FIFO: u32 = 0x24;
/// TPM_INTF_CAPABILITY_x.
pub const INTF_CAPABILITY: u32 = 0x14;
/// TPM_DID_VID_x (32 bit).
pub const DID_VID: u32 = 0xF00;

/// ACCESS bits.
pub const ACCESS_VALID: u8 = 1 << 7;
/// The locality is active.
pub const ACCESS_ACTIVE_LOCALITY: u8 = 1 << 5;
/// Request the locality.
pub const ACCESS_REQUEST_USE: u8 = 1 << 1;

/// STS bits.
pub const STS_VALID: u32 = 1 << 7;
/// The TPM is ready for a command (read) / abort and go idle (write).
pub const STS_COMMAND_READY: u32 = 1 << 6;
/// Execute the command in the FIFO.
pub const STS_GO: u32 = 1 << 5;
/// Response bytes are available.
pub const STS_DATA_AVAIL: u32 = 1 << 4;
/// The TPM expects more command bytes.
pub const STS_EXPECT: u32 = 1 << 3;

/// PTP timeouts in microseconds (TIMEOUT_A..D) and the longest command duration.
pub const TIMEOUT_A_US: u64 = 750_000;
/// commandReady after a request.
pub const TIMEOUT_B_US: u64 = 2_000_000;
/// stsValid after a write.
pub const TIMEOUT_C_US: u64 = 200_000;
/// burstCount non-zero.
pub const TIMEOUT_D_US: u64 = 30_000;
/// A command's execution (key generation on a slow TPM is the worst case).
pub const COMMAND_DURATION_US: u64 = 120_000_000;

/// Register access to one locality's TIS page.
pub trait TisRegisters {
    /// Read an 8-bit register.
    fn read8(&mut self, offset: u32) -> u8;
    /// Read a 32-bit register.
    fn read32(&mut self, offset: u32) -> u32;
    /// Write an 8-bit register.
    fn write8(&mut self, offset: u32, value: u8);
    /// Write a 32-bit register.
    fn write32(&mut self, offset: u32, value: u32);
}

/// A monotonic microsecond clock for the timeouts.
pub trait Clock {
    /// Microseconds since some fixed point.
    fn now_us(&mut self) -> u64;
}

/// Why a TIS exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TisError {
    /// No TPM: the registers read as all ones (nothing decodes the address).
    Absent,
    /// A wait ran out: what was awaited.
    Timeout(&'static str),
    /// The TPM still expected bytes after the whole command, or stopped expecting too soon.
    Expect(&'static str),
    /// The response's size field is below the header size or above the limit.
    ResponseSize(u32),
    /// The command is empty or larger than a TPM accepts.
    CommandSize(usize),
    /// Response bytes remained after the response's own size.
    TrailingData,
}

impl fmt::Display for TisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TisError::Absent => write!(f, "no TPM at the TIS address (DID_VID reads as all zeros or all ones)"),
            TisError::Timeout(what) => write!(f, "TPM TIS timeout waiting for {what}"),
            TisError::Expect(what) => write!(f, "TPM TIS protocol error: {what}"),
            TisError::ResponseSize(n) => write!(f, "TPM response size field {n} is out of range"),
            TisError::CommandSize(n) => write!(f, "TPM command of {n} bytes is out of range"),
            TisError::TrailingData => write!(f, "TPM kept dataAvail set after the whole response"),
        }
    }
}

/// Largest command or response exchanged (TPM2's usual MAX_COMMAND_SIZE is 4096; swtpm and
/// firmware TPMs use up to this).
pub const MAX_FRAME: usize = 8192;
const HEADER: usize = 10;

/// A TIS TPM at locality 0.
pub struct Tis<R, C> {
    regs: R,
    clock: C,
}

impl<R: TisRegisters, C: Clock> Tis<R, C> {
    /// Claim locality 0 of the TPM behind `regs`.
    pub fn open(mut regs: R, clock: C) -> Result<Self, TisError> {
        // Nothing decodes the page: reads float to all ones (PC) or zero (QEMU's unassigned
        // memory); no TPM has either vendor/device ID.
        let did_vid = regs.read32(DID_VID);
        if did_vid == u32::MAX || did_vid == 0 {
            return Err(TisError::Absent);
        }
        let mut tis = Tis { regs, clock };
        if tis.regs.read8(ACCESS) & (ACCESS_VALID | ACCESS_ACTIVE_LOCALITY) != (ACCESS_VALID | ACCESS_ACTIVE_LOCALITY) {
            tis.regs.write8(ACCESS, ACCESS_REQUEST_USE);
            tis.wait_access(ACCESS_VALID | ACCESS_ACTIVE_LOCALITY, TIMEOUT_A_US, "locality 0 to become active")?;
        }
        Ok(tis)
    }

    /// The TPM's DID_VID register (vendor in the low 16 bits).
    pub fn did_vid(&mut self) -> u32 {
        self.regs.read32(DID_VID)
    }

    /// Give locality 0 back (the OS driver requests it again).
    pub fn relinquish(mut self) {
        self.release_locality();
    }

    /// Give locality 0 back, keeping the interface (a later command requests it again).
    pub fn release_locality(&mut self) {
        self.regs.write8(ACCESS, ACCESS_ACTIVE_LOCALITY);
    }

    fn wait_access(&mut self, want: u8, timeout: u64, what: &'static str) -> Result<(), TisError> {
        let start = self.clock.now_us();
        loop {
            if self.regs.read8(ACCESS) & want == want {
                return Ok(());
            }
            if self.clock.now_us().saturating_sub(start) > timeout {
                return Err(TisError::Timeout(what));
            }
        }
    }

    /// Wait until `STS & mask == want` with stsValid set (stsValid qualifies only dataAvail
    /// and Expect; commandReady is valid on its own); returns STS.
    fn wait_sts(&mut self, mask: u32, want: u32, timeout: u64, what: &'static str) -> Result<u32, TisError> {
        let start = self.clock.now_us();
        let need_valid = mask != STS_COMMAND_READY;
        loop {
            let sts = self.regs.read32(STS);
            if sts != u32::MAX && (!need_valid || sts & STS_VALID != 0) && sts & mask == want {
                return Ok(sts);
            }
            if self.clock.now_us().saturating_sub(start) > timeout {
                return Err(TisError::Timeout(what));
            }
        }
    }

    /// The current burstCount, waiting up to TIMEOUT_D for it to become non-zero.
    fn burst(&mut self) -> Result<usize, TisError> {
        let start = self.clock.now_us();
        loop {
            let sts = self.regs.read32(STS);
            let burst = ((sts >> 8) & 0xFFFF) as usize;
            if sts != u32::MAX && burst > 0 {
                return Ok(burst);
            }
            if self.clock.now_us().saturating_sub(start) > TIMEOUT_D_US {
                return Err(TisError::Timeout("a non-zero burstCount"));
            }
        }
    }

    /// Send one command and return its response (header included).
    pub fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TisError> {
        let result = self.exchange(command);
        // Whatever happened, ask the TPM to go idle (this also aborts a half-sent command).
        self.regs.write32(STS, STS_COMMAND_READY);
        result
    }

    fn exchange(&mut self, command: &[u8]) -> Result<Vec<u8>, TisError> {
        if command.len() < HEADER || command.len() > MAX_FRAME {
            return Err(TisError::CommandSize(command.len()));
        }
        self.regs.write32(STS, STS_COMMAND_READY);
        self.wait_sts(STS_COMMAND_READY, STS_COMMAND_READY, TIMEOUT_B_US, "commandReady")?;

        // All but the last byte in bursts; the TPM must keep Expect set until the last one.
        let (body, last) = command.split_at(command.len() - 1);
        let mut sent = 0;
        while sent < body.len() {
            let burst = self.burst()?.min(body.len() - sent);
            for &b in &body[sent..sent + burst] {
                self.regs.write8(DATA_FIFO, b);
            }
            sent += burst;
            let sts = self.wait_sts(0, 0, TIMEOUT_C_US, "stsValid after a command burst")?;
            if sts & STS_EXPECT == 0 {
                return Err(TisError::Expect("the TPM stopped expecting bytes before the end of the command"));
            }
        }
        self.burst()?;
        self.regs.write8(DATA_FIFO, last[0]);
        let sts = self.wait_sts(0, 0, TIMEOUT_C_US, "stsValid after the last command byte")?;
        if sts & STS_EXPECT != 0 {
            return Err(TisError::Expect("the TPM still expects bytes after the whole command"));
        }

        self.regs.write32(STS, STS_GO);
        self.wait_sts(STS_DATA_AVAIL, STS_DATA_AVAIL, COMMAND_DURATION_US, "the response (dataAvail)")?;

        let mut response = Vec::with_capacity(HEADER);
        self.read_fifo(&mut response, HEADER)?;
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
        if (size as usize) < HEADER || size as usize > MAX_FRAME {
            return Err(TisError::ResponseSize(size));
        }
        self.read_fifo(&mut response, size as usize)?;
        let sts = self.wait_sts(0, 0, TIMEOUT_C_US, "stsValid after the response")?;
        if sts & STS_DATA_AVAIL != 0 {
            return Err(TisError::TrailingData);
        }
        Ok(response)
    }

    /// Read from the FIFO until `buf` holds `until` bytes.
    fn read_fifo(&mut self, buf: &mut Vec<u8>, until: usize) -> Result<(), TisError> {
        while buf.len() < until {
            let sts =
                self.wait_sts(STS_DATA_AVAIL, STS_DATA_AVAIL, TIMEOUT_C_US, "dataAvail while reading the response")?;
            let burst = (((sts >> 8) & 0xFFFF) as usize).max(1).min(until - buf.len());
            for _ in 0..burst {
                buf.push(self.regs.read8(DATA_FIFO));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec;

    /// A model of a TIS TPM: burstCount of `burst`, answering with `respond`.
    struct FakeTis {
        burst: u32,
        active: bool,
        grant_locality: bool,
        ready: bool,
        command: Vec<u8>,
        response: Vec<u8>,
        read_pos: usize,
        respond: Box<dyn FnMut(&[u8]) -> Vec<u8>>,
        commands_seen: usize,
        /// Set Expect to 0 one byte early (a broken TPM).
        early_expect_end: bool,
    }

    impl FakeTis {
        fn new(respond: impl FnMut(&[u8]) -> Vec<u8> + 'static) -> Self {
            FakeTis {
                burst: 3,
                active: false,
                grant_locality: true,
                ready: false,
                command: vec![],
                response: vec![],
                read_pos: 0,
                respond: Box::new(respond),
                commands_seen: 0,
                early_expect_end: false,
            }
        }
        fn expected_len(&self) -> Option<usize> {
            (self.command.len() >= 6).then(|| {
                u32::from_be_bytes([self.command[2], self.command[3], self.command[4], self.command[5]]) as usize
            })
        }
        fn expect(&self) -> bool {
            match self.expected_len() {
                None => true,
                Some(n) => self.command.len() + usize::from(self.early_expect_end) < n,
            }
        }
    }

    impl TisRegisters for &mut FakeTis {
        fn read8(&mut self, offset: u32) -> u8 {
            match offset {
                ACCESS => ACCESS_VALID | if self.active { ACCESS_ACTIVE_LOCALITY } else { 0 },
                DATA_FIFO => {
                    let b = self.response.get(self.read_pos).copied().unwrap_or(0xFF);
                    self.read_pos += 1;
                    b
                }
                _ => 0,
            }
        }
        fn read32(&mut self, offset: u32) -> u32 {
            match offset {
                STS => {
                    // Like QEMU's TIS: stsValid is clear while the TPM merely awaits a
                    // command (commandReady alone is valid then).
                    let mut sts = self.burst << 8;
                    if !(self.ready && self.command.is_empty() && self.response.is_empty()) {
                        sts |= STS_VALID;
                    }
                    if self.ready {
                        sts |= STS_COMMAND_READY;
                    }
                    if self.read_pos < self.response.len() {
                        sts |= STS_DATA_AVAIL;
                    }
                    if self.ready && self.expect() && !self.command.is_empty() {
                        sts |= STS_EXPECT;
                    }
                    sts
                }
                DID_VID => 0x0001_1014,
                _ => 0,
            }
        }
        fn write8(&mut self, offset: u32, value: u8) {
            match offset {
                ACCESS if value == ACCESS_REQUEST_USE => self.active = self.grant_locality,
                ACCESS if value == ACCESS_ACTIVE_LOCALITY => self.active = false,
                DATA_FIFO => {
                    assert!(self.active && self.ready, "FIFO write without locality or commandReady");
                    self.command.push(value);
                }
                _ => {}
            }
        }
        fn write32(&mut self, offset: u32, value: u32) {
            assert_eq!(offset, STS);
            if value == STS_COMMAND_READY {
                self.ready = true;
                self.command.clear();
                self.response.clear();
                self.read_pos = 0;
            } else if value == STS_GO {
                assert!(!self.expect(), "tpmGo before the whole command");
                self.commands_seen += 1;
                self.response = (self.respond)(&self.command);
                self.read_pos = 0;
            }
        }
    }

    struct Ticks(u64);
    impl Clock for Ticks {
        fn now_us(&mut self) -> u64 {
            self.0 += 10;
            self.0
        }
    }

    fn frame(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_be_bytes());
        f.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
        f.extend_from_slice(&code.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn round_trip_in_bursts() {
        let mut dev = FakeTis::new(|cmd| frame(0x8001, 0, &cmd[10..]));
        let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
        assert_eq!(tis.did_vid(), 0x0001_1014);
        let cmd = frame(0x8001, 0x144, &[0u8; 25]);
        let resp = tis.transact(&cmd).unwrap();
        assert_eq!(resp, frame(0x8001, 0, &[0u8; 25]));
        // A second command works after the first (the TPM went idle in between).
        let resp = tis.transact(&frame(0x8001, 0x17B, &[1, 2, 3])).unwrap();
        assert_eq!(&resp[10..], &[1, 2, 3]);
        tis.relinquish();
        assert_eq!(dev.commands_seen, 2);
        assert!(!dev.active);
    }

    #[test]
    fn locality_never_granted_times_out() {
        let mut dev = FakeTis::new(|_| vec![]);
        dev.grant_locality = false;
        assert_eq!(Tis::open(&mut dev, Ticks(0)).err(), Some(TisError::Timeout("locality 0 to become active")));
    }

    #[test]
    fn absent_device() {
        struct Nothing(u8);
        impl TisRegisters for Nothing {
            fn read8(&mut self, _: u32) -> u8 {
                self.0
            }
            fn read32(&mut self, _: u32) -> u32 {
                u32::from_ne_bytes([self.0; 4])
            }
            fn write8(&mut self, _: u32, _: u8) {}
            fn write32(&mut self, _: u32, _: u32) {}
        }
        for floating in [0xFF, 0x00] {
            assert_eq!(Tis::open(Nothing(floating), Ticks(0)).err(), Some(TisError::Absent));
        }
    }

    #[test]
    fn early_end_of_expect_is_an_error() {
        let mut dev = FakeTis::new(|cmd| frame(0x8001, 0, &cmd[10..]));
        dev.early_expect_end = true;
        let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
        let err = tis.transact(&frame(0x8001, 0x144, &[0u8; 4])).unwrap_err();
        assert!(matches!(err, TisError::Expect(_)), "{err:?}");
    }

    #[test]
    fn bad_response_sizes_are_refused() {
        for bad in [9u32, MAX_FRAME as u32 + 1, u32::MAX] {
            let mut dev = FakeTis::new(move |_| {
                let mut r = frame(0x8001, 0, &[0; 4]);
                r[2..6].copy_from_slice(&bad.to_be_bytes());
                r
            });
            let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
            assert_eq!(tis.transact(&frame(0x8001, 0x144, &[])).unwrap_err(), TisError::ResponseSize(bad));
        }
    }

    #[test]
    fn response_longer_than_its_size_is_refused() {
        let mut dev = FakeTis::new(|_| {
            let mut r = frame(0x8001, 0, &[0; 4]);
            r.extend_from_slice(&[9, 9]);
            r
        });
        let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
        assert_eq!(tis.transact(&frame(0x8001, 0x144, &[])).unwrap_err(), TisError::TrailingData);
    }

    #[test]
    fn short_response_times_out_instead_of_hanging() {
        let mut dev = FakeTis::new(|_| {
            let mut r = frame(0x8001, 0, &[0; 4]);
            r.truncate(12); // size says 14
            r
        });
        let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
        assert!(matches!(tis.transact(&frame(0x8001, 0x144, &[])).unwrap_err(), TisError::Timeout(_)));
    }

    #[test]
    fn command_sizes_are_checked() {
        let mut dev = FakeTis::new(|_| vec![]);
        let mut tis = Tis::open(&mut dev, Ticks(0)).unwrap();
        assert_eq!(tis.transact(&[0; 9]).unwrap_err(), TisError::CommandSize(9));
        assert_eq!(tis.transact(&vec![0; MAX_FRAME + 1]).unwrap_err(), TisError::CommandSize(MAX_FRAME + 1));
    }
}

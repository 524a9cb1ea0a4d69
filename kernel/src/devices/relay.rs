//! The virtio-console relay channel: the firmware's only line to the (untrusted) host relay
//! and through it the key broker. Our own small driver on virtio-drivers' queues and PCI
//! transport, rather than virtio-drivers' console, whose receive path indexes its buffer with
//! the device's used-ring length (virtio-drivers 0.13 console.rs: a length past 4096 panics,
//! and a zero length trips an assertion). Here the length goes through
//! veil_agent::kbs::frame::Receiver, which refuses one past the buffer; and a send waits a
//! bounded time for the device. On it, the frames of veil_agent::kbs::frame carry
//! `{"method","path","body"}` out and `{"status","body"}` back ([`Relay`] for the RCAR client);
//! everything the relay returns is untrusted and parsed in agent.

use alloc::vec::Vec;

use veil_agent::json::Value;
use veil_agent::kbs::client::Relay;
use veil_agent::kbs::frame::{self, Receiver, RelayError};
use virtio_drivers::device::common::Feature;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::transport::{DeviceType, Transport};

use crate::devices::virtio::VeilHal;
use crate::error::BootError;

/// Port 0's receive and transmit queues (virtio 1.2, 5.3.2).
const RECEIVEQ: u16 = 0;
const TRANSMITQ: u16 = 1;
/// Descriptors per queue (one buffer is in flight each way): 16, the size of virtio-drivers'
/// virtio-blk queue, so that both drivers share one instantiation of the queue code (2.6 KiB
/// of ROM less than a queue of 2).
const QUEUE_SIZE: usize = 16;
/// How long a send waits for the device to take the bytes.
const SEND_TIMEOUT_US: u64 = 10_000_000;

/// A virtio-console port.
pub struct Console {
    transport: PciTransport,
    receiveq: VirtQueue<VeilHal, QUEUE_SIZE>,
    transmitq: VirtQueue<VeilHal, QUEUE_SIZE>,
    rx: Receiver,
    /// The token of the receive buffer the device holds, if it holds it.
    rx_token: Option<u16>,
    /// A send the device never completed: its descriptor is still the device's.
    broken: bool,
    /// Where it is.
    pub location: DeviceFunction,
}

/// The first virtio-console on bus 0, brought up. Fails only when there is a device but no
/// bounce pool for it.
pub fn find_console(ecam_base: u64) -> Result<Option<Console>, BootError> {
    for (df, mut transport) in crate::devices::virtio::find(ecam_base, DeviceType::Console)? {
        // VERSION_1 only: no indirect descriptors, no event index, no multiport.
        transport.begin_init(Feature::VERSION_1);
        let queues = VirtQueue::new(&mut transport, RECEIVEQ, false, false)
            .and_then(|rq| Ok((rq, VirtQueue::new(&mut transport, TRANSMITQ, false, false)?)));
        match queues {
            Ok((receiveq, transmitq)) => {
                transport.finish_init();
                let rx = Receiver::new();
                let mut console =
                    Console { transport, receiveq, transmitq, rx, rx_token: None, broken: false, location: df };
                // The receive buffer goes to the device at once, as the host may send (and
                // close) before the firmware first reads: QEMU takes bytes from its chardev
                // only into a buffer the guest posted.
                if let Err(e) = console.post_receive() {
                    crate::log!("virtio: {df}: console receive buffer: {e}");
                    continue;
                }
                return Ok(Some(console));
            }
            Err(e) => crate::log!("virtio: {df}: console init failed: {e:?}"),
        }
    }
    Ok(None)
}

impl Console {
    fn channel_failed(&self, op: &'static str, e: impl core::fmt::Debug) -> RelayError {
        crate::log!("virtio-console {}: {op}: {e:?}", self.location);
        RelayError::Channel { op }
    }

    /// Send bytes, waiting at most SEND_TIMEOUT_US for the device to take them. A device error
    /// or a device that never completes is a relay channel failure (the console is not used
    /// again after a send that did not complete).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        if self.broken {
            return Err(RelayError::Channel { op: "send" });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // SAFETY: the HAL copies `bytes` into a bounce block at `add` (a driver-to-device
        // buffer), so the device never reads the caller's memory; the same slice is passed to
        // `pop_used` below, or the queue is abandoned (`broken`) with the bounce block leaked.
        let token = unsafe { self.transmitq.add(&[bytes], &mut []) }.map_err(|e| self.channel_failed("send", e))?;
        if self.transmitq.should_notify() {
            self.transport.notify(TRANSMITQ);
        }
        let deadline = crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) + SEND_TIMEOUT_US;
        while self.transmitq.peek_used() != Some(token) {
            if crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) > deadline {
                self.broken = true;
                crate::log!("virtio-console {}: the device did not take a send within 10 s", self.location);
                return Err(RelayError::Channel { op: "send" });
            }
            core::hint::spin_loop();
        }
        // SAFETY: the buffers passed to `add` above for this token.
        unsafe { self.transmitq.pop_used(token, &[bytes], &mut []) }.map_err(|e| self.channel_failed("send", e))?;
        Ok(())
    }

    /// Post the receive buffer when it is drained and not with the device already.
    fn post_receive(&mut self) -> Result<(), RelayError> {
        if self.rx_token.is_none() && self.rx.drained() {
            let buffer = self.rx.buffer();
            // SAFETY: the receiver's buffer never moves or resizes; it is posted only while
            // no other request uses it, and taken back with `pop_used` with the same buffer.
            let token = unsafe { self.receiveq.add(&[], &mut [buffer]) };
            self.rx_token = Some(token.map_err(|e| self.channel_failed("receive", e))?);
            if self.receiveq.should_notify() {
                self.transport.notify(RECEIVEQ);
            }
        }
        Ok(())
    }

    /// The next byte, polling until `deadline_us` (TSC microseconds); None on timeout. The
    /// device's used length is bounded by the buffer (kbs::frame::Receiver::filled).
    pub fn recv_byte(&mut self, deadline_us: u64) -> Result<Option<u8>, RelayError> {
        loop {
            if let Some(b) = self.rx.next_byte() {
                if self.rx.drained() {
                    self.post_receive()?;
                }
                return Ok(Some(b));
            }
            self.post_receive()?;
            if let Some(token) = self.rx_token
                && self.receiveq.peek_used() == Some(token)
            {
                let buffer = self.rx.buffer();
                // SAFETY: the same buffer `post_receive` added for this token.
                let used = unsafe { self.receiveq.pop_used(token, &[], &mut [buffer]) };
                self.rx_token = None;
                let used = used.map_err(|e| self.channel_failed("receive", e))?;
                self.rx.filled(used)?;
                // Post it again as soon as it is drained (a zero-length answer: now).
                self.post_receive()?;
                continue;
            }
            if crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) > deadline_us {
                return Ok(None);
            }
            core::hint::spin_loop();
        }
    }
}

/// How long the firmware waits for one broker reply.
const REPLY_TIMEOUT_US: u64 = 60_000_000;

impl Console {
    /// Send one frame's payload (the relay-echo test hook; exchanges send requests whole).
    #[cfg(feature = "test-hooks")]
    pub fn send_frame(&mut self, payload: &[u8]) -> Result<(), RelayError> {
        self.send(&frame::encode(payload)?)
    }

    /// Receive one frame, waiting at most `timeout_us`.
    pub fn recv_frame(&mut self, timeout_us: u64) -> Result<Vec<u8>, RelayError> {
        let deadline = crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) + timeout_us;
        let mut decoder = frame::Decoder::new();
        loop {
            match self.recv_byte(deadline)? {
                Some(b) => {
                    if let Some(payload) = decoder.push(b)? {
                        return Ok(payload);
                    }
                }
                None => return Err(RelayError::Timeout { seconds: timeout_us / 1_000_000 }),
            }
        }
    }
}

impl Relay for Console {
    fn exchange(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), RelayError> {
        self.send(&frame::request(method, path, body)?)?;
        frame::parse_reply(&self.recv_frame(REPLY_TIMEOUT_US)?)
    }
}

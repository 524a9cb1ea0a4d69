//! 16550 UART on COM1 (0x3F8): the console. Polled, no interrupts, no locks (one CPU, and
//! the exception handler must be able to print whatever was interrupted).

use core::fmt;

use crate::arch::cpu::port::{inb, outb};

const COM1: u16 = 0x3F8;

/// Program 115200 8N1, FIFOs on.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // divisor 1: 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    outb(COM1 + 2, 0xC7); // FIFO on, cleared
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn put(b: u8) {
    // Wait for the transmit holding register (bounded: a missing UART must not hang us).
    for _ in 0..100_000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, b);
}

/// Write bytes, turning \n into \r\n.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

/// A `fmt::Write` on the serial port.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Print a line prefixed with `veil: `. One call per site (the prefix and the newline are
/// written by [`log_line`]), so each of the firmware's few hundred log sites costs the
/// arguments' setup and a call, not three formatted writes.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::arch::serial::log_line(format_args!($($arg)*))
    };
}

/// The body of [`log!`].
#[inline(never)]
pub fn log_line(args: fmt::Arguments<'_>) {
    use fmt::Write as _;
    write_bytes(b"veil: ");
    let _ = Serial.write_fmt(args);
    write_bytes(b"\n");
}

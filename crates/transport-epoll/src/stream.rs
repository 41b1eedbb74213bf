//! Nonblocking reads and writes on a TCP stream with an output buffer.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Most bytes read from one socket per readiness event, so one busy
/// connection cannot starve the others.
const READ_BUDGET: usize = 1024 * 1024;

/// The result of a nonblocking read.
pub(crate) enum ReadOutcome {
    /// Bytes were read (possibly none); the socket is still open.
    Open,
    /// The remote end closed the connection.
    Eof,
}

/// Reads what is available into `into`, up to the read budget.
pub(crate) fn read_available(
    stream: &mut TcpStream,
    into: &mut Vec<u8>,
) -> io::Result<ReadOutcome> {
    let mut chunk = [0u8; 16 * 1024];
    let mut total = 0;
    while total < READ_BUDGET {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(read) => {
                into.extend_from_slice(&chunk[..read]);
                total += read;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(ReadOutcome::Open)
}

/// Writes as much of `buf` as the socket takes now and drops it from the
/// buffer.
pub(crate) fn write_buffered(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    buf.drain(..written);
    Ok(())
}

/// Returns the poller interest for a stream: always readable, and writable
/// while output is pending.
pub(crate) fn interest(key: usize, pending_output: bool) -> polling::Event {
    if pending_output {
        polling::Event::all(key)
    } else {
        polling::Event::readable(key)
    }
}

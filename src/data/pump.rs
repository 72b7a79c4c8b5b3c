//! The byte pump of a transfer: a copy through a buffer that grows while the sender keeps
//! it full, and the errors that say which end of it broke.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The buffer a transfer starts with: what a WAN transfer (or one that trickles) needs.
pub const PUMP_BUFFER_MIN: usize = 64 * 1024;
/// The most a transfer's buffer grows to. On loopback a 1 MiB buffer moved a 1 GiB file
/// faster than 128 and 256 KiB ones (fewer, larger reads and writes: RETR 1,520 against
/// 1,170 MB/s) and than `splice(2)` through a 256 KiB pipe (README "What limits each
/// figure"); 4 MiB gained nothing more.
pub const PUMP_BUFFER_MAX: usize = 1024 * 1024;

/// A transfer's buffer: starts at `min` and doubles whenever a read fills it, up to
/// `max`. A read that fills the buffer means the sender has more queued, so a transfer
/// whose sender never gets ahead (a slow upload, a slow backend) keeps a small buffer. It
/// does not shrink (a grown buffer is kept to the end of its transfer, then freed).
pub struct GrowingBuffer {
    bytes: Vec<u8>,
    max: usize,
}

impl GrowingBuffer {
    pub fn new(min: usize, max: usize) -> GrowingBuffer {
        GrowingBuffer {
            bytes: vec![0; min.clamp(1, max.max(1))],
            max: max.max(1),
        }
    }

    /// The space the next read goes into.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The first `n` bytes of the space, as read.
    pub fn filled(&self, n: usize) -> &[u8] {
        &self.bytes[..n.min(self.bytes.len())]
    }

    /// After a read of `n` bytes (and their write): a full read makes the buffer grow.
    pub fn after_read(&mut self, n: usize) {
        let len = self.bytes.len();
        if n == len && len < self.max {
            // The old buffer goes first, so the bound is never held one and a half times.
            self.bytes = Vec::new();
            self.bytes = vec![0; (len * 2).min(self.max)];
        }
    }
}

/// Writes all of `bytes`, adding each partial write to `total` and `progress` as it is
/// through: a slow receiver takes a 1 MiB buffer in many writes, and the stall check and
/// STAT must see every one of them, not only the end of the buffer.
async fn write_counted<W>(
    to: &mut W,
    mut bytes: &[u8],
    total: &mut u64,
    progress: &AtomicU64,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while !bytes.is_empty() {
        let n = to.write(bytes).await.map_err(at_write)?;
        if n == 0 {
            return Err(at_write(io::ErrorKind::WriteZero.into()));
        }
        bytes = &bytes[n..];
        *total += n as u64;
        progress.store(*total, Ordering::Relaxed);
    }
    Ok(())
}

/// Copies `from` to `to` until end of stream, then half-closes `to` so the receiver sees
/// EOF (an upload's end must reach the backend as a FIN, or it never answers 226).
/// `progress` counts the bytes moved so far, for STAT during a transfer.
pub async fn pump<R, W>(from: &mut R, to: &mut W, progress: Arc<AtomicU64>) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = GrowingBuffer::new(PUMP_BUFFER_MIN, PUMP_BUFFER_MAX);
    let mut total = 0u64;
    loop {
        let n = from.read(buffer.space()).await.map_err(at_read)?;
        if n == 0 {
            break;
        }
        write_counted(to, buffer.filled(n), &mut total, &progress).await?;
        buffer.after_read(n);
    }
    to.flush().await.map_err(at_write)?;
    to.shutdown().await.map_err(at_write)?;
    Ok(total)
}

/// An I/O error of a pump, with the end it happened at (named later by [`name_leg`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
struct AtEnd {
    reading: bool,
    source: io::Error,
}

pub fn at_read(source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AtEnd {
            reading: true,
            source,
        },
    )
}

pub fn at_write(source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AtEnd {
            reading: false,
            source,
        },
    )
}

/// "reading from the client: Connection reset by peer" instead of the bare OS error.
pub fn name_leg(error: io::Error, from: &str, to: &str) -> io::Error {
    let kind = error.kind();
    let text = error.to_string();
    let at_end = error
        .into_inner()
        .and_then(|inner| inner.downcast::<AtEnd>().ok());
    let text = match at_end {
        Some(at) if at.reading => format!("reading from the {from}: {}", at.source),
        Some(at) => format!("writing to the {to}: {}", at.source),
        None => text,
    };
    io::Error::new(kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pumps `len` patterned bytes from one duplex pipe into another (each holding
    /// `capacity`): the bytes the pump reports, its final progress, what arrived, and
    /// what was sent.
    async fn through_duplex(len: u32, capacity: usize) -> (u64, u64, Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (mut source_writer, source_reader) = tokio::io::duplex(capacity);
        let (sink_writer, mut sink_reader) = tokio::io::duplex(capacity);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            source_writer.write_all(&sent).await.expect("write");
        });
        let progress = Arc::new(AtomicU64::new(0));
        let counter = progress.clone();
        let pumping = tokio::spawn(async move {
            let (mut from, mut to) = (source_reader, sink_writer);
            pump(&mut from, &mut to, counter).await
        });
        let mut received = Vec::new();
        sink_reader
            .read_to_end(&mut received)
            .await
            .expect("read to EOF");
        writer.await.expect("writer");
        let moved = pumping.await.expect("join").expect("pump");
        (moved, progress.load(Ordering::Relaxed), received, data)
    }

    #[tokio::test]
    async fn pump_moves_every_byte_and_half_closes() {
        let (moved, progress, received, sent) = through_duplex(300_000, 1024).await;
        assert_eq!(moved, sent.len() as u64);
        assert_eq!(progress, moved);
        assert_eq!(received, sent);
    }

    #[test]
    fn the_buffer_grows_on_full_reads_only_and_stops_at_its_bound() {
        let mut buffer = GrowingBuffer::new(4, 16);
        assert_eq!(buffer.space().len(), 4);
        buffer.after_read(3);
        assert_eq!(
            buffer.space().len(),
            4,
            "a short read means the sender has no more queued"
        );
        buffer.after_read(4);
        assert_eq!(buffer.space().len(), 8);
        buffer.after_read(8);
        buffer.after_read(16);
        buffer.after_read(16);
        assert_eq!(buffer.space().len(), 16);
        assert_eq!(
            GrowingBuffer::new(0, 0).space().len(),
            1,
            "never a zero-length read"
        );
        assert_eq!(GrowingBuffer::new(32, 8).space().len(), 8);
    }

    /// A sender far ahead of the receiver makes the buffer grow (reads fill it), and
    /// every byte still arrives, in order, across the growths.
    #[tokio::test]
    async fn a_fast_transfer_is_copied_whole_through_the_growing_buffer() {
        let len = PUMP_BUFFER_MAX * 3 + 12_345;
        let (moved, _, received, sent) = through_duplex(len as u32, PUMP_BUFFER_MAX * 2).await;
        assert_eq!(moved, len as u64);
        assert!(received == sent, "bytes differ");
    }

    /// Progress counts what the receiver has taken, not whole buffers: a receiver that
    /// reads slowly must not look stalled while the pump works through a 1 MiB buffer.
    #[tokio::test]
    async fn progress_follows_each_partial_write() {
        let size = PUMP_BUFFER_MAX * 4;
        let (mut source_writer, source_reader) = tokio::io::duplex(size);
        let (sink_writer, mut sink_reader) = tokio::io::duplex(16 * 1024);
        source_writer
            .write_all(&vec![7u8; size])
            .await
            .expect("queue the whole source");
        let progress = Arc::new(AtomicU64::new(0));
        let counter = progress.clone();
        let _pumping = tokio::spawn(async move {
            let (mut from, mut to) = (source_reader, sink_writer);
            pump(&mut from, &mut to, counter).await
        });
        let mut taken = 0usize;
        let mut piece = vec![0u8; 8 * 1024];
        // Past the first buffers, well into a grown one (they end at 64 KiB, 192 KiB,
        // 448 KiB, 960 KiB and 1,984 KiB).
        while taken < 1536 * 1024 {
            taken += sink_reader.read(&mut piece).await.expect("sink read");
        }
        let caught_up = async {
            while progress.load(Ordering::Relaxed) < taken as u64 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        let waited = tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await;
        assert!(
            waited.is_ok(),
            "progress {} behind the {taken} bytes the receiver took",
            progress.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn pump_errors_name_the_leg_that_broke() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let named = name_leg(at_read(reset()), "client", "backend");
        assert_eq!(named.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            named.to_string().starts_with("reading from the client: "),
            "{named}"
        );
        let named = name_leg(at_write(reset()), "client", "backend");
        assert!(
            named.to_string().starts_with("writing to the backend: "),
            "{named}"
        );
        let untagged = name_leg(io::Error::other("odd"), "client", "backend");
        assert_eq!(untagged.to_string(), "odd");
    }
}

//! The kernel's IPv4 TCP connections (`/proc/net/tcp`): their queues, to wait until the
//! data of a download nobody reads has stopped moving anywhere along its path; and the
//! connects still under way to a port.
//!
//! "Sleep a while and assume the buffers are full" is not enough through a proxy: its
//! receive buffer towards the server grows (autotuning) to megabytes, and on a loaded
//! machine the server may still be filling it when the test goes on. A server such as
//! pure-ftpd, which looks at its control connection only between two chunks it wrote, then
//! answers an ABOR differently (tests/conformance.rs, `abor_variants_during_a_download`).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// One connection's ends (local, remote port) and its send and receive queues, in bytes.
type Queues = BTreeMap<(u16, u16, u64), (u64, u64)>;

const ESTABLISHED: &str = "01";
const SYN_SENT: &str = "02";

/// How many connects to `port` are under way (SYN sent, no answer yet).
pub fn connecting_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote_port = |field: &str| {
        let hex = field.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    text.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[3] == SYN_SENT && remote_port(f[2]) == Some(port)
        })
        .count()
}

/// The established connections with either port in one of `ranges`, keyed by ports and
/// inode (a port pair may be reused by a later connection).
fn snapshot(ranges: &[RangeInclusive<u16>]) -> Queues {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |field: &str| {
        let hex = field.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let watched = |port: u16| ranges.iter().any(|r| r.contains(&port));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != ESTABLISHED {
                return None;
            }
            let (local, remote) = (port_of(f[1])?, port_of(f[2])?);
            if !watched(local) && !watched(remote) {
                return None;
            }
            let (tx, rx) = f[4].split_once(':')?;
            let tx = u64::from_str_radix(tx, 16).ok()?;
            let rx = u64::from_str_radix(rx, 16).ok()?;
            let inode = f[9].parse().ok()?;
            Some(((local, remote, inode), (tx, rx)))
        })
        .collect()
}

/// Whether every connection seen in both snapshots kept its queues.
fn unchanged(before: &Queues, now: &Queues) -> bool {
    now.iter()
        .all(|(key, queues)| before.get(key).map_or(true, |old| old == queues))
}

/// Waits until no connection with a port in `ranges` has moved a byte for `quiet` and the
/// connection to `must_see` (a local port, the caller's own data connection) is among
/// them. Gives up after `limit` and says so on stderr: the caller's comparison then shows
/// what happened.
pub async fn wait_until_still(
    ranges: &[RangeInclusive<u16>],
    must_see: u16,
    quiet: Duration,
    limit: Duration,
) {
    const SAMPLE: Duration = Duration::from_millis(100);
    let deadline = Instant::now() + limit;
    let mut before = snapshot(ranges);
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(SAMPLE).await;
        let now = snapshot(ranges);
        let seen = now.keys().any(|(local, _, _)| *local == must_see);
        if !seen || !unchanged(&before, &now) {
            still_since = Instant::now();
        } else if still_since.elapsed() >= quiet {
            return;
        }
        before = now;
    }
    eprintln!("tcp_queues: the connections in {ranges:?} still moved after {limit:?}");
}

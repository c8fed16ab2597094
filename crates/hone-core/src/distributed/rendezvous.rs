//! The small rendezvous of a torchrun-style launch: rank 0 listens on `MASTER_ADDR:MASTER_PORT`
//! and hands every other rank the same bytes (NCCL's unique id). Nothing else travels
//! this way; the collectives are the engine's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a rank waits for rank 0 to listen, and rank 0 for the others to arrive.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Rank 0: send `payload` to each of the other `world_size - 1` ranks as they connect.
/// Another rank: connect to rank 0 and return its payload.
pub fn exchange(
    rank: usize,
    world_size: usize,
    addr: &str,
    port: u16,
    payload: &[u8],
) -> Result<Vec<u8>> {
    if rank == 0 {
        let listener = TcpListener::bind((addr, port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
            .with_context(|| {
                format!("rank 0 cannot listen on {addr}:{port} (MASTER_ADDR:MASTER_PORT)")
            })?;
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + TIMEOUT;
        let mut served = 1;
        while served < world_size {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false)?;
                    stream.write_all(&(payload.len() as u64).to_le_bytes())?;
                    stream.write_all(payload)?;
                    served += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("rendezvous: {served} of {world_size} ranks arrived at {addr}:{port} within {TIMEOUT:?}")
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("rendezvous: accept"),
            }
        }
        return Ok(payload.to_vec());
    }
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = loop {
        match TcpStream::connect((addr, port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                    "rank {rank} cannot reach rank 0 at {addr}:{port} (MASTER_ADDR:MASTER_PORT)"
                )
                })
            }
        }
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut len = [0u8; 8];
    stream
        .read_exact(&mut len)
        .context("rendezvous: reading from rank 0")?;
    let len = u64::from_le_bytes(len) as usize;
    if len > 1 << 20 {
        bail!("rendezvous: rank 0 announced {len} bytes; expected a small id (is something else listening on {addr}:{port}?)")
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .context("rendezvous: reading from rank 0")?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_rank_zeros_bytes() {
        let port = {
            let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let id: Vec<u8> = (0..128).map(|i| i as u8).collect();
        let others: Vec<_> = (1..4)
            .map(|r| std::thread::spawn(move || exchange(r, 4, "127.0.0.1", port, &[]).unwrap()))
            .collect();
        assert_eq!(exchange(0, 4, "127.0.0.1", port, &id).unwrap(), id);
        for h in others {
            assert_eq!(h.join().unwrap(), id);
        }
    }
}

//! A local agent's frames, read by a thread of its own that can let them
//! gather in the pipe.
//!
//! A worker running short tests writes a frame for every test. Read as
//! they come, every write wakes rtest, and on a machine whose cores are
//! all running workers each wakeup preempts one of them; the write that
//! wakes a reader also costs the worker itself (about 20 µs of kernel time
//! per frame on a virtual machine, against none when nobody waits on the
//! pipe). While the session says a worker has plenty of work queued
//! ([`Pacer::set_batching`]), the reader waits up to [`PACE`] after a read
//! before it reads again, so that what the worker writes meanwhile lands in
//! the pipe without waking anyone and is read in one go. Nothing is held
//! by the worker: a frame is in the pipe (and survives the worker's crash)
//! as soon as it is written. When the session needs a worker's next frame
//! promptly (it is starting, collecting, or running low on work), it turns
//! batching off, which also cuts a wait in progress short.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// The longest a frame waits in the pipe while batching.
pub const PACE: Duration = Duration::from_millis(5);

/// The session's say over how a reader paces itself.
#[derive(Debug, Default)]
pub struct Pacer {
    batching: AtomicBool,
    reader: OnceLock<Thread>,
}

impl Pacer {
    /// Batch reads (`true`) or read every frame as it comes (`false`,
    /// the default; ends a wait in progress).
    pub fn set_batching(&self, on: bool) {
        let was = self.batching.swap(on, Ordering::SeqCst);
        if was && !on {
            if let Some(thread) = self.reader.get() {
                thread.unpark();
            }
        }
    }

    fn batching(&self) -> bool {
        self.batching.load(Ordering::SeqCst)
    }

    /// Wait until `PACE` after `last`, unless batching ends first.
    fn wait_after(&self, last: Instant) {
        let until = last + PACE;
        while self.batching() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::park_timeout(until - now);
        }
    }
}

/// Read `fd` (a pipe from a local agent) on a thread of its own, paced by
/// the returned [`Pacer`].
pub fn reader(fd: OwnedFd) -> std::io::Result<(PacedReader, Arc<Pacer>)> {
    set_blocking(&fd)?;
    let mut pipe = std::fs::File::from(fd);
    let pacer = Arc::new(Pacer::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = pacer.clone();
    let thread = std::thread::Builder::new()
        .name("rtest-agent-reader".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut last: Option<Instant> = None;
            loop {
                if let Some(last) = last {
                    shared.wait_after(last);
                }
                let got = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                last = Some(Instant::now());
                let failed = got.is_err();
                if tx.send(got).is_err() || failed {
                    break;
                }
            }
        })?;
    let _ = pacer.reader.set(thread.thread().clone());
    Ok((
        PacedReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        },
        pacer,
    ))
}

fn set_blocking(fd: &OwnedFd) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows, with flag
    // arguments only; no memory is passed.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the reader thread read, as an [`AsyncRead`]; it ends where the
/// pipe ended.
pub struct PacedReader {
    rx: mpsc::UnboundedReceiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl AsyncRead for PacedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.chunk.len() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // The pipe ended: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = out.remaining().min(this.chunk.len() - this.pos);
        out.put_slice(&this.chunk[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn pipe() -> (OwnedFd, std::fs::File) {
        let (r, w) = std::io::pipe().unwrap();
        (r.into(), std::fs::File::from(OwnedFd::from(w)))
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_and_the_end_of_the_pipe_ends_the_stream() {
        let (r, mut w) = pipe();
        let (mut reader, pacer) = reader(r).unwrap();
        pacer.set_batching(true);
        let writer = std::thread::spawn(move || {
            for i in 0..2000u32 {
                w.write_all(&i.to_be_bytes()).unwrap();
            }
        });
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        writer.join().unwrap();
        let expected: Vec<u8> = (0..2000u32).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn nothing_is_lost_across_batching_switched_on_and_off() {
        let (r, mut w) = pipe();
        let (mut reader, pacer) = reader(r).unwrap();
        let mut got = Vec::new();
        for round in 0..20u8 {
            pacer.set_batching(round % 2 == 0);
            // A burst (gathered while batching), then a quiet moment.
            for k in 0..10u8 {
                w.write_all(&[round, k]).unwrap();
            }
            let mut burst = [0u8; 20];
            reader.read_exact(&mut burst).await.unwrap();
            got.extend_from_slice(&burst);
        }
        drop(w);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let expected: Vec<u8> = (0..20u8)
            .flat_map(|r| (0..10u8).flat_map(move |k| [r, k]))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn ending_batching_ends_a_wait_in_progress() {
        let pacer = Arc::new(Pacer::default());
        pacer.set_batching(true);
        let _ = pacer.reader.set(std::thread::current());
        let other = pacer.clone();
        let stopper = std::thread::spawn(move || other.set_batching(false));
        // Far in the future: only the unpark can end this wait.
        let last = Instant::now() + Duration::from_secs(3600);
        pacer.wait_after(last);
        stopper.join().unwrap();
        assert!(!pacer.batching());
    }
}

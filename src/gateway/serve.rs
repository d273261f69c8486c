//! `rtest serve`: the socket server in Rust, for hosts that have rtest.
//!
//! Speaks exactly what `python/socketserver.py` speaks (see
//! [`super::socket`]): an HMAC-SHA256 challenge on a shared token, then one
//! JSON line naming the command, then the command's stdin from the client
//! and its stdout, stderr and exit status to the client as channel frames.
//! Peers that fail the challenge are logged and dropped before anything
//! they send is read as a command. Closing the connection kills the
//! process group.

use super::describe_exit;
use hmac::{Hmac, Mac};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(serde::Deserialize)]
struct Request {
    argv: Vec<String>,
    #[serde(default)]
    chdir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn log(msg: &str) {
    eprintln!("[rtest serve] {msg}");
}

fn nonce() -> String {
    use std::io::Read;
    let mut buf = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // Not reached on Linux; still unpredictable enough to be unique.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn verify(token: &[u8], nonce: &str, answer: &str) -> bool {
    let Some(bytes) = unhex(answer.trim()) else {
        return false;
    };
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(nonce.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

/// Accept connections forever.
pub async fn serve(listener: TcpListener, token: Option<Arc<Vec<u8>>>) -> std::io::Result<()> {
    loop {
        let (sock, addr) = listener.accept().await?;
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(sock, addr, token).await {
                log(&format!("{addr}: {e}"));
            }
        });
    }
}

async fn handle(
    sock: TcpStream,
    addr: SocketAddr,
    token: Option<Arc<Vec<u8>>>,
) -> std::io::Result<()> {
    let _ = sock.set_nodelay(true);
    let (read, mut write) = sock.into_split();
    let mut read = BufReader::new(read);
    let nonce = nonce();
    write
        .write_all(format!("RTEST1 {nonce}\n").as_bytes())
        .await?;
    let mut answer = String::new();
    let timeout = Duration::from_secs(30);
    // At most 1 KiB before the peer has proven anything.
    tokio::time::timeout(timeout, (&mut read).take(1024).read_line(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer to the challenge"))??;
    if let Some(t) = &token {
        if !verify(t, &nonce, &answer) {
            log(&format!("rejected {addr}: bad token"));
            write.write_all(b"DENIED\n").await?;
            return Ok(());
        }
    }
    write.write_all(b"OK\n").await?;
    let mut line = String::new();
    tokio::time::timeout(timeout, (&mut read).take(16 << 20).read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no command"))??;
    let req: Request = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::other(format!("bad command: {e}")))?;
    let Some(program) = req.argv.first() else {
        return Err(std::io::Error::other("empty command"));
    };
    log(&format!("{addr} runs {program}"));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&req.argv[1..])
        .envs(&req.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &req.chdir {
        let dir = match dir.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(rest))
                .unwrap_or_else(|| dir.into()),
            None => dir.into(),
        };
        let _ = std::fs::create_dir_all(&dir);
        cmd.current_dir(dir);
    }
    let (ftx, mut frx) = mpsc::unbounded_channel::<(u8, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((ch, data)) = frx.recv().await {
            let mut frame = Vec::with_capacity(data.len() + 5);
            frame.push(ch);
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
            frame.extend_from_slice(&data);
            if write.write_all(&frame).await.is_err() {
                break;
            }
            if ch == 3 {
                let _ = write.shutdown().await;
                break;
            }
        }
    });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = ftx.send((2, format!("cannot start {program:?}: {e}\n").into_bytes()));
            let _ = ftx.send((3, b"exit code 127".to_vec()));
            drop(ftx);
            let _ = writer.await;
            return Ok(());
        }
    };
    let pid = child.id().unwrap_or(0) as i32;
    let pump = |mut stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                ch: u8,
                tx: mpsc::UnboundedSender<(u8, Vec<u8>)>| {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((ch, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let out = child
        .stdout
        .take()
        .map(|s| pump(Box::new(s), 1, ftx.clone()));
    let err = child
        .stderr
        .take()
        .map(|s| pump(Box::new(s), 2, ftx.clone()));
    let mut stdin = child.stdin.take();
    let feed = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        // The client is gone: so is everything it started.
        if pid > 0 {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    });
    let status = child.wait().await;
    for task in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    let desc = match status {
        Ok(s) => describe_exit(&s),
        Err(e) => format!("lost the process: {e}"),
    };
    if pid > 0 {
        // SAFETY: as above; reaps nothing, only signals the group.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    let _ = ftx.send((3, desc.into_bytes()));
    drop(ftx);
    let _ = writer.await;
    feed.abort();
    Ok(())
}

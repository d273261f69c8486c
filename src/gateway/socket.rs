//! The `socket` gateway: a TCP connection to `rtest socketserver` (or
//! `rtest serve`), which starts the Python for us and relays its streams.
//!
//! Handshake: the server sends `RTEST1 <nonce>`; we answer with
//! HMAC-SHA256(token, nonce) in hex (or `-` without a token); it says `OK`
//! or `DENIED`. Then we send one JSON line naming the command to run. From
//! then on our bytes go to the process's stdin, and the server sends frames
//! of one channel byte (1 stdout, 2 stderr, 3 exit), a 4-byte big-endian
//! length and the data. Shutting the connection down kills the process.

use super::{Connection, Killer};
use crate::error::Error;
use hmac::{Hmac, Mac};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What to start on the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Request {
    /// The command line.
    pub argv: Vec<String>,
    /// Its working directory (`~` is expanded by the server).
    pub chdir: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// How long connecting and the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Request {
    /// Start `python` with rtest's bootstrap, as every worker is started.
    pub fn agent(python: &str, env: BTreeMap<String, String>) -> Self {
        Request {
            argv: vec![
                python.to_string(),
                "-u".into(),
                "-c".into(),
                crate::protocol::BOOTSTRAP.into(),
            ],
            chdir: None,
            env,
        }
    }
}

/// The answer to a challenge: HMAC-SHA256(token, nonce), hex.
pub fn answer(token: &[u8], nonce: &[u8]) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(nonce);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Connect, authenticate, and start `request` on the server.
pub async fn connect(
    host: &str,
    port: u16,
    token: Option<&[u8]>,
    request: &Request,
    timeout: Duration,
) -> Result<Connection, Error> {
    let target = format!("socket={host}:{port}");
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| Error::worker(format!("{target}: no answer within {}s", timeout.as_secs())))?
        .map_err(|e| Error::worker(format!("{target}: cannot connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    let handshake = async {
        read.read_line(&mut line).await?;
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| {
            Error::worker(format!(
                "{target}: no greeting within {}s",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| Error::worker(format!("{target}: {e}")))?;
    let nonce = line
        .trim_end()
        .strip_prefix("RTEST1 ")
        .ok_or_else(|| {
            Error::worker(format!(
                "{target}: not an rtest socket server (it said {:?})",
                line.trim_end()
            ))
        })?
        .to_string();
    let reply = match token {
        Some(t) => answer(t, nonce.as_bytes()),
        None => "-".to_string(),
    };
    let io = |e: std::io::Error| Error::worker(format!("{target}: {e}"));
    write
        .write_all(format!("{reply}\n").as_bytes())
        .await
        .map_err(io)?;
    line.clear();
    tokio::time::timeout(timeout, read.read_line(&mut line))
        .await
        .map_err(|_| {
            Error::worker(format!(
                "{target}: no answer to the token within {}s",
                timeout.as_secs()
            ))
        })?
        .map_err(io)?;
    if line.trim_end() != "OK" {
        return Err(Error::worker(format!(
            "{target} refused the connection: wrong or missing token (set RTEST_TOKEN or RTEST_TOKEN_FILE to the server's token)"
        )));
    }
    let mut json = serde_json::to_vec(request).unwrap_or_default();
    json.push(b'\n');
    write.write_all(&json).await.map_err(io)?;
    write.flush().await.map_err(io)?;

    let (mut out_tx, out_rx) = tokio::io::duplex(1 << 20);
    let (mut err_tx, err_rx) = tokio::io::duplex(1 << 16);
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let how = loop {
            let mut header = [0u8; 5];
            if read.read_exact(&mut header).await.is_err() {
                break "connection to the socket server closed".to_string();
            }
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut data = vec![0u8; len];
            if read.read_exact(&mut data).await.is_err() {
                break "connection to the socket server closed".to_string();
            }
            match header[0] {
                1 => {
                    if out_tx.write_all(&data).await.is_err() {
                        break "worker output was not read".to_string();
                    }
                }
                2 => {
                    let _ = err_tx.write_all(&data).await;
                }
                _ => break String::from_utf8_lossy(&data).into_owned(),
            }
        };
        drop(out_tx);
        drop(err_tx);
        let _ = exit_tx.send(how);
    });
    Ok(Connection {
        reader: Box::new(out_rx),
        writer: Box::new(write),
        stderr: Some(Box::new(err_rx)),
        exit: Box::pin(async move {
            exit_rx
                .await
                .unwrap_or_else(|_| "connection lost".to_string())
        }),
        killer: Killer::Socket(fd),
        agent_started: false,
        pacer: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_answer_is_stable_hex() {
        // RFC 4231 test case 2
        assert_eq!(
            super::answer(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

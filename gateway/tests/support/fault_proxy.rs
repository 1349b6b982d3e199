//! A TCP fault proxy on loopback, between a replica and the API server: it forwards every byte the
//! client sends, and while armed it drops every byte the server answers. A connection that lost a
//! reply stays half-open — its later replies are dropped too — until the client gives up on it, like
//! a connection whose peer vanished behind a NAT.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
struct State {
    dropping: AtomicBool,
    dropped_bytes: AtomicU64,
    forwarded_up: AtomicU64,
    /// Connections get increasing IDs; those below this one are half-open.
    next_id: AtomicU64,
    stall_below: AtomicU64,
    /// Connections below this ID are closed at the next `reset` signal.
    cut_below: AtomicU64,
    /// While on, new connections are closed as soon as they are accepted (the server is down).
    refusing: AtomicBool,
    reset: tokio::sync::watch::Sender<u64>,
    /// One-shot: the first connection that sends a chunk of at least this many bytes (a request
    /// with a body, e.g. a create) gets no reply to it, nor anything after (0 = off).
    drop_after_large: AtomicU64,
    /// The connection chosen by `drop_after_large` (u64::MAX = none).
    doomed: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            dropping: AtomicBool::new(false),
            dropped_bytes: AtomicU64::new(0),
            forwarded_up: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            stall_below: AtomicU64::new(0),
            cut_below: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            reset: tokio::sync::watch::channel(0).0,
            drop_after_large: AtomicU64::new(0),
            doomed: AtomicU64::new(u64::MAX),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st = st.clone();
                let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        pipe(client, server, st, id).await;
                    }
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    /// While on, every reply byte is dropped (and the connections it was meant for stay half-open).
    pub fn drop_replies(&self, on: bool) {
        self.state.dropping.store(on, Ordering::SeqCst);
    }

    /// Forwards the next request of at least `min_bytes` (a create carries the whole RR) and drops its
    /// reply, leaving that connection half-open; every other connection works.
    pub fn drop_reply_to_next_request_of(&self, min_bytes: u64) {
        self.state.doomed.store(u64::MAX, Ordering::SeqCst);
        self.state
            .drop_after_large
            .store(min_bytes, Ordering::SeqCst);
    }

    /// Ends the fault: replies flow again on new connections, and the half-open ones are closed.
    pub fn restore(&self) {
        self.drop_replies(false);
        self.state.stall_below.store(0, Ordering::SeqCst);
        self.state.reset.send_modify(|e| *e += 1);
    }

    /// Every connection open now turns half-open (its replies are dropped from now on, a watch
    /// stream on it goes silent); connections opened later work.
    pub fn stall_open_connections(&self) {
        let next = self.state.next_id.load(Ordering::SeqCst);
        self.state.stall_below.store(next, Ordering::SeqCst);
    }

    /// Closes every connection open now (a watch on it ends with an error); later ones work.
    pub fn cut_open_connections(&self) {
        let next = self.state.next_id.load(Ordering::SeqCst);
        self.state.cut_below.store(next, Ordering::SeqCst);
        self.state.reset.send_modify(|e| *e += 1);
    }

    /// While on, every new connection is closed at once, as by a server that is down.
    pub fn refuse_connections(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.state.dropped_bytes.load(Ordering::SeqCst)
    }

    pub fn forwarded_up(&self) -> u64 {
        self.state.forwarded_up.load(Ordering::SeqCst)
    }

    /// A kubeconfig like `original` whose server is this proxy (same CA, same credentials).
    pub fn kubeconfig(&self, original: &std::path::Path, out: &std::path::Path) {
        let text = std::fs::read_to_string(original).unwrap();
        let mut replaced = String::new();
        for line in text.lines() {
            match line.trim().strip_prefix("server: ") {
                Some(_) => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    replaced.push_str(&format!("{indent}server: https://{}\n", self.addr));
                }
                None => {
                    replaced.push_str(line);
                    replaced.push('\n');
                }
            }
        }
        std::fs::write(out, replaced).unwrap();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `host:port` of the server named by a kubeconfig.
pub fn server_of(kubeconfig: &std::path::Path) -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

async fn pipe(client: TcpStream, server: TcpStream, st: Arc<State>, id: u64) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = {
        let st = st.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        st.forwarded_up.fetch_add(n as u64, Ordering::SeqCst);
                        let min = st.drop_after_large.load(Ordering::SeqCst);
                        if min > 0
                            && n as u64 >= min
                            && st
                                .drop_after_large
                                .compare_exchange(min, 0, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok()
                        {
                            st.doomed.store(id, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sw.shutdown().await;
        }
    };
    let mut reset = st.reset.subscribe();
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut half_open = false;
        loop {
            tokio::select! {
                r = sr.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        half_open |= st.dropping.load(Ordering::SeqCst)
                            || id < st.stall_below.load(Ordering::SeqCst)
                            || id == st.doomed.load(Ordering::SeqCst);
                        if half_open {
                            st.dropped_bytes.fetch_add(n as u64, Ordering::SeqCst);
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                // `restore` closes the half-open connections, as a NAT or a peer's reboot finally
                // would; `cut_open_connections` closes the ones it names.
                _ = reset.changed() => {
                    if half_open || id < st.cut_below.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        }
        if half_open {
            // The client hears nothing more until it gives up or the fault is restored.
            let _ = reset.changed().await;
        } else {
            let _ = cw.shutdown().await;
        }
    };
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}

//! The physical limit of the duplicate path on this machine: a bare hyper 1 HTTP/1.1 server (tokio
//! multi-thread runtime, keep-alive, `TCP_NODELAY`, like the gateway's accept loop) that reads the
//! whole request body and answers a canned response — the gateway's own duplicate answer, byte for
//! byte: same status, same JSON body, same headers. It runs as its own process
//! (`namegate-bench bare-server`), as the gateway does.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the bare server answers to every request.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Binds `listen`, prints `LISTENING <addr>` on stdout, and serves until killed.
pub async fn run(listen: std::net::SocketAddr, canned: Canned) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {addr}")?;
        out.flush()?;
    }
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let canned = canned.clone();
                async move {
                    // Read the whole body, as the gateway must before it can decode it.
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(canned.body));
                    *resp.status_mut() = canned.status;
                    for (k, v) in canned.headers {
                        resp.headers_mut().insert(k, v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

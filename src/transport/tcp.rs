//! TCP connections: accept, frame by Content-Length, answer CRLFCRLF keep-alives,
//! write queued messages, close when idle. TLS connections use the same loop once
//! their handshake is done ([`super::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::{Flow, Handler, Transport};
use crate::sip::{memmem, stream_frame_len, Message, ParseError};

/// Accepts connections on a TCP listener, or on a TLS one when `tls` is given (the
/// handshake then runs in the connection's own task).
pub(super) async fn accept_loop(
    t: Transport,
    l: TcpListener,
    handler: Arc<dyn Handler>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        match l.accept().await {
            Ok((stream, remote)) => {
                // over a cap: dropping the stream closes it before anything is spent on it
                if let Some(permit) = t.admit(remote) {
                    t.register_conn(
                        stream,
                        remote,
                        true,
                        handler.clone(),
                        Some(permit),
                        tls.clone(),
                    );
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads, frames and writes one stream connection (TCP, or TLS after its handshake)
/// until it closes, fails or idles out.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_conn<R, W>(
    t: Transport,
    mut rd: R,
    mut wr: W,
    id: u64,
    remote: SocketAddr,
    local: SocketAddr,
    inbound: bool,
    tls: bool,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    handler: Arc<dyn Handler>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                // queued messages first: the last answer before a close (513, 400) must
                // leave before the closed pong channel ends this loop
                biased;
                // flush: TLS holds written records until flushed (free on TCP)
                m = rx.recv() => match m {
                    Some(m) => if wr.write_all(&m).await.is_err() || wr.flush().await.is_err() { break },
                    None => break,
                },
                p = pong_rx.recv() => match p {
                    Some(()) => if wr.write_all(b"\r\n").await.is_err() || wr.flush().await.is_err() { break },
                    None => break,
                },
            }
        }
        let _ = wr.shutdown().await;
    });
    let flow = Flow::Tcp {
        conn: id,
        remote,
        inbound,
        tls,
    };
    let max = t.config().max_message_size;
    let idle = t.config().tcp_idle_timeout;
    // a connection that has not sent a whole message by then is closed, however it
    // trickles bytes: held-open empty connections would use up the connection caps
    let first_deadline = tokio::time::Instant::now() + t.config().first_message_timeout;
    let mut framed_one = !inbound;
    // bytes at the start of `buf` already searched for the end of the header
    let mut scanned = 0;
    let mut buf = BytesMut::with_capacity(8192);
    'outer: loop {
        let wait = if framed_one {
            idle
        } else {
            idle.min(first_deadline.saturating_duration_since(tokio::time::Instant::now()))
        };
        match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            // a phone registered on this connection can only be reached through it
            Err(_) if inbound && framed_one && handler.keep_open(&flow) => continue,
            Err(_) => break,
            Ok(Ok(_)) => t.liveness().touch(flow),
        }
        loop {
            // keep-alives: CRLFCRLF ping gets a CRLF pong (RFC 5626 §3.5.1); lone CRLFs are skipped
            let lead = buf
                .iter()
                .take_while(|&&c| c == b'\r' || c == b'\n')
                .count();
            if lead > 0 {
                let ping = buf[..lead].windows(4).any(|w| w == b"\r\n\r\n");
                if lead == buf.len() && !ping {
                    // maybe the first half of a ping: wait for more bytes
                    break;
                }
                if ping {
                    let _ = pong_tx.send(());
                }
                buf.advance(lead);
            }
            if buf.is_empty() {
                break;
            }
            if buf.len() <= max && memmem(&buf[scanned..], b"\r\n\r\n").is_none() {
                // header not complete: search only the new bytes next time, so a
                // header trickled byte by byte costs linear, not quadratic, time
                scanned = buf.len().saturating_sub(3);
                break;
            }
            match stream_frame_len(&buf, max) {
                Ok(Some(len)) => {
                    let msg = buf.split_to(len).freeze();
                    scanned = 0;
                    framed_one = true;
                    handler.on_message(msg, flow, local);
                }
                Ok(None) => break,
                Err(e) => {
                    // the stream cannot be re-synchronized after a framing error
                    tracing::debug!(%remote, error = %e, "closing tcp connection after framing error");
                    if let Some(answer) = framing_error_answer(&buf, &e, remote) {
                        let _ = t.send(&flow, answer);
                    }
                    break 'outer;
                }
            }
        }
    }
    t.drop_conn(id, remote);
    handler.on_closed(&flow);
    drop(pong_tx);
    let _ = writer.await;
}

/// The answer to a stream message that cannot be framed (too large, bad
/// Content-Length), when its header is complete and names a request that can be
/// answered (`513 Message Too Large`, `400 …`); otherwise none.
fn framing_error_answer(buf: &[u8], e: &ParseError, remote: SocketAddr) -> Option<Bytes> {
    let end = memmem(buf, b"\r\n\r\n")?;
    let head = Bytes::copy_from_slice(&buf[..end + 4]);
    let msg = Message::parse(head, true).ok()?;
    if !msg.answerable() {
        return None;
    }
    let reason = e.to_string();
    Some(crate::sip::response(
        &msg,
        remote,
        e.status(),
        &reason,
        &[],
        None,
    ))
}

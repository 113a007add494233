//! TCP connections: accept, frame by Content-Length, answer CRLFCRLF keep-alives,
//! write queued messages, close when idle.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Flow, Handler, Transport};
use crate::sip::message::stream_frame_len;

pub(super) async fn accept_loop(t: Transport, l: TcpListener, handler: Arc<dyn Handler>) {
    loop {
        match l.accept().await {
            Ok((stream, remote)) => {
                t.register_conn(stream, remote, true, handler.clone());
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_conn(
    t: Transport,
    stream: TcpStream,
    id: u64,
    remote: SocketAddr,
    local: SocketAddr,
    inbound: bool,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    handler: Arc<dyn Handler>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => if wr.write_all(&m).await.is_err() { break },
                    None => break,
                },
                p = pong_rx.recv() => match p {
                    Some(()) => if wr.write_all(b"\r\n").await.is_err() { break },
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
    };
    let max = t.config().max_message_size;
    let idle = t.config().tcp_idle_timeout;
    let mut buf = BytesMut::with_capacity(8192);
    'outer: loop {
        match tokio::time::timeout(idle, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
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
            match stream_frame_len(&buf, max) {
                Ok(Some(len)) => {
                    let msg = buf.split_to(len).freeze();
                    handler.on_message(msg, flow, local);
                }
                Ok(None) => break,
                Err(e) => {
                    // the stream cannot be re-synchronized after a framing error
                    tracing::debug!(%remote, error = %e, "closing tcp connection after framing error");
                    let answer = Bytes::from(format!(
                        "SIP/2.0 {} {}\r\nContent-Length: 0\r\n\r\n",
                        e.status(),
                        e
                    ));
                    let _ = t.send(&flow, answer);
                    break 'outer;
                }
            }
        }
    }
    t.drop_conn(id, remote);
    drop(pong_tx);
    let _ = writer.await;
}

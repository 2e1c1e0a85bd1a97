//! Noticing a client that went away before its answer (TESTPLAN F6). actix does not cancel a
//! handler when its HTTP/1 connection closes, so the data plane watches the connection itself:
//! a duplicate of the socket, kept with the connection, is peeked every [`PROBE`] while a request
//! waits for its upstream or relays a stream. A peer that closed (FIN or reset) ends the request:
//! the upstream call is dropped (its connection closed, so the upstream stops generating) and
//! the usage record says 499 `client_disconnected` with what was counted.

use std::any::Any;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Extensions;

/// How often a waiting request looks at its client's connection.
const PROBE: Duration = Duration::from_millis(200);

/// The client connection of a request, for noticing that it closed.
#[derive(Clone, Debug)]
pub struct ClientConn(Arc<std::net::TcpStream>);

impl ClientConn {
    /// Whether the peer has closed its side (or reset the connection).
    pub fn is_gone(&self) -> bool {
        let mut b = [0u8; 1];
        match self.0.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        }
    }

    /// Resolves once the peer has closed its side.
    pub async fn gone(self) {
        let mut tick = tokio::time::interval(PROBE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.is_gone() {
                return;
            }
        }
    }
}

/// `HttpServer::on_connect`: keeps a duplicate of each plain TCP connection's socket with the
/// connection (closed with it), for [`ClientConn`].
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let dup = std::net::TcpStream::from(fd);
            // The socket is non-blocking already (tokio's); a peek must never wait.
            if dup.set_nonblocking(true).is_ok() {
                ext.insert(ClientConn(Arc::new(dup)));
            }
        }
        Err(e) => tracing::debug!(error = %e, "Cannot watch a client connection for disconnects."),
    }
}

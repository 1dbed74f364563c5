//! The HTTP listener, with one extra: a handler can learn that its client went away. hyper
//! does not cancel a request whose client disconnected while the handler waits, so a daemon
//! killed during a long-poll would still be handed a job. The acceptor keeps a duplicate of
//! every connection's socket, keyed by peer address, and `peer_closed` watches it for EOF.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::slow_clients::{ConnectionClock, Deadlines};

/// Live connections by peer address: a second handle on each socket, for watching only.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<SocketAddr, Arc<TcpStream>>>>,
}

impl Connections {
    /// Resolves once the client at `peer` has closed its side (or the connection is gone).
    /// Never resolves for unknown peers (e.g. requests served in tests without a socket).
    pub async fn peer_closed(&self, peer: Option<SocketAddr>) {
        let watched = peer.and_then(|p| self.inner.lock().expect("not poisoned").get(&p).cloned());
        let Some(stream) = watched else {
            return std::future::pending().await;
        };
        let mut probe = [0u8; 1];
        loop {
            match stream.peek(&mut probe).await {
                Ok(0) | Err(_) => return,
                // The client sent more bytes (a pipelined request): it is alive; look later.
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Accepts TCP connections and registers a watch handle for each.
pub struct WatchedAcceptor {
    listener: TcpListener,
    local: LocalAddr,
    connections: Connections,
    deadlines: Deadlines,
}

impl WatchedAcceptor {
    pub async fn bind(addr: SocketAddr, connections: Connections) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = LocalAddr(listener.local_addr()?.into());
        Ok(Self {
            listener,
            local,
            connections,
            deadlines: Deadlines::default(),
        })
    }

    /// Header and idle deadlines for every connection accepted from now on.
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The connection hyper reads and writes; dropping it unregisters the watch handle.
pub struct WatchedStream {
    stream: TcpStream,
    peer: SocketAddr,
    connections: Connections,
    clock: ConnectionClock,
    /// An automatic error answer of hyper being written in its JSON form: the bytes, how many
    /// went out, and how many hyper's own write (reported as done at the end) had.
    rewritten: Option<(Vec<u8>, usize, usize)>,
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        self.connections
            .inner
            .lock()
            .expect("not poisoned")
            .remove(&self.peer);
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.clock.poll_expired(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            self.clock.on_read(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none() {
            self.rewritten =
                crate::api::error::rewrite_automatic_error(buf).map(|bytes| (bytes, 0, buf.len()));
        }
        if let Some((bytes, mut at, claimed)) = self.rewritten.take() {
            while at < bytes.len() {
                match Pin::new(&mut self.stream).poll_write(cx, &bytes[at..]) {
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.rewritten = Some((bytes, at, claimed));
                        return Poll::Pending;
                    }
                }
            }
            self.clock.on_write(&buf[..claimed.min(buf.len())]);
            return Poll::Ready(Ok(claimed));
        }
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.clock.on_write(&buf[..n]);
        }
        written
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Acceptor for WatchedAcceptor {
    type Io = WatchedStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local.clone()]
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            let _ = stream.set_nodelay(true);
            // A duplicate descriptor of the same socket, registered separately with the reactor.
            let watch = match stream.into_std().and_then(|s| Ok((s.try_clone()?, s))) {
                Ok((watch, original)) => {
                    (TcpStream::from_std(watch), TcpStream::from_std(original))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare an accepted connection");
                    continue;
                }
            };
            let (Ok(watch), Ok(stream)) = watch else {
                tracing::warn!("cannot register an accepted connection");
                continue;
            };
            self.connections
                .inner
                .lock()
                .expect("not poisoned")
                .insert(peer, Arc::new(watch));
            let io = WatchedStream {
                stream,
                peer,
                connections: self.connections.clone(),
                clock: ConnectionClock::new(self.deadlines),
                rewritten: None,
            };
            return Ok((
                io,
                self.local.clone(),
                RemoteAddr(peer.into()),
                Scheme::HTTP,
            ));
        }
    }
}

//! The listener: at most `max_connections` connections open at once, and a deadline for
//! each request's headers (hyper has one only with a timer, which `axum::serve` does not
//! give it). A connection that has not finished sending its headers by then is closed.
//!
//! The clock runs from the accept, and again from each answer (so it also closes idle
//! keep-alive connections); [`headers_received`] stops it while a request is handled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Accepts TCP connections while fewer than the limit are open.
pub struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    header_timeout: Duration,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, max_connections: usize, header_timeout: Duration) -> Self {
        GuardedListener { inner, slots: Arc::new(Semaphore::new(max_connections)), header_timeout }
    }
}

/// What a request knows of its connection: the header clock to stop.
#[derive(Clone, Debug)]
pub struct Connection {
    clock: Arc<HeaderClock>,
}

/// Whether the connection is waiting for headers, and until when.
#[derive(Debug)]
struct HeaderClock {
    timeout: Duration,
    waiting: AtomicBool,
    deadline: Mutex<Instant>,
}

impl HeaderClock {
    fn start(&self) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + self.timeout;
        self.waiting.store(true, Ordering::Release);
    }

    /// The deadline, while headers are awaited.
    fn deadline(&self) -> Option<Instant> {
        self.waiting.load(Ordering::Acquire).then(|| *self.deadline.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        let slot = Arc::clone(&self.slots).acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((tcp, peer)) => {
                    // Small request/response exchanges: do not let Nagle's algorithm hold them back.
                    let _ = tcp.set_nodelay(true);
                    let clock = Arc::new(HeaderClock {
                        timeout: self.header_timeout,
                        waiting: AtomicBool::new(false),
                        deadline: Mutex::new(Instant::now()),
                    });
                    clock.start();
                    let sleep = Box::pin(tokio::time::sleep_until(Instant::now() + self.header_timeout));
                    return (GuardedStream { tcp, clock, sleep, _slot: slot }, peer);
                }
                // Out of file descriptors or a connection reset before accept: wait a
                // little rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The bound address (the server reads it from the std listener before this one
    /// exists, so this is for axum's benefit only).
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Connection { clock: Arc::clone(&stream.io().clock) }
    }
}

/// Stops the header clock of `request`'s connection; returns a guard that restarts it
/// when the request is answered.
pub fn headers_received(request: &Request) -> Option<Answered> {
    let ConnectInfo(connection) = request.extensions().get::<ConnectInfo<Connection>>()?;
    connection.clock.waiting.store(false, Ordering::Release);
    Some(Answered(Arc::clone(&connection.clock)))
}

/// Restarts the header clock when dropped (the request is answered or abandoned).
pub struct Answered(Arc<HeaderClock>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.start();
    }
}

/// A TCP stream whose reads fail once its header deadline has passed, and which holds
/// one of the listener's connection slots.
pub struct GuardedStream {
    tcp: TcpStream,
    clock: Arc<HeaderClock>,
    sleep: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.clock.deadline() {
            if this.sleep.deadline() != deadline {
                this.sleep.as_mut().reset(deadline);
            }
            // Polling the timer also wakes this task at the deadline if no byte arrives.
            if this.sleep.as_mut().poll(cx).is_ready() {
                let why = format!("request headers not received within {} ms", this.clock.timeout.as_millis());
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
            }
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

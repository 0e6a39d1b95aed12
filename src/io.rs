//! [`SendTimeout`]: close connections whose peer stops accepting bytes.
//!
//! A client that stops reading (or a peer that vanished while data was in flight) leaves the
//! server's writes pending forever. The server then never polls the response body again, so
//! nothing inside the body, the stream or a [`Hub`](crate::hub::Hub) can notice: the place to
//! notice is the connection itself. `SendTimeout` wraps a connection's IO and fails a write that
//! has made no progress for the given time; the server then closes the connection and drops the
//! body (and with it the subscription).
//!
//! A write makes progress when the kernel takes bytes, which is not the same as the peer
//! taking them: Linux reports a TCP socket writable only once about a third of its send buffer
//! has drained, and autotunes that buffer up to `net.ipv4.tcp_wmem` (4 MiB by default), so a
//! client reading steadily can leave a write pending for as long as it takes to drain over a
//! megabyte. [`tcp_notsent_lowat`] bounds the unsent part of the queue: then a write waits only
//! while the peer's TCP window is shut, and the timer measures the peer's progress.
//! `serve::Server` sets it on every connection (Linux).
//!
//! A peer that vanished without closing while the stream is idle is a different case: the
//! keep-alive writes are accepted by the kernel and never block, so no write ever stalls. The
//! kernel's `TCP_USER_TIMEOUT` closes such a connection once sent data stays unacknowledged for
//! the given time; set it with `tcp_user_timeout` (feature `tcp`, Linux), or use
//! `axum::SendTimeoutListener` (feature `axum`), which sets both.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tower_sse::io::SendTimeout;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (tcp, _) = listener.accept().await?;
//! let io = SendTimeout::new(tcp, Duration::from_secs(30));
//! // serve `hyper_util::rt::TokioIo::new(io)` with hyper as usual
//! # let _ = io; Ok(()) }
//! ```

use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future as _,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

pin_project! {
    /// Wraps a connection's IO and fails writes that make no progress for too long; see the
    /// [module docs](self).
    ///
    /// The timer is armed when a write (or flush) first returns `Pending`, and disarmed by any
    /// write that makes progress: the connection is cut only when the wrapped IO took no byte
    /// for the whole timeout. Reads pass through untimed.
    ///
    /// What that says about the peer depends on the IO. On a Linux TCP socket with a small
    /// unsent queue ([`tcp_notsent_lowat`], as `serve::Server` sets it), a write waits only
    /// while the peer's window is shut, so a client that empties its receive buffer within
    /// every timeout is never cut, however slowly it reads. On a socket left to the kernel's
    /// defaults (and on other systems) a write also waits for the kernel's send buffer to
    /// drain by about a third, so a client that reads less than that within the timeout can
    /// be cut while alive.
    pub struct SendTimeout<T> {
        #[pin]
        inner: T,
        timeout: Duration,
        // Boxed and created on the first stall, so an idle wrapper costs no timer.
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<T> SendTimeout<T> {
    /// Wraps `inner`; a write pending for `timeout` fails with `io::ErrorKind::TimedOut`.
    /// The timeout saturates at 2³¹−1 ms (about 24.8 days).
    pub fn new(inner: T, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout: crate::delay::saturate(timeout),
            sleep: None,
            armed: false,
        }
    }

    /// A reference to the wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// A mutable reference to the wrapped IO.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Takes the wrapped IO out.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn guard<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        if let Poll::Ready(result) = op(this.inner, cx) {
            *this.armed = false;
            return Poll::Ready(result);
        }
        let deadline = Instant::now() + *this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !*this.armed {
            sleep.as_mut().reset(deadline);
            *this.armed = true;
        }
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer accepted no bytes within the send timeout",
        )))
    }
}

impl<T> fmt::Debug for SendTimeout<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendTimeout")
            .field("inner", &std::any::type_name::<T>())
            .field("timeout", &self.timeout)
            .field("stalled", &self.armed)
            .finish()
    }
}

impl<T: AsyncRead> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// Sets `TCP_USER_TIMEOUT` on a TCP connection (feature `tcp`; Linux and Android): the kernel
/// closes the connection when data it sent stays unacknowledged for `timeout`, which is how a
/// peer that vanished without closing (power loss, a dropped NAT entry) is noticed on an idle SSE
/// stream whose keep-alive writes never block. Keep `timeout` above the keep-alive interval.
/// The timeout saturates at 2³¹−1 ms (about 24.8 days), the most the kernel takes.
///
/// # Errors
///
/// The error of the `setsockopt` call.
#[cfg(all(feature = "tcp", any(target_os = "linux", target_os = "android")))]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub fn tcp_user_timeout(stream: &tokio::net::TcpStream, timeout: Duration) -> io::Result<()> {
    socket2::SockRef::from(stream).set_tcp_user_timeout(Some(crate::delay::saturate(timeout)))
}

/// Bounds the unsent bytes a TCP connection's kernel queue may hold (`TCP_NOTSENT_LOWAT`;
/// feature `tcp`, Linux and Android): a write takes bytes only while fewer than `bytes` are
/// waiting to be sent, and the socket turns writable again when fewer than half are. Bytes
/// leave that queue only as the peer's TCP window opens, so a [`SendTimeout`] around the
/// connection then times the peer rather than the kernel's buffer, and a slow client's
/// backlog stays in the application (where a stream can coalesce or drop it) instead of in
/// megabytes of kernel memory. Sent bytes not yet acknowledged are not counted.
///
/// # Errors
///
/// The error of the `setsockopt` call.
#[cfg(all(feature = "tcp", any(target_os = "linux", target_os = "android")))]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub fn tcp_notsent_lowat(stream: &tokio::net::TcpStream, bytes: u32) -> io::Result<()> {
    socket2::SockRef::from(stream).set_tcp_notsent_lowat(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[cfg(all(feature = "tcp", any(target_os = "linux", target_os = "android")))]
    #[tokio::test]
    async fn tcp_notsent_lowat_is_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tcp_notsent_lowat(&client, 16 * 1024).unwrap();
        let set = socket2::SockRef::from(&client).tcp_notsent_lowat().unwrap();
        assert_eq!(set, 16 * 1024);
    }

    #[cfg(all(feature = "tcp", any(target_os = "linux", target_os = "android")))]
    #[tokio::test]
    async fn tcp_user_timeout_is_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tcp_user_timeout(&client, Duration::from_millis(45_500)).unwrap();
        let set = socket2::SockRef::from(&client).tcp_user_timeout().unwrap();
        assert_eq!(set, Some(Duration::from_millis(45_500)));
        tcp_user_timeout(&client, Duration::MAX).unwrap();
        let set = socket2::SockRef::from(&client).tcp_user_timeout().unwrap();
        assert_eq!(set, Some(Duration::from_millis(2_147_483_647)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_timeout_never_overflows_the_clock() {
        let (client, _server) = tokio::io::duplex(64);
        let mut io = SendTimeout::new(client, Duration::MAX);
        io.write_all(&[0; 64]).await.unwrap();
        // The stalled write arms the timer without panicking, and waits it out.
        let stalled = tokio::time::timeout(Duration::from_secs(3600), io.write_all(&[0; 1])).await;
        assert!(stalled.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stuck_for_the_timeout_fails() {
        // A 64-byte pipe whose reader never reads.
        let (client, _server) = tokio::io::duplex(64);
        let mut io = SendTimeout::new(client, Duration::from_secs(5));
        io.write_all(&[0; 64]).await.unwrap();
        let start = Instant::now();
        let err = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_rearms_the_timer() {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(64);
        let mut io = SendTimeout::new(client, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            // Drain 16 bytes every 4 s: always within the timeout.
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 256 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += server.read(&mut buf).await.unwrap();
            }
            total
        });
        io.write_all(&[0; 256]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 256);
    }
}

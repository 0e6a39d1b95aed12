//! What the load generators (`loadgen`, `cluster_load`) share: clocks and /proc readings, an SSE
//! connection from a chosen source address, and the publishing POST.

use std::{
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

/// Wall-clock nanoseconds: publishers stamp events with it, clients subtract it.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The send timestamp of an event whose data is `T<ns>|...`.
pub fn timestamp(data: &str) -> Option<u64> {
    data.strip_prefix('T')?.split('|').next()?.parse().ok()
}

/// Resident memory of a process, in KiB.
pub fn proc_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// (utime, stime) of a process, in microseconds.
pub fn proc_cpu_us(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports these in USER_HZ, which is 100 on every mainstream configuration.
    (ticks(11) * 10_000, ticks(12) * 10_000)
}

/// Connects from `source`, asks for `GET /sse` and reads the response head; returns the
/// connection and the body bytes read with the head.
pub async fn open_stream(
    server: SocketAddr,
    source: IpAddr,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(
        format!("GET /sse HTTP/1.1\r\nhost: {server}\r\naccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((tcp, head.split_off(at + 4)));
        }
    }
}

/// `POST /publish` with `body` on a kept-alive connection (made on first use); returns the
/// response body.
pub async fn publish(
    server: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
    body: &str,
) -> Vec<u8> {
    if conn.is_none() {
        let tcp = TcpStream::connect(server)
            .await
            .expect("connect for publishing");
        tcp.set_nodelay(true).unwrap();
        *conn = Some(BufReader::new(tcp));
    }
    let stream = conn.as_mut().unwrap();
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: {server}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut rest = vec![0; length];
    stream.read_exact(&mut rest).await.unwrap();
    rest
}

//! A `redis-server` of the test's own, on a free loopback port, that it can kill and restart.

use super::free_port;
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `redis-server` without persistence; killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one. Tests that need it are `#[ignore = "needs redis-server"]`, so a plain
    /// `cargo test` reports them as ignored; run with `-- --ignored` (as `.ci/run` does), a
    /// missing `redis-server` fails the test with the line that installs it.
    pub async fn start() -> RedisServer {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!("redis-server is not installed: apt-get install -y redis-server");
        }
        // A port below the kernel's ephemeral range (32768 and up), so that no outgoing
        // connection of a parallel test can hold it when the server binds or binds again.
        for attempt in 0..20u64 {
            let port = free_port(attempt);
            let mut server = RedisServer { port, child: None };
            if server.try_start().await {
                return server;
            }
        }
        panic!("no free port for redis-server");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Kills the server at once (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        for _ in 0..20 {
            if self.try_start().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server could not listen on port {} again", self.port);
    }

    /// Starts the server on its port; false if it could not listen there.
    async fn try_start(&mut self) -> bool {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..400 {
            if let Some(child) = &mut self.child {
                if child.try_wait().ok().flatten().is_some() {
                    // It exited: the port was taken.
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut conn) = self.client().get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// A connection of the test's own, for admin commands.
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP proxy in front of a server that holds back every reply by `delay`, in order:
/// a node connected through it lags behind the server (and behind nodes connected directly).
pub struct LaggingProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LaggingProxy {
    pub async fn start(upstream: u16, delay: Duration) -> LaggingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, delay));
            }
        });
        LaggingProxy { port, task }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }
}

impl Drop for LaggingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: tokio::net::TcpStream, upstream: u16, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let (held, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let replies = tokio::spawn(async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = server_read.read(&mut buf).await {
        if n == 0
            || held
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(held);
    let _ = replies.await;
    requests.abort();
}

//! The floor under a cached token: a bare hyper server on a Unix socket
//! that answers every request with the same bytes the agent sends for a
//! cached token (its body and headers), and nothing else: no peer
//! credentials, query, grant, cache, audit or metrics. It runs as a process
//! of its own (`access-token-bench floor-server`, hidden), on a runtime
//! built as the agent builds its own, so the two differ only in the agent's
//! work.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

#[derive(clap::Args)]
pub struct FloorArgs {
    /// The socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// The file whose bytes every answer carries.
    #[arg(long)]
    body: PathBuf,
}

/// Serves until killed. The agent's runtime: tokio's multi-threaded one
/// with its default of one worker per core.
pub fn serve(args: &FloorArgs) -> bool {
    let body = Bytes::from(std::fs::read(&args.body).expect("the floor's body file"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let _ = std::fs::remove_file(&args.socket);
        let listener = UnixListener::bind(&args.socket).expect("bind the floor's socket");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let mut response = Response::new(Full::new(body.clone()));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A floor server running as a child process, killed when dropped.
pub struct Floor {
    child: Child,
    socket: PathBuf,
}

impl Floor {
    /// Starts a floor on `socket` answering with `body`, kept in `dir`;
    /// returns once the socket accepts connections.
    pub fn start(dir: &Path, socket: &Path, body: &[u8]) -> Floor {
        Floor::start_with(dir, socket, body, |command| command)
    }

    /// [`Floor::start`] after `wrap` has had its say on the command (run
    /// under valgrind, say).
    pub fn start_with(
        dir: &Path,
        socket: &Path,
        body: &[u8],
        wrap: impl FnOnce(Command) -> Command,
    ) -> Floor {
        let body_file = dir.join("floor-body");
        std::fs::write(&body_file, body).expect("write the floor's body");
        let mut command = Command::new(std::env::current_exe().expect("the bench's own path"));
        command
            .arg("floor-server")
            .arg("--socket")
            .arg(socket)
            .arg("--body")
            .arg(&body_file);
        let child = wrap(command)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the floor server");
        // Under valgrind, starting takes seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "the floor server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Floor {
            child,
            socket: socket.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

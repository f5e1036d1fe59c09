//! Support for tests that start real peers (a Kafka-protocol broker, an
//! S3-compatible server): not part of chorus's interface.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Spawns `command` so that it dies with the test process, however that
/// ends: PR_SET_PDEATHSIG fires when the thread that started it ends, so it
/// is started by a thread that lives as long as the process (a test's own
/// thread ends with the test).
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (sent, spawned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    spawned
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread died")))
}

/// Waits (up to 30 s) until something listens on `address`; panics
/// (failing the test) naming `what` and where its log is otherwise.
pub fn wait_listening(address: &str, what: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address} within 30 s; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

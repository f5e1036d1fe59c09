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

/// A free TCP port on 127.0.0.1 for a test server, below the range the
/// system hands out for port 0 (32768 and up on Linux) and different for
/// each call in this process: a broker restarted on its port a moment
/// later must find it still free, not taken by another test's server that
/// asked the system for any port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 10_000;
    // Processes of the suite start apart, each at its own place.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = FIRST + (start + step) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

//! Accepted connections have `TCP_NODELAY`: a streamed answer is many small
//! writes (one chunk a token), and with Nagle's algorithm every chunk after
//! the first waits for the client's delayed ACK, which held each chunk of a
//! v2 stream back by tens of milliseconds. The test finds the server's end
//! of a connection among this process's file descriptors (the server runs
//! in-process) and reads the option, for plain TCP and for TLS.

#![allow(clippy::unwrap_used)]
// Borrowing a file descriptor by number needs `unsafe`; see the SAFETY note.
#![allow(unsafe_code)]

use crate::common;

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use common::*;
use tokio::io::AsyncWriteExt;

/// The server's accepted socket for the connection from `client` to
/// `server`: its `TCP_NODELAY` setting, or `None` when not found.
fn accepted_nodelay(server: SocketAddr, client: SocketAddr) -> Option<bool> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: `fd` is open in this process (listed in /proc/self/fd a
        // moment ago) and only borrowed for the calls below, on this thread,
        // while the connection under test is held open by the caller; a
        // descriptor closed meanwhile makes the calls fail, never UB on
        // memory.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
            continue;
        };
        if local.as_socket() == Some(server) && peer.as_socket() == Some(client) {
            return sock.tcp_nodelay().ok();
        }
    }
    None
}

async fn check(tls: Option<&nomyo_server::config::TlsFiles>) {
    let st = state_with(&["m"]).build().unwrap();
    let (addr, stop, task) = serve_real(st, tls).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = conn.local_addr().unwrap();
    // Wait until the server has accepted the connection (its end exists).
    let mut found = None;
    for _ in 0..200 {
        found = accepted_nodelay(addr, client);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        found,
        Some(true),
        "the accepted socket must have TCP_NODELAY"
    );
    conn.shutdown().await.ok();
    drop(conn);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_have_tcp_nodelay() {
    check(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_tls_connections_have_tcp_nodelay() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, _) = self_signed_tls(dir.path());
    check(Some(&tls)).await;
}

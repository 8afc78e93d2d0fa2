//! A process's TCP sockets and descriptors, read from `/proc` (Linux).

use std::collections::HashMap;

/// One TCP socket of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The local port.
    pub local_port: u16,
    /// The remote port (0 for a listener).
    pub remote_port: u16,
    /// The kernel's state number ([`TCP_LISTEN`] for a listener).
    pub state: u8,
}

/// The state of a listening socket in `/proc/net/tcp`.
pub const TCP_LISTEN: u8 = 0x0A;

/// The TCP sockets (IPv4 and IPv6) of the network namespace of process
/// `pid`, by inode.
pub fn tcp_sockets(pid: u32) -> HashMap<u64, TcpSocket> {
    let mut map = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    .unwrap_or(0)
            };
            let state = u8::from_str_radix(f[3], 16).unwrap_or(0);
            if let Ok(inode) = f[9].parse() {
                map.insert(
                    inode,
                    TcpSocket {
                        local_port: port(f[1]),
                        remote_port: port(f[2]),
                        state,
                    },
                );
            }
        }
    }
    map
}

/// Every open descriptor of process `pid` (`/proc/PID/fd`): the socket's
/// inode for a socket, `None` for anything else.
pub fn descriptors(pid: u32) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok());
        out.push(inode);
    }
    out
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_by_its_descriptor() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let pid = std::process::id();
        let tcp = tcp_sockets(pid);
        let found = descriptors(pid)
            .into_iter()
            .flatten()
            .filter_map(|i| tcp.get(&i))
            .any(|s| s.local_port == port && s.state == TCP_LISTEN);
        assert!(found, "{tcp:?}");
    }
}

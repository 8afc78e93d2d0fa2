//! Reading the server's memory: its mappings and thread stacks from
//! `/proc`, every readable byte through `/proc/PID/mem` searched for the
//! canaries, and a report of where each copy found lies.

use super::*;

/// One mapping of `/proc/PID/maps`.
struct Mapping {
    start: u64,
    end: u64,
    line: String,
    readable: bool,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut f = line.split_whitespace();
            let (start, end) = f.next().unwrap().split_once('-').unwrap();
            let perms = f.next().unwrap();
            Mapping {
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                line: line.to_owned(),
                readable: perms.starts_with('r'),
            }
        })
        .collect()
}

/// The stack pointer and name of every thread of `pid` that is in a
/// system call (`/proc/PID/task/TID/syscall`: `nr args... sp pc`).
fn thread_stack_pointers(pid: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(syscall) = std::fs::read_to_string(dir.join("syscall")) else {
            continue;
        };
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let Ok(sp) = u64::from_str_radix(fields[fields.len() - 2].trim_start_matches("0x"), 16)
        else {
            continue;
        };
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let tid = task.file_name().to_string_lossy().into_owned();
        out.push((sp, format!("{} (tid {tid})", comm.trim())));
    }
    out
}

extern "C" {
    fn memmem(
        haystack: *const std::ffi::c_void,
        haystacklen: usize,
        needle: *const std::ffi::c_void,
        needlelen: usize,
    ) -> *mut std::ffi::c_void;
}

/// Offsets of every occurrence of `needle` in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let rest = &hay[from..];
        // SAFETY: both pointers and lengths come from live slices; memmem
        // only reads them and returns a pointer into `rest` or null.
        let p = unsafe {
            memmem(
                rest.as_ptr().cast(),
                rest.len(),
                needle.as_ptr().cast(),
                needle.len(),
            )
        };
        if p.is_null() {
            break;
        }
        let at = from + (p as usize - rest.as_ptr() as usize);
        out.push(at);
        from = at + 1;
    }
    out
}

/// Where a canary was found in the server's memory.
struct Found {
    what: String,
    addr: u64,
    mapping: String,
    kind: String,
    context: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:#x}: {}\n    mapping {}\n    around it: {}",
            self.what, self.addr, self.kind, self.mapping, self.context
        )
    }
}

/// Printable bytes as they are, others as `.`.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// Reads every readable mapping of `pid` through `/proc/PID/mem` and
/// returns where any of `needles` (name, bytes) occurs. `None`: this
/// process may not read the server's memory (not root).
fn scan(pid: u32, needles: &[(String, Vec<u8>)]) -> Option<(Vec<Found>, u64)> {
    let mem = match std::fs::File::open(format!("/proc/{pid}/mem")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return None,
        Err(e) => panic!("/proc/{pid}/mem: {e}"),
    };
    let maps = mappings(pid);
    let stacks = thread_stack_pointers(pid);
    let longest = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(1);
    const CHUNK: u64 = 16 << 20;
    let mut found = Vec::new();
    let mut scanned = 0u64;
    let mut buf = vec![0u8; CHUNK as usize + longest];
    for m in maps.iter().filter(|m| m.readable) {
        if m.line.ends_with("[vsyscall]") || m.line.ends_with("[vvar]") {
            continue;
        }
        let kind = if m.line.ends_with("[heap]") {
            "the main heap ([heap])".to_owned()
        } else if m.line.ends_with("[stack]") {
            "the main thread's stack ([stack])".to_owned()
        } else if let Some((_, t)) = stacks.iter().find(|(sp, _)| (m.start..m.end).contains(sp)) {
            format!("the stack of thread {t}")
        } else if m.line.split_whitespace().count() == 5 {
            "an anonymous mapping (a malloc arena, an mmap'd allocation or a thread stack)"
                .to_owned()
        } else {
            "a file mapping".to_owned()
        };
        let mut at = m.start;
        while at < m.end {
            let len = (m.end - at).min(CHUNK + longest as u64) as usize;
            let Ok(n) = mem.read_at(&mut buf[..len], at) else {
                // Mappings the kernel does not let us read (device memory):
                // nothing of ours is there.
                break;
            };
            if n == 0 {
                break;
            }
            let hay = &buf[..n];
            scanned += n.min(CHUNK as usize) as u64;
            for (what, needle) in needles {
                for off in find_all(hay, needle) {
                    if off as u64 >= CHUNK {
                        // In the overlap: found again by the next chunk.
                        continue;
                    }
                    let lo = off.saturating_sub(48);
                    let hi = (off + needle.len() + 48).min(hay.len());
                    found.push(Found {
                        what: what.clone(),
                        addr: at + off as u64,
                        mapping: m.line.clone(),
                        kind: kind.clone(),
                        context: printable(&hay[lo..hi]),
                    });
                }
            }
            at += CHUNK;
        }
    }
    Some((found, scanned))
}

/// The needles for a piece of text: its bytes, and its JSON-escaped form
/// when that differs (the form in a JSON body).
pub(super) fn needles_of(what: &str, text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(what.to_owned(), text.as_bytes().to_vec())];
    let json = serde_json::to_string(text).unwrap();
    let json = &json[1..json.len() - 1];
    if json != text {
        out.push((format!("{what} (JSON-escaped)"), json.as_bytes().to_vec()));
    }
    out
}

/// Scans the server and asserts that no needle is in its memory.
pub(super) fn assert_not_in_memory(srv: &Serve, needles: &[(String, Vec<u8>)]) {
    let Some((found, scanned)) = scan(srv.pid(), needles) else {
        eprintln!(
            "SKIPPED: /proc/{}/mem cannot be read (the server is undumpable: run as root)",
            srv.pid()
        );
        return;
    };
    // The scan read the memory it claims to have read: the server's heap
    // and the model or binary mappings are far above this.
    assert!(scanned > 8 << 20, "only {scanned} bytes read");
    eprintln!(
        "scanned {} MiB of the server's memory for {} needles: {} found",
        scanned >> 20,
        needles.len(),
        found.len()
    );
    if !found.is_empty() {
        let list: Vec<String> = found.iter().map(ToString::to_string).collect();
        panic!(
            "{} copies of the request or answer left in the server's memory after the \
             requests ended:\n{}",
            found.len(),
            list.join("\n")
        );
    }
}

//! Ports for the test servers.

use std::net::TcpListener;

/// A port on 127.0.0.1 for a test server to listen on: free a moment ago, never handed out
/// before by this process, and below the kernel's ephemeral range, so that neither another
/// test's server nor an outgoing connection (whose local port comes from that range) can take it
/// before the server binds it.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    const LOW: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let take = |port: u16, given: &mut Vec<u16>| {
        let fresh = !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if fresh {
            given.push(port);
        }
        fresh
    };
    if ephemeral_low > LOW + 1_000 {
        // A random start (std's per-process random hasher keys), then every port in turn.
        let span = ephemeral_low - LOW;
        let start = (std::collections::hash_map::RandomState::new().hash_one(given.len())
            % u64::from(span)) as u16;
        for i in 0..span {
            let port = LOW + (start + i) % span;
            if take(port, &mut given) {
                return port;
            }
        }
    }
    // No room below the ephemeral range: let the kernel choose, still never twice.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if take(port, &mut given) {
            return port;
        }
    }
}

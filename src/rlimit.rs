//! The open-file limit: every TCP connection is a file descriptor, and the usual soft
//! limit (1024) is far below what a proxy facing thousands of phones needs. sipwake
//! raises its soft limit to the hard limit at start, and keeps its connection cap
//! below whatever limit it ends up with.

/// File descriptors kept back from the connection cap for listeners, the store,
/// push connections and outbound TCP.
pub const RESERVED_FDS: u64 = 256;

/// The soft open-file limit, if it can be read (`None` also means "unlimited").
#[cfg(unix)]
pub fn nofile() -> Option<u64> {
    let lim = get()?;
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(widen(lim.rlim_cur))
}

/// No open-file limit to read on this platform.
#[cfg(not(unix))]
pub fn nofile() -> Option<u64> {
    None
}

/// Nothing to raise on this platform.
#[cfg(not(unix))]
pub fn raise_nofile() -> Option<u64> {
    None
}

/// Raises the soft open-file limit to the hard limit. Returns the soft limit in
/// force afterwards (`None` if it cannot be read or is unlimited).
#[cfg(unix)]
pub fn raise_nofile() -> Option<u64> {
    let mut lim = get()?;
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct, which lives on our stack.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            lim = wanted;
        }
        // else (e.g. macOS refuses more than OPEN_MAX): keep the current limit
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(widen(lim.rlim_cur))
}

/// The connection cap that fits under the open-file limit.
pub fn fit_connections(wanted: usize) -> usize {
    match nofile() {
        Some(n) => wanted.min(n.saturating_sub(RESERVED_FDS).max(1) as usize),
        None => wanted,
    }
}

/// `rlim_t` is `u32` on some 32-bit systems.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn widen(v: libc::rlim_t) -> u64 {
    v as u64
}

#[cfg(unix)]
fn get() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives on our stack.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_and_the_cap_fits() {
        let before = nofile();
        let after = raise_nofile();
        if let (Some(b), Some(a)) = (before, after) {
            assert!(a >= b);
        }
        assert!(fit_connections(usize::MAX) < usize::MAX || nofile().is_none());
        assert_eq!(fit_connections(1), 1);
    }
}

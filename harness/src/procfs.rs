//! What `/proc` says about a process: the one reader of
//! `/proc/<pid>/stat` for the harness, chaos and the tests.

/// The single-letter state of `pid` (`R` running, `S` sleeping, `T`
/// stopped, `Z` zombie, ...); `None` if it cannot be read (gone, or no
/// `/proc`).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses, so the
    // state is the first field after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// A zombie (or dead and being reaped): exited, not yet collected.
pub fn is_zombie(pid: u32) -> bool {
    matches!(state(pid), Some('Z' | 'X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_entry() {
        let state = state(std::process::id()).expect("/proc/self/stat");
        assert!(matches!(state, 'R' | 'S' | 'D'), "{state}");
        assert!(!is_zombie(std::process::id()));
        assert_eq!(super::state(u32::MAX), None);
    }
}

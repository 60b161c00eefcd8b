//! What `/proc` says about a process: the one reader of
//! `/proc/<pid>/stat` for the harness, chaos, the bench and the tests.

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

/// The fields of `/proc/<pid>/stat` after the command name, from the state
/// (field 3) on.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // The state is a letter; every field this module reads after it is a
    // number, so the letter parses as 0 and keeps the indices true.
    Some(
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

/// Field `n` (1-based, as proc(5) numbers them) of a `stat_fields` list.
fn field(fields: &[u64], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?).copied()
}

/// Clock ticks per second, the unit of the CPU times in `stat`.
fn ticks_per_second() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // Linux has used 100 on every architecture for decades.
        _ => 100.0,
    }
}

/// CPU seconds `pid` has used so far, user plus system; `None` once it is
/// gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks = field(&fields, 14)? + field(&fields, 15)?;
    Some(ticks as f64 / ticks_per_second())
}

/// CPU seconds of `root` and every process below it: what each live
/// descendant used, plus what the ones already reaped left in `root`'s
/// children's times (how a PostgreSQL server's backends count). A
/// difference of two readings is the tree's CPU over the interval, give
/// or take a descendant alive at the first reading and reaped before the
/// second (its earlier CPU counts twice; pooled connections live for the
/// whole interval).
pub fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let fields = stat_fields(root)?;
    let own = field(&fields, 14)? + field(&fields, 15)? + field(&fields, 16)? + field(&fields, 17)?;
    let mut ticks = own;
    let mut parents = vec![root];
    let processes: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let ppid = u32::try_from(field(&stat_fields(pid)?, 4)?).ok()?;
            Some((pid, ppid))
        })
        .collect();
    while let Some(parent) = parents.pop() {
        for &(pid, ppid) in &processes {
            if ppid == parent {
                if let Some(child) = stat_fields(pid) {
                    ticks += field(&child, 14).unwrap_or(0) + field(&child, 15).unwrap_or(0);
                }
                parents.push(pid);
            }
        }
    }
    Some(ticks as f64 / ticks_per_second())
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

    #[test]
    fn counts_cpu_burnt_by_us_and_by_a_child() {
        let before = cpu_seconds(std::process::id()).expect("our own stat");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = cpu_seconds(std::process::id()).expect("our own stat");
        assert!(after - before >= 0.1, "{before} -> {after}");
        assert_eq!(cpu_seconds(u32::MAX), None);

        // A busy child counts in our tree, not in our own times.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .expect("sh");
        let me = std::process::id();
        let tree_before = tree_cpu_seconds(me).expect("our tree");
        let own_before = cpu_seconds(me).expect("our own stat");
        child.wait().expect("reaped");
        let tree_after = tree_cpu_seconds(me).expect("our tree");
        let own_after = cpu_seconds(me).expect("our own stat");
        let child_cpu = (tree_after - tree_before) - (own_after - own_before);
        assert!(child_cpu >= 0.05, "the child's loop used {child_cpu} s");
    }
}

//! Thread scheduling of the real binary: the threads whose work no answer waits for
//! (the SQLite checkpointer) run in Linux's idle class, so that on a busy or pinned
//! core they never take it from the threads that answer (the async runtime's and the
//! store's), which stay in the normal class. Read from /proc/PID/task/*/stat while
//! the proxy answers REGISTERs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;

/// SCHED_OTHER and SCHED_IDLE, as /proc reports a thread's policy.
const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// Each thread's name → (policy, nice) of every thread by that name.
fn threads(pid: u32) -> HashMap<String, Vec<(u32, i32)>> {
    let mut out: HashMap<String, Vec<(u32, i32)>> = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "tid (name) state ...": the name may hold spaces and parentheses
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_owned();
        // fields from 3 on; policy is field 41, nice field 19 (counted from 1)
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let policy = f[41 - 3].parse().unwrap();
        let nice = f[19 - 3].parse().unwrap();
        out.entry(name).or_default().push((policy, nice));
    }
    out
}

#[test]
fn the_checkpointer_runs_in_the_idle_class_and_the_answering_threads_do_not() {
    let proxy = ProxyBuilder::new("threads").sqlite().start();
    let mut ua = Ua::udp("alice", &proxy);
    ua.register(300);
    // the checkpointer lowers itself first thing after it starts
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = threads(proxy.pid());
        let ready = seen
            .get("sipwake-ckpt")
            .is_some_and(|t| t.iter().all(|&(p, _)| p == SCHED_IDLE));
        if ready || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let of = |name: &str| {
        seen.get(name)
            .unwrap_or_else(|| panic!("no thread named {name}: {seen:?}"))
            .clone()
    };
    assert_eq!(of("sipwake-ckpt"), vec![(SCHED_IDLE, 0)], "{seen:?}");
    // the store thread answers new bindings once committed; the runtime's threads
    // (named sipwake) answer everything else: both untouched
    assert_eq!(of("sipwake-store"), vec![(SCHED_OTHER, 0)], "{seen:?}");
    let runtime = of("sipwake");
    assert!(!runtime.is_empty());
    assert!(runtime.iter().all(|&t| t == (SCHED_OTHER, 0)), "{seen:?}");
    // and it still answers
    ua.register(300);
}

//! The RFC 4475 torture messages, sent by the shared script to the real binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn rfc4475_torture_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/rfc4475");
    let script = dir.join("send.py");
    if !script.exists() {
        // The corpus is an input that sits beside the checkout, not a tool CI can
        // install: a checkout without it (a clone elsewhere) cannot run this test.
        // `.ci/run` runs the same corpus again and says so when it is absent.
        eprintln!(
            "notice: {} not found; the RFC 4475 corpus sits next to the repository",
            script.display()
        );
        return;
    }
    assert!(
        Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok(),
        "python3 not found: the RFC 4475 run needs it"
    );
    let proxy = Proxy::start("rfc4475");
    let out_path = proxy.dir.join("send.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("127.0.0.1")
        .arg(proxy.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("run send.py");
    let status = wait_with_timeout(&mut child, Duration::from_secs(240));
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{text}");
    match status {
        Some(s) => assert!(s.success(), "send.py exited with {s}; its output:\n{text}"),
        None => panic!("send.py did not finish within 240 s; its output:\n{text}"),
    }
    assert!(
        text.contains(" 0 failed"),
        "send.py should report 0 failed:\n{text}"
    );
}

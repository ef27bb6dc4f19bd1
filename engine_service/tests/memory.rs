//! Memory: compressing a 2 GB file keeps the engine's peak RSS under 100 MB
//! (streaming I/O, flat memory). The input is a sparse file, so the test
//! needs no disk space and reads from the page cache; the engine runs as a
//! child process and its peak RSS comes from `getrusage(RUSAGE_CHILDREN)`,
//! which is why this test lives alone in its own test binary.
use std::process::Command;

fn peak_rss_of_children_kb() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss
}

#[test]
fn compressing_2gb_file_stays_under_100mb_peak_rss() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let big = std::fs::File::create(src.join("big.log")).unwrap();
    big.set_len(2 << 30).unwrap();
    drop(big);
    for format in ["zstd", "gzip"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pravah-engine"))
            .arg("process")
            .arg(&src)
            .args(["--task", "compress", "--option"])
            .arg(format!("format={format}"))
            .args([
                "--option",
                "level=1",
                "--option",
                "existing=overwrite",
                "--destination",
            ])
            .arg(dir.path().join("dst"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["written"], 1, "{summary}");
        assert_eq!(summary["bytes_in"], 2u64 << 30);
    }
    let peak_kb = peak_rss_of_children_kb();
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} KB");
}

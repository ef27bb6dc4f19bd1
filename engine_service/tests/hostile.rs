//! Hostile conditions that need a whole engine process: a disk that fills
//! up mid-write, simulated with `RLIMIT_FSIZE` (writes past the limit fail
//! with EFBIG, exactly where ENOSPC would; SIGXFSZ is ignored so the write
//! returns the error instead of killing the process), and sources the
//! `process` command cannot walk at all (its exit status is what a script
//! sees).
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn disk_full_mid_write_fails_the_file_and_keeps_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    // Incompressible, so the output outgrows the 1 MiB limit.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(src.join("big.log"), &data).unwrap();
    std::fs::write(src.join("small.log"), b"fits easily\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pravah-engine"));
    cmd.arg("process")
        .arg(&src)
        .args(["--task", "compress", "--option", "keep_original=false"])
        .args(["--option", "format=zstd", "--destination"])
        .arg(&dst);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["written"], 1, "{summary}");
    // The big original is intact and no partial output or temp file is left.
    assert_eq!(std::fs::read(src.join("big.log")).unwrap(), data);
    let left: Vec<String> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["small.log.zst"]);
    assert!(
        !src.join("small.log").exists(),
        "the file that fit was compressed and removed"
    );
}

/// A source that cannot be walked fails the command with its reason and a
/// non-zero status; it printed an empty summary and exited 0 before.
#[test]
fn process_of_a_missing_or_non_folder_source_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.csv");
    std::fs::write(&file, "a,b\n").unwrap();
    for (source, reason) in [
        (dir.path().join("nope"), "source does not exist"),
        (file, "source is not a directory"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pravah-engine"))
            .arg("process")
            .arg(&source)
            .args(["--task", "csv-header"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{source:?}: {stderr}");
        assert!(stderr.contains(reason), "{source:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no summary for {source:?}");
    }
}

/// A walk writing into a folder it walks would take its own outputs as
/// inputs (thumbnails of thumbnails, growing with every run); the control
/// plane refuses such a job, and now so does the engine for its direct
/// callers. Outside the source, the same destination works.
#[test]
fn process_refuses_a_destination_inside_the_walked_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("logs");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.log"), "line\n".repeat(100)).unwrap();
    let run = |dest: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_pravah-engine"))
            .arg("process")
            .arg(&src)
            .args(["--task", "compress", "--destination"])
            .arg(dest)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let out = run(&src.join("archive"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is inside the source"), "{stderr}");
    assert!(!src.join("archive/a.log.gz").exists());
    let out = run(&dir.path().join("archive"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("archive/a.log.gz").exists());
}

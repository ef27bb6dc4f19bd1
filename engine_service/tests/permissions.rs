//! Unreadable files and directories, tested through the real binary.
//!
//! Why a separate test running the binary: the suite runs as root here, and
//! root reads a chmod-000 file, so an in-process test would prove nothing.
//! As root the binary is started through `setpriv` with CAP_DAC_OVERRIDE and
//! CAP_DAC_READ_SEARCH dropped from its bounding set: still uid 0, but bound
//! by file modes like any user.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn engine_command() -> Command {
    let engine = env!("CARGO_BIN_EXE_pravah-engine");
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set", "-dac_override,-dac_read_search", engine]);
        cmd
    } else {
        Command::new(engine)
    }
}

fn part_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    lines
}

#[test]
fn unreadable_file_and_directory_are_per_file_errors_and_the_rest_is_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("results");
    fs::create_dir_all(src.join("sealed")).unwrap();
    fs::write(src.join("ok.csv"), "a,b\n1,2\n").unwrap();
    fs::write(src.join("locked.csv"), "x,y\n").unwrap();
    fs::write(src.join("sealed/inside.csv"), "p,q\n").unwrap();
    fs::set_permissions(src.join("locked.csv"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("sealed"), fs::Permissions::from_mode(0o000)).unwrap();

    let output = engine_command()
        .args(["process", src.to_str().unwrap(), "--task", "csv-header"])
        .args(["--results-dir", out.to_str().unwrap()])
        .output()
        .expect("engine runs");
    fs::set_permissions(src.join("sealed"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["schemas"][0]["columns"],
        serde_json::json!(["a", "b"])
    );
    let lines = part_lines(&out);
    let by_path = |p: &str| lines.iter().find(|l| l["path"] == p).cloned();
    assert_eq!(
        by_path("ok.csv").unwrap()["columns"],
        serde_json::json!(["a", "b"])
    );
    let locked = by_path("locked.csv").expect("locked.csv reported");
    assert_eq!(locked["error_kind"], "permission_denied");
    let sealed = by_path("sealed").expect("sealed directory reported");
    assert_eq!(sealed["error_kind"], "permission_denied");
    assert!(by_path("sealed/inside.csv").is_none());
    // Nothing lost: the unreadable file is untouched.
    assert_eq!(
        fs::metadata(src.join("locked.csv"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0
    );
}

//! hugepages.sh as root: reserve, status, mount, a page kept busy refuses its release with the
//! reason, unmount, release. The machine's huge page settings are put back as they were,
//! pass or fail. `#[ignore]`d (it needs root): `cargo test --release -- --ignored` runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hugepages.sh")
}

fn run(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Puts the 2 MiB page count back and unmounts the test's mount, whatever happened.
struct Restore {
    before: String,
    mount: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir_all(&self.mount);
        let _ = std::fs::write(NR, &self.before);
    }
}

#[test]
#[ignore = "needs root and 2 MiB huge pages (.ci/run runs it as root)"]
fn reserve_mount_busy_release() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    assert!(
        root && Path::new(NR).exists(),
        "needs root and 2 MiB huge pages ({NR}); run as root"
    );
    let before = std::fs::read_to_string(NR).unwrap();
    // Pages someone reserved are theirs: this test needs a machine with none.
    assert_eq!(
        before.trim(),
        "0",
        "{} pages of 2 MiB are already reserved here; release them first (./hugepages.sh release)",
        before.trim()
    );
    let mount = std::env::temp_dir().join(format!("ethpaxos-hugepages-{}", std::process::id()));
    let _restore = Restore {
        before,
        mount: mount.clone(),
    };
    let m = mount.to_str().unwrap();

    let o = run(&["reserve", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("reserved 4 pages of 2M (8 MiB)"),
        "{}",
        text(&o)
    );
    let o = run(&["status"]);
    assert!(
        text(&o).contains("2M            4        4"),
        "{}",
        text(&o)
    );

    let o = run(&["mount", m]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&run(&["status"])).contains(m));
    // One page in use: a file in the mount holds it.
    let held = mount.join("held");
    let ok = Command::new("fallocate")
        .args(["-l", "2M"])
        .arg(&held)
        .status()
        .unwrap();
    assert!(ok.success());
    let o = run(&["release"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("1 pages of 2M are in use"),
        "{}",
        text(&o)
    );

    let o = run(&["unmount", m]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("removing 1 page file"), "{}", text(&o));
    let o = run(&["release"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(NR).unwrap().trim(), "0");

    // Bad input: named, and exit status 1 (refused) or 2 (usage).
    let o = run(&["reserve", "many"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("'many' is not a page count"));
    let o = run(&["reserve", "1", "--size", "3M"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown page size '3M'"));
}

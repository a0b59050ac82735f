//! A small real filesystem for the full-disk tests: a tmpfs mounted for the test (as root, or
//! inside a user and mount namespace of the test's own), filled to a chosen margin.

use std::path::Path;

/// A small real filesystem: a tmpfs of `bytes` mounted at a directory, unmounted on drop.
/// Mounting needs CAP_SYS_ADMIN: root (as `.ci/run` is), or the test re-runs itself in a
/// user and mount namespace of its own (`in_own_mount_namespace`).
pub struct SmallFs {
    pub at: std::path::PathBuf,
}

impl SmallFs {
    pub fn mount(at: &Path, bytes: u64) -> Result<SmallFs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "pdtf-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(SmallFs { at: at.to_owned() })
    }

    /// Writes `name` until the filesystem is full (ENOSPC) or it holds `max` bytes; returns
    /// the bytes written.
    pub fn fill(&self, name: &str, max: u64) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.at.join(name)).expect("filler file");
        let chunk = vec![0xA5u8; 64 * 1024];
        let mut written = 0;
        while written < max {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _synced = f.sync_all();
        written
    }

    pub fn free(&self, name: &str) {
        std::fs::remove_file(self.at.join(name)).expect("filler removed");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _unmounted = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Mounts the small filesystem at `dir/state`, or re-runs test `name` where it can be.
/// `None`: the re-run happened (and was asserted); the caller returns.
pub fn small_fs(dir: &std::path::Path, name: &str) -> Option<SmallFs> {
    match SmallFs::mount(&dir.join("state"), 24 << 20) {
        Ok(fs) => Some(fs),
        Err(e) => match in_own_mount_namespace(name) {
            Some(ok) => {
                assert!(ok, "the re-run of {name} in a mount namespace failed");
                None
            }
            None => panic!("cannot mount a tmpfs, even in a namespace of our own: {e}"),
        },
    }
}

/// Fills the filesystem except `spare` bytes (a spare file made first, removed after).
pub fn fill_leaving(fs: &SmallFs, filler: &str, spare: u64) {
    fs.fill("spare", spare);
    fs.fill(filler, u64::MAX);
    fs.free("spare");
}

/// When this process may not mount (not root), runs test `name` of this test binary again
/// inside `unshare --user --map-root-user --mount`, where it may, and returns its success.
/// Returns `None` when this process already is that re-run (mounting must then work).
pub fn in_own_mount_namespace(name: &str) -> Option<bool> {
    if std::env::var_os("PDTF_TEST_IN_NAMESPACE").is_some() {
        return None;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PDTF_TEST_IN_NAMESPACE", "1")
        .status()
        .expect("unshare runs (util-linux)");
    Some(status.success())
}

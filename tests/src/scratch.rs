//! Scratch file systems for output fault tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A tmpfs of the test's own (its size is the point: a disk that fills up;
/// and tmpfs takes `chattr +i`), unmounted and removed even when the test
/// fails.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it, e.g. `128k`)
    /// on a new directory named after `id`.
    pub fn mount(id: &str, size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("hubcap-tmpfs-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Immutable files would survive the unmount's directory removal.
        let _ = Command::new("chattr").arg("-R").arg("-i").arg(&self.0).status();
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

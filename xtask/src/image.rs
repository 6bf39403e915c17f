//! `cargo xtask image`: hubcap's OCI image, built with podman from
//! `deploy/image/Containerfile` on a machine with no Docker and no registry.
//! The root filesystem is hubcap (stripped) and exactly the shared
//! libraries `ldd` says it loads, at the paths it loads them from.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::setup::{output, run};

/// The tag tests and the manifests use.
pub const TAG: &str = "localhost/hubcap:dev";

/// Builds the image from `target/release/hubcap` (built by the caller).
pub fn build(root: &Path) -> Result<()> {
    let binary = root.join("target/release/hubcap");
    let context = root.join("target/image");
    let rootfs = context.join("rootfs");
    if context.exists() {
        std::fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    let bin_dir = rootfs.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir)?;
    let in_image = bin_dir.join("hubcap");
    std::fs::copy(&binary, &in_image).with_context(|| format!("copying {}", binary.display()))?;
    run(Command::new("strip").arg(&in_image)).context("strip (binutils)")?;
    for library in shared_libraries(&binary)? {
        let target = rootfs.join(library.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(target.parent().expect("a directory"))?;
        // The file itself, not the symlink: the image has no other copy.
        std::fs::copy(&library, &target).with_context(|| format!("copying {}", library.display()))?;
    }
    // Sockets and logs go to mounted host directories; /tmp for libraries
    // that want one.
    for dir in ["tmp", "var/run/hubcap", "var/log"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(root.join("deploy/image/Containerfile"), context.join("Containerfile"))?;
    run(Command::new("podman")
        .args(["build", "--quiet", "--tag", TAG])
        .arg(&context))
    .context("podman build")?;
    let size = output(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", TAG]))?;
    let files = walk(&rootfs)?;
    eprintln!(
        "image {TAG}: {:.1} MB, {} files: {}",
        size.trim().parse::<f64>().unwrap_or(0.0) / 1e6,
        files.len(),
        files.join(", ")
    );
    Ok(())
}

/// Absolute paths of the libraries `ldd` resolves (the vDSO has none).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(binary))?;
    let mut libraries = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libraries.push(PathBuf::from(p)),
            Some(p) if p.starts_with("linux-vdso") => {}
            _ if line.contains("not found") => bail!("ldd: {line}"),
            _ => {}
        }
    }
    Ok(libraries)
}

/// Files under `dir`, relative, sorted.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(format!("/{}", path.strip_prefix(dir).expect("under dir").display()));
            }
        }
    }
    files.sort();
    Ok(files)
}

//! Images for the node without a registry: built with podman from
//! Debian's static busybox, saved as archives and imported into the
//! node's containerd (what `kind load image-archive` does).

use std::{fs, path::Path, process::Command};

use super::{KubeNode, run};

/// The pods' image: busybox with one link per applet (sh, httpd, wget,
/// nc, ping, ...).
pub const BUSYBOX: &str = "localhost/busybox:hubcap-test";
/// The sandbox ("pause") image: waits, and exits on SIGTERM or SIGINT.
pub const PAUSE: &str = "localhost/pause:hubcap-test";

/// Builds (once per machine) and imports the pause and busybox images.
pub fn import_base(node: &KubeNode) {
    let context = node.dir.join("images");
    if !exists(BUSYBOX) || !exists(PAUSE) {
        build(&context);
    }
    for tag in [PAUSE, BUSYBOX] {
        load_from_podman(node, tag);
    }
}

pub fn load_from_podman(node: &KubeNode, tag: &str) {
    let dir = node.dir.join("images");
    fs::create_dir_all(&dir).expect("images dir");
    let tar = dir.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    let _ = fs::remove_file(&tar);
    run(Command::new("podman")
        .args(["save", "-q", "--format", "docker-archive", "-o"])
        .arg(&tar)
        .arg(tag));
    node.load_image_archive(&tar);
    let _ = fs::remove_file(&tar);
}

fn exists(tag: &str) -> bool {
    Command::new("podman")
        .args(["image", "exists", tag])
        .status()
        .is_ok_and(|s| s.success())
}

fn build(context: &Path) {
    let root = context.join("rootfs");
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "var/www", "root", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(root.join(d)).expect("rootfs");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (Debian's busybox-static)");
    let applets = run(Command::new("/bin/busybox").arg("--list-full"));
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "bin/busybox" {
            let _ = std::os::unix::fs::symlink("/bin/busybox", root.join(applet));
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    fs::write(root.join("var/www/index.html"), "hello from the web pod\n").expect("index");
    fs::write(
        context.join("Containerfile.busybox"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"sh\"]\n",
    )
    .expect("Containerfile");
    // A shell waiting in the background can be interrupted by the trap.
    fs::write(
        context.join("Containerfile.pause"),
        format!(
            "FROM {BUSYBOX}\nENTRYPOINT [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done\"]\n"
        ),
    )
    .expect("Containerfile");
    for (file, tag) in [("Containerfile.busybox", BUSYBOX), ("Containerfile.pause", PAUSE)] {
        run(Command::new("podman")
            .args(["build", "--quiet", "-f"])
            .arg(context.join(file))
            .args(["-t", tag])
            .arg(context));
    }
    let _ = fs::remove_dir_all(&root);
}

/// Hubble Relay's image, from the binary in `../shared/tools` (static:
/// nothing else in it).
pub const RELAY: &str = "localhost/hubble-relay:dev";

/// Builds Relay's image and imports it into `node`.
pub fn load_relay(node: &KubeNode) {
    let context = node.dir.join("images/relay");
    fs::create_dir_all(&context).expect("relay context");
    fs::copy(crate::upstream::tool("hubble-relay"), context.join("hubble-relay")).expect("hubble-relay");
    fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY hubble-relay /usr/bin/hubble-relay\nENTRYPOINT [\"/usr/bin/hubble-relay\"]\n",
    )
    .expect("Containerfile");
    run(Command::new("podman")
        .args(["build", "--quiet", "-t", RELAY])
        .arg(&context));
    let _ = fs::remove_dir_all(&context);
    load_from_podman(node, RELAY);
}

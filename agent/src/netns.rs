//! Which network namespace sits behind a pod's veth: the drop scope covers
//! the namespaces behind the pod interfaces hubcap captures on.
//!
//! The kernel names a veth's peer namespace only by a namespace id local to
//! ours (`IFLA_LINK_NETNSID`), and the drop program sees namespaces by
//! inode. Netlink maps between the two: `RTM_GETNSID` gives the id of a
//! namespace we hold a file of, so the namespaces in `/run/netns` and those
//! of running processes are asked until every wanted id is found. Written
//! by hand: two small rtnetlink requests, which no crate here covers more
//! simply.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::PathBuf,
};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTGENMSG_LEN: usize = 4;

/// A route netlink socket in hubcap's namespace.
pub struct Rtnetlink {
    socket: OwnedFd,
    seq: u32,
}

impl Rtnetlink {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rtnetlink { socket, seq: 0 })
    }

    /// The namespace id of `ifindex`'s peer (veth, netkit), or `None` when
    /// the peer is in our own namespace or the link has none.
    pub fn link_netnsid(&mut self, ifindex: u32) -> io::Result<Option<i32>> {
        let mut body = [0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let reply = self.request(RTM_GETLINK, &body)?;
        Ok(attribute(&reply, RTM_NEWLINK, IFINFOMSG_LEN, IFLA_LINK_NETNSID).and_then(i32_of))
    }

    /// The id our namespace gives the namespace open at `netns`, or `None`
    /// when it has none.
    pub fn nsid_of(&mut self, netns: &fs::File) -> io::Result<Option<i32>> {
        let mut body = [0u8; RTGENMSG_LEN + 8];
        body[0] = libc::AF_UNSPEC as u8;
        put_attribute(
            &mut body[RTGENMSG_LEN..],
            NETNSA_FD,
            &(netns.as_raw_fd() as u32).to_ne_bytes(),
        );
        let reply = self.request(RTM_GETNSID, &body)?;
        Ok(attribute(&reply, RTM_NEWNSID, RTGENMSG_LEN, NETNSA_NSID)
            .and_then(i32_of)
            .filter(|id| *id >= 0))
    }

    /// Sends one request and returns its one reply message.
    fn request(&mut self, kind: u16, body: &[u8]) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let mut message = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        message.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        message.extend_from_slice(&self.seq.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(body);
        // SAFETY: the buffer is valid for its length; the kernel is the
        // destination of an unbound netlink socket's send.
        let sent = unsafe { libc::send(self.socket.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(self.socket.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = &reply[..n as usize];
            if got.len() < NLMSG_HDRLEN {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink reply"));
            }
            // A reply to an earlier request that timed out: skip it.
            if u32::from_ne_bytes(got[8..12].try_into().expect("4 bytes")) != self.seq {
                continue;
            }
            if u16::from_ne_bytes([got[4], got[5]]) == NLMSG_ERROR {
                let errno = got
                    .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                    .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("4 bytes")));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            return Ok(got.to_vec());
        }
    }
}

fn i32_of(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

fn put_attribute(out: &mut [u8], kind: u16, data: &[u8]) {
    out[0..2].copy_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out[2..4].copy_from_slice(&kind.to_ne_bytes());
    out[4..4 + data.len()].copy_from_slice(data);
}

/// The data of attribute `kind` in a reply of type `expected` whose fixed
/// header is `fixed` bytes long.
fn attribute(reply: &[u8], expected: u16, fixed: usize, kind: u16) -> Option<&[u8]> {
    let length = u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?) as usize;
    if u16::from_ne_bytes([reply[4], reply[5]]) != expected {
        return None;
    }
    let mut attrs = reply.get(NLMSG_HDRLEN + fixed..length.min(reply.len()))?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let attr_kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if attr_kind == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[(len + 3) & !3..];
    }
    None
}

/// The inode of the network namespace open at `path`.
fn inode(path: &PathBuf) -> Option<u32> {
    fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// Namespace files worth asking about: the named ones (`ip netns`, CNI
/// plugins' `/run/netns/cni-*`) and those of running processes (container
/// runtimes that name none).
fn namespace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = fs::read_dir(dir) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                files.push(entry.path().join("ns/net"));
            }
        }
    }
    files
}

/// Finds the namespaces (by inode) behind `ifindexes`' peers; interfaces
/// whose peer is in our own namespace, or is not found, are left out.
pub fn peer_namespaces(netlink: &mut Rtnetlink, ifindexes: &[u32]) -> io::Result<HashMap<u32, u32>> {
    let mut wanted: HashMap<i32, Vec<u32>> = HashMap::new();
    for &ifindex in ifindexes {
        if let Some(nsid) = netlink.link_netnsid(ifindex)? {
            wanted.entry(nsid).or_default().push(ifindex);
        }
    }
    let mut found = HashMap::new();
    let mut asked = HashSet::new();
    for path in namespace_files() {
        if wanted.is_empty() {
            break;
        }
        // Many processes share a namespace: ask once per inode.
        let Some(ino) = inode(&path).filter(|ino| asked.insert(*ino)) else {
            continue;
        };
        // A process can exit between listing and opening.
        let Ok(file) = fs::File::open(&path) else { continue };
        if let Some(nsid) = netlink.nsid_of(&file)?
            && let Some(ifindexes) = wanted.remove(&nsid)
        {
            for ifindex in ifindexes {
                found.insert(ifindex, ino);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_past_others_and_padding() {
        // nlmsghdr, a 4-byte fixed header, then a 5-byte attribute padded
        // to 8, then the wanted one.
        let mut reply = vec![0u8; NLMSG_HDRLEN + RTGENMSG_LEN];
        reply[4..6].copy_from_slice(&RTM_NEWNSID.to_ne_bytes());
        reply.extend_from_slice(&[5, 0, 9, 0, 0xaa, 0, 0, 0]);
        reply.extend_from_slice(&[8, 0, NETNSA_NSID as u8, 0]);
        reply.extend_from_slice(&7i32.to_ne_bytes());
        let length = reply.len() as u32;
        reply[0..4].copy_from_slice(&length.to_ne_bytes());
        let data = attribute(&reply, RTM_NEWNSID, RTGENMSG_LEN, NETNSA_NSID);
        assert_eq!(data.and_then(i32_of), Some(7));
        assert_eq!(attribute(&reply, RTM_NEWLINK, RTGENMSG_LEN, NETNSA_NSID), None);
        assert_eq!(attribute(&reply, RTM_NEWNSID, RTGENMSG_LEN, 2), None);
    }

    #[test]
    fn loopback_has_no_peer_namespace() {
        let mut netlink = Rtnetlink::open().expect("netlink");
        assert_eq!(netlink.link_netnsid(1).expect("RTM_GETLINK lo"), None);
        let own = fs::File::open("/proc/self/ns/net").unwrap();
        // Our own namespace: id not assigned, or whatever id it has, but
        // the request itself works.
        netlink.nsid_of(&own).expect("RTM_GETNSID");
    }
}

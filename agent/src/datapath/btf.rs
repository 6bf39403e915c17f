//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel (`/sys/kernel/btf/vmlinux`), so the drop program reads `sk_buff`
//! fields at this kernel's offsets instead of compiled-in ones.
//!
//! aya keeps its BTF accessors private, and the one maintained BTF crate is
//! LGPL; member lookup is a small, well-specified job (see the kernel's
//! Documentation/bpf/btf.rst), so it is done here.

use std::{collections::HashMap, fs, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data ends inside type {0}")]
    Truncated(u32),
    #[error("BTF type kind {kind} (type {id}) is unknown to hubcap")]
    UnknownKind { kind: u32, id: u32 },
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
}

const MAGIC: u16 = 0xeb9f;

// Type kinds (btf.rst, "BTF Type Encoding").
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset (with kind_flag set, the low 24 bits).
    bit_offset: u32,
}

enum Type {
    Composite { name_off: u32, members: Vec<Member> },
    Enum { name_off: u32, values: Vec<(u32, u64)> },
    Other,
}

pub struct KernelBtf {
    strings: Vec<u8>,
    /// Index = type id; id 0 is void.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    enums_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        // Header: magic u16, version u8, flags u8, hdr_len u32, type_off,
        // type_len, str_off, str_len (u32 each), little-endian on x86/arm.
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::BadHeader);
        }
        let field = |i: usize| u32_at(data, 4 + 4 * i).ok_or(BtfError::BadHeader);
        let (hdr_len, type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
        let base = hdr_len as usize;
        let types_data = data
            .get(base + type_off as usize..base + (type_off + type_len) as usize)
            .ok_or(BtfError::BadHeader)?;
        let strings = data
            .get(base + str_off as usize..base + (str_off + str_len) as usize)
            .ok_or(BtfError::BadHeader)?;

        let mut types = vec![Type::Other];
        let mut at = 0;
        while at < types_data.len() {
            let id = types.len() as u32;
            let name_off = u32_at(types_data, at).ok_or(BtfError::Truncated(id))?;
            let info = u32_at(types_data, at + 4).ok_or(BtfError::Truncated(id))?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            // Bytes of kind-specific data after the common 12-byte header.
            let extra = match kind {
                1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
                3 => 12,                   // ARRAY
                4 | 5 => 12 * vlen,        // STRUCT, UNION
                6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                _ => return Err(BtfError::UnknownKind { kind, id }),
            };
            let body = types_data.get(at..at + extra).ok_or(BtfError::Truncated(id))?;
            let ty = if kind == KIND_STRUCT || kind == KIND_UNION {
                let members = body
                    .chunks_exact(12)
                    .map(|m| {
                        let offset = u32::from_le_bytes([m[8], m[9], m[10], m[11]]);
                        Member {
                            name_off: u32::from_le_bytes([m[0], m[1], m[2], m[3]]),
                            type_id: u32::from_le_bytes([m[4], m[5], m[6], m[7]]),
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        }
                    })
                    .collect();
                Type::Composite { name_off, members }
            } else if kind == KIND_ENUM || kind == KIND_ENUM64 {
                let width = if kind == KIND_ENUM { 8 } else { 12 };
                let values = body
                    .chunks_exact(width)
                    .map(|v| {
                        let name = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                        let low = u64::from(u32::from_le_bytes([v[4], v[5], v[6], v[7]]));
                        let high = if width == 12 {
                            u64::from(u32::from_le_bytes([v[8], v[9], v[10], v[11]]))
                        } else {
                            0
                        };
                        (name, low | high << 32)
                    })
                    .collect();
                Type::Enum { name_off, values }
            } else {
                Type::Other
            };
            types.push(ty);
            at += extra;
        }
        let mut btf = KernelBtf {
            strings: strings.to_vec(),
            types,
            structs_by_name: HashMap::new(),
            enums_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            // The first definition wins (duplicates are identical).
            match ty {
                Type::Composite { name_off, .. } if *name_off != 0 => {
                    btf.structs_by_name
                        .entry(btf.string(*name_off).to_owned())
                        .or_insert(id as u32);
                }
                Type::Enum { name_off, .. } if *name_off != 0 => {
                    btf.enums_by_name
                        .entry(btf.string(*name_off).to_owned())
                        .or_insert(id as u32);
                }
                _ => {}
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// unions and structs (as in `sk_buff`'s header groups).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        self.find(id, member)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))
    }

    /// The names and values of `enum name`, or `None` if this kernel has
    /// no such enum.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, u64)>> {
        let id = self.enums_by_name.get(name)?;
        let Type::Enum { values, .. } = &self.types[*id as usize] else {
            return None;
        };
        Some(values.iter().map(|(n, v)| (self.string(*n).to_owned(), *v)).collect())
    }

    /// Bit offset of `member` within type `id`, depth-first through
    /// anonymous members.
    fn find(&self, id: u32, member: &str) -> Option<u32> {
        let Type::Composite { members, .. } = self.types.get(id as usize)? else {
            return None;
        };
        for m in members {
            let name = self.string(m.name_off);
            if name == member {
                return Some(m.bit_offset);
            }
            if name.is_empty()
                && let Some(inner) = self.find(m.type_id, member)
            {
                return Some(m.bit_offset + inner);
            }
        }
        None
    }
}

/// Where the drop program finds `sk_buff` fields in this kernel, and the
/// inode of hubcap's network namespace.
pub fn skb_layout(btf: &KernelBtf, own_netns_inum: u32) -> Result<agent_common::SkbLayout, BtfError> {
    let skb = |m| btf.member_offset("sk_buff", m);
    Ok(agent_common::SkbLayout {
        len: skb("len")?,
        head: skb("head")?,
        data: skb("data")?,
        mac_header: skb("mac_header")?,
        network_header: skb("network_header")?,
        protocol: skb("protocol")?,
        dev: skb("dev")?,
        netdev_ifindex: btf.member_offset("net_device", "ifindex")?,
        netdev_net: btf.member_offset("net_device", "nd_net")?,
        net_inum: btf.member_offset("net", "ns")? + btf.member_offset("ns_common", "inum")?,
        own_netns_inum,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sk_buff_members_in_the_running_kernel() {
        let btf = KernelBtf::from_sys_fs().expect("this kernel has BTF");
        // Members directly in sk_buff, and inside its anonymous groups.
        for member in [
            "len",
            "head",
            "data",
            "network_header",
            "transport_header",
            "mac_header",
            "dev",
            "protocol",
        ] {
            let off = btf.member_offset("sk_buff", member).unwrap_or_else(|e| panic!("{e}"));
            assert!(off < 256, "{member} at {off}");
        }
        assert!(btf.member_offset("net_device", "ifindex").is_ok());
        let layout = skb_layout(&btf, 1).expect("every field the drop program reads");
        assert!(layout.head != layout.data && layout.network_header != layout.mac_header);
        assert!(matches!(
            btf.member_offset("sk_buff", "no_such_field"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member_offset("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn reads_the_drop_reason_enum() {
        let btf = KernelBtf::from_sys_fs().expect("this kernel has BTF");
        let reasons = btf
            .enum_values("skb_drop_reason")
            .expect("Linux 5.17+ has drop reasons");
        let value = |name: &str| reasons.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(value("SKB_DROP_REASON_NOT_SPECIFIED"), Some(2));
        assert_eq!(value("SKB_DROP_REASON_NO_SOCKET"), Some(3));
        assert!(value("SKB_DROP_REASON_NETFILTER_DROP").is_some());
        assert!(btf.enum_values("no_such_enum").is_none());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(
            KernelBtf::parse(b"not btf at all, not at all....."),
            Err(BtfError::BadHeader)
        ));
    }
}

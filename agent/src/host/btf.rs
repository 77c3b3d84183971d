//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct
//! member offsets and enum values, so that no kernel struct offset is ever
//! hard-coded (Rust eBPF has no CO-RE relocations of its own).
//!
//! Only what sonde needs: the type section is walked once, structs and
//! unions are indexed by name, and member lookup descends into anonymous
//! members. Format: `include/uapi/linux/btf.h`.

use std::collections::HashMap;

/// Why a BTF blob or a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("invalid BTF: {0}")]
    Invalid(&'static str),
    /// A type kind this reader does not know (a newer kernel).
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind {
        /// The kind number.
        kind: u32,
        /// The type id.
        id: u32,
    },
}

const MAGIC: u16 = 0xeb9f;

mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// Size for INT/STRUCT/UNION/ENUM, referenced type for PTR/TYPEDEF/...
    size_or_type: u32,
    /// STRUCT/UNION members (name_off, type, bit offset), ENUM values (name_off, value).
    members: Vec<(u32, u32, u32)>,
    /// ARRAY: (element type, number of elements).
    array: Option<(u32, u32)>,
}

/// A member's place in its struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
}

/// Parsed BTF: types and strings.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>, // index = type id; 0 is void
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Invalid("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        Ok(Self::parse(&std::fs::read(
            crate::host::kernel::VMLINUX_BTF,
        )?))
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(blob: &[u8]) -> Result<Self, BtfError> {
        let magic = blob.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Invalid("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(blob, 4)? as usize;
        let type_off = u32_at(blob, 8)? as usize;
        let type_len = u32_at(blob, 12)? as usize;
        let str_off = u32_at(blob, 16)? as usize;
        let str_len = u32_at(blob, 20)? as usize;
        let types_bytes = blob
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Invalid("type section out of bounds"))?;
        let strings = blob
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Invalid("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_or_type: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut at = 0;
        while at < types_bytes.len() {
            let id = types.len() as u32;
            let name_off = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut ty = Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                members: Vec::new(),
                array: None,
            };
            match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => at += 4,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => {}
                kind::ARRAY => {
                    ty.array = Some((u32_at(types_bytes, at)?, u32_at(types_bytes, at + 8)?));
                    at += 12;
                }
                kind::STRUCT | kind::UNION => {
                    for _ in 0..vlen {
                        ty.members.push((
                            u32_at(types_bytes, at)?,
                            u32_at(types_bytes, at + 4)?,
                            u32_at(types_bytes, at + 8)?,
                        ));
                        at += 12;
                    }
                }
                kind::ENUM => {
                    for _ in 0..vlen {
                        ty.members.push((
                            u32_at(types_bytes, at)?,
                            0,
                            u32_at(types_bytes, at + 4)?,
                        ));
                        at += 8;
                    }
                }
                kind::ENUM64 => {
                    for _ in 0..vlen {
                        // Values past 32 bits are not needed by sonde; keep the low half.
                        ty.members.push((
                            u32_at(types_bytes, at)?,
                            0,
                            u32_at(types_bytes, at + 4)?,
                        ));
                        at += 12;
                    }
                }
                kind::FUNC_PROTO => {
                    for _ in 0..vlen {
                        ty.members.push((
                            u32_at(types_bytes, at)?,
                            u32_at(types_bytes, at + 4)?,
                            0,
                        ));
                        at += 8;
                    }
                }
                kind::DATASEC => at += 12 * vlen,
                _ => return Err(BtfError::UnknownKind { kind, id }),
            }
            types.push(ty);
        }

        let mut btf = Self {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() as u32 {
            let ty = &btf.types[id as usize];
            if matches!(
                ty.kind,
                kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::TYPEDEF
            ) {
                let name = btf.name(ty.name_off).to_owned();
                if !name.is_empty() {
                    btf.by_name.entry(name).or_default().push(id);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The struct or union called `name` that has members (not a forward
    /// declaration).
    fn composite(&self, name: &str) -> Option<&Type> {
        self.by_name.get(name)?.iter().find_map(|&id| {
            let ty = &self.types[id as usize];
            (matches!(ty.kind, kind::STRUCT | kind::UNION) && !ty.members.is_empty()).then_some(ty)
        })
    }

    /// Size in bytes of type `id`, following typedefs and qualifiers.
    fn size_of(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                kind::INT
                | kind::STRUCT
                | kind::UNION
                | kind::ENUM
                | kind::ENUM64
                | kind::FLOAT => return Some(ty.size_or_type),
                kind::PTR => return Some(8),
                kind::ARRAY => {
                    let (elem, n) = ty.array?;
                    return self.size_of(elem).map(|s| s * n);
                }
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return None,
            }
        }
        None
    }

    /// The member `member` of struct `strukt`, searching anonymous members
    /// too; `None` when the kernel has no such member (or it is a bitfield).
    pub fn member(&self, strukt: &str, member: &str) -> Option<Member> {
        self.find_member(self.composite(strukt)?, member, 0, 0)
    }

    fn find_member(&self, ty: &Type, member: &str, base_bits: u32, depth: u32) -> Option<Member> {
        if depth > 8 {
            return None;
        }
        for &(name_off, type_id, offset) in &ty.members {
            let (bitfield_size, bit_offset) = if ty.kind_flag {
                (offset >> 24, offset & 0x00ff_ffff)
            } else {
                (0, offset)
            };
            let bits = base_bits + bit_offset;
            let name = self.name(name_off);
            if name == member {
                if bitfield_size != 0 || !bits.is_multiple_of(8) {
                    return None;
                }
                return Some(Member {
                    offset: bits / 8,
                    size: self.size_of(type_id)?,
                });
            }
            if name.is_empty() {
                let inner = self.resolve(type_id)?;
                if matches!(inner.kind, kind::STRUCT | kind::UNION) {
                    if let Some(found) = self.find_member(inner, member, bits, depth + 1) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Whether argument `index` of raw tracepoint `tp` is a pointer, from the
    /// kernel's `btf_trace_<tp>` typedef (`void *data` comes first, unseen by
    /// programs); `None` when the kernel does not describe the tracepoint.
    pub fn tracepoint_arg_is_pointer(&self, tp: &str, index: usize) -> Option<bool> {
        let typedef = self
            .by_name
            .get(&format!("btf_trace_{tp}"))?
            .iter()
            .copied()
            .find(|&id| self.types[id as usize].kind == kind::TYPEDEF)?;
        let ptr = self.resolve(self.types[typedef as usize].size_or_type)?;
        if ptr.kind != kind::PTR {
            return None;
        }
        let proto = self.resolve(ptr.size_or_type)?;
        if proto.kind != kind::FUNC_PROTO {
            return None;
        }
        let &(_, arg_type, _) = proto.members.get(index + 1)?;
        Some(self.resolve(arg_type)?.kind == kind::PTR)
    }

    /// The values of enum `name` as (value, enumerator name).
    pub fn enum_values(&self, name: &str) -> Option<Vec<(u32, String)>> {
        let id = self
            .by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| matches!(self.types[id as usize].kind, kind::ENUM | kind::ENUM64))?;
        Some(
            self.types[id as usize]
                .members
                .iter()
                .map(|&(name_off, _, value)| (value, self.name(name_off).to_owned()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, extra words) records.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, size: u32, extra: &[u32]) {
            let name = self.s(name);
            let info = (kind << 24) | vlen | if flag { 1 << 31 } else { 0 };
            for w in [name, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn blob(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    #[test]
    fn finds_members_in_anonymous_unions_and_through_typedefs() {
        let mut b = Builder::new();
        b.ty("int", kind::INT, 0, false, 4, &[32]); // 1
        b.ty("u64", kind::INT, 0, false, 8, &[64]); // 2
        b.ty("pid_t", kind::TYPEDEF, 0, false, 1, &[]); // 3 -> int
        let (a, bb) = (b.s("a"), b.s("state"));
        b.ty("", kind::UNION, 2, false, 8, &[a, 2, 0, bb, 1, 0]); // 4: anon union
        let (pid, flags, anon) = (b.s("pid"), b.s("flags"), 0);
        // 5: struct task { pid_t pid; int flags:3 (bitfield); union {..} at byte 8 }
        b.ty(
            "task",
            kind::STRUCT,
            3,
            true,
            16,
            &[pid, 3, 0, flags, 1, (3 << 24) | 32, anon, 4, 64],
        );
        b.ty("task", kind::FWD, 0, false, 0, &[]); // 6: a forward declaration
        let (one, two) = (b.s("ONE"), b.s("TWO"));
        b.ty("numbers", kind::ENUM, 2, false, 4, &[one, 1, two, 2]); // 7
        b.ty("arr", kind::ARRAY, 0, false, 0, &[2, 1, 4]); // 8
        b.ty(
            "proto",
            kind::FUNC_PROTO,
            3,
            false,
            0,
            &[0, 10, 0, 10, 0, 1],
        ); // 9: (void *, task *, int)
        b.ty("", kind::PTR, 0, false, 5, &[]); // 10: task *
        b.ty("", kind::PTR, 0, false, 9, &[]); // 11: pointer to the proto
        b.ty("btf_trace_tp", kind::TYPEDEF, 0, false, 11, &[]); // 12

        let btf = Btf::parse(&b.blob()).unwrap();
        assert_eq!(
            btf.member("task", "pid"),
            Some(Member { offset: 0, size: 4 })
        );
        assert_eq!(
            btf.member("task", "state"),
            Some(Member { offset: 8, size: 4 })
        );
        assert_eq!(btf.member("task", "a"), Some(Member { offset: 8, size: 8 }));
        assert_eq!(btf.member("task", "flags"), None, "bitfields are refused");
        assert_eq!(btf.member("task", "nope"), None);
        assert_eq!(btf.member("nostruct", "pid"), None);
        assert_eq!(btf.tracepoint_arg_is_pointer("tp", 0), Some(true));
        assert_eq!(btf.tracepoint_arg_is_pointer("tp", 1), Some(false));
        assert_eq!(btf.tracepoint_arg_is_pointer("tp", 2), None);
        assert_eq!(
            btf.enum_values("numbers").unwrap(),
            vec![(1, "ONE".to_owned()), (2, "TWO".to_owned())]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"nope").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut b = Builder::new();
        b.ty("x", 31, 0, false, 0, &[]);
        assert!(matches!(
            Btf::parse(&b.blob()),
            Err(BtfError::UnknownKind { kind: 31, .. })
        ));
    }

    #[test]
    fn running_kernel_has_the_members_sonde_reads() {
        // Unprivileged: /sys/kernel/btf/vmlinux is world-readable where it exists.
        let Ok(Ok(btf)) = Btf::from_sys_fs() else {
            eprintln!("skipping: no kernel BTF on this machine");
            return;
        };
        for (s, m) in [
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("task_struct", "cgroups"),
            ("task_struct", "exit_code"),
            ("task_struct", "comm"),
            ("css_set", "dfl_cgrp"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
        ] {
            assert!(btf.member(s, m).is_some(), "{s}.{m}");
        }
        assert_eq!(btf.member("task_struct", "comm").unwrap().size, 16);
        assert_eq!(btf.member("kernfs_node", "id").unwrap().size, 8);
        assert_eq!(btf.tracepoint_arg_is_pointer("sched_switch", 1), Some(true));
        assert_eq!(
            btf.tracepoint_arg_is_pointer("sched_switch", 0),
            Some(false)
        );
        assert_eq!(btf.tracepoint_arg_is_pointer("no_such_tracepoint", 0), None);
    }
}

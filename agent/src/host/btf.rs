//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct
//! member offsets, tracepoint prototypes and enum values, so that no kernel
//! struct offset is ever hard-coded (Rust eBPF has no CO-RE relocations of
//! its own).
//!
//! Lean by design: the blob is kept as it is, one pass records where each
//! type starts, and every lookup decodes only what it reads (the kernel's BTF
//! has some 150,000 types; sonde asks about a dozen). Format:
//! `include/uapi/linux/btf.h`.

/// Why a BTF blob failed to parse.
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
/// How deep a lookup follows references (typedef chains, nested arrays,
/// anonymous members) before it gives up: the kernel's own BTF needs a
/// handful, a blob that loops would need forever.
const MAX_DEPTH: u32 = 32;
/// Members one `member` lookup may visit, anonymous ones' included (the
/// kernel's `task_struct` has a few hundred).
const MEMBER_BUDGET: u32 = 1 << 16;
/// Size of a type record's fixed part (`struct btf_type`).
const TYPE_HEADER: usize = 12;

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

/// A member's place in its struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type.
    pub size: u32,
}

/// One type record, decoded from the blob on demand.
#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    /// Size for INT/STRUCT/UNION/ENUM, referenced type for PTR/TYPEDEF/...
    size_or_type: u32,
    /// Where the kind-specific data starts in the type section.
    data: usize,
}

/// Parsed BTF: the type and string sections, and where each type starts.
#[derive(Debug)]
pub struct Btf {
    types: Vec<u8>,
    strings: std::ops::Range<usize>, // within `types`, which holds the whole blob
    starts: Vec<u32>,                // index = type id - 1, offsets within `types`
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    at.checked_add(4)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Invalid("truncated"))
}

/// Bytes of kind-specific data after a type header.
fn data_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        _ => return None,
    })
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        Ok(Self::from_vec(std::fs::read(
            crate::host::kernel::VMLINUX_BTF,
        )?))
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(blob: &[u8]) -> Result<Self, BtfError> {
        Self::from_vec(blob.to_vec())
    }

    /// Parses a little-endian BTF blob, keeping it (no copy).
    pub fn from_vec(blob: Vec<u8>) -> Result<Self, BtfError> {
        let magic = blob
            .get(0..2)
            .and_then(|m| m.try_into().ok())
            .map(u16::from_le_bytes);
        if magic != Some(MAGIC) {
            return Err(BtfError::Invalid("bad magic (not little-endian BTF)"));
        }
        let section = |off: usize, len: usize| -> Result<std::ops::Range<usize>, BtfError> {
            let hdr_len = u32_at(&blob, 4)? as usize;
            let (start, end) = (
                hdr_len.saturating_add(off),
                hdr_len.saturating_add(off).saturating_add(len),
            );
            if end > blob.len() {
                return Err(BtfError::Invalid("section out of bounds"));
            }
            Ok(start..end)
        };
        let types = section(u32_at(&blob, 8)? as usize, u32_at(&blob, 12)? as usize)?;
        let strings = section(u32_at(&blob, 16)? as usize, u32_at(&blob, 20)? as usize)?;
        let mut starts = Vec::new();
        let mut at = types.start;
        while at < types.end {
            let id = starts.len() as u32 + 1;
            let info = u32_at(&blob, at + 4)?;
            let (vlen, kind) = ((info & 0xffff) as usize, (info >> 24) & 0x1f);
            let len = data_len(kind, vlen).ok_or(BtfError::UnknownKind { kind, id })?;
            if at + TYPE_HEADER + len > types.end {
                return Err(BtfError::Invalid("type record past the section's end"));
            }
            starts.push(u32::try_from(at).map_err(|_| BtfError::Invalid("blob over 4 GiB"))?);
            at += TYPE_HEADER + len;
        }
        Ok(Self {
            types: blob,
            strings,
            starts,
        })
    }

    fn ty(&self, id: u32) -> Option<Type> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(&self.types, at + 4).ok()?;
        Some(Type {
            name_off: u32_at(&self.types, at).ok()?,
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: u32_at(&self.types, at + 8).ok()?,
            data: at + TYPE_HEADER,
        })
    }

    /// Word `word` of record `index` (of `size` bytes) in a type's data.
    fn word(&self, ty: &Type, index: usize, size: usize, word: usize) -> Option<u32> {
        u32_at(&self.types, ty.data + index * size + word * 4).ok()
    }

    fn name(&self, off: u32) -> &str {
        let strings = self.types.get(self.strings.clone()).unwrap_or(&[]);
        let rest = strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(rest.get(..end).unwrap_or_default()).unwrap_or("")
    }

    /// The first type called `name` whose kind passes `want`.
    fn find(&self, name: &str, want: impl Fn(&Type) -> bool) -> Option<Type> {
        (1..=self.starts.len() as u32)
            .filter_map(|id| self.ty(id))
            .find(|t| want(t) && self.name(t.name_off) == name)
    }

    /// The struct or union called `name` that has members (not a forward
    /// declaration).
    fn composite(&self, name: &str) -> Option<Type> {
        self.find(name, |t| {
            matches!(t.kind, kind::STRUCT | kind::UNION) && t.vlen > 0
        })
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Size in bytes of type `id`; `None` past `u32::MAX` and for arrays
    /// nested deeper than [`MAX_DEPTH`] (a blob may make an array its own
    /// element).
    fn size_of(&self, mut id: u32) -> Option<u32> {
        let mut elements: u32 = 1;
        for _ in 0..MAX_DEPTH {
            let ty = self.resolve(id)?;
            let size = match ty.kind {
                kind::INT
                | kind::STRUCT
                | kind::UNION
                | kind::ENUM
                | kind::ENUM64
                | kind::FLOAT => ty.size_or_type,
                kind::PTR => 8,
                kind::ARRAY => {
                    let (elem, n) = (self.word(&ty, 0, 12, 0)?, self.word(&ty, 0, 12, 2)?);
                    elements = elements.checked_mul(n)?;
                    id = elem;
                    continue;
                }
                _ => return None,
            };
            return elements.checked_mul(size);
        }
        None
    }

    /// Whether struct `strukt` has a member named `member` at its top level,
    /// bitfields included (which `member` does not return: they have no
    /// byte offset).
    pub fn has_member(&self, strukt: &str, member: &str) -> bool {
        let Some(ty) = self.composite(strukt) else {
            return false;
        };
        (0..ty.vlen).any(|i| {
            self.word(&ty, i, 12, 0)
                .is_some_and(|n| self.name(n) == member)
        })
    }

    /// The member `member` of struct `strukt`, searching anonymous members
    /// too; `None` when the kernel has no such member (or it is a bitfield).
    pub fn member(&self, strukt: &str, member: &str) -> Option<Member> {
        let mut budget = MEMBER_BUDGET;
        self.find_member(&self.composite(strukt)?, member, 0, 0, &mut budget)
    }

    fn find_member(
        &self,
        ty: &Type,
        member: &str,
        base_bits: u32,
        depth: u32,
        budget: &mut u32,
    ) -> Option<Member> {
        if depth > 8 {
            return None;
        }
        for i in 0..ty.vlen {
            // Anonymous members that refer back to their struct would
            // otherwise cost vlen^depth.
            *budget = budget.checked_sub(1)?;
            let (name_off, type_id, offset) = (
                self.word(ty, i, 12, 0)?,
                self.word(ty, i, 12, 1)?,
                self.word(ty, i, 12, 2)?,
            );
            let (bitfield_size, bit_offset) = if ty.kind_flag {
                (offset >> 24, offset & 0x00ff_ffff)
            } else {
                (0, offset)
            };
            let bits = base_bits.checked_add(bit_offset)?;
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
                    if let Some(found) = self.find_member(&inner, member, bits, depth + 1, budget) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// Whether argument `index` of raw tracepoint `tp` is a pointer, from the
    /// kernel's `btf_trace_<tp>` typedef (`void *data` comes first, unseen by
    /// programs); `None` when the kernel does not describe the tracepoint.
    pub fn tracepoint_arg_is_pointer(&self, tp: &str, index: usize) -> Option<bool> {
        let typedef = self.find(&format!("btf_trace_{tp}"), |t| t.kind == kind::TYPEDEF)?;
        let ptr = self.resolve(typedef.size_or_type)?;
        if ptr.kind != kind::PTR {
            return None;
        }
        let proto = self.resolve(ptr.size_or_type)?;
        if proto.kind != kind::FUNC_PROTO || index + 1 >= proto.vlen {
            return None;
        }
        let arg_type = self.word(&proto, index + 1, 8, 1)?;
        Some(self.resolve(arg_type)?.kind == kind::PTR)
    }

    /// The values of enum `name` as (value, enumerator name); ENUM64 values
    /// keep their low 32 bits.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(u32, String)>> {
        let ty = self.find(name, |t| matches!(t.kind, kind::ENUM | kind::ENUM64))?;
        let size = if ty.kind == kind::ENUM { 8 } else { 12 };
        (0..ty.vlen)
            .map(|i| {
                Some((
                    self.word(&ty, i, size, 1)?,
                    self.name(self.word(&ty, i, size, 0)?).to_owned(),
                ))
            })
            .collect()
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
    fn array_sizes_that_overflow_or_loop_are_unknown() {
        // Found by the btf fuzz target: an array's size overflowed u32, and
        // an array that is its own element recursed without end.
        let mut b = Builder::new();
        b.ty("int", kind::INT, 0, false, 4, &[32]); // 1
        b.ty("", kind::ARRAY, 0, false, 0, &[1, 1, u32::MAX]); // 2: int[4G]
        b.ty("", kind::ARRAY, 0, false, 0, &[3, 1, 2]); // 3: its own element
        let (big, selfish, ok) = (b.s("big"), b.s("selfish"), b.s("ok"));
        b.ty(
            "s",
            kind::STRUCT,
            3,
            false,
            8,
            &[big, 2, 0, selfish, 3, 0, ok, 1, 32],
        ); // 4
        let btf = Btf::parse(&b.blob()).unwrap();
        assert_eq!(btf.member("s", "big"), None);
        assert_eq!(btf.member("s", "selfish"), None);
        assert_eq!(btf.member("s", "ok"), Some(Member { offset: 4, size: 4 }));
    }

    #[test]
    fn anonymous_members_that_loop_end() {
        // A struct whose anonymous members are the struct itself: the
        // lookup gives up instead of visiting vlen^depth members.
        let mut b = Builder::new();
        let words: Vec<u32> = (0..64).flat_map(|_| [0, 1, 0]).collect();
        b.ty("loop", kind::STRUCT, 64, false, 8, &words); // 1
        let btf = Btf::parse(&b.blob()).unwrap();
        assert_eq!(btf.member("loop", "x"), None);
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
        // Unprivileged: /sys/kernel/btf/vmlinux is world-readable where it
        // exists. Only its absence skips: a file sonde cannot parse fails.
        let path = crate::host::kernel::VMLINUX_BTF;
        if !std::path::Path::new(path).exists() {
            eprintln!("skipping: no kernel BTF on this machine ({path} is absent)");
            return;
        }
        let btf = Btf::from_sys_fs()
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
            .unwrap_or_else(|e| panic!("parse {path}: {e}"));
        // Sizes from the kernel's own declarations: pid_t and int are 4
        // bytes, pointers 8 on the 64-bit targets sonde ships for, `comm` is
        // TASK_COMM_LEN (16) and a kernfs id a u64.
        let pointer = std::mem::size_of::<usize>() as u32;
        for (s, m, size) in [
            ("task_struct", "pid", 4),
            ("task_struct", "tgid", 4),
            ("task_struct", "cgroups", pointer),
            ("task_struct", "exit_code", 4),
            ("task_struct", "comm", 16),
            ("css_set", "dfl_cgrp", pointer),
            ("cgroup", "kn", pointer),
            ("kernfs_node", "id", 8),
        ] {
            assert_eq!(btf.member(s, m).map(|m| m.size), Some(size), "{s}.{m}");
        }
        assert_eq!(btf.tracepoint_arg_is_pointer("sched_switch", 1), Some(true));
        assert_eq!(
            btf.tracepoint_arg_is_pointer("sched_switch", 0),
            Some(false)
        );
        assert_eq!(btf.tracepoint_arg_is_pointer("no_such_tracepoint", 0), None);
        // A bitfield: no byte offset, but there.
        assert!(btf.has_member("task_struct", "pid"));
        assert!(!btf.has_member("task_struct", "no_such_member"));
    }
}

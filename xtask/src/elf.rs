//! Just enough of ELF64 little-endian to check a shipped binary: its
//! section names and its GNU build id. Read by this code, not by the tool
//! that stripped the binary, so that the check cannot agree with a bug of
//! that tool.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// An ELF file's bytes and its section headers.
pub struct Elf {
    bytes: Vec<u8>,
    sections: Vec<Section>,
    /// Index of the section holding the section names.
    names: usize,
}

#[derive(Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
}

/// `SHT_NOBITS`: a section with no bytes in the file (`.bss`, and every
/// allocated section of a `--only-keep-debug` file).
const SHT_NOBITS: u32 = 8;
/// `SHF_ALLOC`: the section is loaded into the process's memory.
const SHF_ALLOC: u64 = 2;
/// The note type of a GNU build id.
const NT_GNU_BUILD_ID: u32 = 3;

impl Elf {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(bytes).with_context(|| format!("{} is not an ELF64 LE file", path.display()))
    }

    fn parse(bytes: Vec<u8>) -> Result<Self> {
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) || bytes.get(4..6) != Some(&[2, 1]) {
            bail!("no ELF64 little-endian header");
        }
        let shoff = u64_at(&bytes, 0x28)?;
        let shentsize = u64::from(u16_at(&bytes, 0x3a)?);
        let shnum = u64::from(u16_at(&bytes, 0x3c)?);
        let names = usize::from(u16_at(&bytes, 0x3e)?);
        let sections = (0..shnum)
            .map(|i| {
                let at = usize::try_from(shoff + i * shentsize)?;
                Ok(Section {
                    name: u32_at(&bytes, at)?,
                    kind: u32_at(&bytes, at + 4)?,
                    flags: u64_at(&bytes, at + 8)?,
                    offset: u64_at(&bytes, at + 0x18)?,
                    size: u64_at(&bytes, at + 0x20)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if names >= sections.len() {
            bail!(
                "the section-name index {names} is past the {} sections",
                sections.len()
            );
        }
        Ok(Self {
            bytes,
            sections,
            names,
        })
    }

    /// Every section's name, in file order.
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| self.name(s))
    }

    /// The names of the sections not loaded into memory (debug info,
    /// symbol tables, notes for tools): what a strip can take away.
    pub fn unloaded_section_names(&self) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .filter(|s| s.flags & SHF_ALLOC == 0)
            .map(|s| self.name(s))
    }

    /// The GNU build id, from the `.note.gnu.build-id` note.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        let section = self
            .sections
            .iter()
            .find(|s| self.name(s) == ".note.gnu.build-id" && s.kind != SHT_NOBITS)?;
        let note = self.contents(section)?;
        let namesz = usize::try_from(u32_at(note, 0).ok()?).ok()?;
        let descsz = usize::try_from(u32_at(note, 4).ok()?).ok()?;
        if u32_at(note, 8).ok()? != NT_GNU_BUILD_ID {
            return None;
        }
        let desc = 12 + namesz.next_multiple_of(4);
        note.get(desc..desc + descsz).map(<[u8]>::to_vec)
    }

    fn contents(&self, section: &Section) -> Option<&[u8]> {
        let start = usize::try_from(section.offset).ok()?;
        let end = start.checked_add(usize::try_from(section.size).ok()?)?;
        self.bytes.get(start..end)
    }

    fn name(&self, section: &Section) -> &str {
        let table = self
            .sections
            .get(self.names)
            .and_then(|s| self.contents(s))
            .unwrap_or_default();
        let start = usize::try_from(section.name).unwrap_or(usize::MAX);
        table
            .get(start..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("")
    }
}

fn slice<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("truncated at byte {at}"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    slice(bytes, at).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    slice(bytes, at).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    slice(bytes, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_binary() {
        let me = std::env::current_exe().expect("test binary");
        let elf = Elf::read(&me).expect("ELF");
        let names: Vec<&str> = elf.section_names().collect();
        assert!(names.contains(&".text"), "{names:?}");
        assert!(names.contains(&".shstrtab"), "{names:?}");
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert!(Elf::parse(b"\x7fELF\x02\x01".to_vec()).is_err());
        assert!(Elf::parse(Vec::new()).is_err());
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x3a] = 64; // section headers of 64 bytes
        header[0x3c] = 200; // 200 of them, past the end
        assert!(Elf::parse(header).is_err());
    }
}

//! A minimal writer for the `newc` cpio format the kernel unpacks as an
//! initramfs: directories, regular files and symlinks, all owned by root.
//! Pure: it builds bytes in memory (the archive is a few tens of MB).

/// One entry of the archive.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with its permission bits.
    Dir { path: String, mode: u32 },
    /// A regular file with its permission bits and contents.
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A symbolic link to `target`.
    Symlink { path: String, target: String },
}

/// The path of an entry.
pub fn path(entry: &Entry) -> &str {
    match entry {
        Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
            path.trim_start_matches('/')
        }
    }
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// The name of the entry that ends a `newc` archive.
const TRAILER: &str = "TRAILER!!!";
/// `newc` headers, names and data are padded to four bytes.
const ALIGN: usize = 4;

/// Writes `entries` (parents before children) as a `newc` archive.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match entry {
            Entry::Dir { path, mode } => {
                header(&mut out, ino, S_IFDIR | mode, 2, path, &[]);
            }
            Entry::File { path, mode, data } => {
                header(&mut out, ino, S_IFREG | mode, 1, path, data);
            }
            Entry::Symlink { path, target } => {
                header(&mut out, ino, S_IFLNK | 0o777, 1, path, target.as_bytes());
            }
        }
    }
    header(&mut out, 0, 0, 1, TRAILER, &[]);
    out
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let name = name.trim_start_matches('/');
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: reproducible archives
        data.len() as u32,
        0, // dev major
        0, // dev minor
        0, // rdev major
        0, // rdev minor
        name.len() as u32 + 1,
        0, // check (unused by newc)
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGN) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_has_the_newc_layout() {
        let bytes = write(&[Entry::File {
            path: "/init".into(),
            mode: 0o755,
            data: b"hi\n".to_vec(),
        }]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("070701"));
        // 6 magic + 13 fields of 8 hex digits = 110 bytes, then the name.
        assert_eq!(&bytes[110..115], b"init\0");
        // ino 1, mode 0100755, size 3, name size 5.
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081ed");
        assert_eq!(&bytes[54..62], b"00000003");
        assert_eq!(&bytes[94..102], b"00000005");
        // Header + name is 115 bytes, padded to 116; data at 116.
        assert_eq!(&bytes[116..119], b"hi\n");
        // The trailer follows the data, padded to 120.
        assert_eq!(&bytes[120..126], b"070701");
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn symlinks_and_directories_carry_their_type() {
        let bytes = write(&[
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into(),
            },
        ]);
        assert_eq!(&bytes[14..22], b"000041ed");
        let second = 112 + 4; // 110 + "bin\0" = 114, padded to 116
        assert_eq!(&bytes[second + 14..second + 22], b"0000a1ff");
        let name_end = second + 110 + "bin/sh\0".len(); // 233, padded to 236
        assert_eq!(&bytes[236..243], b"busybox");
        assert!(name_end <= 236);
    }
}

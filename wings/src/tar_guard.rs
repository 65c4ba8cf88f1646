//! A reader under `tar::Archive` for a tenant's archive that refuses, before the `tar` crate
//! acts on them, the headers it would otherwise trust: a GNU long name or link (`L`, `K`) or a
//! PAX header (`x`, `g`) whose body it reads whole into memory (an 8 GiB "name" is an 8 GiB
//! allocation in Wings), and a directory, link or special entry that declares a body (which
//! would have to be inflated just to be skipped). Everything passes through unchanged; the
//! total read is capped too, so no archive costs more than its budget in CPU.
//!
//! Written here rather than taken from a crate: it is a view of the 512-byte ustar blocks
//! (type at offset 156, size at 124..136, octal or GNU base-256), which no maintained crate
//! offers apart from a full parser.

use std::io::{self, Read};

/// The largest long-name or PAX header body accepted.
pub const MAX_META_BYTES: u64 = 64 * 1024;

const BLOCK: usize = 512;

enum State {
    /// Reading a header: the bytes of it seen so far.
    Header { seen: usize },
    /// Passing over an entry's body (rounded up to whole blocks).
    Body { left: u64 },
}

/// A reader that checks tar headers as they pass.
pub struct TarGuard<R> {
    inner: R,
    state: State,
    header: [u8; BLOCK],
    /// Bytes that may still be read in all.
    budget: u64,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`, which may yield at most `budget` bytes of tar stream.
    pub fn new(inner: R, budget: u64) -> TarGuard<R> {
        TarGuard {
            inner,
            state: State::Header { seen: 0 },
            header: [0; BLOCK],
            budget,
        }
    }

    fn check(&mut self) -> io::Result<u64> {
        let header = &self.header;
        if header.iter().all(|&b| b == 0) {
            return Ok(0);
        }
        let size = size_of(&header[124..136]).ok_or_else(|| {
            refused(
                io::ErrorKind::InvalidData,
                "a tar header's size is unreadable",
            )
        })?;
        match header[156] {
            b'L' | b'K' | b'x' | b'g' if size > MAX_META_BYTES => Err(refused(
                io::ErrorKind::FileTooLarge,
                "a tar name or PAX header is over 64 KiB",
            )),
            b'0' | 0 | b'7' | b'L' | b'K' | b'x' | b'g' => Ok(size),
            _ if size > 0 => Err(refused(
                io::ErrorKind::InvalidData,
                "a tar entry that is not a file declares a body",
            )),
            _ => Ok(0),
        }
    }

    /// Follows the headers and bodies through `bytes`, just read.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Header { seen } => {
                    let take = (BLOCK - *seen).min(bytes.len());
                    self.header[*seen..*seen + take].copy_from_slice(&bytes[..take]);
                    *seen += take;
                    bytes = &bytes[take..];
                    if *seen == BLOCK {
                        let size = self.check()?;
                        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
                        self.state = if padded == 0 {
                            State::Header { seen: 0 }
                        } else {
                            State::Body { left: padded }
                        };
                    }
                }
                State::Body { left } => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    // `take` is at most `bytes.len()`: it fits a usize.
                    bytes = &bytes[usize::try_from(take).unwrap_or(bytes.len())..];
                    if *left == 0 {
                        self.state = State::Header { seen: 0 };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = n as u64;
        if read > self.budget {
            return Err(refused(
                io::ErrorKind::FileTooLarge,
                "the archive unpacks to more than its budget",
            ));
        }
        self.budget -= read;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

fn refused(kind: io::ErrorKind, message: &'static str) -> io::Error {
    io::Error::new(kind, message)
}

/// A tar size field: octal digits (NUL or space ended), or GNU base-256 (high bit set).
fn size_of(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(tar::EntryType, &str, usize)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (kind, name, size) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(*size as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, name, &vec![b'a'; *size][..])
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn read_through(bytes: &[u8], budget: u64) -> io::Result<usize> {
        let mut guard = TarGuard::new(bytes, budget);
        let mut archive = tar::Archive::new(&mut guard);
        let mut count = 0;
        for entry in archive.entries()? {
            let mut entry = entry?;
            io::copy(&mut entry, &mut io::sink())?;
            count += 1;
        }
        Ok(count)
    }

    #[test]
    fn ordinary_archives_pass_unchanged() {
        let long = "d/".repeat(80) + "file";
        let bytes = archive(&[
            (tar::EntryType::Directory, "d", 0),
            (tar::EntryType::Regular, "d/f", 3000),
            (tar::EntryType::Regular, &long, 10),
        ]);
        assert_eq!(read_through(&bytes, u64::MAX).unwrap(), 3);
    }

    #[test]
    fn a_huge_long_name_is_refused_before_it_is_read() {
        // A GNU long-name header declaring 8 GiB: the guard stops at its header.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(8 << 30);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'a'; 4096]);
        let err = read_through(&bytes, u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");
    }

    #[test]
    fn a_directory_with_a_body_is_refused() {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_path("d").unwrap();
        header.set_size(1 << 40);
        header.set_cksum();
        let err = read_through(header.as_bytes(), u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn the_budget_caps_what_is_read() {
        let bytes = archive(&[(tar::EntryType::Regular, "f", 100_000)]);
        let err = read_through(&bytes, 50_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");
    }

    #[test]
    fn sizes_read_octal_and_base_256() {
        assert_eq!(size_of(b"00000001750\0"), Some(1000));
        assert_eq!(size_of(b"     1750 \0\0"), Some(1000));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 2;
        big[10] = 1;
        assert_eq!(size_of(&big), Some(258));
    }
}

//! Reading the passphrase: from a key file exactly as cryptsetup reads one (the raw
//! bytes, no newline handling), from the terminal (a new one asked twice), or piped
//! in without a key file (one line, as cryptsetup). The bytes live
//! in a zeroized buffer and are never printed.

use std::{
    fs::File,
    io::{self, IsTerminal, Read, Seek, SeekFrom},
    path::Path,
};

use secrecy::{ExposeSecret, SecretSlice};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Kind, Result};

/// cryptsetup's default limit for key files (keyfile_size_max, 8 MiB).
const MAX_KEYFILE: u64 = 8 << 20;

pub struct Passphrase(SecretSlice<u8>);

impl Passphrase {
    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    pub(crate) fn checked(buf: Zeroizing<Vec<u8>>, source: &str) -> Result<Passphrase> {
        if buf.is_empty() {
            return Err(Error::new(Kind::Key, format!("{source}: the passphrase is empty.")));
        }
        Ok(Passphrase(SecretSlice::from(buf.to_vec())))
    }

    /// Random bytes, for a keyslot that must never be guessable and never leaves memory.
    pub fn random(len: usize) -> Result<Passphrase> {
        let mut buf = Zeroizing::new(vec![0u8; len]);
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .map_err(|e| Error::new(Kind::Failed, format!("/dev/urandom: {e}")))?;
        Ok(Passphrase(SecretSlice::from(buf.to_vec())))
    }
}

pub struct KeySource<'a> {
    pub file: Option<&'a Path>,
    pub size: Option<u64>,
    pub offset: Option<u64>,
}

impl KeySource<'_> {
    /// `verify`: a new passphrase is asked twice on a terminal.
    pub fn read(&self, prompt: &str, verify: bool) -> Result<Passphrase> {
        match self.file {
            Some(p) if p == Path::new("-") => self.read_from(&mut io::stdin().lock(), self.offset.unwrap_or(0), "standard input"),
            Some(p) => {
                let name = p.display().to_string();
                let key_err = |e: io::Error| Error::new(Kind::Key, format!("Cannot read key file {name}: {e}."));
                let mut f = File::open(p).map_err(key_err)?;
                if f.metadata().map_err(key_err)?.is_dir() {
                    return Err(Error::new(Kind::Key, format!("Key file {name} is a directory.")));
                }
                // A regular file or a device: seek, as cryptsetup does; a FIFO cannot.
                let offset = self.offset.unwrap_or(0);
                if offset > 0 && f.seek(SeekFrom::Start(offset)).map_err(key_err)? != offset {
                    return Err(Error::new(Kind::Key, format!("Cannot seek in key file {name}.")));
                }
                self.read_from(&mut f, 0, &name)
            }
            None => ask(prompt, verify),
        }
    }

    /// `skip`: bytes still to be skipped by reading (a pipe cannot seek).
    fn read_from(&self, r: &mut dyn Read, skip: u64, name: &str) -> Result<Passphrase> {
        let key_err = |e: io::Error| Error::new(Kind::Key, format!("Cannot read key file {name}: {e}."));
        if io::copy(&mut r.take(skip), &mut io::sink()).map_err(key_err)? < skip {
            return Err(Error::new(Kind::Key, format!("Key file {name} is shorter than --keyfile-offset.")));
        }
        let limit = self.size.unwrap_or(MAX_KEYFILE);
        // Room for everything up front: a growing Vec would leave unzeroed copies behind.
        let mut buf = Zeroizing::new(Vec::with_capacity(limit as usize + 1));
        r.take(limit + 1).read_to_end(&mut buf).map_err(key_err)?;
        if buf.len() as u64 > limit {
            if self.size.is_none() {
                return Err(Error::new(Kind::Key, format!("Key file {name} exceeds the maximum size of 8 MiB.")));
            }
            buf.truncate(limit as usize);
        } else if let Some(n) = self.size {
            if (buf.len() as u64) < n {
                return Err(Error::new(Kind::Key, format!("Cannot read {n} bytes from key file {name}.")));
            }
        }
        Passphrase::checked(buf, &format!("Key file {name}"))
    }
}

/// A key file that is a block device holding an LVM label or a LUKS header is almost
/// always the PV given to -d by mistake (`pvencrypt -d /dev/sda5 KEYFILE`): reading it
/// as a key would "work". Refused before anything is asked or changed. A block device
/// without either (a raw key partition) is a key file as cryptsetup reads one.
pub fn refuse_volume_as_key(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if path == Path::new("-") || !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
        return Ok(());
    }
    // Unreadable: reading the key says so later, as for any key file.
    let Ok(Some(what)) = volume_signature(path) else { return Ok(()) };
    let p = path.display();
    Err(Error::new(
        Kind::Refused,
        format!(
            "Key file {p} is a block device holding {what}, not a key: almost always a swapped argument: \
             pvencrypt -d {p} where pvencrypt -d KEYFILE {p} was meant. Nothing was changed."
        ),
    ))
}

/// What the start of `path` holds when it is a volume: an LVM label (LABELONE in one
/// of the first four sectors, where LVM looks) or a LUKS header (either copy's magic).
pub fn volume_signature(path: &Path) -> io::Result<Option<&'static str>> {
    let mut start = Vec::with_capacity(2048);
    File::open(path)?.take(2048).read_to_end(&mut start)?;
    if start.starts_with(crate::header::MAGIC_1ST) || start.starts_with(crate::header::MAGIC_2ND) {
        return Ok(Some("a LUKS header"));
    }
    if start.chunks(512).any(|s| s.starts_with(b"LABELONE")) {
        return Ok(Some("an LVM label"));
    }
    Ok(None)
}

/// cryptsetup's limit for a passphrase typed or piped in.
const MAX_PASSPHRASE: usize = 512;

fn ask(prompt: &str, verify: bool) -> Result<Passphrase> {
    if !io::stdin().is_terminal() {
        return read_line(&mut io::stdin().lock(), "Standard input");
    }
    let ask = |p: &str| {
        rpassword::prompt_password(p)
            .map(|s| Zeroizing::new(s.into_bytes()))
            .map_err(|e| Error::new(Kind::Key, format!("Cannot read the passphrase: {e}.")))
    };
    let first = ask(prompt)?;
    if verify && *ask("Verify passphrase: ")? != *first {
        return Err(Error::new(Kind::Key, "Passphrases do not match."));
    }
    Passphrase::checked(first, "Terminal")
}

/// Piped in without --key-file: as cryptsetup, one line, the newline not part of it.
pub(crate) fn read_line(r: &mut dyn Read, source: &str) -> Result<Passphrase> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 1));
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if buf.len() == MAX_PASSPHRASE => {
                return Err(Error::new(Kind::Key, format!("{source}: the passphrase exceeds {MAX_PASSPHRASE} bytes.")))
            }
            Ok(_) => buf.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::new(Kind::Key, format!("{source}: cannot read the passphrase: {e}."))),
        }
    }
    byte.zeroize();
    Passphrase::checked(buf, source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read(content: &[u8], size: Option<u64>, offset: Option<u64>) -> Result<Vec<u8>> {
        let mut f = tempfile();
        f.1.write_all(content).unwrap();
        let src = KeySource { file: Some(&f.0), size, offset };
        let r = src.read("", false).map(|p| p.bytes().to_vec());
        r
    }

    fn tempfile() -> (std::path::PathBuf, File, crate::testing::TempDir) {
        let dir = crate::testing::TempDir::new("key");
        let p = dir.join("key");
        let f = File::create(&p).unwrap();
        (p, f, dir)
    }

    #[test]
    fn key_file_is_raw_bytes_with_newline() {
        assert_eq!(read(b"secret\n", None, None).unwrap(), b"secret\n");
    }

    #[test]
    fn key_file_size_and_offset() {
        assert_eq!(read(b"0123456789", Some(4), Some(3)).unwrap(), b"3456");
        assert_eq!(read(b"0123", Some(8), None).unwrap_err().kind, Kind::Key);
        assert_eq!(read(b"0123", None, Some(10)).unwrap_err().kind, Kind::Key);
    }

    #[test]
    fn empty_key_file_is_refused() {
        let e = read(b"", None, None).unwrap_err();
        assert_eq!(e.kind, Kind::Key);
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn missing_key_file_is_a_key_error() {
        let src = KeySource { file: Some(Path::new("/nonexistent/key")), size: None, offset: None };
        assert_eq!(src.read("", false).err().unwrap().kind, Kind::Key);
    }

    #[test]
    fn oversized_key_file_is_refused() {
        let big = vec![b'x'; (MAX_KEYFILE + 1) as usize];
        assert_eq!(read(&big, None, None).unwrap_err().kind, Kind::Key);
        assert_eq!(read(&big, Some(16), None).unwrap().len(), 16);
    }

    fn signature(content: &[u8]) -> Option<&'static str> {
        let mut f = tempfile();
        f.1.write_all(content).unwrap();
        volume_signature(&f.0).unwrap()
    }

    #[test]
    fn volumes_are_recognised_by_their_first_sectors() {
        let mut label = vec![0u8; 2048];
        label[512..520].copy_from_slice(b"LABELONE");
        assert_eq!(signature(&label), Some("an LVM label"));
        label[512..520].fill(0);
        label[1536..1544].copy_from_slice(b"LABELONE");
        assert_eq!(signature(&label), Some("an LVM label"));
        // LVM looks no further than the fourth sector.
        let mut far = vec![0u8; 4096];
        far[2048..2056].copy_from_slice(b"LABELONE");
        assert_eq!(signature(&far), None);
        assert_eq!(signature(b"LUKS\xba\xbe\x00\x02rest"), Some("a LUKS header"));
        assert_eq!(signature(b"SKUL\xba\xbe\x00\x02rest"), Some("a LUKS header"));
        // Inside a key, not at its start: a key.
        assert_eq!(signature(b"xLUKS\xba\xbe"), None);
        assert_eq!(signature(b"secret\n"), None);
        assert_eq!(signature(b""), None);
    }

    #[test]
    fn regular_files_are_never_refused_as_volumes() {
        // Only a block device is taken for a swapped argument; a file is the user's key.
        let mut f = tempfile();
        f.1.write_all(b"LUKS\xba\xbe").unwrap();
        assert!(refuse_volume_as_key(&f.0).is_ok());
        assert!(refuse_volume_as_key(Path::new("-")).is_ok());
        assert!(refuse_volume_as_key(Path::new("/nonexistent/key")).is_ok());
    }

    #[test]
    fn piped_passphrase_is_one_line() {
        let line = |b: &[u8]| read_line(&mut &b[..], "test").map(|p| p.bytes().to_vec());
        assert_eq!(line(b"secret\nignored").unwrap(), b"secret");
        assert_eq!(line(b"no newline").unwrap(), b"no newline");
        assert_eq!(line(b"\n").unwrap_err().kind, Kind::Key);
        assert_eq!(line(&[b'x'; MAX_PASSPHRASE + 1]).unwrap_err().kind, Kind::Key);
        assert_eq!(line(&[b'x'; MAX_PASSPHRASE]).unwrap().len(), MAX_PASSPHRASE);
    }
}

//! Outputs that are whole or absent.
//!
//! An [`AtomicFile`] writes to a hidden temporary file beside the destination and renames it into
//! place only in [`AtomicFile::commit`]. Dropping it uncommitted (an error, a panic, an interrupt)
//! removes the temporary file, so the destination path never holds a half-written model.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks every in-flight [`AtomicFile`] to fail its next write (called from a Ctrl-C handler).
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// True once [`request_interrupt`] was called.
pub fn interrupt_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A file written under a temporary name and renamed into place on success.
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Bytes accepted by `write` so far (some may still be in the `BufWriter`).
    accepted: u64,
    /// File offset up to which writeback to disk has been started.
    writeback_from: u64,
}

/// Start writing the file's dirty pages to disk every this many bytes.
///
/// Why: the kernel only starts background writeback once a tenth of RAM is dirty, so a
/// multi-GB model would otherwise sit in the page cache until `commit`'s `fsync`, which then
/// writes everything while nothing else happens. Starting writeback as we go overlaps the disk
/// with the conversion, keeps dirty memory low, and leaves `fsync` little to do.
const WRITEBACK_STEP: u64 = 32 << 20;

impl AtomicFile {
    /// Creates the temporary file in the destination's directory (so the final rename never
    /// crosses file systems).
    pub fn create(dest: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
        })?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(AtomicFile {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest,
            accepted: 0,
            writeback_from: 0,
        })
    }

    /// Asks the kernel to start writing out what reached the file since the last call.
    fn start_writeback(&mut self) {
        if let Some(o) = &self.out {
            let in_file = self.accepted - o.buffer().len() as u64;
            if in_file > self.writeback_from {
                writeback::start(
                    o.get_ref(),
                    self.writeback_from,
                    in_file - self.writeback_from,
                );
                self.writeback_from = in_file;
            }
        }
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> io::Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("already committed"))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if interrupt_requested() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted by signal",
            ));
        }
        let n = match self.out.as_mut() {
            Some(o) => o.write(buf)?,
            None => return Err(io::Error::other("already committed")),
        };
        self.accepted += n as u64;
        if self.accepted - self.writeback_from >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(n)
    }

    /// The default `write_all` retries `ErrorKind::Interrupted` (an EINTR) forever; after
    /// [`request_interrupt`] every `write` returns that kind, so it must give up instead,
    /// or Ctrl-C would hang the process.
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !interrupt_requested() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Asynchronous writeback of a file range (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), Linux
/// only; elsewhere the final `fsync` does all the work, as before.
mod writeback {
    use std::fs::File;

    #[cfg(target_os = "linux")]
    pub fn start(file: &File, offset: u64, len: u64) {
        use std::ffi::{c_int, c_uint};
        use std::os::fd::AsRawFd;
        extern "C" {
            fn sync_file_range(fd: c_int, offset: i64, nbytes: i64, flags: c_uint) -> c_int;
        }
        const SYNC_FILE_RANGE_WRITE: c_uint = 2;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain system call on a file descriptor we own; it only schedules I/O of
        // data already written, and failure (e.g. a file system without support) is harmless
        // because `commit` still calls `fsync`.
        unsafe {
            sync_file_range(file.as_raw_fd(), offset, len, SYNC_FILE_RANGE_WRITE);
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn start(_file: &File, _offset: u64, _len: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("ggforge-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.gguf");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
            assert!(f.temp_path().exists());
        }
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        fs::remove_dir_all(&dir).unwrap();
    }
}

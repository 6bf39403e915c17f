//! A log file rotated by size: `events.log` is renamed `events.log.1`, the
//! older backups shift up, and the oldest beyond `max_backups` is removed.
//! With `compress`, each rotated file is gzipped (`events.log.1.gz`) on a
//! thread of its own, so that writing goes on meanwhile.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread::JoinHandle,
};

#[derive(Clone, Copy, Debug)]
pub struct RotationConfig {
    pub max_bytes: u64,
    pub max_backups: u32,
    /// Gzip rotated files.
    pub compress: bool,
}

/// Each block of lines goes to the file in one write (the outputs batch
/// them already), so a write that fails can be taken back whole: the file
/// never keeps half a line, even when the disk is full.
pub struct FileSink {
    path: PathBuf,
    rotation: RotationConfig,
    file: File,
    /// The open file's device and inode: when `path` no longer names them
    /// (logrotate moved the file, someone removed it or its directory),
    /// the next write reopens `path` instead of writing into a file nobody
    /// will read.
    identity: (u64, u64),
    size: u64,
    /// The gzip of the last rotated file, while it runs. The next rotation
    /// waits for it: backups are renamed only once none is being written.
    compressing: Option<JoinHandle<io::Result<()>>>,
}

impl FileSink {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(path: PathBuf, rotation: RotationConfig) -> io::Result<Self> {
        let (file, identity, size) = open_append(&path)?;
        Ok(FileSink {
            path,
            rotation,
            file,
            identity,
            size,
            compressing: None,
        })
    }

    /// Reopens `path` when it no longer names the open file. Costs one
    /// `stat` per block of lines.
    fn reopen_if_moved(&mut self) -> io::Result<()> {
        let now = match fs::metadata(&self.path) {
            Ok(meta) => Some((meta.dev(), meta.ino(), meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match now {
            Some((dev, ino, len)) if (dev, ino) == self.identity => {
                // Truncated in place (logrotate's copytruncate): rotate by
                // what the file holds now.
                self.size = self.size.min(len);
                Ok(())
            }
            _ => {
                let (file, identity, size) = open_append(&self.path)?;
                tracing::info!(path = %self.path.display(), "the log file was moved or removed: writing to a new one");
                (self.file, self.identity, self.size) = (file, identity, size);
                Ok(())
            }
        }
    }

    /// Writes a block of whole lines, rotating before a line that would
    /// take the file past its maximum size.
    pub fn write_lines(&mut self, mut lines: &[u8], rotations: &mut u64) -> io::Result<()> {
        self.reopen_if_moved()?;
        while !lines.is_empty() {
            let room = self.rotation.max_bytes.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits.
            let fits = match lines.get(..room.min(lines.len())) {
                Some(head) if head.len() == lines.len() => lines.len(),
                Some(head) => head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
                None => 0,
            };
            if fits == 0 {
                if self.size == 0 {
                    // A single line longer than the limit: write it anyway.
                    let end = lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |i| i + 1);
                    self.write_raw(&lines[..end])?;
                    lines = &lines[end..];
                } else {
                    self.rotate()?;
                    *rotations += 1;
                }
                continue;
            }
            self.write_raw(&lines[..fits])?;
            lines = &lines[fits..];
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            // Take back what part of the block made it (the file is opened
            // for appending, so the next write goes after what is left).
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `events.log.N`, or `events.log.N.gz` when compressed.
    fn backup(&self, n: u32, gz: bool) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        if gz {
            p.push(".gz");
        }
        p.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.wait_for_compression()?;
        if self.rotation.max_backups == 0 {
            fs::remove_file(&self.path)?;
        } else {
            // Both forms: `compress` may have changed since older backups
            // were written.
            for gz in [false, true] {
                let _ = fs::remove_file(self.backup(self.rotation.max_backups, gz));
                for n in (1..self.rotation.max_backups).rev() {
                    let from = self.backup(n, gz);
                    if from.exists() {
                        fs::rename(&from, self.backup(n + 1, gz))?;
                    }
                }
            }
            let rotated = self.backup(1, false);
            fs::rename(&self.path, &rotated)?;
            if self.rotation.compress {
                let gz = self.backup(1, true);
                self.compressing = Some(std::thread::spawn(move || gzip_file(&rotated, &gz)));
            }
        }
        (self.file, self.identity, self.size) = open_append(&self.path)?;
        Ok(())
    }

    fn wait_for_compression(&mut self) -> io::Result<()> {
        match self.compressing.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the gzip thread panicked")),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Flushes and waits for a running gzip, so that every rotated file is
    /// complete when the log is closed.
    pub fn close(&mut self) -> io::Result<()> {
        self.wait_for_compression()
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(path = %self.path.display(), "closing the log file: {e}");
        }
    }
}

/// Opens `path` for appending, creating it and its directory: the file,
/// its (device, inode) and its size.
fn open_append(path: &Path) -> io::Result<(File, (u64, u64), u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino()), meta.len()))
}

/// Gzips `from` into `to` (through a temporary name, so that a reader never
/// sees half a file), then removes `from`. On error `from` stays, whole.
fn gzip_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut partial = to.as_os_str().to_owned();
    partial.push(".tmp");
    let partial = PathBuf::from(partial);
    let result = (|| {
        let mut input = File::open(from)?;
        let mut gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 16, File::create(&partial)?),
            flate2::Compression::default(),
        );
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&partial, to)?;
        fs::remove_file(from)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_lines_and_keeps_max_backups() {
        let dir = std::env::temp_dir().join(format!("hubcap-rotate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/events.log");
        let mut sink = FileSink::open(
            path.clone(),
            RotationConfig {
                max_bytes: 100,
                max_backups: 2,
                compress: false,
            },
        )
        .unwrap();
        let line = [b'x'; 29].iter().copied().chain([b'\n']).collect::<Vec<u8>>(); // 30 bytes
        let mut rotations = 0;
        for _ in 0..10 {
            sink.write_lines(&line, &mut rotations).unwrap();
        }
        sink.flush().unwrap();
        // 3 lines (90 bytes) per file; 10 lines -> 3 rotations.
        assert_eq!(rotations, 3);
        assert_eq!(fs::read(&path).unwrap().len(), 30);
        for n in 1..=2 {
            let backup = fs::read(format!("{}.{n}", path.display())).unwrap();
            assert_eq!(backup.len(), 90);
            assert!(
                backup
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .all(|l| l.len() == 29)
            );
        }
        assert!(!dir.join("sub/events.log.3").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compressed_backups_hold_the_rotated_lines() {
        use std::io::Read;
        let dir = std::env::temp_dir().join(format!("hubcap-rotate-gz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("events.log");
        let rotation = RotationConfig {
            max_bytes: 100,
            max_backups: 2,
            compress: true,
        };
        let mut sink = FileSink::open(path.clone(), rotation).unwrap();
        let mut rotations = 0;
        for i in 0..10u8 {
            let line = format!("{:029}\n", i);
            sink.write_lines(line.as_bytes(), &mut rotations).unwrap();
        }
        sink.close().unwrap();
        assert_eq!(rotations, 3);
        let gunzip = |n: u32| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(File::open(format!("{}.{n}.gz", path.display())).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            text.lines().map(|l| l.parse::<u8>().unwrap()).collect::<Vec<_>>()
        };
        // Lines 6-8 were rotated last, 3-5 before; 0-2 fell off the end.
        assert_eq!(gunzip(1), [6, 7, 8]);
        assert_eq!(gunzip(2), [3, 4, 5]);
        let names = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>();
        assert_eq!(names.len(), 3, "only events.log and two .gz backups: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let r = FileSink::open(
            "/proc/hubcap/events.log".into(),
            RotationConfig {
                max_bytes: 10,
                max_backups: 1,
                compress: false,
            },
        );
        assert!(r.is_err());
    }
}

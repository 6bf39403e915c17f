//! A log file rotated by size: `events.log` is renamed `events.log.1`, the
//! older backups shift up, and the oldest beyond `max_backups` is removed.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
};

#[derive(Clone, Copy, Debug)]
pub struct RotationConfig {
    pub max_bytes: u64,
    pub max_backups: u32,
}

pub struct FileSink {
    path: PathBuf,
    rotation: RotationConfig,
    file: BufWriter<File>,
    size: u64,
}

impl FileSink {
    pub fn open(path: PathBuf, rotation: RotationConfig) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            path,
            rotation,
            file: BufWriter::with_capacity(1 << 16, file),
            size,
        })
    }

    /// Writes a block of whole lines, rotating before a line that would
    /// take the file past its maximum size.
    pub fn write_lines(&mut self, mut lines: &[u8], rotations: &mut u64) -> io::Result<()> {
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
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.rotation.max_backups == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(self.backup(self.rotation.max_backups));
            for n in (1..self.rotation.max_backups).rev() {
                let from = self.backup(n);
                if from.exists() {
                    fs::rename(&from, self.backup(n + 1))?;
                }
            }
            fs::rename(&self.path, self.backup(1))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.file = BufWriter::with_capacity(1 << 16, file);
        self.size = 0;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
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
    fn unwritable_path_is_an_error() {
        let r = FileSink::open(
            "/proc/hubcap/events.log".into(),
            RotationConfig {
                max_bytes: 10,
                max_backups: 1,
            },
        );
        assert!(r.is_err());
    }
}

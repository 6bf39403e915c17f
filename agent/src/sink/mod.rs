//! Where exported lines go: stdout or a size-rotated file.

mod file;

use std::io::{self, Write};

pub use file::{FileSink, RotationConfig};

pub enum Sink {
    Stdout(io::BufWriter<io::Stdout>),
    File(FileSink),
}

#[derive(Default, Debug, Clone, Copy)]
pub struct SinkStats {
    pub lines: u64,
    pub bytes: u64,
    pub rotations: u64,
}

impl Sink {
    /// `-` is stdout; anything else a file, created (with its directory) now
    /// so that an unwritable path fails before capture starts.
    pub fn open(path: &str, rotation: RotationConfig) -> io::Result<Sink> {
        if path == "-" {
            Ok(Sink::Stdout(io::BufWriter::with_capacity(1 << 16, io::stdout())))
        } else {
            Ok(Sink::File(FileSink::open(path.into(), rotation)?))
        }
    }

    /// Writes whole lines (each `\n`-terminated); a file rotates between
    /// lines, never inside one.
    pub fn write_lines(&mut self, lines: &[u8], count: u64, stats: &mut SinkStats) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Stdout(w) => w.write_all(lines)?,
            Sink::File(f) => f.write_lines(lines, &mut stats.rotations)?,
        }
        stats.lines += count;
        stats.bytes += lines.len() as u64;
        Ok(())
    }

    /// The `sink` label of hubcap's output metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Stdout(_) => "stdout",
            Sink::File(_) => "file",
        }
    }

    /// Where the lines go, for people: `stdout` or the file's path.
    pub fn target(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".to_owned(),
            Sink::File(f) => f.path().display().to_string(),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.flush(),
        }
    }

    /// Flushes, and for a file waits until its last rotated file is
    /// compressed.
    pub fn close(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.close(),
        }
    }
}

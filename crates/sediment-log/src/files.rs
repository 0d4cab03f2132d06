//! Names of the files in a partition directory and the small file-system helpers around them.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{LogError, io};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// Written by `delete_records_before`: the log start offset, when it is above the first segment.
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
/// Present only between `close()` and the next `open()`.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const TMP_SUFFIX: &str = ".tmp";

/// Which file of a segment a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentFile {
    Log,
    Index,
    TimeIndex,
}

/// `00000000000000000042.log` for base offset 42.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Parses `<20 digits>.<log|index|timeindex>`.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(i64, SegmentFile)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kind = match ext {
        LOG_EXT => SegmentFile::Log,
        INDEX_EXT => SegmentFile::Index,
        TIME_INDEX_EXT => SegmentFile::TimeIndex,
        _ => return None,
    };
    stem.parse::<i64>().ok().map(|base| (base, kind))
}

pub(crate) fn is_tmp_file(name: &str) -> bool {
    name.ends_with(TMP_SUFFIX)
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

/// Removes a file; a file that is already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io("delete", path)(e)),
        _ => Ok(()),
    }
}

/// Reads at `pos` until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Opens a segment file for reading and writing, creating it when `create`.
pub(crate) fn open_rw(path: &Path, create: bool) -> Result<File, LogError> {
    OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path).map_err(io(if create { "create" } else { "open" }, path))
}

/// Replaces a whole small file durably: write a temporary file, fsync, rename, fsync the directory.
pub(crate) fn write_file_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
    f.write_all(contents).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
    sync_dir(dir)
}

/// Reads the log start offset file: `None` when absent.
pub(crate) fn read_log_start_offset(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(LOG_START_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let mut lines = text.lines();
    let parsed = match (lines.next(), lines.next()) {
        (Some("0"), Some(v)) => v.trim().parse::<i64>().ok().filter(|v| *v >= 0),
        _ => None,
    };
    match parsed {
        Some(v) => Ok(Some(v)),
        None => Err(LogError::Corrupt { path, reason: "unreadable log start offset".into() }),
    }
}

/// Writes the log start offset file (format version 0, then the offset).
pub(crate) fn write_log_start_offset(dir: &Path, offset: i64) -> Result<(), LogError> {
    write_file_atomic(dir, LOG_START_FILE, format!("0\n{offset}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let p = segment_path(Path::new("/d"), 42, LOG_EXT);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(parse_segment_file_name(name), Some((42, SegmentFile::Log)));
        assert_eq!(parse_segment_file_name("00000000000000000042.timeindex"), Some((42, SegmentFile::TimeIndex)));
        assert_eq!(parse_segment_file_name("00000000000000000042.index"), Some((42, SegmentFile::Index)));
        assert_eq!(parse_segment_file_name("0042.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.swap"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None); // above i64::MAX
    }
}

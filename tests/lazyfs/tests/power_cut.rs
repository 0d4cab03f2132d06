//! The binary against a real FUSE mount: what survives a power cut is exactly what was synced.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

struct Mount {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    backing: PathBuf,
    at: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    fn new() -> Mount {
        assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing: these tests need FUSE");
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let at = dir.path().join("mnt");
        fs::create_dir_all(&backing).expect("backing");
        fs::create_dir_all(&at).expect("mountpoint");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sediment-lazyfs"))
            .arg(&backing)
            .arg(&at)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sediment-lazyfs");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready");
        Mount { child, stdin, stdout, backing, at, _dir: dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.at.join(name)
    }

    /// Cuts the power; returns the JSON report and what is left in the backing directory.
    fn cut(mut self) -> (serde_json::Value, PathBuf, tempfile::TempDir) {
        writeln!(self.stdin, "cut").expect("send");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "sediment-lazyfs exited with {status}");
        let report = serde_json::from_str(&line).expect("report");
        (report, self.backing, self._dir)
    }
}

fn synced_write(f: &mut File, data: &[u8]) {
    f.write_all(data).expect("write");
    f.sync_data().expect("fsync");
}

#[test]
fn appends_after_the_last_fsync_are_lost() {
    let m = Mount::new();
    let mut f = File::create(m.path("log")).expect("create");
    synced_write(&mut f, b"durable|");
    f.write_all(b"volatile").expect("write");
    drop(f);
    assert_eq!(fs::read(m.path("log")).expect("read"), b"durable|volatile");
    let (report, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("log")).expect("read"), b"durable|");
    assert_eq!(report["bytes_dropped"], 8);
}

#[test]
fn a_file_never_synced_comes_back_empty() {
    let m = Mount::new();
    File::create(m.path("never")).expect("create").write_all(b"gone").expect("write");
    let (_, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("never")).expect("the name is kept"), b"");
}

#[test]
fn overwrites_and_truncations_below_the_synced_length_are_undone() {
    let m = Mount::new();
    synced_write(&mut File::create(m.path("f")).expect("create"), b"0123456789");
    let f = OpenOptions::new().read(true).write(true).open(m.path("f")).expect("open");
    f.write_all_at(b"XX", 2).expect("overwrite");
    f.set_len(5).expect("truncate");
    f.write_all_at(b"abcdefgh", 3).expect("extend");
    drop(f);
    assert_eq!(fs::read(m.path("f")).expect("read"), b"01Xabcdefgh");
    let (_, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("f")).expect("read"), b"0123456789");
}

#[test]
fn a_sync_keeps_writes_made_through_another_descriptor() {
    let m = Mount::new();
    let a = File::create(m.path("f")).expect("create");
    let b = OpenOptions::new().append(true).open(m.path("f")).expect("open append");
    (&b).write_all(b"through b").expect("write");
    a.sync_all().expect("fsync a");
    (&b).write_all(b", lost").expect("write");
    drop((a, b));
    let (_, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("f")).expect("read"), b"through b");
}

#[test]
fn renaming_an_unsynced_file_over_a_synced_one_leaves_it_empty() {
    let m = Mount::new();
    synced_write(&mut File::create(m.path("state")).expect("create"), b"version 1");
    File::create(m.path("state.tmp")).expect("create").write_all(b"version 2").expect("write");
    fs::rename(m.path("state.tmp"), m.path("state")).expect("rename");
    // the same, done right: data synced before the rename
    synced_write(&mut File::create(m.path("good.tmp")).expect("create"), b"version 2");
    fs::rename(m.path("good.tmp"), m.path("good")).expect("rename");
    let (_, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("state")).expect("read"), b"");
    assert_eq!(fs::read(backing.join("good")).expect("read"), b"version 2");
    assert!(!backing.join("state.tmp").exists());
}

#[test]
fn files_follow_their_directory_when_it_is_renamed() {
    let m = Mount::new();
    fs::create_dir_all(m.path("a/b")).expect("mkdir");
    let mut f = File::create(m.path("a/b/seg")).expect("create");
    synced_write(&mut f, b"kept");
    fs::rename(m.path("a"), m.path("z")).expect("rename dir");
    f.write_all(b" and lost").expect("write after the rename");
    drop(f);
    assert_eq!(fs::read(m.path("z/b/seg")).expect("read"), b"kept and lost");
    let (_, backing, _d) = m.cut();
    assert_eq!(fs::read(backing.join("z/b/seg")).expect("read"), b"kept");
}

#[test]
fn an_unlinked_file_is_simply_gone() {
    let m = Mount::new();
    File::create(m.path("tmp")).expect("create").write_all(b"scratch").expect("write");
    fs::remove_file(m.path("tmp")).expect("unlink");
    let (report, backing, _d) = m.cut();
    assert!(!backing.join("tmp").exists());
    assert_eq!(report["files"], 0);
}

#[test]
fn a_stalled_path_waits_while_the_rest_of_the_disk_goes_on() {
    let mut m = Mount::new();
    fs::create_dir_all(m.path("slow")).expect("mkdir");
    fn ask(m: &mut Mount, cmd: &str, answer: &str) {
        writeln!(m.stdin, "{cmd}").expect("send");
        let mut line = String::new();
        m.stdout.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), answer);
    }
    ask(&mut m, "stall slow", "stalled");
    let slow = m.path("slow/log");
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut f = File::create(&slow).expect("create");
        synced_write(&mut f, b"late");
        tx.send(()).expect("send");
    });
    assert!(rx.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "a write under the stalled path went through");
    let mut fast = File::create(m.path("fast")).expect("create elsewhere");
    synced_write(&mut fast, b"on time");
    ask(&mut m, "resume", "resumed");
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the stalled write completes once resumed");
    writer.join().expect("writer");
    let (_, backing, _dir) = m.cut();
    assert_eq!(fs::read(backing.join("slow/log")).expect("read"), b"late");
    assert_eq!(fs::read(backing.join("fast")).expect("read"), b"on time");
}

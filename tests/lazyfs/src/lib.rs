//! A FUSE passthrough that can lose power.
//!
//! Every operation goes straight to a backing directory, so the processes above the mount see
//! an ordinary file system. Alongside, the file system remembers what a power cut would take
//! back: for each file written since its last `fsync`/`fdatasync`, the length it had then and
//! the bytes that later writes or truncations replaced. [`LazyFs::power_cut`] puts exactly that
//! back, so the backing directory holds what a disk would hold after the machine lost power:
//! every fsynced byte, none of the others.
//!
//! The model (in the spirit of Jepsen's LazyFS, much smaller):
//! - **Data is volatile until fsync.** Appends past the last synced length are dropped;
//!   overwrites and truncations below it are undone. A file created and never synced comes
//!   back empty, and a file renamed over another before its data was synced leaves the new
//!   name empty (the classic "rename without fsync" loss).
//! - **Names are durable at once.** Create, rename, unlink, mkdir and rmdir are kept, as a
//!   journaling file system (ext4, XFS) keeps them once any later fsync commits its journal.
//!   A directory fsync is accepted and changes nothing.
//!
//! Files are tracked by inode, through a descriptor of their own, so the rollback finds a file
//! that was renamed after it was written.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes. Every change goes through this mount,
/// so the cache cannot go stale while it is mounted; a power cut unmounts.
const TTL: Duration = Duration::from_secs(1);

/// What a power cut took back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had writes not yet synced.
    pub files: u64,
    /// Bytes appended past the last synced length and dropped.
    pub bytes_dropped: u64,
    /// Bytes below the last synced length restored to their synced content.
    pub bytes_restored: u64,
}

impl CutReport {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "files": self.files,
            "bytes_dropped": self.bytes_dropped,
            "bytes_restored": self.bytes_restored,
        })
        .to_string()
    }
}

/// A file with writes since its last sync.
struct Dirty {
    /// Our own read-write descriptor of the inode (not the writer's: that one may be
    /// append-only, and it closes when the writer does).
    file: File,
    /// The length at the last sync (or when first written under this mount).
    synced_len: u64,
    /// Synced bytes that writes or truncations replaced, oldest first.
    undo: Vec<(u64, Vec<u8>)>,
    /// Set when an fsync made this record moot; a writer holding it takes a fresh one.
    retired: bool,
}

impl Dirty {
    /// Saves the synced bytes in `[from, to)` before they change.
    fn save(&mut self, from: u64, to: u64) -> io::Result<()> {
        let to = to.min(self.synced_len);
        if from >= to {
            return Ok(());
        }
        let mut old = vec![0u8; (to - from) as usize];
        let n = read_full_at(&self.file, &mut old, from)?;
        old.truncate(n);
        self.undo.push((from, old));
        Ok(())
    }

    /// Puts the file back as it was at its last sync.
    fn roll_back(&mut self, report: &mut CutReport) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        report.files += 1;
        report.bytes_dropped += len.saturating_sub(self.synced_len);
        self.file.set_len(self.synced_len)?;
        // Newest first, so that where a region was saved twice its synced content wins.
        for (at, old) in self.undo.drain(..).rev() {
            report.bytes_restored += old.len() as u64;
            self.file.write_all_at(&old, at)?;
        }
        Ok(())
    }
}

fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

struct Handle {
    file: File,
    ino: u64,
    append: bool,
}

/// The file system. Mount it with [`mount`].
pub struct LazyFs {
    root: PathBuf,
    /// The backing root's own inode number, which FUSE calls 1.
    root_ino: u64,
    /// Where each inode the kernel knows lives in the backing directory.
    paths: Mutex<HashMap<u64, PathBuf>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    dirty: Mutex<HashMap<u64, Arc<Mutex<Dirty>>>>,
    /// Set by a power cut: from then on every request fails, as on a dead disk.
    dead: AtomicBool,
    /// A slow disk: writes and fsyncs of files under this backing path wait until it is
    /// cleared ([`LazyFs::stall`]).
    stalled: Mutex<Option<PathBuf>>,
    unstalled: std::sync::Condvar,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one request must not wedge the whole mount.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    if secs >= 0 { UNIX_EPOCH + Duration::new(secs as u64, nanos as u32) } else { UNIX_EPOCH }
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

impl LazyFs {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let root_ino = fs::metadata(&root)?.ino();
        let mut paths = HashMap::new();
        paths.insert(INodeNo::ROOT.0, root.clone());
        Ok(LazyFs {
            root,
            root_ino,
            paths: Mutex::new(paths),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            dirty: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            stalled: Mutex::new(None),
            unstalled: std::sync::Condvar::new(),
        })
    }

    fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino { INodeNo::ROOT.0 } else { st_ino }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        lock(&self.paths).get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, meta: &fs::Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.fuse_ino(meta.ino())),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(meta),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    /// Looks `path` up, remembers where its inode lives and returns its attributes.
    fn remember(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        let attr = self.attr(&meta);
        lock(&self.paths).insert(attr.ino.0, path);
        Ok(attr)
    }

    /// Makes writes and fsyncs of files under `under` (relative to the backing directory) wait
    /// until `stall(None)`: a disk too slow for them, while reads and every other path go on.
    pub fn stall(&self, under: Option<&Path>) {
        *lock(&self.stalled) = under.map(|p| self.root.join(p));
        self.unstalled.notify_all();
    }

    /// Waits while writes to inode `ino` are stalled.
    fn wait_unstalled(&self, ino: u64) {
        let Some(path) = lock(&self.paths).get(&ino).cloned() else { return };
        let mut stalled = lock(&self.stalled);
        while stalled.as_ref().is_some_and(|under| path.starts_with(under)) && !self.dead.load(Ordering::SeqCst) {
            stalled = self.unstalled.wait(stalled).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, file: File, ino: u64, append: bool) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Handle { file, ino, append }));
        FileHandle(fh)
    }

    /// Runs `f` on the rollback record of `ino` (created on its first change since a sync),
    /// holding it, so that an fsync waits for the change and counts it.
    fn with_dirty<T>(&self, ino: u64, file: &File, f: impl FnOnce(&mut Dirty) -> io::Result<T>) -> io::Result<T> {
        loop {
            let d = self.dirty(ino, file)?;
            let mut d = lock(&d);
            if !d.retired {
                return f(&mut d);
            }
        }
    }

    /// The rollback record of `ino`. `file` is any open descriptor of the inode; a read-write
    /// one of our own is opened from it.
    fn dirty(&self, ino: u64, file: &File) -> io::Result<Arc<Mutex<Dirty>>> {
        let mut dirty = lock(&self.dirty);
        if let Some(d) = dirty.get(&ino) {
            return Ok(d.clone());
        }
        let own = OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let synced_len = own.metadata()?.len();
        let d = Arc::new(Mutex::new(Dirty { file: own, synced_len, undo: Vec::new(), retired: false }));
        dirty.insert(ino, d.clone());
        Ok(d)
    }

    /// Truncates (or extends) `file` to `size`, saving the synced bytes it cuts.
    fn set_len(&self, ino: u64, file: &File, size: u64) -> io::Result<()> {
        self.with_dirty(ino, file, |d| {
            let len = d.file.metadata()?.len();
            if size < len {
                d.save(size, len)?;
            }
            d.file.set_len(size)
        })
    }

    /// Records that everything written to `ino` so far is durable.
    fn synced(&self, ino: u64) {
        let d = lock(&self.dirty).remove(&ino);
        if let Some(d) = d {
            // Waits for a write in flight on this inode; one that comes later finds the
            // record retired and starts a new one.
            lock(&d).retired = true;
        }
    }

    /// The power goes out: every file is put back to its last synced state, and every request
    /// from now on fails. The caller has killed (and reaped) the processes writing here.
    pub fn power_cut(&self) -> io::Result<CutReport> {
        self.dead.store(true, Ordering::SeqCst);
        // stalled writers fail now, as every later request does
        drop(lock(&self.stalled));
        self.unstalled.notify_all();
        let dirty: Vec<_> = lock(&self.dirty).drain().map(|(_, d)| d).collect();
        let mut report = CutReport::default();
        for d in dirty {
            lock(&d).roll_back(&mut report)?;
        }
        lock(&self.handles).clear();
        Ok(report)
    }

    fn open_file(path: &Path, flags: i32, mode: Option<u32>) -> io::Result<File> {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => o.write(true),
            libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        // O_APPEND is kept for the caller's writes by offset (see `write`); O_TRUNC is done
        // through `set_len`, so that the bytes it cuts can be put back.
        let passed = flags & !(libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL);
        o.custom_flags(passed);
        if let Some(mode) = mode {
            o.create_new(true).mode(mode);
        }
        o.open(path)
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.remember(p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let meta = match fh.map(|fh| self.handle(fh)) {
            Some(Ok(h)) => h.file.metadata().map_err(errno),
            _ => self.path(ino).and_then(|p| fs::symlink_metadata(p).map_err(errno)),
        };
        match meta {
            Ok(meta) => reply.attr(&TTL, &self.attr(&meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| -> Result<FileAttr, Errno> {
            let path = self.path(ino)?;
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
            }
            if let Some(size) = size {
                let file = match fh.map(|fh| self.handle(fh)) {
                    Some(Ok(h)) => h.file.try_clone().map_err(errno)?,
                    _ => OpenOptions::new().write(true).open(&path).map_err(errno)?,
                };
                self.set_len(ino.0, &file, size).map_err(errno)?;
            }
            Ok(self.attr(&fs::symlink_metadata(&path).map_err(errno)?))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let result = self.child(parent, name).and_then(|p| {
            fs::DirBuilder::new().mode(mode & !umask).create(&p).map_err(errno)?;
            self.remember(p)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|p| {
            let ino = self.fuse_ino(fs::symlink_metadata(&p).map_err(errno)?.ino());
            fs::remove_file(&p).map_err(errno)?;
            let mut paths = lock(&self.paths);
            if paths.get(&ino) == Some(&p) {
                paths.remove(&ino);
            }
            drop(paths);
            // A file with no name left cannot come back after a crash: forget its rollback.
            let gone = lock(&self.dirty).get(&ino).map(|d| lock(d).file.metadata().map(|m| m.nlink() == 0).unwrap_or(true)).unwrap_or(false);
            if gone {
                lock(&self.dirty).remove(&ino);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name).and_then(|p| fs::remove_dir(&p).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        let result = (|| -> Result<(), Errno> {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            let (cfrom, cto) = (cstr(&from)?, cstr(&to)?);
            // SAFETY: both paths are NUL-terminated strings that outlive the call.
            let rc = unsafe { libc::renameat2(libc::AT_FDCWD, cfrom.as_ptr(), libc::AT_FDCWD, cto.as_ptr(), flags.bits()) };
            if rc != 0 {
                return Err(errno(io::Error::last_os_error()));
            }
            // Everything that lived under the old name lives under the new one now.
            let mut paths = lock(&self.paths);
            for p in paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&from) {
                    *p = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| -> Result<FileHandle, Errno> {
            let path = self.path(ino)?;
            let file = Self::open_file(&path, flags.0, None).map_err(errno)?;
            if flags.0 & libc::O_TRUNC != 0 {
                self.set_len(ino.0, &file, 0).map_err(errno)?;
            }
            Ok(self.add_handle(file, ino.0, flags.0 & libc::O_APPEND != 0))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let result = (|| -> Result<(FileAttr, FileHandle), Errno> {
            let path = self.child(parent, name)?;
            let file = match Self::open_file(&path, flags, Some(mode & !umask)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                    let f = Self::open_file(&path, flags, None).map_err(errno)?;
                    let ino = self.fuse_ino(f.metadata().map_err(errno)?.ino());
                    if flags & libc::O_TRUNC != 0 {
                        self.set_len(ino, &f, 0).map_err(errno)?;
                    }
                    f
                }
                Err(e) => return Err(errno(e)),
            };
            let attr = self.remember(path)?;
            // A new file's synced length is 0: nothing in it survives a crash until a sync.
            self.dirty(attr.ino.0, &file).map_err(errno)?;
            let fh = self.add_handle(file, attr.ino.0, flags & libc::O_APPEND != 0);
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock_owner: Option<LockOwner>, reply: ReplyData) {
        let result = self.handle(fh).and_then(|h| {
            let mut buf = vec![0u8; size as usize];
            let n = read_full_at(&h.file, &mut buf, offset).map_err(errno)?;
            buf.truncate(n);
            Ok(buf)
        });
        match result {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = (|| -> Result<u32, Errno> {
            let h = self.handle(fh)?;
            self.wait_unstalled(h.ino);
            self.with_dirty(h.ino, &h.file, |d| {
                let at = if h.append { d.file.metadata()?.len() } else { offset };
                d.save(at, at + data.len() as u64)?;
                d.file.write_all_at(data, at)
            })
            .map_err(errno)?;
            Ok(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close() is not a sync.
        reply.ok();
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock_owner: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // The backing directory is never fsynced itself: the power cut is simulated, so what
        // counts is which writes the program asked to make durable, and when.
        match self.handle(fh) {
            Ok(h) => {
                self.wait_unstalled(h.ino);
                self.synced(h.ino);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let result = (|| -> Result<Vec<(u64, FileType, OsString)>, Errno> {
            let path = self.path(ino)?;
            let mut entries = vec![(ino.0, FileType::Directory, OsString::from(".")), (ino.0, FileType::Directory, OsString::from(".."))];
            for e in fs::read_dir(&path).map_err(errno)? {
                let e = e.map_err(errno)?;
                let kind = e.file_type().ok().and_then(FileType::from_std).unwrap_or(FileType::RegularFile);
                let meta_ino = std::os::unix::fs::DirEntryExt::ino(&e);
                entries.push((self.fuse_ino(meta_ino), kind, e.file_name()));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Names are durable at once in this model (see the crate docs).
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let c = match cstr(&self.root) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        // SAFETY: `c` is NUL-terminated and `st` is a plain C struct the call fills in.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return reply.error(errno(io::Error::last_os_error()));
        }
        reply.statfs(st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_bsize as u32, st.f_namemax as u32, st.f_frsize as u32);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.path(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

fn cstr(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// A mounted [`LazyFs`]. Dropping it detaches the mount (lazily: files a crashed program left
/// open do not keep it, or its mount point, busy).
pub struct Session {
    session: Option<fuser::BackgroundSession>,
    at: PathBuf,
}

impl Session {
    /// Unmounts now; a mount still in use is detached instead.
    pub fn unmount(mut self) -> io::Result<()> {
        self.detach()
    }

    fn detach(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let c = cstr(&self.at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let result = if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        // its own unmount now finds nothing mounted; its threads end with the connection
        drop(session);
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// Mounts `fs` at `mountpoint`, served by a few threads until the session is dropped.
pub fn mount(fs: Arc<LazyFs>, mountpoint: &Path) -> io::Result<Session> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("sediment-lazyfs".into()), fuser::MountOption::DefaultPermissions];
    // stalled writes (`LazyFs::stall`) each hold a thread: enough for the rest to go on
    config.n_threads = Some(16);
    let session = fuser::spawn_mount(Shared(fs), mountpoint, &config)?;
    Ok(Session { session: Some(session), at: mountpoint.to_path_buf() })
}

/// Lets the caller keep a handle on the file system the session owns.
struct Shared(Arc<LazyFs>);

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name(&self, $($arg: $ty),*) { self.0.$name($($arg),*) })*
    };
}

impl Filesystem for Shared {
    forward! {
        lookup(req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry);
        getattr(req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr);
        setattr(req: &Request, ino: INodeNo, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>,
            size: Option<u64>, atime: Option<TimeOrNow>, mtime: Option<TimeOrNow>, ctime: Option<SystemTime>,
            fh: Option<FileHandle>, crtime: Option<SystemTime>, chgtime: Option<SystemTime>,
            bkuptime: Option<SystemTime>, flags: Option<fuser::BsdFileFlags>, reply: ReplyAttr);
        mkdir(req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry);
        unlink(req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        rmdir(req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        rename(req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr,
            flags: RenameFlags, reply: ReplyEmpty);
        open(req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        create(req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate);
        read(req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, flags: OpenFlags,
            lock_owner: Option<LockOwner>, reply: ReplyData);
        write(req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, data: &[u8], write_flags: WriteFlags,
            flags: OpenFlags, lock_owner: Option<LockOwner>, reply: ReplyWrite);
        flush(req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty);
        release(req: &Request, ino: INodeNo, fh: FileHandle, flags: OpenFlags, lock_owner: Option<LockOwner>,
            flush: bool, reply: ReplyEmpty);
        fsync(req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        opendir(req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        readdir(req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory);
        fsyncdir(req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        statfs(req: &Request, ino: INodeNo, reply: ReplyStatfs);
        access(req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty);
    }
}

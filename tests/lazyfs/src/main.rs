//! `sediment-lazyfs BACKING_DIR MOUNTPOINT`: mounts a file system that can lose power.
//!
//! Prints `ready` once mounted, then reads commands on stdin, one per line:
//! - `cut`: the power goes out. Every write not fsynced is taken back from BACKING_DIR, a JSON
//!   report of what was lost is printed, and the mount goes away. Kill the processes writing
//!   under MOUNTPOINT first.
//! - `stall PATH`: writes and fsyncs of files under PATH (relative to BACKING_DIR) wait, as on
//!   a disk too slow for them; reads and other paths go on. Prints `stalled`.
//! - `resume`: they go on. Prints `resumed`.
//! - `unmount` (or end of input): a clean stop; everything written stays.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: sediment-lazyfs BACKING_DIR MOUNTPOINT");
        return ExitCode::from(2);
    };
    let mountpoint = PathBuf::from(mountpoint);
    let fs = match sediment_lazyfs::LazyFs::new(backing) {
        Ok(fs) => Arc::new(fs),
        Err(e) => {
            eprintln!("error: backing directory {backing}: {e}");
            return ExitCode::from(2);
        }
    };
    let session = match sediment_lazyfs::mount(fs.clone(), &mountpoint) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: mounting at {}: {e}", mountpoint.display());
            return ExitCode::from(1);
        }
    };
    println!("ready");
    let _ = io::stdout().flush();

    let mut code = ExitCode::SUCCESS;
    for line in io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("cut") => {
                match fs.power_cut() {
                    Ok(report) => println!("{}", report.to_json()),
                    Err(e) => {
                        eprintln!("error: rolling back unsynced writes: {e}");
                        code = ExitCode::from(1);
                    }
                }
                break;
            }
            Ok("unmount") | Err(_) => break,
            Ok("resume") => {
                fs.stall(None);
                println!("resumed");
            }
            Ok(cmd) if cmd.starts_with("stall ") => {
                fs.stall(Some(std::path::Path::new(cmd["stall ".len()..].trim())));
                println!("stalled");
            }
            Ok("") => {}
            Ok(other) => eprintln!("unknown command {other:?} (cut, stall PATH, resume, unmount)"),
        }
    }
    if let Err(e) = session.unmount() {
        eprintln!("error: unmounting {}: {e}", mountpoint.display());
        code = ExitCode::from(1);
    }
    let _ = io::stdout().flush();
    code
}

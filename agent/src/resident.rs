//! Keeps the agent's resident memory to what its steady rounds use.
//!
//! Start-up and plugin loads run code that the collection rounds never run again (config
//! parsing, TLS set-up, connecting, loading components), and the kernel maps it in 64 KB
//! windows (fault-around), so most of the executable's resident pages are touched once and
//! kept. Once the agent has settled, [`release_executable_pages`] unmaps the executable's
//! code (`MADV_DONTNEED`: code pages are never written, so they are clean copies of the
//! file), asks the kernel to reclaim its data pages (`MADV_PAGEOUT`, which keeps written
//! ones) and to read them back one page at a time (`MADV_RANDOM`: no read-around); the next
//! rounds bring back only what they run. The program sees no difference (Android's app
//! compaction does the same to idle apps' file pages). The code stays in the page cache,
//! so a re-fault maps the cached code around it (fault-around; the kernel ignores
//! `MADV_RANDOM` for executable mappings): release builds link the functions the rounds and
//! the compiler child run next to each other (agent/build.rs), so those windows hold code
//! that runs. Reclaiming the code from the page cache as well kept ~0.1 MB less resident but
//! cost 5x the release's CPU (evicting the whole file, then reading the code back from disk).

use std::io;

/// How many bytes of the executable were resident before and after a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub before: u64,
    pub after: u64,
}

/// Gives the heap pages freed since the last call back to the system. glibc keeps freed
/// memory for reuse, so the copies of a large plugin file that a load reads and hands to
/// the compiler child would otherwise stay in the agent's RSS.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the kernel to reclaim the pages of this process's executable file mappings and to
/// fault them back in as they are used. Linux only; elsewhere it fails with
/// [`io::ErrorKind::Unsupported`].
pub fn release_executable_pages() -> io::Result<()> {
    imp::release_executable_pages()
}

/// [`release_executable_pages`], with the executable's resident bytes before and after
/// (each a read of /proc/self/smaps, which walks every mapping: only when they are logged).
pub fn release_executable_pages_measured() -> io::Result<Released> {
    let before = executable_resident_bytes()?;
    release_executable_pages()?;
    Ok(Released {
        before,
        after: executable_resident_bytes()?,
    })
}

/// The resident bytes of this process's executable file mappings (from /proc/self/smaps).
pub fn executable_resident_bytes() -> io::Result<u64> {
    imp::executable_resident_bytes()
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::unix::fs::MetadataExt;

    /// One mapping of the executable: its address range, and whether it is its code.
    struct Mapping {
        start: usize,
        end: usize,
        code: bool,
    }

    impl Mapping {
        /// `madvise(advice)` on the whole mapping.
        fn advise(&self, advice: libc::c_int) -> io::Result<()> {
            // SAFETY: the range is one of this process's file mappings as the kernel lists
            // it; callers give advice that changes only how its pages are cached and never
            // discards a written page (MADV_DONTNEED is given for code mappings only).
            if unsafe {
                libc::madvise(
                    self.start as *mut libc::c_void,
                    self.end - self.start,
                    advice,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }

    /// The inode of the running executable, to recognise its mappings in /proc/self/maps
    /// (also after the file was replaced on disk, when the path reads "(deleted)").
    fn executable_inode() -> io::Result<u64> {
        Ok(std::fs::metadata("/proc/self/exe")?.ino())
    }

    /// Whether a /proc/self/maps (or smaps header) line maps the file with inode `inode`:
    /// "start-end perms offset dev inode path".
    fn maps_inode(line: &str, inode: u64) -> Option<Mapping> {
        let mut fields = line.split_ascii_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        let _dev = fields.next()?;
        let line_inode: u64 = fields.next()?.parse().ok()?;
        fields.next()?; // a path: file mappings only
        if line_inode != inode {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        Some(Mapping {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            // Executable and never writable: nothing in it differs from the file.
            code: perms.contains('x') && !perms.contains('w'),
        })
    }

    fn executable_mappings() -> io::Result<Vec<Mapping>> {
        let inode = executable_inode()?;
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        Ok(maps
            .lines()
            .filter_map(|line| maps_inode(line, inode))
            .collect())
    }

    pub fn executable_resident_bytes() -> io::Result<u64> {
        let inode = executable_inode()?;
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut in_executable = false;
        let mut kib = 0u64;
        for line in smaps.lines() {
            let Some(first) = line.split_ascii_whitespace().next() else {
                continue;
            };
            if !first.ends_with(':') {
                // A mapping's header line; the fields of that mapping follow it.
                in_executable = maps_inode(line, inode).is_some();
            } else if in_executable && first == "Rss:" {
                kib += line
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(kib * 1024)
    }

    pub fn release_executable_pages() -> io::Result<()> {
        for mapping in executable_mappings()? {
            mapping.advise(libc::MADV_RANDOM)?;
            if mapping.code {
                // Code is never written: unmapping it loses nothing, and its pages stay
                // cached for the re-faults.
                mapping.advise(libc::MADV_DONTNEED)?;
            } else {
                mapping.advise(libc::MADV_PAGEOUT)?;
            }
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "only on Linux")
    }

    pub fn executable_resident_bytes() -> io::Result<u64> {
        Err(unsupported())
    }

    pub fn release_executable_pages() -> io::Result<()> {
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn released_executable_pages_are_no_longer_resident() {
        let released =
            release_executable_pages_measured().expect("madvise of this test's executable");
        assert!(released.before > 0, "{released:?}");
        // The code that measures "after" faults its own pages back in, each with its 64 KB
        // of cached neighbours (the code stays in the page cache): in this unordered test
        // build that is a good part of what is left (seen: 0.40-0.56 of "before").
        assert!(
            released.after < released.before / 4 * 3,
            "the executable's start-up pages should be released: {released:?}"
        );
        assert!(executable_resident_bytes().expect("smaps") > 0);
    }
}

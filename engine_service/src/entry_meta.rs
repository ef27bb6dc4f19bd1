//! Permissions and modification times of archive entries, applied to what
//! `extract` writes, as `tar` and `unzip` apply them: a script stays
//! executable, a read-only file stays read-only, and a build or a sync
//! tool that compares times sees the archive's, not the time of the
//! extraction.
//!
//! What is kept and what is not:
//! - Permission bits only (`0o777`): set-user-ID, set-group-ID and sticky
//!   bits are dropped, and the engine's umask still applies, as for
//!   `tar` run by a user without `-p`. Owners are never taken from an
//!   archive.
//! - A folder's permissions and time are applied after every entry is
//!   written, deepest first (writing into a folder changes its time, and a
//!   read-only folder could not be written into), and a folder always keeps
//!   its owner's `rwx`, so a later `existing: overwrite` can remove it.
//! - A ZIP entry that records no permission bits (all zero: written on
//!   Unix by a tool that set only MS-DOS attributes) gets those of a new
//!   file, `0o666` less the umask, not a mode of `000` that nobody could
//!   read.
//! - A ZIP entry's time comes from its extended timestamp (UTC) when it has
//!   one, else from its MS-DOS date and time, which carry no time zone and
//!   are read as UTC.
use std::fs::{File, FileTimes};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::output::write_failure;
use crate::results::FileFailure;

/// What an archive says about one entry; `None` where it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits, without file type, set-id and sticky bits.
    pub mode: Option<u32>,
    /// Modification time, in seconds since the epoch.
    pub mtime: Option<i64>,
}

impl EntryMeta {
    pub fn from_zip<R: std::io::Read>(entry: &zip::read::ZipFile<'_, R>) -> Self {
        let extended = entry.extra_data_fields().find_map(|f| match f {
            zip::extra_fields::ExtraField::ExtendedTimestamp(t) => t.mod_time(),
            _ => None,
        });
        let dos = entry.last_modified().filter(|d| d.is_valid()).map(|d| {
            civil_to_unix(
                i64::from(d.year()),
                u32::from(d.month()),
                u32::from(d.day()),
            ) + i64::from(d.hour()) * 3600
                + i64::from(d.minute()) * 60
                + i64::from(d.second())
        });
        EntryMeta {
            // No permission bits at all means none were recorded (a ZIP made
            // on Unix by a tool that set only MS-DOS attributes), not 0o000.
            mode: entry.unix_mode().map(|m| m & 0o777).filter(|&m| m != 0),
            mtime: extended.map(i64::from).or(dos),
        }
    }

    pub fn from_tar(header: &tar::Header) -> Self {
        EntryMeta {
            mode: header.mode().ok().map(|m| m & 0o777),
            mtime: header.mtime().ok().and_then(|t| i64::try_from(t).ok()),
        }
    }

    /// The mode to create a file with (the umask applies): the entry's, or
    /// the usual `0o666`.
    pub fn create_mode(&self) -> u32 {
        self.mode.unwrap_or(0o666)
    }

    /// Sets the entry's modification time on `file`, once it is written.
    pub fn apply_time(&self, file: &File) -> Result<(), FileFailure> {
        let Some(t) = self.mtime.and_then(to_system_time) else {
            return Ok(());
        };
        file.set_times(FileTimes::new().set_modified(t))
            .map_err(|e| write_failure(&e, "setting an extracted file's time"))
    }
}

/// Folders met in an archive, with what it says about them, applied once
/// every entry is written. Shared by the threads of one archive.
#[derive(Default)]
pub struct Folders(Mutex<Vec<(PathBuf, EntryMeta)>>);

impl Folders {
    pub fn note(&self, path: PathBuf, meta: EntryMeta) {
        if meta != EntryMeta::default() {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((path, meta));
        }
    }

    /// Applies permissions and times, deepest folder first.
    pub fn apply(self) -> Result<(), FileFailure> {
        let mut folders = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        folders.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, meta) in folders {
            let dir = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(dir) => dir,
                // Replaced by a symlink entry of the same name: that entry won.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => continue,
                Err(e) => return Err(write_failure(&e, "opening an extracted folder")),
            };
            if let Some(mode) = meta.mode {
                // chmod ignores the umask, which a created file gets: an
                // archive's 0o777 folder must not come out world-writable.
                let mask = crate::output::umask().unwrap_or(0o022);
                dir.set_permissions(std::fs::Permissions::from_mode((mode & !mask) | 0o700))
                    .map_err(|e| write_failure(&e, "setting an extracted folder's permissions"))?;
            }
            meta.apply_time(&dir)?;
        }
        Ok(())
    }
}

fn to_system_time(secs: i64) -> Option<SystemTime> {
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Seconds from the epoch to midnight UTC of a proleptic Gregorian date
/// (Howard Hinnant's `days_from_civil`).
fn civil_to_unix(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_convert_to_the_epoch_seconds_date_gives() {
        assert_eq!(civil_to_unix(1970, 1, 1), 0);
        assert_eq!(civil_to_unix(2000, 3, 1), 951_868_800);
        assert_eq!(civil_to_unix(2024, 2, 29), 1_709_164_800);
        assert_eq!(civil_to_unix(1980, 1, 1), 315_532_800);
    }
}

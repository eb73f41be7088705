//! Crash-safe file system operations.
//!
//! On Linux a file's contents, its directory entry, and the existence of its
//! parent directories become durable separately: `fsync` of a file does not
//! persist its name, and `rename` is atomic but not durable until the
//! directory is fsynced. The helpers here do the whole sequence so that after
//! a crash (kill -9 or power loss) a file is either entirely old or entirely
//! new, never empty or half-written, and an operation that returned `Ok`
//! stays done.
//!
//! Invariants:
//! - [`write_file_atomic`] writes to a uniquely named temporary file in the
//!   target's directory, whose name ends in [`TEMP_FILE_SUFFIX`]. A crash can
//!   leave such files behind; they are never valid data, and
//!   [`remove_stale_temp_files`] deletes them (call it at startup, before
//!   anything else writes to the directory).
//! - Every error is a [`std::io::Error`] of the original kind whose message
//!   names the operation and the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary files [`write_file_atomic`] creates.
pub const TEMP_FILE_SUFFIX: &str = ".___temp";

/// Adds the operation and path to an error, keeping its kind.
fn with_path(err: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{op} {}: {err}", path.display()))
}

/// The directory containing `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// True if `path`'s file name marks it as a temporary file of
/// [`write_file_atomic`].
pub fn is_temp_file(path: impl AsRef<Path>) -> bool {
    path.as_ref()
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(TEMP_FILE_SUFFIX))
}

/// Makes the entries of directory `path` (creations, renames, removals)
/// durable.
pub fn fsync_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| with_path(e, "fsync directory", path))
}

/// Makes the contents of the file at `path` durable.
pub fn fsync_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| with_path(e, "fsync file", path))
}

/// Replaces (or creates) the file at `path` with `contents`, atomically and
/// durably: a temporary file in the same directory is written and fsynced,
/// renamed over `path`, and the directory is fsynced. Readers see either the
/// old or the new contents; after a crash the file is either old or new.
pub fn write_file_atomic(path: impl AsRef<Path>, contents: &[u8]) -> io::Result<()> {
    write_file_atomic_mode(path, contents, 0o644)
}

/// [`write_file_atomic`] with the file created with permission bits `mode`
/// (before `umask`): a file that holds a secret is never readable by others,
/// not even for a moment.
pub fn write_file_atomic_mode(
    path: impl AsRef<Path>,
    contents: &[u8],
    mode: u32,
) -> io::Result<()> {
    let path = path.as_ref();
    let Some(file_name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("write file {}: the path has no file name", path.display()),
        ));
    };
    let dir = parent_dir(path);

    let (tmp_path, mut file) = create_temp_file(dir, &file_name.to_string_lossy(), mode)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| with_path(e, "write", &tmp_path));
    drop(file);
    let renamed = written.and_then(|()| {
        fs::rename(&tmp_path, path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("rename {} to {}: {e}", tmp_path.display(), path.display()),
            )
        })
    });
    if let Err(e) = renamed {
        // Best effort: a leftover is also removed by remove_stale_temp_files.
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    fsync_dir(dir)
}

/// Creates a new, uniquely named temporary file for `file_name` in `dir`.
fn create_temp_file(dir: &Path, file_name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    const ATTEMPTS: usize = 8;
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let tmp_path = dir.join(format!(
            "{file_name}.{:016x}{TEMP_FILE_SUFFIX}",
            rand::random::<u64>()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp_path)
        {
            Ok(file) => return Ok((tmp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(with_path(e, "create temporary file", &tmp_path)),
        }
    }
    let err =
        last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "no unique name"));
    Err(with_path(err, "create temporary file in", dir))
}

/// Creates `path` and any missing parents, fsyncing the parent of each
/// directory it creates so that the whole chain survives a crash. Succeeds
/// without doing anything if `path` is already a directory.
pub fn create_dir_all_durable(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    // Walk up to the first existing ancestor, remembering what is missing.
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match fs::metadata(cur) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "create directory {}: exists and is not a directory",
                        cur.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    // A relative path's first component lives in ".", which exists.
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(with_path(e, "stat", cur)),
        }
    }
    for dir in missing.into_iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Created concurrently by someone else: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(with_path(e, "create directory", dir)),
        }
        fsync_dir(parent_dir(dir))?;
    }
    Ok(())
}

/// Removes the file at `path` and makes the removal durable.
pub fn remove_file_durable(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    fs::remove_file(path).map_err(|e| with_path(e, "remove file", path))?;
    fsync_dir(parent_dir(path))
}

/// Renames `from` to `to` (replacing `to`) and makes the rename durable by
/// fsyncing the directories involved. The caller must already have fsynced
/// the file's contents.
pub fn rename_durable(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (from.as_ref(), to.as_ref());
    fs::rename(from, to).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("rename {} to {}: {e}", from.display(), to.display()),
        )
    })?;
    let (from_dir, to_dir) = (parent_dir(from), parent_dir(to));
    fsync_dir(to_dir)?;
    if from_dir != to_dir {
        fsync_dir(from_dir)?;
    }
    Ok(())
}

/// Deletes the temporary files a crashed [`write_file_atomic`] left in
/// `dir` (not recursively) and returns how many it removed. Must not run
/// while another write into `dir` is in progress.
pub fn remove_stale_temp_files(dir: impl AsRef<Path>) -> io::Result<usize> {
    let dir = dir.as_ref();
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, "read directory", dir))? {
        let entry = entry.map_err(|e| with_path(e, "read directory", dir))?;
        let path = entry.path();
        if !is_temp_file(&path) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| with_path(e, "stat", &path))?;
        if !file_type.is_file() {
            continue;
        }
        fs::remove_file(&path).map_err(|e| with_path(e, "remove stale temporary file", &path))?;
        tracing::info!("removed stale temporary file {}", path.display());
        removed += 1;
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_secret_file_is_never_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_file_atomic_mode(&path, b"password", 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        // Replacing an existing file keeps the new mode too.
        write_file_atomic_mode(&path, b"other", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0);
    }

    #[test]
    fn write_file_atomic_creates_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        write_file_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_file_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        write_file_atomic(&path, b"").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(names_in(dir.path()), vec!["control"]);
    }

    #[test]
    fn write_file_atomic_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing_dir").join("file");
        let err = write_file_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("missing_dir"),
            "error without path: {err}"
        );
        let err = write_file_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn write_file_atomic_fails_cleanly_when_target_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_file_atomic(&target, b"x").is_err());
        // The temporary file is cleaned up on failure.
        assert_eq!(names_in(dir.path()), vec!["sub"]);
    }

    #[test]
    fn stale_temp_file_from_a_crashed_write_is_ignored_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata");
        write_file_atomic(&path, b"good").unwrap();
        // What a crash between create and rename leaves behind.
        let stale = dir
            .path()
            .join(format!("metadata.0123456789abcdef{TEMP_FILE_SUFFIX}"));
        fs::write(&stale, b"half-writ").unwrap();
        assert!(is_temp_file(&stale));
        assert!(!is_temp_file(&path));
        // A temp-named directory is left alone.
        fs::create_dir(dir.path().join(format!("d{TEMP_FILE_SUFFIX}"))).unwrap();

        // The real file is unaffected, and later writes still work.
        assert_eq!(fs::read(&path).unwrap(), b"good");
        write_file_atomic(&path, b"better").unwrap();

        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert_eq!(
            names_in(dir.path()),
            vec![format!("d{TEMP_FILE_SUFFIX}"), "metadata".to_string()]
        );
        assert_eq!(fs::read(&path).unwrap(), b"better");
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 0);
    }

    #[test]
    fn create_dir_all_durable_creates_nested_dirs_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b").join("c");
        create_dir_all_durable(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all_durable(&nested).unwrap();
        create_dir_all_durable(dir.path()).unwrap();
    }

    #[test]
    fn create_dir_all_durable_refuses_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        // The kernel reports ENOTDIR when stat walks through the file.
        let err = create_dir_all_durable(file.join("sub")).unwrap_err();
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
        let err = create_dir_all_durable(&file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn remove_and_rename_are_applied_and_report_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("sub").join("b");
        fs::write(&a, b"x").unwrap();
        create_dir_all_durable(parent_dir(&b)).unwrap();
        fsync_file(&a).unwrap();
        rename_durable(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"x");
        remove_file_durable(&b).unwrap();
        assert!(!b.exists());

        let err = remove_file_durable(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&*b.to_string_lossy()), "{err}");
        let err = fsync_dir(dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = rename_durable(&a, &b).unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
    }
}

//! The path an event changes (`fs.path.target`): whatever the syscall, the file whose
//! contents, name or attributes are different afterwards.

use std::borrow::Cow;

use crate::pipeline::event::Payload;
use crate::security::syscall::SecSyscall;
use crate::wire::text::join_lexically;

/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
const WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000;

/// The absolute path `payload` changes: an open for writing's path, a rename or link's
/// destination, a symlink's new name, a truncated, chmod-ed or chown-ed file. `None` for
/// other events (an unlink's path is `file.path`), and when a relative destination cannot
/// be resolved.
pub fn changed_path(payload: &Payload) -> Option<Cow<'_, [u8]>> {
    match payload {
        Payload::FileOpen(f) if f.flags & WRITE_FLAGS != 0 => {
            let path = if f.abs_path.is_empty() {
                &f.path
            } else {
                &f.abs_path
            };
            Some(Cow::Borrowed(path.as_slice()))
        }
        Payload::Security(s) => match s.class() {
            "rename" | "link" => destination(s),
            "symlink" | "truncate" | "chmod" | "chown" if s.abs_path.starts_with(b"/") => {
                Some(Cow::Borrowed(s.abs_path.as_slice()))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A rename or link's destination as an absolute path. A relative one is resolved against
/// the source's base directory when both are relative to the same directory (the same
/// dirfd, or both to the working directory).
fn destination(s: &SecSyscall) -> Option<Cow<'_, [u8]>> {
    let to = s.path2.as_slice();
    if to.is_empty() {
        return None;
    }
    if to.starts_with(b"/") {
        return Some(Cow::Owned(join_lexically(b"/", to)));
    }
    let same_base = match s.name() {
        "rename" | "link" => true,
        // renameat(olddirfd, old, newdirfd, new): args[0] and args[2].
        _ => s.args[0] as i32 == s.args[2] as i32,
    };
    if !same_base || s.path.starts_with(b"/") || !s.abs_path.starts_with(b"/") {
        return None;
    }
    base_dir(&s.abs_path, &s.path).map(|base| Cow::Owned(join_lexically(base, to)))
}

/// The directory `relative` was resolved from to give `absolute`: `absolute` without as
/// many trailing components as `relative` has (`None` if `relative` has `.` or `..`).
fn base_dir<'a>(absolute: &'a [u8], relative: &[u8]) -> Option<&'a [u8]> {
    let parts: Vec<&[u8]> = relative
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().any(|p| *p == b"." || *p == b"..") {
        return None;
    }
    let mut end = absolute.len();
    for _ in &parts {
        end = absolute[..end].iter().rposition(|&b| b == b'/')?;
    }
    Some(if end == 0 { b"/" } else { &absolute[..end] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_dir_strips_the_relative_components() {
        assert_eq!(
            base_dir(b"/etc/pam.d/sedX1", b"sedX1"),
            Some(&b"/etc/pam.d"[..])
        );
        assert_eq!(
            base_dir(b"/etc/pam.d/sedX1", b"pam.d/sedX1"),
            Some(&b"/etc"[..])
        );
        assert_eq!(base_dir(b"/x", b"x"), Some(&b"/"[..]));
        assert_eq!(base_dir(b"/a/b", b"../b"), None);
    }
}

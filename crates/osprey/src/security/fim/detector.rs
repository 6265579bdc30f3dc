//! The FIM detector: gathers the kernel's FIM events by watched path, waits until the path
//! has been quiet for `SETTLE_NS` (at once for unlink and rename away), then compares the
//! file with its baseline and raises one alert with the before/after hashes and metadata
//! diff. The baseline is then updated, in memory, in the kernel maps and on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::abi::{fim_op, status};
use crate::pipeline::cache::{Entry, ProcessContext};
use crate::pipeline::detect::{Alert, AlertOrigin, AlertWriter, Detector};
use crate::pipeline::event::{Event, Payload};

use super::db::{FileKind, FileState, FimDatabase};
use super::event::FimEvent;
use super::kernel::FimMaps;

/// Quiet time after the last operation on a path before its alert is raised.
pub const SETTLE_NS: u64 = 300_000_000;
/// A path busy for longer than this is reported anyway (and starts over).
pub const MAX_PENDING_NS: u64 = 5_000_000_000;
const O_TRUNC: u64 = 0o1000;

/// What was seen happening to one path, weakest first (the strongest names the event shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    OpenWrite,
    OpenTruncate,
    Chown,
    Chmod,
    Link,
    Truncate,
    Write,
    Create,
    RenameOnto,
    RenameAway,
    Unlink,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::OpenWrite => "open_write",
            Op::OpenTruncate => "open_truncate",
            Op::Chown => "chown",
            Op::Chmod => "chmod",
            Op::Link => "link",
            Op::Truncate => "truncate",
            Op::Write => "write",
            Op::Create => "create",
            Op::RenameOnto => "rename_onto",
            Op::RenameAway => "rename_away",
            Op::Unlink => "unlink",
        }
    }
}

/// The alert a settled change raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Modify,
    Truncate,
    Delete,
    Rename,
    Create,
    Chmod,
    Chown,
    Link,
    OpenWrite,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Verdict::Modify,
        Verdict::Truncate,
        Verdict::Delete,
        Verdict::Rename,
        Verdict::Create,
        Verdict::Chmod,
        Verdict::Chown,
        Verdict::Link,
        Verdict::OpenWrite,
    ];

    pub fn operation(self) -> &'static str {
        match self {
            Verdict::Modify => "modify",
            Verdict::Truncate => "truncate",
            Verdict::Delete => "delete",
            Verdict::Rename => "rename",
            Verdict::Create => "create",
            Verdict::Chmod => "chmod",
            Verdict::Chown => "chown",
            Verdict::Link => "link",
            Verdict::OpenWrite => "open_write",
        }
    }

    pub fn rule(self) -> &'static str {
        match self {
            Verdict::Modify => "fim.modify",
            Verdict::Truncate => "fim.truncate",
            Verdict::Delete => "fim.delete",
            Verdict::Rename => "fim.rename",
            Verdict::Create => "fim.create",
            Verdict::Chmod => "fim.chmod",
            Verdict::Chown => "fim.chown",
            Verdict::Link => "fim.link",
            Verdict::OpenWrite => "fim.open_write",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            Verdict::Modify | Verdict::Truncate | Verdict::Delete | Verdict::Rename => "high",
            Verdict::Create | Verdict::Chmod | Verdict::Chown | Verdict::Link => "medium",
            Verdict::OpenWrite => "low",
        }
    }

    /// MITRE ATT&CK techniques.
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            Verdict::Delete => &["T1070.004", "T1485"],
            Verdict::Chmod | Verdict::Chown => &["T1222.002"],
            _ => &["T1565.001"],
        }
    }
}

/// Which alert, if any, a set of operations and the states before and after deserve.
pub fn classify(
    ops: &BTreeSet<Op>,
    before: Option<&FileState>,
    after: Option<&FileState>,
) -> Option<Verdict> {
    let has = |op| ops.contains(&op);
    match (before, after) {
        (Some(_), None) if has(Op::RenameAway) => Some(Verdict::Rename),
        (Some(_), None) => Some(Verdict::Delete),
        // Created and moved on within the settle time: the destination reports it.
        (None, None) if has(Op::RenameAway) => None,
        (None, None) if has(Op::Create) || has(Op::RenameOnto) => Some(Verdict::Create),
        (None, None) => None,
        (None, Some(_)) => Some(Verdict::Create),
        (Some(b), Some(a)) => {
            let content_changed = b.sha256 != a.sha256 || b.size != a.size;
            let truncated = has(Op::Truncate) || has(Op::OpenTruncate);
            if has(Op::RenameOnto) {
                Some(Verdict::Rename)
            } else if has(Op::Write) || (content_changed && !truncated) {
                Some(Verdict::Modify)
            } else if truncated {
                Some(Verdict::Truncate)
            } else if has(Op::Chmod) {
                Some(Verdict::Chmod)
            } else if has(Op::Chown) {
                Some(Verdict::Chown)
            } else if has(Op::Link) {
                Some(Verdict::Link)
            } else if has(Op::OpenWrite) {
                Some(Verdict::OpenWrite)
            } else if b != a {
                Some(Verdict::Modify)
            } else {
                None
            }
        }
    }
}

/// The process context of an event, owned: the alert is written after the event has gone.
pub(crate) struct OwnedContext {
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    comm: Vec<u8>,
    exe: Vec<u8>,
    cmdline: Vec<u8>,
    cgroup_id: u64,
    container: Option<std::sync::Arc<crate::container::Container>>,
    ancestry: Vec<Entry>,
}

impl OwnedContext {
    pub(crate) fn of(ctx: &ProcessContext<'_>) -> Self {
        Self {
            pid: ctx.pid,
            tid: ctx.tid,
            ppid: ctx.ppid,
            uid: ctx.uid,
            gid: ctx.gid,
            comm: ctx.comm.to_vec(),
            exe: ctx.exe.to_vec(),
            cmdline: ctx.cmdline.to_vec(),
            cgroup_id: ctx.cgroup_id,
            container: ctx.container.cloned(),
            ancestry: ctx.ancestry.iter().map(|e| (*e).clone()).collect(),
        }
    }

    pub(crate) fn view(&self) -> ProcessContext<'_> {
        ProcessContext {
            pid: self.pid,
            tid: self.tid,
            ppid: self.ppid,
            uid: self.uid,
            gid: self.gid,
            comm: &self.comm,
            exe: &self.exe,
            cmdline: &self.cmdline,
            cgroup_id: self.cgroup_id,
            container: self.container.as_ref(),
            ancestry: self.ancestry.iter().collect(),
            // A copy: not the cache's current state.
            cache_generation: 0,
        }
    }
}

struct Pending {
    first_ns: u64,
    last_ns: u64,
    ops: BTreeSet<Op>,
    /// The event of the strongest operation, shown in the alert.
    event: Event,
    strongest: Op,
    context: OwnedContext,
    /// Rename destination / source, or the new name of a hard link.
    other: Option<PathBuf>,
    immediate: bool,
}

pub struct FimDetector {
    db: FimDatabase,
    db_path: PathBuf,
    maps: Option<FimMaps>,
    by_inode: HashMap<(u32, u64), BTreeSet<PathBuf>>,
    pending: BTreeMap<PathBuf, Pending>,
    tags: Vec<Vec<String>>,
    pub settle_ns: u64,
    save_warned: bool,
}

fn path_of(bytes: &[u8]) -> Option<PathBuf> {
    if bytes.is_empty() {
        return None;
    }
    let p = Path::new(OsStr::from_bytes(bytes));
    // Resolve symlinks in the directory part the way the kernel did; the last component
    // is the file itself (maybe gone, maybe a symlink that must not be followed).
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => Some(
            std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| p.to_path_buf()),
        ),
        _ => Some(p.to_path_buf()),
    }
}

impl FimDetector {
    /// `maps`: the kernel maps to keep in step (None in tests without BPF).
    pub fn new(db: FimDatabase, db_path: PathBuf, maps: Option<FimMaps>) -> Self {
        let mut by_inode: HashMap<(u32, u64), BTreeSet<PathBuf>> = HashMap::new();
        for (p, s) in &db.files {
            by_inode
                .entry((s.dev, s.ino))
                .or_default()
                .insert(p.clone());
        }
        Self {
            db,
            db_path,
            maps,
            by_inode,
            pending: BTreeMap::new(),
            tags: Verdict::ALL
                .iter()
                .map(|v| v.tags().iter().map(|t| t.to_string()).collect())
                .collect(),
            settle_ns: SETTLE_NS,
            save_warned: false,
        }
    }

    pub fn database(&self) -> &FimDatabase {
        &self.db
    }

    /// The watched paths an event touches, with what happened to each.
    fn targets(&self, e: &FimEvent) -> Vec<(PathBuf, Op, Option<PathBuf>)> {
        let mut out = Vec::new();
        if e.status & status::RESOLVED_FROM_FILE != 0 {
            let op = match e.op {
                fim_op::OPEN_WRITE if e.arg & O_TRUNC != 0 => Op::OpenTruncate,
                fim_op::OPEN_WRITE => Op::OpenWrite,
                fim_op::CREATE => Op::Create,
                fim_op::WRITE => Op::Write,
                fim_op::TRUNCATE => Op::Truncate,
                fim_op::CHMOD => Op::Chmod,
                fim_op::CHOWN => Op::Chown,
                _ => return out,
            };
            // The path the kernel walked names the file; the inode adds its other hard
            // links. A walked path the inode does not know is a new file, possibly on a
            // just-freed inode number, and a walked path outside the roots is a hard link
            // into a watched file.
            let walked = (e.status & status::RESOLVED_TRUNCATED == 0)
                .then(|| path_of(&e.abs_path))
                .flatten();
            let known = self.by_inode.get(&(e.dev, e.ino));
            match (walked, known) {
                (Some(w), Some(paths)) if paths.contains(&w) => {
                    out.extend(paths.iter().map(|p| (p.clone(), op, None)));
                }
                (Some(w), _) if self.db.covers(&w) => out.push((w, op, None)),
                (_, Some(paths)) => out.extend(paths.iter().map(|p| (p.clone(), op, None))),
                _ => {}
            }
        } else {
            let p1 = path_of(&e.abs_path);
            let p2 = path_of(&e.abs_path2);
            let mut push = |p: &Option<PathBuf>, op, other: &Option<PathBuf>| {
                if let Some(p) = p {
                    out.push((p.clone(), op, other.clone()));
                }
            };
            match e.op {
                fim_op::UNLINK => push(&p1, Op::Unlink, &None),
                fim_op::RENAME => {
                    push(&p1, Op::RenameAway, &p2);
                    push(&p2, Op::RenameOnto, &p1);
                }
                fim_op::LINK => {
                    push(&p1, Op::Link, &p2);
                    push(&p2, Op::Create, &p1);
                }
                fim_op::SYMLINK | fim_op::MKDIR | fim_op::MKNOD => push(&p1, Op::Create, &None),
                fim_op::TRUNCATE => push(&p1, Op::Truncate, &None),
                fim_op::CHMOD => push(&p1, Op::Chmod, &None),
                fim_op::CHOWN => push(&p1, Op::Chown, &None),
                _ => {}
            }
        }
        out.retain(|(p, _, _)| self.db.covers(p));
        out
    }

    fn note(
        &mut self,
        path: PathBuf,
        op: Op,
        other: Option<PathBuf>,
        event: &Event,
        ctx: &ProcessContext<'_>,
    ) {
        let now = event.header.ts_boot_ns;
        // A new name is watched at once, so the writes that follow its creation are seen.
        if matches!(op, Op::Create | Op::RenameOnto) && !self.db.files.contains_key(&path) {
            if let (Some(maps), Ok(Some(s))) = (self.maps.as_mut(), FileState::of(&path)) {
                let _ = maps.watch(s.dev, s.ino, s.kind == FileKind::Dir);
            }
        }
        let p = self.pending.entry(path).or_insert_with(|| Pending {
            first_ns: now,
            last_ns: now,
            ops: BTreeSet::new(),
            event: event.clone(),
            strongest: op,
            context: OwnedContext::of(ctx),
            other: None,
            immediate: false,
        });
        p.ops.insert(op);
        p.last_ns = p.last_ns.max(now);
        if op >= p.strongest {
            p.strongest = op;
            p.event = event.clone();
            p.context = OwnedContext::of(ctx);
        }
        if other.is_some() {
            p.other = other;
        }
        if matches!(op, Op::Unlink | Op::RenameAway) {
            p.immediate = true;
        }
    }

    fn index_add(&mut self, path: &Path, s: &FileState) {
        self.by_inode
            .entry((s.dev, s.ino))
            .or_default()
            .insert(path.to_path_buf());
        if let Some(maps) = self.maps.as_mut() {
            let _ = maps.watch(s.dev, s.ino, s.kind == FileKind::Dir);
        }
    }

    fn index_remove(&mut self, path: &Path, s: &FileState) {
        let key = (s.dev, s.ino);
        let last = match self.by_inode.get_mut(&key) {
            Some(paths) => {
                paths.remove(path);
                paths.is_empty()
            }
            None => true,
        };
        if last {
            self.by_inode.remove(&key);
            if let Some(maps) = self.maps.as_mut() {
                maps.unwatch(s.dev, s.ino);
            }
        }
    }

    /// Makes the baseline of `path` (and, for directories, what is below) `after`.
    fn apply(&mut self, path: &Path, before: Option<&FileState>, after: Option<&FileState>) {
        let was_dir = before.is_some_and(|b| b.kind == FileKind::Dir);
        let is_dir = after.is_some_and(|a| a.kind == FileKind::Dir);
        if before.is_some() && (after.is_none() || was_dir != is_dir) {
            for (p, s) in self.db.remove_tree(path) {
                self.index_remove(&p, &s);
            }
        } else if let (Some(b), Some(a)) = (before, after) {
            if (b.dev, b.ino) != (a.dev, a.ino) {
                self.index_remove(path, b);
            }
        }
        let Some(a) = after else { return };
        if is_dir && !was_dir {
            // A directory that arrived (mkdir, rename in) is watched with what it holds.
            let mut below = FimDatabase::default();
            let _ = below.scan_into(path, &mut Vec::new());
            for (p, s) in below.files {
                self.index_add(&p, &s);
                self.db.files.insert(p, s);
            }
        }
        self.index_add(path, a);
        self.db.files.insert(path.to_path_buf(), a.clone());
    }

    fn settle(
        &mut self,
        path: PathBuf,
        p: Pending,
        alerts: &mut AlertWriter,
    ) -> std::io::Result<()> {
        let before = self.db.files.get(&path).cloned();
        let after = FileState::of(&path).ok().flatten();
        let verdict = classify(&p.ops, before.as_ref(), after.as_ref());
        self.apply(&path, before.as_ref(), after.as_ref());
        let Some(v) = verdict else { return Ok(()) };
        let diff: serde_json::Map<String, serde_json::Value> = match (&before, &after) {
            (Some(b), Some(a)) => b
                .diff(a)
                .into_iter()
                .map(|(f, old, new)| (f.to_string(), json!({"before": old, "after": new})))
                .collect(),
            _ => serde_json::Map::new(),
        };
        let gained_setid = |b: &FileState, a: &FileState| a.mode & !b.mode & 0o6000 != 0;
        let severity = match (&before, &after) {
            (Some(b), Some(a)) if v == Verdict::Chmod && gained_setid(b, a) => "high",
            _ => v.severity(),
        };
        let short = |s: &Option<FileState>| {
            s.as_ref()
                .and_then(|s| s.sha256.as_deref())
                .map_or("-".to_string(), |h| h[..12].to_string())
        };
        let ctx = p.context.view();
        let mut output = format!(
            "{} {} by {}[{}]: sha256 {} -> {}",
            v.operation(),
            path.display(),
            String::from_utf8_lossy(ctx.comm),
            ctx.pid,
            short(&before),
            short(&after),
        );
        if !diff.is_empty() {
            output.push_str(&format!(
                " ({})",
                diff.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut details = json!({
            "path": path.to_string_lossy(),
            "operation": v.operation(),
            "ops": p.ops.iter().map(|o| o.name()).collect::<Vec<_>>(),
            "before": before.as_ref().map(FileState::to_json),
            "after": after.as_ref().map(FileState::to_json),
            "diff": diff,
        });
        if let Some(other) = &p.other {
            let key = match p.strongest {
                Op::RenameAway => "renamed_to",
                Op::RenameOnto => "renamed_from",
                Op::Link => "linked_as",
                _ => "link_of",
            };
            details[key] = json!(other.to_string_lossy());
        }
        let index = Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0);
        let alert = Alert {
            rule: v.rule(),
            severity,
            tags: &self.tags[index],
            action: "alert",
            outcome: "alerted",
            note: None,
            output,
            origin: AlertOrigin::OSPREY,
        };
        alerts.write_with(&alert, &p.event, &ctx, Some(("fim", details)))
    }
}

impl Detector for FimDetector {
    fn detect(
        &mut self,
        event: &Event,
        ctx: &ProcessContext<'_>,
        _raise: &mut dyn FnMut(Alert<'_>),
    ) {
        let Payload::Fim(e) = &event.payload else {
            return;
        };
        for (path, op, other) in self.targets(e) {
            self.note(path, op, other, event, ctx);
        }
    }

    fn tick(&mut self, now_boot_ns: u64, alerts: &mut AlertWriter) -> std::io::Result<()> {
        let settle = self.settle_ns;
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.immediate
                    || now_boot_ns.saturating_sub(p.last_ns) >= settle
                    || now_boot_ns.saturating_sub(p.first_ns) >= MAX_PENDING_NS
            })
            .map(|(path, _)| path.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for path in due {
            if let Some(p) = self.pending.remove(&path) {
                self.settle(path, p, alerts)?;
            }
        }
        if let Err(e) = self.db.save(&self.db_path) {
            if !self.save_warned {
                self.save_warned = true;
                eprintln!("osprey: warning: writing {}: {e}", self.db_path.display());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

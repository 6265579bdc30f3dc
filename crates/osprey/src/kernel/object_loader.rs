//! Turning an object's bytes into a loaded aya `Ebpf` (maps created, CO-RE relocated;
//! programs not yet verified), through a few shared aya loaders while `SharedLoads` lives.
//!
//! aya 0.14 parses the whole kernel BTF (about 35 ms and tens of MiB) in every
//! `EbpfLoader::new`, even when it is then handed a parsed copy; `loader_without_btf`
//! avoids that parse where it can, else makes it short-lived. The agent loads five objects
//! at start-up through two loaders shared by all of them, on threads of their own, which
//! relocate objects while the programs of those already relocated verify. Every loader
//! relocates against the one shared copy (`kernel_btf`), which the agent frees once loaded.
//!
//! An aya loader keeps every global and map size it was given. A later object that has a
//! symbol of such a name and does not set it itself would inherit the earlier value, so it
//! gets a loader of its own instead (correct, only slower).

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;
use object::{Object as _, ObjectSymbol as _};

use super::{describe_error, kernel_btf};

/// What to load: the object and what to change in it before its maps are created.
#[derive(Clone)]
pub struct ObjectRequest {
    pub bytes: &'static [u8],
    /// `.rodata` globals: name, raw value, whether the object must have it.
    pub globals: Vec<(&'static str, Vec<u8>, bool)>,
    /// Map sizes to override: name, max_entries.
    pub max_entries: Vec<(&'static str, u32)>,
}

impl ObjectRequest {
    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let globals = self.globals.iter().map(|(name, _, _)| *name);
        globals.chain(self.max_entries.iter().map(|(name, _)| *name))
    }
}

struct Job {
    request: ObjectRequest,
    reply: mpsc::Sender<Result<Ebpf, String>>,
}

/// Jobs waiting for a shared loader.
#[derive(Default)]
struct Queue {
    state: Mutex<Waiting>,
    ready: Condvar,
}

#[derive(Default)]
struct Waiting {
    jobs: Vec<Job>,
    /// No more jobs: the loaders finish those waiting and end.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the job back when the loaders have been told to end.
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut waiting = self.lock();
        if waiting.closed {
            return Err(job);
        }
        waiting.jobs.push(job);
        self.ready.notify_one();
        Ok(())
    }

    /// The largest object waiting (its programs tend to take longest to verify, which
    /// then overlaps the next relocations); None once closed and empty.
    fn next(&self) -> Option<Job> {
        let mut waiting = self.lock();
        while waiting.jobs.is_empty() && !waiting.closed {
            waiting = self.ready.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
        let largest =
            (0..waiting.jobs.len()).max_by_key(|&i| waiting.jobs[i].request.bytes.len())?;
        Some(waiting.jobs.swap_remove(largest))
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Where loads go while a `SharedLoads` lives.
static SHARED: Mutex<Option<Arc<Queue>>> = Mutex::new(None);

/// Shared loaders: two keep two cores busy relocating.
const SHARED_LOADERS: usize = 2;

/// While this lives, `load_object` on any thread uses a few shared aya loaders. Dropping
/// it waits for the loads in flight and frees the loaders' copies of the kernel BTF.
pub struct SharedLoads {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

impl SharedLoads {
    pub fn start() -> Self {
        let queue = Arc::new(Queue::default());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // All made here, before a loader thread exists: then none parses a kernel BTF of
        // its own (see `loader_without_btf`).
        let loaders: Vec<_> = (0..SHARED_LOADERS.min(cores))
            .map(|_| loader_without_btf())
            .collect();
        let threads: Vec<_> = loaders
            .into_iter()
            .filter_map(|loader| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name("osprey-loader".into())
                    .spawn(move || serve(&queue, loader))
                    .ok()
            })
            .collect();
        if !threads.is_empty() {
            *lock_shared() = Some(queue.clone());
        }
        SharedLoads { queue, threads }
    }
}

impl Drop for SharedLoads {
    fn drop(&mut self) {
        lock_shared().take();
        self.queue.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock_shared() -> MutexGuard<'static, Option<Arc<Queue>>> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loads `request`'s object: through a shared loader when there is one, else alone.
pub fn load_object(mut request: ObjectRequest) -> Result<Ebpf, String> {
    let Some(queue) = lock_shared().clone() else {
        return load_alone(request);
    };
    // The shared kernel BTF (needed to attach) parses here while the loader threads' aya
    // parses their own.
    add_kernel_globals(&mut request, &*kernel_btf()?);
    let (reply, answer) = mpsc::channel();
    match queue.push(Job { request, reply }) {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Err("the loader thread ended".into())),
        Err(job) => load_alone(job.request),
    }
}

/// A loader of its own, relocating against the shared kernel BTF.
fn load_alone(mut request: ObjectRequest) -> Result<Ebpf, String> {
    // Before the shared copy is parsed, when it is not yet: see `loader_without_btf`.
    let mut loader = loader_without_btf();
    let btf = kernel_btf()?;
    add_kernel_globals(&mut request, &btf);
    loader.btf(Some(&btf));
    for (name, value, must_exist) in &request.globals {
        loader.override_global(name, value.as_slice(), *must_exist);
    }
    for (name, entries) in &request.max_entries {
        loader.map_max_entries(name, *entries);
    }
    loader.load(request.bytes).map_err(|e| describe_error(&e))
}

/// An aya loader that holds no kernel BTF. aya's `EbpfLoader::new` reads and parses the
/// whole kernel BTF (tens of MiB for a moment, and tens of ms) and cannot be told not to;
/// the loader is then given the shared copy instead. While this process has no other
/// thread, that read is made to fail (`without_new_files`) so that nothing is parsed.
/// Otherwise such parses run one at a time, so that they reuse the same freed heap instead
/// of each adding tens of MiB to the peak resident memory.
pub(crate) fn loader_without_btf() -> EbpfLoader<'static> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut loader = without_new_files(EbpfLoader::new);
    loader.btf(None);
    // Task storage (osprey syscalls) is a map type aya does not model; the kernel checks it.
    loader.allow_unsupported_maps();
    loader
}

/// Runs `f` unable to open any file (soft RLIMIT_NOFILE 0, restored after) when this is the
/// process's only thread, so that no other thread can be refused one meanwhile; else, or
/// when the limit cannot be changed, runs it as is.
fn without_new_files<T>(f: impl FnOnce() -> T) -> T {
    let only_thread = std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    if !only_thread || unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return f();
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: lowering the soft limit is always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &none) } != 0 {
        return f();
    }
    /// Puts the limit back however `f` ends.
    struct Restore(libc::rlimit);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: raising the soft limit back to where it was, within the hard limit.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
        }
    }
    let _restore = Restore(limit);
    f()
}

fn serve(queue: &Queue, loader: EbpfLoader<'static>) {
    // Declared before the loader, which borrows the values it is given and the shared
    // kernel BTF from here.
    let values = bumpalo::Bump::new();
    let btf = kernel_btf().ok();
    let mut shared = SharedLoader {
        loader,
        given: HashSet::new(),
    };
    shared.loader.btf(btf.as_deref());
    while let Some(job) = queue.next() {
        let loaded = shared.load(&values, &job.request);
        let _ = job.reply.send(loaded);
    }
}

struct SharedLoader<'v> {
    loader: EbpfLoader<'v>,
    /// Every global and map name the loader holds a value for.
    given: HashSet<&'static str>,
}

impl<'v> SharedLoader<'v> {
    fn load(&mut self, values: &'v bumpalo::Bump, request: &ObjectRequest) -> Result<Ebpf, String> {
        let symbols = symbol_names(request.bytes)?;
        // The loader holds the values as optional (they may be meant for another object),
        // so whether this object has the globals it must have is checked here.
        if let Some((name, _, _)) = request
            .globals
            .iter()
            .find(|(name, _, must_exist)| *must_exist && !symbols.contains(name))
        {
            return Err(format!("the object has no global named {name}"));
        }
        if inherited(&self.given, &symbols, request).is_some() {
            return load_alone(request.clone());
        }
        for (name, value, _) in &request.globals {
            let value: &'v [u8] = values.alloc_slice_copy(value);
            self.loader.override_global(name, value, false);
            self.given.insert(name);
        }
        for (name, entries) in &request.max_entries {
            self.loader.map_max_entries(name, *entries);
            self.given.insert(name);
        }
        self.loader
            .load(request.bytes)
            .map_err(|e| describe_error(&e))
    }
}

/// A value the loader holds for a symbol of this object that the request does not set.
fn inherited(
    given: &HashSet<&'static str>,
    symbols: &HashSet<&str>,
    request: &ObjectRequest,
) -> Option<&'static str> {
    let wanted: HashSet<&str> = request.names().collect();
    given
        .iter()
        .copied()
        .find(|name| symbols.contains(name) && !wanted.contains(name))
}

/// Globals every object built from osprey.h has, that describe this kernel.
fn add_kernel_globals(request: &mut ObjectRequest, btf: &Btf) {
    if request
        .globals
        .iter()
        .any(|(name, _, _)| *name == HAS_BPF_LOOP)
    {
        return;
    }
    let has = u8::from(has_bpf_loop(btf));
    request.globals.push((HAS_BPF_LOOP, vec![has], false));
}

const HAS_BPF_LOOP: &str = "osprey_has_bpf_loop";

/// Whether the kernel has the bpf_loop helper (5.17+), by its function in the kernel BTF;
/// OSPREY_NO_BPF_LOOP pretends it has not, to exercise the bounded loops.
pub fn has_bpf_loop(btf: &Btf) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("OSPREY_NO_BPF_LOOP").is_none()
            && btf.id_by_type_name_kind("bpf_loop", BtfKind::Func).is_ok()
    })
}

/// Names of the object's symbols: its globals and its maps among them.
fn symbol_names(bytes: &'static [u8]) -> Result<HashSet<&'static str>, String> {
    let elf = object::File::parse(bytes).map_err(|e| format!("not an ELF object: {e}"))?;
    Ok(elf.symbols().filter_map(|s| s.name().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(object: osprey_bpf::Object, globals: &[&'static str]) -> ObjectRequest {
        ObjectRequest {
            bytes: object.bytes,
            globals: globals.iter().map(|g| (*g, vec![1], true)).collect(),
            max_entries: vec![("osprey_events", 4096)],
        }
    }

    #[test]
    fn an_object_that_would_inherit_a_value_set_for_another_is_noticed() {
        let given: HashSet<&'static str> = ["dwarf_unwinding", "osprey_events"].into();
        let profile = request(osprey_bpf::PROFILE, &[]);
        let symbols = symbol_names(profile.bytes).unwrap();
        assert_eq!(
            inherited(&given, &symbols, &profile),
            Some("dwarf_unwinding")
        );
        // Set again by the request itself, or absent from the object: nothing inherited.
        let profile = request(osprey_bpf::PROFILE, &["dwarf_unwinding"]);
        assert_eq!(inherited(&given, &symbols, &profile), None);
        let process = request(osprey_bpf::PROCESS, &[]);
        let symbols = symbol_names(process.bytes).unwrap();
        assert_eq!(inherited(&given, &symbols, &process), None);
    }

    #[test]
    fn a_global_the_object_lacks_is_refused_shared_or_alone() {
        let missing = || request(osprey_bpf::PROCESS, &["no_such_global"]);
        let Err(alone) = load_object(missing()) else {
            panic!("loaded alone with a missing global");
        };
        assert!(alone.contains("no_such_global"), "{alone}");
        let _shared = SharedLoads::start();
        let Err(shared) = load_object(missing()) else {
            panic!("loaded shared with a missing global");
        };
        assert!(shared.contains("no_such_global"), "{shared}");
    }

    #[test]
    fn no_file_opens_only_while_single_threaded() {
        let opens = || std::fs::File::open("/proc/self/status").is_ok();
        // The test harness has other threads: they must not be refused files meanwhile.
        assert!(without_new_files(opens));
        // A forked child has one thread: there the open fails, and works again after.
        // SAFETY: the child only runs this check (glibc's malloc is fork-safe) and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let code = if !without_new_files(opens) && opens() {
                0
            } else {
                1
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
    }

    #[test]
    fn symbols_include_globals_and_maps() {
        let names = symbol_names(osprey_bpf::PROCESS.bytes).unwrap();
        assert!(names.contains("osprey_events"), "{names:?}");
        assert!(names.contains("target_pid"), "{names:?}");
        assert!(!names.contains("dwarf_unwinding"), "{names:?}");
    }
}

//! The per-pipeline registry of containers: cgroup id → container, the runtimes' answers
//! taken from the lookup thread, retries and refreshes, and who hears of changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metadata::Sources;
use super::{cgroup_path, host, resolve, retry, runtimes, Container, MetadataState, Runtime};

#[derive(Debug)]
enum Slot {
    Host,
    Container(Arc<Container>),
    /// The cgroup could not be resolved (gone before we looked).
    Unknown,
}

/// Hashes a cgroup id (an inode number, not chosen by users) with one multiplication:
/// the registry is consulted twice per event, and SipHash was most of that cost.
#[derive(Debug, Default, Clone, Copy)]
struct CgroupIdHasher(u64);

impl std::hash::Hasher for CgroupIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing spreads small ids over the high bits the table looks at.
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ByCgroup<V> = HashMap<u64, V, std::hash::BuildHasherDefault<CgroupIdHasher>>;

/// Bound on remembered cgroups; the map is cleared (and rebuilt lazily) when reached.
const MAX_CGROUPS: usize = 16384;

/// How long a runtime's answer is kept before the container is looked at again (a renamed
/// container gets its new name; one whose cgroups are gone is forgotten).
/// `OSPREY_CONTAINER_REFRESH_SECS` overrides it.
pub const REFRESH: Duration = Duration::from_secs(30);

fn refresh_from_env() -> Duration {
    std::env::var("OSPREY_CONTAINER_REFRESH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(REFRESH, Duration::from_secs_f64)
}

/// Receivers of every change of a container's metadata, from any registry of this process.
static WATCHERS: Mutex<Vec<Sender<Arc<Container>>>> = Mutex::new(Vec::new());
/// Whether anyone watches (so that registries without watchers take no lock).
static WATCHED: AtomicBool = AtomicBool::new(false);

/// Every container whose metadata changes from now on (the runtime answered after a retry,
/// a rename), e.g. for a kernel filter whose verdicts depend on names.
pub fn watch() -> Receiver<Arc<Container>> {
    let (tx, rx) = std::sync::mpsc::channel();
    WATCHERS.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
    WATCHED.store(true, Ordering::Release);
    rx
}

pub(super) fn announce(c: &Arc<Container>) {
    if !WATCHED.load(Ordering::Acquire) {
        return;
    }
    let mut watchers = WATCHERS.lock().unwrap_or_else(|e| e.into_inner());
    watchers.retain(|w| w.send(c.clone()).is_ok());
}

/// The per-pipeline registry: cgroup id → container, metadata kept current from the
/// background lookup thread.
#[derive(Debug)]
pub struct Containers {
    by_cgroup: ByCgroup<Slot>,
    by_id: HashMap<String, Arc<Container>>,
    sources: Sources,
    lookups: Option<(Sender<runtimes::Request>, Receiver<runtimes::Update>)>,
    /// Containers asked again later (no runtime could describe them, or their answer aged).
    retries: retry::Retries,
    refresh_every: Duration,
    /// Whether the lookup thread's tick waits in the channel (see `runtimes::spawn`).
    tick: Arc<AtomicBool>,
    /// Whether any update waits in the channel (see `runtimes::Updates`).
    unread: Arc<AtomicBool>,
    /// Containers other than the host seen so far.
    pub seen: u64,
}

impl Default for Containers {
    fn default() -> Self {
        Self::new(Sources::from_env())
    }
}

impl Containers {
    pub fn new(sources: Sources) -> Self {
        Self {
            by_cgroup: ByCgroup::default(),
            by_id: HashMap::new(),
            sources,
            lookups: None,
            retries: retry::Retries::default(),
            refresh_every: refresh_from_env(),
            tick: Arc::default(),
            unread: Arc::default(),
            seen: 0,
        }
    }

    /// Learns the container of a cgroup seen for the first time (one /proc read), and
    /// takes any metadata the lookup thread has found since the last call.
    pub fn note(&mut self, cgroup_id: u64, pid: u32) {
        self.poll();
        if cgroup_id == 0 || self.by_cgroup.contains_key(&cgroup_id) {
            return;
        }
        if self.by_cgroup.len() >= MAX_CGROUPS {
            self.by_cgroup.clear();
        }
        let slot = match resolve::path_of(cgroup_id, pid) {
            None => Slot::Unknown,
            Some(path) => match cgroup_path::identify(&path) {
                None => Slot::Host,
                Some(identity) => Slot::Container(self.container(identity)),
            },
        };
        self.by_cgroup.insert(cgroup_id, slot);
    }

    fn container(&mut self, identity: cgroup_path::Identity) -> Arc<Container> {
        if let Some(c) = self.by_id.get(&identity.id) {
            return c.clone();
        }
        self.seen += 1;
        let c = Arc::new(Container {
            id: identity.id.clone(),
            runtime: Some(identity.runtime),
            pod_uid: identity.pod_uid,
            metadata: MetadataState::Pending,
        });
        if self.by_id.len() >= MAX_CGROUPS {
            self.by_id.clear();
        }
        self.by_id.insert(identity.id.clone(), c.clone());
        self.ask(identity.id, identity.runtime);
        c
    }

    fn ask(&mut self, id: String, runtime: Runtime) {
        let (requests, _) = self.lookups.get_or_insert_with(|| {
            runtimes::spawn(self.sources.clone(), self.tick.clone(), self.unread.clone())
        });
        let _ = requests.send(runtimes::Request { id, runtime });
    }

    /// Applies the lookup thread's answers and, on its tick (every second), asks again about
    /// the containers that are due (cheap when there is nothing).
    pub fn poll(&mut self) {
        // Runs for every event: one plain load while nothing was sent.
        if !self.unread.load(Ordering::Relaxed) || !self.unread.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some((_, updates)) = &self.lookups else {
            return;
        };
        let answers: Vec<runtimes::Update> = updates.try_iter().collect();
        let mut ticked = false;
        for update in answers {
            if update.is_tick() {
                self.tick.store(false, Ordering::Release);
                ticked = true;
            } else {
                self.apply(update);
            }
        }
        // The lookup thread's tick says when to read the clock: never on every event.
        if ticked && self.retries.pending() {
            self.run_due(Instant::now());
        }
    }

    /// Asks again about the containers due at `now`; forgets those gone.
    fn run_due(&mut self, now: Instant) {
        for (id, runtime, why) in self.retries.take_due(now) {
            match why {
                retry::Due::Refresh if !self.alive(&id) => self.forget(&id),
                _ => self.ask(id, runtime),
            }
        }
    }

    fn apply(&mut self, update: runtimes::Update) {
        let Some(old) = self.by_id.get(&update.id) else {
            return; // forgotten meanwhile
        };
        let Some(runtime) = old.runtime else {
            return;
        };
        let now = Instant::now();
        match (&old.metadata, &update.state) {
            // A refresh the runtime could not answer: the last answer stands.
            (MetadataState::Known(_), MetadataState::Unavailable(_)) => {
                self.retries
                    .refresh(&update.id, runtime, now, self.refresh_every);
                return;
            }
            (_, MetadataState::Unavailable(_)) => {
                if !self.retries.failed(&update.id, runtime, now) {
                    self.retries
                        .refresh(&update.id, runtime, now, self.refresh_every);
                }
            }
            _ => {
                self.retries.known(&update.id);
                self.retries
                    .refresh(&update.id, runtime, now, self.refresh_every);
            }
        }
        if old.metadata == update.state {
            return;
        }
        let new = Arc::new(Container {
            metadata: update.state,
            ..(**old).clone()
        });
        for slot in self.by_cgroup.values_mut() {
            if matches!(slot, Slot::Container(c) if c.id == new.id) {
                *slot = Slot::Container(new.clone());
            }
        }
        self.by_id.insert(new.id.clone(), new.clone());
        announce(&new);
    }

    /// Whether any cgroup of container `id` still exists.
    fn alive(&self, id: &str) -> bool {
        self.by_cgroup.iter().any(|(cgroup, slot)| {
            matches!(slot, Slot::Container(c) if c.id == id) && resolve::exists(*cgroup)
        })
    }

    /// Drops a container whose cgroups are gone (stopped): memory stays bounded by the
    /// containers running. Should its id come back, it is looked up again.
    fn forget(&mut self, id: &str) {
        self.by_id.remove(id);
        self.by_cgroup
            .retain(|_, slot| !matches!(slot, Slot::Container(c) if c.id == id));
        self.retries.forget(id);
    }

    /// The container of a cgroup noted before (`None`: unknown cgroup).
    pub fn get(&self, cgroup_id: u64) -> Option<&Arc<Container>> {
        match self.by_cgroup.get(&cgroup_id)? {
            Slot::Host => Some(host()),
            Slot::Container(c) => Some(c),
            Slot::Unknown => None,
        }
    }

    /// Every container known, for `osprey check` and filters.
    pub fn containers(&self) -> impl Iterator<Item = &Arc<Container>> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metadata;
    use super::*;

    const ID: &str = "8dba030acfef3aff9cedf93ae3b3941ce9d86222ff249413eda7ca9216738a34";

    /// A registry whose lookup thread is replaced by channels the test drives.
    fn registry() -> (Containers, Receiver<runtimes::Request>, runtimes::Updates) {
        let (requests, asked) = std::sync::mpsc::channel();
        let (answer, updates) = std::sync::mpsc::channel();
        let mut c = Containers::new(Sources::from_env());
        c.lookups = Some((requests, updates));
        let answer = runtimes::Updates::new(answer, c.unread.clone());
        (c, asked, answer)
    }

    #[test]
    fn pending_until_the_runtime_answers_then_known_on_every_cgroup() {
        let (mut c, asked, answer) = registry();
        let identity = docker(ID);
        let first = c.container(identity.clone());
        c.by_cgroup.insert(7, Slot::Container(first));
        let again = c.container(identity);
        c.by_cgroup.insert(8, Slot::Container(again));
        c.by_cgroup.insert(1, Slot::Host);
        assert_eq!(asked.try_iter().count(), 1, "one question per container");
        assert_eq!(c.seen, 1);
        let json = |c: &Containers, cg| serde_json::to_value(&**c.get(cg).unwrap()).unwrap();
        assert_eq!(
            json(&c, 7),
            serde_json::json!({"id": ID, "runtime": "docker", "metadata": "pending"})
        );
        assert_eq!(json(&c, 1), serde_json::json!({"id": "host"}));
        let meta = Metadata {
            name: "web".into(),
            image: "nginx:1".into(),
            image_id: "abc".into(),
            ..Default::default()
        };
        answer
            .send(runtimes::Update {
                id: ID.into(),
                state: MetadataState::Known(Arc::new(meta)),
            })
            .unwrap();
        c.note(1, 1); // known cgroup: only takes the answers
        for cg in [7, 8] {
            assert_eq!(
                json(&c, cg),
                serde_json::json!({"id": ID, "name": "web", "image": "nginx:1",
                    "image_id": "abc", "runtime": "docker", "labels": {}})
            );
        }
        assert_eq!(c.get(9), None, "never noted");
    }

    #[test]
    fn a_container_no_runtime_described_is_asked_again_later() {
        let (mut c, asked, answer) = registry();
        let identity = docker(ID);
        c.container(identity);
        assert_eq!(asked.try_iter().count(), 1);
        answer
            .send(runtimes::Update {
                id: ID.into(),
                state: MetadataState::Unavailable("no socket".into()),
            })
            .unwrap();
        c.poll();
        assert_eq!(asked.try_iter().count(), 0, "not at once");
        assert!(c.retries.pending(), "a new question is scheduled");
        // As if the first delay had passed.
        c.run_due(Instant::now() + retry::DELAYS[0]);
        let again: Vec<_> = asked.try_iter().collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, ID);
    }

    #[test]
    fn due_questions_wait_for_the_lookup_threads_tick() {
        let (mut c, asked, answer) = registry();
        let identity = docker(ID);
        c.container(identity);
        assert_eq!(asked.try_iter().count(), 1);
        let earlier = Instant::now().checked_sub(retry::DELAYS[0] * 2).unwrap();
        c.retries.failed(ID, Runtime::Docker, earlier); // due already
        c.poll();
        assert_eq!(asked.try_iter().count(), 0, "no clock read between ticks");
        answer.send(runtimes::Update::tick()).unwrap();
        c.poll();
        assert_eq!(asked.try_iter().count(), 1, "asked again on the tick");
    }

    /// The identity of docker container `id`, as its cgroup path gives it.
    fn docker(id: &str) -> cgroup_path::Identity {
        cgroup_path::identify(&format!("/docker/{id}")).unwrap()
    }

    fn known(name: &str) -> MetadataState {
        MetadataState::Known(Arc::new(Metadata {
            name: name.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_renamed_container_gets_its_new_name_and_watchers_hear_of_it() {
        // Watchers hear of every registry in the process: an id no other test uses.
        const ID: &str = "5e7a11ed0fa11ed5e7a11ed0fa11ed5e7a11ed0fa11ed5e7a11ed0fa11ed5e7a";
        let (mut c, asked, answer) = registry();
        let watcher = watch();
        let identity = docker(ID);
        let first = c.container(identity);
        c.by_cgroup.insert(7, Slot::Container(first));
        let say = |state| {
            answer
                .send(runtimes::Update {
                    id: ID.into(),
                    state,
                })
                .unwrap()
        };
        say(known("web"));
        c.poll();
        assert_eq!(c.get(7).unwrap().name(), Some("web"));
        // The refresh: the cgroup is alive (as if), the runtime now says `db`.
        assert_eq!(asked.try_iter().count(), 1);
        c.ask(ID.into(), Runtime::Docker);
        say(known("db"));
        c.poll();
        assert_eq!(c.get(7).unwrap().name(), Some("db"));
        // A refresh the runtime cannot answer keeps the last name.
        say(MetadataState::Unavailable("socket gone".into()));
        c.poll();
        assert_eq!(c.get(7).unwrap().name(), Some("db"));
        let heard: Vec<Option<String>> = watcher
            .try_iter()
            .filter(|w| w.id == ID)
            .map(|w| w.name().map(str::to_string))
            .collect();
        assert_eq!(heard, [Some("web".to_string()), Some("db".to_string())]);
    }

    #[test]
    fn a_container_whose_cgroups_are_gone_is_forgotten_at_its_refresh() {
        let (mut c, asked, answer) = registry();
        let identity = docker(ID);
        let first = c.container(identity);
        // No cgroup has this id: the container has stopped.
        c.by_cgroup.insert(u64::MAX - 7, Slot::Container(first));
        answer
            .send(runtimes::Update {
                id: ID.into(),
                state: known("web"),
            })
            .unwrap();
        c.poll();
        assert_eq!(asked.try_iter().count(), 1);
        c.run_due(Instant::now() + c.refresh_every);
        assert_eq!(asked.try_iter().count(), 0, "not asked again: forgotten");
        assert!(c.get(u64::MAX - 7).is_none());
        assert_eq!(c.containers().count(), 0);
        assert!(!c.retries.pending(), "nothing left scheduled");
    }
}

/// `cargo test --release -p osprey --lib -- --ignored --nocapture container::registry::bench`
#[cfg(test)]
mod bench {
    use std::time::Instant;

    use super::*;

    #[test]
    #[ignore = "a measurement, not a check"]
    fn steady_state_and_first_sight_costs() {
        let mut c = Containers::new(Sources::from_env());
        let (requests, _asked) = std::sync::mpsc::channel();
        let (_answer, updates) = std::sync::mpsc::channel();
        c.lookups = Some((requests, updates));
        // 200 known containers, as on a busy node.
        for i in 0..200u64 {
            let id = format!("{i:064x}");
            let container = c.container(cgroup_path::identify(&format!("/docker/{id}")).unwrap());
            c.by_cgroup.insert(1000 + i, Slot::Container(container));
        }
        let n = 10_000_000u64;
        let start = Instant::now();
        let mut found = 0u64;
        for i in 0..n {
            let cg = 1000 + (i % 200);
            c.note(cg, 1);
            found += u64::from(c.get(cg).is_some());
        }
        let per_event = start.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(found, n);
        // The same number of plain map lookups, for the machine's scale.
        let plain: HashMap<u64, u64> = (0..200u64).map(|i| (1000 + i, i)).collect();
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..n {
            sum = sum.wrapping_add(
                *std::hint::black_box(&plain)
                    .get(&(1000 + (i % 200)))
                    .unwrap_or(&0),
            );
        }
        std::hint::black_box(sum);
        let plain_ns = start.elapsed().as_nanos() as f64 / n as f64;
        let me = std::process::id();
        let own =
            resolve::id_of_path(&resolve::v2_path_of_pid(me).unwrap_or_default()).unwrap_or(1);
        let start = Instant::now();
        let rounds = 2000u32;
        for _ in 0..rounds {
            c.by_cgroup.remove(&own);
            c.note(own, me);
        }
        let first_sight = start.elapsed() / rounds;
        println!("steady state: {per_event:.1} ns per event (note + get, 200 containers; one plain map lookup: {plain_ns:.1} ns); first sight of a cgroup: {first_sight:?}");
    }
}

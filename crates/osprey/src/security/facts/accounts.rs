//! Account facts: after a rename or link onto the passwd or group database, that database
//! is re-read and compared with its copy from before, giving each account that was created,
//! whose uid or primary gid changed, or that joined groups. Only the database the event
//! names is read: events are judged a little after they happen, and the other database may
//! by then hold the next tool's change, which belongs to that tool's own event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Fields that need this state.
pub const FIELDS: &[&str] = &[
    "account.name",
    "account.uid",
    "account.gid",
    "account.groups",
    "account.new",
];

/// One account a change created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub name: Vec<u8>,
    pub uid: i64,
    pub gid: i64,
    /// Groups the account joined in this change: its primary group when it is new or its
    /// gid changed, and groups that list it as a member now and did not before.
    pub groups: Vec<Vec<u8>>,
    /// The account did not exist before.
    pub new: bool,
}

/// name -> (uid, gid)
type Users = BTreeMap<Vec<u8>, (i64, i64)>;
/// name -> (gid, members)
type Groups = BTreeMap<Vec<u8>, (i64, BTreeSet<Vec<u8>>)>;

pub struct Accounts {
    passwd: PathBuf,
    group: PathBuf,
    /// The databases as last read (`None`: unreadable then; the next read sets a baseline).
    users: Option<Users>,
    groups: Option<Groups>,
}

fn fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b':').collect()
}

fn number(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn read_users(path: &std::path::Path) -> Option<Users> {
    let text = std::fs::read(path).ok()?;
    Some(
        text.split(|&b| b == b'\n')
            .filter_map(|line| match fields(line).as_slice() {
                [name, _, uid, gid, ..] if !name.is_empty() => {
                    Some((name.to_vec(), (number(uid)?, number(gid)?)))
                }
                _ => None,
            })
            .collect(),
    )
}

fn read_groups(path: &std::path::Path) -> Option<Groups> {
    let text = std::fs::read(path).ok()?;
    Some(
        text.split(|&b| b == b'\n')
            .filter_map(|line| match fields(line).as_slice() {
                [name, _, gid, members, ..] if !name.is_empty() => {
                    let members = members
                        .split(|&b| b == b',')
                        .filter(|m| !m.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                    Some((name.to_vec(), (number(gid)?, members)))
                }
                _ => None,
            })
            .collect(),
    )
}

impl Accounts {
    /// The system's databases, /etc/passwd and /etc/group, read now.
    pub fn system() -> Self {
        Self::new("/etc/passwd".into(), "/etc/group".into())
    }

    pub fn new(passwd: PathBuf, group: PathBuf) -> Self {
        Accounts {
            users: read_users(&passwd),
            groups: read_groups(&group),
            passwd,
            group,
        }
    }

    /// The accounts changed since the last look, when `changed` is one of the databases.
    pub fn observe(&mut self, changed: &[u8]) -> Vec<AccountChange> {
        use std::os::unix::ffi::OsStrExt;
        let (users, groups) = if changed == self.passwd.as_os_str().as_bytes() {
            (read_users(&self.passwd), self.groups.clone())
        } else if changed == self.group.as_os_str().as_bytes() {
            (self.users.clone(), read_groups(&self.group))
        } else {
            return Vec::new();
        };
        let out = match (&self.users, &self.groups, &users, &groups) {
            (Some(ou), Some(og), Some(nu), Some(ng)) => diff(ou, og, nu, ng),
            _ => Vec::new(),
        };
        if users.is_some() && groups.is_some() {
            self.users = users;
            self.groups = groups;
        }
        out
    }
}

fn diff(
    old_users: &Users,
    old_groups: &Groups,
    users: &Users,
    groups: &Groups,
) -> Vec<AccountChange> {
    let group_name = |gid: i64| groups.iter().find(|g| g.1 .0 == gid).map(|g| g.0.clone());
    let mut out: BTreeMap<Vec<u8>, AccountChange> = BTreeMap::new();
    for (name, &(uid, gid)) in users {
        let before = old_users.get(name);
        if before == Some(&(uid, gid)) {
            continue;
        }
        let gid_changed = before.is_none_or(|b| b.1 != gid);
        out.insert(
            name.clone(),
            AccountChange {
                name: name.clone(),
                uid,
                gid,
                groups: gid_changed
                    .then(|| group_name(gid))
                    .flatten()
                    .into_iter()
                    .collect(),
                new: before.is_none(),
            },
        );
    }
    for (group, (_, members)) in groups {
        let before = old_groups.get(group).map(|g| &g.1);
        // A member joins when the group lists it and did not, or when the account itself is
        // new (a tool may write the group database before the passwd one).
        let joined =
            |m: &&Vec<u8>| before.is_none_or(|b| !b.contains(*m)) || !old_users.contains_key(*m);
        for member in members.iter().filter(joined) {
            let Some(&(uid, gid)) = users.get(member) else {
                continue;
            };
            let change = out.entry(member.clone()).or_insert_with(|| AccountChange {
                name: member.clone(),
                uid,
                gid,
                groups: Vec::new(),
                new: false,
            });
            if !change.groups.contains(group) {
                change.groups.push(group.clone());
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A passwd and a group database in a directory of their own (removed on drop), the
    /// `Accounts` that watches them, and the paths their events name.
    struct Databases {
        dir: PathBuf,
        accounts: Accounts,
        passwd: Vec<u8>,
        group: Vec<u8>,
    }

    impl Databases {
        fn new(tag: &str, passwd: &str, group: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("osprey-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (p, g) = (dir.join("passwd"), dir.join("group"));
            std::fs::write(&p, passwd).unwrap();
            std::fs::write(&g, group).unwrap();
            let path = |p: &PathBuf| p.to_str().unwrap().as_bytes().to_vec();
            Databases {
                passwd: path(&p),
                group: path(&g),
                accounts: Accounts::new(p, g),
                dir,
            }
        }

        fn write_passwd(&self, text: &str) {
            std::fs::write(self.dir.join("passwd"), text).unwrap();
        }

        fn write_group(&self, text: &str) {
            std::fs::write(self.dir.join("group"), text).unwrap();
        }

        /// The changes an event on the passwd database reports.
        fn passwd_event(&mut self) -> Vec<AccountChange> {
            self.accounts.observe(&self.passwd)
        }

        fn group_event(&mut self) -> Vec<AccountChange> {
            self.accounts.observe(&self.group)
        }
    }

    impl Drop for Databases {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn new_accounts_uid_changes_and_group_joins_are_reported() {
        let mut db = Databases::new(
            "accounts",
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
            "root:x:0:\nsudo:x:27:\nbob:x:1000:\n",
        );
        assert!(db.passwd_event().is_empty());
        db.write_passwd(
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\nevil:x:0:0::/:/bin/sh\n",
        );
        db.write_group("root:x:0:\nsudo:x:27:bob\nbob:x:1000:\n");
        // passwd's event, then group's.
        let mut changes = db.passwd_event();
        changes.extend(db.group_event());
        assert_eq!(
            changes,
            vec![
                AccountChange {
                    name: b"evil".to_vec(),
                    uid: 0,
                    gid: 0,
                    groups: vec![b"root".to_vec()],
                    new: true
                },
                AccountChange {
                    name: b"bob".to_vec(),
                    uid: 1000,
                    gid: 1000,
                    groups: vec![b"sudo".to_vec()],
                    new: false
                },
            ]
        );
        assert!(db.passwd_event().is_empty(), "reported once");
        assert!(db.group_event().is_empty(), "reported once");
        assert!(db.accounts.observe(b"/etc/hosts").is_empty());
    }

    /// Events are judged after the fact: a group change is read without the passwd change
    /// that followed it, and a new account's memberships count once the account appears.
    #[test]
    fn each_event_reads_only_the_database_it_names() {
        let mut db = Databases::new(
            "accounts-db",
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/:/bin/sh\n",
            "root:x:0:\nsudo:x:27:\nbob:x:1000:\n",
        );
        // bob joins sudo (group), then a later tool adds eve (passwd) before that event is judged.
        db.write_group("root:x:0:\nsudo:x:27:bob\nbob:x:1000:\n");
        db.write_passwd(
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/:/bin/sh\neve:x:1001:1001::/:/bin/sh\n",
        );
        let on_group = db.group_event();
        assert_eq!(on_group.len(), 1, "{on_group:?}");
        assert_eq!(on_group[0].name, b"bob");
        assert_eq!(on_group[0].groups, vec![b"sudo".to_vec()]);
        let on_passwd = db.passwd_event();
        assert_eq!(on_passwd.len(), 1, "{on_passwd:?}");
        assert!(on_passwd[0].new && on_passwd[0].name == b"eve");
        // A new account listed in sudo before its passwd line was written joins sudo with it.
        db.write_group("root:x:0:\nsudo:x:27:bob,mal\nbob:x:1000:\n");
        assert!(db.group_event().is_empty(), "mal has no account yet");
        db.write_passwd(
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/:/bin/sh\neve:x:1001:1001::/:/bin/sh\nmal:x:1002:1002::/:/bin/sh\n",
        );
        let mal = db.passwd_event();
        assert_eq!(mal.len(), 1, "{mal:?}");
        assert!(
            mal[0].new && mal[0].groups.contains(&b"sudo".to_vec()),
            "{mal:?}"
        );
    }
}

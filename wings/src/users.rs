//! The system user of each server (when Wings is root), from a block of uids Wings owns.
//!
//! A uid is never handed out twice on a node: `useradd --system` after a `userdel` would
//! give the next server the old one, and with it whatever the old server left in `/tmp`,
//! `/var/tmp`, `/dev/shm` or System V IPC. So Wings takes uids from `WINGS_UID_RANGE`
//! (default [`DEFAULT_UID_RANGE`]), records every one it ever allocated in
//! `state/uids` (`<uid> <server-id>` per line, kept after the server is deleted), skips any
//! uid the system already knows, and on delete removes what the uid left behind.

use std::collections::BTreeMap;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::beneath;

/// The default block of server uids (and gids): clear of the usual system (< 1000), user
/// (1000–60000), systemd dynamic (61184–65519) and subordinate (100000 + 65536·n, a few
/// users' worth) ranges.
pub const DEFAULT_UID_RANGE: RangeInclusive<u32> = 400_000..=499_999;

/// Shared directories where any user can leave files behind.
const SHARED_TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// The system user of a server: `mamba-` and 24 hex digits of its id (the random end of it).
pub fn user_name(server_id: &str) -> String {
    let hex: String = server_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("mamba-{}", &hex[hex.len().saturating_sub(24)..])
}

/// The uids this node has handed out, and from where new ones come.
#[derive(Debug)]
pub struct UidPool {
    file: PathBuf,
    range: RangeInclusive<u32>,
    /// Every uid ever allocated here, with the server it was for.
    given: BTreeMap<u32, String>,
}

impl UidPool {
    /// Reads `state/uids` (a missing file is an empty pool).
    pub fn load(state_dir: &Path, range: RangeInclusive<u32>) -> io::Result<UidPool> {
        let file = state_dir.join("uids");
        let mut given = BTreeMap::new();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.split_whitespace();
                    if let (Some(Ok(uid)), Some(server)) =
                        (parts.next().map(str::parse::<u32>), parts.next())
                    {
                        given.insert(uid, server.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(UidPool { file, range, given })
    }

    /// The uid recorded for `server_id`, if it has one.
    pub fn of(&self, server_id: &str) -> Option<u32> {
        self.given
            .iter()
            .find_map(|(uid, server)| (server == server_id).then_some(*uid))
    }

    /// The server's uid: the recorded one, or the next never-used uid of the range that the
    /// system does not know either (recorded before it is returned).
    pub fn allocate(&mut self, server_id: &str) -> Result<u32, String> {
        if let Some(uid) = self.of(server_id) {
            return Ok(uid);
        }
        // A server from before uids came from the range (an upgraded node) keeps the user it
        // has; its uid is recorded, so it too is never handed out again.
        let adopted = nix::unistd::User::from_name(&user_name(server_id))
            .ok()
            .flatten()
            .map(|user| user.uid.as_raw());
        if let Some(uid) = adopted {
            self.given.insert(uid, server_id.to_owned());
            self.save()
                .map_err(|e| format!("cannot record uid {uid} in {}: {e}", self.file.display()))?;
            return Ok(uid);
        }
        let subordinate = subordinate_ranges();
        let start = self
            .given
            .range(self.range.clone())
            .next_back()
            .map_or(*self.range.start(), |(last, _)| last.saturating_add(1));
        let uid = (start..=*self.range.end())
            .find(|uid| {
                !self.given.contains_key(uid)
                    && !subordinate.iter().any(|r| r.contains(uid))
                    && !known_to_system(*uid)
            })
            .ok_or_else(|| {
                format!(
                    "no uid left in WINGS_UID_RANGE {}-{}: every one was used once",
                    self.range.start(),
                    self.range.end()
                )
            })?;
        self.given.insert(uid, server_id.to_owned());
        self.save()
            .map_err(|e| format!("cannot record uid {uid} in {}: {e}", self.file.display()))?;
        Ok(uid)
    }

    /// Gives `server_id` a new uid: the one it had stays recorded (as taken by someone else)
    /// and is never handed out.
    pub fn reallocate(&mut self, server_id: &str) -> Result<u32, String> {
        for owner in self.given.values_mut() {
            if owner == server_id {
                *owner = TAKEN.to_owned();
            }
        }
        self.allocate(server_id)
    }

    fn save(&self) -> io::Result<()> {
        let text: String = self
            .given
            .iter()
            .map(|(uid, server)| format!("{uid} {server}\n"))
            .collect();
        let part = self.file.with_extension("part");
        std::fs::write(&part, text)?;
        std::fs::rename(&part, &self.file)
    }
}

/// The subordinate uid and gid ranges handed to users for their containers
/// (`/etc/subuid`, `/etc/subgid`: `name:first:count` per line): never server uids.
fn subordinate_ranges() -> Vec<RangeInclusive<u32>> {
    ["/etc/subuid", "/etc/subgid"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    let mut parts = line.split(':').skip(1);
                    let first: u32 = parts.next()?.trim().parse().ok()?;
                    let count: u32 = parts.next()?.trim().parse().ok()?;
                    Some(first..=first.saturating_add(count.saturating_sub(1)))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What `state/uids` records for a uid that turned out to be someone else's.
const TAKEN: &str = "-";

/// How often a server is given another uid when the one chosen was taken meanwhile.
pub const TAKEN_RETRIES: usize = 8;

/// Whether `uid` now belongs to someone other than the server's user (it was taken between
/// being chosen and `useradd`).
pub fn taken_elsewhere(server_id: &str, uid: u32) -> bool {
    known_to_system(uid)
        && !matches!(
            nix::unistd::User::from_name(&user_name(server_id)),
            Ok(Some(user)) if user.uid.as_raw() == uid
        )
}

/// Whether a user or group with this id exists already.
fn known_to_system(id: u32) -> bool {
    matches!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id)),
        Ok(Some(_))
    ) || matches!(
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id)),
        Ok(Some(_))
    )
}

/// Makes (or finds) the server's system user and group with `uid` (gid = uid): no login
/// shell, home = its directory. An existing user of that name with another uid is refused.
pub fn ensure_user(server_id: &str, uid: u32, home: &Path) -> Result<(u32, u32), String> {
    let name = user_name(server_id);
    if let Ok(Some(user)) = nix::unistd::User::from_name(&name) {
        if user.uid.as_raw() != uid {
            return Err(format!(
                "user {name} exists with uid {}, not the recorded {uid}",
                user.uid
            ));
        }
        return Ok((user.uid.as_raw(), user.gid.as_raw()));
    }
    let id = uid.to_string();
    let home = home.to_string_lossy();
    // The account files are locked while another useradd runs (another Wings on the host, an
    // administrator): try again a few times before giving up.
    let mut last = String::new();
    for attempt in 0..LOCK_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
        }
        let group = match nix::unistd::Group::from_name(&name) {
            Ok(Some(group)) if group.gid.as_raw() == uid => Ok(()),
            // The server's own group, made for a uid that another account took before
            // `useradd` ran (another Wings on the host): it moves to this id.
            Ok(Some(_)) => run("groupmod", &["--gid", &id, &name]),
            _ => run("groupadd", &["--system", "--gid", &id, &name]),
        };
        if let Err(e) = group {
            last = e;
            continue;
        }
        let made = run(
            "useradd",
            &[
                "--system",
                "--uid",
                &id,
                "--gid",
                &id,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
                &home,
                &name,
            ],
        );
        match made {
            Ok(()) => return Ok((uid, uid)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// How often `groupadd`/`useradd` are tried when the account files are busy.
const LOCK_ATTEMPTS: u64 = 5;

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}

/// Removes the server's system user and group, and what its uid left in the shared temporary
/// directories and in System V IPC. Its processes must be gone already.
pub fn remove_user(server_id: &str, uid: Option<u32>) {
    let name = user_name(server_id);
    if let Ok(Some(_)) = nix::unistd::User::from_name(&name) {
        // --force: a process of its own that is still being reaped must not keep it.
        let _ = run("userdel", &["--force", &name]);
    }
    if let Ok(Some(_)) = nix::unistd::Group::from_name(&name) {
        let _ = run("groupdel", &[&name]);
    }
    if let Some(uid) = uid {
        for dir in SHARED_TEMP_DIRS {
            if let Err(e) = remove_owned_by(Path::new(dir), uid) {
                tracing::warn!(dir, uid, error = %e, "cannot clean what the server left");
            }
        }
        remove_ipc_of(uid);
    }
}

/// Removes the entries directly in `dir` that belong to `uid` (a directory with all it
/// holds), by descriptor: a shared directory is the last place to follow a link in.
pub fn remove_owned_by(dir: &Path, uid: u32) -> io::Result<()> {
    let fd = match beneath::open_root(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in beneath::names(fd.as_fd())? {
        let Ok(stat) = rustix::fs::statat(fd.as_fd(), &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        if stat.st_uid != uid {
            continue;
        }
        if beneath::kind(&stat) == rustix::fs::FileType::Directory {
            if let Ok(inner) = beneath::open_dir_at(fd.as_fd(), &name) {
                beneath::remove_contents_of(inner.as_fd(), Some(uid))?;
            }
            let _ = rustix::fs::unlinkat(fd.as_fd(), &name, rustix::fs::AtFlags::REMOVEDIR);
        } else {
            let _ = rustix::fs::unlinkat(fd.as_fd(), &name, rustix::fs::AtFlags::empty());
        }
    }
    Ok(())
}

/// Removes the shared memory segments, semaphore sets and message queues `uid` owns.
fn remove_ipc_of(uid: u32) {
    // (file, ipcrm flag, column of the id, columns of the owner's and the creator's uid: an
    // owner can hand an object to another uid with IPC_SET, never its creation)
    for (file, flag, id_col, uid_cols) in [
        ("/proc/sysvipc/shm", "-m", 1, [7, 9]),
        ("/proc/sysvipc/sem", "-s", 1, [4, 6]),
        ("/proc/sysvipc/msg", "-q", 1, [7, 9]),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if uid_cols
                .iter()
                .any(|col| cols.get(*col).and_then(|c| c.parse::<u32>().ok()) == Some(uid))
                && let Some(id) = cols.get(id_col)
            {
                let _ = run("ipcrm", &[flag, id]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose first uid was taken between `groupadd` and `useradd` (another Wings on
    /// the host) keeps its group and gets the next uid for both.
    #[test]
    #[ignore = "needs root"]
    fn a_group_left_by_a_taken_uid_moves_to_the_next() {
        let server = format!("{:024x}", rand_id());
        let name = user_name(&server);
        let dir = tempfile::tempdir().unwrap();
        let free = |from: u32| {
            (from..from + 5000)
                .find(|id| !known_to_system(*id))
                .unwrap()
        };
        let first = free(480_000 + (rand_id() % 10_000) as u32);
        run(
            "groupadd",
            &["--system", "--gid", &first.to_string(), &name],
        )
        .unwrap();
        let next = free(first + 1);
        let made = ensure_user(&server, next, dir.path());
        let _ = run("userdel", &[&name]);
        let _ = run("groupdel", &[&name]);
        assert_eq!(made, Ok((next, next)));
    }

    fn rand_id() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.subsec_nanos().into())
    }

    #[test]
    fn uids_are_never_handed_out_twice() {
        let tmp = tempfile::tempdir().unwrap();
        // Far from the default block, which other tests' servers use.
        let range = 4_000_000_000..=4_000_000_002;
        let mut pool = UidPool::load(tmp.path(), range.clone()).unwrap();
        let a = pool.allocate("a").unwrap();
        assert_eq!(pool.allocate("a").unwrap(), a, "stable per server");
        let b = pool.allocate("b").unwrap();
        assert_ne!(a, b);
        // Server a is deleted: its uid stays recorded and is not given to c.
        let mut pool = UidPool::load(tmp.path(), range).unwrap();
        let c = pool.allocate("c").unwrap();
        assert!(![a, b].contains(&c));
        let error = pool.allocate("d").unwrap_err();
        assert!(error.contains("WINGS_UID_RANGE"), "{error}");
        // A uid taken by someone else meanwhile stays used; the server gets another.
        let mut pool = UidPool::load(tmp.path(), 4_000_000_000..=4_000_000_009).unwrap();
        let first = pool.allocate("e").unwrap();
        let second = pool.reallocate("e").unwrap();
        assert_ne!(first, second);
        assert_eq!(pool.of("e"), Some(second));
        let reloaded = UidPool::load(tmp.path(), 4_000_000_000..=4_000_000_009).unwrap();
        assert_eq!(reloaded.given.get(&first).map(String::as_str), Some(TAKEN));
    }

    #[test]
    fn leftovers_of_a_uid_go_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::Uid::effective().as_raw();
        let shared = tmp.path().join("shared");
        let keep = tmp.path().join("keep");
        std::fs::create_dir_all(shared.join("dir/inner")).unwrap();
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(keep.join("file"), "x").unwrap();
        std::fs::write(shared.join("dir/inner/f"), "x").unwrap();
        std::os::unix::fs::symlink(&keep, shared.join("link")).unwrap();
        remove_owned_by(&shared, me.wrapping_add(1)).unwrap();
        assert!(shared.join("dir").exists(), "another uid's files stay");
        // Another user's file inside the uid's directory stays, and so does the directory.
        if me == 0 {
            std::fs::write(shared.join("dir/theirs"), "x").unwrap();
            std::os::unix::fs::lchown(shared.join("dir/theirs"), Some(4_000_000_100), None)
                .unwrap();
            remove_owned_by(&shared, me).unwrap();
            assert!(shared.join("dir/theirs").exists());
            assert!(!shared.join("dir/inner").exists());
            std::fs::remove_file(shared.join("dir/theirs")).unwrap();
        }
        remove_owned_by(&shared, me).unwrap();
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
        assert!(keep.join("file").exists(), "a link's target is not touched");
    }
}

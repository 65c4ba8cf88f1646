//! Writing a server's bytes as the server's user: while a chunk is written, the writing
//! thread's filesystem uid and gid are the server's (`setfsuid`/`setfsgid`, which Linux keeps
//! per thread) and `CAP_SYS_RESOURCE` is out of its effective set, so the kernel's own rules for
//! that user apply to the write: blocks reserved for root (ext4's `reserved blocks`) are not
//! given to it, and a kernel disk quota on the user is enforced (`EDQUOT`, `ENOSPC` → 413).
//! Everything is put back when the guard is dropped, so the blocking pool's thread is root
//! again for the next task.

use std::io;

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};

/// The writing thread acting as a server's user until dropped.
#[derive(Debug)]
pub struct AsOwner {
    saved: Option<(Uid, Gid, CapabilitySets)>,
}

impl AsOwner {
    /// Acts as `owner` (uid, gid) on this thread; nothing changes for `None` (Wings not root).
    pub fn enter(owner: Option<(u32, u32)>) -> io::Result<AsOwner> {
        let Some((uid, gid)) = owner else {
            return Ok(AsOwner { saved: None });
        };
        let caps = capabilities(None)?;
        let mut lowered = caps;
        lowered.effective -= CapabilitySet::SYS_RESOURCE;
        set_capabilities(None, lowered)?;
        let old_gid = setfsgid(Gid::from_raw(gid));
        let old_uid = setfsuid(Uid::from_raw(uid));
        Ok(AsOwner {
            saved: Some((old_uid, old_gid, caps)),
        })
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some((uid, gid, caps)) = self.saved.take() {
            setfsuid(uid);
            setfsgid(gid);
            if let Err(e) = set_capabilities(None, caps) {
                tracing::error!(error = %e, "a writing thread could not take its capabilities back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fourth `Uid:`/`Gid:` field (the filesystem id) and `CapEff` of this thread.
    fn thread_status() -> (String, String, u64) {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let cap_eff = u64::from_str_radix(&field("CapEff:")[0], 16).unwrap();
        (field("Uid:")[3].clone(), field("Gid:")[3].clone(), cap_eff)
    }

    #[test]
    #[ignore = "needs root"]
    fn a_write_is_done_as_the_servers_user_without_root_reserved_blocks() {
        assert!(nix::unistd::Uid::effective().is_root(), "run as root");
        let before = thread_status();
        let sys_resource = 1u64 << 24;
        assert_eq!(before.0, "0");
        // (A container may have taken CAP_SYS_RESOURCE from root already; then it stays out.)
        // A thread started before: what it sees while this one acts as the server's user.
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            asked.recv().unwrap();
            thread_status()
        });
        {
            let _as = AsOwner::enter(Some((54321, 54322))).unwrap();
            let (uid, gid, caps) = thread_status();
            assert_eq!((uid.as_str(), gid.as_str()), ("54321", "54322"));
            assert_eq!(caps & sys_resource, 0, "CAP_SYS_RESOURCE is out");
            ask.send(()).unwrap();
            let other = other.join().unwrap();
            assert_eq!(other, before, "another thread of the process is untouched");
        }
        assert_eq!(thread_status(), before, "all is put back");
    }
}

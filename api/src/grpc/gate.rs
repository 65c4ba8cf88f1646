//! Caps on concurrent TLS handshakes of the node channel, overall and per IP address (an IPv6
//! client by its /64, as every per-IP limit: [`crate::http::guard::limit_key`]).
//!
//! A handshake costs the panel a task, a TLS state and, until it times out, a socket; without
//! a cap, anyone able to open TCP connections could hold as many as the process allows. The
//! accept loop takes a [`Slot`] before the handshake and gives it back when the handshake ends;
//! a connection that finds no slot is closed at once, counted and audited (folded, see
//! `fold`) as `too_many_handshakes`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Handshakes in progress at once, from everywhere (default of `PANEL_GRPC_MAX_HANDSHAKES`).
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one IP address (default of
/// `PANEL_GRPC_MAX_HANDSHAKES_PER_IP`).
pub const MAX_HANDSHAKES_PER_IP: usize = 16;

/// Which cap a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// [`MAX_HANDSHAKES`].
    Overall,
    /// [`MAX_HANDSHAKES_PER_IP`].
    PerIp,
}

impl Full {
    /// For the audit row's details.
    pub fn label(self) -> &'static str {
        match self {
            Full::Overall => "overall",
            Full::PerIp => "per_ip",
        }
    }
}

/// The handshakes in progress.
#[derive(Debug)]
pub struct Gate {
    overall: usize,
    per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<String, usize>,
}

/// One handshake's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    key: String,
}

impl Gate {
    /// A gate with the given caps.
    pub fn with_caps(overall: usize, per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            overall,
            per_ip,
            open: Mutex::default(),
        })
    }

    /// Takes a place for a handshake from `ip`, or says which cap is reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut open = self.lock();
        if open.total >= self.overall {
            return Err(Full::Overall);
        }
        let key = crate::http::guard::limit_key(ip);
        let mine = open.by_ip.entry(key.clone()).or_default();
        if *mine >= self.per_ip {
            return Err(Full::PerIp);
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot {
            gate: self.clone(),
            key,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Counters are updated together under the lock; a poisoned lock still holds them.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_overall_and_per_ip_and_frees_on_drop() {
        let gate = Gate::with_caps(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = gate.enter(a).unwrap();
        let _a2 = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), Full::PerIp);
        let _b1 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), Full::Overall);
        drop(a1);
        let _a3 = gate.enter(a).expect("a place was freed");
        assert_eq!(gate.lock().by_ip.len(), 2);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let gate = Gate::with_caps(10, 2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other_in_same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = gate.enter(one).unwrap();
        let _b = gate.enter(other_in_same_64).unwrap();
        assert_eq!(
            gate.enter("2001:db8:1:2::77".parse().unwrap()).unwrap_err(),
            Full::PerIp
        );
        assert!(gate.enter("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}

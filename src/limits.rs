//! Load shedding: a cap on concurrent streaming responses, global and per client address.
//!
//! Beyond a cap the request is answered at once with 503, `Retry-After` and `no-store` (never a
//! queue without bound). A [`StreamPermit`] lives inside the response body and is released when
//! the body finishes or the client goes away (RAII), so counts never leak on early returns.
//! Only responses that stream file bytes take a permit: 304s, HEADs, errors, health and admin
//! routes are never shed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Global,
    PerClient,
}

#[derive(Default)]
struct State {
    per_client: Mutex<HashMap<IpAddr, usize>>,
    active: AtomicUsize,
    shed: AtomicU64,
}

pub struct StreamLimiter {
    max: usize,
    max_per_client: usize,
    state: Arc<State>,
}

/// Held by a streaming response; releases its slot on drop.
pub struct StreamPermit {
    state: Arc<State>,
    client: Option<IpAddr>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut map = self
                .state
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl StreamLimiter {
    /// `max` / `max_per_client` of 0 mean unlimited.
    pub fn new(max: usize, max_per_client: usize) -> Self {
        StreamLimiter {
            max,
            max_per_client,
            state: Arc::new(State::default()),
        }
    }

    pub fn acquire(&self, client: IpAddr) -> Result<StreamPermit, Shed> {
        let s = &self.state;
        let now = s.active.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max > 0 && now > self.max {
            s.active.fetch_sub(1, Ordering::AcqRel);
            s.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Shed::Global);
        }
        let tracked = if self.max_per_client > 0 {
            let mut map = s.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(client).or_insert(0);
            if *n >= self.max_per_client {
                drop(map);
                s.active.fetch_sub(1, Ordering::AcqRel);
                s.shed.fetch_add(1, Ordering::Relaxed);
                return Err(Shed::PerClient);
            }
            *n += 1;
            Some(client)
        } else {
            None
        };
        Ok(StreamPermit {
            state: Arc::clone(s),
            client: tracked,
        })
    }

    pub fn active(&self) -> usize {
        self.state.active.load(Ordering::Relaxed)
    }

    pub fn shed_total(&self) -> u64 {
        self.state.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let l = StreamLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.acquire(a).unwrap();
        let _p2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(Shed::PerClient));
        let _p3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(Shed::Global));
        assert_eq!(l.active(), 3);
        drop(p1);
        assert_eq!(l.active(), 2);
        assert!(l.acquire(a).is_ok(), "released slot is reusable");
        assert_eq!(l.shed_total(), 2);
    }

    #[test]
    fn unlimited() {
        let l = StreamLimiter::new(0, 0);
        let ip: IpAddr = "::1".parse().unwrap();
        let permits: Vec<_> = (0..1000).map(|_| l.acquire(ip).unwrap()).collect();
        assert_eq!(l.active(), 1000);
        drop(permits);
        assert_eq!(l.active(), 0);
    }
}

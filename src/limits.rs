//! Load shedding: a cap on concurrent streaming responses, global and per client address.
//!
//! Beyond a cap the request is answered with 503, `Retry-After` and `no-store`: at once, or
//! after an optional bounded wait (at most `queue_max` waiting, each at most `queue_wait`);
//! never a queue without bound. A [`StreamPermit`] lives inside the response body and is released when
//! the body finishes or the client goes away (RAII), so counts never leak on early returns.
//! Only responses that stream file bytes take a permit: 304s, HEADs, errors, health and admin
//! routes are never shed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Global,
    PerClient,
    /// The wait queue was full.
    QueueFull,
    /// Waited `queue_wait` without a slot freeing up.
    QueueTimeout,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Global => "global",
            Shed::PerClient => "per_client",
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

#[derive(Default)]
struct State {
    per_client: Mutex<HashMap<IpAddr, usize>>,
    active: AtomicUsize,
    waiting: AtomicUsize,
    shed: AtomicU64,
    released: tokio::sync::Notify,
}

pub struct StreamLimiter {
    max: usize,
    max_per_client: usize,
    queue_max: usize,
    queue_wait: Duration,
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
        self.state.released.notify_one();
    }
}

impl StreamLimiter {
    /// `max` / `max_per_client` of 0 mean unlimited.
    pub fn new(max: usize, max_per_client: usize) -> Self {
        Self::with_queue(max, max_per_client, 0, Duration::ZERO)
    }

    /// With a bounded wait queue: up to `queue_max` requests over the global cap wait up to
    /// `queue_wait` for a slot.
    pub fn with_queue(
        max: usize,
        max_per_client: usize,
        queue_max: usize,
        queue_wait: Duration,
    ) -> Self {
        StreamLimiter {
            max,
            max_per_client,
            queue_max,
            queue_wait,
            state: Arc::new(State::default()),
        }
    }

    /// A slot now, or a refusal now.
    pub fn acquire(&self, client: IpAddr) -> Result<StreamPermit, Shed> {
        let r = self.try_acquire(client);
        if r.is_err() {
            self.state.shed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// A slot, waiting in the bounded queue when the global cap is reached and a queue is
    /// configured. Per-client refusals never wait (the client's own streams must end first).
    pub async fn acquire_or_wait(&self, client: IpAddr) -> Result<StreamPermit, Shed> {
        let s = &self.state;
        let r = match self.try_acquire(client) {
            Err(Shed::Global) if !self.queue_wait.is_zero() => {
                if s.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_max {
                    Err(Shed::QueueFull)
                } else {
                    self.wait_for_slot(client).await
                }
            }
            r => {
                return r.inspect_err(|_| {
                    s.shed.fetch_add(1, Ordering::Relaxed);
                })
            }
        };
        s.waiting.fetch_sub(1, Ordering::AcqRel);
        if r.is_err() {
            s.shed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn wait_for_slot(&self, client: IpAddr) -> Result<StreamPermit, Shed> {
        let deadline = tokio::time::Instant::now() + self.queue_wait;
        loop {
            // Registered before the retry, so a release between the two is not missed.
            let notified = self.state.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_acquire(client) {
                Err(Shed::Global) => {}
                r => return r,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Shed::QueueTimeout);
            }
        }
    }

    fn try_acquire(&self, client: IpAddr) -> Result<StreamPermit, Shed> {
        let s = &self.state;
        let now = s.active.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max > 0 && now > self.max {
            s.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::Global);
        }
        let tracked = if self.max_per_client > 0 {
            let mut map = s.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(client).or_insert(0);
            if *n >= self.max_per_client {
                drop(map);
                s.active.fetch_sub(1, Ordering::AcqRel);
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

    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::Relaxed)
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

    #[tokio::test(start_paused = true)]
    async fn bounded_queue_waits_then_gets_the_released_slot() {
        let l = Arc::new(StreamLimiter::with_queue(1, 0, 1, Duration::from_secs(5)));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held = l.acquire(ip).unwrap();
        let waiter = {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.acquire_or_wait(ip).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(l.waiting(), 1);
        // The queue holds one: the next is refused at once.
        assert_eq!(l.acquire_or_wait(ip).await.err(), Some(Shed::QueueFull));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_queue_times_out() {
        let l = StreamLimiter::with_queue(1, 0, 4, Duration::from_millis(300));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let _held = l.acquire(ip).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(l.acquire_or_wait(ip).await.err(), Some(Shed::QueueTimeout));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(l.waiting(), 0);
        assert_eq!(l.shed_total(), 1);
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

//! A counter and a histogram that every request updates, split into per-thread cache lines.
//!
//! Each worker thread serves its own connections, but a counter both workers add to is one
//! cache line that moves between the cores on every request; the histogram of
//! prometheus-client takes a write lock as well. Here each thread adds to its own slot (its own
//! 128-byte line) and a scrape sums the slots. A thread is given a slot when it first counts,
//! round robin, so the first `SLOTS` threads (the workers start first) never share one.
//! They encode exactly as prometheus-client's `Counter` and `Histogram` do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: more than the worker threads of any machine this runs on is not needed,
/// since a shared slot is only slower, never wrong.
const SLOTS: usize = 16;

/// Upper bounds a histogram can have (the `+Inf` bucket included).
const MAX_BUCKETS: usize = 24;

fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

/// One thread's share of a counter, alone in its cache line (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[repr(align(128))]
#[derive(Default)]
struct CounterSlot(AtomicU64);

/// A monotonic counter (Prometheus type `counter`). Clones share the count.
#[derive(Clone)]
pub struct ShardedCounter(Arc<[CounterSlot; SLOTS]>);

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter(Arc::new(std::array::from_fn(|_| CounterSlot::default())))
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl ShardedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, v: u64) {
        self.0[slot()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The sum over all threads.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's observations: count, sum (f64 bits) and per-bucket counts (not cumulative).
#[repr(align(128))]
struct HistogramSlot {
    count: AtomicU64,
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

impl Default for HistogramSlot {
    fn default() -> Self {
        HistogramSlot {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A histogram (Prometheus type `histogram`) with fixed upper bounds plus `+Inf`.
#[derive(Clone)]
pub struct ShardedHistogram {
    bounds: Arc<[f64]>,
    slots: Arc<[HistogramSlot; SLOTS]>,
}

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.snapshot();
        f.debug_struct("ShardedHistogram")
            .field("count", &count)
            .field("sum", &sum)
            .finish()
    }
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (ascending); `+Inf` is added, as prometheus-client
    /// does. Bounds beyond what fits (`MAX_BUCKETS - 1`) are dropped.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .take(MAX_BUCKETS - 1)
            .chain(std::iter::once(f64::MAX))
            .collect();
        ShardedHistogram {
            bounds: bounds.into(),
            slots: Arc::new(std::array::from_fn(|_| HistogramSlot::default())),
        }
    }

    pub fn observe(&self, v: f64) {
        let s = &self.slots[slot()];
        if let Some(i) = self.bounds.iter().position(|b| *b >= v) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        // The slot is this thread's alone, so the update never races another writer; the
        // compare-exchange only keeps a concurrent scrape from seeing a torn value.
        let _ = s
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
        s.count.fetch_add(1, Ordering::Relaxed);
    }

    /// (sum, count, (upper bound, observations in that bucket alone)) over all threads.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for s in self.slots.iter() {
            sum += f64::from_bits(s.sum.load(Ordering::Relaxed));
            count += s.count.load(Ordering::Relaxed);
            for (b, n) in buckets.iter_mut().zip(&s.buckets) {
                b.1 += n.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(5);
                });
            }
        });
        assert_eq!(c.get(), 40 * 1005);
    }

    /// A scrape cannot tell them from prometheus-client's own types fed the same values.
    #[test]
    fn they_encode_as_prometheus_clients_counter_and_histogram_do() {
        let bounds: Vec<f64> = exponential_buckets(0.0001, 2.0, 16).collect();
        // Binary fractions, so the sum is exact in any order of addition.
        let values = [
            0.5f64.powi(15),
            0.5f64.powi(13),
            0.5f64.powi(11),
            0.5f64.powi(6),
            1.5,
            9.0,
            1e9,
        ];
        let (theirs_c, ours_c) = (Counter::<u64>::default(), ShardedCounter::default());
        let (theirs_h, ours_h) = (
            Histogram::new(bounds.clone()),
            ShardedHistogram::new(bounds),
        );
        std::thread::scope(|s| {
            for v in values {
                let (tc, oc, th, oh) = (&theirs_c, &ours_c, &theirs_h, &ours_h);
                s.spawn(move || {
                    tc.inc_by(3);
                    oc.inc_by(3);
                    th.observe(v);
                    oh.observe(v);
                });
            }
        });
        let (mut theirs, mut ours) = (Registry::default(), Registry::default());
        theirs.register("c", "help", theirs_c);
        theirs.register("h", "help", theirs_h);
        ours.register("c", "help", ours_c);
        ours.register("h", "help", ours_h);
        let expected = text(&theirs);
        assert!(expected.contains("c_total 21"), "{expected}");
        assert!(expected.contains("h_count 7"), "{expected}");
        assert_eq!(text(&ours), expected);
    }
}

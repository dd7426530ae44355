//! Counters behind `/metrics`, written in the Prometheus text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::cpu_time::helper_threads_cpu;

/// Upper bounds (seconds) of the request latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A cumulative histogram as Prometheus exposes it.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len()];
        Histogram { bounds, counts, sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The requests answered on one route.
#[derive(Debug, Clone)]
struct RouteStats {
    /// Status code → requests answered with it.
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// Everything `/metrics` reports. Shared by the HTTP layer and the batcher.
#[derive(Debug)]
pub struct Metrics {
    /// Route → its requests: one lock and one lookup per request, and no allocation once the
    /// route has been seen.
    routes: Mutex<BTreeMap<String, RouteStats>>,
    batch_sizes: Mutex<Histogram>,
    queued_images: AtomicU64,
    in_flight: AtomicU64,
    images: AtomicU64,
    /// CPU time of the engine calls on the engine workers' own threads, in nanoseconds.
    engine_cpu_nanos: AtomicU64,
}

impl Metrics {
    /// Empty metrics; `max_batch` sets the batch-size histogram's buckets (powers of two).
    pub fn new(max_batch: usize) -> Self {
        let mut bounds = Vec::new();
        let mut b = 1;
        while b < max_batch {
            bounds.push(b as f64);
            b *= 2;
        }
        bounds.push(max_batch as f64);
        Metrics {
            routes: Mutex::new(BTreeMap::new()),
            batch_sizes: Mutex::new(Histogram::new(bounds)),
            queued_images: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            images: AtomicU64::new(0),
            engine_cpu_nanos: AtomicU64::new(0),
        }
    }

    /// Records one answered request.
    pub fn record_request(&self, route: &str, status: u16, latency: Duration) {
        let mut routes = lock(&self.routes);
        let stats = match routes.get_mut(route) {
            Some(stats) => stats,
            None => routes.entry(route.to_string()).or_insert_with(|| RouteStats {
                statuses: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BUCKETS.to_vec()),
            }),
        };
        *stats.statuses.entry(status).or_insert(0) += 1;
        stats.latency.observe(latency.as_secs_f64());
    }

    /// Records one engine run over `images` inputs.
    pub fn record_batch(&self, images: usize) {
        lock(&self.batch_sizes).observe(images as f64);
        self.images.fetch_add(images as u64, Ordering::Relaxed);
    }

    /// Adds the CPU time one engine call took on the thread that made it.
    pub fn add_engine_cpu(&self, cpu: Duration) {
        self.engine_cpu_nanos.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Sets the number of images waiting for the engine.
    pub fn set_queued_images(&self, queued: usize) {
        self.queued_images.store(queued as u64, Ordering::Relaxed);
    }

    /// A request started (+1) or finished (−1).
    pub fn add_in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every metric.
    ///
    /// ```
    /// let metrics = serve::Metrics::new(64);
    /// metrics.record_batch(5);
    /// assert!(metrics.render().contains("cifar10_images_total 5\n"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP cifar10_requests_total HTTP requests answered, by route and status code.\n");
        out.push_str("# TYPE cifar10_requests_total counter\n");
        let routes = lock(&self.routes).clone();
        let mut errors = 0;
        for (route, stats) in &routes {
            for (status, count) in &stats.statuses {
                let _ =
                    writeln!(out, "cifar10_requests_total{{route=\"{}\",status=\"{status}\"}} {count}", escape(route));
                if *status >= 400 {
                    errors += count;
                }
            }
        }
        out.push_str("# HELP cifar10_request_errors_total HTTP requests answered with a 4xx or 5xx status.\n");
        out.push_str("# TYPE cifar10_request_errors_total counter\n");
        let _ = writeln!(out, "cifar10_request_errors_total {errors}");
        out.push_str("# HELP cifar10_request_duration_seconds Time from request to response, by route.\n");
        out.push_str("# TYPE cifar10_request_duration_seconds histogram\n");
        for (route, stats) in &routes {
            stats.latency.write(&mut out, "cifar10_request_duration_seconds", &format!("route=\"{}\"", escape(route)));
        }
        out.push_str("# HELP cifar10_batch_size Images per engine run.\n");
        out.push_str("# TYPE cifar10_batch_size histogram\n");
        lock(&self.batch_sizes).write(&mut out, "cifar10_batch_size", "");
        out.push_str("# HELP cifar10_images_total Images classified by the engine.\n");
        out.push_str("# TYPE cifar10_images_total counter\n");
        let _ = writeln!(out, "cifar10_images_total {}", self.images.load(Ordering::Relaxed));
        out.push_str(
            "# HELP cifar10_engine_cpu_seconds_total CPU time of engine calls (the calling threads' and the CPU \
             engine's helper threads'); the rest of process_cpu_seconds_total is the server's own.\n",
        );
        out.push_str("# TYPE cifar10_engine_cpu_seconds_total counter\n");
        let engine_cpu = Duration::from_nanos(self.engine_cpu_nanos.load(Ordering::Relaxed)) + helper_threads_cpu();
        let _ = writeln!(out, "cifar10_engine_cpu_seconds_total {}", engine_cpu.as_secs_f64());
        out.push_str("# HELP cifar10_queue_depth_images Images waiting for the engine.\n");
        out.push_str("# TYPE cifar10_queue_depth_images gauge\n");
        let _ = writeln!(out, "cifar10_queue_depth_images {}", self.queued_images.load(Ordering::Relaxed));
        out.push_str("# HELP cifar10_requests_in_flight Requests being handled.\n");
        out.push_str("# TYPE cifar10_requests_in_flight gauge\n");
        let _ = writeln!(out, "cifar10_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out
    }
}

/// Locks a mutex even if a thread panicked while holding it: metrics stay usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::new(8);
        metrics.record_batch(1);
        metrics.record_batch(3);
        metrics.record_batch(8);
        let text = metrics.render();
        assert!(text.contains("cifar10_batch_size_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("cifar10_batch_size_bucket{le=\"4\"} 2\n"), "{text}");
        assert!(text.contains("cifar10_batch_size_bucket{le=\"8\"} 3\n"), "{text}");
        assert!(text.contains("cifar10_batch_size_count 3\n"), "{text}");
        assert!(text.contains("cifar10_images_total 12\n"), "{text}");
    }

    #[test]
    fn errors_count_4xx_and_5xx() {
        let metrics = Metrics::new(4);
        metrics.record_request("/a", 200, Duration::from_millis(1));
        metrics.record_request("/a", 400, Duration::from_millis(1));
        metrics.record_request("/b", 503, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("cifar10_requests_total{route=\"/a\",status=\"400\"} 1\n"), "{text}");
        assert!(text.contains("cifar10_request_errors_total 2\n"), "{text}");
        assert!(text.contains("cifar10_request_duration_seconds_count{route=\"/b\"} 1\n"), "{text}");
    }
}

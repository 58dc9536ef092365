//! Prometheus metrics of the injector, served at `GET /metrics`: what it did with each review,
//! bodies it could not read as one, and certificate reloads.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The injector's counters (cheap to clone; clones share the counters).
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reviews: Family<Labels, Counter>,
    bad_requests: Counter,
    cert_reloads: Family<Labels, Counter>,
}

/// What the injector did with one review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewResult {
    /// Patched: the sidecar was injected.
    Injected,
    /// Admitted untouched (opted out, skipped namespace, already injected, not a pod creation).
    Admitted,
    /// Refused with a message.
    Denied,
}

impl ReviewResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Admitted => "admitted",
            Self::Denied => "denied",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate_injector");
        let reviews = Family::<Labels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by result",
            reviews.clone(),
        );
        let bad_requests = Counter::default();
        registry.register(
            "bad_requests",
            "Request bodies that were not an AdmissionReview (answered HTTP 400 or 413)",
            bad_requests.clone(),
        );
        let cert_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Certificate reloads after the files changed, by result",
            cert_reloads.clone(),
        );
        // Pre-create the series so dashboards see zeros, not gaps.
        for r in [
            ReviewResult::Injected,
            ReviewResult::Admitted,
            ReviewResult::Denied,
        ] {
            let _ = reviews.get_or_create(&vec![("result", r.as_str())]);
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                reviews,
                bad_requests,
                cert_reloads,
            }),
        }
    }

    pub fn review(&self, result: ReviewResult) {
        self.inner
            .reviews
            .get_or_create(&vec![("result", result.as_str())])
            .inc();
    }

    pub fn bad_request(&self) {
        self.inner.bad_requests.inc();
    }

    pub fn cert_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner
            .cert_reloads
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

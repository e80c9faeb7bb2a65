//! Noisy neighbours: one tenant's flood must not become every tenant's outage.
//!
//! Three checks, in this order, on every authenticated call of a tenant's user:
//!
//! 1. **Rate** (optional): a tenant's requests per second, sustained, with a
//!    burst (GCRA, `governor`); past it, `RESOURCE_EXHAUSTED` with RetryInfo.
//! 2. **Concurrency**: a tenant's calls in flight at once. Its calls past the
//!    limit wait for its own earlier ones, never for another tenant's; a tenant
//!    with [`FairnessConfig::tenant_queue`] calls already waiting is refused
//!    (`RESOURCE_EXHAUSTED` with RetryInfo). A flooding tenant holds at most its
//!    share of the database pool; the others find connections free.
//! 3. **Load shedding**: calls in flight on this server, all callers (service
//!    calls and public RPCs too); past [`FairnessConfig::max_in_flight`],
//!    `UNAVAILABLE` with RetryInfo at once, before the database pool's queue
//!    grows without end. Taken after the tenant's own permit, so calls waiting
//!    on their tenant hold no place here. Tenants' calls together stop
//!    [`FairnessConfig::service_reserve`] places short: services' calls (the
//!    audit relays, the revocation feed) find room however many tenants flood.
//!    Public RPCs (no identity: Login, Refresh) hold at most
//!    [`FairnessConfig::public_in_flight`] of the tenants' places: an
//!    anonymous flood, which nothing else bounds per caller, leaves the
//!    tenants' users the rest.
//!
//! Refusals ask the caller to retry after a jittered wait (a flood of shed
//! clients does not come back in step).
//! Permits are held until the handler's response (its headers, for a stream).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_context::TenantId;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::GuardError;

/// The limits of one server (one service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairnessConfig {
    /// A tenant's requests per second, sustained; `None`: no rate limit.
    pub tenant_rate_per_second: Option<NonZeroU32>,
    /// Requests a tenant may send at once above its rate.
    pub tenant_burst: NonZeroU32,
    /// A tenant's calls in flight at once.
    pub tenant_concurrency: usize,
    /// A tenant's calls waiting for one of its places, at most.
    pub tenant_queue: usize,
    /// Calls in flight on this server, all callers, at most.
    pub max_in_flight: usize,
    /// Of those, places only service calls may take.
    pub service_reserve: usize,
    /// Of the tenants' places (all but the reserve), those public RPCs may
    /// hold at once (at most all of them but one).
    pub public_in_flight: usize,
}

impl FairnessConfig {
    /// The limits for a service whose database pool holds `pool_size`
    /// connections: a tenant may hold half the pool (the others always find
    /// the other half), 64 of its calls may wait, and the server sheds past 16
    /// calls per connection (each waits for one of them), keeping an eighth
    /// of those for services' calls; public RPCs may hold half the rest. No
    /// rate limit: a rate is a commercial choice, made per deployment.
    #[must_use]
    pub fn for_pool(pool_size: u32) -> Self {
        let pool = usize::try_from(pool_size.max(2)).unwrap_or(usize::MAX);
        let (max_in_flight, service_reserve) = (pool.saturating_mul(16), pool.saturating_mul(2));
        Self {
            tenant_rate_per_second: None,
            tenant_burst: NonZeroU32::MIN,
            tenant_concurrency: pool / 2,
            tenant_queue: 64,
            max_in_flight,
            service_reserve,
            public_in_flight: public_half(max_in_flight, service_reserve),
        }
    }

    /// The places tenants' calls may take: all but the reserve (one at least).
    fn tenants_part(&self) -> usize {
        tenants_part(self.max_in_flight, self.service_reserve)
    }

    /// The places public RPCs may take: [`Self::public_in_flight`], leaving
    /// the tenants' users one place at least (a share set as large as their
    /// part would bound nothing), and one at least.
    fn public_share(&self) -> usize {
        self.public_in_flight
            .min(self.tenants_part().saturating_sub(1))
            .max(1)
    }
}

fn tenants_part(max_in_flight: usize, service_reserve: usize) -> usize {
    max_in_flight.saturating_sub(service_reserve).max(1)
}

/// The default share of public RPCs: half the tenants' part (one at least).
fn public_half(max_in_flight: usize, service_reserve: usize) -> usize {
    (tenants_part(max_in_flight, service_reserve) / 2).max(1)
}

/// Limits set by an operator over a service's defaults (`bulkhead serve
/// --tenant-rate …`): each one given replaces its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FairnessOverrides {
    /// [`FairnessConfig::tenant_rate_per_second`].
    pub tenant_rate_per_second: Option<NonZeroU32>,
    /// [`FairnessConfig::tenant_burst`].
    pub tenant_burst: Option<NonZeroU32>,
    /// [`FairnessConfig::tenant_concurrency`].
    pub tenant_concurrency: Option<usize>,
    /// [`FairnessConfig::tenant_queue`].
    pub tenant_queue: Option<usize>,
    /// [`FairnessConfig::max_in_flight`].
    pub max_in_flight: Option<usize>,
    /// [`FairnessConfig::service_reserve`].
    pub service_reserve: Option<usize>,
    /// [`FairnessConfig::public_in_flight`].
    pub public_in_flight: Option<usize>,
}

impl FairnessOverrides {
    /// Whether any limit is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `defaults` with the limits set here in their place. A rate given
    /// without a burst gets a burst of one second's worth.
    #[must_use]
    pub fn over(&self, defaults: FairnessConfig) -> FairnessConfig {
        let tenant_rate_per_second = self
            .tenant_rate_per_second
            .or(defaults.tenant_rate_per_second);
        let max_in_flight = self.max_in_flight.unwrap_or(defaults.max_in_flight);
        // A maximum set without a reserve keeps the default's proportion (an
        // eighth), not its number: a reserve as large as the maximum would
        // leave tenants one place in all.
        let service_reserve = self.service_reserve.unwrap_or_else(|| {
            self.max_in_flight
                .map_or(defaults.service_reserve, |max| max / 8)
        });
        FairnessConfig {
            tenant_rate_per_second,
            tenant_burst: self
                .tenant_burst
                .or(self.tenant_rate_per_second)
                .unwrap_or(defaults.tenant_burst),
            tenant_concurrency: self
                .tenant_concurrency
                .unwrap_or(defaults.tenant_concurrency),
            tenant_queue: self.tenant_queue.unwrap_or(defaults.tenant_queue),
            max_in_flight,
            service_reserve,
            // Likewise, the public share follows the tenants' part it is cut
            // from, unless set.
            public_in_flight: self.public_in_flight.unwrap_or(
                if self.max_in_flight.is_some() || self.service_reserve.is_some() {
                    public_half(max_in_flight, service_reserve)
                } else {
                    defaults.public_in_flight
                },
            ),
        }
    }
}

/// One tenant's places.
#[derive(Debug)]
struct Gate {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Who a call is, for its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A user of this tenant (the verified token's).
    Tenant(TenantId),
    /// A service, with no user behind the call.
    Service,
    /// No identity at all: a public RPC (Login, Refresh, GetJwks).
    Public,
}

/// What an admitted call holds until its response.
#[derive(Debug)]
pub struct Admission {
    // Dropped in this order: the shared places first, the tenant's own last,
    // so the tenant's next call, woken by it, finds them free.
    _server: OwnedSemaphorePermit,
    _tenants_share: Option<OwnedSemaphorePermit>,
    _public_share: Option<OwnedSemaphorePermit>,
    _tenant: Option<OwnedSemaphorePermit>,
}

/// A public call's admission, taken once its message has come in full
/// ([`PendingAdmission::admit`], by the server's request-body layer) rather
/// than on its headers: a caller sending headers alone holds no place. The
/// places are held until the last clone of this is dropped (the guard keeps
/// one until the call's response).
#[derive(Debug, Clone)]
pub struct PendingAdmission {
    fairness: Fairness,
    held: Arc<Mutex<Option<Admission>>>,
}

impl PendingAdmission {
    /// A public call's admission by `fairness`, not taken yet.
    #[must_use]
    pub fn new(fairness: Fairness) -> Self {
        Self {
            fairness,
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// Takes the call's places now (its message has come).
    ///
    /// # Errors
    /// As [`Fairness::admit_now`].
    pub fn admit(&self) -> Result<(), GuardError> {
        let admission = self.fairness.admit_now(Who::Public)?;
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(admission);
        Ok(())
    }

    /// Whether the places were taken.
    #[must_use]
    pub fn admitted(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

/// The checks of one server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Fairness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FairnessConfig,
    rate: Option<DefaultKeyedRateLimiter<TenantId>>,
    gates: Mutex<HashMap<TenantId, Arc<Gate>>>,
    server: Arc<Semaphore>,
    /// The server's places tenants' calls may take (all but the reserve).
    tenants_share: Arc<Semaphore>,
    /// Of those, the places public RPCs may take.
    public_share: Arc<Semaphore>,
    calls: AtomicU64,
}

/// How often (in calls) idle tenants' state is dropped.
const PRUNE_EVERY: u64 = 4096;

/// The wait a refused call is told to take when nothing better is known:
/// 250 ms to 750 ms, at random.
fn retry_soon() -> Duration {
    Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 250..=750))
}

impl Fairness {
    /// Checks with `config`.
    #[must_use]
    pub fn new(config: FairnessConfig) -> Self {
        let rate = config.tenant_rate_per_second.map(|rate| {
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(config.tenant_burst))
        });
        Self {
            inner: Arc::new(Inner {
                server: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                tenants_share: Arc::new(Semaphore::new(config.tenants_part())),
                public_share: Arc::new(Semaphore::new(config.public_share())),
                config,
                rate,
                gates: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// The limits.
    #[must_use]
    pub fn config(&self) -> &FairnessConfig {
        &self.inner.config
    }

    /// Admits a call of `who`, waiting for one of its tenant's places when
    /// they are all taken. A service's call is only shed, and may take the
    /// reserve; a public RPC's (no identity: Login, Refresh) is only shed,
    /// takes no more than the public share, and never the reserve.
    ///
    /// # Errors
    /// [`GuardError::TenantBusy`] past the tenant's rate or queue,
    /// [`GuardError::Overloaded`] past the server's calls in flight.
    pub async fn admit(&self, who: Who) -> Result<Admission, GuardError> {
        let tenant_place = match who {
            Who::Tenant(tenant) => Some(self.tenant_place(tenant).await?),
            Who::Service | Who::Public => None,
        };
        self.shared_places(who, tenant_place)
    }

    /// Admits a call of a service or a public one (neither waits), now.
    ///
    /// # Errors
    /// [`GuardError::Overloaded`] past the server's calls in flight or the
    /// public share.
    pub fn admit_now(&self, who: Who) -> Result<Admission, GuardError> {
        debug_assert!(!matches!(who, Who::Tenant(_)), "a tenant's call may wait");
        self.shared_places(who, None)
    }

    /// The places `who` takes besides its tenant's own (`tenant_place`).
    fn shared_places(
        &self,
        who: Who,
        tenant_place: Option<OwnedSemaphorePermit>,
    ) -> Result<Admission, GuardError> {
        let inner = &self.inner;
        if inner.calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let shed = |reason: &'static str| {
            metrics::counter!("fairness_refused_total", "reason" => reason).increment(1);
            GuardError::Overloaded(retry_soon())
        };
        let public_share = match who {
            Who::Public => Some(
                Arc::clone(&inner.public_share)
                    .try_acquire_owned()
                    .map_err(|_| shed("public_share"))?,
            ),
            Who::Tenant(_) | Who::Service => None,
        };
        let tenants_share = match who {
            Who::Service => None,
            Who::Tenant(_) | Who::Public => Some(
                Arc::clone(&inner.tenants_share)
                    .try_acquire_owned()
                    .map_err(|_| shed("shed"))?,
            ),
        };
        let server = Arc::clone(&inner.server)
            .try_acquire_owned()
            .map_err(|_| shed("shed"))?;
        Ok(Admission {
            _tenant: tenant_place,
            _public_share: public_share,
            _tenants_share: tenants_share,
            _server: server,
        })
    }

    async fn tenant_place(&self, tenant: TenantId) -> Result<OwnedSemaphorePermit, GuardError> {
        let inner = &self.inner;
        if let Some(rate) = &inner.rate
            && let Err(wait) = rate_wait(rate, &tenant)
        {
            metrics::counter!("fairness_refused_total", "reason" => "tenant_rate").increment(1);
            return Err(GuardError::TenantBusy(wait.max(Duration::from_millis(1))));
        }
        let gate = {
            let mut gates = inner
                .gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(gates.entry(tenant).or_insert_with(|| {
                Arc::new(Gate {
                    places: Arc::new(Semaphore::new(inner.config.tenant_concurrency.max(1))),
                    waiting: AtomicUsize::new(0),
                })
            }))
        };
        if let Ok(place) = Arc::clone(&gate.places).try_acquire_owned() {
            return Ok(place);
        }
        if gate.waiting.fetch_add(1, Ordering::SeqCst) >= inner.config.tenant_queue {
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("fairness_refused_total", "reason" => "tenant_queue").increment(1);
            return Err(GuardError::TenantBusy(retry_soon()));
        }
        // Back in line when this call is dropped (its caller gone) too.
        let _waiting = Waiting(&gate.waiting);
        Arc::clone(&gate.places)
            .acquire_owned()
            .await
            .map_err(|_| GuardError::Overloaded(retry_soon()))
    }

    /// Drops the state of tenants with nothing in flight.
    fn prune(&self) {
        let mut gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = self.inner.config.tenant_concurrency.max(1);
        gates.retain(|_, gate| {
            Arc::strong_count(gate) > 1 || gate.places.available_permits() < full
        });
        if let Some(rate) = &self.inner.rate {
            rate.retain_recent();
        }
    }

    /// Calls of `tenant` waiting for one of its places (for tests).
    #[must_use]
    pub fn queued(&self, tenant: TenantId) -> usize {
        self.inner
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&tenant)
            .map_or(0, |gate| gate.waiting.load(Ordering::SeqCst))
    }

    /// Tenants with state kept (for tests).
    #[must_use]
    pub fn tenants_tracked(&self) -> usize {
        self.inner
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// Counts a call of `key` against `limiter`: `Err(wait)` when over its rate,
/// with how long until it would pass.
///
/// # Errors
/// The wait, when `key` is over its rate.
pub fn rate_wait<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Duration> {
    use governor::clock::{Clock as _, DefaultClock};
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: Option<u32>, concurrency: usize, queue: usize, max: usize) -> FairnessConfig {
        FairnessConfig {
            tenant_rate_per_second: rate.and_then(NonZeroU32::new),
            tenant_burst: NonZeroU32::new(rate.unwrap_or(1)).expect("burst"),
            tenant_concurrency: concurrency,
            tenant_queue: queue,
            max_in_flight: max,
            service_reserve: 0,
            public_in_flight: max,
        }
    }

    fn is_retry_soon(result: Result<Admission, GuardError>, busy: bool) -> bool {
        let wait = match result {
            Err(GuardError::TenantBusy(wait)) if busy => wait,
            Err(GuardError::Overloaded(wait)) if !busy => wait,
            _ => return false,
        };
        (Duration::from_millis(250)..=Duration::from_millis(750)).contains(&wait)
    }

    #[tokio::test]
    async fn public_calls_never_take_the_services_reserve() {
        let fairness = Fairness::new(FairnessConfig {
            service_reserve: 2,
            ..config(None, 1, 0, 6)
        });
        let mut held = Vec::new();
        // The tenants' part less one: the public share bounds.
        for _ in 0..3 {
            held.push(fairness.admit(Who::Public).await.expect("a share"));
        }
        assert!(is_retry_soon(fairness.admit(Who::Public).await, false));
        held.push(
            fairness
                .admit(Who::Tenant(TenantId::new_v7()))
                .await
                .expect("the tenants' last place"),
        );
        assert!(is_retry_soon(fairness.admit(Who::Public).await, false));
        held.push(fairness.admit(Who::Service).await.expect("the reserve"));
        held.push(fairness.admit(Who::Service).await.expect("the reserve"));
    }

    #[tokio::test]
    async fn an_anonymous_flood_leaves_the_tenants_the_rest_of_their_part() {
        let fairness = Fairness::new(FairnessConfig {
            public_in_flight: 3,
            ..config(None, 8, 0, 8)
        });
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(fairness.admit(Who::Public).await.expect("the public share"));
        }
        assert!(is_retry_soon(fairness.admit(Who::Public).await, false));
        // The five other places of the tenants' part are the tenants'.
        let tenant = TenantId::new_v7();
        for _ in 0..5 {
            held.push(fairness.admit(Who::Tenant(tenant)).await.expect("a place"));
        }
        assert!(is_retry_soon(
            fairness.admit(Who::Tenant(TenantId::new_v7())).await,
            false
        ));
        // A public call ended gives its place to the next one.
        drop(held.remove(0));
        held.push(fairness.admit(Who::Public).await.expect("room again"));
    }

    #[test]
    fn a_pending_admission_holds_its_places_from_its_admit_until_its_last_clone_goes() {
        let fairness = Fairness::new(FairnessConfig {
            public_in_flight: 1,
            ..config(None, 8, 0, 8)
        });
        let pending = PendingAdmission::new(fairness.clone());
        let kept = pending.clone();
        assert!(!kept.admitted());
        assert!(fairness.admit_now(Who::Public).is_ok(), "nothing held yet");
        pending.admit().expect("room");
        assert!(kept.admitted());
        assert!(matches!(
            fairness.admit_now(Who::Public),
            Err(GuardError::Overloaded(_))
        ));
        drop(pending);
        assert!(fairness.admit_now(Who::Public).is_err(), "a clone holds it");
        drop(kept);
        assert!(fairness.admit_now(Who::Public).is_ok(), "given back");
    }

    #[test]
    fn the_public_share_follows_the_tenants_part_unless_set() {
        let defaults = FairnessConfig::for_pool(16);
        assert_eq!(defaults.public_in_flight, (256 - 32) / 2);
        let smaller = FairnessOverrides {
            max_in_flight: Some(80),
            ..FairnessOverrides::default()
        }
        .over(defaults);
        assert_eq!(smaller.public_in_flight, (80 - 10) / 2);
        let set = FairnessOverrides {
            max_in_flight: Some(80),
            public_in_flight: Some(5),
            ..FairnessOverrides::default()
        }
        .over(defaults);
        assert_eq!(set.public_in_flight, 5);
    }

    #[test]
    fn a_maximum_set_alone_keeps_the_reserve_in_proportion() {
        let tuned = FairnessOverrides {
            max_in_flight: Some(20),
            ..FairnessOverrides::default()
        }
        .over(FairnessConfig::for_pool(16));
        assert_eq!((tuned.max_in_flight, tuned.service_reserve), (20, 2));
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let defaults = FairnessConfig::for_pool(16);
        assert_eq!(FairnessOverrides::default().over(defaults), defaults);
        let rate = NonZeroU32::new(50);
        let tuned = FairnessOverrides {
            tenant_rate_per_second: rate,
            max_in_flight: Some(64),
            ..FairnessOverrides::default()
        }
        .over(defaults);
        assert_eq!(
            tuned,
            FairnessConfig {
                tenant_rate_per_second: rate,
                tenant_burst: rate.expect("rate"),
                max_in_flight: 64,
                service_reserve: 8,
                public_in_flight: 28,
                ..defaults
            }
        );
    }

    #[tokio::test]
    async fn tenants_flooding_together_leave_the_reserve_to_services() {
        let fairness = Fairness::new(FairnessConfig {
            service_reserve: 2,
            ..config(None, 1, 0, 6)
        });
        // Four tenants hold the four places tenants may take…
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                fairness
                    .admit(Who::Tenant(TenantId::new_v7()))
                    .await
                    .expect("a tenant's place"),
            );
        }
        // …a fifth tenant is shed, services still pass, twice…
        assert!(is_retry_soon(
            fairness.admit(Who::Tenant(TenantId::new_v7())).await,
            false
        ));
        held.push(fairness.admit(Who::Service).await.expect("the reserve"));
        held.push(fairness.admit(Who::Service).await.expect("the reserve"));
        // …and past the whole server, services are shed too.
        assert!(is_retry_soon(fairness.admit(Who::Service).await, false));
    }

    #[tokio::test]
    async fn refusals_ask_for_jittered_waits() {
        let fairness = Fairness::new(config(None, 1, 0, 100));
        let tenant = TenantId::new_v7();
        let _held = fairness.admit(Who::Tenant(tenant)).await.expect("first");
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..50 {
            match fairness.admit(Who::Tenant(tenant)).await {
                Err(GuardError::TenantBusy(wait)) => {
                    assert!(
                        (Duration::from_millis(250)..=Duration::from_millis(750)).contains(&wait),
                        "{wait:?}"
                    );
                    waits.insert(wait);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(waits.len() > 10, "the waits vary: {waits:?}");
    }

    #[tokio::test]
    async fn a_tenant_waits_for_its_own_places_and_others_pass() {
        let fairness = Fairness::new(config(None, 2, 1, 100));
        let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
        let first = fairness.admit(Who::Tenant(a)).await.expect("first");
        let _second = fairness.admit(Who::Tenant(a)).await.expect("second");
        // The third of A waits; B passes at once meanwhile.
        let waiting = tokio::spawn({
            let fairness = fairness.clone();
            async move { fairness.admit(Who::Tenant(a)).await }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "A's third call waits for A's places"
        );
        let _b = fairness
            .admit(Who::Tenant(b))
            .await
            .expect("B is not held up");
        // A's queue holds one: a fourth is refused at once, with a wait.
        assert!(is_retry_soon(fairness.admit(Who::Tenant(a)).await, true));
        drop(first);
        waiting
            .await
            .expect("task")
            .expect("admitted once a place is free");
    }

    #[tokio::test]
    async fn the_rate_refuses_with_the_wait_and_the_server_sheds() {
        let fairness = Fairness::new(config(Some(5), 100, 100, 8));
        let tenant = TenantId::new_v7();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(
                fairness
                    .admit(Who::Tenant(tenant))
                    .await
                    .expect("within the burst"),
            );
        }
        match fairness.admit(Who::Tenant(tenant)).await {
            Err(GuardError::TenantBusy(wait)) => {
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_millis(200),
                    "{wait:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Service calls are not rated, only shed: 8 in flight on the server.
        for _ in 0..3 {
            held.push(fairness.admit(Who::Service).await.expect("room"));
        }
        assert!(is_retry_soon(fairness.admit(Who::Service).await, false));
        held.clear();
        fairness.admit(Who::Service).await.expect("room again");
    }

    #[tokio::test]
    async fn idle_tenants_are_forgotten() {
        let fairness = Fairness::new(config(None, 2, 2, 100));
        for _ in 0..PRUNE_EVERY {
            drop(
                fairness
                    .admit(Who::Tenant(TenantId::new_v7()))
                    .await
                    .expect("admitted"),
            );
        }
        assert!(
            fairness.tenants_tracked() < 10,
            "{}",
            fairness.tenants_tracked()
        );
    }
}

//! Requests as domain values (parse, don't validate): every bad field at once.

use bulkhead_context::TenantId;
use bulkhead_proto::audit::v1 as pb;
use bulkhead_rpc::{FieldViolations, InvalidRequest, paging};
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Most events in one append.
pub const MAX_BATCH: usize = 500;

/// Most bytes of an event's values (old, new, metadata, as JSON): exports and
/// verification read events in batches, and a batch must stay small.
pub const MAX_VALUES_BYTES: usize = 64 * 1024;

/// The actions each writer service may record (by prefix): a writer cannot put
/// words in another's mouth (a task token cannot record logins). Every writer
/// records the refusals of its own guard (`security.`).
fn may_record(source: &str, action: &str) -> bool {
    let prefixes: &[&str] = match source {
        "auth" => &["auth.", "security."],
        "tenant" => &["tenant.", "membership.", "settings.", "security."],
        // Tasks, compliance records and the catalog (services, their
        // requests and bookings).
        "task" => &[
            "task.",
            "compliance.",
            "service.",
            "service_request.",
            "booking.",
            "security.",
        ],
        _ => &[],
    };
    prefixes.iter().any(|p| action.starts_with(p))
}

/// An event to append, checked.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant: TenantId,
    pub actor_user_id: String,
    pub actor_service: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub metadata: Option<Value>,
    pub request_id: String,
    pub trace_id: String,
    /// Microseconds: what the database keeps, and so what the chain hashes.
    pub occur_time: DateTime<Utc>,
}

/// A `google.protobuf.Struct` as JSON; numbers must be integers.
fn struct_json(s: Option<&prost_types::Struct>) -> Result<Option<Value>, &'static str> {
    fn value(v: &prost_types::Value) -> Result<Value, &'static str> {
        use prost_types::value::Kind;
        Ok(match &v.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => Value::Bool(*b),
            Some(Kind::StringValue(s)) if s.contains('\0') => {
                return Err("must not contain NUL characters");
            }
            Some(Kind::StringValue(s)) => Value::String(s.clone()),
            Some(Kind::NumberValue(n)) => {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "checked integral and in range"
                )]
                let int = *n as i64;
                #[expect(clippy::cast_precision_loss, reason = "the round trip is the check")]
                let exact =
                    n.is_finite() && n.fract() == 0.0 && n.abs() < 9.0e15 && int as f64 == *n;
                if !exact {
                    return Err("numbers must be integers (the chain hashes no floating point)");
                }
                Value::from(int)
            }
            Some(Kind::StructValue(s)) => object(s)?,
            Some(Kind::ListValue(l)) => {
                Value::Array(l.values.iter().map(value).collect::<Result<_, _>>()?)
            }
        })
    }
    fn object(s: &prost_types::Struct) -> Result<Value, &'static str> {
        if s.fields.keys().any(|k| k.contains('\0')) {
            return Err("must not contain NUL characters");
        }
        Ok(Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), value(v)?)))
                .collect::<Result<_, &'static str>>()?,
        ))
    }
    s.map(object).transpose()
}

fn micros(t: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, &'static str> {
    let t = t.ok_or("must be set")?;
    let time = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .filter(|t| (0..=253_402_300_799).contains(&t.timestamp()))
        .ok_or("must be a valid time between 1970 and 9999")?;
    Ok(time
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(time))
}

fn bounded(text: &str, max: usize) -> Result<String, &'static str> {
    if text.chars().count() > max {
        Err("is too long")
    } else if text.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(text.to_owned())
    }
}

/// An AppendEvents batch.
#[derive(Debug)]
pub struct Append(pub Vec<NewEvent>);

impl Append {
    /// The batch of `source` (the writer service named by its token).
    ///
    /// # Errors
    /// Every bad field; an action the writer may not record is one.
    pub fn parse(r: &pb::AppendEventsRequest, source: &str) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        if r.events.is_empty() || r.events.len() > MAX_BATCH {
            v.add("events", format!("must hold 1 to {MAX_BATCH} events"));
        }
        let mut events = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.iter().enumerate() {
            let f = |name: &str| format!("events[{i}].{name}");
            let id = v.check(
                &f("id"),
                Uuid::try_parse(&e.id).map_err(|_| "must be a UUID"),
            );
            let tenant = v.check(
                &f("tenant_id"),
                Uuid::try_parse(&e.tenant_id)
                    .map(TenantId::from_uuid)
                    .map_err(|_| "must be a tenant id (UUID; the nil UUID for platform events)"),
            );
            let action = v.check(
                &f("action"),
                bounded(&e.action, 100).and_then(|a| {
                    if a.is_empty() {
                        Err("must be set")
                    } else if !may_record(source, &a) {
                        Err("is not an action this service records")
                    } else {
                        Ok(a)
                    }
                }),
            );
            let occur_time = v.check(&f("occur_time"), micros(e.occur_time.as_ref()));
            let old_value = v.check(&f("old_value"), struct_json(e.old_value.as_ref()));
            let new_value = v.check(&f("new_value"), struct_json(e.new_value.as_ref()));
            let metadata = v.check(&f("metadata"), struct_json(e.metadata.as_ref()));
            let values_bytes: usize = [&old_value, &new_value, &metadata]
                .iter()
                .filter_map(|v| v.as_ref().and_then(Option::as_ref))
                .map(|v| v.to_string().len())
                .sum();
            if values_bytes > MAX_VALUES_BYTES {
                v.add(
                    &f("new_value"),
                    format!("the event's values must stay under {MAX_VALUES_BYTES} bytes"),
                );
            }
            let texts = [
                ("actor_user_id", &e.actor_user_id, 64),
                ("actor_service", &e.actor_service, 64),
                ("resource_type", &e.resource_type, 100),
                ("resource_id", &e.resource_id, 200),
                ("request_id", &e.request_id, 128),
                ("trace_id", &e.trace_id, 64),
                ("traceparent", &e.traceparent, 64),
            ]
            .map(|(name, text, max)| v.check(&f(name), bounded(text, max)));
            if let (
                Some(id),
                Some(tenant),
                Some(action),
                Some(occur_time),
                Some(old_value),
                Some(new_value),
                Some(metadata),
                [
                    Some(actor_user_id),
                    Some(actor_service),
                    Some(resource_type),
                    Some(resource_id),
                    Some(request_id),
                    Some(trace_id),
                    // Checked for its length only: it shapes a span, not the
                    // record.
                    Some(_traceparent),
                ],
            ) = (
                id, tenant, action, occur_time, old_value, new_value, metadata, texts,
            ) {
                events.push(NewEvent {
                    id,
                    tenant,
                    actor_user_id,
                    actor_service,
                    action,
                    resource_type,
                    resource_id,
                    old_value,
                    new_value,
                    metadata,
                    request_id,
                    trace_id,
                    occur_time,
                });
            }
        }
        v.finish()?;
        Ok(Self(events))
    }
}

/// Which events of the caller's tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor_user_id: Option<String>,
}

impl Filter {
    fn parse(f: Option<&pb::AuditEventFilter>, v: &mut FieldViolations) -> Option<Self> {
        let Some(f) = f else {
            return Some(Self::default());
        };
        let time =
            |t: Option<&prost_types::Timestamp>, field: &str, v: &mut FieldViolations| match t {
                None => Some(None),
                Some(_) => v.check(field, micros(t)).map(Some),
            };
        let start = time(f.start_time.as_ref(), "filter.start_time", v);
        let end = time(f.end_time.as_ref(), "filter.end_time", v);
        let mut text = |s: &str, field: &str| {
            if s.is_empty() {
                Some(None)
            } else {
                v.check(field, bounded(s, 200)).map(Some)
            }
        };
        let action = text(&f.action, "filter.action");
        let resource_type = text(&f.resource_type, "filter.resource_type");
        let resource_id = text(&f.resource_id, "filter.resource_id");
        let actor_user_id = text(&f.actor_user_id, "filter.actor_user_id");
        Some(Self {
            start: start?,
            end: end?,
            action: action?,
            resource_type: resource_type?,
            resource_id: resource_id?,
            actor_user_id: actor_user_id?,
        })
    }

    /// The page-token kind of this filter in `tenant` (a digest of the filter:
    /// stable across processes and releases).
    fn kind(&self, tenant: TenantId) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{self:?}").as_bytes());
        let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("events/{tenant}/{short}")
    }
}

/// A page of events, newest first: by the time they happened, then by
/// sequence (what the indexes of every filter end with, so a page of a wide
/// time range costs what a page of a narrow one does).
#[derive(Debug)]
pub struct Query {
    pub filter: Filter,
    pub size: i64,
    /// The (occur_time, sequence) before which the page starts.
    pub before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    kind: String,
}

/// A page position: the last event's occur_time (Unix microseconds) and
/// sequence.
fn position(text: &str) -> Option<(chrono::DateTime<chrono::Utc>, i64)> {
    use chrono::Datelike as _;
    let (micros, sequence) = text.split_once('.')?;
    let time = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    // Times the database keeps (a crafted token is refused, not an error).
    (1..=9999)
        .contains(&time.year())
        .then_some((time, sequence.parse().ok()?))
}

impl Query {
    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant or filter is one.
    pub fn parse(r: &pb::QueryEventsRequest, tenant: TenantId) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let filter = Filter::parse(r.filter.as_ref(), &mut v);
        let size = match r.page_size {
            0 => Some(100),
            n @ 1..=1000 => Some(i64::from(n)),
            _ => {
                v.add("page_size", "must be 1 to 1000 (0: 100)");
                None
            }
        };
        let kind = filter.as_ref().map(|f| f.kind(tenant));
        let before = kind.as_ref().and_then(|kind| {
            v.check(
                "page_token",
                paging::decode(kind, &r.page_token).and_then(|c| {
                    c.map(|t| position(&t).ok_or("is not a page token of this list"))
                        .transpose()
                }),
            )
        });
        v.build(|| {
            Some(Self {
                filter: filter?,
                size: size?,
                before: before?,
                kind: kind?,
            })
        })
    }

    /// The token of the page after the one ending at the event that
    /// happened at `occur_time` with `sequence`.
    #[must_use]
    pub fn next_token(&self, occur_time: chrono::DateTime<chrono::Utc>, sequence: i64) -> String {
        paging::encode(
            &self.kind,
            &format!("{}.{sequence}", occur_time.timestamp_micros()),
        )
    }
}

/// An export's filter.
///
/// # Errors
/// Every bad field.
pub fn export_filter(r: &pb::ExportEventsRequest) -> Result<Filter, InvalidRequest> {
    let mut v = FieldViolations::new();
    let filter = Filter::parse(r.filter.as_ref(), &mut v);
    v.build(|| filter)
}

//! Running one RPC's request checks alone, on raw bytes: what the property
//! tests and the fuzz targets drive every service's validation through.
//!
//! Each service exposes `check_request(path, body)`: it decodes `body` as
//! the request message of the RPC at `path` and runs exactly the conversion
//! its handler runs before touching any state (the `TryFrom<&pb::…>` or
//! `parse`). [`check`] is that decode-then-convert step.

use tonic::Status;

/// Decodes `body` as `M` and runs `parse` on it: `Ok` when the handler would
/// go on, the status it would answer otherwise (a body that does not decode
/// is `INVALID_ARGUMENT` here; tonic answers such a call before any handler).
///
/// # Errors
/// The status of the first failure, as the handler would answer it.
pub fn check<M, T, E>(body: &[u8], parse: impl FnOnce(&M) -> Result<T, E>) -> Result<(), Status>
where
    M: prost::Message + Default,
    E: Into<Status>,
{
    let message = M::decode(body).map_err(|e| Status::invalid_argument(e.to_string()))?;
    parse(&message).map(drop).map_err(Into::into)
}

/// An RPC whose request has nothing to check before state (its fields are
/// read by the handler against stored data, or it has none): only decoding.
///
/// # Errors
/// `INVALID_ARGUMENT` when `body` does not decode as `M`.
pub fn decodes<M: prost::Message + Default>(body: &[u8]) -> Result<(), Status> {
    check::<M, (), Status>(body, |_| Ok(()))
}

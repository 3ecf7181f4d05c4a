//! Conversions between wire values and domain values, each failure naming its field.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub fn uuid(field: &str, raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid(field, "must be a UUID"))
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn time(field: &str, t: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    let nanos =
        u32::try_from(t.nanos).map_err(|_| Error::invalid(field, "negative nanoseconds"))?;
    DateTime::from_timestamp(t.seconds, nanos).ok_or_else(|| Error::invalid(field, "out of range"))
}

pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

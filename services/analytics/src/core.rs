//! The analytics core: counting events ([`Counter`], the consumer group's handler) and the
//! contract's behaviour ([`AnalyticsCore`]). Who may call each method was checked by the
//! runtime before any of this runs (see the .proto's access rules: `analytics.stats.read`);
//! what is left here is validation.

use crate::{config::AnalyticsConfig, store::CountStore};
use analytics_contract::{AnalyticsServiceClient, pb};
use async_trait::async_trait;
use chrono::{Days, NaiveDate, Utc};
use plt_contracts::{Error, RequestContext, Result};
use plt_events::{Event, HandlerError, Received};
use std::{collections::BTreeMap, sync::Arc};

/// Days of a time series when `from` is left empty (`to` and the 29 days before it).
pub const DEFAULT_DAYS: u64 = 30;

/// The consumer group's handler: counts each event once, on its day (UTC).
pub struct Counter {
    store: Arc<dyn CountStore>,
}

impl Counter {
    pub fn new(store: Arc<dyn CountStore>) -> Self {
        Self { store }
    }

    /// The inbox key of `event`: CloudEvents ids are unique per source.
    pub fn inbox_key(event: &Event) -> String {
        format!("{} {}", event.source, event.id)
    }
}

#[async_trait]
impl plt_events::Handler for Counter {
    async fn handle(&self, event: &Event, _: &Received) -> std::result::Result<(), HandlerError> {
        // The day is the event's own (when it happened), not when it arrived: a late or
        // replayed event counts on its day, however old.
        let day = event.time.date_naive();
        match self
            .store
            .record(&Self::inbox_key(event), day, &event.event_type)
            .await
        {
            Ok(counted) => {
                if !counted {
                    tracing::debug!(id = %event.id, r#type = %event.event_type, "event counted before; skipped");
                }
                Ok(())
            }
            // Nothing was written (one transaction): retried, then dead-lettered.
            Err(e) => Err(HandlerError::Retry(format!("counting the event: {e}"))),
        }
    }
}

pub struct AnalyticsCore {
    store: Arc<dyn CountStore>,
    cfg: AnalyticsConfig,
}

impl AnalyticsCore {
    pub fn new(store: Arc<dyn CountStore>, cfg: AnalyticsConfig) -> Self {
        Self { store, cfg }
    }

    /// The (metric, event type) a time series request asks for.
    fn target(&self, metric: &str, event_type: &str) -> Result<(String, String)> {
        match (metric.is_empty(), event_type.is_empty()) {
            (true, true) => Err(Error::invalid(
                "metric",
                "name a metric (or an event_type) to count",
            )),
            (false, false) => Err(Error::invalid(
                "event_type",
                "give either metric or event_type, not both",
            )),
            (false, true) => match self.cfg.type_of(metric) {
                Some(t) => Ok((metric.to_owned(), t.to_owned())),
                None => Err(Error::invalid(
                    "metric",
                    format!("unknown metric; one of: {}", self.metric_names()),
                )),
            },
            (true, false) => {
                if !crate::config::valid_event_type(event_type) {
                    return Err(Error::invalid(
                        "event_type",
                        "must be an event type (letters, digits, '.', '_', '-'; at most 249)",
                    ));
                }
                let metric = self.cfg.metric_of(event_type).unwrap_or_default();
                Ok((metric.to_owned(), event_type.to_owned()))
            }
        }
    }

    fn metric_names(&self) -> String {
        self.cfg
            .events
            .iter()
            .map(|e| e.metric.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A day `YYYY-MM-DD` of field `field`; `None` when empty.
fn parse_day(field: &str, v: &str) -> Result<Option<NaiveDate>> {
    if v.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Error::invalid(field, "must be a date, YYYY-MM-DD"))
}

fn day_str(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn check_order(from: NaiveDate, to: NaiveDate) -> Result<()> {
    if from > to {
        return Err(Error::invalid("from", "must not be after to"));
    }
    Ok(())
}

#[async_trait]
impl AnalyticsServiceClient for AnalyticsCore {
    async fn get_time_series(
        &self,
        _ctx: &RequestContext,
        req: pb::GetTimeSeriesRequest,
    ) -> Result<pb::TimeSeries> {
        let (metric, event_type) = self.target(&req.metric, &req.event_type)?;
        let to = parse_day("to", &req.to)?.unwrap_or_else(|| Utc::now().date_naive());
        let from = match parse_day("from", &req.from)? {
            Some(d) => d,
            None => to
                .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
                .unwrap_or(NaiveDate::MIN),
        };
        check_order(from, to)?;
        let days = (to - from).num_days() + 1;
        if days > i64::from(self.cfg.max_range_days) {
            return Err(Error::invalid(
                "to",
                format!(
                    "the range from..to spans {days} days; at most {} may be asked at once",
                    self.cfg.max_range_days
                ),
            ));
        }
        let counted: BTreeMap<NaiveDate, i64> = self
            .store
            .series(&event_type, from, to)
            .await?
            .into_iter()
            .collect();
        // One point per day, zero where nothing happened.
        let points: Vec<pb::Point> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| pb::Point {
                day: day_str(d),
                count: counted.get(&d).copied().unwrap_or(0),
            })
            .collect();
        Ok(pb::TimeSeries {
            metric,
            event_type,
            from: day_str(from),
            to: day_str(to),
            total: points.iter().map(|p| p.count).sum(),
            points,
        })
    }

    async fn get_totals(
        &self,
        _ctx: &RequestContext,
        req: pb::GetTotalsRequest,
    ) -> Result<pb::Totals> {
        let from = parse_day("from", &req.from)?;
        let to = parse_day("to", &req.to)?;
        if let (Some(f), Some(t)) = (from, to) {
            check_order(f, t)?;
        }
        let mut counted: BTreeMap<String, i64> =
            self.store.totals(from, to).await?.into_iter().collect();
        // The configured metrics first, in their order, then whatever else was counted (a
        // type counted before the list changed).
        let mut totals: Vec<pb::Total> = self
            .cfg
            .events
            .iter()
            .map(|e| pb::Total {
                metric: e.metric.clone(),
                event_type: e.event_type.clone(),
                count: counted.remove(&e.event_type).unwrap_or(0),
            })
            .collect();
        totals.extend(counted.into_iter().map(|(event_type, count)| pb::Total {
            metric: String::new(),
            event_type,
            count,
        }));
        Ok(pb::Totals {
            from: from.map(day_str).unwrap_or_default(),
            to: to.map(day_str).unwrap_or_default(),
            totals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_parsed_strictly_and_name_their_field() {
        assert_eq!(
            parse_day("from", "2026-12-01").ok().flatten(),
            NaiveDate::from_ymd_opt(2026, 12, 1)
        );
        assert_eq!(parse_day("from", "").ok().flatten(), None);
        for bad in ["2026-13-01", "01.12.2026", "2026-12-01T00:00:00Z", "x"] {
            let err = parse_day("to", bad).expect_err(bad);
            assert_eq!(err.violations[0].field, "to", "{bad}");
        }
    }
}

//! The billing core: the contract's behaviour, and the invoice job. Who may call each method
//! was checked by the runtime before any of this runs (see the .proto's access rules); what
//! is left here is ownership, validation, the billing rules and idempotency.

use crate::{
    config::BillingConfig,
    store::{
        BillingStore, InvoiceRecord, Issue, Issued, PlanRecord, SubscriptionRecord, UsageRow, Write,
    },
};
use async_trait::async_trait;
use billing_contract::{BillingServiceClient, events, pb};
use chrono::{DateTime, Months, SecondsFormat, SubsecRound, Utc};
use plt_contracts::{Error, ErrorCode, RequestContext, Result, access::Principal, audit::Outcome};
use plt_idempotency::{Claim, Completion, Idempotency, fingerprint};
use plt_outbox::{Message, audit::AuditEvent};
use plt_scheduler::Run;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{collections::BTreeMap, future::Future, sync::Arc};
use uuid::Uuid;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SLUG_CHARS: usize = 64;
/// The largest price or unit price (10^12 minor units), so that sums stay far from overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// The largest quantity of one usage record.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
pub const MAX_METERED_PRICES: usize = 50;
const DEFAULT_PAGE_SIZE: u32 = 50;
/// How often a change retries after a concurrent change of the same subscription.
const CHANGE_ATTEMPTS: usize = 3;

/// One line of an invoice (or a pending proration item), as stored (JSON) and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: String,
    pub description: String,
    pub quantity: i64,
    pub unit_amount_minor: i64,
    pub amount_minor: i64,
}

/// A plan's price per unit of a usage metric, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metered {
    pub metric: String,
    pub unit_price_minor: i64,
}

/// `price_minor × remaining ÷ total`, rounded to the nearest minor unit, halves up
/// (`remaining` clamped to `0..=total`, both in microseconds). Never more than the price.
pub fn prorate(price_minor: i64, remaining_us: i64, total_us: i64) -> i64 {
    if total_us <= 0 || price_minor <= 0 {
        return 0;
    }
    let r = i128::from(remaining_us.clamp(0, total_us));
    let (p, t) = (i128::from(price_minor), i128::from(total_us));
    i64::try_from((2 * p * r + t) / (2 * t)).unwrap_or(price_minor)
}

/// The proration of a move from `old` to `new` at `at` within the period `[start, end)`:
/// a credit of the old price's unused part (negative) and a charge of the new price's
/// remaining part, each [`prorate`]d on its own.
pub fn proration(
    old: &PlanRecord,
    new: &PlanRecord,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Vec<Item> {
    let total = (end - start).num_microseconds().unwrap_or(i64::MAX);
    let remaining = (end - at).num_microseconds().unwrap_or(0);
    let credit = prorate(old.price_minor, remaining, total);
    let charge = prorate(new.price_minor, remaining, total);
    let span = format!("{} to {}", ts(at), ts(end));
    vec![
        Item {
            kind: "proration_credit".into(),
            description: format!("Unused time on {} ({span})", old.name),
            quantity: 1,
            unit_amount_minor: -credit,
            amount_minor: -credit,
        },
        Item {
            kind: "proration_charge".into(),
            description: format!("Remaining time on {} ({span})", new.name),
            quantity: 1,
            unit_amount_minor: charge,
            amount_minor: charge,
        },
    ]
}

/// The end of a period that starts at `start`: one calendar month later (the day clamped to
/// the month's last: Jan 31 → Feb 28/29).
pub fn period_end(start: DateTime<Utc>) -> Result<DateTime<Utc>> {
    start
        .checked_add_months(Months::new(1))
        .ok_or_else(|| Error::invalid("period_start", "is out of range"))
}

/// The end of a period under `billing.period`: the calendar month, or a fixed length (to try
/// billing out without waiting a month).
pub fn period_end_for(
    start: DateTime<Utc>,
    fixed: Option<std::time::Duration>,
) -> Result<DateTime<Utc>> {
    match fixed {
        None => period_end(start),
        Some(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| start.checked_add_signed(d))
            .ok_or_else(|| Error::invalid("period_start", "is out of range")),
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn caller(ctx: &RequestContext) -> Result<Uuid> {
    ctx.user_id()
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| Error::unauthenticated("sign in first"))
}

/// Who did it, for audit records: the admitted user or service.
fn actor(ctx: &RequestContext) -> String {
    match &ctx.principal {
        Some(Principal::User(id)) | Some(Principal::Service(id)) => id.clone(),
        None => "anonymous".to_owned(),
    }
}

fn parse_id(field: &str, v: &str) -> Result<Uuid> {
    Uuid::parse_str(v).map_err(|_| Error::invalid(field, "must be a UUID"))
}

fn check_slug(field: &str, v: &str, extra: &[char]) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= MAX_SLUG_CHARS
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c));
    if !ok {
        return Err(Error::invalid(
            field,
            format!(
                "must be 1 to {MAX_SLUG_CHARS} characters of a-z, 0-9 and {}",
                extra
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_currency(v: &str) -> Result<()> {
    if v.len() != 3 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "currency",
            "must be an ISO 4217 code: three upper-case letters",
        ));
    }
    Ok(())
}

fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::internal(what, &e))
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(what, &e))
}

fn items_pb(items: &[Item]) -> Vec<pb::LineItem> {
    items
        .iter()
        .map(|i| pb::LineItem {
            kind: i.kind.clone(),
            description: i.description.clone(),
            quantity: i.quantity,
            unit_amount_minor: i.unit_amount_minor,
            amount_minor: i.amount_minor,
        })
        .collect()
}

pub fn plan_pb(p: &PlanRecord) -> Result<pb::Plan> {
    let metered: Vec<Metered> = from_json("a plan's metered prices", &p.metered_json)?;
    Ok(pb::Plan {
        id: p.id.to_string(),
        code: p.code.clone(),
        name: p.name.clone(),
        price_minor: p.price_minor,
        currency: p.currency.clone(),
        interval: p.period_unit.clone(),
        active: p.active,
        metered_prices: metered
            .into_iter()
            .map(|m| pb::MeteredPrice {
                metric: m.metric,
                unit_price_minor: m.unit_price_minor,
            })
            .collect(),
        created_at: ts(p.created_at),
    })
}

pub fn subscription_pb(s: &SubscriptionRecord) -> Result<pb::Subscription> {
    let pending: Vec<Item> = from_json("a subscription's pending items", &s.pending_json)?;
    Ok(pb::Subscription {
        id: s.id.to_string(),
        user_id: s.user_id.to_string(),
        plan_id: s.plan_id.to_string(),
        status: s.status.clone(),
        period_start: ts(s.period_start),
        period_end: ts(s.period_end),
        cancel_at_period_end: s.cancel_at_period_end,
        pending_items: items_pb(&pending),
        currency: s.currency.clone(),
        created_at: ts(s.created_at),
        updated_at: ts(s.updated_at),
    })
}

pub fn invoice_pb(i: &InvoiceRecord) -> Result<pb::Invoice> {
    let items: Vec<Item> = from_json("an invoice's items", &i.items_json)?;
    Ok(pb::Invoice {
        id: i.id.to_string(),
        user_id: i.user_id.to_string(),
        subscription_id: i.subscription_id.to_string(),
        period_start: ts(i.period_start),
        period_end: ts(i.period_end),
        currency: i.currency.clone(),
        items: items_pb(&items),
        total_minor: i.total_minor,
        status: i.status.clone(),
        issued_at: ts(i.issued_at),
        paid_at: i.paid_at.map(ts).unwrap_or_default(),
        voided_at: i.voided_at.map(ts).unwrap_or_default(),
    })
}

fn usage_pb(u: &UsageRow) -> pb::UsageRecord {
    pb::UsageRecord {
        id: u.id.to_string(),
        subscription_id: u.subscription_id.to_string(),
        metric: u.metric.clone(),
        quantity: u.quantity,
        recorded_at: ts(u.recorded_at),
    }
}

fn changed_meanwhile() -> Error {
    Error::unavailable("the subscription changed meanwhile; try again")
}

/// The answer to commit with the change, for a request with an idempotency key.
fn completion<T: Serialize>(claim: &Option<Claim>, answer: &T) -> Result<Option<Completion>> {
    claim.as_ref().map(|c| c.completion(answer)).transpose()
}

pub struct BillingCore {
    store: Arc<dyn BillingStore>,
    cfg: BillingConfig,
    idem: Idempotency,
    events: plt_events::Publisher,
}

impl BillingCore {
    /// `idem`: the service's idempotency keys; `events`: its publisher (disabled without a
    /// bus).
    pub fn new(
        store: Arc<dyn BillingStore>,
        cfg: BillingConfig,
        idem: Idempotency,
        events: plt_events::Publisher,
    ) -> Self {
        Self {
            store,
            cfg,
            idem,
            events,
        }
    }

    /// The store (tests, tools).
    pub fn store(&self) -> &Arc<dyn BillingStore> {
        &self.store
    }

    /// Runs `effect` once per idempotency key of the caller for `method` (no key: once).
    async fn once<T, M, F, Fut>(
        &self,
        ctx: &RequestContext,
        method: &str,
        req: &M,
        effect: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        M: prost::Message,
        F: FnOnce(Option<Claim>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let scope = Idempotency::scope(ctx, method);
        let fp = fingerprint(&req.encode_to_vec());
        self.idem
            .run(&scope, ctx.idempotency_key.as_deref(), &fp, effect)
            .await
    }

    fn audit(&self, ctx: &RequestContext, action: &str, resource: String) -> AuditEvent {
        AuditEvent::new(actor(ctx), action, resource, Outcome::Success)
            .request(ctx, ctx.peer.map(|p| p.ip()))
    }

    fn subscription_event(
        &self,
        change: &str,
        sub: &pb::Subscription,
        previous_plan_id: Option<String>,
    ) -> Vec<Message> {
        self.events.message(
            events::SUBSCRIPTION_CHANGED,
            &format!("subscription/{}", sub.id),
            &sub.id,
            events::SubscriptionChanged {
                change: change.to_owned(),
                subscription: sub.clone(),
                previous_plan_id,
            },
        )
    }

    async fn plan(&self, field: &str, id: &str) -> Result<PlanRecord> {
        let id = parse_id(field, id)?;
        self.store
            .get_plan(id)
            .await?
            .ok_or_else(|| Error::not_found("plan").with_violation(field, "no such plan"))
    }

    async fn active(&self, user: Uuid) -> Result<SubscriptionRecord> {
        self.store
            .active_subscription(user)
            .await?
            .ok_or_else(|| Error::not_found("active subscription"))
    }

    async fn page(
        &self,
        user: Uuid,
        page_size: u32,
        token: &str,
    ) -> Result<pb::ListInvoicesResponse> {
        if page_size > self.cfg.max_page_size {
            return Err(Error::invalid(
                "page_size",
                format!("must be at most {}", self.cfg.max_page_size),
            ));
        }
        let size = if page_size == 0 {
            DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size)
        } else {
            page_size
        };
        let before = if token.is_empty() {
            None
        } else {
            Some(Uuid::parse_str(token).map_err(|_| {
                Error::invalid("page_token", "is not a page token from this service")
            })?)
        };
        let mut rows = self.store.list_invoices(user, before, size + 1).await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        Ok(pb::ListInvoicesResponse {
            next_page_token: if more {
                rows.last().map(|n| n.id.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
            invoices: rows.iter().map(invoice_pb).collect::<Result<_>>()?,
        })
    }

    /// Changes the caller's active subscription with `change` (retried on a concurrent
    /// change): `change` gets the subscription and returns it changed (None: nothing to do,
    /// answer it as it is) with the change's name for the audit record and event.
    async fn change_subscription<F>(
        &self,
        ctx: &RequestContext,
        claim: &Option<Claim>,
        change: F,
    ) -> Result<pb::Subscription>
    where
        F: Fn(&SubscriptionRecord) -> Result<Option<Changed>> + Send + Sync,
    {
        let user = caller(ctx)?;
        for _ in 0..CHANGE_ATTEMPTS {
            let current = self.active(user).await?;
            let Some(c) = change(&current)? else {
                return subscription_pb(&current);
            };
            let mut next = c.next;
            next.version = current.version + 1;
            next.updated_at = now();
            let answer = subscription_pb(&next)?;
            let mut messages = vec![
                self.audit(ctx, c.action, format!("subscription/{}", next.id))
                    .meta("plan_id", next.plan_id.to_string())
                    .message(),
            ];
            messages.extend(self.subscription_event(c.event, &answer, c.previous_plan_id));
            let done = completion(claim, &answer)?;
            let w = Write {
                messages: &messages,
                done: done.as_ref(),
            };
            if self
                .store
                .update_subscription(&next, current.version, w)
                .await?
            {
                return Ok(answer);
            }
        }
        Err(changed_meanwhile())
    }

    /// Issues the invoices of every active subscription whose period ended by `now` (at
    /// most `invoice_batch`; the next run takes the rest), each in one transaction fenced by
    /// `run` (the scheduler's occurrence) when given; the number issued. Skips (and leaves
    /// to the next run) a subscription that changed while it was billed; a period already
    /// invoiced is never invoiced again (unique `(subscription, period_start)`).
    pub async fn issue_due(&self, now: DateTime<Utc>, run: Option<&Run>) -> Result<u32> {
        let due = self
            .store
            .due_subscriptions(now, self.cfg.invoice_batch)
            .await?;
        let mut issued = 0;
        for sub in due {
            match self.issue_one(&sub, now, run).await? {
                Issued::Issued => issued += 1,
                Issued::Skipped => {}
                Issued::LostFence => {
                    return Err(Error::unavailable(
                        "the invoice job's occurrence was taken over by another instance",
                    ));
                }
            }
        }
        Ok(issued)
    }

    async fn issue_one(
        &self,
        sub: &SubscriptionRecord,
        now: DateTime<Utc>,
        run: Option<&Run>,
    ) -> Result<Issued> {
        let period_plan = self
            .store
            .get_plan(sub.period_plan_id)
            .await?
            .ok_or_else(|| Error::not_found("the period's plan"))?;
        let plan = if sub.plan_id == sub.period_plan_id {
            period_plan.clone()
        } else {
            self.store
                .get_plan(sub.plan_id)
                .await?
                .ok_or_else(|| Error::not_found("the subscription's plan"))?
        };
        let usage = self.store.open_usage(sub.id).await?;
        let mut items = vec![Item {
            kind: "plan".into(),
            description: format!(
                "{} ({} to {})",
                period_plan.name,
                ts(sub.period_start),
                ts(sub.period_end)
            ),
            quantity: 1,
            unit_amount_minor: period_plan.price_minor,
            amount_minor: period_plan.price_minor,
        }];
        items.extend(from_json::<Vec<Item>>(
            "a subscription's pending items",
            &sub.pending_json,
        )?);
        let metered: Vec<Metered> = from_json("a plan's metered prices", &plan.metered_json)?;
        let mut per_metric: BTreeMap<&str, i64> = BTreeMap::new();
        for u in &usage {
            let q = per_metric.entry(&u.metric).or_default();
            *q = q.saturating_add(u.quantity);
        }
        let overflow = || Error::new(ErrorCode::Internal, "an invoice amount overflows");
        for (metric, quantity) in per_metric {
            let unit = metered
                .iter()
                .find(|m| m.metric == metric)
                .map_or(0, |m| m.unit_price_minor);
            items.push(Item {
                kind: "usage".into(),
                description: format!("Usage: {metric}"),
                quantity,
                unit_amount_minor: unit,
                amount_minor: quantity.checked_mul(unit).ok_or_else(overflow)?,
            });
        }
        let total = items
            .iter()
            .try_fold(0i64, |acc, i| acc.checked_add(i.amount_minor))
            .ok_or_else(overflow)?;
        let invoice = InvoiceRecord {
            id: Uuid::now_v7(),
            user_id: sub.user_id,
            subscription_id: sub.id,
            period_start: sub.period_start,
            period_end: sub.period_end,
            currency: sub.currency.clone(),
            items_json: to_json("an invoice's items", &items)?,
            total_minor: total,
            status: "open".into(),
            issued_at: now,
            paid_at: None,
            voided_at: None,
        };
        let mut next = sub.clone();
        next.version = sub.version + 1;
        next.updated_at = now;
        next.pending_json = "[]".into();
        let ends = sub.cancel_at_period_end;
        if ends {
            next.status = "ended".into();
        } else {
            next.period_start = sub.period_end;
            next.period_end = period_end_for(sub.period_end, self.cfg.period.fixed())?;
            next.period_plan_id = sub.plan_id;
        }
        let invoice_msg = invoice_pb(&invoice)?;
        let resource = format!("invoice/{}", invoice.id);
        let mut messages = vec![
            AuditEvent::new(
                "billing",
                "billing.invoice.issue",
                resource,
                Outcome::Success,
            )
            .meta("subscription_id", sub.id.to_string())
            .meta("user_id", sub.user_id.to_string())
            .meta("period_start", ts(sub.period_start))
            .meta("total_minor", total)
            .meta("currency", sub.currency.clone())
            .message(),
        ];
        messages.extend(self.events.message(
            events::INVOICE_ISSUED,
            &format!("invoice/{}", invoice.id),
            &sub.id.to_string(),
            events::InvoiceIssued {
                invoice: invoice_msg,
            },
        ));
        if ends {
            messages.push(
                AuditEvent::new(
                    "billing",
                    "billing.subscription.end",
                    format!("subscription/{}", sub.id),
                    Outcome::Success,
                )
                .meta("user_id", sub.user_id.to_string())
                .message(),
            );
            messages.extend(self.subscription_event("ended", &subscription_pb(&next)?, None));
        }
        let usage_ids: Vec<Uuid> = usage.iter().map(|u| u.id).collect();
        self.store
            .issue(
                &Issue {
                    invoice: &invoice,
                    next: &next,
                    expected_version: sub.version,
                    usage_ids: &usage_ids,
                    messages: &messages,
                },
                run,
            )
            .await
    }

    async fn settle(
        &self,
        ctx: &RequestContext,
        claim: &Option<Claim>,
        id: &str,
        status: &str,
        action: &str,
    ) -> Result<pb::Invoice> {
        let id = parse_id("id", id)?;
        let Some(mut inv) = self.store.get_invoice(id).await? else {
            return Err(Error::not_found("invoice"));
        };
        if inv.status != "open" {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "the invoice is {}; only an open invoice can be marked {status}",
                    inv.status
                ),
            )
            .with_violation("id", format!("is {}", inv.status)));
        }
        let at = now();
        inv.status = status.to_owned();
        if status == "paid" {
            inv.paid_at = Some(at);
        } else {
            inv.voided_at = Some(at);
        }
        let answer = invoice_pb(&inv)?;
        let messages = [self
            .audit(ctx, action, format!("invoice/{id}"))
            .meta("user_id", inv.user_id.to_string())
            .meta("total_minor", inv.total_minor)
            .message()];
        let done = completion(claim, &answer)?;
        let w = Write {
            messages: &messages,
            done: done.as_ref(),
        };
        if self.store.settle_invoice(id, status, at, w).await? {
            return Ok(answer);
        }
        // Settled meanwhile by another request.
        let now_status = self
            .store
            .get_invoice(id)
            .await?
            .map(|i| i.status)
            .unwrap_or_default();
        Err(Error::new(
            ErrorCode::FailedPrecondition,
            format!("the invoice is {now_status}; only an open invoice can be marked {status}"),
        )
        .with_violation("id", format!("is {now_status}")))
    }
}

/// A change of a subscription: its new state and what to call it.
struct Changed {
    next: SubscriptionRecord,
    /// Audit action.
    action: &'static str,
    /// Event `change`.
    event: &'static str,
    previous_plan_id: Option<String>,
}

#[async_trait]
impl BillingServiceClient for BillingCore {
    async fn create_plan(
        &self,
        ctx: &RequestContext,
        req: pb::CreatePlanRequest,
    ) -> Result<pb::Plan> {
        self.once(ctx, "CreatePlan", &req.clone(), |claim| async move {
            check_slug("code", &req.code, &['-'])?;
            let name = req.name.trim();
            let n = name.chars().count();
            if n == 0 || n > MAX_NAME_CHARS {
                return Err(Error::invalid(
                    "name",
                    format!("must be 1 to {MAX_NAME_CHARS} characters"),
                ));
            }
            if req.price_minor <= 0 || req.price_minor > MAX_AMOUNT_MINOR {
                return Err(Error::invalid(
                    "price_minor",
                    format!("must be between 1 and {MAX_AMOUNT_MINOR} minor units"),
                ));
            }
            check_currency(&req.currency)?;
            if !(req.interval.is_empty() || req.interval == "month") {
                return Err(Error::invalid("interval", "must be `month`"));
            }
            if req.metered_prices.len() > MAX_METERED_PRICES {
                return Err(Error::invalid(
                    "metered_prices",
                    format!("at most {MAX_METERED_PRICES}"),
                ));
            }
            let mut metered = Vec::new();
            for m in &req.metered_prices {
                check_slug("metered_prices.metric", &m.metric, &['_', '.', '-'])?;
                if !(0..=MAX_AMOUNT_MINOR).contains(&m.unit_price_minor) {
                    return Err(Error::invalid(
                        "metered_prices.unit_price_minor",
                        format!("must be between 0 and {MAX_AMOUNT_MINOR}"),
                    ));
                }
                if metered.iter().any(|x: &Metered| x.metric == m.metric) {
                    return Err(Error::invalid("metered_prices.metric", "is listed twice"));
                }
                metered.push(Metered {
                    metric: m.metric.clone(),
                    unit_price_minor: m.unit_price_minor,
                });
            }
            let at = now();
            let plan = PlanRecord {
                id: Uuid::now_v7(),
                code: req.code.clone(),
                name: name.to_owned(),
                price_minor: req.price_minor,
                currency: req.currency.clone(),
                period_unit: "month".into(),
                metered_json: to_json("metered prices", &metered)?,
                active: true,
                created_at: at,
                updated_at: at,
            };
            let answer = plan_pb(&plan)?;
            let messages = [self
                .audit(ctx, "billing.plan.create", format!("plan/{}", plan.id))
                .meta("code", plan.code.clone())
                .meta("price_minor", plan.price_minor)
                .meta("currency", plan.currency.clone())
                .message()];
            let done = completion(&claim, &answer)?;
            self.store
                .insert_plan(
                    &plan,
                    Write {
                        messages: &messages,
                        done: done.as_ref(),
                    },
                )
                .await?;
            Ok(answer)
        })
        .await
    }

    async fn archive_plan(
        &self,
        ctx: &RequestContext,
        req: pb::ArchivePlanRequest,
    ) -> Result<pb::Plan> {
        self.once(ctx, "ArchivePlan", &req.clone(), |claim| async move {
            let mut plan = self.plan("id", &req.id).await?;
            if !plan.active {
                return plan_pb(&plan);
            }
            let at = now();
            plan.active = false;
            plan.updated_at = at;
            let answer = plan_pb(&plan)?;
            let messages = [self
                .audit(ctx, "billing.plan.archive", format!("plan/{}", plan.id))
                .message()];
            let done = completion(&claim, &answer)?;
            self.store
                .archive_plan(
                    plan.id,
                    at,
                    Write {
                        messages: &messages,
                        done: done.as_ref(),
                    },
                )
                .await?;
            Ok(answer)
        })
        .await
    }

    async fn list_plans(
        &self,
        _ctx: &RequestContext,
        _req: pb::ListPlansRequest,
    ) -> Result<pb::ListPlansResponse> {
        Ok(pb::ListPlansResponse {
            plans: self
                .store
                .list_plans(true)
                .await?
                .iter()
                .map(plan_pb)
                .collect::<Result<_>>()?,
        })
    }

    async fn get_plan(&self, _ctx: &RequestContext, req: pb::GetPlanRequest) -> Result<pb::Plan> {
        plan_pb(&self.plan("id", &req.id).await?)
    }

    async fn create_subscription(
        &self,
        ctx: &RequestContext,
        req: pb::CreateSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        self.once(
            ctx,
            "CreateSubscription",
            &req.clone(),
            |claim| async move {
                let user = caller(ctx)?;
                let plan = self.plan("plan_id", &req.plan_id).await?;
                if !plan.active {
                    return Err(
                        Error::new(ErrorCode::FailedPrecondition, "the plan is archived")
                            .with_violation("plan_id", "is archived"),
                    );
                }
                if self.store.active_subscription(user).await?.is_some() {
                    return Err(
                        Error::already_exists("you already have an active subscription")
                            .with_violation(
                                "plan_id",
                                "change the plan of your active subscription instead",
                            ),
                    );
                }
                let at = now();
                let sub = SubscriptionRecord {
                    id: Uuid::now_v7(),
                    user_id: user,
                    plan_id: plan.id,
                    period_plan_id: plan.id,
                    currency: plan.currency.clone(),
                    status: "active".into(),
                    period_start: at,
                    period_end: period_end_for(at, self.cfg.period.fixed())?,
                    cancel_at_period_end: false,
                    pending_json: "[]".into(),
                    version: 1,
                    created_at: at,
                    updated_at: at,
                };
                let answer = subscription_pb(&sub)?;
                let mut messages = vec![
                    self.audit(
                        ctx,
                        "billing.subscription.create",
                        format!("subscription/{}", sub.id),
                    )
                    .meta("plan_id", plan.id.to_string())
                    .message(),
                ];
                messages.extend(self.subscription_event("created", &answer, None));
                let done = completion(&claim, &answer)?;
                self.store
                    .insert_subscription(
                        &sub,
                        Write {
                            messages: &messages,
                            done: done.as_ref(),
                        },
                    )
                    .await?;
                Ok(answer)
            },
        )
        .await
    }

    async fn get_subscription(
        &self,
        ctx: &RequestContext,
        _req: pb::GetSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        subscription_pb(&self.active(caller(ctx)?).await?)
    }

    async fn change_plan(
        &self,
        ctx: &RequestContext,
        req: pb::ChangePlanRequest,
    ) -> Result<pb::Subscription> {
        self.once(ctx, "ChangePlan", &req.clone(), |claim| async move {
            let new = self.plan("plan_id", &req.plan_id).await?;
            if !new.active {
                return Err(
                    Error::new(ErrorCode::FailedPrecondition, "the plan is archived")
                        .with_violation("plan_id", "is archived"),
                );
            }
            let user = caller(ctx)?;
            let current = self.active(user).await?;
            let old = self
                .store
                .get_plan(current.plan_id)
                .await?
                .ok_or_else(|| Error::not_found("the subscription's plan"))?;
            self.change_subscription(ctx, &claim, |sub| {
                if sub.plan_id == new.id {
                    return Err(Error::invalid(
                        "plan_id",
                        "is the subscription's plan already",
                    ));
                }
                if sub.currency != new.currency {
                    return Err(Error::new(
                        ErrorCode::FailedPrecondition,
                        format!(
                            "the plan is priced in {}, the subscription in {}",
                            new.currency, sub.currency
                        ),
                    )
                    .with_violation("plan_id", "has another currency"));
                }
                if sub.plan_id != old.id {
                    // Changed meanwhile: the retry reads it again.
                    return Err(changed_meanwhile());
                }
                let at = now();
                let mut pending: Vec<Item> =
                    from_json("a subscription's pending items", &sub.pending_json)?;
                pending.extend(proration(&old, &new, sub.period_start, sub.period_end, at));
                let mut next = sub.clone();
                next.plan_id = new.id;
                next.pending_json = to_json("pending items", &pending)?;
                Ok(Some(Changed {
                    next,
                    action: "billing.subscription.change_plan",
                    event: "plan_changed",
                    previous_plan_id: Some(old.id.to_string()),
                }))
            })
            .await
        })
        .await
    }

    async fn cancel_subscription(
        &self,
        ctx: &RequestContext,
        req: pb::CancelSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        self.once(
            ctx,
            "CancelSubscription",
            &req.clone(),
            |claim| async move {
                self.change_subscription(ctx, &claim, |sub| {
                    if sub.cancel_at_period_end {
                        return Ok(None);
                    }
                    let mut next = sub.clone();
                    next.cancel_at_period_end = true;
                    Ok(Some(Changed {
                        next,
                        action: "billing.subscription.cancel",
                        event: "canceled",
                        previous_plan_id: None,
                    }))
                })
                .await
            },
        )
        .await
    }

    async fn record_usage(
        &self,
        ctx: &RequestContext,
        req: pb::RecordUsageRequest,
    ) -> Result<pb::UsageRecord> {
        self.once(ctx, "RecordUsage", &req.clone(), |claim| async move {
            let sid = parse_id("subscription_id", &req.subscription_id)?;
            check_slug("metric", &req.metric, &['_', '.', '-'])?;
            if !(1..=MAX_QUANTITY).contains(&req.quantity) {
                return Err(Error::invalid(
                    "quantity",
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            let Some(sub) = self.store.get_subscription(sid).await? else {
                return Err(Error::not_found("subscription")
                    .with_violation("subscription_id", "no such subscription"));
            };
            if sub.status != "active" {
                return Err(
                    Error::new(ErrorCode::FailedPrecondition, "the subscription ended")
                        .with_violation("subscription_id", "has ended"),
                );
            }
            let row = UsageRow {
                id: Uuid::now_v7(),
                subscription_id: sid,
                metric: req.metric.clone(),
                quantity: req.quantity,
                recorded_at: now(),
            };
            let answer = usage_pb(&row);
            let messages = [self
                .audit(ctx, "billing.usage.record", format!("subscription/{sid}"))
                .meta("usage_id", row.id.to_string())
                .meta("metric", row.metric.clone())
                .meta("quantity", row.quantity)
                .message()];
            let done = completion(&claim, &answer)?;
            self.store
                .insert_usage(
                    &row,
                    Write {
                        messages: &messages,
                        done: done.as_ref(),
                    },
                )
                .await?;
            Ok(answer)
        })
        .await
    }

    async fn list_invoices(
        &self,
        ctx: &RequestContext,
        req: pb::ListInvoicesRequest,
    ) -> Result<pb::ListInvoicesResponse> {
        self.page(caller(ctx)?, req.page_size, &req.page_token)
            .await
    }

    async fn list_user_invoices(
        &self,
        _ctx: &RequestContext,
        req: pb::ListUserInvoicesRequest,
    ) -> Result<pb::ListInvoicesResponse> {
        // The runtime admitted the user themself or a holder of billing.invoices.manage.
        self.page(
            parse_id("user_id", &req.user_id)?,
            req.page_size,
            &req.page_token,
        )
        .await
    }

    async fn get_invoice(
        &self,
        ctx: &RequestContext,
        req: pb::GetInvoiceRequest,
    ) -> Result<pb::Invoice> {
        let user = caller(ctx)?;
        let id = parse_id("id", &req.id)?;
        match self.store.get_invoice(id).await? {
            // Another user's invoice does not exist for the caller.
            Some(i) if i.user_id == user => invoice_pb(&i),
            _ => Err(Error::not_found("invoice")),
        }
    }

    async fn mark_invoice_paid(
        &self,
        ctx: &RequestContext,
        req: pb::MarkInvoicePaidRequest,
    ) -> Result<pb::Invoice> {
        self.once(ctx, "MarkInvoicePaid", &req.clone(), |claim| async move {
            self.settle(ctx, &claim, &req.id, "paid", "billing.invoice.mark_paid")
                .await
        })
        .await
    }

    async fn void_invoice(
        &self,
        ctx: &RequestContext,
        req: pb::VoidInvoiceRequest,
    ) -> Result<pb::Invoice> {
        self.once(ctx, "VoidInvoice", &req.clone(), |claim| async move {
            self.settle(ctx, &claim, &req.id, "void", "billing.invoice.void")
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plan(name: &str, price: i64) -> PlanRecord {
        let t = Utc::now();
        PlanRecord {
            id: Uuid::now_v7(),
            code: name.to_lowercase(),
            name: name.into(),
            price_minor: price,
            currency: "EUR".into(),
            period_unit: "month".into(),
            metered_json: "[]".into(),
            active: true,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn prorate_rounds_to_the_nearest_minor_unit_halves_up() {
        assert_eq!(prorate(1000, 50, 100), 500);
        assert_eq!(prorate(1000, 0, 100), 0);
        assert_eq!(prorate(1000, 100, 100), 1000);
        // Clamped: never more than the price, never negative.
        assert_eq!(prorate(1000, 150, 100), 1000);
        assert_eq!(prorate(1000, -5, 100), 0);
        // 999 × 1/2 = 499.5 → 500 (half up); 999 × 1/3 = 333 → 333; 1000 × 2/3 = 666.67 → 667.
        assert_eq!(prorate(999, 1, 2), 500);
        assert_eq!(prorate(999, 1, 3), 333);
        assert_eq!(prorate(1000, 2, 3), 667);
        // 1 × 1/2 = 0.5 → 1; 1 × 0.49 → 0.
        assert_eq!(prorate(1, 50, 100), 1);
        assert_eq!(prorate(1, 49, 100), 0);
        // Large prices do not overflow.
        assert_eq!(
            prorate(MAX_AMOUNT_MINOR, i64::MAX / 2, i64::MAX),
            MAX_AMOUNT_MINOR / 2
        );
        assert_eq!(prorate(1000, 10, 0), 0);
    }

    #[test]
    fn proration_credits_the_old_plan_and_charges_the_new_for_the_rest_of_the_period() {
        let start = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let end = period_end(start).unwrap();
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap());
        // April has 30 days: on the 21st, 10 days (1/3) remain.
        let at = Utc.with_ymd_and_hms(2026, 4, 21, 0, 0, 0).unwrap();
        let (basic, pro) = (plan("Basic", 1000), plan("Pro", 2500));
        let items = proration(&basic, &pro, start, end, at);
        assert_eq!(items[0].kind, "proration_credit");
        assert_eq!(items[0].amount_minor, -333); // 1000 / 3 = 333.3
        assert_eq!(items[1].kind, "proration_charge");
        assert_eq!(items[1].amount_minor, 833); // 2500 / 3 = 833.3
        // Downgrade: the credit is bigger than the charge.
        let down = proration(&pro, &basic, start, end, at);
        assert_eq!(down[0].amount_minor + down[1].amount_minor, -833 + 333);
        // At the period's start the whole prices move; at its end nothing does.
        let all = proration(&basic, &pro, start, end, start);
        assert_eq!((all[0].amount_minor, all[1].amount_minor), (-1000, 2500));
        let none = proration(&basic, &pro, start, end, end);
        assert_eq!((none[0].amount_minor, none[1].amount_minor), (0, 0));
    }

    #[test]
    fn periods_are_calendar_months_clamped_to_the_months_end() {
        let jan31 = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        assert_eq!(
            period_end(jan31).unwrap(),
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        let leap = Utc.with_ymd_and_hms(2028, 1, 31, 0, 0, 0).unwrap();
        assert_eq!(
            period_end(leap).unwrap(),
            Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn slugs_and_currencies_name_their_field() {
        assert!(check_slug("code", "pro-2026", &['-']).is_ok());
        let e = check_slug("code", "Pro", &['-']).unwrap_err();
        assert_eq!(e.violations[0].field, "code");
        assert!(check_slug("code", "", &['-']).is_err());
        assert!(check_currency("EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert_eq!(
                check_currency(bad).unwrap_err().violations[0].field,
                "currency"
            );
        }
    }
}

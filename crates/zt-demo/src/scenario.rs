//! The synthetic e-commerce world behind `zt generate`, and its ground truth.
//!
//! One seed decides everything: the same [`Params`] give the same records, byte for byte,
//! except the tracking calls' `sentAt`, which the sender stamps when it sends (that is
//! what a device does, and what ingest's clock-skew correction needs).
//!
//! The world: persons acquired through paid channels (campaigns with daily ad spend) and
//! private-domain channels; each browses anonymously on a device, registers in the CRM and
//! logs in (a Segment `identify` carrying the phone), then comes back in sessions that go
//! some way down the funnel (view → add → checkout → paid). Checkouts expose the person to
//! the `checkout-v2` experiment, whose treatment converts with a known higher probability.
//! Paid orders are shipped (some with delivery exceptions, a few never delivered),
//! some refunded in part or in full, some lead to service tickets with first responses
//! inside or outside the 2-hour SLA, ratings and complaints. The ad platforms report spend
//! the morning after, sometimes restating a day. Some devices' clocks are off by minutes
//! (their calls carry skewed `timestamp`s and `sentAt`s), and some tracking calls arrive
//! late, behind later traffic, within the funnels' allowed lateness.
//!
//! [`Truth`] is computed here from the generated world itself, not from anything the
//! platform computes: the test compares the KPI views in ClickHouse against it.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zt_model::Source;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// The experiment every checkout exposes a person to.
pub const EXPERIMENT_ID: &str = "checkout-v2";
/// The funnel window of the default `ecommerce` funnel (config/defaults.toml), for the truth.
pub const FUNNEL_WINDOW_MS: i64 = 7 * DAY;
/// Late tracking calls arrive at most this much event time behind the traffic around them:
/// inside the funnels' default `allowed_lateness_ms` (1 hour).
pub const MAX_LATENESS_MS: i64 = 40 * MIN;

/// Acquisition channels: name, weight, and for paid channels the base daily spend per
/// campaign (fen) per 2,000 persons, chosen so that LTV/CAC differs by channel (about 1.5
/// for douyin, 3.5 for tmall, 2.5 for jd, 0.8 for baidu).
const CHANNELS: &[(&str, u32, Option<i64>)] = &[
    ("douyin", 24, Some(88_000)),
    ("tmall", 18, Some(32_000)),
    ("jd", 14, Some(36_000)),
    ("baidu", 8, Some(47_000)),
    ("wechat_mini", 16, None),
    ("wecom", 12, None),
    ("wechat_group", 8, None),
];
/// Channels repeat orders move to (private domain).
const PRIVATE: &[&str] = &["wecom", "wechat_mini", "wechat_group"];

/// A catalogue entry: sku, product id, name, category, unit price (fen).
type Product = (&'static str, &'static str, &'static str, &'static str, i64);

/// The catalogue.
const PRODUCTS: &[Product] = &[
    ("SKU-TEA-001", "P-LONGJING", "西湖龙井 250g", "茶叶", 12_800),
    ("SKU-TEA-002", "P-PUER", "云南普洱 357g", "茶叶", 26_800),
    (
        "SKU-TEA-003",
        "P-TIEGUANYIN",
        "安溪铁观音 200g",
        "茶叶",
        9_900,
    ),
    ("SKU-TEA-004", "P-BAICHA", "福鼎白茶 300g", "茶叶", 15_800),
    ("SKU-CUP-001", "P-CUP-QING", "青瓷茶杯", "茶具", 5_900),
    ("SKU-POT-001", "P-POT-ZISHA", "宜兴紫砂壶", "茶具", 38_800),
    ("SKU-SET-001", "P-GIFT-SET", "中秋礼盒", "礼盒", 49_900),
    ("SKU-SNK-001", "P-SNACK", "茶点组合", "茶点", 3_900),
];
const CARRIERS: &[&str] = &["sf", "zto", "yto", "jd_logistics"];

/// What to generate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// Seeds every random choice.
    pub seed: u64,
    /// Persons in the world.
    pub persons: u32,
    /// Days over which persons sign up and come back.
    pub days: u32,
    /// Start of the simulated period, UTC milliseconds (a midnight is nicest).
    pub start_ms: i64,
    /// Share of devices whose clock is off by 1 to 15 minutes.
    pub skew_share: f64,
    /// Share of tracking calls that arrive late (behind later traffic).
    pub late_share: f64,
    /// True conversion probability at checkout, control and treatment of `checkout-v2`.
    pub conversion: (f64, f64),
}

impl Params {
    /// Defaults for a seed and a size; the period ends 15 days before `now_ms` (rounded to a
    /// UTC midnight) so that deliveries, refunds and tickets after the last session are in
    /// the past too.
    pub fn new(seed: u64, persons: u32, days: u32, now_ms: i64) -> Params {
        let today = now_ms - now_ms.rem_euclid(DAY);
        Params {
            seed,
            persons,
            days,
            start_ms: today - (i64::from(days) + 15) * DAY,
            skew_share: 0.2,
            late_share: 0.03,
            conversion: (0.30, 0.45),
        }
    }
}

/// One record to send: the native record (or Segment call) of its source.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The source whose endpoint takes it (`tracking`: `/v1/batch`).
    pub source: Source,
    /// When it happened (true time, UTC ms).
    pub event_time_ms: i64,
    /// Sending order key: the event time, plus the delay of a late call.
    pub arrive_ms: i64,
    /// The record.
    pub body: Value,
    /// Tracking calls: the device clock's offset, ms (0 for a correct clock). The sender
    /// stamps `sentAt` = its own clock + this offset.
    pub skew_ms: i64,
    /// Sent late, behind later traffic.
    pub late: bool,
}

/// Ground truth of one acquisition channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChannelTruth {
    /// Ad spend over the period, the latest report of each day (fen).
    pub spend_minor: i64,
    /// Persons whose first paid order was on this channel.
    pub new_customers: u64,
    /// Their paid totals minus refunds, all orders (fen).
    pub net_ltv_minor: i64,
}

/// Ground truth of the experiment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExperimentTruth {
    /// The experiment id.
    pub experiment_id: String,
    /// The true conversion probability per variant (what the generator draws with).
    pub true_rate: BTreeMap<String, f64>,
    /// Persons exposed per variant.
    pub exposed: BTreeMap<String, u64>,
    /// Exposed persons with a paid order at or after their first exposure.
    pub converted: BTreeMap<String, u64>,
}

/// What the platform should report for the generated world, computed from the world.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Truth {
    /// Records per source (the `events` table's rows per source).
    pub events_by_source: BTreeMap<String, u64>,
    /// Persons generated.
    pub persons: u64,
    /// Persons with at least one paid order.
    pub buyers: u64,
    /// Persons with at least two paid orders.
    pub repeat_buyers: u64,
    /// Paid orders.
    pub paid_orders: u64,
    /// Sum of paid totals (fen).
    pub gross_minor: i64,
    /// Sum of refunds (fen).
    pub refunded_minor: i64,
    /// Per acquisition channel.
    pub channels: BTreeMap<String, ChannelTruth>,
    /// Service tickets (including complaints).
    pub tickets: u64,
    /// Tickets with a first response.
    pub responded: u64,
    /// Of those, answered within 2 hours.
    pub within_sla: u64,
    /// Rated tickets, the sum of their scores and how many were 4 or 5.
    pub rated: u64,
    /// Sum of the ratings.
    pub csat_sum: u64,
    /// Ratings of 4 or 5.
    pub csat_ge4: u64,
    /// Tickets that are complaints.
    pub complaints: u64,
    /// Waybills, delivered waybills, waybills with an exception.
    pub shipments: u64,
    /// Delivered waybills.
    pub delivered: u64,
    /// Waybills with at least one exception.
    pub shipments_with_exception: u64,
    /// Persons reaching at least step k of the `ecommerce` funnel (k = 1..5), windowFunnel
    /// over 7 days in true event time.
    pub funnel: Vec<u64>,
    /// The experiment.
    pub experiment: ExperimentTruth,
    /// Devices with a skewed clock.
    pub skewed_devices: u64,
    /// Tracking calls sent from a skewed device (their `timestamp` is off by at least a
    /// minute; ingest's correction must bring their event time back to the true time).
    pub skewed_calls: u64,
    /// Up to 50 of those calls: message id → true event time (ms).
    pub skew_sample: BTreeMap<String, i64>,
    /// Tracking calls sent late.
    pub late_calls: u64,
}

/// The generated world: records in sending order, and the truth.
#[derive(Debug)]
pub struct Scenario {
    /// The parameters.
    pub params: Params,
    /// Every record, sorted by `arrive_ms`.
    pub records: Vec<Planned>,
    /// The ground truth.
    pub truth: Truth,
}

/// Formats UTC milliseconds as RFC 3339 at +08:00 (what the native systems send).
pub fn cst(ms: i64) -> String {
    fmt_at(ms, 8)
}

/// Formats UTC milliseconds as RFC 3339 with `Z` and milliseconds (what SDKs send).
pub fn utc(ms: i64) -> String {
    fmt_at(ms, 0)
}

fn fmt_at(ms: i64, offset_hours: i8) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let off = time::UtcOffset::from_hms(offset_hours, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = t.to_offset(off);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s, milli) = (t.hour(), t.minute(), t.second(), t.millisecond());
    if offset_hours == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}+{offset_hours:02}:00")
    }
}

fn day_of(ms: i64) -> String {
    // The ad platforms report China days.
    cst(ms)[..10].to_owned()
}

struct Person {
    idx: u32,
    customer_id: String,
    user_id: String,
    phone: String,
    email: Option<String>,
    devices: Vec<(String, i64)>,
    channel: &'static str,
    campaign: Option<String>,
    variant: &'static str,
}

/// A visit: who, on which device (and its clock offset), through which channel.
struct Visit<'a> {
    person: &'a Person,
    device: String,
    skew: i64,
    channel: &'static str,
    campaign: Option<String>,
    ctx: Value,
}

/// Funnel steps as the truth sees them: (person, step 1..5, true time).
type Step = (u32, u8, i64);

struct Builder {
    rng: ChaCha8Rng,
    p: Params,
    records: Vec<Planned>,
    steps: Vec<Step>,
    truth: Truth,
    seq: u64,
    /// Per person: (paid order time, total, refunded, channel).
    orders: BTreeMap<u32, Vec<(i64, i64, i64, &'static str)>>,
    /// Per person: first exposure (time, variant).
    exposure: BTreeMap<u32, (i64, &'static str)>,
}

impl Builder {
    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{:x}-{:07}", self.p.seed, self.seq)
    }

    fn push(&mut self, source: Source, at: i64, body: Value) {
        *self
            .truth
            .events_by_source
            .entry(source.as_str().to_owned())
            .or_default() += 1;
        self.records.push(Planned {
            source,
            event_time_ms: at,
            arrive_ms: at,
            body,
            skew_ms: 0,
            late: false,
        });
    }

    /// A Segment call by a device (`skew`: its clock's offset).
    fn track_call(&mut self, at: i64, skew: i64, mut call: Value) {
        let late = self.rng.random_bool(self.p.late_share);
        let delay = if late {
            self.rng.random_range(5 * MIN..MAX_LATENESS_MS)
        } else {
            0
        };
        let id = self.id("trk");
        call["messageId"] = json!(id.clone());
        call["timestamp"] = json!(utc(at + skew));
        *self
            .truth
            .events_by_source
            .entry("tracking".to_owned())
            .or_default() += 1;
        if late {
            self.truth.late_calls += 1;
        }
        if skew != 0 {
            self.truth.skewed_calls += 1;
            if self.truth.skew_sample.len() < 50 {
                self.truth.skew_sample.insert(id, at);
            }
        }
        self.records.push(Planned {
            source: Source::Tracking,
            event_time_ms: at,
            arrive_ms: at + delay,
            body: call,
            skew_ms: skew,
            late,
        });
    }

    fn person(&mut self, idx: u32) -> Person {
        let total: u32 = CHANNELS.iter().map(|c| c.1).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut channel = CHANNELS[0];
        for c in CHANNELS {
            if pick < c.1 {
                channel = *c;
                break;
            }
            pick -= c.1;
        }
        let campaign = channel.2.map(|_| {
            let n = self.rng.random_range(1..=2);
            campaign_id(channel.0, n)
        });
        let n_devices = if self.rng.random_bool(0.3) { 2 } else { 1 };
        let devices = (0..n_devices)
            .map(|d| {
                let skew = if self.rng.random_bool(self.p.skew_share) {
                    self.truth.skewed_devices += 1;
                    let m = self.rng.random_range(MIN..15 * MIN);
                    if self.rng.random_bool(0.5) { m } else { -m }
                } else {
                    0
                };
                (format!("a-{:x}-{idx:06}-{d}", self.p.seed), skew)
            })
            .collect();
        let variant = if self.rng.random_bool(0.5) {
            "control"
        } else {
            "treatment"
        };
        Person {
            idx,
            customer_id: format!("C{:x}{idx:06}", self.p.seed),
            user_id: format!("u-{:x}-{idx:06}", self.p.seed),
            // 11-digit mainland mobile numbers, one per person, in a seed-specific range.
            phone: format!("+86 1{}{:09}", 3 + self.p.seed % 7, u64::from(idx) * 7 + 1),
            email: self
                .rng
                .random_bool(0.5)
                .then(|| format!("buyer{idx}.{:x}@example.cn", self.p.seed)),
            devices,
            channel: channel.0,
            campaign,
            variant,
        }
    }

    fn journey(&mut self, person: &Person) {
        let period = i64::from(self.p.days) * DAY;
        let signup = self.p.start_ms + self.rng.random_range(0..period * 6 / 10);
        let (device, skew) = person.devices[0].clone();
        let ctx = |channel: &str, campaign: Option<&String>| {
            let mut c = json!({ "channel": channel, "locale": "zh-CN",
                "device": { "type": "mobile" }, "os": { "name": "iOS" } });
            if let Some(camp) = campaign {
                c["campaign"] = json!({ "name": camp, "source": channel, "medium": "cpc" });
            }
            c
        };
        // Anonymous browsing before signing up.
        let mut t = signup - self.rng.random_range(5 * MIN..30 * MIN);
        let first_ctx = ctx(person.channel, person.campaign.as_ref());
        self.track_call(
            t,
            skew,
            json!({ "type": "page", "anonymousId": device, "name": "首页",
                    "properties": { "path": "/", "title": "茶语商城" }, "context": first_ctx }),
        );
        t += self.rng.random_range(20_000..90_000);
        let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        let first_visit = Visit {
            person,
            device: device.clone(),
            skew,
            channel: person.channel,
            campaign: person.campaign.clone(),
            ctx: first_ctx.clone(),
        };
        self.product_viewed(&first_visit, false, t, product);
        // Registration in the CRM and the login on the device.
        let mut reg = json!({
            "event_id": self.id("crm"), "type": "customer.registered", "occurred_at": cst(signup),
            "customer_id": person.customer_id, "mobile": person.phone,
            "registered_at": cst(signup), "registration_channel": person.channel,
            "channel": person.channel, "gender": if person.idx.is_multiple_of(2) { "F" } else { "M" },
            "birth_year": 1970 + (person.idx % 35), "city": "杭州市",
        });
        if let Some(e) = &person.email {
            reg["email"] = json!(e);
        }
        if let Some(c) = &person.campaign {
            reg["utm_campaign"] = json!(c);
        }
        self.push(Source::Crm, signup, reg);
        let mut traits = json!({ "phone": person.phone });
        if let Some(e) = &person.email {
            traits["email"] = json!(e);
        }
        self.track_call(
            signup + 5_000,
            skew,
            json!({ "type": "identify", "userId": person.user_id, "anonymousId": device,
                    "traits": traits, "context": first_ctx }),
        );
        // The first session goes on logged in; later sessions come days apart.
        let mut session_start = signup + 30_000;
        let mut first = true;
        let mut orders = 0u32;
        let end = self.p.start_ms + period;
        loop {
            let (dev, dskew) =
                person.devices[self.rng.random_range(0..person.devices.len())].clone();
            let channel: &'static str = if orders == 0 || self.rng.random_bool(0.5) {
                person.channel
            } else {
                PRIVATE[self.rng.random_range(0..PRIVATE.len())]
            };
            let campaign = (channel == person.channel)
                .then(|| person.campaign.clone())
                .flatten();
            let visit = Visit {
                person,
                device: dev,
                skew: dskew,
                channel,
                ctx: ctx(channel, campaign.as_ref()),
                campaign,
            };
            if self.session(&visit, session_start, first).is_some() {
                orders += 1;
            }
            first = false;
            let more = if orders == 0 { 0.55 } else { 0.6 };
            if !self.rng.random_bool(more) {
                break;
            }
            session_start += self.rng.random_range(DAY..8 * DAY);
            if session_start >= end {
                break;
            }
        }
        if orders >= 2 {
            let at = session_start + HOUR;
            let body = json!({
                "event_id": self.id("crm"), "type": "membership.tier_changed", "occurred_at": cst(at),
                "customer_id": person.customer_id, "tier": "gold", "previous_tier": "silver",
                "channel": person.channel,
            });
            self.push(Source::Crm, at, body);
        }
    }

    fn product_viewed(&mut self, v: &Visit<'_>, logged_in: bool, at: i64, product: Product) {
        let (person, device, skew, ctx) = (v.person, v.device.as_str(), v.skew, &v.ctx);
        let user = logged_in.then_some(person.user_id.as_str());
        let mut call = json!({ "type": "track", "event": "Product Viewed", "anonymousId": device,
            "properties": { "product_id": product.1, "sku": product.0, "name": product.2,
                            "category": product.3, "price": product.4 as f64 / 100.0, "currency": "CNY" },
            "context": ctx });
        if let Some(u) = user {
            call["userId"] = json!(u);
        }
        self.track_call(at, skew, call);
        self.steps.push((person.idx, 1, at));
    }

    /// One visit; returns the paid time when it ended in a paid order.
    fn session(&mut self, v: &Visit<'_>, start: i64, first: bool) -> Option<i64> {
        let (person, device, skew, ctx) = (v.person, v.device.as_str(), v.skew, &v.ctx);
        let mut t = start;
        let mut basket = Vec::new();
        for _ in 0..self.rng.random_range(1..=3) {
            let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
            self.product_viewed(v, true, t, product);
            t += self.rng.random_range(30_000..180_000);
            if self.rng.random_bool(if first { 0.6 } else { 0.65 }) {
                let qty = if self.rng.random_bool(0.2) { 2 } else { 1 };
                let call = json!({ "type": "track", "event": "Product Added", "userId": person.user_id,
                    "anonymousId": device,
                    "properties": { "product_id": product.1, "sku": product.0, "quantity": qty,
                                    "price": product.4 as f64 / 100.0, "currency": "CNY" },
                    "context": ctx });
                self.track_call(t, skew, call);
                self.steps.push((person.idx, 2, t));
                basket.push((product, qty));
                t += self.rng.random_range(20_000..120_000);
            }
        }
        if basket.is_empty() || !self.rng.random_bool(0.7) {
            return None;
        }
        // Checkout: the first one exposes the person to the experiment.
        if !self.exposure.contains_key(&person.idx) {
            let call = json!({ "type": "track", "event": "Experiment Viewed", "userId": person.user_id,
                "anonymousId": device,
                "properties": { "experiment_id": EXPERIMENT_ID, "experiment_name": "一页结算",
                                "variation_id": person.variant },
                "context": ctx });
            self.track_call(t, skew, call);
            self.exposure.insert(person.idx, (t, person.variant));
            t += 2_000;
        }
        let call = json!({ "type": "track", "event": "Checkout Started", "userId": person.user_id,
            "anonymousId": device, "properties": { "currency": "CNY" }, "context": ctx });
        self.track_call(t, skew, call);
        self.steps.push((person.idx, 3, t));
        let rate = if person.variant == "control" {
            self.p.conversion.0
        } else {
            self.p.conversion.1
        };
        if !self.rng.random_bool(rate) {
            return None;
        }
        Some(self.order(v, &basket, t))
    }

    fn order(&mut self, v: &Visit<'_>, basket: &[(Product, i64)], checkout: i64) -> i64 {
        let (person, device, skew, channel, ctx) =
            (v.person, v.device.as_str(), v.skew, v.channel, &v.ctx);
        let campaign = &v.campaign;
        let order_id = self.id("O");
        let created = checkout + 20_000;
        let paid = created + self.rng.random_range(40_000..300_000);
        let subtotal: i64 = basket.iter().map(|(p, q)| p.4 * q).sum();
        let discount = if self.rng.random_bool(0.4) {
            (subtotal / 10).min(5_000)
        } else {
            0
        };
        let shipping = if subtotal >= 9_900 { 0 } else { 800 };
        let total = subtotal - discount + shipping;
        let lines: Vec<Value> = basket
            .iter()
            .map(|(p, q)| {
                json!({ "sku": p.0, "product_id": p.1, "product_name": p.2,
                                  "category": p.3, "quantity": q, "unit_price": p.4 })
            })
            .collect();
        let mut base = json!({ "order_id": order_id, "customer_id": person.customer_id,
            "mobile": person.phone, "channel": channel, "currency": "CNY" });
        if let Some(c) = campaign {
            base["campaign"] = json!(c);
        }
        let with = |extra: Value| {
            let mut b = base.clone();
            if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    b.insert(k.clone(), v.clone());
                }
            }
            b
        };
        let rec = with(json!({ "event_id": self.id("erp"), "type": "order.created",
            "occurred_at": cst(created), "subtotal": subtotal, "discount": discount,
            "shipping_fee": shipping, "total": total, "lines": lines }));
        self.push(Source::Erp, created, rec);
        let rec = with(json!({ "event_id": self.id("erp"), "type": "order.paid",
            "occurred_at": cst(paid), "subtotal": subtotal, "discount": discount,
            "shipping_fee": shipping, "total": total, "payment_method": "wechat_pay" }));
        self.push(Source::Erp, paid, rec);
        self.steps.push((person.idx, 4, paid));
        let call = json!({ "type": "track", "event": "Order Completed", "userId": person.user_id,
            "anonymousId": device,
            "properties": { "order_id": order_id, "revenue": total as f64 / 100.0, "currency": "CNY" },
            "context": ctx });
        self.track_call(paid + 3_000, skew, call);
        self.truth.paid_orders += 1;
        self.truth.gross_minor += total;

        // Shipping.
        let waybill = self.id("W");
        let carrier = CARRIERS[self.rng.random_range(0..CARRIERS.len())];
        let shipped = paid + self.rng.random_range(HOUR..12 * HOUR);
        let dispatched = shipped + self.rng.random_range(2 * HOUR..8 * HOUR);
        let lg = |id: String, kind: &str, at: i64| {
            json!({ "event_id": id, "type": kind, "occurred_at": cst(at), "waybill_no": waybill,
                    "order_id": order_id, "carrier": carrier })
        };
        let mut rec = lg(self.id("lg"), "shipment.created", shipped);
        rec["promised_at"] = json!(cst(shipped + 3 * DAY));
        rec["receiver_mobile"] = json!(person.phone);
        self.push(Source::Logistics, shipped, rec);
        let rec = lg(self.id("lg"), "shipment.dispatched", dispatched);
        self.push(Source::Logistics, dispatched, rec);
        self.truth.shipments += 1;
        let mut after = dispatched;
        if self.rng.random_bool(0.08) {
            after = dispatched + self.rng.random_range(12 * HOUR..36 * HOUR);
            let mut rec = lg(self.id("lg"), "shipment.exception", after);
            rec["exception_code"] = json!("E102");
            rec["exception_reason"] = json!("收件人电话无人接听");
            self.push(Source::Logistics, after, rec);
            self.truth.shipments_with_exception += 1;
        }
        let delivered = self
            .rng
            .random_bool(0.97)
            .then(|| after + self.rng.random_range(20 * HOUR..96 * HOUR));
        if let Some(at) = delivered {
            let rec = lg(self.id("lg"), "shipment.delivered", at);
            self.push(Source::Logistics, at, rec);
            self.truth.delivered += 1;
            self.steps.push((person.idx, 5, at));
        }
        let settled = delivered.unwrap_or(after + 7 * DAY);

        // Refunds.
        let mut refunded = 0;
        if self.rng.random_bool(0.12) {
            refunded = if self.rng.random_bool(0.5) {
                total
            } else {
                (total * self.rng.random_range(30..70) / 100).max(1)
            };
            let at = settled + self.rng.random_range(DAY..5 * DAY);
            let rec = with(
                json!({ "event_id": self.id("erp"), "type": "order.refunded",
                "occurred_at": cst(at), "subtotal": subtotal, "discount": discount, "total": total,
                "refund_amount": refunded, "refund_reason": "七天无理由退货" }),
            );
            self.push(Source::Erp, at, rec);
            self.truth.refunded_minor += refunded;
        }
        self.orders
            .entry(person.idx)
            .or_default()
            .push((paid, total, refunded, channel));

        // Service.
        if self.rng.random_bool(0.2) {
            self.ticket(person, &order_id, settled);
        }
        if self.rng.random_bool(0.03) {
            let at = settled + self.rng.random_range(HOUR..2 * DAY);
            let rec = json!({ "event_id": self.id("cs"), "type": "complaint.filed", "occurred_at": cst(at),
                "ticket_id": self.id("T"), "customer_id": person.customer_id, "order_id": order_id,
                "channel": "phone", "priority": "urgent", "complaint_reason": "快递延误",
                "opened_at": cst(at) });
            self.push(Source::Service, at, rec);
            self.truth.tickets += 1;
            self.truth.complaints += 1;
        }
        paid
    }

    fn ticket(&mut self, person: &Person, order_id: &str, after: i64) {
        let ticket_id = self.id("T");
        let opened = after + self.rng.random_range(HOUR..48 * HOUR);
        let rec = json!({ "event_id": self.id("cs"), "type": "ticket.opened", "occurred_at": cst(opened),
            "ticket_id": ticket_id, "customer_id": person.customer_id, "order_id": order_id,
            "channel": "chat", "category": "物流", "priority": "normal", "opened_at": cst(opened) });
        self.push(Source::Service, opened, rec);
        self.truth.tickets += 1;
        let wait = if self.rng.random_bool(0.78) {
            self.rng.random_range(2 * MIN..110 * MIN)
        } else {
            self.rng.random_range(130 * MIN..600 * MIN)
        };
        let responded = opened + wait;
        let rec = json!({ "event_id": self.id("cs"), "type": "ticket.first_response",
            "occurred_at": cst(responded), "ticket_id": ticket_id, "channel": "chat",
            "agent_id": "kf-017", "opened_at": cst(opened), "first_response_at": cst(responded) });
        self.push(Source::Service, responded, rec);
        self.truth.responded += 1;
        if wait <= 2 * HOUR {
            self.truth.within_sla += 1;
        }
        let resolved = responded + self.rng.random_range(HOUR..24 * HOUR);
        let rec = json!({ "event_id": self.id("cs"), "type": "ticket.resolved", "occurred_at": cst(resolved),
            "ticket_id": ticket_id, "channel": "chat", "agent_id": "kf-017", "resolved_at": cst(resolved) });
        self.push(Source::Service, resolved, rec);
        if self.rng.random_bool(0.7) {
            let score: u64 = match self.rng.random_range(0..100) {
                0..5 => 1,
                5..12 => 2,
                12..25 => 3,
                25..60 => 4,
                _ => 5,
            };
            let at = resolved + self.rng.random_range(MIN..HOUR);
            let rec = json!({ "event_id": self.id("cs"), "type": "ticket.rated", "occurred_at": cst(at),
                "ticket_id": ticket_id, "channel": "chat", "csat_score": score });
            self.push(Source::Service, at, rec);
            self.truth.rated += 1;
            self.truth.csat_sum += score;
            if score >= 4 {
                self.truth.csat_ge4 += 1;
            }
        }
    }

    fn ad_spend(&mut self) {
        for (channel, _, base) in CHANNELS {
            let Some(base) = base else { continue };
            for n in 1..=2 {
                let campaign = campaign_id(channel, n);
                for d in 0..i64::from(self.p.days) {
                    let day_start = self.p.start_ms + d * DAY;
                    let scaled = base * i64::from(self.p.persons) / 2000;
                    let spend = (scaled * self.rng.random_range(60..140) / 100).max(100);
                    let impressions = spend * self.rng.random_range(5..9) / 10;
                    let clicks = impressions / self.rng.random_range(40..80);
                    // Reported the next morning, China time.
                    let at = day_start + DAY + 2 * HOUR;
                    let report = |id: String, at: i64, spend: i64| {
                        json!({ "event_id": id, "type": "ad_spend.reported", "occurred_at": cst(at),
                            "channel": channel, "campaign_id": campaign,
                            "campaign_name": format!("{channel} 新客拉新 {n}"),
                            "day": day_of(day_start + 12 * HOUR), "spend": spend,
                            "impressions": impressions, "clicks": clicks, "currency": "CNY" })
                    };
                    let rec = report(self.id("mk"), at, spend);
                    self.push(Source::Marketing, at, rec);
                    let mut last = spend;
                    if self.rng.random_bool(0.1) {
                        // A restatement of the same day, later: the latest report counts.
                        last = spend * self.rng.random_range(80..120) / 100;
                        let rec = report(self.id("mk"), at + 3 * HOUR, last);
                        self.push(Source::Marketing, at + 3 * HOUR, rec);
                    }
                    self.truth
                        .channels
                        .entry((*channel).to_owned())
                        .or_default()
                        .spend_minor += last;
                }
            }
        }
    }

    fn finish(mut self) -> Scenario {
        // Buyers, repeat buyers, acquisition channels and their LTV.
        for orders in self.orders.values_mut() {
            orders.sort_by_key(|o| o.0);
            self.truth.buyers += 1;
            if orders.len() >= 2 {
                self.truth.repeat_buyers += 1;
            }
            let acq = orders[0].3;
            let c = self.truth.channels.entry(acq.to_owned()).or_default();
            c.new_customers += 1;
            c.net_ltv_minor += orders.iter().map(|o| o.1 - o.2).sum::<i64>();
        }
        // The experiment.
        let mut e = ExperimentTruth {
            experiment_id: EXPERIMENT_ID.to_owned(),
            ..Default::default()
        };
        e.true_rate.insert("control".into(), self.p.conversion.0);
        e.true_rate.insert("treatment".into(), self.p.conversion.1);
        for (idx, (at, variant)) in &self.exposure {
            *e.exposed.entry((*variant).to_owned()).or_default() += 1;
            let converted = self
                .orders
                .get(idx)
                .is_some_and(|o| o.iter().any(|o| o.0 >= *at));
            let c = e.converted.entry((*variant).to_owned()).or_default();
            if converted {
                *c += 1;
            }
        }
        self.truth.experiment = e;
        self.truth.funnel = funnel_levels(&self.steps, 5, FUNNEL_WINDOW_MS);
        self.truth.persons = u64::from(self.p.persons);
        // Sending order: arrival, then generation order (stable sort).
        self.records.sort_by_key(|r| r.arrive_ms);
        Scenario {
            params: self.p,
            records: self.records,
            truth: self.truth,
        }
    }
}

fn campaign_id(channel: &str, n: u32) -> String {
    format!("{}-NEW-{n}", channel.to_uppercase())
}

/// Persons reaching at least level k (index k-1) of a funnel: per person, the deepest
/// chain step 1 → 2 → … with strictly increasing times inside `window` of its step 1
/// (ClickHouse's `windowFunnel`, written out independently of the processor's code).
pub fn funnel_levels(steps: &[Step], n_steps: u8, window: i64) -> Vec<u64> {
    let mut by_person: BTreeMap<u32, Vec<(i64, u8)>> = BTreeMap::new();
    for (p, s, t) in steps {
        by_person.entry(*p).or_default().push((*t, *s));
    }
    let mut reached = vec![0u64; usize::from(n_steps)];
    for events in by_person.values_mut() {
        events.sort();
        let mut best = 0u8;
        for (start, s) in events.iter() {
            if *s != 1 {
                continue;
            }
            let mut level = 1u8;
            let mut last = *start;
            for next in 2..=n_steps {
                let found = events
                    .iter()
                    .find(|(t, s)| *s == next && *t > last && *t <= start + window);
                match found {
                    Some((t, _)) => {
                        level = next;
                        last = *t;
                    }
                    None => break,
                }
            }
            best = best.max(level);
        }
        for r in reached.iter_mut().take(usize::from(best)) {
            *r += 1;
        }
    }
    reached
}

/// Generates the world for `params`.
pub fn generate(params: Params) -> Scenario {
    let mut b = Builder {
        rng: ChaCha8Rng::seed_from_u64(params.seed),
        p: params,
        records: Vec::new(),
        steps: Vec::new(),
        truth: Truth::default(),
        seq: 0,
        orders: BTreeMap::new(),
        exposure: BTreeMap::new(),
    };
    for idx in 0..b.p.persons {
        let person = b.person(idx);
        b.journey(&person);
    }
    b.ad_spend();
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn same_seed_same_world_other_seed_other_world() {
        let a = generate(Params::new(7, 50, 20, NOW));
        let b = generate(Params::new(7, 50, 20, NOW));
        let c = generate(Params::new(8, 50, 20, NOW));
        let bodies = |s: &Scenario| {
            s.records
                .iter()
                .map(|r| r.body.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&a), bodies(&b));
        assert_eq!(a.truth, b.truth);
        assert_ne!(bodies(&a), bodies(&c));
    }

    #[test]
    fn every_source_and_every_feature_appears() {
        let s = generate(Params::new(1, 300, 28, NOW));
        for src in Source::ALL {
            assert!(
                s.truth
                    .events_by_source
                    .get(src.as_str())
                    .copied()
                    .unwrap_or(0)
                    > 0,
                "{src:?}"
            );
        }
        let t = &s.truth;
        assert!(t.buyers > 0 && t.repeat_buyers > 0 && t.refunded_minor > 0);
        assert!(t.shipments_with_exception > 0 && t.delivered < t.shipments);
        assert!(t.within_sla > 0 && t.within_sla < t.responded && t.complaints > 0);
        assert!(t.skewed_devices > 0 && t.late_calls > 0);
        assert_eq!(t.experiment.exposed.len(), 2);
        // Funnel levels are non-increasing and start with everybody who viewed a product.
        assert_eq!(t.funnel[0], 300);
        assert!(t.funnel.windows(2).all(|w| w[0] >= w[1]), "{:?}", t.funnel);
        assert!(t.funnel[4] > 0);
        // Sorted by arrival, and late calls really are behind later traffic.
        assert!(
            s.records
                .windows(2)
                .all(|w| w[0].arrive_ms <= w[1].arrive_ms)
        );
        let late = s.records.iter().position(|r| r.late).unwrap();
        assert!(
            s.records[..late]
                .iter()
                .any(|r| r.event_time_ms > s.records[late].event_time_ms)
        );
        // Paid spend only on paid channels.
        assert!(t.channels["douyin"].spend_minor > 0);
        assert_eq!(t.channels.get("wecom").map_or(0, |c| c.spend_minor), 0);
        let new: u64 = t.channels.values().map(|c| c.new_customers).sum();
        assert_eq!(new, t.buyers);
    }

    #[test]
    fn funnel_levels_follow_window_funnel() {
        // Person 1: 1 → 2 → 3 in order: level 3. Person 2: 2 before 1: level 1.
        // Person 3: 1, then 2 after the window: level 1. Person 4: a later start reaches 2.
        let steps = vec![
            (1, 1, 0),
            (1, 2, 10),
            (1, 3, 20),
            (2, 2, 0),
            (2, 1, 10),
            (3, 1, 0),
            (3, 2, 101),
            (4, 1, 0),
            (4, 1, 200),
            (4, 2, 250),
        ];
        assert_eq!(funnel_levels(&steps, 3, 100), vec![4, 2, 1]);
    }

    #[test]
    fn times_format_as_the_sources_send_them() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(cst(0), "1970-01-01T08:00:00.000+08:00");
        assert_eq!(day_of(16 * HOUR), "1970-01-02");
    }
}

//! The day's figures, as JSON and as one self-contained HTML page: what became of the
//! mail by kind of sender, what went wrong (nothing, when the run passes), how fast each
//! phished account was caught, how each fault was weathered, and what each relay cost.

use crate::faults::Event;
use crate::ledger::{Failures, Fate, Ledger};
use crate::model::{Expect, Kind, Size};
use serde::Serialize;
use std::collections::BTreeMap;

/// Counts for one kind of sender.
#[derive(Debug, Default, Serialize)]
pub struct KindCounts {
    pub planned: usize,
    pub delivered: usize,
    pub refused: usize,
    pub retrying: usize,
    /// Tries beyond the first.
    pub retries: usize,
}

/// How fast a phished account was caught.
#[derive(Debug, Serialize)]
pub struct Detection {
    pub login: String,
    /// The thief's messages that went out before the first refusal.
    pub delivered_before_action: usize,
    /// Strangers those reached.
    pub strangers_reached: usize,
    /// Seconds from the thief's first message to the first refusal.
    pub seconds_to_action: Option<f64>,
    /// That refusal.
    pub action: String,
}

/// How the campus weathered one fault.
#[derive(Debug, Serialize)]
pub struct FaultFigure {
    pub fault: &'static str,
    pub what: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Tries answered 4xx or not answered, from the start of the fault until it recovered.
    pub tempfails: usize,
    /// Seconds from the end of the fault to the first message taken through what it hit.
    pub recovery_s: Option<f64>,
}

/// What one relay did and cost.
#[derive(Debug, Serialize)]
pub struct RelayFigure {
    pub name: String,
    /// Decision records in its audit log.
    pub decisions: usize,
    pub accepted: usize,
    pub cpu_s: f64,
    pub cpu_ms_per_decision: f64,
    /// p50 and p99 of relayguard's time per decision and per signing (the upper bound of
    /// the histogram bucket, milliseconds; `null`: above the largest bucket, 500 ms).
    pub decision_p50_ms: Option<f64>,
    pub decision_p99_ms: Option<f64>,
    pub signing_p99_ms: Option<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub size: &'static str,
    pub seed: u64,
    pub people: usize,
    pub window_s: f64,
    pub planned: usize,
    pub delivered: usize,
    pub duplicates: usize,
    pub by_kind: BTreeMap<Kind, KindCounts>,
    /// Messages still retrying at the end, and why (the last reply).
    pub still_retrying: Vec<String>,
    pub failures: Failures,
    pub phished: Vec<Detection>,
    pub faults: Vec<FaultFigure>,
    pub relays: Vec<RelayFigure>,
    pub delivered_per_second: f64,
    /// p99 of a client's whole SMTP session (connect to QUIT), milliseconds.
    pub session_p99_ms: f64,
    /// When the rotated selector first signed a delivered message, seconds after the start.
    pub rotated_selector_first_signed_s: Option<f64>,
}

fn percentile(mut values: Vec<u64>, p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i] as f64
}

/// A quantile of a Prometheus histogram (the upper bound of its bucket), in milliseconds;
/// `None` above the largest finite bucket.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return Some(0.0);
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| le * 1000.0)
        .filter(|v| v.is_finite())
}

/// Builds the summary from the ledger; `relays` are (name, CPU seconds, metrics text).
pub fn summarise(
    size: Size,
    seed: u64,
    people: usize,
    ledger: &Ledger,
    failures: Failures,
    relays: &[(String, f64, String)],
) -> Summary {
    let delivered_map = {
        let mut m: BTreeMap<usize, usize> = BTreeMap::new();
        for r in &ledger.received {
            *m.entry(r.id).or_default() += 1;
        }
        m
    };
    let delivered_hash =
        ledger
            .received
            .iter()
            .fold(std::collections::HashMap::new(), |mut m, r| {
                m.entry(r.id).or_insert_with(Vec::new).push(r);
                m
            });
    let mut by_kind: BTreeMap<Kind, KindCounts> = BTreeMap::new();
    let mut still_retrying = Vec::new();
    for msg in ledger.plan {
        let c = by_kind.entry(msg.kind).or_default();
        c.planned += 1;
        c.retries += ledger.tries[msg.id].0.len().saturating_sub(1);
        match ledger.fate(msg.id, &delivered_hash) {
            Fate::Delivered => c.delivered += 1,
            Fate::Refused => c.refused += 1,
            Fate::Retrying => {
                c.retrying += 1;
                still_retrying.push(format!(
                    "#{} {:?} {}: {}",
                    msg.id,
                    msg.kind,
                    msg.login.as_deref().unwrap_or("-"),
                    ledger.tries[msg.id]
                        .0
                        .last()
                        .map_or("never tried".to_string(), |a| a.text.clone())
                ));
            }
        }
    }
    let phished = detections(ledger);
    let faults = ledger
        .events
        .iter()
        .map(|e| fault_figure(ledger, e))
        .collect();
    let relay_figures = relays
        .iter()
        .map(|(name, cpu, metrics)| {
            let records: Vec<_> = ledger.records.iter().filter(|r| &r.host == name).collect();
            let decisions = records.len();
            RelayFigure {
                name: name.clone(),
                decisions,
                accepted: records.iter().filter(|r| r.verdict == "accept").count(),
                cpu_s: *cpu,
                cpu_ms_per_decision: cpu * 1000.0 / decisions.max(1) as f64,
                decision_p50_ms: histogram_quantile(metrics, "relayguard_decision_seconds", 0.5),
                decision_p99_ms: histogram_quantile(metrics, "relayguard_decision_seconds", 0.99),
                signing_p99_ms: histogram_quantile(metrics, "relayguard_signing_seconds", 0.99),
            }
        })
        .collect();
    let sessions: Vec<u64> = ledger
        .tries
        .iter()
        .flat_map(|t| t.0.iter().filter(|a| a.code == 250).map(|a| a.took_ms))
        .collect();
    let rotated = ledger
        .received
        .iter()
        .filter(|r| r.selectors.iter().any(|s| s == "rsa-c2"))
        .filter_map(|r| ledger.tries[r.id].accepted().map(|a| a.at_ms))
        .min()
        .map(|ms| ms as f64 / 1000.0);
    let delivered = delivered_map.len();
    Summary {
        size: size.name,
        seed,
        people,
        window_s: size.window.as_secs_f64(),
        planned: ledger.plan.len(),
        delivered,
        duplicates: delivered_map.values().filter(|n| **n > 1).count(),
        by_kind,
        still_retrying,
        failures,
        phished,
        faults,
        relays: relay_figures,
        delivered_per_second: delivered as f64 / size.window.as_secs_f64(),
        session_p99_ms: percentile(sessions, 0.99),
        rotated_selector_first_signed_s: rotated,
    }
}

/// For each phished account: how many of the thief's messages went out, to how many
/// strangers, before the first refusal.
fn detections(ledger: &Ledger) -> Vec<Detection> {
    let mut by_login: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for msg in ledger.plan.iter().filter(|m| m.expect == Expect::Attack) {
        by_login
            .entry(msg.login.clone().unwrap_or_default())
            .or_default()
            .push(msg.id);
    }
    by_login
        .into_iter()
        .map(|(login, ids)| {
            let first = ids
                .iter()
                .filter_map(|id| ledger.tries[*id].0.first().map(|a| a.at_ms))
                .min()
                .unwrap_or(0);
            // The first refusal for what the account did: a lock or the unusual-sending
            // tempfail (not a fault's 451).
            let refusal = ids
                .iter()
                .flat_map(|id| ledger.tries[*id].0.iter())
                .filter(|a| a.text.contains("is locked") || a.text.contains("unusual sending"))
                .min_by_key(|a| a.at_ms);
            let cut = refusal.map_or(u64::MAX, |a| a.at_ms);
            let before: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|id| ledger.tries[*id].accepted().is_some_and(|a| a.at_ms < cut))
                .collect();
            Detection {
                login,
                delivered_before_action: before.len(),
                strangers_reached: before.iter().map(|id| ledger.plan[*id].rcpts.len()).sum(),
                seconds_to_action: refusal.map(|a| (a.at_ms - first) as f64 / 1000.0),
                action: refusal.map_or("never acted on".into(), |a| a.text.clone()),
            }
        })
        .collect()
}

/// Tempfails while a fault lasted and how soon mail went through what it hit afterwards.
fn fault_figure(ledger: &Ledger, e: &Event) -> FaultFigure {
    let on = |a: &crate::client::Attempt| e.relay.is_none_or(|r| r == a.relay);
    let attempts: Vec<&crate::client::Attempt> = ledger
        .tries
        .iter()
        .flat_map(|t| t.0.iter())
        .filter(|a| on(a))
        .collect();
    let recovered = attempts
        .iter()
        .filter(|a| a.code == 250 && a.at_ms >= e.end_ms)
        .map(|a| a.at_ms)
        .min();
    let until = recovered.unwrap_or(e.end_ms);
    FaultFigure {
        fault: e.fault,
        what: e.what.clone(),
        start_s: e.start_ms as f64 / 1000.0,
        end_s: e.end_ms as f64 / 1000.0,
        tempfails: attempts
            .iter()
            .filter(|a| a.code == 0 || (400..500).contains(&a.code))
            .filter(|a| a.at_ms >= e.start_ms && a.at_ms <= until)
            .count(),
        recovery_s: recovered.map(|t| (t - e.end_ms) as f64 / 1000.0),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("&gt; 500".into(), |v| format!("{v:.2}"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One self-contained page (no script, nothing fetched).
pub fn html(s: &Summary) -> String {
    let mut rows = String::new();
    for (kind, c) in &s.by_kind {
        rows.push_str(&format!(
            "<tr data-kind=\"{kind:?}\"><td>{kind:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            c.planned, c.delivered, c.refused, c.retrying, c.retries
        ));
    }
    let failures = serde_json::to_value(&s.failures).expect("serialisable");
    let mut failure_rows = String::new();
    for (name, list) in failures.as_object().expect("an object") {
        let list = list.as_array().expect("a list");
        failure_rows.push_str(&format!(
            "<tr data-failure=\"{name}\"><td>{name}</td><td class=\"n\">{}</td><td>{}</td></tr>\n",
            list.len(),
            escape(
                &list
                    .iter()
                    .take(5)
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        ));
    }
    let mut phished = String::new();
    for d in &s.phished {
        phished.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&d.login),
            d.delivered_before_action,
            d.strangers_reached,
            d.seconds_to_action
                .map_or("-".into(), |v| format!("{v:.1}")),
            escape(&d.action)
        ));
    }
    let mut faults = String::new();
    for f in &s.faults {
        faults.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}–{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            f.fault,
            escape(&f.what),
            f.start_s,
            f.end_s,
            f.tempfails,
            f.recovery_s.map_or("-".into(), |v| format!("{v:.1}"))
        ));
    }
    let mut relays = String::new();
    for r in &s.relays {
        relays.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            r.name,
            r.decisions,
            r.accepted,
            r.cpu_ms_per_decision,
            ms(r.decision_p50_ms),
            ms(r.decision_p99_ms),
            ms(r.signing_p99_ms)
        ));
    }
    let verdict = if s.failures.count() == 0 {
        "clean"
    } else {
        "FAILED"
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>relayguard campus: {size} run</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}.n{{text-align:right}}#verdict{{font-size:1.4em}}</style></head>
<body>
<h1>A campus in a box: {size} run</h1>
<p id="verdict" data-failures="{nfail}">Ledger: <b>{verdict}</b> ({nfail} failures). {planned} messages planned from {people} people, robots and servers over {window:.0} s; {delivered} delivered ({rate:.1}/s), {dups} delivered twice.</p>
<h2>What became of the mail</h2>
<table id="kinds"><tr><th>sender</th><th>planned</th><th>delivered</th><th>refused</th><th>still retrying</th><th>retries</th></tr>
{rows}</table>
<h2>Checks</h2>
<table id="failures"><tr><th>check</th><th>failures</th><th>first ones</th></tr>
{failure_rows}</table>
<h2>Phished accounts</h2>
<table id="phished"><tr><th>login</th><th>thief's messages out</th><th>strangers reached</th><th>seconds to action</th><th>action</th></tr>
{phished}</table>
<h2>Faults</h2>
<table id="faults"><tr><th>fault</th><th>what</th><th>seconds</th><th>tempfails</th><th>recovery (s)</th></tr>
{faults}</table>
<h2>Relays</h2>
<table id="relays"><tr><th>relay</th><th>decisions</th><th>accepted</th><th>CPU ms per decision</th><th>decision p50 ms</th><th>decision p99 ms</th><th>signing p99 ms</th></tr>
{relays}</table>
<p>Client session p99: {session:.0} ms. The rotated selector first signed at {rotated}.</p>
</body></html>
"#,
        size = s.size,
        nfail = s.failures.count(),
        planned = s.planned,
        people = s.people,
        window = s.window_s,
        delivered = s.delivered,
        rate = s.delivered_per_second,
        dups = s.duplicates,
        session = s.session_p99_ms,
        rotated = s
            .rotated_selector_first_signed_s
            .map_or("never".into(), |v| format!("{v:.0} s")),
    )
}

//! `audit report --format html`: one self-contained page for a committee (inline CSS and
//! SVG; no scripts, no fonts, no network): the chain's verification on top, then messages
//! per day by verdict, refusals by reason over time, limit hits and locks, unsigned
//! acceptances, per-class totals and the logins that matter.

use super::report::{LoginStats, Report};
use super::verify::Verification;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How many logins the per-login table shows (by messages; the CSV has them all).
pub const LOGIN_ROWS: usize = 200;

/// Series colours: accepted, rejected, tempfailed, locked, then reasons.
const GREEN: &str = "#2e7d32";
const RED: &str = "#c62828";
const ORANGE: &str = "#ef6c00";
const PURPLE: &str = "#6a1b9a";
const PALETTE: [&str; 9] = [
    "#c62828", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e",
    "#757575",
];

/// Escapes text for HTML and SVG.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the page says about where its numbers come from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The files read, in order.
    pub files: Vec<String>,
    /// When the report was made (RFC 3339).
    pub generated: String,
}

/// Renders the page.
pub fn render(report: &Report, chain: Option<&Verification>, source: &Source) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let first = report.days.keys().next().cloned().unwrap_or_default();
    let last = report.days.keys().next_back().cloned().unwrap_or_default();
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>relayguard audit report {first} to {last}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#212121;padding:0 1rem}}
h1{{font-size:1.6rem;margin-bottom:.2rem}} h2{{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}}
.meta{{color:#616161;font-size:.9rem}}
.chain{{padding:.8rem 1rem;border-radius:6px;margin:1rem 0;white-space:pre-wrap;font-size:.95rem}}
.ok{{background:#e8f5e9;border:1px solid #2e7d32}} .broken{{background:#ffebee;border:1px solid #c62828}} .unknown{{background:#f5f5f5;border:1px solid #9e9e9e}}
.cards{{display:flex;flex-wrap:wrap;gap:.8rem}} .card{{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:8rem}}
.card b{{display:block;font-size:1.4rem}} .card span{{color:#616161;font-size:.85rem}}
table{{border-collapse:collapse;font-size:.9rem;margin-top:.5rem}} th,td{{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}}
th:first-child,td:first-child{{text-align:left}} th{{background:#fafafa}}
.legend span{{display:inline-block;margin-right:1rem;font-size:.85rem}} .legend i{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}}
svg{{display:block;margin-top:.4rem}} svg text{{font-size:11px;fill:#616161}}
.bar{{background:#c62828;height:.8rem;display:inline-block;vertical-align:middle}}
</style></head><body>
<h1>relayguard audit report</h1>
<p class="meta">Records from <b>{first}</b> to <b>{last}</b> (UTC days) in {files} file(s); generated {generated}.</p>
"#,
        first = esc(&first),
        last = esc(&last),
        files = source.files.len(),
        generated = esc(&source.generated),
    );
    chain_box(&mut out, chain);
    summary(&mut out, report);
    classes(&mut out, report);
    verdicts_per_day(&mut out, report);
    reasons_over_time(&mut out, report);
    limits_and_locks(&mut out, report);
    top_refused(&mut out, report);
    unsigned(&mut out, report);
    logins(&mut out, report);
    let _ = write!(
        out,
        "<h2>Files</h2><ol class=\"meta\">{}</ol>\n</body></html>\n",
        source
            .files
            .iter()
            .map(|f| format!("<li>{}</li>", esc(f)))
            .collect::<String>()
    );
    out
}

fn chain_box(out: &mut String, chain: Option<&Verification>) {
    let (class, text) = match chain {
        Some(v) if v.intact() => ("ok", v.render()),
        Some(v) => ("broken", v.render()),
        None => ("unknown", "The hash chain was not verified.\n".to_string()),
    };
    let _ = writeln!(
        out,
        "<div id=\"chain\" class=\"chain {class}\" data-intact=\"{}\">{}</div>",
        chain.is_some_and(Verification::intact),
        esc(text.trim_end())
    );
}

fn card(out: &mut String, id: &str, value: u64, label: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><b id=\"{id}\" data-value=\"{value}\">{}</b><span>{label}</span></div>",
        num(value)
    );
}

fn summary(out: &mut String, r: &Report) {
    let sum = |f: fn(&LoginStats) -> u64| r.logins.values().map(f).sum::<u64>();
    out.push_str("<h2>Totals</h2><div class=\"cards\">");
    card(out, "total-records", r.records, "decisions");
    card(
        out,
        "total-messages",
        sum(|s| s.messages),
        "accepted messages",
    );
    card(out, "total-recipients", sum(|s| s.recipients), "recipients");
    card(out, "total-refused", sum(LoginStats::refused), "refused");
    card(out, "total-limits", sum(|s| s.limit_hits), "limit hits");
    card(out, "total-locks", sum(|s| s.locks), "refused: locked");
    card(
        out,
        "total-unsigned",
        sum(|s| s.unsigned),
        "accepted unsigned",
    );
    card(
        out,
        "total-would",
        sum(LoginStats::would_refused),
        "would be refused (monitor)",
    );
    card(
        out,
        "total-flagged",
        sum(|s| s.flagged),
        "flagged by stolen-account signals",
    );
    card(
        out,
        "total-logins",
        r.logins.len() as u64,
        "logins and classes",
    );
    out.push_str("</div>\n");
}

fn classes(out: &mut String, r: &Report) {
    out.push_str("<h2>Per client class</h2><table id=\"classes\"><tr><th>class</th><th>messages</th><th>recipients</th><th>refused</th><th>unsigned</th></tr>");
    for (class, s) in &r.classes {
        let _ = write!(
            out,
            "<tr data-class=\"{c}\"><td>{c}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(s.messages),
            num(s.recipients),
            num(s.refused),
            num(s.unsigned),
            c = esc(class)
        );
    }
    out.push_str("</table>\n");
}

/// Chart geometry: a plot area inside a fixed viewBox.
const W: f64 = 1000.0;
const H: f64 = 240.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

fn plot_w() -> f64 {
    W - LEFT - 10.0
}

fn plot_h() -> f64 {
    H - BOTTOM - TOP
}

/// Opens a chart with its y axis (0 and `max`) and first/last day labels.
fn axes(out: &mut String, id: &str, title: &str, max: u64, days: &[&String]) {
    let _ = write!(
        out,
        "<svg id=\"{id}\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"{title}\" xmlns=\"http://www.w3.org/2000/svg\">\
<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y0}\" stroke=\"#bbb\"/>\
<line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#bbb\"/>\
<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{top}</text><text x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>",
        y0 = TOP + plot_h(),
        x1 = LEFT + plot_w(),
        lx = LEFT - 6.0,
        ty = TOP + 10.0,
        top = num(max),
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            out,
            "<text x=\"{LEFT}\" y=\"{y}\">{}</text><text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            esc(first),
            esc(last),
            y = H - 6.0,
            x = LEFT + plot_w(),
        );
    }
}

fn legend(out: &mut String, items: &[(&str, String)]) {
    out.push_str("<div class=\"legend\">");
    for (colour, label) in items {
        let _ = write!(
            out,
            "<span><i style=\"background:{colour}\"></i>{}</span>",
            esc(label)
        );
    }
    out.push_str("</div>");
}

/// One series of a chart: its colour and its value on a day.
type Series<'a> = (&'a str, fn(&super::report::DayStats) -> u64);

/// Stacked bars per day.
fn stacked(out: &mut String, id: &str, title: &str, r: &Report, series: &[Series<'_>]) {
    let days: Vec<&String> = r.days.keys().collect();
    let max = r
        .days
        .values()
        .map(|d| series.iter().map(|(_, f)| f(d)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    axes(out, id, title, max, &days);
    let step = plot_w() / days.len().max(1) as f64;
    let bar = (step * 0.8).max(0.5);
    for (i, (day, d)) in r.days.iter().enumerate() {
        let x = LEFT + i as f64 * step + (step - bar) / 2.0;
        let mut y = TOP + plot_h();
        for (colour, f) in series {
            let v = f(d);
            if v == 0 {
                continue;
            }
            let h = v as f64 / max as f64 * plot_h();
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {}</title></rect>",
                esc(day),
                num(v)
            );
        }
    }
    out.push_str("</svg>");
}

fn verdicts_per_day(out: &mut String, r: &Report) {
    out.push_str("<h2>Messages per day by verdict</h2>");
    legend(
        out,
        &[
            (GREEN, "accepted".into()),
            (RED, "rejected (5xx)".into()),
            (ORANGE, "tempfailed (4xx)".into()),
            (PURPLE, "locked".into()),
        ],
    );
    stacked(
        out,
        "chart-verdicts",
        "Messages per day by verdict",
        r,
        &[
            (GREEN, |d| d.accepted),
            (RED, |d| d.rejected),
            (ORANGE, |d| d.tempfailed),
            (PURPLE, |d| d.locked),
        ],
    );
    out.push('\n');
}

fn reasons_over_time(out: &mut String, r: &Report) {
    out.push_str("<h2>Refusals by reason over time</h2>");
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for d in r.days.values() {
        for (reason, n) in &d.refusals {
            *totals.entry(reason).or_default() += n;
        }
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if ranked.is_empty() {
        out.push_str("<p>No refusals.</p>\n");
        return;
    }
    let shown: Vec<&str> = ranked
        .iter()
        .take(PALETTE.len() - 1)
        .map(|(r, _)| *r)
        .collect();
    let other = ranked.len() > shown.len();
    let value = |d: &super::report::DayStats, reason: Option<&str>| -> u64 {
        match reason {
            Some(reason) => d.refusals.get(reason).copied().unwrap_or(0),
            None => d
                .refusals
                .iter()
                .filter(|(k, _)| !shown.contains(&k.as_str()))
                .map(|(_, n)| n)
                .sum(),
        }
    };
    let mut lines: Vec<(Option<&str>, &str)> = shown
        .iter()
        .enumerate()
        .map(|(i, r)| (Some(*r), PALETTE[i]))
        .collect();
    if other {
        lines.push((None, PALETTE[PALETTE.len() - 1]));
    }
    let items: Vec<(&str, String)> = lines
        .iter()
        .map(|(reason, colour)| {
            let total: u64 = r.days.values().map(|d| value(d, *reason)).sum();
            (
                *colour,
                format!("{} ({})", reason.unwrap_or("other"), num(total)),
            )
        })
        .collect();
    legend(out, &items);
    let days: Vec<&String> = r.days.keys().collect();
    let max = r
        .days
        .values()
        .flat_map(|d| lines.iter().map(move |(reason, _)| value(d, *reason)))
        .max()
        .unwrap_or(0)
        .max(1);
    axes(
        out,
        "chart-reasons",
        "Refusals by reason over time",
        max,
        &days,
    );
    let step = plot_w() / days.len().max(1) as f64;
    for (reason, colour) in &lines {
        let points: Vec<String> = r
            .days
            .values()
            .enumerate()
            .map(|(i, d)| {
                let x = LEFT + (i as f64 + 0.5) * step;
                let y = TOP + plot_h() - value(d, *reason) as f64 / max as f64 * plot_h();
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(reason.unwrap_or("other"))
        );
    }
    out.push_str("</svg>\n");
}

fn limits_and_locks(out: &mut String, r: &Report) {
    out.push_str("<h2>Limit hits and locks per day</h2>");
    legend(
        out,
        &[
            (ORANGE, "limit hits".into()),
            (PURPLE, "refused: account locked".into()),
        ],
    );
    stacked(
        out,
        "chart-limits",
        "Limit hits and locks per day",
        r,
        &[(ORANGE, |d| d.limit_hits), (PURPLE, |d| d.locked)],
    );
    let mut locked: Vec<(&String, &LoginStats)> =
        r.logins.iter().filter(|(_, s)| s.locks > 0).collect();
    locked.sort_by(|a, b| b.1.locks.cmp(&a.1.locks).then(a.0.cmp(b.0)));
    if !locked.is_empty() {
        out.push_str("<table id=\"locked\"><tr><th>locked login</th><th>refusals while locked</th><th>limit hits</th></tr>");
        for (login, s) in locked.iter().take(50) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(login),
                num(s.locks),
                num(s.limit_hits)
            );
        }
        out.push_str("</table>");
    }
    out.push('\n');
}

fn top_refused(out: &mut String, r: &Report) {
    out.push_str("<h2>Top refused logins</h2>");
    let top = r.top_refused(20);
    if top.is_empty() {
        out.push_str("<p>No refusals.</p>\n");
        return;
    }
    let max = top.first().map_or(1, |t| t.1.max(1));
    out.push_str("<table id=\"top-refused\"><tr><th>login</th><th>refused</th><th></th><th>reasons</th></tr>");
    for (login, n) in top {
        let reasons: Vec<String> = r.logins[login]
            .refusals
            .iter()
            .map(|(reason, n)| format!("{} {}", esc(reason), num(*n)))
            .collect();
        let _ = write!(
            out,
            "<tr data-login=\"{l}\"><td>{l}</td><td>{}</td><td style=\"text-align:left;width:12rem\"><span class=\"bar\" style=\"width:{:.1}%\"></span></td><td style=\"text-align:left\">{}</td></tr>",
            num(n),
            n as f64 / max as f64 * 100.0,
            reasons.join(", "),
            l = esc(login)
        );
    }
    out.push_str("</table>\n");
}

fn unsigned(out: &mut String, r: &Report) {
    let total: u64 = r.logins.values().map(|s| s.unsigned).sum();
    let _ = write!(
        out,
        "<h2>Accepted but unsigned</h2><p id=\"unsigned\" data-value=\"{total}\"><b>{}</b> accepted messages left without a DKIM signature (outside the signing domains, no key, or monitor mode).</p>",
        num(total)
    );
    if total > 0 {
        stacked(
            out,
            "chart-unsigned",
            "Accepted but unsigned per day",
            r,
            &[(ORANGE, |d| d.unsigned)],
        );
    }
    out.push('\n');
}

fn logins(out: &mut String, r: &Report) {
    let mut rows: Vec<(&String, &LoginStats)> = r.logins.iter().collect();
    rows.sort_by(|a, b| {
        (b.1.messages + b.1.refused())
            .cmp(&(a.1.messages + a.1.refused()))
            .then(a.0.cmp(b.0))
    });
    let _ = write!(
        out,
        "<h2>Logins</h2><p class=\"meta\">The {} busiest of {} logins and classes (all of them: <code>relayguard audit report --format csv</code>).</p>",
        rows.len().min(LOGIN_ROWS),
        r.logins.len()
    );
    out.push_str("<table id=\"logins\"><tr><th>login</th>");
    for name in LoginStats::COLUMNS {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr>");
    for (login, s) in rows.into_iter().take(LOGIN_ROWS) {
        let _ = write!(out, "<tr data-login=\"{l}\"><td>{l}</td>", l = esc(login));
        for value in s.columns() {
            let _ = write!(out, "<td>{value}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::DayStats;

    #[test]
    fn text_from_the_log_cannot_break_out_of_the_page() {
        let mut r = Report::default();
        r.logins.insert(
            "<script>alert(1)</script>".into(),
            LoginStats {
                messages: 1,
                ..Default::default()
            },
        );
        r.days.insert("2026-12-01".into(), DayStats::default());
        let page = render(&r, None, &Source::default());
        assert!(!page.contains("<script"));
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn a_year_of_a_campus_stays_small() {
        // 30 million decisions over 365 days, 30,000 logins, 12 refusal reasons.
        let mut r = Report {
            records: 30_000_000,
            ..Default::default()
        };
        let start = jiff::civil::date(2026, 1, 1);
        for day in 0..365 {
            let date = start.checked_add(jiff::Span::new().days(day)).unwrap();
            let mut d = DayStats {
                accepted: 80_000,
                rejected: 1_000,
                tempfailed: 500,
                locked: 20,
                limit_hits: 400,
                unsigned: 30,
                ..Default::default()
            };
            for reason in 0..12 {
                d.refusals.insert(format!("reason_{reason}"), 100);
            }
            r.days.insert(date.to_string(), d);
        }
        for login in 0..30_000 {
            let mut s = LoginStats {
                messages: 1_000,
                recipients: 2_000,
                ..Default::default()
            };
            s.refusals.insert("sender_not_owned".into(), login % 7);
            r.logins.insert(format!("user{login:05}"), s);
        }
        let page = render(&r, None, &Source::default());
        println!("a year of a campus: {} bytes", page.len());
        assert!(page.len() < 3 << 20, "{} bytes", page.len());
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1_000), "1,000");
        assert_eq!(num(30_000_000), "30,000,000");
    }
}

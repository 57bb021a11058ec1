//! `--status`, printed as LVM prints its reports.

use crate::running::{Phase, Status};

/// How `--status` prints, as LVM's `--reportformat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Basic,
    /// LVM's JSON: every value a string.
    Json,
    /// LVM's json_std: numbers as numbers, an unknown value null.
    JsonStd,
}

/// `--status`, as LVM's reports print.
pub fn report(all: &[Status], format: Format) -> String {
    // Before the data phase nothing is encrypted yet, and the total is not known.
    let pct = |s: &Status| match s.bytes_total {
        _ if s.state == Phase::Finished => "100.00%".into(),
        0 => "0.00%".into(),
        t => crate::progress::percent(s.bytes_done, t),
    };
    if format != Format::Basic {
        let std = format == Format::JsonStd;
        // LVM's json gives every value as a string, "" when unknown; json_std numbers and null.
        let num = |v: Option<serde_json::Value>| match (v, std) {
            (Some(v), true) => v,
            (None, true) => serde_json::Value::Null,
            (Some(v), false) => v.to_string().into(),
            (None, false) => "".into(),
        };
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|s| {
                let pct = pct(s);
                let pct = pct.trim_end_matches('%');
                let percent = if std { pct.parse::<f64>().unwrap_or(0.0).into() } else { serde_json::Value::from(pct) };
                serde_json::json!({
                    "pv": s.pv, "name": s.name, "state": s.state.to_string(),
                    "pid": num(s.pid.map(Into::into)),
                    "percent": percent,
                    "bytes_done": num(Some(s.bytes_done.into())), "bytes_total": num(Some(s.bytes_total.into())),
                    "rate": num(s.rate.map(Into::into)),
                    "eta_seconds": num(s.eta_seconds.map(Into::into)),
                    "warnings": s.warnings,
                })
            })
            .collect();
        return serde_json::to_string_pretty(&serde_json::json!({ "report": [ { "conversion": rows } ] })).expect("json");
    }
    if all.is_empty() {
        return "No conversion in progress.".into();
    }
    let mib = |b: u64| if b == 0 { String::new() } else { format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64) };
    let mut rows = vec![["PV", "Name", "State", "Percent", "Done", "Total", "Rate", "ETA"].map(String::from)];
    for s in all {
        rows.push([
            s.pv.clone(),
            s.name.clone(),
            s.state.to_string(),
            pct(s),
            mib(s.bytes_done),
            mib(s.bytes_total),
            s.rate.map(|r| format!("{}/s", mib(r))).unwrap_or_default(),
            s.eta_seconds.map(|e| format!("{}:{:02}:{:02}", e / 3600, e / 60 % 60, e % 60)).unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            format!("  {}", line.join(" ").trim_end())
        })
        .collect();
    for s in all {
        lines.extend(s.warnings.iter().map(|w| format!("  WARNING: {}: {w}", s.pv)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: Phase, done: u64) -> Status {
        Status {
            pv: "/dev/sda5".into(),
            name: "sda5_crypt".into(),
            state,
            pid: Some(42),
            bytes_done: done,
            bytes_total: 8 << 20,
            rate: Some(1 << 20),
            eta_seconds: Some(3725),
            updated: 0,
            warnings: vec![],
        }
    }

    #[test]
    fn basic_report_has_aligned_columns() {
        let r = report(&[st(Phase::Encrypting, 1 << 20)], Format::Basic);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("  PV "));
        assert!(lines[1].contains("12.50%"), "{r}");
        assert!(lines[1].contains("1:02:05"), "{r}");
        assert_eq!(lines[0].find("State"), lines[1].find("encrypting"));
        assert_eq!(report(&[], Format::Basic), "No conversion in progress.");
    }

    #[test]
    fn json_report_is_lvm_shaped() {
        let v: serde_json::Value = serde_json::from_str(&report(&[st(Phase::Stopped, 4 << 20)], Format::Json)).unwrap();
        let row = &v["report"][0]["conversion"][0];
        assert_eq!(row["percent"], "50.00");
        assert_eq!(row["state"], "stopped");
        assert_eq!(row["bytes_total"], (8u64 << 20).to_string());
        let empty: serde_json::Value = serde_json::from_str(&report(&[], Format::Json)).unwrap();
        assert_eq!(empty["report"][0]["conversion"].as_array().unwrap().len(), 0);
        assert_eq!(row["warnings"], serde_json::json!([]));
        assert_eq!(row["pid"], "42");
        let none = Status { pv: "/dev/sda5".into(), state: Phase::Stopped, ..Default::default() };
        let v: serde_json::Value = serde_json::from_str(&report(&[none], Format::Json)).unwrap();
        assert_eq!(v["report"][0]["conversion"][0]["rate"], "", "unknown: empty");
    }

    /// json_std, as LVM's: the same rows, numbers as numbers, an unknown value null.
    #[test]
    fn json_std_report_has_numbers() {
        let v: serde_json::Value = serde_json::from_str(&report(&[st(Phase::Stopped, 4 << 20)], Format::JsonStd)).unwrap();
        let row = &v["report"][0]["conversion"][0];
        assert_eq!(row["percent"], 50.0);
        assert_eq!(row["bytes_done"], 4u64 << 20);
        assert_eq!(row["bytes_total"], 8u64 << 20);
        assert_eq!(row["pid"], 42);
        assert_eq!(row["state"], "stopped");
        let none = Status { pv: "/dev/sda5".into(), state: Phase::Stopped, ..Default::default() };
        let v: serde_json::Value = serde_json::from_str(&report(&[none], Format::JsonStd)).unwrap();
        assert_eq!(v["report"][0]["conversion"][0]["rate"], serde_json::Value::Null, "unknown: null");
    }

    #[test]
    fn warnings_for_the_next_boot_under_the_table() {
        let mut s = Status { pv: "/dev/sda5".into(), name: "sda5_crypt".into(), state: Phase::Finished, ..Default::default() };
        s.warnings = vec!["the initramfs may NOT open sda5_crypt. DO NOT REBOOT".into(), "second".into()];
        let r = report(&[st(Phase::Encrypting, 1 << 20), s.clone()], Format::Basic);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 5, "{r}");
        assert!(lines[2].contains(" finished ") && lines[2].ends_with(" 100.00%"), "{r}");
        assert_eq!(lines[3], "  WARNING: /dev/sda5: the initramfs may NOT open sda5_crypt. DO NOT REBOOT");
        assert_eq!(lines[4], "  WARNING: /dev/sda5: second");
        let v: serde_json::Value = serde_json::from_str(&report(&[s], Format::Json)).unwrap();
        assert_eq!(v["report"][0]["conversion"][0]["warnings"][1], "second");
        assert_eq!(v["report"][0]["conversion"][0]["state"], "finished");
    }
}

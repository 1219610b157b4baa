//! Prometheus exposition: the text format 0.0.4 and OpenMetrics 1.0.
//!
//! Hand-written rather than taken from a client library because the
//! exporter computes every value itself at sampling time and only needs to
//! print them, in two formats that differ in small ways that client
//! libraries get subtly wrong for us:
//! * a counter's family is named without `_total` in OpenMetrics (`# TYPE
//!   x counter`, samples `x_total`) but with it in 0.0.4 (`# TYPE x_total
//!   counter`), so families here are declared by their base name;
//! * info metrics are the `info` type in OpenMetrics (`# TYPE x info`,
//!   samples `x_info`), and gauges named `x_info` in 0.0.4, which
//!   `promtool check metrics` accepts;
//! * OpenMetrics ends with `# EOF` and may carry `# UNIT`.
//!
//! Label values and help text are escaped as both formats require
//! (backslash, double quote, newline).

pub mod fleet;

use std::fmt::Write;

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an HTTP `Accept` header asks for: OpenMetrics when it
    /// lists `application/openmetrics-text` with a non-zero quality, the
    /// text format otherwise (also for a missing or malformed header).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            if !media.eq_ignore_ascii_case("application/openmetrics-text") {
                continue;
            }
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            if q > 0.0 {
                return Format::OpenMetrics;
            }
        }
        Format::Text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Declared by its base name; samples get `_total`.
    Counter,
    /// Declared by its base name; samples get `_info`, value 1.
    Info,
}

/// One metric family and its samples (label pairs and value).
#[derive(Debug, Clone)]
pub struct Family {
    /// Base name: no `_total` for counters, no `_info` for info metrics.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// OpenMetrics unit (`bytes`, `seconds`); the name must end with it.
    pub unit: Option<&'static str>,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        let unit = ["bytes", "seconds"]
            .into_iter()
            .find(|u| kind == Kind::Gauge && name.ends_with(&format!("_{u}")));
        Family {
            name,
            help,
            kind,
            unit,
            samples: Vec::new(),
        }
    }

    pub fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn sample_name(&self) -> String {
        match self.kind {
            Kind::Gauge => self.name.to_string(),
            Kind::Counter => format!("{}_total", self.name),
            Kind::Info => format!("{}_info", self.name),
        }
    }
}

/// Writes the families in `format`. Families without samples are left out
/// (a family with no series says nothing, and 0.0.4 parsers dislike them).
pub fn encode(families: &[Family], format: Format) -> String {
    let mut out = String::with_capacity(families.len() * 256);
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let sample = f.sample_name();
        let help = escape_help(f.help, format);
        match format {
            Format::Text => {
                let kind = match f.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge | Kind::Info => "gauge",
                };
                let _ = writeln!(out, "# HELP {sample} {help}");
                let _ = writeln!(out, "# TYPE {sample} {kind}");
            }
            Format::OpenMetrics => {
                let kind = match f.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Info => "info",
                };
                let _ = writeln!(out, "# TYPE {} {kind}", f.name);
                if let Some(unit) = f.unit {
                    let _ = writeln!(out, "# UNIT {} {unit}", f.name);
                }
                let _ = writeln!(out, "# HELP {} {help}", f.name);
            }
        }
        for (labels, value) in &f.samples {
            out.push_str(&sample);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label_into(&mut out, v);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&number(*value));
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A sample value: integers without a fraction, non-finite values by name.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(h: &str, format: Format) -> String {
    let mut s = String::with_capacity(h.len());
    for c in h.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if format == Format::OpenMetrics => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<Family> {
        let mut g = Family::new("x_resident_bytes", Kind::Gauge, "RSS.");
        g.add(
            vec![("pid", "1".into()), ("comm", "a\"b\\c\nd".into())],
            4096.0,
        );
        let mut c = Family::new("x_errors", Kind::Counter, "Errors by reason.");
        c.add(vec![("reason", "gone".into())], 3.0);
        let mut i = Family::new("x_build", Kind::Info, "Build.");
        i.add(vec![("version", "0.1.0".into())], 1.0);
        let empty = Family::new("x_nothing", Kind::Gauge, "Nothing.");
        vec![g, c, i, empty]
    }

    #[test]
    fn text_format_names_counters_and_infos_with_their_suffixes() {
        let t = encode(&families(), Format::Text);
        assert_eq!(
            t,
            "# HELP x_resident_bytes RSS.\n# TYPE x_resident_bytes gauge\n\
             x_resident_bytes{pid=\"1\",comm=\"a\\\"b\\\\c\\nd\"} 4096\n\
             # HELP x_errors_total Errors by reason.\n# TYPE x_errors_total counter\n\
             x_errors_total{reason=\"gone\"} 3\n\
             # HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{version=\"0.1.0\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_uses_base_names_units_and_eof() {
        let t = encode(&families(), Format::OpenMetrics);
        assert!(t.starts_with(
            "# TYPE x_resident_bytes gauge\n# UNIT x_resident_bytes bytes\n# HELP x_resident_bytes RSS.\n"
        ));
        assert!(t.contains("# TYPE x_errors counter\n# HELP x_errors Errors by reason.\nx_errors_total{reason=\"gone\"} 3\n"));
        assert!(t.contains(
            "# TYPE x_build info\n# HELP x_build Build.\nx_build_info{version=\"0.1.0\"} 1\n"
        ));
        assert!(!t.contains("x_nothing"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn negotiation() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Text
        );
        assert_eq!(Format::negotiate(Some(";;,,=;q")), Format::Text);
    }
}

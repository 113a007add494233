//! A strict Prometheus text (0.0.4) parser for the `/metrics` tests: every line must be
//! a valid comment, HELP/TYPE pair or sample, so a malformed exposition fails the test.

use super::*;

/// Samples by `name{labels}` (labels sorted, as `k="v"` joined by commas).
type Samples = BTreeMap<String, f64>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses `{k="v",…}` (the braces stripped); panics on anything malformed.
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\": {line}"));
        assert!(valid_name(k), "bad label name {k:?}: {line}");
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => v.push(c),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        out.push((k.to_owned(), v));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse()
            .unwrap_or_else(|_| panic!("value {v:?} is not a float: {line}")),
    }
}

/// Parses the whole text: every sample's metric family has a `# TYPE` before it,
/// names and labels are well formed, values are floats, and every histogram has
/// cumulative buckets ending in `+Inf` equal to its `_count`, plus a `_sum`.
fn parse_prometheus(text: &str) -> Samples {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    // histogram family → labels without le → [(le, value)]
    let mut buckets: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            match kw {
                Some("TYPE") => {
                    let name = name.expect("TYPE names a metric");
                    assert!(valid_name(name), "{line}");
                    let t = arg.expect("TYPE has a type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "TYPE given twice: {line}"
                    );
                }
                Some("HELP") => assert!(valid_name(name.unwrap_or("")), "{line}"),
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = parse_value(value, line);
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}")),
                    line,
                ),
            ),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let t = types
            .get(family)
            .unwrap_or_else(|| panic!("sample without a TYPE for {family}: {line}"));
        if t == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        let mut sorted = labels.clone();
        sorted.sort();
        if name.ends_with("_bucket") && t == "histogram" {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .unwrap_or_else(|| panic!("bucket without le: {line}"));
            let le = parse_value(&le.1, line);
            let rest: Vec<String> = sorted
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            buckets
                .entry((family.to_owned(), rest.join(",")))
                .or_default()
                .push((le, value));
        }
        let key = if sorted.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        assert!(
            samples.insert(key, value).is_none(),
            "sample given twice: {line}"
        );
    }
    for ((family, rest), list) in &buckets {
        assert!(
            list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{family} {rest}: buckets must be cumulative with increasing le: {list:?}"
        );
        let last = list.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{family}: last bucket is +Inf");
        assert!(rest.is_empty(), "these tests have no labelled histograms");
        assert_eq!(
            samples.get(&format!("{family}_count")),
            Some(&last.1),
            "{family}: +Inf bucket equals _count"
        );
        assert!(
            samples.contains_key(&format!("{family}_sum")),
            "{family}: _sum"
        );
    }
    samples
}

pub(super) fn scrape(addr: SocketAddr) -> Samples {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("text/plain") && c.contains("version=0.0.4")),
        "{r:?}"
    );
    parse_prometheus(&r.body)
}

pub(super) fn val(s: &Samples, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in /metrics: {s:#?}"))
}

pub(super) fn delta(before: &Samples, after: &Samples, key: &str) -> f64 {
    val(after, key) - val(before, key)
}
